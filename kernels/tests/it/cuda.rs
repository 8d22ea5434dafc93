//! The CUDA C emitter and NVRTC: golden texts, the ABI of the emitted signatures, and compilation
//! to PTX when libnvrtc is available.
//!
//! The golden files live in `tests/golden/`; run with `SCHED_BLESS=1` to rewrite them after an
//! intended change of the emitted text.

use crate::common;

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use common::emitted::{ARCH, check_golden_files, compile, nvrtc_or_skip, ptx_entry, signature};
use common::random::Random;
use common::{REDUCTIONS, all_ops_kernel, ddim_kernel, noise_kernel, reduction_body};
use sched_kernels::cuda::{
    BLOCK_THREADS, ELEMENTWISE_ENTRY, REDUCE_FINISH_ENTRY, REDUCE_MAX_BLOCKS, REDUCE_PARTIALS_ENTRY, VECTOR_WIDTH,
    elementwise_blocks, elementwise_source, reduction_blocks, reduction_source,
};
use sched_kernels::nvrtc::{self, NvrtcError, PtxCache};
use sched_kernels::{BinaryOp, Distribution, ElementwiseKernel, KernelError, Node, NodeId, ReduceOp, ReductionKernel};

/// The number of random kernels compiled by NVRTC.
const RANDOM_KERNELS: usize = 120;

/// The emitted source of a kernel that the test knows to be valid.
fn source(kernel: &ElementwiseKernel) -> String {
    elementwise_source(kernel).unwrap_or_else(|e| panic!("the kernel is valid, but the emitter says: {e}"))
}

/// The emitted source of a reduction that the test knows to be valid.
fn reduction(op: ReduceOp, body: &ElementwiseKernel) -> String {
    let kernel = ReductionKernel { body: body.clone(), op };
    reduction_source(&kernel).unwrap_or_else(|e| panic!("the reduction is valid, but the emitter says: {e}"))
}

/// The golden files and their emitted texts.
fn goldens() -> Vec<(&'static str, String)> {
    let mut files = vec![
        ("ddim.cu", source(&ddim_kernel())),
        ("all_ops.cu", source(&all_ops_kernel())),
        ("noise.cu", source(&noise_kernel())),
    ];
    files.extend(REDUCTIONS.map(|(op, name)| (name, reduction(op, &reduction_body()))));
    files
}

#[test]
fn emitted_sources_match_the_golden_files() {
    check_golden_files(goldens(), "cuda");
}

#[test]
fn emission_is_deterministic() {
    for (name, text) in goldens().into_iter().zip(goldens()) {
        assert_eq!(name.1, text.1, "{}", name.0);
    }
}

/// The parameters the ABI of the module documentation gives a kernel with `inputs` inputs,
/// `outputs` outputs (`None` for a reduction's first pass), `params` parameters and `slots` noise
/// slots.
fn expected_signature(inputs: u32, outputs: Option<u32>, params: u32, slots: u32) -> Vec<String> {
    let mut expected = Vec::new();
    for k in 0..inputs {
        expected.push(format!("const float* in{k}"));
    }
    for k in 0..outputs.unwrap_or(0) {
        expected.push(format!("float* out{k}"));
    }
    for k in 0..params {
        expected.push(format!("float p{k}"));
    }
    expected.push("const unsigned int* seed".to_string());
    for k in 0..slots {
        expected.push(format!("unsigned int site{k}"));
        expected.push(format!("unsigned int step{k}"));
    }
    expected.push("unsigned int per_sample".to_string());
    expected.push("unsigned long long len".to_string());
    if outputs.is_none() {
        expected.push("double* partials".to_string());
    }
    expected
}

/// A kernel with the given counts whose outputs all read the last node. Only some declared
/// inputs, parameters and slots are used, so the signature must not depend on what is used.
fn shaped_kernel(inputs: u32, outputs: u32, params: u32, slots: u32) -> ElementwiseKernel {
    let mut nodes = vec![Node::constant(2.0)];
    if inputs > 0 {
        nodes.push(Node::Input(inputs - 1));
    }
    if params > 0 {
        nodes.push(Node::Param(0));
    }
    if slots > 0 {
        nodes.push(Node::Noise(Distribution::Uniform, slots - 1));
    }
    let last = NodeId(nodes.len() as u32 - 1);
    ElementwiseKernel { inputs, params, noise_slots: slots, nodes, outputs: vec![last; outputs as usize] }
}

#[test]
fn signatures_follow_the_abi() {
    let shapes = [(0, 1, 0, 0), (1, 1, 0, 0), (2, 1, 3, 1), (0, 2, 0, 2), (3, 2, 1, 0), (5, 4, 6, 3), (1, 3, 0, 4)];
    for (inputs, outputs, params, slots) in shapes {
        let kernel = shaped_kernel(inputs, outputs, params, slots);
        let got = signature(&source(&kernel), ELEMENTWISE_ENTRY);
        assert_eq!(got, expected_signature(inputs, Some(outputs), params, slots), "shape {inputs} {outputs} {params}");

        let body = shaped_kernel(inputs, 1, params, slots);
        let text = reduction(ReduceOp::Rms, &body);
        assert_eq!(signature(&text, REDUCE_PARTIALS_ENTRY), expected_signature(inputs, None, params, slots));
        let finish = ["const double* partials", "unsigned int count", "unsigned long long len", "double* result"];
        assert_eq!(signature(&text, REDUCE_FINISH_ENTRY), finish);
    }
}

#[test]
fn entry_points_are_extern_c_globals_of_block_threads() {
    let text = source(&ddim_kernel());
    let head = format!("extern \"C\" __global__ void __launch_bounds__({BLOCK_THREADS}) {ELEMENTWISE_ENTRY}(");
    assert_eq!(text.matches(&head).count(), 1);
    let text = reduction(ReduceOp::Mean, &reduction_body());
    for entry in [REDUCE_PARTIALS_ENTRY, REDUCE_FINISH_ENTRY] {
        let head = format!("extern \"C\" __global__ void __launch_bounds__({BLOCK_THREADS}) {entry}(");
        assert_eq!(text.matches(&head).count(), 1, "{entry}");
    }
}

#[test]
fn constants_keep_their_exact_bits() {
    let bits = [0x7fc0_0001_u32, 0xffc0_0000, 0x8000_0000, 0x0000_0000, 0x7f80_0000, 0xff80_0000, 0x0000_0001];
    let mut nodes: Vec<Node> = bits.iter().map(|&b| Node::Const(b)).collect();
    let mut sum = NodeId(0);
    for k in 1..bits.len() {
        nodes.push(Node::Binary(BinaryOp::Add, sum, NodeId(k as u32)));
        sum = NodeId(nodes.len() as u32 - 1);
    }
    let kernel = ElementwiseKernel { inputs: 0, params: 0, noise_slots: 0, nodes, outputs: vec![sum] };
    let text = source(&kernel);
    for (j, b) in bits.iter().enumerate() {
        let line = format!("const float v{j} = __int_as_float(0x{b:08x});");
        assert!(text.contains(&line), "no `{line}` in:\n{text}");
    }
}

#[test]
fn every_node_is_one_line() {
    let kernel = all_ops_kernel();
    let text = source(&kernel);
    for j in 0..kernel.nodes.len() {
        assert_eq!(text.matches(&format!("const float v{j} = ")).count(), 1, "node {j}");
    }
    for (expression, count) in
        [("sched_philox(", 2), ("powf(v1, v3)", 1), ("1.0f / (1.0f + expf(-v0))", 1), ("fminf(v1, v3)", 1)]
    {
        assert_eq!(text.matches(expression).count(), count, "{expression} in:\n{text}");
    }
}

#[test]
fn invalid_kernels_are_errors() {
    let ddim = ddim_kernel();
    let mut forward = ddim.clone();
    forward.nodes[2] = Node::Binary(BinaryOp::Mul, NodeId(0), NodeId(5));
    let mut no_outputs = ddim.clone();
    no_outputs.outputs.clear();
    let mut input = ddim.clone();
    input.nodes[0] = Node::Input(7);
    let mut slot = ddim.clone();
    slot.noise_slots = 0;
    let mut output = ddim.clone();
    output.outputs.push(NodeId(99));
    for kernel in [forward, no_outputs, input, slot, output] {
        let expected = kernel.validate().expect_err("the kernel is invalid");
        assert_eq!(elementwise_source(&kernel).expect_err("the kernel is invalid"), expected);
        let reduction = ReductionKernel { body: kernel, op: ReduceOp::Norm };
        assert_eq!(reduction_source(&reduction).expect_err("the body is invalid"), expected);
    }
    let mut two = reduction_body();
    two.outputs.push(NodeId(0));
    let reduction = ReductionKernel { body: two, op: ReduceOp::Mean };
    assert_eq!(reduction_source(&reduction), Err(KernelError::ReductionOutputs { outputs: 2 }));
}

#[test]
fn wild_kernels_are_rejected_exactly_when_validation_rejects_them() {
    let mut random = Random(17);
    for _ in 0..2000 {
        let kernel = random.kernel(true);
        let expected = kernel.validate();
        assert_eq!(elementwise_source(&kernel).map(|_| ()), expected);
        if expected.is_ok() && kernel.outputs.len() == 1 {
            let reduction = ReductionKernel { body: kernel, op: ReduceOp::MaxAbs };
            assert!(reduction_source(&reduction).is_ok());
        }
    }
}

#[test]
fn launch_shapes() {
    let group = BLOCK_THREADS as u64 * VECTOR_WIDTH as u64;
    assert_eq!(elementwise_blocks(0, 132), 1);
    assert_eq!(elementwise_blocks(1, 132), 1);
    assert_eq!(elementwise_blocks(group, 132), 1);
    assert_eq!(elementwise_blocks(group + 1, 132), 2);
    assert_eq!(elementwise_blocks(group * 100, 132), 100);
    assert_eq!(elementwise_blocks(u64::MAX, 132), 132 * 16);
    assert_eq!(elementwise_blocks(group * 100, 0), 1);
    assert_eq!(elementwise_blocks(u64::MAX, u32::MAX), (1 << 31) - 1);
    assert_eq!(reduction_blocks(0), 1);
    assert_eq!(reduction_blocks(group), 1);
    assert_eq!(reduction_blocks(group + 1), 2);
    assert_eq!(reduction_blocks(group * 5000), REDUCE_MAX_BLOCKS);
    assert_eq!(reduction_blocks(u64::MAX), REDUCE_MAX_BLOCKS);
}

/// Whether the PTX defines the entry point `name`.
fn has_entry(ptx: &str, name: &str) -> bool {
    ptx_entry(ptx, name).is_some()
}

#[test]
fn golden_kernels_compile_to_ptx() {
    if !nvrtc_or_skip("golden_kernels_compile_to_ptx") {
        return;
    }
    let start = Instant::now();
    for (name, text) in goldens() {
        let ptx = compile(&text, name);
        if name.starts_with("reduce_") {
            assert!(has_entry(&ptx, REDUCE_PARTIALS_ENTRY) && has_entry(&ptx, REDUCE_FINISH_ENTRY), "{name}");
        } else {
            assert!(has_entry(&ptx, ELEMENTWISE_ENTRY), "{name}");
        }
        // The per-lane arrays live in registers: no entry point uses local memory. Only CUDA's
        // slow paths of trigonometric range reduction do, inlined for `sinf`, `cosf` and `tanf`
        // (in all_ops.cu) and a separate function for the Gaussian's `cos`.
        if name == "all_ops.cu" {
            continue;
        }
        for entry_name in [ELEMENTWISE_ENTRY, REDUCE_PARTIALS_ENTRY, REDUCE_FINISH_ENTRY] {
            let body = ptx_entry(&ptx, entry_name).unwrap_or_default();
            assert!(!body.contains(".local"), "{entry_name} of {name} uses local memory:\n{body}");
        }
    }
    println!("golden kernels compiled in {:?}", start.elapsed());
}

#[test]
fn ddim_compiles_without_fused_multiply_adds() {
    if !nvrtc_or_skip("ddim_compiles_without_fused_multiply_adds") {
        return;
    }
    let ptx = compile(&source(&ddim_kernel()), "the DDIM kernel");
    // The f32 arithmetic is explicitly rounded, which ptxas may not contract either.
    assert!(ptx.contains("mul.rn.f32") && ptx.contains("add.rn.f32"), "{ptx}");
    assert!(!ptx.contains("fma.rn.f32"), "{ptx}");
    // The 32-bit indexing path divides in 32 bits; the 64-bit path in 64.
    assert!(ptx.contains("div.u32") && ptx.contains("div.u64"), "{ptx}");
    // Loads and stores of full groups are 16-byte vectors.
    assert!(ptx.contains("ld.global.v4.f32") && ptx.contains("st.global.v4.f32"), "{ptx}");
}

#[test]
fn random_kernels_compile_to_ptx() {
    if !nvrtc_or_skip("random_kernels_compile_to_ptx") {
        return;
    }
    let start = Instant::now();
    let mut random = Random(2026);
    let kernels: Vec<ElementwiseKernel> = (0..RANDOM_KERNELS).map(|_| random.kernel(false)).collect();
    // Every fourth kernel also compiles as the body of a reduction, if it has one output.
    let mut sources = Vec::new();
    for (k, kernel) in kernels.iter().enumerate() {
        sources.push((source(kernel), vec![ELEMENTWISE_ENTRY], kernel));
        if k % 4 == 0 && kernel.outputs.len() == 1 {
            let op = REDUCTIONS[k / 4 % REDUCTIONS.len()].0;
            sources.push((reduction(op, kernel), vec![REDUCE_PARTIALS_ENTRY, REDUCE_FINISH_ENTRY], kernel));
        }
    }
    // NVRTC is thread-safe, and compiling on every core keeps the test short.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    std::thread::scope(|scope| {
        for part in sources.chunks(sources.len().div_ceil(threads)) {
            scope.spawn(move || {
                for (text, entries, kernel) in part {
                    let ptx = compile(text, &format!("the module of the random kernel\n{kernel}"));
                    for name in entries {
                        assert!(has_entry(&ptx, name), "no {name} in the PTX of\n{kernel}");
                    }
                }
            });
        }
    });
    println!(
        "{} modules of {RANDOM_KERNELS} random kernels compiled in {:?} on {threads} threads",
        sources.len(),
        start.elapsed()
    );
}

#[test]
fn broken_sources_are_compile_errors_with_a_log() {
    if !nvrtc_or_skip("broken_sources_are_compile_errors_with_a_log") {
        return;
    }
    match nvrtc::compile_ptx("this is not cuda", ARCH) {
        Err(NvrtcError::Compile { log }) => assert!(!log.trim().is_empty()),
        other => panic!("expected a compile error, got {other:?}"),
    }
    match nvrtc::compile_ptx("extern \"C\" __global__ void k() {}\0", ARCH) {
        Err(NvrtcError::Compile { log }) => assert!(log.contains("NUL"), "{log}"),
        other => panic!("expected a compile error, got {other:?}"),
    }
    // An architecture NVRTC does not know is its error, reported with its log.
    match nvrtc::compile_ptx("extern \"C\" __global__ void k() {}", "sm_1") {
        Err(NvrtcError::Compile { log }) => assert!(!log.trim().is_empty()),
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn malformed_architectures_are_errors_with_or_without_nvrtc() {
    for arch in ["", "sm 90", "--fmad=true", "sm_90/../x"] {
        assert!(matches!(nvrtc::compile_ptx("", arch), Err(NvrtcError::Arch { .. })), "{arch:?}");
        let cache = PtxCache::in_memory();
        assert!(matches!(cache.get_or_compile("", arch), Err(NvrtcError::Arch { .. })), "{arch:?}");
    }
}

#[test]
fn a_missing_library_is_an_error_not_a_panic() {
    if nvrtc::available() {
        println!("skipping a_missing_library_is_an_error_not_a_panic: libnvrtc is present");
        return;
    }
    let text = source(&ddim_kernel());
    assert!(matches!(nvrtc::compile_ptx(&text, ARCH), Err(NvrtcError::Unavailable)));
    let cache = PtxCache::in_memory();
    assert!(matches!(cache.get_or_compile(&text, ARCH), Err(NvrtcError::Unavailable)));
    let message = NvrtcError::Unavailable.to_string();
    assert!(message.contains("nvidia-cuda-nvrtc") && message.contains("LD_LIBRARY_PATH"), "{message}");
}

#[test]
fn the_cache_compiles_each_source_once() {
    if !nvrtc_or_skip("the_cache_compiles_each_source_once") {
        return;
    }
    let cache = PtxCache::in_memory();
    let text = source(&ddim_kernel());
    let first = cache.get_or_compile(&text, ARCH).expect("the DDIM kernel compiles");
    let second = cache.get_or_compile(&text, ARCH).expect("the DDIM kernel compiles");
    assert_eq!(cache.compilations(), 1);
    assert_eq!(first, second);
    assert_eq!(*first, *compile(&text, "the DDIM kernel"));
    let other = source(&noise_kernel());
    cache.get_or_compile(&other, ARCH).expect("the noise kernel compiles");
    assert_eq!(cache.compilations(), 2);
}

#[test]
fn the_disk_cache_survives_the_process_and_recompiles_corrupt_entries() {
    if !nvrtc_or_skip("the_disk_cache_survives_the_process_and_recompiles_corrupt_entries") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sched-ptx-cache-test-{}", std::process::id()));
    let text = source(&all_ops_kernel());

    let cache = PtxCache::with_directory(dir.clone());
    let ptx = cache.get_or_compile(&text, ARCH).expect("the kernel compiles");
    assert_eq!(cache.compilations(), 1);
    let files: Vec<PathBuf> =
        fs::read_dir(&dir).expect("the cache folder exists").map(|e| e.expect("a folder entry").path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().and_then(|n| n.to_str()).expect("a UTF-8 file name").to_string();
    assert!(name.ends_with(&format!("-{ARCH}.ptx")) && name.len() == 16 + 1 + ARCH.len() + 4, "{name}");

    let reopened = PtxCache::with_directory(dir.clone());
    assert_eq!(reopened.get_or_compile(&text, ARCH).expect("the entry is read"), ptx);
    assert_eq!(reopened.compilations(), 0);

    for corruption in
        ["garbage".to_string(), fs::read_to_string(&files[0]).expect("the entry is readable")[..200].to_string()]
    {
        fs::write(&files[0], corruption).expect("the entry can be overwritten");
        let recovering = PtxCache::with_directory(dir.clone());
        assert_eq!(recovering.get_or_compile(&text, ARCH).expect("the kernel compiles"), ptx);
        assert_eq!(recovering.compilations(), 1);
        let healed = PtxCache::with_directory(dir.clone());
        assert_eq!(healed.get_or_compile(&text, ARCH).expect("the entry is read"), ptx);
        assert_eq!(healed.compilations(), 0);
    }
    fs::remove_dir_all(&dir).expect("the cache folder can be removed");
}

#[test]
fn the_cache_is_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<PtxCache>();
}
