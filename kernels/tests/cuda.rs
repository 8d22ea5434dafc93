//! The CUDA C emitter and NVRTC: golden texts, the ABI of the emitted signatures, and compilation
//! to PTX when libnvrtc is available.
//!
//! The golden files live in `tests/golden/`; run with `SCHED_BLESS=1` to rewrite them after an
//! intended change of the emitted text.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use common::{BINARY, UNARY, ddim_kernel, random_kernel};
use sched_kernels::cuda::{
    BLOCK_THREADS, ELEMENTWISE_ENTRY, REDUCE_FINISH_ENTRY, REDUCE_MAX_BLOCKS, REDUCE_PARTIALS_ENTRY, VECTOR_WIDTH,
    elementwise_blocks, elementwise_source, reduction_blocks, reduction_source,
};
use sched_kernels::nvrtc::{self, NvrtcError, PtxCache};
use sched_kernels::{
    BinaryOp, Distribution, ElementwiseKernel, KernelBuilder, KernelError, Node, NodeId, ReduceOp, ReductionKernel,
};

/// The architecture the NVRTC tests compile for.
const ARCH: &str = "sm_90";

/// The number of random kernels compiled by NVRTC.
const RANDOM_KERNELS: usize = 120;

/// The reduction operations with the names of their golden files.
const REDUCTIONS: [(ReduceOp, &str); 4] = [
    (ReduceOp::Mean, "reduce_mean.cu"),
    (ReduceOp::Rms, "reduce_rms.cu"),
    (ReduceOp::Norm, "reduce_norm.cu"),
    (ReduceOp::MaxAbs, "reduce_max_abs.cu"),
];

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

/// The emitted source of a kernel that the test knows to be valid.
fn source(kernel: &ElementwiseKernel) -> String {
    elementwise_source(kernel).unwrap_or_else(|e| panic!("the kernel is valid, but the emitter says: {e}"))
}

/// The emitted source of a reduction that the test knows to be valid.
fn reduction(op: ReduceOp, body: &ElementwiseKernel) -> String {
    let kernel = ReductionKernel { body: body.clone(), op };
    reduction_source(&kernel).unwrap_or_else(|e| panic!("the reduction is valid, but the emitter says: {e}"))
}

/// A kernel that applies every unary and binary operation, draws a uniform and a Gaussian value
/// from the same noise slot, and uses a constant.
fn all_ops_kernel() -> ElementwiseKernel {
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

/// A kernel with no inputs that writes a Gaussian and a uniform draw of two slots.
fn noise_kernel() -> ElementwiseKernel {
    ElementwiseKernel {
        inputs: 0,
        params: 0,
        noise_slots: 2,
        nodes: vec![Node::Noise(Distribution::Gaussian, 0), Node::Noise(Distribution::Uniform, 1)],
        outputs: vec![NodeId(0), NodeId(1)],
    }
}

/// The body of the golden reductions: `in0 - p0 * in1`.
fn reduction_body() -> ElementwiseKernel {
    let mut b = KernelBuilder::new();
    let (x, y, p) = (b.input(0), b.input(1), b.param(0));
    let scaled = b.binary(BinaryOp::Mul, p, y);
    let difference = b.binary(BinaryOp::Sub, x, scaled);
    b.output(difference);
    b.finish()
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

/// A line-by-line comparison of two texts: the differing lines, at most 40 of them.
fn diff(expected: &str, got: &str) -> String {
    let (expected, got): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let mut report = String::new();
    let mut shown = 0;
    for i in 0..expected.len().max(got.len()) {
        let (e, g) = (expected.get(i), got.get(i));
        if e != g && shown < 40 {
            shown += 1;
            report += &format!("line {}:\n", i + 1);
            if let Some(e) = e {
                report += &format!("  - {e}\n");
            }
            if let Some(g) = g {
                report += &format!("  + {g}\n");
            }
        }
    }
    report
}

#[test]
fn emitted_sources_match_the_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden");
    let bless = std::env::var_os("SCHED_BLESS").is_some();
    let mut failures = Vec::new();
    for (name, text) in goldens() {
        let path = dir.join(name);
        if bless {
            fs::create_dir_all(&dir).expect("the golden folder can be created");
            fs::write(&path, &text).expect("the golden file can be written");
            continue;
        }
        match fs::read_to_string(&path) {
            Ok(expected) if expected == text => {}
            Ok(expected) => failures.push(format!("{} differs:\n{}", path.display(), diff(&expected, &text))),
            Err(e) => failures.push(format!("cannot read {}: {e}", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "the emitted CUDA C differs from the golden files; if the change is intended, rerun with SCHED_BLESS=1 \
         (`SCHED_BLESS=1 cargo test -p sched-kernels --test cuda`)\n\n{}",
        failures.join("\n")
    );
}

#[test]
fn emission_is_deterministic() {
    for (name, text) in goldens().into_iter().zip(goldens()) {
        assert_eq!(name.1, text.1, "{}", name.0);
    }
}

/// The parameters of `entry` in `source`: the text between `entry(` and the next `)`, split at
/// commas and trimmed.
fn signature(source: &str, entry: &str) -> Vec<String> {
    let head = format!(" {entry}(");
    let start = source.find(&head).unwrap_or_else(|| panic!("no `{entry}(` in:\n{source}")) + head.len();
    let end = source[start..].find(')').unwrap_or_else(|| panic!("`{entry}(` is not closed")) + start;
    source[start..end].split(',').map(|p| p.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
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

/// A small deterministic generator of test material (SplitMix64).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// The raw material of `common::random_kernel`.
    fn kernel(&mut self, wild: bool) -> ElementwiseKernel {
        let count = 1 + self.below(27) as usize;
        let raw: Vec<(u8, u32, u32, u32, f32)> = (0..count)
            .map(|_| {
                let kind = self.below(6) as u8;
                let (a, b, c) = (self.next() as u32, self.next() as u32, self.next() as u32);
                (kind, a, b, c, f32::from_bits(self.next() as u32))
            })
            .collect();
        let outputs: Vec<u32> = (0..self.below(4)).map(|_| self.next() as u32).collect();
        random_kernel(&raw, &outputs, wild, true)
    }
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

/// Compiles a source that must compile, with the test's name in the failure.
fn compile(source: &str, what: &str) -> String {
    match nvrtc::compile_ptx(source, ARCH) {
        Ok(ptx) => ptx,
        Err(e) => panic!("{what} does not compile: {e}\n{source}"),
    }
}

/// The PTX of the entry point `entry`, from its `.entry` line to its closing brace, if defined.
fn entry<'a>(ptx: &'a str, entry: &str) -> Option<&'a str> {
    let start = ptx.find(&format!(".visible .entry {entry}("))?;
    let length = ptx[start..].find("\n}\n")?;
    Some(&ptx[start..start + length])
}

/// Whether the PTX defines the entry point `name`.
fn has_entry(ptx: &str, name: &str) -> bool {
    entry(ptx, name).is_some()
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
            let body = entry(&ptx, entry_name).unwrap_or_default();
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
