//! The error of a model evaluation, shared by continuous and token models.

use sched_lang::types::ModelKind;

/// A failure while evaluating a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{model}: input has shape {found:?}, but the model takes samples of shape {expected:?}")]
    Shape { model: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{model}: a {kind} model cannot {what}")]
    Unsupported { model: String, kind: ModelKind, what: String },
    #[error("{model}: label {label} is out of range (the model has {classes} classes)")]
    Label { model: String, label: i64, classes: usize },
    #[error("{model}: time {t} is outside [0, 1]")]
    Time { model: String, t: f64 },
    #[error("{model}: {message}")]
    Backend { model: String, message: String },
}

impl ModelError {
    /// Every code of this error, with when it is reported (docs/diagnostics.md lists them).
    pub const CODES: &'static [(&'static str, &'static str)] = &[
        ("sched::model::shape", "a model was given a state of the wrong shape"),
        ("sched::model::unsupported", "a model was asked for what its kind cannot do"),
        ("sched::model::label", "a class label is out of the model's range"),
        ("sched::model::time", "a model was evaluated at a time outside [0, 1]"),
        ("sched::model::backend", "a model's evaluation failed in its backend"),
    ];

    /// The error's stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::Shape { .. } => "sched::model::shape",
            ModelError::Unsupported { .. } => "sched::model::unsupported",
            ModelError::Label { .. } => "sched::model::label",
            ModelError::Time { .. } => "sched::model::time",
            ModelError::Backend { .. } => "sched::model::backend",
        }
    }
}
