//! Gaussian data with a diagonal covariance: x₀ ~ N(mean, diag(std²)).
//!
//! Per element k, with a = α(t), s = σ(t) and v_k = a² std_k² + s², the state
//! x_k = a x₀_k + s ε_k is Gaussian with mean a mean_k and variance v_k, jointly Gaussian with
//! x₀_k and ε_k, so the posterior means are the linear regressions
//!
//! - E[x₀ | x]_k = mean_k + a std_k² (x_k − a mean_k)/v_k,
//! - E[ε | x]_k = s (x_k − a mean_k)/v_k,
//! - ∇ log p_t(x)_k = −(x_k − a mean_k)/v_k (= −E[ε | x]_k / s, and finite at s = 0).
//!
//! The exact flow map. Write d = x − a·mean (per element, dropping k). The PF-ODE velocity is
//! u = a' E[x₀|x] + s' E[ε|x], so
//! dd/dt = u − a'·mean = a'·a std² d/v + s'·s d/v = d (a a' std² + s s')/v = d v'/(2v),
//! with v' = dv/dt = 2 a a' std² + 2 s s'. Hence
//! d/dt (d/√v) = (dd/dt)/√v − d v'/(2 v^{3/2}) = 0:
//! the standardized coordinate z = (x − a·mean)/√v is constant along every ODE trajectory (the
//! flow maps quantiles to quantiles, as a monotone 1-D transport must). Going from t to s,
//! x_s = α(s)·mean + √(α(s)² std² + σ(s)²)·z. This only uses α and σ at the two ends, so it
//! holds for every interpolant, including the piecewise discrete schedules.

use super::{Density, Posterior};

/// x₀ ~ N(mean, diag(std²)), given per element of the flattened sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Gaussian {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl Gaussian {
    /// `mean` and `std` have one value per element of the flattened sample; every std must be
    /// positive and finite (the spec parser checks this).
    pub fn new(mean: Vec<f64>, std: Vec<f64>) -> Gaussian {
        debug_assert_eq!(mean.len(), std.len());
        Gaussian { mean, std }
    }

    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    pub fn std(&self) -> &[f64] {
        &self.std
    }

    /// The posterior of element `k` at the state `xk = alpha x₀_k + sigma ε_k`.
    fn element_posterior(&self, k: usize, xk: f64, alpha: f64, sigma: f64, out: &mut Posterior) {
        let var0 = self.std[k] * self.std[k];
        let v = alpha * alpha * var0 + sigma * sigma;
        let d = xk - alpha * self.mean[k];
        out.x0[k] = self.mean[k] + alpha * var0 * d / v;
        out.eps[k] = sigma * d / v;
        out.score[k] = -d / v;
    }
}

impl Density for Gaussian {
    fn size(&self) -> usize {
        self.mean.len()
    }

    fn num_classes(&self) -> Option<usize> {
        None
    }

    fn posterior(&self, x: &[f64], alpha: f64, sigma: f64, _label: Option<usize>, out: &mut Posterior) {
        for (k, &xk) in x.iter().enumerate() {
            self.element_posterior(k, xk, alpha, sigma, out);
        }
    }

    /// The coordinates are independent, so each element's posterior only needs its own noise
    /// level: the same regression as [`Density::posterior`], element by element.
    fn posterior_per_element(
        &self,
        x: &[f64],
        alpha: &[f64],
        sigma: &[f64],
        _label: Option<usize>,
        out: &mut Posterior,
    ) -> bool {
        for (k, ((&xk, &a), &s)) in x.iter().zip(alpha).zip(sigma).enumerate() {
            self.element_posterior(k, xk, a, s, out);
        }
        true
    }

    fn transport(
        &self,
        x: &[f64],
        from: (f64, f64),
        to: (f64, f64),
        _label: Option<usize>,
    ) -> Result<Vec<f64>, super::ode::OdeError> {
        Ok((0..x.len())
            .map(|k| {
                let var0 = self.std[k] * self.std[k];
                let v_from = from.0 * from.0 * var0 + from.1 * from.1;
                let v_to = to.0 * to.0 * var0 + to.1 * to.1;
                let z = (x[k] - from.0 * self.mean[k]) / v_from.sqrt();
                to.0 * self.mean[k] + v_to.sqrt() * z
            })
            .collect())
    }
}
