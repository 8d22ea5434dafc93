//! The `sched` command line: its arguments (clap), and each command as a client of the embedding
//! API ([`sched::api`]). Only this module decides colours and widths, and only it imports clap.

mod build;
mod check;
mod run;
mod stream;
mod sweep;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sched::api::render::Style;

use self::check::Outcome;

/// When diagnostics are coloured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// The style of diagnostics written to standard error.
    fn style(self) -> Style {
        Style::new(match self {
            ColorChoice::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            ColorChoice::Always => true,
            ColorChoice::Never => false,
        })
    }
}

/// `--engine`: what executes the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum EngineArg {
    /// Native code compiled with Cranelift: host control code and fused kernels (the default).
    Jit,
    /// The reference interpreter, which walks the IR.
    Interp,
}

impl EngineArg {
    fn engine(self) -> sched::api::Engine {
        match self {
            EngineArg::Jit => sched::api::Engine::Jit,
            EngineArg::Interp => sched::api::Engine::Interpreter,
        }
    }
}

/// `--device`: where the fused kernels run and the tensors live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DeviceArg {
    /// The host: Cranelift-compiled kernels (or the interpreter's evaluator) on host tensors.
    Cpu,
    /// The first NVIDIA GPU: NVRTC-compiled kernels on device buffers (needs the NVIDIA driver
    /// and libnvrtc; see docs/gpu.md).
    Cuda,
    /// The device path of the runtime with host buffers and the reference evaluator, for tests.
    #[value(hide = true)]
    Emulated,
}

impl DeviceArg {
    fn kind(self) -> sched::api::DeviceKind {
        match self {
            DeviceArg::Cpu => sched::api::DeviceKind::Cpu,
            DeviceArg::Cuda => sched::api::DeviceKind::Cuda,
            DeviceArg::Emulated => sched::api::DeviceKind::Emulated,
        }
    }
}

/// sched: write inference schedules of generative models, check them, compile and run them.
///
/// A `.sched` file says when a model extends an object (appends tokens or a block), refines a
/// state it has (a denoising or ODE step from noise level t to s), and jumps from t to s with a
/// two-time model. Start with `sched check examples/ddim.sched`; the language is described in
/// docs/language.md.
///
/// Exit codes: 0 success, 1 the input has errors (diagnostics were printed), 2 usage or I/O error.
#[derive(Parser)]
#[command(name = "sched", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and type-check .sched files and report every problem.
    ///
    /// For each clean file, prints its schedules with their parameters and the number of model
    /// evaluations (NFE) a run makes with the default parameters, when that is known before the
    /// run. Warnings are printed but do not fail the check.
    ///
    /// Examples:
    ///   sched check examples/ddim.sched
    ///   sched check examples/*.sched
    #[command(verbatim_doc_comment)]
    Check {
        /// The files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Colour the diagnostics: auto (only on a terminal), always or never.
        #[arg(long, default_value = "auto", value_name = "WHEN")]
        color: ColorChoice,
    },
    /// Compile and run a schedule, then print (and optionally save or plot) what it emits.
    ///
    /// Models default to the spec or checkpoint written in the schedule; parameters to their
    /// defaults. The same seed gives the same bits, and a sample does not depend on the batch
    /// it is in.
    ///
    /// Examples:
    ///   sched run examples/few_step.sched --plot samples.png
    ///   sched run examples/ddim.sched --param steps=20 --param eta=1.0 --batch 1024 --seed 7
    ///   sched run examples/flow_euler.sched --model net=analytic:gmm(preset=eight,kind=velocity) --json
    ///   sched run examples/ddim.sched --input x=noise.npy --out samples.safetensors
    ///   sched run examples/autoregressive.sched --schedule greedy_tokens --param max_tokens=32 \
    ///       --model lm=SmolLM2-135M-Instruct.Q4_1.gguf --chat "What is the capital of France?"
    #[command(verbatim_doc_comment)]
    Run {
        /// The file to run.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The schedule to run (default: the first in the file).
        #[arg(long, value_name = "NAME")]
        schedule: Option<String>,
        /// Bind a model parameter to a checkpoint path or an analytic spec (`analytic:...`).
        #[arg(long = "model", value_name = "NAME=SPEC")]
        models: Vec<String>,
        /// Set a parameter.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Set a tensor parameter (e.g. the initial noise) from a .npy or .safetensors file.
        #[arg(long = "input", value_name = "NAME=FILE")]
        inputs: Vec<String>,
        /// The number of samples (rows of a token schedule); by default 256, or 1 for a language
        /// model, whose text then streams to standard output.
        #[arg(long)]
        batch: Option<usize>,
        /// The seed of the random stream.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Run N times, with seeds SEED, SEED+1, ..., and concatenate the outputs (N × --batch
        /// samples). On a GPU, runs after the first two replay the recorded work as one CUDA
        /// graph each when the schedule's work does not depend on the seed or its values;
        /// `--json` says whether they did, and why not.
        #[arg(long, default_value_t = 1, value_name = "N")]
        runs: usize,
        /// Write every emitted tensor to a .safetensors file (or the first to a .npy file).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Draw the emitted 2-D samples as a scatter plot (PNG).
        #[arg(long, value_name = "FILE.png")]
        plot: Option<PathBuf>,
        /// Print a machine-readable summary (schedule, NFE, kernel launches, time, outputs).
        #[arg(long)]
        json: bool,
        /// What executes the schedule: native code from Cranelift, or the reference interpreter
        /// (both give the same bits).
        #[arg(long, default_value = "jit", value_name = "ENGINE")]
        engine: EngineArg,
        /// Where the fused kernels run: the CPU, or the first NVIDIA GPU (`cuda`; it needs the
        /// NVIDIA driver and libnvrtc 13, see docs/gpu.md). Models without a GPU implementation
        /// run on the host, and `--json` counts the copies they cost.
        #[arg(long, default_value = "cpu", value_name = "DEVICE")]
        device: DeviceArg,
        /// Start every row of `prompt()` with this text (token schedules): encoded by the language
        /// model's tokenizer, or, for a model with a word list, its words separated by spaces
        /// (`--prompt full`).
        #[arg(long, value_name = "TEXT", conflicts_with = "chat")]
        prompt: Option<String>,
        /// Start every row of `prompt()` with a chat of one user message, written by the language
        /// model's chat template (its answer follows), e.g. `--chat "What is the capital of France?"`.
        #[arg(long, value_name = "MESSAGE")]
        chat: Option<String>,
        /// End a row where this text appears in what it generates (as the end token does); may be
        /// given several times.
        #[arg(long = "stop", value_name = "TEXT")]
        stop: Vec<String>,
        /// Colour the diagnostics: auto (only on a terminal), always or never.
        #[arg(long, default_value = "auto", value_name = "WHEN")]
        color: ColorChoice,
    },
    /// Compile a schedule and print a stage: the syntax tree, the IR, its control-flow graph, the
    /// fused kernels with their CLIF, or the native host code's CLIF.
    ///
    /// Examples:
    ///   sched build examples/ddim.sched --emit ir
    ///   sched build examples/heun_karras.sched --emit ir --stage lower
    ///   sched build examples/ddim.sched --emit dot | dot -Tsvg > ddim.svg
    ///   sched build examples/dpmpp_2m.sched --emit kernels
    ///   sched build examples/ddim.sched --emit clif
    ///   sched build examples/ddim.sched --emit cuda
    #[command(verbatim_doc_comment)]
    Build {
        /// The file to compile.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The schedule to compile (default: the first in the file).
        #[arg(long, value_name = "NAME")]
        schedule: Option<String>,
        /// What to print.
        #[arg(long, value_enum, default_value = "ir")]
        emit: build::Emit,
        /// For `--emit ir` and `dot`: the last compilation stage to run.
        #[arg(long, value_enum, default_value = "plan")]
        stage: build::StageArg,
        /// Colour the diagnostics: auto (only on a terminal), always or never.
        #[arg(long, default_value = "auto", value_name = "WHEN")]
        color: ColorChoice,
    },
    /// Run schedules over a grid of parameters and score their samples against held-out data.
    ///
    /// Every combination of the `--param` values is a point; each point runs with `--seeds`
    /// seeds of `--samples` samples, and its quality (the mean over seeds, with their standard
    /// deviation) is the `--metric` distance to as many held-out points of the `--data` set.
    /// Prints a line per point, then, for each NFE budget, the best point of each schedule
    /// within it, ranked. A TOML sweep file lists schedules with their own models and grids
    /// (docs/study.md).
    ///
    /// Examples:
    ///   sched sweep examples/study.sched --schedule euler --data eight --param steps=1,2,4,8,16
    ///   sched sweep examples/few_step.sched --model fm=examples/models/checker/flow_map.safetensors \
    ///       --data checker --param steps=1,2,4 --metric mmd --out points.csv
    ///   sched sweep docs/study/study.toml --data moons --plot moons.svg
    #[command(verbatim_doc_comment)]
    Sweep(SweepRequest),
}

/// Parses the command line and runs the command; the exit status scripts rely on.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Check { files, color } => check(&files, &color.style()),
        Command::Run {
            file,
            schedule,
            models,
            params,
            inputs,
            batch,
            seed,
            runs,
            out,
            plot,
            json,
            engine,
            device,
            prompt,
            chat,
            stop,
            color,
        } => {
            let request = run::RunRequest {
                schedule,
                models,
                params,
                inputs,
                batch,
                seed,
                runs,
                out,
                plot,
                json,
                progress: std::io::stderr().is_terminal() && std::io::stdout().is_terminal(),
                engine: engine.engine(),
                device: device.kind(),
                prompt: prompt.map(sched::api::Prompt::Text).or(chat.map(sched::api::Prompt::Chat)),
                stop,
            };
            run(&file, &request, &color.style())
        }
        Command::Build { file, schedule, emit, stage, color } => {
            build(&file, schedule.as_deref(), emit, stage.stage(), &color.style())
        }
        Command::Sweep(request) => match sweep(request) {
            Ok(()) => Outcome::Success,
            Err(message) => {
                eprintln!("error: {message}");
                Outcome::UsageOrIo
            }
        },
    };
    ExitCode::from(outcome as u8)
}

/// Reads and checks a file, printing diagnostics; the program when it has no errors.
fn load(path: &std::path::Path, style: &Style) -> Result<sched::api::Program, Outcome> {
    let bytes = std::fs::read(path).map_err(|error| {
        eprintln!("error: cannot read {}: {error}", path.display());
        Outcome::UsageOrIo
    })?;
    match sched::api::compile_bytes(&path.display().to_string(), &bytes) {
        Ok(program) => {
            for warning in program.warnings() {
                eprint!("{}", style.render(warning, program.sources()));
            }
            Ok(program)
        }
        Err(diagnostics) => {
            for diagnostic in &diagnostics.diagnostics {
                eprint!("{}", style.render(diagnostic, &diagnostics.sources));
            }
            Err(Outcome::Diagnostics)
        }
    }
}

/// The schedule a command is about: the named one, or the file's first.
fn pick_schedule(
    program: &sched::api::Program,
    path: &std::path::Path,
    schedule: Option<&str>,
) -> Result<String, Outcome> {
    let names = program.schedules();
    let name = match schedule {
        Some(name) => name.to_string(),
        None => match names.first() {
            Some(first) => first.clone(),
            None => {
                eprintln!("error: {} has no schedule", path.display());
                return Err(Outcome::Diagnostics);
            }
        },
    };
    if !names.contains(&name) {
        eprintln!("error: {} has no schedule `{name}`; it has {}", path.display(), names.join(", "));
        return Err(Outcome::UsageOrIo);
    }
    Ok(name)
}

fn run(path: &std::path::Path, request: &run::RunRequest, style: &Style) -> Outcome {
    let program = match load(path, style) {
        Ok(program) => program,
        Err(outcome) => return outcome,
    };
    let name = match pick_schedule(&program, path, request.schedule.as_deref()) {
        Ok(name) => name,
        Err(outcome) => return outcome,
    };
    match run::run(&program, &name, path, request) {
        Ok(report) => {
            if request.json {
                println!("{}", run::json(&report));
            } else if report.streamed {
                // Standard output holds the streamed text alone.
                eprint!("{}", run::summary(&report));
            } else {
                print!("{}", run::summary(&report));
            }
            Outcome::Success
        }
        Err(run::RunFailure::Api(sched::api::ApiError::Compile(error))) => {
            eprint!("{}", style.render_compile_error(&error, program.sources()));
            Outcome::Diagnostics
        }
        Err(run::RunFailure::Api(sched::api::ApiError::Run(error))) => {
            let runs = if request.runs == 1 { "run" } else { "runs" };
            eprintln!("error[{}]: the {runs} failed: {error}", error.code());
            Outcome::Diagnostics
        }
        Err(run::RunFailure::Api(error)) => {
            eprintln!("error[{}]: {error}", error.code());
            if error.is_usage() { Outcome::UsageOrIo } else { Outcome::Diagnostics }
        }
        Err(run::RunFailure::Usage(message)) => {
            eprintln!("error: {message}");
            Outcome::UsageOrIo
        }
        Err(run::RunFailure::Failed(message)) => {
            eprintln!("error: {message}");
            Outcome::Diagnostics
        }
    }
}

fn build(
    path: &std::path::Path,
    schedule: Option<&str>,
    emit: build::Emit,
    stage: sched_compiler::pipeline::Stage,
    style: &Style,
) -> Outcome {
    let program = match load(path, style) {
        Ok(program) => program,
        Err(outcome) => return outcome,
    };
    let name = match pick_schedule(&program, path, schedule) {
        Ok(name) => name,
        Err(outcome) => return outcome,
    };
    match build::render(program.checked(), &name, emit, stage) {
        Ok(text) => {
            print!("{text}");
            Outcome::Success
        }
        Err(error) => {
            eprint!("{}", style.render_compile_error(&error, program.sources()));
            Outcome::Diagnostics
        }
    }
}

fn check(files: &[PathBuf], style: &Style) -> Outcome {
    let mut outcome = Outcome::Success;
    for path in files {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) => {
                eprintln!("error: cannot read {}: {error}", path.display());
                outcome = Outcome::UsageOrIo;
                continue;
            }
        };
        let (report, file_outcome) = check::check_bytes(path, &bytes, style);
        print!("{}", report.stdout);
        eprint!("{}", report.stderr);
        if file_outcome != Outcome::Success && outcome != Outcome::UsageOrIo {
            outcome = file_outcome;
        }
    }
    outcome
}

/// What `sched sweep` was asked to do.
#[derive(clap::Args)]
struct SweepRequest {
    /// `.sched` files (each is a line of the sweep), or one `.toml` sweep file.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The schedule of each `.sched` file (default: its first).
    #[arg(long, value_name = "NAME")]
    schedule: Option<String>,
    /// Bind a model of every `.sched` file's schedule; `{data}` is replaced by the data set.
    #[arg(long = "model", value_name = "NAME=SPEC")]
    models: Vec<String>,
    /// A parameter's values, comma-separated: each value is a point of the grid.
    #[arg(long = "param", value_name = "NAME=V1,V2,...")]
    params: Vec<String>,
    /// The held-out data set: checker, moons, eight or spirals.
    #[arg(long, value_name = "NAME")]
    data: Option<String>,
    /// The quality metric: sw2 (sliced Wasserstein-2) or mmd (squared MMD, RBF kernels).
    #[arg(long, value_name = "NAME")]
    metric: Option<String>,
    /// Samples per run, and held-out points.
    #[arg(long)]
    samples: Option<usize>,
    /// Sampler seeds per point (0, 1, ...).
    #[arg(long)]
    seeds: Option<u64>,
    /// The NFE budgets of the ranking tables.
    #[arg(long, value_name = "N,N,...", default_value = "1,2,4", value_delimiter = ',')]
    budgets: Vec<u64>,
    /// Write the points to a CSV file.
    #[arg(long, value_name = "FILE.csv")]
    out: Option<PathBuf>,
    /// Draw quality against NFE, one line per schedule (SVG).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// What executes the schedules (both engines give the same bits).
    #[arg(long, default_value = "jit", value_name = "ENGINE")]
    engine: EngineArg,
}

fn sweep(request: SweepRequest) -> Result<(), String> {
    use sched_train::datasets::Dataset;
    use sched_train::metrics::Metric;

    let is_toml = |p: &PathBuf| p.extension().is_some_and(|e| e == "toml");
    let (lines, defaults) = match &request.files[..] {
        [file] if is_toml(file) => {
            if !request.models.is_empty() || !request.params.is_empty() || request.schedule.is_some() {
                return Err("--model, --param and --schedule apply to .sched files; a sweep file sets its own".into());
            }
            sweep::read_sweep_file(file)?
        }
        files => {
            if let Some(file) = files.iter().find(|f| is_toml(f)) {
                return Err(format!("{}: a sweep file must be the only file", file.display()));
            }
            let split = |text: &String, flag: &str| {
                text.split_once('=')
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .ok_or_else(|| format!("`{flag} {text}` must look like NAME=VALUE"))
            };
            let models = request.models.iter().map(|m| split(m, "--model")).collect::<Result<Vec<_>, _>>()?;
            let params = request
                .params
                .iter()
                .map(|p| split(p, "--param").map(|(n, v)| (n, v.split(',').map(|x| x.trim().to_string()).collect())))
                .collect::<Result<Vec<_>, _>>()?;
            let lines = files
                .iter()
                .map(|file| sweep::Line {
                    label: line_label(file, request.schedule.as_deref()),
                    file: file.clone(),
                    schedule: request.schedule.clone(),
                    models: models.clone(),
                    params: params.clone(),
                })
                .collect();
            (lines, sweep::SweepDefaults::default())
        }
    };
    let data_name = request.data.or(defaults.data).ok_or("--data is required: checker, moons, eight or spirals")?;
    let names = |all: Vec<&str>| all.join(", ");
    let data = Dataset::from_name(&data_name).ok_or_else(|| {
        format!("unknown data set `{data_name}` (known: {})", names(Dataset::ALL.iter().map(|d| d.name()).collect()))
    })?;
    let metric_name = request.metric.or(defaults.metric).unwrap_or_else(|| "sw2".into());
    let metric = Metric::from_name(&metric_name).ok_or_else(|| {
        format!("unknown metric `{metric_name}` (known: {})", names(Metric::ALL.iter().map(|m| m.name()).collect()))
    })?;
    let samples = request.samples.or(defaults.samples).unwrap_or(2000);
    let seeds = request.seeds.or(defaults.seeds).unwrap_or(3);
    if samples < 2 || seeds == 0 {
        return Err("--samples must be at least 2 and --seeds at least 1".into());
    }
    let config = sweep::Sweep { lines, data, metric, samples, seeds, engine: request.engine.engine() };
    println!("| schedule | parameters | NFE | {} | wall ms |\n|---|---|---|---|---|", metric.name());
    let points = sweep::run(&config, &|p| {
        println!(
            "| {} | {} | {} | {:.4} ± {:.4} | {:.1} |",
            p.label,
            sweep::describe(&p.params),
            p.nfe,
            p.quality.mean,
            p.quality.std,
            p.wall_ms
        );
    })?;
    let floor = sweep::floor(&config)?;
    println!(
        "\nThe data set's own samples score {:.4} ± {:.4} (the floor {} samples allow).",
        floor.mean, floor.std, samples
    );
    print!("{}", sweep::budget_table(&points, &request.budgets, metric));
    if let Some(out) = &request.out {
        std::fs::write(out, sweep::csv(&points, metric, data)?)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    }
    if let Some(path) = &request.plot {
        let title = format!("{}: quality vs model evaluations ({} seeds × {samples} samples)", data.name(), seeds);
        sweep::plot(path, &points, &title, metric)?;
    }
    Ok(())
}

/// The label of a `.sched` file's line in a sweep: its stem, and the schedule when one is named.
fn line_label(file: &std::path::Path, schedule: Option<&str>) -> String {
    let stem = file.file_stem().map_or_else(|| file.display().to_string(), |s| s.to_string_lossy().into_owned());
    match schedule {
        Some(schedule) => format!("{stem}:{schedule}"),
        None => stem,
    }
}
