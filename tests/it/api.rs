//! The embedding API: binding, concurrency, callbacks, cancellation, errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sched::api::{ApiError, Executable, Value, compile};
use sched_models::load::load_model;
use sched_runtime::model::Model;
use sched_runtime::run::{OutputValue, RunError, RunOptions};

const SOURCE: &str = r#"
schedule sample(net: model, steps: int = 6, eta: float = 0.5) {
    let x = gaussian()
    for t, s in grid(1 -> 0, steps, trailing) { refine x from t to s by ddim(eta) }
    emit x
}
schedule jumps(fm: model) {
    let x = gaussian()
    jump x from 1 to 0
    emit x
}
"#;

fn net() -> Arc<dyn Model> {
    load_model("analytic:gmm(preset=eight, kind=eps, interpolant=scaled_linear)", None).expect("model")
}

fn samples(executable: &Executable, seed: u64) -> Vec<f32> {
    let outputs =
        executable.run(&[("net", net())], &RunOptions { seed, batch: 32, ..RunOptions::default() }).expect("runs");
    match &outputs.values[0].1 {
        OutputValue::Tensor(t) => t.data.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn executables_are_send_and_sync_and_runs_from_threads_equal_sequential_ones() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Executable>();
    let program = compile("api.sched", SOURCE).expect("checks");
    let executable = Arc::new(program.schedule("sample").expect("schedule").bind(&[]).expect("binds"));
    let sequential: Vec<Vec<f32>> = (0..4).map(|seed| samples(&executable, seed)).collect();
    let parallel: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|seed| {
                let executable = Arc::clone(&executable);
                scope.spawn(move || samples(&executable, seed))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(sequential, parallel);
    assert_ne!(sequential[0], sequential[1], "different seeds differ");
}

#[test]
fn bound_parameters_change_the_run() {
    let program = compile("api.sched", SOURCE).expect("checks");
    let schedule = program.schedule("sample").expect("schedule");
    let defaults = schedule.bind(&[]).expect("binds");
    let three = schedule.bind(&[("steps", Value::Int(3)), ("eta", Value::Int(0))]).expect("binds");
    let count = |e: &Executable| e.run(&[("net", net())], &RunOptions::default()).expect("runs").model_calls;
    assert_eq!(count(&defaults), 6);
    assert_eq!(count(&three), 3);
}

#[test]
fn callbacks_see_every_step_and_cancellation_stops_the_run() {
    let program = compile("api.sched", SOURCE).expect("checks");
    let executable = program.schedule("sample").expect("schedule").bind(&[]).expect("binds");
    let seen = AtomicU32::new(0);
    let count = |_: u32| {
        seen.fetch_add(1, Ordering::Relaxed);
    };
    executable.run(&[("net", net())], &RunOptions { on_verb: Some(&count), ..RunOptions::default() }).expect("runs");
    assert_eq!(seen.load(Ordering::Relaxed), 6);
    let steps = AtomicU32::new(0);
    let cancel = AtomicBool::new(false);
    let cancel_after_two_steps = |_: u32| {
        if steps.fetch_add(1, Ordering::Relaxed) + 1 == 2 {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let options = RunOptions { on_verb: Some(&cancel_after_two_steps), cancel: Some(&cancel), ..RunOptions::default() };
    let result = executable.run(&[("net", net())], &options);
    assert_eq!(steps.load(Ordering::Relaxed), 2, "the run stops right after the step that cancelled it");
    assert!(matches!(result, Err(ApiError::Run(RunError::Cancelled))), "{result:?}");
}

#[test]
fn mistakes_are_errors_not_panics() {
    let broken =
        compile("bad.sched", "schedule s(net: model<eps>) { let x = gausian() emit x }").expect_err("does not check");
    assert!(broken.to_string().contains("sched::resolve::unknown_function"), "{broken}");
    let program = compile("api.sched", SOURCE).expect("checks");
    assert!(matches!(program.schedule("nope"), Err(ApiError::UnknownSchedule { .. })));
    let schedule = program.schedule("sample").expect("schedule");
    assert!(matches!(schedule.bind(&[("steps", Value::Float(2.5))]), Err(ApiError::ParamType { .. })));
    assert!(matches!(schedule.bind(&[("stepz", Value::Int(2))]), Err(ApiError::UnknownParam { .. })));
    let executable = schedule.bind(&[]).expect("binds");
    assert!(matches!(executable.run(&[], &RunOptions::default()), Err(ApiError::MissingModel { .. })));
    // An eps model cannot jump: the front end's binding check rejects it before running.
    let jumps = program.schedule("jumps").expect("schedule").bind(&[]).expect("binds");
    let result = jumps.run(&[("fm", net())], &RunOptions::default());
    match result {
        Err(ApiError::Binding { reasons, .. }) => {
            assert!(reasons.contains("sched::type::jump_needs_two_time_model"), "{reasons}")
        }
        other => panic!("{other:?}"),
    }
}
