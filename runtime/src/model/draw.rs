//! How a token is drawn from a model's logits: the sampler a schedule chose ([`Choice`]), the
//! random numbers it draws with ([`Noise`]), and both for the rows of one model call ([`Draw`]).
//! The token contract takes a [`Draw`] ([`super::token::TokenModel::draw_next`]), so a model
//! evaluated on a device can draw there; the token operations use the same types on the host.

use std::borrow::Cow;

use sched_compiler::ir::SamplerKind;
use sched_kernels::cuda_tokens::{Choose, Filters, Logits, Report, SampleKernel, SampleParams};
use sched_kernels::philox;
use sched_kernels::tokens::{self as kernels, Nucleus, Sampler};

/// A sampler whose arguments are out of their domain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSampler(pub String);

/// What a sampler does, with its arguments as the schedule computed them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Choice {
    Greedy,
    Sample(Sampler),
}

impl Choice {
    /// The choice of a sampler of kind `kind` with host arguments `args` (in the order of
    /// [`SamplerKind`]).
    pub fn new(kind: SamplerKind, args: &[f64]) -> Result<Choice, InvalidSampler> {
        let arg = |i: usize| args.get(i).copied().unwrap_or(f64::NAN);
        let sampler = match kind {
            SamplerKind::Greedy => return Ok(Choice::Greedy),
            SamplerKind::Sample => Sampler {
                temperature: arg(0),
                top_k: usize::try_from(arg(1) as i64)
                    .map_err(|_| InvalidSampler(format!("sample(top_k = {}): top_k cannot be negative", arg(1))))?,
                top_p: arg(2),
                min_p: arg(3),
                nucleus: Nucleus::KeepCrossing,
            },
            SamplerKind::Heads => Sampler { temperature: arg(0), ..Sampler::plain() },
        };
        if !(sampler.temperature > 0.0 && sampler.temperature.is_finite()) {
            return Err(InvalidSampler(format!(
                "sampling temperature {} must be a positive number (use `greedy` for temperature 0)",
                sampler.temperature
            )));
        }
        if !(0.0..=1.0).contains(&sampler.top_p) || !(0.0..=1.0).contains(&sampler.min_p) {
            return Err(InvalidSampler(format!(
                "top_p = {} and min_p = {} must be in [0, 1]",
                sampler.top_p, sampler.min_p
            )));
        }
        Ok(Choice::Sample(sampler))
    }

    /// The logits this choice draws from: filtered by the sampler's processors, or as they are
    /// for greedy.
    pub(crate) fn process<'l>(&self, logits: &'l [f32]) -> Cow<'l, [f32]> {
        match self {
            Choice::Greedy => Cow::Borrowed(logits),
            Choice::Sample(sampler) => {
                let mut processed = logits.to_vec();
                kernels::process_logits(&mut processed, sampler);
                Cow::Owned(processed)
            }
        }
    }

    /// The distribution of processed logits: their softmax, or a point mass on the argmax for
    /// greedy.
    pub(crate) fn probabilities(&self, processed: &[f32]) -> Vec<f64> {
        match self {
            Choice::Greedy => {
                let mut point = vec![0.0; processed.len()];
                if let Some(p) = point.get_mut(kernels::argmax(processed) as usize) {
                    *p = 1.0;
                }
                point
            }
            Choice::Sample(_) => kernels::softmax(processed),
        }
    }

    /// One token from processed logits; `uniform(v)` is the noise of vocabulary entry `v`.
    pub(crate) fn pick_processed(&self, processed: &[f32], uniform: impl Fn(u32) -> f64) -> u32 {
        match self {
            Choice::Greedy => kernels::argmax(processed),
            Choice::Sample(_) => kernels::gumbel_argmax(processed, uniform),
        }
    }

    /// The distribution this choice draws from, given raw logits.
    pub(crate) fn distribution(&self, logits: &[f32]) -> Vec<f64> {
        self.probabilities(&self.process(logits))
    }

    /// The sampling kernel that draws this choice's token from raw logits, and its parameters:
    /// [`SampleKernel::sample_row`] of them is [`Choice::pick`]'s token.
    pub fn sample_kernel(&self) -> (SampleKernel, SampleParams) {
        match self {
            Choice::Greedy => (
                SampleKernel { logits: Logits::Raw, choose: Choose::Greedy, report: Report::Token },
                SampleParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0 },
            ),
            Choice::Sample(sampler) => (
                SampleKernel {
                    logits: Logits::Processed(Filters::of(sampler)),
                    choose: Choose::Gumbel,
                    report: Report::Token,
                },
                SampleParams {
                    temperature: sampler.temperature,
                    top_k: sampler.top_k as u64,
                    top_p: sampler.top_p,
                    min_p: sampler.min_p,
                },
            ),
        }
    }

    /// One token from raw logits.
    pub fn pick(&self, logits: &[f32], uniform: impl Fn(u32) -> f64) -> u32 {
        self.pick_processed(&self.process(logits), uniform)
    }

    /// One token from raw logits and the distribution it was drawn from, processing them once.
    pub(crate) fn draw(&self, logits: &[f32], uniform: impl Fn(u32) -> f64) -> (u32, Vec<f64>) {
        let processed = self.process(logits);
        (self.pick_processed(&processed, uniform), self.probabilities(&processed))
    }
}

/// Where an operation's random numbers come from: `uniform(row, index)`.
#[derive(Clone, Copy, Debug)]
pub struct Noise {
    pub seed: u64,
    pub site: u32,
    pub step: u32,
}

impl Noise {
    pub fn uniform(&self, row: usize, index: usize) -> f64 {
        philox::uniform_f64(self.seed, self.site, self.step, row as u32, index as u32)
    }
}

/// How a token is drawn for each row of a model call: by `choice`, row `r` drawing vocabulary
/// entry `v` with `noise.uniform(samples[r], position * vocab + v)`.
#[derive(Clone, Copy, Debug)]
pub struct Draw<'a> {
    pub choice: Choice,
    pub noise: Noise,
    /// The noise's sample word of each row: the row's index in the whole sequence batch.
    pub samples: &'a [u32],
    pub position: u32,
}

impl Draw<'_> {
    /// The token of each row when rows share logits: row `r` draws from row `shared[r]` of
    /// `logits` (`vocab` per row), which is processed once for every row that draws from it. The
    /// tokens are those of [`Draw::pick_rows`] on the rows' own copies of the logits.
    pub fn pick_rows_shared(&self, logits: &[f32], vocab: usize, shared: &[usize]) -> Vec<u32> {
        let processed: Vec<Cow<'_, [f32]>> =
            logits.chunks_exact(vocab.max(1)).map(|row| self.choice.process(row)).collect();
        let base = self.position.wrapping_mul(vocab as u32);
        self.samples
            .iter()
            .zip(shared)
            .map(|(&sample, &row)| {
                let uniform = |v: u32| self.noise.uniform(sample as usize, base.wrapping_add(v) as usize);
                match processed.get(row) {
                    Some(scores) => self.choice.pick_processed(scores, uniform),
                    None => 0,
                }
            })
            .collect()
    }

    /// The token of each row, drawn on the host from `logits` (`vocab` per row).
    pub fn pick_rows(&self, logits: &[f32], vocab: usize) -> Vec<u32> {
        self.samples
            .iter()
            .zip(logits.chunks_exact(vocab.max(1)))
            .map(|(&sample, row)| {
                let base = self.position.wrapping_mul(vocab as u32);
                self.choice.pick(row, |v| self.noise.uniform(sample as usize, base.wrapping_add(v) as usize))
            })
            .collect()
    }
}
