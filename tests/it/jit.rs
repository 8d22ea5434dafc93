//! The JIT engine against the reference interpreter on what the differential tests of whole
//! programs do not reach: failures (the same error, located at the same verb), cancellation,
//! the per-verb callback, and concurrent runs of one compiled program.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use sched_compiler::ir::{Constant, Function};
use sched_compiler::pipeline;
use sched_models::load::load_model;
use sched_runtime::interp;
use sched_runtime::jit::JitProgram;
use sched_runtime::model::Model;
use sched_runtime::run::{OutputValue, Outputs, ParamValue, RunError, RunOptions};

fn compile(source: &str) -> Arc<Function> {
    let analysis = sched_lang::analyze("test.sched", source.as_bytes());
    let program = analysis.program.unwrap_or_else(|| panic!("does not check: {:#?}", analysis.diagnostics));
    let (id, _) = program.user_schedules().next().expect("a schedule");
    Arc::new(pipeline::compile(&program, id).expect("compiles"))
}

fn gmm(kind: &str) -> Arc<dyn Model> {
    load_model(&format!("analytic:gmm(preset=eight, kind={kind})"), None).expect("an analytic model")
}

/// Runs on both engines and returns (JIT, interpreter).
fn both(
    function: &Arc<Function>,
    params: &[Option<ParamValue>],
    models: &[Arc<dyn Model>],
    options: &RunOptions<'_>,
) -> (Result<Outputs, RunError>, Result<Outputs, RunError>) {
    let native = JitProgram::compile(Arc::clone(function)).expect("compiles to native code");
    (native.run(params, models, options), interp::run(function, params, models, options))
}

fn tensor_bits(outputs: &Outputs) -> Vec<u32> {
    match &outputs.values[0].1 {
        OutputValue::Tensor(t) => t.data.iter().map(|x| x.to_bits()).collect(),
        other => panic!("expected a tensor, got {other:?}"),
    }
}

#[test]
fn an_integer_remainder_by_zero_fails_the_same_way() {
    let function = compile(
        "schedule s(net: model<velocity>, d: int = 3) {
            let x = gaussian()
            let r = 7 % d
            for t, s in grid(1 -> 0, 2 + r) { refine x from t to s by flow_euler() }
            emit x
        }",
    );
    let models = [gmm("velocity")];
    let options = RunOptions::default();
    let (jit, reference) = both(&function, &[None, Some(ParamValue::Host(Constant::I64(3)))], &models, &options);
    assert_eq!(tensor_bits(&jit.expect("runs")), tensor_bits(&reference.expect("runs")));
    let zero = [None, Some(ParamValue::Host(Constant::I64(0)))];
    let (jit, reference) = both(&function, &zero, &models, &options);
    let (jit, reference) = (jit.expect_err("fails"), reference.expect_err("fails"));
    assert!(matches!(jit, RunError::DivisionByZero), "{jit}");
    assert_eq!(jit.to_string(), reference.to_string());
}

#[test]
fn a_failing_model_call_is_reported_at_its_verb() {
    // The refinement starts outside the model's time range, so its model call fails.
    let function = compile(
        "schedule s(net: model<velocity>) {
            let x = gaussian()
            refine x from 0.5 to 0.25 by flow_euler()
            refine x from 2 to 1 by flow_euler()
            emit x
        }",
    );
    let (jit, reference) = both(&function, &[], &[gmm("velocity")], &RunOptions::default());
    let (jit, reference) = (jit.expect_err("fails"), reference.expect_err("fails"));
    assert!(matches!(&jit, RunError::InVerb { verb: "refine", line: 4, .. }), "{jit}");
    assert_eq!(jit.to_string(), reference.to_string());
    assert!(jit.to_string().contains("outside [0, 1]"), "{jit}");
}

#[test]
fn callbacks_and_cancellation_behave_alike() {
    let function = compile(
        "schedule s(net: model<velocity>) {
            let x = gaussian()
            for t, s in grid(1 -> 0, 10) { refine x from t to s by flow_euler() }
            emit x
        }",
    );
    let models = [gmm("velocity")];
    let native = JitProgram::compile(Arc::clone(&function)).expect("compiles");
    for engine in ["jit", "interpreter"] {
        let verbs = Mutex::new(Vec::new());
        let cancel = AtomicBool::new(false);
        let record = |verb: u32| {
            let mut seen = verbs.lock().expect("not poisoned");
            seen.push(verb);
            if seen.len() == 4 {
                cancel.store(true, Ordering::Relaxed);
            }
        };
        let options = RunOptions { on_verb: Some(&record), cancel: Some(&cancel), ..RunOptions::default() };
        let result = match engine {
            "jit" => native.run(&[], &models, &options),
            _ => interp::run(&function, &[], &models, &options),
        };
        assert!(matches!(result, Err(RunError::Cancelled)), "{engine}: {result:?}");
        assert_eq!(verbs.lock().expect("not poisoned").as_slice(), &[0, 0, 0, 0], "{engine}");
    }
}

#[test]
fn one_compiled_program_serves_concurrent_runs() {
    let function = compile(
        "schedule s(net: model<eps>) {
            let x = gaussian()
            for t, s in grid(0.99 -> 0, 12) { refine x from t to s by ddim(eta = 1) }
            emit x
        }",
    );
    let models: [Arc<dyn Model>; 1] = [gmm("eps")];
    let native = Arc::new(JitProgram::compile(Arc::clone(&function)).expect("compiles"));
    let serial: Vec<Vec<u32>> = (0..4u64)
        .map(|seed| {
            let options = RunOptions { seed, batch: 64, ..RunOptions::default() };
            tensor_bits(&interp::run(&function, &[], &models, &options).expect("runs"))
        })
        .collect();
    assert!(serial.iter().flatten().all(|bits| f32::from_bits(*bits).is_finite()), "the samples are numbers");
    let finished = AtomicU32::new(0);
    std::thread::scope(|scope| {
        for (seed, expected) in serial.iter().enumerate() {
            let (native, models, finished) = (Arc::clone(&native), models.clone(), &finished);
            scope.spawn(move || {
                for _ in 0..3 {
                    let options = RunOptions { seed: seed as u64, batch: 64, ..RunOptions::default() };
                    assert_eq!(&tensor_bits(&native.run(&[], &models, &options).expect("runs")), expected);
                }
                finished.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    assert_eq!(finished.load(Ordering::Relaxed), 4);
}

#[test]
fn one_compiled_program_runs_with_different_parameters_and_batches() {
    // Compiled without binding, so `steps` and `eta` stay run-time parameters of the native code.
    let function = compile(
        "schedule s(net: model<eps>, steps: int = 4, eta: float = 0.0) {
            let x = gaussian()
            for t, s in grid(0.99 -> 0, steps) { refine x from t to s by ddim(eta = eta) }
            emit x
        }",
    );
    let models = [gmm("eps")];
    let native = JitProgram::compile(Arc::clone(&function)).expect("compiles");
    let mut seen = Vec::new();
    for (steps, eta, batch) in [(4, 0.0, 3), (9, 0.5, 3), (9, 0.5, 17), (2, 1.0, 1)] {
        let params = [None, Some(ParamValue::Host(Constant::I64(steps))), Some(ParamValue::Host(Constant::F64(eta)))];
        let options = RunOptions { batch, seed: 11, ..RunOptions::default() };
        let jit = native.run(&params, &models, &options).expect("runs");
        let reference = interp::run(&function, &params, &models, &options).expect("runs");
        assert_eq!(jit.model_calls, steps as u64);
        assert_eq!(tensor_bits(&jit), tensor_bits(&reference), "steps {steps}, eta {eta}, batch {batch}");
        assert!(tensor_bits(&jit).iter().all(|bits| f32::from_bits(*bits).is_finite()), "the samples are numbers");
        seen.push(tensor_bits(&jit));
    }
    assert_ne!(seen[0], seen[1][..seen[0].len()], "the parameters change the samples");
    assert_eq!(seen[1], seen[2][..seen[1].len()], "a sample does not depend on its batch");
}
