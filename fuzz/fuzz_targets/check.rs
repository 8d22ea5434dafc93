//! Any bytes through the whole front end: parse, check, count model evaluations, bind models.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sched_lang::{analyze, nfe, types::ModelKind};

fuzz_target!(|data: &[u8]| {
    let analysis = analyze("fuzz.sched", data);
    if let Some(program) = &analysis.program {
        for (id, info) in program.user_schedules() {
            let _ = nfe::count(program, id);
            for &index in &info.model_params {
                for kind in ModelKind::ALL {
                    let _ = program.check_model_binding(&info.name, &info.params[index].name, kind.name());
                }
            }
        }
    }
});
