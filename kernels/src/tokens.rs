//! Token sampling on the CPU: the logits processors, softmax, Gumbel-max and categorical draws,
//! the position rules of masked diffusion samplers, and the acceptance test of speculative decoding.
//!
//! These functions are the reference definitions of sched's token samplers. Their doc comments are
//! normative, like those of [`crate::philox`]: every emitter (the Cranelift loops, the CUDA kernels)
//! computes exactly what they say, in the order of floating-point operations they give. Randomness
//! comes in as a function `uniform(j)` that returns a draw on the open interval (0, 1) for element
//! `j`, normally [`crate::philox::uniform_f64`] at distinct coordinates, so that the same seed gives
//! the same tokens on every backend.
//!
//! Conventions shared by every function here:
//!
//! - a NaN logit or confidence counts as -inf, and ties go to the lower index;
//! - token indices are `u32`, so the functions that return one look at the first 2^32 entries only;
//! - no input panics: empty slices, all -inf, NaN and out-of-range parameters each have the
//!   documented result.

use std::cmp::Ordering;

/// Which token a nucleus (top-p) filter keeps at the boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nucleus {
    /// Hugging Face's `TopPLogitsWarper`: the token whose cumulative probability crosses p is kept.
    KeepCrossing,
    /// BD3-LM's `_nucleus_sample`: keep = cumsum <= p (the crossing token is dropped), the top
    /// token always kept.
    DropCrossing,
}

/// The knobs of one sampling step, with Hugging Face's names and meanings; [`process_logits`]
/// applies them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    /// The divisor of the logits. It must be positive and finite (the caller checks); 1 leaves the
    /// logits unchanged.
    pub temperature: f64,
    /// Keep the `top_k` largest logits and every logit tied with the smallest of them; 0 disables.
    pub top_k: usize,
    /// The probability mass of the nucleus; 1 or more, or NaN, disables the filter.
    pub top_p: f64,
    /// Remove the tokens less probable than `min_p` times the most probable one; 0 or less, or
    /// NaN, disables the filter.
    pub min_p: f64,
    /// Which token the nucleus keeps at its boundary.
    pub nucleus: Nucleus,
}

impl Sampler {
    /// Temperature 1, no filter (top_k 0, top_p 1, min_p 0), KeepCrossing: sampling from the
    /// softmax of the raw logits.
    pub fn plain() -> Sampler {
        Sampler { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, nucleus: Nucleus::KeepCrossing }
    }
}

/// Applies Hugging Face's sampling logits processors to one row of logits, in place and in
/// Hugging Face's order: temperature, top-k, top-p, min-p. A removed token's logit becomes
/// `f32::NEG_INFINITY`.
///
/// Definition (normative; every emitter computes exactly this). Each step works on the logits the
/// previous one left, and `softmax` is [`softmax`] of those logits:
///
/// 1. Temperature (`TemperatureLogitsWarper`): every logit becomes `logit / (temperature as f32)`,
///    divided in f32, and a NaN result becomes -inf. The temperature must be positive and finite
///    (the caller checks); 1 changes nothing.
/// 2. Top-k (`TopKLogitsWarper`), when `0 < top_k < len`: with `v` the `top_k`-th largest logit,
///    counted with multiplicity, every logit `< v` is removed. Logits tied with `v` stay, so more
///    than `top_k` tokens can remain. `top_k == 0` or `top_k >= len` removes nothing.
/// 3. Top-p, when `top_p < 1` (so NaN disables it): `probs = softmax(logits)`, and the descending
///    order lists the indices by decreasing logit, ties by increasing index.
///    - [`Nucleus::KeepCrossing`] (`TopPLogitsWarper`): walk the descending order backwards, from
///      the smallest logit, leaving out its first entry (the largest logit, always kept); keep a
///      running sum `c += probs[j]` in f64 from 0, and remove `j` when `c <= 1 - top_p`. This is
///      Hugging Face's ascending cumulative sum with `cum <= 1 - top_p` removed and the last entry
///      kept; the token at which the descending cumulative probability crosses `top_p` stays.
///    - [`Nucleus::DropCrossing`] (BD3-LM's `_nucleus_sample`): walk the descending order forward
///      with `c += probs[j]` in f64 from 0, and remove every `j` but the first at which
///      `c > top_p`. This is BD3-LM's `keep = cumsum <= p; keep[0] = 1`; the crossing token goes.
/// 4. Min-p (`MinPLogitsWarper`), when `min_p > 0` (so NaN disables it): `probs = softmax(logits)`
///    and `top = argmax(logits)` ([`argmax`]); every `j != top` with `probs[j] < min_p *
///    probs[top]` is removed.
///
/// Hugging Face computes the probabilities in f32 and sorts with an unspecified order among ties;
/// this definition uses f64 and the lower index first, so a boundary decision can differ from
/// Hugging Face's only when a cumulative sum or probability lies within rounding of its threshold.
///
/// If any logit is above -inf after step 1, the token `argmax` picks then survives every filter,
/// so at least one token stays sampleable. An empty slice is left empty.
pub fn process_logits(logits: &mut [f32], sampler: &Sampler) {
    let temperature = sampler.temperature as f32;
    for logit in logits.iter_mut() {
        *logit /= temperature;
        if logit.is_nan() {
            *logit = f32::NEG_INFINITY;
        }
    }
    if logits.is_empty() {
        return;
    }
    if sampler.top_k > 0 && sampler.top_k < logits.len() {
        remove_below_top_k(logits, sampler.top_k);
    }
    if sampler.top_p < 1.0 {
        match sampler.nucleus {
            Nucleus::KeepCrossing => nucleus_keep_crossing(logits, sampler.top_p),
            Nucleus::DropCrossing => nucleus_drop_crossing(logits, sampler.top_p),
        }
    }
    if sampler.min_p > 0.0 {
        remove_below_min_p(logits, sampler.min_p);
    }
}

/// Step 2 of [`process_logits`]: removes the logits below the `k`-th largest. The caller ensures
/// `0 < k < len`, so the selection index `k - 1` is in range.
fn remove_below_top_k(logits: &mut [f32], k: usize) {
    let mut values = logits.to_vec();
    // The logits hold no NaN here, so the total order agrees with `<` except that it puts -0 below
    // +0, and those compare equal in the removal test below: the threshold is the k-th largest.
    let (_, &mut threshold, _) = values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    for logit in logits.iter_mut() {
        if *logit < threshold {
            *logit = f32::NEG_INFINITY;
        }
    }
}

/// Step 3 of [`process_logits`] for [`Nucleus::KeepCrossing`].
fn nucleus_keep_crossing(logits: &mut [f32], top_p: f64) {
    let probs = softmax(logits);
    let limit = 1.0 - top_p;
    let mut cumulative = 0.0;
    for &j in descending_order(logits).iter().skip(1).rev() {
        cumulative += probs[j];
        if cumulative <= limit {
            logits[j] = f32::NEG_INFINITY;
        }
    }
}

/// Step 3 of [`process_logits`] for [`Nucleus::DropCrossing`].
fn nucleus_drop_crossing(logits: &mut [f32], top_p: f64) {
    let probs = softmax(logits);
    let mut cumulative = 0.0;
    for (rank, &j) in descending_order(logits).iter().enumerate() {
        cumulative += probs[j];
        if rank > 0 && cumulative > top_p {
            logits[j] = f32::NEG_INFINITY;
        }
    }
}

/// Step 4 of [`process_logits`], for a non-empty slice.
fn remove_below_min_p(logits: &mut [f32], min_p: f64) {
    let probs = softmax(logits);
    let top = argmax(logits) as usize;
    // `argmax` of a non-empty slice is one of its indices, and `probs` has the slice's length.
    let bound = min_p * probs[top];
    for (j, (logit, &prob)) in logits.iter_mut().zip(&probs).enumerate() {
        if j != top && prob < bound {
            *logit = f32::NEG_INFINITY;
        }
    }
}

/// The indices of `logits` by decreasing logit, ties (and NaN, as -inf) by increasing index.
///
/// Sorted as integers: each entry is one `u64` whose high half orders the logits by decreasing
/// value (NaN as -inf, -0 as +0, so that they tie as [`descending`] ties them) and whose low half
/// is the index; a vocabulary's sort is several times faster than with a comparison closure.
fn descending_order(logits: &[f32]) -> Vec<usize> {
    if u32::try_from(logits.len()).is_err() {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_unstable_by(|&a, &b| descending(f64::from(logits[a]), f64::from(logits[b])).then(a.cmp(&b)));
        return order;
    }
    let mut keys: Vec<u64> =
        logits.iter().enumerate().map(|(j, &logit)| (u64::from(!ascending_key(logit)) << 32) | j as u64).collect();
    keys.sort_unstable();
    keys.into_iter().map(|key| (key & u64::from(u32::MAX)) as usize).collect()
}

/// A key whose unsigned order is the order of the logits, with NaN equal to -inf and -0 to +0.
fn ascending_key(logit: f32) -> u32 {
    let logit = if logit.is_nan() {
        f32::NEG_INFINITY
    } else if logit == 0.0 {
        0.0
    } else {
        logit
    };
    let bits = logit.to_bits();
    // Negative floats order backwards by their bits, positive ones forwards, above every negative.
    if bits >> 31 == 1 { !bits } else { bits | 1 << 31 }
}

/// The order that puts larger values first, with NaN counted as -inf (so it ties with -inf).
fn descending(a: f64, b: f64) -> Ordering {
    // Neither side is NaN after `nan_lowest`, so `partial_cmp` always answers.
    nan_lowest(b).partial_cmp(&nan_lowest(a)).unwrap_or(Ordering::Equal)
}

/// The value itself, or -inf for NaN.
fn nan_lowest(x: f64) -> f64 {
    if x.is_nan() { f64::NEG_INFINITY } else { x }
}

/// The softmax of one row of logits (the f32 of a model, or the f64 of an exact law), in f64.
///
/// Definition (normative; every emitter computes exactly this), with NaN logits counted as -inf:
///
/// - empty: the empty vector;
/// - every logit -inf (or NaN): the uniform distribution, `1.0 / len` each, as if all were equal;
/// - some logit +inf: `1.0 / c` for each of the `c` logits that are +inf and 0 elsewhere (the
///   limit of the softmax);
/// - otherwise, with `m` the largest logit: `e_j = exp(logit_j as f64 - m as f64)` (exactly 0 for
///   -inf and NaN), `s = ((e_0 + e_1) + e_2) + ...` summed left to right in f64 (so `s >= 1`),
///   and `p_j = e_j / s`.
///
/// `exp` is the platform's libm `exp`. The result always has the input's length and, unless
/// empty, sums to 1 up to rounding.
pub fn softmax<T: Copy + Into<f64>>(logits: &[T]) -> Vec<f64> {
    let logits: Vec<f64> = logits.iter().map(|&logit| logit.into()).collect();
    let max = logits.iter().fold(f64::NEG_INFINITY, |max, &logit| if logit > max { logit } else { max });
    if max == f64::NEG_INFINITY {
        return vec![1.0 / logits.len() as f64; logits.len()];
    }
    if max == f64::INFINITY {
        let count = logits.iter().filter(|&&logit| logit == f64::INFINITY).count();
        return logits.iter().map(|&logit| if logit == f64::INFINITY { 1.0 / count as f64 } else { 0.0 }).collect();
    }
    let exps: Vec<f64> = logits.iter().map(|&logit| if logit.is_nan() { 0.0 } else { (logit - max).exp() }).collect();
    let sum = exps.iter().fold(0.0, |sum, &e| sum + e);
    exps.into_iter().map(|e| e / sum).collect()
}

/// The index of the largest logit, the first on ties; NaN counts as -inf, so if no logit is above
/// -inf the result is 0. An empty slice gives 0 as well (the caller must not index with it).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_logit = f32::NEG_INFINITY;
    for (&logit, j) in logits.iter().zip(0..=u32::MAX) {
        if logit > best_logit {
            best = j;
            best_logit = logit;
        }
    }
    best
}

/// Gumbel-max sampling, LLaDA's trick, in f64: a draw from `softmax(logits)`.
///
/// Definition (normative; every emitter computes exactly this):
///
/// - the candidates are the indices `j` whose logit is above -inf (not -inf, not NaN); if there
///   are none (including the empty slice), the result is [`argmax`]`(logits)`, that is 0;
/// - for each candidate, in increasing `j`, `u_j = uniform(j)` and
///   `score_j = logits[j] as f64 - ln(-ln(u_j))` in f64 (`ln` the platform's libm `log`), a NaN
///   score counting as -inf;
/// - the result is the candidate with the largest score, the first on ties (so the first candidate
///   if every score is -inf).
///
/// `uniform` is called once for each candidate and never for another index. With `u_j` independent
/// and uniform on (0, 1), `-ln(-ln(u_j))` is standard Gumbel noise and the result is distributed as
/// `softmax(logits)` ([`softmax`]; among +inf logits the first wins). LLaDA's
/// `argmax(exp(l) / (-ln u)^T)` at temperature `T > 0` is this function applied to `l / T`, which
/// [`process_logits`] computes; `T = 0` is greedy, [`argmax`].
pub fn gumbel_argmax(logits: &[f32], uniform: impl Fn(u32) -> f64) -> u32 {
    let mut best: Option<(u32, f64)> = None;
    for (&logit, j) in logits.iter().zip(0..=u32::MAX) {
        if logit.is_nan() || logit == f32::NEG_INFINITY {
            continue;
        }
        let score = nan_lowest(f64::from(logit) - (-uniform(j).ln()).ln());
        if best.is_none_or(|(_, best_score)| score > best_score) {
            best = Some((j, score));
        }
    }
    best.map_or_else(|| argmax(logits), |(j, _)| j)
}

/// A draw from unnormalized probabilities by the exponential race.
///
/// Definition (normative; every emitter computes exactly this):
///
/// - the candidates are the indices `j` with `probs[j] > 0` (so zero, negative and NaN entries
///   never win); if there are none (including the empty slice), the result is 0;
/// - for each candidate, in increasing `j`, `u_j = uniform(j)` and
///   `score_j = probs[j] / (0.0 - ln(u_j))` in f64 (`0.0 -` so that `u_j = 1` gives +inf), a NaN
///   score counting as -inf;
/// - the result is the candidate with the largest score, the first on ties (so the first candidate
///   if every score is -inf).
///
/// `uniform` is called once for each candidate and never for another index. With `u_j` independent
/// and uniform on (0, 1), `-ln(u_j)` is a standard exponential, the largest `probs[j] / E_j` is
/// the first of the clocks with rates `probs[j]` to ring, and `j` wins with probability
/// `probs[j] / sum(probs)`. This is MDLM's and BD3-LM's `_sample_categorical`,
/// `argmax(probs / (1e-10 - ln(u + 1e-10)))`, without its 1e-10 guards, which (0, 1) makes
/// unnecessary.
pub fn sample_probs(probs: &[f64], uniform: impl Fn(u32) -> f64) -> u32 {
    let mut best: Option<(u32, f64)> = None;
    for (&prob, j) in probs.iter().zip(0..=u32::MAX) {
        if prob.is_nan() || prob <= 0.0 {
            continue;
        }
        let score = nan_lowest(prob / (0.0 - uniform(j).ln()));
        if best.is_none_or(|(_, best_score)| score > best_score) {
            best = Some((j, score));
        }
    }
    best.map_or(0, |(j, _)| j)
}

/// LLaDA's `get_num_transfer_tokens` for one row: how many of `masked` tokens to unmask at each of
/// `steps` steps.
///
/// Definition (normative): entry `i` is `masked / steps + (i < masked % steps) as usize`, for `i`
/// in `0..steps`; the counts sum to `masked` and the first `masked % steps` steps take one more.
/// `steps = 0` gives the empty vector.
pub fn transfer_counts(masked: usize, steps: usize) -> Vec<usize> {
    if steps == 0 {
        return Vec::new();
    }
    let base = masked / steps;
    let extra = masked % steps;
    (0..steps).map(|i| base + usize::from(i < extra)).collect()
}

/// LLaDA's low-confidence selection: the `k` eligible positions with the highest confidence.
///
/// Definition (normative): the positions are `0..min(confidence.len(), eligible.len())`, and
/// position `i` is eligible when `eligible[i]`. Rank the eligible positions by decreasing
/// confidence, NaN counting as -inf (the lowest) and ties going to the lower position, take the
/// first `k` (all of them if fewer than `k` are eligible), and return them in increasing position
/// order. `k = 0` gives the empty vector.
pub fn top_k_positions(confidence: &[f64], eligible: &[bool], k: usize) -> Vec<usize> {
    let mut positions = eligible_positions(confidence, eligible);
    positions.sort_unstable_by(|&a, &b| descending(confidence[a], confidence[b]).then(a.cmp(&b)));
    positions.truncate(k);
    positions.sort_unstable();
    positions
}

/// Fast-dLLM's threshold selection (`get_transfer_index` with a threshold): the most confident
/// eligible position always, and every other eligible position with `confidence >= p`.
///
/// Definition (normative): positions and eligibility as in [`top_k_positions`]; NaN confidence
/// counts as -inf. If no position is eligible the result is empty. Otherwise the result holds the
/// first eligible position of the largest confidence, and every eligible position `i` with
/// `confidence[i] >= p`, in increasing position order. A NaN `p` selects the most confident
/// position only.
pub fn threshold_positions(confidence: &[f64], eligible: &[bool], p: f64) -> Vec<usize> {
    let positions = eligible_positions(confidence, eligible);
    let mut best: Option<usize> = None;
    for &i in &positions {
        if best.is_none_or(|b| descending(confidence[i], confidence[b]) == Ordering::Less) {
            best = Some(i);
        }
    }
    positions.into_iter().filter(|&i| Some(i) == best || nan_lowest(confidence[i]) >= p).collect()
}

/// The eligible positions, in increasing order, among `0..min(confidence.len(), eligible.len())`.
fn eligible_positions(confidence: &[f64], eligible: &[bool]) -> Vec<usize> {
    confidence.iter().zip(eligible).enumerate().filter(|&(_, (_, &is_eligible))| is_eligible).map(|(i, _)| i).collect()
}

/// BD3-LM's first-hitting clock: the time of the next unmasking event after time `t` when `masked`
/// tokens are still masked.
///
/// Definition (normative): `t * u.powf(1.0 / masked as f64)` in f64 (`powf` the platform's libm
/// `pow`; exactly `t * u` for one masked token), and 0 when `masked = 0`. With `u` uniform on
/// (0, 1) the result is distributed as the largest of `masked` independent uniforms on [0, t], with
/// distribution function `(x / t)^masked`.
pub fn first_hitting_time(t: f64, masked: usize, u: f64) -> f64 {
    if masked == 0 {
        return 0.0;
    }
    t * u.powf(1.0 / masked as f64)
}

/// Speculative sampling's acceptance test (Leviathan et al. 2023, Chen et al. 2023): whether to
/// accept a draft token of draft probability `q` and target probability `p`, given a uniform `u`.
///
/// Definition (normative): if `q > 0`, accept iff `u <= 1 && u <= p / q` in f64, that is
/// `u <= min(1, p / q)` (a NaN `p` rejects); otherwise (`q` zero, negative or NaN, a token the
/// draft could not have proposed) accept iff `p > 0`, the limit of `p / q` as `q` goes to 0. With
/// `u` uniform on (0, 1) the token is accepted with probability `min(1, p / q)`; Hugging Face's
/// `_speculative_sampling` tests `u <= p / q`, the same for such `u`.
pub fn accept_draft(p: f64, q: f64, u: f64) -> bool {
    if q > 0.0 { u <= 1.0 && u <= p / q } else { p > 0.0 }
}

/// The residual distribution of speculative sampling, `norm(max(0, p - q))`, from which the token
/// after a rejected draft is drawn.
///
/// Definition (normative): the result has `p.len()` entries. An entry of `p` or `q` counts as 0
/// unless it is finite and positive, and `q`'s entries beyond `p.len()` are ignored and missing
/// ones count as 0. Let `r_j = max(0, p_j - q_j)` and `s = ((r_0 + r_1) + r_2) + ...` in f64; if
/// `0 < s < inf` the result is `r_j / s`. Otherwise the residual has no mass (`p <= q`
/// everywhere, which for two distributions means `p = q`, when a rejection has probability 0) and
/// the result is `p` normalized the same way; if `p` has no mass either, it is uniform, `1.0 / len`
/// each (empty for an empty `p`).
pub fn residual(p: &[f64], q: &[f64]) -> Vec<f64> {
    let excess =
        p.iter().enumerate().map(|(j, &pj)| (mass(pj) - q.get(j).copied().map_or(0.0, mass)).max(0.0)).collect();
    normalized(excess)
        .or_else(|| normalized(p.iter().copied().map(mass).collect()))
        .unwrap_or_else(|| vec![1.0 / p.len() as f64; p.len()])
}

/// How the verification of one row of speculative decoding ends ([`verify_row`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyEnd {
    /// Every draft token was accepted, and the model's token after them appended.
    Whole,
    /// A draft token was rejected, and a token of the model appended in its place.
    Rejected,
    /// The draft's end token was accepted, and nothing appended after it.
    Stopped,
}

/// The model's probabilities at one draft position for sampling verification: its processed
/// distribution `p`, and the draft's `q` when the draft has one.
pub type DraftDistributions<'a> = (Vec<f64>, Option<&'a [f64]>);

/// Speculative decoding's verification of one row that has not ended (Leviathan et al. 2023,
/// Chen et al. 2023): the tokens the row appends, and how the verification ended.
///
/// Definition (normative: the runtime's `verify` and both entry points of
/// [`crate::cuda_tokens::verify_source`] compute exactly this). With `k = draft.len()`, for each
/// draft token `x` at position `i` in order:
///
/// - greedy verification (`distributions` is `None`): `x` is accepted iff
///   `target_token(i) == x`;
/// - sampling verification: with `(p, q) = distributions(i)`, `x` is accepted iff
///   [`accept_draft`]`(p[x], q[x], uniform((k + 1) * vocab + i))`, where `p[x]` is 0 and `q[x]` is 1
///   when `x` is out of their range (and `q[x]` is 1 when the draft has no `q`); a rejected `x`
///   draws the token appended in its place by [`sample_probs`] of [`residual`]`(p, q)` (of `p`
///   itself without `q`) with `uniform(i * vocab + v)` for entry `v`.
///
/// An accepted token is appended; verification stops at the first rejection
/// ([`VerifyEnd::Rejected`]) or after an accepted token equal to `eos` ([`VerifyEnd::Stopped`]).
/// If every draft token was accepted and none was `eos`, `target_token(k)` is appended
/// ([`VerifyEnd::Whole`]). Index arithmetic is in 32 bits, wrapping. `target_token(i)` is the
/// model's token at position `i`: its argmax for greedy verification, otherwise its token drawn
/// with `uniform(i * vocab + v)`; it is called only for the appended position.
pub fn verify_row<'a>(
    draft: &[u32],
    eos: Option<u32>,
    vocab: usize,
    target_token: impl Fn(usize) -> u32,
    distributions: Option<impl Fn(usize) -> DraftDistributions<'a>>,
    uniform: impl Fn(u32) -> f64,
) -> (Vec<u32>, VerifyEnd) {
    let k = draft.len();
    let mut appended = Vec::with_capacity(k + 1);
    for (i, &token) in draft.iter().enumerate() {
        let rejected = match &distributions {
            None => (target_token(i) != token).then(|| target_token(i)),
            Some(distributions) => {
                let (p, q) = distributions(i);
                let p_token = p.get(token as usize).copied().unwrap_or(0.0);
                let q_token = q.and_then(|q| q.get(token as usize)).copied().unwrap_or(1.0);
                let acceptance = ((k + 1) * vocab + i) as u32;
                if accept_draft(p_token, q_token, uniform(acceptance)) {
                    None
                } else {
                    let base = (i * vocab) as u32;
                    let draw = |v: u32| uniform(base.wrapping_add(v));
                    Some(match q {
                        Some(q) => sample_probs(&residual(&p, q), draw),
                        None => sample_probs(&p, draw),
                    })
                }
            }
        };
        if let Some(replacement) = rejected {
            appended.push(replacement);
            return (appended, VerifyEnd::Rejected);
        }
        appended.push(token);
        if eos == Some(token) {
            return (appended, VerifyEnd::Stopped);
        }
    }
    appended.push(target_token(k));
    (appended, VerifyEnd::Whole)
}

/// LLaDA's classifier-free guidance of one logit: `un + (scale + 1) (cond - un)` from the
/// unconditional logit `un` and the conditional one `cond`.
///
/// Definition (normative; every emitter computes exactly this): if `cond` is -inf the result is
/// -inf (a token the conditional call rules out stays ruled out); otherwise, if `un` is -inf the
/// result is +inf (ruled out only by the unconditional call, guidance makes it certain);
/// otherwise it is `(un as f64 + (scale + 1.0) * (cond as f64 - un as f64)) as f32`, each
/// operation one f64 rounding, so a NaN operand gives NaN.
pub fn guided_logit(un: f32, cond: f32, scale: f64) -> f32 {
    if cond == f32::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    if un == f32::NEG_INFINITY {
        return f32::INFINITY;
    }
    let (un, cond) = (f64::from(un), f64::from(cond));
    (un + (scale + 1.0) * (cond - un)) as f32
}

/// A probability entry as [`residual`] counts it: itself if finite and positive, else 0.
fn mass(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

/// The entries divided by their left-to-right sum, if that sum is positive and finite.
fn normalized(entries: Vec<f64>) -> Option<Vec<f64>> {
    let sum = entries.iter().fold(0.0, |sum, &x| sum + x);
    (sum > 0.0 && sum.is_finite()).then(|| entries.into_iter().map(|x| x / sum).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The descending order breaks ties, -0 against +0 and NaN against -inf included, by index.
    #[test]
    fn descending_order_breaks_ties_by_index() {
        let logits = [1.0, f32::NAN, 2.0, 1.0, f32::NEG_INFINITY, 2.0, -0.0, 0.0];
        assert_eq!(descending_order(&logits), vec![2, 5, 0, 3, 6, 7, 1, 4]);
    }

    proptest::proptest! {
        /// The integer keys sort exactly as the comparison of [`descending`] with ties by index.
        #[test]
        fn descending_order_is_the_comparison_sort(
            logits in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::num::f32::ANY,
                    proptest::sample::select(vec![0.0f32, -0.0, 1.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]),
                ],
                0..64,
            )
        ) {
            let mut expected: Vec<usize> = (0..logits.len()).collect();
            expected.sort_by(|&a, &b| descending(f64::from(logits[a]), f64::from(logits[b])).then(a.cmp(&b)));
            proptest::prop_assert_eq!(descending_order(&logits), expected);
        }
    }

    /// -0 and +0 tie at the top-k boundary whichever the total order puts first, so both stay.
    #[test]
    fn top_k_treats_signed_zeros_as_ties() {
        let mut logits = [0.0, -0.0, -1.0];
        remove_below_top_k(&mut logits, 1);
        assert_eq!(logits.map(f32::to_bits), [0.0, -0.0, f32::NEG_INFINITY].map(f32::to_bits));
        let mut logits = [-0.0, 1.0, -1.0, 0.0];
        remove_below_top_k(&mut logits, 2);
        assert_eq!(logits.map(f32::to_bits), [-0.0, 1.0, f32::NEG_INFINITY, 0.0].map(f32::to_bits));
    }

    /// `normalized` divides by the sum only when it is positive and finite.
    #[test]
    fn normalized_needs_a_positive_finite_sum() {
        assert_eq!(normalized(vec![1.0, 3.0]), Some(vec![0.25, 0.75]));
        assert_eq!(normalized(vec![0.0, 0.0]), None);
        assert_eq!(normalized(vec![f64::MAX, f64::MAX]), None);
        assert_eq!(normalized(Vec::new()), None);
    }
}
