//! The embedding API: compile once, bind parameters, run many times, from any thread.
//!
//! ```
//! use sched::api::{compile, load_model, RunOptions, Value};
//!
//! let program = compile("demo.sched", r#"
//!     schedule sample(net: model<velocity>, steps: int = 8) {
//!         let x = gaussian()
//!         for t, s in grid(1 -> 0, steps) { refine x from t to s by flow_euler() }
//!         emit x
//!     }
//! "#).expect("the schedule checks");
//! let executable = program.schedule("sample")?.bind(&[("steps", Value::Int(4))])?;
//! let net = load_model("analytic:gmm(preset=eight, kind=velocity)", None)?;
//! let outputs = executable.run(&[("net", net)], &RunOptions { batch: 16, seed: 7, ..RunOptions::default() })?;
//! assert_eq!(outputs.model_calls, 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! An [`Executable`] holds no mutable state, so one can serve concurrent runs (each with its own
//! seed, batch, callbacks and cancellation flag) from several threads. The `sched` command line is
//! a client of this module: it parses, binds, loads, runs and reports through it.

mod error;
mod input;
pub mod render;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use sched_compiler::diagnostics::CompileError;
use sched_compiler::ir::{Constant, Ty};
pub use sched_compiler::ir::{Function, ParamInfo, ParamTy};
use sched_compiler::pipeline::{self, Stage};
use sched_lang::check::ScheduleId;
use sched_lang::{Diagnostic, SourceMap};
use sched_runtime::device::cuda::CudaDevice;
use sched_runtime::device::emulated::EmulatedDevice;
pub use sched_runtime::device::{Device, DeviceError, Transfers};
use sched_runtime::interp;
use sched_runtime::jit::JitProgram;
pub use sched_runtime::model::{Model, TokenModel, TokenText};
use sched_runtime::run::ParamValue;
pub use sched_runtime::run::{NoiseSource, OutputValue, Outputs, RunError, RunOptions};
use sched_runtime::seeds;
pub use sched_runtime::seeds::{ReplaySummary, SeedRuns};
pub use sched_runtime::tensor::Tensor;

pub use self::error::{ApiError, Diagnostics};
pub use self::input::{Prompt, encode_prompt, read_tensor};

/// What executes a compiled schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// Native code compiled with Cranelift: host control code and fused kernels (the default).
    #[default]
    Jit,
    /// The reference interpreter, which walks the IR.
    Interpreter,
}

/// Where a schedule's fused kernels run and its tensors live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceKind {
    /// The host: Cranelift-compiled kernels (or the interpreter's evaluator) on host tensors.
    #[default]
    Cpu,
    /// The first NVIDIA GPU: NVRTC-compiled kernels on device buffers (needs the NVIDIA driver
    /// and libnvrtc; see docs/gpu.md).
    Cuda,
    /// The device path of the runtime with host buffers and the reference evaluator, for tests.
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

/// A model, with the name of the model parameter it binds.
pub type NamedModel = (String, Arc<dyn Model>);

/// Loads the model `spec` names: `analytic:...` is an analytic model (docs/models.md), anything
/// else the path of a checkpoint, resolved against `base_dir` when it is relative and a base is
/// given.
pub fn load_model(spec: &str, base_dir: Option<&Path>) -> Result<Arc<dyn Model>, ApiError> {
    sched_models::load::load_model(spec, base_dir).map_err(|e| ApiError::Load(Box::new(e)))
}

/// A checked program.
#[derive(Clone, Debug)]
pub struct Program {
    program: Arc<sched_lang::Program>,
    warnings: Vec<Diagnostic>,
}

/// Parses and checks a `.sched` source.
pub fn compile(name: &str, source: &str) -> Result<Program, Diagnostics> {
    compile_bytes(name, source.as_bytes())
}

/// Parses and checks the bytes of a `.sched` file (which need not be UTF-8: that is a diagnostic).
pub fn compile_bytes(name: &str, bytes: &[u8]) -> Result<Program, Diagnostics> {
    let analysis = sched_lang::analyze(name, bytes);
    match analysis.program {
        Some(program) => Ok(Program { program: Arc::new(program), warnings: analysis.diagnostics }),
        None => Err(Diagnostics { diagnostics: analysis.diagnostics, sources: analysis.sources }),
    }
}

impl Program {
    /// The names of the program's schedules, in source order.
    pub fn schedules(&self) -> Vec<String> {
        self.program.user_schedules().map(|(_, s)| s.name.clone()).collect()
    }

    /// The warnings of the check (a program with errors is not a `Program`).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The program's sources (the user's file and the prelude), to render diagnostics against.
    pub fn sources(&self) -> &SourceMap {
        &self.program.sources
    }

    /// The checked program of the front end, to inspect it (`sched build` prints its stages).
    pub fn checked(&self) -> &sched_lang::Program {
        &self.program
    }

    /// The schedule `name`.
    pub fn schedule(&self, name: &str) -> Result<Schedule<'_>, ApiError> {
        match self.program.schedule_by_name(name) {
            Some((id, info)) => Ok(Schedule { program: self, id, name: info.name.clone(), unbound: OnceLock::new() }),
            None => Err(ApiError::UnknownSchedule { name: name.to_string(), available: self.schedules().join(", ") }),
        }
    }
}

/// One schedule of a program, ready to be bound.
pub struct Schedule<'p> {
    program: &'p Program,
    id: ScheduleId,
    name: String,
    /// The lowered schedule, before any pass: what its parameters are (lowered on first use).
    unbound: OnceLock<Result<Function, CompileError>>,
}

impl Schedule<'_> {
    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schedule lowered, which tells its parameters; binding runs every pass.
    fn unbound(&self) -> Result<&Function, ApiError> {
        let lowered =
            self.unbound.get_or_init(|| pipeline::compile_until(&self.program.program, self.id, Stage::Lower));
        lowered.as_ref().map_err(|e| ApiError::Compile(e.clone()))
    }

    /// The schedule's parameters, in declaration order.
    pub fn params(&self) -> Result<&[ParamInfo], ApiError> {
        Ok(&self.unbound()?.params)
    }

    /// The value of parameter `name` written as `text` (as on the command line: `8`, `0.5`,
    /// `true`), by the parameter's type.
    pub fn parse_value(&self, name: &str, text: &str) -> Result<Value, ApiError> {
        input::parse_value(&self.param(name)?, text)
    }

    fn param(&self, name: &str) -> Result<ParamInfo, ApiError> {
        let unbound = self.unbound()?;
        unbound.params.iter().find(|p| p.name == name).cloned().ok_or_else(|| ApiError::UnknownParam {
            schedule: unbound.name.clone(),
            name: name.to_string(),
            available: unbound.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    /// Binds parameters by name (the others keep their defaults) and compiles the schedule with
    /// the host parameters folded into the code.
    pub fn bind(&self, values: &[(&str, Value)]) -> Result<Executable, ApiError> {
        let unbound = self.unbound()?;
        let mut params: Vec<Option<ParamValue>> = vec![None; unbound.params.len()];
        for (name, value) in values {
            let param = self.param(name)?;
            let index = unbound.params.iter().position(|p| p.name == *name).unwrap_or_default();
            let mismatch = |expected| ApiError::ParamType { name: name.to_string(), expected };
            params[index] = Some(match (param.ty, value) {
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
        let function = compile_folded(&self.program.program, self.id, &unbound.params, &params)?;
        Ok(Executable {
            program: Arc::clone(&self.program.program),
            function: Arc::new(function),
            native: Arc::new(OnceLock::new()),
            params,
        })
    }
}

/// Compiles a schedule through the whole pipeline with every host parameter folded into the code:
/// the value given in `params` (by position in `declared`), else the parameter's default.
fn compile_folded(
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

/// The native code of an executable once compiled, or why it cannot be.
type Native = Result<Arc<JitProgram>, String>;

/// A compiled schedule with its parameters bound: run it as often as needed, from any thread.
/// Its native code is compiled on the first run on the JIT, and shared by every later one.
#[derive(Clone, Debug)]
pub struct Executable {
    program: Arc<sched_lang::Program>,
    function: Arc<Function>,
    native: Arc<OnceLock<Native>>,
    params: Vec<Option<ParamValue>>,
}

impl Executable {
    /// The compiled IR.
    pub fn function(&self) -> &Function {
        &self.function
    }

    /// The native code: the host function's CLIF and the compiled kernels.
    pub fn native(&self) -> Result<Arc<JitProgram>, ApiError> {
        let native = self
            .native
            .get_or_init(|| JitProgram::compile(Arc::clone(&self.function)).map(Arc::new).map_err(|e| e.to_string()));
        native.clone().map_err(ApiError::Jit)
    }

    /// Loads a model for each of the schedule's model parameters: the spec `specs` gives it by
    /// name, else the default written in the schedule (resolved against `base_dir`, the
    /// directory of the `.sched` file). The models are checked against the schedule when it runs.
    pub fn load_models(&self, specs: &[(&str, &str)], base_dir: Option<&Path>) -> Result<Vec<NamedModel>, ApiError> {
        if let Some((name, _)) = specs.iter().find(|(name, _)| !self.function.models.iter().any(|m| m.name == *name)) {
            let names: Vec<&str> = self.function.models.iter().map(|m| m.name.as_str()).collect();
            return Err(ApiError::UnknownModel {
                schedule: self.function.name.clone(),
                name: name.to_string(),
                available: names.join(", "),
            });
        }
        self.function
            .models
            .iter()
            .map(|model| {
                let (spec, dir) = match (specs.iter().find(|(name, _)| *name == model.name), &model.default_spec) {
                    (Some((_, spec)), _) => (spec.to_string(), None),
                    (None, Some(spec)) => (spec.clone(), base_dir),
                    (None, None) => return Err(ApiError::NoDefaultModel { name: model.name.clone() }),
                };
                let loaded = sched_models::load::load_model(&spec, dir)
                    .map_err(|source| ApiError::LoadModel { name: model.name.clone(), source: Box::new(source) })?;
                Ok((model.name.clone(), loaded))
            })
            .collect()
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
    /// values it computes ([`sched_runtime::seeds`]); the result says whether they did and why not.
    pub fn run_seeds(
        &self,
        engine: Engine,
        models: &[(&str, Arc<dyn Model>)],
        options: &RunOptions<'_>,
        seeds: &[u64],
    ) -> Result<SeedRuns, ApiError> {
        let bound = self.bind_models(models)?;
        let native = match engine {
            Engine::Jit => Some(self.native()?),
            Engine::Interpreter => None,
        };
        let run = |device, seed| {
            let options = RunOptions { seed, device, ..options.clone() };
            match &native {
                Some(native) => native.run(&self.params, &bound, &options),
                None => interp::run(&self.function, &self.params, &bound, &options),
            }
        };
        Ok(seeds::run_seeds(options.device.as_ref(), seeds, run)?)
    }

    fn run_bound(
        &self,
        engine: Engine,
        bound: &[Arc<dyn Model>],
        options: &RunOptions<'_>,
    ) -> Result<Outputs, ApiError> {
        match engine {
            Engine::Jit => Ok(self.native()?.run(&self.params, bound, options)?),
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
            let reasons: Vec<String> = problems
                .iter()
                .filter(|d| d.is_error())
                .map(|d| format!("{}: {} ({})", d.code, d.message, d.help))
                .collect();
            if !reasons.is_empty() {
                return Err(ApiError::Binding {
                    name: model.name.clone(),
                    origin: given.info().source.clone(),
                    reasons: reasons.join("; "),
                });
            }
            bound.push(Arc::clone(given));
        }
        Ok(bound)
    }
}
