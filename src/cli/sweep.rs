//! `sched sweep`: run schedules over a grid of parameters and measure sample quality against
//! held-out data, with the model calls (NFE) and the wall time of each run.
//!
//! A sweep is a list of lines, each a schedule with its models and a grid of parameter values; a
//! line gives one point per combination of values. Each point runs with `seeds` sampler seeds
//! (0, 1, ...), draws `samples` samples per run, and scores them with a metric
//! ([`sched_train::metrics`]) against `samples` held-out points of a data set
//! ([`sched_train::datasets`]) drawn with [`HELD_OUT_SEED`], a seed no training program uses.
//! The point's quality is the mean over seeds, with their standard deviation as its error bar.
//!
//! Lines come from the command line (every `.sched` file with the same `--model` and `--param`
//! flags) or from a TOML sweep file (docs/study.md shows one):
//!
//! ```toml
//! data = "checker"            # the held-out data set (the command line's --data wins)
//! metric = "sw2"              # sw2 or mmd
//! samples = 2000
//! seeds = 3
//!
//! [[line]]
//! label = "Euler, velocity model"
//! file = "../examples/flow_euler.sched"          # relative to the sweep file
//! schedule = "sample"                             # default: the file's first
//! models = { net = "../examples/models/{data}/velocity.safetensors" }  # {data}: the data set
//! params = { steps = [1, 2, 4, 8] }               # a list is a grid axis; a value is fixed
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sched::api::{Engine, Model, OutputValue, RunOptions, Tensor, Value, compile, load_model};
use sched_train::datasets::Dataset;
use sched_train::metrics::{Estimate, Metric};

/// The seed of the held-out data; the training programs draw their data with other seeds.
pub const HELD_OUT_SEED: u64 = 0x005e_ed0f_da7a;

/// One line of a sweep: a schedule, its models, and its parameter grid.
#[derive(Clone, Debug)]
pub struct Line {
    pub label: String,
    pub file: PathBuf,
    pub schedule: Option<String>,
    /// Model bindings, `{data}` not yet replaced.
    pub models: Vec<(String, String)>,
    /// Each parameter's values (one value: fixed; several: a grid axis), as written.
    pub params: Vec<(String, Vec<String>)>,
}

/// What to sweep and how to score it.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub lines: Vec<Line>,
    pub data: Dataset,
    pub metric: Metric,
    pub samples: usize,
    pub seeds: u64,
    pub engine: Engine,
}

/// One point of a line: its parameter values, its NFE, and its quality over the seeds.
#[derive(Clone, Debug)]
pub struct Point {
    pub label: String,
    pub params: Vec<(String, String)>,
    pub nfe: u64,
    pub quality: Estimate,
    /// The mean wall time of one run, in milliseconds.
    pub wall_ms: f64,
}

/// Reads a TOML sweep file; `data` from the command line replaces the file's.
pub fn read_sweep_file(path: &Path) -> Result<(Vec<Line>, SweepDefaults), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| format!("{}: {}", path.display(), e.message()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let known = ["data", "metric", "samples", "seeds", "line"];
    if let Some(key) = table.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("{}: unknown key `{key}` (known: {})", path.display(), known.join(", ")));
    }
    let text_of = |key: &str| table.get(key).and_then(toml::Value::as_str).map(str::to_string);
    let number_of = |key: &str| table.get(key).and_then(toml::Value::as_integer);
    let defaults = SweepDefaults {
        data: text_of("data"),
        metric: text_of("metric"),
        samples: number_of("samples").and_then(|n| usize::try_from(n).ok()),
        seeds: number_of("seeds").and_then(|n| u64::try_from(n).ok()),
    };
    let Some(lines) = table.get("line").and_then(toml::Value::as_array) else {
        return Err(format!("{}: no [[line]] tables", path.display()));
    };
    let mut out = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let where_ = || format!("{}: line {}", path.display(), index + 1);
        let Some(line) = line.as_table() else { return Err(format!("{}: not a table", where_())) };
        let known = ["label", "file", "schedule", "models", "params"];
        if let Some(key) = line.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("{}: unknown key `{key}` (known: {})", where_(), known.join(", ")));
        }
        let get = |key: &str| line.get(key).and_then(toml::Value::as_str).map(str::to_string);
        let file = get("file").ok_or_else(|| format!("{}: `file` is required", where_()))?;
        let models = match line.get("models").and_then(toml::Value::as_table) {
            Some(models) => models
                .iter()
                .map(|(name, spec)| match spec.as_str() {
                    Some(spec) => Ok((name.clone(), resolve_model(base, spec))),
                    None => Err(format!("{}: model `{name}` must be a string", where_())),
                })
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let params = match line.get("params").and_then(toml::Value::as_table) {
            Some(params) => params
                .iter()
                .map(|(name, value)| {
                    let values = match value {
                        toml::Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
                        other => scalar(other).map(|v| vec![v]),
                    };
                    values.filter(|v| !v.is_empty()).map(|v| (name.clone(), v)).ok_or_else(|| {
                        format!("{}: parameter `{name}` must be a number, a bool or a list of them", where_())
                    })
                })
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        out.push(Line {
            label: get("label").unwrap_or_else(|| file.clone()),
            file: base.join(&file),
            schedule: get("schedule"),
            models,
            params,
        });
    }
    Ok((out, defaults))
}

/// A model spec of a sweep file: an analytic spec as is, a path relative to the file.
fn resolve_model(base: &Path, spec: &str) -> String {
    if spec.starts_with("analytic:") || Path::new(spec).is_absolute() {
        spec.to_string()
    } else {
        base.join(spec).display().to_string()
    }
}

/// A TOML scalar as the text `--param` would take.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::Integer(v) => Some(v.to_string()),
        toml::Value::Float(v) => Some(v.to_string()),
        toml::Value::Boolean(v) => Some(v.to_string()),
        _ => None,
    }
}

/// What a sweep file sets unless the command line does.
#[derive(Clone, Debug, Default)]
pub struct SweepDefaults {
    pub data: Option<String>,
    pub metric: Option<String>,
    pub samples: Option<usize>,
    pub seeds: Option<u64>,
}

/// Every combination of the grid's values, in the order the grid lists them.
fn combinations(params: &[(String, Vec<String>)]) -> Vec<Vec<(String, String)>> {
    let mut all = vec![Vec::new()];
    for (name, values) in params {
        all = all
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |value| {
                    let mut next = prefix.clone();
                    next.push((name.clone(), value.clone()));
                    next
                })
            })
            .collect();
    }
    all
}

/// The samples a run emitted: its first tensor with the data set's sample size.
fn emitted_samples(values: &[(String, OutputValue)], dim: usize) -> Option<Tensor> {
    values.iter().find_map(|(_, value)| match value {
        OutputValue::Tensor(t) if t.per_sample() == dim => Some(t.clone()),
        _ => None,
    })
}

/// Runs the sweep, calling `progress` with each finished point.
pub fn run(sweep: &Sweep, progress: &dyn Fn(&Point)) -> Result<Vec<Point>, String> {
    let held_out = sweep.data.sample(sweep.samples, HELD_OUT_SEED);
    let mut points = Vec::new();
    for line in &sweep.lines {
        let name = line.file.display().to_string();
        let source = std::fs::read_to_string(&line.file).map_err(|e| format!("cannot read {name}: {e}"))?;
        let program = compile(&name, &source).map_err(|d| format!("{name} does not check:\n{d}"))?;
        let schedule = match &line.schedule {
            Some(schedule) => schedule.clone(),
            None => program.schedules().into_iter().next().ok_or_else(|| format!("{name} has no schedule"))?,
        };
        let base = line.file.parent().map(Path::to_path_buf);
        let mut loaded: BTreeMap<String, Arc<dyn Model>> = BTreeMap::new();
        let schedule = program.schedule(&schedule).map_err(|e| format!("{}: {e}", line.label))?;
        for combination in combinations(&line.params) {
            let values: Vec<(&str, Value)> = combination
                .iter()
                .map(|(name, text)| schedule.parse_value(name, text).map(|v| (name.as_str(), v)))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", line.label))?;
            let executable = schedule.bind(&values).map_err(|e| format!("{}: {e}", line.label))?;
            let mut models: Vec<(&str, Arc<dyn Model>)> = Vec::new();
            for model in &executable.function().models {
                let given = line.models.iter().find(|(n, _)| *n == model.name).map(|(_, spec)| spec.clone());
                let (spec, dir) = match (given, &model.default_spec) {
                    (Some(spec), _) => (spec.replace("{data}", sweep.data.name()), None),
                    (None, Some(spec)) => (spec.clone(), base.as_deref()),
                    (None, None) => {
                        return Err(format!("{}: model `{}` has no default; bind it", line.label, model.name));
                    }
                };
                let net = match loaded.get(&spec) {
                    Some(net) => Arc::clone(net),
                    None => {
                        let net = load_model(&spec, dir)
                            .map_err(|e| format!("{}: model `{}`: {e}", line.label, model.name))?;
                        loaded.insert(spec.clone(), Arc::clone(&net));
                        net
                    }
                };
                models.push((model.name.as_str(), net));
            }
            let mut scores = Vec::new();
            let (mut nfe, mut wall) = (0, 0.0);
            for seed in 0..sweep.seeds {
                let options = RunOptions { seed, batch: sweep.samples, ..RunOptions::default() };
                let started = Instant::now();
                let outputs = executable
                    .run_on(sweep.engine, &models, &options)
                    .map_err(|e| format!("{} ({}): {e}", line.label, describe(&combination)))?;
                wall += started.elapsed().as_secs_f64() * 1e3;
                nfe = outputs.model_calls;
                let samples = emitted_samples(&outputs.values, held_out.per_sample()).ok_or_else(|| {
                    format!("{}: the schedule emitted no {}-D samples", line.label, held_out.per_sample())
                })?;
                // A diverged run (non-finite samples) scores infinitely badly rather than failing.
                let score = sweep.metric.evaluate(&samples, &held_out, seed).unwrap_or(f64::INFINITY);
                scores.push(score);
            }
            let quality =
                Estimate::of(&scores).unwrap_or(Estimate { mean: f64::INFINITY, std: 0.0, count: scores.len() });
            let point = Point {
                label: line.label.clone(),
                params: combination,
                nfe,
                quality,
                wall_ms: wall / sweep.seeds.max(1) as f64,
            };
            progress(&point);
            points.push(point);
        }
    }
    Ok(points)
}

/// The score of perfect samples: the metric between fresh draws of the data set itself (seeds
/// other than the held-out one and the training programs') and the held-out data, over as many
/// seeds as the sweep uses. No schedule can beat it by more than its error bar; it is the floor
/// that finite samples leave.
pub fn floor(sweep: &Sweep) -> Result<Estimate, String> {
    let held_out = sweep.data.sample(sweep.samples, HELD_OUT_SEED);
    let scores = (1..=sweep.seeds)
        .map(|k| {
            let fresh = sweep.data.sample(sweep.samples, HELD_OUT_SEED + k);
            sweep.metric.evaluate(&fresh, &held_out, k - 1).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<f64>, String>>()?;
    Estimate::of(&scores).ok_or_else(|| "the data set's own score is not finite".to_string())
}

/// `steps=4, eta=0` for messages and tables.
pub fn describe(params: &[(String, String)]) -> String {
    params.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(", ")
}

/// The points as CSV: one row per point.
pub fn csv(points: &[Point], metric: Metric, data: Dataset) -> Result<String, String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = ["label", "params", "nfe", "data", "metric", "mean", "std", "seeds", "wall_ms"];
    writer.write_record(header).map_err(|e| e.to_string())?;
    for p in points {
        writer
            .write_record([
                p.label.clone(),
                describe(&p.params),
                p.nfe.to_string(),
                data.name().to_string(),
                metric.name().to_string(),
                format!("{:.6}", p.quality.mean),
                format!("{:.6}", p.quality.std),
                p.quality.count.to_string(),
                format!("{:.3}", p.wall_ms),
            ])
            .map_err(|e| e.to_string())?;
    }
    let bytes = writer.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// For each NFE budget, the best point of each line within it, ranked: the headline table.
pub fn budget_table(points: &[Point], budgets: &[u64], metric: Metric) -> String {
    let mut out = String::new();
    for &budget in budgets {
        let mut best: BTreeMap<&str, &Point> = BTreeMap::new();
        for p in points.iter().filter(|p| p.nfe <= budget && p.quality.mean.is_finite()) {
            let entry = best.entry(p.label.as_str()).or_insert(p);
            if p.quality.mean < entry.quality.mean {
                *entry = p;
            }
        }
        let mut ranked: Vec<&Point> = best.into_values().collect();
        ranked.sort_by(|a, b| a.quality.mean.total_cmp(&b.quality.mean));
        out.push_str(&format!("\nAt most {budget} NFE ({} of held-out data; lower is better):\n\n", metric.name()));
        out.push_str("| rank | schedule | NFE | parameters | quality | vs best |\n|---|---|---|---|---|---|\n");
        let first = ranked.first().map_or(f64::NAN, |p| p.quality.mean);
        for (rank, p) in ranked.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.4} ± {:.4} | {:.2}x |\n",
                rank + 1,
                p.label,
                p.nfe,
                describe(&p.params),
                p.quality.mean,
                p.quality.std,
                p.quality.mean / first
            ));
        }
        if ranked.is_empty() {
            out.push_str("| - | no schedule runs within this budget | | | | |\n");
        }
    }
    out
}

/// Draws quality against NFE (log-log), one line per label with error bars, as SVG.
pub fn plot(path: &Path, points: &[Point], title: &str, metric: Metric) -> Result<(), String> {
    use plotters::prelude::*;
    let finite: Vec<&Point> =
        points.iter().filter(|p| p.quality.mean.is_finite() && p.quality.mean > 0.0 && p.nfe > 0).collect();
    if finite.is_empty() {
        return Err("no point has a finite, positive quality to draw".into());
    }
    let max_nfe = finite.iter().map(|p| p.nfe).max().unwrap_or(1) as f64;
    let (low, high) = finite.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min((p.quality.mean - p.quality.std).max(p.quality.mean * 0.5)), hi.max(p.quality.mean + p.quality.std))
    });
    let mut labels: Vec<&str> = Vec::new();
    for p in &finite {
        if !labels.contains(&p.label.as_str()) {
            labels.push(&p.label);
        }
    }
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d((0.8..max_nfe * 1.25).log_scale(), (low * 0.8..high * 1.25).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("model evaluations (NFE)")
            .y_desc(format!("{} to held-out data (lower is better)", metric.name()))
            .draw()?;
        for (index, label) in labels.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            let mut line: Vec<&&Point> = finite.iter().filter(|p| p.label == *label).collect();
            line.sort_by_key(|p| p.nfe);
            chart
                .draw_series(LineSeries::new(
                    line.iter().map(|p| (p.nfe as f64, p.quality.mean)),
                    color.stroke_width(2),
                ))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(line.iter().map(|p| {
                let (mean, std) = (p.quality.mean, p.quality.std);
                ErrorBar::new_vertical(p.nfe as f64, (mean - std).max(low * 0.8), mean, mean + std, color.filled(), 6)
            }))?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| format!("cannot draw {}: {e}", path.display()))
}
