//! Materialised time grids: the points of `grid(a -> b, steps, spacing)` once the model, and so its
//! interpolant, is known.
//!
//! Every spacing is defined in `docs/grids.md`. In short: the continuous spacings place `steps + 1`
//! points from `a` down to `b`; the κ-spacings (`karras`, `exponential`, `logsnr`) place them
//! evenly in a function of κ = σ/α and, when `b = 0`, reproduce k-diffusion's and diffusers'
//! sigma grids (`steps` noise levels down to the model's smallest one, then data); the discrete
//! spacings reproduce diffusers' integer timesteps `k` (time `(k + 1)/N`) followed by `b`.

use crate::interpolant::Interpolant;
use sched_compiler::grid::Spacing;

/// The points of a grid and where each of its pairs ends.
///
/// A run visits `points[0..steps]`; pair `i` goes from `points[i]` to `pair_ends[i]`. The ends
/// are the next points, except in diffusers' DDIM compatibility mode (`ddim_stride`), where pair
/// `i` ends at DDIM's `prev_timestep = k − N // n` (or at `b` once that is negative), which is
/// not always the next point.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    /// The `steps + 1` times, strictly decreasing; the last is the grid's end `b`.
    pub points: Vec<f64>,
    /// The end time of each of the `steps` pairs.
    pub pair_ends: Vec<f64>,
}

impl Grid {
    /// The number of pairs (solver steps).
    pub fn steps(&self) -> usize {
        self.pair_ends.len()
    }

    /// The pairs `(t, s)` in order, from noise towards data.
    pub fn pairs(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.points.iter().copied().zip(self.pair_ends.iter().copied())
    }
}

/// Why a grid cannot be materialised.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GridError {
    #[error("a grid needs at least one step, got 0")]
    NoSteps,
    #[error("the ends of a grid must be finite numbers, got {from} -> {to}")]
    NotFinite { from: f64, to: f64 },
    #[error("grid times must lie in [0, 1] (1 = noise, 0 = data), got {from} -> {to}")]
    OutOfRange { from: f64, to: f64 },
    #[error("a grid runs from noise to data, so it must decrease: got {from} -> {to}")]
    NotDecreasing { from: f64, to: f64 },
    #[error("`{spacing}`: {message}")]
    InvalidParameter { spacing: &'static str, message: String },
    #[error(
        "`{spacing}` spaces the noise levels κ = σ/α, but the interpolant `{interpolant}` has no finite \
         range of them here ({detail}); use a grid that ends above 0 and starts below 1, or another spacing"
    )]
    NoKappaRange { spacing: &'static str, interpolant: String, detail: String },
    #[error(
        "`{spacing}` uses a training table of {grid} steps, but the model's interpolant `{interpolant}` \
         has {model}; pass `train_steps = {model}`"
    )]
    TrainStepsMismatch { spacing: &'static str, grid: i64, model: usize, interpolant: String },
    #[error(
        "`{spacing}` with {steps} steps over {train_steps} training steps places timestep {timestep} \
         outside the table [0, {last}]",
        last = train_steps - 1
    )]
    TimestepOutOfTable { spacing: &'static str, steps: usize, train_steps: i64, timestep: i64 },
    #[error(
        "`{spacing}` places its first point at t = {first}, above the grid's start {from}; discrete \
         spacings start at diffusers' first timestep, which must not be noisier than the start"
    )]
    StartsAboveFrom { spacing: &'static str, first: f64, from: f64 },
    #[error(
        "`{spacing}` with {steps} steps does not give strictly decreasing times: point {index} is {point} \
         and point {next_index} is {next} (too many steps for this spacing?)",
        next_index = index + 1
    )]
    NotStrictlyDecreasing { spacing: &'static str, steps: usize, index: usize, point: f64, next: f64 },
}

impl GridError {
    /// Every code of this error, with when it is reported (docs/diagnostics.md lists them).
    pub const CODES: &'static [(&'static str, &'static str)] = &[
        ("sched::grid::no_steps", "a grid has no steps"),
        ("sched::grid::not_finite", "a grid's ends are not finite"),
        ("sched::grid::out_of_range", "a grid's ends are outside [0, 1]"),
        ("sched::grid::not_decreasing", "a grid does not run from noise to data"),
        ("sched::grid::invalid_parameter", "a spacing's parameter is out of its domain"),
        ("sched::grid::no_kappa_range", "a κ spacing meets an interpolant without a finite range of κ"),
        ("sched::grid::train_steps_mismatch", "a discrete spacing's table differs from the model's"),
        ("sched::grid::timestep_out_of_table", "a discrete spacing places a timestep outside its table"),
        ("sched::grid::starts_above_from", "a discrete spacing starts above the grid's start"),
        ("sched::grid::not_strictly_decreasing", "a spacing gives times that do not strictly decrease"),
    ];

    /// The error's stable code.
    pub fn code(&self) -> &'static str {
        match self {
            GridError::NoSteps => "sched::grid::no_steps",
            GridError::NotFinite { .. } => "sched::grid::not_finite",
            GridError::OutOfRange { .. } => "sched::grid::out_of_range",
            GridError::NotDecreasing { .. } => "sched::grid::not_decreasing",
            GridError::InvalidParameter { .. } => "sched::grid::invalid_parameter",
            GridError::NoKappaRange { .. } => "sched::grid::no_kappa_range",
            GridError::TrainStepsMismatch { .. } => "sched::grid::train_steps_mismatch",
            GridError::TimestepOutOfTable { .. } => "sched::grid::timestep_out_of_table",
            GridError::StartsAboveFrom { .. } => "sched::grid::starts_above_from",
            GridError::NotStrictlyDecreasing { .. } => "sched::grid::not_strictly_decreasing",
        }
    }
}

/// Materialises `grid(from -> to, steps, spacing)` for a model with the given interpolant.
///
/// Never panics: invalid ends, parameters, and spacings the interpolant cannot support are
/// reported as [`GridError`]s.
pub fn materialize(
    from: f64,
    to: f64,
    steps: usize,
    spacing: &Spacing,
    interpolant: &Interpolant,
) -> Result<Grid, GridError> {
    if steps == 0 {
        return Err(GridError::NoSteps);
    }
    if !from.is_finite() || !to.is_finite() {
        return Err(GridError::NotFinite { from, to });
    }
    if !(0.0..=1.0).contains(&from) || !(0.0..=1.0).contains(&to) {
        return Err(GridError::OutOfRange { from, to });
    }
    if from <= to {
        return Err(GridError::NotDecreasing { from, to });
    }
    let name = spacing.name();
    let (points, pair_ends) = match *spacing {
        Spacing::Uniform => (warped(from, to, steps, |t| t, |u| u), None),
        Spacing::Quadratic => (warped(from, to, steps, f64::sqrt, |u| u * u), None),
        Spacing::Cosine => (warped(from, to, steps, cosine_u, cosine_t), None),
        Spacing::Shift { k } => {
            if !(k.is_finite() && k > 0.0) {
                return Err(invalid(name, format!("the shift must be a positive number, got {k}")));
            }
            (warped(from, to, steps, |t| unshift(k, t), |u| shift(k, u)), None)
        }
        Spacing::Karras { rho } => {
            if !(rho.is_finite() && rho > 0.0) {
                return Err(invalid(name, format!("rho must be a positive number, got {rho}")));
            }
            (kappa_grid(from, to, steps, name, interpolant, |k| k.powf(1.0 / rho), |v| v.powf(rho))?, None)
        }
        // Evenly spaced in log κ and evenly spaced in λ = −log κ are the same points; diffusers'
        // `use_exponential_sigmas` and DPM-Solver's `use_lu_lambdas` coincide the same way.
        Spacing::Exponential | Spacing::LogSnr => {
            (kappa_grid(from, to, steps, name, interpolant, f64::ln, f64::exp)?, None)
        }
        Spacing::Leading { offset, train_steps, ddim_stride } => {
            let stride = checked_train_steps(name, train_steps, steps, interpolant)? / steps as i64;
            let timesteps = (0..steps as i64).rev().map(|i| i * stride + offset).collect();
            discrete_grid(from, to, steps, name, train_steps, timesteps, ddim_stride)?
        }
        Spacing::Trailing { train_steps, ddim_stride } => {
            let n = checked_train_steps(name, train_steps, steps, interpolant)?;
            // numpy's `arange(N, 0, -N/n)` fills `N + i·δ` with δ = (N − N/n) − N (its first two
            // elements' difference, which is not always exactly −N/n), rounded half to even. For
            // some n (61, 103, 121, ... for N = 1000) numpy's length rounds up to n + 1 and
            // diffusers gets an extra timestep −1; the intended n timesteps are kept here.
            let start = n as f64;
            let delta = (start - start / steps as f64) - start;
            let timesteps = (0..steps).map(|i| (start + i as f64 * delta).round_ties_even() as i64 - 1).collect();
            discrete_grid(from, to, steps, name, train_steps, timesteps, ddim_stride)?
        }
        Spacing::Linspace { train_steps, ddim_stride } => {
            let n = checked_train_steps(name, train_steps, steps, interpolant)?;
            // numpy's `linspace(0, N − 1, n)` is `i·step` with the last element exactly `N − 1`.
            let last = (n - 1) as f64;
            let step = if steps > 1 { last / (steps - 1) as f64 } else { 0.0 };
            let timesteps = (0..steps)
                .rev()
                .map(|i| if i + 1 == steps && steps > 1 { last } else { i as f64 * step })
                .map(|k| k.round_ties_even() as i64)
                .collect();
            discrete_grid(from, to, steps, name, train_steps, timesteps, ddim_stride)?
        }
    };
    check_strictly_decreasing(name, steps, &points)?;
    let pair_ends = pair_ends.unwrap_or_else(|| points[1..].to_vec());
    Ok(Grid { points, pair_ends })
}

fn invalid(spacing: &'static str, message: String) -> GridError {
    GridError::InvalidParameter { spacing, message }
}

/// `steps + 1` points evenly spaced in `u = forward(t)` from `forward(from)` to `forward(to)`,
/// mapped back by `inverse`; the ends are exactly `from` and `to`.
fn warped(from: f64, to: f64, steps: usize, forward: impl Fn(f64) -> f64, inverse: impl Fn(f64) -> f64) -> Vec<f64> {
    let (u0, u1) = (forward(from), forward(to));
    (0..=steps)
        .map(|i| match i {
            0 => from,
            i if i == steps => to,
            i => inverse(u0 + (u1 - u0) * i as f64 / steps as f64),
        })
        .collect()
}

/// The cosine spacing's coordinate: `t = 1 − cos(u π/2)`, so `u = acos(1 − t) · 2/π`.
fn cosine_u(t: f64) -> f64 {
    (1.0 - t).acos() / std::f64::consts::FRAC_PI_2
}

fn cosine_t(u: f64) -> f64 {
    1.0 - (u * std::f64::consts::FRAC_PI_2).cos()
}

/// The time shift of SD3 and Flux, `k u / (1 + (k − 1) u)`.
fn shift(k: f64, u: f64) -> f64 {
    k * u / (1.0 + (k - 1.0) * u)
}

/// The inverse of [`shift`]: `t / (k − (k − 1) t)`.
fn unshift(k: f64, t: f64) -> f64 {
    t / (k - (k - 1.0) * t)
}

/// A grid evenly spaced in `forward(κ)`.
///
/// With `to == 0`: `steps` noise levels from κ_max (κ(from), or the interpolant's largest one when
/// κ(from) is infinite or beyond it) down to the interpolant's smallest nonzero one, then data
/// (k-diffusion's `get_sigmas_*` and diffusers' `use_*_sigmas`). With `to > 0`: `steps + 1`
/// levels from κ(from) to κ(to).
fn kappa_grid(
    from: f64,
    to: f64,
    steps: usize,
    spacing: &'static str,
    interpolant: &Interpolant,
    forward: impl Fn(f64) -> f64,
    inverse: impl Fn(f64) -> f64,
) -> Result<Vec<f64>, GridError> {
    let range = interpolant.kappa_range();
    let no_range = |detail: String| GridError::NoKappaRange { spacing, interpolant: interpolant.name(), detail };
    let kappa_from = interpolant.kappa(from);
    let (kappa_max, start) = match range {
        Some((_, max)) if !kappa_from.is_finite() || kappa_from > max => (max, None),
        _ if kappa_from.is_finite() => (kappa_from, Some(from)),
        _ => return Err(no_range(format!("κ({from}) is infinite and the interpolant has no largest noise level"))),
    };
    let (kappa_min, count) = if to == 0.0 {
        match range {
            Some((min, _)) => (min, steps),
            None => {
                return Err(no_range("the grid ends at data and the interpolant has no smallest noise level".into()));
            }
        }
    } else {
        (interpolant.kappa(to), steps + 1)
    };
    if !(kappa_min.is_finite() && kappa_min > 0.0 && kappa_max > kappa_min) {
        return Err(no_range(format!("the noise levels run from κ = {kappa_max} to κ = {kappa_min}")));
    }
    let (v0, v1) = (forward(kappa_max), forward(kappa_min));
    let mut points: Vec<f64> = (0..count)
        .map(|i| {
            let ramp = if count > 1 { i as f64 / (count - 1) as f64 } else { 0.0 };
            interpolant.t_of_kappa(inverse(v0 + ramp * (v1 - v0)))
        })
        .collect();
    if let Some(start) = start {
        points[0] = start;
    }
    if to == 0.0 {
        points.push(0.0);
    } else if let Some(last) = points.last_mut() {
        *last = to;
    }
    Ok(points)
}

/// Checks a discrete spacing's training steps against the step count and the interpolant, and
/// returns them.
fn checked_train_steps(
    spacing: &'static str,
    train_steps: i64,
    steps: usize,
    interpolant: &Interpolant,
) -> Result<i64, GridError> {
    if train_steps <= 0 {
        return Err(invalid(spacing, format!("train_steps must be positive, got {train_steps}")));
    }
    if steps as u64 > train_steps as u64 {
        return Err(invalid(spacing, format!("{steps} steps are more than the {train_steps} training steps")));
    }
    if let Interpolant::Discrete(table) = interpolant
        && table.train_steps() as u64 != train_steps as u64
    {
        return Err(GridError::TrainStepsMismatch {
            spacing,
            grid: train_steps,
            model: table.train_steps(),
            interpolant: interpolant.name(),
        });
    }
    Ok(train_steps)
}

/// The grid of diffusers' integer timesteps `k` (time `(k + 1)/N`), then `to`, with DDIM's pair
/// ends when `ddim_stride` is set.
fn discrete_grid(
    from: f64,
    to: f64,
    steps: usize,
    spacing: &'static str,
    train_steps: i64,
    timesteps: Vec<i64>,
    ddim_stride: bool,
) -> Result<(Vec<f64>, Option<Vec<f64>>), GridError> {
    let n = train_steps as f64;
    if let Some(&timestep) = timesteps.iter().find(|&&k| !(0..train_steps).contains(&k)) {
        return Err(GridError::TimestepOutOfTable { spacing, steps, train_steps, timestep });
    }
    let mut points: Vec<f64> = timesteps.iter().map(|&k| (k + 1) as f64 / n).collect();
    if points[0] > from {
        return Err(GridError::StartsAboveFrom { spacing, first: points[0], from });
    }
    points.push(to);
    let pair_ends = ddim_stride.then(|| {
        let stride = train_steps / steps as i64;
        timesteps.iter().map(|&k| if k >= stride { ((k - stride + 1) as f64 / n).max(to) } else { to }).collect()
    });
    Ok((points, pair_ends))
}

fn check_strictly_decreasing(spacing: &'static str, steps: usize, points: &[f64]) -> Result<(), GridError> {
    for (index, pair) in points.windows(2).enumerate() {
        let (point, next) = (pair[0], pair[1]);
        // `partial_cmp` keeps NaN (no ordering) an error, as a plain `point <= next` would not.
        if point.partial_cmp(&next) != Some(std::cmp::Ordering::Greater) {
            return Err(GridError::NotStrictlyDecreasing { spacing, steps, index, point, next });
        }
    }
    Ok(())
}
