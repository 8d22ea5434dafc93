//! Checks of emitted CUDA C: the golden files, the parameters of an entry point, and compilation
//! to PTX by NVRTC, which tests skip when libnvrtc cannot be loaded (unless CI requires it).

use std::fs;
use std::path::PathBuf;

use sched_kernels::nvrtc;

/// The architecture the NVRTC tests compile for.
pub const ARCH: &str = "sm_90";

/// Returns whether libnvrtc can be loaded, printing why `test` is skipped if not. CI installs
/// libnvrtc and sets `SCHED_REQUIRE_NVRTC`, which makes a missing library a failure.
pub fn nvrtc_or_skip(test: &str) -> bool {
    let available = nvrtc::available();
    if !available {
        assert!(
            std::env::var_os("SCHED_REQUIRE_NVRTC").is_none(),
            "{test}: libnvrtc not found, and SCHED_REQUIRE_NVRTC is set"
        );
        println!("skipping {test}: libnvrtc not found (see docs/gpu.md)");
    }
    available
}

/// Compiles a source that must compile for [`ARCH`], with `what` in the failure.
pub fn compile(source: &str, what: &str) -> String {
    match nvrtc::compile_ptx(source, ARCH) {
        Ok(ptx) => ptx,
        Err(e) => panic!("{what} does not compile: {e}\n{source}"),
    }
}

/// The PTX of the entry point `entry`, from its `.entry` line to its closing brace, if defined.
pub fn ptx_entry<'a>(ptx: &'a str, entry: &str) -> Option<&'a str> {
    let start = ptx.find(&format!(".visible .entry {entry}("))?;
    let length = ptx[start..].find("\n}\n")?;
    Some(&ptx[start..start + length])
}

/// The parameters of `entry` in `source`: the text between `entry(` and the next `)`, split at
/// commas, with whitespace normalized.
pub fn signature(source: &str, entry: &str) -> Vec<String> {
    let head = format!(" {entry}(");
    let start = source.find(&head).unwrap_or_else(|| panic!("no `{entry}(` in:\n{source}")) + head.len();
    let end = source[start..].find(')').unwrap_or_else(|| panic!("`{entry}(` is not closed")) + start;
    source[start..end].split(',').map(|p| p.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

/// A line-by-line comparison of two texts: the differing lines, at most 40 of them.
pub fn diff(expected: &str, got: &str) -> String {
    let (expected, got): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let mut report = String::new();
    let mut shown = 0;
    for i in 0..expected.len().max(got.len()) {
        let (e, g) = (expected.get(i), got.get(i));
        if e != g && shown < 40 {
            shown += 1;
            report += &format!("line {}:\n", i + 1);
            if let Some(e) = e {
                report += &format!("  - {e}\n");
            }
            if let Some(g) = g {
                report += &format!("  + {g}\n");
            }
        }
    }
    report
}

/// Checks that every golden file of `files` (names in `tests/golden/` and the emitted texts they
/// must hold) holds its text, or, with `SCHED_BLESS` set, writes them. `test` is the test binary
/// that blesses them, named in the failure.
pub fn check_golden_files(files: Vec<(&str, String)>, test: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden");
    let bless = std::env::var_os("SCHED_BLESS").is_some();
    let mut failures = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        if bless {
            fs::create_dir_all(&dir).expect("the golden folder can be created");
            fs::write(&path, &text).expect("the golden file can be written");
            continue;
        }
        match fs::read_to_string(&path) {
            Ok(expected) if expected == text => {}
            Ok(expected) => failures.push(format!("{} differs:\n{}", path.display(), diff(&expected, &text))),
            Err(e) => failures.push(format!("cannot read {}: {e}", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "the emitted CUDA C differs from the golden files; if the change is intended, rerun with SCHED_BLESS=1 \
         (`SCHED_BLESS=1 cargo test -p sched-kernels --test it {test}::`)\n\n{}",
        failures.join("\n")
    );
}
