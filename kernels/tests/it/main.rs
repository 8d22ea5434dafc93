//! The integration tests of the kernel crate, one binary: the evaluators, the JIT, the emitted CUDA C
//! (goldens, NVRTC, host execution) and the token and layer kernels against their references.

mod common;

mod builder;
mod cpu;
mod cuda;
mod cuda_tokens;
mod display;
mod host_cuda;
mod host_decoder;
mod host_layers;
mod in_place;
mod jit;
mod layers;
mod philox;
mod tokens;
