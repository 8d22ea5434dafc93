//! The model contract: what every model source (analytic, safetensors checkpoint, ONNX, a user's
//! Rust type) provides to the runtime. [`Model`] is every model; a token model also answers
//! [`TokenModel`] ([`token`]), whose draws are described by the sampling types of [`draw`].
//!
//! Times are in sched's normalized convention: `t` in [0, 1], 1 is pure noise, 0 is data, and a
//! continuous state is `x_t = alpha(t) x0 + sigma(t) eps` for the model's [`Interpolant`]. A model
//! that was trained with another convention (1000 t, a discrete index, log sigma, ...) converts
//! inside its own implementation: nothing outside a `Model` sees its native time.

pub mod draw;
pub mod error;
pub mod token;

use std::sync::Arc;

use sched_lang::types::ModelKind;

pub use self::error::ModelError;
pub use self::token::{ChatMessage, DeviceTokenModel, KeptLogits, OnDevice, TokenModel, TokenRows, TokenText, Vocab};
use crate::device::{Device, DeviceTensor};
use crate::interpolant::Interpolant;
use crate::tensor::Tensor;

/// The parameterization of a local-field output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// The noise ε.
    Eps,
    /// The clean sample x̂₀.
    X0,
    /// v = α ε − σ x₀.
    V,
    /// The flow velocity dx/dt = α'(t) x₀ + σ'(t) ε.
    Velocity,
    /// The score ∇ log p_t(x) = −ε / σ.
    Score,
}

/// What a model is.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub kind: ModelKind,
    pub interpolant: Interpolant,
    /// The shape of one sample (without the batch dimension).
    pub sample_shape: Vec<usize>,
    /// The number of classes of a class-conditional model; `None` when it takes no label.
    pub num_classes: Option<usize>,
    /// Where the model came from (a path or an analytic spec), for messages and reports.
    pub source: String,
}

/// The class label of an evaluation; `None` is unconditional (the null label of guidance).
pub type Label = Option<i64>;

/// A model the runtime can evaluate. Implementations are immutable and shared between threads.
pub trait Model: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// The local field at `(x, t)`: the output and its parameterization. Local-field models return
    /// their own kind; two-time models (flow map, MeanFlow, shortcut) return their instantaneous
    /// velocity (the map's limit as s → t); consistency models return x̂₀.
    fn field(&self, x: &Tensor, t: f64, label: Label) -> Result<(Tensor, FieldKind), ModelError>;

    /// The local field when every element of `x` has its own time: `t` has `x`'s shape (the
    /// per-position times of diffusion forcing). The default makes one [`Model::field`]
    /// evaluation when every element has the same time and refuses otherwise: a network is told
    /// one time per evaluation unless it was trained with one per position. Models whose
    /// coordinates are independent (an analytic Gaussian) override it.
    fn field_at(&self, x: &Tensor, t: &Tensor, label: Label) -> Result<(Tensor, FieldKind), ModelError> {
        match uniform_time(t) {
            Some(time) => self.field(x, time, label),
            None => {
                let info = self.info();
                Err(ModelError::Unsupported {
                    model: info.source.clone(),
                    kind: info.kind,
                    what: "take a different time per position".into(),
                })
            }
        }
    }

    /// Where `x` at time `t` lands at time `s`, in one evaluation. Two-time models only;
    /// consistency models only for `s = 0`.
    fn jump(&self, x: &Tensor, t: f64, s: f64, label: Label) -> Result<Tensor, ModelError>;

    /// The model's evaluation on device tensors, when it has one (the built-in MLP does). A run
    /// on a device evaluates other models on the host, copying their input down and their output
    /// up.
    fn on_device(&self) -> Option<&dyn DeviceModel> {
        None
    }

    /// The model as a token model, when it is one (kinds `causal_lm`, `masked_lm`, `mtp_lm`).
    /// Token models answer [`Model::field`] and [`Model::jump`] with [`ModelError::Unsupported`].
    fn tokens(&self) -> Option<&dyn TokenModel> {
        None
    }
}

/// The time every element of a tensor of per-position times holds, or `None` when they differ.
/// A tensor without elements holds any time; it gives 0.
pub fn uniform_time(t: &Tensor) -> Option<f64> {
    let first = t.data.first().copied().unwrap_or(0.0);
    let same = |v: f32| v == first || (v.is_nan() && first.is_nan());
    t.data.iter().all(|&v| same(v)).then_some(f64::from(first))
}

/// A model that evaluates on a device's tensors, without copying them to the host.
pub trait DeviceModel: Send + Sync {
    /// [`Model::field`] on the device; the output has the same kind as the host's.
    fn field_on(
        &self,
        device: &Arc<dyn Device>,
        x: &DeviceTensor,
        t: f64,
        label: Label,
    ) -> Result<DeviceTensor, ModelError>;

    /// [`Model::jump`] on the device.
    fn jump_on(
        &self,
        device: &Arc<dyn Device>,
        x: &DeviceTensor,
        t: f64,
        s: f64,
        label: Label,
    ) -> Result<DeviceTensor, ModelError>;
}
