//! The text form of kernels printed by `sched build --emit kernels`.

use sched_kernels::{
    BinaryOp, Distribution, ElementwiseKernel, KernelBuilder, Node, NodeId, ReduceOp, ReductionKernel, UnaryOp,
};

#[test]
fn elementwise_kernel_text() {
    let mut b = KernelBuilder::new();
    let x = b.input(0);
    b.input(1);
    let p = b.param(0);
    b.param(2);
    let m = b.binary(BinaryOp::Mul, p, x);
    b.noise(Distribution::Gaussian);
    b.constant(0.5);
    let s = b.unary(UnaryOp::Sigmoid, m);
    b.noise(Distribution::Uniform);
    b.output(m);
    b.output(s);
    let expected = "\
kernel(inputs 2, params 3, noise 2)
  %0 = in0
  %1 = in1
  %2 = p0
  %3 = p2
  %4 = mul %2, %0
  %5 = gaussian slot0
  %6 = const 0.5
  %7 = sigmoid %4
  %8 = uniform slot1
  out0 = %4
  out1 = %7
";
    assert_eq!(b.finish().to_string(), expected);
}

#[test]
fn constants_round_trip() {
    let values =
        [0.5_f32, 1.0, -0.0, 0.1, 1e-45, 3.4028235e38, f32::INFINITY, f32::NEG_INFINITY, 16_777_217.0, 1.0 / 3.0];
    for value in values {
        let kernel = ElementwiseKernel {
            inputs: 0,
            params: 0,
            noise_slots: 0,
            nodes: vec![Node::constant(value)],
            outputs: vec![NodeId(0)],
        };
        let text = kernel.to_string();
        let line = text.lines().nth(1).expect("a node line");
        let printed = line.strip_prefix("  %0 = const ").expect("a constant line");
        let parsed: f32 = printed.parse().expect("the constant parses");
        assert_eq!(parsed.to_bits(), value.to_bits(), "{value:?} printed as {printed}");
    }
    let nan = ElementwiseKernel {
        inputs: 0,
        params: 0,
        noise_slots: 0,
        nodes: vec![Node::constant(f32::NAN)],
        outputs: vec![NodeId(0)],
    };
    assert!(nan.to_string().contains("%0 = const NaN\n"));
}

#[test]
fn reduction_kernel_text() {
    let mut b = KernelBuilder::new();
    let x = b.input(0);
    let a = b.unary(UnaryOp::Abs, x);
    b.output(a);
    let body = b.finish();
    let ops =
        [(ReduceOp::Mean, "mean"), (ReduceOp::Rms, "rms"), (ReduceOp::Norm, "norm"), (ReduceOp::MaxAbs, "max_abs")];
    for (op, name) in ops {
        let text = ReductionKernel { body: body.clone(), op }.to_string();
        assert_eq!(
            text,
            format!("reduce {name} of kernel(inputs 1, params 0, noise 0)\n  %0 = in0\n  %1 = abs %0\n  out0 = %1\n")
        );
    }
}

#[test]
fn invalid_kernels_still_print() {
    let kernel = ElementwiseKernel {
        inputs: 0,
        params: 0,
        noise_slots: 0,
        nodes: vec![Node::Binary(BinaryOp::Max, NodeId(5), NodeId(0)), Node::Noise(Distribution::Gaussian, 9)],
        outputs: vec![NodeId(7)],
    };
    assert_eq!(
        kernel.to_string(),
        "kernel(inputs 0, params 0, noise 0)\n  %0 = max %5, %0\n  %1 = gaussian slot9\n  out0 = %7\n"
    );
}
