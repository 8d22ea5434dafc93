//! The Cranelift-compiled kernels against the reference CPU evaluator, bit for bit.

use crate::common;

use common::{BINARY, NO_NOISE, UNARY, ddim_kernel, ramp, random_kernel};
use proptest::prelude::*;
use sched_kernels::{
    BinaryOp, CompiledKernel, Distribution, ElementwiseKernel, JitError, KernelBuilder, KernelError, Node, NodeId,
    NoiseLaunch, NoiseSlot, UnaryOp, evaluate,
};

/// Bitwise equality, NaN payloads included.
fn assert_bits(got: &[f32], expected: &[f32], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths differ");
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        assert!(
            g.to_bits() == e.to_bits(),
            "{what}, element {i}: got {g:?} ({:#010x}), expected {e:?} ({:#010x})",
            g.to_bits(),
            e.to_bits()
        );
    }
}

/// Compiles a kernel that the test knows to be valid.
fn compile(kernel: &ElementwiseKernel) -> CompiledKernel {
    match CompiledKernel::compile(kernel) {
        Ok(compiled) => compiled,
        Err(error) => panic!("the kernel does not compile: {error}"),
    }
}

/// Runs a compiled kernel into fresh outputs of `len` elements.
fn run(
    compiled: &CompiledKernel,
    outputs: usize,
    len: usize,
    inputs: &[&[f32]],
    params: &[f32],
    noise: &NoiseLaunch<'_>,
) -> Result<Vec<Vec<f32>>, JitError> {
    let mut values = vec![vec![f32::NAN; len]; outputs];
    let mut views: Vec<&mut [f32]> = values.iter_mut().map(Vec::as_mut_slice).collect();
    compiled.run(len, inputs, params, noise, &mut views)?;
    Ok(values)
}

#[test]
fn ddim_kernel_with_noise_matches_the_reference() {
    let kernel = ddim_kernel();
    let compiled = compile(&kernel);
    let slots = [NoiseSlot { site: 3, step: 7 }];
    for len in [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 1000, 1003] {
        for per_sample in [1, 3, 8, 1000] {
            let noise = NoiseLaunch { seed: 0x5EED_0000_0000_002A, per_sample, slots: &slots };
            let (x, eps) = (ramp(len, 0.0), ramp(len, 1.0));
            let params = [0.98, -0.12, 0.35];
            let expected = evaluate(&kernel, len, &[&x, &eps], &params, &noise).expect("reference");
            let got = run(&compiled, 1, len, &[&x, &eps], &params, &noise).expect("compiled");
            assert_bits(&got[0], &expected[0], &format!("len {len}, per_sample {per_sample}"));
        }
    }
}

#[test]
fn elements_past_the_launch_are_untouched() {
    let compiled = compile(&ddim_kernel());
    let slots = [NoiseSlot { site: 0, step: 0 }];
    let noise = NoiseLaunch { seed: 1, per_sample: 4, slots: &slots };
    let (x, eps) = (ramp(40, 0.0), ramp(40, 2.0));
    let mut out = vec![-7.0_f32; 40];
    compiled.run(13, &[&x, &eps], &[1.0, 2.0, 3.0], &noise, &mut [&mut out]).expect("launch");
    let expected = evaluate(&ddim_kernel(), 13, &[&x, &eps], &[1.0, 2.0, 3.0], &noise).expect("reference");
    assert_bits(&out[..13], &expected[0], "launched elements");
    assert!(out[13..].iter().all(|&v| v == -7.0));
}

/// Zeros, subnormals, huge magnitudes, the edges of the functions' domains, infinities, NaNs of
/// both signs, and a ramp.
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
        -f32::MIN_POSITIVE,
        1e-40,
        -1e-40,
        1e-45,
        -1e-45,
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
        -f32::NAN,
        std::f32::consts::PI,
        std::f32::consts::FRAC_PI_2,
    ];
    values.extend(ramp(300, 0.0).iter().map(|v| v * 3.0));
    values
}

/// Checks a kernel over the whole of `inputs` (mostly the vector loop) and over each element
/// alone (the scalar loop), bit for bit against the reference.
fn check_both_loops(kernel: &ElementwiseKernel, inputs: &[&[f32]], what: &str) {
    let compiled = compile(kernel);
    let len = inputs[0].len();
    let expected = evaluate(kernel, len, inputs, &[], &NO_NOISE).expect("reference");
    let got = run(&compiled, 1, len, inputs, &[], &NO_NOISE).expect("compiled");
    assert_bits(&got[0], &expected[0], &format!("{what}, vector loop"));
    let alone: Vec<f32> = (0..len)
        .map(|i| {
            let element: Vec<&[f32]> = inputs.iter().map(|x| &x[i..=i]).collect();
            run(&compiled, 1, 1, &element, &[], &NO_NOISE).expect("compiled")[0][0]
        })
        .collect();
    assert_bits(&alone, &expected[0], &format!("{what}, scalar loop"));
}

#[test]
fn every_unary_op_matches_the_reference_on_special_values() {
    let values = special_values();
    for op in UNARY {
        let mut b = KernelBuilder::new();
        let x = b.input(0);
        let y = b.unary(op, x);
        b.output(y);
        check_both_loops(&b.finish(), &[&values], &format!("{op}"));
    }
}

#[test]
fn every_binary_op_matches_the_reference_on_special_values() {
    let values = special_values();
    // Every pair of the special values, and the ramp against a shifted ramp.
    let specials = &values[..30];
    let mut left: Vec<f32> = specials.iter().flat_map(|&a| specials.iter().map(move |_| a)).collect();
    let mut right: Vec<f32> = specials.iter().flat_map(|_| specials.iter().copied()).collect();
    left.extend(ramp(301, 0.5));
    right.extend(ramp(301, 2.0).iter().map(|v| v * 4.0));
    for op in BINARY {
        let mut b = KernelBuilder::new();
        let (x, y) = (b.input(0), b.input(1));
        let z = b.binary(op, x, y);
        b.output(z);
        check_both_loops(&b.finish(), &[&left, &right], &format!("{op}"));
    }
}

/// Rust's `f32::min` and `f32::max` leave the sign of a zero result unspecified when the operands
/// are `+0` and `-0`, and constant folding may choose differently from the machine code, so these
/// cases are compared with the reference evaluator on values it cannot see at compile time.
#[test]
fn min_and_max_match_the_reference_on_nan_and_signed_zeros() {
    let cases = [(0.0_f32, -0.0_f32), (-0.0, 0.0), (f32::NAN, 1.0), (1.0, f32::NAN), (f32::NAN, -f32::NAN), (2.0, 2.0)];
    let left: Vec<f32> = std::hint::black_box(cases.iter().map(|c| c.0).collect());
    let right: Vec<f32> = std::hint::black_box(cases.iter().map(|c| c.1).collect());
    for op in [BinaryOp::Min, BinaryOp::Max] {
        let mut b = KernelBuilder::new();
        let (x, y) = (b.input(0), b.input(1));
        let z = b.binary(op, x, y);
        b.output(z);
        let kernel = b.finish();
        let compiled = compile(&kernel);
        let got = run(&compiled, 1, cases.len(), &[&left, &right], &[], &NO_NOISE).expect("compiled");
        let expected = evaluate(&kernel, cases.len(), &[&left, &right], &[], &NO_NOISE).expect("reference");
        assert_bits(&got[0], &expected[0], &format!("{op}"));
        // A NaN operand is ignored, as the specification says.
        assert_eq!(got[0][2..4], [1.0, 1.0]);
    }
}

#[test]
fn several_outputs_constants_params_and_unused_nodes() {
    let mut b = KernelBuilder::new();
    let (x, y) = (b.input(0), b.input(2));
    let p = b.param(1);
    let c = b.constant(-0.0);
    let _unused = b.unary(UnaryOp::Exp, x);
    let s = b.binary(BinaryOp::Add, x, c);
    let m = b.binary(BinaryOp::Mul, s, p);
    let u = b.noise(Distribution::Uniform);
    let w = b.binary(BinaryOp::Sub, m, u);
    let v = b.unary(UnaryOp::Sigmoid, w);
    let q = b.binary(BinaryOp::Pow, y, v);
    b.output(q);
    b.output(c);
    b.output(q);
    b.output(u);
    let kernel = b.finish();
    let compiled = compile(&kernel);
    let slots = [NoiseSlot { site: 9, step: 2 }];
    let noise = NoiseLaunch { seed: 77, per_sample: 10, slots: &slots };
    let len = 103;
    let data: Vec<Vec<f32>> = (0..3).map(|k| ramp(len + 5, k as f32)).collect();
    let inputs: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
    let params = [f32::NAN, 1.75];
    let expected = evaluate(&kernel, len, &inputs, &params, &noise).expect("reference");
    let got = run(&compiled, 4, len, &inputs, &params, &noise).expect("compiled");
    for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_bits(g, e, &format!("output {k}"));
    }
}

#[test]
fn parallel_launches_match_the_reference() {
    let kernel = ddim_kernel();
    let compiled = compile(&kernel);
    let slots = [NoiseSlot { site: 1, step: 4 }];
    let noise = NoiseLaunch { seed: 99, per_sample: 777, slots: &slots };
    let params = [0.5, 0.25, 0.125];
    for len in [0, 1, 5, 17, 4095, 4097, 100_003] {
        let (x, eps) = (ramp(len, 0.0), ramp(len, 3.0));
        let expected = evaluate(&kernel, len, &[&x, &eps], &params, &noise).expect("reference");
        for threads in [0, 1, 2, 3, 8, 200_000] {
            let mut out = vec![0.0; len];
            compiled.run_parallel(threads, len, &[&x, &eps], &params, &noise, &mut [&mut out]).expect("parallel");
            assert_bits(&out, &expected[0], &format!("len {len}, {threads} threads"));
        }
    }
}

#[test]
fn compiled_kernels_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledKernel>();
}

#[test]
fn clif_holds_the_function_text() {
    let compiled = compile(&ddim_kernel());
    let clif = compiled.clif();
    assert!(clif.starts_with("function "), "{clif}");
    for needle in ["f32x4", "fmul", "fadd", "call", "udiv", "return"] {
        assert!(clif.contains(needle), "no {needle} in\n{clif}");
    }
    assert!(!clif.contains("fma"), "{clif}");
}

#[test]
fn invalid_kernels_do_not_compile() {
    let kernel = ElementwiseKernel {
        inputs: 1,
        params: 0,
        noise_slots: 0,
        nodes: vec![Node::Input(0), Node::Unary(UnaryOp::Neg, NodeId(1))],
        outputs: vec![NodeId(1)],
    };
    assert!(matches!(
        CompiledKernel::compile(&kernel),
        Err(JitError::Kernel(KernelError::ForwardReference { node: 1, operand: 1 }))
    ));
    let empty = ElementwiseKernel { inputs: 0, params: 0, noise_slots: 0, nodes: vec![], outputs: vec![] };
    assert!(matches!(CompiledKernel::compile(&empty), Err(JitError::Kernel(KernelError::NoOutputs))));
}

/// Indices near `u32::MAX` compile (the offsets into the launch's arrays are 64-bit) and the
/// launch, which cannot pass that many tensors, is an error.
#[test]
fn huge_indices_compile_and_their_launches_are_errors() {
    let top = u32::MAX - 1;
    let kernel = ElementwiseKernel {
        inputs: u32::MAX,
        params: u32::MAX,
        noise_slots: u32::MAX,
        nodes: vec![
            Node::Input(top),
            Node::Param(top),
            Node::Noise(Distribution::Gaussian, top),
            Node::Binary(BinaryOp::Add, NodeId(0), NodeId(1)),
            Node::Binary(BinaryOp::Add, NodeId(3), NodeId(2)),
        ],
        outputs: vec![NodeId(4)],
    };
    let compiled = compile(&kernel);
    let x = [1.0_f32; 4];
    let result = compiled.run(4, &[&x], &[1.0], &NO_NOISE, &mut [&mut [0.0; 4]]);
    assert!(
        matches!(result, Err(JitError::Kernel(KernelError::InputCount { expected: u32::MAX, got: 1 }))),
        "{result:?}"
    );
}

#[test]
fn bad_launches_are_errors() {
    let compiled = compile(&ddim_kernel());
    let slots = [NoiseSlot { site: 0, step: 0 }];
    let noise = NoiseLaunch { seed: 0, per_sample: 4, slots: &slots };
    let (x, short) = (vec![1.0; 10], vec![1.0; 9]);
    let params = [1.0, 2.0, 3.0];
    let mut out = vec![0.0; 10];
    let mut short_out = vec![0.0; 9];
    let kernel_error = |result: Result<(), JitError>| match result {
        Err(JitError::Kernel(error)) => error,
        other => panic!("expected a kernel error, got {other:?}"),
    };
    assert_eq!(
        kernel_error(compiled.run(10, &[&x], &params, &noise, &mut [&mut out])),
        KernelError::InputCount { expected: 2, got: 1 }
    );
    assert_eq!(
        kernel_error(compiled.run(10, &[&x, &x], &params[..2], &noise, &mut [&mut out])),
        KernelError::ParamCount { expected: 3, got: 2 }
    );
    assert_eq!(
        kernel_error(compiled.run(10, &[&x, &x], &params, &NO_NOISE, &mut [&mut out])),
        KernelError::NoiseSlotCount { expected: 1, got: 0 }
    );
    assert_eq!(
        kernel_error(compiled.run(10, &[&x, &short], &params, &noise, &mut [&mut out])),
        KernelError::InputTooShort { input: 1, actual: 9, len: 10 }
    );
    let no_samples = NoiseLaunch { per_sample: 0, ..noise };
    assert_eq!(
        kernel_error(compiled.run(10, &[&x, &x], &params, &no_samples, &mut [&mut out])),
        KernelError::ZeroPerSample
    );
    assert!(matches!(
        compiled.run(10, &[&x, &x], &params, &noise, &mut []),
        Err(JitError::OutputCount { expected: 1, got: 0 })
    ));
    assert!(matches!(
        compiled.run(10, &[&x, &x], &params, &noise, &mut [&mut out, &mut short_out]),
        Err(JitError::OutputCount { expected: 1, got: 2 })
    ));
    assert!(matches!(
        compiled.run(10, &[&x, &x], &params, &noise, &mut [&mut short_out]),
        Err(JitError::OutputTooShort { output: 0, actual: 9, len: 10 })
    ));
    assert!(matches!(
        compiled.run_parallel(4, 10, &[&x, &short], &params, &noise, &mut [&mut out]),
        Err(JitError::Kernel(KernelError::InputTooShort { input: 1, actual: 9, len: 10 }))
    ));
    assert!(matches!(
        compiled.run_parallel(4, 10, &[&x, &x], &params, &noise, &mut [&mut short_out]),
        Err(JitError::OutputTooShort { output: 0, actual: 9, len: 10 })
    ));
    // The same launches with matching arguments succeed, including an empty one.
    compiled.run(10, &[&x, &x], &params, &noise, &mut [&mut out]).expect("a matching launch");
    compiled.run(0, &[&[], &[]], &params, &noise, &mut [&mut []]).expect("an empty launch");
}

#[test]
fn noise_coordinates_beyond_32_bits_are_errors() {
    let mut b = KernelBuilder::new();
    let z = b.noise(Distribution::Uniform);
    b.output(z);
    let kernel = b.finish();
    let compiled = compile(&kernel);
    let slots = [NoiseSlot { site: 0, step: 0 }];
    let len = 1_usize << 33;
    let noise = NoiseLaunch { seed: 0, per_sample: 1, slots: &slots };
    // A launch this long cannot be allocated here; the noise check comes before the output
    // lengths would be compared, exactly as in the reference, which reports the same error.
    let result = compiled.run(len, &[], &[], &noise, &mut [&mut []]);
    assert!(matches!(result, Err(JitError::Kernel(KernelError::NoiseCoordinatesOverflow { .. }))), "{result:?}");
    assert_eq!(
        evaluate(&kernel, len, &[], &[], &noise),
        Err(KernelError::NoiseCoordinatesOverflow { len, per_sample: 1 })
    );
}

/// Test inputs: mostly ordinary values, with the special values mixed in.
fn arbitrary_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -4.0_f32..4.0,
        1 => any::<f32>(),
        1 => prop::sample::select(special_values()[..30].to_vec()),
    ]
}

/// The raw material of one random node: a kind (input, parameter, constant, unary, binary or
/// noise), three indices that the test reduces to operands, operations and slots, and a constant.
fn arbitrary_node() -> impl Strategy<Value = (u8, u32, u32, u32, f32)> {
    (0_u8..6, any::<u32>(), any::<u32>(), any::<u32>(), arbitrary_value())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random kernels agree with the reference, in one launch and split over threads; a kernel
    /// that validation rejects does not compile, with the same error.
    #[test]
    fn random_kernels_match_the_reference(
        raw in prop::collection::vec(arbitrary_node(), 1..28),
        outputs in prop::collection::vec(any::<u32>(), 0..4),
        len in prop_oneof![0_usize..40, 0_usize..300],
        data in prop::collection::vec(arbitrary_value(), 300 * 3),
        params in prop::collection::vec(arbitrary_value(), 2),
        per_sample in 1_usize..50,
        seed in any::<u64>(),
        threads in 1_usize..5,
        wild in prop::bool::weighted(0.1),
    ) {
        let kernel = random_kernel(&raw, &outputs, wild, true);
        let compiled = match (CompiledKernel::compile(&kernel), kernel.validate()) {
            (Ok(compiled), Ok(())) => compiled,
            (Err(JitError::Kernel(got)), Err(expected)) => {
                prop_assert_eq!(got, expected);
                return Ok(());
            }
            (got, expected) => {
                return Err(TestCaseError::fail(format!("compile: {got:?}, validate: {expected:?}")));
            }
        };
        let data: Vec<&[f32]> = data.chunks(300).collect();
        let noise_slots = [NoiseSlot { site: 5, step: 1 }, NoiseSlot { site: 6, step: 2 }];
        let launch = NoiseLaunch { seed, per_sample, slots: &noise_slots };
        let expected = evaluate(&kernel, len, &data, &params, &launch).expect("the reference evaluates");
        let got = run(&compiled, kernel.outputs.len(), len, &data, &params, &launch).expect("the kernel runs");
        let mut parallel = vec![vec![0.0_f32; len]; kernel.outputs.len()];
        let mut views: Vec<&mut [f32]> = parallel.iter_mut().map(Vec::as_mut_slice).collect();
        compiled.run_parallel(threads, len, &data, &params, &launch, &mut views).expect("the kernel runs in parallel");
        for ((g, p), e) in got.iter().zip(&parallel).zip(&expected) {
            for (i, ((&a, &b), &c)) in g.iter().zip(p).zip(e).enumerate() {
                prop_assert!(a.to_bits() == c.to_bits(), "element {}: {:?} ({:#010x}) != {:?} ({:#010x})", i, a, a.to_bits(), c, c.to_bits());
                prop_assert!(a.to_bits() == b.to_bits(), "element {}: parallel {:?} != {:?}", i, b, a);
            }
        }
    }
}
