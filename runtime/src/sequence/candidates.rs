//! `candidates(x)` of masked diffusion: one masked-model call proposes a token and its
//! confidence at every masked position of the window (with LLaDA's classifier-free guidance,
//! two calls), reusing the last call's logits when the rows did not change.

use std::sync::Arc;

use sched_kernels::cuda_tokens::{Choose, Logits, Report, SampleKernel, SampleParams};
use sched_kernels::tokens as kernels;

use super::groups::{RowGroup, row_groups, slot_of};
use super::value::{SequenceError, Specials, TokenSeq, longest, noise_room};
use crate::device::{DeviceError, DeviceOp, DeviceTensor, SampleLaunch};
use crate::model::draw::Noise;
use crate::model::{KeptLogits, TokenModel};
use crate::tensor::Tensor;

/// The input and output of a site's last masked-model call.
#[derive(Clone, Debug)]
pub struct LogitsCache {
    rows: Vec<Vec<u32>>,
    logits: Vec<RowGroup>,
}

/// One masked-model call on the whole rows of `x`: for every masked position of the window, a
/// candidate token (the argmax at temperature 0, else a Gumbel-max draw from the logits divided
/// by the temperature) and its confidence, the probability of the candidate under the model
/// (LLaDA's `low_confidence`). Positions that are not masked keep their token with confidence
/// -inf. The confidence tensor has one row per sample and one column per window position of the
/// longest window. Noise: position `p` of the row draws `uniform(row, p * vocab + v)`.
///
/// With `guidance > 0` (LLaDA's classifier-free guidance), a second call sees the rows with their
/// prompt masked, and the logits are `un + (guidance + 1) (cond - un)`.
///
/// `cache` holds the last call's input and logits: when the rows did not change since, the
/// logits are reused and no evaluation is made (MDLM's caching; masked models here take no time).
/// A window without masks needs no call either.
#[allow(clippy::too_many_arguments, reason = "the operands of one call")]
pub fn candidates(
    model: &dyn TokenModel,
    x: &TokenSeq,
    temperature: f64,
    guidance: f64,
    specials: Specials,
    noise: Noise,
    cache: &mut Option<LogitsCache>,
) -> Result<(TokenSeq, Tensor, u64), SequenceError> {
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(SequenceError::Invalid(format!("candidate temperature {temperature} must be 0 or positive")));
    }
    if !(guidance >= 0.0 && guidance.is_finite()) {
        return Err(SequenceError::Invalid(format!("the guidance scale {guidance} must be 0 or positive")));
    }
    let mask =
        specials.mask.ok_or_else(|| SequenceError::Invalid("unmasking needs a model with a mask token".into()))?;
    let vocab = model.vocab().size;
    noise_room(longest(&x.rows), vocab)?;
    let any_masked = (0..x.rows.len()).any(|b| x.rows[b][x.window_start(b)..].contains(&mask));
    let (groups, calls) = match cache {
        Some(cached) if cached.rows == x.rows => (cached.logits.clone(), 0),
        // Nothing to unmask: no call, and every confidence stays -inf.
        _ if !any_masked => (Vec::new(), 0),
        // The logits stay where the model computed them.
        _ if guidance == 0.0 => {
            let views: Vec<&[u32]> = x.rows.iter().map(Vec::as_slice).collect();
            let groups = row_groups(&views, vocab, |batch| model.masked_logits_kept(batch))?;
            *cache = Some(LogitsCache { rows: x.rows.clone(), logits: groups.clone() });
            (groups, 1)
        }
        _ => {
            // Classifier-free guidance: a second call sees the rows with their prompt masked.
            let views: Vec<&[u32]> = x.rows.iter().map(Vec::as_slice).collect();
            let conditional = row_groups(&views, vocab, |batch| model.masked_logits_kept(batch))?;
            let unprompted: Vec<Vec<u32>> = x
                .rows
                .iter()
                .map(|row| row.iter().enumerate().map(|(p, &t)| if p < x.prompt { mask } else { t }).collect())
                .collect();
            let views: Vec<&[u32]> = unprompted.iter().map(Vec::as_slice).collect();
            let unconditional = row_groups(&views, vocab, |batch| model.masked_logits_kept(batch))?;
            let groups = conditional
                .into_iter()
                .zip(unconditional)
                .map(|(cond, un)| guided_group(cond, un, guidance))
                .collect::<Result<Vec<_>, _>>()?;
            *cache = Some(LogitsCache { rows: x.rows.clone(), logits: groups.clone() });
            (groups, 2)
        }
    };
    let width = (0..x.rows.len()).map(|b| x.rows[b].len() - x.window_start(b)).max().unwrap_or(0);
    let mut confidence = vec![f32::NEG_INFINITY; x.rows.len() * width];
    let mut rows = x.rows.clone();
    // The masked positions of the window of each group's rows: (row, position).
    let masked_of = |members: &[usize]| -> Vec<(usize, usize)> {
        members
            .iter()
            .flat_map(|&b| {
                (x.window_start(b)..x.rows[b].len()).filter(move |&p| x.rows[b][p] == mask).map(move |p| (b, p))
            })
            .collect()
    };
    for group in &groups {
        let masked = masked_of(&group.members);
        let drawn = match &group.logits {
            KeptLogits::Host(logits) => {
                let len = group.members.first().map_or(0, |&b| x.rows[b].len());
                masked
                    .iter()
                    .map(|&(b, p)| {
                        let slot = slot_of(&group.members, b);
                        let at = (slot * len + p) * vocab;
                        let scores = logits.get(at..at + vocab).unwrap_or_default();
                        candidate(scores, temperature, |v| noise.uniform(b, p * vocab + v as usize))
                    })
                    .collect()
            }
            KeptLogits::Device(logits) => {
                candidates_on_device(logits, &group.members, &masked, x, mask, vocab, temperature, noise)?
            }
        };
        for (&(b, p), (token, probability)) in masked.iter().zip(drawn) {
            rows[b][p] = token;
            confidence[b * width + (p - x.window_start(b))] = probability as f32;
        }
    }
    let candidates = TokenSeq { rows, prompt: x.prompt, window: x.window, proposal: None, tentative: 0 };
    Ok((candidates, Tensor::new(vec![x.rows.len(), width], confidence), calls))
}

/// The candidate at a masked position from its logits (a masked model's, whose mask token is
/// -inf at a masked position): the argmax at temperature 0, else a Gumbel-max draw from the logits divided by the temperature; and its
/// probability under the softmax of the logits.
fn candidate(scores: &[f32], temperature: f64, uniform: impl Fn(u32) -> f64) -> (u32, f64) {
    let token = if temperature == 0.0 {
        kernels::argmax(scores)
    } else {
        let scaled: Vec<f32> = scores.iter().map(|&s| (f64::from(s) / temperature) as f32).collect();
        kernels::gumbel_argmax(&scaled, uniform)
    };
    (token, kernels::softmax(scores).get(token as usize).copied().unwrap_or(0.0))
}

/// The sampling kernel that computes [`candidate`] from a gathered row: greedy at temperature 0,
/// else Gumbel-max of the logits divided by the temperature, reporting the raw probability.
pub(super) fn candidate_kernel(temperature: f64) -> SampleKernel {
    let (logits, choose) =
        if temperature == 0.0 { (Logits::Raw, Choose::Greedy) } else { (Logits::Divided, Choose::Gumbel) };
    SampleKernel { logits, choose, report: Report::RawProbability }
}

/// The candidates of the masked positions `masked` (row, position) of a group of rows whose
/// logits are on a device: their rows gathered with the mask token's logit blocked, and a
/// sampling kernel that computes [`candidate`] for each, so only tokens and probabilities come
/// back.
#[allow(clippy::too_many_arguments, reason = "the operands of one group's draws")]
fn candidates_on_device(
    logits: &DeviceTensor,
    members: &[usize],
    masked: &[(usize, usize)],
    x: &TokenSeq,
    mask: u32,
    vocab: usize,
    temperature: f64,
    noise: Noise,
) -> Result<Vec<(u32, f64)>, SequenceError> {
    if masked.is_empty() {
        return Ok(Vec::new());
    }
    let device = logits.device();
    let len = members.first().map_or(0, |&b| x.rows[b].len());
    let backend = |e: DeviceError| SequenceError::Invalid(format!("drawing candidates on the device: {e}"));
    let indices: Vec<u32> = masked.iter().map(|&(b, p)| (slot_of(members, b) * len + p) as u32).collect();
    let gathered = DeviceTensor::alloc(device, vec![masked.len(), vocab]).map_err(backend)?;
    device
        .execute(&DeviceOp::Gather {
            src: logits.buffer(),
            indices: indices.as_slice().into(),
            width: vocab,
            blocked: Some(mask),
            out: gathered.buffer(),
        })
        .map_err(backend)?;
    let kernel = candidate_kernel(temperature);
    let samples: Vec<u32> = masked.iter().map(|&(b, _)| b as u32).collect();
    let positions: Vec<u32> = masked.iter().map(|&(_, p)| p as u32).collect();
    let launch = SampleLaunch {
        logits: gathered.buffer(),
        rows: masked.len(),
        vocab,
        params: SampleParams { temperature, top_k: 0, top_p: 1.0, min_p: 0.0 },
        noise_sample: &samples,
        noise_position: &positions,
        seed: noise.seed,
        site: noise.site,
        step: noise.step,
    };
    let sampled = device.sample_rows(&kernel, &launch).map_err(backend)?;
    Ok(sampled.tokens.into_iter().zip(sampled.report).collect())
}

/// The guided logits of a group of rows from its conditional and unconditional calls' logits
/// (the same rows, the same lengths), where the calls left them: on the host, or on the device
/// by the guidance kernel.
fn guided_group(cond: RowGroup, un: RowGroup, scale: f64) -> Result<RowGroup, SequenceError> {
    let logits = match (cond.logits, un.logits) {
        (KeptLogits::Host(cond), KeptLogits::Host(un)) => {
            KeptLogits::Host(cond.iter().zip(&un).map(|(&c, &u)| kernels::guided_logit(u, c, scale)).collect())
        }
        (KeptLogits::Device(cond), KeptLogits::Device(un)) => {
            let device = cond.device();
            let backend = |e: DeviceError| SequenceError::Invalid(format!("guiding logits on the device: {e}"));
            let guided = DeviceTensor::alloc(device, cond.shape.clone()).map_err(backend)?;
            device
                .execute(&DeviceOp::GuideLogits {
                    un: un.buffer(),
                    cond: cond.buffer(),
                    scale,
                    len: cond.len(),
                    out: guided.buffer(),
                })
                .map_err(backend)?;
            KeptLogits::Device(Arc::new(guided))
        }
        _ => {
            return Err(SequenceError::Invalid(
                "the two calls of guidance left their logits in different places".into(),
            ));
        }
    };
    Ok(RowGroup { members: cond.members, logits })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelError, TokenRows, Vocab};

    /// A masked model over 3 tokens (2 is the mask) that records the rows it is called with and
    /// prefers token 0 when position 0 holds token 1, token 1 otherwise.
    struct Recording {
        vocab: Vocab,
        calls: std::sync::Mutex<Vec<Vec<u32>>>,
    }

    impl TokenModel for Recording {
        fn vocab(&self) -> &Vocab {
            &self.vocab
        }

        fn causal_logits(&self, _rows: TokenRows<'_>, _from: usize) -> Result<Vec<f32>, ModelError> {
            Err(ModelError::Backend { model: "recording".into(), message: "masked only".into() })
        }

        fn masked_logits(&self, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
            let mut out = Vec::new();
            for b in 0..rows.batch {
                let row = rows.row(b);
                if let Ok(mut calls) = self.calls.lock() {
                    calls.push(row.to_vec());
                }
                let prefers = if row.first() == Some(&1) { 0 } else { 1 };
                for _ in 0..rows.len {
                    out.extend((0..3).map(|v| {
                        if v == prefers {
                            1.0
                        } else if v == 2 {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    }));
                }
            }
            Ok(out)
        }

        fn heads(&self) -> usize {
            0
        }

        fn head_logits(&self, _rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
            Err(ModelError::Backend { model: "recording".into(), message: "masked only".into() })
        }
    }

    #[test]
    fn guided_candidates_mask_the_prompt_in_the_second_call() {
        let model = Recording {
            vocab: Vocab { size: 3, mask: Some(2), eos: None, words: None },
            calls: std::sync::Mutex::new(Vec::new()),
        };
        let x = TokenSeq { rows: vec![vec![1, 2]], prompt: 1, window: None, proposal: None, tentative: 0 };
        let specials = Specials::of(&model.vocab);
        let noise = Noise { seed: 0, site: 0, step: 0 };
        let mut cache = None;
        let (chosen, confidence, calls) =
            candidates(&model, &x, 0.0, 1.0, specials, noise, &mut cache).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(calls, 2);
        let seen = model.calls.lock().map(|c| c.clone()).unwrap_or_default();
        assert_eq!(seen, vec![vec![1, 2], vec![2, 2]], "the second call has the prompt masked");
        // Conditional logits (1, 0), unconditional (0, 1): guided 0 + 2 (1 - 0) = 2 and 1 + 2 (0 - 1) = -1.
        assert_eq!(chosen.rows, vec![vec![1, 0]]);
        let expected = 1.0 / (1.0 + (-3.0f64).exp());
        assert!((f64::from(confidence.data[1]) - expected).abs() < 1e-6, "{:?}", confidence.data);
        // The same input again reuses the logits: no call.
        let (_, _, calls) =
            candidates(&model, &x, 0.0, 1.0, specials, noise, &mut cache).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(calls, 0);
    }
}
