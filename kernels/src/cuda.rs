//! CUDA C for fused kernels: the source text of one NVRTC module per [`ElementwiseKernel`] or
//! [`ReductionKernel`].
//!
//! This module only generates text; [`crate::nvrtc`] compiles it to PTX, and the CUDA launcher
//! loads and launches it. The kernel ABI below is the contract between this emitter and that
//! launcher.
//!
//! # Elementwise ABI
//!
//! An elementwise module has one entry point, [`ELEMENTWISE_ENTRY`]:
//!
//! ```c
//! extern "C" __global__ void sched_elementwise(
//!     const float* in0, ..., const float* in{I-1},   // the kernel's inputs, in order
//!     float* out0, ..., float* out{O-1},              // the kernel's outputs, in order
//!     float p0, ..., float p{P-1},                    // scalar params (already rounded to f32 by the host)
//!     const unsigned int* seed,                       // always present: the seed's low and high words
//!     unsigned int site0, unsigned int step0, ..., unsigned int site{S-1}, unsigned int step{S-1}, // one pair per noise slot
//!     unsigned int per_sample,                        // always present (elements per sample, >= 1)
//!     unsigned long long len)                         // always present: the number of elements
//! ```
//!
//! with `I`, `O`, `P` and `S` the kernel's inputs, outputs, parameters and noise slots (every
//! declared one, used or not). The emitted signature has one parameter per line.
//!
//! - Every tensor pointer is 16-byte aligned: the launcher guarantees it. An output pointer may
//!   equal an input pointer (an in-place update), but buffers must not otherwise overlap.
//! - The seed is read from device memory, `seed[0]` its low and `seed[1]` its high 32 bits, once
//!   per thread and only by a kernel that draws noise. It is a pointer rather than two scalars so
//!   that a recorded schedule (a CUDA graph) replays with a new seed by rewriting two words, every
//!   launch's parameters staying as they were captured.
//! - The launch is [`elementwise_blocks`]`(len, multiprocessors)` blocks of [`BLOCK_THREADS`]
//!   threads, with no dynamic shared memory. A grid-stride loop hands each thread groups of
//!   [`VECTOR_WIDTH`] elements, read and written as one `float4` each; the last group, if
//!   `len % 4 != 0`, is read and written element by element. For each group, every input is
//!   loaded before any output is stored, so an in-place update is safe.
//! - The noise coordinates `sample = i / per_sample` and `index = i % per_sample` are computed
//!   once per group, by a 32-bit division when `len < 2^32` (64-bit division is slow on GPUs) and
//!   a 64-bit one otherwise, and stepped from element to element. The loop index itself is 64-bit,
//!   which costs a few integer instructions per group; templating the loop on the index type
//!   instead would double the code, and NVRTC's compile time, for no gain in the divisions. The
//!   launcher must check, as [`crate::cpu::evaluate`] does, that the noise coordinates fit in 32
//!   bits and that `per_sample >= 1` for a kernel that draws noise.
//!
//! # Reduction ABI
//!
//! A reduction module has two entry points, launched one after the other on the same stream:
//!
//! ```c
//! extern "C" __global__ void sched_reduce_partials(
//!     const float* in0, ..., float p0, ..., const unsigned int* seed,
//!     unsigned int site0, unsigned int step0, ..., unsigned int per_sample, unsigned long long len,
//!     double* partials)            // partials[blockIdx.x]
//! extern "C" __global__ void sched_reduce_finish(
//!     const double* partials, unsigned int count, unsigned long long len, double* result) // one block of BLOCK_THREADS threads; result[0]
//! ```
//!
//! - [`REDUCE_PARTIALS_ENTRY`] runs as [`reduction_blocks`]`(len)` blocks of [`BLOCK_THREADS`]
//!   threads (a number that does not depend on the device). Each thread accumulates the body's
//!   single output in f64 over a fixed grid-stride set of groups of [`VECTOR_WIDTH`] elements (the
//!   value `v` for `Mean`, `v * v` for `Rms` and `Norm`, the NaN-propagating maximum of `|v|` for
//!   `MaxAbs`, all starting at 0), the block combines its threads in a fixed shared-memory tree,
//!   and thread 0 writes `partials[blockIdx.x]`. The partials buffer holds [`REDUCE_MAX_BLOCKS`]
//!   doubles.
//! - [`REDUCE_FINISH_ENTRY`] runs as one block of [`BLOCK_THREADS`] threads with `count` the
//!   number of blocks of the first pass; it combines the partials in a fixed order and writes
//!   the finished value to `result[0]`: `Mean` is `acc / len`, `Rms` is `sqrt(acc / len)`,
//!   `Norm` is `sqrt(acc)` and `MaxAbs` is `acc` (so `Mean` and `Rms` of zero elements are NaN,
//!   as on the CPU).
//!
//! The order of the f64 sums is fixed by the launch shape alone, so a result is the same on every
//! run and every GPU; it differs from the CPU's sequential sum in the last bits.
//!
//! # Semantics
//!
//! Every node of the body is one `const float vN = ...;` line (named by the node's index), with
//! exactly the operation the specification defines and one IEEE round-to-nearest f32 rounding:
//! [`crate::nvrtc`] compiles with `--fmad=false --prec-div=true --prec-sqrt=true --ftz=false`, so no
//! multiply-add is contracted, division and square root are correctly rounded and subnormals are
//! kept. Constants are `__int_as_float(0x...)` of their exact bits, so NaN payloads, infinities
//! and `-0` survive. Unary operations map to `-x`, `sqrtf`, `expf`, `logf`, `expm1f`, `log1pf`,
//! `sinf`, `cosf`, `tanf`, `tanhf`, `atanf`, `fabsf`, `1.0f / (1.0f + expf(-x))`, `floorf` and
//! `ceilf`; binary ones to `+`, `-`, `*`, `/`, `powf`, `fminf` and `fmaxf`. The transcendental
//! functions are CUDA's, whose results may differ from the host libm's in the last bits.
//!
//! Noise is a `__device__` copy of [`crate::philox`]: Philox4x32-10 of counter
//! `[index, sample, step, site]` and key `[seed[0], seed[1]]`, then [`philox::gaussian`]'s
//! Box-Muller in double or [`philox::uniform`]'s top 24 bits. The block of a noise slot is
//! computed once per element and shared by every noise node of that slot. The Gaussian function
//! is `__noinline__`: inlining its double `log` and `cos` into each of the four lanes of the loop
//! made the DDIM kernel's PTX 50% larger and its compilation 50% slower.
//!
//! The text depends only on the kernel, so the same kernel always gives the same source (and the
//! same PTX cache entry).
//!
//! [`philox::gaussian`]: crate::philox::gaussian
//! [`philox::uniform`]: crate::philox::uniform

use std::collections::BTreeSet;
use std::fmt;

use crate::spec::KernelError;
use crate::spec::{BinaryOp, Distribution, ElementwiseKernel, Node, ReduceOp, ReductionKernel, UnaryOp};

/// Appends one formatted line, indented by `depth` levels, to a [`Code`].
macro_rules! emit {
    ($code:expr, $depth:expr, $($arg:tt)*) => {
        $code.line($depth, format_args!($($arg)*))
    };
}

/// The entry point of an elementwise module.
pub const ELEMENTWISE_ENTRY: &str = "sched_elementwise";

/// The entry point of a reduction module's first pass.
pub const REDUCE_PARTIALS_ENTRY: &str = "sched_reduce_partials";

/// The entry point of a reduction module's second pass.
pub const REDUCE_FINISH_ENTRY: &str = "sched_reduce_finish";

/// Threads per block of every sched kernel.
pub const BLOCK_THREADS: u32 = 256;

/// Elements one thread handles per iteration of the elementwise loop (one 16-byte vector).
pub const VECTOR_WIDTH: usize = 4;

/// The largest number of blocks of a reduction's first pass (the partials buffer holds this many
/// f64).
pub const REDUCE_MAX_BLOCKS: u32 = 1024;

/// Blocks per multiprocessor of an elementwise launch before the grid-stride loop takes over.
const BLOCKS_PER_MULTIPROCESSOR: u64 = 16;

/// The largest grid of CUDA (`gridDim.x`).
const MAX_BLOCKS: u64 = (1 << 31) - 1;

/// Grid size (blocks) of an elementwise launch over `len` elements on a device with
/// `multiprocessors` SMs: enough blocks to cover `ceil(len / VECTOR_WIDTH)` vector groups with
/// [`BLOCK_THREADS`] threads each, capped at `multiprocessors * 16` (the grid-stride loop covers
/// the rest) and at CUDA's largest grid, 2^31 - 1, at least 1.
pub fn elementwise_blocks(len: u64, multiprocessors: u32) -> u32 {
    let groups = len.div_ceil(VECTOR_WIDTH as u64);
    let blocks = groups.div_ceil(u64::from(BLOCK_THREADS));
    let cap = (u64::from(multiprocessors) * BLOCKS_PER_MULTIPROCESSOR).min(MAX_BLOCKS);
    // The cap is below 2^31, so the value fits in a u32.
    blocks.min(cap).max(1) as u32
}

/// Blocks of a reduction's first pass: `ceil(len / (BLOCK_THREADS * VECTOR_WIDTH))` capped at
/// [`REDUCE_MAX_BLOCKS`], at least 1. It does not depend on the device, so the order of the sums,
/// and therefore the result, is the same on every GPU.
pub fn reduction_blocks(len: u64) -> u32 {
    let blocks = len.div_ceil(u64::from(BLOCK_THREADS) * VECTOR_WIDTH as u64);
    // The cap is 1024, so the value fits in a u32.
    blocks.min(u64::from(REDUCE_MAX_BLOCKS)).max(1) as u32
}

/// Returns the CUDA C module of an elementwise kernel, with the entry point [`ELEMENTWISE_ENTRY`]
/// and the ABI of the module documentation. An invalid kernel is an error.
pub fn elementwise_source(kernel: &ElementwiseKernel) -> Result<String, KernelError> {
    kernel.validate()?;
    let shape = Shape::of(kernel);
    let mut code = Code::default();
    emit!(
        code,
        0,
        "// {ELEMENTWISE_ENTRY}: {}, {}, {}, {}, {}.",
        count(kernel.inputs as usize, "input"),
        count(kernel.outputs.len(), "output"),
        count(kernel.params as usize, "param"),
        count(kernel.noise_slots as usize, "noise slot"),
        count(kernel.nodes.len(), "node")
    );
    emit!(code, 0, "// Generated by sched; the ABI is documented in kernels/src/cuda.rs.");
    emit_noise_functions(&mut code, kernel);
    emit_group_functions(&mut code, &shape, true);

    let mut parameters: Vec<String> = (0..kernel.inputs).map(|k| format!("const float* in{k}")).collect();
    parameters.extend((0..kernel.outputs.len()).map(|k| format!("float* out{k}")));
    parameters.extend(scalar_parameters(kernel));
    code.blank();
    emit!(code, 0, "extern \"C\" __global__ void __launch_bounds__({BLOCK_THREADS}) {ELEMENTWISE_ENTRY}(");
    emit_parameters(&mut code, &parameters);
    emit!(code, 0, "{{");
    emit_group_loop(&mut code, kernel, &shape, false);
    emit!(code, 0, "}}");
    Ok(code.text)
}

/// Returns the CUDA C module of a reduction, with the entry points [`REDUCE_PARTIALS_ENTRY`] and
/// [`REDUCE_FINISH_ENTRY`] and the ABI of the module documentation. An invalid body, or one
/// without exactly one output, is an error.
pub fn reduction_source(kernel: &ReductionKernel) -> Result<String, KernelError> {
    let body = &kernel.body;
    body.validate()?;
    if body.outputs.len() != 1 {
        return Err(KernelError::ReductionOutputs { outputs: body.outputs.len() });
    }
    let shape = Shape::of(body);
    let mut code = Code::default();
    emit!(
        code,
        0,
        "// sched reduction ({}): {}, {}, {}, {}.",
        kernel.op,
        count(body.inputs as usize, "input"),
        count(body.params as usize, "param"),
        count(body.noise_slots as usize, "noise slot"),
        count(body.nodes.len(), "node")
    );
    emit!(code, 0, "// Generated by sched; the ABI is documented in kernels/src/cuda.rs.");
    emit_noise_functions(&mut code, body);
    emit_group_functions(&mut code, &shape, false);
    emit_combine_functions(&mut code, kernel.op);

    let mut parameters: Vec<String> = (0..body.inputs).map(|k| format!("const float* in{k}")).collect();
    parameters.extend(scalar_parameters(body));
    parameters.push("double* partials".to_string());
    code.blank();
    emit!(code, 0, "extern \"C\" __global__ void __launch_bounds__({BLOCK_THREADS}) {REDUCE_PARTIALS_ENTRY}(");
    emit_parameters(&mut code, &parameters);
    emit!(code, 0, "{{");
    emit!(code, 1, "double acc = 0.0;");
    emit_group_loop(&mut code, body, &shape, true);
    emit!(code, 1, "const double total = sched_block_combine(acc);");
    emit!(code, 1, "if (threadIdx.x == 0) {{");
    emit!(code, 2, "partials[blockIdx.x] = total;");
    emit!(code, 1, "}}");
    emit!(code, 0, "}}");

    code.blank();
    emit!(code, 0, "extern \"C\" __global__ void __launch_bounds__({BLOCK_THREADS}) {REDUCE_FINISH_ENTRY}(");
    let parameters = ["const double* partials", "unsigned int count", "unsigned long long len", "double* result"];
    emit_parameters(&mut code, &parameters.map(String::from));
    emit!(code, 0, "{{");
    emit!(code, 1, "double acc = 0.0;");
    emit!(code, 1, "for (unsigned int k = threadIdx.x; k < count; k += blockDim.x) {{");
    emit!(code, 2, "acc = sched_combine(acc, partials[k]);");
    emit!(code, 1, "}}");
    emit!(code, 1, "const double total = sched_block_combine(acc);");
    emit!(code, 1, "if (threadIdx.x == 0) {{");
    match kernel.op {
        ReduceOp::Mean => emit!(code, 2, "result[0] = total / (double)len;"),
        ReduceOp::Rms => emit!(code, 2, "result[0] = sqrt(total / (double)len);"),
        ReduceOp::Norm => emit!(code, 2, "result[0] = sqrt(total);"),
        ReduceOp::MaxAbs => emit!(code, 2, "result[0] = total;"),
    }
    emit!(code, 1, "}}");
    emit!(code, 0, "}}");
    Ok(code.text)
}

/// Source text under construction.
#[derive(Default)]
struct Code {
    text: String,
}

impl Code {
    /// Appends `line`, indented by `depth` levels of four spaces, and a newline.
    fn line(&mut self, depth: usize, line: fmt::Arguments<'_>) {
        self.text.extend(std::iter::repeat_n("    ", depth));
        self.text += &line.to_string();
        self.text.push('\n');
    }

    /// Appends an empty line.
    fn blank(&mut self) {
        self.text.push('\n');
    }
}

/// What a kernel body reads: the inputs its `Input` nodes name and the noise slots its `Noise`
/// nodes draw from, each sorted and without repetition.
struct Shape {
    inputs: Vec<u32>,
    slots: Vec<u32>,
}

impl Shape {
    fn of(kernel: &ElementwiseKernel) -> Shape {
        let mut inputs = BTreeSet::new();
        let mut slots = BTreeSet::new();
        for node in &kernel.nodes {
            match *node {
                Node::Input(k) => {
                    inputs.insert(k);
                }
                Node::Noise(_, slot) => {
                    slots.insert(slot);
                }
                Node::Param(_) | Node::Const(_) | Node::Unary(..) | Node::Binary(..) => {}
            }
        }
        Shape { inputs: inputs.into_iter().collect(), slots: slots.into_iter().collect() }
    }
}

/// `n` followed by `noun`, in the plural unless `n` is 1.
fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// The parameters that follow the tensors in both ABIs: the scalar parameters, the seed, one site
/// and step per noise slot, the elements per sample and the length.
fn scalar_parameters(kernel: &ElementwiseKernel) -> Vec<String> {
    let mut parameters: Vec<String> = (0..kernel.params).map(|k| format!("float p{k}")).collect();
    parameters.push("const unsigned int* seed".to_string());
    for k in 0..kernel.noise_slots {
        parameters.push(format!("unsigned int site{k}"));
        parameters.push(format!("unsigned int step{k}"));
    }
    parameters.push("unsigned int per_sample".to_string());
    parameters.push("unsigned long long len".to_string());
    parameters
}

/// Emits a parameter list, one parameter per line, and the closing parenthesis.
fn emit_parameters(code: &mut Code, parameters: &[String]) {
    for (k, parameter) in parameters.iter().enumerate() {
        let end = if k + 1 == parameters.len() { ")" } else { "," };
        emit!(code, 1, "{parameter}{end}");
    }
}

/// Emits the device functions of the random stream that the kernel's noise nodes need.
fn emit_noise_functions(code: &mut Code, kernel: &ElementwiseKernel) {
    let uses = |dist: Distribution| kernel.nodes.iter().any(|node| matches!(node, Node::Noise(d, _) if *d == dist));
    let (gaussian, uniform) = (uses(Distribution::Gaussian), uses(Distribution::Uniform));
    if !gaussian && !uniform {
        return;
    }
    code.blank();
    emit!(code, 0, "// Philox4x32-10 (Random123), as kernels/src/philox.rs defines it.");
    emit!(code, 0, "__device__ __forceinline__ uint4 sched_philox(uint4 counter, uint2 key) {{");
    emit!(code, 1, "#pragma unroll");
    emit!(code, 1, "for (int round = 0; round < 10; ++round) {{");
    emit!(code, 2, "if (round > 0) {{");
    emit!(code, 3, "key.x += 0x9E3779B9u;");
    emit!(code, 3, "key.y += 0xBB67AE85u;");
    emit!(code, 2, "}}");
    emit!(code, 2, "const unsigned int hi0 = __umulhi(0xD2511F53u, counter.x);");
    emit!(code, 2, "const unsigned int lo0 = 0xD2511F53u * counter.x;");
    emit!(code, 2, "const unsigned int hi1 = __umulhi(0xCD9E8D57u, counter.z);");
    emit!(code, 2, "const unsigned int lo1 = 0xCD9E8D57u * counter.z;");
    emit!(code, 2, "counter = make_uint4(hi1 ^ counter.y ^ key.x, lo1, hi0 ^ counter.w ^ key.y, lo0);");
    emit!(code, 1, "}}");
    emit!(code, 1, "return counter;");
    emit!(code, 0, "}}");
    if gaussian {
        code.blank();
        emit!(code, 0, "// A standard normal draw from a Philox block (philox::gaussian): Box-Muller in double. It is");
        emit!(code, 0, "// not inlined, so that its double log and cos are not copied into every lane of the loop.");
        emit!(code, 0, "__device__ __noinline__ float sched_gaussian(uint4 r) {{");
        emit!(code, 1, "const double u1 = ((double)r.x + 0.5) * 2.3283064365386963e-10;");
        emit!(code, 1, "const double u2 = ((double)r.y + 0.5) * 2.3283064365386963e-10;");
        emit!(code, 1, "return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));");
        emit!(code, 0, "}}");
    }
    if uniform {
        code.blank();
        emit!(
            code,
            0,
            "// A uniform draw on [0, 1) from a Philox block (philox::uniform): the top 24 bits times 2^-24."
        );
        emit!(code, 0, "__device__ __forceinline__ float sched_uniform(uint4 r) {{");
        emit!(code, 1, "return (float)(r.x >> 8) * 5.9604644775390625e-8f;");
        emit!(code, 0, "}}");
    }
}

/// Emits the functions that read a group of [`VECTOR_WIDTH`] elements of an input (if the body
/// reads any) and, when `store`, write one of an output.
fn emit_group_functions(code: &mut Code, shape: &Shape, store: bool) {
    const W: usize = VECTOR_WIDTH;
    if !shape.inputs.is_empty() {
        code.blank();
        emit!(code, 0, "// Reads group g of {W} elements of in, of which the first count exist, into x.");
        emit!(
            code,
            0,
            "__device__ __forceinline__ void sched_load(float (&x)[{W}], const float* in, unsigned long long g, unsigned int count) {{"
        );
        emit!(code, 1, "if (count == {W}) {{");
        emit!(code, 2, "const float4 group = reinterpret_cast<const float4*>(in)[g];");
        for (lane, component) in LANES.iter().enumerate() {
            emit!(code, 2, "x[{lane}] = group.{component};");
        }
        emit!(code, 1, "}} else {{");
        emit!(code, 2, "#pragma unroll");
        emit!(code, 2, "for (unsigned int lane = 0; lane < {W}; ++lane) {{");
        emit!(code, 3, "x[lane] = lane < count ? in[g * {W} + lane] : 0.0f;");
        emit!(code, 2, "}}");
        emit!(code, 1, "}}");
        emit!(code, 0, "}}");
    }
    if store {
        code.blank();
        emit!(code, 0, "// Writes the first count elements of y to group g of {W} elements of out.");
        emit!(
            code,
            0,
            "__device__ __forceinline__ void sched_store(float* out, const float (&y)[{W}], unsigned long long g, unsigned int count) {{"
        );
        emit!(code, 1, "if (count == {W}) {{");
        let lanes: Vec<String> = (0..W).map(|lane| format!("y[{lane}]")).collect();
        emit!(code, 2, "reinterpret_cast<float4*>(out)[g] = make_float4({});", lanes.join(", "));
        emit!(code, 1, "}} else {{");
        emit!(code, 2, "#pragma unroll");
        emit!(code, 2, "for (unsigned int lane = 0; lane < {W}; ++lane) {{");
        emit!(code, 3, "if (lane < count) {{");
        emit!(code, 4, "out[g * {W} + lane] = y[lane];");
        emit!(code, 3, "}}");
        emit!(code, 2, "}}");
        emit!(code, 1, "}}");
        emit!(code, 0, "}}");
    }
}

/// The components of a `float4`, in memory order.
const LANES: [&str; VECTOR_WIDTH] = ["x", "y", "z", "w"];

/// Emits the grid-stride loop over groups of [`VECTOR_WIDTH`] elements of an entry point: it
/// evaluates the nodes at every element of a group, then stores the outputs or, when `reduce`,
/// adds the single output of each existing element to `acc`.
fn emit_group_loop(code: &mut Code, kernel: &ElementwiseKernel, shape: &Shape, reduce: bool) {
    const W: usize = VECTOR_WIDTH;
    emit!(code, 1, "const unsigned long long groups = len / {W} + (len % {W} != 0 ? 1 : 0);");
    emit!(code, 1, "const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;");
    emit!(code, 1, "const unsigned long long start = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;");
    if !shape.slots.is_empty() {
        emit!(code, 1, "const uint2 key = make_uint2(seed[0], seed[1]);");
    }
    emit!(code, 1, "for (unsigned long long g = start; g < groups; g += stride) {{");
    emit!(code, 2, "// The elements of the group that exist: {W}, or fewer in the last group.");
    emit!(code, 2, "const unsigned int count = g < len / {W} ? {W} : (unsigned int)(len % {W});");
    for &k in &shape.inputs {
        emit!(code, 2, "float x{k}[{W}];");
        emit!(code, 2, "sched_load(x{k}, in{k}, g, count);");
    }
    if !shape.slots.is_empty() {
        emit!(code, 2, "// The noise coordinates of the group's first element, by a 32-bit division whenever the");
        emit!(code, 2, "// indices fit (64-bit division is slow on GPUs); the loop below steps them per element.");
        emit!(code, 2, "unsigned int sample, index;");
        emit!(code, 2, "if (len <= 0xffffffffull) {{");
        emit!(code, 3, "sample = (unsigned int)(g * {W}) / per_sample;");
        emit!(code, 3, "index = (unsigned int)(g * {W}) % per_sample;");
        emit!(code, 2, "}} else {{");
        emit!(code, 3, "sample = (unsigned int)(g * {W} / per_sample);");
        emit!(code, 3, "index = (unsigned int)(g * {W} % per_sample);");
        emit!(code, 2, "}}");
    }
    let outputs = kernel.outputs.len();
    emit!(code, 2, "float {};", (0..outputs).map(|k| format!("y{k}[{W}]")).collect::<Vec<_>>().join(", "));
    emit!(code, 2, "#pragma unroll");
    emit!(code, 2, "for (unsigned int lane = 0; lane < {W}; ++lane) {{");
    for slot in &shape.slots {
        emit!(code, 3, "const uint4 r{slot} = sched_philox(make_uint4(index, sample, step{slot}, site{slot}), key);");
    }
    for (j, node) in kernel.nodes.iter().enumerate() {
        emit!(code, 3, "{}", definition(j, *node));
    }
    for (k, id) in kernel.outputs.iter().enumerate() {
        emit!(code, 3, "y{k}[lane] = v{};", id.0);
    }
    if !shape.slots.is_empty() {
        emit!(code, 3, "if (++index == per_sample) {{");
        emit!(code, 4, "index = 0;");
        emit!(code, 4, "++sample;");
        emit!(code, 3, "}}");
    }
    emit!(code, 2, "}}");
    if reduce {
        emit!(code, 2, "#pragma unroll");
        emit!(code, 2, "for (unsigned int lane = 0; lane < {W}; ++lane) {{");
        emit!(code, 3, "if (lane < count) {{");
        emit!(code, 4, "acc = sched_accumulate(acc, y0[lane]);");
        emit!(code, 3, "}}");
        emit!(code, 2, "}}");
    } else {
        emit!(code, 2, "// Every input of the group is loaded above, so an output may share its buffer with an input.");
        for k in 0..outputs {
            emit!(code, 2, "sched_store(out{k}, y{k}, g, count);");
        }
    }
    emit!(code, 1, "}}");
}

/// The line that defines node `j` as `v<j>`, in terms of the earlier nodes `v<i>`, the input
/// values `x<k>[lane]`, the parameters `p<k>` and the Philox blocks `r<slot>`. A constant's value
/// follows in a comment.
fn definition(j: usize, node: Node) -> String {
    let value = match node {
        Node::Input(k) => format!("x{k}[lane]"),
        Node::Param(k) => format!("p{k}"),
        Node::Const(bits) => {
            return format!("const float v{j} = __int_as_float(0x{bits:08x}); // {:?}", f32::from_bits(bits));
        }
        Node::Unary(op, a) => unary(op, &format!("v{}", a.0)),
        Node::Binary(op, a, b) => binary(op, &format!("v{}", a.0), &format!("v{}", b.0)),
        Node::Noise(Distribution::Gaussian, slot) => format!("sched_gaussian(r{slot})"),
        Node::Noise(Distribution::Uniform, slot) => format!("sched_uniform(r{slot})"),
    };
    format!("const float v{j} = {value};")
}

/// The CUDA C expression of a unary operation on `x`.
fn unary(op: UnaryOp, x: &str) -> String {
    let function = match op {
        UnaryOp::Neg => return format!("-{x}"),
        UnaryOp::Sigmoid => return format!("1.0f / (1.0f + expf(-{x}))"),
        UnaryOp::Sqrt => "sqrtf",
        UnaryOp::Exp => "expf",
        UnaryOp::Log => "logf",
        UnaryOp::Expm1 => "expm1f",
        UnaryOp::Log1p => "log1pf",
        UnaryOp::Sin => "sinf",
        UnaryOp::Cos => "cosf",
        UnaryOp::Tan => "tanf",
        UnaryOp::Tanh => "tanhf",
        UnaryOp::Atan => "atanf",
        UnaryOp::Abs => "fabsf",
        UnaryOp::Floor => "floorf",
        UnaryOp::Ceil => "ceilf",
    };
    format!("{function}({x})")
}

/// The CUDA C expression of a binary operation on `a` and `b`.
fn binary(op: BinaryOp, a: &str, b: &str) -> String {
    match op {
        BinaryOp::Add => format!("{a} + {b}"),
        BinaryOp::Sub => format!("{a} - {b}"),
        BinaryOp::Mul => format!("{a} * {b}"),
        BinaryOp::Div => format!("{a} / {b}"),
        BinaryOp::Pow => format!("powf({a}, {b})"),
        BinaryOp::Min => format!("fminf({a}, {b})"),
        BinaryOp::Max => format!("fmaxf({a}, {b})"),
    }
}

/// Emits the device functions that accumulate a thread's values, combine two partial results and
/// combine a block's threads, for the reduction `op`.
fn emit_combine_functions(code: &mut Code, op: ReduceOp) {
    code.blank();
    emit!(code, 0, "// Adds the body's value v at one element to a thread's accumulator.");
    emit!(code, 0, "__device__ __forceinline__ double sched_accumulate(double acc, float v) {{");
    match op {
        ReduceOp::Mean => emit!(code, 1, "return acc + (double)v;"),
        ReduceOp::Rms | ReduceOp::Norm => {
            emit!(code, 1, "const double d = (double)v;");
            emit!(code, 1, "return acc + d * d;");
        }
        ReduceOp::MaxAbs => {
            emit!(code, 1, "const double a = fabs((double)v);");
            emit!(code, 1, "return (isnan(a) || a > acc) ? a : acc;");
        }
    }
    emit!(code, 0, "}}");
    code.blank();
    emit!(code, 0, "// Combines two partial results.");
    emit!(code, 0, "__device__ __forceinline__ double sched_combine(double a, double b) {{");
    match op {
        ReduceOp::Mean | ReduceOp::Rms | ReduceOp::Norm => emit!(code, 1, "return a + b;"),
        ReduceOp::MaxAbs => emit!(code, 1, "return (isnan(b) || b > a) ? b : a;"),
    }
    emit!(code, 0, "}}");
    code.blank();
    emit!(
        code,
        0,
        "// Combines the values of a block's {BLOCK_THREADS} threads in a fixed tree order; every thread gets the result."
    );
    emit!(code, 0, "__device__ __forceinline__ double sched_block_combine(double acc) {{");
    emit!(code, 1, "__shared__ double shared[{BLOCK_THREADS}];");
    emit!(code, 1, "shared[threadIdx.x] = acc;");
    emit!(code, 1, "__syncthreads();");
    emit!(code, 1, "for (unsigned int half = {}; half > 0; half /= 2) {{", BLOCK_THREADS / 2);
    emit!(code, 2, "if (threadIdx.x < half) {{");
    emit!(code, 3, "shared[threadIdx.x] = sched_combine(shared[threadIdx.x], shared[threadIdx.x + half]);");
    emit!(code, 2, "}}");
    emit!(code, 2, "__syncthreads();");
    emit!(code, 1, "}}");
    emit!(code, 1, "return shared[0];");
    emit!(code, 0, "}}");
}
