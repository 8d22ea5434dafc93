//! The reference CPU evaluator of the kernel specification in [`crate::spec`].
//!
//! It implements the semantics written on [`ElementwiseKernel`] and [`ReductionKernel`] directly
//! in Rust: every node is one f32 operation with one rounding (Rust never contracts `a * b + c`
//! into a fused multiply-add), transcendental functions are those of `std`, which call the
//! platform's libm, and noise comes from [`crate::philox`]. The other emitters are tested against
//! it.
//!
//! A launch is evaluated in chunks of [`CHUNK`] elements: for each chunk, every node in order is
//! computed over the whole chunk into a scratch row, so the per-node dispatch is paid once per
//! chunk and not once per element. Because every node is elementwise, the chunk size does not
//! change any value.

use std::cell::Cell;

use crate::philox;
use crate::spec::{
    BinaryOp, Distribution, ElementwiseKernel, KernelError, Node, NodeId, NoiseLaunch, ReduceOp, ReductionKernel,
    UnaryOp,
};

/// The number of elements evaluated per chunk.
pub const CHUNK: usize = 256;

/// Returns the f32 function of a unary operation, exactly as the specification defines it.
fn unary_fn(op: UnaryOp) -> fn(f32) -> f32 {
    match op {
        UnaryOp::Neg => |x| -x,
        UnaryOp::Sqrt => f32::sqrt,
        UnaryOp::Exp => f32::exp,
        UnaryOp::Log => f32::ln,
        UnaryOp::Expm1 => f32::exp_m1,
        UnaryOp::Log1p => f32::ln_1p,
        UnaryOp::Sin => f32::sin,
        UnaryOp::Cos => f32::cos,
        UnaryOp::Tan => f32::tan,
        UnaryOp::Tanh => f32::tanh,
        UnaryOp::Atan => f32::atan,
        UnaryOp::Abs => f32::abs,
        UnaryOp::Sigmoid => |x| 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Floor => f32::floor,
        UnaryOp::Ceil => f32::ceil,
    }
}

/// Returns the f32 function of a binary operation, exactly as the specification defines it.
fn binary_fn(op: BinaryOp) -> fn(f32, f32) -> f32 {
    match op {
        BinaryOp::Add => |a, b| a + b,
        BinaryOp::Sub => |a, b| a - b,
        BinaryOp::Mul => |a, b| a * b,
        BinaryOp::Div => |a, b| a / b,
        BinaryOp::Pow => f32::powf,
        // `f32::min` and `f32::max` return the other operand when one is NaN, like `fminf` and
        // `fmaxf`.
        BinaryOp::Min => f32::min,
        BinaryOp::Max => f32::max,
    }
}

/// Applies a unary operation to one value, with the semantics of the specification.
pub fn apply_unary(op: UnaryOp, x: f32) -> f32 {
    unary_fn(op)(x)
}

/// Applies a binary operation to two values, with the semantics of the specification.
pub fn apply_binary(op: BinaryOp, a: f32, b: f32) -> f32 {
    binary_fn(op)(a, b)
}

/// Checks a launch of a valid or invalid kernel against its arguments.
fn check_launch(
    kernel: &ElementwiseKernel,
    len: usize,
    inputs: &[Source<'_>],
    params: &[f32],
    noise: &NoiseLaunch<'_>,
) -> Result<(), KernelError> {
    kernel.validate()?;
    if inputs.len() != kernel.inputs as usize {
        return Err(KernelError::InputCount { expected: kernel.inputs, got: inputs.len() });
    }
    if params.len() != kernel.params as usize {
        return Err(KernelError::ParamCount { expected: kernel.params, got: params.len() });
    }
    if noise.slots.len() != kernel.noise_slots as usize {
        return Err(KernelError::NoiseSlotCount { expected: kernel.noise_slots, got: noise.slots.len() });
    }
    if let Some((input, actual)) = inputs.iter().map(Source::len).enumerate().find(|&(_, actual)| actual < len) {
        return Err(KernelError::InputTooShort { input, actual, len });
    }
    if kernel.nodes.iter().any(|node| matches!(node, Node::Noise(..))) {
        let per_sample = noise.per_sample;
        if per_sample == 0 {
            return Err(KernelError::ZeroPerSample);
        }
        if len > 0 {
            let last_sample = (len - 1) / per_sample;
            let last_index = len.min(per_sample) - 1;
            if u32::try_from(last_sample).is_err() || u32::try_from(last_index).is_err() {
                return Err(KernelError::NoiseCoordinatesOverflow { len, per_sample });
            }
        }
    }
    Ok(())
}

/// Allocates a zeroed f32 buffer of `size` elements, or reports that it cannot.
fn zeroed(size: usize, len: usize) -> Result<Vec<f32>, KernelError> {
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(size).map_err(|_| KernelError::OutOfMemory { len })?;
    buffer.resize(size, 0.0);
    Ok(buffer)
}

/// Evaluates a checked launch chunk by chunk, calling `sink(n, scratch, row)` after each chunk
/// of `n` elements starting at `start`: the value of node `j` at element `start + k` is
/// `scratch[j * row + k]` for `k < n`. Chunks come in index order.
///
/// The caller must have run [`check_launch`]: the indexing below relies on it.
fn for_each_chunk(
    kernel: &ElementwiseKernel,
    len: usize,
    inputs: &[Source<'_>],
    params: &[f32],
    noise: &NoiseLaunch<'_>,
    mut sink: impl FnMut(usize, &[f32], usize),
) -> Result<(), KernelError> {
    let row = CHUNK.min(len);
    let size = kernel.nodes.len().checked_mul(row).ok_or(KernelError::OutOfMemory { len })?;
    let mut scratch = zeroed(size, len)?;
    let mut start = 0;
    while start < len {
        let n = row.min(len - start);
        for (j, node) in kernel.nodes.iter().enumerate() {
            let (done, rest) = scratch.split_at_mut(j * row);
            let dest = &mut rest[..n];
            // Validation guarantees that every operand is an earlier node, so its row lies in
            // `done`.
            let operand = |id: NodeId| &done[id.0 as usize * row..][..n];
            match *node {
                // Validation and the launch checks guarantee that input `k` exists and has at
                // least `len` elements.
                Node::Input(k) => inputs[k as usize].read(start, dest),
                // Validation and the launch checks guarantee that parameter `k` exists.
                Node::Param(k) => dest.fill(params[k as usize]),
                Node::Const(bits) => dest.fill(f32::from_bits(bits)),
                Node::Unary(op, a) => {
                    let f = unary_fn(op);
                    for (d, &x) in dest.iter_mut().zip(operand(a)) {
                        *d = f(x);
                    }
                }
                Node::Binary(op, a, b) => {
                    let f = binary_fn(op);
                    for ((d, &x), &y) in dest.iter_mut().zip(operand(a)).zip(operand(b)) {
                        *d = f(x, y);
                    }
                }
                Node::Noise(dist, slot) => {
                    // Validation and the launch checks guarantee that the slot exists.
                    let slot = noise.slots[slot as usize];
                    let draw = match dist {
                        Distribution::Gaussian => philox::gaussian,
                        Distribution::Uniform => philox::uniform,
                    };
                    for (k, d) in dest.iter_mut().enumerate() {
                        let i = start + k;
                        // The launch checks guarantee that `per_sample > 0` and that the sample
                        // and element indices of every element fit in 32 bits.
                        let sample = (i / noise.per_sample) as u32;
                        let index = (i % noise.per_sample) as u32;
                        *d = draw(noise.seed, slot.site, slot.step, sample, index);
                    }
                }
            }
        }
        sink(n, &scratch, row);
        start += n;
    }
    Ok(())
}

/// Evaluates an elementwise kernel over `len` elements and returns one vector of `len` values
/// per output, in the order of [`ElementwiseKernel::outputs`].
///
/// `inputs` must hold one tensor per declared input, each with at least `len` elements (only
/// the first `len` are read); `params` one value per declared parameter; `noise.slots` one entry
/// per declared noise slot. Every violation, and an invalid kernel, is an error; nothing here
/// panics.
pub fn evaluate(
    kernel: &ElementwiseKernel,
    len: usize,
    inputs: &[&[f32]],
    params: &[f32],
    noise: &NoiseLaunch<'_>,
) -> Result<Vec<Vec<f32>>, KernelError> {
    let inputs: Vec<Source<'_>> = inputs.iter().map(|x| Source::Slice(x)).collect();
    check_launch(kernel, len, &inputs, params, noise)?;
    let mut outputs = Vec::new();
    outputs.try_reserve_exact(kernel.outputs.len()).map_err(|_| KernelError::OutOfMemory { len })?;
    for _ in &kernel.outputs {
        let mut values = Vec::new();
        values.try_reserve_exact(len).map_err(|_| KernelError::OutOfMemory { len })?;
        outputs.push(values);
    }
    for_each_chunk(kernel, len, &inputs, params, noise, |n, scratch, row| {
        for (values, id) in outputs.iter_mut().zip(&kernel.outputs) {
            values.extend_from_slice(&scratch[id.0 as usize * row..][..n]);
        }
    })?;
    Ok(outputs)
}

/// An output written over the buffer of one of the kernel's inputs (buffer planning's in-place
/// update of a state: `x = f(x, ...)`).
#[derive(Debug)]
pub struct InPlace<'a> {
    /// The input whose values the buffer holds.
    pub input: usize,
    /// The output written over it.
    pub output: usize,
    pub buffer: &'a mut [f32],
}

/// Evaluates a kernel like [`evaluate`], except that for each [`InPlace`] entry the input is read
/// from, and the output written to, the same buffer: element `i` of every input is read before
/// element `i` of any output is written, and elements are independent, so the values are exactly
/// those of [`evaluate`]. `inputs[k]` is ignored (pass an empty slice) for in-place inputs. Returns
/// the outputs that are not written in place (`None` for those that are).
pub fn evaluate_in_place(
    kernel: &ElementwiseKernel,
    len: usize,
    inputs: &[&[f32]],
    in_place: &mut [InPlace<'_>],
    params: &[f32],
    noise: &NoiseLaunch<'_>,
) -> Result<Vec<Option<Vec<f32>>>, KernelError> {
    let mut cells: Vec<Option<CellTarget<'_>>> = vec![None; inputs.len()];
    for entry in in_place.iter_mut() {
        if entry.input >= inputs.len() || entry.output >= kernel.outputs.len() || cells[entry.input].is_some() {
            return Err(KernelError::InPlace { input: entry.input, output: entry.output });
        }
        let view = Cell::from_mut(&mut *entry.buffer).as_slice_of_cells();
        cells[entry.input] = Some((view, entry.output));
    }
    let sources: Vec<Source<'_>> = inputs
        .iter()
        .zip(&cells)
        .map(|(slice, cell)| match cell {
            Some((view, _)) => Source::Cells(view),
            None => Source::Slice(slice),
        })
        .collect();
    check_launch(kernel, len, &sources, params, noise)?;
    let targets: Vec<Option<&[Cell<f32>]>> = (0..kernel.outputs.len())
        .map(|o| cells.iter().flatten().find(|(_, output)| *output == o).map(|(view, _)| *view))
        .collect();
    let mut outputs: Vec<Option<Vec<f32>>> = Vec::new();
    for target in &targets {
        outputs.push(match target {
            Some(_) => None,
            None => {
                let mut values = Vec::new();
                values.try_reserve_exact(len).map_err(|_| KernelError::OutOfMemory { len })?;
                Some(values)
            }
        });
    }
    let mut start = 0;
    for_each_chunk(kernel, len, &sources, params, noise, |n, scratch, row| {
        for ((values, target), id) in outputs.iter_mut().zip(&targets).zip(&kernel.outputs) {
            let chunk = &scratch[id.0 as usize * row..][..n];
            match (values, target) {
                (Some(values), _) => values.extend_from_slice(chunk),
                (None, Some(cells)) => {
                    for (cell, &v) in cells[start..start + n].iter().zip(chunk) {
                        cell.set(v);
                    }
                }
                (None, None) => {}
            }
        }
        start += n;
    })?;
    Ok(outputs)
}

/// An in-place input's buffer as cells, with the output written over it.
type CellTarget<'a> = (&'a [Cell<f32>], usize);

/// Where a launch reads an input: a plain slice, or a buffer that an output overwrites.
#[derive(Clone, Copy)]
enum Source<'a> {
    Slice(&'a [f32]),
    Cells(&'a [Cell<f32>]),
}

impl Source<'_> {
    fn len(&self) -> usize {
        match self {
            Source::Slice(s) => s.len(),
            Source::Cells(c) => c.len(),
        }
    }

    /// Copies elements `start..start + dest.len()` into `dest`.
    fn read(&self, start: usize, dest: &mut [f32]) {
        let end = start + dest.len();
        match self {
            Source::Slice(s) => dest.copy_from_slice(&s[start..end]),
            Source::Cells(c) => {
                for (d, cell) in dest.iter_mut().zip(&c[start..end]) {
                    *d = cell.get();
                }
            }
        }
    }
}

/// Evaluates a reduction over `len` elements.
///
/// The body's single output is widened to f64 at every element. `Mean` is `Σ v / len`, `Rms`
/// is `sqrt(Σ v² / len)` and `Norm` is `sqrt(Σ v²)`, with the sum (of `v` or of the f64 square
/// `v * v`) accumulated in f64 strictly in index order; over zero elements `Mean` and `Rms` are
/// therefore NaN (0 / 0) and `Norm` is 0. `MaxAbs` is the largest `|v|`, 0 for zero elements;
/// a NaN value makes the result NaN, as it does for the sums, so that a reduction never hides a
/// NaN. The arguments are checked as for [`evaluate`].
pub fn reduce(
    kernel: &ReductionKernel,
    len: usize,
    inputs: &[&[f32]],
    params: &[f32],
    noise: &NoiseLaunch<'_>,
) -> Result<f64, KernelError> {
    let body = &kernel.body;
    let inputs: Vec<Source<'_>> = inputs.iter().map(|x| Source::Slice(x)).collect();
    check_launch(body, len, &inputs, params, noise)?;
    let [output] = body.outputs[..] else {
        return Err(KernelError::ReductionOutputs { outputs: body.outputs.len() });
    };
    let op = kernel.op;
    let mut acc = 0.0_f64;
    for_each_chunk(body, len, &inputs, params, noise, |n, scratch, row| {
        for &v in &scratch[output.0 as usize * row..][..n] {
            let v = f64::from(v);
            match op {
                ReduceOp::Mean => acc += v,
                ReduceOp::Rms | ReduceOp::Norm => acc += v * v,
                ReduceOp::MaxAbs => {
                    let a = v.abs();
                    // Once `acc` is NaN it stays NaN, since `a > NaN` is false.
                    if a.is_nan() || a > acc {
                        acc = a;
                    }
                }
            }
        }
    })?;
    let count = len as f64;
    Ok(match op {
        ReduceOp::Mean => acc / count,
        ReduceOp::Rms => (acc / count).sqrt(),
        ReduceOp::Norm => acc.sqrt(),
        ReduceOp::MaxAbs => acc,
    })
}
