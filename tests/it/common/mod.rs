//! What several integration tests share: running the `sched` binary, the generated programs of
//! the differential tests ([`programs`]), and chi-square tests ([`stats`]).

pub mod programs;
pub mod stats;

use std::process::{Command, Output};

pub fn sched(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sched"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run sched")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
