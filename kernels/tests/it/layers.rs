//! The reference layers of `sched_kernels::layers` against straightforward, independently
//! written Rust: a transcription of each normative definition with explicit indices (which must
//! agree bit for bit), f64 computations (which must agree to within the rounding of f32), small
//! cases computed by hand, and the documented results of bad operands.

use crate::common;

use common::random::Random;
use sched_kernels::layers::{
    Activation, AttentionShape, activation_code, attention, bias_activation, gather_rows, gelu, layer_norm, silu,
};

/// The bits of values, to compare them exactly (NaN payloads included).
fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// LayerNorm as its definition reads, with explicit indices: per row, the sequential sum times
/// the f32 reciprocal of the width plus 0, the same for the squares of the centered values,
/// then `(x - mean) / sqrt(variance + eps) * weight + bias`.
fn layer_norm_transcribed(x: &[f32], weight: &[f32], bias: &[f32], eps: f32) -> Vec<f32> {
    let width = weight.len();
    let inverse = (1.0_f64 / width as f64) as f32;
    let mut out = vec![0.0_f32; x.len()];
    for r in 0..x.len() / width {
        let sum = (0..width).fold(0.0_f32, |acc, c| acc + x[r * width + c]);
        let mean = sum * inverse + 0.0;
        let squares = (0..width).fold(0.0_f32, |acc, c| acc + (x[r * width + c] - mean) * (x[r * width + c] - mean));
        let variance = squares * inverse + 0.0;
        let deviation = (variance + eps).sqrt();
        for c in 0..width {
            out[r * width + c] = (x[r * width + c] - mean) / deviation * weight[c] + bias[c];
        }
    }
    out
}

/// LayerNorm in f64 of the same f32 inputs: the value the f32 computation approximates.
fn layer_norm_f64(x: &[f32], weight: &[f32], bias: &[f32], eps: f32) -> Vec<f64> {
    let width = weight.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(width) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / width as f64;
        let variance = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / width as f64;
        let deviation = (variance + f64::from(eps)).sqrt();
        for (c, &v) in row.iter().enumerate() {
            out.push((f64::from(v) - mean) / deviation * f64::from(weight[c]) + f64::from(bias[c]));
        }
    }
    out
}

#[test]
fn layer_norm_of_a_small_row_is_computed_by_hand() {
    // Mean 2.5 and variance 1.25, both exact (1/4 is exact in f32).
    let x = [1.0_f32, 2.0, 3.0, 4.0];
    let (weight, bias) = ([1.0_f32, 2.0, -1.0, 0.5], [0.0_f32, 1.0, 0.25, -3.0]);
    let mut out = [f32::NAN; 4];
    layer_norm(&x, &weight, &bias, 0.0, &mut out);
    let deviation = 1.25_f32.sqrt();
    // A weight of -1 only flips the sign, which is exact.
    let expected =
        [-1.5 / deviation, -0.5 / deviation * 2.0 + 1.0, -(0.5 / deviation) + 0.25, 1.5 / deviation * 0.5 - 3.0];
    assert_eq!(bits(&out), bits(&expected));
    // ε is added to the variance.
    layer_norm(&x, &weight, &bias, 0.75, &mut out);
    assert_eq!(out[0], -1.5 / 2.0_f32.sqrt());
    // A constant row is all bias: its centered values are 0 (the mean of two equal values is
    // exact), and 0 / sqrt(ε) is 0.
    let mut out = [f32::NAN; 2];
    layer_norm(&[7.0, 7.0], &[3.0, 3.0], &[0.5, -0.5], 1e-5, &mut out);
    assert_eq!(out, [0.5, -0.5]);
}

#[test]
fn layer_norm_multiplies_the_sum_by_the_f32_reciprocal_of_the_width() {
    // With width 3, `sum * f32(1/3)` is not `sum / 3` for some constant rows: the mean is then
    // not the value itself, and the row normalizes to ±1 times a sign rather than to 0, as in
    // candle. Find such a row and check the reference follows the multiplication.
    let inverse = (1.0_f64 / 3.0) as f32;
    let value = (1..1000).map(|k| k as f32 * 0.1).find(|&c| (c + c + c) * inverse != c).expect("such a value exists");
    let x = [value; 3];
    let mut out = [f32::NAN; 3];
    layer_norm(&x, &[1.0; 3], &[0.0; 3], 0.0, &mut out);
    let mean = (value + value + value) * inverse;
    let centered = value - mean;
    assert_ne!(centered, 0.0);
    let variance = (centered * centered + centered * centered + centered * centered) * inverse;
    assert_eq!(out[0], centered / variance.sqrt(), "the row of {value}");
    assert!(out.iter().all(|&v| v == out[0]));
}

#[test]
fn layer_norm_matches_its_transcription_and_f64_with_large_offsets() {
    let mut random = Random(1);
    for width in (1..=300).step_by(7).chain([1, 2, 31, 32, 33, 64, 300]) {
        let rows = random.size(1, 6);
        // Each row has its own offset of up to 1.2e3 and a spread of about 1, so a one-pass
        // variance (the mean of squares minus the squared mean) would lose every digit.
        let mut x = Vec::new();
        for _ in 0..rows {
            let offset = random.uniform(-1200.0, 1200.0);
            x.extend(random.values(width, -1.5, 1.5).iter().map(|v| offset + v));
        }
        let weight = random.values(width, 0.5, 2.0);
        let bias = random.values(width, -1.0, 1.0);
        let mut out = vec![f32::NAN; x.len()];
        layer_norm(&x, &weight, &bias, 1e-5, &mut out);
        assert_eq!(bits(&out), bits(&layer_norm_transcribed(&x, &weight, &bias, 1e-5)), "width {width}");
        if width == 1 {
            // A single element is its own mean: the output is the bias.
            assert_eq!(bits(&out), bits(&bias.repeat(rows)));
            continue;
        }
        for (k, (&got, exact)) in out.iter().zip(layer_norm_f64(&x, &weight, &bias, 1e-5)).enumerate() {
            // The f32 sum of up to 300 values of about 1e3 carries an error of up to about 1e-3
            // in the mean (half an ulp of the sum per addition, as a random walk), which the
            // weight (up to 2) over the spread (0.87) amplifies; the largest error seen is
            // 1.5e-3. A one-pass variance would be off by more than the variance itself.
            assert!((f64::from(got) - exact).abs() < 5e-3, "width {width}, element {k}: {got}, expected {exact}");
        }
    }
}

#[test]
fn layer_norm_handles_short_and_empty_operands_without_panicking() {
    let x: Vec<f32> = (0..10).map(|k| k as f32).collect();
    let (weight, bias) = ([1.0_f32; 4], [0.0_f32; 4]);
    // An empty weight, or a bias of another length, leaves `out` unchanged.
    for (weight, bias) in [(&[][..], &[][..]), (&weight[..], &bias[..3])] {
        let mut out = vec![-1.0_f32; 10];
        layer_norm(&x, weight, bias, 1e-5, &mut out);
        assert_eq!(out, vec![-1.0; 10]);
    }
    // Only whole rows that both `x` and `out` hold are normalized.
    let mut out = vec![-1.0_f32; 10];
    layer_norm(&x, &weight, &bias, 1e-5, &mut out);
    assert_eq!(bits(&out[..8]), bits(&layer_norm_transcribed(&x[..8], &weight, &bias, 1e-5)));
    assert_eq!(out[8..], [-1.0, -1.0]);
    let mut out = vec![-1.0_f32; 5];
    layer_norm(&x, &weight, &bias, 1e-5, &mut out);
    assert_eq!(bits(&out[..4]), bits(&layer_norm_transcribed(&x[..4], &weight, &bias, 1e-5)));
    assert_eq!(out[4], -1.0);
    let mut out: Vec<f32> = Vec::new();
    layer_norm(&x, &weight, &bias, 1e-5, &mut out);
}

/// The flat index of element `c` of head `h` of token `i` of sequence `b`.
fn at(shape: AttentionShape, b: usize, i: usize, h: usize, c: usize) -> usize {
    ((b * shape.len + i) * shape.heads + h) * shape.head_dim + c
}

/// Attention as its definition reads, with explicit indices, in f32.
fn attention_transcribed(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape) -> Vec<f32> {
    let AttentionShape { batch, len, heads, head_dim, causal } = shape;
    let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
    let mut out = vec![0.0_f32; batch * len * heads * head_dim];
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..len {
                let keys = if causal { i + 1 } else { len };
                let scores: Vec<f32> = (0..keys)
                    .map(|j| {
                        let dot = (0..head_dim)
                            .fold(0.0_f32, |acc, c| acc + q[at(shape, b, i, h, c)] * k[at(shape, b, j, h, c)]);
                        dot * scale + 0.0
                    })
                    .collect();
                let max = scores[1..].iter().fold(scores[0], |m, &s| if m < s { s } else { m });
                let sum = scores.iter().fold(0.0_f32, |acc, &s| acc + (s - max).exp());
                for c in 0..head_dim {
                    out[at(shape, b, i, h, c)] = (0..keys)
                        .fold(0.0_f32, |acc, j| acc + (scores[j] - max).exp() / sum * v[at(shape, b, j, h, c)]);
                }
            }
        }
    }
    out
}

/// Attention in f64 of the same f32 inputs, masking with −∞ scores as candle does.
fn attention_f64(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape) -> Vec<f64> {
    let AttentionShape { batch, len, heads, head_dim, causal } = shape;
    let mut out = vec![0.0_f64; batch * len * heads * head_dim];
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..len {
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        if causal && j > i {
                            return f64::NEG_INFINITY;
                        }
                        let dot: f64 = (0..head_dim)
                            .map(|c| f64::from(q[at(shape, b, i, h, c)]) * f64::from(k[at(shape, b, j, h, c)]))
                            .sum();
                        dot / (head_dim as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for c in 0..head_dim {
                    out[at(shape, b, i, h, c)] =
                        (0..len).map(|j| exps[j] / sum * f64::from(v[at(shape, b, j, h, c)])).sum();
                }
            }
        }
    }
    out
}

/// The elements of an attention's operands.
fn elements(shape: AttentionShape) -> usize {
    shape.batch * shape.len * shape.heads * shape.head_dim
}

/// Random operands `q`, `k` and `v` of `shape`, uniform in `[-scale, scale)`.
fn operands(random: &mut Random, shape: AttentionShape, scale: f32) -> [Vec<f32>; 3] {
    let n = elements(shape);
    [random.values(n, -scale, scale), random.values(n, -scale, scale), random.values(n, -scale, scale)]
}

/// The reference's output of `shape` for `q`, `k` and `v`.
fn attend(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape) -> Vec<f32> {
    let mut out = vec![f32::NAN; elements(shape)];
    attention(q, k, v, shape, &mut out);
    out
}

/// A random shape within the bounds of the brief: batch 1–3, len 1–9, heads 1–4, head_dim 1–16.
fn random_shape(random: &mut Random) -> AttentionShape {
    AttentionShape {
        batch: random.size(1, 3),
        len: random.size(1, 9),
        heads: random.size(1, 4),
        head_dim: random.size(1, 16),
        causal: random.next().is_multiple_of(2),
    }
}

#[test]
fn attention_matches_its_transcription_and_f64() {
    let mut random = Random(2);
    for _ in 0..200 {
        let shape = random_shape(&mut random);
        let [q, k, v] = operands(&mut random, shape, 2.0);
        let out = attend(&q, &k, &v, shape);
        assert_eq!(bits(&out), bits(&attention_transcribed(&q, &k, &v, shape)), "{shape:?}");
        for (e, (&got, exact)) in out.iter().zip(attention_f64(&q, &k, &v, shape)).enumerate() {
            assert!((f64::from(got) - exact).abs() < 1e-5, "{shape:?}, element {e}: {got}, expected {exact}");
        }
    }
}

#[test]
fn attention_of_one_token_is_its_value_and_of_equal_keys_the_mean() {
    let mut random = Random(3);
    // One key: its weight is exp(0) / exp(0) = 1 exactly, and 0 + 1 * v = v.
    for causal in [false, true] {
        let shape = AttentionShape { batch: 2, len: 1, heads: 3, head_dim: 5, causal };
        let [q, k, v] = operands(&mut random, shape, 3.0);
        assert_eq!(bits(&attend(&q, &k, &v, shape)), bits(&v));
    }
    // Equal keys (or a zero query): every weight is 1 / (number of keys), so the output of
    // query i is the mean of the values it sees.
    let shape = AttentionShape { batch: 1, len: 4, heads: 1, head_dim: 2, causal: true };
    let q = vec![0.5_f32, -1.0, 2.0, 0.25, -0.75, 1.5, 3.0, 1.0];
    let k = vec![1.0_f32, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0];
    let v = vec![1.0_f32, 0.0, 2.0, 4.0, 3.0, 8.0, 6.0, -4.0];
    let out = attend(&q, &k, &v, shape);
    assert_eq!(out[..2], [1.0, 0.0]);
    assert_eq!(out[2..4], [1.5, 2.0]);
    assert_eq!(out[4..6], [2.0, 4.0]);
    assert_eq!(out[6..8], [3.0, 2.0]);
    let out = attend(&q, &k, &v, AttentionShape { causal: false, ..shape });
    for i in 0..4 {
        assert_eq!(out[2 * i..2 * i + 2], [3.0, 2.0], "query {i}");
    }
}

#[test]
fn attention_subtracts_the_maximum_score() {
    // Scores of about ±1e4 would overflow exp; the output is the value of the best key.
    let shape = AttentionShape { batch: 1, len: 3, heads: 1, head_dim: 4, causal: false };
    let q = vec![100.0_f32; 12];
    let k = vec![-100.0_f32, -100.0, -100.0, -100.0, 100.0, 100.0, 100.0, 100.0, 99.0, 99.0, 99.0, 99.0];
    let v = vec![1.0_f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
    let out = attend(&q, &k, &v, shape);
    for i in 0..3 {
        assert_eq!(out[4 * i..4 * i + 4], [5.0, 6.0, 7.0, 8.0], "query {i}");
    }
}

#[test]
fn a_later_key_changes_nothing_for_an_earlier_query_when_causal() {
    let mut random = Random(4);
    for _ in 0..100 {
        let shape = AttentionShape { causal: true, ..random_shape(&mut random) };
        let [q, k, v] = operands(&mut random, shape, 2.0);
        let out = attend(&q, &k, &v, shape);
        let b = random.size(0, shape.batch - 1);
        let p = random.size(0, shape.len - 1);
        for (replacement, finite) in [(f32::NAN, false), (f32::INFINITY, false), (5.0, true)] {
            // Token p of sequence b gets another key and value, in every head.
            let (mut k2, mut v2) = (k.clone(), v.clone());
            for h in 0..shape.heads {
                for c in 0..shape.head_dim {
                    k2[at(shape, b, p, h, c)] = replacement;
                    v2[at(shape, b, p, h, c)] = -replacement;
                }
            }
            let changed = attend(&q, &k2, &v2, shape);
            for other in 0..shape.batch {
                for i in 0..shape.len {
                    let row = at(shape, other, i, 0, 0)..at(shape, other, i + 1, 0, 0);
                    let what = format!("{shape:?}, key {p} of sequence {b} = {replacement}, query {i} of {other}");
                    if other != b || i < p {
                        assert_eq!(bits(&changed[row.clone()]), bits(&out[row]), "{what}");
                    } else if finite {
                        assert_ne!(bits(&changed[row.clone()]), bits(&out[row]), "{what}");
                    }
                }
            }
        }
    }
}

#[test]
fn every_key_counts_for_every_query_when_not_causal() {
    let shape = AttentionShape { batch: 1, len: 5, heads: 2, head_dim: 3, causal: false };
    let [q, k, mut v] = operands(&mut Random(5), shape, 1.0);
    let out = attend(&q, &k, &v, shape);
    v[at(shape, 0, 4, 1, 2)] += 1.0;
    let changed = attend(&q, &k, &v, shape);
    for i in 0..shape.len {
        // Head 1 of every query changes, in the changed column only; head 0 does not.
        assert_ne!(changed[at(shape, 0, i, 1, 2)], out[at(shape, 0, i, 1, 2)], "query {i}");
        assert_eq!(changed[at(shape, 0, i, 1, 1)], out[at(shape, 0, i, 1, 1)], "query {i}");
        assert_eq!(changed[at(shape, 0, i, 0, 2)], out[at(shape, 0, i, 0, 2)], "query {i}");
    }
}

#[test]
fn attention_handles_short_long_and_empty_operands_without_panicking() {
    let shape = AttentionShape { batch: 2, len: 3, heads: 2, head_dim: 4, causal: true };
    let n = elements(shape);
    let [q, k, v] = operands(&mut Random(6), shape, 1.0);
    let expected = attend(&q, &k, &v, shape);
    // One operand too short: `out` is unchanged.
    for short in 0..4 {
        let mut operands = [q.clone(), k.clone(), v.clone(), vec![-1.0; n]];
        operands[short].pop();
        let [q, k, v, mut out] = operands;
        let before = out.clone();
        attention(&q, &k, &v, shape, &mut out);
        assert_eq!(bits(&out), bits(&before[..out.len()]), "operand {short} is short");
    }
    // Longer operands: only the prefix of `out` is written.
    let longer = |x: &[f32]| [x, &[9.0; 5][..]].concat();
    let mut out = vec![-1.0_f32; n + 5];
    attention(&longer(&q), &longer(&k), &longer(&v), shape, &mut out);
    assert_eq!(bits(&out[..n]), bits(&expected));
    assert_eq!(out[n..], [-1.0; 5]);
    // Empty and overflowing shapes write nothing.
    let empty = [
        AttentionShape { head_dim: 0, ..shape },
        AttentionShape { len: 0, ..shape },
        AttentionShape { batch: 0, ..shape },
        AttentionShape { heads: 0, ..shape },
        AttentionShape { batch: usize::MAX, len: 2, ..shape },
    ];
    for shape in empty {
        let mut out = vec![-1.0_f32; n];
        attention(&q, &k, &v, shape, &mut out);
        assert_eq!(out, vec![-1.0; n], "{shape:?}");
    }
}

/// erf(x) in f64 by its Taylor series, `2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))`: accurate to about
/// 1e-11 for |x| ≤ 3.5, where the largest term is about 1e5.
fn erf_series(x: f64) -> f64 {
    let mut power = x;
    let mut sum = 0.0;
    for n in 0..200 {
        let term = power / (2 * n + 1) as f64;
        sum += term;
        if term.abs() < 1e-18 {
            break;
        }
        power *= -x * x / (n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn gelu_is_the_exact_form() {
    // Zero, and the sign of zero.
    assert_eq!(gelu(0.0).to_bits(), 0.0_f32.to_bits());
    assert_eq!(gelu(-0.0).to_bits(), (-0.0_f32).to_bits());
    // ±1 and ±3, against the values of 0.5 v (1 + erf(v / √2)) in f64.
    for (v, exact) in [
        (1.0_f32, 0.841_344_746_068_542_9_f64),
        (-1.0, -0.158_655_253_931_457_07),
        (3.0, 2.995_950_305_905_11),
        (-3.0, -0.004_049_694_094_890_31),
    ] {
        // The rounding of erf to f32 (an absolute error of at most 6e-8, times |v| / 2) and of
        // the last two operations.
        let got = f64::from(gelu(v));
        let bound = 1.2e-7 * f64::from(v).abs() + 1.2e-7 * exact.abs();
        assert!((got - exact).abs() <= bound, "gelu({v}) = {got}, expected {exact}");
    }
    // Large values: erf is ±1 in f64, so GELU is the value or -0.
    for v in [10.0_f32, 1e3, 1e30, f32::MAX] {
        assert_eq!(gelu(v), v);
        assert_eq!(gelu(-v).to_bits(), (-0.0_f32).to_bits(), "gelu({})", -v);
    }
    assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
    assert!(gelu(f32::NEG_INFINITY).is_nan(), "0 * -inf, as in candle");
    assert!(gelu(f32::NAN).is_nan());
}

#[test]
fn gelu_follows_its_definition_within_the_rounding_of_erf() {
    // The definition, with erf from a series: t = v * FRAC_1_SQRT_2 in f32, then
    // (erf(t) + 1) * 0.5 * v. The reference rounds erf(t) to f32 (an error of at most 6e-8) and
    // rounds twice more; anything larger is a different formula.
    for k in -4900..=4900 {
        let v = k as f32 * 0.001;
        let t = f64::from(v * std::f32::consts::FRAC_1_SQRT_2);
        let exact = (erf_series(t) + 1.0) * 0.5 * f64::from(v);
        let got = f64::from(gelu(v));
        let bound = 1.2e-7 * f64::from(v).abs() + 1.2e-7 * exact.abs();
        assert!((got - exact).abs() <= bound, "gelu({v}) = {got}, expected {exact}");
    }
}

#[test]
fn bias_activation_applies_each_activation_after_the_bias() {
    assert_eq!(activation_code(Activation::Identity), 0);
    assert_eq!(activation_code(Activation::Silu), 1);
    assert_eq!(activation_code(Activation::Gelu), 2);
    let mut random = Random(7);
    let bias = random.values(5, -2.0, 2.0);
    // Three rows and two elements of a fourth, which take the first two biases.
    let data = random.values(17, -4.0, 4.0);
    let sums: Vec<f32> = data.iter().enumerate().map(|(i, &x)| x + bias[i % 5]).collect();
    for (activation, f) in [
        (Activation::Identity, (|v| v) as fn(f32) -> f32),
        (Activation::Silu, silu as fn(f32) -> f32),
        (Activation::Gelu, gelu as fn(f32) -> f32),
    ] {
        let mut got = data.clone();
        bias_activation(&mut got, &bias, activation);
        let expected: Vec<f32> = sums.iter().map(|&v| f(v)).collect();
        assert_eq!(bits(&got), bits(&expected), "{activation:?}");
    }
    // SiLU is v / (1 + exp(-v)).
    assert_eq!(silu(2.0), 2.0 / (1.0 + (-2.0_f32).exp()));
    // An empty bias leaves the data unchanged.
    let mut got = data.clone();
    bias_activation(&mut got, &[], Activation::Gelu);
    assert_eq!(bits(&got), bits(&data));
}

/// The gather as its definition reads, with explicit indices: element `c` of row `i` is `-inf`
/// if `c` is the blocked column, else element `c` of row `indices[i]` of `src` (every index valid).
fn gather_transcribed(src: &[f32], indices: &[u32], width: usize, blocked: Option<u32>) -> Vec<f32> {
    let mut out = Vec::with_capacity(indices.len() * width);
    for &index in indices {
        for c in 0..width {
            let value = if blocked == Some(c as u32) { f32::NEG_INFINITY } else { src[index as usize * width + c] };
            out.push(value);
        }
    }
    out
}

/// Values whose bits a copy must keep: signed zeros, a subnormal, infinities and NaNs with
/// payloads and either sign.
const GATHER_SPECIALS: [f32; 8] = [
    0.0,
    -0.0,
    1e-45,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    f32::from_bits(0xffc0_1234),
    f32::from_bits(0x7f80_0001),
];

/// A matrix of `rows` rows of `width` random values, with some special values among them.
fn gather_source(random: &mut Random, rows: usize, width: usize) -> Vec<f32> {
    let mut src = random.values(rows * width, -8.0, 8.0);
    for (k, v) in src.iter_mut().enumerate().filter(|(k, _)| k % 5 == 2) {
        *v = GATHER_SPECIALS[(k / 5) % GATHER_SPECIALS.len()];
    }
    src
}

#[test]
fn gather_rows_matches_its_transcription_with_repeated_indices() {
    let mut random = Random(8);
    for _ in 0..300 {
        let (rows, width) = (random.size(1, 12), random.size(1, 40));
        let src = gather_source(&mut random, rows, width);
        // Indices among a few rows, so that they repeat.
        let picked = random.size(1, rows);
        let indices: Vec<u32> = (0..random.size(0, 20)).map(|_| random.below(picked as u64) as u32).collect();
        let blocked = match random.below(4) {
            0 => None,
            1 => Some(random.below(width as u64) as u32),
            2 => Some(width as u32 + random.below(3) as u32),
            _ => Some(u32::MAX),
        };
        let mut out = vec![f32::from_bits(0x7fa5_5a5a); indices.len() * width];
        gather_rows(&src, &indices, width, blocked, &mut out);
        let what = format!("{rows} rows of {width}, indices {indices:?}, blocked {blocked:?}");
        assert_eq!(bits(&out), bits(&gather_transcribed(&src, &indices, width, blocked)), "{what}");
    }
}

#[test]
fn gather_rows_blocks_one_column_of_every_row() {
    let src: Vec<f32> = (0..12).map(|k| k as f32).collect();
    let indices = [2_u32, 0, 2, 1];
    let mut out = vec![f32::NAN; 16];
    // Nothing blocked: the rows themselves.
    gather_rows(&src, &indices, 4, None, &mut out);
    let expected: Vec<f32> =
        [8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0, 8.0, 9.0, 10.0, 11.0, 4.0, 5.0, 6.0, 7.0].into();
    assert_eq!(bits(&out), bits(&expected));
    // Column 1 blocked in every row, the repeated ones included; NaN and +inf become -inf too.
    let mut special = src.clone();
    special[9] = f32::NAN;
    special[5] = f32::INFINITY;
    gather_rows(&special, &indices, 4, Some(1), &mut out);
    for (r, row) in out.chunks_exact(4).enumerate() {
        assert_eq!(row[1], f32::NEG_INFINITY, "row {r}");
        let source = &src[indices[r] as usize * 4..][..4];
        assert_eq!([row[0], row[2], row[3]], [source[0], source[2], source[3]], "row {r}");
    }
    // The last column, and columns past the row, which block nothing.
    gather_rows(&src, &indices, 4, Some(3), &mut out);
    assert_eq!(out[..4], [8.0, 9.0, 10.0, f32::NEG_INFINITY]);
    for blocked in [4, 5, u32::MAX] {
        gather_rows(&src, &indices, 4, Some(blocked), &mut out);
        assert_eq!(bits(&out), bits(&expected), "blocked {blocked}");
    }
}

#[test]
fn gather_rows_leaves_the_rows_of_bad_operands_unchanged_without_panicking() {
    let src: Vec<f32> = (0..10).map(|k| k as f32).collect();
    let fill = -1.0_f32;
    // With width 4, src holds two whole rows: index 2 (the partial row) and beyond are past it.
    let mut out = vec![fill; 16];
    gather_rows(&src, &[1, 2, 0, u32::MAX], 4, Some(0), &mut out);
    let row = |r: usize| out[r * 4..(r + 1) * 4].to_vec();
    assert_eq!(row(0), [f32::NEG_INFINITY, 5.0, 6.0, 7.0]);
    assert_eq!(row(1), [fill; 4]);
    assert_eq!(row(2), [f32::NEG_INFINITY, 1.0, 2.0, 3.0]);
    assert_eq!(row(3), [fill; 4]);
    // An `out` of two and a half rows: the third row, which it holds partly, stays unchanged, and
    // so does everything when it holds less than a row.
    let mut out = vec![fill; 10];
    gather_rows(&src, &[0, 1, 1], 4, None, &mut out);
    assert_eq!(out, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, fill, fill]);
    let mut out = vec![fill; 3];
    gather_rows(&src, &[0], 4, None, &mut out);
    assert_eq!(out, [fill; 3]);
    // A longer `out`: only the first `indices.len() * width` elements are written.
    let mut out = vec![fill; 7];
    gather_rows(&src, &[1], 4, None, &mut out);
    assert_eq!(out, [4.0, 5.0, 6.0, 7.0, fill, fill, fill]);
    // Width 0, no indices, and an empty source write nothing.
    for (src, indices, width) in [(&src[..], &[0_u32][..], 0), (&src[..], &[][..], 4), (&[][..], &[0, 0][..], 4)] {
        let mut out = vec![fill; 8];
        gather_rows(src, indices, width, Some(0), &mut out);
        assert_eq!(out, [fill; 8], "{} source elements, indices {indices:?}, width {width}", src.len());
    }
}
