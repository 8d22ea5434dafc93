//! The embedding API: compile once, bind parameters, run many times, from any thread.
//!
//! ```
//! use std::sync::Arc;
//! use sched::api::{compile, Value};
//! use sched::runtime::interp::RunOptions;
//!
//! let program = compile("demo.sched", r#"
//!     schedule sample(net: model<velocity>, steps: int = 8) {
//!         let x = gaussian()
//!         for t, s in grid(1 -> 0, steps) { refine x from t to s by flow_euler() }
//!         emit x
//!     }
//! "#).expect("the schedule checks");
//! let executable = program.schedule("sample")?.bind(&[("steps", Value::Int(4))])?;
//! let net = sched::runtime::load::load_model("analytic:gmm(preset=eight, kind=velocity)", None)?;
//! let outputs = executable.run(&[("net", net)], &RunOptions { batch: 16, seed: 7, ..RunOptions::default() })?;
//! assert_eq!(outputs.model_calls, 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! An [`Executable`] holds no mutable state, so one can serve concurrent runs (each with its own
//! seed, batch, callbacks and cancellation flag) from several threads.

use std::sync::Arc;

use sched_compiler::diagnostics::CompileError;
use sched_compiler::ir::{Constant, Function, ParamInfo, ParamTy, Ty};
use sched_compiler::pipeline::{self, Stage};
use sched_lang::check::ScheduleId;
use sched_lang::{Diagnostic, SourceMap};
use sched_runtime::device::cuda::CudaDevice;
use sched_runtime::device::emulated::EmulatedDevice;
use sched_runtime::device::{Device, DeviceError};
use sched_runtime::interp::{self, Outputs, ParamValue, RunError, RunOptions};
use sched_runtime::jit::{JitError, JitProgram};
use sched_runtime::model::Model;
use sched_runtime::runs::{self, SeedRuns};
use sched_runtime::tensor::Tensor;

/// A checked program.
#[derive(Clone, Debug)]
pub struct Program {
    program: Arc<sched_lang::Program>,
}

/// Why a source did not compile: every diagnostic, with the sources to render them against.
#[derive(Debug)]
pub struct Diagnostics {
    pub diagnostics: Vec<Diagnostic>,
    pub sources: SourceMap,
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in self.diagnostics.iter().filter(|d| d.is_error()) {
            let (line, column) = self.sources.line_col(d.primary_span());
            writeln!(f, "{}:{line}:{column}: {}: {}", self.sources.get(d.primary_span().file).name, d.code, d.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A failure of the embedding API after checking.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the program has no schedule `{name}` (it has: {available})")]
    UnknownSchedule { name: String, available: String },
    #[error("schedule `{schedule}` has no parameter `{name}`")]
    UnknownParam { schedule: String, name: String },
    #[error("parameter `{name}` is {expected}, and the value given is not")]
    ParamType { name: String, expected: &'static str },
    #[error("{0}")]
    Compile(#[from] sched_compiler::diagnostics::CompileError),
    #[error("model `{name}` is not bound")]
    MissingModel { name: String },
    #[error("model `{name}` cannot be used here: {reasons}")]
    Binding { name: String, reasons: String },
    #[error("cannot compile to native code: {0}")]
    Jit(#[from] JitError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// What executes a compiled schedule (`sched run --engine jit|interp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// Native code compiled with Cranelift: host control code and fused kernels (the default).
    #[default]
    Jit,
    /// The reference interpreter, which walks the IR.
    #[value(name = "interp")]
    Interpreter,
}

/// Where a schedule's fused kernels run and its tensors live (`sched run --device cpu|cuda`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// The host: Cranelift-compiled kernels (or the interpreter's evaluator) on host tensors.
    #[default]
    Cpu,
    /// The first NVIDIA GPU: NVRTC-compiled kernels on device buffers (needs the NVIDIA driver
    /// and libnvrtc; see docs/gpu.md).
    Cuda,
    /// The device path of the runtime with host buffers and the reference evaluator, for tests.
    #[value(hide = true)]
    Emulated,
}

impl DeviceKind {
    /// Opens the device (`None` for the CPU), or says why it cannot be used here.
    pub fn open(self) -> Result<Option<Arc<dyn Device>>, DeviceError> {
        Ok(match self {
            DeviceKind::Cpu => None,
            DeviceKind::Cuda => Some(Arc::new(CudaDevice::new(0)?)),
            DeviceKind::Emulated => Some(Arc::new(EmulatedDevice::new())),
        })
    }
}

/// A value for a schedule parameter.
#[derive(Clone, Debug)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Tensor(Tensor),
}

/// Parses and checks a `.sched` source.
pub fn compile(name: &str, source: &str) -> Result<Program, Diagnostics> {
    let analysis = sched_lang::analyze(name, source.as_bytes());
    match analysis.program {
        Some(program) => Ok(Program { program: Arc::new(program) }),
        None => Err(Diagnostics { diagnostics: analysis.diagnostics, sources: analysis.sources }),
    }
}

impl Program {
    /// The names of the program's schedules, in source order.
    pub fn schedules(&self) -> Vec<String> {
        self.program.user_schedules().map(|(_, s)| s.name.clone()).collect()
    }

    pub fn schedule(&self, name: &str) -> Result<Schedule<'_>, ApiError> {
        match self.program.schedule_by_name(name) {
            Some((id, _)) => Ok(Schedule { program: self, id }),
            None => Err(ApiError::UnknownSchedule { name: name.to_string(), available: self.schedules().join(", ") }),
        }
    }
}

/// One schedule of a program, ready to be bound.
pub struct Schedule<'p> {
    program: &'p Program,
    id: ScheduleId,
}

impl Schedule<'_> {
    /// Binds parameters by name (the others keep their defaults) and compiles the schedule with
    /// the host parameters folded into the code.
    pub fn bind(&self, values: &[(&str, Value)]) -> Result<Executable, ApiError> {
        // Lowering alone tells the parameters; the bound compilation below runs every pass.
        let unbound = pipeline::compile_until(&self.program.program, self.id, Stage::Lower)?;
        let mut params: Vec<Option<ParamValue>> = vec![None; unbound.params.len()];
        for (name, value) in values {
            let index = unbound
                .params
                .iter()
                .position(|p| p.name == *name)
                .ok_or_else(|| ApiError::UnknownParam { schedule: unbound.name.clone(), name: name.to_string() })?;
            let mismatch = |expected| ApiError::ParamType { name: name.to_string(), expected };
            params[index] = Some(match (unbound.params[index].ty, value) {
                (ParamTy::Host(Ty::I64), Value::Int(v)) => ParamValue::Host(Constant::I64(*v)),
                (ParamTy::Host(Ty::F64), Value::Float(v)) => ParamValue::Host(Constant::F64(*v)),
                (ParamTy::Host(Ty::F64), Value::Int(v)) => ParamValue::Host(Constant::F64(*v as f64)),
                (ParamTy::Host(Ty::Bool), Value::Bool(v)) => ParamValue::Host(Constant::Bool(*v)),
                (ParamTy::Tensor, Value::Tensor(t)) => ParamValue::Tensor(t.clone()),
                (ParamTy::Host(Ty::I64), _) => return Err(mismatch("an int")),
                (ParamTy::Host(Ty::F64), _) => return Err(mismatch("a float")),
                (ParamTy::Host(_), _) => return Err(mismatch("a bool")),
                (ParamTy::Tensor, _) => return Err(mismatch("a tensor")),
                (ParamTy::Model(_), _) => return Err(mismatch("a model, bound when running")),
                (ParamTy::Other, _) => return Err(mismatch("not settable")),
            });
        }
        let function = Arc::new(compile_folded(&self.program.program, self.id, &unbound.params, &params)?);
        let native = Arc::new(JitProgram::compile(Arc::clone(&function))?);
        Ok(Executable { program: Arc::clone(&self.program.program), function, native, params })
    }
}

/// Compiles a schedule through the whole pipeline with every host parameter folded into the code:
/// the value given in `params` (by position in `declared`), else the parameter's default.
pub(crate) fn compile_folded(
    program: &sched_lang::Program,
    schedule: ScheduleId,
    declared: &[ParamInfo],
    params: &[Option<ParamValue>],
) -> Result<Function, CompileError> {
    let constants: Vec<Option<Constant>> = params
        .iter()
        .zip(declared)
        .map(|(value, param)| match value {
            Some(ParamValue::Host(c)) => Some(*c),
            _ => param.default,
        })
        .collect();
    pipeline::compile_bound(program, schedule, &constants, Stage::Plan)
}

/// A compiled schedule with its parameters bound, and its native code: run it as often as
/// needed, from any thread.
#[derive(Clone, Debug)]
pub struct Executable {
    program: Arc<sched_lang::Program>,
    function: Arc<Function>,
    native: Arc<JitProgram>,
    params: Vec<Option<ParamValue>>,
}

impl Executable {
    /// The compiled IR.
    pub fn function(&self) -> &Function {
        &self.function
    }

    /// The native code: the host function's CLIF and the compiled kernels.
    pub fn native(&self) -> &JitProgram {
        &self.native
    }

    /// Runs with the given models, by parameter name, on the default engine (the JIT); each model
    /// is checked against what the schedule asks of it first.
    pub fn run(&self, models: &[(&str, Arc<dyn Model>)], options: &RunOptions<'_>) -> Result<Outputs, ApiError> {
        self.run_on(Engine::Jit, models, options)
    }

    /// Runs like [`run`](Self::run), on the given engine. Both engines give the same bits.
    pub fn run_on(
        &self,
        engine: Engine,
        models: &[(&str, Arc<dyn Model>)],
        options: &RunOptions<'_>,
    ) -> Result<Outputs, ApiError> {
        let bound = self.bind_models(models)?;
        self.run_bound(engine, &bound, options)
    }

    /// Runs once per seed, with `options` otherwise. On a device, the runs after the first two
    /// replay the recorded device work without the host code, as one graph launch each where the
    /// device has graphs, when the schedule's device work does not depend on the seed or on the
    /// values it computes ([`sched_runtime::runs`]); the result says whether they did and why not.
    pub fn run_seeds(
        &self,
        engine: Engine,
        models: &[(&str, Arc<dyn Model>)],
        options: &RunOptions<'_>,
        seeds: &[u64],
    ) -> Result<SeedRuns, ApiError> {
        let bound = self.bind_models(models)?;
        let run = |device, seed| {
            let options = RunOptions { seed, device, ..options.clone() };
            match engine {
                Engine::Jit => self.native.run(&self.params, &bound, &options),
                Engine::Interpreter => interp::run(&self.function, &self.params, &bound, &options),
            }
        };
        Ok(runs::run_seeds(options.device.as_ref(), seeds, run)?)
    }

    fn run_bound(
        &self,
        engine: Engine,
        bound: &[Arc<dyn Model>],
        options: &RunOptions<'_>,
    ) -> Result<Outputs, ApiError> {
        match engine {
            Engine::Jit => Ok(self.native.run(&self.params, bound, options)?),
            Engine::Interpreter => Ok(interp::run(&self.function, &self.params, bound, options)?),
        }
    }

    /// The models for the schedule's model parameters, in order, each checked against what the
    /// schedule asks of it.
    fn bind_models(&self, models: &[(&str, Arc<dyn Model>)]) -> Result<Vec<Arc<dyn Model>>, ApiError> {
        let mut bound = Vec::new();
        for model in &self.function.models {
            let Some((_, given)) = models.iter().find(|(name, _)| *name == model.name) else {
                return Err(ApiError::MissingModel { name: model.name.clone() });
            };
            let problems = self.program.check_model_binding(&self.function.name, &model.name, given.info().kind.name());
            let reasons: Vec<String> =
                problems.iter().filter(|d| d.is_error()).map(|d| format!("{}: {}", d.code, d.message)).collect();
            if !reasons.is_empty() {
                return Err(ApiError::Binding { name: model.name.clone(), reasons: reasons.join("; ") });
            }
            bound.push(Arc::clone(given));
        }
        Ok(bound)
    }
}
