//! Embedding sched in a Rust program: compile a schedule once, bind its parameters, and serve
//! runs from several threads at once, with a progress callback and a cancellation flag.
//!
//! Run with `cargo run --release --example embed`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sched::api::{Value, compile};
use sched_models::load::load_model;
use sched_runtime::run::{OutputValue, RunOptions};

const SOURCE: &str = r#"
/// DPM-Solver++(2M) on a Karras grid, as a server might run it.
schedule sample(net: model<eps>, steps: int = 20) {
    let x = gaussian()
    for t, s in grid(1 -> 0, steps, karras(7)) {
        refine x from t to s by dpmpp_2m()
    }
    emit x
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let program = compile("server.sched", SOURCE)?;
    let executable = Arc::new(program.schedule("sample")?.bind(&[("steps", Value::Int(12))])?);
    let net = load_model("analytic:gmm(preset=eight, kind=eps, interpolant=scaled_linear)", None)?;
    let steps_done = AtomicU32::new(0);
    let cancel = AtomicBool::new(false);
    let progress = |_verb: u32| {
        steps_done.fetch_add(1, Ordering::Relaxed);
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u64)
            .map(|seed| {
                let (executable, net) = (Arc::clone(&executable), Arc::clone(&net));
                let (progress, cancel) = (&progress, &cancel);
                scope.spawn(move || {
                    let options = RunOptions {
                        seed,
                        batch: 1024,
                        on_verb: Some(progress),
                        cancel: Some(cancel),
                        ..RunOptions::default()
                    };
                    executable.run(&[("net", net)], &options)
                })
            })
            .collect();
        for (seed, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok(Ok(outputs)) => {
                    if let Some((name, OutputValue::Tensor(t))) = outputs.values.first() {
                        let mean = t.data.iter().map(|&v| f64::from(v)).sum::<f64>() / t.data.len() as f64;
                        println!(
                            "seed {seed}: {name} {:?}, mean {mean:.4}, {} model calls",
                            t.shape, outputs.model_calls
                        );
                    }
                }
                Ok(Err(error)) => eprintln!("seed {seed}: {error}"),
                Err(_) => eprintln!("seed {seed}: the worker panicked"),
            }
        }
    });
    println!("{} steps run in all", steps_done.load(Ordering::Relaxed));
    Ok(())
}
