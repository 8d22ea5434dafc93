//! Native code for elementwise kernels, compiled with Cranelift.
//!
//! [`CompiledKernel::compile`] turns an [`ElementwiseKernel`] into one Cranelift function
//!
//! ```text
//! extern "C" fn(args: *const LaunchArgs, start: usize, end: usize)
//! ```
//!
//! that evaluates the kernel at every element `i` in `start..end`: it loads element `i` of each
//! input, evaluates the nodes in order and stores element `i` of each output. The main loop works
//! on [`VECTOR_STEP`] elements at a time as f32x4 vectors; a scalar loop finishes the tail.
//!
//! The results are exactly those of [`cpu::evaluate`](crate::cpu::evaluate), bit for bit:
//!
//! - Arithmetic, `sqrt`, `neg`, `abs`, `floor` and `ceil` are the corresponding Cranelift
//!   instructions, each with one IEEE rounding and never fused into a multiply-add.
//! - `min` and `max` are built from comparisons and selects, because Cranelift's `fmin` and
//!   `fmax` propagate NaN while Rust's `f32::min` and `f32::max` ignore it. They reproduce what
//!   Rust's compiled `f32::min(a, b)` does: `b` if `a` is NaN or `b < a`, else `a` (so with equal
//!   operands, such as `+0` and `-0`, the first is returned), and symmetrically for `max`.
//! - Transcendental functions and `pow` call small `extern "C"` shims that call the very `f32`
//!   methods the reference evaluator calls, so both reach the same libm functions. The vector loop
//!   calls them once per lane.
//! - Noise calls shims around [`philox::gaussian`] and [`philox::uniform`]; the sample and the
//!   index within it are computed in the compiled code from the element's global index.
//!
//! Only NaN payloads are outside this promise, as they are for Rust itself: when both operands
//! of an operation are NaN, which of them the result carries is up to the machine code.

use std::collections::HashMap;
use std::mem::offset_of;
use std::sync::{Mutex, PoisonError};
use std::thread;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::immediates::Ieee32;
use cranelift_codegen::ir::{AbiParam, BlockArg, FuncRef, InstBuilder, MemFlagsData, Signature, Type, Value, types};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use thiserror::Error;

use crate::cpu::InPlace;
use crate::philox;
use crate::spec::KernelError;
use crate::spec::{BinaryOp, Distribution, ElementwiseKernel, Node, NodeId, NoiseLaunch, UnaryOp};

/// The number of f32 lanes of one vector.
const LANES: usize = 4;

/// The number of vectors evaluated per iteration of the main loop (manual unrolling).
const UNROLL: usize = 2;

/// The number of elements one iteration of the main loop evaluates.
pub const VECTOR_STEP: usize = LANES * UNROLL;

/// The smallest number of elements [`CompiledKernel::run_parallel`] gives a thread, so that
/// starting the thread costs little next to its work.
pub const MIN_CHUNK: usize = 4096;

/// Why a kernel cannot be compiled or a compiled kernel cannot be launched.
#[derive(Debug, Error)]
pub enum JitError {
    /// The kernel is invalid, or the launch does not fit it (the same checks as the CPU
    /// evaluator).
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The launch passes a different number of output tensors than the kernel writes.
    #[error("the kernel writes {expected} outputs, but the launch passes {got}")]
    OutputCount { expected: usize, got: usize },
    /// An output tensor has fewer elements than the launch length.
    #[error("output {output} has {actual} elements, fewer than the launch length {len}")]
    OutputTooShort { output: usize, actual: usize, len: usize },
    /// Cranelift does not support the host machine.
    #[error("Cranelift cannot generate code for this machine: {0}")]
    UnsupportedHost(String),
    /// Cranelift rejected the generated function; this is a bug of the code generator.
    #[error("Cranelift cannot compile the kernel: {0}")]
    Compile(String),
    /// A worker thread of a parallel launch cannot be started.
    #[error("cannot start a worker thread of a parallel launch: {0}")]
    Spawn(#[source] std::io::Error),
    /// A worker thread of a parallel launch panicked.
    #[error("a worker thread of a parallel launch panicked")]
    WorkerPanicked,
}

/// The arguments of one launch, as the compiled function reads them.
#[repr(C)]
struct LaunchArgs {
    /// One pointer per declared input, to element 0 of the launch's range of that input.
    inputs: *const *const f32,
    /// One pointer per output, to element 0 of the launch's range of that output.
    outputs: *const *mut f32,
    /// One value per declared parameter.
    params: *const f32,
    /// The site and the step of each noise slot, interleaved.
    slots: *const u32,
    /// The seed of the random stream.
    seed: u64,
    /// Elements per sample; nonzero when the kernel draws noise.
    per_sample: usize,
    /// The global index of element 0 of the buffers, from which noise coordinates are computed.
    base: usize,
}

/// The type of the compiled function.
type KernelFn = unsafe extern "C" fn(*const LaunchArgs, usize, usize);

extern "C" fn sched_expf(x: f32) -> f32 {
    x.exp()
}

extern "C" fn sched_logf(x: f32) -> f32 {
    x.ln()
}

extern "C" fn sched_expm1f(x: f32) -> f32 {
    x.exp_m1()
}

extern "C" fn sched_log1pf(x: f32) -> f32 {
    x.ln_1p()
}

extern "C" fn sched_sinf(x: f32) -> f32 {
    x.sin()
}

extern "C" fn sched_cosf(x: f32) -> f32 {
    x.cos()
}

extern "C" fn sched_tanf(x: f32) -> f32 {
    x.tan()
}

extern "C" fn sched_tanhf(x: f32) -> f32 {
    x.tanh()
}

extern "C" fn sched_atanf(x: f32) -> f32 {
    x.atan()
}

extern "C" fn sched_powf(x: f32, y: f32) -> f32 {
    x.powf(y)
}

extern "C" fn sched_gaussian(seed: u64, site: u32, step: u32, sample: u32, index: u32) -> f32 {
    philox::gaussian(seed, site, step, sample, index)
}

extern "C" fn sched_uniform(seed: u64, site: u32, step: u32, sample: u32, index: u32) -> f32 {
    philox::uniform(seed, site, step, sample, index)
}

/// The shims the compiled code may call, by symbol name.
fn shim_symbols() -> [(&'static str, *const u8); 12] {
    [
        ("sched_expf", sched_expf as *const u8),
        ("sched_logf", sched_logf as *const u8),
        ("sched_expm1f", sched_expm1f as *const u8),
        ("sched_log1pf", sched_log1pf as *const u8),
        ("sched_sinf", sched_sinf as *const u8),
        ("sched_cosf", sched_cosf as *const u8),
        ("sched_tanf", sched_tanf as *const u8),
        ("sched_tanhf", sched_tanhf as *const u8),
        ("sched_atanf", sched_atanf as *const u8),
        ("sched_powf", sched_powf as *const u8),
        ("sched_gaussian", sched_gaussian as *const u8),
        ("sched_uniform", sched_uniform as *const u8),
    ]
}

/// The shim of a unary operation that calls libm, or `None` for one compiled inline.
fn unary_shim(op: UnaryOp) -> Option<&'static str> {
    Some(match op {
        UnaryOp::Exp => "sched_expf",
        UnaryOp::Log => "sched_logf",
        UnaryOp::Expm1 => "sched_expm1f",
        UnaryOp::Log1p => "sched_log1pf",
        UnaryOp::Sin => "sched_sinf",
        UnaryOp::Cos => "sched_cosf",
        UnaryOp::Tan => "sched_tanf",
        UnaryOp::Tanh => "sched_tanhf",
        UnaryOp::Atan => "sched_atanf",
        UnaryOp::Neg | UnaryOp::Sqrt | UnaryOp::Abs | UnaryOp::Sigmoid | UnaryOp::Floor | UnaryOp::Ceil => {
            return None;
        }
    })
}

/// An elementwise kernel compiled to native code.
///
/// It owns the code, which is freed when it is dropped. Launches only read it, so one compiled
/// kernel can be launched from several threads at once.
pub struct CompiledKernel {
    /// The module that owns the code. `JITModule` is `Send` but not `Sync`; the mutex makes the
    /// kernel `Sync`, and it is never locked because nothing uses the module after compilation
    /// except `Drop`, which has exclusive access.
    module: Mutex<Option<JITModule>>,
    /// The finalized function, valid until `module` frees its memory.
    function: KernelFn,
    /// The CLIF text of the function, before optimisation.
    clif: String,
    inputs: u32,
    params: u32,
    noise_slots: u32,
    outputs: usize,
    draws_noise: bool,
}

impl std::fmt::Debug for CompiledKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledKernel")
            .field("inputs", &self.inputs)
            .field("params", &self.params)
            .field("noise_slots", &self.noise_slots)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Drop for CompiledKernel {
    fn drop(&mut self) {
        let slot = self.module.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(module) = slot.take() {
            // SAFETY: the only pointer into the module's memory is `self.function`, which is
            // dropped with `self` and cannot be running: launches borrow `self`, so none can be in
            // progress while `drop` has `&mut self`.
            unsafe { module.free_memory() };
        }
    }
}

impl CompiledKernel {
    /// Validates `kernel` and compiles it to native code for this machine.
    pub fn compile(kernel: &ElementwiseKernel) -> Result<CompiledKernel, JitError> {
        Self::compile_for(kernel, host_isa()?)
    }

    /// Like [`compile`](Self::compile), for a target made by [`host_isa`] (made once, it can
    /// serve every kernel of a program).
    pub fn compile_for(kernel: &ElementwiseKernel, isa: OwnedTargetIsa) -> Result<CompiledKernel, JitError> {
        kernel.validate()?;
        let mut jit_builder = JITBuilder::with_isa(isa, default_libcall_names());
        for (name, address) in shim_symbols() {
            jit_builder.symbol(name, address);
        }
        let mut module = JITModule::new(jit_builder);

        let ptr = module.target_config().pointer_type();
        let mut context = module.make_context();
        context.func.signature.params.extend([AbiParam::new(ptr); 3]);
        let function_id = module
            .declare_function("sched_kernel", Linkage::Local, &context.func.signature)
            .map_err(|e| JitError::Compile(e.to_string()))?;
        let mut builder_context = FunctionBuilderContext::new();
        let builder = FunctionBuilder::new(&mut context.func, &mut builder_context);
        let mut emitter = Emitter::new(kernel, &mut module, builder, ptr);
        emitter.emit_function()?;
        let Emitter { builder, .. } = emitter;
        builder.finalize(module.target_config());
        let clif = context.func.display().to_string();
        module.define_function(function_id, &mut context).map_err(|e| JitError::Compile(format!("{e:?}")))?;
        module.clear_context(&mut context);
        module.finalize_definitions().map_err(|e| JitError::Compile(e.to_string()))?;
        let address = module.get_finalized_function(function_id);
        // SAFETY: `address` is the entry of the function just finalized, whose Cranelift signature
        // is three pointer-sized integers in the platform's default (C) calling convention and no
        // results, which is the ABI of `KernelFn`.
        let function = unsafe { std::mem::transmute::<*const u8, KernelFn>(address) };
        Ok(CompiledKernel {
            module: Mutex::new(Some(module)),
            function,
            clif,
            inputs: kernel.inputs,
            params: kernel.params,
            noise_slots: kernel.noise_slots,
            outputs: kernel.outputs.len(),
            draws_noise: kernel.nodes.iter().any(|node| matches!(node, Node::Noise(..))),
        })
    }

    /// The CLIF text of the compiled function (before Cranelift's optimisations).
    pub fn clif(&self) -> &str {
        &self.clif
    }

    /// Evaluates the kernel over `len` elements, writing element `i` of output `o` to
    /// `outputs[o][i]` for every `i < len`; elements of the outputs past `len` are untouched.
    ///
    /// The arguments are checked exactly as [`cpu::evaluate`](crate::cpu::evaluate) checks them,
    /// and `outputs` must hold one tensor per kernel output, each with at least `len` elements.
    pub fn run(
        &self,
        len: usize,
        inputs: &[&[f32]],
        params: &[f32],
        noise: &NoiseLaunch<'_>,
        outputs: &mut [&mut [f32]],
    ) -> Result<(), JitError> {
        self.run_parallel(1, len, inputs, params, noise, outputs)
    }

    /// Like [`run`](Self::run), but splits the elements into at most `threads` contiguous
    /// chunks, of at least [`MIN_CHUNK`] elements each except for the last, evaluated in
    /// parallel: the calling thread takes the first chunk and scoped threads the others. Elements
    /// are independent, so the values are the same as those of `run`.
    pub fn run_parallel(
        &self,
        threads: usize,
        len: usize,
        inputs: &[&[f32]],
        params: &[f32],
        noise: &NoiseLaunch<'_>,
        outputs: &mut [&mut [f32]],
    ) -> Result<(), JitError> {
        self.check(len, inputs.iter().map(|x| x.len()), params, noise)?;
        self.check_outputs(len, outputs.iter().map(|x| x.len()))?;
        let input_pointers: Vec<*const f32> = inputs.iter().map(|x| x.as_ptr()).collect();
        let output_pointers: Vec<*mut f32> = outputs.iter_mut().map(|x| x.as_mut_ptr()).collect();
        // SAFETY: the checks above guarantee one buffer per input and per output, each with at
        // least `len` elements. The outputs are exclusive borrows, so no input aliases them, and
        // every buffer stays borrowed until this call returns.
        unsafe {
            self.dispatch(threads, len, input_pointers.as_ptr(), input_pointers.len(), &output_pointers, params, noise)
        }
    }

    /// Evaluates the kernel like [`cpu::evaluate_in_place`](crate::cpu::evaluate_in_place):
    /// for each [`InPlace`] entry, the input is read from and the output written to the same
    /// buffer (`inputs[k]` is ignored, pass an empty slice). Returns the outputs that are not
    /// written in place (`None` for those that are). Splits the work over up to `threads`
    /// threads like [`run_parallel`](Self::run_parallel).
    pub fn run_in_place(
        &self,
        threads: usize,
        len: usize,
        inputs: &[&[f32]],
        in_place: &mut [InPlace<'_>],
        params: &[f32],
        noise: &NoiseLaunch<'_>,
    ) -> Result<Vec<Option<Vec<f32>>>, JitError> {
        // The entry, if any, that updates input `k` or output `k` in place. Kernels have a few
        // inputs and entries, so a scan costs less than building tables.
        for (index, entry) in in_place.iter().enumerate() {
            let taken = entry_of_input(in_place, entry.input) != Some(index)
                || entry_of_output(in_place, entry.output) != Some(index);
            if entry.input >= inputs.len() || entry.output >= self.outputs || taken {
                return Err(KernelError::InPlace { input: entry.input, output: entry.output }.into());
            }
        }
        let input_lengths = inputs
            .iter()
            .enumerate()
            .map(|(k, x)| entry_of_input(in_place, k).map_or(x.len(), |e| in_place[e].buffer.len()));
        self.check(len, input_lengths, params, noise)?;
        let mut fresh: Vec<Option<Vec<f32>>> = Vec::with_capacity(self.outputs);
        for k in 0..self.outputs {
            fresh.push(match entry_of_output(in_place, k) {
                Some(_) => None,
                None => {
                    let mut values = Vec::new();
                    values.try_reserve_exact(len).map_err(|_| KernelError::OutOfMemory { len })?;
                    values.resize(len, 0.0);
                    Some(values)
                }
            });
        }
        // One array of pointers: the inputs', then the outputs'.
        let mut pointers: Vec<*mut f32> = Vec::with_capacity(inputs.len() + self.outputs);
        for (k, x) in inputs.iter().enumerate() {
            pointers.push(match entry_of_input(in_place, k) {
                Some(e) => in_place[e].buffer.as_mut_ptr(),
                None => x.as_ptr().cast_mut(),
            });
        }
        for (k, values) in fresh.iter_mut().enumerate() {
            pointers.push(match (values, entry_of_output(in_place, k)) {
                (Some(values), _) => values.as_mut_ptr(),
                // The pointer its input got above: one pointer derived from the buffer serves both.
                (None, Some(e)) => pointers[in_place[e].input],
                // Every output has a fresh buffer or an in-place entry, by construction above.
                (None, None) => std::ptr::null_mut(),
            });
        }
        let (input_pointers, output_pointers) = pointers.split_at(inputs.len());
        // SAFETY: input pointers are cast back to `*const` by `dispatch`'s contract and only
        // read. Every input pointer is a borrowed slice or an in-place buffer with at least `len`
        // elements (checked above), and every output pointer is a fresh vector of `len` elements
        // or an in-place buffer; an in-place buffer is an exclusive borrow shared only by its one
        // input and one output, and the compiled code reads element `i` of every input before it
        // writes element `i` of any output, touching no other element for `i`.
        unsafe {
            self.dispatch(threads, len, input_pointers.as_ptr().cast(), inputs.len(), output_pointers, params, noise)?
        };
        Ok(fresh)
    }

    /// Checks a launch against the kernel, with the checks of the CPU evaluator.
    fn check(
        &self,
        len: usize,
        input_lengths: impl ExactSizeIterator<Item = usize>,
        params: &[f32],
        noise: &NoiseLaunch<'_>,
    ) -> Result<(), JitError> {
        if input_lengths.len() != self.inputs as usize {
            return Err(KernelError::InputCount { expected: self.inputs, got: input_lengths.len() }.into());
        }
        if params.len() != self.params as usize {
            return Err(KernelError::ParamCount { expected: self.params, got: params.len() }.into());
        }
        if noise.slots.len() != self.noise_slots as usize {
            return Err(KernelError::NoiseSlotCount { expected: self.noise_slots, got: noise.slots.len() }.into());
        }
        if let Some((input, actual)) = input_lengths.enumerate().find(|&(_, actual)| actual < len) {
            return Err(KernelError::InputTooShort { input, actual, len }.into());
        }
        if self.draws_noise {
            let per_sample = noise.per_sample;
            if per_sample == 0 {
                return Err(KernelError::ZeroPerSample.into());
            }
            if len > 0 {
                let last_sample = (len - 1) / per_sample;
                let last_index = len.min(per_sample) - 1;
                if u32::try_from(last_sample).is_err() || u32::try_from(last_index).is_err() {
                    return Err(KernelError::NoiseCoordinatesOverflow { len, per_sample }.into());
                }
            }
        }
        Ok(())
    }

    /// Checks the output buffers of a launch.
    fn check_outputs(&self, len: usize, output_lengths: impl ExactSizeIterator<Item = usize>) -> Result<(), JitError> {
        if output_lengths.len() != self.outputs {
            return Err(JitError::OutputCount { expected: self.outputs, got: output_lengths.len() });
        }
        if let Some((output, actual)) = output_lengths.enumerate().find(|&(_, actual)| actual < len) {
            return Err(JitError::OutputTooShort { output, actual, len });
        }
        Ok(())
    }

    /// Runs the compiled function over elements `0..len` of the given buffers, split into
    /// chunks of at least [`MIN_CHUNK`] elements over up to `threads` threads: the calling thread
    /// takes the first chunk and scoped threads the others.
    ///
    /// # Safety
    ///
    /// The launch must have passed [`check`](Self::check); `input_array` must hold
    /// `input_count` pointers; there must be exactly one pointer per kernel input and output, each valid for `len` elements for the whole call; an output may
    /// share its buffer only with one input (an in-place update), and otherwise no buffer written
    /// may be read or written through any other pointer or reference during the call.
    #[allow(clippy::too_many_arguments, reason = "the parts of one launch")]
    unsafe fn dispatch(
        &self,
        threads: usize,
        len: usize,
        input_array: *const *const f32,
        input_count: usize,
        outputs: &[*mut f32],
        params: &[f32],
        noise: &NoiseLaunch<'_>,
    ) -> Result<(), JitError> {
        if input_count != self.inputs as usize {
            return Err(KernelError::InputCount { expected: self.inputs, got: input_count }.into());
        }
        // SAFETY: the caller passes an array of `input_count` pointers, alive for the call.
        let inputs = unsafe { std::slice::from_raw_parts(input_array, input_count) };
        if outputs.len() != self.outputs {
            return Err(JitError::OutputCount { expected: self.outputs, got: outputs.len() });
        }
        if len == 0 {
            return Ok(());
        }
        let slots = slot_words(noise);
        let chunk = len.div_ceil(threads.max(1)).max(MIN_CHUNK);
        let chunks = len.div_ceil(chunk);
        let launch = |k: usize| {
            let start = k * chunk;
            let n = len.min(start + chunk) - start;
            // SAFETY: `start < len`, so each offset pointer stays inside its buffer, which the
            // caller guarantees holds `len` elements.
            let input_pointers: Vec<*const f32> = inputs.iter().map(|p| unsafe { p.add(start) }).collect();
            // SAFETY: as above.
            let output_pointers: Vec<*mut f32> = outputs.iter().map(|p| unsafe { p.add(start) }).collect();
            let args = LaunchArgs {
                inputs: input_pointers.as_ptr(),
                outputs: output_pointers.as_ptr(),
                params: params.as_ptr(),
                slots: slots.as_ptr(),
                seed: noise.seed,
                per_sample: noise.per_sample,
                base: start,
            };
            // SAFETY: the function reads `args` and, for every `i < n`, element `i` of each of
            // the `self.inputs` input chunks and writes element `i` of each of the `self.outputs`
            // output chunks; the chunks of different `k` are disjoint, and the caller guarantees
            // the pointer counts and that every buffer holds `len >= start + n` elements. It reads
            // `self.params` parameters and `self.noise_slots` (site, step) pairs, the lengths
            // `check` verified. It divides by `per_sample` only when the kernel draws noise, which
            // `check` verified nonzero. The shims it calls cannot panic.
            unsafe { (self.function)(&args, 0, n) };
        };
        if chunks == 1 {
            // One chunk starts at element 0: the pointer arrays are the launch's own.
            let args = LaunchArgs {
                inputs: inputs.as_ptr(),
                outputs: outputs.as_ptr(),
                params: params.as_ptr(),
                slots: slots.as_ptr(),
                seed: noise.seed,
                per_sample: noise.per_sample,
                base: 0,
            };
            // SAFETY: as for `launch` above, with the one chunk `0..len`.
            unsafe { (self.function)(&args, 0, len) };
            return Ok(());
        }
        let launch = SendLaunch(&launch);
        thread::scope(|scope| {
            let mut workers = Vec::with_capacity(chunks - 1);
            for k in 1..chunks {
                let worker =
                    thread::Builder::new().spawn_scoped(scope, move || launch.call(k)).map_err(JitError::Spawn)?;
                workers.push(worker);
            }
            launch.call(0);
            workers.into_iter().try_for_each(|worker| worker.join().map_err(|_| JitError::WorkerPanicked))
        })
    }
}

/// The in-place entry that reads input `k`, if any.
fn entry_of_input(in_place: &[InPlace<'_>], k: usize) -> Option<usize> {
    in_place.iter().position(|entry| entry.input == k)
}

/// The in-place entry that writes output `k`, if any.
fn entry_of_output(in_place: &[InPlace<'_>], k: usize) -> Option<usize> {
    in_place.iter().position(|entry| entry.output == k)
}

/// A chunk launcher shared with the worker threads of a parallel launch. The raw pointers it
/// captures make it neither `Send` nor `Sync` by default.
#[derive(Clone, Copy)]
struct SendLaunch<'a, F: Fn(usize)>(&'a F);

// SAFETY: the launcher only reads the pointer arrays it captures, and the chunks of elements
// that different threads pass to it are disjoint, so calling it from several threads at once
// touches no element twice (see `dispatch`'s safety contract).
unsafe impl<F: Fn(usize)> Send for SendLaunch<'_, F> {}

impl<F: Fn(usize)> SendLaunch<'_, F> {
    fn call(self, chunk: usize) {
        (self.0)(chunk);
    }
}

/// The native target with the settings sched compiles with: optimised for speed, absolute
/// addresses (JIT code is not relocated), libcalls reached by absolute address.
pub fn host_isa() -> Result<OwnedTargetIsa, JitError> {
    let mut flags = settings::builder();
    for (name, value) in [("opt_level", "speed"), ("is_pic", "false"), ("use_colocated_libcalls", "false")] {
        flags.set(name, value).map_err(|e| JitError::Compile(e.to_string()))?;
    }
    cranelift_native::builder()
        .map_err(|e| JitError::UnsupportedHost(e.to_string()))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| JitError::UnsupportedHost(e.to_string()))
}

/// The (site, step) words of a launch's noise slots, in the layout of [`LaunchArgs::slots`].
fn slot_words(noise: &NoiseLaunch<'_>) -> Vec<u32> {
    noise.slots.iter().flat_map(|slot| [slot.site, slot.step]).collect()
}

/// The values that stay the same over a launch, loaded once in the function's entry block.
struct Invariants {
    /// The base pointer of each input the kernel reads, by input.
    inputs: HashMap<u32, Value>,
    /// The base pointer of each output.
    outputs: Vec<Value>,
    /// Each parameter the kernel reads, by parameter.
    params: HashMap<u32, Value>,
    /// The (site, step) of each noise slot the kernel draws from, by slot.
    slots: HashMap<u32, (Value, Value)>,
    /// The seed, elements per sample and base index, when the kernel draws noise.
    noise: Option<(Value, Value, Value)>,
}

/// Loads a value of type `ty` at `offset` bytes past `base`, a pointer into the launch's
/// arguments. The offset is a displacement of the load when it fits in 32 bits and is added in 64
/// bits otherwise, so even the largest index a kernel can name does not overflow; a launch only
/// reaches the load when the array really has that element.
fn load_at(b: &mut FunctionBuilder<'_>, ty: Type, base: Value, offset: i64) -> Value {
    let flags = MemFlagsData::trusted();
    match i32::try_from(offset) {
        Ok(displacement) => b.ins().load(ty, flags, base, displacement),
        Err(_) => {
            let address = b.ins().iadd_imm_s(base, offset);
            b.ins().load(ty, flags, address, 0)
        }
    }
}

/// Builds the CLIF of one kernel.
struct Emitter<'k, 'm, 'f> {
    kernel: &'k ElementwiseKernel,
    module: &'m mut JITModule,
    builder: FunctionBuilder<'f>,
    /// The pointer-sized integer type of the target.
    ptr: Type,
    /// Whether each node contributes to an output; the others are not compiled.
    live: Vec<bool>,
    /// The shims imported into the function so far.
    imported: Vec<(&'static str, FuncRef)>,
}

impl<'k, 'm, 'f> Emitter<'k, 'm, 'f> {
    fn new(
        kernel: &'k ElementwiseKernel,
        module: &'m mut JITModule,
        builder: FunctionBuilder<'f>,
        ptr: Type,
    ) -> Emitter<'k, 'm, 'f> {
        let mut live = vec![false; kernel.nodes.len()];
        for output in &kernel.outputs {
            live[output.0 as usize] = true;
        }
        // Operands precede their users (the kernel is validated), so one backward pass suffices.
        for index in (0..kernel.nodes.len()).rev() {
            if !live[index] {
                continue;
            }
            match kernel.nodes[index] {
                Node::Unary(_, a) => live[a.0 as usize] = true,
                Node::Binary(_, a, b) => {
                    live[a.0 as usize] = true;
                    live[b.0 as usize] = true;
                }
                Node::Input(_) | Node::Param(_) | Node::Const(_) | Node::Noise(..) => {}
            }
        }
        Emitter { kernel, module, builder, ptr, live, imported: Vec::new() }
    }

    /// The memory flags of scalar accesses: f32 elements and pointers are naturally aligned and in
    /// bounds (the launch checks the lengths).
    fn scalar_flags() -> MemFlagsData {
        MemFlagsData::trusted()
    }

    /// The memory flags of vector accesses: in bounds but only aligned to 4 bytes.
    fn vector_flags() -> MemFlagsData {
        MemFlagsData::new().with_notrap()
    }

    /// Emits the whole function: entry block, vector loop, scalar loop and exit.
    fn emit_function(&mut self) -> Result<(), JitError> {
        let ptr = self.ptr;
        let entry = self.builder.create_block();
        self.builder.append_block_params_for_function_params(entry);
        self.builder.switch_to_block(entry);
        let &[args, start, end] = self.builder.block_params(entry) else {
            return Err(JitError::Compile("the kernel function does not take three parameters".into()));
        };
        let invariants = self.emit_invariants(args);

        let vector_header = self.builder.create_block();
        let vector_i = self.builder.append_block_param(vector_header, ptr);
        let vector_body = self.builder.create_block();
        let scalar_header = self.builder.create_block();
        let scalar_i = self.builder.append_block_param(scalar_header, ptr);
        let scalar_body = self.builder.create_block();
        let exit = self.builder.create_block();
        self.builder.ins().jump(vector_header, &[BlockArg::Value(start)]);

        // The vector loop runs while at least `VECTOR_STEP` elements remain; `i <= end` holds
        // throughout, so `end - i` does not wrap.
        self.builder.switch_to_block(vector_header);
        let remaining = self.builder.ins().isub(end, vector_i);
        let more = self.builder.ins().icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, remaining, VECTOR_STEP as i64);
        self.builder.ins().brif(more, vector_body, &[], scalar_header, &[BlockArg::Value(vector_i)]);

        self.builder.switch_to_block(vector_body);
        for group in 0..UNROLL {
            self.emit_elements(&invariants, vector_i, group * LANES, true)?;
        }
        let next = self.builder.ins().iadd_imm_s(vector_i, VECTOR_STEP as i64);
        self.builder.ins().jump(vector_header, &[BlockArg::Value(next)]);

        self.builder.switch_to_block(scalar_header);
        let more = self.builder.ins().icmp(IntCC::UnsignedLessThan, scalar_i, end);
        self.builder.ins().brif(more, scalar_body, &[], exit, &[]);

        self.builder.switch_to_block(scalar_body);
        self.emit_elements(&invariants, scalar_i, 0, false)?;
        let next = self.builder.ins().iadd_imm_s(scalar_i, 1);
        self.builder.ins().jump(scalar_header, &[BlockArg::Value(next)]);

        self.builder.switch_to_block(exit);
        self.builder.ins().return_(&[]);
        self.builder.seal_all_blocks();
        Ok(())
    }

    /// Loads the launch's pointers, parameters and noise coordinates that the kernel uses.
    fn emit_invariants(&mut self, args: Value) -> Invariants {
        let ptr = self.ptr;
        let b = &mut self.builder;
        let field = |b: &mut FunctionBuilder<'_>, ty: Type, offset: usize| load_at(b, ty, args, offset as i64);
        let input_array = field(b, ptr, offset_of!(LaunchArgs, inputs));
        let output_array = field(b, ptr, offset_of!(LaunchArgs, outputs));
        let param_array = field(b, ptr, offset_of!(LaunchArgs, params));
        let slot_array = field(b, ptr, offset_of!(LaunchArgs, slots));
        let mut invariants = Invariants {
            inputs: HashMap::new(),
            outputs: Vec::with_capacity(self.kernel.outputs.len()),
            params: HashMap::new(),
            slots: HashMap::new(),
            noise: None,
        };
        let word = i64::from(ptr.bytes());
        for (node, &live) in self.kernel.nodes.iter().zip(&self.live) {
            if !live {
                continue;
            }
            match *node {
                Node::Input(k) => {
                    invariants.inputs.entry(k).or_insert_with(|| load_at(b, ptr, input_array, word * i64::from(k)));
                }
                Node::Param(k) => {
                    invariants.params.entry(k).or_insert_with(|| load_at(b, types::F32, param_array, 4 * i64::from(k)));
                }
                Node::Noise(_, k) => {
                    invariants.slots.entry(k).or_insert_with(|| {
                        let site = load_at(b, types::I32, slot_array, 8 * i64::from(k));
                        let step = load_at(b, types::I32, slot_array, 8 * i64::from(k) + 4);
                        (site, step)
                    });
                    if invariants.noise.is_none() {
                        let seed = field(b, types::I64, offset_of!(LaunchArgs, seed));
                        let per_sample = field(b, ptr, offset_of!(LaunchArgs, per_sample));
                        let base = field(b, ptr, offset_of!(LaunchArgs, base));
                        invariants.noise = Some((seed, per_sample, base));
                    }
                }
                Node::Const(_) | Node::Unary(..) | Node::Binary(..) => {}
            }
        }
        for o in 0..self.kernel.outputs.len() as i64 {
            invariants.outputs.push(load_at(b, ptr, output_array, word * o));
        }
        invariants
    }

    /// Emits the evaluation of the elements `i + first ..` (one, or one vector of `LANES`) and
    /// the stores of their outputs.
    fn emit_elements(&mut self, inv: &Invariants, i: Value, first: usize, vector: bool) -> Result<(), JitError> {
        let ty = if vector { types::F32X4 } else { types::F32 };
        let flags = if vector { Self::vector_flags() } else { Self::scalar_flags() };
        let byte_offset = self.builder.ins().ishl_imm_u(i, 2);
        let displacement = 4 * first as i32;
        let mut values: Vec<Option<Value>> = vec![None; self.kernel.nodes.len()];
        for index in 0..self.kernel.nodes.len() {
            if !self.live[index] {
                continue;
            }
            // Operands are earlier live nodes, so their values exist.
            let operand = |id: NodeId| {
                values[id.0 as usize].ok_or_else(|| JitError::Compile(format!("%{index} uses an uncompiled node")))
            };
            let value = match self.kernel.nodes[index] {
                Node::Input(k) => {
                    let base = Self::invariant(inv.inputs.get(&k).copied())?;
                    let address = self.builder.ins().iadd(base, byte_offset);
                    self.builder.ins().load(ty, flags, address, displacement)
                }
                Node::Param(k) => {
                    let value = Self::invariant(inv.params.get(&k).copied())?;
                    self.widen(value, vector)
                }
                Node::Const(bits) => {
                    let value = self.builder.ins().f32const(Ieee32::with_bits(bits));
                    self.widen(value, vector)
                }
                Node::Unary(op, a) => {
                    let a = operand(a)?;
                    self.emit_unary(op, a, vector)?
                }
                Node::Binary(op, a, b) => {
                    let (a, b) = (operand(a)?, operand(b)?);
                    self.emit_binary(op, a, b, vector)?
                }
                Node::Noise(dist, k) => {
                    let slot = Self::invariant(inv.slots.get(&k).copied())?;
                    let noise = Self::invariant(inv.noise)?;
                    self.emit_noise(dist, slot, noise, i, first, vector)?
                }
            };
            values[index] = Some(value);
        }
        for (o, id) in self.kernel.outputs.iter().enumerate() {
            let value =
                values[id.0 as usize].ok_or_else(|| JitError::Compile(format!("output {o} is not compiled")))?;
            let address = self.builder.ins().iadd(inv.outputs[o], byte_offset);
            self.builder.ins().store(flags, value, address, displacement);
        }
        Ok(())
    }

    /// Returns a value loaded in the entry block, which exists for every node that uses it.
    fn invariant<T>(value: Option<T>) -> Result<T, JitError> {
        value.ok_or_else(|| JitError::Compile("a node uses a launch value that was not loaded".into()))
    }

    /// Splats a scalar into a vector in the vector loop, or returns it as it is.
    fn widen(&mut self, value: Value, vector: bool) -> Value {
        if vector { self.builder.ins().splat(types::F32X4, value) } else { value }
    }

    /// Emits a unary operation on a scalar or a vector.
    fn emit_unary(&mut self, op: UnaryOp, a: Value, vector: bool) -> Result<Value, JitError> {
        if let Some(shim) = unary_shim(op) {
            return self.map_lanes(&[a], vector, |emitter, lane, _| emitter.call(shim, lane));
        }
        let ins = self.builder.ins();
        Ok(match op {
            UnaryOp::Neg => ins.fneg(a),
            UnaryOp::Sqrt => ins.sqrt(a),
            UnaryOp::Abs => ins.fabs(a),
            UnaryOp::Floor => ins.floor(a),
            UnaryOp::Ceil => ins.ceil(a),
            UnaryOp::Sigmoid => {
                // `1 / (1 + exp(-x))`, in the order of the specification.
                let minus = ins.fneg(a);
                let exp = self.map_lanes(&[minus], vector, |emitter, lane, _| emitter.call("sched_expf", lane))?;
                let one = self.builder.ins().f32const(1.0);
                let one = self.widen(one, vector);
                let denominator = self.builder.ins().fadd(one, exp);
                self.builder.ins().fdiv(one, denominator)
            }
            UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Expm1
            | UnaryOp::Log1p
            | UnaryOp::Sin
            | UnaryOp::Cos
            | UnaryOp::Tan
            | UnaryOp::Tanh
            | UnaryOp::Atan => return Err(JitError::Compile(format!("{op} has no inline form"))),
        })
    }

    /// Emits a binary operation on scalars or vectors.
    fn emit_binary(&mut self, op: BinaryOp, a: Value, b: Value, vector: bool) -> Result<Value, JitError> {
        let ins = self.builder.ins();
        Ok(match op {
            BinaryOp::Add => ins.fadd(a, b),
            BinaryOp::Sub => ins.fsub(a, b),
            BinaryOp::Mul => ins.fmul(a, b),
            BinaryOp::Div => ins.fdiv(a, b),
            BinaryOp::Pow => self.map_lanes(&[a, b], vector, |emitter, lanes, _| emitter.call("sched_powf", lanes))?,
            // Rust's `a.min(b)` is `b` when `a` is NaN or `b < a`, and `a` otherwise; `a.max(b)`
            // is `b` when `a` is NaN or `b > a`, and `a` otherwise.
            BinaryOp::Min | BinaryOp::Max => {
                let order = if op == BinaryOp::Min { FloatCC::LessThan } else { FloatCC::GreaterThan };
                let better = ins.fcmp(order, b, a);
                let a_nan = self.builder.ins().fcmp(FloatCC::Unordered, a, a);
                let take_b = self.builder.ins().bor(better, a_nan);
                if vector {
                    let mask = self.builder.ins().bitcast(types::F32X4, MemFlagsData::new(), take_b);
                    self.builder.ins().bitselect(mask, b, a)
                } else {
                    self.builder.ins().select(take_b, b, a)
                }
            }
        })
    }

    /// Emits one noise draw per element: the global index `base + i + first + lane` gives the
    /// sample and the index within it.
    fn emit_noise(
        &mut self,
        dist: Distribution,
        (site, step): (Value, Value),
        (seed, per_sample, base): (Value, Value, Value),
        i: Value,
        first: usize,
        vector: bool,
    ) -> Result<Value, JitError> {
        let shim = match dist {
            Distribution::Gaussian => "sched_gaussian",
            Distribution::Uniform => "sched_uniform",
        };
        let global = self.builder.ins().iadd(base, i);
        self.map_lanes(&[], vector, |emitter, _, lane| {
            let b = &mut emitter.builder;
            let element = b.ins().iadd_imm_s(global, (first + lane) as i64);
            // The launch checks that `per_sample` is nonzero and that the sample and index of
            // every element fit in 32 bits, so the division cannot trap and the truncations are
            // exact.
            let sample = b.ins().udiv(element, per_sample);
            let index = b.ins().urem(element, per_sample);
            let (sample, index) = if emitter.ptr.bits() > 32 {
                (b.ins().ireduce(types::I32, sample), b.ins().ireduce(types::I32, index))
            } else {
                (sample, index)
            };
            emitter.call(shim, &[seed, site, step, sample, index])
        })
    }

    /// Applies a scalar function to the arguments, or in the vector loop to each lane of them,
    /// gathering the lanes' results into a vector. `f` also receives the lane (0 for scalars).
    fn map_lanes(
        &mut self,
        args: &[Value],
        vector: bool,
        mut f: impl FnMut(&mut Self, &[Value], usize) -> Result<Value, JitError>,
    ) -> Result<Value, JitError> {
        if !vector {
            return f(self, args, 0);
        }
        let mut lane_result = |emitter: &mut Self, lane: usize| {
            let lane_args: Vec<Value> =
                args.iter().map(|&arg| emitter.builder.ins().extractlane(arg, lane as u8)).collect();
            f(emitter, &lane_args, lane)
        };
        let first = lane_result(self, 0)?;
        let mut gathered = self.builder.ins().splat(types::F32X4, first);
        for lane in 1..LANES {
            let value = lane_result(self, lane)?;
            gathered = self.builder.ins().insertlane(gathered, value, lane as u8);
        }
        Ok(gathered)
    }

    /// Calls a shim, importing it into the function on first use. The signature is the types
    /// of `args`, returning one f32.
    fn call(&mut self, shim: &'static str, args: &[Value]) -> Result<Value, JitError> {
        let callee = match self.imported.iter().find(|(name, _)| *name == shim) {
            Some(&(_, callee)) => callee,
            None => {
                let mut signature: Signature = self.module.make_signature();
                for &arg in args {
                    signature.params.push(AbiParam::new(self.builder.func.dfg.value_type(arg)));
                }
                signature.returns.push(AbiParam::new(types::F32));
                let id = self
                    .module
                    .declare_function(shim, Linkage::Import, &signature)
                    .map_err(|e| JitError::Compile(e.to_string()))?;
                let callee = self.module.declare_func_in_func(id, self.builder.func);
                self.imported.push((shim, callee));
                callee
            }
        };
        let call = self.builder.ins().call(callee, args);
        self.builder
            .inst_results(call)
            .first()
            .copied()
            .ok_or_else(|| JitError::Compile(format!("{shim} returns nothing")))
    }
}
