//! The reference CPU evaluator against direct Rust computations of the same semantics.

use crate::common;

use common::{NO_NOISE, ddim_kernel, ramp, random_kernel};
use proptest::prelude::*;
use sched_kernels::philox::{gaussian, uniform};
use sched_kernels::{
    BinaryOp, Distribution, ElementwiseKernel, KernelBuilder, KernelError, Node, NodeId, NoiseLaunch, NoiseSlot,
    ReduceOp, ReductionKernel, UnaryOp, evaluate, reduce,
};

/// Bitwise equality that also accepts two NaNs (whose payloads the platform may choose).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_same(got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len());
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        assert!(same(g, e), "element {i}: got {g:?} ({:#010x}), expected {e:?} ({:#010x})", g.to_bits(), e.to_bits());
    }
}

#[test]
fn ddim_kernel_matches_a_closure_bit_for_bit() {
    let kernel = ddim_kernel();
    let params = [0.981_234_5_f32, -0.123_456_79, 0.077_7];
    let slots = [NoiseSlot { site: 3, step: 17 }];
    // 1000 is not a multiple of the chunk size, 1003 is not a multiple of the sample size either,
    // and 256 checks the exact chunk boundary.
    for len in [1, 255, 256, 257, 1000, 1003] {
        let x = ramp(len, 0.1);
        let eps = ramp(len, 2.0);
        let launch = NoiseLaunch { seed: 0xdead_beef_0123_4567, per_sample: 250, slots: &slots };
        let got = evaluate(&kernel, len, &[&x, &eps], &params, &launch).expect("valid launch");
        let expected: Vec<f32> = (0..len)
            .map(|i| {
                let z = gaussian(launch.seed, 3, 17, (i / 250) as u32, (i % 250) as u32);
                (params[0] * x[i] + params[1] * eps[i]) + params[2] * z
            })
            .collect();
        assert_eq!(got.len(), 1);
        assert_same(&got[0], &expected);
    }
}

#[test]
fn noise_does_not_depend_on_the_batch_size() {
    let mut b = KernelBuilder::new();
    let z = b.noise(Distribution::Gaussian);
    let u = b.noise(Distribution::Uniform);
    b.output(z);
    b.output(u);
    let kernel = b.finish();
    let slots = [NoiseSlot { site: 1, step: 4 }, NoiseSlot { site: 2, step: 0 }];
    let per_sample = 300;
    let run = |batch: usize| {
        let launch = NoiseLaunch { seed: 77, per_sample, slots: &slots };
        evaluate(&kernel, batch * per_sample, &[], &[], &launch).expect("valid launch")
    };
    let small = run(3);
    let large = run(7);
    for out in 0..2 {
        assert_eq!(small[out].len(), 3 * per_sample);
        assert_eq!(large[out].len(), 7 * per_sample);
        assert_same(&small[out], &large[out][..3 * per_sample]);
    }
    // The values are the stream's, at the sample and index of each element.
    for i in [0, 299, 300, 899] {
        let (sample, index) = ((i / per_sample) as u32, (i % per_sample) as u32);
        assert_eq!(small[0][i].to_bits(), gaussian(77, 1, 4, sample, index).to_bits());
        assert_eq!(small[1][i].to_bits(), uniform(77, 2, 0, sample, index).to_bits());
    }
    // Samples differ from each other, and the two slots differ.
    assert!(small[0][..per_sample] != small[0][per_sample..2 * per_sample]);
    assert!((0..per_sample).all(|i| small[0][i] != small[1][i]));
}

/// A kernel applying one unary operation to input 0.
fn unary_kernel(op: UnaryOp) -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let x = b.input(0);
    let y = b.unary(op, x);
    b.output(y);
    b.finish()
}

/// Values that exercise every branch of the unary functions: zeros, tiny and huge magnitudes,
/// the edges of their domains, infinities and NaN.
fn special_values() -> Vec<f32> {
    let mut values = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        1.5,
        -2.5,
        3.0,
        1e-30,
        -1e-30,
        f32::MIN_POSITIVE,
        1e-45,
        88.7,
        89.0,
        -104.0,
        1e30,
        -1e30,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        std::f32::consts::PI,
        std::f32::consts::FRAC_PI_2,
    ];
    values.extend(ramp(600, 0.0).iter().map(|v| v * 3.0));
    values
}

/// A unary operation and the Rust function it must agree with.
type UnaryCase = (UnaryOp, fn(f32) -> f32);

#[test]
fn every_unary_op_matches_the_std_function() {
    let cases: [UnaryCase; 15] = [
        (UnaryOp::Neg, |x| -x),
        (UnaryOp::Sqrt, f32::sqrt),
        (UnaryOp::Exp, f32::exp),
        (UnaryOp::Log, f32::ln),
        (UnaryOp::Expm1, f32::exp_m1),
        (UnaryOp::Log1p, f32::ln_1p),
        (UnaryOp::Sin, f32::sin),
        (UnaryOp::Cos, f32::cos),
        (UnaryOp::Tan, f32::tan),
        (UnaryOp::Tanh, f32::tanh),
        (UnaryOp::Atan, f32::atan),
        (UnaryOp::Abs, f32::abs),
        (UnaryOp::Sigmoid, |x| 1.0 / (1.0 + (-x).exp())),
        (UnaryOp::Floor, f32::floor),
        (UnaryOp::Ceil, f32::ceil),
    ];
    let x = special_values();
    for (op, f) in cases {
        let got = evaluate(&unary_kernel(op), x.len(), &[&x], &[], &NO_NOISE).expect("valid launch");
        let expected: Vec<f32> = x.iter().map(|&v| f(v)).collect();
        assert_same(&got[0], &expected);
        assert_eq!(sched_kernels::cpu::apply_unary(op, 0.25).to_bits(), f(0.25).to_bits(), "{op}");
    }
    // A few exact values, so a wrong function could not pass by matching itself.
    let exact = |op, v: f32| evaluate(&unary_kernel(op), 1, &[&[v]], &[], &NO_NOISE).expect("valid launch")[0][0];
    assert_eq!(exact(UnaryOp::Neg, 2.0), -2.0);
    assert_eq!(exact(UnaryOp::Sqrt, 9.0), 3.0);
    assert!(exact(UnaryOp::Sqrt, -1.0).is_nan());
    assert_eq!(exact(UnaryOp::Exp, 0.0), 1.0);
    assert_eq!(exact(UnaryOp::Log, 1.0), 0.0);
    assert_eq!(exact(UnaryOp::Log, 0.0), f32::NEG_INFINITY);
    assert_eq!(exact(UnaryOp::Expm1, 1e-30), 1e-30);
    assert_eq!(exact(UnaryOp::Log1p, 1e-30), 1e-30);
    assert_eq!(exact(UnaryOp::Tanh, f32::INFINITY), 1.0);
    assert_eq!(exact(UnaryOp::Abs, -0.0).to_bits(), 0.0_f32.to_bits());
    assert_eq!(exact(UnaryOp::Sigmoid, 0.0), 0.5);
    assert_eq!(exact(UnaryOp::Sigmoid, -200.0), 0.0);
    assert_eq!(exact(UnaryOp::Sigmoid, 200.0), 1.0);
    assert_eq!(exact(UnaryOp::Floor, -1.5), -2.0);
    assert_eq!(exact(UnaryOp::Ceil, -1.5), -1.0);
}

/// A kernel applying one binary operation to inputs 0 and 1.
fn binary_kernel(op: BinaryOp) -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let (x, y) = (b.input(0), b.input(1));
    let z = b.binary(op, x, y);
    b.output(z);
    b.finish()
}

/// A binary operation and the Rust function it must agree with.
type BinaryCase = (BinaryOp, fn(f32, f32) -> f32);

#[test]
fn every_binary_op_matches_the_f32_operation() {
    let cases: [BinaryCase; 7] = [
        (BinaryOp::Add, |a, b| a + b),
        (BinaryOp::Sub, |a, b| a - b),
        (BinaryOp::Mul, |a, b| a * b),
        (BinaryOp::Div, |a, b| a / b),
        (BinaryOp::Pow, f32::powf),
        (BinaryOp::Min, f32::min),
        (BinaryOp::Max, f32::max),
    ];
    let values = special_values();
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for &x in &values[..25] {
        for &y in &values[..25] {
            xs.push(x);
            ys.push(y);
        }
    }
    xs.extend_from_slice(&values);
    ys.extend(values.iter().rev());
    for (op, f) in cases {
        let got = evaluate(&binary_kernel(op), xs.len(), &[&xs, &ys], &[], &NO_NOISE).expect("valid launch");
        let expected: Vec<f32> = xs.iter().zip(&ys).map(|(&a, &b)| f(a, b)).collect();
        assert_same(&got[0], &expected);
    }
    // The operand order is kept.
    let got = evaluate(&binary_kernel(BinaryOp::Sub), 1, &[&[5.0], &[3.0]], &[], &NO_NOISE).expect("valid launch");
    assert_eq!(got[0], [2.0]);
    let got = evaluate(&binary_kernel(BinaryOp::Pow), 1, &[&[2.0], &[10.0]], &[], &NO_NOISE).expect("valid launch");
    assert_eq!(got[0], [1024.0]);
}

#[test]
fn min_and_max_ignore_a_nan_operand() {
    let nan = f32::NAN;
    let xs = [nan, 1.0, nan, -3.0, 2.0];
    let ys = [1.0, nan, nan, 4.0, f32::NEG_INFINITY];
    let min = evaluate(&binary_kernel(BinaryOp::Min), 5, &[&xs, &ys], &[], &NO_NOISE).expect("valid launch");
    let max = evaluate(&binary_kernel(BinaryOp::Max), 5, &[&xs, &ys], &[], &NO_NOISE).expect("valid launch");
    assert_eq!(min[0][..2], [1.0, 1.0]);
    assert!(min[0][2].is_nan());
    assert_eq!(min[0][3..], [-3.0, f32::NEG_INFINITY]);
    assert_eq!(max[0][..2], [1.0, 1.0]);
    assert!(max[0][2].is_nan());
    assert_eq!(max[0][3..], [4.0, 2.0]);
}

#[test]
fn no_fused_multiply_add() {
    // With a = 1 + 2^-12, a * a = 1 + 2^-11 + 2^-24 exactly, halfway between two f32 neighbours;
    // rounded to even it is 1 + 2^-11. So a * a - (1 + 2^-11) is 0 when the product is rounded
    // before the subtraction, while a fused multiply-add would give 2^-24.
    let a = 1.0 + 2.0_f32.powi(-12);
    let c = 1.0 + 2.0_f32.powi(-11);
    let mut b = KernelBuilder::new();
    let x = b.input(0);
    let k = b.constant(c);
    let p = b.binary(BinaryOp::Mul, x, x);
    let d = b.binary(BinaryOp::Sub, p, k);
    b.output(d);
    let kernel = b.finish();
    let got = evaluate(&kernel, 1, &[&[a]], &[], &NO_NOISE).expect("valid launch");
    assert_eq!(got[0], [0.0]);
    assert_eq!(a.mul_add(a, -c), 2.0_f32.powi(-24), "the test values must tell the two apart");
}

#[test]
fn several_outputs_constants_and_longer_inputs() {
    let mut b = KernelBuilder::new();
    let x = b.input(0);
    let half = b.constant(0.5);
    let p = b.param(0);
    let y = b.binary(BinaryOp::Mul, x, half);
    let s = b.binary(BinaryOp::Add, y, p);
    b.output(s);
    b.output(x);
    b.output(s);
    let kernel = b.finish();
    // The input is longer than the launch; only the first `len` elements are read.
    let input: Vec<f32> = (0..600).map(|i| i as f32).collect();
    let got = evaluate(&kernel, 513, &[&input], &[10.0], &NO_NOISE).expect("valid launch");
    assert_eq!(got.len(), 3);
    let expected: Vec<f32> = input[..513].iter().map(|v| v * 0.5 + 10.0).collect();
    assert_same(&got[0], &expected);
    assert_same(&got[1], &input[..513]);
    assert_same(&got[2], &expected);
    // An empty launch gives empty outputs.
    let empty = evaluate(&kernel, 0, &[&[]], &[10.0], &NO_NOISE).expect("valid launch");
    assert_eq!(empty, vec![Vec::<f32>::new(); 3]);
}

/// `in0 * p0 - p1`, a body with one output for the reductions.
fn reduction(op: ReduceOp) -> ReductionKernel {
    let mut b = KernelBuilder::new();
    let x = b.input(0);
    let (p0, p1) = (b.param(0), b.param(1));
    let y = b.binary(BinaryOp::Mul, x, p0);
    let z = b.binary(BinaryOp::Sub, y, p1);
    b.output(z);
    ReductionKernel { body: b.finish(), op }
}

#[test]
fn reductions_match_direct_f64_loops() {
    let params = [1.7_f32, 0.3];
    for len in [0, 1, 255, 256, 1000, 1003] {
        let x = ramp(len, 0.9);
        let values: Vec<f64> = x.iter().map(|&v| f64::from(v * params[0] - params[1])).collect();
        let mut sum = 0.0_f64;
        let mut squares = 0.0_f64;
        let mut max_abs = 0.0_f64;
        for &v in &values {
            sum += v;
            squares += v * v;
            max_abs = max_abs.max(v.abs());
        }
        let n = len as f64;
        let run = |op| reduce(&reduction(op), len, &[&x], &params, &NO_NOISE).expect("valid launch");
        let expected = [
            (ReduceOp::Mean, sum / n),
            (ReduceOp::Rms, (squares / n).sqrt()),
            (ReduceOp::Norm, squares.sqrt()),
            (ReduceOp::MaxAbs, max_abs),
        ];
        for (op, e) in expected {
            let got = run(op);
            assert!(got.to_bits() == e.to_bits() || (got.is_nan() && e.is_nan()), "{op} over {len}: {got} != {e}");
        }
        if len == 0 {
            assert!(run(ReduceOp::Mean).is_nan());
            assert!(run(ReduceOp::Rms).is_nan());
            assert_eq!(run(ReduceOp::Norm), 0.0);
            assert_eq!(run(ReduceOp::MaxAbs), 0.0);
        }
    }
    // Small exact cases.
    let x = [3.0_f32, -4.0];
    let exact = |op| reduce(&reduction(op), 2, &[&x], &[1.0, 0.0], &NO_NOISE).expect("valid launch");
    assert_eq!(exact(ReduceOp::Mean), -0.5);
    assert_eq!(exact(ReduceOp::Norm), 5.0);
    assert_eq!(exact(ReduceOp::Rms), 12.5_f64.sqrt());
    assert_eq!(exact(ReduceOp::MaxAbs), 4.0);
}

#[test]
fn reductions_accumulate_in_f64_in_index_order() {
    // 2^24 + 1 + 1 ... is exact in f64 but not in f32, and the order of the additions matters
    // for the last bit of a sum of values of very different magnitudes.
    let mut x = vec![16_777_216.0_f32];
    x.extend(std::iter::repeat_n(1.0, 999));
    let sum = reduce(&reduction(ReduceOp::Mean), x.len(), &[&x], &[1.0, 0.0], &NO_NOISE).expect("valid launch");
    assert_eq!(sum, (16_777_216.0 + 999.0) / 1000.0);
    let values = [1e17_f32, 1.0, -1e17, 1.0];
    let mean = reduce(&reduction(ReduceOp::Mean), 4, &[&values], &[1.0, 0.0], &NO_NOISE).expect("valid launch");
    let in_order = (((1e17_f32 as f64 + 1.0) + -1e17_f32 as f64) + 1.0) / 4.0;
    assert_eq!(mean, in_order);
    assert_eq!(mean, 0.25, "in index order the first 1 is absorbed by 1e17");
}

#[test]
fn max_abs_propagates_nan() {
    let x = [1.0_f32, f32::NAN, 5.0];
    let max = reduce(&reduction(ReduceOp::MaxAbs), 3, &[&x], &[1.0, 0.0], &NO_NOISE).expect("valid launch");
    assert!(max.is_nan());
    let rms = reduce(&reduction(ReduceOp::Rms), 3, &[&x], &[1.0, 0.0], &NO_NOISE).expect("valid launch");
    assert!(rms.is_nan());
}

#[test]
fn reductions_with_noise_use_the_same_stream() {
    let mut b = KernelBuilder::new();
    let z = b.noise(Distribution::Gaussian);
    b.output(z);
    let kernel = ReductionKernel { body: b.finish(), op: ReduceOp::Rms };
    let slots = [NoiseSlot { site: 0, step: 0 }];
    let launch = NoiseLaunch { seed: 3, per_sample: 1000, slots: &slots };
    let got = reduce(&kernel, 2000, &[], &[], &launch).expect("valid launch");
    let mut squares = 0.0_f64;
    for i in 0..2000_u32 {
        let v = f64::from(gaussian(3, 0, 0, i / 1000, i % 1000));
        squares += v * v;
    }
    assert_eq!(got, (squares / 2000.0).sqrt());
}

fn kernel(inputs: u32, params: u32, noise_slots: u32, nodes: Vec<Node>, outputs: Vec<u32>) -> ElementwiseKernel {
    ElementwiseKernel { inputs, params, noise_slots, nodes, outputs: outputs.into_iter().map(NodeId).collect() }
}

#[test]
fn invalid_kernels_are_rejected() {
    let cases = [
        (
            kernel(1, 0, 0, vec![Node::Input(0), Node::Unary(UnaryOp::Neg, NodeId(1))], vec![1]),
            KernelError::ForwardReference { node: 1, operand: 1 },
        ),
        (
            kernel(
                1,
                0,
                0,
                vec![Node::Input(0), Node::Binary(BinaryOp::Add, NodeId(0), NodeId(2)), Node::Input(0)],
                vec![1],
            ),
            KernelError::ForwardReference { node: 1, operand: 2 },
        ),
        (
            kernel(1, 0, 0, vec![Node::Input(0), Node::Binary(BinaryOp::Add, NodeId(7), NodeId(0))], vec![1]),
            KernelError::ForwardReference { node: 1, operand: 7 },
        ),
        (kernel(1, 0, 0, vec![Node::Input(1)], vec![0]), KernelError::InputOutOfRange { node: 0, input: 1, inputs: 1 }),
        (
            kernel(0, 2, 0, vec![Node::Param(0), Node::Param(2)], vec![0]),
            KernelError::ParamOutOfRange { node: 1, param: 2, params: 2 },
        ),
        (
            kernel(0, 0, 0, vec![Node::Noise(Distribution::Uniform, 0)], vec![0]),
            KernelError::NoiseSlotOutOfRange { node: 0, slot: 0, slots: 0 },
        ),
        (kernel(0, 0, 0, vec![Node::constant(1.0)], vec![]), KernelError::NoOutputs),
        (
            kernel(0, 0, 0, vec![Node::constant(1.0)], vec![0, 1]),
            KernelError::OutputOutOfRange { output: 1, node: 1, nodes: 1 },
        ),
    ];
    for (kernel, error) in cases {
        assert_eq!(kernel.validate(), Err(error.clone()));
        let inputs: Vec<&[f32]> = vec![&[0.0]; kernel.inputs as usize];
        let params = vec![0.0; kernel.params as usize];
        let slots = vec![NoiseSlot { site: 0, step: 0 }; kernel.noise_slots as usize];
        let launch = NoiseLaunch { seed: 0, per_sample: 1, slots: &slots };
        assert_eq!(evaluate(&kernel, 1, &inputs, &params, &launch), Err(error.clone()));
        let reduction = ReductionKernel { body: kernel, op: ReduceOp::Norm };
        assert_eq!(reduce(&reduction, 1, &inputs, &params, &launch), Err(error));
    }
    assert_eq!(ddim_kernel().validate(), Ok(()));
}

#[test]
fn bad_launches_are_rejected() {
    let kernel = ddim_kernel();
    let x = [1.0_f32; 10];
    let slots = [NoiseSlot { site: 0, step: 0 }];
    let launch = NoiseLaunch { seed: 1, per_sample: 5, slots: &slots };
    let params = [1.0, 2.0, 3.0];
    assert_eq!(evaluate(&kernel, 10, &[&x], &params, &launch), Err(KernelError::InputCount { expected: 2, got: 1 }));
    assert_eq!(
        evaluate(&kernel, 10, &[&x, &x, &x], &params, &launch),
        Err(KernelError::InputCount { expected: 2, got: 3 })
    );
    assert_eq!(
        evaluate(&kernel, 10, &[&x, &x], &params[..2], &launch),
        Err(KernelError::ParamCount { expected: 3, got: 2 })
    );
    assert_eq!(
        evaluate(&kernel, 10, &[&x, &x], &params, &NoiseLaunch { slots: &[], ..launch }),
        Err(KernelError::NoiseSlotCount { expected: 1, got: 0 })
    );
    assert_eq!(
        evaluate(&kernel, 10, &[&x, &x[..9]], &params, &launch),
        Err(KernelError::InputTooShort { input: 1, actual: 9, len: 10 })
    );
    assert_eq!(
        evaluate(&kernel, 11, &[&x, &x], &params, &launch),
        Err(KernelError::InputTooShort { input: 0, actual: 10, len: 11 })
    );
    assert_eq!(
        evaluate(&kernel, 10, &[&x, &x], &params, &NoiseLaunch { per_sample: 0, ..launch }),
        Err(KernelError::ZeroPerSample)
    );
    // Without noise nodes, zero elements per sample is irrelevant.
    let plain = binary_kernel(BinaryOp::Add);
    let got = evaluate(&plain, 2, &[&x, &x], &[], &NoiseLaunch { seed: 0, per_sample: 0, slots: &[] });
    assert_eq!(got, Ok(vec![vec![2.0, 2.0]]));
    // The same checks guard reductions, which also need exactly one output.
    let reduction = ReductionKernel { body: kernel.clone(), op: ReduceOp::Mean };
    assert_eq!(reduce(&reduction, 10, &[&x], &params, &launch), Err(KernelError::InputCount { expected: 2, got: 1 }));
    assert_eq!(
        reduce(&reduction, 10, &[&x, &x], &params, &NoiseLaunch { per_sample: 0, ..launch }),
        Err(KernelError::ZeroPerSample)
    );
    let mut two = kernel;
    two.outputs.push(NodeId(0));
    let reduction = ReductionKernel { body: two, op: ReduceOp::Mean };
    assert_eq!(reduce(&reduction, 10, &[&x, &x], &params, &launch), Err(KernelError::ReductionOutputs { outputs: 2 }));
}

#[test]
fn noise_coordinates_beyond_32_bits_are_rejected() {
    let mut b = KernelBuilder::new();
    let z = b.noise(Distribution::Uniform);
    b.output(z);
    let kernel = b.finish();
    let slots = [NoiseSlot { site: 0, step: 0 }];
    // More than 2^32 samples: the check comes before any buffer is allocated.
    let len = 1_usize << 33;
    let launch = NoiseLaunch { seed: 0, per_sample: 1, slots: &slots };
    assert_eq!(
        evaluate(&kernel, len, &[], &[], &launch),
        Err(KernelError::NoiseCoordinatesOverflow { len, per_sample: 1 })
    );
    // More than 2^32 elements in a sample.
    let launch = NoiseLaunch { seed: 0, per_sample: len, slots: &slots };
    assert_eq!(
        evaluate(&kernel, len, &[], &[], &launch),
        Err(KernelError::NoiseCoordinatesOverflow { len, per_sample: len })
    );
    // A huge sample size is fine when the launch is short: indices stay below `len`.
    let got = evaluate(&kernel, 3, &[], &[], &launch).expect("valid launch");
    assert_eq!(got[0], [uniform(0, 0, 0, 0, 0), uniform(0, 0, 0, 0, 1), uniform(0, 0, 0, 0, 2)]);
}

/// Evaluates a kernel one element at a time, straight from the definitions: the simplest
/// possible reading of the specification, with no chunks and no builder.
#[allow(clippy::needless_range_loop, reason = "the element index is the loop variable of the specification")]
fn naive(
    kernel: &ElementwiseKernel,
    len: usize,
    inputs: &[&[f32]],
    params: &[f32],
    noise: &NoiseLaunch<'_>,
) -> Vec<Vec<f32>> {
    let mut outputs = vec![Vec::new(); kernel.outputs.len()];
    for i in 0..len {
        let mut values: Vec<f32> = Vec::new();
        for node in &kernel.nodes {
            let v = match *node {
                Node::Input(k) => inputs[k as usize][i],
                Node::Param(k) => params[k as usize],
                Node::Const(bits) => f32::from_bits(bits),
                Node::Unary(op, a) => sched_kernels::cpu::apply_unary(op, values[a.0 as usize]),
                Node::Binary(op, a, b) => {
                    sched_kernels::cpu::apply_binary(op, values[a.0 as usize], values[b.0 as usize])
                }
                Node::Noise(dist, slot) => {
                    let s = noise.slots[slot as usize];
                    let (sample, index) = ((i / noise.per_sample) as u32, (i % noise.per_sample) as u32);
                    match dist {
                        Distribution::Gaussian => gaussian(noise.seed, s.site, s.step, sample, index),
                        Distribution::Uniform => uniform(noise.seed, s.site, s.step, sample, index),
                    }
                }
            };
            values.push(v);
        }
        for (out, id) in outputs.iter_mut().zip(&kernel.outputs) {
            out.push(values[id.0 as usize]);
        }
    }
    outputs
}

/// The raw material of one random node: a kind (input, parameter, constant, unary, binary or
/// noise), three indices that the test reduces to operands, operations and slots, and a constant.
fn arbitrary_node() -> impl Strategy<Value = (u8, u32, u32, u32, f32)> {
    (0_u8..6, any::<u32>(), any::<u32>(), any::<u32>(), prop_oneof![any::<f32>(), -4.0_f32..4.0])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random kernels agree with the element-at-a-time reading bit for bit, over lengths that
    /// cross chunk boundaries; and a kernel that validation rejects is an error, never a panic.
    #[test]
    fn random_kernels_match_the_naive_reading(
        raw in prop::collection::vec(arbitrary_node(), 1..24),
        outputs in prop::collection::vec(any::<u32>(), 0..4),
        len in 0_usize..700,
        per_sample in 1_usize..300,
        seed in any::<u64>(),
        wild in any::<bool>(),
    ) {
        let kernel = random_kernel(&raw, &outputs, wild, false);
        let data: Vec<Vec<f32>> = (0..kernel.inputs).map(|k| ramp(len, k as f32)).collect();
        let data: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
        let noise_slots = [NoiseSlot { site: 5, step: 1 }, NoiseSlot { site: 6, step: 2 }];
        let launch = NoiseLaunch { seed, per_sample, slots: &noise_slots };
        let got = evaluate(&kernel, len, &data, &[0.75, -1.25], &launch);
        match kernel.validate() {
            Ok(()) => {
                let got = got.expect("a valid kernel with a matching launch evaluates");
                let expected = naive(&kernel, len, &data, &[0.75, -1.25], &launch);
                prop_assert_eq!(got.len(), expected.len());
                for (g, e) in got.iter().zip(&expected) {
                    prop_assert_eq!(g.len(), e.len());
                    for (&a, &b) in g.iter().zip(e) {
                        prop_assert!(same(a, b), "{:?} != {:?}", a, b);
                    }
                }
            }
            Err(error) => prop_assert_eq!(got, Err(error)),
        }
    }
}
