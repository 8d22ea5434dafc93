//! `repredict(x)`: one Jacobi iteration on the window of a token sequence (Santilli et al.,
//! "Accelerating Transformer Inference for Translation via Parallel Decoding", 2023; Kou et al.,
//! "CLLMs", 2024).
//!
//! One causal call re-predicts every window position `j` greedily from the row's tokens before
//! `j`, guesses included: `new_j = argmax p(· | x_0 … x_{j−1})`. A position after an end token
//! (after the prompt) becomes the end token, as greedy decoding pads an ended row; the prompt's
//! positions never change. The fixed point is greedy decoding, and it is reached in at most
//! `window` iterations: if the first position that changes is `m`, positions up to `m` are
//! already greedy decoding's (each was predicted from final tokens), so every iteration settles
//! at least one more position.

use super::groups::each_group;
use super::value::{SequenceError, Specials, TokenSeq};
use crate::model::TokenModel;
use crate::model::draw::Choice;

/// One Jacobi iteration on `x`'s window; returns the sequence (its window kept, its tentative
/// positions those after the first change) and the number of model evaluations (one, or none
/// when every row ended before its window).
pub fn repredict(model: &dyn TokenModel, x: &TokenSeq, specials: Specials) -> Result<(TokenSeq, u64), SequenceError> {
    let vocab = model.vocab().size;
    let mut rows = x.rows.clone();
    // The first position of row `b` that the iteration may change: the window's, never the prompt's.
    let start = |b: usize| x.window_start(b).max(x.prompt);
    // Rows that ended before their window are padded already; the others are evaluated.
    let open: Vec<usize> = (0..rows.len())
        .filter(|&b| start(b) < x.rows[b].len() && !specials.has_ended(&x.rows[b][..start(b)], x.prompt))
        .collect();
    let mut calls = 0;
    // Tentative positions before the window stay tentative.
    let width = x.window.unwrap_or(usize::MAX);
    let mut tentative = if x.tentative > width { x.tentative } else { 0 };
    if !open.is_empty() {
        let views: Vec<&[u32]> = open.iter().map(|&b| x.rows[b].as_slice()).collect();
        // Rows of one length have one window start: one evaluation per group, all counted as one.
        let groups = each_group(
            &views,
            |i| views[i].len(),
            |_, batch, members| {
                // A group is made of the rows that share its key, so it has a first member.
                let from = start(open[members[0]]);
                model.causal_logits(batch, from).map(|logits| (from, logits))
            },
        )?;
        calls += 1;
        for (len, members, (from, logits)) in groups {
            let per_row = (len + 1 - from) * vocab;
            if logits.len() != members.len() * per_row {
                return Err(SequenceError::Invalid(format!(
                    "the model returned {} logits for {} rows of length {len} scored from {from}, expected {}",
                    logits.len(),
                    members.len(),
                    members.len() * per_row
                )));
            }
            for (slot, &i) in members.iter().enumerate() {
                let b = open[i];
                let row_logits = &logits[slot * per_row..(slot + 1) * per_row];
                let old = &x.rows[b];
                for j in from..len {
                    rows[b][j] = match specials.eos {
                        Some(eos) if specials.has_ended(&old[..j], x.prompt) => eos,
                        _ => Choice::Greedy.pick(&row_logits[(j - from) * vocab..][..vocab], |_| 0.0),
                    };
                }
                if let Some(m) = (from..len).find(|&j| rows[b][j] != old[j]) {
                    tentative = tentative.max(len - (m + 1));
                }
            }
        }
    }
    Ok((TokenSeq { rows, prompt: x.prompt, window: x.window, proposal: None, tentative }, calls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelError, TokenRows, Vocab};

    /// A causal model over 4 tokens that always predicts `(last + 1) mod 4` (token 3 is the end).
    struct Counter(Vocab);

    impl TokenModel for Counter {
        fn vocab(&self) -> &Vocab {
            &self.0
        }
        fn causal_logits(&self, rows: TokenRows<'_>, from: usize) -> Result<Vec<f32>, ModelError> {
            let mut out = Vec::new();
            for b in 0..rows.batch {
                let row = rows.row(b);
                for j in from..=rows.len {
                    let next = row[..j].last().map_or(0, |&t| (t + 1) % 4);
                    out.extend((0..4).map(|v| if v == next { 0.0 } else { f32::NEG_INFINITY }));
                }
            }
            Ok(out)
        }
        fn masked_logits(&self, _: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
            Ok(Vec::new())
        }
        fn heads(&self) -> usize {
            1
        }
        fn head_logits(&self, _: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn iterations_settle_the_window_into_greedy_decoding() {
        let model = Counter(Vocab { size: 4, mask: None, eos: Some(3), words: None });
        let specials = Specials::of(model.vocab());
        let seq = TokenSeq::prompt(&[0], 1).extend_guess(4, specials).expect("guesses").tail(4).expect("a window");
        assert_eq!(seq.rows[0], [0, 0, 0, 0, 0]);
        assert_eq!(seq.tentative, 4);
        // Each iteration fixes one more position; greedy is 0 1 2 3 (the end), then the end again.
        let (once, calls) = repredict(&model, &seq, specials).expect("an iteration");
        assert_eq!((once.rows[0].clone(), calls, once.tentative), (vec![0, 1, 1, 1, 1], 1, 3));
        let (twice, _) = repredict(&model, &once, specials).expect("an iteration");
        assert_eq!(twice.rows[0], [0, 1, 2, 2, 2]);
        let (thrice, _) = repredict(&model, &twice, specials).expect("an iteration");
        assert_eq!(thrice.rows[0], [0, 1, 2, 3, 3], "after the end token, the end token");
        assert_eq!(thrice.tentative, 1);
        let (fixed, _) = repredict(&model, &thrice, specials).expect("an iteration");
        assert_eq!((fixed.rows[0].clone(), fixed.tentative), (vec![0, 1, 2, 3, 3], 0));
        assert!(fixed.settled());
        assert_eq!(*once.settled_rows(), [vec![0, 1]]);
    }
}
