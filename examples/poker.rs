//! The poker-hands table of the README: invalid-pair rates of independent multi-token sampling,
//! autoregressive decoding and draft + verify, on the exact model and on the small transformers
//! trained on the same hands (examples/models/poker/).
//!
//! Run with `cargo run --release --example poker` (add `-- --samples N --seed S` to change the
//! defaults, 10 000 samples and seed 0).

use std::sync::Arc;

use sched::poker;
use sched_models::load::load_model;
use sched_runtime::model::Model;

/// The two models of one line group: a multi-token model and a next-token model.
struct ModelSet {
    name: &'static str,
    mtp: Arc<dyn Model>,
    lm: Arc<dyn Model>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut samples = 10_000usize;
    let mut seed = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--samples" => samples = value.parse()?,
            "--seed" => seed = value.parse()?,
            _ => return Err(format!("unknown flag {flag} (expected --samples N or --seed S)").into()),
        }
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/models/poker");
    let sets = [
        ModelSet {
            name: "exact",
            mtp: load_model("analytic:poker(kind=mtp_lm, heads=2)", None)?,
            lm: load_model("analytic:poker", None)?,
        },
        ModelSet {
            name: "transformer",
            mtp: load_model(&format!("{dir}/mtp_lm.safetensors"), None)?,
            lm: load_model(&format!("{dir}/causal_lm.safetensors"), None)?,
        },
    ];
    println!("{samples} samples per line, seed {seed}\n");
    println!("| model | schedule | invalid pairs | predicted from the marginals | model calls | tokens per sample |");
    println!("|---|---|---|---|---|---|");
    for ModelSet { name, mtp, lm } in &sets {
        let predicted = poker::predicted_independent_rate(mtp.as_ref())?;
        for row in poker::run(mtp, lm, samples, seed)? {
            let label = match row.schedule {
                "independent" => "independent heads",
                "draft_verify" => "draft + verify",
                other => other,
            };
            let prediction = match (row.schedule, *name) {
                ("independent", _) => format!("{:.2} %", 100.0 * predicted),
                (_, "exact") => "0".into(),
                _ => "—".into(),
            };
            let invalid = if row.invalid_rate == 0.0 {
                "0.00 %".to_string()
            } else {
                format!("{:.2} ± {:.2} %", 100.0 * row.invalid_rate, 100.0 * row.standard_error)
            };
            println!(
                "| {name} | {label} | {invalid} | {prediction} | {} | {:.2} |",
                row.model_calls, row.tokens_per_sample
            );
        }
    }
    Ok(())
}
