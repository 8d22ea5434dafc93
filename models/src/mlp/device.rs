//! The device half of the built-in MLP ([`super::MlpModel`]): its matrix products through
//! [`Device::linear`] (cuBLAS on a GPU), its biases and SiLUs through
//! [`Device::bias_activation`], and the arithmetic around the network (preconditioning, a
//! two-time model's step) as elementwise kernels.
//!
//! The first layer's input is `[x flattened, conditioning]`, where the conditioning (time and
//! class embeddings) is the same for every sample of a call. So the layer is split: the columns of
//! its weight that multiply `x` are a matrix product on the device, and the columns that multiply
//! the conditioning are folded into the layer's bias on the host, once per call (a vector of the
//! hidden width).

use std::sync::Arc;

use sched_kernels::builder::KernelBuilder;
use sched_kernels::layers::Activation;
use sched_kernels::spec::{BinaryOp, ElementwiseKernel, NoiseLaunch};

use sched_runtime::device::{Device, DeviceError, DeviceOp, DeviceTensor, Launch, LinearShape};
use sched_runtime::model::ModelError;

use super::network::{MlpBackend, MlpNetwork};

/// A linear layer's weight on the device and its bias.
struct Layer {
    weight: DeviceTensor,
    bias: DeviceTensor,
    inputs: usize,
    outputs: usize,
}

/// The MLP's weights on one device.
pub struct DeviceWeights {
    /// The first layer's columns that multiply the flattened sample: `[hidden, sample_len]`.
    first_sample: DeviceTensor,
    /// The first layer's other columns, on the host: `[hidden, conditioning]`, row-major.
    first_conditioning: Vec<f32>,
    first_bias: Vec<f32>,
    sample_len: usize,
    hidden: usize,
    second: Layer,
    third: Layer,
}

impl std::fmt::Debug for DeviceWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceWeights").field("hidden", &self.hidden).finish_non_exhaustive()
    }
}

impl DeviceWeights {
    /// Uploads the network's weights to `device`.
    pub(crate) fn upload(network: &MlpNetwork, device: &Arc<dyn Device>) -> Result<DeviceWeights, ModelError> {
        let backend_error = |e: DeviceError| network.error(e);
        let [first, second, third] = network.layers()?;
        let (w1, b1, inputs1) = (first.weight, first.bias, first.inputs);
        let sample_len = network.manifest.sample_len();
        let hidden = b1.len();
        let conditioning = inputs1.saturating_sub(sample_len);
        let mut first_sample = Vec::with_capacity(hidden * sample_len);
        let mut first_conditioning = Vec::with_capacity(hidden * conditioning);
        for row in w1.chunks(inputs1) {
            first_sample.extend_from_slice(&row[..sample_len]);
            first_conditioning.extend_from_slice(&row[sample_len..]);
        }
        let layer = |weight: &[f32], bias: &[f32], inputs: usize| -> Result<Layer, DeviceError> {
            let outputs = bias.len();
            Ok(Layer {
                weight: DeviceTensor::upload(device, weight, vec![outputs, inputs])?,
                bias: DeviceTensor::upload(device, bias, vec![outputs])?,
                inputs,
                outputs,
            })
        };
        Ok(DeviceWeights {
            first_sample: DeviceTensor::upload(device, &first_sample, vec![hidden, sample_len])
                .map_err(backend_error)?,
            first_conditioning,
            first_bias: b1,
            sample_len,
            hidden,
            second: layer(&second.weight, &second.bias, second.inputs).map_err(backend_error)?,
            third: layer(&third.weight, &third.bias, third.inputs).map_err(backend_error)?,
        })
    }
}

/// The MLP's operations on a device: the backend of [`MlpNetwork`]'s evaluation there.
pub(crate) struct OnDevice<'a> {
    network: &'a MlpNetwork,
    device: &'a Arc<dyn Device>,
    weights: Arc<DeviceWeights>,
}

impl<'a> OnDevice<'a> {
    pub(crate) fn new(network: &'a MlpNetwork, device: &'a Arc<dyn Device>, weights: Arc<DeviceWeights>) -> Self {
        OnDevice { network, device, weights }
    }

    fn error(&self, error: DeviceError) -> ModelError {
        self.network.error(error)
    }

    /// A new buffer of `shape` on the device.
    fn alloc(&self, shape: Vec<usize>) -> Result<DeviceTensor, ModelError> {
        DeviceTensor::alloc(self.device, shape).map_err(|e| self.error(e))
    }

    /// Runs a one-output elementwise kernel over tensors of `like`'s shape.
    fn elementwise(
        &self,
        kernel: &ElementwiseKernel,
        like: &DeviceTensor,
        inputs: &[&DeviceTensor],
        params: &[f32],
    ) -> Result<DeviceTensor, ModelError> {
        let out = self.alloc(like.shape.clone())?;
        let inputs: Vec<_> = inputs.iter().map(|t| t.buffer()).collect();
        let launch = Launch {
            len: like.len(),
            inputs: &inputs,
            outputs: &[out.buffer()],
            params,
            noise: NoiseLaunch { seed: 0, per_sample: 1, slots: &[] },
        };
        self.device.execute(&DeviceOp::elementwise(kernel, &launch)).map_err(|e| self.error(e))?;
        Ok(out)
    }

    /// `rows` rows through a layer: the matrix product, then bias and activation in place.
    fn layer(
        &self,
        x: &DeviceTensor,
        weight: &DeviceTensor,
        bias: &DeviceTensor,
        shape: LinearShape,
        activation: Activation,
    ) -> Result<DeviceTensor, ModelError> {
        let out = self.alloc(vec![shape.rows, shape.outputs])?;
        self.device
            .execute(&DeviceOp::Linear { x: x.buffer(), weight: weight.buffer(), out: out.buffer(), shape })
            .map_err(|e| self.error(e))?;
        self.device
            .execute(&DeviceOp::BiasActivation {
                data: out.buffer(),
                bias: bias.buffer(),
                len: shape.rows * shape.outputs,
                activation,
            })
            .map_err(|e| self.error(e))?;
        Ok(out)
    }
}

/// `p0 x`.
fn scale_kernel() -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let (x, a) = (b.input(0), b.param(0));
    let out = b.binary(BinaryOp::Mul, a, x);
    b.output(out);
    b.finish()
}

/// `p0 x + p1 y`.
fn combine_kernel() -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let (x, y, a, c) = (b.input(0), b.input(1), b.param(0), b.param(1));
    let ax = b.binary(BinaryOp::Mul, a, x);
    let cy = b.binary(BinaryOp::Mul, c, y);
    let out = b.binary(BinaryOp::Add, ax, cy);
    b.output(out);
    b.finish()
}

/// `x + p0 u`.
fn advance_kernel() -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let (x, u, h) = (b.input(0), b.input(1), b.param(0));
    let hu = b.binary(BinaryOp::Mul, h, u);
    let out = b.binary(BinaryOp::Add, x, hu);
    b.output(out);
    b.finish()
}

impl MlpBackend for OnDevice<'_> {
    type Tensor = DeviceTensor;

    fn shape(x: &DeviceTensor) -> &[usize] {
        &x.shape
    }

    fn scale(&self, x: &DeviceTensor, a: f64) -> Result<DeviceTensor, ModelError> {
        self.elementwise(&scale_kernel(), x, &[x], &[a as f32])
    }

    fn combine(&self, x: &DeviceTensor, a: f64, y: &DeviceTensor, b: f64) -> Result<DeviceTensor, ModelError> {
        self.elementwise(&combine_kernel(), x, &[x, y], &[a as f32, b as f32])
    }

    fn advance(&self, x: &DeviceTensor, u: &DeviceTensor, h: f32) -> Result<DeviceTensor, ModelError> {
        self.elementwise(&advance_kernel(), x, &[x, u], &[h])
    }

    fn network(&self, _network: &MlpNetwork, x: &DeviceTensor, features: &[f32]) -> Result<DeviceTensor, ModelError> {
        let w = &self.weights;
        let rows = x.shape.first().copied().unwrap_or(1);
        // The conditioning's share of the first layer, the same for every row: its bias.
        let bias: Vec<f32> = w
            .first_conditioning
            .chunks(features.len().max(1))
            .zip(&w.first_bias)
            .map(|(row, b)| {
                let dot: f64 = row.iter().zip(features).map(|(w, f)| f64::from(*w) * f64::from(*f)).sum();
                (f64::from(*b) + dot) as f32
            })
            .collect();
        let bias = DeviceTensor::upload(self.device, &bias, vec![w.hidden]).map_err(|e| self.error(e))?;
        let first = LinearShape { rows, inputs: w.sample_len, outputs: w.hidden };
        let h = self.layer(x, &w.first_sample, &bias, first, Activation::Silu)?;
        let second = LinearShape { rows, inputs: w.second.inputs, outputs: w.second.outputs };
        let h = self.layer(&h, &w.second.weight, &w.second.bias, second, Activation::Silu)?;
        let third = LinearShape { rows, inputs: w.third.inputs, outputs: w.third.outputs };
        let out = self.layer(&h, &w.third.weight, &w.third.bias, third, Activation::Identity)?;
        Ok(DeviceTensor::new(x.shape.clone(), out.into_buffer(), Arc::clone(self.device)))
    }
}
