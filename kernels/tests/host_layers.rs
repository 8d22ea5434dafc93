//! The CUDA C of the layer kernels (`sched_kernels::layers`): compiled to PTX by NVRTC, and
//! executed on the host CPU by `common::host_cuda`, where it must compute the reference layers'
//! numbers bit for bit (the host runs the C library's `expf` and `erf`, which the references call
//! too; on a GPU, CUDA's may differ in the last bit).
//!
//! The NVRTC test skips, saying why, when libnvrtc cannot be loaded; CI sets
//! `SCHED_REQUIRE_NVRTC=1`, which makes a missing library a failure. The host tests skip when
//! there is no C++ compiler, unless `SCHED_REQUIRE_HOST_CXX=1`; their programs are kept under
//! the target directory's `tmp/host_cuda/<test>/` for inspection.

mod common;

use std::time::Instant;

use common::host_cuda::{Arg, Buffer, Case, CaseId, HostCxx, Module, Outputs, Program, host_cxx_or_skip};
use sched_kernels::cuda::BLOCK_THREADS;
use sched_kernels::layers::{
    ATTENTION_ENTRY, Activation, AttentionShape, BIAS_ACTIVATION_ENTRY, LN_ENTRY, activation_code, attention,
    attention_source, bias_activation, bias_activation_source, layer_norm, layer_norm_source,
};
use sched_kernels::nvrtc;

/// The architecture the NVRTC test compiles for.
const ARCH: &str = "sm_90";

/// The bits written over every output buffer before a launch, and into the padding after its
/// elements, which no launch may touch: a signalling NaN, which no arithmetic produces.
const SENTINEL: u32 = 0x7fa5_5a5a;

/// Elements of padding after the elements of every output buffer.
const PADDING: usize = 9;

/// The ε of the transformer's LayerNorms.
const EPS: f32 = 1e-5;

/// A deterministic generator of test data (SplitMix64).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform value in `[low, high)`.
    fn uniform(&mut self, low: f32, high: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }

    /// `count` uniform values in `[low, high)`.
    fn values(&mut self, count: usize, low: f32, high: f32) -> Vec<f32> {
        (0..count).map(|_| self.uniform(low, high)).collect()
    }

    /// A uniform integer in `low..=high`.
    fn size(&mut self, low: usize, high: usize) -> usize {
        low + (self.next() % (high - low + 1) as u64) as usize
    }
}

/// Returns whether libnvrtc can be loaded, printing why `test` is skipped if not. CI installs
/// libnvrtc and sets `SCHED_REQUIRE_NVRTC`, which makes a missing library a failure.
fn nvrtc_or_skip(test: &str) -> bool {
    let available = nvrtc::available();
    if !available {
        assert!(
            std::env::var_os("SCHED_REQUIRE_NVRTC").is_none(),
            "{test}: libnvrtc not found, and SCHED_REQUIRE_NVRTC is set"
        );
        println!("skipping {test}: libnvrtc not found (see docs/gpu.md)");
    }
    available
}

/// The PTX of the entry point `entry`, from its `.entry` line to its closing brace.
fn entry<'a>(ptx: &'a str, entry: &str) -> &'a str {
    let start = ptx.find(&format!(".visible .entry {entry}(")).unwrap_or_else(|| panic!("no entry {entry}:\n{ptx}"));
    let length = ptx[start..].find("\n}\n").unwrap_or_else(|| panic!("the entry {entry} does not end:\n{ptx}"));
    &ptx[start..start + length]
}

#[test]
fn layer_sources_compile_to_ptx() {
    if !nvrtc_or_skip("layer_sources_compile_to_ptx") {
        return;
    }
    let start = Instant::now();
    let sources = [
        (BIAS_ACTIVATION_ENTRY, bias_activation_source()),
        (LN_ENTRY, layer_norm_source()),
        (ATTENTION_ENTRY, attention_source()),
    ];
    for (name, source) in sources {
        let ptx = nvrtc::compile_ptx(source, ARCH).unwrap_or_else(|e| panic!("{name} does not compile: {e}\n{source}"));
        let body = entry(&ptx, name);
        assert!(!ptx.contains(".local"), "{name} uses local memory:\n{ptx}");
        // `/` is the correctly rounded division (`div.rn`), not the approximate one.
        assert!(!ptx.contains("div.approx") && !ptx.contains("div.full"), "{name} divides approximately:\n{ptx}");
        match name {
            LN_ENTRY => {
                // No transcendental function: no multiply-add at all, and the correctly rounded
                // square root, division and reciprocal (`1.0 / (double)width`).
                assert!(!body.contains("fma."), "{name} has a fused multiply-add:\n{body}");
                assert!(!body.contains(".approx"), "{name} has an approximate operation:\n{body}");
                for instruction in ["sqrt.rn.f32", "div.rn.f32", "rcp.rn.f64"] {
                    assert!(body.contains(instruction), "{name} has no {instruction}:\n{body}");
                }
            }
            ATTENTION_ENTRY => {
                // The scale's correctly rounded square root and reciprocal, the weights' division,
                // and CUDA's `expf` (whose core is the approximate `ex2`).
                for instruction in ["sqrt.rn.f64", "rcp.rn.f64", "div.rn.f32", "ex2.approx"] {
                    assert!(body.contains(instruction), "{name} has no {instruction}:\n{body}");
                }
            }
            _ => assert!(body.contains("div.rn.f32"), "{name} has no div.rn.f32:\n{body}"),
        }
    }
    println!("the layer kernels compiled in {:?}", start.elapsed());
}

/// Compiles and runs `program`, saying how long it took.
fn run(program: &Program, cxx: &HostCxx, name: &str) -> Outputs {
    let outputs = program.run(cxx, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!("{name}: compiled in {:?}, ran in {:?}", outputs.compile, outputs.execute);
    outputs
}

/// The buffer that `buffer` (an [`Arg::Buffer`]) passes in case `case`, after its launches.
fn buffer_after(outputs: &Outputs, case: CaseId, buffer: Arg) -> &[f32] {
    let Arg::Buffer(k) = buffer else { panic!("{buffer:?} is not a buffer") };
    outputs.case(case)[k].as_f32()
}

/// Compares values bit for bit, except that any NaN matches any NaN (which of two NaN operands
/// an x86 instruction returns depends on the compiler's choice of operand order).
fn compare(got: &[f32], expected: &[f32]) -> Result<(), String> {
    if got.len() != expected.len() {
        return Err(format!("{} values, expected {}", got.len(), expected.len()));
    }
    let differs = |(g, e): (&f32, &f32)| g.to_bits() != e.to_bits() && !(g.is_nan() && e.is_nan());
    match got.iter().zip(expected).position(differs) {
        None => Ok(()),
        Some(i) => Err(format!(
            "element {i} is {:?} ({:#010x}), expected {:?} ({:#010x}); {} of {} elements differ",
            got[i],
            got[i].to_bits(),
            expected[i],
            expected[i].to_bits(),
            got.iter().zip(expected).filter(|&pair| differs(pair)).count(),
            got.len()
        )),
    }
}

/// An output buffer of `len` elements and its padding, all [`SENTINEL`].
fn sentinel(len: usize) -> Buffer {
    Buffer::F32(vec![f32::from_bits(SENTINEL); len + PADDING])
}

/// Checks an output buffer after its launch: `expected` in its first elements (see [`compare`]),
/// then the untouched padding.
fn check_output(got: &[f32], expected: &[f32], what: &str) {
    let (values, padding) = got.split_at(expected.len());
    if let Err(e) = compare(values, expected) {
        panic!("{what}: {e}");
    }
    if let Some(i) = padding.iter().position(|v| v.to_bits() != SENTINEL) {
        panic!("{what}: the padding element {} after the output is overwritten", expected.len() + i);
    }
}

/// Checks that an input buffer is unchanged by its launch.
fn check_input(got: &[f32], before: &[f32], what: &str) {
    let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(got), bits(before), "{what}: an input is read only");
}

/// A launch shape: `grid` blocks of `block` threads.
#[derive(Clone, Copy, Debug)]
struct Grid {
    grid: u32,
    block: u32,
}

/// The launch shapes for `threads` threads of work: one thread per item in blocks of
/// [`BLOCK_THREADS`] (as the device launches), a single such block (the grid-stride loop turns
/// when there are more than [`BLOCK_THREADS`] items), and two blocks of 3 threads (it turns
/// whenever there are more than 6).
fn grids(threads: usize) -> [Grid; 3] {
    [
        Grid { grid: threads.div_ceil(BLOCK_THREADS as usize).max(1) as u32, block: BLOCK_THREADS },
        Grid { grid: 1, block: BLOCK_THREADS },
        Grid { grid: 2, block: 3 },
    ]
}

/// One launch of the LayerNorm kernel, and its data.
struct NormLaunch {
    case: CaseId,
    buffers: [Arg; 4],
    x: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    rows: usize,
    grid: Grid,
}

#[test]
fn layer_norm_is_the_reference_bit_for_bit_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("layer_norm_is_the_reference_bit_for_bit_on_the_host") else {
        return;
    };
    let mut random = Random(11);
    let mut program = Program::new();
    let module = program.module(Module::new(layer_norm_source(), &[LN_ENTRY]));
    let mut shapes: Vec<(usize, usize)> = (0..40).map(|_| (random.size(1, 12), random.size(1, 300))).collect();
    // Every width at the edges of candle's 32-lane sums, and more rows than a block has threads.
    shapes.extend([(3, 1), (2, 31), (2, 32), (2, 33), (1, 300), (700, 17), (300, 5)]);
    let mut launches = Vec::new();
    for (rows, width) in shapes {
        for grid in grids(rows) {
            // Rows of mean up to ±1.2e3 and spread about 1, and a few of exact zeros.
            let mut x = Vec::with_capacity(rows * width);
            for r in 0..rows {
                let offset = if r % 5 == 4 { 0.0 } else { random.uniform(-1200.0, 1200.0) };
                let spread = if r % 5 == 4 { 0.0 } else { 1.5 };
                x.extend(random.values(width, -spread, spread).iter().map(|v| offset + v));
            }
            let weight = random.values(width, 0.5, 2.0);
            let bias = random.values(width, -1.0, 1.0);
            let mut case = Case::new(module);
            let buffers = [
                case.buffer(Buffer::F32(x.clone())),
                case.buffer(Buffer::F32(weight.clone())),
                case.buffer(Buffer::F32(bias.clone())),
                case.buffer(sentinel(rows * width)),
            ];
            let mut args = buffers.to_vec();
            args.extend([Arg::U64(rows as u64), Arg::U32(width as u32), Arg::F32(EPS)]);
            case.launch(LN_ENTRY, grid.grid, grid.block, args);
            launches.push(NormLaunch { case: program.case(case), buffers, x, weight, bias, rows, grid });
        }
    }
    let outputs = run(&program, &cxx, "layer_norm");
    for launch in &launches {
        let width = launch.weight.len();
        let what = format!("{} rows of {width}, {:?}", launch.rows, launch.grid);
        let mut expected = vec![0.0; launch.x.len()];
        layer_norm(&launch.x, &launch.weight, &launch.bias, EPS, &mut expected);
        check_output(buffer_after(&outputs, launch.case, launch.buffers[3]), &expected, &what);
        for (buffer, before) in launch.buffers.iter().zip([&launch.x, &launch.weight, &launch.bias]) {
            check_input(buffer_after(&outputs, launch.case, *buffer), before, &what);
        }
    }
    println!("{} LayerNorm launches match", launches.len());
}

/// One launch of the attention kernel, and its data.
struct AttentionLaunch {
    case: CaseId,
    buffers: [Arg; 4],
    operands: [Vec<f32>; 3],
    shape: AttentionShape,
    grid: Grid,
}

#[test]
fn attention_is_the_reference_bit_for_bit_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("attention_is_the_reference_bit_for_bit_on_the_host") else {
        return;
    };
    let mut random = Random(12);
    let mut program = Program::new();
    let module = program.module(Module::new(attention_source(), &[ATTENTION_ENTRY]));
    // Random shapes within batch 1–3, len 1–9, heads 1–4 and head_dim 1–16, with operands of
    // spread 2 (scores of a few units) or 30 (scores in the hundreds, whose exponentials
    // underflow to 0 but for the largest); and more triples than a block has threads.
    let mut shapes: Vec<(AttentionShape, f32)> = (0..60)
        .map(|k| {
            let shape = AttentionShape {
                batch: random.size(1, 3),
                len: random.size(1, 9),
                heads: random.size(1, 4),
                head_dim: random.size(1, 16),
                causal: k % 2 == 0,
            };
            (shape, if k % 6 == 5 { 30.0 } else { 2.0 })
        })
        .collect();
    for causal in [false, true] {
        shapes.push((AttentionShape { batch: 3, len: 32, heads: 4, head_dim: 8, causal }, 2.0));
    }
    let mut launches = Vec::new();
    for (shape, spread) in shapes {
        let elements = shape.batch * shape.len * shape.heads * shape.head_dim;
        for grid in grids(shape.batch * shape.len * shape.heads) {
            let operands = [(); 3].map(|()| random.values(elements, -spread, spread));
            let mut case = Case::new(module);
            let buffers = [
                case.buffer(Buffer::F32(operands[0].clone())),
                case.buffer(Buffer::F32(operands[1].clone())),
                case.buffer(Buffer::F32(operands[2].clone())),
                case.buffer(sentinel(elements)),
            ];
            let mut args = buffers.to_vec();
            let AttentionShape { batch, len, heads, head_dim, causal } = shape;
            args.extend([batch, len, heads, head_dim].map(|n| Arg::U32(n as u32)));
            args.push(Arg::I32(i32::from(causal)));
            case.launch(ATTENTION_ENTRY, grid.grid, grid.block, args);
            launches.push(AttentionLaunch { case: program.case(case), buffers, operands, shape, grid });
        }
    }
    let outputs = run(&program, &cxx, "attention");
    for launch in &launches {
        let what = format!("{:?}, {:?}", launch.shape, launch.grid);
        let [q, k, v] = &launch.operands;
        let mut expected = vec![0.0; q.len()];
        attention(q, k, v, launch.shape, &mut expected);
        check_output(buffer_after(&outputs, launch.case, launch.buffers[3]), &expected, &what);
        for (buffer, before) in launch.buffers.iter().zip(&launch.operands) {
            check_input(buffer_after(&outputs, launch.case, *buffer), before, &what);
        }
    }
    println!("{} attention launches match", launches.len());
}

/// Values that exercise the special cases of the activations: zeros, subnormals, the range
/// where erf rounds to ±1 and exp overflows, huge values, infinities and NaNs.
fn special_values() -> Vec<f32> {
    vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        3.0,
        -3.0,
        0.5,
        -2.5,
        1e-30,
        f32::MIN_POSITIVE,
        -1e-40,
        1e-45,
        5.5,
        -5.5,
        88.7,
        -104.0,
        1e30,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
    ]
}

/// One launch of the bias and activation kernel, and its data.
struct BiasLaunch {
    case: CaseId,
    buffers: [Arg; 2],
    data: Vec<f32>,
    bias: Vec<f32>,
    code: i32,
    grid: Grid,
}

#[test]
fn bias_activation_is_the_reference_bit_for_bit_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("bias_activation_is_the_reference_bit_for_bit_on_the_host") else {
        return;
    };
    let mut random = Random(13);
    let mut program = Program::new();
    let module = program.module(Module::new(bias_activation_source(), &[BIAS_ACTIVATION_ENTRY]));
    let specials = special_values();
    let mut launches = Vec::new();
    // Rows and columns, and elements after the last full row.
    for (rows, cols, extra) in [(1_usize, 1, 0_usize), (3, 5, 0), (7, 3, 2), (33, 17, 5), (5, 640, 0)] {
        let len = rows * cols + extra;
        // The codes of the three activations, and a code that applies none.
        for code in [0, 1, 2, 7] {
            for grid in grids(len) {
                let mut data = random.values(len, -6.0, 6.0);
                for (k, v) in data.iter_mut().enumerate().filter(|(k, _)| k % 3 == 1) {
                    *v = specials[(k / 3) % specials.len()];
                }
                let bias = random.values(cols, -1.0, 1.0);
                let mut case = Case::new(module);
                let buffers = [case.buffer(Buffer::F32(data.clone())), case.buffer(Buffer::F32(bias.clone()))];
                let args = vec![buffers[0], buffers[1], Arg::U32(cols as u32), Arg::U64(len as u64), Arg::I32(code)];
                case.launch(BIAS_ACTIVATION_ENTRY, grid.grid, grid.block, args);
                launches.push(BiasLaunch { case: program.case(case), buffers, data, bias, code, grid });
            }
        }
    }
    let outputs = run(&program, &cxx, "bias_activation_gelu");
    for launch in &launches {
        let activation = [Activation::Silu, Activation::Gelu]
            .into_iter()
            .find(|&a| activation_code(a) == launch.code)
            .unwrap_or(Activation::Identity);
        let what = format!(
            "code {}, {} elements of {} columns, {:?}",
            launch.code,
            launch.data.len(),
            launch.bias.len(),
            launch.grid
        );
        let mut expected = launch.data.clone();
        bias_activation(&mut expected, &launch.bias, activation);
        if let Err(e) = compare(buffer_after(&outputs, launch.case, launch.buffers[0]), &expected) {
            panic!("{what}: {e}");
        }
        check_input(buffer_after(&outputs, launch.case, launch.buffers[1]), &launch.bias, &what);
    }
    println!("{} bias and activation launches match", launches.len());
}
