//! The CUDA modules the token operations launch where their model runs on a device, for
//! `sched build --emit cuda`.

use sched_compiler::ir::{SamplerKind, TokenOp};
use sched_kernels::cuda_tokens as kernels_cuda;
use sched_kernels::layers;
use sched_kernels::tokens::Sampler;

use super::candidates::candidate_kernel;
use crate::device::reporting_distribution;
use crate::model::draw::Choice;

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
        | TokenOp::ExtendGuess
        | TokenOp::Repredict
        | TokenOp::Settled
        | TokenOp::Length
        | TokenOp::Ended
        | TokenOp::Tail
        | TokenOp::Whole
        | TokenOp::Commit(_) => Vec::new(),
    }
}
