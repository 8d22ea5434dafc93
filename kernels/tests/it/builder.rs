//! The kernel builder: hash-consing, noise slots, declared counts, no folding.

use sched_kernels::{BinaryOp, Distribution, ElementwiseKernel, KernelBuilder, Node, NodeId, UnaryOp};

#[test]
fn identical_nodes_share_an_id() {
    let mut b = KernelBuilder::new();
    let x = b.input(0);
    assert_eq!(b.input(0), x);
    let p = b.param(1);
    assert_eq!(b.param(1), p);
    let half = b.constant(0.5);
    assert_eq!(b.constant(0.5), half);
    let m = b.binary(BinaryOp::Mul, p, x);
    assert_eq!(b.binary(BinaryOp::Mul, p, x), m);
    let e = b.unary(UnaryOp::Exp, m);
    assert_eq!(b.unary(UnaryOp::Exp, m), e);
    b.output(e);
    let kernel = b.finish();
    assert_eq!(
        kernel,
        ElementwiseKernel {
            inputs: 1,
            params: 2,
            noise_slots: 0,
            nodes: vec![
                Node::Input(0),
                Node::Param(1),
                Node::constant(0.5),
                Node::Binary(BinaryOp::Mul, NodeId(1), NodeId(0)),
                Node::Unary(UnaryOp::Exp, NodeId(3)),
            ],
            outputs: vec![NodeId(4)],
        }
    );
}

#[test]
fn different_nodes_get_different_ids() {
    let mut b = KernelBuilder::new();
    let (x, y) = (b.input(0), b.input(1));
    // Operands are not reordered, even for a commutative operation.
    let xy = b.binary(BinaryOp::Add, x, y);
    let yx = b.binary(BinaryOp::Add, y, x);
    assert_ne!(xy, yx);
    assert_ne!(b.binary(BinaryOp::Sub, x, y), xy);
    assert_ne!(b.unary(UnaryOp::Sin, x), b.unary(UnaryOp::Cos, x));
    // Constants are compared by their bits: 0 and -0 are two constants, and a NaN equals itself.
    let zero = b.constant(0.0);
    assert_ne!(b.constant(-0.0), zero);
    let nan = b.constant(f32::NAN);
    assert_eq!(b.constant(f32::NAN), nan);
    assert_ne!(b.input(0), b.param(0));
    let kernel = b.finish();
    assert_eq!(kernel.nodes.len(), 11);
    assert_eq!(kernel.validate(), Err(sched_kernels::KernelError::NoOutputs));
}

#[test]
fn every_noise_call_takes_a_new_slot() {
    let mut b = KernelBuilder::new();
    let z0 = b.noise(Distribution::Gaussian);
    let z1 = b.noise(Distribution::Gaussian);
    let u = b.noise(Distribution::Uniform);
    assert_ne!(z0, z1);
    // Operations on distinct draws stay distinct; operations on the same draw are shared.
    let n0 = b.unary(UnaryOp::Neg, z0);
    let n1 = b.unary(UnaryOp::Neg, z1);
    assert_ne!(n0, n1);
    assert_eq!(b.unary(UnaryOp::Neg, z0), n0);
    b.output(u);
    let kernel = b.finish();
    assert_eq!(kernel.noise_slots, 3);
    assert_eq!(
        kernel.nodes[..3],
        [
            Node::Noise(Distribution::Gaussian, 0),
            Node::Noise(Distribution::Gaussian, 1),
            Node::Noise(Distribution::Uniform, 2)
        ]
    );
    assert_eq!(kernel.validate(), Ok(()));
}

#[test]
fn inputs_and_params_grow_to_the_highest_index() {
    let mut b = KernelBuilder::new();
    let x = b.input(3);
    b.input(1);
    let p = b.param(4);
    let s = b.binary(BinaryOp::Add, x, p);
    b.output(s);
    b.output(x);
    let kernel = b.finish();
    assert_eq!((kernel.inputs, kernel.params), (4, 5));
    assert_eq!(kernel.outputs, [s, x]);
    assert_eq!(kernel.validate(), Ok(()));
    // An index that cannot be counted leaves a kernel that validation rejects.
    let mut b = KernelBuilder::default();
    let x = b.input(u32::MAX);
    b.output(x);
    assert_eq!(
        b.finish().validate(),
        Err(sched_kernels::KernelError::InputOutOfRange { node: 0, input: u32::MAX, inputs: u32::MAX })
    );
}

#[test]
fn constants_are_not_folded() {
    let mut b = KernelBuilder::new();
    let two = b.constant(2.0);
    let three = b.constant(3.0);
    let sum = b.binary(BinaryOp::Add, two, three);
    let root = b.unary(UnaryOp::Sqrt, sum);
    b.output(root);
    let kernel = b.finish();
    assert_eq!(
        kernel.nodes,
        [
            Node::constant(2.0),
            Node::constant(3.0),
            Node::Binary(BinaryOp::Add, NodeId(0), NodeId(1)),
            Node::Unary(UnaryOp::Sqrt, NodeId(2)),
        ]
    );
    assert_eq!(kernel.outputs, [NodeId(3)]);
}
