//! The manifest of a transformer checkpoint: its kind, sizes, special tokens and tokenizer.

use sched_lang::types::ModelKind;

use crate::analytic::spec::did_you_mean;
use crate::checkpoint::{Architecture, architecture_of};
use crate::error::LoadError;

/// The manifest fields of a transformer, for "did you mean" on unknown ones.
const FIELDS: &[&str] = &[
    "architecture",
    "kind",
    "vocab",
    "d_model",
    "layers",
    "attention_heads",
    "max_len",
    "heads",
    "mask_id",
    "eos_id",
    "tokenizer",
];

/// The token model kinds a transformer can have.
const KINDS: &[&str] = &["causal_lm", "masked_lm", "mtp_lm"];

/// The largest size a manifest may give (vocabulary, width, layers, positions, heads): far above
/// any model this runs, and small enough that no shape arithmetic overflows.
const MAX_SIZE: usize = 1 << 24;

/// What a transformer checkpoint's manifest says (its `architecture` is always `"transformer"`).
#[derive(Clone, Debug, PartialEq)]
pub struct TransformerManifest {
    /// `causal_lm`, `masked_lm` or `mtp_lm`.
    pub kind: ModelKind,
    /// The number of token ids.
    pub vocab: usize,
    /// The width d of the residual stream.
    pub d_model: usize,
    /// The number of transformer blocks.
    pub layers: usize,
    /// The number of attention heads; it divides `d_model`.
    pub attention_heads: usize,
    /// The number of learned positions: the longest input, start token included.
    pub max_len: usize,
    /// The output heads: the manifest's `heads` for `mtp_lm`, 1 for `causal_lm`, 0 for `masked_lm`.
    pub heads: usize,
    /// The mask token (required for `masked_lm`).
    pub mask_id: Option<u32>,
    /// The end token, also the start token of causal inputs.
    pub eos_id: u32,
    /// The path of a `tokenizer.json`, relative to the manifest's directory.
    pub tokenizer: Option<String>,
}

impl TransformerManifest {
    /// The manifest as TOML values, as written to `NAME.toml`.
    pub fn to_table(&self) -> toml::Table {
        let int = |n: usize| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        let mut table = toml::Table::new();
        table.insert("architecture".into(), "transformer".into());
        table.insert("kind".into(), self.kind.name().into());
        table.insert("vocab".into(), int(self.vocab));
        table.insert("d_model".into(), int(self.d_model));
        table.insert("layers".into(), int(self.layers));
        table.insert("attention_heads".into(), int(self.attention_heads));
        table.insert("max_len".into(), int(self.max_len));
        if self.kind == ModelKind::MtpLm {
            table.insert("heads".into(), int(self.heads));
        }
        if let Some(mask) = self.mask_id {
            table.insert("mask_id".into(), int(mask as usize));
        }
        table.insert("eos_id".into(), int(self.eos_id as usize));
        if let Some(tokenizer) = &self.tokenizer {
            table.insert("tokenizer".into(), tokenizer.as_str().into());
        }
        table
    }

    /// Reads a manifest from TOML values; `name` is how messages call the manifest. Unknown
    /// fields are errors when `strict` (a TOML file), ignored otherwise (metadata).
    pub fn from_table(table: &toml::Table, name: &str, strict: bool) -> Result<TransformerManifest, LoadError> {
        let missing = |field: &str, expected: &str| LoadError::FieldMissing {
            manifest: name.into(),
            field: field.into(),
            expected: expected.into(),
        };
        let bad = |field: &str, expected: &str| LoadError::FieldValue {
            manifest: name.into(),
            field: field.into(),
            value: table.get(field).map(ToString::to_string).unwrap_or_default(),
            expected: expected.into(),
        };
        if architecture_of(table, name)? != Architecture::Transformer {
            return Err(bad(
                "architecture",
                "this is not a transformer checkpoint (`load_model` loads every architecture)",
            ));
        }
        if strict && let Some(field) = table.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(field, &format!("unknown field{}", did_you_mean(field, FIELDS))));
        }
        // A non-negative integer field, when present.
        let integer = |field: &str| -> Result<Option<usize>, LoadError> {
            match table.get(field) {
                None => Ok(None),
                Some(toml::Value::Integer(n)) => {
                    usize::try_from(*n).map(Some).map_err(|_| bad(field, "expected a non-negative integer"))
                }
                Some(_) => Err(bad(field, "expected a non-negative integer")),
            }
        };
        let positive = |field: &str, what: &str| -> Result<usize, LoadError> {
            match integer(field)? {
                None => Err(missing(field, what)),
                Some(0) => Err(bad(field, "expected a positive integer")),
                Some(n) if n > MAX_SIZE => Err(bad(field, &format!("expected at most {MAX_SIZE}"))),
                Some(n) => Ok(n),
            }
        };
        let kind_value = table.get("kind").ok_or_else(|| missing("kind", "one of causal_lm, masked_lm, mtp_lm"))?;
        let kind = match kind_value.as_str().map(|s| (s, ModelKind::from_name(s))) {
            Some((_, Some(kind))) if kind.is_token_model() => kind,
            Some((_, Some(kind))) => {
                return Err(bad(
                    "kind",
                    &format!(
                        "a transformer is a token model (causal_lm, masked_lm, mtp_lm), not a continuous `{}` model",
                        kind.name()
                    ),
                ));
            }
            Some((s, None)) => return Err(bad("kind", &format!("unknown kind{}", did_you_mean(s, KINDS)))),
            None => return Err(bad("kind", "expected a string")),
        };
        let vocab = positive("vocab", "the number of token ids")?;
        let d_model = positive("d_model", "the width of the residual stream")?;
        let layers = positive("layers", "the number of transformer blocks")?;
        let attention_heads = positive("attention_heads", "the number of attention heads")?;
        if !d_model.is_multiple_of(attention_heads) {
            return Err(bad("attention_heads", &format!("must divide `d_model = {d_model}`")));
        }
        let max_len = positive("max_len", "the number of learned positions")?;
        let heads = match kind {
            ModelKind::MtpLm => positive("heads", "the number of output heads of an mtp_lm")?,
            _ if table.contains_key("heads") => {
                return Err(bad("heads", &format!("applies to `mtp_lm` only, not `{}`", kind.name())));
            }
            ModelKind::CausalLm => 1,
            _ => 0,
        };
        let id = |field: &str| -> Result<Option<u32>, LoadError> {
            match integer(field)? {
                None => Ok(None),
                Some(n) if n < vocab => {
                    u32::try_from(n).map(Some).map_err(|_| bad(field, "expected an id that fits in 32 bits"))
                }
                Some(_) => Err(bad(field, &format!("out of range: the vocabulary has ids 0..{vocab}"))),
            }
        };
        let mask_id = id("mask_id")?;
        if kind == ModelKind::MaskedLm && mask_id.is_none() {
            return Err(missing("mask_id", "the mask token of a masked_lm"));
        }
        let eos_id = id("eos_id")?.ok_or_else(|| missing("eos_id", "the end token, also the causal start token"))?;
        let tokenizer = match table.get("tokenizer") {
            None => None,
            Some(toml::Value::String(path)) => Some(path.clone()),
            Some(_) => return Err(bad("tokenizer", "expected the path of a tokenizer.json, as a string")),
        };
        Ok(TransformerManifest {
            kind,
            vocab,
            d_model,
            layers,
            attention_heads,
            max_len,
            heads,
            mask_id,
            eos_id,
            tokenizer,
        })
    }
}
