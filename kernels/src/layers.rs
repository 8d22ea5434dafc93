//! The fixed kernels of the built-in networks on a device (the layers around their matrix
//! products): a bias added to every row of a row-major matrix, then an activation.
//!
//! [`bias_activation`] is the reference (the emulated device runs it); [`bias_activation_source`]
//! is the same operation as CUDA C, compiled with the options of [`crate::nvrtc`]. Both compute
//! `v = data[r, c] + bias[c]` and then, for SiLU, `v / (1 + exp(-v))` in f32, as candle does.

/// The activation after a layer's bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// None: the layer's output is its affine map.
    Identity,
    /// SiLU, `v / (1 + exp(-v))`.
    Silu,
}

/// The entry point of [`bias_activation_source`].
pub const BIAS_ACTIVATION_ENTRY: &str = "sched_bias_activation";

/// SiLU of one value, as the reference and the CUDA kernel compute it.
pub fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// Adds `bias[c]` to every element `data[r * cols + c]` (where `cols = bias.len()`) and applies
/// `activation`, in place. An empty bias leaves `data` unchanged.
pub fn bias_activation(data: &mut [f32], bias: &[f32], activation: Activation) {
    if bias.is_empty() {
        return;
    }
    for row in data.chunks_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            let sum = *v + b;
            *v = match activation {
                Activation::Identity => sum,
                Activation::Silu => silu(sum),
            };
        }
    }
}

/// The CUDA C of [`bias_activation`]:
///
/// ```c
/// extern "C" __global__ void sched_bias_activation(
///     float* data, const float* bias, unsigned int cols, unsigned long long len, int silu)
/// ```
///
/// launched with any grid of [`crate::cuda::BLOCK_THREADS`]-thread blocks (a grid-stride loop
/// covers `len` elements); `cols` must be at least 1.
pub fn bias_activation_source() -> &'static str {
    r#"// sched: bias and activation of a layer of a built-in network.
extern "C" __global__ void sched_bias_activation(
    float* data, const float* bias, unsigned int cols, unsigned long long len, int silu)
{
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        float v = data[i] + bias[i % cols];
        if (silu) {
            v = v / (1.0f + expf(-v));
        }
        data[i] = v;
    }
}
"#
}
