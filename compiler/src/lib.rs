//! Lowering of checked programs to the IR (the next milestone; see ARCHITECTURE.md).
