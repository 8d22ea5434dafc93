//! Fused kernels: the elementwise specification the compiler produces, and its evaluators.

pub mod builder;
pub mod cpu;
pub mod cuda;
pub mod cuda_tokens;
pub mod decoder;
mod display;
pub mod jit;
pub mod layers;
pub mod nvrtc;
pub mod philox;
pub mod spec;
pub mod tokens;

pub use builder::KernelBuilder;
pub use cpu::{evaluate, reduce};
pub use jit::{CompiledKernel, JitError};
pub use spec::{
    BinaryOp, Distribution, ElementwiseKernel, KernelError, Node, NodeId, NoiseLaunch, NoiseSlot, ReduceOp,
    ReductionKernel, UnaryOp,
};
