//! sched against diffusers: every fixture in tests/conformance/fixtures (written by
//! tests/conformance/generate.py from diffusers' schedulers, see its README) is run through the
//! compiler and the reference interpreter with the fixture's initial state and noise, and every
//! step's state must match diffusers' to 1e-5 relative.

use std::path::PathBuf;

use sched_compiler::ir::{Constant, ParamTy, Ty};
use sched_models::load::load_model;
use sched_runtime::interp;
use sched_runtime::run::{NoiseSource, ParamValue, RunOptions};
use sched_runtime::tensor::Tensor;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn matrix(value: &Value, batch: usize, dim: usize) -> Tensor {
    let data: Vec<f32> = value
        .as_array()
        .expect("a batch of rows")
        .iter()
        .flat_map(|row| row.as_array().expect("a row").iter().map(|v| v.as_f64().expect("a number") as f32))
        .collect();
    Tensor::new(vec![batch, dim], data)
}

/// Runs one fixture; returns the largest relative difference over all steps.
fn run_fixture(path: &std::path::Path) -> f64 {
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read fixture")).expect("parse fixture");
    let name = fixture["name"].as_str().unwrap_or("?").to_string();
    let file = fixture["sched"]["file"].as_str().expect("sched.file");
    let schedule = fixture["sched"]["schedule"].as_str().expect("sched.schedule");
    let source = std::fs::read(root().join(file)).expect("read case");
    let analysis = sched_lang::analyze(file, &source);
    let program = analysis.program.unwrap_or_else(|| panic!("{file} does not check: {:?}", analysis.diagnostics));
    let (id, _) = program.schedule_by_name(schedule).expect("the fixture's schedule");
    let function = sched_compiler::pipeline::compile(&program, id).expect("compiles");
    let (batch, dim) =
        (fixture["batch"].as_u64().expect("batch") as usize, fixture["dim"].as_u64().expect("dim") as usize);
    let params: Vec<Option<ParamValue>> = function
        .params
        .iter()
        .map(|param| {
            let value = &fixture["sched"]["params"][&param.name];
            match param.ty {
                ParamTy::Host(Ty::I64) => value.as_i64().map(|v| ParamValue::Host(Constant::I64(v))),
                ParamTy::Host(Ty::F64) => value.as_f64().map(|v| ParamValue::Host(Constant::F64(v))),
                _ => None,
            }
        })
        .collect();
    let model = load_model(fixture["model"]["spec"].as_str().expect("model.spec"), None).expect("model loads");
    // The first draw of the run is the initial state; then one draw per step for the steps that
    // draw noise (DDIM, DDPM and Euler go through `first_order`, which always draws).
    let mut draws = vec![matrix(&fixture["x_init"], batch, dim)];
    let stochastic_family = ["ddim", "ddpm", "euler"].iter().any(|f| schedule.starts_with(f));
    if stochastic_family {
        draws.extend(fixture["noise"].as_array().expect("noise").iter().map(|step| matrix(step, batch, dim)));
    }
    let options = RunOptions { batch, noise: NoiseSource::Replay(draws), trace: true, ..RunOptions::default() };
    let outputs = interp::run(&function, &params, &[model], &options).unwrap_or_else(|e| panic!("{name}: {e}"));
    let expected = fixture["trajectory"].as_array().expect("trajectory");
    assert_eq!(outputs.trace.len(), expected.len(), "{name}: steps");
    let mut worst = 0.0f64;
    for ((_, state), step) in outputs.trace.iter().zip(expected) {
        let reference = matrix(step, batch, dim);
        for (a, b) in state.data.iter().zip(&reference.data) {
            let relative = f64::from((a - b).abs()) / f64::from(b.abs()).max(1.0);
            worst = worst.max(relative);
        }
    }
    worst
}

#[test]
fn every_diffusers_fixture_matches_step_by_step() {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(root().join("tests/conformance/fixtures"))
        .expect("fixtures directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 13, "expected the 13 fixtures, found {}", fixtures.len());
    let mut failures = Vec::new();
    for path in &fixtures {
        let worst = run_fixture(path);
        if worst > 1e-5 {
            failures.push(format!("{}: largest relative difference {worst:e}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
