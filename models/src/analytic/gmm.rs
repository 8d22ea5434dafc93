//! Gaussian mixtures with isotropic components: x₀ ~ Σ_j π_j N(μ_j, s_j² I).
//!
//! At the state x = a x₀ + σ ε (a = α(t), σ = σ(t)) component j contributes
//! N(x; a μ_j, v_j I) with v_j = a² s_j² + σ². The responsibilities
//! r_j ∝ π_j N(x; a μ_j, v_j I) are computed from log-densities with log-sum-exp, and within a
//! component the posterior is the Gaussian regression of [`super::gaussian`]:
//!
//! - E[x₀ | x] = Σ_j r_j (μ_j + a s_j² (x − a μ_j)/v_j),
//! - E[ε | x] = Σ_j r_j σ (x − a μ_j)/v_j (equal to (x − a E[x₀|x])/σ, and finite at σ = 0),
//! - ∇ log p_t(x) = −Σ_j r_j (x − a μ_j)/v_j.
//!
//! With a class label, only the components of that class count (their weights renormalized);
//! without one, all components do. The flow map has no closed form: [`Density::transport`] keeps
//! its default, the numerical PF-ODE of [`super::transport_by_ode`].

use std::f64::consts::{FRAC_PI_2, FRAC_PI_4, PI};

use super::{Density, Posterior};

/// One isotropic component.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    /// The (unnormalized) weight π_j > 0.
    pub weight: f64,
    pub mean: Vec<f64>,
    /// The standard deviation s_j > 0 of every coordinate.
    pub std: f64,
    /// The class of the component, for class-conditional mixtures.
    pub label: Option<usize>,
}

/// A mixture of isotropic Gaussians over vectors of one length.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianMixture {
    components: Vec<Component>,
    /// ln π_j − ln Σ π.
    log_weights: Vec<f64>,
    dim: usize,
    num_classes: Option<usize>,
}

impl GaussianMixture {
    /// A mixture of `components`, all with means of the same length, positive weights and stds,
    /// and either all labelled (labels 0..C, every class present) or none. The presets below
    /// satisfy this by construction.
    pub fn new(components: Vec<Component>) -> GaussianMixture {
        let dim = components.first().map_or(0, |c| c.mean.len());
        let total: f64 = components.iter().map(|c| c.weight).sum();
        let log_weights = components.iter().map(|c| (c.weight / total).ln()).collect();
        let num_classes = components.iter().filter_map(|c| c.label).max().map(|max| max + 1);
        GaussianMixture { components, log_weights, dim, num_classes }
    }

    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Eight Gaussians of std 0.1 on the circle of radius 2, at the angles kπ/4 (k = 0..7), with
    /// equal weights.
    pub fn eight() -> GaussianMixture {
        GaussianMixture::new(
            (0..8)
                .map(|k| {
                    let angle = f64::from(k) * FRAC_PI_4;
                    Component { weight: 1.0, mean: vec![2.0 * angle.cos(), 2.0 * angle.sin()], std: 0.1, label: None }
                })
                .collect(),
        )
    }

    /// The dark squares of a 4×4 checkerboard on [−2, 2]²: the unit cells [i−2, i−1]×[j−2, j−1]
    /// with i + j even (i, j = 0..3), 8 of them. Each cell is approximated by a 2×2 grid of
    /// Gaussians at the centres of its quarter cells (±0.25 from the cell's centre) with std 0.15
    /// (a uniform variable on an interval of 0.5 has std 0.144): 32 equally weighted components.
    pub fn checker() -> GaussianMixture {
        let mut components = Vec::with_capacity(32);
        for i in 0..4 {
            for j in 0..4 {
                if (i + j) % 2 != 0 {
                    continue;
                }
                let centre = (f64::from(i) - 1.5, f64::from(j) - 1.5);
                for (dx, dy) in [(-0.25, -0.25), (-0.25, 0.25), (0.25, -0.25), (0.25, 0.25)] {
                    components.push(Component {
                        weight: 1.0,
                        mean: vec![centre.0 + dx, centre.1 + dy],
                        std: 0.15,
                        label: None,
                    });
                }
            }
        }
        GaussianMixture::new(components)
    }

    /// Four classes (labels 0..3) of two components each: class c lies along the ray at angle
    /// π/4 + c·π/2 (one per quadrant), with components of std 0.2 at radii 1 and 2.5, all eight
    /// equally weighted.
    pub fn classes() -> GaussianMixture {
        let mut components = Vec::with_capacity(8);
        for class in 0..4usize {
            let angle = FRAC_PI_4 + class as f64 * FRAC_PI_2;
            for radius in [1.0, 2.5] {
                components.push(Component {
                    weight: 1.0,
                    mean: vec![radius * angle.cos(), radius * angle.sin()],
                    std: 0.2,
                    label: Some(class),
                });
            }
        }
        GaussianMixture::new(components)
    }
}

impl Density for GaussianMixture {
    fn size(&self) -> usize {
        self.dim
    }

    fn num_classes(&self) -> Option<usize> {
        self.num_classes
    }

    fn posterior(&self, x: &[f64], alpha: f64, sigma: f64, label: Option<usize>, out: &mut Posterior) {
        let dim = x.len() as f64;
        // Log-responsibilities of the components that count, then log-sum-exp.
        let mut logits: Vec<(usize, f64)> = Vec::with_capacity(self.components.len());
        for (j, c) in self.components.iter().enumerate() {
            if label.is_some() && c.label != label {
                continue;
            }
            let v = alpha * alpha * c.std * c.std + sigma * sigma;
            let dist2: f64 = x.iter().zip(&c.mean).map(|(xi, mi)| (xi - alpha * mi).powi(2)).sum();
            logits.push((j, self.log_weights[j] - 0.5 * dim * (2.0 * PI * v).ln() - 0.5 * dist2 / v));
        }
        let max = logits.iter().map(|&(_, l)| l).fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = logits.iter().map(|&(_, l)| (l - max).exp()).sum();
        out.x0.iter_mut().chain(out.eps.iter_mut()).chain(out.score.iter_mut()).for_each(|v| *v = 0.0);
        for &(j, logit) in &logits {
            let r = (logit - max).exp() / total;
            let c = &self.components[j];
            let var0 = c.std * c.std;
            let v = alpha * alpha * var0 + sigma * sigma;
            for (k, &xk) in x.iter().enumerate() {
                let d = xk - alpha * c.mean[k];
                out.x0[k] += r * (c.mean[k] + alpha * var0 * d / v);
                out.eps[k] += r * sigma * d / v;
                out.score[k] -= r * d / v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_documented_components() {
        let eight = GaussianMixture::eight();
        assert_eq!(eight.components().len(), 8);
        assert!(eight.components().iter().all(|c| (c.mean[0].hypot(c.mean[1]) - 2.0).abs() < 1e-12));
        let checker = GaussianMixture::checker();
        assert_eq!(checker.components().len(), 32);
        // Every component sits in a dark cell: floor(x + 2) + floor(y + 2) is even.
        for c in checker.components() {
            let cell = (c.mean[0] + 2.0).floor() + (c.mean[1] + 2.0).floor();
            assert_eq!(cell % 2.0, 0.0, "{:?}", c.mean);
        }
        let classes = GaussianMixture::classes();
        assert_eq!(classes.num_classes(), Some(4));
        assert_eq!(eight.num_classes(), None);
    }

    #[test]
    fn far_from_noise_the_posterior_picks_the_nearest_component() {
        let gmm = GaussianMixture::eight();
        let mut post = Posterior::zeros(2);
        // At t where α ≈ 1, σ = 0.01, a point near (2, 0) belongs to the first component.
        gmm.posterior(&[2.05, 0.0], 1.0, 0.01, None, &mut post);
        let v = 0.01 + 1e-4;
        assert!((post.x0[0] - (2.0 + 0.01 * 0.05 / v)).abs() < 1e-12, "{:?}", post.x0);
        assert!((post.eps[0] - 0.01 * 0.05 / v).abs() < 1e-12);
        assert!((post.score[0] + 0.05 / v).abs() < 1e-12);
    }

    #[test]
    fn labels_restrict_the_components() {
        let gmm = GaussianMixture::classes();
        let mut post = Posterior::zeros(2);
        // At pure noise (α = 0) E[x₀] is the prior mean: of class 2 only, or of everything.
        gmm.posterior(&[0.3, -0.2], 0.0, 1.0, Some(2), &mut post);
        let angle = FRAC_PI_4 + PI;
        assert!((post.x0[0] - 1.75 * angle.cos()).abs() < 1e-12 && (post.x0[1] - 1.75 * angle.sin()).abs() < 1e-12);
        gmm.posterior(&[0.3, -0.2], 0.0, 1.0, None, &mut post);
        assert!(post.x0[0].abs() < 1e-12 && post.x0[1].abs() < 1e-12, "{:?}", post.x0);
    }
}
