//! The sched compiler: lowering of checked programs to an IR, the passes, and code generation.

pub mod grid;
