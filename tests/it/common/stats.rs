//! Goodness-of-fit tests of drawn samples against known laws.

use std::collections::HashMap;

/// The upper 0.1 % point of the chi-square distribution with `df` degrees of freedom
/// (Wilson–Hilferty; within 1 % of the exact value for df >= 3).
pub fn chi_square_critical(df: usize) -> f64 {
    let k = df as f64;
    let z = 3.090_232; // The standard normal's upper 0.1 % point.
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// Pearson's statistic of `counts` against `expected` probabilities (cells with an expected
/// count below 5 pooled), and its degrees of freedom. Counts outside the support are errors.
pub fn chi_square(counts: &HashMap<Vec<u32>, usize>, expected: &HashMap<Vec<u32>, f64>, n: usize) -> (f64, usize) {
    for key in counts.keys() {
        assert!(expected.get(key).is_some_and(|&p| p > 0.0), "{key:?} was drawn but has probability 0");
    }
    let (mut statistic, mut cells) = (0.0, 0);
    let (mut pooled_observed, mut pooled_expected) = (0.0, 0.0);
    for (key, &p) in expected {
        let e = p * n as f64;
        let o = counts.get(key).copied().unwrap_or(0) as f64;
        if e < 5.0 {
            pooled_observed += o;
            pooled_expected += e;
        } else {
            statistic += (o - e).powi(2) / e;
            cells += 1;
        }
    }
    if pooled_expected >= 5.0 {
        statistic += (pooled_observed - pooled_expected).powi(2) / pooled_expected;
        cells += 1;
    }
    (statistic, cells - 1)
}
