//! Finite tables of token rows: a distribution over a few rows, each followed by the end token
//! forever. Every conditional is an exact sum over the rows, so the table is ground truth for
//! causal, masked and multi-token samplers. The poker hands ([`crate::poker`]) are such a table.

use sched_runtime::model::Vocab;

use super::tokens::ExactLaw;
use crate::poker;

/// A distribution over finitely many token rows. Row `r` reads `tokens_r` and then the end token
/// at every later position; its probability is `p_r`. The probabilities sum to 1.
///
/// A prefix or an observation that no row is consistent with has probability zero; the table then
/// predicts the end token with probability 1 at every unknown position (a model cannot be asked
/// to condition on the impossible, and ending the row is the answer that stops a sampler).
#[derive(Clone, Debug)]
pub struct TokenTable {
    vocab: Vocab,
    /// The end token, which also pads every row after its tokens.
    eos: u32,
    rows: Vec<(Vec<u32>, f64)>,
}

impl TokenTable {
    /// The poker hands of [`poker::HANDS`] over the vocabulary [`poker::WORDS`]: rows
    /// `[first, second]` followed by `<eos>`, with the mask token [`poker::MASK`].
    pub fn poker() -> TokenTable {
        let vocab = Vocab {
            size: poker::WORDS.len(),
            mask: Some(poker::MASK),
            eos: Some(poker::EOS),
            words: Some(poker::WORDS.iter().map(|w| (*w).to_string()).collect()),
        };
        let rows = poker::hand_ids().into_iter().map(|(first, second, p)| (vec![first, second], p)).collect();
        TokenTable { vocab, eos: poker::EOS, rows }
    }

    /// The token of row `tokens` at `position`, the end token past its end.
    fn token(&self, tokens: &[u32], position: usize) -> u32 {
        tokens.get(position).copied().unwrap_or(self.eos)
    }

    /// The weight of each row given the observations (`None` = unknown), and their sum.
    fn posterior<'a>(&self, observed: impl Iterator<Item = (usize, Option<u32>)> + Clone + 'a) -> (Vec<f64>, f64) {
        let weights: Vec<f64> = self
            .rows
            .iter()
            .map(|(tokens, p)| {
                let consistent = observed
                    .clone()
                    .all(|(position, token)| token.is_none_or(|token| self.token(tokens, position) == token));
                if consistent { *p } else { 0.0 }
            })
            .collect();
        let total = weights.iter().sum();
        (weights, total)
    }

    /// Writes into `out` the law of the token at `position` under the row weights `weights` of
    /// total `total`: the end token surely when the total is zero.
    fn law_at(&self, position: usize, weights: &[f64], total: f64, out: &mut [f64]) {
        out.fill(0.0);
        if total > 0.0 {
            for ((tokens, _), weight) in self.rows.iter().zip(weights) {
                if let Some(slot) = out.get_mut(self.token(tokens, position) as usize) {
                    *slot += weight / total;
                }
            }
        } else if let Some(slot) = out.get_mut(self.eos as usize) {
            *slot = 1.0;
        }
    }
}

impl ExactLaw for TokenTable {
    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn next_token(&self, prefix: &[u32], out: &mut [f64]) {
        let (weights, total) = self.posterior(prefix.iter().map(|&t| Some(t)).enumerate());
        self.law_at(prefix.len(), &weights, total, out);
    }

    fn marginals(&self, observed: &[Option<u32>], out: &mut [f64]) {
        let (weights, total) = self.posterior(observed.iter().copied().enumerate());
        for (position, (slot, token)) in out.chunks_exact_mut(self.vocab.size).zip(observed).enumerate() {
            match token {
                Some(token) => {
                    slot.fill(0.0);
                    if let Some(point) = slot.get_mut(*token as usize) {
                        *point = 1.0;
                    }
                }
                None => self.law_at(position, &weights, total, slot),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poker_table_has_the_hands_and_sums_to_one() {
        let table = TokenTable::poker();
        assert_eq!(table.rows.len(), poker::HANDS.len());
        let total: f64 = table.rows.iter().map(|r| r.1).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!(table.rows.iter().all(|(tokens, _)| tokens.iter().all(|&t| t != poker::EOS && t != poker::MASK)));
    }

    #[test]
    fn an_impossible_prefix_ends_the_row() {
        let table = TokenTable::poker();
        let mut out = vec![0.0; table.vocab.size];
        let card = poker::id("card").unwrap_or(poker::MASK);
        table.next_token(&[card], &mut out);
        assert_eq!(out[poker::EOS as usize], 1.0);
        assert_eq!(out.iter().sum::<f64>(), 1.0);
    }
}
