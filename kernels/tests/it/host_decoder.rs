//! The CUDA C of the decoder layer kernels (`sched_kernels::decoder`: RMSNorm, RoPE, SwiGLU and
//! grouped-query attention over a key/value cache): compiled to PTX by NVRTC, and executed on the
//! host CPU by `common::host_cuda`, where it must compute the references' numbers bit for bit.
//! As in `host_layers.rs`, the NVRTC test skips without libnvrtc unless `SCHED_REQUIRE_NVRTC=1`,
//! and the host tests skip without a C++ compiler unless `SCHED_REQUIRE_HOST_CXX=1`.

use crate::common;

use common::emitted::{compile, nvrtc_or_skip, ptx_entry};
use common::host_cuda::{
    Arg, Buffer, Case, CaseId, Module, Program, check_output, compare, host_cxx_or_skip, sentinel,
};
use common::random::Random;
use sched_kernels::cuda::BLOCK_THREADS;
use sched_kernels::decoder::{
    CACHED_ATTENTION_ENTRY, CachedAttentionShape, RMS_NORM_ENTRY, ROPE_ENTRY, RopeShape, SWIGLU_ENTRY,
    cached_attention, cached_attention_source, rms_norm, rms_norm_source, rope, rope_source, swiglu, swiglu_source,
};

/// SmolLM2's RMSNorm ε.
const EPS: f32 = 1e-5;

#[test]
fn decoder_sources_compile_to_ptx() {
    if !nvrtc_or_skip("decoder_sources_compile_to_ptx") {
        return;
    }
    let sources = [
        (RMS_NORM_ENTRY, rms_norm_source()),
        (ROPE_ENTRY, rope_source()),
        (SWIGLU_ENTRY, swiglu_source()),
        (CACHED_ATTENTION_ENTRY, cached_attention_source()),
    ];
    for (name, source) in sources {
        let ptx = compile(source, name);
        let body = ptx_entry(&ptx, name).unwrap_or_else(|| panic!("no entry {name}:\n{ptx}"));
        assert!(!ptx.contains(".local"), "{name} uses local memory:\n{ptx}");
        // Without a transcendental function (whose CUDA implementation has its own multiply-adds),
        // no multiply-add at all.
        if matches!(name, RMS_NORM_ENTRY | ROPE_ENTRY) {
            assert!(!body.contains("fma."), "{name} has a fused multiply-add:\n{body}");
        }
        assert!(!ptx.contains("div.approx") && !ptx.contains("div.full"), "{name} divides approximately:\n{ptx}");
        let needed: &[&str] = match name {
            // `1 / sqrt(…)` is the correctly rounded reciprocal.
            RMS_NORM_ENTRY => &["sqrt.rn.f32", "rcp.rn.f32", "div.rn.f64"],
            ROPE_ENTRY => &["mul.rn.f32", "sub.rn.f32", "add.rn.f32"],
            SWIGLU_ENTRY => &["div.rn.f32", "ex2.approx"],
            _ => &["sqrt.rn.f32", "div.rn.f64", "ex2.approx"],
        };
        for instruction in needed {
            assert!(body.contains(instruction), "{name} has no {instruction}:\n{body}");
        }
    }
}

/// The launch shapes for `threads` threads of work: one thread per item in blocks of
/// [`BLOCK_THREADS`], a single such block, and two blocks of 3 threads (the grid-stride loops
/// turn).
fn grids(threads: usize) -> [(u32, u32); 3] {
    [((threads.div_ceil(BLOCK_THREADS as usize)).max(1) as u32, BLOCK_THREADS), (1, BLOCK_THREADS), (2, 3)]
}

/// Checks that an input buffer is unchanged by its launch.
fn check_input(got: &[f32], before: &[f32], what: &str) {
    let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(got), bits(before), "{what}: an input is read only");
}

/// One RMSNorm launch: its case, buffers (x, weight, out), x, weight and description.
type NormLaunch = (CaseId, [Arg; 3], Vec<f32>, Vec<f32>, String);

#[test]
fn rms_norm_is_the_reference_bit_for_bit_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("rms_norm_is_the_reference_bit_for_bit_on_the_host") else { return };
    let mut random = Random(21);
    let mut program = Program::new();
    let module = program.module(Module::new(rms_norm_source(), &[RMS_NORM_ENTRY]));
    let mut shapes: Vec<(usize, usize)> = (0..30).map(|_| (random.size(1, 9), random.size(1, 200))).collect();
    shapes.extend([(1, 576), (300, 7)]);
    let mut launches: Vec<NormLaunch> = Vec::new();
    for (rows, width) in shapes {
        for (grid, block) in grids(rows) {
            // Rows of spread up to 40, and a row of zeros.
            let mut x = random.values(rows * width, -40.0, 40.0);
            x[..width].fill(0.0);
            let weight = random.values(width, -2.0, 2.0);
            let mut case = Case::new(module);
            let buffers = [
                case.buffer(Buffer::F32(x.clone())),
                case.buffer(Buffer::F32(weight.clone())),
                case.buffer(sentinel(rows * width)),
            ];
            let mut args = buffers.to_vec();
            args.extend([Arg::U64(rows as u64), Arg::U32(width as u32), Arg::F32(EPS)]);
            case.launch(RMS_NORM_ENTRY, grid, block, args);
            launches.push((
                program.case(case),
                buffers,
                x,
                weight,
                format!("{rows} rows of {width}, grid {grid}×{block}"),
            ));
        }
    }
    let outputs = program.run_or_panic(&cxx, "rms_norm");
    for (case, buffers, x, weight, what) in &launches {
        let mut expected = vec![0.0; x.len()];
        rms_norm(x, weight, EPS, &mut expected);
        check_output(outputs.buffer(*case, buffers[2]).as_f32(), &expected, what);
        check_input(outputs.buffer(*case, buffers[0]).as_f32(), x, what);
    }
}

#[test]
fn rope_is_the_reference_bit_for_bit_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("rope_is_the_reference_bit_for_bit_on_the_host") else { return };
    let mut random = Random(22);
    let mut program = Program::new();
    let module = program.module(Module::new(rope_source(), &[ROPE_ENTRY]));
    let mut launches = Vec::new();
    for (rows, heads, head_dim) in [(1, 1, 2), (3, 2, 8), (5, 9, 64), (40, 3, 6)] {
        let half = head_dim / 2;
        let table_positions = 50;
        let cos = random.values(table_positions * half, -1.0, 1.0);
        let sin = random.values(table_positions * half, -1.0, 1.0);
        // Positions in the tables, and one past them (its row stays as it is).
        let positions: Vec<u32> = (0..rows)
            .map(|r| if r == 2 { table_positions as u32 } else { random.size(0, table_positions - 1) as u32 })
            .collect();
        let shape = RopeShape { rows, heads, head_dim };
        for (grid, block) in grids(rows * heads * half) {
            let x = random.values(rows * heads * head_dim, -3.0, 3.0);
            let mut case = Case::new(module);
            let buffers = [
                case.buffer(Buffer::F32(x.clone())),
                case.buffer(Buffer::F32(cos.clone())),
                case.buffer(Buffer::F32(sin.clone())),
                case.buffer(Buffer::U32(positions.clone())),
            ];
            let mut args = buffers.to_vec();
            args.extend([
                Arg::U64(rows as u64),
                Arg::U32(heads as u32),
                Arg::U32(head_dim as u32),
                Arg::U64(table_positions as u64),
            ]);
            case.launch(ROPE_ENTRY, grid, block, args);
            let mut expected = x.clone();
            rope(&mut expected, &cos, &sin, &positions, shape);
            launches.push((program.case(case), buffers[0], expected, format!("{shape:?}, grid {grid}×{block}")));
        }
    }
    let outputs = program.run_or_panic(&cxx, "rope");
    for (case, buffer, expected, what) in &launches {
        if let Err(e) = compare(outputs.buffer(*case, *buffer).as_f32(), expected) {
            panic!("{what}: {e}");
        }
    }
}

#[test]
fn swiglu_is_the_reference_bit_for_bit_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("swiglu_is_the_reference_bit_for_bit_on_the_host") else { return };
    let mut random = Random(23);
    let mut program = Program::new();
    let module = program.module(Module::new(swiglu_source(), &[SWIGLU_ENTRY]));
    let mut launches = Vec::new();
    for len in [1, 7, 1536, 4000] {
        for (grid, block) in grids(len) {
            let mut gate = random.values(len, -12.0, 12.0);
            for (k, v) in gate.iter_mut().enumerate().filter(|(k, _)| k % 97 == 3) {
                *v = [0.0, -0.0, 100.0, -100.0, f32::INFINITY, f32::NAN][k % 6];
            }
            let up = random.values(len, -3.0, 3.0);
            let mut case = Case::new(module);
            let buffers = [
                case.buffer(Buffer::F32(gate.clone())),
                case.buffer(Buffer::F32(up.clone())),
                case.buffer(sentinel(len)),
            ];
            let mut args = buffers.to_vec();
            args.push(Arg::U64(len as u64));
            case.launch(SWIGLU_ENTRY, grid, block, args);
            let mut expected = vec![0.0; len];
            swiglu(&gate, &up, &mut expected);
            launches.push((program.case(case), buffers[2], expected, format!("{len} elements, grid {grid}×{block}")));
        }
    }
    let outputs = program.run_or_panic(&cxx, "swiglu");
    for (case, buffer, expected, what) in &launches {
        check_output(outputs.buffer(*case, *buffer).as_f32(), expected, what);
    }
}

#[test]
fn cached_attention_is_the_reference_bit_for_bit_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("cached_attention_is_the_reference_bit_for_bit_on_the_host") else { return };
    let mut random = Random(24);
    let mut program = Program::new();
    let module = program.module(Module::new(cached_attention_source(), &[CACHED_ATTENTION_ENTRY]));
    let mut shapes: Vec<CachedAttentionShape> = (0..30)
        .map(|_| {
            let kv_heads = random.size(1, 3);
            CachedAttentionShape {
                queries: random.size(1, 5),
                start: random.size(0, 12),
                heads: kv_heads * random.size(1, 3),
                kv_heads,
                head_dim: random.size(1, 16),
            }
        })
        .collect();
    // SmolLM2's heads (9 sharing 3) and a decoding step after a long prefix.
    shapes.push(CachedAttentionShape { queries: 1, start: 200, heads: 9, kv_heads: 3, head_dim: 64 });
    shapes.push(CachedAttentionShape { queries: 70, start: 0, heads: 4, kv_heads: 2, head_dim: 8 });
    let mut launches = Vec::new();
    for shape in shapes {
        let Some((query_elements, cache_elements)) = shape.elements() else { panic!("{shape:?} is a shape") };
        for (grid, block) in grids(shape.queries * shape.heads) {
            let q = random.values(query_elements, -2.0, 2.0);
            let keys = random.values(cache_elements, -2.0, 2.0);
            let values = random.values(cache_elements, -2.0, 2.0);
            let mut case = Case::new(module);
            let buffers = [
                case.buffer(Buffer::F32(q.clone())),
                case.buffer(Buffer::F32(keys.clone())),
                case.buffer(Buffer::F32(values.clone())),
                case.buffer(sentinel(query_elements)),
            ];
            let mut args = buffers.to_vec();
            let CachedAttentionShape { queries, start, heads, kv_heads, head_dim } = shape;
            args.extend([queries, start, heads, kv_heads, head_dim].map(|n| Arg::U32(n as u32)));
            case.launch(CACHED_ATTENTION_ENTRY, grid, block, args);
            let mut expected = vec![0.0; query_elements];
            cached_attention(&q, &keys, &values, shape, &mut expected);
            launches.push((
                program.case(case),
                buffers,
                expected,
                [q, keys, values],
                format!("{shape:?}, grid {grid}×{block}"),
            ));
        }
    }
    let outputs = program.run_or_panic(&cxx, "cached_attention");
    for (case, buffers, expected, inputs, what) in &launches {
        check_output(outputs.buffer(*case, buffers[3]).as_f32(), expected, what);
        for (buffer, before) in buffers.iter().zip(inputs) {
            check_input(outputs.buffer(*case, *buffer).as_f32(), before, what);
        }
    }
}

/// The references leave what they cannot compute unchanged instead of panicking.
#[test]
fn the_references_refuse_shapes_they_cannot_compute() {
    let mut out = vec![7.0f32; 4];
    rms_norm(&[1.0; 4], &[], EPS, &mut out);
    assert_eq!(out, [7.0; 4], "an empty weight");
    let mut x = vec![1.0f32, 2.0, 3.0];
    rope(&mut x, &[1.0], &[0.0], &[0], RopeShape { rows: 1, heads: 1, head_dim: 3 });
    assert_eq!(x, [1.0, 2.0, 3.0], "an odd head size");
    let uneven = CachedAttentionShape { queries: 1, start: 0, heads: 3, kv_heads: 2, head_dim: 2 };
    assert_eq!(uneven.elements(), None);
    let short = CachedAttentionShape { queries: 1, start: 3, heads: 1, kv_heads: 1, head_dim: 2 };
    cached_attention(&[1.0; 2], &[1.0; 2], &[1.0; 2], short, &mut out);
    assert_eq!(out, [7.0; 4], "a cache shorter than its positions");
}
