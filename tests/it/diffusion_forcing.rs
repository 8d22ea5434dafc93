//! Diffusion forcing: per-position (tensor) times in `refine`, with the same step code as scalar
//! times, and `positions()`. The schedules of `examples/diffusion_forcing.sched` run on both
//! engines with the same bits; on a Gaussian whose coordinates are independent, every scheduling
//! matrix takes each position through the same levels, so the pyramid and the autoregressive
//! schedules end where the full-sequence one does; a model that cannot take a time per position
//! and a step that branches on its time are refused with clear errors.

use std::path::Path;
use std::sync::Arc;

use sched::api::{ApiError, Engine, Executable, Value, compile};
use sched_models::load::load_model;
use sched_runtime::model::{Model, ModelError};
use sched_runtime::run::{OutputValue, RunError, RunOptions};
use sched_runtime::tensor::Tensor;

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/diffusion_forcing.sched");
    std::fs::read_to_string(path).expect("the example is readable")
}

fn bind(source: &str, schedule: &str, params: &[(&str, Value)]) -> Executable {
    let program = compile("diffusion_forcing.sched", source).expect("checks");
    program.schedule(schedule).expect("schedule").bind(params).expect("binds")
}

/// The models of an executable, loaded from their default specs.
fn default_models(executable: &Executable) -> Vec<(String, Arc<dyn Model>)> {
    executable
        .function()
        .models
        .iter()
        .map(|m| {
            let spec = m.default_spec.as_deref().expect("a default model");
            (m.name.clone(), load_model(spec, None).expect("loads"))
        })
        .collect()
}

/// Runs on one engine with the default models: the emitted tensor and the number of model calls.
fn run(executable: &Executable, engine: Engine, seed: u64, batch: usize) -> Result<(Tensor, u64), ApiError> {
    let models = default_models(executable);
    let by_name: Vec<(&str, Arc<dyn Model>)> = models.iter().map(|(n, m)| (n.as_str(), Arc::clone(m))).collect();
    let outputs = executable.run_on(engine, &by_name, &RunOptions { seed, batch, ..RunOptions::default() })?;
    match outputs.values.first() {
        Some((_, OutputValue::Tensor(t))) => Ok((t.clone(), outputs.model_calls)),
        other => panic!("expected a tensor output, got {other:?}"),
    }
}

fn bits(tensor: &Tensor) -> Vec<u32> {
    tensor.data.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn both_engines_give_the_same_bits_on_every_schedule() {
    let source = example();
    for schedule in ["pyramid", "full_sequence", "autoregressive_frames"] {
        let executable = bind(&source, schedule, &[]);
        for (seed, batch) in [(0, 1), (3, 5)] {
            let (jit, jit_calls) = run(&executable, Engine::Jit, seed, batch).expect("the JIT runs");
            let (interp, interp_calls) = run(&executable, Engine::Interpreter, seed, batch).expect("interp runs");
            assert_eq!(jit.shape, vec![batch, 8, 1], "{schedule}");
            assert!(jit.data.iter().all(|v| v.is_finite()), "{schedule}: {:?}", jit.data);
            assert_eq!(bits(&jit), bits(&interp), "{schedule}, seed {seed}, batch {batch}");
            assert_eq!(jit_calls, interp_calls, "{schedule}");
        }
    }
}

#[test]
fn every_position_takes_the_full_sequence_levels_in_every_scheduling_matrix() {
    let source = example();
    let frames = 8;
    for steps in [4, 8] {
        let full = bind(&source, "full_sequence", &[("steps", Value::Int(steps))]);
        let pyramid = bind(&source, "pyramid", &[("frames", Value::Int(frames)), ("steps", Value::Int(steps))]);
        let autoregressive =
            bind(&source, "autoregressive_frames", &[("frames", Value::Int(frames)), ("steps", Value::Int(steps))]);
        for engine in [Engine::Jit, Engine::Interpreter] {
            // The initial noise is the first draw of each schedule, so the three start alike.
            let (reference, full_calls) = run(&full, engine, 11, 16).expect("full sequence runs");
            let (pyramid_x, pyramid_calls) = run(&pyramid, engine, 11, 16).expect("pyramid runs");
            let (autoregressive_x, autoregressive_calls) =
                run(&autoregressive, engine, 11, 16).expect("autoregressive runs");
            assert_eq!(full_calls, steps as u64);
            // A pyramid of `frames + steps` rows moves `frames + steps - 1` times.
            assert_eq!(pyramid_calls, (frames + steps - 1) as u64);
            assert_eq!(autoregressive_calls, (frames * steps) as u64);
            for (name, x) in [("pyramid", &pyramid_x), ("autoregressive", &autoregressive_x)] {
                assert_eq!(x.shape, reference.shape);
                for (i, (a, b)) in x.data.iter().zip(&reference.data).enumerate() {
                    assert!((a - b).abs() <= 1e-5, "{name}, steps {steps}, element {i}: {a} vs {b}");
                }
            }
            // The schedules differ along the way: the levels are per position, not a relabelling.
            assert_ne!(bits(&pyramid_x), bits(&run(&pyramid, engine, 12, 16).expect("runs").0));
        }
    }
}

const PER_POSITION: &str = r#"
schedule staggered(net: model<eps>, steps: int = 4) {
    let x = gaussian()
    let position = positions()
    for row in range(steps + 1) {
        let t = clamp((steps + position - row) / steps, 0.0, 1.0)
        let s = clamp((steps + position - row - 1) / steps, 0.0, 1.0)
        refine x from t to s by ddim()
    }
    emit x
}
schedule uniform(net: model<eps>, steps: int = 4) {
    let x = gaussian()
    let zero = 0 * positions()
    for t, s in grid(1 -> 0, steps) {
        refine x from zero + t to zero + s by ddim()
    }
    emit x
}
schedule scalar(net: model<eps>, steps: int = 4) {
    let x = gaussian()
    for t, s in grid(1 -> 0, steps) {
        refine x from t to s by ddim()
    }
    emit x
}
"#;

fn gmm() -> Arc<dyn Model> {
    load_model("analytic:gmm(preset=eight, kind=eps, interpolant=scaled_linear)", None).expect("model")
}

#[test]
fn a_model_that_is_not_separable_refuses_different_times_per_position() {
    let executable = bind(PER_POSITION, "staggered", &[]);
    for engine in [Engine::Jit, Engine::Interpreter] {
        let error = executable
            .run_on(engine, &[("net", gmm())], &RunOptions { batch: 3, ..RunOptions::default() })
            .expect_err("a mixture's coordinates are not independent");
        let ApiError::Run(RunError::InVerb { verb: "refine", error, .. }) = &error else {
            panic!("{engine:?}: {error:?}");
        };
        assert!(
            matches!(&**error, RunError::Model(ModelError::Unsupported { what, .. })
                if what.contains("take a different time per position")),
            "{engine:?}: {error:?}"
        );
    }
}

#[test]
fn the_same_time_at_every_position_runs_on_any_model() {
    let uniform = bind(PER_POSITION, "uniform", &[]);
    let scalar = bind(PER_POSITION, "scalar", &[]);
    let options = RunOptions { seed: 5, batch: 64, ..RunOptions::default() };
    let sample = |executable: &Executable, engine| match executable
        .run_on(engine, &[("net", gmm())], &options)
        .expect("runs")
        .values
        .remove(0)
        .1
    {
        OutputValue::Tensor(t) => t,
        other => panic!("{other:?}"),
    };
    let reference = sample(&scalar, Engine::Jit);
    let jit = sample(&uniform, Engine::Jit);
    assert_eq!(bits(&jit), bits(&sample(&uniform, Engine::Interpreter)));
    // The tensor path computes `sigma(s)^2` in f32 where the host computes it in f64; the rest is
    // the same arithmetic.
    let largest = reference.data.iter().map(|v| v.abs()).fold(1.0f32, f32::max);
    for (a, b) in jit.data.iter().zip(&reference.data) {
        assert!((a - b).abs() <= 1e-5 * largest, "{a} vs {b}");
    }
}

#[test]
fn positions_hold_the_index_along_the_sequence_axis() {
    let source = r#"
        schedule indices(net: model<v> = "analytic:gaussian(dim=3, length=5, kind=v, interpolant=vp_cosine)") {
            let p = positions()
            emit p
        }
    "#;
    let executable = bind(source, "indices", &[]);
    for engine in [Engine::Jit, Engine::Interpreter] {
        let (p, calls) = run(&executable, engine, 0, 2).expect("runs");
        assert_eq!(calls, 0);
        assert_eq!(p.shape, vec![2, 5, 3]);
        for b in 0..2 {
            for position in 0..5 {
                for d in 0..3 {
                    assert_eq!(p.data[(b * 5 + position) * 3 + d], position as f32, "({b}, {position}, {d})");
                }
            }
        }
    }
}

#[test]
fn a_step_that_branches_on_a_per_position_time_is_refused_when_compiling() {
    for (step, name) in [("heun()", "heun"), ("ddim(0.5)", "first_order"), ("ddpm()", "first_order")] {
        let source = PER_POSITION.replace("by ddim()", &format!("by {step}"));
        let program = compile("diffusion_forcing.sched", &source).expect("checks");
        let error = program.schedule("staggered").expect("schedule").bind(&[]).expect_err("refused");
        let ApiError::Compile(error) = &error else { panic!("{step}: {error:?}") };
        assert_eq!(error.code, "sched::compile::unsupported", "{step}");
        assert!(error.message.contains(&format!("step `{name}` with per-position times")), "{step}: {error:?}");
    }
}

#[test]
fn a_branch_on_a_bound_parameter_fails_at_run_time_not_with_a_panic() {
    // `ddim(eta)` with eta = 0 by default compiles: its stochastic branch folds away. Bound to
    // 0.5, that branch compares the per-position noise level on the host, which has no value.
    let source = PER_POSITION
        .replace(
            "schedule staggered(net: model<eps>, steps: int = 4)",
            "schedule staggered(net: model<eps>, steps: int = 4, eta: float = 0.0)",
        )
        .replacen("by ddim()", "by ddim(eta)", 1);
    let program = compile("diffusion_forcing.sched", &source).expect("checks");
    let schedule = program.schedule("staggered").expect("schedule");
    let models: [(&str, Arc<dyn Model>); 1] =
        [("net", load_model("analytic:gaussian(dim=4, kind=eps, interpolant=scaled_linear)", None).expect("model"))];
    let options = RunOptions { batch: 2, ..RunOptions::default() };
    let deterministic = schedule.bind(&[]).expect("binds");
    for engine in [Engine::Jit, Engine::Interpreter] {
        deterministic.run_on(engine, &models, &options).expect("runs");
    }
    let stochastic = schedule.bind(&[("eta", Value::Float(0.5))]).expect("binds");
    for engine in [Engine::Jit, Engine::Interpreter] {
        let error = stochastic.run_on(engine, &models, &options).expect_err("fails");
        let error = match error {
            ApiError::Run(RunError::InVerb { error, .. }) => *error,
            ApiError::Run(error) => error,
            other => panic!("{engine:?}: {other:?}"),
        };
        assert!(matches!(error, RunError::TensorOperation), "{engine:?}: {error:?}");
    }
}
