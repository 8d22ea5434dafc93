//! The `sched` binary as scripts see it: exit codes, streams and help text.

use crate::common;

use common::{sched, text};

#[test]
fn clean_files_exit_0_and_print_nfe() {
    let out = sched(&["check", "examples/ddim.sched", "examples/heun_karras.sched"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("examples/ddim.sched: ok"), "{stdout}");
    assert!(stdout.contains("schedule ddim: NFE 50 with defaults"), "{stdout}");
    assert!(stdout.contains("schedule heun_karras: NFE 19 with defaults"), "{stdout}");
    assert!(out.stderr.is_empty());
}

#[test]
fn diagnostics_exit_1_on_stderr_without_colour_when_piped() {
    let out = sched(&["check", "tests/ui/err/jump_needs_two_time_model.sched"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("sched::type::jump_needs_two_time_model"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no escape codes when not on a terminal");
    assert!(out.stdout.is_empty());
}

#[test]
fn colour_can_be_forced() {
    let out = sched(&["check", "--color", "always", "tests/ui/err/unknown_name.sched"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains('\u{1b}'));
}

#[test]
fn missing_files_and_bad_usage_exit_2() {
    let out = sched(&["check", "no/such/file.sched"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read no/such/file.sched"));
    assert_eq!(sched(&["check"]).status.code(), Some(2));
    assert_eq!(sched(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn an_io_error_wins_over_diagnostics_and_every_file_is_still_checked() {
    let out = sched(&["check", "tests/ui/err/unknown_name.sched", "missing.sched", "examples/ddim.sched"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("examples/ddim.sched: ok"));
    assert!(text(&out.stderr).contains("sched::resolve::unknown_name"));
}

#[test]
fn bad_input_of_any_kind_exits_1_with_a_diagnostic() {
    let dir = std::env::temp_dir().join(format!("sched-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("junk.sched", (0..=255u8).cycle().take(4096).collect(), "sched::syntax::not_utf8"),
        ("braces.sched", b"schedule s() { { { ".to_vec(), "sched::syntax::unbalanced_delimiter"),
        (
            "deep.sched",
            format!("schedule s() {{ let x = {}1{} emit x }}", "(".repeat(5000), ")".repeat(5000)).into_bytes(),
            "sched::syntax::nesting_too_deep",
        ),
        ("huge.sched", "// padding\n".repeat(1_000_000).into_bytes(), "sched::syntax::file_too_large"),
        ("types.sched", b"schedule s(n: int = true) { emit n }".to_vec(), "sched::type::mismatch"),
        (
            "jump.sched",
            b"schedule s(net: model<eps>) { let x = gaussian() jump x from 1 to 0 emit x }".to_vec(),
            "sched::type::jump_needs_two_time_model",
        ),
    ];
    for (name, bytes, code) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write case");
        let out = sched(&["check", path.to_str().expect("utf-8 temp path")]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(code), "{name}: {}", text(&out.stderr));
    }
    std::fs::remove_dir_all(&dir).expect("clean temp dir");
}

#[test]
fn help_teaches() {
    let out = sched(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("Exit codes: 0 success, 1 the input has errors"), "{help}");
    let out = sched(&["check", "--help"]);
    let help = text(&out.stdout);
    assert!(help.contains("sched check examples/*.sched"), "{help}");
    assert!(help.contains("NFE"), "{help}");
}
