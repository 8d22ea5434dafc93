//! A small transformer token model read from a safetensors checkpoint, with an optional Hugging
//! Face `tokenizer.json`.
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
//! Its halves: [`network`] evaluates on the host (candle), [`device`] on a device's matrix
//! products and layer kernels; [`TransformerModel`] checks each call and hands it to one of them.

pub mod device;
pub mod manifest;
pub mod network;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sched_lang::types::ModelKind;
use sched_runtime::device::{Device, DeviceError, PerDevice, SampleLaunch};
use sched_runtime::interpolant::Interpolant;
use sched_runtime::model::draw::Draw;
use sched_runtime::model::{
    DeviceTokenModel, FieldKind, KeptLogits, Label, Model, ModelError, ModelInfo, TokenModel, TokenRows, Vocab,
};
use sched_runtime::tensor::Tensor;
use tokenizers::Tokenizer;

use self::device::DeviceTransformer;
use self::manifest::TransformerManifest;
use self::network::{Evaluation, Network};
use self::tokenizer::read_tokenizer;
use crate::checkpoint::{CheckpointFile, ManifestTable, write_safetensors};
use crate::error::LoadError;

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

    /// A model of `manifest` with the weights of `network` (read from a checkpoint, or trained),
    /// the text of each id when known, and how messages call it.
    pub fn new(
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
            .named()
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

    /// The network's weights uploaded to `device` (to the device that holds its buffers, if it
    /// passes work on to another), uploaded on the first call.
    fn weights_on(&self, device: &Arc<dyn Device>) -> Result<Arc<DeviceTransformer>, ModelError> {
        self.on_devices.get_or_upload(device, |device| {
            DeviceTransformer::upload(&self.network, &self.manifest, device).map_err(|e| self.error(e))
        })
    }

    /// Evaluates the network on the host (candle on the CPU).
    fn evaluate(&self, evaluation: &Evaluation<'_>) -> Result<Vec<Vec<f32>>, ModelError> {
        self.network.evaluate(evaluation).map_err(|e| self.error(e))
    }

    /// [`TokenModel::causal_logits`] with the network evaluated by `evaluate`.
    fn causal_logits_with(
        &self,
        rows: TokenRows<'_>,
        from: usize,
        evaluate: impl FnOnce(&Evaluation<'_>) -> Result<Vec<Vec<f32>>, ModelError>,
    ) -> Result<Vec<f32>, ModelError> {
        self.causal_with(rows, from, |evaluation| Ok(evaluate(evaluation)?.swap_remove(0)))
    }

    /// Checks a causal evaluation of `rows` from position `from` and hands it to `evaluate`; no
    /// rows give the default result without an evaluation.
    fn causal_with<T: Default>(
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
    fn masked_logits_with(
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
    fn masked_with<T: Default>(
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
    fn head_logits_with(
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
    fn heads_with<T: Default>(
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

impl DeviceTokenModel for TransformerModel {
    fn causal_logits_on(
        &self,
        device: &Arc<dyn Device>,
        rows: TokenRows<'_>,
        from: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let network = self.weights_on(device)?;
        self.causal_logits_with(rows, from, |e| network.evaluate(device, e).map_err(|error| self.error(error)))
    }

    fn masked_logits_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        let network = self.weights_on(device)?;
        self.masked_logits_with(rows, |e| network.evaluate(device, e).map_err(|error| self.error(error)))
    }

    fn head_logits_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        let network = self.weights_on(device)?;
        self.head_logits_with(rows, |e| network.evaluate(device, e).map_err(|error| self.error(error)))
    }

    fn masked_logits_kept_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<KeptLogits, ModelError> {
        let network = self.weights_on(device)?;
        let logits = self.masked_with(rows, |evaluation| {
            let logits = network.logits(device, evaluation).map_err(|error| self.error(error))?;
            Ok(logits.into_iter().next().map(Arc::new))
        })?;
        Ok(logits.map_or(KeptLogits::Host(Vec::new()), KeptLogits::Device))
    }

    fn causal_logits_kept_on(
        &self,
        device: &Arc<dyn Device>,
        rows: TokenRows<'_>,
        from: usize,
    ) -> Result<KeptLogits, ModelError> {
        let network = self.weights_on(device)?;
        let logits = self.causal_with(rows, from, |evaluation| {
            let logits = network.logits(device, evaluation).map_err(|error| self.error(error))?;
            Ok(logits.into_iter().next().map(Arc::new))
        })?;
        Ok(logits.map_or(KeptLogits::Host(Vec::new()), KeptLogits::Device))
    }

    fn head_logits_kept_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<KeptLogits, ModelError> {
        let network = self.weights_on(device)?;
        let logits = self.heads_with(rows, |evaluation| {
            let per_head = network.logits(device, evaluation).map_err(|error| self.error(error))?;
            let logits = network.interleave(device, &per_head, rows.batch).map_err(|error| self.error(error))?;
            Ok(Some(Arc::new(logits)))
        })?;
        Ok(logits.map_or(KeptLogits::Host(Vec::new()), KeptLogits::Device))
    }

    fn draw_next_on(
        &self,
        device: &Arc<dyn Device>,
        rows: TokenRows<'_>,
        draw: &Draw<'_>,
    ) -> Result<Vec<u32>, ModelError> {
        let network = self.weights_on(device)?;
        let (kernel, params) = draw.choice.sample_kernel();
        let positions = vec![draw.position; rows.batch];
        let sample = |evaluation: &Evaluation<'_>| -> Result<Vec<u32>, DeviceError> {
            let logits = network.logits(device, evaluation)?;
            let Some(logits) = logits.first() else { return Ok(Vec::new()) };
            let launch = SampleLaunch {
                logits: logits.buffer(),
                rows: rows.batch,
                vocab: network.vocab,
                params,
                noise_sample: draw.samples,
                noise_position: &positions,
                seed: draw.noise.seed,
                site: draw.noise.site,
                step: draw.noise.step,
            };
            Ok(device.sample_rows(&kernel, &launch)?.tokens)
        };
        self.causal_with(rows, rows.len, |e| sample(e).map_err(|error| self.error(error)))
    }
}
