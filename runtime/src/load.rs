//! Loading a model from what a user wrote: an analytic spec or a checkpoint path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::analytic::spec::{self, SpecError};
use crate::checkpoint;
use crate::model::Model;
use crate::tokens::transformer::TransformerModel;

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
}

/// Loads the model `spec` names: `analytic:...` is an analytic model (docs/models.md), anything
/// else the path of a checkpoint, resolved against `base_dir` when it is relative and a base is
/// given (the directory of the `.sched` file that names it, typically). A checkpoint is the MLP or
/// the transformer token model, as its manifest's `architecture` says.
pub fn load_model(spec: &str, base_dir: Option<&Path>) -> Result<Arc<dyn Model>, LoadError> {
    if spec.trim_start().starts_with(spec::PREFIX) {
        return spec::parse_model(spec).map_err(|source| LoadError::Spec { spec: spec.trim().into(), source });
    }
    let path = Path::new(spec);
    let path = match base_dir {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    };
    let file = checkpoint::CheckpointFile::open(&path)?;
    Ok(match file.architecture()? {
        checkpoint::Architecture::Mlp => Arc::new(checkpoint::MlpModel::from_file(&file)?),
        checkpoint::Architecture::Transformer => Arc::new(TransformerModel::from_file(&file)?),
    })
}
