//! The JIT engine: a schedule's host code and its fused kernels compiled to native code with
//! Cranelift.
//!
//! [`JitProgram::compile`] generates the host function of [`sched_compiler::clif`], links its
//! hooks and compiles every fused kernel with [`CompiledKernel`]; [`JitProgram::run`] calls the
//! host function with a fresh context. Control flow and host scalar math run as native code; each
//! hook hands one instruction on tensors, grids or models to the interpreter's executor, with the
//! host operands the native code computed, and kernel launches run the compiled kernels. Both
//! engines therefore compute the same bits: the host math reproduces `host` exactly, the
//! compiled kernels reproduce the reference evaluator exactly, and the rest is shared code.
//!
//! A compiled program holds no mutable state: every run has its own context, so one program
//! serves concurrent runs.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use sched_compiler::clif::{self, Hook, STATUS_DIVISION_BY_ZERO, STATUS_OK, Site};
use sched_compiler::diagnostics::CompileError;
use sched_compiler::ir::{Function, Op, Ty, ValueId};
use sched_kernels::jit::{CompiledKernel, JitError as KernelJitError, host_isa};

use crate::convert::FieldCoefficients;
use crate::machine::{Machine, NativeKernels, coefficient_value, coefficients, interpolant_value};
use crate::model::Model;
use crate::run::{Outputs, ParamValue, RunError, RunOptions, located};

/// Why a schedule cannot be compiled to native code.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    /// The host code generator rejected the function (a compiler bug).
    #[error(transparent)]
    Codegen(#[from] CompileError),
    /// A fused kernel cannot be compiled.
    #[error("kernel k{kernel}: {error}")]
    Kernel { kernel: usize, error: KernelJitError },
    /// Cranelift does not support the host machine.
    #[error("Cranelift cannot generate code for this machine: {0}")]
    UnsupportedHost(String),
    /// Cranelift rejected the generated host function (a compiler bug).
    #[error("Cranelift cannot compile the host code: {0}")]
    Module(String),
}

/// The type of the compiled host function.
type HostFn = unsafe extern "C" fn(*mut c_void) -> i32;

/// A schedule compiled to native code, ready to run any number of times.
pub struct JitProgram {
    function: Arc<Function>,
    /// The module that owns the host code. `JITModule` is `Send` but not `Sync`; the mutex makes
    /// the program `Sync`. Nothing locks it except `Drop`, which has exclusive access.
    module: Mutex<Option<JITModule>>,
    /// The finalized host function, valid until `module` frees its memory.
    entry: HostFn,
    sites: Vec<Site>,
    /// The host operands and result of each site, by site.
    host_values: Vec<HostValues>,
    kernels: Vec<CompiledKernel>,
    /// The threads a kernel launch may use: the machine's, found once when compiling.
    launch_threads: usize,
    clif: String,
}

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram")
            .field("schedule", &self.function.name)
            .field("sites", &self.sites.len())
            .field("kernels", &self.kernels.len())
            .finish_non_exhaustive()
    }
}

impl Drop for JitProgram {
    fn drop(&mut self) {
        let slot = self.module.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(module) = slot.take() {
            // SAFETY: the only pointer into the module's memory is `self.entry`, which is dropped
            // with `self` and cannot be running: runs borrow `self`, so none is in progress while
            // `drop` has `&mut self`.
            unsafe { module.free_memory() };
        }
    }
}

impl JitProgram {
    /// Compiles a function (the output of the whole pipeline) to native code for this machine.
    pub fn compile(function: Arc<Function>) -> Result<JitProgram, JitError> {
        let isa = host_isa().map_err(|error| JitError::UnsupportedHost(error.to_string()))?;
        let launch_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Kernels are independent: compile them on worker threads while this thread compiles the
        // host code.
        let threads = launch_threads.min(function.kernels.len());
        let compile_kernels = |worker: usize| {
            let isa = isa.clone();
            let function = &function;
            move || -> Result<Vec<(usize, CompiledKernel)>, JitError> {
                (worker..function.kernels.len())
                    .step_by(threads.max(1))
                    .map(|kernel| {
                        CompiledKernel::compile_for(&function.kernels[kernel], isa.clone())
                            .map(|compiled| (kernel, compiled))
                            .map_err(|error| JitError::Kernel { kernel, error })
                    })
                    .collect()
            }
        };
        let (kernels, host) = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads).map(|worker| scope.spawn(compile_kernels(worker))).collect();
            let host = Self::link_host(&function, isa.clone());
            let mut kernels: Vec<(usize, CompiledKernel)> = Vec::with_capacity(function.kernels.len());
            for worker in workers {
                match worker.join() {
                    Ok(compiled) => kernels.extend(compiled?),
                    Err(_) => return Err(JitError::Module("a kernel compilation thread panicked".into())),
                }
            }
            kernels.sort_by_key(|(kernel, _)| *kernel);
            Ok((kernels.into_iter().map(|(_, compiled)| compiled).collect::<Vec<_>>(), host?))
        })?;
        let (module, entry, sites, clif) = host;
        let host_values = sites.iter().map(|site| HostValues::of(&function, *site)).collect();
        Ok(JitProgram {
            function,
            module: Mutex::new(Some(module)),
            entry,
            sites,
            host_values,
            kernels,
            launch_threads,
            clif,
        })
    }

    /// Generates the host code, links it with the hooks and finalizes it: the module that owns
    /// it, its entry, its sites and its CLIF text.
    fn link_host(function: &Function, isa: OwnedTargetIsa) -> Result<(JITModule, HostFn, Vec<Site>, String), JitError> {
        let mut jit_builder = JITBuilder::with_isa(isa, default_libcall_names());
        for &hook in Hook::ALL {
            jit_builder.symbol(hook.symbol(), hook_address(hook));
        }
        let mut module = JITModule::new(jit_builder);
        let target = module.target_config();
        // The host code names hook `k` of `Hook::ALL` as function `k` of the module: declare them
        // first, in order, and check that the ids agree.
        for (index, &hook) in Hook::ALL.iter().enumerate() {
            let mut signature = hook.signature(target.pointer_type());
            signature.call_conv = target.default_call_conv;
            let id = module
                .declare_function(hook.symbol(), Linkage::Import, &signature)
                .map_err(|e| JitError::Module(e.to_string()))?;
            if id.as_u32() as usize != index {
                return Err(JitError::Module(format!("hook {} was declared as function {}", hook.symbol(), id)));
            }
        }
        let host = clif::generate(function, target)?;
        let clif = host.function.display().to_string();
        let mut context = module.make_context();
        context.func = host.function;
        let id = module
            .declare_function("sched_host", Linkage::Local, &context.func.signature)
            .map_err(|e| JitError::Module(e.to_string()))?;
        module.define_function(id, &mut context).map_err(|e| JitError::Module(format!("{e:?}")))?;
        module.clear_context(&mut context);
        module.finalize_definitions().map_err(|e| JitError::Module(e.to_string()))?;
        let address = module.get_finalized_function(id);
        // SAFETY: `address` is the entry of the function just finalized, whose signature is one
        // pointer-sized integer in and one i32 out in the target's default (C) calling
        // convention: the ABI of `HostFn`.
        let entry = unsafe { std::mem::transmute::<*const u8, HostFn>(address) };
        Ok((module, entry, host.sites, clif))
    }

    /// The compiled IR.
    pub fn function(&self) -> &Function {
        &self.function
    }

    /// The CLIF of the host function, before Cranelift's optimisations.
    pub fn clif(&self) -> &str {
        &self.clif
    }

    /// The compiled kernels, by kernel id.
    pub fn kernels(&self) -> &[CompiledKernel] {
        &self.kernels
    }

    /// Runs with bound parameters and models, like [`interp::run`](crate::interp::run), and
    /// gives the same bits.
    pub fn run(
        &self,
        params: &[Option<ParamValue>],
        models: &[Arc<dyn Model>],
        options: &RunOptions<'_>,
    ) -> Result<Outputs, RunError> {
        let native = NativeKernels { kernels: &self.kernels, threads: self.launch_threads };
        let machine = Machine::new(&self.function, params, models, options, Some(native))?;
        let mut context = HostContext {
            machine,
            function: &self.function,
            sites: &self.sites,
            host_values: &self.host_values,
            coefficients: None,
            error: None,
        };
        let pointer = (&raw mut context).cast::<c_void>();
        // SAFETY: the host function was compiled for `HostFn`'s ABI and is alive while `self` is.
        // It passes `pointer` on to the hooks only, which cast it back to the `HostContext` it
        // is; `context` outlives the call and nothing else touches it during the call.
        let status = unsafe { (self.entry)(pointer) };
        match (status, context.error.take()) {
            (STATUS_OK, _) => Ok(context.machine.finish()),
            (_, Some(error)) => Err(error),
            (STATUS_DIVISION_BY_ZERO, None) => Err(RunError::DivisionByZero),
            (status, None) => Err(RunError::Jit(format!("the host code failed with status {status}"))),
        }
    }
}

/// What the hooks of one run share: the executor and the error of a failed hook.
struct HostContext<'a> {
    machine: Machine<'a>,
    function: &'a Function,
    sites: &'a [Site],
    host_values: &'a [HostValues],
    /// The conversion coefficients last computed: (model slot, bits of t, coefficients). A
    /// step asks for all four at the same time one after another.
    coefficients: Option<(u32, u64, FieldCoefficients)>,
    error: Option<RunError>,
}

/// The host operands and the host result of a site's instruction, which cross the hook as words.
struct HostValues {
    operands: Vec<ValueId>,
    result: Option<ValueId>,
}

impl HostValues {
    fn of(function: &Function, site: Site) -> HostValues {
        let is_host = |value: &ValueId| matches!(function.ty(*value), Ty::F64 | Ty::I64 | Ty::Bool);
        match function.graph.node_weight(site.block).and_then(|b| b.insts.get(site.index as usize)) {
            Some(inst) => HostValues {
                operands: inst.op.operands().into_iter().filter(is_host).collect(),
                result: inst.results.first().copied().filter(is_host),
            },
            None => HostValues { operands: Vec::new(), result: None },
        }
    }
}

impl HostContext<'_> {
    /// Executes the instruction at `site` with its host operands taken from `operands` and its
    /// host result written to `result`.
    ///
    /// # Safety
    ///
    /// `operands` must point to one readable word per host operand of the instruction and
    /// `result` to one writable word (the generated code's stack slots).
    unsafe fn execute(&mut self, site: u32, operands: *const u64, result: *mut u64) -> Result<(), RunError> {
        let Some(&Site { block, index }) = self.sites.get(site as usize) else {
            return Err(RunError::Jit(format!("the host code called an unknown site {site}")));
        };
        let Some(inst) = self.function.graph.node_weight(block).and_then(|b| b.insts.get(index as usize)) else {
            return Err(RunError::Jit(format!("site {site} names no instruction")));
        };
        let host = &self.host_values[site as usize];
        // The instructions that only compute a host number from host operands and the bound
        // models are answered here, from the functions the executor uses, without going through
        // its value table: they are most of the hook calls of a solver step. A function of a
        // tensor of per-position times is a tensor and goes through the executor.
        // SAFETY: each of these instructions has one host operand (an interpolant function or a
        // coefficient only when its time is a host float), so the caller guarantees a readable
        // first word.
        let first = || unsafe { operands.read() };
        let function = self.function;
        let host_time = |t: &ValueId| function.ty(*t) == Ty::F64;
        let fast = match &inst.op {
            Op::Interpolant { func, model, t } if host_time(t) => {
                Some(Ok(interpolant_value(&**self.machine.model(*model), *func, f64::from_bits(first()))))
            }
            Op::Coefficient { which, model, t } if host_time(t) => {
                let t = first();
                let cached = self.coefficients.filter(|(slot, bits, _)| *slot == model.0 && *bits == t);
                let computed = match cached {
                    Some((_, _, c)) => Ok(c),
                    None => coefficients(&**self.machine.model(*model), f64::from_bits(t)),
                };
                Some(computed.map(|c| {
                    self.coefficients = Some((model.0, t, c));
                    coefficient_value(&c, *which)
                }))
            }
            Op::GridPoint(grid, _) | Op::GridPairEnd(grid, _) => {
                let pair_end = matches!(inst.op, Op::GridPairEnd(..));
                Some(self.machine.grid_value(*grid, first() as i64, pair_end))
            }
            _ => None,
        };
        if let Some(value) = fast {
            let value = value.map_err(|error| located(self.function, block, index as usize, error))?;
            // SAFETY: the caller guarantees that `result` is writable.
            unsafe { result.write(value.to_bits()) };
            return Ok(());
        }
        for (next, &operand) in host.operands.iter().enumerate() {
            // SAFETY: the caller guarantees one word per host operand, in operand order.
            let bits = unsafe { operands.add(next).read() };
            self.machine.set_host_bits(operand, bits);
        }
        self.machine.execute(inst).map_err(|error| located(self.function, block, index as usize, error))?;
        if let Some(value) = host.result {
            // SAFETY: the caller guarantees that `result` is writable.
            unsafe { result.write(self.machine.host_bits(value)) };
        }
        Ok(())
    }
}

/// The one entry point of every runtime hook: the site tells which instruction to execute.
extern "C" fn sched_execute(context: *mut c_void, site: u32, operands: *const u64, result: *mut u64) -> i32 {
    // SAFETY: the host code passes on the pointer `JitProgram::run` gave it, to a `HostContext`
    // that lives for the whole call and that nothing else uses meanwhile.
    let context = unsafe { &mut *context.cast::<HostContext<'_>>() };
    // SAFETY: the host code passes its operand and result stack slots, sized for the largest
    // instruction of the function.
    let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { context.execute(site, operands, result) }));
    let error = match outcome {
        Ok(Ok(())) => return STATUS_OK,
        Ok(Err(error)) => error,
        Err(_) => RunError::Jit("a runtime hook panicked (a bug)".into()),
    };
    context.error = Some(error);
    1
}

extern "C" fn sched_exp(x: f64) -> f64 {
    x.exp()
}

extern "C" fn sched_log(x: f64) -> f64 {
    x.ln()
}

extern "C" fn sched_expm1(x: f64) -> f64 {
    x.exp_m1()
}

extern "C" fn sched_log1p(x: f64) -> f64 {
    x.ln_1p()
}

extern "C" fn sched_sin(x: f64) -> f64 {
    x.sin()
}

extern "C" fn sched_cos(x: f64) -> f64 {
    x.cos()
}

extern "C" fn sched_tan(x: f64) -> f64 {
    x.tan()
}

extern "C" fn sched_tanh(x: f64) -> f64 {
    x.tanh()
}

extern "C" fn sched_atan(x: f64) -> f64 {
    x.atan()
}

extern "C" fn sched_round(x: f64) -> f64 {
    x.round()
}

extern "C" fn sched_pow(x: f64, y: f64) -> f64 {
    x.powf(y)
}

extern "C" fn sched_fmod(x: f64, y: f64) -> f64 {
    x % y
}

extern "C" fn sched_fmin(x: f64, y: f64) -> f64 {
    x.min(y)
}

extern "C" fn sched_fmax(x: f64, y: f64) -> f64 {
    x.max(y)
}

/// The address of a hook's implementation; the math shims are the methods `host` uses.
fn hook_address(hook: Hook) -> *const u8 {
    type Unary = extern "C" fn(f64) -> f64;
    type Binary = extern "C" fn(f64, f64) -> f64;
    let unary = |f: Unary| f as *const u8;
    let binary = |f: Binary| f as *const u8;
    match hook {
        Hook::Param
        | Hook::ParamGiven
        | Hook::Read
        | Hook::Write
        | Hook::Elementwise
        | Hook::Interpolant
        | Hook::Coefficient
        | Hook::Noise
        | Hook::Fill
        | Hook::Field
        | Hook::Jump
        | Hook::Reduce
        | Hook::Grid
        | Hook::GridLen
        | Hook::GridPoint
        | Hook::Emit
        | Hook::Kernel
        | Hook::VerbDone
        | Hook::Tokens
        | Hook::Positions => sched_execute as *const u8,
        Hook::Exp => unary(sched_exp),
        Hook::Log => unary(sched_log),
        Hook::Expm1 => unary(sched_expm1),
        Hook::Log1p => unary(sched_log1p),
        Hook::Sin => unary(sched_sin),
        Hook::Cos => unary(sched_cos),
        Hook::Tan => unary(sched_tan),
        Hook::Tanh => unary(sched_tanh),
        Hook::Atan => unary(sched_atan),
        Hook::Round => unary(sched_round),
        Hook::Pow => binary(sched_pow),
        Hook::Fmod => binary(sched_fmod),
        Hook::Fmin => binary(sched_fmin),
        Hook::Fmax => binary(sched_fmax),
    }
}
