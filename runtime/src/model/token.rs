//! The model contract for sequences of discrete tokens.
//!
//! A token model sees a batch of rows of token ids, all of the same length, and returns logits
//! (unnormalized log-probabilities, `f32`, `-inf` for tokens it rules out) over its vocabulary. Each
//! method is one model evaluation (one NFE), whatever the number of positions it scores. Which
//! methods a model answers follows its kind: a causal model scores next tokens
//! ([`TokenModel::causal_logits`]), a masked model scores every position of a partly masked row
//! ([`TokenModel::masked_logits`]), and a multi-token model scores the next tokens from its heads
//! ([`TokenModel::head_logits`]) and, from its first head, next tokens as a causal model does.

use std::sync::Arc;

use super::draw::Draw;
use super::error::ModelError;
use crate::device::{Device, DeviceTensor};

/// A model's vocabulary: its size, its special tokens and, when known, the text of each token.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    /// The number of token ids, `0..size`.
    pub size: usize,
    /// The mask token of masked models (never predicted).
    pub mask: Option<u32>,
    /// The end token: a row that produced it has ended.
    pub eos: Option<u32>,
    /// The text of each id, when the model has it (a word list or a tokenizer), for `emit`.
    pub words: Option<Vec<String>>,
}

impl Vocab {
    /// The text of `id`, or `<id>` when the vocabulary has no words.
    pub fn word(&self, id: u32) -> String {
        match &self.words {
            Some(words) => words.get(id as usize).cloned().unwrap_or_else(|| format!("<{id}>")),
            None => format!("<{id}>"),
        }
    }

    /// The id of the word `text`, when the vocabulary has words and `text` is one.
    pub fn id(&self, text: &str) -> Option<u32> {
        self.words.as_ref()?.iter().position(|w| w == text).map(|i| i as u32)
    }
}

/// A batch of token rows of equal length, row-major: row `b` is `ids[b * len .. (b + 1) * len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenRows<'a> {
    pub ids: &'a [u32],
    pub batch: usize,
    pub len: usize,
}

impl<'a> TokenRows<'a> {
    pub fn row(&self, b: usize) -> &'a [u32] {
        &self.ids[b * self.len..(b + 1) * self.len]
    }
}

/// A model of token sequences. Implementations are immutable and shared between threads.
///
/// Every method returns logits in a flat `Vec<f32>`, row-major over (row, position, token).
pub trait TokenModel: Send + Sync {
    fn vocab(&self) -> &Vocab;

    /// Causal next-token logits: for each row and each position `j` in `from..=len`, the logits of
    /// the token at position `j` given the row's tokens `0..j`. The result has
    /// `batch × (len + 1 - from) × vocab` entries. `from = len` scores only the next token;
    /// verification scores a draft with `from` at its first token. One evaluation.
    fn causal_logits(&self, rows: TokenRows<'_>, from: usize) -> Result<Vec<f32>, ModelError>;

    /// Masked-position logits: for each row and each position `j` in `0..len`, the logits of the
    /// clean token at `j` given the row, in which mask tokens are unknown. Positions that hold a
    /// token (not the mask) get a point mass on that token. `batch × len × vocab` entries. One
    /// evaluation.
    fn masked_logits(&self, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError>;

    /// The number of heads of a multi-token model (1 for a plain causal model, 0 for others).
    fn heads(&self) -> usize;

    /// Multi-token logits: for each row and each head `i` in `0..heads()`, the logits of the token
    /// at position `len + i` given the row, marginally over the positions in between (head 0 is
    /// the next-token distribution). `batch × heads × vocab` entries. One evaluation.
    fn head_logits(&self, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError>;

    /// [`masked_logits`] of the rows, left where the model computed them: a model evaluated on a
    /// device keeps them there, raw (without the point masses and the blocked mask token of
    /// [`masked_logits`], which a token operation that reads only masked positions applies
    /// itself). One evaluation.
    ///
    /// [`masked_logits`]: TokenModel::masked_logits
    fn masked_logits_kept(&self, rows: TokenRows<'_>) -> Result<KeptLogits, ModelError> {
        Ok(KeptLogits::Host(self.masked_logits(rows)?))
    }

    /// [`causal_logits`] of the rows, left where the model computed them (on the device of a model
    /// evaluated there). One evaluation.
    ///
    /// [`causal_logits`]: TokenModel::causal_logits
    fn causal_logits_kept(&self, rows: TokenRows<'_>, from: usize) -> Result<KeptLogits, ModelError> {
        Ok(KeptLogits::Host(self.causal_logits(rows, from)?))
    }

    /// [`head_logits`] of the rows, left where the model computed them. One evaluation.
    ///
    /// [`head_logits`]: TokenModel::head_logits
    fn head_logits_kept(&self, rows: TokenRows<'_>) -> Result<KeptLogits, ModelError> {
        Ok(KeptLogits::Host(self.head_logits(rows)?))
    }

    /// The next token of every row, drawn as `draw` says from [`causal_logits`]'s logits of
    /// position `len` (one evaluation). A model evaluated on a device draws there and returns
    /// only the tokens.
    ///
    /// [`causal_logits`]: TokenModel::causal_logits
    fn draw_next(&self, rows: TokenRows<'_>, draw: &Draw<'_>) -> Result<Vec<u32>, ModelError> {
        let logits = self.causal_logits(rows, rows.len)?;
        Ok(draw.pick_rows(&logits, self.vocab().size))
    }

    /// The model's evaluation on a device, when it has one (the transformer's network runs on a
    /// device's matrix products and layer kernels).
    fn on_device(&self) -> Option<&dyn DeviceTokenModel> {
        None
    }

    /// How the model reads and writes text, when it has a tokenizer that does (a language
    /// model's byte-level BPE). Models without one write their rows as their words.
    fn text(&self) -> Option<&dyn TokenText> {
        None
    }
}

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// A token model's text: its tokenizer and its chat template.
pub trait TokenText: Send + Sync {
    /// The ids of `text`, special tokens written in it (`<|im_start|>`) as their ids, and no
    /// token added.
    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError>;

    /// The text of `ids`, special tokens written as they are.
    fn decode(&self, ids: &[u32]) -> Result<String, ModelError>;

    /// The prompt of `messages` by the model's chat template, ending where the assistant's answer
    /// starts.
    fn chat(&self, messages: &[ChatMessage]) -> Result<String, ModelError>;
}

/// The logits of a model call, in the layout of the [`TokenModel`] method that made them: on the
/// host, or on the device that computed them (raw, for a masked-model call).
#[derive(Clone, Debug)]
pub enum KeptLogits {
    Host(Vec<f32>),
    Device(Arc<DeviceTensor>),
}

/// A token model whose network runs on a device. Each method is [`TokenModel`]'s of the same
/// name, evaluated on `device`: the plain ones return the logits to the host, the `*_kept_on`
/// ones leave them on the device, and [`DeviceTokenModel::draw_next_on`] returns only tokens.
pub trait DeviceTokenModel: Send + Sync {
    fn causal_logits_on(
        &self,
        device: &Arc<dyn Device>,
        rows: TokenRows<'_>,
        from: usize,
    ) -> Result<Vec<f32>, ModelError>;
    fn masked_logits_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError>;
    fn head_logits_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError>;
    /// [`TokenModel::masked_logits_kept`]: the raw masked-model logits, on the device (on the
    /// host, empty, for no rows or empty ones).
    fn masked_logits_kept_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<KeptLogits, ModelError>;
    /// [`TokenModel::causal_logits_kept`]: the logits on the device (on the host, empty, for no
    /// rows).
    fn causal_logits_kept_on(
        &self,
        device: &Arc<dyn Device>,
        rows: TokenRows<'_>,
        from: usize,
    ) -> Result<KeptLogits, ModelError>;
    /// [`TokenModel::head_logits_kept`]: the logits on the device (on the host, empty, for no
    /// rows).
    fn head_logits_kept_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<KeptLogits, ModelError>;
    /// [`TokenModel::draw_next`] with the logits and the draws on the device.
    fn draw_next_on(
        &self,
        device: &Arc<dyn Device>,
        rows: TokenRows<'_>,
        draw: &Draw<'_>,
    ) -> Result<Vec<u32>, ModelError>;
}

/// A token model bound to a run's device: every evaluation runs its network there.
pub struct OnDevice<'a> {
    pub model: &'a dyn TokenModel,
    pub device: &'a Arc<dyn Device>,
    pub network: &'a dyn DeviceTokenModel,
}

impl TokenModel for OnDevice<'_> {
    fn vocab(&self) -> &Vocab {
        self.model.vocab()
    }

    fn causal_logits(&self, rows: TokenRows<'_>, from: usize) -> Result<Vec<f32>, ModelError> {
        self.network.causal_logits_on(self.device, rows, from)
    }

    fn masked_logits(&self, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        self.network.masked_logits_on(self.device, rows)
    }

    fn heads(&self) -> usize {
        self.model.heads()
    }

    fn head_logits(&self, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        self.network.head_logits_on(self.device, rows)
    }

    fn draw_next(&self, rows: TokenRows<'_>, draw: &Draw<'_>) -> Result<Vec<u32>, ModelError> {
        self.network.draw_next_on(self.device, rows, draw)
    }

    fn text(&self) -> Option<&dyn TokenText> {
        self.model.text()
    }

    fn masked_logits_kept(&self, rows: TokenRows<'_>) -> Result<KeptLogits, ModelError> {
        self.network.masked_logits_kept_on(self.device, rows)
    }

    fn causal_logits_kept(&self, rows: TokenRows<'_>, from: usize) -> Result<KeptLogits, ModelError> {
        self.network.causal_logits_kept_on(self.device, rows, from)
    }

    fn head_logits_kept(&self, rows: TokenRows<'_>) -> Result<KeptLogits, ModelError> {
        self.network.head_logits_kept_on(self.device, rows)
    }
}
