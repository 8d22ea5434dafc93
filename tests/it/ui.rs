//! Golden tests of the front end, driven by files.
//!
//! - `tests/ui/err/NAME.sched`: must produce diagnostics; their rendering (no colour, 100
//!   columns) is stored in `NAME.stderr`. `NAME.repeat` files hold a count on the first line and a
//!   text to repeat that many times, for inputs too large to store.
//! - `tests/ui/ok/NAME.sched`: must check clean; the summary `sched check` prints is stored in
//!   `NAME.stdout`.
//! - A line `// bind: SCHEDULE PARAM=KIND` in a file also checks binding a model of that kind,
//!   and the result is rendered after the file's own diagnostics.
//!
//! Run with `SCHED_BLESS=1` to write the expected files from the current output.

use std::path::{Path, PathBuf};
use std::process::Command;

use sched::api::render::Style;

/// How `sched check` ended on a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Diagnostics,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(dir: &str, extensions: &[&str]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e)))
        .collect();
    files.sort();
    files
}

/// The bytes a test file stands for.
fn input_of(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read test input");
    if path.extension().and_then(|e| e.to_str()) != Some("repeat") {
        return bytes;
    }
    let text = String::from_utf8(bytes).expect("a .repeat file is UTF-8");
    let (count, body) = text.split_once('\n').expect("a .repeat file has a count line");
    body.repeat(count.trim().parse().expect("the first line of a .repeat file is a count")).into_bytes()
}

/// What `sched check` prints for a file, plus the binding checks the file asks for. The binary
/// checks the file where it lies, or, for a `.repeat` file, its expanded text written under the
/// tests' scratch directory at the same relative path, so that messages name the same file.
fn render(path: &Path) -> (String, String, Outcome) {
    let relative = path.strip_prefix(root()).unwrap_or(path).with_extension("sched");
    let name = relative.display().to_string();
    let bytes = input_of(path);
    let dir = if path.extension().and_then(|e| e.to_str()) == Some("repeat") {
        let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");
        let expanded = scratch.join(&relative);
        std::fs::create_dir_all(expanded.parent().expect("a test file is in a folder")).expect("scratch folder");
        std::fs::write(&expanded, &bytes).expect("write the expanded input");
        scratch
    } else {
        root()
    };
    let output = Command::new(env!("CARGO_BIN_EXE_sched"))
        .args(["check", "--color", "never", &name])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run sched check");
    let outcome = match output.status.code() {
        Some(0) => Outcome::Success,
        Some(1) => Outcome::Diagnostics,
        other => panic!("sched check {name} exited with {other:?}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let analysis = sched_lang::analyze(&name, &bytes);
    let style = Style::plain();
    let text = String::from_utf8_lossy(&bytes);
    for line in text.lines().filter_map(|l| l.trim().strip_prefix("// bind:")) {
        let (schedule, binding) = line.trim().split_once(' ').expect("// bind: SCHEDULE PARAM=KIND");
        let (param, kind) = binding.split_once('=').expect("// bind: SCHEDULE PARAM=KIND");
        let program = analysis.program.as_ref().expect("bind directives need a program without errors");
        let found = program.check_model_binding(schedule, param, kind);
        stderr.push_str(&format!(
            "bind {schedule} {param}={kind}: {}\n",
            if found.is_empty() { "ok" } else { "rejected" }
        ));
        for diagnostic in &found {
            stderr.push_str(&style.render(diagnostic, &analysis.sources));
        }
    }
    (stdout, stderr, outcome)
}

/// Compares with (or, when blessing, writes) the expected file; returns a failure message.
fn compare(expected_path: &Path, actual: &str) -> Option<String> {
    if std::env::var_os("SCHED_BLESS").is_some() {
        std::fs::write(expected_path, actual).expect("write expected output");
        return None;
    }
    let expected = std::fs::read_to_string(expected_path).unwrap_or_default();
    (expected != actual).then(|| {
        format!(
            "{} differs (run with SCHED_BLESS=1 to accept)\n--- expected\n{expected}\n--- actual\n{actual}",
            expected_path.display()
        )
    })
}

#[test]
fn error_files_render_their_diagnostics() {
    let mut failures = Vec::new();
    for path in files_in("tests/ui/err", &["sched", "repeat"]) {
        let (stdout, stderr, outcome) = render(&path);
        let has_error = outcome == Outcome::Diagnostics;
        let has_binding_error = stderr.contains(": rejected");
        let has_warning = stderr.contains("⚠");
        if !has_error && !has_binding_error && !has_warning {
            failures.push(format!("{} produced no diagnostic:\n{stdout}", path.display()));
        }
        failures.extend(compare(&path.with_extension("stderr"), &stderr));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn ok_files_check_clean() {
    let mut failures = Vec::new();
    for path in files_in("tests/ui/ok", &["sched"]) {
        let (stdout, stderr, outcome) = render(&path);
        let clean =
            outcome == Outcome::Success && !stderr.lines().any(|l| !l.starts_with("bind ") || !l.ends_with(": ok"));
        if !clean {
            failures.push(format!("{} is not clean:\n{stderr}", path.display()));
        }
        failures.extend(compare(&path.with_extension("stdout"), &stdout));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_diagnostic_code_has_a_golden_file() {
    let goldens: String = files_in("tests/ui/err", &["stderr"])
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read golden"))
        .collect();
    let missing: Vec<&str> = sched_lang::Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|code| !goldens.contains(&format!("{code}\n")))
        .collect();
    assert!(missing.is_empty(), "codes without a golden file in tests/ui/err: {missing:?}");
}

#[test]
fn every_example_checks_clean() {
    let examples = files_in("examples", &["sched"]);
    assert!(examples.len() >= 20, "expected the examples of DESIGN.md §3, found {}", examples.len());
    for path in examples {
        let (_, stderr, outcome) = render(&path);
        assert!(outcome == Outcome::Success && stderr.is_empty(), "{} is not clean:\n{stderr}", path.display());
    }
}
