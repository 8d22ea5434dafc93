//! sched: a language and compiler for the inference schedules of generative models.
//!
//! This crate is the command-line tool and a thin facade over the workspace's crates:
//! [`sched_lang`] (the language front end), [`sched_compiler`] (IR and passes), [`sched_kernels`]
//! (fused kernels) and [`sched_runtime`] (models and the interpreter). Programs that embed sched
//! use [`api`].

pub use sched_compiler as compiler;
pub use sched_kernels as kernels;
pub use sched_lang as lang;
pub use sched_lang::{Analysis, Code, Diagnostic, Program, analyze};
pub use sched_runtime as runtime;

pub mod api;
pub mod build;
pub mod poker;
pub mod render;
pub mod report;
pub mod run;
pub mod sweep;
