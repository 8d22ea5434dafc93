//! Tokens drawn from the logits of a model call, wherever the call left them: a draft's (with the
//! distributions it was drawn from, for its verification) or the heads' of `extend`.

use super::groups::RowGroup;
use super::value::SequenceError;
use crate::device::{DeviceError, DeviceOp, DeviceTensor, RowMoves, SampleLaunch};
use crate::model::KeptLogits;
use crate::model::draw::{Choice, Noise};

/// The tokens of `propose` (or of `extend ... with heads()`) as its calls' logits come in: `k`
/// per row and, for a draft, the distributions they were drawn from on the host or the logits on
/// the device.
pub(super) struct Drafter {
    choice: Choice,
    noise: Noise,
    vocab: usize,
    k: usize,
    /// Whether to keep what the tokens were drawn from (a draft's proposal).
    keep: bool,
    pub(super) drafts: Vec<Vec<u32>>,
    pub(super) host: Vec<Vec<Vec<f64>>>,
    /// `[rows, k, vocab]`, allocated at the first group whose logits are on a device.
    pub(super) device: Option<DeviceTensor>,
}

impl Drafter {
    pub(super) fn new(rows: usize, k: usize, vocab: usize, choice: Choice, noise: Noise, keep: bool) -> Drafter {
        let host = if keep { vec![Vec::with_capacity(k); rows] } else { vec![Vec::new(); rows] };
        Drafter { choice, noise, vocab, k, keep, drafts: vec![Vec::with_capacity(k); rows], host, device: None }
    }

    /// Draws from a group's logits, `per_member` rows of them per member: row `h` of member `b`
    /// is draft position `first + h` of row `b`, drawn if it is below `k`.
    pub(super) fn draw(&mut self, group: &RowGroup, per_member: usize, first: usize) -> Result<(), SequenceError> {
        let (vocab, k, choice, noise) = (self.vocab, self.k, self.choice, self.noise);
        // (row, draft position, row of the group's logits), in the order of the draft positions.
        let drawn: Vec<(usize, usize, usize)> = group
            .members
            .iter()
            .enumerate()
            .flat_map(|(slot, &b)| (0..per_member).map(move |h| (b, first + h, slot * per_member + h)))
            .filter(|&(_, j, _)| j < k)
            .collect();
        match &group.logits {
            KeptLogits::Host(logits) => {
                for &(b, j, r) in &drawn {
                    let scores = &logits[r * vocab..(r + 1) * vocab];
                    let uniform = |v: u32| noise.uniform(b, j * vocab + v as usize);
                    if self.keep {
                        let (token, distribution) = choice.draw(scores, uniform);
                        self.drafts[b].push(token);
                        self.host[b].push(distribution);
                    } else {
                        self.drafts[b].push(choice.pick(scores, uniform));
                    }
                }
            }
            KeptLogits::Device(logits) => {
                let device = logits.device();
                let backend = |e: DeviceError| SequenceError::Invalid(format!("drafting on the device: {e}"));
                // Every row of the logits is drawn (with its own noise), and the drafted ones kept.
                let tokens = draw_on_device(logits, &group.members, per_member, first, vocab, choice, noise)?;
                if !self.keep {
                    for &(b, _, r) in &drawn {
                        self.drafts[b].push(tokens[r]);
                    }
                    return Ok(());
                }
                let proposal = match &mut self.device {
                    Some(proposal) => proposal,
                    empty => {
                        empty.insert(DeviceTensor::alloc(device, vec![self.drafts.len(), k, vocab]).map_err(backend)?)
                    }
                };
                let (mut from, mut to) = (Vec::with_capacity(drawn.len()), Vec::with_capacity(drawn.len()));
                for &(b, j, r) in &drawn {
                    self.drafts[b].push(tokens[r]);
                    from.push(r as u32);
                    to.push((b * k + j) as u32);
                }
                let moves = RowMoves { from: &from, to: &to, width: vocab };
                device.execute(&DeviceOp::move_rows(logits.buffer(), proposal.buffer(), moves)).map_err(backend)?;
            }
        }
        Ok(())
    }
}

/// A token drawn by `choice` from every row of a group's logits on a device, `per_member` rows per
/// member: row `h` of member `b` draws with row `b`'s noise at position `first + h`. Only the
/// tokens come back.
pub(super) fn draw_on_device(
    logits: &DeviceTensor,
    members: &[usize],
    per_member: usize,
    first: usize,
    vocab: usize,
    choice: Choice,
    noise: Noise,
) -> Result<Vec<u32>, SequenceError> {
    let rows = members.len() * per_member;
    let samples: Vec<u32> = members.iter().flat_map(|&b| std::iter::repeat_n(b as u32, per_member)).collect();
    let positions: Vec<u32> = (0..rows).map(|r| (first + r % per_member.max(1)) as u32).collect();
    let (kernel, params) = choice.sample_kernel();
    let launch = SampleLaunch {
        logits: logits.buffer(),
        rows,
        vocab,
        params,
        noise_sample: &samples,
        noise_position: &positions,
        seed: noise.seed,
        site: noise.site,
        step: noise.step,
    };
    let sampled = logits.device().sample_rows(&kernel, &launch);
    let tokens = sampled.map_err(|e| SequenceError::Invalid(format!("drawing tokens on the device: {e}")))?.tokens;
    if tokens.len() != rows {
        return Err(SequenceError::Invalid(format!(
            "the device drew {} tokens from {rows} rows of logits",
            tokens.len()
        )));
    }
    Ok(tokens)
}
