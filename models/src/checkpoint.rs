//! Safetensors checkpoints described by a manifest: the file format the built-in networks share.
//!
//! A checkpoint is `NAME.safetensors` plus a manifest: `NAME.toml` beside it, or, when there is no
//! such file, the same keys as strings in the safetensors `__metadata__` (recognized by its
//! `architecture` entry). [`CheckpointFile`] reads a checkpoint and its manifest whatever the
//! architecture; the manifest's `architecture` names the network that reads the rest: `"mlp"`
//! ([`crate::mlp`]) or `"transformer"` ([`crate::transformer`]). docs/models.md documents every
//! manifest field and tensor name.
//!
//! Weights are read from the file's bytes with the `safetensors` crate (no memory map, no
//! `unsafe`) and copied into candle tensors on the CPU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor as CTensor};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, SafeTensorError, TensorView};

use crate::analytic::spec::did_you_mean;
use crate::error::LoadError;

/// The architectures a manifest's `architecture` field can name.
pub const ARCHITECTURES: &[&str] = &["mlp", "transformer"];

/// The network a checkpoint holds, as its manifest's `architecture` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// The built-in MLP of continuous models ([`crate::mlp::MlpModel`]).
    Mlp,
    /// The transformer of token models ([`crate::transformer::TransformerModel`]).
    Transformer,
}

/// The `architecture` of the manifest `table` (called `name` in messages): present, a string,
/// and one of [`ARCHITECTURES`].
pub fn architecture_of(table: &toml::Table, name: &str) -> Result<Architecture, LoadError> {
    let quoted: Vec<String> = ARCHITECTURES.iter().map(|a| format!("\"{a}\"")).collect();
    let expected = format!("one of {}", quoted.join(", "));
    let value = table.get("architecture").ok_or_else(|| LoadError::FieldMissing {
        manifest: name.into(),
        field: "architecture".into(),
        expected: format!("expected {expected}"),
    })?;
    let bad = |expected: String| LoadError::FieldValue {
        manifest: name.into(),
        field: "architecture".into(),
        value: value.to_string(),
        expected,
    };
    match value.as_str() {
        Some("mlp") => Ok(Architecture::Mlp),
        Some("transformer") => Ok(Architecture::Transformer),
        Some(other) => Err(bad(format!("unknown architecture{}", did_you_mean(other, ARCHITECTURES)))),
        None => Err(bad("expected a string".into())),
    }
}

/// The tensors of one safetensors file, checked one by one against what the manifest needs.
pub(crate) struct Weights<'a> {
    path: &'a Path,
    file: SafeTensors<'a>,
}

impl Weights<'_> {
    /// The tensor `name`, which must be F32 and of shape `expected` (`None` entries: any size);
    /// `describe` says what the shape is in messages.
    pub(crate) fn get(&self, name: &str, expected: &[Option<usize>]) -> Result<CTensor, LoadError> {
        let describe =
            || expected.iter().map(|d| d.map_or("_".to_string(), |n| n.to_string())).collect::<Vec<_>>().join(", ");
        let view = self.file.tensor(name).map_err(|_| LoadError::TensorMissing {
            path: self.path.into(),
            tensor: name.into(),
            expected: format!("[{}]", describe()),
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(LoadError::TensorDtype {
                path: self.path.into(),
                tensor: name.into(),
                found: format!("{:?}", view.dtype()),
            });
        }
        let shape = view.shape().to_vec();
        let fits = shape.len() == expected.len()
            && shape.iter().zip(expected).all(|(&n, e)| n > 0 && e.is_none_or(|e| e == n));
        if !fits {
            return Err(LoadError::TensorShape {
                path: self.path.into(),
                tensor: name.into(),
                expected: format!("[{}]", describe()),
                found: shape,
            });
        }
        let values: Vec<f32> =
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        CTensor::from_vec(values, shape, &Device::Cpu)
            .map_err(|e| LoadError::Backend { path: self.path.into(), message: e.to_string() })
    }
}

/// A manifest's TOML values before any architecture reads them.
pub(crate) struct ManifestTable {
    pub(crate) table: toml::Table,
    /// How messages call the manifest: the TOML file's path, or `PATH (__metadata__)`.
    pub(crate) name: String,
    /// Whether unknown fields are errors (a TOML file) or ignored (metadata).
    pub(crate) strict: bool,
}

/// A checkpoint file read and parsed as safetensors, with its manifest's values: what
/// `load_model` dispatches on the manifest's `architecture`.
pub struct CheckpointFile {
    pub(crate) path: PathBuf,
    pub(crate) bytes: Vec<u8>,
    pub(crate) manifest: ManifestTable,
}

impl CheckpointFile {
    /// Reads the checkpoint at `path`, checks that it is a safetensors file, and reads its
    /// manifest (`NAME.toml` beside it, else the file's `__metadata__`).
    pub fn open(path: &Path) -> Result<CheckpointFile, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => LoadError::FileMissing { path: path.into() },
            _ => LoadError::Io { path: path.into(), source },
        })?;
        let size = bytes.len() as u64;
        SafeTensors::deserialize(&bytes).map_err(|e| parse_error(path, size, e))?;
        let manifest = read_manifest(path, &bytes)?;
        Ok(CheckpointFile { path: path.into(), bytes, manifest })
    }

    /// The architecture the manifest names.
    pub fn architecture(&self) -> Result<Architecture, LoadError> {
        architecture_of(&self.manifest.table, &self.manifest.name)
    }

    /// The file's tensors, to be read one by one.
    pub(crate) fn weights(&self) -> Result<Weights<'_>, LoadError> {
        let size = self.bytes.len() as u64;
        let file = SafeTensors::deserialize(&self.bytes).map_err(|e| parse_error(&self.path, size, e))?;
        Ok(Weights { path: &self.path, file })
    }
}

/// Reads the manifest of `path`: `NAME.toml` beside it, else the file's `__metadata__`.
fn read_manifest(path: &Path, bytes: &[u8]) -> Result<ManifestTable, LoadError> {
    let toml_path = path.with_extension("toml");
    if toml_path.is_file() {
        let name = toml_path.display().to_string();
        let text =
            std::fs::read_to_string(&toml_path).map_err(|source| LoadError::Io { path: toml_path.clone(), source })?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| LoadError::ManifestSyntax {
            manifest: name.clone(),
            message: e.message().to_string(),
        })?;
        return Ok(ManifestTable { table, name, strict: true });
    }
    let metadata = SafeTensors::read_metadata(bytes).ok().and_then(|(_, m)| m.metadata().clone()).unwrap_or_default();
    if !metadata.contains_key("architecture") {
        return Err(LoadError::ManifestMissing { path: path.into(), toml: toml_path });
    }
    let table: toml::Table = metadata
        .into_iter()
        .map(|(key, text)| {
            // A value is TOML (a number, an array) when it parses as one, else a plain string.
            let value = format!("v = {text}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(text));
            (key, value)
        })
        .collect();
    Ok(ManifestTable { table, name: format!("{} (__metadata__)", path.display()), strict: false })
}

/// Maps the safetensors parser's errors to what they mean for a user.
fn parse_error(path: &Path, size: u64, error: SafeTensorError) -> LoadError {
    match error {
        SafeTensorError::InvalidHeaderLength => {
            LoadError::Truncated { path: path.into(), size, detail: "the header is cut off".into() }
        }
        SafeTensorError::MetadataIncompleteBuffer => LoadError::Truncated {
            path: path.into(),
            size,
            detail: "the header describes more tensor data than the file holds".into(),
        },
        SafeTensorError::HeaderTooSmall => LoadError::NotSafetensors {
            path: path.into(),
            reason: format!("{size} bytes is shorter than the 8-byte header length"),
        },
        SafeTensorError::HeaderTooLarge => LoadError::NotSafetensors {
            path: path.into(),
            reason: "the first 8 bytes are not a plausible header length".into(),
        },
        other => LoadError::NotSafetensors { path: path.into(), reason: other.to_string() },
    }
}

/// Writes F32 tensors (name, shape, values) as a safetensors file, with `metadata` as its
/// `__metadata__`.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<(), LoadError> {
    let backend = |message: String| LoadError::Backend { path: path.into(), message };
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| backend(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let buffer = safetensors::serialize(views, metadata).map_err(|e| backend(e.to_string()))?;
    std::fs::write(path, buffer).map_err(|source| LoadError::Io { path: path.into(), source })
}
