//! An adaptive Dormand–Prince 5(4) integrator for the probability-flow ODEs of analytic models.
//!
//! The classic embedded pair (Dormand & Prince 1980) with the fifth-order solution propagated
//! (local extrapolation), the first-same-as-last stage reused, a mixed absolute/relative error
//! norm (the maximum over components) and the usual step-size controller
//! `h ← h · clamp(0.9 · err^(−1/5), 0.2, 5)`.

/// Tolerances and limits of one integration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
    /// The most steps (accepted or rejected) before giving up.
    pub max_steps: usize,
}

impl Tolerance {
    /// The tolerances analytic models use: far below f32 resolution.
    pub const TIGHT: Tolerance = Tolerance { rtol: 1e-10, atol: 1e-10, max_steps: 200_000 };
}

/// Counts of one integration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OdeStats {
    pub accepted: usize,
    pub rejected: usize,
    pub evaluations: usize,
}

/// Why an integration failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OdeError {
    #[error("the ODE solver needed more than {0} steps")]
    TooManySteps(usize),
    #[error("the ODE solution became non-finite at {0}")]
    NonFinite(f64),
}

const C: [f64; 7] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];
const A: [[f64; 6]; 7] = [
    [0.0; 6],
    [1.0 / 5.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0, 0.0],
    [19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0, 0.0, 0.0],
    [9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0, 0.0],
    [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0],
];
/// The fifth-order weights (the last row of `A`, so stage 7 is the next step's stage 1).
const B5: [f64; 7] = [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0, 0.0];
/// The embedded fourth-order weights.
const B4: [f64; 7] =
    [5179.0 / 57600.0, 0.0, 7571.0 / 16695.0, 393.0 / 640.0, -92097.0 / 339200.0, 187.0 / 2100.0, 1.0 / 40.0];

/// Integrates `dy/dτ = f(τ, y)` from `from` to `to` (either direction) starting at `y0`.
pub fn dopri5(
    mut f: impl FnMut(f64, &[f64], &mut [f64]),
    from: f64,
    to: f64,
    y0: &[f64],
    tol: Tolerance,
) -> Result<(Vec<f64>, OdeStats), OdeError> {
    let n = y0.len();
    let mut stats = OdeStats::default();
    let mut y = y0.to_vec();
    let span = to - from;
    if span == 0.0 || n == 0 {
        return Ok((y, stats));
    }
    let direction = span.signum();
    let mut tau = from;
    let mut k: Vec<Vec<f64>> = vec![vec![0.0; n]; 7];
    let mut stage = vec![0.0; n];
    let mut y_new = vec![0.0; n];
    f(tau, &y, &mut k[0]);
    stats.evaluations += 1;
    // A first step of 1% of the span; the controller adapts it within a few steps.
    let mut h = 0.01 * span.abs();
    while (to - tau) * direction > 0.0 {
        if stats.accepted + stats.rejected >= tol.max_steps {
            return Err(OdeError::TooManySteps(tol.max_steps));
        }
        let last = h >= (to - tau).abs();
        let step = if last { to - tau } else { direction * h };
        for s in 1..7 {
            for i in 0..n {
                let increment: f64 = (0..s).map(|j| A[s][j] * k[j][i]).sum();
                stage[i] = y[i] + step * increment;
            }
            f(tau + C[s] * step, &stage, &mut k[s]);
            stats.evaluations += 1;
        }
        // Stage 7 was evaluated at the fifth-order solution, which is `stage` now.
        y_new.copy_from_slice(&stage);
        let mut err: f64 = 0.0;
        for i in 0..n {
            let diff: f64 = (0..7).map(|j| (B5[j] - B4[j]) * k[j][i]).sum::<f64>() * step;
            let scale = tol.atol + tol.rtol * y[i].abs().max(y_new[i].abs());
            err = err.max((diff / scale).abs());
        }
        if !err.is_finite() {
            return Err(OdeError::NonFinite(tau));
        }
        if err <= 1.0 {
            stats.accepted += 1;
            tau = if last { to } else { tau + step };
            std::mem::swap(&mut y, &mut y_new);
            k.swap(0, 6);
        } else {
            stats.rejected += 1;
        }
        let factor = if err == 0.0 { 5.0 } else { (0.9 * err.powf(-0.2)).clamp(0.2, 5.0) };
        h = step.abs() * factor;
    }
    Ok((y, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_decay_to_tolerance() {
        let (y, stats) = dopri5(|_, y, dy| dy[0] = -y[0], 0.0, 3.0, &[1.0], Tolerance::TIGHT).expect("converges");
        assert!((y[0] - (-3.0f64).exp()).abs() < 1e-10, "{}", y[0]);
        assert!(stats.accepted > 10 && stats.accepted < 2000, "{stats:?}");
    }

    #[test]
    fn backwards_rotation_returns_to_start() {
        let rot = |_: f64, y: &[f64], dy: &mut [f64]| {
            dy[0] = -y[1];
            dy[1] = y[0];
        };
        let (there, _) = dopri5(rot, 0.0, 2.0, &[1.0, 0.0], Tolerance::TIGHT).expect("converges");
        assert!((there[0] - 2.0f64.cos()).abs() < 1e-9 && (there[1] - 2.0f64.sin()).abs() < 1e-9);
        let (back, _) = dopri5(rot, 2.0, 0.0, &there, Tolerance::TIGHT).expect("converges");
        assert!((back[0] - 1.0).abs() < 1e-9 && back[1].abs() < 1e-9);
    }

    #[test]
    fn step_limit_is_an_error() {
        let tol = Tolerance { max_steps: 3, ..Tolerance::TIGHT };
        let result = dopri5(|_, y, dy| dy[0] = -50.0 * y[0], 0.0, 10.0, &[1.0], tol);
        assert_eq!(result, Err(OdeError::TooManySteps(3)));
    }
}
