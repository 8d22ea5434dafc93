//! The integration tests of the model formats, one binary: analytic models, checkpoints, the MLP
//! and the transformer on the host and on the emulated device, and the token models.

mod checkpoint;
mod device;
mod device_transformer;
mod llama;
mod models;
mod token_models;
mod transformer;
