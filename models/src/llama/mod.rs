//! Llama-family language models (Llama, SmolLM, Qwen2, Mistral) from GGUF files ([`gguf`]) and
//! Hugging Face folders ([`hf`]), on the host.
//!
//! [`LlamaModel`] is a causal token model. Its network ([`network`]) evaluates only what its
//! key/value cache ([`cache`]) lacks: a row's longest cached prefix is reused, rows with the same
//! content are one row of the evaluation, and only the positions a token operation asks for go
//! through the output layer. Its text is its tokenizer's ([`tokenizer`]) and its chat template's
//! ([`chat`]). On a device it runs its device half ([`device`]), with its own key/value cache
//! there.
//!
//! Position `j` of a row's output predicts the token at `j + 1`, so `causal_logits(rows, from)`
//! evaluates positions `from − 1 ..= len − 1` and a row needs at least one token: a prompt, or the
//! model's beginning-of-sequence token when its chat template writes one.

mod cache;
mod chat;
pub mod config;
mod dense;
mod device;
mod ggml;
pub mod gguf;
pub mod hf;
mod matrix;
mod network;
mod quant;
mod streams;
mod team;
pub mod tokenizer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sched_lang::types::ModelKind;
use sched_runtime::device::{Device, PerDevice};
use sched_runtime::interpolant::Interpolant;
use sched_runtime::model::draw::Draw;
use sched_runtime::model::{
    ChatMessage, DeviceTokenModel, FieldKind, KeptLogits, Label, Model, ModelError, ModelInfo, TokenModel, TokenRows,
    TokenText, Vocab,
};
use sched_runtime::tensor::Tensor;
use tokenizers::Tokenizer;

use self::cache::PrefixCache;
use self::config::LlamaConfig;
use self::device::DeviceLlama;
use self::network::{Network, RowPass};

/// The bytes of keys and values the cache keeps between calls.
const CACHE_BUDGET: usize = 1 << 30;

/// A Llama-family causal language model.
pub struct LlamaModel {
    info: ModelInfo,
    vocab: Vocab,
    network: Network,
    tokenizer: Option<Tokenizer>,
    chat_template: Option<String>,
    cache: Mutex<PrefixCache>,
    /// The weights and key/value caches of every device the model ran on.
    on_devices: PerDevice<DeviceLlama>,
}

/// The logits of a call's distinct rows, and which of them each row has.
struct SharedLogits {
    logits: Vec<f32>,
    /// Row `b` of the call has distinct row `shared[b]`'s logits.
    shared: Vec<usize>,
}

impl LlamaModel {
    pub(crate) fn new(
        network: Network,
        tokenizer: Option<Tokenizer>,
        chat_template: Option<String>,
        source: String,
    ) -> LlamaModel {
        let config = &network.config;
        let info = ModelInfo {
            kind: ModelKind::CausalLm,
            // A placeholder: token models have no interpolant, and nothing reads it for them.
            interpolant: Interpolant::RectifiedFlow,
            sample_shape: vec![],
            num_classes: None,
            source,
        };
        let vocab = Vocab { size: config.vocab, mask: None, eos: config.eos.first().copied(), words: None };
        let cache = PrefixCache::new(config.layers, config.kv_heads * config.head_dim, CACHE_BUDGET);
        LlamaModel {
            info,
            vocab,
            network,
            tokenizer,
            chat_template,
            cache: Mutex::new(cache),
            on_devices: PerDevice::default(),
        }
    }

    /// The network's hyperparameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.network.config
    }

    fn error(&self, message: impl ToString) -> ModelError {
        ModelError::Backend { model: self.info.source.clone(), message: message.to_string() }
    }

    fn lock(&self) -> MutexGuard<'_, PrefixCache> {
        // A call that panicked left at most unused nodes behind: every node is whole when inserted.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks that `rows` are whole rows that fit the context and that positions `from ..= len`
    /// can be scored.
    fn check_rows(&self, rows: TokenRows<'_>, from: usize) -> Result<(), ModelError> {
        if rows.batch.checked_mul(rows.len) != Some(rows.ids.len()) {
            return Err(self.error(format!("{} ids are not {} rows of {}", rows.ids.len(), rows.batch, rows.len)));
        }
        if from == 0 {
            return Err(self.error(
                "a causal language model scores a token after at least one other: give a prompt (`--prompt` or `--chat`)",
            ));
        }
        if from > rows.len {
            return Err(self.error(format!("cannot score from position {from} of rows of length {}", rows.len)));
        }
        let context = self.network.config.max_positions;
        if rows.len > context {
            return Err(
                self.error(format!("a row of {} tokens is longer than the model's context of {context}", rows.len))
            );
        }
        Ok(())
    }

    /// The logits of positions `from ..= len` (in the contract's numbering) of each distinct row.
    fn shared_logits(&self, rows: TokenRows<'_>, from: usize) -> Result<SharedLogits, ModelError> {
        self.check_rows(rows, from)?;
        let mut distinct: HashMap<&[u32], usize> = HashMap::new();
        let mut order = Vec::new();
        let shared = (0..rows.batch)
            .map(|b| {
                let row = rows.row(b);
                *distinct.entry(row).or_insert_with(|| {
                    order.push(row);
                    order.len() - 1
                })
            })
            .collect();
        let mut cache = self.lock();
        cache.begin();
        let passes: Vec<RowPass<'_>> = order
            .iter()
            .map(|row| RowPass { tokens: row, path: cache.lookup(row, row.len()), outputs: from - 1..row.len() })
            .collect();
        let logits = self.network.forward(&mut cache, &passes);
        cache.end();
        Ok(SharedLogits { logits: logits.map_err(|e| self.error(e))?, shared })
    }

    fn tokenizer(&self) -> Result<&Tokenizer, ModelError> {
        self.tokenizer.as_ref().ok_or_else(|| self.error("the checkpoint has no tokenizer (tokenizer.json)"))
    }

    fn unsupported(&self, what: &str) -> ModelError {
        ModelError::Unsupported { model: self.info.source.clone(), kind: self.info.kind, what: what.into() }
    }
}

impl Model for LlamaModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn field(&self, _x: &Tensor, _t: f64, _label: Label) -> Result<(Tensor, FieldKind), ModelError> {
        Err(self.unsupported("evaluate a continuous field (it is a language model)"))
    }

    fn jump(&self, _x: &Tensor, _t: f64, _s: f64, _label: Label) -> Result<Tensor, ModelError> {
        Err(self.unsupported("jump (it is a language model)"))
    }

    fn tokens(&self) -> Option<&dyn TokenModel> {
        Some(self)
    }
}

impl TokenModel for LlamaModel {
    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn causal_logits(&self, rows: TokenRows<'_>, from: usize) -> Result<Vec<f32>, ModelError> {
        let SharedLogits { logits, shared } = self.shared_logits(rows, from)?;
        let per_row = (rows.len + 1 - from) * self.vocab.size;
        let mut out = Vec::with_capacity(rows.batch * per_row);
        for &row in &shared {
            out.extend_from_slice(&logits[row * per_row..(row + 1) * per_row]);
        }
        Ok(out)
    }

    fn masked_logits(&self, _rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        Err(self.unsupported("score masked positions (it is causal)"))
    }

    fn heads(&self) -> usize {
        1
    }

    fn head_logits(&self, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        self.causal_logits(rows, rows.len)
    }

    /// The next tokens, the logits of each distinct row computed and processed once, however
    /// many rows share them.
    fn draw_next(&self, rows: TokenRows<'_>, draw: &Draw<'_>) -> Result<Vec<u32>, ModelError> {
        let SharedLogits { logits, shared } = self.shared_logits(rows, rows.len)?;
        Ok(draw.pick_rows_shared(&logits, self.vocab.size, &shared))
    }

    fn text(&self) -> Option<&dyn TokenText> {
        self.tokenizer.as_ref().map(|_| self as &dyn TokenText)
    }

    fn on_device(&self) -> Option<&dyn DeviceTokenModel> {
        Some(self)
    }
}

/// The causal model on a device ([`device`]): its logits come back to the host, where the token
/// operations draw from them.
impl DeviceTokenModel for LlamaModel {
    fn causal_logits_on(
        &self,
        device: &Arc<dyn Device>,
        rows: TokenRows<'_>,
        from: usize,
    ) -> Result<Vec<f32>, ModelError> {
        self.check_rows(rows, from)?;
        let network = self
            .on_devices
            .get_or_upload(device, |device| DeviceLlama::upload(&self.network, device))
            .map_err(|e| self.error(e))?;
        let mut out = Vec::with_capacity(rows.batch * (rows.len + 1 - from) * self.vocab.size);
        for b in 0..rows.batch {
            let logits =
                network.forward(&self.network, device, rows.row(b), from - 1..rows.len).map_err(|e| self.error(e))?;
            out.extend(logits);
        }
        Ok(out)
    }

    fn masked_logits_on(&self, _device: &Arc<dyn Device>, _rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        Err(self.unsupported("score masked positions (it is causal)"))
    }

    fn head_logits_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        self.causal_logits_on(device, rows, rows.len)
    }

    fn masked_logits_kept_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<KeptLogits, ModelError> {
        self.masked_logits_on(device, rows).map(KeptLogits::Host)
    }

    fn causal_logits_kept_on(
        &self,
        device: &Arc<dyn Device>,
        rows: TokenRows<'_>,
        from: usize,
    ) -> Result<KeptLogits, ModelError> {
        self.causal_logits_on(device, rows, from).map(KeptLogits::Host)
    }

    fn head_logits_kept_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<KeptLogits, ModelError> {
        self.head_logits_on(device, rows).map(KeptLogits::Host)
    }

    fn draw_next_on(
        &self,
        device: &Arc<dyn Device>,
        rows: TokenRows<'_>,
        draw: &Draw<'_>,
    ) -> Result<Vec<u32>, ModelError> {
        let logits = self.causal_logits_on(device, rows, rows.len)?;
        Ok(draw.pick_rows(&logits, self.vocab.size))
    }
}

impl TokenText for LlamaModel {
    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding =
            self.tokenizer()?.encode(text, false).map_err(|e| self.error(format!("cannot encode the text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer()?.decode(ids, false).map_err(|e| self.error(format!("cannot decode tokens: {e}")))
    }

    fn chat(&self, messages: &[ChatMessage]) -> Result<String, ModelError> {
        let template =
            self.chat_template.as_deref().ok_or_else(|| self.error("the checkpoint has no chat template"))?;
        let token = |id: Option<u32>| id.and_then(|id| self.tokenizer.as_ref()?.id_to_token(id));
        let (bos, eos) = (token(self.network.config.bos), token(self.vocab.eos));
        chat::render(template, messages, bos.as_deref(), eos.as_deref()).map_err(|e| self.error(e))
    }
}
