//! The value the IR's `tokens` type holds: a batch of token rows, with the window a step
//! refines and, for a draft, what its tokens were drawn from.

use std::borrow::Cow;
use std::sync::Arc;

use crate::device::{DeviceError, DeviceTensor};
use crate::model::draw::{Choice, InvalidSampler};
use crate::model::{ModelError, Vocab};

/// A batch of token rows, with the window an unmasking step refines and, for a draft, the
/// distribution each of its tokens was drawn from.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenSeq {
    pub rows: Vec<Vec<u32>>,
    /// How many leading positions of every row came from the prompt.
    pub prompt: usize,
    /// The number of last positions a step refines; the whole row when `None`.
    pub window: Option<usize>,
    /// For a draft: what its tokens were drawn from.
    pub proposal: Option<Proposal>,
    /// How many last positions of the rows are guesses that a Jacobi refinement may still
    /// change (`extend ... as guess` adds them; `repredict` settles them); 0 for every other
    /// sequence. Streaming shows only the positions before them.
    pub tentative: usize,
}

/// A failure of a token operation.
#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sampler(#[from] InvalidSampler),
    #[error("{0}")]
    Invalid(String),
}

impl SequenceError {
    /// Every code of this error, with when it is reported (docs/diagnostics.md lists them).
    /// A model's failure keeps its own code ([`ModelError::CODES`]).
    pub const CODES: &'static [(&'static str, &'static str)] = &[
        ("sched::tokens::sampler", "a sampler's arguments are out of their domain (temperature, top-k, top-p, min-p)"),
        ("sched::tokens::invalid", "a token operation's operands are invalid (counts, rows, vocabularies, limits)"),
    ];

    /// The error's stable code.
    pub fn code(&self) -> &'static str {
        match self {
            SequenceError::Model(error) => error.code(),
            SequenceError::Sampler(_) => "sched::tokens::sampler",
            SequenceError::Invalid(_) => "sched::tokens::invalid",
        }
    }
}

/// The run's vocabulary facts a token operation needs.
#[derive(Clone, Copy, Debug)]
pub struct Specials {
    pub mask: Option<u32>,
    pub eos: Option<u32>,
}

impl Specials {
    pub fn of(vocab: &Vocab) -> Specials {
        Specials { mask: vocab.mask, eos: vocab.eos }
    }

    /// Whether `row`, whose first `prompt` tokens are the prompt's, has produced the end token
    /// (a prompt may hold end tokens of its own, as a chat's turns do).
    pub(crate) fn has_ended(&self, row: &[u32], prompt: usize) -> bool {
        self.eos.is_some_and(|eos| row.get(prompt..).is_some_and(|new| new.contains(&eos)))
    }
}

impl TokenSeq {
    /// Rows of the prompt, one per sample.
    pub fn prompt(prompt: &[u32], batch: usize) -> TokenSeq {
        TokenSeq {
            rows: vec![prompt.to_vec(); batch],
            prompt: prompt.len(),
            window: None,
            proposal: None,
            tentative: 0,
        }
    }

    /// New rows after the same prompt, refined whole.
    pub(super) fn with_rows(&self, rows: Vec<Vec<u32>>) -> TokenSeq {
        TokenSeq { rows, prompt: self.prompt, window: None, proposal: None, tentative: 0 }
    }

    /// Whether every row has produced the end token (never, for a vocabulary without one).
    pub fn ended(&self, specials: Specials) -> bool {
        specials.eos.is_some() && self.rows.iter().all(|row| specials.has_ended(row, self.prompt))
    }

    /// The length of the shortest row still generating, or of the longest row when all ended.
    pub fn length(&self, specials: Specials) -> i64 {
        let open = self.rows.iter().filter(|row| !specials.has_ended(row, self.prompt)).map(Vec::len).min();
        let length = open.or_else(|| self.rows.iter().map(Vec::len).max()).unwrap_or(0);
        length as i64
    }

    /// The first position of the window of row `b`.
    pub(super) fn window_start(&self, b: usize) -> usize {
        let len = self.rows[b].len();
        self.window.map_or(0, |w| len.saturating_sub(w))
    }

    /// The rows `rows` ended with `eos` (those that have not ended yet), the others as they are.
    pub fn end_rows(&self, rows: &[usize], eos: u32) -> TokenSeq {
        let mut ended = self.clone();
        let specials = Specials { mask: None, eos: Some(eos) };
        for &b in rows {
            if let Some(row) = ended.rows.get_mut(b).filter(|row| !specials.has_ended(row, self.prompt)) {
                row.push(eos);
            }
        }
        ended
    }

    /// Row `b` up to its first end token after the prompt.
    pub fn until_end(&self, b: usize, eos: Option<u32>) -> &[u32] {
        let row = &self.rows[b];
        let prompt = self.prompt.min(row.len());
        let end = eos.and_then(|eos| row[prompt..].iter().position(|&t| t == eos)).map_or(row.len(), |at| prompt + at);
        &row[..end]
    }

    /// The last `count` positions as the window.
    pub fn tail(&self, count: i64) -> Result<TokenSeq, SequenceError> {
        let count = usize::try_from(count)
            .map_err(|_| SequenceError::Invalid(format!("`.tail({count})`: the count cannot be negative")))?;
        Ok(TokenSeq { window: Some(count), ..self.clone() })
    }

    /// The sequence with its window reset to the whole rows.
    pub fn whole(&self) -> TokenSeq {
        TokenSeq { window: None, proposal: None, ..self.clone() }
    }

    /// `count` new positions, checked: not negative, and no row longer than [`MAX_ROW_LEN`] after
    /// them.
    fn room_for(&self, count: i64) -> Result<usize, SequenceError> {
        let count = non_negative(count, "extend")?;
        if longest(&self.rows) + count > MAX_ROW_LEN {
            return Err(SequenceError::Invalid(format!(
                "`extend` by {count}: rows are limited to {MAX_ROW_LEN} positions"
            )));
        }
        Ok(count)
    }

    /// The sequence extended by `count` mask tokens.
    pub fn extend_mask(&self, count: i64, specials: Specials) -> Result<TokenSeq, SequenceError> {
        let count = self.room_for(count)?;
        let mask = specials.mask.ok_or_else(|| {
            SequenceError::Invalid("`extend ... as mask` needs a masked model (no bound model has a mask token)".into())
        })?;
        let rows = self.rows.iter().map(|row| row.iter().copied().chain(std::iter::repeat_n(mask, count)).collect());
        Ok(self.with_rows(rows.collect()))
    }

    /// The sequence extended by `count` guesses that a Jacobi refinement corrects: copies of each
    /// row's last token (for an empty row the end token, or 0 without one), or the end token for a
    /// row that has ended. The new positions are tentative.
    pub fn extend_guess(&self, count: i64, specials: Specials) -> Result<TokenSeq, SequenceError> {
        let count = self.room_for(count)?;
        let rows = self.rows.iter().map(|row| {
            let ended = specials.has_ended(row, self.prompt);
            let guess = match specials.eos {
                Some(eos) if ended => eos,
                _ => row.last().copied().or(specials.eos).unwrap_or(0),
            };
            row.iter().copied().chain(std::iter::repeat_n(guess, count)).collect()
        });
        Ok(TokenSeq { tentative: self.tentative + count, ..self.with_rows(rows.collect()) })
    }

    /// Whether no position is tentative.
    pub fn settled(&self) -> bool {
        self.tentative == 0
    }

    /// The rows without their tentative positions: what is final so far.
    pub fn settled_rows(&self) -> Cow<'_, [Vec<u32>]> {
        if self.tentative == 0 {
            return Cow::Borrowed(&self.rows);
        }
        Cow::Owned(self.rows.iter().map(|row| row[..row.len().saturating_sub(self.tentative)].to_vec()).collect())
    }
}

/// The most positions a row may have: longer rows are refused rather than allocated.
pub const MAX_ROW_LEN: usize = 1 << 20;

/// A count of new positions: not negative, and not making a row longer than [`MAX_ROW_LEN`].
pub(super) fn non_negative(count: i64, what: &str) -> Result<usize, SequenceError> {
    let count = usize::try_from(count)
        .map_err(|_| SequenceError::Invalid(format!("`{what}` by {count}: the count is negative")))?;
    if count > MAX_ROW_LEN {
        return Err(SequenceError::Invalid(format!(
            "`{what}` by {count}: rows are limited to {MAX_ROW_LEN} positions"
        )));
    }
    Ok(count)
}

/// Checks that `positions` positions of `vocab` entries each have distinct noise indices
/// (`position · vocab + entry` must fit in the 32 bits of the Philox counter word).
pub(super) fn noise_room(positions: usize, vocab: usize) -> Result<(), SequenceError> {
    match positions.checked_mul(vocab) {
        // The indices are 0 .. positions · vocab, so the last one is positions · vocab - 1.
        Some(indices) if indices <= u32::MAX as usize + 1 => Ok(()),
        _ => Err(SequenceError::Invalid(format!(
            "{positions} positions of a {vocab}-token vocabulary need more than 2^32 noise indices"
        ))),
    }
}

/// The length of the longest row.
pub(super) fn longest(rows: &[Vec<u32>]) -> usize {
    rows.iter().map(Vec::len).max().unwrap_or(0)
}

/// What a draft's tokens were drawn from, for sampling verification.
#[derive(Clone, Debug)]
pub enum Proposal {
    /// Per row and draft position, the probabilities over the vocabulary the token was drawn from
    /// (one-hot for a greedy draft).
    Host(Vec<Vec<Vec<f64>>>),
    /// The draft model's raw logits `[rows, k, vocab]` on the device that computed them, and the
    /// choice that drew from them: the distributions are computed where they are needed.
    Device { logits: Arc<DeviceTensor>, choice: Choice },
}

impl PartialEq for Proposal {
    fn eq(&self, other: &Proposal) -> bool {
        match (self, other) {
            (Proposal::Host(a), Proposal::Host(b)) => a == b,
            (Proposal::Device { logits: a, choice: x }, Proposal::Device { logits: b, choice: y }) => {
                Arc::ptr_eq(a, b) && x == y
            }
            _ => false,
        }
    }
}

impl Proposal {
    /// The distributions on the host, computed from the device's logits where they are there.
    pub(super) fn on_host(&self) -> Result<Cow<'_, [Vec<Vec<f64>>]>, SequenceError> {
        match self {
            Proposal::Host(distributions) => Ok(Cow::Borrowed(distributions)),
            Proposal::Device { logits, choice } => {
                let backend = |e: DeviceError| SequenceError::Invalid(format!("reading a draft's logits: {e}"));
                let &[rows, k, vocab] = logits.shape.as_slice() else {
                    return Err(SequenceError::Invalid(format!(
                        "a draft's logits have shape {:?}, not [rows, k, vocab]",
                        logits.shape
                    )));
                };
                let data = logits.device().download(logits.buffer()).map_err(backend)?;
                let distribution = |b: usize, i: usize| choice.distribution(&data[(b * k + i) * vocab..][..vocab]);
                Ok(Cow::Owned((0..rows).map(|b| (0..k).map(|i| distribution(b, i)).collect()).collect()))
            }
        }
    }
}

/// The words of a row, separated by spaces (the words of subword vocabularies are joined as
/// they are).
pub fn row_text(row: &[u32], vocab: &Vocab) -> String {
    let words: Vec<String> = row.iter().map(|&t| vocab.word(t)).collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_counts_the_shortest_open_row_and_ended_needs_every_row() {
        let specials = Specials { mask: Some(9), eos: Some(0) };
        let seq = TokenSeq {
            rows: vec![vec![3, 4, 0], vec![3, 4, 5, 6]],
            prompt: 0,
            window: None,
            proposal: None,
            tentative: 0,
        };
        assert_eq!(seq.length(specials), 4, "the ended row does not count");
        assert!(!seq.ended(specials));
        let done = seq.with_rows(vec![vec![3, 0], vec![3, 4, 0]]);
        assert_eq!(done.length(specials), 3, "all ended: the longest");
        assert!(done.ended(specials));
        assert!(!done.ended(Specials { mask: None, eos: None }), "no end token: never ended");
    }
}
