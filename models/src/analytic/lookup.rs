//! Prompt-lookup drafting: a draft model that predicts the next token by finding the row's last
//! `n` tokens earlier in the row and proposing the token that followed them (the n-gram
//! drafting of Saxena's prompt lookup decoding, and of llama.cpp's `lookup`).
//!
//! It has no weights: its law is a point mass, so speculative decoding accepts its token with
//! the target's probability of it and stays exact. It costs microseconds, so whenever the text
//! repeats itself (code, quotations, summaries of the prompt) a verification accepts several
//! tokens for the price of one target call.
//!
//! The rule, for a prefix `x_0 .. x_{L-1}`: for `m = n, n - 1, ..., 1`, the latest `i` with
//! `i + m < L` and `x_i .. x_{i+m-1} = x_{L-m} .. x_{L-1}` gives the token `x_{i+m}`; the first `m`
//! with a match wins. Without any match, the last token is proposed again (the empty prefix
//! proposes token 0).

use sched_runtime::model::Vocab;

use super::tokens::ExactLaw;

/// The longest n-gram the rule matches.
pub const MAX_NGRAM: usize = 8;
/// The largest vocabulary a lookup law takes (the output holds one probability per token).
pub const MAX_VOCAB: usize = 1 << 24;

/// The prompt-lookup law over a vocabulary of `vocab.size` ids.
pub struct PromptLookup {
    vocab: Vocab,
    ngram: usize,
}

impl PromptLookup {
    /// The law matching n-grams of at most `ngram` tokens (1 to [`MAX_NGRAM`]) over `size` token
    /// ids (1 to [`MAX_VOCAB`]); the target's vocabulary size, so that the two agree.
    pub fn new(size: usize, ngram: usize) -> Result<PromptLookup, String> {
        if !(1..=MAX_VOCAB).contains(&size) {
            return Err(format!("a prompt-lookup draft has between 1 and {MAX_VOCAB} token ids"));
        }
        if !(1..=MAX_NGRAM).contains(&ngram) {
            return Err(format!("a prompt-lookup draft matches n-grams of 1 to {MAX_NGRAM} tokens"));
        }
        Ok(PromptLookup { vocab: Vocab { size, mask: None, eos: None, words: None }, ngram })
    }

    /// The token the rule proposes after `prefix`.
    pub fn propose(&self, prefix: &[u32]) -> u32 {
        let len = prefix.len();
        for m in (1..=self.ngram.min(len.saturating_sub(1))).rev() {
            let tail = &prefix[len - m..];
            // Candidate starts `i` with `i + m < len`, latest first.
            if let Some(i) = (0..len - m).rev().find(|&i| &prefix[i..i + m] == tail) {
                return prefix[i + m];
            }
        }
        prefix.last().copied().unwrap_or(0)
    }

    /// A point mass on `token`, an id of the prefix or 0: inside the vocabulary, since the model
    /// checks the rows' ids before asking the law.
    fn point_mass(&self, token: u32, out: &mut [f64]) {
        out.fill(0.0);
        if let Some(p) = out.get_mut(token as usize) {
            *p = 1.0;
        }
    }
}

impl ExactLaw for PromptLookup {
    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn next_token(&self, prefix: &[u32], out: &mut [f64]) {
        self.point_mass(self.propose(prefix), out);
    }

    /// The law is deterministic left to right, so an unknown position's marginal is the point
    /// mass on the rule's token after the positions before it, themselves observed or filled the
    /// same way. This is exact for the heads of a `mtp_lm`, whose unknowns all follow the observed
    /// row; the spec refuses `masked_lm`, whose unknowns may precede observed tokens.
    fn marginals(&self, observed: &[Option<u32>], out: &mut [f64]) {
        let size = self.vocab.size;
        let mut filled = Vec::with_capacity(observed.len());
        for (position, slot) in observed.iter().zip(out.chunks_exact_mut(size)) {
            let token = position.unwrap_or_else(|| self.propose(&filled));
            self.point_mass(token, slot);
            filled.push(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_latest_match_gives_the_token() {
        let lookup = PromptLookup::new(10, 3).expect("a law");
        // "1 2 3 4 … 1 2 3" continues with 4; the later "2 3 9" loses to the longer match.
        assert_eq!(lookup.propose(&[1, 2, 3, 4, 2, 3, 9, 1, 2, 3]), 4);
        // Only the bigram "2 3" matches; its latest occurrence is followed by 9.
        assert_eq!(lookup.propose(&[1, 2, 3, 4, 2, 3, 9, 5, 2, 3]), 9);
        // No match: the last token again; the empty prefix: token 0.
        assert_eq!(lookup.propose(&[5, 6, 7]), 7);
        assert_eq!(lookup.propose(&[]), 0);
        // A token that repeats matches itself one position back.
        assert_eq!(lookup.propose(&[4, 4]), 4);
    }

    #[test]
    fn marginals_continue_the_rule_left_to_right() {
        let lookup = PromptLookup::new(6, 2).expect("a law");
        let observed = [Some(1), Some(2), Some(3), Some(1), Some(2), None, None];
        let mut out = vec![0.0; observed.len() * 6];
        lookup.marginals(&observed, &mut out);
        let tokens: Vec<usize> =
            out.chunks_exact(6).map(|p| p.iter().position(|&v| v == 1.0).expect("a point mass")).collect();
        assert_eq!(tokens, [1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn sizes_are_checked() {
        assert!(PromptLookup::new(0, 3).is_err());
        assert!(PromptLookup::new(MAX_VOCAB + 1, 3).is_err());
        assert!(PromptLookup::new(10, 0).is_err());
        assert!(PromptLookup::new(10, MAX_NGRAM + 1).is_err());
    }
}
