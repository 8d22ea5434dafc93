//! `extend seq by count with SAMPLER`: new tokens drawn from a causal model, one call per token,
//! or from a multi-token model's heads in one call.

use sched_compiler::ir::SamplerKind;

use super::drafter::Drafter;
use super::groups::{each_group, kept_groups};
use super::value::{SequenceError, Specials, TokenSeq, noise_room, non_negative};
use crate::model::TokenModel;
use crate::model::draw::{Choice, Draw, Noise};

/// The next token of every row (one evaluation), drawn by `choice` with the noise of extension
/// token `position`; `samples[i]` is row `i`'s index in the whole batch, its noise sample.
fn next_tokens(
    model: &dyn TokenModel,
    rows: &[&[u32]],
    samples: &[usize],
    position: usize,
    choice: Choice,
    noise: Noise,
) -> Result<Vec<u32>, SequenceError> {
    let groups = each_group(
        rows,
        |b| rows[b].len(),
        |_, batch, members| {
            let samples: Vec<u32> = members.iter().map(|&i| samples[i] as u32).collect();
            model.draw_next(batch, &Draw { choice, noise, samples: &samples, position: position as u32 })
        },
    )?;
    let mut tokens = vec![0; rows.len()];
    for (_, members, drawn) in groups {
        if drawn.len() != members.len() {
            return Err(SequenceError::Invalid(format!(
                "the model drew {} tokens for {} rows",
                drawn.len(),
                members.len()
            )));
        }
        for (b, token) in members.into_iter().zip(drawn) {
            tokens[b] = token;
        }
    }
    Ok(tokens)
}

/// `extend seq by count with SAMPLER`: one causal call per token, or one multi-token call for
/// [`SamplerKind::Heads`]. Rows that ended are padded with the end token. Returns the sequence
/// and the number of model evaluations. Noise: token `j` of the extension draws
/// `uniform(row, j * vocab + v)` for vocabulary entry `v`.
pub fn extend(
    model: &dyn TokenModel,
    seq: &TokenSeq,
    count: i64,
    kind: SamplerKind,
    choice: Choice,
    specials: Specials,
    noise: Noise,
) -> Result<(TokenSeq, u64), SequenceError> {
    let count = non_negative(count, "extend")?;
    let vocab = model.vocab().size;
    noise_room(count, vocab)?;
    let mut rows = seq.rows.clone();
    let mut calls = 0;
    if kind == SamplerKind::Heads {
        let heads = model.heads();
        if count > heads {
            return Err(SequenceError::Invalid(format!(
                "`extend ... with heads()` by {count}: the model has {heads} heads"
            )));
        }
        let views: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let groups =
            kept_groups(&views, |b| views[b].len(), |_| heads * vocab, |_, batch| model.head_logits_kept(batch))?;
        calls += 1;
        let mut drafter = Drafter::new(rows.len(), count, vocab, choice, noise, false);
        for group in &groups {
            drafter.draw(group, heads, 0)?;
        }
        for ((row, drawn), b) in rows.iter_mut().zip(drafter.drafts).zip(0..) {
            match specials.eos.filter(|_| specials.has_ended(&seq.rows[b], seq.prompt)) {
                Some(eos) => row.extend(std::iter::repeat_n(eos, count)),
                None => row.extend(drawn),
            }
        }
        return Ok((seq.with_rows(rows), calls));
    }
    for j in 0..count {
        let open: Vec<usize> = (0..rows.len()).filter(|&b| !specials.has_ended(&rows[b], seq.prompt)).collect();
        let mut chosen = vec![None; rows.len()];
        if !open.is_empty() {
            let views: Vec<&[u32]> = open.iter().map(|&b| rows[b].as_slice()).collect();
            let tokens = next_tokens(model, &views, &open, j, choice, noise)?;
            calls += 1;
            for (&b, token) in open.iter().zip(tokens) {
                chosen[b] = Some(token);
            }
        }
        for (b, row) in rows.iter_mut().enumerate() {
            match (chosen[b], specials.eos) {
                (Some(token), _) | (None, Some(token)) => row.push(token),
                (None, None) => {}
            }
        }
    }
    Ok((seq.with_rows(rows), calls))
}
