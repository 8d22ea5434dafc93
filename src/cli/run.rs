//! `sched run`: bind a schedule's parameters, load its models and run it through the embedding
//! API, then report and write what it emitted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sched::api::{
    ApiError, DeviceKind, Engine, Function, Model, OutputValue, Outputs, ParamTy, Program, Prompt, ReplaySummary,
    RunOptions, Tensor, Transfers, Value, encode_prompt, read_tensor,
};

use super::stream::{Stream, stop_at};

/// Everything `sched run` was asked to do.
pub struct RunRequest {
    pub schedule: Option<String>,
    /// `NAME=SPEC` model bindings.
    pub models: Vec<String>,
    /// `NAME=VALUE` parameter values.
    pub params: Vec<String>,
    /// `NAME=FILE` tensor parameters.
    pub inputs: Vec<String>,
    /// The rows of the run; the default is one for a language model (its text streams), else 256.
    pub batch: Option<usize>,
    pub seed: u64,
    /// Runs with seeds `seed`, `seed + 1`, ..., whose outputs are concatenated.
    pub runs: usize,
    pub out: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub json: bool,
    pub progress: bool,
    pub engine: Engine,
    pub device: DeviceKind,
    /// What starts every row of `prompt()`.
    pub prompt: Option<Prompt>,
    /// Texts that end a row where they appear in its new text.
    pub stop: Vec<String>,
}

/// A failure of `sched run` before or while running.
pub enum RunFailure {
    /// What the embedding API refused.
    Api(ApiError),
    /// A mistake in the command line or its files (exit 2).
    Usage(String),
    /// The program, its models or its run failed (exit 1).
    Failed(String),
}

impl From<ApiError> for RunFailure {
    fn from(error: ApiError) -> RunFailure {
        RunFailure::Api(error)
    }
}

fn usage(message: impl Into<String>) -> RunFailure {
    RunFailure::Usage(message.into())
}

fn failure(message: impl Into<String>) -> RunFailure {
    RunFailure::Failed(message.into())
}

/// The result of a run, for printing.
pub struct RunReport {
    pub schedule: String,
    pub outputs: Vec<(String, OutputValue)>,
    /// The runs (`--runs`); the counts below are those of the first, the transfers and the time
    /// those of all of them.
    pub runs: usize,
    /// How the runs after the first two went, when there were several.
    pub replay: Option<ReplaySummary>,
    pub model_calls: u64,
    /// Model evaluations by model parameter, in the order of `models`.
    pub model_calls_by_model: Vec<u64>,
    pub kernel_launches: u64,
    /// Verbs completed (the steps of the schedule).
    pub verbs: u64,
    /// Where the kernels ran, and what moved between the host and the device.
    pub device: String,
    pub transfers: Transfers,
    pub seconds: f64,
    pub models: Vec<(String, String)>,
    /// The prompt's length in tokens (0 without a prompt).
    pub prompt_tokens: usize,
    /// Whether row 0's text was written to standard output as it grew (then the summary goes to
    /// standard error).
    pub streamed: bool,
}

impl RunReport {
    /// New tokens per row of the first emitted token output, and per model call: (generated
    /// tokens per row, tokens per model call), when the schedule emitted tokens.
    pub fn token_rate(&self) -> Option<(f64, f64)> {
        let rows = self.outputs.iter().find_map(|(_, value)| match value {
            OutputValue::Tokens { rows, .. } => Some(rows),
            _ => None,
        })?;
        let generated: usize = rows.iter().map(|row| row.len().saturating_sub(self.prompt_tokens)).sum();
        let per_row = generated as f64 / rows.len().max(1) as f64;
        Some((per_row, per_row / self.model_calls.max(1) as f64))
    }
}

/// Binds the requested parameters of schedule `schedule` (so they fold into the code), loads its
/// models, and runs it, all through the embedding API.
pub fn run(program: &Program, schedule: &str, path: &Path, request: &RunRequest) -> Result<RunReport, RunFailure> {
    let schedule = program.schedule(schedule)?;
    let mut values = Vec::new();
    for binding in &request.params {
        let (name, text) = split_binding(binding, "--param")?;
        values.push((name, schedule.parse_value(name, text)?));
    }
    for binding in &request.inputs {
        let (name, file) = split_binding(binding, "--input")?;
        if let Some(param) = schedule.params()?.iter().find(|p| p.name == name)
            && param.ty != ParamTy::Tensor
        {
            return Err(usage(format!("`{name}` is not a tensor parameter; use `--param {name}=VALUE`")));
        }
        values.push((name, Value::Tensor(read_tensor(Path::new(file))?)));
    }
    let executable = schedule.bind(&values)?;
    let specs = request.models.iter().map(|m| split_binding(m, "--model")).collect::<Result<Vec<_>, _>>()?;
    let models = executable.load_models(&specs, path.parent())?;
    let models: Vec<(&str, Arc<dyn Model>)> = models.iter().map(|(name, m)| (name.as_str(), Arc::clone(m))).collect();
    let function = executable.function();
    // A spinner counting verbs, shown once the run has taken a second.
    let bar = (request.progress && !request.json).then(|| progress_bar(function));
    let started = Instant::now();
    let verbs_done = std::sync::atomic::AtomicU64::new(0);
    let tick = |_: u32| {
        let done = verbs_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if let Some(bar) = bar.as_ref().filter(|_| started.elapsed().as_secs_f64() > 1.0) {
            bar.set_position(done);
        }
    };
    let device = request.device.open().map_err(|e| {
        failure(format!("cannot open the device: {e}\nhelp: run on the CPU (the default, `--device cpu`); docs/gpu.md says what CUDA needs"))
    })?;
    let device_name = device.as_ref().map_or_else(|| "cpu".to_string(), |d| d.name());
    let bound: Vec<Arc<dyn Model>> = models.iter().map(|(_, m)| Arc::clone(m)).collect();
    let prompt = match &request.prompt {
        Some(prompt) => encode_prompt(&bound, prompt)?,
        None => Vec::new(),
    };
    let prompt_tokens = prompt.len();
    // A language model writes text: one row by default, streamed as it grows.
    let language_model = bound.iter().filter_map(|m| m.tokens()).find(|m| m.text().is_some());
    let batch = request.batch.unwrap_or(if language_model.is_some() { 1 } else { 256 });
    let stream = language_model.and_then(|model| {
        let live = batch == 1 && request.runs == 1 && !request.json;
        (live || !request.stop.is_empty()).then(|| {
            let codec = model.text()?;
            Some(Stream::new(codec, prompt_tokens, model.vocab().eos, &request.stop, live, request.progress && live))
        })?
    });
    let on_tokens = |rows: &[Vec<u32>]| stream.as_ref().map_or_else(Vec::new, |s| s.on_tokens(rows));
    let options = RunOptions {
        seed: request.seed,
        batch,
        on_verb: Some(&tick),
        device,
        prompt,
        on_tokens: stream.is_some().then_some(&on_tokens as &(dyn Fn(&[Vec<u32>]) -> Vec<usize> + Sync)),
        ..RunOptions::default()
    };
    if request.runs == 0 {
        return Err(usage("--runs must be at least 1"));
    }
    let (runs, replay) = if request.runs == 1 {
        (vec![executable.run_on(request.engine, &models, &options)?], None)
    } else {
        let seeds: Vec<u64> = (0..request.runs as u64).map(|k| request.seed.wrapping_add(k)).collect();
        let runs = executable.run_seeds(request.engine, &models, &options, &seeds)?;
        (runs.runs, Some(runs.replay))
    };
    let mut outputs = concatenated(runs)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // The texts end where a stop string starts, as the rows did.
    for (_, value) in &mut outputs.values {
        if let OutputValue::Tokens { text: Some(texts), .. } = value {
            for text in texts {
                if let Some(at) = stop_at(text, &request.stop) {
                    text.truncate(at);
                }
            }
        }
    }
    let streamed = stream.as_ref().is_some_and(|s| s.is_live());
    if let Some(stream) = &stream {
        let generated = outputs.values.iter().find_map(|(_, v)| match v {
            OutputValue::Tokens { rows, .. } => rows.first().map(|row| row.len().saturating_sub(prompt_tokens)),
            _ => None,
        });
        stream.finish(generated.unwrap_or(0));
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(out) = &request.out {
        write_outputs(out, &outputs.values)?;
    }
    if let Some(plot) = &request.plot {
        plot_outputs(plot, &outputs.values)?;
    }
    Ok(RunReport {
        schedule: function.name.clone(),
        outputs: outputs.values,
        runs: request.runs,
        replay,
        model_calls: outputs.model_calls,
        model_calls_by_model: outputs.model_calls_by_model,
        kernel_launches: outputs.kernel_launches,
        verbs: verbs_done.load(std::sync::atomic::Ordering::Relaxed),
        device: device_name,
        transfers: outputs.transfers,
        seconds,
        prompt_tokens,
        streamed,
        models: models.iter().map(|(name, model)| (name.to_string(), model.info().source.clone())).collect(),
    })
}

/// The outputs of several runs as one: tensors concatenated along the batch axis and token rows
/// one after another; the counts are the first run's and the transfers the sum of all.
fn concatenated(runs: Vec<Outputs>) -> Result<Outputs, RunFailure> {
    let mut runs = runs.into_iter();
    let Some(mut merged) = runs.next() else { return Err(usage("--runs must be at least 1")) };
    for run in runs {
        for ((name, into), (_, value)) in merged.values.iter_mut().zip(run.values) {
            match (into, value) {
                (OutputValue::Tensor(into), OutputValue::Tensor(tensor))
                    if !into.shape.is_empty() && into.shape.get(1..) == tensor.shape.get(1..) =>
                {
                    into.shape[0] += tensor.shape[0];
                    into.data.extend(tensor.data);
                }
                (OutputValue::Tokens { rows: into, text: into_text }, OutputValue::Tokens { rows, text }) => {
                    into.extend(rows);
                    if let (Some(into_text), Some(text)) = (into_text, text) {
                        into_text.extend(text);
                    }
                }
                (into, value) if *into == value => {}
                (_, value) => {
                    return Err(failure(format!(
                        "--runs concatenates tensors and token rows, and output `{name}` ({value:?}) differs from                          run to run; run once per seed instead"
                    )));
                }
            }
        }
        merged.transfers += run.transfers;
    }
    Ok(merged)
}

fn progress_bar(function: &Function) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {prefix}: {pos} steps, {elapsed}") {
        bar.set_style(style);
    }
    bar.set_prefix(function.name.clone());
    bar
}

fn split_binding<'a>(text: &'a str, flag: &str) -> Result<(&'a str, &'a str), RunFailure> {
    text.split_once('=').ok_or_else(|| usage(format!("`{flag} {text}` must look like NAME=VALUE")))
}

/// Writes every emitted tensor: all of them into one `.safetensors`, or the first into `.npy`.
fn write_outputs(path: &Path, outputs: &[(String, OutputValue)]) -> Result<(), RunFailure> {
    let tensors: Vec<(&String, &Tensor)> = outputs
        .iter()
        .filter_map(|(name, value)| match value {
            OutputValue::Tensor(t) => Some((name, t)),
            _ => None,
        })
        .collect();
    let io = |e: std::io::Error| usage(format!("cannot write {}: {e}", path.display()));
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => {
            let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
                .iter()
                .map(|(name, t)| {
                    ((*name).clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone())
                })
                .collect();
            let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
                .iter()
                .filter_map(|(name, data, shape)| {
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                        .ok()
                        .map(|v| (name.clone(), v))
                })
                .collect();
            let serialized =
                safetensors::serialize(views, None).map_err(|e| usage(format!("cannot encode outputs: {e}")))?;
            std::fs::write(path, serialized).map_err(io)
        }
        Some("npy") => {
            let Some((_, tensor)) = tensors.first() else {
                return Err(usage("the schedule emitted no tensor to write"));
            };
            let mut bytes = Vec::new();
            {
                let shape: Vec<u64> = tensor.shape.iter().map(|&d| d as u64).collect();
                use npyz::WriterBuilder;
                let mut writer = npyz::WriteOptions::<f32>::new()
                    .default_dtype()
                    .shape(&shape)
                    .writer(&mut bytes)
                    .begin_nd()
                    .map_err(io)?;
                writer.extend(tensor.data.iter().copied()).map_err(io)?;
                writer.finish().map_err(io)?;
            }
            std::fs::write(path, bytes).map_err(io)
        }
        _ => Err(usage(format!("{}: outputs are written as .safetensors or .npy", path.display()))),
    }
}

/// Draws the first emitted tensor of 2-D samples as a scatter plot.
fn plot_outputs(path: &Path, outputs: &[(String, OutputValue)]) -> Result<(), RunFailure> {
    use plotters::prelude::*;
    let Some(tensor) = outputs.iter().find_map(|(_, v)| match v {
        OutputValue::Tensor(t) if t.per_sample() == 2 => Some(t),
        _ => None,
    }) else {
        return Err(usage("--plot draws 2-D samples, and the schedule emitted none"));
    };
    let points: Vec<(f64, f64)> = tensor.data.chunks_exact(2).map(|p| (f64::from(p[0]), f64::from(p[1]))).collect();
    let extent =
        points.iter().flat_map(|(x, y)| [x.abs(), y.abs()]).filter(|v| v.is_finite()).fold(1.0f64, f64::max) * 1.05;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (640, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root).margin(20).build_cartesian_2d(-extent..extent, -extent..extent)?;
        chart.configure_mesh().disable_x_mesh().disable_y_mesh().draw()?;
        chart.draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 2, BLUE.mix(0.5).filled())))?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| usage(format!("cannot draw {}: {e}", path.display())))
}

/// The human-readable summary: one line per output with its shape and statistics.
pub fn summary(report: &RunReport) -> String {
    let mut out = format!(
        "schedule {}: {} model calls, {} kernel launches, {:.3} s\n",
        report.schedule, report.model_calls, report.kernel_launches, report.seconds
    );
    if let Some(replay) = &report.replay {
        let how = match (&replay.why_not, replay.graph) {
            (Some(why), _) => format!("none replayed: {why}"),
            (None, true) => format!("{} replayed as one graph launch each ({} steps)", replay.replays, replay.steps),
            (None, false) => format!("{} replayed launch by launch ({} steps)", replay.replays, replay.steps),
        };
        out.push_str(&format!("  {} runs (the counts are per run): {how}\n", report.runs));
    }
    for (name, value) in &report.outputs {
        out.push_str(&match value {
            OutputValue::Tensor(t) => {
                let (mean, std) = mean_std(&t.data);
                format!("  {name}: tensor {:?}, mean {mean:.6}, std {std:.6}\n", t.shape)
            }
            OutputValue::F64(v) => format!("  {name}: {v}\n"),
            OutputValue::I64(v) => format!("  {name}: {v}\n"),
            OutputValue::Bool(v) => format!("  {name}: {v}\n"),
            OutputValue::Tokens { rows, text } => {
                let mut lines = format!("  {name}: {} rows of tokens\n", rows.len());
                for (index, row) in rows.iter().enumerate().take(SHOWN_ROWS) {
                    let shown = match text {
                        Some(text) => format!("{:?}", text[index]),
                        None => format!("{row:?}"),
                    };
                    lines.push_str(&format!("    {index}: {shown}\n"));
                }
                if rows.len() > SHOWN_ROWS {
                    lines.push_str(&format!("    ... {} more (--json prints all)\n", rows.len() - SHOWN_ROWS));
                }
                lines
            }
        });
    }
    if let Some((per_row, per_call)) = report.token_rate() {
        out.push_str(&format!("  {per_row:.2} new tokens per row, {per_call:.3} per model call\n"));
    }
    out
}

/// The rows of a token output the summary shows.
const SHOWN_ROWS: usize = 8;

/// The machine-readable summary (`--json`).
pub fn json(report: &RunReport) -> String {
    let outputs: Vec<serde_json::Value> = report
        .outputs
        .iter()
        .map(|(name, value)| match value {
            OutputValue::Tensor(t) => {
                let (mean, std) = mean_std(&t.data);
                serde_json::json!({"name": name, "shape": t.shape, "mean": mean, "std": std})
            }
            OutputValue::F64(v) => serde_json::json!({"name": name, "value": v}),
            OutputValue::I64(v) => serde_json::json!({"name": name, "value": v}),
            OutputValue::Bool(v) => serde_json::json!({"name": name, "value": v}),
            OutputValue::Tokens { rows, text } => serde_json::json!({"name": name, "tokens": rows, "text": text}),
        })
        .collect();
    let (tokens_per_row, tokens_per_call) = report.token_rate().unzip();
    let t = &report.transfers;
    let per_row = report.token_rate().map(|(per_row, _)| per_row);
    let models: Vec<serde_json::Value> = report
        .models
        .iter()
        .zip(&report.model_calls_by_model)
        .map(|((name, source), &calls)| {
            // New tokens per call of this model (for speculative decoding, per target call).
            let tokens_per_call = per_row.filter(|_| calls > 0).map(|n| n / calls as f64);
            serde_json::json!({"name": name, "source": source, "nfe": calls, "tokens_per_call": tokens_per_call})
        })
        .collect();
    serde_json::json!({
        "schedule": report.schedule,
        "nfe": report.model_calls,
        "kernel_launches": report.kernel_launches,
        "steps": report.verbs,
        "launches_per_step": report.kernel_launches as f64 / report.verbs.max(1) as f64,
        "device": report.device,
        "transfers": {
            "uploads": t.uploads,
            "upload_bytes": t.upload_bytes,
            "downloads": t.downloads,
            "download_bytes": t.download_bytes,
            "reductions_read_back": t.reductions,
            "host_syncs": t.syncs(),
            "host_model_calls": t.host_model_calls,
            "device_model_calls": t.device_model_calls,
        },
        "wall_seconds": report.seconds,
        "runs": report.runs,
        "replay": report.replay.as_ref().map(|r| serde_json::json!({
            "replays": r.replays,
            "graph": r.graph,
            "steps_per_replay": r.steps,
            "why_not": r.why_not,
        })),
        "new_tokens_per_row": tokens_per_row,
        "tokens_per_model_call": tokens_per_call,
        "models": models,
        "outputs": outputs,
    })
    .to_string()
}

fn mean_std(data: &[f32]) -> (f64, f64) {
    let n = data.len().max(1) as f64;
    let mean = data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = data.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}
