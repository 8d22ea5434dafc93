//! What `sched check` prints for one file.

use std::fmt::Write as _;
use std::path::Path;

use sched_lang::nfe::{self, Nfe};
use sched_lang::{Analysis, Program};

use crate::render::Style;

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

/// Checks one file's contents and renders the result.
pub fn check_bytes(path: &Path, bytes: &[u8], style: &Style) -> (Report, Outcome) {
    let name = path.display().to_string();
    let analysis = sched_lang::analyze(&name, bytes);
    render_analysis(&name, &analysis, style)
}

/// Renders what `sched check` prints for an analysed file.
pub fn render_analysis(name: &str, analysis: &Analysis, style: &Style) -> (Report, Outcome) {
    let mut stderr = String::new();
    for diagnostic in &analysis.diagnostics {
        stderr.push_str(&style.render(diagnostic, &analysis.sources));
    }
    let errors = analysis.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = analysis.diagnostics.len() - errors;
    let mut stdout = String::new();
    let outcome = if errors > 0 {
        let _ = writeln!(stderr, "{name}: {errors} error{}{}", plural(errors), warning_suffix(warnings));
        Outcome::Diagnostics
    } else {
        let _ = writeln!(stdout, "{name}: ok{}", warning_suffix(warnings));
        if let Some(program) = &analysis.program {
            stdout.push_str(&summary(program, analysis));
        }
        Outcome::Success
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
pub fn summary(program: &Program, analysis: &Analysis) -> String {
    let mut out = String::new();
    for (id, info) in program.user_schedules() {
        let nfe = match nfe::count(program, id) {
            Nfe::Static(n) => format!("NFE {n} with defaults"),
            Nfe::Dynamic { reason, span } => {
                let (line, col) = analysis.sources.line_col(span);
                let file = &analysis.sources.get(span.file).name;
                format!("NFE dynamic: {reason} ({file}:{line}:{col})")
            }
        };
        let _ = writeln!(out, "  schedule {}: {nfe}", info.name);
        let ast = program.schedule_ast(id);
        for (param, sig) in ast.params.iter().zip(&info.params) {
            let _ = match &param.default {
                Some(default) => {
                    writeln!(out, "    {}: {} = {}", sig.name, sig.ty, analysis.sources.slice(default.span))
                }
                None => writeln!(out, "    {}: {}", sig.name, sig.ty),
            };
        }
    }
    out
}
