//! The sched compiler: lowering of checked programs to an IR, the passes, and code generation.

pub mod clif;
pub mod diagnostics;
pub mod fold;
pub mod grid;
pub mod host;
pub mod ir;
pub mod lower;
pub mod pipeline;
pub mod plan;
pub mod print;
pub mod verify;

mod cse;
mod dce;
mod fuse;
