//! Safetensors checkpoints of the built-in MLP, described by a manifest.
//!
//! A checkpoint is `NAME.safetensors` plus a manifest: `NAME.toml` beside it, or, when there is no
//! such file, the same keys as strings in the safetensors `__metadata__` (recognized by its
//! `architecture` entry). docs/models.md documents every manifest field and tensor name.
//! [`CheckpointFile`] reads a checkpoint and its manifest whatever the architecture, and
//! `load_model` dispatches on the manifest's `architecture`: `"mlp"` is this module's
//! [`MlpModel`], `"transformer"` the token model of [`crate::tokens::transformer`].
//!
//! The network: `input = concat(x flattened, temb(τ), temb(τ₂) for two-time kinds, class embedding)`
//! → `l1` → SiLU → `l2` → SiLU → `l3` to the flattened sample size, where τ is the model's time
//! input (see [`TimeInput`]) divided by its span R (1, 1000, N, or 2 for `edm_log_sigma`), τ₂
//! the second time of two-time kinds (divided by R likewise), and `temb(τ) = [sin(2^k π τ) for
//! k < F, then cos(2^k π τ) for k < F]` with F = `time_features`.
//!
//! An optional [`Preconditioning`] wraps the network: with EDM it is fed `c_in x` and the model's
//! output is `c_skip x + c_out F` (docs/models.md, "EDM preconditioning").
//!
//! Weights are read from the file's bytes with the `safetensors` crate (no memory map, no
//! `unsafe`) and copied into candle tensors on the CPU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor as CTensor};
use candle_nn::{Linear, Module};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, SafeTensorError, TensorView};
use sched_lang::types::ModelKind;

use crate::analytic::spec::{INTERPOLANTS, InterpolantParams, did_you_mean, interpolant_from_params, parse_kind};
use crate::interpolant::{BetaSchedule, Interpolant};
use crate::load::LoadError;
use crate::model::{DeviceModel, FieldKind, Label, Model, ModelError, ModelInfo};
use crate::tensor::Tensor;

/// The manifest fields, for "did you mean" on unknown ones.
const FIELDS: &[&str] = &[
    "architecture",
    "kind",
    "interpolant",
    "train_steps",
    "beta_start",
    "beta_end",
    "sigma_max",
    "sigma_data",
    "time_input",
    "preconditioning",
    "sample_shape",
    "time_features",
    "classes",
];

/// The architectures a manifest's `architecture` field can name.
pub const ARCHITECTURES: &[&str] = &["mlp", "transformer"];

/// The network a checkpoint holds, as its manifest's `architecture` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// The built-in MLP of continuous models ([`MlpModel`]).
    Mlp,
    /// The transformer of token models ([`crate::tokens::transformer::TransformerModel`]).
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

/// How the normalized time t ∈ [0, 1] is fed to the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeInput {
    /// `t` itself.
    T,
    /// `1000 t` (SD3-style rectified flow).
    Thousand,
    /// `1 − t` (flow-matching code whose time runs from noise 0 to data 1).
    OneMinusT,
    /// The fractional training index `t N − 1` of a discrete schedule (DDPM-style models).
    Index,
    /// EDM's noise conditioning `c_noise = ln(κ)/4` with κ = σ(t) of the `ve` interpolant; it is
    /// −∞ at t = 0, where a model that needs the network cannot be evaluated.
    EdmLogSigma,
}

/// N of a discrete schedule, 0 for continuous interpolants.
fn train_steps(interpolant: &Interpolant) -> usize {
    match interpolant {
        Interpolant::Discrete(d) => d.train_steps(),
        _ => 0,
    }
}

impl TimeInput {
    pub const NAMES: &'static [&'static str] = &["t", "1000t", "one_minus_t", "index", "edm_log_sigma"];

    pub fn name(self) -> &'static str {
        match self {
            TimeInput::T => "t",
            TimeInput::Thousand => "1000t",
            TimeInput::OneMinusT => "one_minus_t",
            TimeInput::Index => "index",
            TimeInput::EdmLogSigma => "edm_log_sigma",
        }
    }

    pub fn from_name(name: &str) -> Option<TimeInput> {
        [TimeInput::T, TimeInput::Thousand, TimeInput::OneMinusT, TimeInput::Index, TimeInput::EdmLogSigma]
            .into_iter()
            .find(|t| t.name() == name)
    }

    /// The network's time value for the normalized time `t` of a model with `interpolant` (which
    /// gives N of a discrete schedule and κ(t) for `edm_log_sigma`).
    pub fn time(self, t: f64, interpolant: &Interpolant) -> f64 {
        match self {
            TimeInput::T => t,
            TimeInput::Thousand => 1000.0 * t,
            TimeInput::OneMinusT => 1.0 - t,
            TimeInput::Index => t * train_steps(interpolant) as f64 - 1.0,
            TimeInput::EdmLogSigma => interpolant.kappa(t).ln() / 4.0,
        }
    }

    /// The range the time input spans (1, 1000, N, or 2 for `edm_log_sigma`): the time features
    /// see the fed value divided by it, so that their frequencies 2^k π resolve the whole range
    /// instead of aliasing at whole numbers of `1000 t` or of a table index. Features repeat with
    /// period 2 in the divided value, so `edm_log_sigma`'s span 2 tells apart every κ in
    /// (e^−8, e^8) ≈ (3.4e-4, 2981), which holds EDM's range [0.002, 80].
    pub fn span(self, interpolant: &Interpolant) -> f64 {
        match self {
            TimeInput::T | TimeInput::OneMinusT => 1.0,
            TimeInput::Thousand => 1000.0,
            TimeInput::Index => train_steps(interpolant) as f64,
            TimeInput::EdmLogSigma => 2.0,
        }
    }

    /// The network's value for a gap `d = t − s` between two times: scaled like a time, never
    /// shifted or reflected. A manifest with `edm_log_sigma` cannot have a two-time kind, so
    /// that input never feeds a gap; it returns `d` unchanged.
    pub fn gap(self, d: f64, interpolant: &Interpolant) -> f64 {
        match self {
            TimeInput::T | TimeInput::OneMinusT | TimeInput::EdmLogSigma => d,
            TimeInput::Thousand => 1000.0 * d,
            TimeInput::Index => d * train_steps(interpolant) as f64,
        }
    }
}

/// κ_min of the consistency-model boundary condition (Song et al. 2023): f(x, κ_min) = x.
pub const CONSISTENCY_KAPPA_MIN: f64 = 0.002;

/// A scaling of the network's input and output around it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Preconditioning {
    /// EDM (Karras et al. 2022) with σ_d = `sigma_data`, for `x0` and `consistency` models on the
    /// `ve` interpolant; consistency models use the boundary form of Song et al. 2023.
    Edm { sigma_data: f64 },
}

/// The coefficients of a preconditioned network at one noise level κ: the network F is fed
/// `c_in x`, and the model's output is `c_skip x + c_out F`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scalings {
    pub c_in: f64,
    pub c_skip: f64,
    pub c_out: f64,
}

impl Preconditioning {
    pub const NAMES: &'static [&'static str] = &["edm"];

    pub fn name(self) -> &'static str {
        match self {
            Preconditioning::Edm { .. } => "edm",
        }
    }

    /// The scalings for a `kind` model at the noise level `kappa` = κ = σ/α.
    ///
    /// EDM's denoiser: c_in = 1/√(κ² + σ_d²), c_skip = σ_d²/(κ² + σ_d²), c_out = κ σ_d/√(κ² + σ_d²).
    /// A consistency model replaces κ by κ − κ_min in c_skip and in c_out's numerator, so that
    /// c_skip = 1 and c_out = 0 at κ_min. Its domain starts at κ_min, so a κ below it is raised to
    /// κ_min, where the state counts as data and the model returns it unchanged.
    pub fn scalings(self, kind: ModelKind, kappa: f64) -> Scalings {
        let Preconditioning::Edm { sigma_data } = self;
        let sd2 = sigma_data * sigma_data;
        if kind == ModelKind::Consistency {
            let kappa = kappa.max(CONSISTENCY_KAPPA_MIN);
            let shifted = kappa - CONSISTENCY_KAPPA_MIN;
            let norm = (kappa * kappa + sd2).sqrt();
            Scalings { c_in: 1.0 / norm, c_skip: sd2 / (shifted * shifted + sd2), c_out: shifted * sigma_data / norm }
        } else {
            let norm = (kappa * kappa + sd2).sqrt();
            Scalings { c_in: 1.0 / norm, c_skip: sd2 / (kappa * kappa + sd2), c_out: kappa * sigma_data / norm }
        }
    }
}

/// What a checkpoint's manifest says (its `architecture` is always `"mlp"`).
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub kind: ModelKind,
    pub interpolant: Interpolant,
    pub time_input: TimeInput,
    /// `None`: the network's output is the model's output as it is.
    pub preconditioning: Option<Preconditioning>,
    pub sample_shape: Vec<usize>,
    pub time_features: usize,
    /// 0 for an unconditional model; otherwise labels 0..classes, and index `classes` of the class
    /// embedding is the null label of guidance.
    pub classes: usize,
}

impl Manifest {
    /// The manifest as TOML values, as written to `NAME.toml`.
    pub fn to_table(&self) -> toml::Table {
        let mut table = toml::Table::new();
        let int = |n: usize| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        table.insert("architecture".into(), "mlp".into());
        table.insert("kind".into(), self.kind.name().into());
        match &self.interpolant {
            Interpolant::RectifiedFlow => {
                table.insert("interpolant".into(), "rectified_flow".into());
            }
            Interpolant::VpCosine => {
                table.insert("interpolant".into(), "vp_cosine".into());
            }
            Interpolant::Discrete(d) => {
                table.insert("interpolant".into(), d.schedule.name().into());
                table.insert("train_steps".into(), int(d.train_steps()));
                if let BetaSchedule::Linear { beta_start, beta_end }
                | BetaSchedule::ScaledLinear { beta_start, beta_end } = d.schedule
                {
                    table.insert("beta_start".into(), beta_start.into());
                    table.insert("beta_end".into(), beta_end.into());
                }
            }
            Interpolant::Ve { sigma_max } => {
                table.insert("interpolant".into(), "ve".into());
                table.insert("sigma_max".into(), (*sigma_max).into());
            }
            Interpolant::TrigFlow { sigma_data } => {
                table.insert("interpolant".into(), "trigflow".into());
                table.insert("sigma_data".into(), (*sigma_data).into());
            }
        }
        table.insert("time_input".into(), self.time_input.name().into());
        if let Some(preconditioning) = self.preconditioning {
            table.insert("preconditioning".into(), preconditioning.name().into());
            let Preconditioning::Edm { sigma_data } = preconditioning;
            table.insert("sigma_data".into(), sigma_data.into());
        }
        table.insert("sample_shape".into(), toml::Value::Array(self.sample_shape.iter().map(|&n| int(n)).collect()));
        table.insert("time_features".into(), int(self.time_features));
        table.insert("classes".into(), int(self.classes));
        table
    }

    /// The manifest as safetensors `__metadata__` strings: strings as they are, numbers and
    /// arrays in TOML syntax.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        self.to_table()
            .into_iter()
            .map(|(key, value)| {
                let text = match value {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                (key, text)
            })
            .collect()
    }

    /// Reads a manifest from TOML values; `name` is how messages call the manifest. Unknown
    /// fields are errors when `strict` (a TOML file), ignored otherwise (metadata, where other
    /// tools write their own keys).
    pub fn from_table(table: &toml::Table, name: &str, strict: bool) -> Result<Manifest, LoadError> {
        let missing = |field: &str, expected: &str| LoadError::FieldMissing {
            manifest: name.into(),
            field: field.into(),
            expected: expected.into(),
        };
        let bad = |field: &str, value: &toml::Value, expected: &str| LoadError::FieldValue {
            manifest: name.into(),
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        };
        let spec_error = |source| LoadError::Manifest { manifest: name.into(), source };
        // The architecture first: a transformer's manifest is not an MLP's with unknown fields.
        if architecture_of(table, name)? != Architecture::Mlp {
            return Err(bad(
                "architecture",
                &table["architecture"],
                "this is not an MLP checkpoint (`load_model` loads every architecture)",
            ));
        }
        if strict && let Some(field) = table.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(LoadError::FieldValue {
                manifest: name.into(),
                field: field.clone(),
                value: table[field].to_string(),
                expected: format!("unknown field{}", did_you_mean(field, FIELDS)),
            });
        }
        let string = |field: &str, expected: &str| -> Result<Option<&str>, LoadError> {
            match table.get(field) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
                Some(other) => Err(bad(field, other, expected)),
            }
        };
        let count = |field: &str| -> Result<Option<usize>, LoadError> {
            match table.get(field) {
                None => Ok(None),
                Some(value @ toml::Value::Integer(n)) => {
                    usize::try_from(*n).map(Some).map_err(|_| bad(field, value, "expected a non-negative integer"))
                }
                Some(other) => Err(bad(field, other, "expected a non-negative integer")),
            }
        };
        let number = |field: &str| -> Result<Option<f64>, LoadError> {
            match table.get(field) {
                None => Ok(None),
                Some(toml::Value::Float(x)) => Ok(Some(*x)),
                Some(toml::Value::Integer(n)) => Ok(Some(*n as f64)),
                Some(other) => Err(bad(field, other, "expected a number")),
            }
        };

        let kind =
            string("kind", "expected a string")?.ok_or_else(|| missing("kind", "the model kind, e.g. \"eps\""))?;
        let kind = parse_kind("kind", kind).map_err(spec_error)?;
        let interpolant_name = string("interpolant", "expected a string")?
            .ok_or_else(|| missing("interpolant", &format!("one of {}", INTERPOLANTS.join(", "))))?;
        // `sigma_data` is the preconditioning's σ_d when there is one, else trigflow's.
        let preconditioning_name = string("preconditioning", "expected a string")?;
        let sigma_data = number("sigma_data")?;
        if preconditioning_name.is_none() && interpolant_name == "ve" && sigma_data.is_some() {
            return Err(bad(
                "sigma_data",
                &table["sigma_data"],
                "applies to the `trigflow` interpolant and to `preconditioning = \"edm\"`, and this manifest has neither",
            ));
        }
        let params = InterpolantParams {
            train_steps: count("train_steps")?,
            beta_start: number("beta_start")?,
            beta_end: number("beta_end")?,
            sigma_max: number("sigma_max")?,
            sigma_data: if preconditioning_name.is_some() { None } else { sigma_data },
        };
        let interpolant = interpolant_from_params(interpolant_name, &params).map_err(spec_error)?;
        let time_name = string("time_input", "expected a string")?
            .ok_or_else(|| missing("time_input", &format!("one of {}", TimeInput::NAMES.join(", "))))?;
        let time_input = TimeInput::from_name(time_name).ok_or_else(|| {
            bad(
                "time_input",
                &time_name.into(),
                &format!("unknown time input{}", did_you_mean(time_name, TimeInput::NAMES)),
            )
        })?;
        if time_input == TimeInput::Index && !matches!(interpolant, Interpolant::Discrete(_)) {
            return Err(bad(
                "time_input",
                &time_name.into(),
                "`index` needs a discrete interpolant (linear, scaled_linear, squaredcos_cap_v2)",
            ));
        }
        if time_input == TimeInput::EdmLogSigma {
            if !matches!(interpolant, Interpolant::Ve { .. }) {
                return Err(bad(
                    "time_input",
                    &time_name.into(),
                    &format!("`edm_log_sigma` needs the `ve` interpolant (κ = σ_max t), not `{interpolant_name}`"),
                ));
            }
            if kind.is_two_time() {
                return Err(bad(
                    "time_input",
                    &time_name.into(),
                    &format!(
                        "`edm_log_sigma` feeds one noise level, so a two-time kind (`{}`) cannot use it",
                        kind.name()
                    ),
                ));
            }
        }
        let preconditioning = match preconditioning_name {
            None => None,
            Some(name) => {
                let value = toml::Value::from(name);
                if !Preconditioning::NAMES.contains(&name) {
                    return Err(bad(
                        "preconditioning",
                        &value,
                        &format!("unknown preconditioning{}", did_you_mean(name, Preconditioning::NAMES)),
                    ));
                }
                if !matches!(interpolant, Interpolant::Ve { .. }) {
                    return Err(bad(
                        "preconditioning",
                        &value,
                        &format!(
                            "EDM preconditioning needs the `ve` interpolant (α = 1, σ = σ_max t), not `{interpolant_name}`"
                        ),
                    ));
                }
                if !matches!(kind, ModelKind::X0 | ModelKind::Consistency) {
                    return Err(bad(
                        "preconditioning",
                        &value,
                        &format!("applies to the kinds x0 and consistency only, not `{}`", kind.name()),
                    ));
                }
                let sigma_data = sigma_data.unwrap_or(0.5);
                if !(sigma_data > 0.0 && sigma_data.is_finite()) {
                    return Err(bad("sigma_data", &table["sigma_data"], "expected a positive number"));
                }
                Some(Preconditioning::Edm { sigma_data })
            }
        };
        let shape_value =
            table.get("sample_shape").ok_or_else(|| missing("sample_shape", "an array of dimensions, e.g. [2]"))?;
        let shape_error = || bad("sample_shape", shape_value, "expected an array of positive integers, e.g. [2]");
        let sample_shape: Vec<usize> = match shape_value {
            toml::Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|item| match item {
                    toml::Value::Integer(n) if *n > 0 => usize::try_from(*n).map_err(|_| shape_error()),
                    _ => Err(shape_error()),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(shape_error()),
        };
        let time_features =
            count("time_features")?.ok_or_else(|| missing("time_features", "the number of sinusoidal frequencies"))?;
        if time_features > 64 {
            return Err(bad("time_features", &table["time_features"], "expected at most 64 frequencies"));
        }
        let classes = count("classes")?.unwrap_or(0);
        Ok(Manifest { kind, interpolant, time_input, preconditioning, sample_shape, time_features, classes })
    }

    /// The flattened sample size.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// The length of the time features the network takes (one or two embedded times).
    pub fn time_len(&self) -> usize {
        let times = if self.kind.is_two_time() { 2 } else { 1 };
        2 * self.time_features * times
    }
}

/// Sinusoidal features of one time value, appended to `out`.
fn time_embedding(tau: f64, features: usize, out: &mut Vec<f32>) {
    let angle = |k: usize| std::f64::consts::PI * 2f64.powi(k as i32) * tau;
    out.extend((0..features).map(|k| angle(k).sin() as f32));
    out.extend((0..features).map(|k| angle(k).cos() as f32));
}

/// One linear layer's weights on the host, row-major.
pub(crate) struct LayerWeights {
    /// `[outputs, inputs]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub inputs: usize,
}

/// The built-in MLP, loaded from a checkpoint.
pub struct MlpModel {
    info: ModelInfo,
    manifest: Manifest,
    l1: Linear,
    l2: Linear,
    l3: Linear,
    class_embed: Option<CTensor>,
    /// The weights uploaded to each device the model ran on.
    on_devices: crate::device::PerDevice<crate::device::mlp::DeviceWeights>,
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

impl MlpModel {
    /// Loads the checkpoint at `path` and its manifest.
    pub fn load(path: &Path) -> Result<MlpModel, LoadError> {
        MlpModel::from_file(&CheckpointFile::open(path)?)
    }

    /// The MLP of an opened checkpoint whose manifest says `architecture = "mlp"`.
    pub fn from_file(checkpoint: &CheckpointFile) -> Result<MlpModel, LoadError> {
        let path = checkpoint.path.as_path();
        let ManifestTable { table, name, strict } = &checkpoint.manifest;
        let manifest = Manifest::from_table(table, name, *strict)?;
        let weights = checkpoint.weights()?;
        let class_embed = match manifest.classes {
            0 => None,
            classes => Some(weights.get("class_embed.weight", &[Some(classes + 1), None])?),
        };
        let class_dim = match &class_embed {
            Some(table) => table.dims()[1],
            None => 0,
        };
        let input = manifest.sample_len() + manifest.time_len() + class_dim;
        let w1 = weights.get("l1.weight", &[None, Some(input)])?;
        let hidden1 = w1.dims()[0];
        let b1 = weights.get("l1.bias", &[Some(hidden1)])?;
        let w2 = weights.get("l2.weight", &[None, Some(hidden1)])?;
        let hidden2 = w2.dims()[0];
        let b2 = weights.get("l2.bias", &[Some(hidden2)])?;
        let w3 = weights.get("l3.weight", &[Some(manifest.sample_len()), Some(hidden2)])?;
        let b3 = weights.get("l3.bias", &[Some(manifest.sample_len())])?;
        let info = ModelInfo {
            kind: manifest.kind,
            interpolant: manifest.interpolant.clone(),
            sample_shape: manifest.sample_shape.clone(),
            num_classes: (manifest.classes > 0).then_some(manifest.classes),
            source: path.display().to_string(),
        };
        Ok(MlpModel {
            info,
            manifest,
            l1: Linear::new(w1, Some(b1)),
            l2: Linear::new(w2, Some(b2)),
            l3: Linear::new(w3, Some(b3)),
            class_embed,
            on_devices: crate::device::PerDevice::default(),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn error(&self, message: impl ToString) -> ModelError {
        ModelError::Backend { model: self.info.source.clone(), message: message.to_string() }
    }

    /// Checks a call's time, input shape and label; returns the class-embedding row (the null
    /// row for an unlabelled call of a class-conditional model).
    pub(crate) fn check(&self, shape: &[usize], t: f64, label: Label) -> Result<Option<usize>, ModelError> {
        if !(0.0..=1.0).contains(&t) {
            return Err(ModelError::Time { model: self.info.source.clone(), t });
        }
        if shape.len() != self.info.sample_shape.len() + 1 || shape[1..] != self.info.sample_shape[..] {
            let mut expected = vec![shape.first().copied().unwrap_or(1)];
            expected.extend(&self.info.sample_shape);
            return Err(ModelError::Shape { model: self.info.source.clone(), expected, found: shape.to_vec() });
        }
        match (label, self.manifest.classes) {
            (None, 0) => Ok(None),
            (None, classes) => Ok(Some(classes)),
            (Some(label), 0) => Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind: self.info.kind,
                what: format!("take the class label {label} (it is unconditional)"),
            }),
            (Some(label), classes) => match usize::try_from(label) {
                Ok(index) if index < classes => Ok(Some(index)),
                _ => Err(ModelError::Label { model: self.info.source.clone(), label, classes }),
            },
        }
    }

    /// What the network takes beside the flattened sample, the same for every sample of a call:
    /// the time embedding of `t` (and of the second time of two-time kinds), then the class
    /// embedding's row `class`.
    pub(crate) fn conditioning(
        &self,
        t: f64,
        second: Option<f64>,
        class: Option<usize>,
    ) -> Result<Vec<f32>, ModelError> {
        let interpolant = &self.manifest.interpolant;
        let time_input = self.manifest.time_input;
        let fed = time_input.time(t, interpolant);
        if !fed.is_finite() {
            return Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind: self.info.kind,
                what: format!("evaluate its network at t = {t}: the time input `{}` is {fed} there", time_input.name()),
            });
        }
        let span = time_input.span(interpolant);
        let mut features = Vec::with_capacity(self.manifest.time_len());
        time_embedding(fed / span, self.manifest.time_features, &mut features);
        if let Some(second) = second {
            time_embedding(second / span, self.manifest.time_features, &mut features);
        }
        if let (Some(table), Some(class)) = (&self.class_embed, class) {
            let row = table.get(class).and_then(|r| r.to_vec1::<f32>()).map_err(|e| self.error(e))?;
            features.extend(row);
        }
        Ok(features)
    }

    /// The network's output for `x` with the conditioning features `features`, on the host.
    fn forward(&self, x: &Tensor, features: &[f32]) -> Result<Tensor, ModelError> {
        let batch = x.batch();
        let flat = self.manifest.sample_len();
        let run = || -> candle_core::Result<Vec<f32>> {
            let xs = CTensor::from_slice(&x.data, (batch, flat), &Device::Cpu)?;
            let rest = CTensor::from_slice(features, (1, features.len()), &Device::Cpu)?.repeat((batch, 1))?;
            let input = CTensor::cat(&[xs, rest], 1)?;
            let h = self.l1.forward(&input)?.silu()?;
            let h = self.l2.forward(&h)?.silu()?;
            let out = self.l3.forward(&h)?;
            out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
        };
        let data = run().map_err(|e| self.error(e))?;
        Ok(Tensor::new(x.shape.clone(), data))
    }

    /// The second time value the network takes for a two-time step from `t` to `s`.
    fn second_time(&self, t: f64, s: f64) -> f64 {
        let interpolant = &self.manifest.interpolant;
        match self.manifest.kind {
            ModelKind::FlowMap => self.manifest.time_input.time(s, interpolant),
            _ => self.manifest.time_input.gap(t - s, interpolant),
        }
    }

    /// The output of a one-time model at `(x, t)`: the network's output, or with a
    /// preconditioning `c_skip x + c_out F(c_in x, time input)`. Where `c_out = 0` (κ = 0 for
    /// EDM, κ ≤ κ_min for a consistency model) the output is `c_skip x` without the network, whose
    /// `edm_log_sigma` time input would be −∞ at κ = 0.
    fn one_time<B: MlpBackend>(
        &self,
        backend: &B,
        x: &B::Tensor,
        t: f64,
        class: Option<usize>,
    ) -> Result<B::Tensor, ModelError> {
        let Some(preconditioning) = self.manifest.preconditioning else {
            return backend.network(self, x, &self.conditioning(t, None, class)?);
        };
        let Scalings { c_in, c_skip, c_out } =
            preconditioning.scalings(self.info.kind, self.manifest.interpolant.kappa(t));
        if c_out == 0.0 {
            return backend.scale(x, c_skip);
        }
        let scaled = backend.scale(x, c_in)?;
        let network = backend.network(self, &scaled, &self.conditioning(t, None, class)?)?;
        backend.combine(x, c_skip, &network, c_out)
    }

    /// [`Model::field`] on any backend.
    pub(crate) fn field_with<B: MlpBackend>(
        &self,
        backend: &B,
        x: &B::Tensor,
        t: f64,
        label: Label,
    ) -> Result<(B::Tensor, FieldKind), ModelError> {
        let class = self.check(B::shape(x), t, label)?;
        let kind = self.info.kind;
        let Some(field_kind) = crate::convert::field_kind_of(kind) else {
            return Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind,
                what: "evaluate a continuous field".into(),
            });
        };
        if !kind.is_two_time() {
            return Ok((self.one_time(backend, x, t, class)?, field_kind));
        }
        // The instantaneous velocity of a two-time model is its average velocity at s = t.
        let features = self.conditioning(t, Some(self.second_time(t, t)), class)?;
        Ok((backend.network(self, x, &features)?, field_kind))
    }

    /// [`Model::jump`] on any backend.
    pub(crate) fn jump_with<B: MlpBackend>(
        &self,
        backend: &B,
        x: &B::Tensor,
        t: f64,
        s: f64,
        label: Label,
    ) -> Result<B::Tensor, ModelError> {
        let class = self.check(B::shape(x), t, label)?;
        if !(0.0..=1.0).contains(&s) {
            return Err(ModelError::Time { model: self.info.source.clone(), t: s });
        }
        let kind = self.info.kind;
        if kind == ModelKind::Consistency {
            if s != 0.0 {
                return Err(ModelError::Unsupported {
                    model: self.info.source.clone(),
                    kind,
                    what: format!("jump to s = {s} (a consistency model only jumps to data, s = 0)"),
                });
            }
            return self.one_time(backend, x, t, class);
        }
        if !kind.is_two_time() {
            return Err(ModelError::Unsupported {
                model: self.info.source.clone(),
                kind,
                what: "jump (only two-time and consistency models are told the target time)".into(),
            });
        }
        // x_s = x_t + (s − t) u(x_t, t, s), with u the network's average velocity.
        let features = self.conditioning(t, Some(self.second_time(t, s)), class)?;
        let u = backend.network(self, x, &features)?;
        backend.advance(x, &u, (s - t) as f32)
    }

    /// The network's weights, row-major: each layer's `[outputs, inputs]` weight and its bias.
    pub(crate) fn layers(&self) -> Result<[LayerWeights; 3], ModelError> {
        let layer = |linear: &Linear| -> candle_core::Result<LayerWeights> {
            let weight = linear.weight();
            let inputs = weight.dims()[1];
            let bias = match linear.bias() {
                Some(b) => b.to_vec1::<f32>()?,
                None => vec![0.0; weight.dims()[0]],
            };
            Ok(LayerWeights { weight: weight.flatten_all()?.to_vec1::<f32>()?, bias, inputs })
        };
        let all = || Ok::<_, candle_core::Error>([layer(&self.l1)?, layer(&self.l2)?, layer(&self.l3)?]);
        all().map_err(|e| self.error(e))
    }

    /// The weights of the network uploaded to `device` (to the device that holds its buffers, if
    /// it passes work on to another), uploaded on the first call.
    pub(crate) fn weights_on(
        &self,
        device: &Arc<dyn crate::device::Device>,
    ) -> Result<Arc<crate::device::mlp::DeviceWeights>, ModelError> {
        self.on_devices.get_or_upload(device, |device| crate::device::mlp::DeviceWeights::upload(self, device))
    }
}

/// The tensor operations of the MLP's evaluation around its network, on the host or on a device.
pub(crate) trait MlpBackend {
    type Tensor;
    fn shape(x: &Self::Tensor) -> &[usize];
    /// `a x`, in f64 per element and rounded to f32 (on a device: in f32).
    fn scale(&self, x: &Self::Tensor, a: f64) -> Result<Self::Tensor, ModelError>;
    /// `a x + b y`, in f64 per element and rounded to f32 (on a device: in f32).
    fn combine(&self, x: &Self::Tensor, a: f64, y: &Self::Tensor, b: f64) -> Result<Self::Tensor, ModelError>;
    /// `x + h u` in f32.
    fn advance(&self, x: &Self::Tensor, u: &Self::Tensor, h: f32) -> Result<Self::Tensor, ModelError>;
    /// The network on `x` with the conditioning features of the call.
    fn network(&self, model: &MlpModel, x: &Self::Tensor, features: &[f32]) -> Result<Self::Tensor, ModelError>;
}

/// The host: candle on the CPU.
struct Host;

impl MlpBackend for Host {
    type Tensor = Tensor;

    fn shape(x: &Tensor) -> &[usize] {
        &x.shape
    }

    fn scale(&self, x: &Tensor, a: f64) -> Result<Tensor, ModelError> {
        Ok(Tensor::new(x.shape.clone(), x.data.iter().map(|&v| (a * f64::from(v)) as f32).collect()))
    }

    fn combine(&self, x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor, ModelError> {
        let data = x.data.iter().zip(&y.data).map(|(&xv, &yv)| (a * f64::from(xv) + b * f64::from(yv)) as f32);
        Ok(Tensor::new(x.shape.clone(), data.collect()))
    }

    fn advance(&self, x: &Tensor, u: &Tensor, h: f32) -> Result<Tensor, ModelError> {
        Ok(Tensor::new(x.shape.clone(), x.data.iter().zip(&u.data).map(|(xv, uv)| xv + h * uv).collect()))
    }

    fn network(&self, model: &MlpModel, x: &Tensor, features: &[f32]) -> Result<Tensor, ModelError> {
        model.forward(x, features)
    }
}

impl Model for MlpModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn field(&self, x: &Tensor, t: f64, label: Label) -> Result<(Tensor, FieldKind), ModelError> {
        self.check_data(x)?;
        self.field_with(&Host, x, t, label)
    }

    fn jump(&self, x: &Tensor, t: f64, s: f64, label: Label) -> Result<Tensor, ModelError> {
        self.check_data(x)?;
        self.jump_with(&Host, x, t, s, label)
    }

    fn on_device(&self) -> Option<&dyn DeviceModel> {
        Some(self)
    }
}

impl MlpModel {
    /// Checks that a host tensor holds as many values as its shape says.
    fn check_data(&self, x: &Tensor) -> Result<(), ModelError> {
        if x.data.len() != x.shape.iter().product::<usize>() {
            return Err(self.error(format!(
                "the input has {} values but its shape {:?} needs more or fewer",
                x.data.len(),
                x.shape
            )));
        }
        Ok(())
    }
}

/// The tensors of a random MLP for `manifest`: hidden sizes 32 and 32 (see
/// [`random_mlp_tensors_of_width`]). Each entry is (name, shape, values).
pub fn random_mlp_tensors(manifest: &Manifest, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    random_mlp_tensors_of_width(manifest, 32, seed)
}

/// The tensors of a random MLP for `manifest` with two hidden layers of `hidden` units, a class
/// embedding of size 8 when the manifest has classes, weights and biases uniform in ±1/√fan_in
/// (PyTorch's default initialization) from a SplitMix64 stream seeded by `seed`: the same bytes
/// on every machine. Each entry is (name, shape, values).
pub fn random_mlp_tensors_of_width(
    manifest: &Manifest,
    hidden: usize,
    seed: u64,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    const CLASS_DIM: usize = 8;
    let mut state = seed;
    let mut uniform = move |bound: f64| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        ((2.0 * unit - 1.0) * bound) as f32
    };
    let class_dim = if manifest.classes > 0 { CLASS_DIM } else { 0 };
    let input = manifest.sample_len() + manifest.time_len() + class_dim;
    let out = manifest.sample_len();
    let mut tensors = Vec::new();
    if manifest.classes > 0 {
        let shape = vec![manifest.classes + 1, CLASS_DIM];
        tensors.push((
            "class_embed.weight".to_string(),
            shape,
            (0..(manifest.classes + 1) * CLASS_DIM).map(|_| uniform(1.0)).collect(),
        ));
    }
    for (name, fan_in, fan_out) in [("l1", input, hidden), ("l2", hidden, hidden), ("l3", hidden, out)] {
        let bound = 1.0 / (fan_in as f64).sqrt();
        tensors.push((
            format!("{name}.weight"),
            vec![fan_out, fan_in],
            (0..fan_out * fan_in).map(|_| uniform(bound)).collect(),
        ));
        tensors.push((format!("{name}.bias"), vec![fan_out], (0..fan_out).map(|_| uniform(bound)).collect()));
    }
    tensors
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

/// Writes a random MLP checkpoint ([`random_mlp_tensors`]) to `path` with its manifest in
/// `NAME.toml` beside it; returns the manifest's path.
pub fn write_random_mlp(path: &Path, manifest: &Manifest, seed: u64) -> Result<PathBuf, LoadError> {
    write_safetensors(path, &random_mlp_tensors(manifest, seed), None)?;
    let toml_path = path.with_extension("toml");
    std::fs::write(&toml_path, manifest.to_table().to_string())
        .map_err(|source| LoadError::Io { path: toml_path.clone(), source })?;
    Ok(toml_path)
}
