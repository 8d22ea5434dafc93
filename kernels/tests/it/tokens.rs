//! The token samplers against direct reference implementations written here the straightforward
//! way (full sorts, repeated linear scans, the formulas of Hugging Face, BD3-LM, LLaDA and
//! Fast-dLLM), and the statistics of the random ones with fixed seeds. Every statistical test also
//! checks that it rejects a nearby wrong answer, so that it can fail.

use std::cmp::Ordering;

use sched_kernels::philox::{philox4x32_10, uniform_f64};
use sched_kernels::tokens::{
    Nucleus, Sampler, accept_draft, argmax, first_hitting_time, guided_logit, gumbel_argmax, process_logits, residual,
    sample_probs, softmax, threshold_positions, top_k_positions, transfer_counts,
};

/// The seed of every random stream in this file.
const SEED: u64 = 0x5eed_70c3_4a11_b0b5;

/// The 0.999 quantile of the chi-square distribution with 3 degrees of freedom.
const CHI_SQUARE_999_DF3: f64 = 16.266;
/// The 0.999 quantile of the chi-square distribution with 4 degrees of freedom.
const CHI_SQUARE_999_DF4: f64 = 18.467;
/// The 0.999 quantile of the chi-square distribution with 31 degrees of freedom.
const CHI_SQUARE_999_DF31: f64 = 61.098;
/// The 0.999 quantile of the Kolmogorov distribution: `sqrt(n) * D_n` stays below it with
/// probability 0.999 for large `n`.
const KOLMOGOROV_999: f64 = 1.9495;

/// Test data drawn from sched's own random stream: `uniform_f64` at consecutive indices of one
/// site.
struct Draws {
    site: u32,
    index: u32,
}

impl Draws {
    fn new(site: u32) -> Draws {
        Draws { site, index: 0 }
    }

    /// The next uniform on (0, 1).
    fn uniform(&mut self) -> f64 {
        let u = uniform_f64(SEED, self.site, 0, 0, self.index);
        self.index += 1;
        u
    }

    /// A uniform integer in `0..n`, for `n > 0`.
    fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// A row of logits of length 1 to 24: either coarse (values on a grid of halves, so ties are
/// common) or continuous, with some -inf, NaN and (rarely) +inf entries.
fn random_logits(draws: &mut Draws) -> Vec<f32> {
    let len = 1 + draws.below(24);
    let coarse = draws.chance(0.5);
    (0..len)
        .map(|_| {
            let r = draws.uniform();
            if r < 0.08 {
                f32::NEG_INFINITY
            } else if r < 0.10 {
                f32::NAN
            } else if r < 0.105 {
                f32::INFINITY
            } else if coarse {
                (draws.below(7) as f32 - 3.0) * 0.5
            } else {
                (8.0 * draws.uniform() - 4.0) as f32
            }
        })
        .collect()
}

/// Compares two rows of logits bit for bit (so -inf, +0 and -0 all count).
fn assert_same_bits(actual: &[f32], expected: &[f32], context: &str) {
    let bits = |row: &[f32]| row.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(actual), bits(expected), "{context}: got {actual:?}, expected {expected:?}");
}

/// `a` against `b` for sorting, NaN never occurring in the callers' data.
fn compare(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// NaN as -inf, the convention of the samplers.
fn nan_as_neg_inf(x: f64) -> f64 {
    if x.is_nan() { f64::NEG_INFINITY } else { x }
}

// ---------------------------------------------------------------------------------------------
// References.
// ---------------------------------------------------------------------------------------------

/// The index of the first largest logit, found as "the first position equal to the maximum".
fn reference_argmax(logits: &[f32]) -> usize {
    let max = logits.iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY { 0 } else { logits.iter().position(|&x| x == max).unwrap_or(0) }
}

/// Hugging Face's `TemperatureLogitsWarper`, with NaN results made -inf.
fn reference_temperature(logits: &[f32], temperature: f64) -> Vec<f32> {
    logits
        .iter()
        .map(|&x| {
            let y = x / temperature as f32;
            if y.is_nan() { f32::NEG_INFINITY } else { y }
        })
        .collect()
}

/// Hugging Face's `TopKLogitsWarper`: `scores < topk(scores, min(k, len))[-1]` removed, by a full
/// descending sort.
fn reference_top_k(logits: &[f32], k: usize) -> Vec<f32> {
    let k = k.min(logits.len());
    if k == 0 {
        return logits.to_vec();
    }
    let mut sorted = logits.to_vec();
    sorted.sort_by(|a, b| compare(f64::from(*b), f64::from(*a)));
    let kth = sorted[k - 1];
    logits.iter().map(|&x| if x < kth { f32::NEG_INFINITY } else { x }).collect()
}

/// Hugging Face's `TopPLogitsWarper`, literally: sort ascending (among equal logits the higher
/// index first, so that the descending order puts the lower index first), cumulative sum of the
/// probabilities, remove where `cum <= 1 - top_p`, keep the last, scatter back.
fn reference_top_p(logits: &[f32], top_p: f64) -> Vec<f32> {
    let n = logits.len();
    let probs = softmax(logits);
    let mut ascending: Vec<usize> = (0..n).collect();
    ascending.sort_by(|&a, &b| compare(f64::from(logits[a]), f64::from(logits[b])).then(b.cmp(&a)));
    let mut cumulative = Vec::with_capacity(n);
    let mut sum = 0.0;
    for &j in &ascending {
        sum += probs[j];
        cumulative.push(sum);
    }
    let mut sorted_remove: Vec<bool> = cumulative.iter().map(|&c| c <= 1.0 - top_p).collect();
    sorted_remove[n - 1] = false;
    let mut out = logits.to_vec();
    for (rank, &j) in ascending.iter().enumerate() {
        if sorted_remove[rank] {
            out[j] = f32::NEG_INFINITY;
        }
    }
    out
}

/// BD3-LM's `_nucleus_sample`, literally on the probabilities: sort descending (ties by lower
/// index), `keep = cumsum <= p`, `keep[0] = 1`.
fn reference_bd3lm_nucleus(logits: &[f32], p: f64) -> Vec<f32> {
    let probs = softmax(logits);
    let mut descending: Vec<usize> = (0..logits.len()).collect();
    descending.sort_by(|&a, &b| compare(probs[b], probs[a]).then(a.cmp(&b)));
    let mut keep = vec![false; logits.len()];
    let mut sum = 0.0;
    for (rank, &j) in descending.iter().enumerate() {
        sum += probs[j];
        keep[j] = rank == 0 || sum <= p;
    }
    logits.iter().zip(&keep).map(|(&x, &k)| if k { x } else { f32::NEG_INFINITY }).collect()
}

/// Hugging Face's `MinPLogitsWarper`: remove `probs < min_p * max(probs)`, then keep the first
/// token of the descending order of the scores.
fn reference_min_p(logits: &[f32], min_p: f64) -> Vec<f32> {
    let probs = softmax(logits);
    let top_prob = probs.iter().copied().fold(0.0, f64::max);
    let first = reference_argmax(logits);
    logits
        .iter()
        .zip(&probs)
        .enumerate()
        .map(|(j, (&x, &p))| if j != first && p < min_p * top_prob { f32::NEG_INFINITY } else { x })
        .collect()
}

/// The whole pipeline, in Hugging Face's order.
fn reference_process(logits: &[f32], sampler: &Sampler) -> Vec<f32> {
    let mut x = reference_temperature(logits, sampler.temperature);
    if sampler.top_k > 0 {
        x = reference_top_k(&x, sampler.top_k);
    }
    if sampler.top_p < 1.0 {
        x = match sampler.nucleus {
            Nucleus::KeepCrossing => reference_top_p(&x, sampler.top_p),
            Nucleus::DropCrossing => reference_bd3lm_nucleus(&x, sampler.top_p),
        };
    }
    if sampler.min_p > 0.0 {
        x = reference_min_p(&x, sampler.min_p);
    }
    x
}

/// The number of logits above -inf.
fn survivors(logits: &[f32]) -> usize {
    logits.iter().filter(|&&x| x > f32::NEG_INFINITY).count()
}

/// The chi-square statistic of `counts` against the distribution `probs` (normalized here),
/// asserting that categories of probability zero were never drawn.
fn chi_square(counts: &[u64], probs: &[f64]) -> f64 {
    let draws: u64 = counts.iter().sum();
    let total: f64 = probs.iter().sum();
    let mut statistic = 0.0;
    for (j, (&count, &p)) in counts.iter().zip(probs).enumerate() {
        if p == 0.0 {
            assert_eq!(count, 0, "category {j} has probability 0 but was drawn");
            continue;
        }
        let expected = draws as f64 * p / total;
        statistic += (count as f64 - expected).powi(2) / expected;
    }
    statistic
}

/// The Kolmogorov-Smirnov distance between a sorted sample and the distribution function `cdf`.
fn kolmogorov_smirnov(sorted: &[f64], cdf: impl Fn(f64) -> f64) -> f64 {
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max)
}

// ---------------------------------------------------------------------------------------------
// uniform_f64.
// ---------------------------------------------------------------------------------------------

/// The definition of `uniform_f64` on two raw Philox words, written as `(2n + 1) / 2^53` (both
/// exact in f64), independently of the implementation's `(n + 0.5) * 2^-52`.
fn reference_uniform_f64(r0: u32, r1: u32) -> f64 {
    let n = (u64::from(r0) << 20) + (u64::from(r1) >> 12);
    (2 * n + 1) as f64 / 9_007_199_254_740_992.0
}

/// `uniform_f64` is its definition on the Philox block, deterministic, inside (0, 1), and changes
/// with each coordinate.
#[test]
fn uniform_f64_matches_its_definition() {
    let seeds = [0u64, 1, SEED, u64::MAX];
    for &seed in &seeds {
        for site in [0u32, 3, u32::MAX] {
            for step in [0u32, 1, 77] {
                for sample in [0u32, 5] {
                    for index in [0u32, 1, 2, 1000, u32::MAX - 1] {
                        let u = uniform_f64(seed, site, step, sample, index);
                        let r = philox4x32_10([index, sample, step, site], [seed as u32, (seed >> 32) as u32]);
                        assert_eq!(u.to_bits(), reference_uniform_f64(r[0], r[1]).to_bits());
                        assert!(u > 0.0 && u < 1.0, "{u}");
                        assert_eq!(u.to_bits(), uniform_f64(seed, site, step, sample, index).to_bits());
                        let neighbours = [
                            uniform_f64(seed, site, step, sample, index.wrapping_add(1)),
                            uniform_f64(seed, site, step, sample.wrapping_add(1), index),
                            uniform_f64(seed, site, step.wrapping_add(1), sample, index),
                            uniform_f64(seed, site.wrapping_add(1), step, sample, index),
                            uniform_f64(seed ^ 1, site, step, sample, index),
                            uniform_f64(seed ^ (1 << 40), site, step, sample, index),
                        ];
                        for other in neighbours {
                            assert_ne!(u, other);
                        }
                    }
                }
            }
        }
    }
}

/// The definition maps the extreme Philox words strictly inside (0, 1), symmetrically, which a
/// 53-bit integer with `+ 0.5` would not (its largest value rounds to exactly 1).
#[test]
fn uniform_f64_definition_stays_open_at_both_ends() {
    let smallest = reference_uniform_f64(0, 0);
    let largest = reference_uniform_f64(u32::MAX, u32::MAX);
    assert_eq!(smallest, 2f64.powi(-53));
    assert_eq!(largest, 1.0 - 2f64.powi(-53));
    assert!(largest < 1.0);
    let fifty_three_bits = (((1u64 << 53) - 1) as f64 + 0.5) * 2f64.powi(-53);
    assert_eq!(fifty_three_bits, 1.0);
}

/// 64 000 draws of `uniform_f64` fill 32 equal bins evenly (chi-square), and have mean 1/2.
#[test]
fn uniform_f64_is_uniform() {
    let draws = 64_000u32;
    let mut counts = [0u64; 32];
    let mut sum = 0.0;
    for i in 0..draws {
        let u = uniform_f64(SEED, 2, 9, 1, i);
        counts[(u * 32.0) as usize] += 1;
        sum += u;
    }
    let statistic = chi_square(&counts, &[1.0; 32]);
    assert!(statistic < CHI_SQUARE_999_DF31, "chi-square {statistic}");
    let mean = sum / f64::from(draws);
    // The standard deviation of the mean is sqrt(1/12 / draws) < 0.0012.
    assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
    // The test rejects a distribution that is off by a few percent in one bin.
    let mut skewed = [1.0; 32];
    skewed[0] = 1.3;
    assert!(chi_square(&counts, &skewed) > CHI_SQUARE_999_DF31);
}

// ---------------------------------------------------------------------------------------------
// softmax and argmax.
// ---------------------------------------------------------------------------------------------

/// `softmax` against `p_j = 1 / sum_k exp(l_k - l_j)`, computed without the maximum, on random
/// rows (NaN as -inf), and the special cases of its definition.
#[test]
fn softmax_matches_the_direct_formula() {
    let mut draws = Draws::new(10);
    let mut checked = 0;
    for _ in 0..500 {
        let logits = random_logits(&mut draws);
        let probs = softmax(&logits);
        assert_eq!(probs.len(), logits.len());
        if logits.contains(&f32::INFINITY) {
            continue;
        }
        let l: Vec<f64> = logits.iter().map(|&x| nan_as_neg_inf(f64::from(x))).collect();
        if l.iter().all(|&x| x == f64::NEG_INFINITY) {
            continue;
        }
        for (j, &p) in probs.iter().enumerate() {
            let expected =
                if l[j] == f64::NEG_INFINITY { 0.0 } else { 1.0 / l.iter().map(|&lk| (lk - l[j]).exp()).sum::<f64>() };
            assert!((p - expected).abs() <= 1e-14 * expected, "{logits:?}: p[{j}] = {p}, expected {expected}");
            checked += 1;
        }
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-14);
    }
    assert!(checked > 4000, "only {checked} probabilities checked");

    assert!(softmax::<f32>(&[]).is_empty());
    assert_eq!(softmax(&[f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY, f32::NEG_INFINITY]), vec![0.25; 4]);
    assert_eq!(softmax(&[1.0, f32::INFINITY, f32::NAN, f32::INFINITY]), vec![0.0, 0.5, 0.0, 0.5]);
    assert_eq!(softmax(&[3.0, f32::NAN, f32::NEG_INFINITY]), vec![1.0, 0.0, 0.0]);
    assert_eq!(softmax(&[-7.5]), vec![1.0]);
}

/// `argmax` against the first position of the maximum, on random rows with ties and NaN.
#[test]
fn argmax_matches_the_reference() {
    let mut draws = Draws::new(11);
    for _ in 0..2000 {
        let logits = random_logits(&mut draws);
        assert_eq!(argmax(&logits) as usize, reference_argmax(&logits), "{logits:?}");
    }
    assert_eq!(argmax(&[]), 0);
    assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY, f32::NAN]), 0);
    assert_eq!(argmax(&[f32::NAN, -1.0, 2.0, 2.0, f32::NAN]), 2);
    assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY, -1e30]), 2);
}

// ---------------------------------------------------------------------------------------------
// process_logits.
// ---------------------------------------------------------------------------------------------

/// A random sampler: each knob off or on with a value chosen to make boundaries likely.
fn random_sampler(draws: &mut Draws, len: usize) -> Sampler {
    let temperature = [1.0, 0.7, 1.3, 2.0][draws.below(4)];
    let top_k = match draws.below(5) {
        0 => 0,
        1 => 1,
        2 => len,
        3 => len + 3,
        _ => 1 + draws.below(len),
    };
    let top_p = match draws.below(5) {
        0 => 1.0,
        1 => 0.0,
        2 => 0.5,
        3 => 0.9,
        _ => draws.uniform(),
    };
    let min_p = match draws.below(4) {
        0 => 0.0,
        1 => 0.05,
        2 => 0.3,
        _ => 1.5,
    };
    let nucleus = if draws.chance(0.5) { Nucleus::KeepCrossing } else { Nucleus::DropCrossing };
    Sampler { temperature, top_k, top_p, min_p, nucleus }
}

/// Each filter alone, on random rows, against its reference, bit for bit; the rows include ties at
/// the top-k boundary and rows where the two nucleus rules disagree, and the test counts them.
#[test]
fn each_filter_matches_its_reference() {
    let mut draws = Draws::new(12);
    let mut top_k_ties = 0;
    let mut nucleus_disagreements = 0;
    let mut min_p_removals = 0;
    for row in 0..1000 {
        let logits = reference_temperature(&random_logits(&mut draws), 1.0);
        let len = logits.len();

        let k = 1 + draws.below(len + 2);
        let mut actual = logits.clone();
        process_logits(&mut actual, &Sampler { top_k: k, ..Sampler::plain() });
        assert_same_bits(&actual, &reference_top_k(&logits, k), &format!("row {row}, top-k {k} of {logits:?}"));
        if k < len && survivors(&actual) > k.min(survivors(&logits)) {
            top_k_ties += 1;
        }

        let p = if draws.chance(0.3) { [0.0, 0.5, 0.9][draws.below(3)] } else { draws.uniform() };
        let mut keep = logits.clone();
        process_logits(&mut keep, &Sampler { top_p: p, nucleus: Nucleus::KeepCrossing, ..Sampler::plain() });
        assert_same_bits(&keep, &reference_top_p(&logits, p), &format!("row {row}, top-p {p} of {logits:?}"));
        let mut drop = logits.clone();
        process_logits(&mut drop, &Sampler { top_p: p, nucleus: Nucleus::DropCrossing, ..Sampler::plain() });
        assert_same_bits(&drop, &reference_bd3lm_nucleus(&logits, p), &format!("row {row}, nucleus {p} of {logits:?}"));
        if survivors(&keep) != survivors(&drop) {
            nucleus_disagreements += 1;
        }

        let min_p = [0.01, 0.2, 0.5, 1.0, 2.0][draws.below(5)];
        let mut actual = logits.clone();
        process_logits(&mut actual, &Sampler { min_p, ..Sampler::plain() });
        assert_same_bits(&actual, &reference_min_p(&logits, min_p), &format!("row {row}, min-p {min_p} of {logits:?}"));
        if survivors(&actual) < survivors(&logits) {
            min_p_removals += 1;
        }
    }
    assert!(top_k_ties > 80, "only {top_k_ties} rows with ties at the top-k boundary");
    assert!(nucleus_disagreements > 300, "only {nucleus_disagreements} rows where the nucleus rules disagree");
    assert!(min_p_removals > 500, "only {min_p_removals} rows where min-p removed a token");
}

/// The whole pipeline with random samplers against the reference pipeline, bit for bit; at least
/// one token survives whenever one was above -inf.
#[test]
fn process_logits_matches_the_reference_pipeline() {
    let mut draws = Draws::new(13);
    let mut changed = 0;
    for row in 0..2000 {
        let logits = random_logits(&mut draws);
        let sampler = random_sampler(&mut draws, logits.len());
        let mut actual = logits.clone();
        process_logits(&mut actual, &sampler);
        let expected = reference_process(&logits, &sampler);
        assert_same_bits(&actual, &expected, &format!("row {row}, {sampler:?} on {logits:?}"));
        let before = reference_temperature(&logits, sampler.temperature);
        if survivors(&before) > 0 {
            assert!(survivors(&actual) > 0, "row {row}: nothing survived");
            let top = argmax(&before) as usize;
            assert_eq!(actual[top], before[top], "row {row}: the top token was removed");
        }
        if survivors(&actual) < survivors(&before) {
            changed += 1;
        }
    }
    assert!(changed > 1200, "only {changed} rows were filtered");
}

/// Hand-worked examples of each rule, and the inputs with no ordinary answer.
#[test]
fn process_logits_hand_examples() {
    let ninf = f32::NEG_INFINITY;
    let run = |logits: &[f32], sampler: Sampler| {
        let mut x = logits.to_vec();
        process_logits(&mut x, &sampler);
        x
    };

    // Top-k keeps the ties with the k-th largest, and k >= len keeps everything.
    let x = [1.0, 3.0, 2.0, 2.0, 0.5];
    assert_same_bits(&run(&x, Sampler { top_k: 2, ..Sampler::plain() }), &[ninf, 3.0, 2.0, 2.0, ninf], "top-k ties");
    assert_same_bits(&run(&x, Sampler { top_k: 1, ..Sampler::plain() }), &[ninf, 3.0, ninf, ninf, ninf], "top-1");
    assert_same_bits(&run(&x, Sampler { top_k: 5, ..Sampler::plain() }), &x, "top-k = len");
    assert_same_bits(&run(&x, Sampler { top_k: 50, ..Sampler::plain() }), &x, "top-k > len");

    // Probabilities 0.5, 0.3, 0.2 with p = 0.6: the descending cumulative sums are 0.5, 0.8, 1.0,
    // so the 0.3 token crosses 0.6. Hugging Face keeps it, BD3-LM drops it.
    let x = [0.2f32.ln(), 0.5f32.ln(), 0.3f32.ln()];
    let keep = Sampler { top_p: 0.6, ..Sampler::plain() };
    let drop = Sampler { top_p: 0.6, nucleus: Nucleus::DropCrossing, ..Sampler::plain() };
    assert_same_bits(&run(&x, keep), &[ninf, x[1], x[2]], "keep crossing");
    assert_same_bits(&run(&x, drop), &[ninf, x[1], ninf], "drop crossing");
    // top_p = 0 keeps the top token only, under both rules; top_p = 1 or NaN disables.
    for nucleus in [Nucleus::KeepCrossing, Nucleus::DropCrossing] {
        assert_same_bits(&run(&x, Sampler { top_p: 0.0, nucleus, ..Sampler::plain() }), &[ninf, x[1], ninf], "p = 0");
        assert_same_bits(&run(&x, Sampler { top_p: 1.0, nucleus, ..Sampler::plain() }), &x, "p = 1");
        assert_same_bits(&run(&x, Sampler { top_p: f64::NAN, nucleus, ..Sampler::plain() }), &x, "p = NaN");
    }

    // Min-p 0.5 of the top probability 0.5 removes the 0.2 token, keeps 0.3; min-p above 1
    // keeps the first of two tied top tokens only.
    assert_same_bits(&run(&x, Sampler { min_p: 0.5, ..Sampler::plain() }), &[ninf, x[1], x[2]], "min-p");
    assert_same_bits(
        &run(&[1.0, 2.0, 2.0], Sampler { min_p: 1.5, ..Sampler::plain() }),
        &[ninf, 2.0, ninf],
        "min-p > 1",
    );

    // Temperature divides in f32; NaN becomes -inf.
    let cold = Sampler { temperature: 0.5, ..Sampler::plain() };
    assert_same_bits(&run(&[1.0, f32::NAN, -3.0, ninf], cold), &[2.0, ninf, -6.0, ninf], "temperature");

    // Empty and all -inf rows pass through every filter without panicking.
    let everything = Sampler { temperature: 0.8, top_k: 2, top_p: 0.5, min_p: 0.1, nucleus: Nucleus::DropCrossing };
    assert!(run(&[], everything).is_empty());
    assert_same_bits(&run(&[ninf, f32::NAN, ninf], everything), &[ninf; 3], "all -inf");
    assert_eq!(
        Sampler::plain(),
        Sampler { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, nucleus: Nucleus::KeepCrossing }
    );
}

// ---------------------------------------------------------------------------------------------
// Gumbel-max and the exponential race.
// ---------------------------------------------------------------------------------------------

/// Gumbel-max against a reference with the same uniforms: all scores, the first largest among the
/// finite logits. Also checks that `uniform` is asked only for candidates.
#[test]
fn gumbel_argmax_matches_the_reference() {
    let mut draws = Draws::new(14);
    for row in 0..2000u32 {
        let logits = random_logits(&mut draws);
        let uniform = |j: u32| uniform_f64(SEED, 15, row, 0, j);
        let candidates: Vec<usize> = (0..logits.len()).filter(|&j| logits[j] > f32::NEG_INFINITY).collect();
        let expected = if candidates.is_empty() {
            0
        } else {
            let score = |j: usize| f64::from(logits[j]) - (-(uniform(j as u32).ln())).ln();
            let best = candidates.iter().map(|&j| score(j)).fold(f64::NEG_INFINITY, f64::max);
            candidates.iter().copied().find(|&j| score(j) == best).unwrap_or(candidates[0])
        };
        let asked = std::cell::RefCell::new(Vec::new());
        let actual = gumbel_argmax(&logits, |j| {
            asked.borrow_mut().push(j as usize);
            uniform(j)
        });
        assert_eq!(actual as usize, expected, "row {row}: {logits:?}");
        assert_eq!(asked.into_inner(), candidates, "row {row}: uniforms asked for");
    }
    // No candidate: argmax's rule, without a single uniform.
    let never = |_: u32| -> f64 { panic!("no uniform is needed") };
    assert_eq!(gumbel_argmax(&[], never), 0);
    assert_eq!(gumbel_argmax(&[f32::NEG_INFINITY, f32::NAN], never), 0);
    // An extreme uniform cannot make a -inf logit win.
    assert_eq!(gumbel_argmax(&[f32::NEG_INFINITY, -50.0], |_| 1.0), 1);
}

/// 200 000 Gumbel-max draws follow `softmax(logits)`: chi-square at 0.999, -inf never drawn, and a
/// distribution at temperature 1.1 rejected.
#[test]
fn gumbel_argmax_samples_the_softmax() {
    let ninf = f32::NEG_INFINITY;
    let logits = [1.0, ninf, -0.3, 2.0, ninf, 0.4];
    let mut counts = [0u64; 6];
    for draw in 0..200_000u32 {
        let j = gumbel_argmax(&logits, |j| uniform_f64(SEED, 16, 0, 0, draw * 6 + j));
        counts[j as usize] += 1;
    }
    let statistic = chi_square(&counts, &softmax(&logits));
    assert!(statistic < CHI_SQUARE_999_DF3, "chi-square {statistic}, counts {counts:?}");
    let warmer: Vec<f32> = logits.iter().map(|&x| x / 1.1).collect();
    let wrong = chi_square(&counts, &softmax(&warmer));
    assert!(wrong > CHI_SQUARE_999_DF3, "temperature 1.1 not rejected: {wrong}");
}

/// The exponential race against a reference with the same uniforms, and its edge cases.
#[test]
fn sample_probs_matches_the_reference() {
    let mut draws = Draws::new(17);
    for row in 0..2000u32 {
        let len = 1 + draws.below(16);
        let probs: Vec<f64> = (0..len)
            .map(|_| match draws.below(10) {
                0 => 0.0,
                1 => -0.5,
                2 => f64::NAN,
                3 => 0.25,
                _ => draws.uniform() * 3.0,
            })
            .collect();
        let uniform = |j: u32| uniform_f64(SEED, 18, row, 0, j);
        let candidates: Vec<usize> = (0..len).filter(|&j| probs[j] > 0.0).collect();
        let score = |j: usize| probs[j] / -(uniform(j as u32).ln());
        let best = candidates.iter().map(|&j| score(j)).fold(f64::NEG_INFINITY, f64::max);
        let expected = candidates.iter().copied().find(|&j| score(j) == best).unwrap_or(0);
        assert_eq!(sample_probs(&probs, uniform) as usize, expected, "row {row}: {probs:?}");
    }
    let never = |_: u32| -> f64 { panic!("no uniform is needed") };
    assert_eq!(sample_probs(&[], never), 0);
    assert_eq!(sample_probs(&[0.0, -1.0, f64::NAN], never), 0);
    assert_eq!(sample_probs(&[0.0, 0.0, 1e-300], |_| 0.5), 2);
    // u = 1 gives an infinite score, which wins; the first of two infinite scores wins.
    assert_eq!(sample_probs(&[5.0, 1.0, 1.0], |j| if j == 0 { 0.5 } else { 1.0 }), 1);
}

/// 200 000 exponential-race draws from unnormalized probabilities follow them: chi-square at
/// 0.999, zero, negative and NaN entries never drawn, and a perturbed distribution rejected.
#[test]
fn sample_probs_samples_the_normalized_probabilities() {
    let probs = [0.3, 0.0, 1.2, -0.4, 0.05, f64::NAN, 0.7];
    let clean: Vec<f64> = probs.iter().map(|&p| if p > 0.0 { p } else { 0.0 }).collect();
    let mut counts = [0u64; 7];
    for draw in 0..200_000u32 {
        let j = sample_probs(&probs, |j| uniform_f64(SEED, 19, 0, 0, draw * 7 + j));
        counts[j as usize] += 1;
    }
    let statistic = chi_square(&counts, &clean);
    assert!(statistic < CHI_SQUARE_999_DF3, "chi-square {statistic}, counts {counts:?}");
    let mut perturbed = clean.clone();
    perturbed[4] = 0.06;
    let wrong = chi_square(&counts, &perturbed);
    assert!(wrong > CHI_SQUARE_999_DF3, "perturbed distribution not rejected: {wrong}");
}

// ---------------------------------------------------------------------------------------------
// Masked-diffusion schedules: transfer counts, position selection, the first-hitting clock.
// ---------------------------------------------------------------------------------------------

/// `transfer_counts` against LLaDA's `get_num_transfer_tokens`, written as in `generate.py`.
#[test]
fn transfer_counts_matches_llada() {
    for masked in 0..=70usize {
        for steps in 0..=20usize {
            let counts = transfer_counts(masked, steps);
            if steps == 0 {
                assert!(counts.is_empty());
                continue;
            }
            // num = full(steps, base); num[:remainder] += 1
            let base = masked / steps;
            let remainder = masked % steps;
            let mut expected = vec![base; steps];
            for count in expected.iter_mut().take(remainder) {
                *count += 1;
            }
            assert_eq!(counts, expected, "masked {masked}, steps {steps}");
            assert_eq!(counts.iter().sum::<usize>(), masked);
        }
    }
    assert_eq!(transfer_counts(10, 4), vec![3, 3, 2, 2]);
}

/// Random confidences (with ties, -inf and NaN) and eligibility masks, sometimes of a different
/// length.
fn random_positions(draws: &mut Draws) -> (Vec<f64>, Vec<bool>) {
    let len = draws.below(20);
    let confidence = (0..len)
        .map(|_| match draws.below(12) {
            0 => f64::NAN,
            1 => f64::NEG_INFINITY,
            2..=6 => draws.below(5) as f64 * 0.2,
            _ => draws.uniform(),
        })
        .collect();
    let eligible_len = if draws.chance(0.2) { len.saturating_sub(2) + draws.below(5) } else { len };
    let eligible = (0..eligible_len).map(|_| draws.chance(0.6)).collect();
    (confidence, eligible)
}

/// The ranking of the eligible positions by repeated linear scans: each time the unchosen eligible
/// position of the largest confidence (NaN as -inf), the first on ties.
fn reference_ranking(confidence: &[f64], eligible: &[bool]) -> Vec<usize> {
    let n = confidence.len().min(eligible.len());
    let mut chosen = vec![false; n];
    let mut ranking = Vec::new();
    loop {
        let mut best: Option<usize> = None;
        for i in 0..n {
            if eligible[i] && !chosen[i] {
                let better = match best {
                    None => true,
                    Some(b) => nan_as_neg_inf(confidence[i]) > nan_as_neg_inf(confidence[b]),
                };
                if better {
                    best = Some(i);
                }
            }
        }
        match best {
            Some(i) => {
                chosen[i] = true;
                ranking.push(i);
            }
            None => return ranking,
        }
    }
}

/// `top_k_positions` against the first `k` of the reference ranking, sorted by position.
#[test]
fn top_k_positions_matches_the_reference() {
    let mut draws = Draws::new(20);
    let mut truncated = 0;
    for row in 0..2000 {
        let (confidence, eligible) = random_positions(&mut draws);
        let k = draws.below(confidence.len() + 3);
        let mut expected: Vec<usize> = reference_ranking(&confidence, &eligible).into_iter().take(k).collect();
        expected.sort_unstable();
        let actual = top_k_positions(&confidence, &eligible, k);
        assert_eq!(actual, expected, "row {row}: k {k}, {confidence:?}, {eligible:?}");
        if actual.len() == k && k > 0 && reference_ranking(&confidence, &eligible).len() > k {
            truncated += 1;
        }
    }
    assert!(truncated > 400, "only {truncated} rows chose among more eligible positions than k");
    // Ties go to the lower position; NaN ranks with -inf.
    assert_eq!(top_k_positions(&[0.5, 0.9, 0.5, 0.5], &[true; 4], 2), vec![0, 1]);
    assert_eq!(top_k_positions(&[f64::NAN, f64::NEG_INFINITY, 0.1], &[true; 3], 2), vec![0, 2]);
    assert_eq!(top_k_positions(&[0.3, 0.9, 0.5], &[true, false, true], 5), vec![0, 2]);
    assert!(top_k_positions(&[], &[], 3).is_empty());
    assert!(top_k_positions(&[0.3], &[true], 0).is_empty());
}

/// `threshold_positions` against Fast-dLLM's loop over the ranking: the first always, every later
/// one unless its confidence is below the threshold (NaN as -inf).
#[test]
fn threshold_positions_matches_fast_dllm() {
    let mut draws = Draws::new(21);
    let mut beyond_first = 0;
    for row in 0..2000 {
        let (confidence, eligible) = random_positions(&mut draws);
        let threshold = [0.0, 0.4, 0.9, 1.5, f64::NEG_INFINITY][draws.below(5)];
        let ranking = reference_ranking(&confidence, &eligible);
        let mut expected = Vec::new();
        for (rank, &i) in ranking.iter().enumerate() {
            let below_threshold = nan_as_neg_inf(confidence[i]) < threshold;
            if rank == 0 || !below_threshold {
                expected.push(i);
            }
        }
        expected.sort_unstable();
        let actual = threshold_positions(&confidence, &eligible, threshold);
        assert_eq!(actual, expected, "row {row}: threshold {threshold}, {confidence:?}, {eligible:?}");
        if actual.len() > 1 && actual.len() < ranking.len() {
            beyond_first += 1;
        }
    }
    assert!(beyond_first > 250, "only {beyond_first} rows where the threshold mattered");
    assert_eq!(threshold_positions(&[0.2, 0.3, 0.25], &[true; 3], 0.9), vec![1]);
    assert_eq!(threshold_positions(&[0.2, 0.3, 0.25], &[true; 3], 0.25), vec![1, 2]);
    assert_eq!(threshold_positions(&[0.2, 0.3, 0.25], &[true; 3], f64::NAN), vec![1]);
    assert!(threshold_positions(&[0.2, 0.3], &[false, false], 0.0).is_empty());
    assert!(threshold_positions(&[], &[true], 0.0).is_empty());
}

/// The first-hitting clock has the law of the largest of `n` uniforms on [0, t], distribution
/// function `(x / t)^n`: Kolmogorov-Smirnov at 0.999 for several `n`, with the law of `2n`
/// uniforms rejected.
#[test]
fn first_hitting_time_is_the_largest_of_n_uniforms() {
    let t = 0.8;
    let samples = 10_000u32;
    let critical = KOLMOGOROV_999 / f64::from(samples).sqrt();
    for n in [1usize, 2, 7, 32] {
        let mut times: Vec<f64> =
            (0..samples).map(|i| first_hitting_time(t, n, uniform_f64(SEED, 22, n as u32, 0, i))).collect();
        assert!(times.iter().all(|&x| x > 0.0 && x < t));
        times.sort_by(|a, b| compare(*a, *b));
        let distance = kolmogorov_smirnov(&times, |x| (x / t).powi(n as i32));
        assert!(distance < critical, "n {n}: distance {distance} >= {critical}");
        let wrong = kolmogorov_smirnov(&times, |x| (x / t).powi(2 * n as i32));
        assert!(wrong > critical, "n {n}: the law of {} uniforms not rejected ({wrong})", 2 * n);
    }
    assert_eq!(first_hitting_time(0.8, 0, 0.3), 0.0);
    assert_eq!(first_hitting_time(0.8, 1, 0.3), 0.8 * 0.3);
    assert_eq!(first_hitting_time(0.5, 2, 0.25), 0.25);
}

// ---------------------------------------------------------------------------------------------
// Speculative sampling.
// ---------------------------------------------------------------------------------------------

/// A random distribution of length `len` with some zeros (at least one entry positive).
fn random_distribution(draws: &mut Draws, len: usize) -> Vec<f64> {
    let mut p: Vec<f64> = (0..len).map(|_| if draws.chance(0.25) { 0.0 } else { draws.uniform() }).collect();
    let j = draws.below(len);
    p[j] += 0.1;
    let sum: f64 = p.iter().sum();
    p.iter().map(|x| x / sum).collect()
}

/// The output distribution of one speculative step, computed exactly: a draft `x ~ q` accepted with
/// probability `a_x = min(1, p_x / q_x)` (checked to be exactly `accept_draft`'s threshold), else a
/// token from `residual(p, q)`; it equals `p` to 1e-12 for random `p` and `q`.
#[test]
fn speculative_sampling_reproduces_the_target() {
    let mut draws = Draws::new(23);
    for row in 0..1000 {
        let len = 1 + draws.below(12);
        let p = random_distribution(&mut draws, len);
        let q = if row % 10 == 0 { p.clone() } else { random_distribution(&mut draws, len) };
        let mut accepted = vec![0.0; len];
        for x in 0..len {
            if q[x] == 0.0 {
                continue;
            }
            let a = (p[x] / q[x]).min(1.0);
            assert!(accept_draft(p[x], q[x], a), "row {row}: u = a_x = {a} rejected");
            if a < 1.0 {
                assert!(!accept_draft(p[x], q[x], a.next_up()), "row {row}: u just above a_x = {a} accepted");
            }
            accepted[x] = q[x] * a;
        }
        let alpha: f64 = accepted.iter().sum();
        let r = residual(&p, &q);
        assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-12, "row {row}: residual {r:?}");
        for x in 0..len {
            let output = accepted[x] + (1.0 - alpha) * r[x];
            assert!((output - p[x]).abs() < 1e-12, "row {row}: output {output} vs p {} at {x}", p[x]);
        }
    }
}

/// The speculative scheme run with `sample_probs`, `accept_draft` and `residual` on 50 000 trials
/// draws from `p` (chi-square at 0.999), and a common wrong scheme is rejected.
#[test]
fn speculative_sampling_by_simulation() {
    let p = [0.3, 0.25, 0.0, 0.2, 0.15, 0.1];
    let q = [0.1, 0.4, 0.2, 0.0, 0.2, 0.1];
    let residual_distribution = residual(&p, &q);
    let mut counts = [0u64; 6];
    for trial in 0..50_000u32 {
        let u = |j: u32| uniform_f64(SEED, 24, trial, 0, j);
        let draft = sample_probs(&q, u) as usize;
        let token = if accept_draft(p[draft], q[draft], u(6)) {
            draft
        } else {
            sample_probs(&residual_distribution, |j| u(7 + j)) as usize
        };
        counts[token] += 1;
    }
    let statistic = chi_square(&counts, &p);
    assert!(statistic < CHI_SQUARE_999_DF4, "chi-square {statistic}, counts {counts:?}");
    // A common mistake, resampling from p instead of the residual after a rejection, gives
    // q * min(1, p / q) + (1 - alpha) * p, which the test rejects.
    let alpha: f64 = p.iter().zip(&q).map(|(a, b)| a.min(*b)).sum();
    let mistaken: Vec<f64> = p.iter().zip(&q).map(|(a, b)| a.min(*b) + (1.0 - alpha) * a).collect();
    let wrong = chi_square(&counts, &mistaken);
    assert!(wrong > CHI_SQUARE_999_DF4, "resampling from p not rejected: {wrong}");
}

/// `residual` against `max(0, p - q) / sum` where it has mass, and its documented fallbacks.
#[test]
fn residual_and_acceptance_edge_cases() {
    let r = residual(&[0.5, 0.3, 0.2], &[0.2, 0.6, 0.2]);
    assert_eq!(r, vec![1.0, 0.0, 0.0]);
    let r = residual(&[0.4, 0.4, 0.2], &[0.2, 0.3, 0.5]);
    assert!((r[0] - 2.0 / 3.0).abs() < 1e-15 && (r[1] - 1.0 / 3.0).abs() < 1e-15 && r[2] == 0.0, "{r:?}");
    // No mass: p itself, normalized; then uniform; empty stays empty.
    assert_eq!(residual(&[1.0, 3.0], &[1.0, 3.0]), vec![0.25, 0.75]);
    assert_eq!(residual(&[0.0, f64::NAN, -1.0, f64::INFINITY], &[0.5; 4]), vec![0.25; 4]);
    assert!(residual(&[], &[0.5]).is_empty());
    // Missing q entries count as 0, extra ones are ignored, NaN counts as 0.
    assert_eq!(residual(&[0.5, 0.5], &[0.5]), vec![0.0, 1.0]);
    assert_eq!(residual(&[0.5, 0.5], &[f64::NAN, 0.5, 7.0]), vec![1.0, 0.0]);

    // q = 0: accept iff p > 0, whatever u; NaN p rejects; u above 1 rejects.
    assert!(accept_draft(0.1, 0.0, 0.999));
    assert!(!accept_draft(0.0, 0.0, 1e-300));
    assert!(!accept_draft(f64::NAN, 0.5, 1e-300));
    assert!(!accept_draft(f64::NAN, 0.0, 1e-300));
    assert!(accept_draft(0.9, 0.3, 1.0));
    assert!(!accept_draft(0.9, 0.3, 1.5));
    assert!(accept_draft(0.2, 0.4, 0.5) && !accept_draft(0.2, 0.4, 0.500_000_1));
}

#[test]
fn guidance_extrapolates_from_the_unconditional_logits() {
    assert_eq!(guided_logit(1.0, 2.0, 0.0), 2.0, "scale 0 is the conditional call");
    assert_eq!(guided_logit(1.0, 2.0, 1.0), 3.0);
    assert_eq!(guided_logit(-1.0, -3.0, 2.0), -7.0);
    assert_eq!(guided_logit(0.5, f32::NEG_INFINITY, 1.0), f32::NEG_INFINITY);
    assert_eq!(guided_logit(f32::NEG_INFINITY, 0.5, 1.0), f32::INFINITY);
    assert_eq!(guided_logit(f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0), f32::NEG_INFINITY);
}
