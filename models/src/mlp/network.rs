//! The MLP's network: its weights, the evaluation around it (time and class conditioning,
//! preconditioning, a two-time model's step) on any backend, and the host backend, candle on the
//! CPU. The device backend is [`super::device`].
//!
//! The network: `input = concat(x flattened, temb(τ), temb(τ₂) for two-time kinds, class embedding)`
//! → `l1` → SiLU → `l2` → SiLU → `l3` to the flattened sample size, where τ is the model's time
//! input (see [`TimeInput`](super::manifest::TimeInput)) divided by its span R (1, 1000, N, or 2
//! for `edm_log_sigma`), τ₂ the second time of two-time kinds (divided by R likewise), and
//! `temb(τ) = [sin(2^k π τ) for k < F, then cos(2^k π τ) for k < F]` with F = `time_features`.
//!
//! An optional [`Preconditioning`](super::manifest::Preconditioning) wraps the network: with EDM
//! it is fed `c_in x` and the model's output is `c_skip x + c_out F` (docs/models.md, "EDM
//! preconditioning").

use candle_core::{DType, Device, Tensor as CTensor};
use candle_nn::{Linear, Module};
use sched_lang::types::ModelKind;
use sched_runtime::convert::field_kind_of;
use sched_runtime::model::{FieldKind, Label, ModelError, ModelInfo};
use sched_runtime::tensor::Tensor;

use super::manifest::{Manifest, Scalings};

/// Sinusoidal features of one time value, appended to `out`.
pub fn time_embedding(tau: f64, features: usize, out: &mut Vec<f32>) {
    let angle = |k: usize| std::f64::consts::PI * 2f64.powi(k as i32) * tau;
    out.extend((0..features).map(|k| angle(k).sin() as f32));
    out.extend((0..features).map(|k| angle(k).cos() as f32));
}

/// One linear layer's weights on the host, row-major.
pub(crate) struct LayerWeights {
    /// `[outputs, inputs]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub inputs: usize,
}

/// The MLP's network: its weights and what describes them, evaluated on any backend.
pub struct MlpNetwork {
    pub(crate) info: ModelInfo,
    pub(crate) manifest: Manifest,
    pub(crate) l1: Linear,
    pub(crate) l2: Linear,
    pub(crate) l3: Linear,
    pub(crate) class_embed: Option<CTensor>,
}

impl MlpNetwork {
    pub(crate) fn error(&self, message: impl ToString) -> ModelError {
        ModelError::Backend { model: self.info.source.clone(), message: message.to_string() }
    }

    /// Checks a call's time, input shape and label; returns the class-embedding row (the null
    /// row for an unlabelled call of a class-conditional model).
    pub(crate) fn check(&self, shape: &[usize], t: f64, label: Label) -> Result<Option<usize>, ModelError> {
        if !(0.0..=1.0).contains(&t) {
            return Err(ModelError::Time { model: self.info.source.clone(), t });
        }
        if shape.len() != self.info.sample_shape.len() + 1 || shape[1..] != self.info.sample_shape[..] {
            let mut expected = vec![shape.first().copied().unwrap_or(1)];
            expected.extend(&self.info.sample_shape);
            return Err(ModelError::Shape { model: self.info.source.clone(), expected, found: shape.to_vec() });
        }
        match (label, self.manifest.classes) {
            (None, 0) => Ok(None),
            (None, classes) => Ok(Some(classes)),
            (Some(label), 0) => Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind: self.info.kind,
                what: format!("take the class label {label} (it is unconditional)"),
            }),
            (Some(label), classes) => match usize::try_from(label) {
                Ok(index) if index < classes => Ok(Some(index)),
                _ => Err(ModelError::Label { model: self.info.source.clone(), label, classes }),
            },
        }
    }

    /// What the network takes beside the flattened sample, the same for every sample of a call:
    /// the time embedding of `t` (and of the second time of two-time kinds), then the class
    /// embedding's row `class`.
    pub(crate) fn conditioning(
        &self,
        t: f64,
        second: Option<f64>,
        class: Option<usize>,
    ) -> Result<Vec<f32>, ModelError> {
        let interpolant = &self.manifest.interpolant;
        let time_input = self.manifest.time_input;
        let fed = time_input.time(t, interpolant);
        if !fed.is_finite() {
            return Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind: self.info.kind,
                what: format!("evaluate its network at t = {t}: the time input `{}` is {fed} there", time_input.name()),
            });
        }
        let span = time_input.span(interpolant);
        let mut features = Vec::with_capacity(self.manifest.time_len());
        time_embedding(fed / span, self.manifest.time_features, &mut features);
        if let Some(second) = second {
            time_embedding(second / span, self.manifest.time_features, &mut features);
        }
        if let (Some(table), Some(class)) = (&self.class_embed, class) {
            let row = table.get(class).and_then(|r| r.to_vec1::<f32>()).map_err(|e| self.error(e))?;
            features.extend(row);
        }
        Ok(features)
    }

    /// The network's output for `x` with the conditioning features `features`, on the host.
    fn forward(&self, x: &Tensor, features: &[f32]) -> Result<Tensor, ModelError> {
        let batch = x.batch();
        let flat = self.manifest.sample_len();
        let run = || -> candle_core::Result<Vec<f32>> {
            let xs = CTensor::from_slice(&x.data, (batch, flat), &Device::Cpu)?;
            let rest = CTensor::from_slice(features, (1, features.len()), &Device::Cpu)?.repeat((batch, 1))?;
            let input = CTensor::cat(&[xs, rest], 1)?;
            let h = self.l1.forward(&input)?.silu()?;
            let h = self.l2.forward(&h)?.silu()?;
            let out = self.l3.forward(&h)?;
            out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
        };
        let data = run().map_err(|e| self.error(e))?;
        Ok(Tensor::new(x.shape.clone(), data))
    }

    /// The second time value the network takes for a two-time step from `t` to `s`.
    fn second_time(&self, t: f64, s: f64) -> f64 {
        let interpolant = &self.manifest.interpolant;
        match self.manifest.kind {
            ModelKind::FlowMap => self.manifest.time_input.time(s, interpolant),
            _ => self.manifest.time_input.gap(t - s, interpolant),
        }
    }

    /// The output of a one-time model at `(x, t)`: the network's output, or with a
    /// preconditioning `c_skip x + c_out F(c_in x, time input)`. Where `c_out = 0` (κ = 0 for
    /// EDM, κ ≤ κ_min for a consistency model) the output is `c_skip x` without the network, whose
    /// `edm_log_sigma` time input would be −∞ at κ = 0.
    fn one_time<B: MlpBackend>(
        &self,
        backend: &B,
        x: &B::Tensor,
        t: f64,
        class: Option<usize>,
    ) -> Result<B::Tensor, ModelError> {
        let Some(preconditioning) = self.manifest.preconditioning else {
            return backend.network(self, x, &self.conditioning(t, None, class)?);
        };
        let Scalings { c_in, c_skip, c_out } =
            preconditioning.scalings(self.info.kind, self.manifest.interpolant.kappa(t));
        if c_out == 0.0 {
            return backend.scale(x, c_skip);
        }
        let scaled = backend.scale(x, c_in)?;
        let network = backend.network(self, &scaled, &self.conditioning(t, None, class)?)?;
        backend.combine(x, c_skip, &network, c_out)
    }

    /// [`Model::field`] on any backend.
    pub(crate) fn field_with<B: MlpBackend>(
        &self,
        backend: &B,
        x: &B::Tensor,
        t: f64,
        label: Label,
    ) -> Result<(B::Tensor, FieldKind), ModelError> {
        let class = self.check(B::shape(x), t, label)?;
        let kind = self.info.kind;
        let Some(field_kind) = field_kind_of(kind) else {
            return Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind,
                what: "evaluate a continuous field".into(),
            });
        };
        if !kind.is_two_time() {
            return Ok((self.one_time(backend, x, t, class)?, field_kind));
        }
        // The instantaneous velocity of a two-time model is its average velocity at s = t.
        let features = self.conditioning(t, Some(self.second_time(t, t)), class)?;
        Ok((backend.network(self, x, &features)?, field_kind))
    }

    /// [`Model::jump`] on any backend.
    pub(crate) fn jump_with<B: MlpBackend>(
        &self,
        backend: &B,
        x: &B::Tensor,
        t: f64,
        s: f64,
        label: Label,
    ) -> Result<B::Tensor, ModelError> {
        let class = self.check(B::shape(x), t, label)?;
        if !(0.0..=1.0).contains(&s) {
            return Err(ModelError::Time { model: self.info.source.clone(), t: s });
        }
        let kind = self.info.kind;
        if kind == ModelKind::Consistency {
            if s != 0.0 {
                return Err(ModelError::Unsupported {
                    model: self.info.source.clone(),
                    kind,
                    what: format!("jump to s = {s} (a consistency model only jumps to data, s = 0)"),
                });
            }
            return self.one_time(backend, x, t, class);
        }
        if !kind.is_two_time() {
            return Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind,
                what: "jump (only two-time and consistency models are told the target time)".into(),
            });
        }
        // x_s = x_t + (s − t) u(x_t, t, s), with u the network's average velocity.
        let features = self.conditioning(t, Some(self.second_time(t, s)), class)?;
        let u = backend.network(self, x, &features)?;
        backend.advance(x, &u, (s - t) as f32)
    }

    /// The network's weights, row-major: each layer's `[outputs, inputs]` weight and its bias.
    pub(crate) fn layers(&self) -> Result<[LayerWeights; 3], ModelError> {
        let layer = |linear: &Linear| -> candle_core::Result<LayerWeights> {
            let weight = linear.weight();
            let inputs = weight.dims()[1];
            let bias = match linear.bias() {
                Some(b) => b.to_vec1::<f32>()?,
                None => vec![0.0; weight.dims()[0]],
            };
            Ok(LayerWeights { weight: weight.flatten_all()?.to_vec1::<f32>()?, bias, inputs })
        };
        let all = || Ok::<_, candle_core::Error>([layer(&self.l1)?, layer(&self.l2)?, layer(&self.l3)?]);
        all().map_err(|e| self.error(e))
    }
}

/// The tensor operations of the MLP's evaluation around its network, on the host or on a device.
pub(crate) trait MlpBackend {
    type Tensor;
    fn shape(x: &Self::Tensor) -> &[usize];
    /// `a x`, in f64 per element and rounded to f32 (on a device: in f32).
    fn scale(&self, x: &Self::Tensor, a: f64) -> Result<Self::Tensor, ModelError>;
    /// `a x + b y`, in f64 per element and rounded to f32 (on a device: in f32).
    fn combine(&self, x: &Self::Tensor, a: f64, y: &Self::Tensor, b: f64) -> Result<Self::Tensor, ModelError>;
    /// `x + h u` in f32.
    fn advance(&self, x: &Self::Tensor, u: &Self::Tensor, h: f32) -> Result<Self::Tensor, ModelError>;
    /// The network on `x` with the conditioning features of the call.
    fn network(&self, network: &MlpNetwork, x: &Self::Tensor, features: &[f32]) -> Result<Self::Tensor, ModelError>;
}

/// The host: candle on the CPU.
pub(crate) struct Host;

impl MlpBackend for Host {
    type Tensor = Tensor;

    fn shape(x: &Tensor) -> &[usize] {
        &x.shape
    }

    fn scale(&self, x: &Tensor, a: f64) -> Result<Tensor, ModelError> {
        Ok(Tensor::new(x.shape.clone(), x.data.iter().map(|&v| (a * f64::from(v)) as f32).collect()))
    }

    fn combine(&self, x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor, ModelError> {
        let data = x.data.iter().zip(&y.data).map(|(&xv, &yv)| (a * f64::from(xv) + b * f64::from(yv)) as f32);
        Ok(Tensor::new(x.shape.clone(), data.collect()))
    }

    fn advance(&self, x: &Tensor, u: &Tensor, h: f32) -> Result<Tensor, ModelError> {
        Ok(Tensor::new(x.shape.clone(), x.data.iter().zip(&u.data).map(|(xv, uv)| xv + h * uv).collect()))
    }

    fn network(&self, network: &MlpNetwork, x: &Tensor, features: &[f32]) -> Result<Tensor, ModelError> {
        network.forward(x, features)
    }
}

impl MlpNetwork {
    /// Checks that a host tensor holds as many values as its shape says.
    pub(crate) fn check_data(&self, x: &Tensor) -> Result<(), ModelError> {
        if x.data.len() != x.shape.iter().product::<usize>() {
            return Err(self.error(format!(
                "the input has {} values but its shape {:?} needs more or fewer",
                x.data.len(),
                x.shape
            )));
        }
        Ok(())
    }
}
