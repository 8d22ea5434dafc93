//! Whole schedules through the compiler and the reference interpreter, checked against exact
//! answers: convergence orders of the solvers on an analytic Gaussian, an exact flow map landing
//! on the data distribution in one jump, and the determinism guarantees (same seed same bits,
//! samples independent of the batch, fused and unfused code equal bit for bit).

use std::sync::Arc;

use sched_compiler::ir::Function;
use sched_compiler::pipeline::{self, Stage};
use sched_models::load::load_model;
use sched_runtime::interp;
use sched_runtime::model::Model;
use sched_runtime::run::{OutputValue, ParamValue, RunOptions};
use sched_runtime::tensor::Tensor;

const GAUSSIAN: &str = "dim=4, mean=[0.5,-1,2,0], std=[0.3,1,0.5,2]";

fn compile(source: &str, schedule: &str, stage: Stage) -> Function {
    let analysis = sched_lang::analyze("test.sched", source.as_bytes());
    let program = analysis.program.unwrap_or_else(|| panic!("does not check: {:#?}", analysis.diagnostics));
    let (id, _) = program.schedule_by_name(schedule).expect("schedule exists");
    pipeline::compile_until(&program, id, stage).expect("compiles")
}

fn model(spec: &str) -> Arc<dyn Model> {
    load_model(spec, None).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

fn run(
    function: &Function,
    params: &[Option<ParamValue>],
    models: &[Arc<dyn Model>],
    batch: usize,
    seed: u64,
) -> Tensor {
    let options = RunOptions { seed, batch, ..RunOptions::default() };
    let outputs = interp::run(function, params, models, &options).expect("runs");
    match &outputs.values[0].1 {
        OutputValue::Tensor(t) => t.clone(),
        other => panic!("expected a tensor, got {other:?}"),
    }
}

fn max_abs_difference(a: &Tensor, b: &Tensor) -> f64 {
    a.data.iter().zip(&b.data).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max)
}

/// Initial states at t = `start`: fixed standard normal draws scaled to the marginal there.
fn initial_states(batch: usize) -> Tensor {
    let data =
        (0..batch * 4).map(|i| sched_kernels::philox::gaussian(42, 0, 0, (i / 4) as u32, (i % 4) as u32)).collect();
    Tensor::new(vec![batch, 4], data)
}

/// Errors of a solver at 8, 16, 32 and 64 steps from `start` to `end` against the exact flow map,
/// and the convergence order: the least-squares slope of log2(error) against log2(1/N). The grid stops short of data: on the last interval
/// to t = 0 the log-SNR step is unbounded whatever N is, which hides the asymptotic order.
fn convergence_order(step: &str, spacing: &str, interpolant: &str, start: f64, end: f64) -> (Vec<f64>, f64) {
    let source = format!(
        "schedule solve(net: model, steps: int = 8, x: tensor) {{
            for t, s in grid({start} -> {end}, steps, {spacing}) {{ refine x from t to s by {step}() }}
            emit x
        }}"
    );
    let function = compile(&source, "solve", Stage::Fuse);
    let net = model(&format!("analytic:gaussian({GAUSSIAN}, kind=eps, interpolant={interpolant})"));
    let exact_map = model(&format!("analytic:gaussian({GAUSSIAN}, kind=flow_map, interpolant={interpolant})"));
    let x = initial_states(64);
    let exact = exact_map.jump(&x, start, end, None).expect("exact map");
    let errors: Vec<f64> = [8i64, 16, 32, 64]
        .iter()
        .map(|&steps| {
            let params = vec![
                None,
                Some(ParamValue::Host(sched_compiler::ir::Constant::I64(steps))),
                Some(ParamValue::Tensor(x.clone())),
            ];
            let result = run(&function, &params, std::slice::from_ref(&net), 64, 0);
            max_abs_difference(&result, &exact)
        })
        .collect();
    // Abscissae log2(N) = 3, 4, 5, 6, centred: -1.5, -0.5, 0.5, 1.5 (sum of squares 5).
    let centred = [-1.5, -0.5, 0.5, 1.5];
    let slope = -centred.iter().zip(&errors).map(|(x, e)| x * e.log2()).sum::<f64>() / 5.0;
    (errors, slope)
}

#[test]
fn first_order_solvers_converge_with_order_one() {
    for step in ["euler", "ddim"] {
        let (errors, order) = convergence_order(step, "uniform", "vp_cosine", 0.9, 0.1);
        assert!((order - 1.0).abs() < 0.25, "{step}: errors {errors:?}, order {order}");
    }
}

#[test]
fn second_order_solvers_converge_with_order_two() {
    // DPM-Solver++ is a multistep method in log-SNR: it reaches its order on grids even in λ.
    for (step, spacing) in [("heun", "uniform"), ("heun", "logsnr"), ("dpmpp_2m", "logsnr")] {
        let (errors, order) = convergence_order(step, spacing, "vp_cosine", 0.9, 0.1);
        assert!((order - 2.0).abs() < 0.25, "{step} on {spacing}: errors {errors:?}, order {order}");
    }
}

#[test]
fn an_exact_flow_map_lands_on_the_data_distribution_in_one_jump() {
    let source = format!(
        "schedule one(fm: model<flow_map> = \"analytic:gaussian({GAUSSIAN}, kind=flow_map, interpolant=rectified_flow)\") {{
            let x = gaussian()
            jump x from 1 to 0
            emit x
        }}"
    );
    let function = compile(&source, "one", Stage::Fuse);
    let fm = model(&format!("analytic:gaussian({GAUSSIAN}, kind=flow_map, interpolant=rectified_flow)"));
    let n = 100_000;
    let samples = run(&function, &[None], &[fm], n, 1);
    let means = [0.5, -1.0, 2.0, 0.0];
    let stds = [0.3, 1.0, 0.5, 2.0];
    for d in 0..4 {
        let column: Vec<f64> = samples.data.iter().skip(d).step_by(4).map(|&v| f64::from(v)).collect();
        let mean = column.iter().sum::<f64>() / n as f64;
        let var = column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: std/sqrt(n) for the mean, std² sqrt(2/n) for the variance; 5 of them.
        let mean_tolerance = 5.0 * stds[d] / (n as f64).sqrt();
        let var_tolerance = 5.0 * stds[d] * stds[d] * (2.0 / n as f64).sqrt();
        assert!((mean - means[d]).abs() < mean_tolerance, "dimension {d}: mean {mean}");
        assert!((var - stds[d] * stds[d]).abs() < var_tolerance, "dimension {d}: variance {var}");
    }
    // Off-diagonal covariance is zero for this data.
    let column = |d: usize| samples.data.iter().skip(d).step_by(4).map(|&v| f64::from(v)).collect::<Vec<f64>>();
    let (a, b) = (column(0), column(3));
    let (ma, mb) = (a.iter().sum::<f64>() / n as f64, b.iter().sum::<f64>() / n as f64);
    let cov = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / n as f64;
    assert!(cov.abs() < 5.0 * 0.3 * 2.0 / (n as f64).sqrt(), "covariance {cov}");
}

const STOCHASTIC: &str = "schedule s(net: model<eps> = \"analytic:gmm(preset=eight, kind=eps, interpolant=scaled_linear)\", steps: int = 12) {
    let x = gaussian()
    for t, s in grid(1 -> 0, steps, trailing) { refine x from t to s by ddim(0.7) }
    for t, s in grid(0.3 -> 0, 3) { refine x from t to s by dpmpp_2m_sde() }
    emit x
}";

#[test]
fn the_same_seed_gives_the_same_bits_and_another_seed_does_not() {
    let function = compile(STOCHASTIC, "s", Stage::Fuse);
    let net = model("analytic:gmm(preset=eight, kind=eps, interpolant=scaled_linear)");
    let a = run(&function, &[None, None], std::slice::from_ref(&net), 16, 3);
    let b = run(&function, &[None, None], std::slice::from_ref(&net), 16, 3);
    let c = run(&function, &[None, None], &[net], 16, 4);
    assert_eq!(a.data, b.data);
    assert!(max_abs_difference(&a, &c) > 0.1);
}

#[test]
fn a_sample_does_not_depend_on_the_batch_it_is_in() {
    let function = compile(STOCHASTIC, "s", Stage::Fuse);
    let net = model("analytic:gmm(preset=eight, kind=eps, interpolant=scaled_linear)");
    let small = run(&function, &[None, None], std::slice::from_ref(&net), 3, 9);
    let large = run(&function, &[None, None], &[net], 11, 9);
    assert_eq!(small.data[..], large.data[..small.data.len()]);
}

#[test]
fn planned_fused_and_unfused_code_agree_bit_for_bit() {
    let net = model("analytic:gmm(preset=eight, kind=eps, interpolant=scaled_linear)");
    let planned = run(&compile(STOCHASTIC, "s", Stage::Plan), &[None, None], std::slice::from_ref(&net), 8, 5);
    let fused = run(&compile(STOCHASTIC, "s", Stage::Fuse), &[None, None], std::slice::from_ref(&net), 8, 5);
    let unfused = run(&compile(STOCHASTIC, "s", Stage::Dce), &[None, None], std::slice::from_ref(&net), 8, 5);
    let lowered = run(&compile(STOCHASTIC, "s", Stage::Lower), &[None, None], &[net], 8, 5);
    assert_eq!(planned.data, fused.data, "writing in place changes no value");
    assert_eq!(fused.data, unfused.data);
    assert_eq!(fused.data, lowered.data);
}
