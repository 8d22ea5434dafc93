//! Throughput of a DDIM step's fused kernel over 2^22 elements (or `--log2-len N`: 2^N): the
//! reference evaluator against the Cranelift JIT (one thread and all threads), and a plain copy
//! of the same bytes (one thread and all threads), measured side by side in one run. A
//! measurement, not a test:
//!
//! ```text
//! cargo run --release -p sched-kernels --example kernel_throughput [-- --log2-len 24] [--tsv FILE]
//! ```
//!
//! With `--tsv FILE` it also appends its results as lines `key<TAB>value<TAB>unit` to FILE (what
//! `bench/run.sh` collects into its table).

use std::io::Write;
use std::time::Instant;

use sched_kernels::builder::KernelBuilder;
use sched_kernels::cpu::evaluate;
use sched_kernels::jit::CompiledKernel;
use sched_kernels::spec::{BinaryOp, Distribution, ElementwiseKernel, NoiseLaunch, NoiseSlot};

/// `out = p0 * in0 + p1 * in1 (+ p2 * gaussian)`: a DDIM step after its model call.
fn ddim_kernel(with_noise: bool) -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let (x, eps) = (b.input(0), b.input(1));
    let (c0, c1) = (b.param(0), b.param(1));
    let a = b.binary(BinaryOp::Mul, c0, x);
    let e = b.binary(BinaryOp::Mul, c1, eps);
    let mut out = b.binary(BinaryOp::Add, a, e);
    if with_noise {
        let c2 = b.param(2);
        let z = b.noise(Distribution::Gaussian);
        let scaled = b.binary(BinaryOp::Mul, c2, z);
        out = b.binary(BinaryOp::Add, out, scaled);
    }
    b.output(out);
    b.finish()
}

/// The best of five timings, in seconds.
fn best(mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Copies `from` into `to` with `threads` threads, each taking one contiguous chunk.
fn parallel_copy(threads: usize, from: &[f32], to: &mut [f32]) {
    let chunk = from.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        for (src, dst) in from.chunks(chunk).zip(to.chunks_mut(chunk)) {
            scope.spawn(move || dst.copy_from_slice(src));
        }
    });
}

/// The command line: `--log2-len N` and `--tsv FILE`.
struct Args {
    log2_len: u32,
    tsv: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { log2_len: 22, tsv: None };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        let mut value = || given.next().ok_or_else(|| format!("`{arg}` needs a value"));
        match arg.as_str() {
            "--log2-len" => {
                let text = value()?;
                args.log2_len = text.parse().map_err(|_| format!("`--log2-len {text}`: expected an integer"))?;
                if !(10..=30).contains(&args.log2_len) {
                    return Err(format!("`--log2-len {text}`: expected 10 to 30"));
                }
            }
            "--tsv" => args.tsv = Some(value()?),
            other => return Err(format!("unknown argument `{other}` (expected --log2-len N, --tsv FILE)")),
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let len = 1usize << args.log2_len;
    let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
    let eps: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = vec![0.0f32; len];
    let mut results: Vec<(String, String, &str)> = vec![
        ("kernel.len".into(), format!("2^{}", args.log2_len), "f32"),
        ("kernel.threads".into(), threads.to_string(), "threads"),
    ];
    let mut record =
        |key: &str, value: f64, unit: &'static str| results.push((key.to_string(), format!("{value:.4}"), unit));
    // Reading x and eps and writing out: 12 bytes per element; a copy moves 8.
    let copy = best(|| out.copy_from_slice(std::hint::black_box(&x)));
    let copy_parallel = best(|| parallel_copy(threads, std::hint::black_box(&x), &mut out));
    let copy_bandwidth = |seconds: f64| (8 * len) as f64 / seconds / 1e9;
    println!(
        "copy of 2^{} f32: {:.2} GB/s (read + write); x{threads} threads {:.2} GB/s",
        args.log2_len,
        copy_bandwidth(copy),
        copy_bandwidth(copy_parallel)
    );
    record("kernel.copy.1", copy_bandwidth(copy), "GB/s");
    record("kernel.copy.n", copy_bandwidth(copy_parallel), "GB/s");
    for (name, key, with_noise) in [("ddim, eta = 0", "eta0", false), ("ddim + gaussian noise", "noise", true)] {
        let kernel = ddim_kernel(with_noise);
        let params = [0.98f32, -0.12, 0.35];
        let params = &params[..kernel.params as usize];
        let slots = [NoiseSlot { site: 0, step: 0 }];
        let noise = NoiseLaunch { seed: 1, per_sample: 2, slots: &slots[..kernel.noise_slots as usize] };
        let started = Instant::now();
        let compiled = CompiledKernel::compile(&kernel)?;
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        let reference = best(|| {
            std::hint::black_box(evaluate(&kernel, len, &[&x, &eps], params, &noise).ok());
        });
        let jit = best(|| {
            std::hint::black_box(compiled.run(len, &[&x, &eps], params, &noise, &mut [&mut out]).ok());
        });
        let parallel = best(|| {
            std::hint::black_box(
                compiled.run_parallel(threads, len, &[&x, &eps], params, &noise, &mut [&mut out]).ok(),
            );
        });
        let bandwidth = |seconds: f64| (12 * len) as f64 / seconds / 1e9;
        println!(
            "{name}: compile {compile_ms:.2} ms; reference {:.2} GB/s; jit {:.2} GB/s ({:.2} of copy); jit x{threads} threads {:.2} GB/s ({:.2} of {threads}-thread copy)",
            bandwidth(reference),
            bandwidth(jit),
            copy / jit * 12.0 / 8.0,
            bandwidth(parallel),
            copy_parallel / parallel * 12.0 / 8.0,
        );
        record(&format!("kernel.{key}.reference"), bandwidth(reference), "GB/s");
        record(&format!("kernel.{key}.jit1"), bandwidth(jit), "GB/s");
        record(&format!("kernel.{key}.jitn"), bandwidth(parallel), "GB/s");
        record(&format!("kernel.{key}.compile"), compile_ms, "ms");
    }
    if let Some(path) = &args.tsv {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        for (key, value, unit) in &results {
            writeln!(file, "{key}\t{value}\t{unit}")?;
        }
    }
    Ok(())
}
