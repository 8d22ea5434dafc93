//! Drafts and their verification: `propose` draws a draft of `k` tokens per row with the
//! distributions it was drawn from, and `verify` keeps each row's longest accepted prefix and adds
//! one token of the model, so the output has the model's distribution (speculative decoding,
//! draft + verify).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::Arc;

use sched_compiler::ir::SamplerKind;
use sched_kernels::tokens as kernels;

use super::drafter::{Drafter, draw_on_device};
use super::groups::kept_groups;
use super::value::{Proposal, SequenceError, Specials, TokenSeq, longest, noise_room, non_negative};
use crate::device::{DeviceError, DeviceOp, DeviceTensor, RowMoves, VerifyLaunch};
use crate::model::draw::{Choice, Noise};
use crate::model::{KeptLogits, TokenModel};

/// `propose(model, seq, k, SAMPLER)`: `k` draft tokens per row with the distributions they were
/// drawn from: one multi-token call for [`SamplerKind::Heads`], else `k` causal calls. Noise:
/// draft token `j` draws `uniform(row, j * vocab + v)`. A model evaluated on a device draws there
/// and keeps the draft's logits there ([`Proposal::Device`]); only the tokens come back.
pub fn propose(
    model: &dyn TokenModel,
    seq: &TokenSeq,
    k: i64,
    kind: SamplerKind,
    choice: Choice,
    noise: Noise,
) -> Result<(TokenSeq, u64), SequenceError> {
    let k = non_negative(k, "propose")?;
    let vocab = model.vocab().size;
    noise_room(k, vocab)?;
    let mut drafter = Drafter::new(seq.rows.len(), k, vocab, choice, noise, true);
    let mut calls = 0;
    if kind == SamplerKind::Heads {
        let heads = model.heads();
        if k > heads {
            return Err(SequenceError::Invalid(format!("`propose` of {k} tokens from heads: the model has {heads}")));
        }
        let views: Vec<&[u32]> = seq.rows.iter().map(Vec::as_slice).collect();
        let groups =
            kept_groups(&views, |b| views[b].len(), |_| heads * vocab, |_, batch| model.head_logits_kept(batch))?;
        calls += 1;
        for group in &groups {
            drafter.draw(group, heads, 0)?;
        }
    } else {
        for j in 0..k {
            let extended: Vec<Vec<u32>> = seq
                .rows
                .iter()
                .zip(&drafter.drafts)
                .map(|(row, draft)| row.iter().chain(draft).copied().collect())
                .collect();
            let views: Vec<&[u32]> = extended.iter().map(Vec::as_slice).collect();
            let groups = kept_groups(
                &views,
                |b| views[b].len(),
                |_| vocab,
                |_, batch| model.causal_logits_kept(batch, batch.len),
            )?;
            calls += 1;
            for group in &groups {
                drafter.draw(group, 1, j)?;
            }
        }
    }
    let proposal = match drafter.device {
        Some(logits) if drafter.host.iter().all(Vec::is_empty) => Proposal::Device { logits: Arc::new(logits), choice },
        Some(_) => {
            return Err(SequenceError::Invalid(
                "the draft model left some of its logits on the host and some on the device".into(),
            ));
        }
        None => Proposal::Host(drafter.host),
    };
    Ok((TokenSeq { rows: drafter.drafts, prompt: 0, window: None, proposal: Some(proposal), tentative: 0 }, calls))
}

/// `verify(model, seq, draft, SAMPLER)`: one causal call scores every draft position; each row
/// keeps the longest accepted prefix of its draft and adds one token of the model, as
/// [`kernels::verify_row`] defines it.
///
/// Greedy: draft tokens are accepted while they equal the model's argmax, then the argmax
/// follows (the output is greedy decoding's). Sampling (Leviathan et al., Chen et al.): draft
/// token `i` is accepted when `uniform(row, (k + 1) * vocab + i) <= p(x) / q(x)`, with `p` the
/// model's processed distribution and `q` the draft's; the first rejected position is resampled
/// from `norm(max(0, p - q))`, and a row that accepts all `k` adds a bonus token from `p`; both
/// draw `uniform(row, i * vocab + v)`. The output has exactly the model's distribution. A row
/// that has ended is left as it is; a row stops after an accepted end token.
///
/// A model evaluated on a device keeps its logits there: greedy verification brings back only
/// its argmaxes, and sampling verification of a draft whose logits are on the same device
/// ([`Proposal::Device`]) only the appended tokens ([`crate::device::Device::verify_drafts`]).
pub fn verify(
    model: &dyn TokenModel,
    seq: &TokenSeq,
    draft: &TokenSeq,
    choice: Choice,
    specials: Specials,
    noise: Noise,
) -> Result<(TokenSeq, u64), SequenceError> {
    let vocab = model.vocab().size;
    // Acceptance draws use the indices just past the resampling ones: (k + 2) · vocab in all.
    noise_room(longest(&draft.rows) + 2, vocab)?;
    if draft.rows.len() != seq.rows.len() {
        return Err(SequenceError::Invalid(format!(
            "the draft has {} rows, the sequence {}",
            draft.rows.len(),
            seq.rows.len()
        )));
    }
    let open: Vec<usize> = (0..seq.rows.len()).filter(|&b| !specials.has_ended(&seq.rows[b], seq.prompt)).collect();
    let mut rows = seq.rows.clone();
    if open.is_empty() {
        return Ok((seq.with_rows(rows), 0));
    }
    let extended: Vec<Vec<u32>> =
        open.iter().map(|&b| seq.rows[b].iter().chain(&draft.rows[b]).copied().collect()).collect();
    let views: Vec<&[u32]> = extended.iter().map(Vec::as_slice).collect();
    let lengths: Vec<(usize, usize)> = open.iter().map(|&b| (seq.rows[b].len(), draft.rows[b].len())).collect();
    // Causal logits of every draft position and the one after: `(k + 1) × vocab` per row.
    let groups = kept_groups(
        &views,
        |slot| lengths[slot],
        |(_, k)| (k + 1) * vocab,
        |(len, _), batch| model.causal_logits_kept(batch, len),
    )?;
    let verifier = Verifier { draft, choice, eos: specials.eos, vocab, noise, host_proposal: OnceCell::new() };
    for group in groups {
        // The group's members are indices into `open`.
        let members: Vec<usize> = group.members.iter().map(|&slot| open[slot]).collect();
        let appended = match group.logits {
            KeptLogits::Host(logits) => verifier.on_host(&logits, &members)?,
            KeptLogits::Device(logits) => verifier.on_device(&logits, &members)?,
        };
        for (&b, tokens) in members.iter().zip(appended) {
            rows[b].extend(tokens);
        }
    }
    Ok((seq.with_rows(rows), 1))
}

/// The verification of a draft, group by group of rows.
struct Verifier<'a> {
    draft: &'a TokenSeq,
    choice: Choice,
    eos: Option<u32>,
    vocab: usize,
    noise: Noise,
    /// The draft's distributions on the host, computed by the first group verified there.
    host_proposal: OnceCell<Cow<'a, [Vec<Vec<f64>>]>>,
}

impl<'a> Verifier<'a> {
    /// The draft's distributions on the host, for sampling verification (`None` for greedy, or a
    /// draft without them); a draft whose logits are on a device brings them back once.
    fn host_proposal(&self) -> Result<Option<&[Vec<Vec<f64>>]>, SequenceError> {
        let (Some(proposal), Choice::Sample(_)) = (&self.draft.proposal, self.choice) else { return Ok(None) };
        if self.host_proposal.get().is_none() {
            // Unset just above, and nothing else sets it in between: `set` cannot fail.
            let _ = self.host_proposal.set(proposal.on_host()?);
        }
        Ok(self.host_proposal.get().map(|distributions| &**distributions))
    }

    /// The tokens each of `members` (rows of the batch, all with drafts of one length) appends,
    /// from the group's logits on the host.
    fn on_host(&self, logits: &[f32], members: &[usize]) -> Result<Vec<Vec<u32>>, SequenceError> {
        let (choice, noise, vocab) = (self.choice, self.noise, self.vocab);
        let proposal = self.host_proposal()?;
        let appended = members
            .iter()
            .enumerate()
            .map(|(slot, &b)| {
                let draft = &self.draft.rows[b];
                let k = draft.len();
                let score = |i: usize| &logits[(slot * (k + 1) + i) * vocab..][..vocab];
                let token = |i: usize| choice.pick(score(i), |v| noise.uniform(b, i * vocab + v as usize));
                let drafted = proposal.as_ref().and_then(|q| q.get(b));
                let distributions =
                    |i: usize| (choice.distribution(score(i)), drafted.and_then(|q| q.get(i)).map(Vec::as_slice));
                let sampled = matches!(choice, Choice::Sample(_)).then_some(distributions);
                kernels::verify_row(draft, self.eos, vocab, token, sampled, |index| noise.uniform(b, index as usize)).0
            })
            .collect();
        Ok(appended)
    }

    /// [`Verifier::on_host`] with the group's logits on a device: greedy verification draws the
    /// argmaxes there, and sampling verification of a draft whose logits are on the same device
    /// verifies there; otherwise the logits come to the host.
    fn on_device(&self, logits: &DeviceTensor, members: &[usize]) -> Result<Vec<Vec<u32>>, SequenceError> {
        let device = logits.device();
        let backend = |e: DeviceError| SequenceError::Invalid(format!("verifying drafts on the device: {e}"));
        let (choice, noise, vocab) = (self.choice, self.noise, self.vocab);
        let k = members.first().map_or(0, |&b| self.draft.rows[b].len());
        let samples: Vec<u32> = members.iter().map(|&b| b as u32).collect();
        let proposal = match (&self.draft.proposal, choice) {
            (Some(Proposal::Device { logits: proposal, choice: drafted }), Choice::Sample(_))
                if proposal.shape == [self.draft.rows.len(), k, vocab]
                    && std::ptr::addr_eq(Arc::as_ptr(proposal.device()), Arc::as_ptr(device)) =>
            {
                Some((proposal, *drafted))
            }
            _ => None,
        };
        match (choice, proposal) {
            (Choice::Greedy, _) => {
                // The model's argmax at each position; the comparison is the host's.
                let argmaxes = draw_on_device(logits, members, k + 1, 0, vocab, choice, noise)?;
                let appended = members.iter().enumerate().map(|(slot, &b)| {
                    let token = |i: usize| argmaxes[slot * (k + 1) + i];
                    let sampled = None::<fn(usize) -> kernels::DraftDistributions<'static>>;
                    let uniform = |index: u32| noise.uniform(b, index as usize);
                    kernels::verify_row(&self.draft.rows[b], self.eos, vocab, token, sampled, uniform).0
                });
                Ok(appended.collect())
            }
            (Choice::Sample(_), Some((proposal, drafted))) => {
                let whole = members.len() == self.draft.rows.len();
                let gathered = if whole {
                    None
                } else {
                    let gathered = DeviceTensor::alloc(device, vec![members.len(), k, vocab]).map_err(backend)?;
                    let from: Vec<u32> =
                        members.iter().flat_map(|&b| (0..k).map(move |i| (b * k + i) as u32)).collect();
                    let to: Vec<u32> = (0..from.len() as u32).collect();
                    let moves = RowMoves { from: &from, to: &to, width: vocab };
                    device
                        .execute(&DeviceOp::move_rows(proposal.buffer(), gathered.buffer(), moves))
                        .map_err(backend)?;
                    Some(gathered)
                };
                let draft: Vec<u32> = members.iter().flat_map(|&b| self.draft.rows[b].iter().copied()).collect();
                let ((target_kernel, target_params), (proposal_kernel, proposal_params)) =
                    (choice.sample_kernel(), drafted.sample_kernel());
                let launch = VerifyLaunch {
                    target: logits.buffer(),
                    target_kernel,
                    target_params,
                    proposal: gathered.as_ref().map_or(proposal.buffer(), DeviceTensor::buffer),
                    proposal_kernel,
                    proposal_params,
                    draft: &draft,
                    rows: members.len(),
                    k,
                    vocab,
                    noise_sample: &samples,
                    seed: noise.seed,
                    site: noise.site,
                    step: noise.step,
                    eos: self.eos,
                };
                let appended = device.verify_drafts(&launch).map_err(backend)?;
                if appended.len() != members.len() {
                    return Err(SequenceError::Invalid(format!(
                        "the device verified {} of {} rows",
                        appended.len(),
                        members.len()
                    )));
                }
                Ok(appended)
            }
            (Choice::Sample(_), None) => {
                let logits = device.download(logits.buffer()).map_err(backend)?;
                self.on_host(&logits, members)
            }
        }
    }
}
