//! Throughput of a DDIM step's fused kernel over 2^22 elements: the reference evaluator against
//! the Cranelift JIT (one thread and all threads), and a plain copy of the same bytes, measured
//! side by side in one run. A measurement, not a test:
//! `cargo run --release -p sched-kernels --example kernel_throughput`.

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let len = 1 << 22;
    let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
    let eps: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = vec![0.0f32; len];
    // Reading x and eps and writing out: 12 bytes per element; a copy moves 8.
    let copy = best(|| out.copy_from_slice(std::hint::black_box(&x)));
    println!("copy of {len} f32: {:.2} GB/s (read + write)", (8 * len) as f64 / copy / 1e9);
    for (name, with_noise) in [("ddim, eta = 0", false), ("ddim + gaussian noise", true)] {
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
            "{name}: compile {compile_ms:.2} ms; reference {:.2} GB/s; jit {:.2} GB/s ({:.2} of copy); jit x{threads} threads {:.2} GB/s ({:.2} of copy)",
            bandwidth(reference),
            bandwidth(jit),
            copy / jit * 12.0 / 8.0,
            bandwidth(parallel),
            copy / parallel * 12.0 / 8.0,
        );
    }
    Ok(())
}
