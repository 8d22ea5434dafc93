//! A small transformer token model read from a safetensors checkpoint, with an optional Hugging
//! Face `tokenizer.json`, and its training on the poker-hands data set ([`super::poker`]).
//!
//! A checkpoint is `NAME.safetensors` plus a manifest, `NAME.toml` beside it (or the same keys in
//! the file's `__metadata__`, as for the MLP), with `architecture = "transformer"`.
//! docs/models.md ("Transformer token checkpoints") lists every manifest field and tensor name.
//!
//! The network, in f32 on candle's CPU device, with d = `d_model`:
//!
//! - input: the token embedding `embed.weight[id]` plus the learned position embedding
//!   `pos_embed.weight[position]`;
//! - `layers` pre-LayerNorm blocks: `x += out(attention(ln1(x)))`, then `x += fc2(gelu(fc1(ln2(x))))`,
//!   with `attention_heads` heads of size d / `attention_heads`, scores scaled by 1/√(head size),
//!   a causal mask (position i sees positions ≤ i) for `causal_lm` and `mtp_lm` and none for
//!   `masked_lm`; the MLP is d → 4d → d, GELU the exact (erf) form; LayerNorm ε = 1e-5;
//! - head 0: `unembed(ln_f(h))`, with h the last block's output and a separate (untied)
//!   unembedding `unembed.weight` of shape [vocab, d] without bias;
//! - head i ≥ 1 of an `mtp_lm`: `unembed(ln_f(h + gelu(heads.i(h))))`, an extra d → d linear layer
//!   with GELU as a residual branch on the last hidden state, then the shared final LayerNorm and
//!   unembedding. The residual keeps an untrained head at head 0's prediction instead of at an
//!   unrelated one.
//!
//! Causal and multi-token models need a start token to score the first position (an empty
//! prefix): the model's input is the row with the end token prepended as its start,
//! `[eos] ++ row`, so output position j predicts `row[j]`. A row of length L therefore takes
//! L + 1 positions, at most `max_len`. A masked model's input is the row itself.
//!
//! Training ([`train_poker`]) runs on candle's autodiff with candle-nn's AdamW, and evaluates the
//! very network that inference evaluates (`Network`), so a trained model and the checkpoint it
//! writes give identical logits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{D, Device, Tensor as CTensor, Var};
use candle_nn::{Linear, Module, Optimizer};
use sched_kernels::philox;
use sched_lang::types::ModelKind;
use tokenizers::Tokenizer;

use crate::analytic::spec::did_you_mean;
use crate::checkpoint::{Architecture, CheckpointFile, ManifestTable, architecture_of, write_safetensors};
use crate::device::PerDevice;
use crate::device::transformer::DeviceTransformer;
use crate::interpolant::Interpolant;
use crate::load::LoadError;
use crate::model::{FieldKind, Label, Model, ModelError, ModelInfo};
use crate::tensor::Tensor;
use crate::tokens::{DeviceTokenModel, TokenModel, TokenRows, Vocab, poker};

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

/// The ε of every LayerNorm.
const LN_EPS: f32 = 1e-5;

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

/// A LayerNorm's scale and shift.
struct Norm {
    weight: CTensor,
    bias: CTensor,
}

impl Norm {
    fn forward(&self, x: &CTensor) -> candle_core::Result<CTensor> {
        // The composite form: candle-nn's fused `layer_norm` has no backward pass, and training
        // must evaluate the same operations as inference.
        candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, LN_EPS)
    }
}

/// One pre-LayerNorm block.
struct Block {
    ln1: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// Hands out a network's tensors by name, from a loader's or a trainer's `get`, and records
/// them in order.
struct Tensors<F> {
    get: F,
    named: Vec<(String, CTensor)>,
}

impl<F, E> Tensors<F>
where
    F: FnMut(&str, &[usize]) -> Result<CTensor, E>,
{
    fn tensor(&mut self, name: String, shape: &[usize]) -> Result<CTensor, E> {
        let tensor = (self.get)(&name, shape)?;
        self.named.push((name, tensor.clone()));
        Ok(tensor)
    }

    /// A LayerNorm of width `d`: `PREFIX.weight` and `PREFIX.bias`.
    fn norm(&mut self, prefix: &str, d: usize) -> Result<Norm, E> {
        Ok(Norm {
            weight: self.tensor(format!("{prefix}.weight"), &[d])?,
            bias: self.tensor(format!("{prefix}.bias"), &[d])?,
        })
    }

    /// A linear layer `input → out`: `PREFIX.weight` `[out, input]` and `PREFIX.bias` `[out]`.
    fn linear(&mut self, prefix: &str, out: usize, input: usize) -> Result<Linear, E> {
        let weight = self.tensor(format!("{prefix}.weight"), &[out, input])?;
        let bias = self.tensor(format!("{prefix}.bias"), &[out])?;
        Ok(Linear::new(weight, Some(bias)))
    }
}

/// The transformer's tensors, and the forward pass both inference and training use.
struct Network {
    attention_heads: usize,
    embed: CTensor,
    pos_embed: CTensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    unembed: Linear,
    /// The extra layers of heads 1.. of an `mtp_lm`.
    extra_heads: Vec<Linear>,
    /// Every tensor with its checkpoint name, in the order [`Network::build`] asks for them.
    named: Vec<(String, CTensor)>,
}

impl Network {
    /// Builds the network of `manifest` from `get(name, shape)`, which returns each tensor.
    fn build<E>(
        manifest: &TransformerManifest,
        get: impl FnMut(&str, &[usize]) -> Result<CTensor, E>,
    ) -> Result<Network, E> {
        let (d, vocab) = (manifest.d_model, manifest.vocab);
        let mut t = Tensors { get, named: Vec::new() };
        let embed = t.tensor("embed.weight".into(), &[vocab, d])?;
        let pos_embed = t.tensor("pos_embed.weight".into(), &[manifest.max_len, d])?;
        let mut blocks = Vec::new();
        for i in 0..manifest.layers {
            let p = format!("blocks.{i}");
            blocks.push(Block {
                ln1: t.norm(&format!("{p}.ln1"), d)?,
                q: t.linear(&format!("{p}.attn.q"), d, d)?,
                k: t.linear(&format!("{p}.attn.k"), d, d)?,
                v: t.linear(&format!("{p}.attn.v"), d, d)?,
                out: t.linear(&format!("{p}.attn.out"), d, d)?,
                ln2: t.norm(&format!("{p}.ln2"), d)?,
                fc1: t.linear(&format!("{p}.mlp.fc1"), 4 * d, d)?,
                fc2: t.linear(&format!("{p}.mlp.fc2"), d, 4 * d)?,
            });
        }
        let ln_f = t.norm("ln_f", d)?;
        let unembed = Linear::new(t.tensor("unembed.weight".into(), &[vocab, d])?, None);
        let extra_heads =
            (1..manifest.heads).map(|i| t.linear(&format!("heads.{i}"), d, d)).collect::<Result<_, E>>()?;
        let named = t.named;
        Ok(Network {
            attention_heads: manifest.attention_heads,
            embed,
            pos_embed,
            blocks,
            ln_f,
            unembed,
            extra_heads,
            named,
        })
    }

    /// The last block's output for token ids `[batch, n]` (u32): `[batch, n, d]`. With `causal`,
    /// position i attends to positions 0..=i only; the masked scores are −∞, so a later token
    /// contributes exactly nothing to an earlier position.
    fn hidden(&self, ids: &CTensor, causal: bool) -> candle_core::Result<CTensor> {
        let (batch, n) = ids.dims2()?;
        let d = self.embed.dim(1)?;
        let heads = self.attention_heads;
        let size = d / heads;
        let tokens = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((batch, n, d))?;
        let mut x = tokens.broadcast_add(&self.pos_embed.narrow(0, 0, n)?)?;
        let mask = if causal {
            let values: Vec<f32> = (0..n * n).map(|k| if k % n > k / n { f32::NEG_INFINITY } else { 0.0 }).collect();
            Some(CTensor::from_vec(values, (n, n), ids.device())?)
        } else {
            None
        };
        let scale = 1.0 / (size as f64).sqrt();
        for block in &self.blocks {
            let h = block.ln1.forward(&x)?;
            let split = |linear: &Linear| -> candle_core::Result<CTensor> {
                linear.forward(&h)?.reshape((batch, n, heads, size))?.transpose(1, 2)?.contiguous()
            };
            let (q, k, v) = (split(&block.q)?, split(&block.k)?, split(&block.v)?);
            let mut scores = (q.matmul(&k.t()?)? * scale)?;
            if let Some(mask) = &mask {
                scores = scores.broadcast_add(mask)?;
            }
            let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let attended = weights.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((batch, n, d))?;
            x = (x + block.out.forward(&attended)?)?;
            let h = block.ln2.forward(&x)?;
            x = (&x + block.fc2.forward(&block.fc1.forward(&h)?.gelu_erf()?)?)?;
        }
        Ok(x)
    }

    /// The logits of head `head` from hidden states `[..., d]`: `[..., vocab]`.
    fn logits(&self, hidden: &CTensor, head: usize) -> candle_core::Result<CTensor> {
        let h = match head.checked_sub(1) {
            None => hidden.clone(),
            Some(extra) => match self.extra_heads.get(extra) {
                Some(layer) => (hidden + layer.forward(hidden)?.gelu_erf()?)?,
                None => candle_core::bail!("head {head} does not exist ({} heads)", self.extra_heads.len() + 1),
            },
        };
        self.unembed.forward(&self.ln_f.forward(&h)?)
    }
}

/// A transformer token model, loaded from a checkpoint or trained in memory.
pub struct TransformerModel {
    info: ModelInfo,
    manifest: TransformerManifest,
    vocab: Vocab,
    network: Network,
    tokenizer: Option<Tokenizer>,
    /// The network's weights on each device it ran on.
    on_devices: PerDevice<DeviceTransformer>,
}

impl TransformerModel {
    /// Loads the checkpoint at `path` and its manifest (and tokenizer, when it names one).
    pub fn load(path: &Path) -> Result<TransformerModel, LoadError> {
        TransformerModel::from_file(&CheckpointFile::open(path)?)
    }

    /// The transformer of an opened checkpoint whose manifest says `architecture = "transformer"`.
    pub fn from_file(file: &CheckpointFile) -> Result<TransformerModel, LoadError> {
        let ManifestTable { table, name, strict } = &file.manifest;
        let manifest = TransformerManifest::from_table(table, name, *strict)?;
        let weights = file.weights()?;
        let network = Network::build(&manifest, |tensor, shape| {
            weights.get(tensor, &shape.iter().map(|&n| Some(n)).collect::<Vec<_>>())
        })?;
        let dir = file.path.parent().unwrap_or(Path::new(""));
        let (tokenizer, words) = match &manifest.tokenizer {
            None => (None, None),
            Some(relative) => {
                let (tokenizer, words) = read_tokenizer(&dir.join(relative), table, name, manifest.vocab)?;
                (Some(tokenizer), Some(words))
            }
        };
        Ok(TransformerModel::new(manifest, network, words, tokenizer, file.path.display().to_string()))
    }

    fn new(
        manifest: TransformerManifest,
        network: Network,
        words: Option<Vec<String>>,
        tokenizer: Option<Tokenizer>,
        source: String,
    ) -> TransformerModel {
        let info = ModelInfo {
            kind: manifest.kind,
            // A placeholder: token models have no interpolant, and nothing reads it for them.
            interpolant: Interpolant::RectifiedFlow,
            sample_shape: vec![],
            num_classes: None,
            source,
        };
        let vocab = Vocab { size: manifest.vocab, mask: manifest.mask_id, eos: Some(manifest.eos_id), words };
        TransformerModel { info, manifest, vocab, network, tokenizer, on_devices: PerDevice::default() }
    }

    pub fn manifest(&self) -> &TransformerManifest {
        &self.manifest
    }

    /// The token ids of `text` by the model's tokenizer (no special tokens are added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let Some(tokenizer) = &self.tokenizer else {
            return Err(self.error("cannot encode text: the manifest names no tokenizer"));
        };
        let encoding = tokenizer.encode(text, false).map_err(|e| self.error(format!("cannot encode `{text}`: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Writes the model's tensors to `path` (safetensors) and its manifest to `NAME.toml` beside
    /// it; returns the manifest's path. A tokenizer the manifest names is not written here.
    pub fn save(&self, path: &Path) -> Result<PathBuf, LoadError> {
        let backend = |e: candle_core::Error| LoadError::Backend { path: path.into(), message: e.to_string() };
        let tensors = self
            .network
            .named
            .iter()
            .map(|(name, t)| Ok((name.clone(), t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?)))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(backend)?;
        write_safetensors(path, &tensors, None)?;
        let toml_path = path.with_extension("toml");
        std::fs::write(&toml_path, self.manifest.to_table().to_string())
            .map_err(|source| LoadError::Io { path: toml_path.clone(), source })?;
        Ok(toml_path)
    }

    fn error(&self, message: impl ToString) -> ModelError {
        ModelError::Backend { model: self.info.source.clone(), message: message.to_string() }
    }

    fn unsupported(&self, what: &str) -> ModelError {
        ModelError::Unsupported { model: self.info.source.clone(), kind: self.info.kind, what: what.into() }
    }

    /// Checks `rows` (their size, their ids, and their length plus `start` positions against
    /// `max_len`) and returns the network's input ids `[batch, start + len]`, with the end token
    /// prepended as the start token when `start` is 1.
    fn input(&self, rows: TokenRows<'_>, start: usize) -> Result<Vec<u32>, ModelError> {
        if rows.batch.checked_mul(rows.len) != Some(rows.ids.len()) {
            return Err(self.error(format!(
                "the rows hold {} ids, but {} rows of length {} need {}",
                rows.ids.len(),
                rows.batch,
                rows.len,
                rows.batch.saturating_mul(rows.len)
            )));
        }
        let n = rows.len.saturating_add(start);
        if n > self.manifest.max_len {
            let with_start = if start == 1 { " plus the start token" } else { "" };
            return Err(self.error(format!(
                "a row of {} tokens{with_start} needs {n} positions, more than the model's max_len {}",
                rows.len, self.manifest.max_len
            )));
        }
        if let Some(k) = rows.ids.iter().position(|&id| id as usize >= self.manifest.vocab) {
            return Err(self.error(format!(
                "token id {} (row {}, position {}) is out of range: the vocabulary has ids 0..{}",
                rows.ids[k],
                k / rows.len,
                k % rows.len,
                self.manifest.vocab
            )));
        }
        let mut ids = Vec::new();
        for b in 0..rows.batch {
            if start == 1 {
                ids.push(self.manifest.eos_id);
            }
            ids.extend_from_slice(rows.row(b));
        }
        Ok(ids)
    }

    /// The tensor of the checkpoint named `name`, as f32 values in row-major order.
    pub(crate) fn tensor(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        let (_, tensor) = self
            .network
            .named
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| self.error(format!("the network has no tensor `{name}`")))?;
        tensor.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| self.error(e))
    }

    /// The network's weights uploaded to `device` (to the device that holds its buffers, if it
    /// passes work on to another), uploaded on the first call.
    pub(crate) fn weights_on(
        &self,
        device: &Arc<dyn crate::device::Device>,
    ) -> Result<Arc<DeviceTransformer>, ModelError> {
        self.on_devices.get_or_upload(device, |device| DeviceTransformer::upload(self, device))
    }

    /// Evaluates the network on the host (candle on the CPU).
    fn evaluate(&self, evaluation: &Evaluation<'_>) -> Result<Vec<Vec<f32>>, ModelError> {
        let Evaluation { ids, batch, n, causal, ref positions, ref heads } = *evaluation;
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let input = CTensor::from_vec(ids.to_vec(), (batch, n), &Device::Cpu)?;
            let hidden = self.network.hidden(&input, causal)?.narrow(1, positions.start, positions.len())?;
            heads.clone().map(|head| self.network.logits(&hidden, head)?.flatten_all()?.to_vec1::<f32>()).collect()
        };
        run().map_err(|e| self.error(e))
    }

    /// [`TokenModel::causal_logits`] with the network evaluated by `evaluate`.
    pub(crate) fn causal_logits_with(
        &self,
        rows: TokenRows<'_>,
        from: usize,
        evaluate: impl FnOnce(&Evaluation<'_>) -> Result<Vec<Vec<f32>>, ModelError>,
    ) -> Result<Vec<f32>, ModelError> {
        self.causal_with(rows, from, |evaluation| Ok(evaluate(evaluation)?.swap_remove(0)))
    }

    /// Checks a causal evaluation of `rows` from position `from` and hands it to `evaluate`; no
    /// rows give the default result without an evaluation.
    pub(crate) fn causal_with<T: Default>(
        &self,
        rows: TokenRows<'_>,
        from: usize,
        evaluate: impl FnOnce(&Evaluation<'_>) -> Result<T, ModelError>,
    ) -> Result<T, ModelError> {
        if self.manifest.kind == ModelKind::MaskedLm {
            return Err(self.unsupported("score next tokens (it is bidirectional)"));
        }
        if from > rows.len {
            return Err(self.error(format!("cannot score from position {from} of rows of length {}", rows.len)));
        }
        let ids = self.input(rows, 1)?;
        if rows.batch == 0 {
            return Ok(T::default());
        }
        // Output j of the input [eos] ++ row predicts row[j].
        let evaluation = Evaluation {
            ids: &ids,
            batch: rows.batch,
            n: rows.len + 1,
            causal: true,
            positions: from..rows.len + 1,
            heads: 0..1,
        };
        evaluate(&evaluation)
    }

    /// [`TokenModel::masked_logits`] with the network evaluated by `evaluate`.
    pub(crate) fn masked_logits_with(
        &self,
        rows: TokenRows<'_>,
        evaluate: impl FnOnce(&Evaluation<'_>) -> Result<Vec<Vec<f32>>, ModelError>,
    ) -> Result<Vec<f32>, ModelError> {
        let mask = self.mask_token()?;
        let mut logits = self.masked_with(rows, |evaluation| Ok(evaluate(evaluation)?.swap_remove(0)))?;
        let vocab = self.manifest.vocab;
        for (position, &token) in logits.chunks_exact_mut(vocab).zip(rows.ids) {
            if token == mask {
                position[mask as usize] = f32::NEG_INFINITY;
            } else {
                // An observed token: a point mass on it.
                position.fill(f32::NEG_INFINITY);
                position[token as usize] = 0.0;
            }
        }
        Ok(logits)
    }

    /// Checks a masked evaluation of `rows` (every position) and hands it to `evaluate`; no rows
    /// or empty rows give the default result without an evaluation.
    pub(crate) fn masked_with<T: Default>(
        &self,
        rows: TokenRows<'_>,
        evaluate: impl FnOnce(&Evaluation<'_>) -> Result<T, ModelError>,
    ) -> Result<T, ModelError> {
        self.mask_token()?;
        let ids = self.input(rows, 0)?;
        if rows.batch == 0 || rows.len == 0 {
            return Ok(T::default());
        }
        let evaluation = Evaluation {
            ids: &ids,
            batch: rows.batch,
            n: rows.len,
            causal: false,
            positions: 0..rows.len,
            heads: 0..1,
        };
        evaluate(&evaluation)
    }

    /// The mask token of a masked model; other kinds cannot score masked positions.
    fn mask_token(&self) -> Result<u32, ModelError> {
        self.manifest
            .mask_id
            .filter(|_| self.manifest.kind == ModelKind::MaskedLm)
            .ok_or_else(|| self.unsupported("score masked positions (it is not a masked_lm)"))
    }

    /// [`TokenModel::head_logits`] with the network evaluated by `evaluate`.
    pub(crate) fn head_logits_with(
        &self,
        rows: TokenRows<'_>,
        evaluate: impl FnOnce(&Evaluation<'_>) -> Result<Vec<Vec<f32>>, ModelError>,
    ) -> Result<Vec<f32>, ModelError> {
        let per_head = self.heads_with(rows, evaluate)?;
        // Each head's logits are [batch, vocab]; the result is [batch, heads, vocab].
        let vocab = self.manifest.vocab;
        let mut logits = Vec::with_capacity(rows.batch * per_head.len() * vocab);
        for b in 0..rows.batch {
            for head in &per_head {
                logits.extend_from_slice(head.get(b * vocab..(b + 1) * vocab).unwrap_or_default());
            }
        }
        Ok(logits)
    }

    /// Checks a multi-token evaluation of `rows` (every head, at the next position) and hands it
    /// to `evaluate`; no rows give the default result without an evaluation.
    pub(crate) fn heads_with<T: Default>(
        &self,
        rows: TokenRows<'_>,
        evaluate: impl FnOnce(&Evaluation<'_>) -> Result<T, ModelError>,
    ) -> Result<T, ModelError> {
        if self.manifest.kind == ModelKind::MaskedLm {
            return Err(self.unsupported("score next tokens from heads (it is bidirectional)"));
        }
        let ids = self.input(rows, 1)?;
        if rows.batch == 0 {
            return Ok(T::default());
        }
        let evaluation = Evaluation {
            ids: &ids,
            batch: rows.batch,
            n: rows.len + 1,
            causal: true,
            positions: rows.len..rows.len + 1,
            heads: 0..self.manifest.heads,
        };
        evaluate(&evaluation)
    }
}

/// One evaluation of a transformer's network: the ids `[batch, n]` and the mask, and which
/// positions and heads to return. The result has one entry per head, each the logits
/// `[batch, positions.len(), vocab]` flattened.
pub(crate) struct Evaluation<'a> {
    pub ids: &'a [u32],
    pub batch: usize,
    pub n: usize,
    pub causal: bool,
    pub positions: std::ops::Range<usize>,
    pub heads: std::ops::Range<usize>,
}

/// Reads the tokenizer at `path`, checks that it has exactly `vocab` tokens, and returns it with
/// the text of each id; errors name the manifest's `tokenizer` (or `vocab`) field.
fn read_tokenizer(
    path: &Path,
    table: &toml::Table,
    manifest: &str,
    vocab: usize,
) -> Result<(Tokenizer, Vec<String>), LoadError> {
    let bad = |field: &str, expected: String| LoadError::FieldValue {
        manifest: manifest.into(),
        field: field.into(),
        value: table.get(field).map(ToString::to_string).unwrap_or_default(),
        expected,
    };
    if !path.is_file() {
        return Err(bad("tokenizer", format!("no such file: {}", path.display())));
    }
    let tokenizer = Tokenizer::from_file(path)
        .map_err(|e| bad("tokenizer", format!("{} is not a tokenizer.json: {e}", path.display())))?;
    let size = tokenizer.get_vocab_size(true);
    if size != vocab {
        return Err(bad("vocab", format!("the tokenizer {} has {size} tokens", path.display())));
    }
    let words = (0..vocab as u32)
        .map(|id| {
            tokenizer
                .id_to_token(id)
                .ok_or_else(|| bad("tokenizer", format!("the tokenizer {} has no token of id {id}", path.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((tokenizer, words))
}

/// A JSON string literal of `text`.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes a word-level `tokenizer.json` to `path`: `words` in id order, split on whitespace (the
/// `Whitespace` pre-tokenizer: runs of word characters, runs of other non-space characters), the
/// ids `special` as special added tokens (so `<mask>` in a text is one token), and no unknown
/// token in the vocabulary (a word outside it is an encoding error).
pub fn write_word_level_tokenizer(path: &Path, words: &[&str], special: &[u32]) -> Result<(), LoadError> {
    let backend = |message: String| LoadError::Backend { path: path.into(), message };
    let vocab: Vec<String> = words.iter().enumerate().map(|(id, w)| format!("{}: {id}", json_string(w))).collect();
    let added: Vec<String> = special
        .iter()
        .filter_map(|&id| words.get(id as usize).map(|w| (id, w)))
        .map(|(id, w)| {
            format!(
                r#"{{"id": {id}, "content": {}, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}}"#,
                json_string(w)
            )
        })
        .collect();
    let json = format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [{}], "normalizer": null,
"pre_tokenizer": {{"type": "Whitespace"}}, "post_processor": null, "decoder": null,
"model": {{"type": "WordLevel", "vocab": {{{}}}, "unk_token": "<unk>"}}}}"#,
        added.join(", "),
        vocab.join(", ")
    );
    // Parsed and saved by the crate itself, so the file is in its canonical form.
    let tokenizer = Tokenizer::from_bytes(json.as_bytes()).map_err(|e| backend(e.to_string()))?;
    tokenizer.save(path, true).map_err(|e| backend(e.to_string()))
}

impl Model for TransformerModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn field(&self, _x: &Tensor, _t: f64, _label: Label) -> Result<(Tensor, FieldKind), ModelError> {
        Err(self.unsupported("evaluate a continuous field (it is a token model)"))
    }

    fn jump(&self, _x: &Tensor, _t: f64, _s: f64, _label: Label) -> Result<Tensor, ModelError> {
        Err(self.unsupported("jump (it is a token model)"))
    }

    fn tokens(&self) -> Option<&dyn TokenModel> {
        Some(self)
    }
}

impl TokenModel for TransformerModel {
    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn causal_logits(&self, rows: TokenRows<'_>, from: usize) -> Result<Vec<f32>, ModelError> {
        self.causal_logits_with(rows, from, |e| self.evaluate(e))
    }

    fn masked_logits(&self, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        self.masked_logits_with(rows, |e| self.evaluate(e))
    }

    fn heads(&self) -> usize {
        self.manifest.heads
    }

    fn head_logits(&self, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        self.head_logits_with(rows, |e| self.evaluate(e))
    }

    fn on_device(&self) -> Option<&dyn DeviceTokenModel> {
        Some(self)
    }
}

/// Why training a token model failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenTrainError {
    #[error("the training configuration is invalid: {0}")]
    Config(String),
    #[error("candle failed during training: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Save(#[from] LoadError),
}

/// The configuration of [`train_poker`].
#[derive(Clone, Debug, PartialEq)]
pub struct TokenTrainConfig {
    /// `causal_lm`, `masked_lm` or `mtp_lm`.
    pub kind: ModelKind,
    /// Optimizer steps.
    pub steps: usize,
    /// The seed of every random number (weights, rows, masks).
    pub seed: u64,
    /// Rows per minibatch.
    pub batch: usize,
    /// The peak learning rate (AdamW, linear warm-up over the first 5 % of the steps, then a
    /// cosine decay to 1 % of it).
    pub lr: f64,
    pub d_model: usize,
    pub layers: usize,
    pub attention_heads: usize,
    pub max_len: usize,
    /// The heads of an `mtp_lm`.
    pub heads: usize,
}

impl TokenTrainConfig {
    /// The configuration of the shipped poker checkpoints: d 32, 2 layers, 2 attention heads,
    /// max_len 8, 2 heads for `mtp_lm`, 3000 steps of 64 rows, peak rate 3e-3, seed 0.
    pub fn new(kind: ModelKind) -> TokenTrainConfig {
        TokenTrainConfig {
            kind,
            steps: 3000,
            seed: 0,
            batch: 64,
            lr: 3e-3,
            d_model: 32,
            layers: 2,
            attention_heads: 2,
            max_len: 8,
            heads: 2,
        }
    }

    /// The manifest of the model this configuration trains (poker's vocabulary and tokenizer).
    pub fn manifest(&self) -> TransformerManifest {
        TransformerManifest {
            kind: self.kind,
            vocab: poker::WORDS.len(),
            d_model: self.d_model,
            layers: self.layers,
            attention_heads: self.attention_heads,
            max_len: self.max_len,
            heads: match self.kind {
                ModelKind::MtpLm => self.heads,
                ModelKind::CausalLm => 1,
                _ => 0,
            },
            mask_id: Some(poker::MASK),
            eos_id: poker::EOS,
            tokenizer: Some(POKER_TOKENIZER.into()),
        }
    }
}

/// The file name of the poker tokenizer, beside the checkpoints.
pub const POKER_TOKENIZER: &str = "tokenizer.json";

/// One optimizer step's numbers, for progress reports.
#[derive(Clone, Copy, Debug)]
pub struct TokenProgress {
    /// The step just taken, from 1.
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    pub lr: f64,
    /// Seconds since training started.
    pub seconds: f64,
}

/// What a training run measured.
#[derive(Clone, Debug, Default)]
pub struct TokenTrainReport {
    /// The loss of every step.
    pub losses: Vec<f32>,
    pub seconds: f64,
}

impl TokenTrainReport {
    /// The mean loss over the last tenth of the steps.
    pub fn final_loss(&self) -> f32 {
        let tail = (self.losses.len() / 10).max(1).min(self.losses.len());
        if tail == 0 {
            return f32::NAN;
        }
        self.losses[self.losses.len() - tail..].iter().sum::<f32>() / tail as f32
    }
}

/// Philox sites of the training's random numbers.
const SITE_INIT: u32 = 1;
const SITE_HAND: u32 = 2;
const SITE_TIME: u32 = 3;
const SITE_MASK: u32 = 4;
const SITE_PICK: u32 = 5;

/// The hand a uniform draw `u` in [0, 1) picks, by cumulative probability.
fn pick_hand(hands: &[(u32, u32, f64)], u: f64) -> (u32, u32) {
    let mut total = 0.0;
    for &(first, second, p) in hands {
        total += p;
        if u < total {
            return (first, second);
        }
    }
    // Rounding left u above the last cumulative sum: the last hand.
    hands.last().map_or((poker::EOS, poker::EOS), |h| (h.0, h.1))
}

/// The initial value of tensor number `index` called `name`: LayerNorm scales 1, biases 0, every
/// other weight N(0, 0.02²) from Philox.
fn initial(seed: u64, index: usize, name: &str, shape: &[usize]) -> Vec<f32> {
    let count = shape.iter().product::<usize>();
    let leaf = name.rsplit('.').nth(1).unwrap_or("");
    if name.ends_with(".bias") {
        vec![0.0; count]
    } else if leaf.starts_with("ln") {
        vec![1.0; count]
    } else {
        (0..count).map(|k| 0.02 * philox::gaussian(seed, SITE_INIT, index as u32, 0, k as u32)).collect()
    }
}

/// `−Σ w log softmax(logits)[target] / Σ w` over the rows of `logits` `[N, vocab]`.
fn weighted_cross_entropy(logits: &CTensor, targets: &[u32], weights: &[f32]) -> candle_core::Result<CTensor> {
    let n = targets.len();
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_p.gather(&CTensor::from_slice(targets, (n, 1), &Device::Cpu)?, 1)?.squeeze(1)?;
    let w = CTensor::from_slice(weights, n, &Device::Cpu)?;
    let total = f64::from(weights.iter().sum::<f32>().max(1.0));
    (picked * w)?.sum_all()? * (-1.0 / total)
}

/// Trains a transformer of `config.kind` on the poker hands, on the CPU, deterministically for a
/// seed; `progress` sees every step.
///
/// Each row is a hand `[w1, w2, eos]` drawn from [`poker::HANDS`]. Objectives:
///
/// - `causal_lm`: next-token cross-entropy at the 3 positions of the input `[eos, w1, w2]`;
/// - `masked_lm` (MDLM-style): t ~ U(0, 1), each of the 3 positions masked with probability t (at
///   least one: when none is, one uniformly chosen), cross-entropy on the masked positions;
/// - `mtp_lm`: head 0 as `causal_lm`, head i the token i places further (where the row has one),
///   each head's cross-entropy averaged over its targets, summed over the heads.
pub fn train_poker(
    config: &TokenTrainConfig,
    progress: &mut dyn FnMut(&TokenProgress),
) -> Result<(TransformerModel, TokenTrainReport), TokenTrainError> {
    let manifest = config.manifest();
    // The manifest's own checks (sizes, heads, ids) validate the configuration.
    TransformerManifest::from_table(&manifest.to_table(), "the configuration", true)
        .map_err(|e| TokenTrainError::Config(e.to_string()))?;
    if config.max_len < 3 || config.batch == 0 {
        return Err(TokenTrainError::Config("poker rows need max_len ≥ 3 and a batch of at least one row".into()));
    }
    let mut vars = Vec::new();
    let network = Network::build(&manifest, |name, shape| {
        let var = Var::from_vec(initial(config.seed, vars.len(), name, shape), shape, &Device::Cpu)?;
        let tensor = var.as_tensor().clone();
        vars.push(var);
        Ok::<_, candle_core::Error>(tensor)
    })?;
    let params = candle_nn::ParamsAdamW { lr: config.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let mut optimizer = candle_nn::AdamW::new(vars, params)?;
    let hands = poker::hand_ids();
    let (kind, batch, seed) = (config.kind, config.batch, config.seed);
    let warmup = (config.steps / 20).max(1);
    let start = Instant::now();
    let mut report = TokenTrainReport::default();
    for step in 0..config.steps {
        let lr = if step < warmup {
            config.lr * (step + 1) as f64 / warmup as f64
        } else {
            let progress = (step - warmup) as f64 / (config.steps - warmup).max(1) as f64;
            config.lr * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
        };
        optimizer.set_learning_rate(lr);
        let uniform = |site: u32, row: usize, index: usize| {
            f64::from(philox::uniform(seed, site, step as u32, row as u32, index as u32))
        };
        let rows: Vec<[u32; 3]> = (0..batch)
            .map(|r| {
                let (first, second) = pick_hand(&hands, uniform(SITE_HAND, r, 0));
                [first, second, poker::EOS]
            })
            .collect();
        let loss = match kind {
            ModelKind::MaskedLm => {
                let mut input = Vec::with_capacity(3 * batch);
                let mut weights = Vec::with_capacity(3 * batch);
                for (r, row) in rows.iter().enumerate() {
                    let t = uniform(SITE_TIME, r, 0);
                    let mut masked: Vec<bool> = (0..3).map(|j| uniform(SITE_MASK, r, j) < t).collect();
                    if !masked.contains(&true) {
                        masked[((uniform(SITE_PICK, r, 0) * 3.0) as usize).min(2)] = true;
                    }
                    for (j, &m) in masked.iter().enumerate() {
                        input.push(if m { poker::MASK } else { row[j] });
                        weights.push(if m { 1.0 } else { 0.0 });
                    }
                }
                let targets: Vec<u32> = rows.iter().flatten().copied().collect();
                let ids = CTensor::from_vec(input, (batch, 3), &Device::Cpu)?;
                let logits = network.logits(&network.hidden(&ids, false)?, 0)?.reshape((3 * batch, manifest.vocab))?;
                weighted_cross_entropy(&logits, &targets, &weights)?
            }
            _ => {
                let input: Vec<u32> = rows.iter().flat_map(|row| [poker::EOS, row[0], row[1]]).collect();
                let ids = CTensor::from_vec(input, (batch, 3), &Device::Cpu)?;
                let hidden = network.hidden(&ids, true)?;
                let mut total: Option<CTensor> = None;
                for head in 0..manifest.heads {
                    // Output j predicts row[j + head], where the row has it.
                    let mut targets = Vec::with_capacity(3 * batch);
                    let mut weights = Vec::with_capacity(3 * batch);
                    for row in &rows {
                        for j in 0..3 {
                            let target = row.get(j + head);
                            targets.push(target.copied().unwrap_or(poker::EOS));
                            weights.push(if target.is_some() { 1.0 } else { 0.0 });
                        }
                    }
                    let logits = network.logits(&hidden, head)?.reshape((3 * batch, manifest.vocab))?;
                    let loss = weighted_cross_entropy(&logits, &targets, &weights)?;
                    total = Some(match total {
                        None => loss,
                        Some(sum) => (sum + loss)?,
                    });
                }
                total.ok_or_else(|| TokenTrainError::Config("the model has no heads".into()))?
            }
        };
        optimizer.backward_step(&loss)?;
        let value = loss.to_scalar::<f32>()?;
        report.losses.push(value);
        progress(&TokenProgress {
            step: step + 1,
            steps: config.steps,
            loss: value,
            lr,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    report.seconds = start.elapsed().as_secs_f64();
    // The trained tensors, detached from the optimizer's variables.
    let mut trained = network.named.iter().map(|(_, t)| t.detach());
    let network = Network::build(&manifest, |name, _| {
        trained.next().ok_or_else(|| TokenTrainError::Config(format!("the trained network lost `{name}`")))
    })?;
    let words = poker::WORDS.iter().map(|w| (*w).to_string()).collect();
    let source = format!("poker {} (trained in memory)", kind.name());
    Ok((TransformerModel::new(manifest, network, Some(words), None, source), report))
}

/// Writes a trained poker model into `dir`: `<kind>.safetensors`, its manifest `<kind>.toml`, and
/// the poker vocabulary's `tokenizer.json`; returns the checkpoint's path.
pub fn save_poker(model: &TransformerModel, dir: &Path) -> Result<PathBuf, LoadError> {
    std::fs::create_dir_all(dir).map_err(|source| LoadError::Io { path: dir.into(), source })?;
    write_word_level_tokenizer(&dir.join(POKER_TOKENIZER), poker::WORDS, &[poker::EOS, poker::MASK])?;
    let path = dir.join(format!("{}.safetensors", model.manifest.kind.name()));
    model.save(&path)?;
    Ok(path)
}

/// The logits of one position as probabilities: a softmax in f64, where −∞ logits get 0 (at least
/// one logit must be finite).
pub fn probabilities(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}
