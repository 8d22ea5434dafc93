//! Test helpers shared by the test binaries: data ramps, the operation tables, a DDIM-shaped
//! kernel, the kernels of the golden files, and random kernels built from raw proptest material;
//! in submodules, a deterministic generator of test data ([`random`]), the checks of emitted CUDA
//! C and NVRTC ([`emitted`]), and the harness that runs CUDA C on the host ([`host_cuda`]).

#![allow(dead_code, reason = "each test binary uses a different subset of the helpers")]

pub mod emitted;
pub mod host_cuda;
pub mod random;

use sched_kernels::builder::KernelBuilder;
use sched_kernels::spec::{BinaryOp, Distribution, ElementwiseKernel, Node, NodeId, NoiseLaunch, ReduceOp, UnaryOp};

/// A launch of a kernel that draws no noise.
pub const NO_NOISE: NoiseLaunch<'static> = NoiseLaunch { seed: 0, per_sample: 1, slots: &[] };

/// `out = p0 * in0 + p1 * in1 + p2 * gaussian`, the shape of a DDIM step.
pub fn ddim_kernel() -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let (x, eps) = (b.input(0), b.input(1));
    let (c0, c1, c2) = (b.param(0), b.param(1), b.param(2));
    let a = b.binary(BinaryOp::Mul, c0, x);
    let e = b.binary(BinaryOp::Mul, c1, eps);
    let sum = b.binary(BinaryOp::Add, a, e);
    let z = b.noise(Distribution::Gaussian);
    let noise = b.binary(BinaryOp::Mul, c2, z);
    let out = b.binary(BinaryOp::Add, sum, noise);
    b.output(out);
    b.finish()
}

/// The DDIM step of `tests/in_place.rs`: `out = p0 * in0 + p1 * in1 + p2 * gaussian` as output
/// 0 and `p0 * in0` as output 1, so that an in-place launch can write its state over input 0 and a
/// second output elsewhere.
pub fn in_place_ddim_kernel() -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let (x, e, p0, p1, p2) = (b.input(0), b.input(1), b.param(0), b.param(1), b.param(2));
    let z = b.noise(Distribution::Gaussian);
    let ax = b.binary(BinaryOp::Mul, p0, x);
    let be = b.binary(BinaryOp::Mul, p1, e);
    let cz = b.binary(BinaryOp::Mul, p2, z);
    let sum = b.binary(BinaryOp::Add, ax, be);
    let out = b.binary(BinaryOp::Add, sum, cz);
    b.output(out);
    b.output(ax);
    b.finish()
}

/// A kernel that applies every unary and binary operation, draws a uniform and a Gaussian value
/// from the same noise slot, and uses a constant: the kernel of `golden/all_ops.cu`.
pub fn all_ops_kernel() -> ElementwiseKernel {
    let mut nodes = vec![Node::Input(0), Node::Input(1), Node::Param(0), Node::constant(0.5)];
    let mut terms = Vec::new();
    for op in UNARY {
        terms.push(NodeId(nodes.len() as u32));
        nodes.push(Node::Unary(op, NodeId(0)));
    }
    for op in BINARY {
        terms.push(NodeId(nodes.len() as u32));
        nodes.push(Node::Binary(op, NodeId(1), NodeId(3)));
    }
    terms.push(NodeId(nodes.len() as u32));
    nodes.push(Node::Noise(Distribution::Uniform, 0));
    terms.push(NodeId(nodes.len() as u32));
    nodes.push(Node::Noise(Distribution::Gaussian, 0));
    let mut sum = NodeId(2);
    for term in terms {
        nodes.push(Node::Binary(BinaryOp::Add, sum, term));
        sum = NodeId(nodes.len() as u32 - 1);
    }
    ElementwiseKernel { inputs: 2, params: 1, noise_slots: 1, nodes, outputs: vec![sum, NodeId(0)] }
}

/// A kernel with no inputs that writes a Gaussian and a uniform draw of two slots: the kernel of
/// `golden/noise.cu`.
pub fn noise_kernel() -> ElementwiseKernel {
    ElementwiseKernel {
        inputs: 0,
        params: 0,
        noise_slots: 2,
        nodes: vec![Node::Noise(Distribution::Gaussian, 0), Node::Noise(Distribution::Uniform, 1)],
        outputs: vec![NodeId(0), NodeId(1)],
    }
}

/// The body of the golden reductions: `in0 - p0 * in1`.
pub fn reduction_body() -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let (x, y, p) = (b.input(0), b.input(1), b.param(0));
    let scaled = b.binary(BinaryOp::Mul, p, y);
    let difference = b.binary(BinaryOp::Sub, x, scaled);
    b.output(difference);
    b.finish()
}

/// The reduction operations with the names of their golden files (each of [`reduction_body`]).
pub const REDUCTIONS: [(ReduceOp, &str); 4] = [
    (ReduceOp::Mean, "reduce_mean.cu"),
    (ReduceOp::Rms, "reduce_rms.cu"),
    (ReduceOp::Norm, "reduce_norm.cu"),
    (ReduceOp::MaxAbs, "reduce_max_abs.cu"),
];

/// Varied values that cross sign and magnitude, shifted by `offset`.
pub fn ramp(len: usize, offset: f32) -> Vec<f32> {
    (0..len).map(|i| ((i as f32) * 0.37 + offset).sin() * (1.0 + (i % 7) as f32)).collect()
}

pub const UNARY: [UnaryOp; 15] = [
    UnaryOp::Neg,
    UnaryOp::Sqrt,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Expm1,
    UnaryOp::Log1p,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::Tan,
    UnaryOp::Tanh,
    UnaryOp::Atan,
    UnaryOp::Abs,
    UnaryOp::Sigmoid,
    UnaryOp::Floor,
    UnaryOp::Ceil,
];

pub const BINARY: [BinaryOp; 7] =
    [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow, BinaryOp::Min, BinaryOp::Max];

/// The number of inputs, parameters and noise slots of a random kernel.
pub const RANDOM_INPUTS: u32 = 3;
pub const RANDOM_PARAMS: u32 = 2;
pub const RANDOM_SLOTS: u32 = 2;

/// A kernel from raw random material: per node a kind (input, parameter, constant, unary,
/// binary or noise), three indices and a constant; then output indices. Unless `wild`, indices
/// are reduced into range and operands to earlier nodes, so the kernel is valid (with at least one
/// output when `ensure_output`); a `wild` kernel may break any rule and must then be rejected.
pub fn random_kernel(
    raw: &[(u8, u32, u32, u32, f32)],
    outputs: &[u32],
    wild: bool,
    ensure_output: bool,
) -> ElementwiseKernel {
    let (inputs, params, slots) = (RANDOM_INPUTS, RANDOM_PARAMS, RANDOM_SLOTS);
    let mut nodes = Vec::new();
    for (j, &(kind, a, b, c, value)) in raw.iter().enumerate() {
        let earlier = |x: u32| if wild || j == 0 { x % 32 } else { x % j as u32 };
        let node = match kind {
            0 => Node::Input(if wild { a % 5 } else { a % inputs }),
            1 => Node::Param(if wild { a % 4 } else { a % params }),
            2 => Node::constant(value),
            3 if j > 0 || wild => Node::Unary(UNARY[b as usize % UNARY.len()], NodeId(earlier(a))),
            4 if j > 0 || wild => {
                Node::Binary(BINARY[c as usize % BINARY.len()], NodeId(earlier(a)), NodeId(earlier(b)))
            }
            5 => Node::Noise(
                if c % 2 == 0 { Distribution::Gaussian } else { Distribution::Uniform },
                if wild { a % 4 } else { a % slots },
            ),
            _ => Node::Input(0),
        };
        nodes.push(node);
    }
    let count = nodes.len() as u32;
    let mut outputs: Vec<NodeId> =
        outputs.iter().map(|&o| NodeId(if wild { o % (count + 2) } else { o % count })).collect();
    if ensure_output && outputs.is_empty() && !wild {
        outputs.push(NodeId(count - 1));
    }
    ElementwiseKernel { inputs, params, noise_slots: slots, nodes, outputs }
}
