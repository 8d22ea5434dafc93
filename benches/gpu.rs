//! sched's GPU benchmark: the fused kernels against the device's copy bandwidth, and whole
//! schedules on the GPU against the CPU, in one run. It needs an NVIDIA GPU (see docs/gpu.md;
//! `bench/gpu.sh` builds it here and runs it there) and says why when there is none.
//!
//! ```text
//! cargo bench --bench gpu -- [--log2-len N] [--reps N] [--batch N] [--dir DIR] [--tsv FILE]
//! cargo bench --bench gpu -- report FILE     # the table of a results file, with ratios
//! cargo bench --bench gpu -- --emulated --batch 256   # sections 3 and 4 on the emulated device:
//!                                                     # checks the benchmark without a GPU
//! ```
//!
//! 1. Device-to-device copy of 2^N f32 (default N = 28, 1 GiB): the bandwidth ceiling, counting
//!    bytes read and written.
//! 2. The fused DDIM update `x' = a x + b eps (+ c z)` over 2^N elements, with η = 0 (no noise)
//!    and η > 0 (a Gaussian drawn in the kernel): its bandwidth (12 bytes per element) as a
//!    fraction of the copy's. The goal is at least 0.85.
//! 3. DDIM-1000 on a null model at batch 1 × [2], on the CPU and on the GPU: time per step (the
//!    model runs on the host, so each GPU step copies its input down and its output up) and
//!    launches per step.
//! 4. DDIM-50 on a random MLP checkpoint (width 256) at batch `--batch` (default 2^16): on the GPU
//!    (the MLP through cuBLAS) and on the CPU, best of 3; the checkpoint, the initial noise and the
//!    GPU's samples (`jit`) go to `--dir` for `bench/diffusers_e2e.py --device cuda`, which runs
//!    the same weights in PyTorch with diffusers' `DDIMScheduler` on the same GPU.
//! 5. DDIM-50 (η = 1, so every step draws noise) on the same MLP at batch 1 and at `--batch`:
//!    a plain run (the JIT's host code launching each kernel) against the replay of its recording
//!    as one CUDA graph with a new seed (`sched_runtime::device::replay`), and whether the replay
//!    gave the bits of a plain run with that seed.
//! 6. Token generation with the shipped poker transformers (`examples/models/poker`): LLaDA
//!    (`examples/block_diffusion.sched`, 8 tokens in blocks of 4) on the masked model,
//!    autoregressive sampling (`examples/poker.sched`) and speculative decoding
//!    (`examples/speculative.sched`, 6 tokens, drafts of 2, the causal model drafting and
//!    verifying) on the causal one, at 4096 rows, on the CPU and on the device (the network's
//!    layers there, tokens drawn and drafts verified there): milliseconds per run, and whether
//!    the device's tokens are the CPU's.
//!
//! Every time is the median of `--reps` runs (default 10) after one warm-up; kernel times are GPU
//! time between CUDA events. Results are `key<TAB>value<TAB>unit` lines, appended to `--tsv FILE`
//! when given; the table comes last.

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use common::NullModel;
use sched::api::{Engine, Value, compile};
use sched_kernels::builder::KernelBuilder;
use sched_kernels::spec::{BinaryOp, Distribution, ElementwiseKernel, NoiseLaunch, NoiseSlot};
use sched_models::checkpoint::write_safetensors;
use sched_models::load::load_model;
use sched_runtime::device::cuda::CudaDevice;
use sched_runtime::device::emulated::EmulatedDevice;
use sched_runtime::device::replay::{Plan, Recorder, Replay};
use sched_runtime::device::{Device, DeviceOp, Launch};
use sched_runtime::model::Model;
use sched_runtime::run::OutputValue;
use sched_runtime::run::RunOptions;

#[path = "common/mod.rs"]
mod common;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Options {
    log2_len: u32,
    reps: usize,
    batch: usize,
    dir: PathBuf,
    tsv: Option<PathBuf>,
    report: Option<PathBuf>,
    emulated: bool,
}

fn options() -> Result<Options> {
    let mut options = Options {
        log2_len: 28,
        reps: 10,
        batch: 1 << 16,
        dir: PathBuf::from("target/sched-bench/gpu"),
        tsv: None,
        report: None,
        emulated: false,
    };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("`{arg}` needs a value"));
        match arg.as_str() {
            "--log2-len" => options.log2_len = value()?.parse()?,
            "--reps" => options.reps = value()?.parse()?,
            "--batch" => options.batch = value()?.parse()?,
            "--dir" => options.dir = value()?.into(),
            "--tsv" => options.tsv = Some(value()?.into()),
            "report" => options.report = Some(value()?.into()),
            "--emulated" => options.emulated = true,
            other => {
                return Err(format!(
                    "unknown option `{other}` (--log2-len N, --reps N, --batch N, --dir DIR, --tsv FILE, --emulated, report FILE)"
                )
                .into());
            }
        }
    }
    Ok(options)
}

/// The rows of a results file: (key, value, unit).
fn read_results(path: &std::path::Path) -> Result<Vec<(String, String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            let (key, value) = (fields.next()?.trim(), fields.next()?.trim());
            Some((key.to_string(), value.to_string(), fields.next().unwrap_or("").trim().to_string()))
        })
        .filter(|(key, _, _)| !key.is_empty())
        .collect())
}

/// The table of results, then the ratios the benchmark is about.
fn table(rows: &[(String, String, String)]) -> String {
    let mut out = String::from("| measurement | value |\n|---|---|\n");
    for (key, value, unit) in rows {
        out.push_str(&format!("| {key} | {value} {unit} |\n"));
    }
    let number = |key: &str| rows.iter().rev().find(|(k, _, _)| k == key).and_then(|(_, v, _)| v.parse::<f64>().ok());
    if let (Some(sched), Some(diffusers)) = (number("gpu.e2e.gpu.ms"), number("gpu.e2e.diffusers")) {
        out.push_str(&format!("| diffusers + PyTorch / sched, DDIM-50 on the GPU | {:.2}x |\n", diffusers / sched));
    }
    if let (Some(gpu), Some(cpu)) = (number("gpu.e2e.gpu.ms"), number("gpu.e2e.cpu.ms")) {
        out.push_str(&format!("| sched CPU / sched GPU, DDIM-50 | {:.1}x |\n", cpu / gpu));
    }
    out
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median GPU time of `reps` runs of `work`, after one warm-up.
fn gpu_ms(device: &CudaDevice, reps: usize, work: &dyn Fn() -> Result<()>) -> Result<f64> {
    work()?;
    device.synchronize()?;
    let mut times = Vec::new();
    for _ in 0..reps {
        let mut failed = None;
        let ms = device.time(|| {
            if let Err(e) = work() {
                failed = Some(e.to_string());
            }
            Ok(())
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        times.push(ms);
    }
    Ok(median(times))
}

/// `a x + b eps`, plus `c z` with a Gaussian `z` when `noisy`.
fn ddim_update(noisy: bool) -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let (x, eps) = (b.input(0), b.input(1));
    let (p0, p1) = (b.param(0), b.param(1));
    let ax = b.binary(BinaryOp::Mul, p0, x);
    let be = b.binary(BinaryOp::Mul, p1, eps);
    let mut out = b.binary(BinaryOp::Add, ax, be);
    if noisy {
        let p2 = b.param(2);
        let z = b.noise(Distribution::Gaussian);
        let cz = b.binary(BinaryOp::Mul, p2, z);
        out = b.binary(BinaryOp::Add, out, cz);
    }
    b.output(out);
    b.finish()
}

/// Sections 1 and 2: the copy bandwidth, and the fused DDIM update's fraction of it.
fn bandwidth(device: &CudaDevice, options: &Options, rows: &mut Rows) -> Result<()> {
    // 1 and 2: bandwidth.
    let len = 1usize << options.log2_len;
    let bytes = 4.0 * len as f64;
    let x = device.upload(&vec![0.5; len])?;
    let eps = device.upload(&vec![0.25; len])?;
    let out = device.alloc(len)?;
    let copy_ms = gpu_ms(device, options.reps, &|| Ok(device.execute(&DeviceOp::Copy { from: x, to: out, len })?))?;
    let copy_gbs = 2.0 * bytes / (copy_ms * 1e-3) / 1e9;
    push(rows, "gpu.copy.ms", format!("{copy_ms:.4}"), "ms");
    push(rows, "gpu.copy.bandwidth", format!("{copy_gbs:.1}"), "GB/s");
    for (name, noisy) in [("eta0", false), ("eta_pos", true)] {
        let kernel = ddim_update(noisy);
        let params: Vec<f32> = if noisy { vec![0.9, 0.1, 0.05] } else { vec![0.9, 0.1] };
        let slots: Vec<NoiseSlot> = if noisy { vec![NoiseSlot { site: 0, step: 0 }] } else { Vec::new() };
        let launch = Launch {
            len,
            inputs: &[x, eps],
            outputs: &[out],
            params: &params,
            noise: NoiseLaunch { seed: 1, per_sample: len, slots: &slots },
        };
        let ms = gpu_ms(device, options.reps, &|| Ok(device.execute(&DeviceOp::elementwise(&kernel, &launch))?))?;
        let gbs = 3.0 * bytes / (ms * 1e-3) / 1e9;
        push(rows, &format!("gpu.ddim_{name}.ms"), format!("{ms:.4}"), "ms");
        push(rows, &format!("gpu.ddim_{name}.bandwidth"), format!("{gbs:.1}"), "GB/s");
        push(rows, &format!("gpu.ddim_{name}.fraction_of_copy"), format!("{:.3}", gbs / copy_gbs), "");
    }
    for buffer in [x, eps, out] {
        device.free(buffer);
    }

    Ok(())
}

/// Sections 3 and 4: whole schedules on the device and on the CPU.
fn schedules(device: &Arc<dyn Device>, options: &Options, rows: &mut Rows) -> Result<()> {
    // 3: a whole schedule, step by step.
    let program = compile("ddim_bench.sched", common::DDIM).map_err(|d| d.to_string())?;
    let executable = program.schedule("ddim_bench")?.bind(&[("steps", Value::Int(1000))])?;
    let net: Arc<dyn Model> = Arc::new(NullModel::new());
    let models = [("net", net)];
    for (name, on_gpu) in [("cpu", false), ("gpu", true)] {
        let device: Option<Arc<dyn Device>> = on_gpu.then(|| Arc::clone(device));
        let run_options = RunOptions { device, ..RunOptions::default() };
        let mut times = Vec::new();
        let mut outputs = None;
        for _ in 0..=options.reps.min(5) {
            let started = Instant::now();
            outputs = Some(executable.run_on(Engine::Jit, &models, &run_options)?);
            times.push(started.elapsed().as_secs_f64());
        }
        let outputs = outputs.ok_or("no run")?;
        let steps = outputs.model_calls.max(1) as f64;
        push(rows, &format!("gpu.ddim1000.{name}.us_per_step"), format!("{:.2}", median(times) * 1e6 / steps), "us");
        push(
            rows,
            &format!("gpu.ddim1000.{name}.launches_per_step"),
            format!("{:.2}", outputs.kernel_launches as f64 / steps),
            "",
        );
        push(rows, &format!("gpu.ddim1000.{name}.syncs"), outputs.transfers.syncs().to_string(), "");
    }

    // 4: DDIM-50 on the MLP, end to end.
    let batch = options.batch;
    let common::Inputs { x_init, net, .. } = common::write_inputs(&options.dir, batch)?;
    let executable = program.schedule("ddim_bench")?.bind(&[("x", Value::Tensor(x_init))])?;
    let mlp = Arc::clone(&net);
    let models = [("net", net)];
    let mut samples = Vec::new();
    for (name, on_gpu) in [("gpu", true), ("cpu", false)] {
        let device: Option<Arc<dyn Device>> = on_gpu.then(|| Arc::clone(device));
        let run_options = RunOptions { batch, device, ..RunOptions::default() };
        executable.run_on(Engine::Jit, &models, &run_options)?;
        let mut best = f64::INFINITY;
        let mut outputs = None;
        for _ in 0..3 {
            let started = Instant::now();
            outputs = Some(executable.run_on(Engine::Jit, &models, &run_options)?);
            best = best.min(started.elapsed().as_secs_f64());
        }
        let outputs = outputs.ok_or("no run")?;
        push(rows, &format!("gpu.e2e.{name}.ms"), format!("{:.2}", best * 1e3), "ms");
        push(rows, &format!("gpu.e2e.{name}.steps_per_second"), format!("{:.1}", 50.0 / best), "steps/s");
        push(rows, &format!("gpu.e2e.{name}.host_model_calls"), outputs.transfers.host_model_calls.to_string(), "");
        let Some((_, OutputValue::Tensor(x))) = outputs.values.into_iter().find(|(n, _)| n == "x") else {
            return Err("the schedule emitted no `x`".into());
        };
        samples.push((name, x));
    }
    let max_diff =
        samples[0].1.data.iter().zip(&samples[1].1.data).map(|(a, b)| f64::from((a - b).abs())).fold(0.0, f64::max);
    push(rows, "gpu.e2e.batch", batch.to_string(), "samples");
    push(rows, "gpu.e2e.gpu_vs_cpu.maxdiff", format!("{max_diff:.3e}"), "abs");
    let tensors: Vec<_> = samples
        .into_iter()
        .map(|(name, x)| (if name == "gpu" { "jit".to_string() } else { name.to_string() }, x.shape, x.data))
        .collect();
    write_safetensors(&options.dir.join("samples.safetensors"), &tensors, None)?;

    replays(device, &program, &mlp, options, rows)?;
    tokens(device, rows)
}

/// Section 6: token generation on the CPU and on the device.
fn tokens(device: &Arc<dyn Device>, rows: &mut Rows) -> Result<()> {
    let int = |name: &'static str, value: i64| (name, Value::Int(value));
    let schedules = [
        (
            "llada",
            include_str!("../examples/block_diffusion.sched"),
            vec![("lm", "masked_lm")],
            vec![int("gen_length", 8), int("block", 4)],
        ),
        ("autoregressive", include_str!("../examples/poker.sched"), vec![("lm", "causal_lm")], vec![]),
        (
            "speculative",
            include_str!("../examples/speculative.sched"),
            vec![("target", "causal_lm"), ("draft", "causal_lm")],
            vec![int("max_tokens", 6), int("k", 2)],
        ),
    ];
    for (schedule, source, bindings, params) in schedules {
        let program = compile(schedule, source).map_err(|d| d.to_string())?;
        let executable = program.schedule(schedule)?.bind(&params)?;
        let mut models = Vec::new();
        for (name, kind) in bindings {
            models.push((name, load_model(&format!("examples/models/poker/{kind}.safetensors"), None)?));
        }
        let mut outputs = Vec::new();
        for (name, on_device) in [("cpu", false), ("gpu", true)] {
            let run_options =
                RunOptions { batch: 4096, device: on_device.then(|| Arc::clone(device)), ..RunOptions::default() };
            executable.run_on(Engine::Jit, &models, &run_options)?;
            let started = Instant::now();
            let output = executable.run_on(Engine::Jit, &models, &run_options)?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            push(rows, &format!("gpu.tokens.{schedule}.{name}.ms"), format!("{ms:.1}"), "ms");
            outputs.push(output.values);
        }
        push(rows, &format!("gpu.tokens.{schedule}.same_tokens"), (outputs[0] == outputs[1]).to_string(), "");
    }
    Ok(())
}

/// Section 5: plain runs against graph replays of their recording.
fn replays(
    device: &Arc<dyn Device>,
    program: &sched::api::Program,
    net: &Arc<dyn Model>,
    options: &Options,
    rows: &mut Rows,
) -> Result<()> {
    let executable = program.schedule("ddim_bench")?.bind(&[("eta", Value::Float(1.0))])?;
    let models = [("net", Arc::clone(net))];
    for batch in [1, options.batch] {
        let plain = |seed: u64, device: Arc<dyn Device>| {
            let run_options = RunOptions { seed, batch, device: Some(device), ..RunOptions::default() };
            executable.run_on(Engine::Jit, &models, &run_options)
        };
        let recorder = Arc::new(Recorder::new(Arc::clone(device)));
        plain(0, Arc::clone(&recorder) as Arc<dyn Device>)?;
        let plan = Plan::new(&recorder.take(), 0)?;
        let replay = Replay::new(Arc::clone(device), plan, 0)?;
        let mut plain_times = Vec::new();
        let mut replay_times = Vec::new();
        let mut same_bits = true;
        for rep in 0..=options.reps {
            let seed = 1 + rep as u64;
            let started = Instant::now();
            let expected = plain(seed, Arc::clone(device))?;
            plain_times.push(started.elapsed().as_secs_f64());
            let started = Instant::now();
            let replayed = replay.run(seed)?;
            replay_times.push(started.elapsed().as_secs_f64());
            let Some((_, OutputValue::Tensor(x))) = expected.values.first() else {
                return Err("the schedule emitted no tensor".into());
            };
            same_bits &=
                replayed.first().is_some_and(|r| r.iter().map(|v| v.to_bits()).eq(x.data.iter().map(|v| v.to_bits())));
        }
        let (plain_ms, replay_ms) = (median(plain_times) * 1e3, median(replay_times) * 1e3);
        let key = format!("gpu.replay.batch{batch}");
        push(rows, &format!("{key}.plain.ms"), format!("{plain_ms:.3}"), "ms");
        push(rows, &format!("{key}.graph.ms"), format!("{replay_ms:.3}"), "ms");
        push(rows, &format!("{key}.speedup"), format!("{:.2}", plain_ms / replay_ms), "x");
        push(rows, &format!("{key}.graph"), replay.is_graph().to_string(), "");
        push(rows, &format!("{key}.steps"), replay.steps().to_string(), "");
        push(rows, &format!("{key}.same_bits"), same_bits.to_string(), "");
    }
    Ok(())
}

type Rows = Vec<(String, String, String)>;

fn push(rows: &mut Rows, key: &str, value: String, unit: &str) {
    eprintln!("  {key} = {value} {unit}");
    rows.push((key.into(), value, unit.into()));
}

fn main() -> Result<()> {
    let options = options()?;
    if let Some(path) = &options.report {
        print!("{}", table(&read_results(path)?));
        return Ok(());
    }
    let mut rows = Rows::new();
    if options.emulated {
        // A dry run of the schedule sections on the emulated device, to check the benchmark
        // without a GPU; its times mean nothing.
        let device: Arc<dyn Device> = Arc::new(EmulatedDevice::new());
        push(&mut rows, "gpu.device", device.name(), "");
        schedules(&device, &options, &mut rows)?;
    } else {
        let gpu = match CudaDevice::new(0) {
            Ok(device) => Arc::new(device),
            Err(e) => {
                eprintln!("no GPU benchmark: {e}");
                return Ok(());
            }
        };
        push(&mut rows, "gpu.device", gpu.name(), "");
        bandwidth(&gpu, &options, &mut rows)?;
        schedules(&(gpu as Arc<dyn Device>), &options, &mut rows)?;
    }
    if let Some(path) = &options.tsv {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        for (key, value, unit) in &rows {
            writeln!(file, "{key}\t{value}\t{unit}")?;
        }
    }
    print!("{}", table(&rows));
    Ok(())
}
