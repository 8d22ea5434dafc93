//! The integration tests of training and metrics, one binary.

mod metrics;
mod mlp;
mod transformer;
