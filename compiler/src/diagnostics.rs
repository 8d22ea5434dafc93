//! Every error the compiler reports, as data. The front end has already accepted the program, so
//! these are limits of the compiler (constructs that do not run yet) rather than mistakes.

use sched_lang::Span;

/// A construct the compiler cannot lower.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// A stable code, `sched::compile::...`.
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    pub label: String,
    pub help: String,
}

pub fn unsupported(span: Span, what: &str, milestone: &str) -> CompileError {
    CompileError {
        code: "sched::compile::unsupported",
        message: format!("{what} cannot run yet"),
        span,
        label: "not supported by the compiler yet".into(),
        help: format!("{milestone}; `sched check` accepts it, but `sched run` and `sched build` cannot compile it"),
    }
}

pub fn non_constant_default(span: Span, param: &str) -> CompileError {
    CompileError {
        code: "sched::compile::non_constant_default",
        message: format!("the default of `{param}` is not a constant"),
        span,
        label: "must be known before the run".into(),
        help: "write a literal, or pass the value with `--param`".into(),
    }
}

/// A function the host code generator cannot translate: a compiler bug, since the pipeline's
/// output always translates.
pub fn codegen(message: &str) -> CompileError {
    CompileError {
        code: "sched::compile::codegen",
        message: format!("cannot generate host code: {message}"),
        span: Span::new(sched_lang::FileId(0), 0, 0),
        label: "while generating host code".into(),
        help: "this is a compiler bug; please report it with the .sched file".into(),
    }
}
