//! Devices: where a run's tensors live and its fused kernels execute.
//!
//! The CPU is the default and needs no [`Device`]: tensors are host [`Tensor`](crate::tensor::Tensor)s
//! and kernels run on the CPU evaluators. An accelerator is a [`Device`]: it owns buffers, named
//! by [`BufferId`], and launches kernels of the specification in [`sched_kernels::spec`] on them.
//! The executor keeps a tensor on the device once a kernel produced it and moves it only where the
//! schedule needs it elsewhere: a host model's input, an emitted output, a reduction read into
//! host control flow. It counts every such move in [`Transfers`].
//!
//! Two devices implement the trait:
//! - [`cuda::CudaDevice`]: NVRTC-compiled kernels launched through cudarc on one stream;
//! - [`emulated::EmulatedDevice`]: buffers in host memory and kernels on the reference
//!   evaluator. It is the null device of the tests: the executor's buffer logic (residency,
//!   in-place updates, transfers, frees) runs in CI without a GPU and must give the CPU's bits.
//!
//! Two wrappers pass everything on to another device: [`counted::Counted`], through which every
//! run reaches its device and which counts the run's transfers, and [`replay::Recorder`], which
//! records a run for replays. Both pass every [`DeviceOp`] on whole, so a new operation needs no
//! code in them.
//!
//! Invariants every device keeps:
//! - An elementwise launch's outputs may be the same buffers as its inputs (in-place updates);
//!   every element of an output depends only on the same element of the inputs, so that is well
//!   defined.
//! - Buffers hold f32 and are freed exactly once, by [`Device::free`], when the executor drops
//!   the last tensor that names them.
//! - Operations run in the order they are issued; [`Device::download`], [`Device::reduce`],
//!   [`Device::sample_rows`] and [`Device::verify_drafts`] return only after every earlier launch
//!   finished (they are the only synchronisations: each returns data to the host).
//! - While [`Device::capture`] runs its body, launches and copies are recorded, not executed, and
//!   allocating, uploading, downloading and reducing are errors; a captured graph replays the
//!   recorded work with the seed [`Device::replay_graph`] is given.

pub mod counted;
pub mod cuda;
pub mod emulated;
pub mod op;
pub mod replay;

pub use self::op::DeviceOp;

use std::fmt;
use std::sync::Arc;

use sched_kernels::KernelError;
use sched_kernels::cuda_tokens::{Choose, Report, SampleKernel, SampleParams};
use sched_kernels::nvrtc::NvrtcError;
use sched_kernels::spec::{ElementwiseKernel, NoiseLaunch, ReductionKernel};

/// A buffer of f32 on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferId(pub u64);

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The device cannot be used on this machine.
    #[error("CUDA is unavailable: {reason}")]
    Unavailable { reason: String },
    /// The driver reported an error.
    #[error("CUDA driver error while {action}: {message}")]
    Driver { action: &'static str, message: String },
    /// A kernel could not be compiled.
    #[error(transparent)]
    Nvrtc(#[from] NvrtcError),
    /// A kernel or launch is malformed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A launch names a buffer the device does not hold, or one too short for the launch.
    #[error("buffer {buffer} {problem}")]
    Buffer { buffer: u64, problem: String },
    /// An operation that cannot be part of a graph was asked for while capturing one.
    #[error("{operation} while capturing a graph: a graph holds launches and copies only")]
    Capturing { operation: &'static str },
    /// A graph id the device does not hold.
    #[error("graph {graph} does not exist on the device")]
    UnknownGraph { graph: u64 },
}

impl DeviceError {
    /// Every code of this error, with when it is reported (docs/diagnostics.md lists them).
    pub const CODES: &'static [(&'static str, &'static str)] = &[
        ("sched::device::unavailable", "the device cannot be used on this machine (no driver, no NVRTC, no GPU)"),
        ("sched::device::driver", "the CUDA driver reported an error"),
        ("sched::device::nvrtc", "NVRTC could not compile a kernel"),
        ("sched::device::kernel", "a kernel or its launch is malformed"),
        ("sched::device::buffer", "an operation names a buffer the device does not hold, or one too short"),
        ("sched::device::capturing", "an operation that cannot be part of a graph was asked for while capturing one"),
        ("sched::device::unknown_graph", "a graph the device does not hold was replayed"),
    ];

    /// The error's stable code.
    pub fn code(&self) -> &'static str {
        match self {
            DeviceError::Unavailable { .. } => "sched::device::unavailable",
            DeviceError::Driver { .. } => "sched::device::driver",
            DeviceError::Nvrtc(_) => "sched::device::nvrtc",
            DeviceError::Kernel(_) => "sched::device::kernel",
            DeviceError::Buffer { .. } => "sched::device::buffer",
            DeviceError::Capturing { .. } => "sched::device::capturing",
            DeviceError::UnknownGraph { .. } => "sched::device::unknown_graph",
        }
    }
}

/// A graph captured by [`Device::capture`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GraphId(pub u64);

/// One launch of a kernel over `len` elements.
#[derive(Clone, Copy, Debug)]
pub struct Launch<'a> {
    pub len: usize,
    /// The kernel's inputs, in order.
    pub inputs: &'a [BufferId],
    /// The kernel's outputs, in order; an output may be one of the inputs (updated in place).
    pub outputs: &'a [BufferId],
    /// The kernel's scalar parameters, already rounded to f32.
    pub params: &'a [f32],
    pub noise: NoiseLaunch<'a>,
}

/// An accelerator that holds tensors and runs fused kernels.
pub trait Device: Send + Sync + fmt::Debug {
    /// The device in words, for reports (`cuda:0 NVIDIA H200 (sm_90)`).
    fn name(&self) -> String;
    /// A buffer of `len` elements with unspecified contents.
    fn alloc(&self, len: usize) -> Result<BufferId, DeviceError>;
    /// A buffer holding a copy of `data`.
    fn upload(&self, data: &[f32]) -> Result<BufferId, DeviceError>;
    /// The contents of a buffer, after every earlier launch finished.
    fn download(&self, buffer: BufferId) -> Result<Vec<f32>, DeviceError>;
    /// Releases a buffer; unknown ids are ignored.
    fn free(&self, buffer: BufferId);
    /// Runs an operation that computes on buffers and returns nothing to the host (an
    /// elementwise launch, a layer kernel, a copy); [`DeviceOp`] says what each computes.
    fn execute(&self, op: &DeviceOp<'_, BufferId>) -> Result<(), DeviceError>;
    /// Runs a reduction (its launch has no outputs) and returns its value on the host.
    fn reduce(&self, kernel: &ReductionKernel, launch: &Launch<'_>) -> Result<f64, DeviceError>;
    /// Whether [`DeviceOp::Linear`] works here (the CUDA device needs cuBLAS for it).
    fn has_linear(&self) -> bool;
    /// Draws a token from each row of logits on the device and returns the tokens and the
    /// kernel's report to the host (a synchronisation), as [`SampleKernel::sample_row`] defines
    /// them.
    fn sample_rows(&self, kernel: &SampleKernel, launch: &SampleLaunch<'_>) -> Result<Sampled, DeviceError>;
    /// Sampling verification of speculative drafts on the device ([`VerifyLaunch`]), returning
    /// the tokens each row appends (a synchronisation).
    fn verify_drafts(&self, launch: &VerifyLaunch<'_>) -> Result<Vec<Vec<u32>>, DeviceError>;
    /// How many buffers are allocated now (for leak checks).
    fn live_buffers(&self) -> usize;
    /// The device that holds this one's buffers when this one only passes work on to it (a
    /// [`replay::Recorder`]); caches of data on a device, such as a model's weights, keep it
    /// there, so that they outlive the wrapper and are not uploaded again for each one.
    fn holder(&self) -> Option<Arc<dyn Device>> {
        None
    }

    /// Captures the launches and copies `body` makes as a graph that
    /// [`replay_graph`](Device::replay_graph) runs again as one unit, or returns `None` where the
    /// device has no graphs (then `body` is not called). The body's launches must all use `seed`;
    /// a replay substitutes its own. Nothing the body asks for runs during the capture.
    fn capture(
        &self,
        _seed: u64,
        _body: &mut dyn FnMut() -> Result<(), DeviceError>,
    ) -> Result<Option<GraphId>, DeviceError> {
        Ok(None)
    }
    /// Runs a captured graph with the seed `seed` in place of the captured one.
    fn replay_graph(&self, graph: GraphId, _seed: u64) -> Result<(), DeviceError> {
        Err(DeviceError::UnknownGraph { graph: graph.0 })
    }
    /// Releases a captured graph; unknown ids are ignored.
    fn free_graph(&self, _graph: GraphId) {}
}

/// A sampling launch: rows of logits on the device and the host-side inputs of
/// [`sched_kernels::cuda_tokens`]'s row sampling ABI.
#[derive(Clone, Copy, Debug)]
pub struct SampleLaunch<'a> {
    /// `rows × vocab` logits.
    pub logits: BufferId,
    pub rows: usize,
    pub vocab: usize,
    pub params: SampleParams,
    /// Row `r`'s entry `v` draws `uniform_f64(seed, site, step, noise_sample[r],
    /// noise_position[r] * vocab + v)` (in wrapping 32-bit arithmetic).
    pub noise_sample: &'a [u32],
    pub noise_position: &'a [u32],
    pub seed: u64,
    pub site: u32,
    pub step: u32,
}

/// What a sampling launch returns: each row's token, and the report of the kernel (one
/// probability per row, a distribution per row, or nothing).
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub tokens: Vec<u32>,
    pub report: Vec<f64>,
}

impl SampleLaunch<'_> {
    /// Checks that the per-row inputs have one entry per row.
    pub(crate) fn check(&self) -> Result<(), DeviceError> {
        if self.noise_sample.len() != self.rows || self.noise_position.len() != self.rows {
            return Err(DeviceError::Buffer {
                buffer: self.logits.0,
                problem: format!(
                    "is sampled as {} rows, but the launch has {} noise samples and {} positions",
                    self.rows,
                    self.noise_sample.len(),
                    self.noise_position.len()
                ),
            });
        }
        Ok(())
    }
}

/// A sampling verification launch: speculative decoding's `verify` with a sampler for `rows`
/// rows of `k` draft tokens, as [`sched_kernels::tokens::verify_row`] defines it for each row.
/// The device draws the model's distribution `p` and tokens from `target` (the sampling kernel
/// `target_kernel` with [`Report::Distribution`], its entries `v` at position `i` drawing index
/// `i * vocab + v` of the row's noise), the draft's distribution `q` from `proposal` the same way,
/// and verifies every row in one launch; only the appended tokens come back.
#[derive(Clone, Copy, Debug)]
pub struct VerifyLaunch<'a> {
    /// `rows × (k + 1) × vocab`: the model's logits at each draft position and the one after.
    pub target: BufferId,
    /// How the model draws from its logits; it must choose by Gumbel-max (greedy verification
    /// compares argmaxes and needs no launch of its own), and its report is ignored.
    pub target_kernel: SampleKernel,
    pub target_params: SampleParams,
    /// `rows × k × vocab`: the draft's logits at each draft position.
    pub proposal: BufferId,
    /// How the draft drew its tokens from them; its report is ignored.
    pub proposal_kernel: SampleKernel,
    pub proposal_params: SampleParams,
    /// `rows × k`: the draft tokens.
    pub draft: &'a [u32],
    pub rows: usize,
    pub k: usize,
    pub vocab: usize,
    /// The noise sample word of each row.
    pub noise_sample: &'a [u32],
    pub seed: u64,
    pub site: u32,
    pub step: u32,
    /// The end token: a row stops after accepting it.
    pub eos: Option<u32>,
}

impl VerifyLaunch<'_> {
    /// Checks the per-row inputs and the kernels, and returns the sizes as the kernels' 32-bit
    /// words: rows, k and vocab.
    pub(crate) fn check(&self) -> Result<(u32, u32, u32), DeviceError> {
        let problem = |problem: String| DeviceError::Buffer { buffer: self.target.0, problem };
        if self.target_kernel.choose != Choose::Gumbel {
            return Err(problem("is verified by sampling, but the model's kernel chooses greedily".into()));
        }
        if self.noise_sample.len() != self.rows || Some(self.draft.len()) != self.rows.checked_mul(self.k) {
            return Err(problem(format!(
                "is verified as {} rows of {} draft tokens, but the launch has {} noise samples and {} draft tokens",
                self.rows,
                self.k,
                self.noise_sample.len(),
                self.draft.len()
            )));
        }
        // The sampling launches score `rows × (k + 1)` rows, a 32-bit count, of `vocab` logits.
        let scored_rows = self.rows.checked_mul(self.k + 1).filter(|&n| n.checked_mul(self.vocab).is_some());
        let scored_rows = scored_rows.and_then(|n| u32::try_from(n).ok());
        match (scored_rows, u32::try_from(self.rows), u32::try_from(self.k), u32::try_from(self.vocab)) {
            (Some(_), Ok(rows), Ok(k), Ok(vocab)) => Ok((rows, k, vocab)),
            _ => Err(problem(format!(
                "is verified as {} rows of {} draft tokens over {} logits, more than 2^32 scored rows",
                self.rows, self.k, self.vocab
            ))),
        }
    }
}

/// The kernel that reports the distribution `kernel` draws from.
pub(crate) fn reporting_distribution(kernel: SampleKernel) -> SampleKernel {
    SampleKernel { report: Report::Distribution, ..kernel }
}

/// The rows a [`Device::move_rows`] moves: row `from[i]` of the source to row `to[i]` of the
/// output, for rows of `width` elements.
#[derive(Clone, Copy, Debug)]
pub struct RowMoves<'a> {
    pub from: &'a [u32],
    pub to: &'a [u32],
    pub width: usize,
}

impl RowMoves<'_> {
    /// Checks the moves against buffers of `src_len` and `out_len` elements: one destination per
    /// source, every row inside its buffer, distinct destinations (the copies run in parallel),
    /// distinct buffers, and rows of fewer than 2^32 elements.
    pub(crate) fn check(
        &self,
        src: BufferId,
        src_len: usize,
        out: BufferId,
        out_len: usize,
    ) -> Result<(), DeviceError> {
        let problem = |buffer: BufferId, problem: String| DeviceError::Buffer { buffer: buffer.0, problem };
        if src == out {
            return Err(problem(out, "is both the source and the output of a row move".into()));
        }
        if self.from.len() != self.to.len() {
            return Err(problem(out, format!("{} rows are moved to {} destinations", self.from.len(), self.to.len())));
        }
        if u32::try_from(self.width).is_err() {
            return Err(problem(src, "has rows of more than 2^32 elements".into()));
        }
        let (src_rows, out_rows) = (src_len / self.width.max(1), out_len / self.width.max(1));
        if let Some(&row) = self.from.iter().find(|&&row| row as usize >= src_rows) {
            return Err(problem(src, format!("has {src_rows} rows, and row {row} is moved")));
        }
        if let Some(&row) = self.to.iter().find(|&&row| row as usize >= out_rows) {
            return Err(problem(out, format!("has {out_rows} rows, and row {row} is written")));
        }
        let mut destinations = self.to.to_vec();
        destinations.sort_unstable();
        if let Some(pair) = destinations.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(problem(out, format!("row {} is written by two moves", pair[0])));
        }
        Ok(())
    }
}

/// The sizes of a linear layer's matrix product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: usize,
    pub inputs: usize,
    pub outputs: usize,
}

/// What moved between the host and the device during a run: the moves of the executor and of the
/// device models it called, as [`counted::Counted`] counts them, and the model calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Host-to-device copies, and their bytes.
    pub uploads: u64,
    pub upload_bytes: u64,
    /// Device-to-host copies (each one a synchronisation), and their bytes.
    pub downloads: u64,
    pub download_bytes: u64,
    /// Reductions read back into host control flow (each one a synchronisation).
    pub reductions: u64,
    /// Model evaluations that ran on the host and so copied their input down and output up.
    pub host_model_calls: u64,
    /// Model evaluations that ran on the device (a network's matrix products and layer kernels).
    pub device_model_calls: u64,
}

impl std::ops::AddAssign for Transfers {
    fn add_assign(&mut self, other: Transfers) {
        self.uploads += other.uploads;
        self.upload_bytes += other.upload_bytes;
        self.downloads += other.downloads;
        self.download_bytes += other.download_bytes;
        self.reductions += other.reductions;
        self.host_model_calls += other.host_model_calls;
        self.device_model_calls += other.device_model_calls;
    }
}

impl Transfers {
    /// Synchronisations of the host with the device: downloads and reductions.
    pub fn syncs(&self) -> u64 {
        self.downloads + self.reductions
    }
}

/// What a model keeps on each device it ran on (its weights), by the device that holds the
/// buffers ([`Device::holder`]), so a wrapper of a device finds the data uploaded through
/// another. Each entry holds its device alive.
pub struct PerDevice<T> {
    entries: std::sync::Mutex<Vec<DeviceEntry<T>>>,
}

/// A device, and what a model keeps there.
type DeviceEntry<T> = (Arc<dyn Device>, Arc<T>);

impl<T> Default for PerDevice<T> {
    fn default() -> Self {
        PerDevice { entries: std::sync::Mutex::new(Vec::new()) }
    }
}

impl<T> fmt::Debug for PerDevice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerDevice").finish_non_exhaustive()
    }
}

impl<T> PerDevice<T> {
    /// The data on `device`'s holder, made by `upload` there on the first call.
    pub fn get_or_upload<E>(
        &self,
        device: &Arc<dyn Device>,
        upload: impl FnOnce(&Arc<dyn Device>) -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        let device = &device.holder().unwrap_or_else(|| Arc::clone(device));
        // Every update is one push, so a panic elsewhere leaves the list consistent.
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // An entry holds its device alive, so no other device can have its address.
        if let Some((_, data)) = entries.iter().find(|(d, _)| std::ptr::addr_eq(Arc::as_ptr(d), Arc::as_ptr(device))) {
            return Ok(Arc::clone(data));
        }
        let data = Arc::new(upload(device)?);
        entries.push((Arc::clone(device), Arc::clone(&data)));
        Ok(data)
    }
}

/// A tensor whose data is a buffer of a device; the buffer is freed when the tensor is dropped.
#[derive(Debug)]
pub struct DeviceTensor {
    /// `[batch, ...sample shape]`.
    pub shape: Vec<usize>,
    buffer: BufferId,
    device: Arc<dyn Device>,
}

impl DeviceTensor {
    /// Takes ownership of `buffer`, which must hold `shape.iter().product()` elements.
    pub fn new(shape: Vec<usize>, buffer: BufferId, device: Arc<dyn Device>) -> DeviceTensor {
        DeviceTensor { shape, buffer, device }
    }

    pub fn buffer(&self) -> BufferId {
        self.buffer
    }

    /// A new tensor of `shape` on `device`, with unspecified contents.
    pub fn alloc(device: &Arc<dyn Device>, shape: Vec<usize>) -> Result<DeviceTensor, DeviceError> {
        let buffer = device.alloc(shape.iter().product())?;
        Ok(DeviceTensor::new(shape, buffer, Arc::clone(device)))
    }

    /// A tensor of `shape` on `device` holding a copy of `data`.
    pub fn upload(device: &Arc<dyn Device>, data: &[f32], shape: Vec<usize>) -> Result<DeviceTensor, DeviceError> {
        Ok(DeviceTensor::new(shape, device.upload(data)?, Arc::clone(device)))
    }

    /// The device that holds the buffer.
    pub fn device(&self) -> &Arc<dyn Device> {
        &self.device
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives up ownership of the buffer without freeing it.
    pub fn into_buffer(self) -> BufferId {
        let this = std::mem::ManuallyDrop::new(self);
        this.buffer
    }
}

impl Drop for DeviceTensor {
    fn drop(&mut self) {
        self.device.free(self.buffer);
    }
}

/// Checks that a launch's buffer lists match the kernel (shared by every device).
pub(crate) fn check_counts(kernel: &ElementwiseKernel, launch: &Launch<'_>, outputs: usize) -> Result<(), DeviceError> {
    kernel.validate()?;
    if launch.inputs.len() != kernel.inputs as usize {
        return Err(KernelError::InputCount { expected: kernel.inputs, got: launch.inputs.len() }.into());
    }
    if launch.params.len() != kernel.params as usize {
        return Err(KernelError::ParamCount { expected: kernel.params, got: launch.params.len() }.into());
    }
    if launch.noise.slots.len() != kernel.noise_slots as usize {
        return Err(KernelError::NoiseSlotCount { expected: kernel.noise_slots, got: launch.noise.slots.len() }.into());
    }
    if launch.outputs.len() != outputs {
        return Err(DeviceError::Buffer {
            buffer: launch.outputs.first().map_or(0, |b| b.0),
            problem: format!("list has {} outputs, but the kernel writes {outputs}", launch.outputs.len()),
        });
    }
    if kernel.noise_slots > 0 {
        let per_sample = launch.noise.per_sample;
        if per_sample == 0 {
            return Err(KernelError::ZeroPerSample.into());
        }
        let samples = launch.len.div_ceil(per_sample);
        if u32::try_from(per_sample).is_err() || u32::try_from(samples).is_err() {
            return Err(KernelError::NoiseCoordinatesOverflow { len: launch.len, per_sample }.into());
        }
    }
    Ok(())
}
