//! Devices, models and the reference interpreter (the next milestone; see ARCHITECTURE.md).
