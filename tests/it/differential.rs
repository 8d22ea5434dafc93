//! Differential tests: a schedule must give the same bits however it is executed.
//!
//! Four legs run each schedule with the same models, seed and batch:
//!
//! - the JIT on the fully compiled IR (`Engine::Jit`),
//! - the reference interpreter on the same IR (`Engine::Interpreter`),
//! - the JIT's host code driving the emulated device (`sched_runtime::device::emulated`): the
//!   device path of the runtime, where tensors live in device buffers and move to the host only
//!   where the schedule needs them there; every buffer must be freed when the run ends,
//! - the interpreter on the IR after value numbering, folding and dead-code elimination but
//!   before fusion and buffer planning (`Stage::Dce`),
//! - the interpreter on the IR straight out of lowering, with nothing optimized (`Stage::Lower`).
//!
//! Their emitted values must be equal bit for bit, and they must fail or succeed together. A NaN
//! equals only a NaN with the same bits on the emulated device, which runs the interpreter's own
//! executor; on the other legs any NaN equals any NaN. The JIT promises the reference evaluator's
//! bits except for NaN payloads (`sched_kernels::jit`), and where both operands of an operation
//! are NaN, its result may carry either one's sign and payload, which IEEE 754 leaves open: `x =
//! x + m` with `x` and `m` NaNs of opposite signs, in a kernel writing `x` in place, gives the
//! interpreter's `x` and the JIT's `m`, and a folded NaN constant times a NaN state gave the
//! lowered IR the other sign than the optimized one (seen once in about 35 000 programs).
//!
//! The JIT and the interpreter must make the same model calls. The less optimized legs may make
//! more: value numbering merges identical calls of one step into one evaluation, dead-code
//! elimination drops unused ones, and fusion drops calls whose result only gave a noise draw its
//! shape (the draw joins a kernel of the same shape; the call is then dead).
//!
//! The schedules are random well-typed programs (`common/programs.rs`, 500 per run) and every
//! runnable schedule of `examples/`. A failure prints the smallest failing program proptest finds;
//! `PROPTEST_RNG_SEED=N` fixes the choice of programs.

use crate::common::programs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use sched::api::{Engine, Executable, compile};
use sched_compiler::ir::Function;
use sched_compiler::pipeline::{self, Stage};
use sched_lang::nfe::{self, Nfe};
use sched_models::load::load_model;
use sched_runtime::device::Device;
use sched_runtime::device::emulated::EmulatedDevice;
use sched_runtime::interp;
use sched_runtime::model::Model;
use sched_runtime::run::{OutputValue, Outputs, RunOptions};
use sched_runtime::tensor::Tensor;

use programs::{GeneratedProgram, MAX_MODEL_CALLS, SCHEDULE};

/// What one leg produced: its outputs, or its error as text.
type Leg = Result<Outputs, String>;

/// Loaded models, by parameter name.
type Models = Vec<(String, Arc<dyn Model>)>;

/// How the model calls of two legs must compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Calls {
    /// The same number.
    Equal,
    /// The second leg makes at least as many as the first (it is less optimized).
    AtLeast,
}

/// How NaNs in the outputs of two legs must compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nans {
    /// A NaN equals only a NaN with the same bits.
    SameBits,
    /// A NaN equals any NaN.
    AnyNan,
}

/// Whether two numbers agree, given whether their bits are the same and whether both are NaN.
fn numbers_agree(same_bits: bool, both_nan: bool, nans: Nans) -> bool {
    same_bits || (nans == Nans::AnyNan && both_nan)
}

/// The first difference between two legs, described, or `None` when they agree.
fn difference(expected: &Leg, actual: &Leg, calls: Calls, nans: Nans) -> Option<String> {
    let (expected, actual) = match (expected, actual) {
        (Ok(e), Ok(a)) => (e, a),
        (Err(_), Err(_)) => return None,
        (Ok(_), Err(e)) => return Some(format!("only the second leg fails: {e}")),
        (Err(e), Ok(_)) => return Some(format!("only the first leg fails: {e}")),
    };
    let calls_differ = match calls {
        Calls::Equal => expected.model_calls != actual.model_calls,
        Calls::AtLeast => expected.model_calls > actual.model_calls,
    };
    if calls_differ {
        return Some(format!("model calls: {} and {}", expected.model_calls, actual.model_calls));
    }
    let names = |o: &Outputs| o.values.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>();
    if names(expected) != names(actual) {
        return Some(format!("outputs: {:?} and {:?}", names(expected), names(actual)));
    }
    for ((name, e), (_, a)) in expected.values.iter().zip(&actual.values) {
        let differs = match (e, a) {
            (OutputValue::Tensor(e), OutputValue::Tensor(a)) => {
                if e.shape != a.shape {
                    return Some(format!("`{name}`: shapes {:?} and {:?}", e.shape, a.shape));
                }
                match e
                    .data
                    .iter()
                    .zip(&a.data)
                    .position(|(x, y)| !numbers_agree(x.to_bits() == y.to_bits(), x.is_nan() && y.is_nan(), nans))
                {
                    Some(i) => {
                        let (x, y) = (e.data[i], a.data[i]);
                        return Some(format!(
                            "`{name}`[{i}]: {x:e} ({:#010x}) and {y:e} ({:#010x})",
                            x.to_bits(),
                            y.to_bits()
                        ));
                    }
                    None => false,
                }
            }
            (OutputValue::F64(e), OutputValue::F64(a)) => {
                !numbers_agree(e.to_bits() == a.to_bits(), e.is_nan() && a.is_nan(), nans)
            }
            (e, a) => e != a,
        };
        if differs {
            return Some(format!("`{name}`: {e:?} and {a:?}"));
        }
    }
    None
}

/// The models a compiled schedule asks for, loaded from their default specs, by name.
fn default_models(function: &Function, base_dir: Option<&Path>) -> Result<Models, String> {
    function
        .models
        .iter()
        .map(|m| {
            let spec = m.default_spec.as_deref().ok_or_else(|| format!("model `{}` has no default", m.name))?;
            let model = load_model(spec, base_dir).map_err(|e| format!("model `{}` ({spec}): {e}", m.name))?;
            Ok((m.name.clone(), model))
        })
        .collect()
}

/// Runs a function of the pipeline directly on the interpreter, parameters at their defaults.
fn interpret(function: &Function, models: &Models, options: &RunOptions<'_>) -> Leg {
    let mut bound = Vec::new();
    for m in &function.models {
        match models.iter().find(|(name, _)| *name == m.name) {
            Some((_, model)) => bound.push(Arc::clone(model)),
            None => return Err(format!("model `{}` is not loaded", m.name)),
        }
    }
    let params = vec![None; function.params.len()];
    interp::run(function, &params, &bound, options).map_err(|e| e.to_string())
}

/// A schedule compiled every way the legs run it.
struct Compiled {
    /// The fully compiled schedule, with its native code.
    executable: Executable,
    optimized: Function,
    lowered: Function,
    models: Models,
}

/// One leg compared with the reference leg, and how.
struct Other {
    name: &'static str,
    result: Leg,
    calls: Calls,
    nans: Nans,
}

impl Compiled {
    /// Runs every leg with one seed and batch size and compares them with the first (the
    /// interpreter on the fully compiled schedule, or on the unfused one when the fused code
    /// cannot run); returns that first leg's result.
    fn compare(&self, seed: u64, batch: usize) -> Result<Leg, String> {
        let options = RunOptions { seed, batch, ..RunOptions::default() };
        let unfused = interpret(&self.optimized, &self.models, &options);
        let lowered = Other {
            name: "the lowered IR",
            result: interpret(&self.lowered, &self.models, &options),
            calls: Calls::AtLeast,
            nans: Nans::AnyNan,
        };
        let by_name: Vec<(&str, Arc<dyn Model>)> =
            self.models.iter().map(|(name, model)| (name.as_str(), Arc::clone(model))).collect();
        let run = |engine| self.executable.run_on(engine, &by_name, &options).map_err(|e| e.to_string());
        let jit = Other { name: "the JIT", result: run(Engine::Jit), calls: Calls::Equal, nans: Nans::AnyNan };
        let device = Arc::new(EmulatedDevice::new());
        let on_device = RunOptions { seed, batch, device: Some(device.clone()), ..RunOptions::default() };
        let mut emulated = self.executable.run_on(Engine::Jit, &by_name, &on_device).map_err(|e| e.to_string());
        if device.live_buffers() != 0 {
            emulated = Err(format!("{} device buffers outlived the run", device.live_buffers()));
        }
        let emulated =
            Other { name: "the emulated device", result: emulated, calls: Calls::Equal, nans: Nans::SameBits };
        let unfused =
            Other { name: "the unfused IR (after dce)", result: unfused, calls: Calls::AtLeast, nans: Nans::AnyNan };
        let (reference_name, reference) = ("the interpreter", run(Engine::Interpreter));
        let others = [jit, emulated, unfused, lowered];
        for other in &others {
            if let Some(difference) = difference(&reference, &other.result, other.calls, other.nans) {
                return Err(format!(
                    "seed {seed}, batch {batch}: {reference_name} and {} disagree: {difference}\n\
                     {reference_name}: {}\n{}: {}",
                    other.name,
                    summary(&reference),
                    other.name,
                    summary(&other.result)
                ));
            }
        }
        Ok(reference)
    }
}

/// A short description of a leg's result for failure messages.
fn summary(leg: &Leg) -> String {
    match leg {
        Err(e) => format!("error: {e}"),
        Ok(outputs) => {
            let values: Vec<String> = outputs
                .values
                .iter()
                .map(|(name, value)| match value {
                    OutputValue::Tensor(t) => format!("{name} = {:?}", &t.data[..t.data.len().min(8)]),
                    other => format!("{name} = {other:?}"),
                })
                .collect();
            format!("{} model calls; {}", outputs.model_calls, values.join("; "))
        }
    }
}

/// Compiles schedule `schedule` of `source` for every leg; `Ok(None)` when the compiler does not
/// support it yet.
fn compile_all(name: &str, source: &str, schedule: &str, base_dir: Option<&Path>) -> Result<Option<Compiled>, String> {
    let program = compile(name, source).map_err(|d| format!("does not check:\n{d}"))?;
    let analysis = sched_lang::analyze(name, source.as_bytes());
    let checked = analysis.program.ok_or("the front end rejects what `compile` accepted")?;
    let (id, _) = checked.schedule_by_name(schedule).ok_or("no such schedule")?;
    let stage = |stage: Stage| pipeline::compile_until(&checked, id, stage);
    let (optimized, lowered) = match (stage(Stage::Dce), stage(Stage::Lower)) {
        (Ok(optimized), Ok(lowered)) => (optimized, lowered),
        (Err(e), _) | (_, Err(e)) if e.code == "sched::compile::unsupported" => return Ok(None),
        (Err(e), _) | (_, Err(e)) => return Err(format!("does not compile: {e}")),
    };
    let executable = program
        .schedule(schedule)
        .map_err(|e| e.to_string())?
        .bind(&[])
        .map_err(|e| format!("does not compile: {e}"))?;
    let models = default_models(&lowered, base_dir)?;
    Ok(Some(Compiled { executable, optimized, lowered, models }))
}

/// What the runs of one generated program did.
struct Checked {
    /// Whether its runs succeeded (on every leg alike).
    ran: bool,
    /// The model calls of a run.
    model_calls: u64,
}

/// Checks one generated program on seed 0 with batch 1 and seed 7 with batch 3.
fn check_program(program: &GeneratedProgram) -> Result<Checked, String> {
    let compiled = compile_all("generated.sched", &program.source, SCHEDULE, None)?
        .ok_or("the compiler does not support the program")?;
    let mut checked = Checked { ran: true, model_calls: 0 };
    for (seed, batch) in [(0, 1), (7, 3)] {
        match compiled.compare(seed, batch)? {
            Ok(outputs) if outputs.model_calls > u64::from(MAX_MODEL_CALLS) => {
                return Err(format!("{} model calls, more than the generator allows", outputs.model_calls));
            }
            Ok(outputs) => checked.model_calls = outputs.model_calls,
            Err(_) => checked.ran = false,
        }
    }
    Ok(checked)
}

/// Generated programs per test run.
const PROGRAMS: u32 = 500;

/// Statistics of the generated programs, over all workers.
#[derive(Default)]
struct Stats {
    ran: AtomicU64,
    failed: AtomicU64,
    model_calls: AtomicU64,
}

/// Checks `cases` generated programs; `worker` offsets a fixed `PROPTEST_RNG_SEED` so that the
/// workers check different programs.
fn check_generated_programs(worker: u32, cases: u32, stats: &Stats) -> Result<(), String> {
    let defaults = Config::default();
    let rng_seed = match defaults.rng_seed {
        RngSeed::Fixed(seed) => RngSeed::Fixed(seed.wrapping_add(u64::from(worker))),
        RngSeed::Random => RngSeed::Random,
    };
    // Each shrinking step compiles and runs a program; a minute of it finds small programs.
    let config = Config { cases, failure_persistence: None, rng_seed, max_shrink_time: 60_000, ..defaults };
    let result = TestRunner::new(config).run(&programs::program(), |program| {
        let checked = check_program(&program).map_err(TestCaseError::fail)?;
        let counter = if checked.ran { &stats.ran } else { &stats.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        stats.model_calls.fetch_add(checked.model_calls, Ordering::Relaxed);
        Ok(())
    });
    result.map_err(|e| e.to_string())
}

#[test]
fn generated_programs_give_the_same_bits_on_every_leg() {
    let stats = Stats::default();
    // Compiling dominates (the front end and the passes run unoptimized in the dev profile), and
    // the programs are independent: share them between threads.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4) as u32;
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..workers)
            .map(|worker| {
                let stats = &stats;
                let cases = PROGRAMS / workers + u32::from(worker < PROGRAMS % workers);
                scope.spawn(move || check_generated_programs(worker, cases, stats))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err("a worker panicked".into()))).collect()
    });
    for result in results {
        if let Err(e) = result {
            panic!("{e}");
        }
    }
    let ran = stats.ran.into_inner();
    let failed = stats.failed.into_inner();
    let model_calls = stats.model_calls.into_inner();
    eprintln!(
        "{ran} programs ran and {failed} failed alike on every leg; {model_calls} model calls per seed \
         and batch in all"
    );
    // The generator is meant to write programs that run and call models: most of them must.
    let total = ran + failed;
    assert_eq!(total, u64::from(PROGRAMS));
    assert!(ran >= 9 * total / 10, "{failed} of {total} programs fail");
    assert!(model_calls >= 3 * ran, "{model_calls} model calls in {ran} programs");
}

#[test]
fn the_comparison_detects_one_ulp() {
    let outputs = |x: f32, y: f64, calls: u64| -> Leg {
        Ok(Outputs {
            values: vec![
                ("x".to_string(), OutputValue::Tensor(Tensor::new(vec![2], vec![1.0, x]))),
                ("y".to_string(), OutputValue::F64(y)),
            ],
            trace: Vec::new(),
            token_trace: Vec::new(),
            model_calls: calls,
            model_calls_by_model: vec![calls],
            kernel_launches: 0,
            transfers: Default::default(),
            output_downloads: Vec::new(),
        })
    };
    let differ = |a: Leg, b: Leg, calls, nans| difference(&a, &b, calls, nans).is_some();
    let (equal, at_least, strict) = (Calls::Equal, Calls::AtLeast, Nans::SameBits);
    let next_f32 = f32::from_bits(0.5f32.to_bits() + 1);
    let next_f64 = f64::from_bits(0.25f64.to_bits() + 1);
    for nans in [Nans::SameBits, Nans::AnyNan] {
        assert!(!differ(outputs(0.5, 0.25, 3), outputs(0.5, 0.25, 3), equal, nans));
        assert!(differ(outputs(0.5, 0.25, 3), outputs(next_f32, 0.25, 3), equal, nans));
        assert!(differ(outputs(0.0, 0.25, 3), outputs(-0.0, 0.25, 3), equal, nans));
        assert!(differ(outputs(0.5, 0.25, 3), outputs(0.5, next_f64, 3), equal, nans));
        assert!(differ(outputs(0.5, 0.25, 3), outputs(f32::NAN, 0.25, 3), equal, nans));
    }
    // Model calls and failures.
    assert!(differ(outputs(0.5, 0.25, 3), outputs(0.5, 0.25, 4), equal, strict));
    assert!(!differ(outputs(0.5, 0.25, 3), outputs(0.5, 0.25, 4), at_least, strict));
    assert!(differ(outputs(0.5, 0.25, 3), outputs(0.5, 0.25, 2), at_least, strict));
    assert!(differ(outputs(0.5, 0.25, 3), Err("fails".into()), equal, strict));
    assert!(!differ(Err("fails".into()), Err("fails differently".into()), equal, strict));
    // A NaN equals only a NaN with the same bits, unless any NaN will do.
    let other_nan = f32::from_bits(0x7fc0_0001);
    assert!(!differ(outputs(other_nan, f64::NAN, 3), outputs(other_nan, f64::NAN, 3), equal, strict));
    assert!(differ(outputs(other_nan, 0.25, 3), outputs(f32::NAN, 0.25, 3), equal, strict));
    assert!(differ(outputs(f32::NAN, 0.25, 3), outputs(-f32::NAN, 0.25, 3), equal, strict));
    assert!(!differ(outputs(f32::NAN, 0.25, 3), outputs(-f32::NAN, 0.25, 3), equal, Nans::AnyNan));
    assert!(differ(outputs(0.5, f64::NAN, 3), outputs(0.5, -f64::NAN, 3), equal, strict));
    assert!(!differ(outputs(0.5, f64::NAN, 3), outputs(0.5, -f64::NAN, 3), equal, Nans::AnyNan));
}

/// Every schedule of `examples/`, with its default models, on seeds 0 and 1 and batches 1 and 4.
/// Every example must compile: a schedule the compiler reports as unsupported fails the test.
#[test]
fn examples_give_the_same_bits_on_every_leg() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "sched"))
        .collect();
    files.sort();
    let (mut ran, mut skipped) = (Vec::new(), Vec::new());
    for path in files {
        let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&path).expect("the example is readable");
        let program = compile(&name, &source).unwrap_or_else(|d| panic!("{name} does not check:\n{d}"));
        for schedule in program.schedules() {
            let label = format!("{name}: {schedule}");
            let compiled = match compile_all(&name, &source, &schedule, Some(&dir)) {
                Ok(Some(compiled)) => compiled,
                Ok(None) => {
                    skipped.push(label);
                    continue;
                }
                Err(e) => panic!("{label}: {e}"),
            };
            for seed in [0, 1] {
                for batch in [1, 4] {
                    let outputs = compiled.compare(seed, batch).unwrap_or_else(|e| panic!("{label}: {e}"));
                    if let Err(e) = outputs {
                        panic!("{label} fails on seed {seed}, batch {batch}: {e}");
                    }
                }
            }
            ran.push(label);
        }
    }
    assert!(skipped.is_empty(), "examples the compiler does not support: {}", skipped.join(", "));
    assert!(ran.len() >= 43, "only {} example schedules ran: {}", ran.len(), ran.join(", "));
}

/// `sched check`'s count of model evaluations with default parameters (docs/language.md, "NFE")
/// is what a run with the defaults makes, on every example schedule whose count is known before
/// the run.
#[test]
fn the_static_nfe_count_is_what_a_run_makes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "sched"))
        .collect();
    files.sort();
    let (mut counted, mut dynamic) = (0, 0);
    for path in files {
        let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&path).expect("the example is readable");
        let analysis = sched_lang::analyze(&name, source.as_bytes());
        let checked = analysis.program.unwrap_or_else(|| panic!("{name} does not check"));
        for (id, info) in checked.user_schedules() {
            let label = format!("{name}: {}", info.name);
            let Nfe::Static(expected) = nfe::count(&checked, id) else {
                dynamic += 1;
                continue;
            };
            let compiled = match compile_all(&name, &source, &info.name, Some(&dir)) {
                Ok(Some(compiled)) => compiled,
                Ok(None) => panic!("{label}: the compiler does not support it"),
                Err(e) => panic!("{label}: {e}"),
            };
            let by_name: Vec<(&str, Arc<dyn Model>)> =
                compiled.models.iter().map(|(name, model)| (name.as_str(), Arc::clone(model))).collect();
            let options = RunOptions { seed: 0, batch: 4, ..RunOptions::default() };
            let outputs = compiled.executable.run(&by_name, &options).unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(outputs.model_calls, expected, "{label}: `sched check` counts {expected} model calls");
            counted += 1;
        }
    }
    assert!(counted >= 30 && dynamic >= 1, "{counted} schedules with a static count, {dynamic} dynamic");
}

/// The program that showed a NaN of the other sign on the lowered IR than on the optimized one
/// (a folded NaN constant times a NaN state): every leg must accept it.
#[test]
fn a_nan_of_either_sign_agrees_across_legs() {
    let source = r#"
/// A generated schedule.
schedule main(net: model<eps> = "analytic:gmm(preset=classes, kind=eps, interpolant=vp_cosine)") {
    let x = gaussian()
    for t1 in grid(1 -> 0, 1) {
        for t2, s3 in grid(1 -> 0, 1, trailing) {
            let v4: float = 1e-3
            refine x from t2 to s3 by dpmpp_2m() using cfg(net, (1.0 ^ 3), 1)
            let v5: float = float(3)
        }
        refine x from t1 to max(t1 - 0.25, 0.0) by euler_ancestral(1.0) using condition(net, 1)
    }
    for t6, s7 in grid(1 -> 0.1, (4 + 1), cosine) {
        refine x from 0.25 to 0.1 by lcm() using cfg(net, clamp(10, -1.0, 2.5), 0)
        refine x from t6 to s7 by renoise() using condition(net, 3)
        x = x
        x /= (3 % 5)
    }
    x *= (-(log(0.0) % 0.7))
    emit x
}
"#;
    let checked = check_program(&GeneratedProgram { source: source.to_string() }).unwrap_or_else(|e| panic!("{e}"));
    assert!(checked.ran, "the program runs on every leg");
}
