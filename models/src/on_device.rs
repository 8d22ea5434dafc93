//! What the device halves of the networks share (the transformer's and the Llama-family
//! decoder's): a linear layer's weights on a device and its product, the residual addition, and
//! the error of putting weights there or evaluating them.

use std::sync::Arc;

use sched_kernels::builder::KernelBuilder;
use sched_kernels::layers::Activation;
use sched_kernels::spec::{BinaryOp, ElementwiseKernel, NoiseLaunch};
use sched_runtime::device::{Device, DeviceError, DeviceOp, DeviceTensor, Launch, LinearShape};

/// Why a network's weights could not be put on a device, or a pass there failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeviceNetworkError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Weights(#[from] candle_core::Error),
}

/// A linear layer's weight `[outputs, inputs]` and bias on the device.
pub(crate) struct Linear {
    pub(crate) weight: DeviceTensor,
    pub(crate) bias: Option<DeviceTensor>,
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
}

impl Linear {
    /// `activation(x wᵀ + bias)` for `rows` rows of `x` (no activation without a bias):
    /// `[rows, outputs]`.
    pub(crate) fn forward(
        &self,
        device: &Arc<dyn Device>,
        x: &DeviceTensor,
        rows: usize,
        activation: Activation,
    ) -> Result<DeviceTensor, DeviceError> {
        let out = DeviceTensor::alloc(device, vec![rows, self.outputs])?;
        let shape = LinearShape { rows, inputs: self.inputs, outputs: self.outputs };
        device.execute(&DeviceOp::Linear { x: x.buffer(), weight: self.weight.buffer(), out: out.buffer(), shape })?;
        if let Some(bias) = &self.bias {
            device.execute(&DeviceOp::BiasActivation {
                data: out.buffer(),
                bias: bias.buffer(),
                len: rows * self.outputs,
                activation,
            })?;
        }
        Ok(out)
    }
}

/// `out0 = in0 + in1`.
fn add_kernel() -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let (x, y) = (b.input(0), b.input(1));
    let sum = b.binary(BinaryOp::Add, x, y);
    b.output(sum);
    b.finish()
}

/// `out = x + y`, elementwise; `out` may be `x` (a residual added in place).
pub(crate) fn add(
    device: &Arc<dyn Device>,
    x: &DeviceTensor,
    y: &DeviceTensor,
    out: &DeviceTensor,
) -> Result<(), DeviceError> {
    let launch = Launch {
        len: x.len(),
        inputs: &[x.buffer(), y.buffer()],
        outputs: &[out.buffer()],
        params: &[],
        noise: NoiseLaunch { seed: 0, per_sample: 1, slots: &[] },
    };
    device.execute(&DeviceOp::elementwise(&add_kernel(), &launch))
}
