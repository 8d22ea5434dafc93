//! Replays of recorded runs (`Executable::run_seeds`, sched_runtime::seeds) on the emulated device,
//! with and without graphs: a replay gives the bits of a plain run with its seed, and a schedule
//! whose device work depends on the host or on its values is run, not replayed, with the reason.
//! The same test on a GPU, with a CUDA graph, is in tests/cuda.rs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sched::api::{Engine, Executable, Value, compile};
use sched_models::load::load_model;
use sched_runtime::device::Device;
use sched_runtime::device::emulated::EmulatedDevice;
use sched_runtime::model::Model;
use sched_runtime::run::{OutputValue, Outputs, RunOptions};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Schedule `schedule` of an example, with parameters bound.
fn executable(file: &str, schedule: &str, values: &[(&str, Value)]) -> Executable {
    let source = std::fs::read_to_string(examples().join(file)).expect("the example is readable");
    let program = compile(file, &source).unwrap_or_else(|d| panic!("{file} does not check:\n{d}"));
    program.schedule(schedule).expect("the schedule exists").bind(values).expect("the schedule binds")
}

fn model(spec: &str) -> Arc<dyn Model> {
    load_model(spec, Some(&examples())).expect("the model loads")
}

/// The emitted tensors' bits.
fn bits(outputs: &Outputs) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    outputs
        .values
        .iter()
        .map(|(name, value)| match value {
            OutputValue::Tensor(t) => (name.clone(), t.shape.clone(), t.data.iter().map(|v| v.to_bits()).collect()),
            other => panic!("`{name}` is not a tensor: {other:?}"),
        })
        .collect()
}

/// Models bound by parameter name.
type Models = [(&'static str, Arc<dyn Model>)];

const SEEDS: [u64; 5] = [3, 4, 9, 1 << 40, 4];

/// Runs `SEEDS` through `run_seeds` on `device` and checks every run against a plain run with
/// its seed on a fresh device of the same kind; returns the summary.
fn check_replays(
    executable: &Executable,
    models: &[(&str, Arc<dyn Model>)],
    device: Arc<dyn Device>,
    fresh: impl Fn() -> Arc<dyn Device>,
) -> sched_runtime::seeds::ReplaySummary {
    let options = RunOptions { batch: 7, device: Some(Arc::clone(&device)), ..RunOptions::default() };
    let runs = executable.run_seeds(Engine::Jit, models, &options, &SEEDS).expect("the runs succeed");
    assert_eq!(runs.runs.len(), SEEDS.len());
    for (seed, replayed) in SEEDS.iter().zip(&runs.runs) {
        let plain = RunOptions { seed: *seed, batch: 7, device: Some(fresh()), ..RunOptions::default() };
        let expected = executable.run_on(Engine::Jit, models, &plain).expect("the plain run succeeds");
        assert_eq!(bits(replayed), bits(&expected), "seed {seed}: {:?}", runs.replay);
        assert_eq!(replayed.model_calls, expected.model_calls, "seed {seed}");
    }
    // Different seeds gave different samples, and the repeated seed the same ones.
    assert_ne!(bits(&runs.runs[0]), bits(&runs.runs[1]));
    assert_ne!(bits(&runs.runs[2]), bits(&runs.runs[3]));
    assert_eq!(bits(&runs.runs[1]), bits(&runs.runs[4]));
    let summary = runs.replay.clone();
    drop(runs);
    runs_free_everything(&device, executable, models);
    summary
}

/// After the runs and their replay are dropped, only the models' cached weights stay on the
/// device; a second series of runs leaves the same number.
fn runs_free_everything(device: &Arc<dyn Device>, executable: &Executable, models: &[(&str, Arc<dyn Model>)]) {
    let before = device.live_buffers();
    let options = RunOptions { batch: 7, device: Some(Arc::clone(device)), ..RunOptions::default() };
    drop(executable.run_seeds(Engine::Jit, models, &options, &SEEDS).expect("the runs succeed"));
    assert_eq!(device.live_buffers(), before, "a replay leaked device buffers");
}

#[test]
fn replays_give_the_bits_of_plain_runs() {
    let ddim = executable("ddim.sched", "ddim", &[("steps", Value::Int(12)), ("eta", Value::Float(1.0))]);
    let eps = [("net", model("models/eight/eps.safetensors"))];
    let few_step = executable("few_step.sched", "few_step", &[]);
    let flow_map = [("fm", model("models/eight/flow_map.safetensors"))];
    let cases: [(&str, &Executable, &Models); 2] = [("ddim", &ddim, &eps), ("few_step", &few_step, &flow_map)];
    for (label, executable, models) in cases {
        let graphs =
            check_replays(executable, models, Arc::new(EmulatedDevice::new()), || Arc::new(EmulatedDevice::new()));
        assert_eq!(graphs.why_not, None, "{label}");
        assert_eq!(graphs.replays, SEEDS.len() - 2, "{label}");
        assert!(graphs.graph, "{label}: the emulated device has graphs");
        assert!(graphs.steps > 0, "{label}");
        let launches = check_replays(executable, models, Arc::new(EmulatedDevice::without_graphs()), || {
            Arc::new(EmulatedDevice::without_graphs())
        });
        assert_eq!(launches.replays, SEEDS.len() - 2, "{label}");
        assert!(!launches.graph, "{label}: a device without graphs replays launch by launch");
        assert_eq!(launches.steps, graphs.steps, "{label}");
    }
}

/// A model evaluated on the host makes every run copy the state down and the model's output up,
/// which a replay cannot do: the runs run, with the reason, and give the plain runs' bits.
#[test]
fn a_model_on_the_host_is_run_not_replayed() {
    let ddim = executable("ddim.sched", "ddim", &[("steps", Value::Int(5)), ("eta", Value::Float(1.0))]);
    let analytic = [("net", model("analytic:gmm(preset=eight, kind=eps, interpolant=scaled_linear)"))];
    let summary = check_replays(&ddim, &analytic, Arc::new(EmulatedDevice::new()), || Arc::new(EmulatedDevice::new()));
    assert_eq!(summary.replays, 0);
    let why_not = summary.why_not.expect("a reason");
    assert!(why_not.contains("to the host and back"), "{why_not}");
}

/// Adaptive step-size control reads a reduction into the host's control flow.
#[test]
fn a_reduction_read_by_the_host_is_run_not_replayed() {
    let adaptive = executable("adaptive.sched", "adaptive", &[]);
    let velocity = [("net", model("models/eight/velocity.safetensors"))];
    let summary =
        check_replays(&adaptive, &velocity, Arc::new(EmulatedDevice::new()), || Arc::new(EmulatedDevice::new()));
    assert_eq!(summary.replays, 0);
    let why_not = summary.why_not.expect("a reason");
    assert!(why_not.contains("reduction"), "{why_not}");
}

/// Two runs show nothing about the seed's effect, so they are not replayed; on the CPU nothing is.
#[test]
fn few_runs_and_the_cpu_replay_nothing() {
    let ddim = executable("ddim.sched", "ddim", &[("steps", Value::Int(5))]);
    let eps = [("net", model("models/eight/eps.safetensors"))];
    let device: Arc<dyn Device> = Arc::new(EmulatedDevice::new());
    let options = RunOptions { batch: 3, device: Some(device), ..RunOptions::default() };
    let two = ddim.run_seeds(Engine::Jit, &eps, &options, &[0, 1]).expect("the runs succeed");
    assert_eq!(two.runs.len(), 2);
    assert!(two.replay.why_not.expect("a reason").contains("2 runs"));
    let cpu = RunOptions { batch: 3, ..RunOptions::default() };
    let on_cpu = ddim.run_seeds(Engine::Interpreter, &eps, &cpu, &[0, 1, 2]).expect("the runs succeed");
    assert_eq!(on_cpu.runs.len(), 3);
    assert_eq!(on_cpu.replay.replays, 0);
    let plain = ddim.run_on(Engine::Interpreter, &eps, &RunOptions { seed: 2, ..cpu.clone() }).expect("runs");
    assert_eq!(bits(&on_cpu.runs[2]), bits(&plain));
}
