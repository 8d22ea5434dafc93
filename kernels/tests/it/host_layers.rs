//! The CUDA C of the layer kernels (`sched_kernels::layers`): compiled to PTX by NVRTC, and
//! executed on the host CPU by `common::host_cuda`, where it must compute the reference layers'
//! numbers bit for bit (the host runs the C library's `expf` and `erf`, which the references call
//! too; on a GPU, CUDA's may differ in the last bit).
//!
//! The NVRTC test skips, saying why, when libnvrtc cannot be loaded; CI sets
//! `SCHED_REQUIRE_NVRTC=1`, which makes a missing library a failure. The host tests skip when
//! there is no C++ compiler, unless `SCHED_REQUIRE_HOST_CXX=1`; their programs are kept under
//! the target directory's `tmp/host_cuda/<program>/<process id>/` for inspection (see
//! `Program::run`).

use crate::common;

use std::time::Instant;

use common::emitted::{compile, nvrtc_or_skip, ptx_entry};
use common::host_cuda::{
    Arg, Buffer, Case, CaseId, Module, Outputs, PADDING, Program, SENTINEL, check_output, compare, host_cxx_or_skip,
    sentinel,
};
use common::random::Random;
use sched_kernels::cuda::BLOCK_THREADS;
use sched_kernels::layers::{
    ATTENTION_ENTRY, Activation, AttentionShape, BIAS_ACTIVATION_ENTRY, GATHER_ENTRY, LN_ENTRY, MOVE_ROWS_ENTRY,
    activation_code, attention, attention_source, bias_activation, bias_activation_source, gather_rows,
    gather_rows_source, layer_norm, layer_norm_source, move_rows, move_rows_source,
};

/// The ε of the transformer's LayerNorms.
const EPS: f32 = 1e-5;

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
        (GATHER_ENTRY, gather_rows_source()),
        (MOVE_ROWS_ENTRY, move_rows_source()),
    ];
    for (name, source) in sources {
        let ptx = compile(source, name);
        let body = ptx_entry(&ptx, name).unwrap_or_else(|| panic!("no entry {name}:\n{ptx}"));
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
            GATHER_ENTRY | MOVE_ROWS_ENTRY => {
                // A copy: 32-bit loads and stores, and no floating-point arithmetic at all.
                for instruction in ["ld.global.u32", "ld.global.f32", "st.global.f32"] {
                    assert!(body.contains(instruction), "{name} has no {instruction}:\n{body}");
                }
                for arithmetic in ["add.f", "sub.f", "mul.f", "div.f", "fma.", "cvt.f", "cvt.rn"] {
                    assert!(!body.contains(arithmetic), "{name} has float arithmetic ({arithmetic}):\n{body}");
                }
            }
            _ => assert!(body.contains("div.rn.f32"), "{name} has no div.rn.f32:\n{body}"),
        }
    }
    println!("the layer kernels compiled in {:?}", start.elapsed());
}

/// The f32 buffer that `buffer` (an [`Arg::Buffer`]) passes in case `case`, after its launches.
fn buffer_after(outputs: &Outputs, case: CaseId, buffer: Arg) -> &[f32] {
    outputs.buffer(case, buffer).as_f32()
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
    let outputs = program.run_or_panic(&cxx, "layer_norm");
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
    let outputs = program.run_or_panic(&cxx, "attention");
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
    let outputs = program.run_or_panic(&cxx, "bias_activation_gelu");
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

/// One launch of the gather kernel, and its data.
struct GatherLaunch {
    case: CaseId,
    buffers: [Arg; 3],
    src: Vec<f32>,
    indices: Vec<u32>,
    width: usize,
    blocked: Option<u32>,
    grid: Grid,
}

/// The bits of values, to compare them exactly (NaN payloads included).
fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn gather_rows_is_the_reference_bit_for_bit_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("gather_rows_is_the_reference_bit_for_bit_on_the_host") else {
        return;
    };
    let mut random = Random(14);
    let mut program = Program::new();
    let module = program.module(Module::new(gather_rows_source(), &[GATHER_ENTRY]));
    // Signed zeros, a subnormal, infinities and NaNs with payloads, which the copy keeps.
    let specials = [0.0, -0.0, 1e-45, f32::INFINITY, f32::NEG_INFINITY, f32::from_bits(0xffc0_1234)];
    // (rows of the source, indices, width): random shapes, no index at all, a single element,
    // and more elements than a block has threads.
    let mut shapes: Vec<(usize, usize, usize)> =
        (0..40).map(|_| (random.size(1, 10), random.size(1, 24), random.size(1, 64))).collect();
    shapes.extend([(3, 0, 5), (1, 1, 1), (4, 30, 300), (50, 200, 3)]);
    let mut launches = Vec::new();
    for (rows, count, width) in shapes {
        for grid in grids(count * width) {
            let mut src = random.values(rows * width, -8.0, 8.0);
            for (k, v) in src.iter_mut().enumerate().filter(|(k, _)| k % 7 == 3) {
                *v = specials[(k / 7) % specials.len()];
            }
            // Indices among a few of the rows, so that they repeat.
            let picked = random.size(1, rows);
            let indices: Vec<u32> = (0..count).map(|_| random.below(picked as u64) as u32).collect();
            // No column blocked, a column of the row, and a column past it (which blocks none).
            let blocked = match random.below(3) {
                0 => None,
                1 => Some(random.below(width as u64) as u32),
                _ => Some(width as u32 + random.below(2) as u32),
            };
            let mut case = Case::new(module);
            let buffers = [
                case.buffer(Buffer::F32(src.clone())),
                case.buffer(Buffer::U32(indices.clone())),
                case.buffer(sentinel(count * width)),
            ];
            let args = vec![
                buffers[0],
                buffers[1],
                Arg::U64(count as u64),
                Arg::U32(width as u32),
                Arg::U32(blocked.unwrap_or(u32::MAX)),
                buffers[2],
            ];
            case.launch(GATHER_ENTRY, grid.grid, grid.block, args);
            launches.push(GatherLaunch { case: program.case(case), buffers, src, indices, width, blocked, grid });
        }
    }
    let outputs = program.run_or_panic(&cxx, "gather_rows");
    let blocks = launches.iter().filter(|launch| launch.blocked.is_some_and(|c| (c as usize) < launch.width)).count();
    for launch in &launches {
        let what = format!(
            "{} source rows of {}, indices {:?}, blocked {:?}, {:?}",
            launch.src.len() / launch.width,
            launch.width,
            launch.indices,
            launch.blocked,
            launch.grid
        );
        // The reference writes over the same sentinel, padding included: every bit must match.
        let mut expected = vec![f32::from_bits(SENTINEL); launch.indices.len() * launch.width + PADDING];
        gather_rows(&launch.src, &launch.indices, launch.width, launch.blocked, &mut expected);
        assert_eq!(bits(buffer_after(&outputs, launch.case, launch.buffers[2])), bits(&expected), "{what}");
        check_input(buffer_after(&outputs, launch.case, launch.buffers[0]), &launch.src, &what);
        assert_eq!(outputs.buffer(launch.case, launch.buffers[1]).as_u32(), launch.indices, "{what}: the indices");
    }
    assert!(blocks > 0 && blocks < launches.len(), "{blocks} of {} launches block a column", launches.len());
    println!("{} gather launches match", launches.len());
}

/// The row-move kernel gives the reference's bits on the host: moves in any order (the
/// destinations a permutation of some of the output's rows, the sources repeating), rows of the
/// output that no move names left as they were, no move at all, and more elements than a block
/// has threads.
#[test]
fn move_rows_is_the_reference_bit_for_bit_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("move_rows_is_the_reference_bit_for_bit_on_the_host") else {
        return;
    };
    let mut random = Random(15);
    let mut program = Program::new();
    let module = program.module(Module::new(move_rows_source(), &[MOVE_ROWS_ENTRY]));
    let specials = [0.0, -0.0, 1e-45, f32::INFINITY, f32::NEG_INFINITY, f32::from_bits(0xffc0_1234)];
    // (rows of the source, rows of the output, moves, width).
    let mut shapes: Vec<(usize, usize, usize, usize)> = (0..30)
        .map(|_| {
            let out_rows = random.size(1, 12);
            (random.size(1, 10), out_rows, random.size(0, out_rows), random.size(1, 64))
        })
        .collect();
    shapes.extend([(3, 4, 0, 5), (1, 1, 1, 1), (4, 40, 30, 300)]);
    let mut launches = Vec::new();
    for (src_rows, out_rows, count, width) in shapes {
        for grid in grids(count * width) {
            let mut src = random.values(src_rows * width, -8.0, 8.0);
            for (k, v) in src.iter_mut().enumerate().filter(|(k, _)| k % 7 == 3) {
                *v = specials[(k / 7) % specials.len()];
            }
            let before = random.values(out_rows * width, -1.0, 1.0);
            let from: Vec<u32> = (0..count).map(|_| random.below(src_rows as u64) as u32).collect();
            // Distinct destinations in a random order: a shuffled prefix of the output's rows.
            let mut rows: Vec<u32> = (0..out_rows as u32).collect();
            for i in (1..rows.len()).rev() {
                rows.swap(i, random.below(i as u64 + 1) as usize);
            }
            let to: Vec<u32> = rows[..count].to_vec();
            let mut case = Case::new(module);
            let buffers = [
                case.buffer(Buffer::F32(src.clone())),
                case.buffer(Buffer::U32(from.clone())),
                case.buffer(Buffer::U32(to.clone())),
                case.buffer(Buffer::F32(before.clone())),
            ];
            let args =
                vec![buffers[0], buffers[1], buffers[2], Arg::U64(count as u64), Arg::U32(width as u32), buffers[3]];
            case.launch(MOVE_ROWS_ENTRY, grid.grid, grid.block, args);
            launches.push((program.case(case), buffers, src, from, to, before, width, grid));
        }
    }
    let outputs = program.run_or_panic(&cxx, "move_rows");
    for (case, buffers, src, from, to, before, width, grid) in &launches {
        let what = format!("{} source rows of {width}, moves {from:?} -> {to:?}, {grid:?}", src.len() / width);
        let mut expected = before.clone();
        move_rows(src, from, to, *width, &mut expected);
        assert_eq!(bits(buffer_after(&outputs, *case, buffers[3])), bits(&expected), "{what}");
        check_input(buffer_after(&outputs, *case, buffers[0]), src, &what);
    }
    println!("{} row-move launches match", launches.len());
}
