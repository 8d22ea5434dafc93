//! The integration tests of the runtime, one binary: grids, the emulated device, and token
//! operations on it with scripted models.

mod device;
mod device_speculative;
mod grids;
