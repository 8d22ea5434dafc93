//! The text form of kernels, printed by `sched build --emit kernels`.
//!
//! ```text
//! kernel(inputs 2, params 3, noise 1)
//!   %0 = in0
//!   %1 = p0
//!   %2 = mul %1, %0
//!   %3 = gaussian slot0
//!   out0 = %2
//! ```
//!
//! Constants are printed with `{:?}` of their `f32`, which reads back to the same value.

use std::fmt;

use crate::spec::{Distribution, ElementwiseKernel, Node, ReduceOp, ReductionKernel};

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Distribution::Gaussian => "gaussian",
            Distribution::Uniform => "uniform",
        })
    }
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReduceOp::Mean => "mean",
            ReduceOp::Rms => "rms",
            ReduceOp::Norm => "norm",
            ReduceOp::MaxAbs => "max_abs",
        })
    }
}

impl fmt::Display for ElementwiseKernel {
    /// Prints the header line, one line per node and one per output, each ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel(inputs {}, params {}, noise {})", self.inputs, self.params, self.noise_slots)?;
        for (i, node) in self.nodes.iter().enumerate() {
            write!(f, "  %{i} = ")?;
            match *node {
                Node::Input(k) => writeln!(f, "in{k}")?,
                Node::Param(k) => writeln!(f, "p{k}")?,
                Node::Const(bits) => writeln!(f, "const {:?}", f32::from_bits(bits))?,
                Node::Unary(op, a) => writeln!(f, "{op} %{}", a.0)?,
                Node::Binary(op, a, b) => writeln!(f, "{op} %{}, %{}", a.0, b.0)?,
                Node::Noise(dist, slot) => writeln!(f, "{dist} slot{slot}")?,
            }
        }
        for (i, id) in self.outputs.iter().enumerate() {
            writeln!(f, "  out{i} = %{}", id.0)?;
        }
        Ok(())
    }
}

impl fmt::Display for ReductionKernel {
    /// Prints `reduce OP of ` followed by the body.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reduce {} of {}", self.op, self.body)
    }
}
