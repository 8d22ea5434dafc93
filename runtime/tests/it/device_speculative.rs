//! Speculative decoding's `propose` and `verify`, and `extend ... with heads()`
//! (runtime/src/sequence/), with the logits on a device against the same logits on the host:
//! drafts drawn by the sampling kernel with their logits kept on the device, greedy verification
//! by the device's argmaxes, and sampling verification by `Device::verify_drafts`, on the
//! emulated device. The models here give the same logits on the host and on the device, so every
//! token must be the host's, bit for bit.

use std::sync::Arc;

use sched_compiler::ir::SamplerKind;
use sched_kernels::philox;
use sched_kernels::tokens::{Nucleus, Sampler};
use sched_runtime::device::counted::Counted;
use sched_runtime::device::emulated::EmulatedDevice;
use sched_runtime::device::{Device, DeviceTensor};
use sched_runtime::model::ModelError;
use sched_runtime::model::draw::{Choice, Draw, Noise};
use sched_runtime::model::{DeviceTokenModel, KeptLogits, OnDevice, TokenModel, TokenRows, Vocab};
use sched_runtime::sequence::{self, Proposal, Specials, TokenSeq};

/// The end token of the scripted models.
const EOS: u32 = 6;

/// A causal model with three heads over 7 tokens whose logits are a hash of the prefix (and the
/// head), some of them -inf; `salt` makes another model. On a device it uploads the host's
/// logits, so both places hold the same numbers.
struct Scripted {
    vocab: Vocab,
    salt: u64,
}

impl Scripted {
    fn new(salt: u64) -> Scripted {
        Scripted { vocab: Vocab { size: 7, mask: None, eos: Some(EOS), words: None }, salt }
    }

    fn logits_after(&self, prefix: &[u32], head: usize, out: &mut Vec<f32>) {
        let word = prefix
            .iter()
            .fold(self.salt ^ ((head as u64) << 40), |h, &t| h.wrapping_mul(31).wrapping_add(u64::from(t) + 1));
        for v in 0..self.vocab.size as u32 {
            let u = philox::uniform_f64(word, 1, 2, v, prefix.len() as u32);
            // One entry in eight is ruled out; the others spread over [-2, 2].
            out.push(if u < 0.125 { f32::NEG_INFINITY } else { (4.0 * u - 2.0) as f32 });
        }
    }
}

fn unsupported() -> ModelError {
    ModelError::Backend { model: "scripted".into(), message: "causal only".into() }
}

impl TokenModel for Scripted {
    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn causal_logits(&self, rows: TokenRows<'_>, from: usize) -> Result<Vec<f32>, ModelError> {
        let mut out = Vec::new();
        for b in 0..rows.batch {
            for j in from..=rows.len {
                self.logits_after(&rows.row(b)[..j], 0, &mut out);
            }
        }
        Ok(out)
    }

    fn masked_logits(&self, _rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        Err(unsupported())
    }

    fn heads(&self) -> usize {
        3
    }

    fn head_logits(&self, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        let mut out = Vec::new();
        for b in 0..rows.batch {
            for head in 0..3 {
                self.logits_after(rows.row(b), head, &mut out);
            }
        }
        Ok(out)
    }

    fn on_device(&self) -> Option<&dyn DeviceTokenModel> {
        Some(self)
    }
}

/// The host's logits uploaded to `device` (no rows stay on the host, empty).
fn uploaded(device: &Arc<dyn Device>, logits: Vec<f32>, vocab: usize) -> Result<KeptLogits, ModelError> {
    if logits.is_empty() {
        return Ok(KeptLogits::Host(logits));
    }
    let shape = vec![logits.len() / vocab, vocab];
    let tensor = DeviceTensor::upload(device, &logits, shape)
        .map_err(|e| ModelError::Backend { model: "scripted".into(), message: e.to_string() })?;
    Ok(KeptLogits::Device(Arc::new(tensor)))
}

impl DeviceTokenModel for Scripted {
    fn causal_logits_on(&self, _: &Arc<dyn Device>, rows: TokenRows<'_>, from: usize) -> Result<Vec<f32>, ModelError> {
        self.causal_logits(rows, from)
    }

    fn masked_logits_on(&self, _: &Arc<dyn Device>, _rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        Err(unsupported())
    }

    fn head_logits_on(&self, _: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<Vec<f32>, ModelError> {
        self.head_logits(rows)
    }

    fn masked_logits_kept_on(&self, _: &Arc<dyn Device>, _rows: TokenRows<'_>) -> Result<KeptLogits, ModelError> {
        Err(unsupported())
    }

    fn causal_logits_kept_on(
        &self,
        device: &Arc<dyn Device>,
        rows: TokenRows<'_>,
        from: usize,
    ) -> Result<KeptLogits, ModelError> {
        uploaded(device, self.causal_logits(rows, from)?, self.vocab.size)
    }

    fn head_logits_kept_on(&self, device: &Arc<dyn Device>, rows: TokenRows<'_>) -> Result<KeptLogits, ModelError> {
        uploaded(device, self.head_logits(rows)?, self.vocab.size)
    }

    fn draw_next_on(&self, _: &Arc<dyn Device>, rows: TokenRows<'_>, draw: &Draw<'_>) -> Result<Vec<u32>, ModelError> {
        self.draw_next(rows, draw)
    }
}

/// Rows of different lengths (so the calls come in groups), one of them ended.
fn sequence() -> TokenSeq {
    let rows = vec![vec![2, 3], vec![1, 4, 5], vec![2], vec![4, 4, 0], vec![3, EOS], vec![5, 1], vec![0, 2, 3], vec![]];
    TokenSeq { rows, prompt: 0, window: None, proposal: None, tentative: 0 }
}

fn sampler(temperature: f64, top_k: usize, top_p: f64, min_p: f64) -> Choice {
    Choice::Sample(Sampler { temperature, top_k, top_p, min_p, nucleus: Nucleus::KeepCrossing })
}

#[test]
fn drafts_and_verification_on_a_device_give_the_hosts_tokens() {
    let counted = Arc::new(Counted::new(Arc::new(EmulatedDevice::new())));
    let device: Arc<dyn Device> = counted.clone();
    let (draft_model, target_model) = (&Scripted::new(1), &Scripted::new(2));
    let draft_device = OnDevice { model: draft_model, device: &device, network: draft_model };
    let target_device = OnDevice { model: target_model, device: &device, network: target_model };
    let specials = Specials::of(&target_model.vocab);
    let seq = sequence();
    let choices = [Choice::Greedy, sampler(1.0, 0, 1.0, 0.0), sampler(0.7, 3, 1.0, 0.0), sampler(1.3, 0, 0.8, 0.1)];
    let (mut whole, mut cut) = (0, 0);
    for (case, (kind, draw_choice)) in [SamplerKind::Sample, SamplerKind::Heads]
        .into_iter()
        .flat_map(|kind| choices.iter().map(move |&choice| (kind, choice)))
        .enumerate()
    {
        let noise = Noise { seed: 40 + case as u64, site: 3, step: 1 };
        let (host_draft, calls) = sequence::propose(draft_model, &seq, 3, kind, draw_choice, noise).expect("drafts");
        let (device_draft, device_calls) =
            sequence::propose(&draft_device, &seq, 3, kind, draw_choice, noise).expect("drafts on the device");
        assert_eq!(device_draft.rows, host_draft.rows, "case {case}: the device drafts other tokens");
        assert_eq!(device_calls, calls);
        assert!(matches!(device_draft.proposal, Some(Proposal::Device { .. })), "case {case}");
        for verify_choice in choices {
            let what = format!("case {case} ({kind:?}, {draw_choice:?}), verified by {verify_choice:?}");
            let verify = |model: &dyn TokenModel, draft: &TokenSeq| {
                sequence::verify(model, &seq, draft, verify_choice, specials, noise).expect("verifies").0
            };
            let expected = verify(target_model, &host_draft);
            let before = counted.download_calls();
            let on_device = verify(&target_device, &device_draft);
            assert_eq!(on_device.rows, expected.rows, "{what}");
            // Greedy verification brings back argmaxes, sampling verification only the tokens: no
            // logits come back.
            assert_eq!(counted.download_calls(), before, "{what}: logits came back to the host");
            // A draft drawn on the host verified on the device (its distributions are on the host,
            // so the logits come back), and one drawn on the device verified on the host.
            assert_eq!(verify(&target_device, &host_draft).rows, expected.rows, "{what}");
            assert_eq!(verify(target_model, &device_draft).rows, expected.rows, "{what}");
            for (b, row) in expected.rows.iter().enumerate() {
                let appended = row.len() - seq.rows[b].len();
                if appended == 4 {
                    whole += 1;
                } else if appended > 0 && row.last() != Some(&EOS) {
                    cut += 1;
                }
            }
        }
    }
    // The cases accept whole drafts and reject some.
    assert!(whole > 0 && cut > 0, "{whole} whole drafts accepted, {cut} cut");
    assert_eq!(device.live_buffers(), 0, "every device buffer was freed");
}

/// `extend ... with heads()` on a device draws every head's token there: the host's tokens, with
/// ended rows padded by the end token, and no logits brought back.
#[test]
fn extending_from_heads_on_a_device_gives_the_hosts_tokens() {
    let counted = Arc::new(Counted::new(Arc::new(EmulatedDevice::new())));
    let device: Arc<dyn Device> = counted.clone();
    let model = &Scripted::new(3);
    let on_device = OnDevice { model, device: &device, network: model };
    let specials = Specials::of(&model.vocab);
    let seq = sequence();
    for (case, choice) in [Choice::Greedy, sampler(1.0, 0, 1.0, 0.0), sampler(0.6, 2, 0.9, 0.0)].into_iter().enumerate()
    {
        let noise = Noise { seed: 7 + case as u64, site: 0, step: 2 };
        let extend = |model: &dyn TokenModel| {
            sequence::extend(model, &seq, 3, SamplerKind::Heads, choice, specials, noise).expect("extends")
        };
        let (expected, calls) = extend(model);
        let before = counted.download_calls();
        let (extended, device_calls) = extend(&on_device);
        assert_eq!(counted.download_calls(), before, "case {case}: logits came back to the host");
        assert_eq!((extended.rows.clone(), device_calls), (expected.rows.clone(), calls), "case {case}");
        assert_eq!(extended.rows[4], vec![3, EOS, EOS, EOS, EOS], "the ended row is padded");
    }
    assert_eq!(device.live_buffers(), 0, "every device buffer was freed");
}
