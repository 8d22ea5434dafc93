//! Parity of the CUDA device with the CPU. These tests need an NVIDIA GPU, its driver and
//! libnvrtc 13: where CUDA is unavailable each one prints `skipping <test>: <why>` and returns.
//! docs/gpu.md says how to run them on a GPU machine (`bench/gpu.sh`).
//!
//! - Every runnable schedule of `examples/`, with its default models, on seeds 0 and 1 and
//!   batches 1 and 4, gives the CPU's outputs within the tolerance of [`close`], and frees every
//!   device buffer.
//! - On the GPU, the same seed gives the same bits run after run, and a sample's bits do not
//!   depend on the batch size wherever they do not on the CPU (a reduction over the whole batch,
//!   as in adaptive step-size control, makes a run batch-dependent on every device).
//! - Every fused kernel, reduction and token kernel of every runnable example compiles to PTX
//!   with NVRTC. This
//!   needs libnvrtc only, no GPU: CI installs it (`.ci/run`) and sets `SCHED_REQUIRE_NVRTC=1`,
//!   which turns the skip into a failure.
//! - The checkpoint MLP evaluated on the GPU (cuBLAS and the layer kernel) matches the host's
//!   candle evaluation to f32 rounding.
//! - Noise drawn on the GPU equals `sched_kernels::philox` (Philox's integers exactly; the
//!   Gaussian's f64 transcendental functions differ from the host's libm by an ulp at most, so
//!   the f32 results are compared within one f32 ulp).
//! - The token launchers (row sampling, row moves, sampling verification) give the emulated
//!   device's tokens on the same logits, and the shipped transformers on the GPU give the host's
//!   logits and, in token schedules, its tokens; so do the tiny Llama-family checkpoints, with
//!   their key/value cache on the GPU.

use std::path::PathBuf;
use std::sync::Arc;

use sched::api::{Engine, Executable, Value, compile};
use sched_compiler::ir::Op;
use sched_kernels::cuda_tokens::{Choose, Filters, Logits, Report, SampleKernel, SampleParams};
use sched_kernels::spec::{
    Distribution, ElementwiseKernel, Node, NodeId, NoiseLaunch, NoiseSlot, ReduceOp, ReductionKernel,
};
use sched_kernels::tokens::Nucleus;
use sched_kernels::{cuda, nvrtc, philox};
use sched_lang::types::ModelKind;
use sched_models::checkpoint::write_safetensors;
use sched_models::load::load_model;
use sched_models::mlp::manifest::{Manifest, TimeInput};
use sched_models::mlp::random::random_mlp_tensors_of_width;
use sched_runtime::device::cuda::CudaDevice;
use sched_runtime::device::emulated::EmulatedDevice;
use sched_runtime::device::{Device, DeviceOp, DeviceTensor, Launch, RowMoves, SampleLaunch, VerifyLaunch};
use sched_runtime::interpolant::Interpolant;
use sched_runtime::model::Model;
use sched_runtime::run::{OutputValue, Outputs, RunOptions};
use sched_runtime::sequence;
use sched_runtime::tensor::Tensor;

/// The GPU, or `None` after saying why the test is skipped.
fn gpu(test: &str) -> Option<Arc<CudaDevice>> {
    match CudaDevice::new(0) {
        Ok(device) => Some(Arc::new(device)),
        Err(error) => {
            eprintln!("skipping {test}: {error}");
            None
        }
    }
}

/// Whether a GPU value `b` matches the CPU value `a`: within 1e-5 of the larger magnitude, or of
/// 1 for magnitudes below 1 (f32 elementwise arithmetic is IEEE on both devices; differences
/// come from transcendental functions and reduction order).
fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1.0)
}

/// The first difference between two runs' outputs beyond tolerance (or any, when `exact`).
fn difference(cpu: &Outputs, gpu: &Outputs, exact: bool) -> Option<String> {
    if cpu.values.len() != gpu.values.len() {
        return Some(format!("{} outputs against {}", cpu.values.len(), gpu.values.len()));
    }
    let agree = |a: f64, b: f64| if exact { a.to_bits() == b.to_bits() } else { close(a, b) };
    for ((name, a), (_, b)) in cpu.values.iter().zip(&gpu.values) {
        match (a, b) {
            (OutputValue::Tensor(a), OutputValue::Tensor(b)) => {
                if a.shape != b.shape {
                    return Some(format!("`{name}` has shape {:?} against {:?}", a.shape, b.shape));
                }
                let bad = a.data.iter().zip(&b.data).position(|(x, y)| {
                    if exact { x.to_bits() != y.to_bits() } else { !close(f64::from(*x), f64::from(*y)) }
                });
                if let Some(i) = bad {
                    return Some(format!("`{name}`[{i}]: {} against {}", a.data[i], b.data[i]));
                }
            }
            (OutputValue::F64(x), OutputValue::F64(y)) if agree(*x, *y) => {}
            (x, y) if x == y => {}
            (x, y) => return Some(format!("`{name}`: {x:?} against {y:?}")),
        }
    }
    None
}

/// A runnable example schedule with its default models.
struct Example {
    label: String,
    executable: Executable,
    models: Vec<(String, Arc<dyn Model>)>,
}

impl Example {
    fn run(&self, options: &RunOptions<'_>) -> Outputs {
        let models: Vec<(&str, Arc<dyn Model>)> =
            self.models.iter().map(|(name, model)| (name.as_str(), Arc::clone(model))).collect();
        self.executable
            .run_on(Engine::Jit, &models, options)
            .unwrap_or_else(|e| panic!("{}: seed {}, batch {}: {e}", self.label, options.seed, options.batch))
    }
}

/// The repository: `SCHED_ROOT` when set (the test binary runs on a GPU machine where the
/// build's path does not exist, see bench/gpu.sh), else where it was built.
fn root() -> PathBuf {
    std::env::var_os("SCHED_ROOT").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Every schedule of `examples/` the compiler supports (sequence schedules are not yet).
fn examples() -> Vec<Example> {
    let dir = root().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "sched"))
        .collect();
    files.sort();
    let mut examples = Vec::new();
    for path in files {
        let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&path).expect("the example is readable");
        let program = compile(&name, &source).unwrap_or_else(|d| panic!("{name} does not check:\n{d}"));
        for schedule in program.schedules() {
            let Ok(executable) = program.schedule(&schedule).expect("a listed schedule").bind(&[]) else {
                continue;
            };
            let models = executable
                .function()
                .models
                .iter()
                .map(|m| {
                    let spec = m.default_spec.as_deref().expect("example models have defaults");
                    (m.name.clone(), load_model(spec, Some(&dir)).expect("the default model loads"))
                })
                .collect();
            examples.push(Example { label: format!("{name}: {schedule}"), executable, models });
        }
    }
    examples
}

#[test]
fn every_example_kernel_compiles_to_ptx() {
    if !nvrtc::available() {
        let why = "skipping every_example_kernel_compiles_to_ptx: libnvrtc.so.13 is not on the library path";
        assert!(std::env::var_os("SCHED_REQUIRE_NVRTC").is_none(), "{why}, and SCHED_REQUIRE_NVRTC is set");
        eprintln!("{why}");
        return;
    }
    let reductions = [ReduceOp::Mean, ReduceOp::Rms, ReduceOp::Norm, ReduceOp::MaxAbs];
    let mut sources: Vec<(String, String)> = reductions
        .iter()
        .map(|op| {
            (format!("reduction {op:?}"), cuda::reduction_source(&ReductionKernel::of_input(*op)).expect("emits"))
        })
        .collect();
    for example in examples() {
        for (index, kernel) in example.executable.function().kernels.iter().enumerate() {
            let source =
                cuda::elementwise_source(kernel).unwrap_or_else(|e| panic!("{}: k{index}: {e}", example.label));
            sources.push((format!("{}: k{index}", example.label), source));
        }
        // The token kernels its token operations launch where their model runs on the device.
        for inst in example.executable.function().graph.node_weights().flat_map(|block| &block.insts) {
            if let Op::Tokens { op, .. } = inst.op {
                for module in sequence::device_modules(op) {
                    sources.push((format!("{}: {}: {}", example.label, op.name(), module.role), module.source));
                }
            }
        }
    }
    sources.sort_by(|a, b| a.1.cmp(&b.1));
    sources.dedup_by(|a, b| a.1 == b.1);
    for (label, source) in &sources {
        let ptx = nvrtc::compile_ptx(source, "sm_90").unwrap_or_else(|e| panic!("{label}: {e}\n{source}"));
        assert!(ptx.contains(".visible .entry"), "{label}: the PTX has no entry point");
    }
    eprintln!("{} distinct kernels of the examples (token kernels included) compile to PTX for sm_90", sources.len());
}

#[test]
fn examples_match_the_cpu() {
    let Some(device) = gpu("examples_match_the_cpu") else { return };
    let examples = examples();
    assert!(examples.len() >= 20, "only {} example schedules compile", examples.len());
    for example in &examples {
        for seed in [0, 1] {
            for batch in [1, 4] {
                let cpu = example.run(&RunOptions { seed, batch, ..RunOptions::default() });
                let on_gpu = RunOptions {
                    seed,
                    batch,
                    device: Some(device.clone() as Arc<dyn Device>),
                    ..RunOptions::default()
                };
                let gpu = example.run(&on_gpu);
                if let Some(difference) = difference(&cpu, &gpu, false) {
                    panic!("{}: seed {seed}, batch {batch}: the CPU and the GPU disagree: {difference}", example.label);
                }
                assert_eq!(cpu.model_calls, gpu.model_calls, "{}: model calls", example.label);
                assert_eq!(cpu.kernel_launches, gpu.kernel_launches, "{}: kernel launches", example.label);
                assert_eq!(device.live_buffers(), 0, "{}: device buffers outlived the run", example.label);
            }
        }
    }
    eprintln!("{} example schedules match the CPU on {}", examples.len(), device.name());
}

/// Sample 0 of a run with `batch` samples.
fn first_sample(outputs: &Outputs) -> Vec<(String, Vec<u32>)> {
    outputs
        .values
        .iter()
        .filter_map(|(name, value)| match value {
            OutputValue::Tensor(t) => {
                Some((name.clone(), t.sample(0).iter().map(|v| v.to_bits()).collect::<Vec<u32>>()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_gpu_is_deterministic_across_runs_and_batch_sizes() {
    let Some(device) = gpu("the_gpu_is_deterministic_across_runs_and_batch_sizes") else { return };
    let on =
        |batch| RunOptions { seed: 3, batch, device: Some(device.clone() as Arc<dyn Device>), ..RunOptions::default() };
    let mut batch_independent = 0;
    for example in examples() {
        let first = example.run(&on(4));
        let again = example.run(&on(4));
        if let Some(difference) = difference(&first, &again, true) {
            panic!("{}: two GPU runs with seed 3 differ: {difference}", example.label);
        }
        let cpu_one = example.run(&RunOptions { seed: 3, batch: 1, ..RunOptions::default() });
        let cpu_three = example.run(&RunOptions { seed: 3, batch: 3, ..RunOptions::default() });
        if first_sample(&cpu_one) == first_sample(&cpu_three) {
            batch_independent += 1;
            let (one, three) = (example.run(&on(1)), example.run(&on(3)));
            assert_eq!(
                first_sample(&one),
                first_sample(&three),
                "{}: on the GPU, sample 0 depends on the batch size (it does not on the CPU)",
                example.label
            );
        }
    }
    assert!(batch_independent >= 15, "only {batch_independent} examples are batch-independent on the CPU");
}

#[test]
fn gpu_noise_is_the_philox_stream() {
    let Some(device) = gpu("gpu_noise_is_the_philox_stream") else { return };
    let (per_sample, samples) = (1000, 37);
    let len = per_sample * samples;
    for (distribution, tolerance_ulps) in [(Distribution::Uniform, 0), (Distribution::Gaussian, 1)] {
        let kernel = ElementwiseKernel {
            inputs: 0,
            params: 0,
            noise_slots: 1,
            nodes: vec![Node::Noise(distribution, 0)],
            outputs: vec![NodeId(0)],
        };
        let slots = [NoiseSlot { site: 5, step: 9 }];
        let out = device.alloc(len).expect("a buffer");
        let noise = NoiseLaunch { seed: 0x1234_5678_9abc_def0, per_sample, slots: &slots };
        let launch = Launch { len, inputs: &[], outputs: &[out], params: &[], noise };
        device.execute(&DeviceOp::elementwise(&kernel, &launch)).expect("the noise kernel runs");
        let drawn = device.download(out).expect("the noise comes back");
        device.free(out);
        let draw = match distribution {
            Distribution::Gaussian => philox::gaussian,
            Distribution::Uniform => philox::uniform,
        };
        let mut off = 0;
        for (i, value) in drawn.iter().enumerate() {
            let expected = draw(noise.seed, 5, 9, (i / per_sample) as u32, (i % per_sample) as u32);
            let ulps = (i64::from(expected.to_bits() as i32) - i64::from(value.to_bits() as i32)).abs();
            assert!(ulps <= tolerance_ulps, "{distribution:?} element {i}: {value} against the host's {expected}");
            off += usize::from(ulps != 0);
        }
        eprintln!("{distribution:?}: {off} of {len} draws differ from the host's by one ulp");
    }
}

/// The token launchers on the GPU against the emulated device (the kernels' references) on the
/// same logits: every shape of row sampling, row moves, and sampling verification. Tokens
/// must agree exactly and probabilities within 1e-12 relative: CUDA's double `exp` and `log` may
/// differ from glibc's in the last bit, which could move a token only at a near tie, and these
/// logits have none.
#[test]
fn token_launches_on_the_gpu_match_the_emulated_device() {
    let Some(gpu) = gpu("token_launches_on_the_gpu_match_the_emulated_device") else { return };
    let gpu: Arc<dyn Device> = gpu;
    let emulated: Arc<dyn Device> = Arc::new(EmulatedDevice::new());
    let (rows, k, vocab) = (37, 3, 300);
    // Logits over [-4, 4], one in twenty ruled out.
    let logits = |len: usize, salt: u32| -> Vec<f32> {
        (0..len)
            .map(|i| {
                let u = philox::uniform_f64(11, salt, 0, 0, i as u32);
                if u < 0.05 { f32::NEG_INFINITY } else { (8.0 * u - 4.0) as f32 }
            })
            .collect()
    };
    let (target, proposal) = (logits(rows * (k + 1) * vocab, 1), logits(rows * k * vocab, 2));
    let upload = |device: &Arc<dyn Device>, data: &[f32]| device.upload(data).expect("an upload");
    let params = SampleParams { temperature: 0.8, top_k: 40, top_p: 0.9, min_p: 0.02 };
    let every = |nucleus| Filters { top_k: true, top_p: Some(nucleus), min_p: true };
    let logits_kinds = [
        Logits::Raw,
        Logits::Divided,
        Logits::Processed(every(Nucleus::KeepCrossing)),
        Logits::Processed(every(Nucleus::DropCrossing)),
    ];
    let reports = [Report::Token, Report::RawProbability, Report::Probability, Report::Distribution];
    let scored = rows * (k + 1);
    let samples: Vec<u32> = (0..scored as u32).map(|r| 3 * r + 1).collect();
    let positions: Vec<u32> = (0..scored as u32).map(|r| r % 5).collect();
    let close = |a: f64, b: f64| a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
    let mut sampled = 0;
    for logits in logits_kinds {
        for choose in [Choose::Greedy, Choose::Gumbel] {
            for report in reports {
                let kernel = SampleKernel { logits, choose, report };
                let run = |device: &Arc<dyn Device>| {
                    let buffer = upload(device, &target);
                    let launch = SampleLaunch {
                        logits: buffer,
                        rows: scored,
                        vocab,
                        params,
                        noise_sample: &samples,
                        noise_position: &positions,
                        seed: 0xfeed_beef,
                        site: 4,
                        step: 6,
                    };
                    let result = device.sample_rows(&kernel, &launch).expect("the rows are sampled");
                    device.free(buffer);
                    result
                };
                let (expected, actual) = (run(&emulated), run(&gpu));
                assert_eq!(actual.tokens, expected.tokens, "{kernel}: the GPU's tokens differ");
                assert_eq!(actual.report.len(), expected.report.len(), "{kernel}");
                let worst = expected.report.iter().zip(&actual.report).position(|(&a, &b)| !close(a, b));
                assert_eq!(worst, None, "{kernel}: the GPU's report differs");
                sampled += 1;
            }
        }
    }
    // Rows of one buffer moved to rows of another, in a scattered order; the rows no move names
    // keep their data, and a repeated destination is refused.
    let (from, to) = (upload(&gpu, &target), upload(&gpu, &proposal));
    let (source_rows, destination_rows) = ([5u32, 0, 5, 17, 2], [3u32, 9, 0, 4, 100]);
    let moves = RowMoves { from: &source_rows, to: &destination_rows, width: vocab };
    gpu.execute(&DeviceOp::move_rows(from, to, moves)).expect("the rows are moved");
    let mut expected = proposal.clone();
    sched_kernels::layers::move_rows(&target, &source_rows, &destination_rows, vocab, &mut expected);
    let moved = gpu.download(to).expect("the rows come back");
    assert!(moved.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()), "the moved rows differ");
    let repeated = RowMoves { from: &[0, 1], to: &[2, 2], width: vocab };
    assert!(gpu.execute(&DeviceOp::move_rows(from, to, repeated)).is_err(), "two moves to one row");
    gpu.free(from);
    gpu.free(to);
    // Sampling verification: drafts mostly the draft's argmax (so that some are accepted), some
    // any token, some outside the vocabulary; every row's noise sample its own.
    let draft: Vec<u32> = (0..rows * k)
        .map(|r| match r % 7 {
            0 => vocab as u32 + 1,
            1 | 2 => (r * 31 % vocab) as u32,
            _ => sched_kernels::tokens::argmax(&proposal[r * vocab..(r + 1) * vocab]),
        })
        .collect();
    let noise_sample: Vec<u32> = (0..rows as u32).map(|r| 5 * r + 2).collect();
    let sampler = |logits| SampleKernel { logits, choose: Choose::Gumbel, report: Report::Token };
    let drafters = [
        (SampleKernel { logits: Logits::Raw, choose: Choose::Greedy, report: Report::Token }, params),
        (sampler(Logits::Processed(Filters::NONE)), SampleParams { temperature: 1.0, ..params }),
        (sampler(Logits::Processed(every(Nucleus::KeepCrossing))), params),
    ];
    let mut verified = 0;
    for (target_kernel, target_params) in [drafters[1], drafters[2]] {
        for (proposal_kernel, proposal_params) in drafters {
            for eos in [None, Some(7)] {
                let run = |device: &Arc<dyn Device>| {
                    let (target_buffer, proposal_buffer) = (upload(device, &target), upload(device, &proposal));
                    let launch = VerifyLaunch {
                        target: target_buffer,
                        target_kernel,
                        target_params,
                        proposal: proposal_buffer,
                        proposal_kernel,
                        proposal_params,
                        draft: &draft,
                        rows,
                        k,
                        vocab,
                        noise_sample: &noise_sample,
                        seed: 99,
                        site: 1,
                        step: 3,
                        eos,
                    };
                    let appended = device.verify_drafts(&launch).expect("the drafts are verified");
                    device.free(target_buffer);
                    device.free(proposal_buffer);
                    appended
                };
                let (expected, actual) = (run(&emulated), run(&gpu));
                assert_eq!(actual, expected, "{target_kernel} verifying drafts of {proposal_kernel}, eos {eos:?}");
                verified += expected.iter().map(Vec::len).sum::<usize>();
            }
        }
    }
    assert_eq!(gpu.live_buffers(), 0, "every GPU buffer was freed");
    eprintln!("{sampled} sampling kernels and {verified} verified tokens match the emulated device");
}

#[test]
fn the_mlp_on_the_gpu_matches_the_host() {
    let Some(device) = gpu("the_mlp_on_the_gpu_matches_the_host") else { return };
    let device: Arc<dyn Device> = device;
    let dir = std::env::temp_dir().join(format!("sched-cuda-mlp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let manifest = Manifest {
        kind: ModelKind::MeanFlow,
        interpolant: Interpolant::RectifiedFlow,
        time_input: TimeInput::Thousand,
        preconditioning: None,
        sample_shape: vec![3, 5],
        time_features: 8,
        classes: 4,
    };
    let path = dir.join("net.safetensors");
    write_safetensors(&path, &random_mlp_tensors_of_width(&manifest, 256, 5), None).expect("writes the weights");
    std::fs::write(path.with_extension("toml"), manifest.to_table().to_string()).expect("writes the manifest");
    let model = load_model(&path.display().to_string(), None).expect("loads");
    let _ = std::fs::remove_dir_all(&dir);
    let x = Tensor::new(vec![1000, 3, 5], (0..15_000).map(|i| ((i as f32) * 0.37).sin()).collect());
    let on_gpu = DeviceTensor::new(x.shape.clone(), device.upload(&x.data).expect("uploads"), Arc::clone(&device));
    let net = model.on_device().expect("the MLP runs on devices");
    for (t, s, label) in [(0.9, 0.4, Some(2)), (0.3, 0.0, None)] {
        let host = model.jump(&x, t, s, label).expect("the host jump");
        let out = net.jump_on(&device, &on_gpu, t, s, label).expect("the GPU jump");
        let data = device.download(out.buffer()).expect("downloads");
        let worst = host.data.iter().zip(&data).map(|(a, b)| f64::from((a - b).abs()) / f64::from(a.abs()).max(1.0));
        let worst = worst.fold(0.0, f64::max);
        assert!(worst < 1e-5, "jump {t} -> {s}: the GPU's MLP differs from the host's by {worst}");
    }
}

/// Runs after the first two of `Executable::run_seeds` replay the recorded work as one CUDA graph
/// each and give, bit for bit, the plain GPU runs with their seeds (tests/replay.rs checks the
/// same on the emulated device in CI).
#[test]
fn graph_replays_give_the_bits_of_plain_runs() {
    let Some(device) = gpu("graph_replays_give_the_bits_of_plain_runs") else { return };
    let device: Arc<dyn Device> = device;
    let dir = root().join("examples");
    let cases = [
        ("ddim.sched", "ddim", "net", "models/eight/eps.safetensors"),
        ("few_step.sched", "few_step", "fm", "models/eight/flow_map.safetensors"),
    ];
    for (case, (file, schedule, model_name, checkpoint)) in cases.into_iter().enumerate() {
        let source = std::fs::read_to_string(dir.join(file)).expect("the example is readable");
        let program = compile(file, &source).unwrap_or_else(|d| panic!("{file} does not check:\n{d}"));
        let executable = program.schedule(schedule).expect("the schedule exists").bind(&[]).expect("binds");
        let models = [(model_name, load_model(checkpoint, Some(&dir)).expect("the checkpoint loads"))];
        let seeds = [5, 6, 7, 8];
        let options = RunOptions { batch: 33, device: Some(Arc::clone(&device)), ..RunOptions::default() };
        let runs = executable.run_seeds(Engine::Jit, &models, &options, &seeds).expect("the runs succeed");
        assert_eq!(runs.replay.why_not, None, "{file}");
        assert!(runs.replay.graph, "{file}: the replays were not CUDA graphs");
        assert_eq!(runs.replay.replays, 2, "{file}");
        for (seed, replayed) in seeds.iter().zip(&runs.runs) {
            let plain = RunOptions { seed: *seed, ..options.clone() };
            let expected = executable.run_on(Engine::Jit, &models, &plain).expect("the plain run succeeds");
            if let Some(difference) = difference(&expected, replayed, true) {
                panic!("{file}: seed {seed}: the replay differs from a plain run: {difference}");
            }
        }
        drop(runs);
        // Each MLP keeps its weights on the device: the first layer's sample columns, and the
        // weight and bias of the other two.
        let weights = 5 * (case + 1);
        assert_eq!(device.live_buffers(), weights, "{file}: buffers other than the MLPs' weights outlived the runs");
    }
}

/// The shipped poker transformers on the GPU (cuBLAS, the LayerNorm, attention and GELU kernels)
/// give the host's logits to f32 rounding, and a token schedule bound to one gives the host's
/// tokens (runtime/tests/device_transformer.rs checks the same on the emulated device in CI).
#[test]
fn the_transformer_on_the_gpu_matches_the_host() {
    let Some(device) = gpu("the_transformer_on_the_gpu_matches_the_host") else { return };
    let device: Arc<dyn Device> = device;
    let dir = root().join("examples/models/poker");
    let ids: Vec<u32> = (0..12u32).map(|k| 2 + (k * 7 + 3) % 13).collect();
    let masked: Vec<u32> = ids.iter().enumerate().map(|(k, &id)| if k % 3 == 1 { 1 } else { id }).collect();
    for kind in ["causal_lm", "masked_lm", "mtp_lm"] {
        let path = dir.join(format!("{kind}.safetensors")).display().to_string();
        let model = load_model(&path, None).expect("the shipped checkpoint loads");
        let host = model.tokens().expect("a token model");
        let network = host.on_device().expect("the transformer runs on devices");
        fn rows(ids: &[u32]) -> sched_runtime::model::TokenRows<'_> {
            sched_runtime::model::TokenRows { ids, batch: 4, len: 3 }
        }
        let (ids, masked) = (&ids[..], &masked[..]);
        let pairs = if kind == "masked_lm" {
            vec![(host.masked_logits(rows(masked)), network.masked_logits_on(&device, rows(masked)))]
        } else {
            vec![
                (host.causal_logits(rows(ids), 0), network.causal_logits_on(&device, rows(ids), 0)),
                (host.head_logits(rows(ids)), network.head_logits_on(&device, rows(ids))),
            ]
        };
        for (on_host, on_gpu) in pairs {
            let (on_host, on_gpu) = (on_host.expect("the host evaluates"), on_gpu.expect("the GPU evaluates"));
            let worst = on_host
                .iter()
                .zip(&on_gpu)
                .map(|(&a, &b)| if a == b { 0.0 } else { f64::from((a - b).abs()) / f64::from(a.abs()).max(1.0) })
                .fold(0.0, f64::max);
            assert!(worst < 1e-5, "{kind}: the GPU's logits differ from the host's by {worst}");
        }
    }
    // Whole schedules: extending rows draws on the GPU (the sampling kernel after a gather), and
    // so do LLaDA's candidates and speculative decoding's drafts; verification runs there too
    // (the verification kernel after the sampling kernel's distributions). A difference is a bug
    // unless the GPU's logits, within 1e-5 of the host's, moved a draw across a near tie; print
    // the logits of the row to tell.
    let int = |name: &'static str, value: i64| (name, Value::Int(value));
    let schedules = [
        ("poker.sched", "autoregressive", vec![("lm", "causal_lm")], vec![]),
        ("poker.sched", "draft_verify", vec![("mtp", "mtp_lm")], vec![]),
        (
            "speculative.sched",
            "speculative",
            vec![("target", "causal_lm"), ("draft", "causal_lm")],
            vec![int("max_tokens", 6), int("k", 2)],
        ),
        ("block_diffusion.sched", "llada", vec![("lm", "masked_lm")], vec![int("gen_length", 8), int("block", 4)]),
    ];
    for (file, schedule, bindings, params) in schedules {
        let source = std::fs::read_to_string(root().join("examples").join(file)).expect("the example is readable");
        let program = compile(file, &source).expect("the example checks");
        let executable = program.schedule(schedule).expect("exists").bind(&params).expect("binds");
        let load = |kind: &str| {
            load_model(&dir.join(format!("{kind}.safetensors")).display().to_string(), None).expect("loads")
        };
        let models: Vec<(&str, Arc<dyn Model>)> = bindings.iter().map(|&(name, kind)| (name, load(kind))).collect();
        let cpu = RunOptions { seed: 4, batch: 64, ..RunOptions::default() };
        let on_gpu = RunOptions { device: Some(Arc::clone(&device)), ..cpu.clone() };
        let expected = executable.run_on(Engine::Jit, &models, &cpu).expect("the CPU run");
        let actual = executable.run_on(Engine::Jit, &models, &on_gpu).expect("the GPU run");
        assert_eq!(difference(&expected, &actual, true), None, "{schedule}: the GPU's tokens differ from the CPU's");
        assert_eq!(actual.transfers.device_model_calls, actual.model_calls, "{schedule}: evaluations on the host");
    }
}

/// One row of `ids`.
fn one(ids: &[u32]) -> sched_runtime::model::TokenRows<'_> {
    sched_runtime::model::TokenRows { ids, batch: 1, len: ids.len() }
}

/// The Llama-family device half (models/src/llama/device.rs: cuBLAS products and the decoder
/// kernels of `sched_kernels::decoder`, with the key/value cache on the GPU) on the tiny random
/// checkpoints of models/tests/fixtures/llama/tiny: the host's f32 logits to f32 rounding at
/// every position, then for one more token over the cached keys, and greedy decoding's tokens
/// (models/tests/it/llama.rs checks the same on the emulated device in CI).
#[test]
fn the_llama_layers_on_the_gpu_match_the_host() {
    let Some(device) = gpu("the_llama_layers_on_the_gpu_match_the_host") else { return };
    let device: Arc<dyn Device> = device;
    let tiny = root().join("models/tests/fixtures/llama/tiny");
    let relative = |a: &[f32], b: &[f32]| {
        a.iter().zip(b).map(|(&x, &y)| f64::from((x - y).abs()) / f64::from(x.abs()).max(1.0)).fold(0.0, f64::max)
    };
    for name in ["llama", "llama-rope-scaled", "qwen2", "mistral-sharded"] {
        let model = load_model(&tiny.join(name).display().to_string(), None).expect("the tiny checkpoint loads");
        let host = model.tokens().expect("a token model");
        let network = host.on_device().expect("the Llama model runs on devices");
        let row: Vec<u32> = (0..9u32).map(|k| 1 + (k * 37 + 5) % 200).collect();
        for ids in [&row[..8], &row[..]] {
            let on_host = host.causal_logits(one(ids), 1).expect("the host evaluates");
            let on_gpu = network.causal_logits_on(&device, one(ids), 1).expect("the GPU evaluates");
            let worst = relative(&on_host, &on_gpu);
            assert!(worst < 1e-4, "{name}: the GPU's logits differ from the host's by {worst}");
        }
        let step = network.causal_logits_on(&device, one(&row), row.len()).expect("a cached step");
        let worst = relative(&host.causal_logits(one(&row), row.len()).expect("the host evaluates"), &step);
        assert!(worst < 1e-4, "{name}: the GPU's cached step differs from the host's by {worst}");
    }
    let source = std::fs::read_to_string(root().join("examples/autoregressive.sched")).expect("the example");
    let program = compile("autoregressive.sched", &source).expect("the example checks");
    let executable =
        program.schedule("greedy_tokens").expect("exists").bind(&[("max_tokens", Value::Int(12))]).expect("binds");
    let models = [("lm", load_model(&tiny.join("llama").display().to_string(), None).expect("loads"))];
    let cpu = RunOptions { seed: 1, batch: 1, prompt: vec![3, 17, 42], ..RunOptions::default() };
    let on_gpu = RunOptions { device: Some(Arc::clone(&device)), ..cpu.clone() };
    let expected = executable.run_on(Engine::Jit, &models, &cpu).expect("the CPU run");
    let actual = executable.run_on(Engine::Jit, &models, &on_gpu).expect("the GPU run");
    assert_eq!(difference(&expected, &actual, true), None, "greedy decoding on the GPU differs from the CPU's");
}
