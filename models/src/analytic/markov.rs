//! Markov chains over a small vocabulary, generated from a seed: token models whose causal,
//! masked and multi-token conditionals are exact (table look-ups and forward–backward).
//!
//! The chain of `V` words is drawn from sched's noise stream,
//! `z = sched_kernels::philox::gaussian(seed, site, 0, sample, index)`:
//!
//! - the initial law `π(a) ∝ exp(z_a)`, with site 0, sample 0, index `a`;
//! - the first-order transitions `P1(b | a) ∝ exp(2 z_ab)`, with site 1, sample `a`, index `b`;
//! - for order 2, the second-order transitions `P2(c | a, b) ∝ P1(c | b) · exp(0.75 z'_abc)`, with
//!   site 2, sample `a·V + b`, index `c`.
//!
//! An order-1 chain reads `x₀ ~ π`, `x_j ~ P1(· | x_{j−1})`; an order-2 chain reads `x₀ ~ π`,
//! `x₁ ~ P1(· | x₀)`, `x_j ~ P2(· | x_{j−2}, x_{j−1})`. Both orders draw π and P1 from the same
//! sites, so the order-1 chain of a seed is the order-2 chain of that seed with the older token
//! forgotten: a good draft model for it (speculative decoding pairs them). Every probability is
//! positive (|z| < 6.77), so no observation is impossible.

use sched_kernels::tokens::softmax;
use sched_runtime::model::Vocab;

use super::tokens::ExactLaw;

/// The Philox site of the initial law.
const SITE_INITIAL: u32 = 0;
/// The Philox site of the first-order transitions.
const SITE_FIRST: u32 = 1;
/// The Philox site of the second-order transitions.
const SITE_SECOND: u32 = 2;
/// The scale of the first-order transitions' logits.
const FIRST_SCALE: f64 = 2.0;
/// The scale of the second-order correction's logits.
const SECOND_SCALE: f64 = 0.75;

/// How many earlier tokens a chain's next token depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MarkovOrder {
    /// The last token.
    First,
    /// The last two tokens.
    Second,
}

/// A chain that cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarkovError {
    #[error("a Markov chain has between {} and {} words", MarkovChain::MIN_WORDS, MarkovChain::MAX_WORDS)]
    Words { words: usize },
}

/// A Markov chain of order 1 or 2 over the words `0..V`; the mask token is `V`, and there is no
/// end token (rows are as long as the schedule makes them).
#[derive(Clone, Debug)]
pub struct MarkovChain {
    vocab: Vocab,
    /// V, the number of words.
    words: usize,
    order: MarkovOrder,
    /// π, V entries.
    initial: Vec<f64>,
    /// P1, row-major: `first[a·V + b] = P1(b | a)`.
    first: Vec<f64>,
    /// P2, row-major: `second[(a·V + b)·V + c] = P2(c | a, b)`; empty for order 1.
    second: Vec<f64>,
}

impl MarkovChain {
    /// The fewest words a chain has.
    pub const MIN_WORDS: usize = 2;
    /// The most words a chain has (an order-2 chain keeps V³ probabilities: 128 MiB at 256).
    pub const MAX_WORDS: usize = 256;

    /// The chain of `words` words, `order` and `seed` (the module documentation defines it). The
    /// words are named `w0`, `w1`, ... and the mask token `<mask>`.
    pub fn new(words: usize, order: MarkovOrder, seed: u64) -> Result<MarkovChain, MarkovError> {
        if !(Self::MIN_WORDS..=Self::MAX_WORDS).contains(&words) {
            return Err(MarkovError::Words { words });
        }
        let v = words;
        // Every index below is at most V² + V < 2³², so the casts to u32 are exact.
        let z = |site: u32, sample: usize, index: usize| {
            f64::from(sched_kernels::philox::gaussian(seed, site, 0, sample as u32, index as u32))
        };
        let initial = softmax(&(0..v).map(|a| z(SITE_INITIAL, 0, a)).collect::<Vec<f64>>());
        let first: Vec<f64> = (0..v)
            .flat_map(|a| softmax(&(0..v).map(|b| FIRST_SCALE * z(SITE_FIRST, a, b)).collect::<Vec<f64>>()))
            .collect();
        let second = match order {
            MarkovOrder::First => Vec::new(),
            MarkovOrder::Second => (0..v * v)
                .flat_map(|ab| {
                    let b = ab % v;
                    softmax(
                        &(0..v)
                            .map(|c| first[b * v + c].ln() + SECOND_SCALE * z(SITE_SECOND, ab, c))
                            .collect::<Vec<f64>>(),
                    )
                })
                .collect(),
        };
        let mut names: Vec<String> = (0..v).map(|a| format!("w{a}")).collect();
        names.push("<mask>".into());
        let vocab = Vocab { size: v + 1, mask: Some(v as u32), eos: None, words: Some(names) };
        Ok(MarkovChain { vocab, words: v, order, initial, first, second })
    }

    /// The number of states at `position`: the last token, or the last two from position 1 on in
    /// an order-2 chain (state `a·V + b` for `x_{j−1} = a`, `x_j = b`).
    fn states(&self, position: usize) -> usize {
        match self.order {
            MarkovOrder::Second if position > 0 => self.words * self.words,
            _ => self.words,
        }
    }

    /// The law of the token at `position + 1` given the state at `position`; `None` for a state
    /// out of range.
    fn law(&self, position: usize, state: usize) -> Option<&[f64]> {
        let v = self.words;
        let table = match self.order {
            MarkovOrder::Second if position > 0 => &self.second,
            _ => &self.first,
        };
        table.get(state * v..(state + 1) * v)
    }

    /// The state at `position + 1` after the state `state` at `position` and the token `token`.
    fn next_state(&self, state: usize, token: usize) -> usize {
        match self.order {
            MarkovOrder::First => token,
            MarkovOrder::Second => (state % self.words) * self.words + token,
        }
    }

    /// The tokens an observation allows at a position: all words when unknown.
    fn allowed(&self, observed: Option<u32>) -> std::ops::Range<usize> {
        match observed {
            Some(token) => {
                let token = (token as usize).min(self.words);
                token..(token + 1).min(self.words)
            }
            None => 0..self.words,
        }
    }
}

/// Divides `values` by their sum, when it is positive.
fn normalize(values: &mut [f64]) {
    let total: f64 = values.iter().sum();
    if total > 0.0 {
        values.iter_mut().for_each(|v| *v /= total);
    }
}

impl ExactLaw for MarkovChain {
    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn next_token(&self, prefix: &[u32], out: &mut [f64]) {
        out.fill(0.0);
        let law = match (self.order, prefix) {
            (_, []) => Some(self.initial.as_slice()),
            (MarkovOrder::Second, [.., before, last]) => {
                self.law(prefix.len() - 1, *before as usize * self.words + *last as usize)
            }
            (_, [.., last]) => self.law(prefix.len() - 1, *last as usize),
        };
        if let Some(law) = law {
            out.iter_mut().zip(law).for_each(|(o, p)| *o = *p);
        }
    }

    /// Forward–backward over the chain's states, each message normalized to sum to 1 (so long rows
    /// do not underflow).
    fn marginals(&self, observed: &[Option<u32>], out: &mut [f64]) {
        let n = observed.len();
        if n == 0 {
            return;
        }
        // alpha[j][s] ∝ P(state s at j, observations up to j).
        let mut alpha: Vec<Vec<f64>> = Vec::with_capacity(n);
        let mut first = vec![0.0; self.words];
        for a in self.allowed(observed[0]) {
            first[a] = self.initial[a];
        }
        normalize(&mut first);
        alpha.push(first);
        for j in 0..n - 1 {
            let mut next = vec![0.0; self.states(j + 1)];
            for (state, &weight) in alpha[j].iter().enumerate() {
                let Some(law) = self.law(j, state).filter(|_| weight > 0.0) else { continue };
                for c in self.allowed(observed[j + 1]) {
                    next[self.next_state(state, c)] += weight * law[c];
                }
            }
            normalize(&mut next);
            alpha.push(next);
        }
        // beta[s] ∝ P(observations after j | state s at j), from the last position down.
        let mut beta = vec![1.0; self.states(n - 1)];
        for j in (0..n).rev() {
            if j + 1 < n {
                let mut previous = vec![0.0; self.states(j)];
                for (state, slot) in previous.iter_mut().enumerate() {
                    let Some(law) = self.law(j, state) else { continue };
                    *slot = self
                        .allowed(observed[j + 1])
                        .map(|c| law[c] * beta.get(self.next_state(state, c)).copied().unwrap_or(0.0))
                        .sum();
                }
                normalize(&mut previous);
                beta = previous;
            }
            let Some(slot) = out.get_mut(j * self.vocab.size..(j + 1) * self.vocab.size) else { continue };
            slot.fill(0.0);
            for (state, (a, b)) in alpha[j].iter().zip(&beta).enumerate() {
                slot[state % self.words] += a * b;
            }
            normalize(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_are_normalized_and_positive() {
        for order in [MarkovOrder::First, MarkovOrder::Second] {
            let chain = MarkovChain::new(5, order, 3).expect("5 words is a valid chain");
            let rows = std::iter::once(chain.initial.as_slice())
                .chain(chain.first.chunks_exact(5))
                .chain(chain.second.chunks_exact(5));
            for row in rows {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                assert!(row.iter().all(|p| *p > 0.0));
            }
            assert_eq!(chain.second.len(), if order == MarkovOrder::Second { 125 } else { 0 });
        }
    }

    #[test]
    fn the_vocabulary_has_words_and_a_mask() {
        let chain = MarkovChain::new(3, MarkovOrder::First, 0).expect("3 words is a valid chain");
        assert_eq!(chain.vocab.size, 4);
        assert_eq!(chain.vocab.mask, Some(3));
        assert_eq!(chain.vocab.eos, None);
        assert_eq!(chain.vocab.word(2), "w2");
        assert_eq!(chain.vocab.word(3), "<mask>");
        assert_eq!(
            MarkovChain::new(1, MarkovOrder::First, 0).err().map(|e| e.to_string()),
            Some("a Markov chain has between 2 and 256 words".into())
        );
    }

    #[test]
    fn marginals_of_an_unobserved_row_propagate_the_initial_law() {
        let chain = MarkovChain::new(4, MarkovOrder::First, 7).expect("4 words is a valid chain");
        let mut out = vec![0.0; 2 * 5];
        chain.marginals(&[None, None], &mut out);
        for b in 0..4 {
            let expected: f64 = (0..4).map(|a| chain.initial[a] * chain.first[a * 4 + b]).sum();
            assert!((out[5 + b] - expected).abs() < 1e-12);
            assert!((out[b] - chain.initial[b]).abs() < 1e-12);
        }
        assert_eq!(out[4], 0.0);
        assert_eq!(out[9], 0.0);
    }
}
