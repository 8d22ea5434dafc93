//! Fused kernel specifications and their emitters (the next milestone; see ARCHITECTURE.md).
