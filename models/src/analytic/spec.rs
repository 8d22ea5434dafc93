//! Analytic model specs: `analytic:NAME(key=value, ...)`.
//!
//! The grammar is small: a name, then optionally a parenthesized, comma-separated list of
//! `key=value` pairs. A value is a word (`eps`, `scaled_linear`), a number (`0.5`, `1000`) or a
//! bracketed list of numbers (`[0.5, -1]`). Whitespace around tokens is ignored. docs/models.md
//! lists the names, keys and defaults.
//!
//! `gaussian` and `gmm` are continuous models ([`AnalyticModel`], [`parse_spec`]); `poker` and
//! `markov` are token models ([`AnalyticTokenModel`]). [`parse_model`] parses either.

use std::sync::Arc;

use sched_lang::types::ModelKind;

use super::{AnalyticModel, Gaussian, GaussianMixture};
use sched_runtime::interpolant::{BetaSchedule, DiscreteVp, Interpolant};
use sched_runtime::model::Model;

use super::lookup::{MAX_NGRAM, PromptLookup};
use super::markov::{MarkovChain, MarkovOrder};
use super::table::TokenTable;
use super::tokens::{AnalyticTokenModel, ExactLaw, TokenKind};

/// The prefix that marks an analytic spec.
pub const PREFIX: &str = "analytic:";

/// The names of analytic models.
const NAMES: &[&str] = &["gaussian", "gmm", "poker", "markov", "lookup"];
/// The names of analytic token models.
const TOKEN_NAMES: &[&str] = &["poker", "markov", "lookup"];
/// Keys every continuous analytic model takes.
const COMMON_KEYS: &[&str] =
    &["kind", "interpolant", "train_steps", "beta_start", "beta_end", "sigma_max", "sigma_data"];
const GAUSSIAN_KEYS: &[&str] = &["dim", "length", "mean", "std"];
const GMM_KEYS: &[&str] = &["preset"];
const PRESETS: &[&str] = &["eight", "checker", "classes"];
const POKER_KEYS: &[&str] = &["kind", "heads"];
const MARKOV_KEYS: &[&str] = &["kind", "heads", "vocab", "order", "seed"];
const LOOKUP_KEYS: &[&str] = &["kind", "heads", "vocab", "n"];
/// The most heads of an analytic `mtp_lm`.
const MAX_HEADS: usize = 8;

/// The interpolant names of specs and manifests.
pub const INTERPOLANTS: &[&str] =
    &["rectified_flow", "vp_cosine", "linear", "scaled_linear", "squaredcos_cap_v2", "ve", "trigflow"];

/// A spec (or a manifest value) that does not describe a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("`{spec}` is not a well-formed analytic spec: {message}")]
    Syntax { spec: String, message: String },
    #[error("unknown analytic model `{name}`{help}")]
    UnknownName { name: String, help: String },
    #[error("unknown key `{key}` for analytic:{model}{help}")]
    UnknownKey { model: String, key: String, help: String },
    #[error("the key `{key}` is given twice")]
    DuplicateKey { key: String },
    #[error("`{key} = {value}`: {expected}")]
    BadValue { key: String, value: String, expected: String },
    #[error("`{key}` does not apply to interpolant {interpolant} (it applies to {applies_to})")]
    NotApplicable { key: String, interpolant: String, applies_to: String },
    #[error(
        "`{key} = {value}`: an MLP checkpoint is a continuous model; token models are transformer checkpoints (`architecture = \"transformer\"`, docs/models.md)"
    )]
    TokenKindInMlp { key: String, value: String },
    #[error("analytic:{model} is a {family} model: kind must be one of {kinds}")]
    KindFamily { model: String, family: String, kinds: String },
    #[error("`{key}` does not apply to kind {kind} (it applies to {applies_to})")]
    NotForKind { key: String, kind: String, applies_to: String },
    #[error("analytic:{model} is a token model, not a continuous one (`parse_model` parses both)")]
    NotContinuous { model: String },
    #[error("analytic:{model} needs `{key}`: {help}")]
    MissingKey { model: String, key: String, help: String },
}

impl SpecError {
    /// Every code of this error, with when it is reported (docs/diagnostics.md lists them).
    pub const CODES: &'static [(&'static str, &'static str)] = &[
        ("sched::spec::syntax", "an analytic spec is not well formed"),
        ("sched::spec::unknown_name", "an analytic spec names an unknown model"),
        ("sched::spec::unknown_key", "an analytic spec has an unknown key"),
        ("sched::spec::duplicate_key", "an analytic spec gives a key twice"),
        ("sched::spec::bad_value", "a key of a spec or a manifest has a value it cannot have"),
        ("sched::spec::not_applicable", "a key does not apply to the interpolant"),
        ("sched::spec::token_kind_in_mlp", "an MLP checkpoint names a token model kind"),
        ("sched::spec::kind_family", "a kind does not belong to the model's family"),
        ("sched::spec::not_for_kind", "a key does not apply to the kind"),
        ("sched::spec::not_continuous", "a token model is given where a continuous one is needed"),
        ("sched::spec::missing_key", "an analytic spec lacks a key the model needs"),
    ];

    /// The error's stable code.
    pub fn code(&self) -> &'static str {
        match self {
            SpecError::Syntax { .. } => "sched::spec::syntax",
            SpecError::UnknownName { .. } => "sched::spec::unknown_name",
            SpecError::UnknownKey { .. } => "sched::spec::unknown_key",
            SpecError::DuplicateKey { .. } => "sched::spec::duplicate_key",
            SpecError::BadValue { .. } => "sched::spec::bad_value",
            SpecError::NotApplicable { .. } => "sched::spec::not_applicable",
            SpecError::TokenKindInMlp { .. } => "sched::spec::token_kind_in_mlp",
            SpecError::KindFamily { .. } => "sched::spec::kind_family",
            SpecError::NotForKind { .. } => "sched::spec::not_for_kind",
            SpecError::NotContinuous { .. } => "sched::spec::not_continuous",
            SpecError::MissingKey { .. } => "sched::spec::missing_key",
        }
    }
}

/// The end of a message about an unknown word: "did you mean" the closest candidate when one is
/// close (as the front end's suggestions pick it), else the list of candidates.
pub fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    match sched_lang::check::suggest(word, candidates.iter().copied()) {
        Some(candidate) => format!(" (did you mean `{candidate}`?)"),
        None => format!(" (expected one of: {})", candidates.join(", ")),
    }
}

/// A continuous model kind by name, for MLP checkpoint manifests: a token kind there is an error
/// that points to the transformer checkpoints.
pub fn parse_kind(key: &str, value: &str) -> Result<ModelKind, SpecError> {
    match ModelKind::from_name(value) {
        Some(kind) if kind.is_token_model() => Err(SpecError::TokenKindInMlp { key: key.into(), value: value.into() }),
        Some(kind) => Ok(kind),
        None => Err(unknown_kind(key, value, false)),
    }
}

/// The names of the token kinds (`token`) or of the continuous kinds.
fn kind_names(token: bool) -> Vec<&'static str> {
    ModelKind::ALL.iter().filter(|k| k.is_token_model() == token).map(|k| k.name()).collect()
}

/// `value` is not a kind; the help looks among the token kinds (`token`) or the continuous ones.
fn unknown_kind(key: &str, value: &str, token: bool) -> SpecError {
    SpecError::BadValue {
        key: key.into(),
        value: value.into(),
        expected: format!("unknown kind{}", did_you_mean(value, &kind_names(token))),
    }
}

/// The kind of the continuous analytic model `model`: a token kind is an error.
fn continuous_kind(model: &str, value: &str) -> Result<ModelKind, SpecError> {
    match ModelKind::from_name(value) {
        Some(kind) if kind.is_token_model() => Err(SpecError::KindFamily {
            model: model.into(),
            family: "continuous".into(),
            kinds: kind_names(false).join(", "),
        }),
        Some(kind) => Ok(kind),
        None => Err(unknown_kind("kind", value, false)),
    }
}

/// The optional parameters of an interpolant, as given in a spec or a manifest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InterpolantParams {
    /// Discrete schedules: the number of training steps N (default 1000).
    pub train_steps: Option<usize>,
    /// `linear` and `scaled_linear`: the first and last beta (defaults: diffusers' 0.0001 → 0.02
    /// and 0.00085 → 0.012).
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    /// `ve`: σ at t = 1 (default 80).
    pub sigma_max: Option<f64>,
    /// `trigflow`: σ_d (default 0.5).
    pub sigma_data: Option<f64>,
}

/// The interpolant called `name` with `params`; a parameter that does not apply to it is an error.
pub fn interpolant_from_params(name: &str, params: &InterpolantParams) -> Result<Interpolant, SpecError> {
    let not_applicable = |key: &str, applies_to: &str| SpecError::NotApplicable {
        key: key.into(),
        interpolant: name.into(),
        applies_to: applies_to.into(),
    };
    let discrete = matches!(name, "linear" | "scaled_linear" | "squaredcos_cap_v2");
    if !discrete && params.train_steps.is_some() {
        return Err(not_applicable("train_steps", "linear, scaled_linear, squaredcos_cap_v2"));
    }
    if !matches!(name, "linear" | "scaled_linear") {
        for (key, value) in [("beta_start", params.beta_start), ("beta_end", params.beta_end)] {
            if value.is_some() {
                return Err(not_applicable(key, "linear, scaled_linear"));
            }
        }
    }
    if name != "ve" && params.sigma_max.is_some() {
        return Err(not_applicable("sigma_max", "ve"));
    }
    if name != "trigflow" && params.sigma_data.is_some() {
        return Err(not_applicable("sigma_data", "trigflow"));
    }
    let positive = |key: &str, value: f64| {
        if value > 0.0 && value.is_finite() {
            Ok(value)
        } else {
            Err(SpecError::BadValue {
                key: key.into(),
                value: value.to_string(),
                expected: "expected a positive number".into(),
            })
        }
    };
    let train_steps = match params.train_steps {
        Some(n) if !(2..=100_000).contains(&n) => {
            return Err(SpecError::BadValue {
                key: "train_steps".into(),
                value: n.to_string(),
                expected: "expected between 2 and 100000 steps".into(),
            });
        }
        Some(n) => n,
        None => 1000,
    };
    let betas = |default: (f64, f64)| -> Result<(f64, f64), SpecError> {
        let start = positive("beta_start", params.beta_start.unwrap_or(default.0))?;
        let end = positive("beta_end", params.beta_end.unwrap_or(default.1))?;
        if end >= 1.0 || start > end {
            return Err(SpecError::BadValue {
                key: "beta_end".into(),
                value: end.to_string(),
                expected: format!("expected beta_start ({start}) <= beta_end < 1"),
            });
        }
        Ok((start, end))
    };
    Ok(match name {
        "rectified_flow" => Interpolant::RectifiedFlow,
        "vp_cosine" => Interpolant::VpCosine,
        "linear" => {
            let (beta_start, beta_end) = betas((0.0001, 0.02))?;
            Interpolant::Discrete(DiscreteVp::new(BetaSchedule::Linear { beta_start, beta_end }, train_steps))
        }
        "scaled_linear" => {
            let (beta_start, beta_end) = betas((0.00085, 0.012))?;
            Interpolant::Discrete(DiscreteVp::new(BetaSchedule::ScaledLinear { beta_start, beta_end }, train_steps))
        }
        "squaredcos_cap_v2" => Interpolant::Discrete(DiscreteVp::new(BetaSchedule::SquaredCosCapV2, train_steps)),
        "ve" => Interpolant::Ve { sigma_max: positive("sigma_max", params.sigma_max.unwrap_or(80.0))? },
        "trigflow" => Interpolant::TrigFlow { sigma_data: positive("sigma_data", params.sigma_data.unwrap_or(0.5))? },
        _ => {
            return Err(SpecError::BadValue {
                key: "interpolant".into(),
                value: name.into(),
                expected: format!("unknown interpolant{}", did_you_mean(name, INTERPOLANTS)),
            });
        }
    })
}

/// The `key=value` pairs of a spec, in order.
struct Args {
    pairs: Vec<(String, String)>,
}

impl Args {
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn number(&self, key: &str) -> Result<Option<f64>, SpecError> {
        self.get(key).map(|value| parse_number(key, value)).transpose()
    }

    fn count(&self, key: &str) -> Result<Option<usize>, SpecError> {
        self.get(key)
            .map(|value| {
                value.parse::<usize>().map_err(|_| SpecError::BadValue {
                    key: key.into(),
                    value: value.into(),
                    expected: "expected a non-negative integer".into(),
                })
            })
            .transpose()
    }

    /// A list of `len` numbers, or a scalar broadcast to `len`.
    fn numbers(&self, key: &str, len: usize) -> Result<Option<Vec<f64>>, SpecError> {
        let Some(value) = self.get(key) else { return Ok(None) };
        let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) else {
            return Ok(Some(vec![parse_number(key, value)?; len]));
        };
        let items: Vec<f64> = inner.split(',').map(|item| parse_number(key, item.trim())).collect::<Result<_, _>>()?;
        if items.len() != len {
            return Err(SpecError::BadValue {
                key: key.into(),
                value: value.into(),
                expected: format!("expected {len} values (one per dimension) or one number, found {}", items.len()),
            });
        }
        Ok(Some(items))
    }
}

fn parse_number(key: &str, value: &str) -> Result<f64, SpecError> {
    match value.parse::<f64>() {
        Ok(number) if number.is_finite() => Ok(number),
        _ => Err(SpecError::BadValue {
            key: key.into(),
            value: value.into(),
            expected: "expected a finite number".into(),
        }),
    }
}

/// Splits `name(args)` and the arguments into pairs.
fn split(spec: &str) -> Result<(String, Args), SpecError> {
    let syntax = |message: String| SpecError::Syntax { spec: spec.into(), message };
    let Some(rest) = spec.trim().strip_prefix(PREFIX) else {
        return Err(syntax(format!("it does not start with `{PREFIX}`")));
    };
    let (name, inner) = match rest.find('(') {
        None => (rest.trim(), ""),
        Some(open) => {
            let Some(inner) = rest[open + 1..].trim_end().strip_suffix(')') else {
                return Err(syntax("the argument list does not end with `)`".into()));
            };
            (rest[..open].trim(), inner)
        }
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(syntax(format!("`{name}` is not a model name (letters, digits and `_`)")));
    }
    // Split on the commas outside brackets.
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth.checked_sub(1).ok_or_else(|| syntax("a `]` has no matching `[`".into()))?;
            }
            '(' | ')' => return Err(syntax(format!("unexpected `{c}` inside the argument list"))),
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(syntax("a `[` is not closed".into()));
    }
    items.push(&inner[start..]);
    let mut pairs: Vec<(String, String)> = Vec::new();
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            if inner.trim().is_empty() {
                continue;
            }
            return Err(syntax("an argument is empty (two commas in a row, or a trailing comma)".into()));
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(syntax(format!("expected `key=value`, found `{item}`")));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(syntax(format!("expected `key=value`, found `{item}`")));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(SpecError::DuplicateKey { key: key.into() });
        }
        pairs.push((key.into(), value.into()));
    }
    Ok((name.into(), Args { pairs }))
}

/// Parses an analytic spec (with its `analytic:` prefix) of any model, continuous or token.
pub fn parse_model(spec: &str) -> Result<Arc<dyn Model>, SpecError> {
    let (name, args) = split(spec)?;
    if TOKEN_NAMES.contains(&name.as_str()) {
        Ok(Arc::new(token_model(spec, &name, &args)?))
    } else {
        Ok(Arc::new(continuous_model(spec, &name, &args)?))
    }
}

/// Parses the analytic spec (with its `analytic:` prefix) of a continuous model; a token model's
/// spec is an error ([`parse_model`] parses both).
pub fn parse_spec(spec: &str) -> Result<AnalyticModel, SpecError> {
    let (name, args) = split(spec)?;
    if TOKEN_NAMES.contains(&name.as_str()) {
        return Err(SpecError::NotContinuous { model: name });
    }
    continuous_model(spec, &name, &args)
}

/// Checks that every key of `args` is one of `keys` of the model `name`.
fn check_keys(name: &str, args: &Args, keys: &[&str]) -> Result<(), SpecError> {
    match args.pairs.iter().find(|(k, _)| !keys.contains(&k.as_str())) {
        Some((key, _)) => {
            Err(SpecError::UnknownKey { model: name.into(), key: key.clone(), help: did_you_mean(key, keys) })
        }
        None => Ok(()),
    }
}

/// The continuous model `name` of `spec`, with its arguments.
fn continuous_model(spec: &str, name: &str, args: &Args) -> Result<AnalyticModel, SpecError> {
    let own_keys = match name {
        "gaussian" => GAUSSIAN_KEYS,
        "gmm" => GMM_KEYS,
        _ => return Err(SpecError::UnknownName { help: did_you_mean(name, NAMES), name: name.into() }),
    };
    let keys: Vec<&str> = COMMON_KEYS.iter().chain(own_keys).copied().collect();
    check_keys(name, args, &keys)?;
    let kind = continuous_kind(name, args.get("kind").unwrap_or("velocity"))?;
    let params = InterpolantParams {
        train_steps: args.count("train_steps")?,
        beta_start: args.number("beta_start")?,
        beta_end: args.number("beta_end")?,
        sigma_max: args.number("sigma_max")?,
        sigma_data: args.number("sigma_data")?,
    };
    let interpolant = interpolant_from_params(args.get("interpolant").unwrap_or("rectified_flow"), &params)?;
    let source = spec.trim().to_string();
    let model = if name == "gaussian" {
        let (density, shape) = gaussian(args)?;
        AnalyticModel::new(kind, interpolant, shape, Box::new(density), source)
    } else {
        let preset = args.get("preset").unwrap_or("eight");
        let density = match preset {
            "eight" => GaussianMixture::eight(),
            "checker" => GaussianMixture::checker(),
            "classes" => GaussianMixture::classes(),
            _ => {
                return Err(SpecError::BadValue {
                    key: "preset".into(),
                    value: preset.into(),
                    expected: format!("unknown preset{}", did_you_mean(preset, PRESETS)),
                });
            }
        };
        AnalyticModel::new(kind, interpolant, vec![2], Box::new(density), source)
    };
    Ok(model)
}

/// The token model `name` (`poker`, `markov` or `lookup`) of `spec`, with its arguments.
fn token_model(spec: &str, name: &str, args: &Args) -> Result<AnalyticTokenModel, SpecError> {
    check_keys(
        name,
        args,
        match name {
            "poker" => POKER_KEYS,
            "markov" => MARKOV_KEYS,
            _ => LOOKUP_KEYS,
        },
    )?;
    let kind = token_kind(name, args)?;
    let law: Box<dyn ExactLaw> = match name {
        "poker" => Box::new(TokenTable::poker()),
        "markov" => Box::new(markov(args)?),
        _ => Box::new(lookup(args, kind)?),
    };
    Ok(AnalyticTokenModel::new(kind, law, spec.trim().to_string()))
}

/// The prompt-lookup draft of a spec: `vocab` token ids (required: the target's vocabulary
/// size), n-grams of at most `n` tokens (default 3), kind `causal_lm` or `mtp_lm`.
fn lookup(args: &Args, kind: TokenKind) -> Result<PromptLookup, SpecError> {
    if kind == TokenKind::MaskedLm {
        return Err(SpecError::BadValue {
            key: "kind".into(),
            value: ModelKind::MaskedLm.name().into(),
            expected: "a prompt-lookup draft predicts left to right: expected causal_lm or mtp_lm".into(),
        });
    }
    let Some(size) = args.count("vocab")? else {
        return Err(SpecError::MissingKey {
            model: "lookup".into(),
            key: "vocab".into(),
            help: "the target model's vocabulary size (49152 for SmolLM2), so that draft and target agree".into(),
        });
    };
    let ngram = args.count("n")?.unwrap_or(3);
    if !(1..=MAX_NGRAM).contains(&ngram) {
        return Err(SpecError::BadValue {
            key: "n".into(),
            value: ngram.to_string(),
            expected: format!("expected n-grams of 1 to {MAX_NGRAM} tokens"),
        });
    }
    PromptLookup::new(size, ngram).map_err(|expected| SpecError::BadValue {
        key: "vocab".into(),
        value: size.to_string(),
        expected,
    })
}

/// The kind of a token model (default `causal_lm`) with its heads (`mtp_lm` only; default 2).
fn token_kind(name: &str, args: &Args) -> Result<TokenKind, SpecError> {
    let value = args.get("kind").unwrap_or("causal_lm");
    let kind = match ModelKind::from_name(value) {
        Some(ModelKind::CausalLm) => TokenKind::CausalLm,
        Some(ModelKind::MaskedLm) => TokenKind::MaskedLm,
        Some(ModelKind::MtpLm) => TokenKind::MtpLm { heads: 2 },
        Some(_) => {
            return Err(SpecError::KindFamily {
                model: name.into(),
                family: "token".into(),
                kinds: kind_names(true).join(", "),
            });
        }
        None => return Err(unknown_kind("kind", value, true)),
    };
    let Some(heads) = args.count("heads")? else { return Ok(kind) };
    match kind {
        TokenKind::MtpLm { .. } if (1..=MAX_HEADS).contains(&heads) => Ok(TokenKind::MtpLm { heads }),
        TokenKind::MtpLm { .. } => Err(SpecError::BadValue {
            key: "heads".into(),
            value: heads.to_string(),
            expected: format!("expected between 1 and {MAX_HEADS} heads"),
        }),
        other => Err(SpecError::NotForKind {
            key: "heads".into(),
            kind: other.model_kind().name().into(),
            applies_to: ModelKind::MtpLm.name().into(),
        }),
    }
}

/// The Markov chain of a spec: `vocab` words (default 16), `order` 1 or 2 (default 1), `seed`
/// (default 0).
fn markov(args: &Args) -> Result<MarkovChain, SpecError> {
    let words = args.count("vocab")?.unwrap_or(16);
    let order = match args.get("order").unwrap_or("1") {
        "1" => MarkovOrder::First,
        "2" => MarkovOrder::Second,
        other => {
            return Err(SpecError::BadValue {
                key: "order".into(),
                value: other.into(),
                expected: "expected 1 or 2".into(),
            });
        }
    };
    let seed = match args.get("seed") {
        None => 0,
        Some(value) => value.parse::<u64>().map_err(|_| SpecError::BadValue {
            key: "seed".into(),
            value: value.into(),
            expected: "expected an integer between 0 and 2^64 - 1".into(),
        })?,
    };
    MarkovChain::new(words, order, seed).map_err(|error| SpecError::BadValue {
        key: "vocab".into(),
        value: words.to_string(),
        expected: error.to_string(),
    })
}

/// The Gaussian of a spec and its sample shape. Defaults: `dim = 2`, mean (1, −1, 1, −1, ...)
/// and std (0.25, 1, 0.25, 1, ...): an elongated blob away from the origin, so that 2-D
/// trajectories curve visibly.
fn gaussian(args: &Args) -> Result<(Gaussian, Vec<usize>), SpecError> {
    let dim = args.count("dim")?.unwrap_or(2);
    let length = args.count("length")?;
    for (key, value) in [("dim", Some(dim)), ("length", length)] {
        if let Some(value @ (0 | 65_537..)) = value {
            return Err(SpecError::BadValue {
                key: key.into(),
                value: value.to_string(),
                expected: "expected between 1 and 65536".into(),
            });
        }
    }
    let mean =
        args.numbers("mean", dim)?.unwrap_or_else(|| (0..dim).map(|k| if k % 2 == 0 { 1.0 } else { -1.0 }).collect());
    let std =
        args.numbers("std", dim)?.unwrap_or_else(|| (0..dim).map(|k| if k % 2 == 0 { 0.25 } else { 1.0 }).collect());
    if let Some(bad) = std.iter().find(|s| **s <= 0.0) {
        return Err(SpecError::BadValue {
            key: "std".into(),
            value: args.get("std").unwrap_or_default().into(),
            expected: format!("every std must be positive, found {bad}"),
        });
    }
    let positions = length.unwrap_or(1);
    let shape = match length {
        Some(length) => vec![length, dim],
        None => vec![dim],
    };
    let repeat = |values: &[f64]| values.iter().copied().cycle().take(positions * dim).collect::<Vec<f64>>();
    Ok((Gaussian::new(repeat(&mean), repeat(&std)), shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sched_runtime::model::Model;

    fn error(spec: &str) -> String {
        match parse_spec(spec) {
            Ok(_) => panic!("`{spec}` parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_and_shapes() {
        let m = parse_spec("analytic:gaussian").expect("parses");
        assert_eq!(m.info().kind, ModelKind::Velocity);
        assert_eq!(m.info().interpolant, Interpolant::RectifiedFlow);
        assert_eq!(m.info().sample_shape, vec![2]);
        let seq = parse_spec("analytic:gaussian(dim=3, length=4, mean=[1,2,3], std=0.5)").expect("parses");
        assert_eq!(seq.info().sample_shape, vec![4, 3]);
        assert_eq!(seq.density().size(), 12);
        let m = parse_spec(" analytic:gmm( preset = classes , kind=eps, interpolant=linear, train_steps=500 ) ")
            .expect("parses");
        assert_eq!(m.info().num_classes, Some(4));
        match &m.info().interpolant {
            Interpolant::Discrete(d) => {
                assert_eq!(d.train_steps(), 500);
                assert_eq!(d.schedule, BetaSchedule::DDPM_LINEAR);
            }
            other => panic!("{other:?}"),
        }
        let ve = parse_spec("analytic:gmm(interpolant=ve, sigma_max=10)").expect("parses");
        assert_eq!(ve.info().interpolant, Interpolant::Ve { sigma_max: 10.0 });
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(error("analytic:gausian"), "unknown analytic model `gausian` (did you mean `gaussian`?)");
        assert_eq!(
            error("analytic:gmm(presett=eight)"),
            "unknown key `presett` for analytic:gmm (did you mean `preset`?)"
        );
        assert_eq!(error("analytic:gmm(preset=eigth)"), "`preset = eigth`: unknown preset (did you mean `eight`?)");
        assert_eq!(error("analytic:gmm(kind=velocty)"), "`kind = velocty`: unknown kind (did you mean `velocity`?)");
        assert_eq!(
            error("analytic:gmm(interpolant=rectified)"),
            "`interpolant = rectified`: unknown interpolant (did you mean `rectified_flow`?)"
        );
        assert_eq!(error("analytic:gmm(kind=eps, kind=x0)"), "the key `kind` is given twice");
        assert_eq!(
            error("analytic:gmm(sigma_max=3)"),
            "`sigma_max` does not apply to interpolant rectified_flow (it applies to ve)"
        );
        assert_eq!(
            error("analytic:gaussian(dim=2, mean=[1,2,3])"),
            "`mean = [1,2,3]`: expected 2 values (one per dimension) or one number, found 3"
        );
        assert_eq!(error("analytic:gaussian(std=-1)"), "`std = -1`: every std must be positive, found -1");
        assert_eq!(error("analytic:gaussian(dim=0)"), "`dim = 0`: expected between 1 and 65536");
        assert_eq!(error("analytic:gaussian(dim=two)"), "`dim = two`: expected a non-negative integer");
        assert_eq!(
            error("analytic:gmm(preset=eight"),
            "`analytic:gmm(preset=eight` is not a well-formed analytic spec: the argument list does not end with `)`"
        );
        assert_eq!(
            error("analytic:gmm(preset)"),
            "`analytic:gmm(preset)` is not a well-formed analytic spec: expected `key=value`, found `preset`"
        );
        assert_eq!(
            error("analytic:gaussian(mean=[1,2)"),
            "`analytic:gaussian(mean=[1,2)` is not a well-formed analytic spec: a `[` is not closed"
        );
        assert_eq!(
            error("analytic:zz"),
            "unknown analytic model `zz` (expected one of: gaussian, gmm, poker, markov, lookup)"
        );
    }

    #[test]
    fn token_specs_parse_into_token_models() {
        let parse = |spec: &str| parse_model(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let poker = parse("analytic:poker");
        assert_eq!(poker.info().kind, ModelKind::CausalLm);
        assert_eq!(poker.info().source, "analytic:poker");
        assert_eq!(poker.info().sample_shape, Vec::<usize>::new());
        assert_eq!(poker.tokens().map(|t| t.heads()), Some(1));
        let mtp = parse(" analytic:poker(kind=mtp_lm) ");
        assert_eq!(mtp.info().kind, ModelKind::MtpLm);
        assert_eq!(mtp.tokens().map(|t| t.heads()), Some(2));
        assert_eq!(parse("analytic:poker(kind=mtp_lm, heads=8)").tokens().map(|t| t.heads()), Some(8));
        assert_eq!(parse("analytic:poker(kind=masked_lm)").tokens().map(|t| t.heads()), Some(0));
        let markov = parse("analytic:markov(vocab=5, order=2, seed=3, kind=masked_lm)");
        assert_eq!(markov.info().kind, ModelKind::MaskedLm);
        assert_eq!(markov.tokens().map(|t| t.vocab().size), Some(6));
        assert_eq!(parse("analytic:markov").tokens().map(|t| t.vocab().size), Some(17));
        assert!(parse("analytic:gmm").tokens().is_none());
        let lookup = parse("analytic:lookup(vocab=100, n=2)");
        assert_eq!(lookup.info().kind, ModelKind::CausalLm);
        assert_eq!(lookup.tokens().map(|t| t.vocab().size), Some(100));
    }

    #[test]
    fn token_spec_errors_name_the_problem() {
        let token_error = |spec: &str| match parse_model(spec) {
            Ok(_) => panic!("`{spec}` parsed"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            token_error("analytic:poker(kind=eps)"),
            "analytic:poker is a token model: kind must be one of causal_lm, masked_lm, mtp_lm"
        );
        assert_eq!(
            error("analytic:gmm(kind=causal_lm)"),
            "analytic:gmm is a continuous model: kind must be one of eps, x0, v, velocity, score, flow_map, mean_flow, shortcut, consistency"
        );
        assert_eq!(
            token_error("analytic:lookup"),
            "analytic:lookup needs `vocab`: the target model's vocabulary size (49152 for SmolLM2), so that draft and target agree"
        );
        assert_eq!(token_error("analytic:lookup(vocab=10, n=9)"), "`n = 9`: expected n-grams of 1 to 8 tokens");
        assert_eq!(
            token_error("analytic:lookup(vocab=0)"),
            "`vocab = 0`: a prompt-lookup draft has between 1 and 16777216 token ids"
        );
        assert_eq!(
            token_error("analytic:lookup(vocab=10, kind=masked_lm)"),
            "`kind = masked_lm`: a prompt-lookup draft predicts left to right: expected causal_lm or mtp_lm"
        );
        assert_eq!(
            token_error("analytic:markov(kind=causal)"),
            "`kind = causal`: unknown kind (did you mean `causal_lm`?)"
        );
        assert_eq!(
            token_error("analytic:markov(states=3)"),
            "unknown key `states` for analytic:markov (expected one of: kind, heads, vocab, order, seed)"
        );
        assert_eq!(
            token_error("analytic:poker(interpolant=ve)"),
            "unknown key `interpolant` for analytic:poker (expected one of: kind, heads)"
        );
        assert_eq!(
            token_error("analytic:poker(heads=3)"),
            "`heads` does not apply to kind causal_lm (it applies to mtp_lm)"
        );
        assert_eq!(token_error("analytic:poker(kind=mtp_lm, heads=9)"), "`heads = 9`: expected between 1 and 8 heads");
        assert_eq!(token_error("analytic:markov(vocab=1)"), "`vocab = 1`: a Markov chain has between 2 and 256 words");
        assert_eq!(token_error("analytic:markov(order=3)"), "`order = 3`: expected 1 or 2");
        assert_eq!(token_error("analytic:markov(seed=-1)"), "`seed = -1`: expected an integer between 0 and 2^64 - 1");
        assert_eq!(
            error("analytic:poker"),
            "analytic:poker is a token model, not a continuous one (`parse_model` parses both)"
        );
    }
}
