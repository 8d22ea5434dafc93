//! The CUDA device: fused kernels emitted as CUDA C, compiled by NVRTC for the device's
//! architecture, and launched through cudarc on one stream.
//!
//! Nothing CUDA is needed to build: cudarc opens libcuda and libnvrtc when first used. Because
//! cudarc panics when a library is missing, [`CudaDevice::new`] probes both first and returns
//! [`DeviceError::Unavailable`] instead.
//!
//! Kernels are compiled on their first launch and cached: PTX by the hash of its source (in
//! memory and on disk, see [`PtxCache`]), loaded modules by source for the device's lifetime.
//! Launches follow the ABI written in [`sched_kernels::cuda`]. All work goes to one stream, so
//! launches, copies and frees are ordered without events; a download or a reduction waits for
//! the stream.
//!
//! Kernels read the seed from a device word pair (the ABI of [`sched_kernels::cuda`]) that the
//! device rewrites, in stream order, when a launch brings a new seed. A graph is captured from the
//! stream ([`Device::capture`]) and replays with a new seed by rewriting the word pair before it
//! is launched, every captured launch keeping its parameters.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::sys::{CUdevice_attribute, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use sched_kernels::cuda as emit;
use sched_kernels::cuda_tokens::{self, Report, SampleKernel, SampleParams};
use sched_kernels::layers::{self, Activation, AttentionShape};
use sched_kernels::nvrtc::{self, PtxCache};
use sched_kernels::spec::{ElementwiseKernel, NoiseLaunch, ReductionKernel};

mod decoder;

use super::op::DeviceOp;
use super::{
    BufferId, Device, DeviceError, GraphId, Launch, LinearShape, RowMoves, SampleLaunch, Sampled, VerifyLaunch,
    check_counts, reporting_distribution,
};

/// A buffer and the number of elements the runtime asked for (CUDA cannot allocate zero bytes,
/// so an empty buffer holds one unused element).
struct Buffer {
    slice: CudaSlice<f32>,
    len: usize,
}

/// What a module holds, which says its entry points.
#[derive(Clone, Copy)]
enum ModuleKind {
    Elementwise,
    Reduction,
    /// A module with one entry point of this name (a layer or token kernel).
    Single(&'static str),
}

/// The loaded functions of one kernel's module.
#[derive(Clone)]
enum Loaded {
    /// The entry point of an elementwise or a layer module.
    Single(CudaFunction),
    Reduction {
        partials: CudaFunction,
        finish: CudaFunction,
    },
}

/// The scratch buffers of reductions: the first pass's partials and the final value.
struct ReductionScratch {
    partials: CudaSlice<f64>,
    result: CudaSlice<f64>,
}

/// The seed every kernel reads: its two words on the device and the value they hold.
struct SeedWords {
    words: CudaSlice<u32>,
    value: u64,
}

/// A captured graph.
struct Graph(CudaGraph);

// SAFETY: CUDA graph objects are not internally synchronised and must not be used from two threads
// at once; the device keeps every `Graph` in one mutex and uses it only while holding that lock,
// so moving one between threads is sound.
unsafe impl Send for Graph {}

/// One CUDA GPU.
pub struct CudaDevice {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// The NVRTC target, `sm_XY` for compute capability X.Y.
    arch: String,
    multiprocessors: u32,
    name: String,
    buffers: Mutex<HashMap<u64, Buffer>>,
    next_id: AtomicU64,
    /// Loaded modules by CUDA source.
    modules: Mutex<HashMap<String, Loaded>>,
    ptx: PtxCache,
    /// cuBLAS on the device's stream, when libcublas is present (the built-in networks' matrix
    /// products need it).
    blas: Option<CudaBlas>,
    scratch: Mutex<Option<ReductionScratch>>,
    seed: Mutex<SeedWords>,
    /// Whether a stream capture runs.
    capturing: AtomicBool,
    graphs: Mutex<HashMap<u64, Graph>>,
}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaDevice").field("name", &self.name).field("arch", &self.arch).finish_non_exhaustive()
    }
}

/// Locks a mutex whose data stays consistent across a panic (every update is one insert,
/// remove or replacement).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn driver(action: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> DeviceError {
    move |error| DeviceError::Driver { action, message: error.to_string() }
}

fn unknown(buffer: BufferId) -> DeviceError {
    DeviceError::Buffer { buffer: buffer.0, problem: "does not exist on the device".into() }
}

/// Whether the NVIDIA driver library can be loaded (without touching it further).
pub fn driver_available() -> bool {
    // SAFETY: the probe only tries to dlopen libcuda under its known names and returns whether
    // that worked; it calls no CUDA function.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl CudaDevice {
    /// Opens GPU `ordinal`, or says why CUDA cannot be used on this machine.
    pub fn new(ordinal: usize) -> Result<CudaDevice, DeviceError> {
        if !driver_available() {
            return Err(DeviceError::Unavailable {
                reason: "the NVIDIA driver library (libcuda.so) was not found; this machine has no NVIDIA \
                         driver, or its folder is missing from LD_LIBRARY_PATH"
                    .into(),
            });
        }
        if !nvrtc::available() {
            return Err(DeviceError::Unavailable {
                reason: "the NVRTC library (libnvrtc.so.13) was not found; install the CUDA toolkit or the \
                         `nvidia-cuda-nvrtc` wheel (13.0.x) and add its nvidia/cu13/lib folder to LD_LIBRARY_PATH"
                    .into(),
            });
        }
        let count = CudaContext::device_count().map_err(driver("counting the GPUs"))?;
        if usize::try_from(count).map_or(true, |count| ordinal >= count) {
            return Err(DeviceError::Unavailable { reason: format!("GPU {ordinal} does not exist ({count} found)") });
        }
        let context = CudaContext::new(ordinal).map_err(driver("opening the GPU"))?;
        // SAFETY: every buffer and launch of this device uses the single stream created next, so
        // work is ordered by the stream and the per-buffer events cudarc would record are not
        // needed.
        unsafe { context.disable_event_tracking() };
        let stream = context.new_stream().map_err(driver("creating a stream"))?;
        let (major, minor) = context.compute_capability().map_err(driver("reading the compute capability"))?;
        let multiprocessors = context
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("reading the multiprocessor count"))?;
        let name = context.name().map_err(driver("reading the GPU's name"))?;
        let ptx = PtxCache::default_directory().map_or_else(PtxCache::in_memory, PtxCache::with_directory);
        // SAFETY: the probe only tries to dlopen libcublas and returns whether that worked.
        let blas = if unsafe { cudarc::cublas::sys::is_culib_present() } {
            Some(
                CudaBlas::new(Arc::clone(&stream))
                    .map_err(|e| DeviceError::Driver { action: "starting cuBLAS", message: e.to_string() })?,
            )
        } else {
            None
        };
        let words = stream.clone_htod(&[0u32, 0u32]).map_err(driver("allocating the seed"))?;
        Ok(CudaDevice {
            context,
            stream,
            arch: format!("sm_{major}{minor}"),
            multiprocessors: u32::try_from(multiprocessors).unwrap_or(1).max(1),
            name,
            buffers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            modules: Mutex::new(HashMap::new()),
            ptx,
            blas,
            scratch: Mutex::new(None),
            seed: Mutex::new(SeedWords { words, value: 0 }),
            capturing: AtomicBool::new(false),
            graphs: Mutex::new(HashMap::new()),
        })
    }

    /// The NVRTC architecture kernels are compiled for (`sm_90` on an H100 or H200).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The CUDA stream every launch of this device goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until every launch and copy so far finished.
    pub fn synchronize(&self) -> Result<(), DeviceError> {
        self.stream.synchronize().map_err(driver("waiting for the stream"))
    }

    /// How many times NVRTC compiled a kernel for this device (cache misses).
    pub fn compilations(&self) -> u64 {
        self.ptx.compilations()
    }

    /// Milliseconds of GPU time between the work `work` enqueues on the stream (timed by CUDA
    /// events, so launch overhead on the host is excluded where the GPU stays busy).
    pub fn time(&self, work: impl FnOnce() -> Result<(), DeviceError>) -> Result<f64, DeviceError> {
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.context.new_event(timing).map_err(driver("creating an event"))?;
        let end = self.context.new_event(timing).map_err(driver("creating an event"))?;
        start.record(&self.stream).map_err(driver("recording an event"))?;
        work()?;
        end.record(&self.stream).map_err(driver("recording an event"))?;
        end.synchronize().map_err(driver("waiting for an event"))?;
        let elapsed = start.elapsed_ms(&end).map_err(driver("reading an event"))?;
        Ok(f64::from(elapsed))
    }

    /// An error if a stream capture runs: `operation` cannot be part of a graph.
    fn refuse_while_capturing(&self, operation: &'static str) -> Result<(), DeviceError> {
        if self.capturing.load(Ordering::Acquire) {
            return Err(DeviceError::Capturing { operation });
        }
        Ok(())
    }

    /// The device address of the seed words, after making them hold `seed` when given (a copy on
    /// the stream, ordered after every earlier launch, when the seed changes). A kernel that
    /// draws no noise gives none: it never reads the words.
    fn seed_address(&self, seed: Option<u64>) -> Result<u64, DeviceError> {
        let mut held = lock(&self.seed);
        if let Some(seed) = seed.filter(|&seed| seed != held.value) {
            self.refuse_while_capturing("changing the seed")?;
            let words = [seed as u32, (seed >> 32) as u32];
            self.stream.memcpy_htod(&words, &mut held.words).map_err(driver("copying the seed to the GPU"))?;
            held.value = seed;
        }
        let (address, _guard) = held.words.device_ptr(&self.stream);
        Ok(address)
    }

    fn insert(&self, slice: CudaSlice<f32>, len: usize) -> BufferId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.buffers).insert(id, Buffer { slice, len });
        BufferId(id)
    }

    /// The module of a source, compiled and loaded on first use.
    fn load(&self, source: String, kind: ModuleKind) -> Result<Loaded, DeviceError> {
        if let Some(loaded) = lock(&self.modules).get(&source) {
            return Ok(loaded.clone());
        }
        let ptx = self.ptx.get_or_compile(&source, &self.arch)?;
        let module = self.context.load_module(Ptx::from_src(ptx.to_string())).map_err(driver("loading a kernel"))?;
        let function = |entry: &str| module.load_function(entry).map_err(driver("finding a kernel's entry point"));
        let loaded = match kind {
            ModuleKind::Reduction => Loaded::Reduction {
                partials: function(emit::REDUCE_PARTIALS_ENTRY)?,
                finish: function(emit::REDUCE_FINISH_ENTRY)?,
            },
            ModuleKind::Elementwise => Loaded::Single(function(emit::ELEMENTWISE_ENTRY)?),
            ModuleKind::Single(entry) => Loaded::Single(function(entry)?),
        };
        lock(&self.modules).insert(source, loaded.clone());
        Ok(loaded)
    }

    /// Launches the sampling module of `kernel` over `launch`'s rows (checked to fit in 32 bits),
    /// writing each row's token to `tokens` and the report to `report`.
    fn launch_sampling(
        &self,
        kernel: &SampleKernel,
        launch: &SampleLaunch<'_>,
        tokens: &CudaSlice<u32>,
        report: &CudaSlice<f64>,
    ) -> Result<(), DeviceError> {
        let SampleLaunch { rows, vocab, params, seed, site, step, .. } = *launch;
        let (rows32, vocab32) = (rows as u32, vocab as u32);
        let Loaded::Single(function) =
            self.load(cuda_tokens::sample_source(kernel), ModuleKind::Single(cuda_tokens::SAMPLE_ENTRY))?
        else {
            return Err(DeviceError::Driver { action: "loading a kernel", message: "wrong module kind".into() });
        };
        let [logits] = self.addresses(&[launch.logits], rows * vocab)?[..] else { return Err(unknown(launch.logits)) };
        let upload =
            |data: &[u32]| self.stream.clone_htod(data).map_err(driver("copying noise coordinates to the GPU"));
        let (samples, positions) = (upload(launch.noise_sample)?, upload(launch.noise_position)?);
        let seed_address = self.seed_address(Some(seed))?;
        let blocks = cuda_tokens::row_blocks(rows32, self.multiprocessors);
        let scratch_bytes = cuda_tokens::sample_scratch_bytes(kernel, vocab32).saturating_mul(u64::from(blocks));
        let scratch_len = usize::try_from(scratch_bytes).map_err(|_| DeviceError::Buffer {
            buffer: launch.logits.0,
            problem: format!("sampling scratch of {scratch_bytes} bytes exceeds the address space"),
        })?;
        let scratch =
            self.stream.alloc_zeros::<u8>(scratch_len.max(1)).map_err(driver("allocating sampling scratch"))?;
        let (samples_address, _s) = samples.device_ptr(&self.stream);
        let (positions_address, _p) = positions.device_ptr(&self.stream);
        let (scratch_address, _c) = scratch.device_ptr(&self.stream);
        let (tokens_address, _t) = tokens.device_ptr(&self.stream);
        let (report_address, _r) = report.device_ptr(&self.stream);
        let mut builder = self.stream.launch_builder(&function);
        builder
            .arg(&logits)
            .arg(&samples_address)
            .arg(&positions_address)
            .arg(&seed_address)
            .arg(&site)
            .arg(&step)
            .arg(&params.temperature)
            .arg(&params.top_k)
            .arg(&params.top_p)
            .arg(&params.min_p)
            .arg(&rows32)
            .arg(&vocab32)
            .arg(&scratch_address)
            .arg(&tokens_address)
            .arg(&report_address);
        let config =
            LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (emit::BLOCK_THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the arguments follow `sched_sample_rows`'s signature in
        // `sched_kernels::cuda_tokens`: `rows * vocab` logits (checked above), one noise sample and
        // position per row (checked by the callers), the seed words, the scalars, a scratch slot of
        // `sample_scratch_bytes` per block, and the callers' `rows` tokens and report of the
        // kernel's length. The noise coordinates and the scratch are freed on this stream, after
        // the launch; the tokens and the report are the callers', read back after it.
        unsafe { builder.launch(config) }.map_err(driver("launching a sampling kernel"))?;
        Ok(())
    }

    /// The device addresses of `buffers`, each checked to hold at least `len` elements.
    fn addresses(&self, buffers: &[BufferId], len: usize) -> Result<Vec<u64>, DeviceError> {
        let held = lock(&self.buffers);
        buffers
            .iter()
            .map(|id| {
                let buffer = held.get(&id.0).ok_or_else(|| unknown(*id))?;
                if buffer.len < len {
                    return Err(DeviceError::Buffer {
                        buffer: id.0,
                        problem: format!("has {} elements, fewer than the launch's {len}", buffer.len),
                    });
                }
                // With event tracking off, the guard records nothing; the address stays valid
                // while the buffer is held, and buffers are freed on this same stream.
                let (address, _guard) = buffer.slice.device_ptr(&self.stream);
                Ok(address)
            })
            .collect()
    }
}

/// The scalar arguments that follow the buffers of every launch: parameters, the seed words'
/// address, a (site, step) pair per noise slot, elements per sample, and the length.
struct Scalars {
    params: Vec<f32>,
    seed: u64,
    words: Vec<u32>,
    len: u64,
}

impl Scalars {
    fn new(launch: &Launch<'_>, seed: u64) -> Scalars {
        let NoiseLaunch { per_sample, slots, .. } = launch.noise;
        let mut words = Vec::with_capacity(2 * slots.len() + 1);
        for slot in slots {
            words.extend([slot.site, slot.step]);
        }
        // `check_counts` ensured the per-sample count fits 32 bits when the kernel draws noise;
        // a kernel without noise ignores it.
        words.push(u32::try_from(per_sample.max(1)).unwrap_or(u32::MAX));
        Scalars { params: launch.params.to_vec(), seed, words, len: launch.len as u64 }
    }

    /// Appends the scalars to a launch's arguments, in the ABI's order.
    fn push<'a>(&'a self, builder: &mut LaunchArgs<'a>) {
        for param in &self.params {
            builder.arg(param);
        }
        builder.arg(&self.seed);
        for word in &self.words {
            builder.arg(word);
        }
        builder.arg(&self.len);
    }
}

/// The operations of [`DeviceOp`] on the GPU, each one launch (or copy) on the device's stream.
impl CudaDevice {
    fn run_elementwise(&self, kernel: &ElementwiseKernel, launch: &Launch<'_>) -> Result<(), DeviceError> {
        if launch.len == 0 {
            return Ok(());
        }
        let Loaded::Single(function) = self.load(emit::elementwise_source(kernel)?, ModuleKind::Elementwise)? else {
            return Err(DeviceError::Driver { action: "loading a kernel", message: "wrong module kind".into() });
        };
        let inputs = self.addresses(launch.inputs, launch.len)?;
        let outputs = self.addresses(launch.outputs, launch.len)?;
        let seed = (kernel.noise_slots > 0).then_some(launch.noise.seed);
        let scalars = Scalars::new(launch, self.seed_address(seed)?);
        let mut builder = self.stream.launch_builder(&function);
        for address in inputs.iter().chain(&outputs) {
            builder.arg(address);
        }
        scalars.push(&mut builder);
        let config = LaunchConfig {
            grid_dim: (emit::elementwise_blocks(scalars.len, self.multiprocessors), 1, 1),
            block_dim: (emit::BLOCK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow the ABI of `sched_kernels::cuda` for this kernel: its
        // input and output addresses (each buffer checked above to hold `len` elements), its
        // parameters, the address of the two seed words, the noise words and the length, in that
        // order. Outputs that alias inputs
        // are allowed by that ABI.
        unsafe { builder.launch(config) }.map_err(driver("launching a kernel"))?;
        Ok(())
    }

    fn run_linear(&self, x: BufferId, weight: BufferId, out: BufferId, shape: LinearShape) -> Result<(), DeviceError> {
        let Some(blas) = &self.blas else {
            return Err(DeviceError::Unavailable { reason: "libcublas.so.13 was not found".into() });
        };
        let LinearShape { rows, inputs, outputs } = shape;
        if x == out || weight == out {
            return Err(DeviceError::Buffer {
                buffer: out.0,
                problem: "is both an input and the output of a matrix product".into(),
            });
        }
        let int = |n: usize| {
            i32::try_from(n).map_err(|_| DeviceError::Buffer {
                buffer: out.0,
                problem: format!("dimension {n} exceeds cuBLAS's 32-bit sizes"),
            })
        };
        let (m, n, k) = (int(outputs)?, int(rows)?, int(inputs)?);
        let mut held = lock(&self.buffers);
        let needs = [(weight, outputs * inputs), (x, rows * inputs), (out, rows * outputs)];
        for (id, len) in needs {
            let buffer = held.get(&id.0).ok_or_else(|| unknown(id))?;
            if buffer.len < len {
                return Err(DeviceError::Buffer {
                    buffer: id.0,
                    problem: format!("has {} elements, fewer than the {len} of the product", buffer.len),
                });
            }
        }
        let [Some(w), Some(xs), Some(result)] = held.get_disjoint_mut([&weight.0, &x.0, &out.0]) else {
            return Err(unknown(if weight == x { x } else { out }));
        };
        // Row-major `out = x wᵀ` is column-major `outᵀ = w xᵀ`: `w` read transposed (its
        // column-major view is [inputs, outputs]), `x` as is (column-major [inputs, rows]).
        let config = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m,
            n,
            k,
            alpha: 1.0f32,
            lda: k,
            ldb: k,
            beta: 0.0f32,
            ldc: m,
        };
        // SAFETY: the three buffers hold at least the elements the configuration addresses
        // (checked above), `out` is neither input, and all three live on the handle's stream.
        unsafe { blas.gemm(config, &w.slice, &xs.slice, &mut result.slice) }
            .map_err(|e| DeviceError::Driver { action: "multiplying matrices", message: e.to_string() })
    }

    fn run_bias_activation(
        &self,
        data: BufferId,
        bias: BufferId,
        len: usize,
        activation: Activation,
    ) -> Result<(), DeviceError> {
        let source = layers::bias_activation_source().to_string();
        let Loaded::Single(function) = self.load(source, ModuleKind::Single(layers::BIAS_ACTIVATION_ENTRY))? else {
            return Err(DeviceError::Driver { action: "loading a kernel", message: "wrong module kind".into() });
        };
        let cols = lock(&self.buffers).get(&bias.0).map(|b| b.len).ok_or_else(|| unknown(bias))?;
        if cols == 0 || len == 0 {
            return Ok(());
        }
        let [data_address] = self.addresses(&[data], len)?[..] else { return Err(unknown(data)) };
        let [bias_address] = self.addresses(&[bias], cols)?[..] else { return Err(unknown(bias)) };
        let cols = u32::try_from(cols)
            .map_err(|_| DeviceError::Buffer { buffer: bias.0, problem: "has more than 2^32 elements".into() })?;
        let (len, code) = (len as u64, layers::activation_code(activation));
        let mut builder = self.stream.launch_builder(&function);
        builder.arg(&data_address).arg(&bias_address).arg(&cols).arg(&len).arg(&code);
        let config = LaunchConfig {
            grid_dim: (emit::elementwise_blocks(len, self.multiprocessors), 1, 1),
            block_dim: (emit::BLOCK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow `sched_bias_activation`'s signature: `data` holds `len`
        // elements and `bias` `cols >= 1` (both checked above); the grid-stride loop stays in
        // bounds for any grid.
        unsafe { builder.launch(config) }.map_err(driver("launching a layer kernel"))?;
        Ok(())
    }

    fn run_copy(&self, from: BufferId, to: BufferId, len: usize) -> Result<(), DeviceError> {
        let mut held = lock(&self.buffers);
        let [Some(source), Some(target)] = held.get_disjoint_mut([&from.0, &to.0]) else {
            return Err(unknown(if from == to { to } else { from }));
        };
        for (id, buffer) in [(from, &*source), (to, &*target)] {
            if buffer.len < len {
                return Err(DeviceError::Buffer {
                    buffer: id.0,
                    problem: format!("has {} elements, fewer than the {len} copied", buffer.len),
                });
            }
        }
        if len == 0 {
            return Ok(());
        }
        let source = source.slice.slice(..len);
        let mut target = target.slice.slice_mut(..len);
        self.stream.memcpy_dtod(&source, &mut target).map_err(driver("copying on the GPU"))
    }

    #[allow(clippy::too_many_arguments, reason = "the buffers and sizes of one layer")]
    fn run_layer_norm(
        &self,
        x: BufferId,
        weight: BufferId,
        bias: BufferId,
        out: BufferId,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> Result<(), DeviceError> {
        if x == out {
            return Err(DeviceError::Buffer {
                buffer: out.0,
                problem: "is both the input and the output of a LayerNorm".into(),
            });
        }
        let len = rows
            .checked_mul(width)
            .ok_or(DeviceError::Buffer { buffer: x.0, problem: format!("{rows} rows of {width} elements overflow") })?;
        if len == 0 {
            return Ok(());
        }
        let source = layers::layer_norm_source().to_string();
        let Loaded::Single(function) = self.load(source, ModuleKind::Single(layers::LN_ENTRY))? else {
            return Err(DeviceError::Driver { action: "loading a kernel", message: "wrong module kind".into() });
        };
        let [x_address, out_address] = self.addresses(&[x, out], len)?[..] else { return Err(unknown(x)) };
        let [weight_address, bias_address] = self.addresses(&[weight, bias], width)?[..] else {
            return Err(unknown(weight));
        };
        let width = u32::try_from(width)
            .map_err(|_| DeviceError::Buffer { buffer: weight.0, problem: "has more than 2^32 elements".into() })?;
        let rows = rows as u64;
        let mut builder = self.stream.launch_builder(&function);
        builder
            .arg(&x_address)
            .arg(&weight_address)
            .arg(&bias_address)
            .arg(&out_address)
            .arg(&rows)
            .arg(&width)
            .arg(&eps);
        // One thread per row: `elementwise_blocks` sizes a grid for one thread per group of
        // VECTOR_WIDTH elements, so it is asked for that many elements per row.
        let config = LaunchConfig {
            grid_dim: (emit::elementwise_blocks(rows * emit::VECTOR_WIDTH as u64, self.multiprocessors), 1, 1),
            block_dim: (emit::BLOCK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow `sched_layer_norm`'s signature: `x` and `out` hold
        // `rows * width` elements and `weight` and `bias` `width` (all checked above), `out` is
        // not `x`, and the grid-stride loop over rows stays in bounds for any grid.
        unsafe { builder.launch(config) }.map_err(driver("launching a layer kernel"))?;
        Ok(())
    }

    fn run_attention(
        &self,
        q: BufferId,
        k: BufferId,
        v: BufferId,
        out: BufferId,
        shape: AttentionShape,
    ) -> Result<(), DeviceError> {
        if [q, k, v].contains(&out) {
            return Err(DeviceError::Buffer {
                buffer: out.0,
                problem: "is both an input and the output of attention".into(),
            });
        }
        let AttentionShape { batch, len, heads, head_dim, causal } = shape;
        let too_big =
            || DeviceError::Buffer { buffer: out.0, problem: format!("attention of shape {shape:?} is too large") };
        let elements =
            [batch, len, heads, head_dim].iter().try_fold(1usize, |n, &k| n.checked_mul(k)).ok_or_else(too_big)?;
        let threads = batch.checked_mul(len).and_then(|n| n.checked_mul(heads)).ok_or_else(too_big)?;
        if elements == 0 {
            return Ok(());
        }
        let source = layers::attention_source().to_string();
        let Loaded::Single(function) = self.load(source, ModuleKind::Single(layers::ATTENTION_ENTRY))? else {
            return Err(DeviceError::Driver { action: "loading a kernel", message: "wrong module kind".into() });
        };
        let [q, k, v, out] = self.addresses(&[q, k, v, out], elements)?[..] else { return Err(unknown(out)) };
        let size = |n: usize| u32::try_from(n).map_err(|_| too_big());
        let (batch, len, heads, head_dim) = (size(batch)?, size(len)?, size(heads)?, size(head_dim)?);
        let causal = i32::from(causal);
        let mut builder = self.stream.launch_builder(&function);
        builder.arg(&q).arg(&k).arg(&v).arg(&out).arg(&batch).arg(&len).arg(&heads).arg(&head_dim).arg(&causal);
        // One thread per (row, head, query), sized as for the LayerNorm's rows.
        let config = LaunchConfig {
            grid_dim: (
                emit::elementwise_blocks(threads as u64 * emit::VECTOR_WIDTH as u64, self.multiprocessors),
                1,
                1,
            ),
            block_dim: (emit::BLOCK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow `sched_attention`'s signature: `q`, `k`, `v` and `out`
        // each hold `batch * len * heads * head_dim` elements (checked above), `out` is none of
        // the inputs, and the grid-stride loop over (row, head, query) stays in bounds for any
        // grid.
        unsafe { builder.launch(config) }.map_err(driver("launching a layer kernel"))?;
        Ok(())
    }

    fn run_gather_rows(
        &self,
        src: BufferId,
        indices: &[u32],
        width: usize,
        blocked: Option<u32>,
        out: BufferId,
    ) -> Result<(), DeviceError> {
        if src == out {
            return Err(DeviceError::Buffer {
                buffer: out.0,
                problem: "is both the source and the output of a gather".into(),
            });
        }
        let len = indices.len().checked_mul(width).ok_or(DeviceError::Buffer {
            buffer: out.0,
            problem: format!("{} rows of {width} elements overflow", indices.len()),
        })?;
        if len == 0 {
            return Ok(());
        }
        let rows = lock(&self.buffers).get(&src.0).map(|b| b.len / width).ok_or_else(|| unknown(src))?;
        if let Some(&index) = indices.iter().find(|&&i| i as usize >= rows) {
            return Err(DeviceError::Buffer {
                buffer: src.0,
                problem: format!("has {rows} rows, and row {index} is gathered"),
            });
        }
        let source = layers::gather_rows_source().to_string();
        let Loaded::Single(function) = self.load(source, ModuleKind::Single(layers::GATHER_ENTRY))? else {
            return Err(DeviceError::Driver { action: "loading a kernel", message: "wrong module kind".into() });
        };
        let [src_address] = self.addresses(&[src], width)?[..] else { return Err(unknown(src)) };
        let [out_address] = self.addresses(&[out], len)?[..] else { return Err(unknown(out)) };
        let width = u32::try_from(width).map_err(|_| DeviceError::Buffer {
            buffer: src.0,
            problem: "has rows of more than 2^32 elements".into(),
        })?;
        let blocked = blocked.unwrap_or(width);
        let on_device = self.stream.clone_htod(indices).map_err(driver("copying row indices to the GPU"))?;
        let (indices_address, _guard) = on_device.device_ptr(&self.stream);
        let rows = indices.len() as u64;
        let mut builder = self.stream.launch_builder(&function);
        builder.arg(&src_address).arg(&indices_address).arg(&rows).arg(&width).arg(&blocked).arg(&out_address);
        let config = LaunchConfig {
            grid_dim: (emit::elementwise_blocks(len as u64, self.multiprocessors), 1, 1),
            block_dim: (emit::BLOCK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow `sched_gather_rows`'s signature: every index is below the
        // source's row count (checked above), `out` holds `rows * width` elements and is not the
        // source, and the index buffer lives on this stream until after the launch (it is freed
        // on the same stream when dropped).
        unsafe { builder.launch(config) }.map_err(driver("launching a gather"))?;
        Ok(())
    }

    fn run_move_rows(&self, src: BufferId, out: BufferId, moves: RowMoves<'_>) -> Result<(), DeviceError> {
        let RowMoves { from, to, width } = moves;
        let lengths = {
            let held = lock(&self.buffers);
            held.get(&src.0).map(|b| b.len).zip(held.get(&out.0).map(|b| b.len))
        };
        let Some((src_len, out_len)) = lengths else {
            return Err(unknown(if lock(&self.buffers).contains_key(&src.0) { out } else { src }));
        };
        moves.check(src, src_len, out, out_len)?;
        if from.is_empty() || width == 0 {
            return Ok(());
        }
        let Loaded::Single(function) =
            self.load(layers::move_rows_source().to_string(), ModuleKind::Single(layers::MOVE_ROWS_ENTRY))?
        else {
            return Err(DeviceError::Driver { action: "loading a kernel", message: "wrong module kind".into() });
        };
        let [src_address] = self.addresses(&[src], width)?[..] else { return Err(unknown(src)) };
        let [out_address] = self.addresses(&[out], width)?[..] else { return Err(unknown(out)) };
        let upload = |rows: &[u32]| self.stream.clone_htod(rows).map_err(driver("copying row numbers to the GPU"));
        let (from_rows, to_rows) = (upload(from)?, upload(to)?);
        let (from_address, _f) = from_rows.device_ptr(&self.stream);
        let (to_address, _t) = to_rows.device_ptr(&self.stream);
        let (rows, width32) = (from.len() as u64, width as u32);
        let mut builder = self.stream.launch_builder(&function);
        builder.arg(&src_address).arg(&from_address).arg(&to_address).arg(&rows).arg(&width32).arg(&out_address);
        let config = LaunchConfig {
            grid_dim: (emit::elementwise_blocks(rows.saturating_mul(width as u64), self.multiprocessors), 1, 1),
            block_dim: (emit::BLOCK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow `sched_move_rows`'s signature: `RowMoves::check` found every
        // source row inside `src`, every destination row inside `out`, the destinations distinct,
        // `out` not `src` and the width below 2^32; the row numbers live on this stream until after
        // the launch (they are freed on the same stream when dropped).
        unsafe { builder.launch(config) }.map_err(driver("launching a row move"))?;
        Ok(())
    }

    fn run_guide_logits(
        &self,
        un: BufferId,
        cond: BufferId,
        scale: f64,
        len: usize,
        out: BufferId,
    ) -> Result<(), DeviceError> {
        self.refuse_while_capturing("guiding logits")?;
        if len == 0 {
            return Ok(());
        }
        let source = cuda_tokens::guide_source().to_string();
        let Loaded::Single(function) = self.load(source, ModuleKind::Single(cuda_tokens::GUIDE_ENTRY))? else {
            return Err(DeviceError::Driver { action: "loading a kernel", message: "wrong module kind".into() });
        };
        let [un, cond, out] = self.addresses(&[un, cond, out], len)?[..] else { return Err(unknown(out)) };
        let len = len as u64;
        let mut builder = self.stream.launch_builder(&function);
        builder.arg(&un).arg(&cond).arg(&scale).arg(&len).arg(&out);
        let config = LaunchConfig {
            grid_dim: (emit::elementwise_blocks(len, self.multiprocessors), 1, 1),
            block_dim: (emit::BLOCK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow `sched_guide_logits`'s signature: `un`, `cond` and `out`
        // each hold `len` elements (checked above), `out` may alias `cond` or `un` (each element is
        // read before it is written), and the grid-stride loop stays in bounds for any grid.
        unsafe { builder.launch(config) }.map_err(driver("launching a guidance kernel"))?;
        Ok(())
    }
}

impl Device for CudaDevice {
    fn name(&self) -> String {
        format!("cuda:{} {} ({})", self.context.ordinal(), self.name, self.arch)
    }

    fn alloc(&self, len: usize) -> Result<BufferId, DeviceError> {
        self.refuse_while_capturing("allocating a buffer")?;
        // SAFETY: the contents are unspecified by `Device::alloc`'s contract; the executor only
        // allocates buffers a kernel writes before anything reads them.
        let slice = unsafe { self.stream.alloc::<f32>(len.max(1)) }.map_err(driver("allocating a buffer"))?;
        Ok(self.insert(slice, len))
    }

    fn upload(&self, data: &[f32]) -> Result<BufferId, DeviceError> {
        self.refuse_while_capturing("copying to the GPU")?;
        let slice = if data.is_empty() { self.stream.alloc_zeros::<f32>(1) } else { self.stream.clone_htod(data) }
            .map_err(driver("copying to the GPU"))?;
        Ok(self.insert(slice, data.len()))
    }

    fn download(&self, buffer: BufferId) -> Result<Vec<f32>, DeviceError> {
        self.refuse_while_capturing("copying from the GPU")?;
        let mut data = {
            let held = lock(&self.buffers);
            let held = held.get(&buffer.0).ok_or_else(|| unknown(buffer))?;
            self.stream.clone_dtoh(&held.slice).map_err(driver("copying from the GPU"))?
        };
        self.synchronize()?;
        let len = lock(&self.buffers).get(&buffer.0).map_or(0, |b| b.len);
        data.truncate(len);
        Ok(data)
    }

    fn free(&self, buffer: BufferId) {
        // Dropping the slice frees it on the stream, after the launches that use it.
        lock(&self.buffers).remove(&buffer.0);
    }

    fn execute(&self, op: &DeviceOp<'_, BufferId>) -> Result<(), DeviceError> {
        match op {
            DeviceOp::Elementwise { .. } => match op.launch() {
                Some((kernel, launch)) => {
                    check_counts(kernel, &launch, kernel.outputs.len())?;
                    self.run_elementwise(kernel, &launch)
                }
                None => Ok(()),
            },
            &DeviceOp::Linear { x, weight, out, shape } => self.run_linear(x, weight, out, shape),
            &DeviceOp::BiasActivation { data, bias, len, activation } => {
                self.run_bias_activation(data, bias, len, activation)
            }
            &DeviceOp::Copy { from, to, len } => self.run_copy(from, to, len),
            &DeviceOp::LayerNorm { x, weight, bias, out, rows, width, eps } => {
                self.run_layer_norm(x, weight, bias, out, rows, width, eps)
            }
            &DeviceOp::Attention { q, k, v, out, shape } => self.run_attention(q, k, v, out, shape),
            DeviceOp::Gather { src, indices, width, blocked, out } => {
                self.run_gather_rows(*src, indices, *width, *blocked, *out)
            }
            DeviceOp::MoveRows { src, out, .. } => match op.row_moves() {
                Some(moves) => self.run_move_rows(*src, *out, moves),
                None => Ok(()),
            },
            &DeviceOp::GuideLogits { un, cond, scale, len, out } => self.run_guide_logits(un, cond, scale, len, out),
            &DeviceOp::RmsNorm { x, weight, out, rows, width, eps } => {
                self.run_rms_norm(x, weight, out, rows, width, eps)
            }
            DeviceOp::Rope { x, cos, sin, positions, shape, table_positions } => {
                self.run_rope(*x, (*cos, *sin), positions, *shape, *table_positions)
            }
            &DeviceOp::SwiGlu { gate, up, out, len } => self.run_swiglu(gate, up, out, len),
            &DeviceOp::CachedAttention { q, keys, values, out, shape } => {
                self.run_cached_attention((q, keys, values), out, shape)
            }
        }
    }

    fn reduce(&self, kernel: &ReductionKernel, launch: &Launch<'_>) -> Result<f64, DeviceError> {
        check_counts(&kernel.body, launch, 0)?;
        self.refuse_while_capturing("reading a reduction back")?;
        let Loaded::Reduction { partials, finish } =
            self.load(emit::reduction_source(kernel)?, ModuleKind::Reduction)?
        else {
            return Err(DeviceError::Driver { action: "loading a kernel", message: "wrong module kind".into() });
        };
        let inputs = self.addresses(launch.inputs, launch.len)?;
        let seed = (kernel.body.noise_slots > 0).then_some(launch.noise.seed);
        let scalars = Scalars::new(launch, self.seed_address(seed)?);
        let mut scratch = lock(&self.scratch);
        if scratch.is_none() {
            let partials = self
                .stream
                .alloc_zeros::<f64>(emit::REDUCE_MAX_BLOCKS as usize)
                .map_err(driver("allocating reduction scratch"))?;
            let result = self.stream.alloc_zeros::<f64>(1).map_err(driver("allocating reduction scratch"))?;
            *scratch = Some(ReductionScratch { partials, result });
        }
        let Some(ReductionScratch { partials: partial_values, result }) = scratch.as_mut() else {
            return Err(DeviceError::Driver { action: "allocating reduction scratch", message: "missing".into() });
        };
        let blocks = emit::reduction_blocks(scalars.len);
        let mut first = self.stream.launch_builder(&partials);
        for address in &inputs {
            first.arg(address);
        }
        scalars.push(&mut first);
        first.arg(&mut *partial_values);
        let config = |blocks: u32| LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (emit::BLOCK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow the ABI of the first reduction pass: input addresses
        // (checked to hold `len` elements), parameters, the seed words' address, noise words, the
        // length and the partials buffer, which holds REDUCE_MAX_BLOCKS >= `blocks` values.
        unsafe { first.launch(config(blocks)) }.map_err(driver("launching a reduction"))?;
        let mut second = self.stream.launch_builder(&finish);
        second.arg(&*partial_values);
        second.arg(&blocks);
        second.arg(&scalars.len);
        second.arg(&mut *result);
        // SAFETY: the arguments follow the ABI of the second pass: the partials (the first pass
        // wrote `blocks` of them), their count, the length and a one-element result buffer.
        unsafe { second.launch(config(1)) }.map_err(driver("launching a reduction"))?;
        let value = self.stream.clone_dtoh(&*result).map_err(driver("copying a reduction from the GPU"))?;
        self.synchronize()?;
        value.first().copied().ok_or_else(|| DeviceError::Driver {
            action: "copying a reduction from the GPU",
            message: "no value came back".into(),
        })
    }

    fn has_linear(&self) -> bool {
        self.blas.is_some()
    }

    fn sample_rows(&self, kernel: &SampleKernel, launch: &SampleLaunch<'_>) -> Result<Sampled, DeviceError> {
        self.refuse_while_capturing("reading tokens back")?;
        launch.check()?;
        let SampleLaunch { rows, vocab, .. } = *launch;
        let too_big = || DeviceError::Buffer {
            buffer: launch.logits.0,
            problem: format!("{rows} rows of {vocab} logits exceed 2^32"),
        };
        if u32::try_from(rows).is_err() || u32::try_from(vocab).is_err() {
            return Err(too_big());
        }
        if rows == 0 {
            return Ok(Sampled { tokens: Vec::new(), report: Vec::new() });
        }
        let report_len = match kernel.report {
            Report::Token => 0,
            Report::RawProbability | Report::Probability => rows,
            Report::Distribution => rows.checked_mul(vocab).ok_or_else(too_big)?,
        };
        let tokens = self.stream.alloc_zeros::<u32>(rows).map_err(driver("allocating tokens"))?;
        let report = self.stream.alloc_zeros::<f64>(report_len.max(1)).map_err(driver("allocating a report"))?;
        self.launch_sampling(kernel, launch, &tokens, &report)?;
        let tokens = self.stream.clone_dtoh(&tokens).map_err(driver("copying tokens from the GPU"))?;
        let mut report = self.stream.clone_dtoh(&report).map_err(driver("copying a report from the GPU"))?;
        self.synchronize()?;
        report.truncate(report_len);
        Ok(Sampled { tokens, report })
    }

    fn verify_drafts(&self, launch: &VerifyLaunch<'_>) -> Result<Vec<Vec<u32>>, DeviceError> {
        self.refuse_while_capturing("reading verified tokens back")?;
        let (rows32, k32, vocab32) = launch.check()?;
        let VerifyLaunch { rows, k, vocab, seed, site, step, eos, .. } = *launch;
        if rows == 0 {
            return Ok(Vec::new());
        }
        // Checked by `launch.check`: `rows × (k + 1) × vocab` fits.
        let scored = rows * (k + 1);
        let allocate =
            |len: usize| self.stream.alloc_zeros::<f64>(len.max(1)).map_err(driver("allocating distributions"));
        let allocate_words =
            |len: usize| self.stream.alloc_zeros::<u32>(len.max(1)).map_err(driver("allocating tokens"));
        // The model's distribution and token at each position, then the draft's distribution.
        let (target, target_tokens) = (allocate(scored * vocab)?, allocate_words(scored)?);
        let scored_samples: Vec<u32> =
            launch.noise_sample.iter().flat_map(|&s| std::iter::repeat_n(s, k + 1)).collect();
        let scored_positions: Vec<u32> = (0..rows).flat_map(|_| 0..=k32).collect();
        let sample = |logits: BufferId, rows: usize, params: SampleParams| SampleLaunch {
            logits,
            rows,
            vocab,
            params,
            noise_sample: &scored_samples[..rows],
            noise_position: &scored_positions[..rows],
            seed,
            site,
            step,
        };
        let target_launch = sample(launch.target, scored, launch.target_params);
        self.launch_sampling(&reporting_distribution(launch.target_kernel), &target_launch, &target_tokens, &target)?;
        let (proposal, drafted) = (allocate(rows * k * vocab)?, allocate_words(rows * k)?);
        if k > 0 {
            // Any noise serves: the distribution does not depend on it.
            let proposal_launch = sample(launch.proposal, rows * k, launch.proposal_params);
            self.launch_sampling(
                &reporting_distribution(launch.proposal_kernel),
                &proposal_launch,
                &drafted,
                &proposal,
            )?;
        }
        let Loaded::Single(function) =
            self.load(cuda_tokens::verify_source(), ModuleKind::Single(cuda_tokens::VERIFY_SAMPLE_ENTRY))?
        else {
            return Err(DeviceError::Driver { action: "loading a kernel", message: "wrong module kind".into() });
        };
        let upload = |data: &[u32]| self.stream.clone_htod(data).map_err(driver("copying drafts to the GPU"));
        let (draft, samples) = (upload(if k == 0 { &[0] } else { launch.draft })?, upload(launch.noise_sample)?);
        let seed_address = self.seed_address(Some(seed))?;
        let blocks = cuda_tokens::row_blocks(rows32, self.multiprocessors);
        let scratch_bytes = cuda_tokens::verify_scratch_bytes(vocab32).saturating_mul(u64::from(blocks));
        let scratch_len = usize::try_from(scratch_bytes).map_err(|_| DeviceError::Buffer {
            buffer: launch.target.0,
            problem: format!("verification scratch of {scratch_bytes} bytes exceeds the address space"),
        })?;
        let scratch =
            self.stream.alloc_zeros::<u8>(scratch_len.max(1)).map_err(driver("allocating verification scratch"))?;
        let (tokens, counts) = (allocate_words(scored)?, allocate_words(rows)?);
        let (has_eos, eos_word) = (u32::from(eos.is_some()), eos.unwrap_or(0));
        {
            let (draft_address, _d) = draft.device_ptr(&self.stream);
            let (target_address, _p) = target.device_ptr(&self.stream);
            let (proposal_address, _q) = proposal.device_ptr(&self.stream);
            let (target_tokens_address, _m) = target_tokens.device_ptr(&self.stream);
            let (samples_address, _s) = samples.device_ptr(&self.stream);
            let (scratch_address, _c) = scratch.device_ptr(&self.stream);
            let (tokens_address, _t) = tokens.device_ptr(&self.stream);
            let (counts_address, _n) = counts.device_ptr(&self.stream);
            let mut builder = self.stream.launch_builder(&function);
            builder
                .arg(&draft_address)
                .arg(&target_address)
                .arg(&proposal_address)
                .arg(&target_tokens_address)
                .arg(&samples_address)
                .arg(&seed_address)
                .arg(&site)
                .arg(&step)
                .arg(&has_eos)
                .arg(&eos_word)
                .arg(&rows32)
                .arg(&k32)
                .arg(&vocab32)
                .arg(&scratch_address)
                .arg(&tokens_address)
                .arg(&counts_address);
            let config =
                LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (emit::BLOCK_THREADS, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments follow `sched_verify_sample`'s signature in
            // `sched_kernels::cuda_tokens`: `rows × k` draft tokens, the `rows × (k + 1) × vocab`
            // model distributions and `rows × (k + 1)` tokens, the `rows × k × vocab` draft
            // distributions, one noise sample per row, the seed words, the scalars, a scratch slot
            // of `verify_scratch_bytes` per block, and `rows × (k + 1)` tokens and `rows` counts
            // to write; every buffer lives on this stream until the copies below finish.
            unsafe { builder.launch(config) }.map_err(driver("launching a verification kernel"))?;
        }
        let tokens = self.stream.clone_dtoh(&tokens).map_err(driver("copying verified tokens from the GPU"))?;
        let counts = self.stream.clone_dtoh(&counts).map_err(driver("copying verified counts from the GPU"))?;
        self.synchronize()?;
        Ok((0..rows).map(|r| tokens[r * (k + 1)..][..(counts[r] as usize).min(k + 1)].to_vec()).collect())
    }

    fn live_buffers(&self) -> usize {
        lock(&self.buffers).len()
    }

    fn capture(
        &self,
        seed: u64,
        body: &mut dyn FnMut() -> Result<(), DeviceError>,
    ) -> Result<Option<GraphId>, DeviceError> {
        // The seed words must hold the capture's seed before it starts: a copy from host memory
        // cannot be captured.
        self.seed_address(Some(seed))?;
        if self.capturing.swap(true, Ordering::AcqRel) {
            return Err(DeviceError::Capturing { operation: "starting a capture" });
        }
        // Relaxed mode: the capture holds only this device's launches and copies, and the body
        // makes no other CUDA call that a stricter mode would have to refuse.
        if let Err(error) = self.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED) {
            self.capturing.store(false, Ordering::Release);
            return Err(driver("starting a capture")(error));
        }
        let result = body();
        // The capture ends whatever the body did, so the stream works again after an error.
        let ended = self.stream.end_capture(CUgraphInstantiate_flags(0));
        self.capturing.store(false, Ordering::Release);
        result?;
        let graph = ended.map_err(driver("instantiating a graph"))?.ok_or_else(|| DeviceError::Driver {
            action: "capturing a graph",
            message: "the capture recorded nothing".into(),
        })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.graphs).insert(id, Graph(graph));
        Ok(Some(GraphId(id)))
    }

    fn replay_graph(&self, graph: GraphId, seed: u64) -> Result<(), DeviceError> {
        self.seed_address(Some(seed))?;
        let graphs = lock(&self.graphs);
        let held = graphs.get(&graph.0).ok_or(DeviceError::UnknownGraph { graph: graph.0 })?;
        held.0.launch().map_err(driver("launching a graph"))
    }

    fn free_graph(&self, graph: GraphId) {
        lock(&self.graphs).remove(&graph.0);
    }
}
