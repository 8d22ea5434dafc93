//! The built-in MLP of continuous models, read from a safetensors checkpoint described by a
//! manifest ([`crate::checkpoint`], `architecture = "mlp"`; docs/models.md documents every field
//! and tensor name).
//!
//! Its halves: [`network`] holds the weights and evaluates them on any backend, with the host's
//! (candle on the CPU); [`device`] uploads them to a device and evaluates there. [`MlpModel`]
//! joins the two behind the model contract, and keeps the weights of each device it ran on.

pub mod device;
pub mod manifest;
pub mod network;
pub mod random;

use std::path::Path;
use std::sync::Arc;

use candle_nn::Linear;
use sched_runtime::device::{Device, DeviceTensor, PerDevice};
use sched_runtime::model::{DeviceModel, FieldKind, Label, Model, ModelError, ModelInfo};
use sched_runtime::tensor::Tensor;

use self::device::{DeviceWeights, OnDevice};
use self::manifest::Manifest;
use self::network::{Host, MlpNetwork};
use crate::checkpoint::{CheckpointFile, ManifestTable};
use crate::error::LoadError;

/// The built-in MLP, loaded from a checkpoint.
pub struct MlpModel {
    network: MlpNetwork,
    /// The weights uploaded to each device the model ran on.
    on_devices: PerDevice<DeviceWeights>,
}

impl MlpModel {
    /// Loads the checkpoint at `path` and its manifest.
    pub fn load(path: &Path) -> Result<MlpModel, LoadError> {
        MlpModel::from_file(&CheckpointFile::open(path)?)
    }

    /// The MLP of an opened checkpoint whose manifest says `architecture = "mlp"`.
    pub fn from_file(checkpoint: &CheckpointFile) -> Result<MlpModel, LoadError> {
        let path = checkpoint.path.as_path();
        let ManifestTable { table, name, strict } = &checkpoint.manifest;
        let manifest = Manifest::from_table(table, name, *strict)?;
        let weights = checkpoint.weights()?;
        let class_embed = match manifest.classes {
            0 => None,
            classes => Some(weights.get("class_embed.weight", &[Some(classes + 1), None])?),
        };
        let class_dim = match &class_embed {
            Some(table) => table.dims()[1],
            None => 0,
        };
        let input = manifest.sample_len() + manifest.time_len() + class_dim;
        let w1 = weights.get("l1.weight", &[None, Some(input)])?;
        let hidden1 = w1.dims()[0];
        let b1 = weights.get("l1.bias", &[Some(hidden1)])?;
        let w2 = weights.get("l2.weight", &[None, Some(hidden1)])?;
        let hidden2 = w2.dims()[0];
        let b2 = weights.get("l2.bias", &[Some(hidden2)])?;
        let w3 = weights.get("l3.weight", &[Some(manifest.sample_len()), Some(hidden2)])?;
        let b3 = weights.get("l3.bias", &[Some(manifest.sample_len())])?;
        let info = ModelInfo {
            kind: manifest.kind,
            interpolant: manifest.interpolant.clone(),
            sample_shape: manifest.sample_shape.clone(),
            num_classes: (manifest.classes > 0).then_some(manifest.classes),
            source: path.display().to_string(),
        };
        let network = MlpNetwork {
            info,
            manifest,
            l1: Linear::new(w1, Some(b1)),
            l2: Linear::new(w2, Some(b2)),
            l3: Linear::new(w3, Some(b3)),
            class_embed,
        };
        Ok(MlpModel { network, on_devices: PerDevice::default() })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.network.manifest
    }

    /// The weights of the network uploaded to `device` (to the device that holds its buffers, if
    /// it passes work on to another), uploaded on the first call.
    fn weights_on(&self, device: &Arc<dyn Device>) -> Result<Arc<DeviceWeights>, ModelError> {
        self.on_devices.get_or_upload(device, |device| DeviceWeights::upload(&self.network, device))
    }
}

impl Model for MlpModel {
    fn info(&self) -> &ModelInfo {
        &self.network.info
    }

    fn field(&self, x: &Tensor, t: f64, label: Label) -> Result<(Tensor, FieldKind), ModelError> {
        self.network.check_data(x)?;
        self.network.field_with(&Host, x, t, label)
    }

    fn jump(&self, x: &Tensor, t: f64, s: f64, label: Label) -> Result<Tensor, ModelError> {
        self.network.check_data(x)?;
        self.network.jump_with(&Host, x, t, s, label)
    }

    fn on_device(&self) -> Option<&dyn DeviceModel> {
        Some(self)
    }
}

impl DeviceModel for MlpModel {
    fn field_on(
        &self,
        device: &Arc<dyn Device>,
        x: &DeviceTensor,
        t: f64,
        label: Label,
    ) -> Result<DeviceTensor, ModelError> {
        let backend = OnDevice::new(&self.network, device, self.weights_on(device)?);
        Ok(self.network.field_with(&backend, x, t, label)?.0)
    }

    fn jump_on(
        &self,
        device: &Arc<dyn Device>,
        x: &DeviceTensor,
        t: f64,
        s: f64,
        label: Label,
    ) -> Result<DeviceTensor, ModelError> {
        let backend = OnDevice::new(&self.network, device, self.weights_on(device)?);
        self.network.jump_with(&backend, x, t, s, label)
    }
}
