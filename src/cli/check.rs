//! `sched check`: what it prints for one file.

use std::fmt::Write as _;
use std::path::Path;

use sched::api::render::Style;
use sched_lang::nfe::{self, Nfe};
use sched_lang::{Diagnostic, Program, SourceMap};

/// The process exit status; scripts rely on these values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success = 0,
    Diagnostics = 1,
    UsageOrIo = 2,
}

/// What checking one file prints.
pub struct Report {
    pub stdout: String,
    pub stderr: String,
}

/// Checks one file's contents and renders the result: its diagnostics, then a line for the file
/// and, when it checks, a summary of its schedules.
pub fn check_bytes(path: &Path, bytes: &[u8], style: &Style) -> (Report, Outcome) {
    let name = path.display().to_string();
    let checked = sched::api::compile_bytes(&name, bytes);
    let (diagnostics, sources, program): (&[Diagnostic], &SourceMap, Option<&Program>) = match &checked {
        Ok(checked) => (checked.warnings(), checked.sources(), Some(checked.checked())),
        Err(failed) => (&failed.diagnostics, &failed.sources, None),
    };
    let mut stderr = String::new();
    for diagnostic in diagnostics {
        stderr.push_str(&style.render(diagnostic, sources));
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let mut stdout = String::new();
    let outcome = match program {
        Some(program) if errors == 0 => {
            let _ = writeln!(stdout, "{name}: ok{}", warning_suffix(warnings));
            stdout.push_str(&summary(program, sources));
            Outcome::Success
        }
        _ => {
            let _ = writeln!(stderr, "{name}: {errors} error{}{}", plural(errors), warning_suffix(warnings));
            Outcome::Diagnostics
        }
    };
    (Report { stdout, stderr }, outcome)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn warning_suffix(warnings: usize) -> String {
    if warnings == 0 { String::new() } else { format!(", {warnings} warning{}", plural(warnings)) }
}

/// Each schedule of the file: its NFE with default parameters, then its parameters.
fn summary(program: &Program, sources: &SourceMap) -> String {
    let mut out = String::new();
    for (id, info) in program.user_schedules() {
        let nfe = match nfe::count(program, id) {
            Nfe::Static(n) => format!("NFE {n} with defaults"),
            Nfe::Dynamic { reason, span } => {
                let (line, col) = sources.line_col(span);
                let file = &sources.get(span.file).name;
                format!("NFE dynamic: {reason} ({file}:{line}:{col})")
            }
        };
        let _ = writeln!(out, "  schedule {}: {nfe}", info.name);
        let ast = program.schedule_ast(id);
        for (param, sig) in ast.params.iter().zip(&info.params) {
            let _ = match &param.default {
                Some(default) => {
                    writeln!(out, "    {}: {} = {}", sig.name, sig.ty, sources.slice(default.span))
                }
                None => writeln!(out, "    {}: {}", sig.name, sig.ty),
            };
        }
    }
    out
}
