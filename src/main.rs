//! The `sched` command-line tool.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sched::render;
use sched::report::{self, Outcome};

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
        color: render::ColorChoice,
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
        /// The number of samples.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// The seed of the random stream.
        #[arg(long, default_value_t = 0)]
        seed: u64,
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
        engine: sched::api::Engine,
        /// Where the fused kernels run: the CPU, or the first NVIDIA GPU (`cuda`; it needs the
        /// NVIDIA driver and libnvrtc 13, see docs/gpu.md). Models without a GPU implementation
        /// run on the host, and `--json` counts the copies they cost.
        #[arg(long, default_value = "cpu", value_name = "DEVICE")]
        device: sched::api::DeviceKind,
        /// Colour the diagnostics: auto (only on a terminal), always or never.
        #[arg(long, default_value = "auto", value_name = "WHEN")]
        color: render::ColorChoice,
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
        emit: sched::build::Emit,
        /// For `--emit ir` and `dot`: the last compilation stage to run.
        #[arg(long, value_enum, default_value = "plan")]
        stage: sched::build::StageArg,
        /// Colour the diagnostics: auto (only on a terminal), always or never.
        #[arg(long, default_value = "auto", value_name = "WHEN")]
        color: render::ColorChoice,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Check { files, color } => {
            let style = render::Style::new(color, std::io::stderr().is_terminal());
            check(&files, &style)
        }
        Command::Run {
            file,
            schedule,
            models,
            params,
            inputs,
            batch,
            seed,
            out,
            plot,
            json,
            engine,
            device,
            color,
        } => {
            let style = render::Style::new(color, std::io::stderr().is_terminal());
            let request = sched::run::RunRequest {
                schedule,
                models,
                params,
                inputs,
                batch,
                seed,
                out,
                plot,
                json,
                progress: std::io::stderr().is_terminal() && std::io::stdout().is_terminal(),
                engine,
                device,
            };
            run(&file, &request, &style)
        }
        Command::Build { file, schedule, emit, stage, color } => {
            let style = render::Style::new(color, std::io::stderr().is_terminal());
            build(&file, schedule.as_deref(), emit, stage.stage(), &style)
        }
    };
    ExitCode::from(outcome as u8)
}

/// Reads and checks a file, printing diagnostics; the program when it has no errors.
fn load(path: &std::path::Path, style: &render::Style) -> Result<sched::Program, Outcome> {
    let bytes = std::fs::read(path).map_err(|error| {
        eprintln!("error: cannot read {}: {error}", path.display());
        Outcome::UsageOrIo
    })?;
    let analysis = sched::analyze(&path.display().to_string(), &bytes);
    for diagnostic in &analysis.diagnostics {
        eprint!("{}", style.render(diagnostic, &analysis.sources));
    }
    analysis.program.ok_or(Outcome::Diagnostics)
}

/// The schedule a command is about: the named one, or the file's first.
fn pick_schedule(program: &sched::Program, path: &std::path::Path, schedule: Option<&str>) -> Result<String, Outcome> {
    let name = match schedule {
        Some(name) => name.to_string(),
        None => match program.user_schedules().next() {
            Some((_, info)) => info.name.clone(),
            None => {
                eprintln!("error: {} has no schedule", path.display());
                return Err(Outcome::Diagnostics);
            }
        },
    };
    if program.schedule_by_name(&name).is_none() {
        let names: Vec<String> = program.user_schedules().map(|(_, s)| s.name.clone()).collect();
        eprintln!("error: {} has no schedule `{name}`; it has {}", path.display(), names.join(", "));
        return Err(Outcome::UsageOrIo);
    }
    Ok(name)
}

fn run(path: &std::path::Path, request: &sched::run::RunRequest, style: &render::Style) -> Outcome {
    let program = match load(path, style) {
        Ok(program) => program,
        Err(outcome) => return outcome,
    };
    let name = match pick_schedule(&program, path, request.schedule.as_deref()) {
        Ok(name) => name,
        Err(outcome) => return outcome,
    };
    let Some((id, _)) = program.schedule_by_name(&name) else { return Outcome::UsageOrIo };
    match sched::run::run(&program, id, path, request) {
        Ok(report) => {
            if request.json {
                println!("{}", sched::run::json(&report));
            } else {
                print!("{}", sched::run::summary(&report));
            }
            Outcome::Success
        }
        Err(sched::run::CompileOrRun::Compile(error)) => {
            eprint!("{}", style.render_compile_error(&error, &program.sources));
            Outcome::Diagnostics
        }
        Err(sched::run::CompileOrRun::Run(failure)) => {
            eprintln!("error: {}", failure.message);
            if failure.usage { Outcome::UsageOrIo } else { Outcome::Diagnostics }
        }
    }
}

fn build(
    path: &std::path::Path,
    schedule: Option<&str>,
    emit: sched::build::Emit,
    stage: sched_compiler::pipeline::Stage,
    style: &render::Style,
) -> Outcome {
    let program = match load(path, style) {
        Ok(program) => program,
        Err(outcome) => return outcome,
    };
    let name = match pick_schedule(&program, path, schedule) {
        Ok(name) => name,
        Err(outcome) => return outcome,
    };
    match sched::build::render(&program, &name, emit, stage) {
        Ok(text) => {
            print!("{text}");
            Outcome::Success
        }
        Err(error) => {
            eprint!("{}", style.render_compile_error(&error, &program.sources));
            Outcome::Diagnostics
        }
    }
}

fn check(files: &[PathBuf], style: &render::Style) -> Outcome {
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
        let (report, file_outcome) = report::check_bytes(path, &bytes, style);
        print!("{}", report.stdout);
        eprint!("{}", report.stderr);
        if file_outcome != Outcome::Success && outcome != Outcome::UsageOrIo {
            outcome = file_outcome;
        }
    }
    outcome
}
