//! The fused-kernel specification: a small elementwise expression language over f32 tensors.
//!
//! The compiler fuses every maximal region of elementwise tensor operations between model calls
//! into one [`ElementwiseKernel`]; the emitters (the CPU evaluator here, the Cranelift loop and the
//! CUDA C emitter later) all implement exactly the semantics written on these types, so that their
//! results agree bit for bit on CPU.
//!
//! Semantics of one launch over `len` elements: for every element index `i` in `0..len`, the
//! nodes are evaluated in order, each producing one `f32`; `Input(k)` reads element `i` of input
//! tensor `k`, `Param(k)` is the launch's scalar parameter `k` (computed by the host in f64 and
//! rounded to f32 once per launch), and the `outputs` nodes are written to element `i` of the
//! output tensors. Arithmetic is IEEE single precision, one rounding per node, never contracted
//! into fused multiply-adds. Transcendental functions are those of the platform's libm
//! (`expf`, `logf`, ...), which the JIT calls too.

use std::fmt;

/// Index of a node in [`ElementwiseKernel::nodes`]; a node only refers to earlier nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// Elementwise functions of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Sqrt,
    Exp,
    Log,
    Expm1,
    Log1p,
    Sin,
    Cos,
    Tan,
    Tanh,
    Atan,
    Abs,
    /// `1 / (1 + exp(-x))`, computed as written.
    Sigmoid,
    Floor,
    Ceil,
}

/// Elementwise functions of two arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `powf(a, b)`.
    Pow,
    /// IEEE `fminf`: the smaller, ignoring a NaN operand.
    Min,
    /// IEEE `fmaxf`: the larger, ignoring a NaN operand.
    Max,
}

/// The distribution of a noise node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Standard normal, by Box–Muller on the first two Philox words (see [`crate::philox`]).
    Gaussian,
    /// Uniform on [0, 1), from the top 24 bits of the first Philox word.
    Uniform,
}

/// One node of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// Element `i` of tensor input `k`.
    Input(u32),
    /// Scalar parameter `k` of the launch.
    Param(u32),
    /// A constant, stored as the bits of an `f32` so kernels can be hashed and compared.
    Const(u32),
    Unary(UnaryOp, NodeId),
    Binary(BinaryOp, NodeId, NodeId),
    /// A draw from the run's counter-based random stream at the kernel's noise slot `k`; the
    /// launch says which global noise site and which step that slot is (see [`NoiseLaunch`]).
    Noise(Distribution, u32),
}

impl Node {
    pub fn constant(value: f32) -> Node {
        Node::Const(value.to_bits())
    }
}

/// A fused elementwise kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ElementwiseKernel {
    /// Number of tensor inputs.
    pub inputs: u32,
    /// Number of scalar parameters.
    pub params: u32,
    /// Number of noise slots used by `Noise` nodes.
    pub noise_slots: u32,
    /// The nodes in evaluation order.
    pub nodes: Vec<Node>,
    /// The nodes written to the output tensors, in order.
    pub outputs: Vec<NodeId>,
}

/// How a reduction combines the values of its body over all elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// `Σ v / len`.
    Mean,
    /// `sqrt(Σ v² / len)`.
    Rms,
    /// `sqrt(Σ v²)`.
    Norm,
    /// `max |v|` (0 for an empty tensor).
    MaxAbs,
}

/// A reduction to one host number of an elementwise expression (the body's single output).
///
/// Semantics: the body's value at every element is widened to f64 and accumulated in f64 in
/// index order (sums) or compared (max); the result is an f64. Every implementation must use the
/// same order so results agree bit for bit on CPU.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReductionKernel {
    pub body: ElementwiseKernel,
    pub op: ReduceOp,
}

impl ReductionKernel {
    /// The reduction of the elements of one input tensor (a body that returns input 0).
    pub fn of_input(op: ReduceOp) -> ReductionKernel {
        let body = ElementwiseKernel {
            inputs: 1,
            params: 0,
            noise_slots: 0,
            nodes: vec![Node::Input(0)],
            outputs: vec![NodeId(0)],
        };
        ReductionKernel { body, op }
    }
}

/// The random stream state of one launch.
///
/// A noise value is a pure function of `(seed, site, step, sample, index)`: `site` identifies the
/// noise operation in the compiled schedule, `step` counts how many times that site has run
/// before in this run, `sample = i / per_sample` is the sample in the batch and
/// `index = i % per_sample` the element within it. So a sample's noise does not depend on the
/// batch size or on which other kernels ran.
#[derive(Clone, Copy, Debug)]
pub struct NoiseLaunch<'a> {
    pub seed: u64,
    /// Elements per sample (the product of the non-batch dimensions).
    pub per_sample: usize,
    /// For each noise slot of the kernel, its global site and step.
    pub slots: &'a [NoiseSlot],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseSlot {
    pub site: u32,
    pub step: u32,
}

impl fmt::Display for UnaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Expm1 => "expm1",
            UnaryOp::Log1p => "log1p",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Tan => "tan",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Atan => "atan",
            UnaryOp::Abs => "abs",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
        })
    }
}

impl fmt::Display for BinaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Min => "min",
            BinaryOp::Max => "max",
        })
    }
}

impl ElementwiseKernel {
    /// Checks that the kernel is well formed: every node refers only to earlier nodes, every
    /// `Input`, `Param` and `Noise` index is below `inputs`, `params` and `noise_slots`, and
    /// there is at least one output, each naming an existing node.
    pub fn validate(&self) -> Result<(), KernelError> {
        for (node, n) in self.nodes.iter().enumerate() {
            let earlier = |operand: NodeId| {
                if (operand.0 as usize) < node {
                    Ok(())
                } else {
                    Err(KernelError::ForwardReference { node, operand: operand.0 })
                }
            };
            match *n {
                Node::Input(input) if input >= self.inputs => {
                    return Err(KernelError::InputOutOfRange { node, input, inputs: self.inputs });
                }
                Node::Param(param) if param >= self.params => {
                    return Err(KernelError::ParamOutOfRange { node, param, params: self.params });
                }
                Node::Noise(_, slot) if slot >= self.noise_slots => {
                    return Err(KernelError::NoiseSlotOutOfRange { node, slot, slots: self.noise_slots });
                }
                Node::Unary(_, a) => earlier(a)?,
                Node::Binary(_, a, b) => {
                    earlier(a)?;
                    earlier(b)?;
                }
                Node::Input(_) | Node::Param(_) | Node::Noise(..) | Node::Const(_) => {}
            }
        }
        if self.outputs.is_empty() {
            return Err(KernelError::NoOutputs);
        }
        let nodes = self.nodes.len();
        if let Some((output, id)) = self.outputs.iter().enumerate().find(|(_, id)| id.0 as usize >= nodes) {
            return Err(KernelError::OutputOutOfRange { output, node: id.0, nodes });
        }
        Ok(())
    }
}

/// Why a kernel or a launch of it cannot be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// An in-place entry names a missing input or output, or reuses an input.
    #[error("in-place update of input {input} by output {output} is not a valid pairing")]
    InPlace { input: usize, output: usize },
    /// A node names an operand that is not an earlier node.
    #[error("node %{node} refers to %{operand}, which is not an earlier node")]
    ForwardReference { node: usize, operand: u32 },
    /// An `Input` node names an input the kernel does not declare.
    #[error("node %{node} reads input {input}, but the kernel declares {inputs} inputs")]
    InputOutOfRange { node: usize, input: u32, inputs: u32 },
    /// A `Param` node names a parameter the kernel does not declare.
    #[error("node %{node} reads parameter {param}, but the kernel declares {params} parameters")]
    ParamOutOfRange { node: usize, param: u32, params: u32 },
    /// A `Noise` node names a noise slot the kernel does not declare.
    #[error("node %{node} draws from noise slot {slot}, but the kernel declares {slots} noise slots")]
    NoiseSlotOutOfRange { node: usize, slot: u32, slots: u32 },
    /// An output names a node that does not exist.
    #[error("output {output} is %{node}, but the kernel has {nodes} nodes")]
    OutputOutOfRange { output: usize, node: u32, nodes: usize },
    /// The kernel writes nothing.
    #[error("the kernel has no outputs")]
    NoOutputs,
    /// The body of a reduction does not have exactly one output.
    #[error("the body of a reduction must have exactly one output, but it has {outputs}")]
    ReductionOutputs { outputs: usize },
    /// The launch passes a different number of input tensors than the kernel declares.
    #[error("the kernel takes {expected} inputs, but the launch passes {got}")]
    InputCount { expected: u32, got: usize },
    /// The launch passes a different number of parameters than the kernel declares.
    #[error("the kernel takes {expected} parameters, but the launch passes {got}")]
    ParamCount { expected: u32, got: usize },
    /// The launch describes a different number of noise slots than the kernel declares.
    #[error("the kernel has {expected} noise slots, but the launch describes {got}")]
    NoiseSlotCount { expected: u32, got: usize },
    /// An input tensor has fewer elements than the launch length.
    #[error("input {input} has {actual} elements, fewer than the launch length {len}")]
    InputTooShort { input: usize, actual: usize, len: usize },
    /// The kernel draws noise but the launch says a sample has no elements.
    #[error("the kernel draws noise, but the launch has zero elements per sample")]
    ZeroPerSample,
    /// The sample or element index of some element does not fit the 32-bit Philox counter words.
    #[error("a launch of {len} elements with {per_sample} per sample has noise coordinates beyond 32 bits")]
    NoiseCoordinatesOverflow { len: usize, per_sample: usize },
    /// The output or scratch buffers cannot be allocated.
    #[error("cannot allocate the buffers of a launch of {len} elements")]
    OutOfMemory { len: usize },
}
