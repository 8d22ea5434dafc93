//! Fused kernels: the elementwise specification the compiler produces, and its evaluators.

pub mod spec;
