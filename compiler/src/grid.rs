//! Time grids as the compiler records them; the runtime materialises them (`sched_runtime::grid`)
//! once the model, and so its interpolant, is known.

/// How the points of `grid(a -> b, steps, spacing)` are placed between `a` and `b`.
///
/// All grids run from `a` (noisier) down to `b` and have `steps + 1` points, the first `a` and
/// the last `b`, except the discrete spacings, which place the interior points on the model's
/// training table the way diffusers does (see docs/grids.md).
#[derive(Clone, Debug, PartialEq)]
pub enum Spacing {
    /// Evenly spaced in t.
    Uniform,
    /// Evenly spaced in sqrt(t).
    Quadratic,
    /// t = 1 - cos(u π/2) for evenly spaced u.
    Cosine,
    /// Evenly spaced in κ^(1/ρ), κ = σ/α (Karras et al.), between the model's largest noise level
    /// (or κ(a)) and its smallest nonzero one, then `b`.
    Karras { rho: f64 },
    /// Evenly spaced in log κ, then `b`.
    Exponential,
    /// Evenly spaced in λ = log(α/σ) (DPM-Solver's `lu_lambdas`), then `b`.
    LogSnr,
    /// Uniform in t, then t ↦ k t / (1 + (k − 1) t) (SD3, Flux).
    Shift { k: f64 },
    /// diffusers' `leading`: `arange(n) * (N // n) + offset`, reversed.
    Leading { offset: i64, train_steps: i64, ddim_stride: bool },
    /// diffusers' `trailing`: `round(arange(N, 0, -N / n)) - 1`.
    Trailing { train_steps: i64, ddim_stride: bool },
    /// diffusers' `linspace`: `round(linspace(0, N - 1, n))`, reversed.
    Linspace { train_steps: i64, ddim_stride: bool },
}

impl Spacing {
    pub fn name(&self) -> &'static str {
        match self {
            Spacing::Uniform => "uniform",
            Spacing::Quadratic => "quadratic",
            Spacing::Cosine => "cosine",
            Spacing::Karras { .. } => "karras",
            Spacing::Exponential => "exponential",
            Spacing::LogSnr => "logsnr",
            Spacing::Shift { .. } => "shift",
            Spacing::Leading { .. } => "leading",
            Spacing::Trailing { .. } => "trailing",
            Spacing::Linspace { .. } => "linspace",
        }
    }
}
