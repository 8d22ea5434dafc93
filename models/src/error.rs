//! Why a model could not be loaded: every error of every format, so that a format's reader, the
//! registry and the callers share one type.

use std::path::PathBuf;

use crate::analytic::spec::SpecError;

/// Why a model could not be loaded. Messages name the file (and the tensor or manifest field)
/// and say what was expected.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("`{spec}`: {source}")]
    Spec { spec: String, source: SpecError },
    #[error("{path}: no such file")]
    FileMissing { path: PathBuf },
    #[error("{path}: cannot read the file: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a safetensors file ({reason})")]
    NotSafetensors { path: PathBuf, reason: String },
    #[error("{path}: the file is truncated ({size} bytes; {detail})")]
    Truncated { path: PathBuf, size: u64, detail: String },
    #[error(
        "{path}: no manifest: neither {toml} exists nor does the file's `__metadata__` have an `architecture` entry (see docs/models.md)"
    )]
    ManifestMissing { path: PathBuf, toml: PathBuf },
    #[error("{manifest}: not valid TOML: {message}")]
    ManifestSyntax { manifest: String, message: String },
    #[error("{manifest}: the field `{field}` is missing ({expected})")]
    FieldMissing { manifest: String, field: String, expected: String },
    #[error("{manifest}: `{field} = {value}`: {expected}")]
    FieldValue { manifest: String, field: String, value: String, expected: String },
    #[error("{manifest}: {source}")]
    Manifest { manifest: String, source: SpecError },
    /// `expected` is a shape in brackets; `_` stands for a size the manifest leaves free.
    #[error("{path}: tensor `{tensor}` is missing (expected shape {expected})")]
    TensorMissing { path: PathBuf, tensor: String, expected: String },
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected}")]
    TensorShape { path: PathBuf, tensor: String, expected: String, found: Vec<usize> },
    #[error("{path}: tensor `{tensor}` has dtype {found}, expected F32")]
    TensorDtype { path: PathBuf, tensor: String, found: String },
    #[error("{path}: {message}")]
    Backend { path: PathBuf, message: String },
    #[error("{path}: not valid JSON: {message}")]
    ConfigSyntax { path: PathBuf, message: String },
    #[error("{path}: `{field}`: {expected}")]
    ConfigField { path: PathBuf, field: String, expected: String },
    #[error("{path}: the architecture `{architecture}` is not supported (supported: {supported})")]
    UnsupportedArchitecture { path: PathBuf, architecture: String, supported: String },
    #[error("{path}: {reason}")]
    GgufInvalid { path: PathBuf, reason: String },
    #[error("{path}: the GGUF metadata `{key}`: {expected}")]
    GgufMetadata { path: PathBuf, key: String, expected: String },
    /// `tensor` is `None` where the file's reader stops at the first tensor of the type.
    #[error(
        "{path}: {} is quantized as {dtype}, which sched does not read (it reads {supported})",
        tensor.as_ref().map_or("a tensor".to_string(), |t| format!("tensor `{t}`"))
    )]
    UnsupportedQuantization { path: PathBuf, tensor: Option<String>, dtype: String, supported: String },
    #[error("{path}: the tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{path}: the tokenizer has {tokenizer} tokens, more than the model's vocabulary of {model}")]
    TokenizerVocab { path: PathBuf, tokenizer: usize, model: usize },
}

impl LoadError {
    /// Every code of this error, with when it is reported (docs/diagnostics.md lists them).
    /// A spec or a manifest value that describes no model has the code of its [`SpecError`].
    pub const CODES: &'static [(&'static str, &'static str)] = &[
        ("sched::load::file_missing", "a model file does not exist"),
        ("sched::load::io", "a model file cannot be read"),
        ("sched::load::not_safetensors", "a checkpoint is not a safetensors file"),
        ("sched::load::truncated", "a checkpoint is shorter than its header says"),
        ("sched::load::manifest_missing", "a checkpoint has no manifest"),
        ("sched::load::manifest_syntax", "a manifest is not valid TOML"),
        ("sched::load::field_missing", "a manifest lacks a field"),
        ("sched::load::field_value", "a manifest field has a value it cannot have"),
        ("sched::load::tensor_missing", "a checkpoint lacks a tensor its manifest needs"),
        ("sched::load::tensor_shape", "a tensor has another shape than the manifest needs"),
        ("sched::load::tensor_dtype", "a tensor is not F32"),
        ("sched::load::backend", "the tensors cannot be read into the model's backend"),
        (
            "sched::load::config_syntax",
            "a model's `config.json` (or another JSON file of its folder) is not valid JSON",
        ),
        ("sched::load::config_field", "a field of a model's configuration is missing or has a value it cannot have"),
        ("sched::load::unsupported_architecture", "a checkpoint's architecture is none sched runs"),
        ("sched::load::gguf_invalid", "a GGUF file is not one, is truncated, or has a tensor that lies beyond its end"),
        ("sched::load::gguf_metadata", "a key of a GGUF file's metadata is missing or has a value it cannot have"),
        ("sched::load::unsupported_quantization", "a tensor is quantized in a format sched does not read"),
        ("sched::load::tokenizer", "a model's tokenizer cannot be built or read"),
        ("sched::load::tokenizer_vocab", "a tokenizer has more tokens than the model's vocabulary"),
    ];

    /// The error's stable code.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::Spec { source, .. } | LoadError::Manifest { source, .. } => source.code(),
            LoadError::FileMissing { .. } => "sched::load::file_missing",
            LoadError::Io { .. } => "sched::load::io",
            LoadError::NotSafetensors { .. } => "sched::load::not_safetensors",
            LoadError::Truncated { .. } => "sched::load::truncated",
            LoadError::ManifestMissing { .. } => "sched::load::manifest_missing",
            LoadError::ManifestSyntax { .. } => "sched::load::manifest_syntax",
            LoadError::FieldMissing { .. } => "sched::load::field_missing",
            LoadError::FieldValue { .. } => "sched::load::field_value",
            LoadError::TensorMissing { .. } => "sched::load::tensor_missing",
            LoadError::TensorShape { .. } => "sched::load::tensor_shape",
            LoadError::TensorDtype { .. } => "sched::load::tensor_dtype",
            LoadError::Backend { .. } => "sched::load::backend",
            LoadError::ConfigSyntax { .. } => "sched::load::config_syntax",
            LoadError::ConfigField { .. } => "sched::load::config_field",
            LoadError::UnsupportedArchitecture { .. } => "sched::load::unsupported_architecture",
            LoadError::GgufInvalid { .. } => "sched::load::gguf_invalid",
            LoadError::GgufMetadata { .. } => "sched::load::gguf_metadata",
            LoadError::UnsupportedQuantization { .. } => "sched::load::unsupported_quantization",
            LoadError::Tokenizer { .. } => "sched::load::tokenizer",
            LoadError::TokenizerVocab { .. } => "sched::load::tokenizer_vocab",
        }
    }
}
