//! CUDA C for sched's token operations: the source text of the NVRTC modules that sample rows of
//! logits, select the positions a masked-diffusion step commits, and verify speculative drafts.
//!
//! Like [`crate::cuda`], this module only generates text; [`crate::nvrtc`] compiles it to PTX with
//! the options of every sched kernel (`--fmad=false --prec-div=true --prec-sqrt=true
//! --ftz=false`), and a CUDA launcher loads and launches it. The ABI below is the contract between
//! this emitter and that launcher. What the kernels compute is defined by [`crate::tokens`] (the
//! primitives) and `runtime/src/sequence.rs` (which primitive each token operation applies, with
//! which noise coordinates); docs/sequences.md lists the noise indices.
//!
//! # Common conventions
//!
//! - Every entry point runs as blocks of exactly [`BLOCK_THREADS`] threads (the block reductions
//!   are a fixed shared-memory tree of that width) and any number of blocks, at least one: each
//!   block takes the rows `blockIdx.x, blockIdx.x + gridDim.x, ...` (except the greedy
//!   verification, one thread per row), so a grid smaller than the number of rows loops.
//!   [`row_blocks`] gives a grid. No dynamic shared memory is used; the static shared memory is
//!   under 24 KiB.
//! - `rows`, `vocab` and `width` are 32-bit, and every offset into a buffer is computed in 64
//!   bits, so any `rows` and `vocab` below 2^32 are safe (a row of logits is
//!   `logits + row * vocab`).
//! - The seed is a pointer to two words, `seed[0]` its low and `seed[1]` its high 32 bits (read
//!   once per launch, so a CUDA graph replays with a new seed by rewriting them), followed by the
//!   noise site and step as scalars. A draw is [`philox::uniform_f64`]`(seed, site, step, sample,
//!   index)`, computed by a `__device__` copy of Philox4x32-10, with the index arithmetic in
//!   32 bits (wrapping, like the runtime's `as u32`).
//! - Every pointer is aligned to its element type, the scratch to 16 bytes, and buffers do not
//!   overlap. Buffers an entry point does not use (documented per entry) may be null.
//! - Scratch is global memory that the launcher allocates: one slot per block, of the size the
//!   entry's function gives, at `scratch + blockIdx.x * slot_bytes`. Its contents on entry do not
//!   matter, and it may be reused between launches.
//!
//! # Row sampling ABI
//!
//! A sampling module, [`sample_source`] of a [`SampleKernel`], has one entry point,
//! [`SAMPLE_ENTRY`]:
//!
//! ```c
//! extern "C" __global__ void sched_sample_rows(
//!     const float* logits,                 // rows × vocab
//!     const unsigned int* noise_sample,    // [rows]: the Philox sample word of each row (Gumbel)
//!     const unsigned int* noise_position,  // [rows]: entry v of a row draws index position * vocab + v (Gumbel)
//!     const unsigned int* seed,            // [2]: the seed's low and high words (Gumbel)
//!     unsigned int site,                   // the noise site (Gumbel)
//!     unsigned int step,                   // the noise step (Gumbel)
//!     double temperature,                  // Logits::Divided and Logits::Processed
//!     unsigned long long top_k,            // Filters::top_k
//!     double top_p,                        // Filters::top_p
//!     double min_p,                        // Filters::min_p
//!     unsigned int rows,
//!     unsigned int vocab,
//!     void* scratch,                       // gridDim.x slots of sample_scratch_bytes(kernel, vocab)
//!     unsigned int* token,                 // [rows]: the chosen token of each row
//!     double* probability)                 // [rows] for Report::RawProbability and Report::Probability,
//!                                          // rows × vocab for Report::Distribution, unused for Report::Token
//! ```
//!
//! Row `r` is `logits[r * vocab .. (r + 1) * vocab]`; its entry `v` draws
//! `uniform_f64(seed, site, step, noise_sample[r], noise_position[r] * vocab + v)`: the runtime's
//! `uniform(row, position * vocab + v)` with `row = noise_sample[r]` and `position` the token's
//! position (`candidates`), the index of the extension token (`extend`, `propose`) or the verified
//! position (`verify`'s bonus). The parameters marked with a description's feature are read only
//! when the module has it, and a filter that is compiled in still follows its runtime parameter
//! exactly as [`tokens::process_logits`] does (`top_k = 0`, `top_p >= 1` or NaN, `min_p <= 0` or
//! NaN disable it), so one module with every filter serves every [`Sampler`].
//!
//! [`SampleKernel::sample_row`] is the normative definition of one row of a launch, with
//! [`SampleParams`] the launch's `temperature`, `top_k`, `top_p` and `min_p`, and `uniform(v)` the
//! draw of entry `v` above: the emitted kernel computes exactly what it returns (the token, and the
//! report in `probability`), and `tests/cuda_tokens.rs` runs the emitted text on the host and finds
//! every token and report bit-identical to it. Per row, the block computes (see [`Logits`],
//! [`Choose`] and [`Report`]):
//!
//! 1. the processed logits: the row itself ([`Logits::Raw`]), the candidates' scaling
//!    `(logit as f64 / temperature) as f32` ([`Logits::Divided`]), or [`tokens::process_logits`]
//!    with the compiled filters ([`Logits::Processed`]);
//! 2. the token: [`tokens::argmax`] ([`Choose::Greedy`]) or [`tokens::gumbel_argmax`]
//!    ([`Choose::Gumbel`]) of the processed logits, by block-parallel reductions, which are exact
//!    because the best (value, index) pair does not depend on the order of combination;
//! 3. the report, from [`tokens::softmax`] of the raw or processed logits.
//!
//! `vocab = 0` writes token 0 and probability 0 for every row, as the runtime does for an empty
//! row (and as [`SampleKernel::sample_row`] gives for an empty row).
//!
//! # Position selection ABI
//!
//! [`select_source`] has three entry points over rows of `width` positions:
//!
//! ```c
//! extern "C" __global__ void sched_select_top_k(
//!     const double* confidence, const unsigned int* eligible,
//!     const unsigned int* count,           // [rows]: how many positions each row selects
//!     unsigned int rows, unsigned int width, unsigned int* selected)
//! extern "C" __global__ void sched_select_transfer(
//!     const double* confidence, const unsigned int* eligible,
//!     double keep,                         // s / t, the fraction of masked positions that stay masked
//!     unsigned int rows, unsigned int width, unsigned int* selected)
//! extern "C" __global__ void sched_select_threshold(
//!     const double* confidence, const unsigned int* eligible,
//!     double threshold,                    // Fast-dLLM's p
//!     unsigned int rows, unsigned int width, unsigned int* selected)
//! ```
//!
//! `confidence`, `eligible` and `selected` are `rows × width`; a position is eligible when its
//! word is not 0, and `selected` gets 1 for the selected positions and 0 elsewhere.
//! [`SELECT_TOP_K_ENTRY`] is [`tokens::top_k_positions`] with `k = count[row]`;
//! [`SELECT_TRANSFER_ENTRY`] is the runtime's `commit` with the `confidence` policy, that is
//! [`tokens::top_k_positions`] with `k = ceil(m / max(round(1 / (1 - keep)), 1))` for `m` eligible
//! positions (0 when `keep >= 1`), LLaDA's transfer count; [`SELECT_THRESHOLD_ENTRY`] is
//! [`tokens::threshold_positions`]. A window shorter than `width` marks the positions after it
//! ineligible.
//!
//! # Verification ABI
//!
//! [`verify_source`] has two entry points; a row's draft has `k` tokens and every row the same
//! `k`:
//!
//! ```c
//! extern "C" __global__ void sched_verify_greedy(
//!     const unsigned int* draft,           // rows × k
//!     const unsigned int* target,          // rows × (k + 1): the model's argmax at each draft position and the next
//!     unsigned int has_eos, unsigned int eos,
//!     unsigned int rows, unsigned int k,
//!     unsigned int* tokens,                // rows × (k + 1): the tokens each row appends
//!     unsigned int* counts)                // [rows]: how many
//! extern "C" __global__ void sched_verify_sample(
//!     const unsigned int* draft,           // rows × k
//!     const double* target,                // rows × (k + 1) × vocab: the model's processed distribution p at each position
//!     const double* proposal,              // rows × k × vocab: the draft's distribution q at each position
//!     const unsigned int* target_token,    // rows × (k + 1): the model's sampled token at each position
//!     const unsigned int* noise_sample,    // [rows]
//!     const unsigned int* seed, unsigned int site, unsigned int step,
//!     unsigned int has_eos, unsigned int eos,
//!     unsigned int rows, unsigned int k, unsigned int vocab,
//!     void* scratch,                       // gridDim.x slots of verify_scratch_bytes(vocab)
//!     unsigned int* tokens,                // rows × (k + 1)
//!     unsigned int* counts)                // [rows]
//! ```
//!
//! [`VERIFY_GREEDY_ENTRY`] runs one thread per row (row `blockIdx.x * 256 + threadIdx.x`, the
//! rows looping over the grid), so `ceil(rows / 256)` blocks suffice; [`VERIFY_SAMPLE_ENTRY`]
//! runs one block per row like the other entry points. Both compute [`tokens::verify_row`] (the
//! runtime's `verify` of one row that has not ended, with `eos` when `has_eos != 0`, the model's
//! token at position `i` `target[i]` or `target_token[i]`, and the distributions `p_i` and `q_i`
//! of sampling verification): the accepted prefix of the draft and then, unless the row accepted
//! its end token, one token of the model; `tokens[row * (k + 1) ..]` receives them and
//! `counts[row]` their number. [`VERIFY_GREEDY_ENTRY`] accepts draft token `i` while it equals
//! `target[i]` and then appends `target[accepted]`. [`VERIFY_SAMPLE_ENTRY`] accepts draft token `x` at position
//! `i` by [`tokens::accept_draft`]`(p_i[x], q_i[x], u)` with `u` drawn at index
//! `(k + 1) * vocab + i` (a token `x >= vocab` has `p = 0` and `q = 1`, so it is rejected); the
//! first rejected position `i` draws [`tokens::sample_probs`] of [`tokens::residual`]`(p_i, q_i)`
//! at indices `i * vocab + v`, and a row that accepts all `k` appends `target_token[k]`. The
//! `target` and `target_token` buffers are what a sampling module with [`Report::Distribution`]
//! writes for the `k + 1` scored positions (`noise_position` = the position), `proposal` what it
//! wrote for the draft.
//!
//! # Exactness and costs
//!
//! The kernels perform the definitions' operations in their order, in IEEE double (and in float
//! where the definition divides in f32), with no contraction into fused multiply-adds (the tests
//! check the PTX). Maxima, argmaxima (first index on ties, NaN as -inf), counts and the k-th
//! largest value are block-parallel and exact in any order of combination. The one source of
//! difference from [`crate::tokens`] on the CPU is CUDA's double `exp` and `log` (in the softmax,
//! Gumbel-max and the exponential race), which are not glibc's and may differ from them in the
//! last bit. So token choices, selected positions and acceptance decisions are those of the CPU
//! unless a value involved lies within an ulp or so of a tie or a threshold, and probabilities
//! agree to a few ulps (the tests, which run the text on the host with glibc's functions, find
//! every token, mask, decision and probability bit-identical to the CPU's).
//!
//! The sums whose order the definitions pin are computed in that order, by one thread of the
//! block, after the block computes their terms in parallel into scratch:
//!
//! - every softmax that a filter, a report or the residual needs is a sequential sum of `vocab`
//!   f64 additions, bound by the latency of one dependent add per entry (a few cycles): an
//!   estimated 0.1 to 0.5 ms per row for a 128K vocabulary, not yet measured on a GPU;
//! - top-p sorts the `(logit, index)` pairs of the row by a block-wide bitonic sort of 64-bit keys
//!   in scratch (`log2(P) (log2(P) + 1) / 2` passes over `P`, the next power of two of `vocab`:
//!   153 passes of 64K compare-exchanges for a 128K vocabulary), gathers the probabilities in
//!   that order in parallel, and walks them with one thread: forward until the crossing
//!   ([`Nucleus::DropCrossing`], usually a few entries) or backward from the least probable
//!   token until the mass left out exceeds `1 - top_p` ([`Nucleus::KeepCrossing`], usually most
//!   of the row);
//! - top-k finds the k-th largest logit by a radix select of 8 passes (4-bit digits), `8 * vocab`
//!   reads and no sort; position selection finds the k-th largest confidence by 16 such passes
//!   and the last selected position among its ties by 8 more;
//! - the residual of a rejected draft is one or two sequential sums of `vocab` terms.
//!
//! A row of a 128K vocabulary with every filter therefore costs on the order of a millisecond of
//! one block, and its probabilities are computed up to three times (top-p, min-p, the report):
//! the launcher should sample many rows per launch so that the blocks fill the device, and use a
//! module with only the filters its sampler turns on ([`Filters::of`]).
//!
//! The text of a module depends only on its description, so the same description always gives
//! the same source (and the same PTX cache entry).
//!
//! [`philox::uniform_f64`]: crate::philox::uniform_f64

use std::fmt;

use crate::cuda::BLOCK_THREADS;
use crate::tokens::{self, Nucleus, Sampler};

/// The entry point of a row-sampling module.
pub const SAMPLE_ENTRY: &str = "sched_sample_rows";

/// The entry point that selects the `count[row]` most confident eligible positions.
pub const SELECT_TOP_K_ENTRY: &str = "sched_select_top_k";

/// The entry point that selects LLaDA's transfer count of most confident eligible positions.
pub const SELECT_TRANSFER_ENTRY: &str = "sched_select_transfer";

/// The entry point that selects Fast-dLLM's positions above a threshold.
pub const SELECT_THRESHOLD_ENTRY: &str = "sched_select_threshold";

/// The entry point that verifies greedy drafts.
pub const VERIFY_GREEDY_ENTRY: &str = "sched_verify_greedy";

/// The entry point that verifies sampled drafts by speculative sampling.
pub const VERIFY_SAMPLE_ENTRY: &str = "sched_verify_sample";

/// The blocks per multiprocessor of [`row_blocks`]: 8 blocks of 256 threads fill an SM's 2048
/// threads.
const BLOCKS_PER_MULTIPROCESSOR: u32 = 8;

// The fixed text below (reduction trees, shared count tables) is written for blocks of 256.
const _: () = assert!(BLOCK_THREADS == 256, "the token kernels' reduction trees are written for 256 threads");

/// The grid of a launch over `rows` rows on a device with `multiprocessors` SMs: one block per
/// row, capped at 8 blocks per multiprocessor (the rows loop over the grid, and the scratch holds
/// one slot per block), at least 1.
pub fn row_blocks(rows: u32, multiprocessors: u32) -> u32 {
    rows.min(multiprocessors.saturating_mul(BLOCKS_PER_MULTIPROCESSOR)).max(1)
}

/// How a sampling module turns a row of logits into the logits it chooses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// The logits as they are: the runtime's greedy choices.
    Raw,
    /// `(logit as f64 / temperature) as f32`: the runtime's `candidates` at a positive
    /// temperature.
    Divided,
    /// [`tokens::process_logits`] with the given filters compiled in (temperature always): the
    /// runtime's sampling choices.
    Processed(Filters),
}

/// The filters of [`tokens::process_logits`] that a sampling module contains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filters {
    /// Top-k, with its parameter `top_k`.
    pub top_k: bool,
    /// Top-p with this boundary rule, with its parameter `top_p`.
    pub top_p: Option<Nucleus>,
    /// Min-p, with its parameter `min_p`.
    pub min_p: bool,
}

impl Filters {
    /// No filter: temperature only.
    pub const NONE: Filters = Filters { top_k: false, top_p: None, min_p: false };

    /// The filters that `sampler`'s parameters turn on, and no others.
    pub fn of(sampler: &Sampler) -> Filters {
        Filters {
            top_k: sampler.top_k > 0,
            top_p: (sampler.top_p < 1.0).then_some(sampler.nucleus),
            min_p: sampler.min_p > 0.0,
        }
    }
}

/// How a sampling module chooses the token from the processed logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choose {
    /// [`tokens::argmax`].
    Greedy,
    /// [`tokens::gumbel_argmax`], with the row's noise.
    Gumbel,
}

/// What a sampling module writes besides the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// Nothing: `extend`.
    Token,
    /// `probability[row]` = [`tokens::softmax`] of the raw logits at the token: the confidence of
    /// the runtime's `candidates` (which stores it rounded to f32).
    RawProbability,
    /// `probability[row]` = [`tokens::softmax`] of the processed logits at the token.
    Probability,
    /// `probability[row * vocab + v]` = the distribution the token was drawn from, the runtime's
    /// `Choice::probabilities`: [`tokens::softmax`] of the processed logits for
    /// [`Choose::Gumbel`], the point mass on the token for [`Choose::Greedy`] (`propose`'s `q` and
    /// `verify`'s `p`).
    Distribution,
}

/// The description of a row-sampling module; [`sample_source`] emits its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleKernel {
    /// The logits the token is chosen from.
    pub logits: Logits,
    /// How the token is chosen.
    pub choose: Choose,
    /// What is written besides the token.
    pub report: Report,
}

/// The runtime parameters of a sampling launch (the ABI's `temperature`, `top_k`, `top_p`,
/// `min_p`), which [`SampleKernel::sample_row`] applies as the launch does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleParams {
    /// The divisor of [`Logits::Divided`] and [`Logits::Processed`] (unused for [`Logits::Raw`]).
    pub temperature: f64,
    /// The parameter of [`Filters::top_k`]; 0, or at least the vocabulary, disables it.
    pub top_k: u64,
    /// The parameter of [`Filters::top_p`]; 1 or more, or NaN, disables it.
    pub top_p: f64,
    /// The parameter of [`Filters::min_p`]; 0 or less, or NaN, disables it.
    pub min_p: f64,
}

impl SampleKernel {
    /// One row of a sampling launch on the CPU: the token and the report (empty for
    /// [`Report::Token`], one probability for [`Report::RawProbability`] and
    /// [`Report::Probability`], the distribution over the row for [`Report::Distribution`]), with
    /// `uniform(v)` the draw of vocabulary entry `v` (in a launch,
    /// `uniform_f64(seed, site, step, noise_sample[r], noise_position[r] * vocab + v)`, the index
    /// wrapping in 32 bits).
    ///
    /// Definition (normative: the kernel of [`sample_source`] computes exactly this, and writes
    /// the token to `token[r]` and the report to `probability`):
    ///
    /// 1. the processed logits: `row` itself for [`Logits::Raw`];
    ///    `(logit as f64 / temperature) as f32` for each logit for [`Logits::Divided`]; for
    ///    [`Logits::Processed`], [`tokens::process_logits`] of `row` with a [`Sampler`] of
    ///    `params.temperature` whose filters are the module's, each with its parameter (`top_k`
    ///    saturated to `usize`), and the others off whatever their parameters (`top_k = 0`,
    ///    `top_p = 1`, `min_p = 0`), the nucleus rule being the module's;
    /// 2. the token: [`tokens::argmax`] ([`Choose::Greedy`]) or [`tokens::gumbel_argmax`] with
    ///    `uniform` ([`Choose::Gumbel`]) of the processed logits;
    /// 3. the report: nothing for [`Report::Token`]; [`tokens::softmax`] of `row`
    ///    ([`Report::RawProbability`]) or of the processed logits ([`Report::Probability`]) at the
    ///    token, 0 if the row is empty; for [`Report::Distribution`], [`tokens::softmax`] of the
    ///    processed logits with [`Choose::Gumbel`], and with [`Choose::Greedy`] the point mass on
    ///    the token (1 there, 0 elsewhere), `row.len()` values either way.
    ///
    /// An empty row gives token 0 and the report `[0.0]`, or the empty distribution. `uniform`
    /// is called only by [`tokens::gumbel_argmax`]. The temperature is not checked: the runtime
    /// passes a positive, finite one, and another gives whatever the operations above give,
    /// without panicking.
    pub fn sample_row(&self, params: &SampleParams, row: &[f32], uniform: impl Fn(u32) -> f64) -> (u32, Vec<f64>) {
        let processed: Vec<f32> = match self.logits {
            Logits::Raw => row.to_vec(),
            // Rounding the f64 quotient to the nearest f32 is the definition.
            Logits::Divided => row.iter().map(|&x| (f64::from(x) / params.temperature) as f32).collect(),
            Logits::Processed(filters) => {
                // A filter that the module does not contain is off, whatever its parameter.
                let sampler = Sampler {
                    temperature: params.temperature,
                    top_k: if filters.top_k { usize::try_from(params.top_k).unwrap_or(usize::MAX) } else { 0 },
                    top_p: if filters.top_p.is_some() { params.top_p } else { 1.0 },
                    min_p: if filters.min_p { params.min_p } else { 0.0 },
                    nucleus: filters.top_p.unwrap_or(Nucleus::KeepCrossing),
                };
                let mut processed = row.to_vec();
                tokens::process_logits(&mut processed, &sampler);
                processed
            }
        };
        let token = match self.choose {
            Choose::Greedy => tokens::argmax(&processed),
            Choose::Gumbel => tokens::gumbel_argmax(&processed, uniform),
        };
        let at = |probabilities: Vec<f64>| vec![probabilities.get(token as usize).copied().unwrap_or(0.0)];
        let report = match (self.report, self.choose) {
            (Report::Token, _) => Vec::new(),
            (Report::RawProbability, _) => at(tokens::softmax(row)),
            (Report::Probability, _) => at(tokens::softmax(&processed)),
            (Report::Distribution, Choose::Gumbel) => tokens::softmax(&processed),
            (Report::Distribution, Choose::Greedy) => {
                (0..row.len()).map(|j| if j == token as usize { 1.0 } else { 0.0 }).collect()
            }
        };
        (token, report)
    }

    /// Whether the module computes a softmax, and so needs the scratch of its terms.
    fn needs_exps(&self) -> bool {
        let filters = match self.logits {
            Logits::Processed(filters) => filters.top_p.is_some() || filters.min_p,
            Logits::Raw | Logits::Divided => false,
        };
        let report = match self.report {
            Report::Token => false,
            Report::RawProbability | Report::Probability => true,
            Report::Distribution => self.choose == Choose::Gumbel,
        };
        filters || report
    }

    /// Whether the module has the top-p filter, and so needs the scratch of its sort.
    fn sorts(&self) -> bool {
        matches!(self.logits, Logits::Processed(Filters { top_p: Some(_), .. }))
    }

    /// Whether the processed logits differ from the raw ones, and so live in scratch.
    fn transforms(&self) -> bool {
        self.logits != Logits::Raw
    }

    /// The arrays of one scratch slot, in order: name, C element type, element size and whether
    /// its length is the padded length (a power of two) rather than `vocab`.
    fn scratch_arrays(&self) -> Vec<(&'static str, &'static str, u64, bool)> {
        let mut arrays = Vec::new();
        if self.needs_exps() {
            arrays.push(("exps", "double", 8, false));
        }
        if self.sorts() {
            arrays.push(("ordered", "double", 8, false));
            arrays.push(("keys", "unsigned long long", 8, true));
        }
        if self.transforms() {
            arrays.push(("work", "float", 4, false));
        }
        arrays
    }
}

impl fmt::Display for SampleKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.logits {
            Logits::Raw => write!(f, "raw logits")?,
            Logits::Divided => write!(f, "logits divided by the temperature in f64")?,
            Logits::Processed(filters) => {
                let mut steps = vec!["temperature"];
                if filters.top_k {
                    steps.push("top-k");
                }
                match filters.top_p {
                    Some(Nucleus::KeepCrossing) => steps.push("top-p keeping the crossing token"),
                    Some(Nucleus::DropCrossing) => steps.push("top-p dropping the crossing token"),
                    None => {}
                }
                if filters.min_p {
                    steps.push("min-p");
                }
                write!(f, "logits processed by {}", steps.join(", "))?;
            }
        }
        match self.choose {
            Choose::Greedy => write!(f, "; greedy choice")?,
            Choose::Gumbel => write!(f, "; Gumbel-max choice")?,
        }
        match self.report {
            Report::Token => write!(f, "; token only"),
            Report::RawProbability => write!(f, "; token and its probability under the raw logits"),
            Report::Probability => write!(f, "; token and its probability under the processed logits"),
            Report::Distribution => write!(f, "; token and its distribution"),
        }
    }
}

/// The bytes of one block's scratch slot of a sampling module over `vocab` entries (0 when the
/// module needs none): 8 bytes per entry for the softmax terms when the module computes a
/// softmax; for top-p, 8 more per entry for the sorted probabilities and 8 per entry of the next
/// power of two of `vocab` for the sort keys; and 4 per entry for the processed logits unless
/// they are the raw ones; rounded up to 16. The launch needs `gridDim.x` slots.
pub fn sample_scratch_bytes(kernel: &SampleKernel, vocab: u32) -> u64 {
    let vocab = u64::from(vocab);
    let padded = vocab.next_power_of_two();
    // At most 8 + 8 + 4 bytes per entry and 8 per padded entry: below 2^38, no overflow.
    let bytes: u64 =
        kernel.scratch_arrays().iter().map(|&(_, _, size, pads)| size * if pads { padded } else { vocab }).sum();
    bytes.div_ceil(16) * 16
}

/// The bytes of one block's scratch slot of [`VERIFY_SAMPLE_ENTRY`]: the residual, 8 bytes per
/// vocabulary entry. The launch needs `gridDim.x` slots.
pub fn verify_scratch_bytes(vocab: u32) -> u64 {
    8 * u64::from(vocab)
}

/// The text of `-inf` in f32, from its bits.
const NEG_INF_F32: &str = "-sched_inf_f32()";

/// Returns the CUDA C module of a row-sampling kernel, with the entry point [`SAMPLE_ENTRY`] and
/// the ABI of the module documentation.
pub fn sample_source(kernel: &SampleKernel) -> String {
    let mut code = Code::default();
    code.line(0, &format!("// sched token sampling: {kernel}."));
    code.line(0, "// Generated by sched; the ABI is documented in kernels/src/cuda_tokens.rs.");
    code.text += INFINITIES;
    let gumbel = kernel.choose == Choose::Gumbel;
    if kernel.needs_exps() {
        code.text += EXP;
    }
    if gumbel {
        code.text += LOG;
        code.text += PHILOX;
        code.text += UNIFORM_F64;
    }
    code.text += BLOCK_BEST;
    code.text += ARGMAX;
    if gumbel {
        code.text += GUMBEL_ARGMAX;
    }
    if kernel.needs_exps() {
        code.text += BLOCK_MAX;
        code.text += BLOCK_COUNT;
        code.text += SOFTMAX;
    }
    if let Logits::Processed(filters) = kernel.logits {
        if filters.top_k || filters.top_p.is_some() {
            code.text += KEY32;
        }
        if filters.top_k {
            code.text += SELECT_LARGEST;
        }
        if filters.top_p.is_some() {
            code.text += BITONIC_SORT;
        }
    }

    code.blank();
    code.line(0, &format!("extern \"C\" __global__ void __launch_bounds__({BLOCK_THREADS}) {SAMPLE_ENTRY}("));
    code.parameters(&SAMPLE_PARAMETERS);
    code.line(0, "{");
    code.line(1, "const unsigned long long n = vocab;");
    code.line(1, "if (n == 0) {");
    code.line(2, "// An empty row: token 0, probability 0, as the runtime's empty softmax gives.");
    code.line(2, "for (unsigned long long row = blockIdx.x; row < rows && threadIdx.x == 0; row += gridDim.x) {");
    code.line(3, "token[row] = 0;");
    if matches!(kernel.report, Report::RawProbability | Report::Probability) {
        code.line(3, "probability[row] = 0.0;");
    }
    code.line(2, "}");
    code.line(2, "return;");
    code.line(1, "}");
    emit_scratch(&mut code, kernel);
    if gumbel {
        code.line(1, "const uint2 philox_key = make_uint2(seed[0], seed[1]);");
    }
    code.line(1, "for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {");
    code.line(2, "const float* raw = logits + row * n;");
    emit_processing(&mut code, kernel.logits);
    match kernel.choose {
        Choose::Greedy => code.line(2, "const unsigned long long chosen = sched_argmax(processed, n);"),
        Choose::Gumbel => {
            code.line(
                2,
                "// Entry v draws uniform_f64(seed, site, step, noise_sample[row], noise_position[row] * vocab + v).",
            );
            code.line(2, "const unsigned long long chosen = sched_gumbel_argmax(");
            code.line(3, "processed, n, philox_key, site, step, noise_sample[row], noise_position[row] * vocab);");
        }
    }
    code.line(2, "if (threadIdx.x == 0) {");
    code.line(3, "token[row] = (unsigned int)chosen;");
    code.line(2, "}");
    emit_report(&mut code, kernel);
    code.line(2, "// The next row reuses the scratch.");
    code.line(2, "__syncthreads();");
    code.line(1, "}");
    code.line(0, "}");
    code.text
}

/// The parameters of [`SAMPLE_ENTRY`], in order.
const SAMPLE_PARAMETERS: [&str; 15] = [
    "const float* logits",
    "const unsigned int* noise_sample",
    "const unsigned int* noise_position",
    "const unsigned int* seed",
    "unsigned int site",
    "unsigned int step",
    "double temperature",
    "unsigned long long top_k",
    "double top_p",
    "double min_p",
    "unsigned int rows",
    "unsigned int vocab",
    "void* scratch",
    "unsigned int* token",
    "double* probability",
];

/// Emits the pointers into the block's scratch slot, if the module needs scratch.
fn emit_scratch(code: &mut Code, kernel: &SampleKernel) {
    let arrays = kernel.scratch_arrays();
    if arrays.is_empty() {
        return;
    }
    let pads = arrays.iter().any(|&(_, _, _, pads)| pads);
    if pads {
        code.line(1, "// The sort's length: the next power of two of n.");
        code.line(1, "unsigned long long padded = 1;");
        code.line(1, "while (padded < n) {");
        code.line(2, "padded *= 2;");
        code.line(1, "}");
    }
    let length = |pads: bool| if pads { "padded" } else { "n" };
    let terms: Vec<String> = arrays.iter().map(|&(_, _, size, pads)| format!("{size} * {}", length(pads))).collect();
    code.line(1, "// This block's scratch slot (sample_scratch_bytes): the arrays below, rounded up to 16 bytes.");
    code.line(1, &format!("const unsigned long long slot_bytes = ({} + 15) / 16 * 16;", terms.join(" + ")));
    code.line(1, "unsigned char* slot = (unsigned char*)scratch + blockIdx.x * slot_bytes;");
    let mut offset: Vec<String> = Vec::new();
    for &(name, c_type, size, pads) in &arrays {
        let at = if offset.is_empty() { String::new() } else { format!(" + {}", offset.join(" + ")) };
        code.line(1, &format!("{c_type}* {name} = ({c_type}*)(slot{at});"));
        offset.push(format!("{size} * {}", length(pads)));
    }
}

/// Emits the processed logits of a row as `processed`, with the filters of `logits`.
fn emit_processing(code: &mut Code, logits: Logits) {
    let filters = match logits {
        Logits::Raw => {
            code.line(2, "const float* processed = raw;");
            return;
        }
        Logits::Divided => {
            code.line(2, "// The candidates' scaling: divided by the temperature in double, rounded to float;");
            code.line(2, "// NaN becomes -inf, which every later step treats alike.");
            code.line(2, "for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {");
            code.line(3, "const float scaled = (float)((double)raw[j] / temperature);");
            code.line(3, &format!("work[j] = isnan(scaled) ? {NEG_INF_F32} : scaled;"));
            code.line(2, "}");
            code.line(2, "__syncthreads();");
            code.line(2, "const float* processed = work;");
            return;
        }
        Logits::Processed(filters) => filters,
    };
    code.line(2, "// 1. Temperature: divided in float by the temperature rounded to float; NaN becomes -inf.");
    code.line(2, "const float divisor = (float)temperature;");
    code.line(2, "for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {");
    code.line(3, "const float scaled = raw[j] / divisor;");
    code.line(3, &format!("work[j] = isnan(scaled) ? {NEG_INF_F32} : scaled;"));
    code.line(2, "}");
    code.line(2, "__syncthreads();");
    if filters.top_k {
        code.text += TOP_K_STEP;
    }
    match filters.top_p {
        Some(Nucleus::KeepCrossing) => {
            code.text += TOP_P_START;
            code.text += KEEP_CROSSING_WALK;
            code.text += TOP_P_END;
        }
        Some(Nucleus::DropCrossing) => {
            code.text += TOP_P_START;
            code.text += DROP_CROSSING_WALK;
            code.text += TOP_P_END;
        }
        None => {}
    }
    if filters.min_p {
        code.text += MIN_P_STEP;
    }
    code.line(2, "const float* processed = work;");
}

/// Emits what the module writes besides the token.
fn emit_report(code: &mut Code, kernel: &SampleKernel) {
    match (kernel.report, kernel.choose) {
        (Report::Token, _) => {}
        (Report::RawProbability, _) => {
            code.line(2, "// The token's probability under the softmax of the raw logits.");
            code.line(2, "const sched_softmax softmax = sched_softmax_of(raw, n, exps);");
            code.line(2, "if (threadIdx.x == 0) {");
            code.line(3, "probability[row] = sched_probability(softmax, raw[chosen], exps[chosen]);");
            code.line(2, "}");
        }
        (Report::Probability, _) => {
            code.line(2, "// The token's probability under the softmax of the processed logits.");
            code.line(2, "const sched_softmax softmax = sched_softmax_of(processed, n, exps);");
            code.line(2, "if (threadIdx.x == 0) {");
            code.line(3, "probability[row] = sched_probability(softmax, processed[chosen], exps[chosen]);");
            code.line(2, "}");
        }
        (Report::Distribution, Choose::Gumbel) => {
            code.line(2, "// The distribution the token was drawn from: the softmax of the processed logits.");
            code.line(2, "const sched_softmax softmax = sched_softmax_of(processed, n, exps);");
            code.line(2, "for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {");
            code.line(3, "probability[row * n + j] = sched_probability(softmax, processed[j], exps[j]);");
            code.line(2, "}");
        }
        (Report::Distribution, Choose::Greedy) => {
            code.line(2, "// The distribution the token was drawn from: the point mass on the argmax.");
            code.line(2, "for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {");
            code.line(3, "probability[row * n + j] = j == chosen ? 1.0 : 0.0;");
            code.line(2, "}");
        }
    }
}

/// Returns the CUDA C module of position selection, with the entry points
/// [`SELECT_TOP_K_ENTRY`], [`SELECT_TRANSFER_ENTRY`] and [`SELECT_THRESHOLD_ENTRY`] and the ABI
/// of the module documentation.
pub fn select_source() -> String {
    let mut code = Code::default();
    code.line(0, "// sched position selection: top-k, LLaDA's transfer count and Fast-dLLM's threshold.");
    code.line(0, "// Generated by sched; the ABI is documented in kernels/src/cuda_tokens.rs.");
    code.text += INFINITIES;
    code.text += BLOCK_BEST;
    code.text += BLOCK_COUNT;
    code.text += SELECT_LARGEST;
    code.text += KEY64;
    code.text += KEEP_TOP;
    let shared = ["const double* confidence", "const unsigned int* eligible"];
    let tail = ["unsigned int rows", "unsigned int width", "unsigned int* selected"];
    let entries = [
        (SELECT_TOP_K_ENTRY, "const unsigned int* count", SELECT_TOP_K_BODY),
        (SELECT_TRANSFER_ENTRY, "double keep", SELECT_TRANSFER_BODY),
        (SELECT_THRESHOLD_ENTRY, "double threshold", SELECT_THRESHOLD_BODY),
    ];
    for (entry, rule, body) in entries {
        let parameters: Vec<&str> = shared.iter().chain([&rule]).chain(&tail).copied().collect();
        code.blank();
        code.line(0, &format!("extern \"C\" __global__ void __launch_bounds__({BLOCK_THREADS}) {entry}("));
        code.parameters(&parameters);
        code.text += body;
    }
    code.text
}

/// The entry point of [`guide_source`].
pub const GUIDE_ENTRY: &str = "sched_guide_logits";

/// The CUDA C module of classifier-free guidance, [`tokens::guided_logit`] of every element:
///
/// ```c
/// extern "C" __global__ void sched_guide_logits(
///     const float* un, const float* cond, double scale, unsigned long long len, float* out)
/// ```
///
/// `out[i] = guided_logit(un[i], cond[i], scale)` for `i < len`, by a grid-stride loop over any
/// grid of [`BLOCK_THREADS`]-thread blocks; `out` may be `cond` or `un` (each element is read
/// before it is written). The f64 arithmetic is IEEE under the NVRTC options of every sched
/// kernel (no contraction), so the result is the reference's bit for bit.
pub fn guide_source() -> &'static str {
    r#"// sched: classifier-free guidance of logits (kernels/src/tokens.rs, guided_logit).
extern "C" __global__ void sched_guide_logits(
    const float* un, const float* cond, double scale, unsigned long long len, float* out)
{
    const float negative_infinity = __int_as_float(0xff800000);
    const float positive_infinity = __int_as_float(0x7f800000);
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        const float u = un[i];
        const float c = cond[i];
        float guided;
        if (c == negative_infinity) {
            guided = negative_infinity;
        } else if (u == negative_infinity) {
            guided = positive_infinity;
        } else {
            guided = (float)((double)u + (scale + 1.0) * ((double)c - (double)u));
        }
        out[i] = guided;
    }
}
"#
}

/// Returns the CUDA C module of draft verification, with the entry points
/// [`VERIFY_GREEDY_ENTRY`] and [`VERIFY_SAMPLE_ENTRY`] and the ABI of the module documentation.
pub fn verify_source() -> String {
    let mut code = Code::default();
    code.line(0, "// sched draft verification: greedy and speculative sampling.");
    code.line(0, "// Generated by sched; the ABI is documented in kernels/src/cuda_tokens.rs.");
    code.text += INFINITIES;
    code.text += LOG;
    code.text += PHILOX;
    code.text += UNIFORM_F64;
    code.text += BLOCK_BEST;
    code.text += RESIDUAL_DRAW;
    code.blank();
    code.line(0, &format!("extern \"C\" __global__ void __launch_bounds__({BLOCK_THREADS}) {VERIFY_GREEDY_ENTRY}("));
    code.parameters(&VERIFY_GREEDY_PARAMETERS);
    code.text += VERIFY_GREEDY_BODY;
    code.blank();
    code.line(0, &format!("extern \"C\" __global__ void __launch_bounds__({BLOCK_THREADS}) {VERIFY_SAMPLE_ENTRY}("));
    code.parameters(&VERIFY_SAMPLE_PARAMETERS);
    code.text += VERIFY_SAMPLE_BODY;
    code.text
}

/// The parameters of [`VERIFY_GREEDY_ENTRY`], in order.
const VERIFY_GREEDY_PARAMETERS: [&str; 8] = [
    "const unsigned int* draft",
    "const unsigned int* target",
    "unsigned int has_eos",
    "unsigned int eos",
    "unsigned int rows",
    "unsigned int k",
    "unsigned int* tokens",
    "unsigned int* counts",
];

/// The parameters of [`VERIFY_SAMPLE_ENTRY`], in order.
const VERIFY_SAMPLE_PARAMETERS: [&str; 16] = [
    "const unsigned int* draft",
    "const double* target",
    "const double* proposal",
    "const unsigned int* target_token",
    "const unsigned int* noise_sample",
    "const unsigned int* seed",
    "unsigned int site",
    "unsigned int step",
    "unsigned int has_eos",
    "unsigned int eos",
    "unsigned int rows",
    "unsigned int k",
    "unsigned int vocab",
    "void* scratch",
    "unsigned int* tokens",
    "unsigned int* counts",
];

/// Source text under construction.
#[derive(Default)]
struct Code {
    text: String,
}

impl Code {
    /// Appends `line`, indented by `depth` levels of four spaces, and a newline.
    fn line(&mut self, depth: usize, line: &str) {
        self.text.extend(std::iter::repeat_n("    ", depth));
        self.text += line;
        self.text.push('\n');
    }

    /// Appends an empty line.
    fn blank(&mut self) {
        self.text.push('\n');
    }

    /// Appends a parameter list, one parameter per line, and the closing parenthesis.
    fn parameters(&mut self, parameters: &[&str]) {
        for (k, parameter) in parameters.iter().enumerate() {
            let end = if k + 1 == parameters.len() { ")" } else { "," };
            self.line(1, &format!("{parameter}{end}"));
        }
    }
}

/// The infinities from their bits, so that no literal depends on the compiler's parsing.
const INFINITIES: &str = r#"
// +inf in float and double, from their exact bits.
__device__ __forceinline__ float sched_inf_f32() {
    return __int_as_float(0x7f800000);
}

__device__ __forceinline__ double sched_inf_f64() {
    return __longlong_as_double(0x7ff0000000000000ll);
}
"#;

/// CUDA's double `exp`, in a function that is not inlined.
const EXP: &str = r#"
// CUDA's double exp, not inlined: its body (CUDA's, which uses fused multiply-adds by design) is
// then the only place of the PTX with fused multiply-adds, with sched_log's, and is compiled once.
__device__ __noinline__ double sched_exp(double x) {
    return exp(x);
}
"#;

/// CUDA's double `log`, in a function that is not inlined.
const LOG: &str = r#"
// CUDA's double log, not inlined, for the reason sched_exp is not.
__device__ __noinline__ double sched_log(double x) {
    return log(x);
}
"#;

/// Philox4x32-10, as [`crate::cuda`] emits it.
const PHILOX: &str = r#"
// Philox4x32-10 (Random123), as kernels/src/philox.rs defines it.
__device__ __forceinline__ uint4 sched_philox(uint4 counter, uint2 key) {
    #pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            key.x += 0x9E3779B9u;
            key.y += 0xBB67AE85u;
        }
        const unsigned int hi0 = __umulhi(0xD2511F53u, counter.x);
        const unsigned int lo0 = 0xD2511F53u * counter.x;
        const unsigned int hi1 = __umulhi(0xCD9E8D57u, counter.z);
        const unsigned int lo1 = 0xCD9E8D57u * counter.z;
        counter = make_uint4(hi1 ^ counter.y ^ key.x, lo1, hi0 ^ counter.w ^ key.y, lo0);
    }
    return counter;
}
"#;

/// [`crate::philox::uniform_f64`].
const UNIFORM_F64: &str = r#"
// A uniform draw on (0, 1) in double (philox::uniform_f64): the 32 bits of r.x above the top 20
// bits of r.y, plus one half, times 2^-52; every step is exact.
__device__ __forceinline__ double sched_uniform_f64(
    uint2 key, unsigned int site, unsigned int step, unsigned int sample, unsigned int index) {
    const uint4 r = sched_philox(make_uint4(index, sample, step, site), key);
    const unsigned long long n = ((unsigned long long)r.x << 20) | ((unsigned long long)r.y >> 12);
    return ((double)n + 0.5) * __longlong_as_double(0x3cb0000000000000ll); // 2^-52
}
"#;

/// The best (value, index) pair of a block.
const BLOCK_BEST: &str = r#"
// Whether (value, index) beats (best, best_index): a larger value, or an equal one at a lower
// index. Values are never NaN. The absent pair is (-inf, ~0ull), which every present pair beats.
__device__ __forceinline__ bool sched_beats(
    double value, unsigned long long index, double best, unsigned long long best_index) {
    return value > best || (value == best && index < best_index);
}

// The best (value, index) pair of the block's threads, combined in a fixed tree (the result does
// not depend on the order: the pairs are totally ordered); every thread gets it.
__device__ void sched_block_best(double& value, unsigned long long& index) {
    __shared__ double values[256];
    __shared__ unsigned long long indices[256];
    values[threadIdx.x] = value;
    indices[threadIdx.x] = index;
    __syncthreads();
    for (unsigned int half = 128; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            const unsigned int other = threadIdx.x + half;
            if (sched_beats(values[other], indices[other], values[threadIdx.x], indices[threadIdx.x])) {
                values[threadIdx.x] = values[other];
                indices[threadIdx.x] = indices[other];
            }
        }
        __syncthreads();
    }
    value = values[0];
    index = indices[0];
    __syncthreads();
}
"#;

/// [`tokens::argmax`], block-parallel.
const ARGMAX: &str = r#"
// The index of the largest of n logits, the first on ties, NaN counting as -inf; 0 when no logit
// is above -inf or n is 0 (tokens.rs's argmax).
__device__ unsigned long long sched_argmax(const float* logits, unsigned long long n) {
    double best = -sched_inf_f64();
    unsigned long long best_index = ~0ull;
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
        const float logit = logits[j];
        const double value = isnan(logit) ? -sched_inf_f64() : (double)logit;
        if (sched_beats(value, j, best, best_index)) {
            best = value;
            best_index = j;
        }
    }
    sched_block_best(best, best_index);
    return best_index == ~0ull ? 0 : best_index;
}
"#;

/// [`tokens::gumbel_argmax`], block-parallel.
const GUMBEL_ARGMAX: &str = r#"
// Gumbel-max over n logits (tokens.rs's gumbel_argmax): every logit above -inf (not NaN) is a
// candidate j, with u = uniform_f64 at (site, step, sample, index + j) and the score
// logit - log(-log(u)) in double (NaN counting as -inf); the best score wins, the first on ties.
// Without candidates, the argmax.
__device__ unsigned long long sched_gumbel_argmax(
    const float* logits, unsigned long long n, uint2 key, unsigned int site, unsigned int step,
    unsigned int sample, unsigned int index) {
    double best = -sched_inf_f64();
    unsigned long long best_index = ~0ull;
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
        const float logit = logits[j];
        if (isnan(logit) || logit == -sched_inf_f32()) {
            continue;
        }
        const double u = sched_uniform_f64(key, site, step, sample, index + (unsigned int)j);
        double score = (double)logit - sched_log(-sched_log(u));
        if (isnan(score)) {
            score = -sched_inf_f64();
        }
        if (sched_beats(score, j, best, best_index)) {
            best = score;
            best_index = j;
        }
    }
    sched_block_best(best, best_index);
    return best_index == ~0ull ? sched_argmax(logits, n) : best_index;
}
"#;

/// The largest float of a block.
const BLOCK_MAX: &str = r#"
// The largest of the values of the block's threads (none is NaN), combined in a fixed tree;
// every thread gets it.
__device__ float sched_block_max(float value) {
    __shared__ float values[256];
    values[threadIdx.x] = value;
    __syncthreads();
    for (unsigned int half = 128; half > 0; half /= 2) {
        if (threadIdx.x < half && values[threadIdx.x + half] > values[threadIdx.x]) {
            values[threadIdx.x] = values[threadIdx.x + half];
        }
        __syncthreads();
    }
    const float result = values[0];
    __syncthreads();
    return result;
}
"#;

/// The sum of a block's counts.
const BLOCK_COUNT: &str = r#"
// The sum of the counts of the block's threads; every thread gets it.
__device__ unsigned long long sched_block_count(unsigned long long count) {
    __shared__ unsigned long long counts[256];
    counts[threadIdx.x] = count;
    __syncthreads();
    for (unsigned int half = 128; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            counts[threadIdx.x] += counts[threadIdx.x + half];
        }
        __syncthreads();
    }
    const unsigned long long result = counts[0];
    __syncthreads();
    return result;
}
"#;

/// [`tokens::softmax`], with the sum in the definition's order.
const SOFTMAX: &str = r#"
// The softmax of a row (tokens.rs's softmax), in the form that gives each probability:
// kind 0 when every logit is -inf or NaN (scale = 1 / n, uniform), kind 1 when some logit is
// +inf (scale = 1 / the number of +inf logits), kind 2 otherwise (scale = the sum s of the terms
// exps[j] = exp(logit_j - max) in double, 0 for NaN, added left to right by one thread).
struct sched_softmax {
    int kind;
    double scale;
};

__device__ sched_softmax sched_softmax_of(const float* logits, unsigned long long n, double* exps) {
    __shared__ double sum;
    float local = -sched_inf_f32();
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
        if (logits[j] > local) {
            local = logits[j];
        }
    }
    const float max = sched_block_max(local);
    sched_softmax softmax;
    if (max == -sched_inf_f32()) {
        softmax.kind = 0;
        softmax.scale = 1.0 / (double)n;
        return softmax;
    }
    if (max == sched_inf_f32()) {
        unsigned long long count = 0;
        for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
            count += logits[j] == sched_inf_f32() ? 1 : 0;
        }
        softmax.kind = 1;
        softmax.scale = 1.0 / (double)sched_block_count(count);
        return softmax;
    }
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
        exps[j] = isnan(logits[j]) ? 0.0 : sched_exp((double)logits[j] - (double)max);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        // The definition's order: ((e_0 + e_1) + e_2) + ..., one dependent add per entry.
        double s = 0.0;
        for (unsigned long long j = 0; j < n; ++j) {
            s = s + exps[j];
        }
        sum = s;
    }
    __syncthreads();
    softmax.kind = 2;
    softmax.scale = sum;
    __syncthreads();
    return softmax;
}

// The probability of an entry with this logit and term under the softmax.
__device__ __forceinline__ double sched_probability(sched_softmax softmax, float logit, double term) {
    if (softmax.kind == 0) {
        return softmax.scale;
    }
    if (softmax.kind == 1) {
        return logit == sched_inf_f32() ? softmax.scale : 0.0;
    }
    return term / softmax.scale;
}
"#;

/// The order-preserving keys of floats.
const KEY32: &str = r#"
// The order-preserving key of a float that is not NaN: a larger float has a larger key, and -0
// has the key of +0 (they are equal logits).
__device__ __forceinline__ unsigned int sched_key32(float x) {
    const unsigned int bits = x == 0.0f ? 0u : __float_as_uint(x);
    return (bits & 0x80000000u) != 0 ? ~bits : (bits | 0x80000000u);
}

// The float of a key.
__device__ __forceinline__ float sched_unkey32(unsigned int key) {
    return __uint_as_float((key & 0x80000000u) != 0 ? (key & 0x7fffffffu) : ~key);
}
"#;

/// The order-preserving keys of doubles.
const KEY64: &str = r#"
// The order-preserving key of a confidence: a larger double has a larger key, NaN has the key of
// -inf and -0 that of +0 (tokens.rs ranks them so).
__device__ __forceinline__ unsigned long long sched_key64(double x) {
    const unsigned long long bits = isnan(x) ? 0xfff0000000000000ull
        : x == 0.0 ? 0ull : (unsigned long long)__double_as_longlong(x);
    return (bits >> 63) != 0 ? ~bits : (bits | 0x8000000000000000ull);
}
"#;

/// Radix selection of the k-th largest key.
const SELECT_LARGEST: &str = r#"
// The shared memory of the radix select: per-thread digit counts, their totals per digit, and
// the digit and rank that thread 0 chooses.
struct sched_radix_tables {
    unsigned int counts[16 * 256];
    unsigned long long totals[16];
    unsigned long long digit;
    unsigned long long rank;
};

// The block's one set of radix tables, which every instantiation of sched_select_largest shares.
__device__ __forceinline__ sched_radix_tables& sched_radix_shared() {
    __shared__ sched_radix_tables tables;
    return tables;
}

// The rank-th largest (counted with multiplicity, from 1) of the bits-bit keys of the entries
// 0..n-1 that key_of(j, order_key) includes (setting order_key), by a radix select on 4-bit
// digits from the top: each pass counts the digits of the keys that match the digits chosen so
// far, in per-thread columns of shared memory, and keeps the digit whose bin holds the wanted
// rank. The caller ensures that 1 <= rank <= the number of included entries. tied_rank gets the
// wanted entry's rank among the entries with the selected key.
template <typename KeyOf>
__device__ unsigned long long sched_select_largest(
    const KeyOf& key_of, unsigned long long n, int bits, unsigned long long rank,
    unsigned long long& tied_rank) {
    sched_radix_tables& tables = sched_radix_shared();
    unsigned long long prefix = 0;
    unsigned long long mask = 0;
    for (int shift = bits - 4; shift >= 0; shift -= 4) {
        for (unsigned int digit = 0; digit < 16; ++digit) {
            tables.counts[digit * 256 + threadIdx.x] = 0;
        }
        for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
            unsigned long long order_key;
            if (key_of(j, order_key) && (order_key & mask) == prefix) {
                ++tables.counts[((order_key >> shift) & 15) * 256 + threadIdx.x];
            }
        }
        __syncthreads();
        if (threadIdx.x < 16) {
            unsigned long long total = 0;
            for (unsigned int t = 0; t < 256; ++t) {
                total += tables.counts[threadIdx.x * 256 + t];
            }
            tables.totals[threadIdx.x] = total;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned int digit = 15;
            while (digit > 0 && rank > tables.totals[digit]) {
                rank -= tables.totals[digit];
                --digit;
            }
            tables.digit = digit;
            tables.rank = rank;
        }
        __syncthreads();
        prefix |= tables.digit << shift;
        mask |= 15ull << shift;
        rank = tables.rank;
        __syncthreads();
    }
    tied_rank = rank;
    return prefix;
}
"#;

/// A block-wide bitonic sort in global memory.
const BITONIC_SORT: &str = r#"
// Sorts keys[0..padded) in increasing order by a bitonic network, padded a power of two: every
// pass is padded / 2 compare-exchanges spread over the block.
__device__ void sched_bitonic_sort(unsigned long long* keys, unsigned long long padded) {
    for (unsigned long long size = 2; size <= padded; size *= 2) {
        for (unsigned long long stride = size / 2; stride > 0; stride /= 2) {
            for (unsigned long long i = threadIdx.x; i < padded / 2; i += blockDim.x) {
                const unsigned long long low = ((i & ~(stride - 1)) << 1) | (i & (stride - 1));
                const unsigned long long high = low + stride;
                const unsigned long long a = keys[low];
                const unsigned long long b = keys[high];
                const bool increasing = (low & size) == 0;
                if ((a > b) == increasing && a != b) {
                    keys[low] = b;
                    keys[high] = a;
                }
            }
            __syncthreads();
        }
    }
}
"#;

/// Step 2 of [`tokens::process_logits`].
const TOP_K_STEP: &str = r#"        // 2. Top-k: the top_k-th largest logit, counted with multiplicity, by a radix select; the
        // logits below it are removed and those tied with it stay.
        if (top_k > 0 && top_k < n) {
            auto logit_key = [&](unsigned long long j, unsigned long long& order_key) {
                order_key = sched_key32(work[j]);
                return true;
            };
            unsigned long long tied_rank;
            const float kth = sched_unkey32((unsigned int)sched_select_largest(logit_key, n, 32, top_k, tied_rank));
            for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
                if (work[j] < kth) {
                    work[j] = -sched_inf_f32();
                }
            }
            __syncthreads();
        }
"#;

/// The start of step 3 of [`tokens::process_logits`]: the probabilities in descending order.
const TOP_P_START: &str = r#"        // 3. Top-p: the probabilities in the descending order of the logits (ties by index), then a
        // walk by one thread finds the first removed rank; the removed ranks are all those after it.
        if (top_p < 1.0) {
            const sched_softmax softmax = sched_softmax_of(work, n, exps);
            for (unsigned long long j = threadIdx.x; j < padded; j += blockDim.x) {
                keys[j] = j < n ? ((unsigned long long)~sched_key32(work[j]) << 32) | j : ~0ull;
            }
            __syncthreads();
            sched_bitonic_sort(keys, padded);
            for (unsigned long long rank = threadIdx.x; rank < n; rank += blockDim.x) {
                const unsigned long long j = keys[rank] & 0xffffffffull;
                ordered[rank] = sched_probability(softmax, work[j], exps[j]);
            }
            __syncthreads();
            __shared__ unsigned long long first_removed;
            if (threadIdx.x == 0) {
"#;

/// [`Nucleus::KeepCrossing`]'s walk.
const KEEP_CROSSING_WALK: &str = r#"                // Keep crossing: backward from the least probable, leaving out the first rank,
                // c += p; the rank is removed while c <= 1 - top_p (c only grows).
                const double limit = 1.0 - top_p;
                double c = 0.0;
                unsigned long long first = n;
                for (unsigned long long rank = n - 1; rank >= 1; --rank) {
                    c = c + ordered[rank];
                    if (!(c <= limit)) {
                        break;
                    }
                    first = rank;
                }
                first_removed = first;
"#;

/// [`Nucleus::DropCrossing`]'s walk.
const DROP_CROSSING_WALK: &str = r#"                // Drop crossing: forward, c += p; every rank but the first from the one where
                // c > top_p on is removed (c only grows).
                double c = 0.0;
                unsigned long long first = n;
                for (unsigned long long rank = 0; rank < n; ++rank) {
                    c = c + ordered[rank];
                    if (rank > 0 && c > top_p) {
                        first = rank;
                        break;
                    }
                }
                first_removed = first;
"#;

/// The end of step 3 of [`tokens::process_logits`]: the removal.
const TOP_P_END: &str = r#"            }
            __syncthreads();
            for (unsigned long long rank = first_removed + threadIdx.x; rank < n; rank += blockDim.x) {
                work[keys[rank] & 0xffffffffull] = -sched_inf_f32();
            }
            __syncthreads();
        }
"#;

/// Step 4 of [`tokens::process_logits`].
const MIN_P_STEP: &str = r#"        // 4. Min-p: every token but the argmax less probable than min_p times the argmax is removed.
        if (min_p > 0.0) {
            const sched_softmax softmax = sched_softmax_of(work, n, exps);
            const unsigned long long top = sched_argmax(work, n);
            const double bound = min_p * sched_probability(softmax, work[top], exps[top]);
            for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
                if (j != top && sched_probability(softmax, work[j], exps[j]) < bound) {
                    work[j] = -sched_inf_f32();
                }
            }
            __syncthreads();
        }
"#;

/// [`tokens::top_k_positions`] for one row.
const KEEP_TOP: &str = r#"
// The number of eligible positions of a row.
__device__ unsigned long long sched_eligible_count(const unsigned int* eligible, unsigned long long width) {
    unsigned long long count = 0;
    for (unsigned long long i = threadIdx.x; i < width; i += blockDim.x) {
        count += eligible[i] != 0 ? 1 : 0;
    }
    return sched_block_count(count);
}

// Selects the count eligible positions of the highest confidence, ties going to the lower
// position (tokens.rs's top_k_positions), of a row with open eligible positions: a radix select
// finds the count-th largest confidence key, and a second one, among the positions with that key,
// the last position that is selected.
__device__ void sched_select_top(
    const double* confidence, const unsigned int* eligible, unsigned long long width,
    unsigned long long open, unsigned long long count, unsigned int* selected) {
    if (count == 0 || count >= open) {
        for (unsigned long long i = threadIdx.x; i < width; i += blockDim.x) {
            selected[i] = count > 0 && eligible[i] != 0 ? 1u : 0u;
        }
        return;
    }
    auto confidence_key = [&](unsigned long long i, unsigned long long& order_key) {
        order_key = sched_key64(confidence[i]);
        return eligible[i] != 0;
    };
    unsigned long long tied_rank;
    const unsigned long long boundary = sched_select_largest(confidence_key, width, 64, count, tied_rank);
    // Among the positions tied at the boundary the lower ones win: the key of i is 2^32 - 1 - i.
    auto tie_key = [&](unsigned long long i, unsigned long long& order_key) {
        order_key = 0xffffffffull - i;
        return eligible[i] != 0 && sched_key64(confidence[i]) == boundary;
    };
    unsigned long long unused;
    const unsigned long long last = 0xffffffffull - sched_select_largest(tie_key, width, 32, tied_rank, unused);
    for (unsigned long long i = threadIdx.x; i < width; i += blockDim.x) {
        const unsigned long long key = sched_key64(confidence[i]);
        const bool wins = key > boundary || (key == boundary && i <= last);
        selected[i] = eligible[i] != 0 && wins ? 1u : 0u;
    }
}
"#;

/// The body of [`SELECT_TOP_K_ENTRY`].
const SELECT_TOP_K_BODY: &str = r#"{
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const unsigned long long at = row * width;
        const unsigned long long open = sched_eligible_count(eligible + at, width);
        sched_select_top(confidence + at, eligible + at, width, open, count[row], selected + at);
        __syncthreads();
    }
}
"#;

/// The body of [`SELECT_TRANSFER_ENTRY`].
const SELECT_TRANSFER_BODY: &str = r#"{
    // The runtime's commit count for m masked positions: ceil(m / max(round(1 / (1 - keep)), 1)),
    // none when keep >= 1 (round halves away from zero, as Rust's f64::round).
    const double steps_left = fmax(round(1.0 / (1.0 - keep)), 1.0);
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const unsigned long long at = row * width;
        const unsigned long long open = sched_eligible_count(eligible + at, width);
        const unsigned long long count = keep >= 1.0 ? 0 : (unsigned long long)ceil((double)open / steps_left);
        sched_select_top(confidence + at, eligible + at, width, open, count, selected + at);
        __syncthreads();
    }
}
"#;

/// The body of [`SELECT_THRESHOLD_ENTRY`].
const SELECT_THRESHOLD_BODY: &str = r#"{
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const unsigned long long at = row * width;
        // The first eligible position of the largest confidence (NaN as -inf).
        double best = -sched_inf_f64();
        unsigned long long best_index = ~0ull;
        for (unsigned long long i = threadIdx.x; i < width; i += blockDim.x) {
            if (eligible[at + i] == 0) {
                continue;
            }
            const double value = isnan(confidence[at + i]) ? -sched_inf_f64() : confidence[at + i];
            if (sched_beats(value, i, best, best_index)) {
                best = value;
                best_index = i;
            }
        }
        sched_block_best(best, best_index);
        for (unsigned long long i = threadIdx.x; i < width; i += blockDim.x) {
            const double value = isnan(confidence[at + i]) ? -sched_inf_f64() : confidence[at + i];
            const bool wins = i == best_index || value >= threshold;
            selected[at + i] = eligible[at + i] != 0 && wins ? 1u : 0u;
        }
        __syncthreads();
    }
}
"#;

/// [`tokens::residual`] followed by [`tokens::sample_probs`].
const RESIDUAL_DRAW: &str = r#"
// A probability entry as tokens.rs's residual counts it: itself if finite and positive, else 0.
__device__ __forceinline__ double sched_mass(double x) {
    return x > 0.0 && x < sched_inf_f64() ? x : 0.0;
}

// The left-to-right sum of terms[0..n), by one thread; every thread gets it.
__device__ double sched_ordered_sum(const double* terms, unsigned long long n) {
    __shared__ double sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (unsigned long long j = 0; j < n; ++j) {
            s = s + terms[j];
        }
        sum = s;
    }
    __syncthreads();
    const double result = sum;
    __syncthreads();
    return result;
}

// A draw from norm(max(0, p - q)) (tokens.rs's residual) by the exponential race (sample_probs):
// residual[j] = max(0, mass(p_j) - mass(q_j)) and its sum s; unless 0 < s < inf, mass(p_j) and
// its sum instead; unless that is positive and finite too, 1 / n each. Candidate j (probability
// above 0) draws u = uniform_f64 at (site, step, sample, index + j) and scores
// probability / (0 - log(u)) (NaN as -inf); the best score wins, the first on ties, and 0 when
// there is no candidate.
__device__ unsigned long long sched_residual_draw(
    const double* p, const double* q, unsigned long long n, double* residual, uint2 key,
    unsigned int site, unsigned int step, unsigned int sample, unsigned int index) {
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
        const double excess = sched_mass(p[j]) - sched_mass(q[j]);
        residual[j] = excess > 0.0 ? excess : 0.0;
    }
    double sum = sched_ordered_sum(residual, n);
    bool uniform = false;
    if (!(sum > 0.0 && sum < sched_inf_f64())) {
        for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
            residual[j] = sched_mass(p[j]);
        }
        sum = sched_ordered_sum(residual, n);
        uniform = !(sum > 0.0 && sum < sched_inf_f64());
    }
    double best = -sched_inf_f64();
    unsigned long long best_index = ~0ull;
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
        const double probability = uniform ? 1.0 / (double)n : residual[j] / sum;
        if (isnan(probability) || probability <= 0.0) {
            continue;
        }
        const double u = sched_uniform_f64(key, site, step, sample, index + (unsigned int)j);
        double score = probability / (0.0 - sched_log(u));
        if (isnan(score)) {
            score = -sched_inf_f64();
        }
        if (sched_beats(score, j, best, best_index)) {
            best = score;
            best_index = j;
        }
    }
    sched_block_best(best, best_index);
    return best_index == ~0ull ? 0 : best_index;
}
"#;

/// The body of [`VERIFY_GREEDY_ENTRY`].
const VERIFY_GREEDY_BODY: &str = r#"{
    // One thread per row: draft token i is accepted while it equals the model's argmax.
    for (unsigned long long row = blockIdx.x * blockDim.x + threadIdx.x; row < rows;
         row += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned int* drafted = draft + row * k;
        const unsigned int* argmax = target + row * (k + 1ull);
        unsigned int* out = tokens + row * (k + 1ull);
        unsigned int accepted = 0;
        bool stopped = false;
        while (accepted < k && drafted[accepted] == argmax[accepted]) {
            out[accepted] = drafted[accepted];
            ++accepted;
            if (has_eos != 0 && drafted[accepted - 1] == eos) {
                stopped = true;
                break;
            }
        }
        if (!stopped) {
            out[accepted] = argmax[accepted];
        }
        counts[row] = stopped ? accepted : accepted + 1;
    }
}
"#;

/// The body of [`VERIFY_SAMPLE_ENTRY`].
const VERIFY_SAMPLE_BODY: &str = r#"{
    const unsigned long long n = vocab;
    double* residual = (double*)((unsigned char*)scratch + blockIdx.x * (8 * n));
    const uint2 philox_key = make_uint2(seed[0], seed[1]);
    __shared__ unsigned int accepted_shared;
    __shared__ bool rejected_shared;
    __shared__ bool stopped_shared;
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const unsigned int* drafted = draft + row * k;
        unsigned int* out = tokens + row * (k + 1ull);
        if (threadIdx.x == 0) {
            // The acceptance tests, in order, by one thread: draft token i draws its u at index
            // (k + 1) * vocab + i.
            unsigned int accepted = 0;
            bool rejected = false;
            bool stopped = false;
            while (accepted < k) {
                const unsigned int drafted_token = drafted[accepted];
                const double* p = target + (row * (k + 1ull) + accepted) * n;
                const double* q = proposal + (row * k + accepted) * n;
                const double p_token = drafted_token < n ? p[drafted_token] : 0.0;
                const double q_token = drafted_token < n ? q[drafted_token] : 1.0;
                const double u = sched_uniform_f64(philox_key, site, step, noise_sample[row], (k + 1) * vocab + accepted);
                const bool accept = q_token > 0.0 ? u <= 1.0 && u <= p_token / q_token : p_token > 0.0;
                if (!accept) {
                    rejected = true;
                    break;
                }
                out[accepted] = drafted_token;
                ++accepted;
                if (has_eos != 0 && drafted_token == eos) {
                    stopped = true;
                    break;
                }
            }
            accepted_shared = accepted;
            rejected_shared = rejected;
            stopped_shared = stopped;
        }
        __syncthreads();
        const unsigned int accepted = accepted_shared;
        const bool rejected = rejected_shared;
        const bool stopped = stopped_shared;
        unsigned long long next = target_token[row * (k + 1ull) + k];
        if (rejected) {
            // The first rejected position draws from the residual at indices accepted * vocab + v.
            const double* p = target + (row * (k + 1ull) + accepted) * n;
            const double* q = proposal + (row * k + accepted) * n;
            next = sched_residual_draw(
                p, q, n, residual, philox_key, site, step, noise_sample[row], accepted * vocab);
        }
        if (threadIdx.x == 0) {
            if (!stopped) {
                out[accepted] = (unsigned int)next;
            }
            counts[row] = stopped ? accepted : accepted + 1;
        }
        __syncthreads();
    }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The scratch of a module holds exactly the arrays its text declares.
    #[test]
    fn scratch_sizes_follow_the_arrays() {
        let greedy = SampleKernel { logits: Logits::Raw, choose: Choose::Greedy, report: Report::Token };
        assert_eq!(sample_scratch_bytes(&greedy, 1000), 0);
        let candidates =
            SampleKernel { logits: Logits::Divided, choose: Choose::Gumbel, report: Report::RawProbability };
        assert_eq!(sample_scratch_bytes(&candidates, 1001), (8 * 1001 + 4 * 1001_u64).div_ceil(16) * 16);
        let all = Filters { top_k: true, top_p: Some(Nucleus::KeepCrossing), min_p: true };
        let sampling = SampleKernel { logits: Logits::Processed(all), choose: Choose::Gumbel, report: Report::Token };
        assert_eq!(sample_scratch_bytes(&sampling, 1000), 8 * 1000 + 8 * 1000 + 8 * 1024 + 4 * 1000);
        assert_eq!(sample_scratch_bytes(&sampling, u32::MAX), 20 * u64::from(u32::MAX) + 8 * (1 << 32) + 4);
        assert_eq!(verify_scratch_bytes(7), 56);
    }

    #[test]
    fn row_blocks_cover_the_rows_up_to_a_cap() {
        assert_eq!(row_blocks(0, 132), 1);
        assert_eq!(row_blocks(5, 132), 5);
        assert_eq!(row_blocks(u32::MAX, 132), 132 * 8);
        assert_eq!(row_blocks(u32::MAX, u32::MAX), u32::MAX);
        assert_eq!(row_blocks(10, 0), 1);
    }

    #[test]
    fn filters_follow_the_sampler() {
        assert_eq!(Filters::of(&Sampler::plain()), Filters::NONE);
        let sampler = Sampler { top_k: 5, top_p: 0.9, min_p: 0.1, nucleus: Nucleus::DropCrossing, ..Sampler::plain() };
        assert_eq!(Filters::of(&sampler), Filters { top_k: true, top_p: Some(Nucleus::DropCrossing), min_p: true });
        let disabled = Sampler { top_p: f64::NAN, min_p: f64::NAN, ..Sampler::plain() };
        assert_eq!(Filters::of(&disabled), Filters::NONE);
    }
}
