//! The model formats of sched: every source of a model that the runtime's contract
//! ([`sched_runtime::model`]) can run, and the registry that picks one from what a user wrote.
//!
//! - [`analytic`]: models computed in closed form (Gaussian and mixture data with every field and
//!   the exact flow map; exact token laws), the ground truth of tests and demos;
//! - [`checkpoint`]: safetensors files described by a manifest, read by the built-in networks
//!   [`mlp`] (continuous models) and [`transformer`] (token models), each in one folder with its
//!   host and device halves;
//! - [`llama`]: Llama-family language models from GGUF files and Hugging Face folders;
//! - [`load`]: the registry, from an analytic spec or a path to a model.
//!
//! [`poker`] is the poker-hands table that the exact poker model and the transformer's vocabulary
//! share.

pub mod analytic;
pub mod checkpoint;
pub mod error;
pub mod llama;
pub mod load;
pub mod mlp;
mod on_device;
pub mod poker;
pub mod transformer;
