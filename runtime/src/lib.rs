//! The runtime of sched: tensors, models and checkpoints, and the reference interpreter.

pub mod interpolant;
pub mod model;
pub mod tensor;
