//! sched's engine benchmarks: each compares two or more things measured in the same run (machines
//! are noisy; ratios travel better than times). `bench/run.sh` runs them all with the fused-kernel
//! benchmark and diffusers and prints one table; bench/README.md describes each.
//!
//! ```text
//! cargo bench --bench engine                      # host, e2e and compile; prints their table
//! cargo bench --bench engine -- host    [--tsv FILE]
//! cargo bench --bench engine -- e2e     [--batch N] [--steps N] [--rounds N] [--dir DIR] [--tsv FILE]
//! cargo bench --bench engine -- compile [--runs N] [--tsv FILE]
//! cargo bench --bench engine -- report FILE       # the table of a results file
//! ```
//!
//! - `host`: the host overhead per step: DDIM-1000 on a model that returns zeros, batch 1 × [2],
//!   on the JIT engine and on the interpreter.
//! - `e2e`: DDIM-50 with a random MLP checkpoint (width 256) written here: both engines, and the
//!   same network driven by a hand-written, unfused candle loop; it writes the checkpoint, the
//!   initial noise and the samples to DIR for `bench/diffusers_e2e.py`.
//! - `compile`: parse + check + compile + bind of every `examples/*.sched`, median of N runs.
//!
//! Results are lines `key<TAB>value<TAB>unit`, appended to `--tsv FILE` when given; `report`
//! reads such a file (the Rust results and the Python ones) and prints the table with ratios.

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor as CTensor};
use candle_nn::{Linear, Module};
use sched::api::{Engine, Executable, Value, compile};
use sched_models::checkpoint::write_safetensors;
use sched_runtime::interpolant::Interpolant;
use sched_runtime::model::Model;
use sched_runtime::run::{OutputValue, RunOptions};
use sched_runtime::tensor::Tensor;

#[path = "common/mod.rs"]
mod common;

use common::{DDIM, Inputs, NullModel, SAMPLE, TIME_FEATURES, TRAIN_STEPS, WIDTH, write_inputs};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    // `cargo bench` passes `--bench` to every bench target; it means nothing here.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mode = args.first().map(String::as_str).unwrap_or("all");
    let options = Options::parse(args.get(1..).unwrap_or_default())?;
    let mut results = Results::default();
    match mode {
        "host" => host(&mut results)?,
        "e2e" => e2e(&options, &mut results)?,
        "compile" => compile_latency(&options, &mut results)?,
        "report" => {
            let Some(path) = &options.positional else {
                return Err("usage: engine report FILE".into());
            };
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            print!("{}", report(&Results::parse(&text)));
            return Ok(());
        }
        "all" => {
            host(&mut results)?;
            e2e(&options, &mut results)?;
            compile_latency(&options, &mut results)?;
        }
        other => return Err(format!("unknown mode `{other}` (host, e2e, compile, report)").into()),
    }
    if let Some(path) = &options.tsv {
        results.append_to(path)?;
    }
    if mode == "all" {
        print!("{}", report(&results));
    }
    Ok(())
}

/// The command-line options after the mode.
struct Options {
    tsv: Option<PathBuf>,
    dir: PathBuf,
    batch: usize,
    steps: i64,
    runs: usize,
    rounds: usize,
    positional: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options {
            tsv: None,
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("sched-bench"),
            batch: 1 << 16,
            steps: 50,
            runs: 15,
            rounds: 3,
            positional: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("`{arg}` needs a value"));
            match arg.as_str() {
                "--tsv" => options.tsv = Some(value()?.into()),
                "--dir" => options.dir = value()?.into(),
                "--batch" => options.batch = value()?.parse()?,
                "--steps" => options.steps = value()?.parse()?,
                "--runs" => options.runs = value()?.parse()?,
                "--rounds" => options.rounds = value()?.parse()?,
                flag if flag.starts_with("--") => return Err(format!("unknown option `{flag}`").into()),
                path => options.positional = Some(path.into()),
            }
        }
        Ok(options)
    }
}

/// Results in insertion order: (key, value, unit). A value is a number, or text such as a reason
/// for skipping.
#[derive(Default)]
struct Results {
    rows: Vec<(String, String, String)>,
}

impl Results {
    fn push(&mut self, key: &str, value: impl ToString, unit: &str) {
        let value = value.to_string();
        eprintln!("  {key} = {value} {unit}");
        self.rows.push((key.to_string(), value, unit.to_string()));
    }

    fn parse(text: &str) -> Results {
        let rows = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, '\t');
                let key = fields.next()?.trim();
                let value = fields.next()?.trim();
                let unit = fields.next().unwrap_or("").trim();
                (!key.is_empty()).then(|| (key.to_string(), value.to_string(), unit.to_string()))
            })
            .collect();
        Results { rows }
    }

    fn append_to(&self, path: &Path) -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for (key, value, unit) in &self.rows {
            writeln!(file, "{key}\t{value}\t{unit}")?;
        }
        Ok(())
    }

    /// The last value recorded for `key`.
    fn text(&self, key: &str) -> Option<&str> {
        self.rows.iter().rev().find(|(k, _, _)| k == key).map(|(_, v, _)| v.as_str())
    }

    fn number(&self, key: &str) -> Option<f64> {
        self.text(key).and_then(|v| v.parse().ok()).filter(|v: &f64| v.is_finite())
    }
}

// ---------------------------------------------------------------------------------------------
// (a) Host overhead per step.

/// The engines compared, with the keys their results are recorded under.
const ENGINES: [(Engine, &str); 2] = [(Engine::Jit, "jit"), (Engine::Interpreter, "interpreter")];

fn host(results: &mut Results) -> Result<()> {
    const STEPS: i64 = 1000;
    const ROUNDS: usize = 30;
    eprintln!("(a) host overhead: DDIM-{STEPS}, null model, batch 1 x [{SAMPLE}]");
    let program = compile("ddim_bench.sched", DDIM)?;
    let executable = program.schedule("ddim_bench")?.bind(&[("steps", Value::Int(STEPS))])?;
    let net: Arc<dyn Model> = Arc::new(NullModel::new());
    let models = [("net", net)];
    let options = RunOptions { batch: 1, seed: 7, ..RunOptions::default() };
    let mut best = [f64::INFINITY; ENGINES.len()];
    // Rounds alternate the engines, so that a slow moment of the machine hits both alike.
    for round in 0..=ROUNDS {
        for (slot, (engine, _)) in ENGINES.iter().enumerate() {
            let started = Instant::now();
            let outputs = executable.run_on(*engine, &models, &options)?;
            let seconds = started.elapsed().as_secs_f64();
            std::hint::black_box(&outputs);
            if outputs.model_calls != STEPS as u64 {
                return Err(format!("expected {STEPS} model calls, the run made {}", outputs.model_calls).into());
            }
            // Round 0 warms up (allocator, caches, lazily built tables) and does not count.
            if round > 0 {
                best[slot] = best[slot].min(seconds);
            }
        }
    }
    for ((_, key), seconds) in ENGINES.iter().zip(best) {
        results.push(&format!("host.{key}"), format!("{:.4}", seconds / STEPS as f64 * 1e6), "us/step");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (c) End to end.

/// The sinusoidal time features of the checkpoint format (runtime/src/checkpoint.rs): sin then
/// cos of 2^k π τ, in f64 rounded to f32.
fn time_embedding(tau: f64, features: usize) -> Vec<f32> {
    let angle = |k: usize| std::f64::consts::PI * 2f64.powi(k as i32) * tau;
    let mut out: Vec<f32> = (0..features).map(|k| angle(k).sin() as f32).collect();
    out.extend((0..features).map(|k| angle(k).cos() as f32));
    out
}

/// DDIM written by hand with candle, the way a user writes it without sched: the network's
/// forward pass, then x̂₀ and the update as separate tensor operations, each allocating its result.
struct CandleDdim {
    l1: Linear,
    l2: Linear,
    l3: Linear,
    alphas_cumprod: Vec<f32>,
}

impl CandleDdim {
    fn load(path: &Path, alphas_cumprod: &[f32]) -> Result<CandleDdim> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let linear = |name: &str| -> Result<Linear> {
            let weight = tensors.get(&format!("{name}.weight")).ok_or(format!("{name}.weight is missing"))?;
            let bias = tensors.get(&format!("{name}.bias")).ok_or(format!("{name}.bias is missing"))?;
            Ok(Linear::new(weight.clone(), Some(bias.clone())))
        };
        Ok(CandleDdim {
            l1: linear("l1")?,
            l2: linear("l2")?,
            l3: linear("l3")?,
            alphas_cumprod: alphas_cumprod.to_vec(),
        })
    }

    fn eps(&self, x: &CTensor, timestep: usize) -> candle_core::Result<CTensor> {
        let batch = x.dims()[0];
        let temb = time_embedding(timestep as f64 / TRAIN_STEPS as f64, TIME_FEATURES);
        let temb = CTensor::from_vec(temb, (1, 2 * TIME_FEATURES), &Device::Cpu)?.repeat((batch, 1))?;
        let input = CTensor::cat(&[x, &temb], 1)?;
        let h = self.l1.forward(&input)?.silu()?;
        let h = self.l2.forward(&h)?.silu()?;
        self.l3.forward(&h)
    }

    /// DDIM(0) over diffusers' `leading` timesteps with `steps_offset = 0` and `set_alpha_to_one`.
    fn sample(&self, x_init: &Tensor, steps: usize) -> candle_core::Result<Vec<f32>> {
        let stride = TRAIN_STEPS / steps;
        let mut x = CTensor::from_slice(&x_init.data, (x_init.batch(), x_init.per_sample()), &Device::Cpu)?;
        for i in (0..steps).rev() {
            let timestep = i * stride;
            let alpha_t = f64::from(self.alphas_cumprod[timestep]);
            let alpha_prev = timestep.checked_sub(stride).map_or(1.0, |p| f64::from(self.alphas_cumprod[p]));
            let eps = self.eps(&x, timestep)?;
            let x0 = ((&x - (&eps * (1.0 - alpha_t).sqrt())?)? / alpha_t.sqrt())?;
            x = ((&x0 * alpha_prev.sqrt())? + (&eps * (1.0 - alpha_prev).sqrt())?)?;
        }
        x.flatten_all()?.to_vec1::<f32>()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max)
}

fn emitted(outputs: &sched_runtime::run::Outputs) -> Result<Tensor> {
    match outputs.values.iter().find(|(name, _)| name == "x") {
        Some((_, OutputValue::Tensor(t))) => Ok(t.clone()),
        _ => Err("the schedule emitted no tensor `x`".into()),
    }
}

fn run_sched(executable: &Executable, engine: Engine, net: &Arc<dyn Model>, batch: usize) -> Result<Tensor> {
    let options = RunOptions { batch, seed: 0, ..RunOptions::default() };
    emitted(&executable.run_on(engine, &[("net", Arc::clone(net))], &options)?)
}

fn e2e(options: &Options, results: &mut Results) -> Result<()> {
    let (batch, steps) = (options.batch, options.steps);
    let steps_usize = usize::try_from(steps).map_err(|_| "--steps must be positive")?;
    eprintln!("(c) end to end: DDIM-{steps}, MLP width {WIDTH}, batch {batch} x [{SAMPLE}]");
    let Inputs { manifest, checkpoint, net, x_init } = write_inputs(&options.dir, batch)?;

    let program = compile("ddim_bench.sched", DDIM)?;
    let schedule = program.schedule("ddim_bench")?;
    let executable = schedule.bind(&[("steps", Value::Int(steps)), ("x", Value::Tensor(x_init.clone()))])?;
    let Interpolant::Discrete(table) = &manifest.interpolant else {
        return Err("the end-to-end model has a discrete table".into());
    };
    let candle = CandleDdim::load(&checkpoint, &table.alphas_cumprod)?;

    // Warm up each path on a small batch: candle's thread pool, the allocator, the page cache.
    let warm_batch = batch.min(256);
    let small = Tensor::new(vec![warm_batch, SAMPLE], x_init.data[..warm_batch * SAMPLE].to_vec());
    let warm = schedule.bind(&[("steps", Value::Int(steps)), ("x", Value::Tensor(small.clone()))])?;
    for (engine, _) in ENGINES {
        run_sched(&warm, engine, &net, warm_batch)?;
    }
    candle.sample(&small, steps_usize)?;

    // Rounds alternate the three implementations, so that a slow moment of a shared machine does
    // not fall on one of them only; the best round of each counts.
    let rounds = options.rounds.max(1);
    let mut best = [f64::INFINITY; 3];
    let mut samples: Vec<(String, Vec<f32>)> = Vec::new();
    for round in 0..rounds {
        let mut outputs = Vec::new();
        for (slot, (engine, key)) in ENGINES.iter().enumerate() {
            let started = Instant::now();
            let out = run_sched(&executable, *engine, &net, batch)?;
            best[slot] = best[slot].min(started.elapsed().as_secs_f64());
            outputs.push((key.to_string(), out.data));
        }
        let started = Instant::now();
        let candle_sample = candle.sample(&x_init, steps_usize)?;
        best[2] = best[2].min(started.elapsed().as_secs_f64());
        outputs.push(("candle".into(), candle_sample));
        eprintln!("  round {}/{rounds}: {:.0?} ms", round + 1, best.map(|s| s * 1e3));
        samples = outputs;
    }
    for (key, seconds) in ["jit", "interpreter", "candle"].iter().zip(best) {
        results.push(&format!("e2e.{key}"), format!("{:.1}", seconds * 1e3), "ms");
    }

    let jit = &samples[0].1;
    let scale = jit.iter().map(|v| f64::from(v.abs())).fold(0.0, f64::max);
    results.push("e2e.rounds", rounds, "rounds");
    results.push("e2e.batch", batch, "samples");
    results.push("e2e.steps", steps, "steps");
    results.push("e2e.scale", format!("{scale:.3}"), "abs");
    results.push("e2e.interpreter.maxdiff", format!("{:.3e}", max_abs_diff(&samples[1].1, jit)), "abs");
    results.push("e2e.candle.maxdiff", format!("{:.3e}", max_abs_diff(&samples[2].1, jit)), "abs");
    let tensors: Vec<_> = samples.into_iter().map(|(key, data)| (key, vec![batch, SAMPLE], data)).collect();
    write_safetensors(&options.dir.join("samples.safetensors"), &tensors, None)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (d) Compile latency.

/// Parses and checks `source` (the front end), then compiles and binds every schedule in it with
/// its defaults (binding is where the JIT generates native code). Returns the seconds each half
/// took.
fn compile_and_bind(name: &str, source: &str) -> std::result::Result<(f64, f64), String> {
    let started = Instant::now();
    let program = compile(name, source).map_err(|e| e.to_string())?;
    let checked = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for schedule in program.schedules() {
        let executable =
            program.schedule(&schedule).and_then(|s| s.bind(&[])).map_err(|e| format!("`{schedule}`: {e}"))?;
        std::hint::black_box(executable);
    }
    Ok((checked, started.elapsed().as_secs_f64()))
}

/// The median of `values` (sorted here), in milliseconds.
fn median_ms(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN) * 1e3
}

fn compile_latency(options: &Options, results: &mut Results) -> Result<()> {
    eprintln!("(d) compile latency: parse + check + compile + bind, median of {} runs", options.runs);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "sched"))
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let source = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // The first run is a warm-up and tells whether the file runs at all.
        if let Err(reason) = compile_and_bind(&name, &source) {
            let reason = reason.lines().next().unwrap_or("").replace('\t', " ");
            results.push(&format!("compile.{name}"), "skipped", &reason);
            continue;
        }
        let (mut total, mut check, mut bind) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..options.runs.max(1) {
            let (c, b) = compile_and_bind(&name, &source)?;
            total.push(c + b);
            check.push(c);
            bind.push(b);
        }
        results.push(&format!("compile.{name}"), format!("{:.3}", median_ms(&mut total)), "ms");
        results.push(&format!("compile.{name}.check"), format!("{:.3}", median_ms(&mut check)), "ms");
        results.push(&format!("compile.{name}.bind"), format!("{:.3}", median_ms(&mut bind)), "ms");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The table.

/// One row: what is measured, its key, and optionally a ratio `numerator / denominator` with a
/// label (the keys may name rows of other sections).
struct Row {
    label: String,
    key: String,
    ratio: Option<[String; 3]>,
}

fn row(label: &str, key: &str, ratio: Option<(&str, &str, &str)>) -> Row {
    Row { label: label.to_string(), key: key.to_string(), ratio: ratio.map(|(n, d, l)| [n.into(), d.into(), l.into()]) }
}

fn format_value(results: &Results, key: &str) -> String {
    let Some((_, value, unit)) = results.rows.iter().rev().find(|(k, _, _)| k == key) else {
        return "n/a".into();
    };
    match value.parse::<f64>() {
        Ok(v) if unit == "ms" && v < 10.0 => format!("{v:.2} ms"),
        Ok(v) if unit == "ms" && v < 1000.0 => format!("{v:.1} ms"),
        Ok(v) if unit == "ms" => format!("{v:.0} ms"),
        Ok(v) if unit == "us/step" => format!("{v:.2} µs/step"),
        Ok(v) if unit == "GB/s" => format!("{v:.2} GB/s"),
        Ok(_) => format!("{value} {unit}"),
        Err(_) => value.clone(),
    }
}

fn format_ratio(results: &Results, ratio: Option<&[String; 3]>) -> String {
    let Some([numerator, denominator, label]) = ratio else { return String::new() };
    match (results.number(numerator), results.number(denominator)) {
        (Some(n), Some(d)) if d > 0.0 => format!("{label} = {:.2}×", n / d),
        _ => format!("{label} = n/a"),
    }
}

fn report(results: &Results) -> String {
    let mut sections: Vec<(String, Vec<Row>, Vec<String>)> = Vec::new();

    let host = vec![
        row("sched, JIT engine", "host.jit", None),
        row("sched, interpreter", "host.interpreter", Some(("host.interpreter", "host.jit", "interpreter / JIT"))),
        row(
            "diffusers DDIMScheduler.step, torch 1×2",
            "host.diffusers",
            Some(("host.diffusers", "host.jit", "diffusers / JIT")),
        ),
    ];
    let target = match (results.number("host.diffusers"), results.number("host.jit")) {
        (Some(d), Some(j)) if j > 0.0 => {
            format!("target diffusers / JIT ≥ 100×: {}", if d / j >= 100.0 { "met" } else { "NOT met" })
        }
        _ => "target diffusers / JIT ≥ 100×: n/a".into(),
    };
    sections.push(("(a) host overhead: DDIM-1000, null model, batch 1×[2]".into(), host, vec![target]));

    let len = results.text("kernel.len").unwrap_or("?").to_string();
    let threads = results.text("kernel.threads").unwrap_or("?").to_string();
    let mut kernel = vec![
        row("copy, 1 thread", "kernel.copy.1", None),
        row(&format!("copy, {threads} threads"), "kernel.copy.n", None),
    ];
    for (name, key) in [("η = 0", "eta0"), ("η > 0 (Gaussian)", "noise")] {
        kernel.push(row(&format!("{name}, reference evaluator"), &format!("kernel.{key}.reference"), None));
        let (one, all) = (format!("kernel.{key}.jit1"), format!("kernel.{key}.jitn"));
        kernel.push(row(&format!("{name}, JIT, 1 thread"), &one, Some((&one, "kernel.copy.1", "/ copy, 1 thread"))));
        let per_copy = format!("/ copy, {threads} threads");
        kernel.push(row(&format!("{name}, JIT, {threads} threads"), &all, Some((&all, "kernel.copy.n", &per_copy))));
        kernel.push(row(&format!("{name}, JIT compile"), &format!("kernel.{key}.compile"), None));
    }
    sections.push((
        format!("(b) fused DDIM update over {len} f32 (kernel: read x, ε, write x: 12 B/element; copy 8 B/element)"),
        kernel,
        Vec::new(),
    ));

    let batch = results.text("e2e.batch").unwrap_or("?").to_string();
    let steps = results.text("e2e.steps").unwrap_or("?").to_string();
    let rounds = results.text("e2e.rounds").unwrap_or("?").to_string();
    let e2e = vec![
        row("sched, JIT engine", "e2e.jit", None),
        row("sched, interpreter", "e2e.interpreter", Some(("e2e.interpreter", "e2e.jit", "interpreter / JIT"))),
        row("hand-written unfused candle loop", "e2e.candle", Some(("e2e.candle", "e2e.jit", "candle / JIT"))),
        row("diffusers DDIMScheduler + torch", "e2e.diffusers", Some(("e2e.diffusers", "e2e.jit", "diffusers / JIT"))),
    ];
    let mut notes = vec![format!(
        "max |x − x_JIT|: interpreter {}, candle {}, diffusers {} (max |x_JIT| = {})",
        results.text("e2e.interpreter.maxdiff").unwrap_or("n/a"),
        results.text("e2e.candle.maxdiff").unwrap_or("n/a"),
        results.text("e2e.diffusers.maxdiff").unwrap_or("n/a"),
        results.text("e2e.scale").unwrap_or("n/a"),
    )];
    if batch != (1usize << 16).to_string() {
        notes.push(format!(
            "batch {batch}, not 2^16 = 65536: that takes over 30 s per engine on a 2-core machine \
             (BATCH=65536 bench/run.sh runs it; bench/README.md)"
        ));
    }
    sections.push((
        format!(
            "(c) end to end: DDIM-{steps}, MLP width {WIDTH} (random, ε on the linear table), batch {batch}×[2], \
             best of {rounds}"
        ),
        e2e,
        notes,
    ));

    let mut compile_rows = Vec::new();
    let mut skipped = Vec::new();
    for (key, value, unit) in &results.rows {
        let Some(file) = key.strip_prefix("compile.") else { continue };
        if file.ends_with(".check") || file.ends_with(".bind") {
            continue;
        }
        if value == "skipped" {
            skipped.push(format!("skipped {file}: {unit}"));
        } else if !compile_rows.iter().any(|r: &Row| r.key == *key) {
            compile_rows.push(row(file, key, None));
        }
    }
    let over: Vec<&str> = compile_rows
        .iter()
        .filter(|r| results.number(&r.key).is_some_and(|ms| ms > 10.0))
        .map(|r| r.label.as_str())
        .collect();
    let mut notes = vec![if over.is_empty() {
        "target ≤ 10 ms each: met".to_string()
    } else {
        format!("target ≤ 10 ms each: NOT met by {}", over.join(", "))
    }];
    notes.extend(skipped);
    sections.push(("(d) compile latency: parse + check + compile + bind, median".into(), compile_rows, notes));

    // Render: one table with a section header line per benchmark. Compile rows show their two
    // halves where a ratio would be.
    let third =
        |r: &Row| match (results.number(&format!("{}.check", r.key)), results.number(&format!("{}.bind", r.key))) {
            (Some(check), Some(bind)) => format!("parse + check {check:.2} ms, compile + bind {bind:.2} ms"),
            _ => format_ratio(results, r.ratio.as_ref()),
        };
    let cells: Vec<Vec<[String; 3]>> = sections
        .iter()
        .map(|(_, rows, _)| rows.iter().map(|r| [r.label.clone(), format_value(results, &r.key), third(r)]).collect())
        .collect();
    let width = |i: usize| cells.iter().flatten().map(|c| c[i].chars().count()).max().unwrap_or(0);
    // The first column holds the labels indented by two spaces.
    let widths = [width(0).max(9) + 2, width(1).max(5), width(2).max(5)];
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let rule = format!("{}\n", "─".repeat(widths.iter().sum::<usize>() + 6));
    let mut out = String::new();
    out.push_str(&rule);
    out.push_str(&format!("{}  {}  {}\n", pad("measured", widths[0]), pad("value", widths[1]), "ratio"));
    for ((title, _, notes), rows) in sections.iter().zip(&cells) {
        out.push_str(&rule);
        out.push_str(&format!("{title}\n"));
        for [label, value, ratio] in rows {
            let line = format!("  {}  {}  {ratio}", pad(label, widths[0] - 2), pad(value, widths[1]));
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for note in notes {
            out.push_str(&format!("  · {note}\n"));
        }
    }
    out.push_str(&rule);
    out
}
