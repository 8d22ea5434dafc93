//! Sample-quality metrics: how far a set of generated samples is from held-out data, for the
//! inference-time scaling study (quality against the number of model calls).
//!
//! Both sets are `[n, d]` tensors (`n` samples of `d ≥ 1` coordinates, row-major); the two sizes
//! may differ, the dimensions must agree, and every value must be finite. All arithmetic is in
//! f64. Definitions (normative):
//!
//! - **Sliced Wasserstein-2** ([`sliced_w2`]): `SW2(a, b) = sqrt(mean_k W2²(θ_k·a, θ_k·b))` over
//!   `K` random unit directions. Direction `k` is the normalized vector of the `d` Gaussian draws
//!   `philox::gaussian(seed, 0, k >> 32, k mod 2^32, j)` for `j = 0..d` (site 0, step 0 and sample
//!   `k` for every `k < 2^32`); the draws are never exactly zero, so the norm is positive.
//! - **1-D W2²** between the empirical distributions of `x_0 ≤ … ≤ x_{n−1}` and
//!   `y_0 ≤ … ≤ y_{m−1}` (both sorted): `∫_0^1 (F_x⁻¹(q) − F_y⁻¹(q))² dq`, where the quantile
//!   function is the step function `F_x⁻¹(q) = x_i` for `q ∈ (i/n, (i+1)/n]`. It is computed
//!   exactly by merging the breakpoints `i/n` and `j/m` (the interval widths are exact rationals
//!   with denominator `n·m`); for `n = m` it is the mean squared difference of the sorted values.
//! - **Squared MMD** ([`mmd2_rbf`]): with the kernel `k(x, y) = Σ_h exp(−|x − y|² / (2h²))` summed
//!   over the bandwidths `h`, the unbiased estimator (U-statistics)
//!   `MMD² = Σ_{i≠j} k(a_i, a_j) / (n(n−1)) + Σ_{i≠j} k(b_i, b_j) / (m(m−1)) − 2 Σ_{i,j} k(a_i, b_j) / (n·m)`.
//!   It needs at least two samples in each set, and it can be slightly negative when the two
//!   distributions agree; it is returned as is.
//! - **Estimate** ([`Estimate::of`]): the mean and the sample standard deviation (divisor
//!   `count − 1`, and 0 for a single value) of a metric over repeated evaluations.

use std::fmt;

use sched_kernels::philox;

use sched_runtime::tensor::Tensor;

/// The default number of random directions of [`Metric::Sw2`].
pub const DEFAULT_PROJECTIONS: usize = 256;

/// The default MMD bandwidths for data on about [−2, 2]²: from below the width of the narrowest
/// modes (the eight Gaussians have std 0.1, the moons noise 0.08) through the size of a mode
/// (a checkerboard square is 1 wide) to the scale of the whole data set (about 2), so the kernel
/// sees both misplaced fine structure and misplaced mass.
pub const DEFAULT_BANDWIDTHS: [f64; 5] = [0.1, 0.2, 0.5, 1.0, 2.0];

/// Which of a metric's two arguments an error is about: the first (the generated samples in
/// [`Metric::evaluate`]) or the second (the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Set {
    First,
    Second,
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Set::First => "the first set",
            Set::Second => "the second set",
        })
    }
}

/// Why a metric could not be computed.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum MetricError {
    /// The tensor is not `[n, d]` with `d ≥ 1`, or its data length disagrees with its shape.
    #[error("{set} has shape {shape:?} and {len} values; expected a shape [n, d] with d >= 1 and n·d values")]
    Shape { set: Set, shape: Vec<usize>, len: usize },
    /// The set has fewer samples than the metric needs (one for sliced W2, two for the unbiased MMD).
    #[error("{set} has {count} samples; the metric needs at least {needed}")]
    TooFewSamples { set: Set, count: usize, needed: usize },
    #[error("the sets have different dimensions: the first has shape {first:?}, the second {second:?}")]
    DimensionMismatch { first: Vec<usize>, second: Vec<usize> },
    #[error("{set} has the non-finite value {value} at sample {sample}, coordinate {coordinate}")]
    NonFinite { set: Set, sample: usize, coordinate: usize, value: f32 },
    #[error("sliced W2 needs at least one projection")]
    ZeroProjections,
    #[error("the MMD needs at least one bandwidth")]
    NoBandwidths,
    /// A bandwidth `h` must be positive and finite, with `1 / (2h²)` finite.
    #[error(
        "bandwidth {index} is {value}; bandwidths must be positive and finite (and not so small that 1/(2h²) overflows)"
    )]
    Bandwidth { index: usize, value: f64 },
}

/// The samples of a checked set as f64, row-major, with their count and dimension.
struct Points {
    values: Vec<f64>,
    count: usize,
    dim: usize,
}

impl Points {
    fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }
}

/// Checks that `tensor` is an `[n, d]` set of finite values with `n ≥ needed` and converts it.
fn points(tensor: &Tensor, set: Set, needed: usize) -> Result<Points, MetricError> {
    let shape_error = || MetricError::Shape { set, shape: tensor.shape.clone(), len: tensor.data.len() };
    let [count, dim] = tensor.shape[..] else {
        return Err(shape_error());
    };
    if dim == 0 || count.checked_mul(dim) != Some(tensor.data.len()) {
        return Err(shape_error());
    }
    if count < needed {
        return Err(MetricError::TooFewSamples { set, count, needed });
    }
    if let Some(position) = tensor.data.iter().position(|v| !v.is_finite()) {
        let (sample, coordinate) = (position / dim, position % dim);
        return Err(MetricError::NonFinite { set, sample, coordinate, value: tensor.data[position] });
    }
    Ok(Points { values: tensor.data.iter().map(|&v| f64::from(v)).collect(), count, dim })
}

/// Checks both sets (each with at least `needed` samples) and that their dimensions agree.
fn pair(a: &Tensor, b: &Tensor, needed: usize) -> Result<(Points, Points), MetricError> {
    let (a_points, b_points) = (points(a, Set::First, needed)?, points(b, Set::Second, needed)?);
    if a_points.dim != b_points.dim {
        return Err(MetricError::DimensionMismatch { first: a.shape.clone(), second: b.shape.clone() });
    }
    Ok((a_points, b_points))
}

/// The sliced Wasserstein-2 distance between the sets `a` and `b` (`[n, d]` and `[m, d]`):
/// `sqrt(mean W2²)` of the 1-D projections on `projections` random unit directions drawn from the
/// Philox stream of `seed` (definitions in the module documentation). It is 0 exactly for
/// identical sets and exactly symmetric in `a` and `b`.
pub fn sliced_w2(a: &Tensor, b: &Tensor, projections: usize, seed: u64) -> Result<f64, MetricError> {
    if projections == 0 {
        return Err(MetricError::ZeroProjections);
    }
    let (a, b) = pair(a, b, 1)?;
    let mut direction = vec![0.0; a.dim];
    let (mut x, mut y) = (vec![0.0; a.count], vec![0.0; b.count]);
    let mut total = 0.0;
    for k in 0..projections {
        let (step, sample) = ((k >> 32) as u32, k as u32);
        for (j, component) in direction.iter_mut().enumerate() {
            *component = f64::from(philox::gaussian(seed, 0, step, sample, j as u32));
        }
        let norm = direction.iter().map(|c| c * c).sum::<f64>().sqrt();
        direction.iter_mut().for_each(|c| *c /= norm);
        project(&a, &direction, &mut x);
        project(&b, &direction, &mut y);
        total += w2_squared_sorted(&x, &y);
    }
    Ok((total / projections as f64).sqrt())
}

/// Writes the sorted projections `θ·p_i` of the points on `direction` into `out`.
fn project(points: &Points, direction: &[f64], out: &mut [f64]) {
    for (i, value) in out.iter_mut().enumerate() {
        *value = points.row(i).iter().zip(direction).map(|(p, t)| p * t).sum();
    }
    out.sort_unstable_by(f64::total_cmp);
}

/// The 1-D W2² between the empirical distributions of the sorted, non-empty `x` and `y`: the
/// integral over `q ∈ (0, 1)` of the squared difference of their quantile step functions.
fn w2_squared_sorted(x: &[f64], y: &[f64]) -> f64 {
    let (n, m) = (x.len() as u128, y.len() as u128);
    // Quantile levels in units of 1 / (n·m): x's breakpoints are multiples of m, y's of n.
    let (mut i, mut j, mut level) = (0usize, 0usize, 0u128);
    let mut sum = 0.0;
    while i < x.len() && j < y.len() {
        let (x_end, y_end) = ((i as u128 + 1) * m, (j as u128 + 1) * n);
        let end = x_end.min(y_end);
        let difference = x[i] - y[j];
        sum += (end - level) as f64 * difference * difference;
        level = end;
        if x_end == end {
            i += 1;
        }
        if y_end == end {
            j += 1;
        }
    }
    sum / (n * m) as f64
}

/// The unbiased estimate of the squared maximum mean discrepancy between the sets `a` and `b`
/// (`[n, d]` and `[m, d]`, `n, m ≥ 2`) with the sum of the RBF kernels of `bandwidths`
/// (definition in the module documentation). It can be slightly negative; it is returned as is.
pub fn mmd2_rbf(a: &Tensor, b: &Tensor, bandwidths: &[f64]) -> Result<f64, MetricError> {
    if bandwidths.is_empty() {
        return Err(MetricError::NoBandwidths);
    }
    let mut scales = Vec::with_capacity(bandwidths.len());
    for (index, &h) in bandwidths.iter().enumerate() {
        let scale = -0.5 / (h * h);
        if !(h > 0.0 && h.is_finite() && scale.is_finite()) {
            return Err(MetricError::Bandwidth { index, value: h });
        }
        scales.push(scale);
    }
    let (a, b) = pair(a, b, 2)?;
    let (n, m) = (a.count as f64, b.count as f64);
    // The within-set sums are over unordered pairs i < j, which count each ordered pair once.
    let within_a = 2.0 * within(&a, &scales) / (n * (n - 1.0));
    let within_b = 2.0 * within(&b, &scales) / (m * (m - 1.0));
    let mut cross = 0.0;
    for i in 0..a.count {
        let p = a.row(i);
        for j in 0..b.count {
            cross += kernel(p, b.row(j), &scales);
        }
    }
    Ok(within_a + within_b - 2.0 * cross / (n * m))
}

/// The sum of the kernel over the unordered pairs `i < j` of distinct samples of one set.
fn within(points: &Points, scales: &[f64]) -> f64 {
    let mut sum = 0.0;
    for i in 0..points.count {
        let p = points.row(i);
        for j in i + 1..points.count {
            sum += kernel(p, points.row(j), scales);
        }
    }
    sum
}

/// The summed RBF kernel `Σ_h exp(scale_h · |p − q|²)` with `scale_h = −1 / (2h²)`.
#[inline]
fn kernel(p: &[f64], q: &[f64], scales: &[f64]) -> f64 {
    let distance2: f64 = p.iter().zip(q).map(|(x, y)| (x - y) * (x - y)).sum();
    scales.iter().map(|s| (s * distance2).exp()).sum()
}

/// A metric's mean and standard deviation over repeated evaluations (for example several seeds of
/// the sampler), for error bars.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    /// The sample standard deviation (divisor `count − 1`); 0 for a single value.
    pub std: f64,
    pub count: usize,
}

impl Estimate {
    /// The mean and sample standard deviation of `values`; `None` when there are none, when any
    /// is not finite, or when the mean or the deviation overflows.
    pub fn of(values: &[f64]) -> Option<Estimate> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let count = values.len();
        let mean = values.iter().sum::<f64>() / count as f64;
        let std = if count == 1 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (count - 1) as f64).sqrt()
        };
        (mean.is_finite() && std.is_finite()).then_some(Estimate { mean, std, count })
    }
}

/// A sample-quality metric, by the name the CLI and the CSVs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// [`sliced_w2`] with [`DEFAULT_PROJECTIONS`] directions.
    Sw2,
    /// [`mmd2_rbf`] with [`DEFAULT_BANDWIDTHS`].
    Mmd,
}

impl Metric {
    pub const ALL: [Metric; 2] = [Metric::Sw2, Metric::Mmd];

    /// The metric's name in the CLI and the CSVs: `sw2` or `mmd`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Sw2 => "sw2",
            Metric::Mmd => "mmd",
        }
    }

    /// The metric named `name`, if any.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The metric between the generated `samples` (the first set) and the held-out `data` (the
    /// second set); `seed` draws the directions of [`Metric::Sw2`] and is unused by [`Metric::Mmd`].
    pub fn evaluate(self, samples: &Tensor, data: &Tensor, seed: u64) -> Result<f64, MetricError> {
        match self {
            Metric::Sw2 => sliced_w2(samples, data, DEFAULT_PROJECTIONS, seed),
            Metric::Mmd => mmd2_rbf(samples, data, &DEFAULT_BANDWIDTHS),
        }
    }
}
