//! The runtime of sched: the model contract, devices, and the execution of compiled schedules.
//!
//! It knows models only through their traits ([`model::Model`], [`model::TokenModel`] and their
//! device halves); every model format lives in the `sched-models` crate. What it executes is a
//! compiled IR [`Function`](sched_compiler::ir::Function), on one of two engines that give the
//! same bits: the reference interpreter ([`interp`]) and the JIT ([`jit`]), both on the shared
//! executor ([`machine`]) and both taking and giving the types of [`run`].

pub mod convert;
pub mod device;
pub mod grid;
pub mod interp;
pub mod interpolant;
pub mod jit;
mod machine;
pub mod model;
pub mod run;
pub mod seeds;
pub mod sequence;
pub mod tensor;
