//! The poker-hands experiment (examples/poker.sched): how often each way of generating two words
//! writes a pair that is no poker hand, and how many model calls it takes.
//!
//! `cargo run --release --example poker` prints the table of the README; `tests/poker.rs` checks
//! it: the independent rate matches the rate the model's marginals predict, and the other two are
//! zero on the exact model.

use std::sync::Arc;

use sched_models::poker;
use sched_runtime::model::TokenRows;

use crate::api::{ApiError, Model, OutputValue, RunOptions, compile};

/// The schedules of the experiment, with the model parameter each binds.
pub const SCHEDULES: &[(&str, &str)] = &[("independent", "mtp"), ("autoregressive", "lm"), ("draft_verify", "mtp")];

/// The source of examples/poker.sched, compiled into the binary so the experiment runs anywhere.
pub const SOURCE: &str = include_str!("../examples/poker.sched");

/// One line of the table.
#[derive(Clone, Debug)]
pub struct PokerRow {
    pub schedule: &'static str,
    /// The fraction of samples whose first two words are not a hand.
    pub invalid_rate: f64,
    /// Its binomial standard error.
    pub standard_error: f64,
    /// Model calls for the whole batch: each call evaluates every sample at once.
    pub model_calls: u64,
    /// New tokens per sample (the end token included).
    pub tokens_per_sample: f64,
}

/// Why the experiment could not run.
#[derive(Debug, thiserror::Error)]
pub enum PokerError {
    #[error("examples/poker.sched does not compile: {0}")]
    Source(String),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("schedule `{0}` emitted no tokens")]
    NoTokens(String),
    #[error("the model cannot score the heads: {0}")]
    Marginals(String),
}

/// Whether a row starts with a poker hand.
pub fn is_hand(row: &[u32]) -> bool {
    let hands = poker::hand_ids();
    match row {
        [first, second, ..] => hands.iter().any(|&(a, b, _)| a == *first && b == *second),
        _ => false,
    }
}

/// The invalid rate of independent sampling that the model's own head marginals predict:
/// `1 - Σ over hands of p₁(first) p₂(second)` from one call of its two heads on the empty prompt.
pub fn predicted_independent_rate(mtp: &dyn Model) -> Result<f64, PokerError> {
    let tokens = mtp.tokens().ok_or_else(|| PokerError::Marginals("it is not a token model".into()))?;
    let vocab = tokens.vocab().size;
    let logits = tokens
        .head_logits(TokenRows { ids: &[], batch: 1, len: 0 })
        .map_err(|e| PokerError::Marginals(e.to_string()))?;
    if tokens.heads() < 2 || logits.len() < 2 * vocab {
        return Err(PokerError::Marginals("it has fewer than two heads".into()));
    }
    let first = sched_kernels::tokens::softmax(&logits[..vocab]);
    let second = sched_kernels::tokens::softmax(&logits[vocab..2 * vocab]);
    let valid: f64 = poker::hand_ids().iter().map(|&(a, b, _)| first[a as usize] * second[b as usize]).sum();
    Ok(1.0 - valid)
}

/// Runs the three schedules with `samples` samples each: `mtp` is the multi-token model of the
/// independent and draft-and-verify schedules, `lm` the next-token model of the autoregressive one.
pub fn run(mtp: &Arc<dyn Model>, lm: &Arc<dyn Model>, samples: usize, seed: u64) -> Result<Vec<PokerRow>, PokerError> {
    let program = compile("poker.sched", SOURCE).map_err(|e| PokerError::Source(e.to_string()))?;
    let mut rows = Vec::new();
    for &(schedule, model_param) in SCHEDULES {
        let model = if model_param == "lm" { lm } else { mtp };
        let executable = program.schedule(schedule)?.bind(&[])?;
        let options = RunOptions { seed, batch: samples, ..RunOptions::default() };
        let outputs = executable.run(&[(model_param, Arc::clone(model))], &options)?;
        let Some(tokens) = outputs.values.iter().find_map(|(_, v)| match v {
            OutputValue::Tokens { rows, .. } => Some(rows),
            _ => None,
        }) else {
            return Err(PokerError::NoTokens(schedule.into()));
        };
        let n = tokens.len().max(1) as f64;
        let invalid = tokens.iter().filter(|row| !is_hand(row)).count() as f64 / n;
        rows.push(PokerRow {
            schedule,
            invalid_rate: invalid,
            standard_error: (invalid * (1.0 - invalid) / n).sqrt(),
            model_calls: outputs.model_calls,
            tokens_per_sample: tokens.iter().map(Vec::len).sum::<usize>() as f64 / n,
        });
    }
    Ok(rows)
}
