//! Conversions between field parameterizations.
//!
//! A model's raw output `m` at `(x, t)` and the state `x` determine the predictions x̂₀ and ε̂ by
//! an affine map: `x̂₀ = c·x + d·m` and `ε̂ = e·x + f·m`, with coefficients that depend only on
//! the kind of field, the interpolant and `t`. Because every conversion has this form, the compiler
//! can fold it into the coefficients of a solver's fused kernel instead of materializing x̂₀ and ε̂.
//!
//! The formulas (notes/samplers.md §1.3), with α = α(t), σ = σ(t), α' = dα/dt, σ' = dσ/dt and
//! `x = α x₀ + σ ε`:
//!
//! | kind     | definition of m      | x̂₀                         | ε̂                          |
//! |----------|----------------------|-----------------------------|-----------------------------|
//! | eps      | ε                    | (x − σ m)/α                 | m                           |
//! | x0       | x₀                   | m                           | (x − α m)/σ                 |
//! | v        | α ε − σ x₀           | (α x − σ m)/(α² + σ²)       | (σ x + α m)/(α² + σ²)       |
//! | velocity | α' x₀ + σ' ε         | (σ' x − σ m)/det            | (α m − α' x)/det            |
//! | score    | −ε/σ                 | (x + σ² m)/α                | −σ m                        |
//!
//! where det = α σ' − σ α' (1 for rectified flow, π/2 for VP cosine, σ_max for VE).
//!
//! Singular points. The coefficients are computed with IEEE arithmetic and are returned as they
//! come out; two situations make some of them non-finite, and [`FieldCoefficients::is_finite`]
//! tells a caller which:
//!
//! - At σ = 0 (t = 0, data) an x0 model says nothing about ε: its ε̂ coefficients are infinite.
//!   Every other kind is finite there: eps and score give x̂₀ = x exactly, v and velocity models
//!   stay invertible because α² + σ² > 0 and det > 0.
//! - Where α = 0 (pure noise of a VP or TrigFlow interpolant; in floating point cos(π/2) is
//!   6·10⁻¹⁷, not 0, so this only happens in the limit) an eps or score model says nothing about
//!   x₀: its x̂₀ coefficients are 1/α. v and velocity models stay finite.

use sched_lang::types::ModelKind;

use crate::interpolant::Interpolant;
use crate::model::FieldKind;

/// The affine map from `(x, m)` to the predictions: `x̂₀ = x0.0·x + x0.1·m` and
/// `ε̂ = eps.0·x + eps.1·m`, where `m` is the model's raw field output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FieldCoefficients {
    pub x0: (f64, f64),
    pub eps: (f64, f64),
}

impl FieldCoefficients {
    /// Whether all four coefficients are finite (see the module documentation for where they
    /// are not).
    pub fn is_finite(&self) -> bool {
        [self.x0.0, self.x0.1, self.eps.0, self.eps.1].iter().all(|c| c.is_finite())
    }

    /// x̂₀ for one element.
    pub fn x0_of(&self, x: f64, m: f64) -> f64 {
        self.x0.0 * x + self.x0.1 * m
    }

    /// ε̂ for one element.
    pub fn eps_of(&self, x: f64, m: f64) -> f64 {
        self.eps.0 * x + self.eps.1 * m
    }
}

/// The coefficients that turn a field of kind `kind` at time `t` into x̂₀ and ε̂.
pub fn field_coefficients(kind: FieldKind, interpolant: &Interpolant, t: f64) -> FieldCoefficients {
    let alpha = interpolant.alpha(t);
    let sigma = interpolant.sigma(t);
    match kind {
        FieldKind::Eps => FieldCoefficients { x0: (1.0 / alpha, -sigma / alpha), eps: (0.0, 1.0) },
        FieldKind::X0 => FieldCoefficients { x0: (0.0, 1.0), eps: (1.0 / sigma, -alpha / sigma) },
        FieldKind::V => {
            let norm = alpha * alpha + sigma * sigma;
            FieldCoefficients { x0: (alpha / norm, -sigma / norm), eps: (sigma / norm, alpha / norm) }
        }
        FieldKind::Velocity => {
            let d_alpha = interpolant.d_alpha(t);
            let d_sigma = interpolant.d_sigma(t);
            let det = alpha * d_sigma - sigma * d_alpha;
            FieldCoefficients { x0: (d_sigma / det, -sigma / det), eps: (-d_alpha / det, alpha / det) }
        }
        FieldKind::Score => FieldCoefficients { x0: (1.0 / alpha, sigma * sigma / alpha), eps: (0.0, -sigma) },
    }
}

/// The field of kind `kind` that corresponds to the predictions `(x0, eps)` at time `t`: the
/// inverse of [`field_coefficients`] (for the score, `−ε/σ`, which is infinite at σ = 0 unless a
/// caller computes it another way).
pub fn field_from_predictions(kind: FieldKind, interpolant: &Interpolant, t: f64, x0: f64, eps: f64) -> f64 {
    match kind {
        FieldKind::Eps => eps,
        FieldKind::X0 => x0,
        FieldKind::V => interpolant.alpha(t) * eps - interpolant.sigma(t) * x0,
        FieldKind::Velocity => interpolant.d_alpha(t) * x0 + interpolant.d_sigma(t) * eps,
        FieldKind::Score => -eps / interpolant.sigma(t),
    }
}

/// The field kind a model of kind `kind` returns from [`crate::model::Model::field`]: its own
/// kind for local fields, the instantaneous velocity for two-time models, x̂₀ for consistency
/// models, and `None` for token models.
pub fn field_kind_of(kind: ModelKind) -> Option<FieldKind> {
    match kind {
        ModelKind::Eps => Some(FieldKind::Eps),
        ModelKind::X0 | ModelKind::Consistency => Some(FieldKind::X0),
        ModelKind::V => Some(FieldKind::V),
        ModelKind::Velocity | ModelKind::FlowMap | ModelKind::MeanFlow | ModelKind::Shortcut => {
            Some(FieldKind::Velocity)
        }
        ModelKind::Score => Some(FieldKind::Score),
        ModelKind::CausalLm | ModelKind::MaskedLm | ModelKind::MtpLm => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interpolant::{BetaSchedule, DiscreteVp};

    const KINDS: [FieldKind; 5] = [FieldKind::Eps, FieldKind::X0, FieldKind::V, FieldKind::Velocity, FieldKind::Score];

    fn interpolants() -> Vec<Interpolant> {
        vec![
            Interpolant::RectifiedFlow,
            Interpolant::VpCosine,
            Interpolant::Discrete(DiscreteVp::new(BetaSchedule::STABLE_DIFFUSION, 1000)),
            Interpolant::Discrete(DiscreteVp::new(BetaSchedule::SquaredCosCapV2, 1000)),
            Interpolant::Ve { sigma_max: 80.0 },
            Interpolant::TrigFlow { sigma_data: 0.5 },
        ]
    }

    /// The kind's output written from its definition, independently of `field_from_predictions`.
    fn raw_output(kind: FieldKind, interp: &Interpolant, t: f64, x0: f64, eps: f64) -> f64 {
        let (a, s) = (interp.alpha(t), interp.sigma(t));
        match kind {
            FieldKind::Eps => eps,
            FieldKind::X0 => x0,
            FieldKind::V => a * eps - s * x0,
            FieldKind::Velocity => interp.d_alpha(t) * x0 + interp.d_sigma(t) * eps,
            FieldKind::Score => -eps / s,
        }
    }

    #[test]
    fn coefficients_recover_x0_and_eps() {
        let pairs = [(0.7, -1.3), (-2.5, 0.4), (1e-3, 2.0), (3.0, 3.0)];
        for interp in &interpolants() {
            for t in [0.013, 0.1234, 0.37, 0.5, 0.777, 0.95] {
                let (a, s) = (interp.alpha(t), interp.sigma(t));
                for kind in KINDS {
                    let c = field_coefficients(kind, interp, t);
                    assert!(c.is_finite(), "{} {kind:?} t = {t}", interp.name());
                    for (x0, eps) in pairs {
                        let x = a * x0 + s * eps;
                        let m = raw_output(kind, interp, t, x0, eps);
                        let (x0_back, eps_back) = (c.x0_of(x, m), c.eps_of(x, m));
                        let scale = x0.abs().max(eps.abs());
                        assert!(
                            (x0_back - x0).abs() <= 1e-12 * scale,
                            "{} {kind:?} t = {t}: x0 {x0_back} vs {x0}",
                            interp.name()
                        );
                        assert!(
                            (eps_back - eps).abs() <= 1e-12 * scale,
                            "{} {kind:?} t = {t}: eps {eps_back} vs {eps}",
                            interp.name()
                        );
                        let forward = field_from_predictions(kind, interp, t, x0, eps);
                        assert!((forward - m).abs() <= 1e-12 * m.abs().max(1.0), "{kind:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn rectified_flow_velocity_is_eps_minus_x0() {
        // notes/samplers.md §1.3: x̂₀ = x − t u, ε̂ = x + (1 − t) u.
        let c = field_coefficients(FieldKind::Velocity, &Interpolant::RectifiedFlow, 0.25);
        assert_eq!(c, FieldCoefficients { x0: (1.0, -0.25), eps: (1.0, 0.75) });
    }

    #[test]
    fn data_end_is_finite_except_eps_of_an_x0_model() {
        for interp in &interpolants() {
            for kind in KINDS {
                let c = field_coefficients(kind, interp, 0.0);
                if kind == FieldKind::X0 {
                    assert!(c.eps.0.is_infinite(), "{} x0 at t = 0", interp.name());
                    continue;
                }
                assert!(c.is_finite(), "{} {kind:?} at t = 0: {c:?}", interp.name());
                // At σ = 0 the state is the data: x̂₀ = x whatever the model says, except for
                // v and velocity models, which still read x₀ from m.
                if matches!(kind, FieldKind::Eps | FieldKind::Score) {
                    assert_eq!(c.x0, (1.0, 0.0), "{} {kind:?}", interp.name());
                }
            }
        }
    }

    #[test]
    fn noise_end_of_vp_cosine_keeps_v_and_velocity_finite() {
        let c_v = field_coefficients(FieldKind::V, &Interpolant::VpCosine, 1.0);
        assert!((c_v.x0.1 + 1.0).abs() < 1e-15 && (c_v.eps.0 - 1.0).abs() < 1e-15, "{c_v:?}");
        let c_u = field_coefficients(FieldKind::Velocity, &Interpolant::VpCosine, 1.0);
        assert!(c_u.is_finite());
        assert!((c_u.x0.1 + 2.0 / std::f64::consts::PI).abs() < 1e-15, "{c_u:?}");
        // An eps model's x̂₀ is 1/α there: huge, as x carries (almost) no information on x₀.
        let c_eps = field_coefficients(FieldKind::Eps, &Interpolant::VpCosine, 1.0);
        assert!(c_eps.x0.0 > 1e15);
    }

    #[test]
    fn field_kinds_of_model_kinds() {
        assert_eq!(field_kind_of(ModelKind::MeanFlow), Some(FieldKind::Velocity));
        assert_eq!(field_kind_of(ModelKind::Consistency), Some(FieldKind::X0));
        assert_eq!(field_kind_of(ModelKind::Score), Some(FieldKind::Score));
        assert_eq!(field_kind_of(ModelKind::CausalLm), None);
    }
}
