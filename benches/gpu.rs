//! sched's GPU benchmark: the fused kernels against the device's copy bandwidth, and whole
//! schedules on the GPU against the CPU, in one run. It needs an NVIDIA GPU (see docs/gpu.md;
//! `bench/gpu.sh` builds it here and runs it there) and says why when there is none.
//!
//! ```text
//! cargo bench --bench gpu -- [--log2-len N] [--reps N] [--tsv FILE]
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
//!
//! Every time is the median of `--reps` runs (default 10) after one warm-up; kernel times are GPU
//! time between CUDA events. Results are `key<TAB>value<TAB>unit` lines, appended to `--tsv FILE`
//! when given; the table comes last.

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sched::api::{Engine, compile};
use sched::kernels::builder::KernelBuilder;
use sched::kernels::spec::{BinaryOp, Distribution, ElementwiseKernel, NoiseLaunch, NoiseSlot};
use sched::lang::types::ModelKind;
use sched::runtime::device::cuda::CudaDevice;
use sched::runtime::device::{Device, Launch};
use sched::runtime::interp::RunOptions;
use sched::runtime::interpolant::{BetaSchedule, DiscreteVp, Interpolant};
use sched::runtime::model::{FieldKind, Label, Model, ModelError, ModelInfo};
use sched::runtime::tensor::Tensor;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// DDIM with diffusers' defaults, as in the engine benchmark.
const DDIM: &str = r#"
schedule ddim_gpu(net: model<eps>, steps: int = 1000) {
    let x = gaussian()
    for t, s in grid(1 -> 0, steps, leading(offset = 0)) {
        refine x from t to s by ddim(0.0)
    }
    emit x
}
"#;

struct Options {
    log2_len: u32,
    reps: usize,
    tsv: Option<PathBuf>,
}

fn options() -> Result<Options> {
    let mut options = Options { log2_len: 28, reps: 10, tsv: None };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("`{arg}` needs a value"));
        match arg.as_str() {
            "--log2-len" => options.log2_len = value()?.parse()?,
            "--reps" => options.reps = value()?.parse()?,
            "--tsv" => options.tsv = Some(value()?.into()),
            other => return Err(format!("unknown option `{other}` (--log2-len N, --reps N, --tsv FILE)").into()),
        }
    }
    Ok(options)
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

/// A model that returns zeros (so a run measures the schedule, not a network).
struct NullModel(ModelInfo);

impl Model for NullModel {
    fn info(&self) -> &ModelInfo {
        &self.0
    }

    fn field(&self, x: &Tensor, _t: f64, _label: Label) -> std::result::Result<(Tensor, FieldKind), ModelError> {
        Ok((Tensor::zeros(x.shape.clone()), FieldKind::Eps))
    }

    fn jump(&self, _x: &Tensor, _t: f64, _s: f64, _label: Label) -> std::result::Result<Tensor, ModelError> {
        Err(ModelError::Unsupported { model: "null".into(), kind: ModelKind::Eps, what: "jump".into() })
    }
}

fn main() -> Result<()> {
    let options = options()?;
    let device = match CudaDevice::new(0) {
        Ok(device) => Arc::new(device),
        Err(e) => {
            eprintln!("no GPU benchmark: {e}");
            return Ok(());
        }
    };
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut push = |key: &str, value: String, unit: &str| {
        eprintln!("  {key} = {value} {unit}");
        rows.push((key.into(), value, unit.into()));
    };
    push("gpu.device", device.name(), "");

    // 1 and 2: bandwidth.
    let len = 1usize << options.log2_len;
    let bytes = 4.0 * len as f64;
    let x = device.upload(&vec![0.5; len])?;
    let eps = device.upload(&vec![0.25; len])?;
    let out = device.alloc(len)?;
    let copy_ms = gpu_ms(&device, options.reps, &|| Ok(device.copy(x, out)?))?;
    let copy_gbs = 2.0 * bytes / (copy_ms * 1e-3) / 1e9;
    push("gpu.copy.ms", format!("{copy_ms:.4}"), "ms");
    push("gpu.copy.bandwidth", format!("{copy_gbs:.1}"), "GB/s");
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
        let ms = gpu_ms(&device, options.reps, &|| Ok(device.elementwise(&kernel, &launch)?))?;
        let gbs = 3.0 * bytes / (ms * 1e-3) / 1e9;
        push(&format!("gpu.ddim_{name}.ms"), format!("{ms:.4}"), "ms");
        push(&format!("gpu.ddim_{name}.bandwidth"), format!("{gbs:.1}"), "GB/s");
        push(&format!("gpu.ddim_{name}.fraction_of_copy"), format!("{:.3}", gbs / copy_gbs), "");
    }
    for buffer in [x, eps, out] {
        device.free(buffer);
    }

    // 3: a whole schedule, step by step.
    let program = compile("ddim_gpu.sched", DDIM).map_err(|d| d.to_string())?;
    let executable = program.schedule("ddim_gpu")?.bind(&[])?;
    let info = ModelInfo {
        kind: ModelKind::Eps,
        interpolant: Interpolant::Discrete(DiscreteVp::new(BetaSchedule::DDPM_LINEAR, 1000)),
        sample_shape: vec![2],
        num_classes: None,
        source: "null model (zeros)".into(),
    };
    let net: Arc<dyn Model> = Arc::new(NullModel(info));
    let models = [("net", net)];
    for (name, on_gpu) in [("cpu", false), ("gpu", true)] {
        let device: Option<Arc<dyn Device>> = on_gpu.then(|| device.clone() as Arc<dyn Device>);
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
        push(&format!("gpu.ddim1000.{name}.us_per_step"), format!("{:.2}", median(times) * 1e6 / steps), "us");
        push(
            &format!("gpu.ddim1000.{name}.launches_per_step"),
            format!("{:.2}", outputs.kernel_launches as f64 / steps),
            "",
        );
        push(&format!("gpu.ddim1000.{name}.syncs"), outputs.transfers.syncs().to_string(), "");
    }

    if let Some(path) = &options.tsv {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        for (key, value, unit) in &rows {
            writeln!(file, "{key}\t{value}\t{unit}")?;
        }
    }
    println!("| measurement | value |");
    println!("|---|---|");
    for (key, value, unit) in &rows {
        println!("| {key} | {value} {unit} |");
    }
    Ok(())
}
