//! Analytic models: data distributions whose posterior E[x₀ | x_t] is known in closed form, so
//! every field kind and the exact flow map can be evaluated without a network. They give the
//! runtime, the compiler and the samplers ground truth: a sampler's error against an analytic
//! model is its own error, not the network's.
//!
//! A model is a [`Density`] (what the data is) behind [`AnalyticModel`] (what kind of model it
//! pretends to be, and with which interpolant). [`spec::parse_spec`] builds one from text such as
//! `analytic:gmm(preset=eight, kind=eps, interpolant=scaled_linear)`.

pub mod gaussian;
pub mod gmm;
pub mod lookup;
pub mod markov;
pub mod ode;
pub mod spec;
pub mod table;
pub mod tokens;

use sched_lang::types::ModelKind;

use sched_runtime::convert::field_kind_of;
use sched_runtime::interpolant::Interpolant;
use sched_runtime::model::{FieldKind, Label, Model, ModelError, ModelInfo, uniform_time};
use sched_runtime::tensor::Tensor;

pub use gaussian::Gaussian;
pub use gmm::{Component, GaussianMixture};
pub use spec::{SpecError, parse_spec};

/// The posterior of one sample at one noise level: E[x₀ | x], E[ε | x] and the score
/// ∇ log p(x) = −E[ε | x]/σ, each computed so that it stays finite at σ = 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Posterior {
    pub x0: Vec<f64>,
    pub eps: Vec<f64>,
    pub score: Vec<f64>,
}

impl Posterior {
    pub fn zeros(len: usize) -> Posterior {
        Posterior { x0: vec![0.0; len], eps: vec![0.0; len], score: vec![0.0; len] }
    }
}

/// A data distribution with a closed-form posterior.
pub trait Density: Send + Sync {
    /// Elements per sample.
    fn size(&self) -> usize;

    /// The number of class labels, for a class-conditional density.
    fn num_classes(&self) -> Option<usize>;

    /// The posterior at the state `x` of `x = alpha x₀ + sigma ε`, for the data of `label`
    /// (every class when `None`). `label` has been checked against [`Density::num_classes`].
    fn posterior(&self, x: &[f64], alpha: f64, sigma: f64, label: Option<usize>, out: &mut Posterior);

    /// The posterior when every element has its own noise level, `x_k = alpha[k] x₀_k +
    /// sigma[k] ε_k` (the per-position times of diffusion forcing), with `alpha` and `sigma` as
    /// long as `x`. Only a density whose coordinates are independent has one: it computes it and
    /// returns `true`. The default returns `false` and leaves `out` as it was.
    fn posterior_per_element(
        &self,
        _x: &[f64],
        _alpha: &[f64],
        _sigma: &[f64],
        _label: Option<usize>,
        _out: &mut Posterior,
    ) -> bool {
        false
    }

    /// Where the probability-flow ODE takes `x` from the noise level `(alpha, sigma)` of `from` to
    /// that of `to`. The default integrates the ODE numerically ([`transport_by_ode`]).
    fn transport(
        &self,
        x: &[f64],
        from: (f64, f64),
        to: (f64, f64),
        label: Option<usize>,
    ) -> Result<Vec<f64>, ode::OdeError> {
        transport_by_ode(self, x, from, to, label, ode::Tolerance::TIGHT).map(|(y, _)| y)
    }
}

/// The probability-flow ODE solved numerically with Dormand–Prince 5(4).
///
/// Every interpolant with the same κ = σ/α traces the same ODE up to the scale of the state: with
/// `y = x/α` the PF-ODE is `dy/dκ = E[ε | y, κ]` whatever α(t) is (Karras et al. 2022, eq. 4),
/// and the posterior depends on `(x, α, σ)` only through `(y, κ)`. This function therefore
/// integrates in the variable θ = atan2(σ, α) ∈ [0, π/2], on the state `w = x/√(α² + σ²)`, which
/// is the VP-cosine interpolant (α = cos θ, σ = sin θ): there the ODE is
/// `dw/dθ = −sin θ E[x₀ | w] + cos θ E[ε | w]`, smooth and bounded over the whole range (unlike
/// κ, which reaches infinity, and unlike t for discrete schedules, whose α(t) has a kink at every
/// table entry). The result is scaled back by `√(α² + σ²)` of the target.
pub fn transport_by_ode<D: Density + ?Sized>(
    density: &D,
    x: &[f64],
    from: (f64, f64),
    to: (f64, f64),
    label: Option<usize>,
    tol: ode::Tolerance,
) -> Result<(Vec<f64>, ode::OdeStats), ode::OdeError> {
    let radius_from = from.0.hypot(from.1);
    let radius_to = to.0.hypot(to.1);
    let theta_from = from.1.atan2(from.0);
    let theta_to = to.1.atan2(to.0);
    let w0: Vec<f64> = x.iter().map(|v| v / radius_from).collect();
    let mut post = Posterior::zeros(x.len());
    let field = |theta: f64, w: &[f64], dw: &mut [f64]| {
        let (sin, cos) = theta.sin_cos();
        density.posterior(w, cos, sin, label, &mut post);
        for ((d, x0), eps) in dw.iter_mut().zip(&post.x0).zip(&post.eps) {
            *d = -sin * x0 + cos * eps;
        }
    };
    let (w, stats) = ode::dopri5(field, theta_from, theta_to, &w0, tol)?;
    Ok((w.into_iter().map(|v| v * radius_to).collect(), stats))
}

/// Element `i` of a local field of kind `kind` from the posterior at the noise level
/// `(alpha, sigma)`, with the interpolant's derivatives `(d_alpha, d_sigma)` (used by velocity
/// fields only).
fn field_output(kind: FieldKind, post: &Posterior, i: usize, level: (f64, f64), derivatives: (f64, f64)) -> f64 {
    let ((alpha, sigma), (d_alpha, d_sigma)) = (level, derivatives);
    match kind {
        FieldKind::Eps => post.eps[i],
        FieldKind::X0 => post.x0[i],
        FieldKind::V => alpha * post.eps[i] - sigma * post.x0[i],
        FieldKind::Velocity => d_alpha * post.x0[i] + d_sigma * post.eps[i],
        FieldKind::Score => post.score[i],
    }
}

/// A [`Density`] presented as a model of a given kind and interpolant.
pub struct AnalyticModel {
    info: ModelInfo,
    density: Box<dyn Density>,
}

impl AnalyticModel {
    /// `sample_shape` must have `density.size()` elements and `kind` must not be a token kind; the
    /// spec parser guarantees both and reports them as errors.
    pub fn new(
        kind: ModelKind,
        interpolant: Interpolant,
        sample_shape: Vec<usize>,
        density: Box<dyn Density>,
        source: String,
    ) -> AnalyticModel {
        let num_classes = density.num_classes();
        AnalyticModel { info: ModelInfo { kind, interpolant, sample_shape, num_classes, source }, density }
    }

    pub fn density(&self) -> &dyn Density {
        self.density.as_ref()
    }

    fn check_time(&self, t: f64) -> Result<(), ModelError> {
        if (0.0..=1.0).contains(&t) { Ok(()) } else { Err(ModelError::Time { model: self.info.source.clone(), t }) }
    }

    fn check_input(&self, x: &Tensor, label: Label) -> Result<Option<usize>, ModelError> {
        let shape_ok = x.shape.len() == self.info.sample_shape.len() + 1 && x.shape[1..] == self.info.sample_shape[..];
        if !shape_ok {
            let mut expected = vec![x.batch()];
            expected.extend(&self.info.sample_shape);
            return Err(ModelError::Shape { model: self.info.source.clone(), expected, found: x.shape.clone() });
        }
        if x.data.len() != x.shape.iter().product::<usize>() {
            return Err(ModelError::Backend {
                model: self.info.source.clone(),
                message: format!(
                    "the input has {} values but its shape {:?} needs {}",
                    x.data.len(),
                    x.shape,
                    x.shape.iter().product::<usize>()
                ),
            });
        }
        match (label, self.info.num_classes) {
            (None, _) => Ok(None),
            (Some(label), None) => Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind: self.info.kind,
                what: format!("take the class label {label} (it is unconditional)"),
            }),
            (Some(label), Some(classes)) => match usize::try_from(label) {
                Ok(index) if index < classes => Ok(Some(index)),
                _ => Err(ModelError::Label { model: self.info.source.clone(), label, classes }),
            },
        }
    }

    fn backend(&self, error: ode::OdeError) -> ModelError {
        ModelError::Backend { model: self.info.source.clone(), message: error.to_string() }
    }

    /// Applies `per_sample` to each sample of `x` in f64 and collects the results in f32.
    fn map_samples(
        &self,
        x: &Tensor,
        mut per_sample: impl FnMut(&[f64], &mut Vec<f64>) -> Result<(), ModelError>,
    ) -> Result<Tensor, ModelError> {
        let mut data = Vec::with_capacity(x.len());
        let mut sample = Vec::with_capacity(x.per_sample());
        let mut result = Vec::with_capacity(x.per_sample());
        for b in 0..x.batch() {
            sample.clear();
            sample.extend(x.sample(b).iter().map(|&v| f64::from(v)));
            result.clear();
            per_sample(&sample, &mut result)?;
            data.extend(result.iter().map(|&v| v as f32));
        }
        Ok(Tensor::new(x.shape.clone(), data))
    }
}

impl Model for AnalyticModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn field(&self, x: &Tensor, t: f64, label: Label) -> Result<(Tensor, FieldKind), ModelError> {
        self.check_time(t)?;
        let label = self.check_input(x, label)?;
        let interp = &self.info.interpolant;
        let (alpha, sigma) = (interp.alpha(t), interp.sigma(t));
        let kind = self.info.kind;
        let Some(field_kind) = field_kind_of(kind) else {
            return Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind,
                what: "evaluate a continuous field".into(),
            });
        };
        let mut post = Posterior::zeros(self.density.size());
        let output = self.map_samples(x, |sample, out| {
            if kind == ModelKind::Consistency {
                let data_end = (interp.alpha(0.0), interp.sigma(0.0));
                let y = self.density.transport(sample, (alpha, sigma), data_end, label).map_err(|e| self.backend(e))?;
                out.extend(y);
                return Ok(());
            }
            self.density.posterior(sample, alpha, sigma, label, &mut post);
            let (d_alpha, d_sigma) = match field_kind {
                FieldKind::Velocity => (interp.d_alpha(t), interp.d_sigma(t)),
                _ => (0.0, 0.0),
            };
            out.extend(
                (0..sample.len()).map(|i| field_output(field_kind, &post, i, (alpha, sigma), (d_alpha, d_sigma))),
            );
            Ok(())
        })?;
        Ok((output, field_kind))
    }

    fn field_at(&self, x: &Tensor, t: &Tensor, label: Label) -> Result<(Tensor, FieldKind), ModelError> {
        if let Some(time) = uniform_time(t) {
            return self.field(x, time, label);
        }
        let label = self.check_input(x, label)?;
        if t.shape != x.shape || t.data.len() != x.data.len() {
            return Err(ModelError::Backend {
                model: self.info.source.clone(),
                message: format!("the times have shape {:?}, but the input has shape {:?}", t.shape, x.shape),
            });
        }
        for &time in &t.data {
            self.check_time(f64::from(time))?;
        }
        let kind = self.info.kind;
        let not_separable = |why: &str| ModelError::Unsupported {
            model: self.info.source.clone(),
            kind,
            what: format!("take a different time per position ({why})"),
        };
        let field_kind = match field_kind_of(kind) {
            Some(_) if kind == ModelKind::Consistency => {
                return Err(not_separable("a consistency model maps a whole sample from one time"));
            }
            Some(field_kind) => field_kind,
            None => {
                return Err(ModelError::Unsupported {
                    model: self.info.source.clone(),
                    kind,
                    what: "evaluate a continuous field".into(),
                });
            }
        };
        let interp = &self.info.interpolant;
        let per_sample = x.per_sample();
        let mut post = Posterior::zeros(self.density.size());
        let (mut sample, mut alpha, mut sigma) = (Vec::new(), Vec::new(), Vec::new());
        let mut data = Vec::with_capacity(x.len());
        for b in 0..x.batch() {
            let times = t.sample(b);
            sample.clear();
            sample.extend(x.sample(b).iter().map(|&v| f64::from(v)));
            alpha.clear();
            alpha.extend(times.iter().map(|&time| interp.alpha(f64::from(time))));
            sigma.clear();
            sigma.extend(times.iter().map(|&time| interp.sigma(f64::from(time))));
            if !self.density.posterior_per_element(&sample, &alpha, &sigma, label, &mut post) {
                return Err(not_separable("its coordinates are not independent"));
            }
            data.extend((0..per_sample).map(|i| {
                let time = f64::from(times[i]);
                let derivatives = match field_kind {
                    FieldKind::Velocity => (interp.d_alpha(time), interp.d_sigma(time)),
                    _ => (0.0, 0.0),
                };
                field_output(field_kind, &post, i, (alpha[i], sigma[i]), derivatives) as f32
            }));
        }
        Ok((Tensor::new(x.shape.clone(), data), field_kind))
    }

    fn jump(&self, x: &Tensor, t: f64, s: f64, label: Label) -> Result<Tensor, ModelError> {
        self.check_time(t)?;
        self.check_time(s)?;
        let kind = self.info.kind;
        if !(kind.is_two_time() || kind == ModelKind::Consistency) {
            return Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind,
                what: "jump (only two-time and consistency models are told the target time)".into(),
            });
        }
        if kind == ModelKind::Consistency && s != 0.0 {
            return Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind,
                what: format!("jump to s = {s} (a consistency model only jumps to data, s = 0)"),
            });
        }
        let label = self.check_input(x, label)?;
        let interp = &self.info.interpolant;
        let from = (interp.alpha(t), interp.sigma(t));
        let to = (interp.alpha(s), interp.sigma(s));
        self.map_samples(x, |sample, out| {
            out.extend(self.density.transport(sample, from, to, label).map_err(|e| self.backend(e))?);
            Ok(())
        })
    }
}
