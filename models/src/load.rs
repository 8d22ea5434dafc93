//! The registry of model formats: from what a user wrote (an analytic spec or a path) to a model.
//!
//! This is the only place that knows every format; a new format is one folder of this crate and
//! one line of [`load_model`]. Nothing else in the crate imports this module.

use std::path::Path;
use std::sync::Arc;

use sched_runtime::model::Model;

use crate::analytic::spec;
use crate::checkpoint::{Architecture, CheckpointFile};
use crate::error::LoadError;
use crate::llama;
use crate::mlp::MlpModel;
use crate::transformer::TransformerModel;

/// The suffix of a GGUF path that asks for its weights dequantized to f32.
pub const DEQUANTIZED: &str = "#f32";

/// Loads the model `spec` names: `analytic:...` is an analytic model (docs/models.md), anything
/// else the path of a checkpoint, resolved against `base_dir` when it is relative and a base is
/// given (the directory of the `.sched` file that names it, typically):
/// - a folder with a `config.json`: a Hugging Face Llama-family model;
/// - `NAME.gguf`: a Llama-family model in llama.cpp's format, kept quantized, or dequantized to
///   f32 as `NAME.gguf#f32`;
/// - any other file: a safetensors checkpoint with a manifest, the MLP or the transformer token
///   model as its `architecture` says.
pub fn load_model(spec: &str, base_dir: Option<&Path>) -> Result<Arc<dyn Model>, LoadError> {
    if spec.trim_start().starts_with(spec::PREFIX) {
        return spec::parse_model(spec).map_err(|source| LoadError::Spec { spec: spec.trim().into(), source });
    }
    let (spec, dequantize) = match spec.strip_suffix(DEQUANTIZED) {
        Some(path) => (path, true),
        None => (spec, false),
    };
    let path = Path::new(spec);
    let path = match base_dir {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    };
    if llama::hf::is_folder(&path) {
        return Ok(Arc::new(llama::hf::load(&path)?));
    }
    if path.extension().is_some_and(|e| e == "gguf") {
        return Ok(Arc::new(llama::gguf::load(&path, dequantize)?));
    }
    let file = CheckpointFile::open(&path)?;
    Ok(match file.architecture()? {
        Architecture::Mlp => Arc::new(MlpModel::from_file(&file)?),
        Architecture::Transformer => Arc::new(TransformerModel::from_file(&file)?),
    })
}
