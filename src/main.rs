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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Check { files, color } => {
            let style = render::Style::new(color, std::io::stderr().is_terminal());
            check(&files, &style)
        }
    };
    ExitCode::from(outcome as u8)
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
