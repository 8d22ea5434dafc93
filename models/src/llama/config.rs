//! The hyperparameters of a Llama-family network (Llama, SmolLM, Qwen2, Mistral), read from a
//! Hugging Face `config.json` or from a GGUF file's metadata, and checked before any weight is read.

use std::path::Path;

use serde_json::Value as Json;

use crate::error::LoadError;

/// The largest size a configuration may give (width, layers, heads, vocabulary, positions): far
/// above any model this runs, and small enough that no shape arithmetic overflows.
const MAX_SIZE: usize = 1 << 24;

/// Which variant of the architecture a checkpoint is: they differ in the attention's biases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Qwen2,
    Mistral,
}

impl Family {
    /// The `model_type` values of `config.json` and the `general.architecture` values of GGUF
    /// files that name each family.
    pub const NAMES: &'static [&'static str] = &["llama", "qwen2", "mistral"];

    fn from_name(name: &str) -> Option<Family> {
        match name {
            "llama" => Some(Family::Llama),
            "qwen2" => Some(Family::Qwen2),
            "mistral" => Some(Family::Mistral),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Mistral => "mistral",
        }
    }
}

/// How RoPE's frequencies are rescaled for long contexts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (transformers' `linear`).
    Linear {
        factor: f64,
    },
    /// Llama 3's piecewise rescaling of the frequencies (transformers' `llama3`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_positions: f64,
    },
}

/// The rotary position embedding of the attention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    /// The base θ of the frequencies θ^(−2i/d).
    pub theta: f64,
    pub scaling: RopeScaling,
}

impl Rope {
    /// The inverse frequency of each pair of a head of `head_dim`, as transformers computes them
    /// (`1 / θ^(2i/d)`, then the scaling), in f32.
    pub fn inverse_frequencies(&self, head_dim: usize) -> Vec<f32> {
        let base: Vec<f32> = (0..head_dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                1.0 / (self.theta as f32).powf(exponent)
            })
            .collect();
        match self.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } => {
                let (factor, low, high, original) =
                    (factor as f32, low_freq_factor as f32, high_freq_factor as f32, original_max_positions as f32);
                let low_freq_wavelen = original / low;
                let high_freq_wavelen = original / high;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen > low_freq_wavelen {
                            f / factor
                        } else if wavelen < high_freq_wavelen {
                            f
                        } else {
                            let smooth = (original / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

/// What a GGUF file's tensors and tokenizer tell of its configuration.
pub struct GgufFacts {
    /// The file has no output layer: it is the token embedding.
    pub tied: bool,
    pub qkv_bias: bool,
    /// The tokenizer's vocabulary size.
    pub vocab: usize,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
}

/// The hyperparameters of a Llama-family network.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub family: Family,
    /// The width of the residual stream.
    pub hidden: usize,
    /// The width of the SwiGLU feed-forward layer.
    pub intermediate: usize,
    pub layers: usize,
    /// Query heads, and key/value heads (grouped-query attention: each key/value head serves
    /// `heads / kv_heads` query heads).
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_eps: f64,
    pub rope: Rope,
    /// The longest sequence the model takes.
    pub max_positions: usize,
    /// Whether the output layer is the token embedding.
    pub tied: bool,
    /// Whether the query, key and value projections have biases (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    pub bos: Option<u32>,
    /// The tokens that end a row.
    pub eos: Vec<u32>,
}

impl LlamaConfig {
    /// Checks the sizes' consistency: `source` names the configuration in messages, `field`
    /// the error's field.
    fn check(self, error: &dyn Fn(&str, String) -> LoadError) -> Result<LlamaConfig, LoadError> {
        for (field, value) in [
            ("hidden_size", self.hidden),
            ("intermediate_size", self.intermediate),
            ("num_hidden_layers", self.layers),
            ("num_attention_heads", self.heads),
            ("num_key_value_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab),
            ("max_position_embeddings", self.max_positions),
        ] {
            if value == 0 || value > MAX_SIZE {
                return Err(error(field, format!("{value} is not a size in 1..={MAX_SIZE}")));
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(error(
                "num_key_value_heads",
                format!("{} key/value heads cannot serve {} query heads evenly", self.kv_heads, self.heads),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(error("head_dim", format!("{} is odd; RoPE rotates pairs", self.head_dim)));
        }
        if !(self.rms_eps > 0.0 && self.rms_eps.is_finite()) {
            return Err(error("rms_norm_eps", format!("{} is not a positive number", self.rms_eps)));
        }
        if !(self.rope.theta > 0.0 && self.rope.theta.is_finite()) {
            return Err(error("rope_theta", format!("{} is not a positive number", self.rope.theta)));
        }
        if let Some(&token) = self.eos.iter().chain(&self.bos).find(|&&t| t as usize >= self.vocab) {
            return Err(error("eos_token_id", format!("token {token} is outside the vocabulary of {}", self.vocab)));
        }
        Ok(self)
    }

    /// The configuration of a Hugging Face `config.json` (transformers 4's `rope_theta` and
    /// `rope_scaling`, or 5's `rope_parameters`).
    pub fn from_hf(path: &Path, text: &str) -> Result<LlamaConfig, LoadError> {
        let json: Json = serde_json::from_str(text)
            .map_err(|e| LoadError::ConfigSyntax { path: path.into(), message: e.to_string() })?;
        let error =
            |field: &str, expected: String| LoadError::ConfigField { path: path.into(), field: field.into(), expected };
        let field = |name: &str| json.get(name).filter(|v| !v.is_null());
        let size = |name: &str| -> Result<usize, LoadError> {
            let value = field(name).ok_or_else(|| error(name, "the field is missing (a positive integer)".into()))?;
            value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| error(name, format!("{value} is not a non-negative integer")))
        };
        let number = |value: &Json, name: &str| -> Result<f64, LoadError> {
            value.as_f64().ok_or_else(|| error(name, format!("{value} is not a number")))
        };
        let model_type = field("model_type").and_then(Json::as_str).ok_or_else(|| {
            error("model_type", format!("the field is missing (one of {})", Family::NAMES.join(", ")))
        })?;
        let family = Family::from_name(model_type).ok_or_else(|| LoadError::UnsupportedArchitecture {
            path: path.into(),
            architecture: model_type.into(),
            supported: Family::NAMES.join(", "),
        })?;
        let hidden = size("hidden_size")?;
        let heads = size("num_attention_heads")?;
        let kv_heads = match field("num_key_value_heads") {
            Some(_) => size("num_key_value_heads")?,
            None => heads,
        };
        let head_dim = match field("head_dim") {
            Some(_) => size("head_dim")?,
            None if heads > 0 && hidden.is_multiple_of(heads) => hidden / heads,
            None => return Err(error("head_dim", format!("missing, and {heads} heads do not divide {hidden}"))),
        };
        // transformers 5 gathers the RoPE settings in `rope_parameters`; 4 has `rope_theta` and
        // `rope_scaling` at the top.
        let rope_parameters = field("rope_parameters");
        let theta = match rope_parameters.and_then(|p| p.get("rope_theta")).or_else(|| field("rope_theta")) {
            Some(value) => number(value, "rope_theta")?,
            None => 10_000.0,
        };
        let scaling_table = match rope_parameters {
            Some(parameters) => Some(parameters),
            None => field("rope_scaling"),
        };
        let scaling = match scaling_table {
            None => RopeScaling::None,
            Some(table) => {
                let kind =
                    table.get("rope_type").or_else(|| table.get("type")).and_then(Json::as_str).unwrap_or("default");
                let get = |name: &str| -> Result<f64, LoadError> {
                    let value = table
                        .get(name)
                        .ok_or_else(|| error(&format!("rope_scaling.{name}"), "the field is missing".into()))?;
                    number(value, &format!("rope_scaling.{name}"))
                };
                match kind {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear { factor: get("factor")? },
                    "llama3" => RopeScaling::Llama3 {
                        factor: get("factor")?,
                        low_freq_factor: get("low_freq_factor")?,
                        high_freq_factor: get("high_freq_factor")?,
                        original_max_positions: get("original_max_position_embeddings")?,
                    },
                    other => {
                        return Err(error(
                            "rope_scaling.rope_type",
                            format!("`{other}` is not supported (default, linear and llama3 are)"),
                        ));
                    }
                }
            }
        };
        let tokens = |name: &str| -> Result<Vec<u32>, LoadError> {
            let Some(value) = field(name) else { return Ok(Vec::new()) };
            let ids: Vec<&Json> = match value {
                Json::Array(items) => items.iter().collect(),
                single => vec![single],
            };
            ids.into_iter()
                .map(|id| {
                    id.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| error(name, format!("{id} is not a token id")))
                })
                .collect()
        };
        let rms_eps = match field("rms_norm_eps") {
            Some(value) => number(value, "rms_norm_eps")?,
            None => return Err(error("rms_norm_eps", "the field is missing (a positive number)".into())),
        };
        let bias = field("attention_bias").and_then(Json::as_bool).unwrap_or(false);
        let config = LlamaConfig {
            family,
            hidden,
            intermediate: size("intermediate_size")?,
            layers: size("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            vocab: size("vocab_size")?,
            rms_eps,
            rope: Rope { theta, scaling },
            max_positions: size("max_position_embeddings")?,
            tied: field("tie_word_embeddings").and_then(Json::as_bool).unwrap_or(false),
            qkv_bias: family == Family::Qwen2 || bias,
            bos: tokens("bos_token_id")?.first().copied(),
            eos: tokens("eos_token_id")?,
        };
        config.check(&error)
    }

    /// The configuration of a GGUF file's metadata (`ARCH.block_count`, ...): `get` returns a
    /// key's value as a number; `facts` are what the file's tensors and tokenizer say.
    pub fn from_gguf(
        path: &Path,
        architecture: &str,
        get: &dyn Fn(&str) -> Option<f64>,
        facts: GgufFacts,
    ) -> Result<LlamaConfig, LoadError> {
        let family = Family::from_name(architecture).ok_or_else(|| LoadError::UnsupportedArchitecture {
            path: path.into(),
            architecture: architecture.into(),
            supported: Family::NAMES.join(", "),
        })?;
        let error = |key: &str, expected: String| LoadError::GgufMetadata {
            path: path.into(),
            key: format!("{architecture}.{key}"),
            expected,
        };
        let number = |key: &str| get(&format!("{architecture}.{key}"));
        let size = |key: &str| -> Result<usize, LoadError> {
            let value = number(key).ok_or_else(|| error(key, "the key is missing (a positive integer)".into()))?;
            if value.fract() != 0.0 || value < 0.0 || value > MAX_SIZE as f64 {
                return Err(error(key, format!("{value} is not a size in 1..={MAX_SIZE}")));
            }
            Ok(value as usize)
        };
        let hidden = size("embedding_length")?;
        let heads = size("attention.head_count")?;
        let kv_heads =
            if number("attention.head_count_kv").is_some() { size("attention.head_count_kv")? } else { heads };
        let head_dim = match number("rope.dimension_count") {
            Some(_) => size("rope.dimension_count")?,
            None if heads > 0 => hidden / heads,
            None => 0,
        };
        let scaling = match (number("rope.scaling.factor"), number("rope.scale_linear")) {
            (Some(factor), _) | (None, Some(factor)) if factor != 1.0 => RopeScaling::Linear { factor },
            _ => RopeScaling::None,
        };
        let rms_eps = number("attention.layer_norm_rms_epsilon")
            .ok_or_else(|| error("attention.layer_norm_rms_epsilon", "the key is missing".into()))?;
        let config = LlamaConfig {
            family,
            hidden,
            intermediate: size("feed_forward_length")?,
            layers: size("block_count")?,
            heads,
            kv_heads,
            head_dim,
            vocab: facts.vocab,
            rms_eps,
            rope: Rope { theta: number("rope.freq_base").unwrap_or(10_000.0), scaling },
            max_positions: size("context_length")?,
            tied: facts.tied,
            qkv_bias: facts.qkv_bias,
            bos: facts.bos,
            eos: facts.eos,
        };
        config.check(&error)
    }
}
