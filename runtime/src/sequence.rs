//! Token sequences at run time: the value the IR's `tokens` type holds and the execution of every
//! [`TokenOp`](sched_compiler::ir::TokenOp) against a [`TokenModel`].
//!
//! Rows may have different lengths (speculative decoding accepts a different number of draft
//! tokens per row); a model call groups the rows of equal length into one batch, and counts as one
//! evaluation in all. Random numbers come from sched's Philox stream: an operation at noise site
//! `site`, running for the `step`-th time, draws `uniform_f64(seed, site, step, row, index)` with
//! the indices given on each function, so both engines and any batch size draw the same numbers
//! for the same row.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::Arc;

use sched_compiler::ir::{Remask, SamplerKind, TokenOp};
use sched_kernels::cuda_tokens::{self as kernels_cuda, Choose, Filters, Logits, Report, SampleKernel, SampleParams};
use sched_kernels::layers;
use sched_kernels::philox;
use sched_kernels::tokens::{self as kernels, Nucleus, Sampler};

use crate::device::{DeviceError, DeviceTensor, RowMoves, SampleLaunch, VerifyLaunch, reporting_distribution};
use crate::model::ModelError;
use crate::tensor::Tensor;
use crate::tokens::{KeptLogits, TokenModel, TokenRows, Vocab};

/// A batch of token rows, with the window an unmasking step refines and, for a draft, the
/// distribution each of its tokens was drawn from.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenSeq {
    pub rows: Vec<Vec<u32>>,
    /// How many leading positions of every row came from the prompt.
    pub prompt: usize,
    /// The number of last positions a step refines; the whole row when `None`.
    pub window: Option<usize>,
    /// For a draft: what its tokens were drawn from.
    pub proposal: Option<Proposal>,
}

/// A failure of a token operation.
#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Invalid(String),
}

/// What a sampler does, with its arguments as the schedule computed them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Choice {
    Greedy,
    Sample(Sampler),
}

impl Choice {
    /// The choice of a sampler of kind `kind` with host arguments `args` (in the order of
    /// [`SamplerKind`]).
    pub fn new(kind: SamplerKind, args: &[f64]) -> Result<Choice, SequenceError> {
        let arg = |i: usize| args.get(i).copied().unwrap_or(f64::NAN);
        let sampler = match kind {
            SamplerKind::Greedy => return Ok(Choice::Greedy),
            SamplerKind::Sample => Sampler {
                temperature: arg(0),
                top_k: usize::try_from(arg(1) as i64).map_err(|_| {
                    SequenceError::Invalid(format!("sample(top_k = {}): top_k cannot be negative", arg(1)))
                })?,
                top_p: arg(2),
                min_p: arg(3),
                nucleus: Nucleus::KeepCrossing,
            },
            SamplerKind::Heads => Sampler { temperature: arg(0), ..Sampler::plain() },
        };
        if !(sampler.temperature > 0.0 && sampler.temperature.is_finite()) {
            return Err(SequenceError::Invalid(format!(
                "sampling temperature {} must be a positive number (use `greedy` for temperature 0)",
                sampler.temperature
            )));
        }
        if !(0.0..=1.0).contains(&sampler.top_p) || !(0.0..=1.0).contains(&sampler.min_p) {
            return Err(SequenceError::Invalid(format!(
                "top_p = {} and min_p = {} must be in [0, 1]",
                sampler.top_p, sampler.min_p
            )));
        }
        Ok(Choice::Sample(sampler))
    }

    /// The logits this choice draws from: filtered by the sampler's processors, or as they are
    /// for greedy.
    fn process<'l>(&self, logits: &'l [f32]) -> Cow<'l, [f32]> {
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
    fn probabilities(&self, processed: &[f32]) -> Vec<f64> {
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
    fn pick_processed(&self, processed: &[f32], uniform: impl Fn(u32) -> f64) -> u32 {
        match self {
            Choice::Greedy => kernels::argmax(processed),
            Choice::Sample(_) => kernels::gumbel_argmax(processed, uniform),
        }
    }

    /// The distribution this choice draws from, given raw logits.
    fn distribution(&self, logits: &[f32]) -> Vec<f64> {
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
    fn draw(&self, logits: &[f32], uniform: impl Fn(u32) -> f64) -> (u32, Vec<f64>) {
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

/// The run's vocabulary facts a token operation needs.
#[derive(Clone, Copy, Debug)]
pub struct Specials {
    pub mask: Option<u32>,
    pub eos: Option<u32>,
}

impl Specials {
    pub fn of(vocab: &Vocab) -> Specials {
        Specials { mask: vocab.mask, eos: vocab.eos }
    }

    fn has_ended(&self, row: &[u32]) -> bool {
        self.eos.is_some_and(|eos| row.contains(&eos))
    }
}

impl TokenSeq {
    /// Rows of the prompt, one per sample.
    pub fn prompt(prompt: &[u32], batch: usize) -> TokenSeq {
        TokenSeq { rows: vec![prompt.to_vec(); batch], prompt: prompt.len(), window: None, proposal: None }
    }

    /// New rows after the same prompt, refined whole.
    fn with_rows(&self, rows: Vec<Vec<u32>>) -> TokenSeq {
        TokenSeq { rows, prompt: self.prompt, window: None, proposal: None }
    }

    /// Whether every row has produced the end token (never, for a vocabulary without one).
    pub fn ended(&self, specials: Specials) -> bool {
        specials.eos.is_some() && self.rows.iter().all(|row| specials.has_ended(row))
    }

    /// The length of the shortest row still generating, or of the longest row when all ended.
    pub fn length(&self, specials: Specials) -> i64 {
        let open = self.rows.iter().filter(|row| !specials.has_ended(row)).map(Vec::len).min();
        let length = open.or_else(|| self.rows.iter().map(Vec::len).max()).unwrap_or(0);
        length as i64
    }

    /// The first position of the window of row `b`.
    fn window_start(&self, b: usize) -> usize {
        let len = self.rows[b].len();
        self.window.map_or(0, |w| len.saturating_sub(w))
    }

    /// The last `count` positions as the window.
    pub fn tail(&self, count: i64) -> Result<TokenSeq, SequenceError> {
        let count = usize::try_from(count)
            .map_err(|_| SequenceError::Invalid(format!("`.tail({count})`: the count cannot be negative")))?;
        Ok(TokenSeq { window: Some(count), ..self.clone() })
    }

    /// The sequence with its window reset to the whole rows.
    pub fn whole(&self) -> TokenSeq {
        TokenSeq { window: None, proposal: None, ..self.clone() }
    }

    /// The sequence extended by `count` mask tokens.
    pub fn extend_mask(&self, count: i64, specials: Specials) -> Result<TokenSeq, SequenceError> {
        let count = non_negative(count, "extend")?;
        let mask = specials.mask.ok_or_else(|| {
            SequenceError::Invalid("`extend ... as mask` needs a masked model (no bound model has a mask token)".into())
        })?;
        if longest(&self.rows) + count > MAX_ROW_LEN {
            return Err(SequenceError::Invalid(format!(
                "`extend` by {count}: rows are limited to {MAX_ROW_LEN} positions"
            )));
        }
        let rows = self.rows.iter().map(|row| row.iter().copied().chain(std::iter::repeat_n(mask, count)).collect());
        Ok(self.with_rows(rows.collect()))
    }
}

/// The most positions a row may have: longer rows are refused rather than allocated.
pub const MAX_ROW_LEN: usize = 1 << 20;

/// A count of new positions: not negative, and not making a row longer than [`MAX_ROW_LEN`].
fn non_negative(count: i64, what: &str) -> Result<usize, SequenceError> {
    let count = usize::try_from(count)
        .map_err(|_| SequenceError::Invalid(format!("`{what}` by {count}: the count is negative")))?;
    if count > MAX_ROW_LEN {
        return Err(SequenceError::Invalid(format!(
            "`{what}` by {count}: rows are limited to {MAX_ROW_LEN} positions"
        )));
    }
    Ok(count)
}

/// Checks that `positions` positions of `vocab` entries each have distinct noise indices
/// (`position · vocab + entry` must fit in the 32 bits of the Philox counter word).
fn noise_room(positions: usize, vocab: usize) -> Result<(), SequenceError> {
    match positions.checked_mul(vocab) {
        // The indices are 0 .. positions · vocab, so the last one is positions · vocab - 1.
        Some(indices) if indices <= u32::MAX as usize + 1 => Ok(()),
        _ => Err(SequenceError::Invalid(format!(
            "{positions} positions of a {vocab}-token vocabulary need more than 2^32 noise indices"
        ))),
    }
}

/// The length of the longest row.
fn longest(rows: &[Vec<u32>]) -> usize {
    rows.iter().map(Vec::len).max().unwrap_or(0)
}

/// Evaluates `call` once per group of rows with the same `key` (rows of one key have one length):
/// the rows of a group, in increasing order, form one batch. Returns each group's members and what
/// its call returned.
fn each_group<K: Copy + Ord, T>(
    rows: &[&[u32]],
    key: impl Fn(usize) -> K,
    call: impl Fn(K, TokenRows<'_>, &[usize]) -> Result<T, ModelError>,
) -> Result<Vec<(K, Vec<usize>, T)>, SequenceError> {
    let keys: Vec<K> = (0..rows.len()).map(&key).collect();
    let mut groups = keys.clone();
    groups.sort_unstable();
    groups.dedup();
    groups
        .into_iter()
        .map(|group| {
            let members: Vec<usize> = (0..rows.len()).filter(|&b| keys[b] == group).collect();
            let len = members.first().map_or(0, |&b| rows[b].len());
            let ids: Vec<u32> = members.iter().flat_map(|&b| rows[b].iter().copied()).collect();
            let result = call(group, TokenRows { ids: &ids, batch: members.len(), len }, &members)?;
            Ok((group, members, result))
        })
        .collect()
}

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
            match specials.eos.filter(|_| specials.has_ended(&seq.rows[b])) {
                Some(eos) => row.extend(std::iter::repeat_n(eos, count)),
                None => row.extend(drawn),
            }
        }
        return Ok((seq.with_rows(rows), calls));
    }
    for j in 0..count {
        let open: Vec<usize> = (0..rows.len()).filter(|&b| !specials.has_ended(&rows[b])).collect();
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

/// The input and output of a site's last masked-model call.
#[derive(Clone, Debug)]
pub struct LogitsCache {
    rows: Vec<Vec<u32>>,
    logits: Vec<RowGroup>,
}

/// The logits of one group of rows of equal length (one model call): the rows' indices in the
/// batch, and `[rows × len, vocab]` logits on the host or on the device that computed them.
#[derive(Clone, Debug)]
struct RowGroup {
    members: Vec<usize>,
    logits: KeptLogits,
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
    let candidates = TokenSeq { rows, prompt: x.prompt, window: x.window, proposal: None };
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
fn candidate_kernel(temperature: f64) -> SampleKernel {
    let (logits, choose) =
        if temperature == 0.0 { (Logits::Raw, Choose::Greedy) } else { (Logits::Divided, Choose::Gumbel) };
    SampleKernel { logits, choose, report: Report::RawProbability }
}

/// A CUDA module that a token operation launches where its model runs on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceModule {
    /// What the operation launches it for.
    pub role: String,
    pub source: String,
}

/// The CUDA modules `op` launches where its model runs on a device (for
/// `sched build --emit cuda`). Where the module depends on a run-time argument, each variant is
/// listed: a candidate temperature of 0 or not, guidance or not; a sampler's filters are those
/// its arguments turn on, so for `sample(...)` the module with every filter stands for the one a
/// run compiles.
pub fn device_modules(op: TokenOp) -> Vec<DeviceModule> {
    let module = |role: &str, source: String| DeviceModule { role: role.into(), source };
    let every_filter = Sampler { top_k: 1, top_p: 0.5, min_p: 0.5, ..Sampler::plain() };
    let sampling = |kind: SamplerKind| match kind {
        SamplerKind::Greedy => Choice::Greedy.sample_kernel().0,
        SamplerKind::Sample => Choice::Sample(every_filter).sample_kernel().0,
        SamplerKind::Heads => Choice::Sample(Sampler::plain()).sample_kernel().0,
    };
    let draws = |kind: SamplerKind| match kind {
        SamplerKind::Sample => "draws the tokens (the filters its arguments turn on; here every one)",
        SamplerKind::Greedy | SamplerKind::Heads => "draws the tokens",
    };
    match op {
        TokenOp::Extend(kind) => vec![module(draws(kind), kernels_cuda::sample_source(&sampling(kind)))],
        TokenOp::Propose(kind) => vec![
            module(draws(kind), kernels_cuda::sample_source(&sampling(kind))),
            module("keeps the draft's logits for the verification", layers::move_rows_source().to_string()),
        ],
        TokenOp::Verify(SamplerKind::Greedy) => {
            vec![module(
                "draws the model's argmax at each draft position",
                kernels_cuda::sample_source(&sampling(SamplerKind::Greedy)),
            )]
        }
        TokenOp::Verify(kind) => vec![
            module(
                "writes the model's distribution and token at each draft position (and the draft's distribution, with the draft's sampler)",
                kernels_cuda::sample_source(&reporting_distribution(sampling(kind))),
            ),
            module("accepts, resamples and appends (sched_verify_sample)", kernels_cuda::verify_source()),
            module("gathers the draft's logits of a group of rows", layers::move_rows_source().to_string()),
        ],
        TokenOp::Candidates => vec![
            module("gathers the masked positions' logits", layers::gather_rows_source().to_string()),
            module("draws the candidates at temperature 0", kernels_cuda::sample_source(&candidate_kernel(0.0))),
            module(
                "draws the candidates at a positive temperature",
                kernels_cuda::sample_source(&candidate_kernel(1.0)),
            ),
            module("combines the two calls of classifier-free guidance", kernels_cuda::guide_source().to_string()),
        ],
        TokenOp::Prompt
        | TokenOp::ExtendMask
        | TokenOp::Length
        | TokenOp::Ended
        | TokenOp::Tail
        | TokenOp::Whole
        | TokenOp::Commit(_) => Vec::new(),
    }
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
    device.gather_rows(logits.buffer(), &indices, vocab, Some(mask), gathered.buffer()).map_err(backend)?;
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
            device.guide_logits(un.buffer(), cond.buffer(), scale, cond.len(), guided.buffer()).map_err(backend)?;
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

/// The slot of row `b` in a group: its rank among the group's `members`, which are increasing
/// and include it.
fn slot_of(members: &[usize], b: usize) -> usize {
    members.binary_search(&b).unwrap_or(0)
}

/// Evaluates `call` once per group of rows of equal length (their indices increasing), keeping
/// each group's `[rows × len, vocab]` logits where the call left them.
fn row_groups(
    rows: &[&[u32]],
    vocab: usize,
    call: impl Fn(TokenRows<'_>) -> Result<KeptLogits, ModelError>,
) -> Result<Vec<RowGroup>, SequenceError> {
    kept_groups(rows, |b| rows[b].len(), |len| len * vocab, |_, batch| call(batch))
}

/// Evaluates `call` once per group of rows with the same `key` (rows of one key have one length;
/// the indices of a group increasing), keeping each group's logits where the call left them;
/// each row has `per_row(key)` of them.
fn kept_groups<K: Copy + Ord>(
    rows: &[&[u32]],
    key: impl Fn(usize) -> K,
    per_row: impl Fn(K) -> usize,
    call: impl Fn(K, TokenRows<'_>) -> Result<KeptLogits, ModelError>,
) -> Result<Vec<RowGroup>, SequenceError> {
    each_group(rows, key, |group, batch, _| call(group, batch))?
        .into_iter()
        .map(|(group, members, logits)| {
            let count = match &logits {
                KeptLogits::Host(logits) => logits.len(),
                KeptLogits::Device(logits) => logits.len(),
            };
            let expected = members.len() * per_row(group);
            if count != expected {
                let len = members.first().map_or(0, |&b| rows[b].len());
                return Err(SequenceError::Invalid(format!(
                    "the model returned {count} logits for {} rows of length {len}, expected {expected}",
                    members.len()
                )));
            }
            Ok(RowGroup { members, logits })
        })
        .collect()
}

/// Commits some candidates of the window of `x`. `keep` = s/t is the fraction of masked
/// positions that stay masked in expectation; `threshold` is Fast-dLLM's p.
///
/// - posterior: each masked position commits when `uniform(row, p) >= keep` (MDLM's step);
/// - confidence / random: the `n` most confident (or, by `uniform(row, p)`, random) masked
///   positions commit, `n = ceil(m / round(1 / (1 - keep)))` for `m` masked positions: on a
///   uniform grid of N steps this is exactly LLaDA's `get_num_transfer_tokens`;
/// - first-hitting: one masked position, chosen by `uniform(row, 0)`;
/// - threshold: the most confident one and every other above `threshold`.
#[allow(clippy::too_many_arguments, reason = "the operands of one commit")]
pub fn commit(
    x: &TokenSeq,
    candidates: &TokenSeq,
    confidence: &Tensor,
    keep: f64,
    remask: Remask,
    threshold: Option<f64>,
    specials: Specials,
    noise: Noise,
) -> Result<TokenSeq, SequenceError> {
    if !(0.0..=1.0).contains(&keep) {
        return Err(SequenceError::Invalid(format!("the fraction of masks kept ({keep}) must be in [0, 1]")));
    }
    let mask =
        specials.mask.ok_or_else(|| SequenceError::Invalid("unmasking needs a model with a mask token".into()))?;
    if candidates.rows.len() != x.rows.len() {
        return Err(SequenceError::Invalid("the candidates do not match the sequence".into()));
    }
    let width = confidence.shape.get(1).copied().unwrap_or(0);
    if confidence.shape.len() != 2 || confidence.data.len() != x.rows.len() * width {
        return Err(SequenceError::Invalid(format!(
            "the confidence has shape {:?}; `commit` takes the one `candidates` returns ({} rows by the window)",
            confidence.shape,
            x.rows.len()
        )));
    }
    let mut rows = x.rows.clone();
    for (b, row) in rows.iter_mut().enumerate() {
        let start = x.window_start(b);
        let window = row.len() - start;
        if candidates.rows[b].len() != row.len() || window > width {
            return Err(SequenceError::Invalid("the candidates do not match the sequence".into()));
        }
        let eligible: Vec<bool> = row[start..].iter().map(|&token| token == mask).collect();
        let masked = eligible.iter().filter(|&&e| e).count();
        let scores: Vec<f64> = (0..window).map(|p| f64::from(confidence.data[b * width + p])).collect();
        let chosen: Vec<usize> = match remask {
            Remask::Posterior => (0..window).filter(|&p| eligible[p] && noise.uniform(b, start + p) >= keep).collect(),
            Remask::Confidence | Remask::Random => {
                let steps_left = (1.0 / (1.0 - keep)).round().max(1.0);
                let count = if keep >= 1.0 { 0 } else { (masked as f64 / steps_left).ceil() as usize };
                let ranking: Vec<f64> = match remask {
                    Remask::Random => (0..window).map(|p| noise.uniform(b, start + p)).collect(),
                    _ => scores,
                };
                kernels::top_k_positions(&ranking, &eligible, count)
            }
            Remask::FirstHitting => {
                let open: Vec<usize> = (0..window).filter(|&p| eligible[p]).collect();
                let pick = (noise.uniform(b, 0) * open.len() as f64) as usize;
                open.get(pick.min(open.len().saturating_sub(1))).copied().into_iter().collect()
            }
            Remask::Threshold => {
                let p = threshold.unwrap_or(f64::NAN);
                kernels::threshold_positions(&scores, &eligible, p)
            }
        };
        for p in chosen {
            row[start + p] = candidates.rows[b][start + p];
        }
    }
    Ok(TokenSeq { rows, prompt: x.prompt, window: x.window, proposal: None })
}

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
    Ok((TokenSeq { rows: drafter.drafts, prompt: 0, window: None, proposal: Some(proposal) }, calls))
}

/// What a draft's tokens were drawn from, for sampling verification.
#[derive(Clone, Debug)]
pub enum Proposal {
    /// Per row and draft position, the probabilities over the vocabulary the token was drawn from
    /// (one-hot for a greedy draft).
    Host(Vec<Vec<Vec<f64>>>),
    /// The draft model's raw logits `[rows, k, vocab]` on the device that computed them, and the
    /// choice that drew from them: the distributions are computed where they are needed.
    Device { logits: Arc<DeviceTensor>, choice: Choice },
}

impl PartialEq for Proposal {
    fn eq(&self, other: &Proposal) -> bool {
        match (self, other) {
            (Proposal::Host(a), Proposal::Host(b)) => a == b,
            (Proposal::Device { logits: a, choice: x }, Proposal::Device { logits: b, choice: y }) => {
                Arc::ptr_eq(a, b) && x == y
            }
            _ => false,
        }
    }
}

impl Proposal {
    /// The distributions on the host, computed from the device's logits where they are there.
    fn on_host(&self) -> Result<Cow<'_, [Vec<Vec<f64>>]>, SequenceError> {
        match self {
            Proposal::Host(distributions) => Ok(Cow::Borrowed(distributions)),
            Proposal::Device { logits, choice } => {
                let backend = |e: DeviceError| SequenceError::Invalid(format!("reading a draft's logits: {e}"));
                let &[rows, k, vocab] = logits.shape.as_slice() else {
                    return Err(SequenceError::Invalid(format!(
                        "a draft's logits have shape {:?}, not [rows, k, vocab]",
                        logits.shape
                    )));
                };
                let data = logits.device().download(logits.buffer()).map_err(backend)?;
                let distribution = |b: usize, i: usize| choice.distribution(&data[(b * k + i) * vocab..][..vocab]);
                Ok(Cow::Owned((0..rows).map(|b| (0..k).map(|i| distribution(b, i)).collect()).collect()))
            }
        }
    }
}

/// The tokens of `propose` (or of `extend ... with heads()`) as its calls' logits come in: `k`
/// per row and, for a draft, the distributions they were drawn from on the host or the logits on
/// the device.
struct Drafter {
    choice: Choice,
    noise: Noise,
    vocab: usize,
    k: usize,
    /// Whether to keep what the tokens were drawn from (a draft's proposal).
    keep: bool,
    drafts: Vec<Vec<u32>>,
    host: Vec<Vec<Vec<f64>>>,
    /// `[rows, k, vocab]`, allocated at the first group whose logits are on a device.
    device: Option<DeviceTensor>,
}

impl Drafter {
    fn new(rows: usize, k: usize, vocab: usize, choice: Choice, noise: Noise, keep: bool) -> Drafter {
        let host = if keep { vec![Vec::with_capacity(k); rows] } else { vec![Vec::new(); rows] };
        Drafter { choice, noise, vocab, k, keep, drafts: vec![Vec::with_capacity(k); rows], host, device: None }
    }

    /// Draws from a group's logits, `per_member` rows of them per member: row `h` of member `b`
    /// is draft position `first + h` of row `b`, drawn if it is below `k`.
    fn draw(&mut self, group: &RowGroup, per_member: usize, first: usize) -> Result<(), SequenceError> {
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
                device.move_rows(logits.buffer(), proposal.buffer(), moves).map_err(backend)?;
            }
        }
        Ok(())
    }
}

/// A token drawn by `choice` from every row of a group's logits on a device, `per_member` rows per
/// member: row `h` of member `b` draws with row `b`'s noise at position `first + h`. Only the
/// tokens come back.
fn draw_on_device(
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
    let open: Vec<usize> = (0..seq.rows.len()).filter(|&b| !specials.has_ended(&seq.rows[b])).collect();
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
                    device.move_rows(proposal.buffer(), gathered.buffer(), moves).map_err(backend)?;
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

/// The text of a row: its words up to the first end token, separated by spaces (the words of
/// subword vocabularies are joined as they are).
pub fn row_text(row: &[u32], vocab: &Vocab) -> String {
    let words: Vec<String> = row.iter().take_while(|&&t| Some(t) != vocab.eos).map(|&t| vocab.word(t)).collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let x = TokenSeq { rows: vec![vec![1, 2]], prompt: 1, window: None, proposal: None };
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

    #[test]
    fn length_counts_the_shortest_open_row_and_ended_needs_every_row() {
        let specials = Specials { mask: Some(9), eos: Some(0) };
        let seq = TokenSeq { rows: vec![vec![3, 4, 0], vec![3, 4, 5, 6]], prompt: 0, window: None, proposal: None };
        assert_eq!(seq.length(specials), 4, "the ended row does not count");
        assert!(!seq.ended(specials));
        let done = seq.with_rows(vec![vec![3, 0], vec![3, 4, 0]]);
        assert_eq!(done.length(specials), 3, "all ended: the longest");
        assert!(done.ended(specials));
        assert!(!done.ended(Specials { mask: None, eos: None }), "no end token: never ended");
    }

    #[test]
    fn the_window_limits_what_a_commit_writes() {
        let specials = Specials { mask: Some(9), eos: None };
        let x = TokenSeq { rows: vec![vec![9, 9, 9, 9]], prompt: 0, window: None, proposal: None }
            .tail(2)
            .unwrap_or_else(|e| panic!("{e}"));
        let candidates = TokenSeq { rows: vec![vec![1, 2, 3, 4]], ..x.clone() };
        let confidence = Tensor::new(vec![1, 2], vec![0.5, 0.9]);
        let noise = Noise { seed: 0, site: 0, step: 0 };
        let committed = commit(&x, &candidates, &confidence, 0.0, Remask::Confidence, None, specials, noise)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(committed.rows, vec![vec![9, 9, 3, 4]], "keep = 0 commits the whole window, nothing else");
        let half = commit(&x, &candidates, &confidence, 0.5, Remask::Confidence, None, specials, noise)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(half.rows, vec![vec![9, 9, 9, 4]], "two steps left: one token, the most confident");
        assert!(x.tail(-1).is_err());
        assert!(x.extend_mask(1 << 21, specials).is_err(), "rows are bounded");
        assert!(noise_room(1 << 16, 1 << 16).is_ok());
        assert!(noise_room((1 << 16) + 1, 1 << 16).is_err());
        assert!(commit(&x, &candidates, &confidence, 1.5, Remask::Posterior, None, specials, noise).is_err());
        let wrong = Tensor::new(vec![2, 2], vec![0.0; 4]);
        assert!(commit(&x, &candidates, &wrong, 0.5, Remask::Confidence, None, specials, noise).is_err());
    }
}
