//! Analytic token models (`analytic:poker(...)`, `analytic:markov(...)`): exact distributions
//! whose causal, masked and multi-token conditionals are computed in closed form.
//!
//! A model is an [`ExactLaw`] (what the rows are: [`super::table::TokenTable`] for the poker
//! hands, [`super::markov::MarkovChain`] for seeded Markov chains) behind [`AnalyticTokenModel`]
//! (which kind of token model it pretends to be). The model checks its input (row lengths, ids in
//! the vocabulary, no mask token in a causal row) and turns the law's probabilities into logits:
//! `ln p` in `f32`, `-inf` where `p = 0`.

use sched_lang::types::ModelKind;

use sched_runtime::interpolant::Interpolant;
use sched_runtime::model::{FieldKind, Label, Model, ModelError, ModelInfo, TokenModel, TokenRows, Vocab};
use sched_runtime::tensor::Tensor;

/// A distribution over token rows whose conditionals are known exactly.
///
/// Callers pass only ids below `vocab().size`; rows passed to [`ExactLaw::next_token`] and the
/// observed ids passed to [`ExactLaw::marginals`] never hold the mask token. Implementations do not
/// panic on other ids (they return zero probabilities).
pub trait ExactLaw: Send + Sync {
    /// The vocabulary of the rows.
    fn vocab(&self) -> &Vocab;

    /// Writes into `out` (`vocab().size` entries) the probability of each token at position
    /// `prefix.len()` given the tokens of `prefix`.
    fn next_token(&self, prefix: &[u32], out: &mut [f64]);

    /// Writes into `out` (`observed.len() × vocab().size` entries, row-major) the law of the token
    /// at every position given the observed positions (`None` is unknown): a point mass where a
    /// position is observed, the exact posterior marginal elsewhere.
    fn marginals(&self, observed: &[Option<u32>], out: &mut [f64]);
}

/// The kind of token model an [`AnalyticTokenModel`] is, with the number of heads of a
/// multi-token model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// `causal_lm`: next-token logits (one head).
    CausalLm,
    /// `masked_lm`: logits at masked positions (no heads).
    MaskedLm,
    /// `mtp_lm`: `heads` next-token heads, and next-token logits from the first.
    MtpLm { heads: usize },
}

impl TokenKind {
    /// The model kind of the language.
    pub fn model_kind(self) -> ModelKind {
        match self {
            TokenKind::CausalLm => ModelKind::CausalLm,
            TokenKind::MaskedLm => ModelKind::MaskedLm,
            TokenKind::MtpLm { .. } => ModelKind::MtpLm,
        }
    }

    /// The number of heads ([`TokenModel::heads`]).
    pub fn heads(self) -> usize {
        match self {
            TokenKind::CausalLm => 1,
            TokenKind::MaskedLm => 0,
            TokenKind::MtpLm { heads } => heads,
        }
    }
}

/// An [`ExactLaw`] presented as a token model of a given kind.
///
/// Its [`ModelInfo`] has the token kind, an empty sample shape, no classes, and the rectified-flow
/// interpolant as a placeholder that nothing reads (token models have no noise level).
pub struct AnalyticTokenModel {
    info: ModelInfo,
    kind: TokenKind,
    law: Box<dyn ExactLaw>,
}

impl AnalyticTokenModel {
    /// The model of kind `kind` over `law`; `source` names it in messages (the spec text).
    pub fn new(kind: TokenKind, law: Box<dyn ExactLaw>, source: String) -> AnalyticTokenModel {
        let info = ModelInfo {
            kind: kind.model_kind(),
            interpolant: Interpolant::RectifiedFlow,
            sample_shape: Vec::new(),
            num_classes: None,
            source,
        };
        AnalyticTokenModel { info, kind, law }
    }

    fn unsupported(&self, what: &str) -> ModelError {
        ModelError::Unsupported { model: self.info.source.clone(), kind: self.info.kind, what: what.into() }
    }

    fn backend(&self, message: String) -> ModelError {
        ModelError::Backend { model: self.info.source.clone(), message }
    }

    /// Checks that `rows` has `batch × len` ids, each in the vocabulary, and (unless
    /// `masks_allowed`) none the mask token.
    fn check_rows(&self, rows: &TokenRows<'_>, masks_allowed: bool) -> Result<(), ModelError> {
        let vocab = self.law.vocab();
        if rows.batch.checked_mul(rows.len) != Some(rows.ids.len()) {
            return Err(self.backend(format!(
                "the rows hold {} token ids, but {} rows of length {} need {}",
                rows.ids.len(),
                rows.batch,
                rows.len,
                rows.batch.checked_mul(rows.len).map_or_else(|| "more than fit in memory".into(), |n| n.to_string())
            )));
        }
        for (i, &id) in rows.ids.iter().enumerate() {
            // `rows.len > 0` here: the loop has an id, and there are batch × len of them.
            let (b, j) = (i / rows.len, i % rows.len);
            if id as usize >= vocab.size {
                return Err(self.backend(format!(
                    "row {b}, position {j}: token id {id} is outside the vocabulary (ids 0..{})",
                    vocab.size
                )));
            }
            if !masks_allowed && Some(id) == vocab.mask {
                return Err(self.backend(format!(
                    "row {b}, position {j} holds the mask token {}, which only a masked model reads",
                    vocab.word(id)
                )));
            }
        }
        Ok(())
    }

    /// An empty output for `batch` rows of `per_row` logits each, or an error when it cannot be
    /// allocated.
    fn output(&self, batch: usize, per_row: usize) -> Result<Vec<f32>, ModelError> {
        let too_big = || self.backend(format!("the output of {batch} rows of {per_row} logits does not fit in memory"));
        let len = batch.checked_mul(per_row).ok_or_else(too_big)?;
        let mut out = Vec::new();
        out.try_reserve_exact(len).map_err(|_| too_big())?;
        Ok(out)
    }
}

/// The logit of a probability: `ln p`, `-inf` for zero.
fn logit(p: f64) -> f32 {
    if p > 0.0 { p.ln() as f32 } else { f32::NEG_INFINITY }
}

impl Model for AnalyticTokenModel {
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

impl TokenModel for AnalyticTokenModel {
    fn vocab(&self) -> &Vocab {
        self.law.vocab()
    }

    /// The law's next-token probabilities at each position. A `mtp_lm` answers as a `causal_lm`
    /// does (its first head).
    fn causal_logits(&self, rows: TokenRows<'_>, from: usize) -> Result<Vec<f32>, ModelError> {
        if self.kind == TokenKind::MaskedLm {
            return Err(self.unsupported("score next tokens"));
        }
        self.check_rows(&rows, false)?;
        if from > rows.len {
            return Err(self.backend(format!(
                "causal logits from position {from} of rows of length {}: the first scored position must be at most the length",
                rows.len
            )));
        }
        let size = self.law.vocab().size;
        let positions = rows.len + 1 - from;
        let mut out = self.output(rows.batch, positions.saturating_mul(size))?;
        let mut probabilities = vec![0.0; size];
        for b in 0..rows.batch {
            let row = rows.row(b);
            for j in from..=rows.len {
                self.law.next_token(&row[..j], &mut probabilities);
                out.extend(probabilities.iter().map(|&p| logit(p)));
            }
        }
        Ok(out)
    }

    /// The law's posterior marginals given the row's tokens, the mask token standing for unknown.
    fn masked_logits(&self, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        if self.kind != TokenKind::MaskedLm {
            return Err(self.unsupported("score masked positions"));
        }
        self.check_rows(&rows, true)?;
        if rows.len == 0 || rows.batch == 0 {
            return Ok(Vec::new());
        }
        let vocab = self.law.vocab();
        let mut out = self.output(rows.batch, rows.len.saturating_mul(vocab.size))?;
        let mut probabilities = vec![0.0; rows.len * vocab.size];
        for b in 0..rows.batch {
            let observed: Vec<Option<u32>> =
                rows.row(b).iter().map(|&id| if Some(id) == vocab.mask { None } else { Some(id) }).collect();
            self.law.marginals(&observed, &mut probabilities);
            out.extend(probabilities.iter().map(|&p| logit(p)));
        }
        Ok(out)
    }

    fn heads(&self) -> usize {
        self.kind.heads()
    }

    /// Head 0 is the next-token law (bit for bit [`TokenModel::causal_logits`] at the row's end);
    /// head `i > 0` is the law's marginal of position `len + i` given the row.
    fn head_logits(&self, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        let heads = self.kind.heads();
        if heads == 0 {
            return Err(self.unsupported("score next tokens from heads"));
        }
        self.check_rows(&rows, false)?;
        let size = self.law.vocab().size;
        let mut out = self.output(rows.batch, heads.saturating_mul(size))?;
        let mut next = vec![0.0; size];
        let mut marginals = Vec::new();
        for b in 0..rows.batch {
            let row = rows.row(b);
            self.law.next_token(row, &mut next);
            out.extend(next.iter().map(|&p| logit(p)));
            if heads > 1 {
                let observed: Vec<Option<u32>> =
                    row.iter().map(|&id| Some(id)).chain(std::iter::repeat_n(None, heads)).collect();
                marginals.resize(observed.len() * size, 0.0);
                self.law.marginals(&observed, &mut marginals);
                out.extend(marginals[(rows.len + 1) * size..].iter().map(|&p| logit(p)));
            }
        }
        Ok(out)
    }
}
