//! The runtime of sched: tensors, models and checkpoints, and the reference interpreter.

pub mod analytic;
pub mod checkpoint;
pub mod convert;
pub mod datasets;
pub mod device;
pub mod grid;
pub mod interp;
pub mod interpolant;
pub mod jit;
pub mod load;
pub mod metrics;
pub mod model;
pub mod runs;
pub mod sequence;
pub mod tensor;
pub mod tokens;
pub mod train;
