//! One operation of a device on named buffers: what a captured graph, a recorded run and a replay
//! plan hold. `B` names the buffers: the device's own ids, or a plan's slots.

use sched_kernels::layers::{Activation, AttentionShape};
use sched_kernels::spec::{ElementwiseKernel, NoiseLaunch, NoiseSlot};

use super::{BufferId, Device, DeviceError, Launch, LinearShape, RowMoves};

/// A device operation that computes on buffers and returns nothing to the host. Floats are kept
/// as their bits, so two operations compare exactly (NaN payloads included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceOp<B> {
    /// An elementwise launch; `seed` is the one it drew with (a plan's are 0: a replay gives it).
    Elementwise {
        kernel: ElementwiseKernel,
        len: usize,
        inputs: Vec<B>,
        outputs: Vec<B>,
        params: Vec<u32>,
        seed: u64,
        per_sample: usize,
        slots: Vec<NoiseSlot>,
    },
    Linear {
        x: B,
        weight: B,
        out: B,
        shape: LinearShape,
    },
    BiasActivation {
        data: B,
        bias: B,
        len: usize,
        activation: Activation,
    },
    Copy {
        from: B,
        to: B,
        len: usize,
    },
    LayerNorm {
        x: B,
        weight: B,
        bias: B,
        out: B,
        rows: usize,
        width: usize,
        eps: u32,
    },
    Attention {
        q: B,
        k: B,
        v: B,
        out: B,
        shape: AttentionShape,
    },
    Gather {
        src: B,
        indices: Vec<u32>,
        width: usize,
        blocked: Option<u32>,
        out: B,
    },
    MoveRows {
        src: B,
        from: Vec<u32>,
        to: Vec<u32>,
        width: usize,
        out: B,
    },
}

impl DeviceOp<BufferId> {
    /// The operation of an elementwise launch.
    pub fn elementwise(kernel: &ElementwiseKernel, launch: &Launch<'_>) -> DeviceOp<BufferId> {
        DeviceOp::Elementwise {
            kernel: kernel.clone(),
            len: launch.len,
            inputs: launch.inputs.to_vec(),
            outputs: launch.outputs.to_vec(),
            params: launch.params.iter().map(|p| p.to_bits()).collect(),
            seed: launch.noise.seed,
            per_sample: launch.noise.per_sample,
            slots: launch.noise.slots.to_vec(),
        }
    }
}

impl<B> DeviceOp<B> {
    /// The same operation with every buffer renamed by `name`.
    pub fn map<C>(&self, mut name: impl FnMut(&B) -> C) -> DeviceOp<C> {
        match self {
            DeviceOp::Elementwise { kernel, len, inputs, outputs, params, seed, per_sample, slots } => {
                DeviceOp::Elementwise {
                    kernel: kernel.clone(),
                    len: *len,
                    inputs: inputs.iter().map(&mut name).collect(),
                    outputs: outputs.iter().map(&mut name).collect(),
                    params: params.clone(),
                    seed: *seed,
                    per_sample: *per_sample,
                    slots: slots.clone(),
                }
            }
            DeviceOp::Linear { x, weight, out, shape } => {
                DeviceOp::Linear { x: name(x), weight: name(weight), out: name(out), shape: *shape }
            }
            DeviceOp::BiasActivation { data, bias, len, activation } => {
                DeviceOp::BiasActivation { data: name(data), bias: name(bias), len: *len, activation: *activation }
            }
            DeviceOp::Copy { from, to, len } => DeviceOp::Copy { from: name(from), to: name(to), len: *len },
            DeviceOp::LayerNorm { x, weight, bias, out, rows, width, eps } => DeviceOp::LayerNorm {
                x: name(x),
                weight: name(weight),
                bias: name(bias),
                out: name(out),
                rows: *rows,
                width: *width,
                eps: *eps,
            },
            DeviceOp::Attention { q, k, v, out, shape } => {
                DeviceOp::Attention { q: name(q), k: name(k), v: name(v), out: name(out), shape: *shape }
            }
            DeviceOp::Gather { src, indices, width, blocked, out } => DeviceOp::Gather {
                src: name(src),
                indices: indices.clone(),
                width: *width,
                blocked: *blocked,
                out: name(out),
            },
            DeviceOp::MoveRows { src, from, to, width, out } => {
                DeviceOp::MoveRows { src: name(src), from: from.clone(), to: to.clone(), width: *width, out: name(out) }
            }
        }
    }

    /// The buffers the operation writes.
    pub fn written(&self) -> Vec<&B> {
        match self {
            DeviceOp::Elementwise { outputs, .. } => outputs.iter().collect(),
            DeviceOp::Linear { out, .. }
            | DeviceOp::LayerNorm { out, .. }
            | DeviceOp::Attention { out, .. }
            | DeviceOp::Gather { out, .. }
            | DeviceOp::MoveRows { out, .. } => vec![out],
            DeviceOp::BiasActivation { data, .. } => vec![data],
            DeviceOp::Copy { to, .. } => vec![to],
        }
    }

    /// Whether the operation draws noise (so the seed it runs with matters).
    pub fn draws_noise(&self) -> bool {
        matches!(self, DeviceOp::Elementwise { slots, .. } if !slots.is_empty())
    }

    /// Issues the operation to `device`, with `buffer` naming each buffer on it and `seed` the
    /// seed of an elementwise launch.
    pub fn issue(&self, device: &dyn Device, buffer: impl Fn(&B) -> BufferId, seed: u64) -> Result<(), DeviceError> {
        match self {
            DeviceOp::Elementwise { kernel, len, inputs, outputs, params, per_sample, slots, .. } => {
                let inputs: Vec<BufferId> = inputs.iter().map(&buffer).collect();
                let outputs: Vec<BufferId> = outputs.iter().map(&buffer).collect();
                let params: Vec<f32> = params.iter().map(|&bits| f32::from_bits(bits)).collect();
                let noise = NoiseLaunch { seed, per_sample: *per_sample, slots };
                device.elementwise(
                    kernel,
                    &Launch { len: *len, inputs: &inputs, outputs: &outputs, params: &params, noise },
                )
            }
            DeviceOp::Linear { x, weight, out, shape } => device.linear(buffer(x), buffer(weight), buffer(out), *shape),
            DeviceOp::BiasActivation { data, bias, len, activation } => {
                device.bias_activation(buffer(data), buffer(bias), *len, *activation)
            }
            DeviceOp::Copy { from, to, len } => device.copy(buffer(from), buffer(to), *len),
            DeviceOp::LayerNorm { x, weight, bias, out, rows, width, eps } => device.layer_norm(
                buffer(x),
                buffer(weight),
                buffer(bias),
                buffer(out),
                *rows,
                *width,
                f32::from_bits(*eps),
            ),
            DeviceOp::Attention { q, k, v, out, shape } => {
                device.attention(buffer(q), buffer(k), buffer(v), buffer(out), *shape)
            }
            DeviceOp::Gather { src, indices, width, blocked, out } => {
                device.gather_rows(buffer(src), indices, *width, *blocked, buffer(out))
            }
            DeviceOp::MoveRows { src, from, to, width, out } => {
                device.move_rows(buffer(src), buffer(out), RowMoves { from, to, width: *width })
            }
        }
    }
}
