//! sched: a language and compiler for the inference schedules of generative models.
//!
//! This crate is the command-line tool and a thin facade over the workspace's crates:
//! [`sched_lang`] (the language front end) and, as they land, the compiler and runtime.

pub use sched_lang as lang;
pub use sched_lang::{Analysis, Code, Diagnostic, Program, analyze};

pub mod build;
pub mod render;
pub mod report;
pub mod run;
