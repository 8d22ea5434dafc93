//! Training and evaluation of sched's own models, for the examples, `sched sweep` and the tests:
//! the objectives of the built-in MLP ([`mlp`]) and transformer ([`transformer`]), the 2-D data
//! sets they learn ([`datasets`]), and the sample-quality metrics of the study ([`metrics`]).
//!
//! Nothing here runs a schedule, and the model formats never depend on this crate.

pub mod datasets;
pub mod metrics;
pub mod mlp;
pub mod transformer;
