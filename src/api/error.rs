//! The errors of the embedding API: a program that does not check ([`Diagnostics`]), and every
//! failure after checking ([`ApiError`]), each with a stable code.

use std::path::PathBuf;

use sched_lang::{Diagnostic, SourceMap};
use sched_models::error::LoadError;
use sched_runtime::run::RunError;

/// Why a source did not compile: every diagnostic, with the sources to render them against.
#[derive(Debug)]
pub struct Diagnostics {
    pub diagnostics: Vec<Diagnostic>,
    pub sources: SourceMap,
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in self.diagnostics.iter().filter(|d| d.is_error()) {
            let (line, column) = self.sources.line_col(d.primary_span());
            writeln!(f, "{}:{line}:{column}: {}: {}", self.sources.get(d.primary_span().file).name, d.code, d.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A failure of the embedding API after checking.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the program has no schedule `{name}` (it has: {available})")]
    UnknownSchedule { name: String, available: String },
    #[error("schedule `{schedule}` has no parameter `{name}` (it has: {available})")]
    UnknownParam { schedule: String, name: String, available: String },
    #[error("parameter `{name}` is {expected}, and the value given is not")]
    ParamType { name: String, expected: &'static str },
    /// A parameter's value written as text that does not parse as its type.
    #[error("`{name}` is {expected}, not `{text}`")]
    ParamText { name: String, expected: &'static str, text: String },
    /// A parameter that text cannot set (a tensor, a model).
    #[error("`{name}` is {what}: {help}")]
    ParamNotText { name: String, what: &'static str, help: String },
    #[error("{0}")]
    Compile(#[from] sched_compiler::diagnostics::CompileError),
    #[error("model `{name}` is not bound")]
    MissingModel { name: String },
    #[error("schedule `{schedule}` has no model parameter `{name}` (it has: {available})")]
    UnknownModel { schedule: String, name: String, available: String },
    #[error("model `{name}` has no default in the schedule: bind it to a checkpoint path or an analytic spec")]
    NoDefaultModel { name: String },
    #[error("cannot load model `{name}`: {source}")]
    LoadModel { name: String, source: Box<LoadError> },
    #[error(transparent)]
    Load(Box<LoadError>),
    #[error("model `{name}` ({origin}) cannot be used here: {reasons}")]
    Binding { name: String, origin: String, reasons: String },
    #[error("cannot read {path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("the prompt: {message}")]
    Prompt { message: String },
    #[error(transparent)]
    Model(#[from] sched_runtime::model::ModelError),
    #[error("cannot compile to native code: {0}")]
    Jit(String),
    #[error(transparent)]
    Run(#[from] RunError),
}

impl ApiError {
    /// Every code an [`ApiError`] of its own can have, with what it means (the errors it wraps
    /// list theirs: [`LoadError::CODES`], [`RunError::CODES`]).
    pub const CODES: &'static [(&'static str, &'static str)] = &[
        ("sched::api::unknown_schedule", "the program has no schedule of that name"),
        ("sched::api::unknown_param", "the schedule has no parameter of that name"),
        ("sched::api::param_type", "a parameter was given a value of another type"),
        ("sched::api::param_text", "a parameter's value, written as text, does not parse as its type"),
        ("sched::api::param_not_text", "a tensor or model parameter was given as text"),
        ("sched::api::missing_model", "a model parameter was not bound"),
        ("sched::api::unknown_model", "the schedule has no model parameter of that name"),
        ("sched::api::no_default_model", "a model parameter was not bound and the schedule names no default"),
        ("sched::api::binding", "a model's kind cannot do what the schedule asks of it"),
        ("sched::api::input", "a tensor input file cannot be read"),
        ("sched::api::prompt", "a prompt cannot be written in the token model's tokens"),
        ("sched::api::jit", "the schedule cannot be compiled to native code"),
    ];

    /// The stable code of the error (docs/diagnostics.md lists every code).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownSchedule { .. } => "sched::api::unknown_schedule",
            ApiError::UnknownParam { .. } => "sched::api::unknown_param",
            ApiError::ParamType { .. } => "sched::api::param_type",
            ApiError::ParamText { .. } => "sched::api::param_text",
            ApiError::ParamNotText { .. } => "sched::api::param_not_text",
            ApiError::Compile(error) => error.code,
            ApiError::MissingModel { .. } => "sched::api::missing_model",
            ApiError::UnknownModel { .. } => "sched::api::unknown_model",
            ApiError::NoDefaultModel { .. } => "sched::api::no_default_model",
            ApiError::LoadModel { source, .. } | ApiError::Load(source) => source.code(),
            ApiError::Binding { .. } => "sched::api::binding",
            ApiError::Input { .. } => "sched::api::input",
            ApiError::Prompt { .. } => "sched::api::prompt",
            ApiError::Model(error) => error.code(),
            ApiError::Jit(_) => "sched::api::jit",
            ApiError::Run(error) => error.code(),
        }
    }

    /// Whether the mistake is in how the API (or the command line) was asked, rather than in
    /// the program, its models or its run: the `sched` tool exits with 2 for these, 1 otherwise.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ApiError::UnknownSchedule { .. }
                | ApiError::UnknownParam { .. }
                | ApiError::ParamType { .. }
                | ApiError::ParamText { .. }
                | ApiError::ParamNotText { .. }
                | ApiError::UnknownModel { .. }
                | ApiError::NoDefaultModel { .. }
                | ApiError::Input { .. }
                | ApiError::Prompt { .. }
        )
    }
}
