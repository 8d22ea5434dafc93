//! What one run takes and gives: its options ([`RunOptions`]) and parameter values, what it
//! emits ([`Outputs`]), and how it fails ([`RunError`]). Both engines, the interpreter and the
//! JIT, take and give these.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use sched_compiler::ir::{BlockId, Constant, Function, Op};
use sched_kernels::KernelError;

use crate::device::{Device, Transfers};
use crate::model::ModelError;
use crate::tensor::Tensor;

/// A value given for a schedule parameter.
#[derive(Clone, Debug)]
pub enum ParamValue {
    Host(Constant),
    Tensor(Tensor),
}

/// Where noise comes from.
#[derive(Clone, Debug, Default)]
pub enum NoiseSource {
    /// sched's counter-based Philox stream (the default).
    #[default]
    Philox,
    /// Replays the given tensors, one per noise draw, in the order the run draws them (for
    /// comparing against another library's trajectory).
    Replay(Vec<Tensor>),
}

/// How to run.
#[derive(Clone)]
pub struct RunOptions<'a> {
    pub seed: u64,
    pub batch: usize,
    pub noise: NoiseSource,
    /// Record the state after every verb.
    pub trace: bool,
    /// Called after every verb with its index in [`Function::verbs`].
    pub on_verb: Option<&'a (dyn Fn(u32) + Sync)>,
    /// Checked after every verb; when set, the run stops with [`RunError::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
    /// The accelerator that runs the fused kernels and holds the tensors they produce; the CPU
    /// when `None`.
    pub device: Option<Arc<dyn Device>>,
    /// The prompt's token ids, the start of every row of `prompt()` (empty by default).
    pub prompt: Vec<u32>,
    /// Called after every verb on token rows and every verification, with the rows without
    /// their tentative guesses (to stream their text); it returns the rows to end there, which
    /// get the end token as if the model had written it (a stop string appeared in their text).
    pub on_tokens: Option<&'a TokenHook<'a>>,
}

/// A streaming hook on token rows: it sees every row and returns those to end.
pub type TokenHook<'a> = dyn Fn(&[Vec<u32>]) -> Vec<usize> + Sync + 'a;

impl Default for RunOptions<'_> {
    fn default() -> Self {
        RunOptions {
            seed: 0,
            batch: 1,
            noise: NoiseSource::Philox,
            trace: false,
            on_verb: None,
            cancel: None,
            device: None,
            prompt: Vec::new(),
            on_tokens: None,
        }
    }
}

/// A value a schedule emitted.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputValue {
    Tensor(Tensor),
    F64(f64),
    I64(i64),
    Bool(bool),
    /// Token rows, with their text when a bound model knows its words.
    Tokens {
        rows: Vec<Vec<u32>>,
        text: Option<Vec<String>>,
    },
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct Outputs {
    /// The emitted values, in the order of [`Function::outputs`] (never-emitted ones are absent).
    pub values: Vec<(String, OutputValue)>,
    /// The state after each verb, when tracing: (verb index, tensor).
    pub trace: Vec<(u32, Tensor)>,
    /// The token rows after each verb on tokens, when tracing: (verb index, rows).
    pub token_trace: Vec<(u32, Vec<Vec<u32>>)>,
    /// Model evaluations made (each guided evaluation counts its two calls).
    pub model_calls: u64,
    /// Model evaluations by model parameter, in the order of [`Function::models`].
    pub model_calls_by_model: Vec<u64>,
    /// Fused kernels launched.
    pub kernel_launches: u64,
    /// What moved between the host and the device (all zero on the CPU).
    pub transfers: Transfers,
    /// The emitted tensors that came from the device: each one's name and the ordinal (from 0)
    /// of the download that brought its final value to the host. A replay of the run
    /// ([`crate::seeds`]) fills them from the same downloads.
    pub output_downloads: Vec<(String, u64)>,
}

/// A failure while running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("parameter `{0}` has no value")]
    MissingParam(String),
    #[error("model `{0}` is not bound")]
    MissingModel(String),
    #[error("cannot build the grid: {0}")]
    Grid(#[from] crate::grid::GridError),
    #[error("kernel: {0}")]
    Kernel(#[from] KernelError),
    #[error("compiled kernel: {0}")]
    CompiledKernel(#[from] sched_kernels::jit::JitError),
    #[error("integer division by zero")]
    DivisionByZero,
    #[error("tensors of shapes {0:?} and {1:?} cannot be combined")]
    Shape(Vec<usize>, Vec<usize>),
    #[error("the noise replay has {available} draws, but the run needs more")]
    ReplayExhausted { available: usize },
    #[error("the replayed noise has shape {found:?}, but the run draws {expected:?}")]
    ReplayShape { expected: Vec<usize>, found: Vec<usize> },
    #[error("{0} models cannot be used here: {1}")]
    ModelKind(String, String),
    #[error("grid index {0} is out of range")]
    GridIndex(i64),
    #[error("the run was cancelled")]
    Cancelled,
    #[error("a comparison or logical operation was applied to a tensor")]
    TensorOperation,
    #[error("{0}")]
    Jit(String),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error(transparent)]
    Sequence(#[from] crate::sequence::SequenceError),
    #[error("in the {verb} at line {line}: {error}")]
    InVerb { verb: &'static str, line: u32, error: Box<RunError> },
}

impl RunError {
    /// Every code of this error, with when it is reported (docs/diagnostics.md lists them).
    /// Errors of models, grids, devices and token operations keep their own codes.
    pub const CODES: &'static [(&'static str, &'static str)] = &[
        ("sched::run::missing_param", "a schedule parameter has no value"),
        ("sched::run::missing_model", "a model parameter is not bound"),
        ("sched::run::kernel", "a fused kernel or its launch is malformed (a compiler bug)"),
        ("sched::run::compiled_kernel", "a compiled kernel cannot run"),
        ("sched::run::division_by_zero", "an integer division by zero"),
        ("sched::run::shape", "tensors of different shapes were combined"),
        ("sched::run::replay_exhausted", "a noise replay ran out of draws"),
        ("sched::run::replay_shape", "a replayed noise draw has another shape than the run draws"),
        ("sched::run::model_kind", "a model cannot be used where the run needs it"),
        ("sched::run::grid_index", "a grid was indexed out of range"),
        ("sched::run::cancelled", "the run was cancelled"),
        ("sched::run::tensor_operation", "a comparison or logical operation was applied to a tensor"),
        ("sched::run::jit", "the native code met an inconsistency (a compiler bug)"),
    ];

    /// The error's stable code.
    pub fn code(&self) -> &'static str {
        match self {
            RunError::Model(error) => error.code(),
            RunError::MissingParam(_) => "sched::run::missing_param",
            RunError::MissingModel(_) => "sched::run::missing_model",
            RunError::Grid(error) => error.code(),
            RunError::Kernel(_) => "sched::run::kernel",
            RunError::CompiledKernel(_) => "sched::run::compiled_kernel",
            RunError::DivisionByZero => "sched::run::division_by_zero",
            RunError::Shape(..) => "sched::run::shape",
            RunError::ReplayExhausted { .. } => "sched::run::replay_exhausted",
            RunError::ReplayShape { .. } => "sched::run::replay_shape",
            RunError::ModelKind(..) => "sched::run::model_kind",
            RunError::GridIndex(_) => "sched::run::grid_index",
            RunError::Cancelled => "sched::run::cancelled",
            RunError::TensorOperation => "sched::run::tensor_operation",
            RunError::Jit(_) => "sched::run::jit",
            RunError::Device(error) => error.code(),
            RunError::Sequence(error) => error.code(),
            RunError::InVerb { error, .. } => error.code(),
        }
    }
}

/// An error of instruction `index` of `block`, with the verb of the source it belongs to when
/// there is one: the verb a model call names, or else the verb whose end the block marks next.
pub(crate) fn located(function: &Function, block: BlockId, index: usize, error: RunError) -> RunError {
    let insts = &function.graph[block].insts;
    let verb = match insts.get(index).map(|inst| &inst.op) {
        Some(Op::Field { verb, .. } | Op::Jump { verb, .. }) => verb.and_then(|v| function.verbs.get(v as usize)),
        _ => insts.iter().skip(index).find_map(|inst| match inst.op {
            Op::VerbDone { verb } => function.verbs.get(verb as usize),
            _ => None,
        }),
    };
    match verb {
        Some(verb) if !matches!(error, RunError::Cancelled) => {
            RunError::InVerb { verb: verb.kind, line: verb.line, error: Box::new(error) }
        }
        _ => error,
    }
}
