//! The manifest of an MLP checkpoint: what the network computes (its kind and interpolant), how
//! it is fed the time ([`TimeInput`]), its optional [`Preconditioning`], and its shapes.

use std::collections::HashMap;

use sched_lang::types::ModelKind;
use sched_runtime::interpolant::{BetaSchedule, Interpolant};

use crate::analytic::spec::{INTERPOLANTS, InterpolantParams, did_you_mean, interpolant_from_params, parse_kind};
use crate::checkpoint::{Architecture, architecture_of};
use crate::error::LoadError;

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
