//! The CUDA C of the token operations (kernels/src/cuda_tokens.rs): golden texts, the documented
//! ABI of every entry point, compilation to PTX by NVRTC when libnvrtc is available, and
//! execution on the host CPU (tests/common/host_cuda.rs) against the reference definitions: of
//! one row of a sampling launch, `SampleKernel::sample_row`, itself checked here to compose the
//! primitives of kernels/src/tokens.rs; and of the other entry points, those primitives composed
//! as runtime/src/sequence.rs composes them.
//!
//! The golden files are `tests/golden/tokens_*.cu`; run with `SCHED_BLESS=1` to rewrite them after
//! an intended change of the emitted text.

use crate::common;

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use common::emitted::{check_golden_files, compile, nvrtc_or_skip, signature};
use common::host_cuda::{Arg, Buffer, Case, CaseId, Module, ModuleId, Outputs, Program, compare, host_cxx_or_skip};
use common::random::Random;
use sched_kernels::cuda::BLOCK_THREADS;
use sched_kernels::cuda_tokens::{
    Choose, Filters, GUIDE_ENTRY, Logits, Report, SAMPLE_ENTRY, SELECT_THRESHOLD_ENTRY, SELECT_TOP_K_ENTRY,
    SELECT_TRANSFER_ENTRY, SampleKernel, SampleParams, VERIFY_GREEDY_ENTRY, VERIFY_SAMPLE_ENTRY, guide_source,
    sample_scratch_bytes, sample_source, select_source, verify_scratch_bytes, verify_source,
};
use sched_kernels::philox::uniform_f64;
use sched_kernels::tokens::{
    Nucleus, Sampler, VerifyEnd, argmax, guided_logit, gumbel_argmax, process_logits, softmax, threshold_positions,
    top_k_positions, verify_row,
};

/// Every filter, with each nucleus rule.
const ALL_KEEP: Filters = Filters { top_k: true, top_p: Some(Nucleus::KeepCrossing), min_p: true };
const ALL_DROP: Filters = Filters { top_k: true, top_p: Some(Nucleus::DropCrossing), min_p: true };

/// The sampling modules of the golden files: the shapes the runtime's token operations use.
fn golden_samplers() -> Vec<(&'static str, SampleKernel)> {
    let kernel = |logits, choose, report| SampleKernel { logits, choose, report };
    vec![
        // `extend` and `verify` with `greedy`.
        ("tokens_greedy.cu", kernel(Logits::Raw, Choose::Greedy, Report::Token)),
        // `candidates` at temperature 0.
        ("tokens_candidates_greedy.cu", kernel(Logits::Raw, Choose::Greedy, Report::RawProbability)),
        // `candidates` at a positive temperature.
        ("tokens_candidates.cu", kernel(Logits::Divided, Choose::Gumbel, Report::RawProbability)),
        // `extend` with `sample(...)`, every filter.
        ("tokens_sample.cu", kernel(Logits::Processed(ALL_KEEP), Choose::Gumbel, Report::Token)),
        // Temperature only, with the token's probability.
        ("tokens_plain.cu", kernel(Logits::Processed(Filters::NONE), Choose::Gumbel, Report::Probability)),
        // `propose` and `verify` with `sample(...)`, BD3-LM's nucleus.
        ("tokens_propose.cu", kernel(Logits::Processed(ALL_DROP), Choose::Gumbel, Report::Distribution)),
        // `propose` with `greedy`.
        ("tokens_propose_greedy.cu", kernel(Logits::Raw, Choose::Greedy, Report::Distribution)),
    ]
}

/// The golden files and their emitted texts.
fn goldens() -> Vec<(&'static str, String)> {
    let mut files: Vec<(&str, String)> =
        golden_samplers().into_iter().map(|(name, kernel)| (name, sample_source(&kernel))).collect();
    files.push(("tokens_select.cu", select_source()));
    files.push(("tokens_verify.cu", verify_source()));
    files
}

/// The entry points of a golden module.
fn entries(name: &str) -> &'static [&'static str] {
    match name {
        "tokens_select.cu" => &[SELECT_TOP_K_ENTRY, SELECT_TRANSFER_ENTRY, SELECT_THRESHOLD_ENTRY],
        "tokens_verify.cu" => &[VERIFY_GREEDY_ENTRY, VERIFY_SAMPLE_ENTRY],
        _ => &[SAMPLE_ENTRY],
    }
}

/// Every description of a sampling module.
fn every_sample_kernel() -> Vec<SampleKernel> {
    let mut logits = vec![Logits::Raw, Logits::Divided];
    for top_k in [false, true] {
        for top_p in [None, Some(Nucleus::KeepCrossing), Some(Nucleus::DropCrossing)] {
            for min_p in [false, true] {
                logits.push(Logits::Processed(Filters { top_k, top_p, min_p }));
            }
        }
    }
    let mut kernels = Vec::new();
    for &logits in &logits {
        for choose in [Choose::Greedy, Choose::Gumbel] {
            for report in [Report::Token, Report::RawProbability, Report::Probability, Report::Distribution] {
                kernels.push(SampleKernel { logits, choose, report });
            }
        }
    }
    kernels
}

#[test]
fn emitted_sources_match_the_golden_files() {
    check_golden_files(goldens(), "cuda_tokens");
}

/// The text depends on the description only, and distinct descriptions give distinct texts, so
/// that a cache keyed by the source never confuses two modules.
#[test]
fn each_description_has_its_own_deterministic_text() {
    let kernels = every_sample_kernel();
    assert_eq!(kernels.len(), 112);
    let texts: Vec<String> = kernels.iter().map(sample_source).collect();
    for (kernel, text) in kernels.iter().zip(&texts) {
        assert_eq!(&sample_source(kernel), text, "{kernel}");
    }
    let mut sorted = texts.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), texts.len(), "two descriptions give the same text");
    assert_eq!(select_source(), select_source());
    assert_eq!(verify_source(), verify_source());
}

/// The entry points that the ```c blocks of the module documentation of cuda_tokens.rs declare,
/// each with its parameters (comments removed, whitespace normalized).
fn documented_entries() -> Vec<(String, Vec<String>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src").join("cuda_tokens.rs");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut code = String::new();
    let mut inside = false;
    for line in text.lines().filter_map(|line| line.strip_prefix("//!")) {
        match line.trim() {
            "```c" => inside = true,
            "```" => inside = false,
            _ if inside => {
                code += line.split("//").next().unwrap_or_default();
                code.push('\n');
            }
            _ => {}
        }
    }
    let head = "extern \"C\" __global__ void ";
    code.split(head)
        .skip(1)
        .map(|declaration| {
            let (name, rest) = declaration.split_once('(').expect("a documented entry point has parameters");
            let parameters = &rest[..rest.find(')').expect("a documented parameter list is closed")];
            let parameters =
                parameters.split(',').map(|p| p.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
            (name.trim().to_string(), parameters)
        })
        .collect()
}

#[test]
fn every_entry_point_has_its_documented_parameters() {
    let documented = documented_entries();
    let names: Vec<&str> = documented.iter().map(|(name, _)| name.as_str()).collect();
    let all = [
        SAMPLE_ENTRY,
        SELECT_TOP_K_ENTRY,
        SELECT_TRANSFER_ENTRY,
        SELECT_THRESHOLD_ENTRY,
        VERIFY_GREEDY_ENTRY,
        VERIFY_SAMPLE_ENTRY,
    ];
    assert_eq!(names, all, "the documented entry points");
    let parameters = |entry: &str| documented.iter().find(|(name, _)| name == entry).map(|(_, p)| p.clone());
    for kernel in every_sample_kernel() {
        assert_eq!(Some(signature(&sample_source(&kernel), SAMPLE_ENTRY)), parameters(SAMPLE_ENTRY), "{kernel}");
    }
    let select = select_source();
    for entry in [SELECT_TOP_K_ENTRY, SELECT_TRANSFER_ENTRY, SELECT_THRESHOLD_ENTRY] {
        assert_eq!(Some(signature(&select, entry)), parameters(entry), "{entry}");
    }
    let verify = verify_source();
    for entry in [VERIFY_GREEDY_ENTRY, VERIFY_SAMPLE_ENTRY] {
        assert_eq!(Some(signature(&verify, entry)), parameters(entry), "{entry}");
    }
    // A spot check of the documentation's parsing: the sampling entry's first and last parameters.
    let sample = parameters(SAMPLE_ENTRY).unwrap_or_default();
    assert_eq!(sample.first().map(String::as_str), Some("const float* logits"));
    assert_eq!(sample.last().map(String::as_str), Some("double* probability"));
    assert_eq!(sample.len(), 15);
}

#[test]
fn entry_points_are_extern_c_globals_of_block_threads() {
    let mut modules: Vec<(String, &[&str])> = vec![
        (select_source(), &[SELECT_TOP_K_ENTRY, SELECT_TRANSFER_ENTRY, SELECT_THRESHOLD_ENTRY]),
        (verify_source(), &[VERIFY_GREEDY_ENTRY, VERIFY_SAMPLE_ENTRY]),
    ];
    modules.extend(every_sample_kernel().iter().map(|kernel| (sample_source(kernel), &[SAMPLE_ENTRY][..])));
    for (text, names) in modules {
        assert_eq!(text.matches("__global__").count(), names.len(), "{text}");
        for entry in names {
            let head = format!("extern \"C\" __global__ void __launch_bounds__({BLOCK_THREADS}) {entry}(");
            assert_eq!(text.matches(&head).count(), 1, "{entry} in:\n{text}");
        }
    }
}

/// Constants come from their bits: no decimal floating-point literal other than the exactly
/// representable 0, 0.5 and 1 (and the float 0).
#[test]
fn constants_are_exact() {
    let mut texts = vec![select_source(), verify_source()];
    texts.extend(every_sample_kernel().iter().map(sample_source));
    for text in texts {
        let code: String = text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect();
        let mut rest = code.as_str();
        while let Some(at) = rest.find(|c: char| c.is_ascii_digit()) {
            let preceded = rest[..at].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let literal: String =
                rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_').collect();
            if !preceded && literal.contains('.') {
                assert!(["0.0", "0.5", "1.0", "0.0f"].contains(&literal.as_str()), "the literal {literal} in:\n{text}");
            }
            rest = &rest[at + literal.len().max(1)..];
        }
    }
}

/// The PTX functions and entry points, each as its name line and its body up to the closing
/// brace at the start of a line.
fn ptx_functions(ptx: &str) -> Vec<(&str, &str)> {
    let mut functions = Vec::new();
    let mut rest = ptx;
    while let Some(start) = rest.find(".func").into_iter().chain(rest.find(".entry")).min() {
        let text = &rest[start..];
        let end = text.find("\n}\n").map_or(text.len(), |end| end + 3);
        let name = text.lines().next().unwrap_or_default();
        functions.push((name, &text[..end]));
        rest = &text[end..];
    }
    functions
}

/// Checks the PTX of a module: it defines `names`; no function uses local memory; and fused
/// multiply-adds appear only in the bodies of CUDA's `exp` and `log` (`sched_exp`, `sched_log`),
/// which use them by design: none of the module's own arithmetic is contracted.
fn check_ptx(ptx: &str, names: &[&str], what: &str) {
    let functions = ptx_functions(ptx);
    for name in names {
        let entry = format!(".entry {name}(");
        assert!(functions.iter().any(|(line, _)| line.contains(&entry)), "{what}: no {entry}\n{ptx}");
    }
    for (line, body) in functions {
        assert!(!body.contains(".local"), "{what}: `{line}` uses local memory");
        if !(line.contains("sched_exp") || line.contains("sched_log")) {
            assert!(!body.contains("fma."), "{what}: `{line}` has a fused multiply-add:\n{body}");
        }
    }
}

#[test]
fn golden_modules_compile_to_ptx() {
    if !nvrtc_or_skip("golden_modules_compile_to_ptx") {
        return;
    }
    for (name, text) in goldens() {
        let start = Instant::now();
        let ptx = compile(&text, name);
        println!("{name} compiled in {:?} ({} bytes of PTX)", start.elapsed(), ptx.len());
        check_ptx(&ptx, entries(name), name);
        // Division and comparison are the only float arithmetic: no float multiply-add exists.
        assert!(!ptx.contains("fma.rn.f32"), "{name}");
    }
}

/// Sampling modules that together contain every way of processing the logits, and every choice
/// with every report: one module per [`Logits`] variant, the choices and reports taken in turn.
fn covering_sample_kernels() -> Vec<SampleKernel> {
    let all = every_sample_kernel();
    let logits: Vec<Logits> = all.iter().map(|kernel| kernel.logits).step_by(8).collect();
    let outputs: Vec<(Choose, Report)> = all[..8].iter().map(|kernel| (kernel.choose, kernel.report)).collect();
    logits
        .into_iter()
        .enumerate()
        .map(|(k, logits)| {
            let (choose, report) = outputs[(k * 3) % outputs.len()];
            SampleKernel { logits, choose, report }
        })
        .collect()
}

#[test]
fn sampling_modules_of_every_shape_compile_to_ptx() {
    if !nvrtc_or_skip("sampling_modules_of_every_shape_compile_to_ptx") {
        return;
    }
    let kernels = covering_sample_kernels();
    // Every way of processing the logits appears, and every choice with every report.
    for every in every_sample_kernel() {
        assert!(kernels.iter().any(|kernel| kernel.logits == every.logits), "{every}");
        assert!(kernels.iter().any(|kernel| (kernel.choose, kernel.report) == (every.choose, every.report)), "{every}");
    }
    let start = Instant::now();
    // NVRTC is thread-safe, and compiling on every core keeps the test short.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    std::thread::scope(|scope| {
        for part in kernels.chunks(kernels.len().div_ceil(threads)) {
            scope.spawn(move || {
                for kernel in part {
                    let what = format!("the sampling module ({kernel})");
                    let ptx = compile(&sample_source(kernel), &what);
                    check_ptx(&ptx, &[SAMPLE_ENTRY], &what);
                }
            });
        }
    });
    println!("{} sampling modules compiled in {:?} on {threads} threads", kernels.len(), start.elapsed());
}

/// Rows of logits that exercise the definitions' special cases, `vocab` entries each.
fn logit_rows(random: &mut Random, vocab: usize) -> Vec<Vec<f32>> {
    let specials = [0.0, -0.0, 1.0, -1.0, 1e-40, -1e-45, 3e38, -3e38, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
    let mut rows = Vec::new();
    // Smooth random logits, and coarse ones with many ties.
    rows.push((0..vocab).map(|_| (random.unit() * 16.0 - 8.0) as f32).collect());
    rows.push((0..vocab).map(|_| random.below(4) as f32).collect());
    // A peaked row, where the nucleus holds few tokens, and a flat one.
    rows.push((0..vocab).map(|j| if j % 7 == 3 { 9.0 } else { (random.unit() * 2.0) as f32 }).collect());
    rows.push(vec![0.5; vocab]);
    // Every logit -inf, every logit NaN, and a mix of both.
    rows.push(vec![f32::NEG_INFINITY; vocab]);
    rows.push(vec![f32::NAN; vocab]);
    rows.push((0..vocab).map(|j| if j % 2 == 0 { f32::NAN } else { f32::NEG_INFINITY }).collect());
    // One +inf, and several among NaN and finite values.
    let mut one_infinite: Vec<f32> = (0..vocab).map(|_| random.unit() as f32).collect();
    one_infinite[vocab / 2] = f32::INFINITY;
    rows.push(one_infinite);
    rows.push((0..vocab).map(|j| [f32::INFINITY, f32::NAN, 2.0][j % 3]).collect());
    // A single finite logit among -inf, late in the row.
    let mut single = vec![f32::NEG_INFINITY; vocab];
    single[vocab - 1] = -3.0;
    rows.push(single);
    // Special values everywhere, signed zeros included.
    rows.push((0..vocab).map(|_| random.pick(&specials)).collect());
    rows.push(
        (0..vocab)
            .map(|j| {
                if j % 3 == 0 {
                    -0.0
                } else if j % 3 == 1 {
                    0.0
                } else {
                    -1.0
                }
            })
            .collect(),
    );
    rows
}

/// The parameter sets of the host cases: plain, each filter at work, boundaries and disabled
/// values.
fn param_sets(vocab: usize) -> Vec<SampleParams> {
    let vocab = vocab as u64;
    let params = |temperature, top_k, top_p, min_p| SampleParams { temperature, top_k, top_p, min_p };
    vec![
        params(1.0, 0, 1.0, 0.0),
        params(0.7, 3, 0.9, 0.05),
        params(2.5, 1, 0.5, 0.5),
        params(1.0, vocab.saturating_sub(1), 0.0, 1.0),
        params(0.3, vocab, f64::NAN, f64::NAN),
        params(1.3, vocab + 5, 0.999, -1.0),
        params(1.0, 2, 0.3, 0.0),
    ]
}

/// `SampleKernel::sample_row`, the definition that the sampling modules follow, is the
/// composition of kernels/src/tokens.rs's primitives that the row sampling ABI describes: each way
/// of processing the logits, each choice and each report, with the filters that a module lacks off
/// whatever their parameters, the noise drawn for the candidates only, and an empty row.
#[test]
fn sample_row_composes_the_token_primitives() {
    let mut random = Random(0x5a3e);
    let draw = |v: u32| uniform_f64(0x1234_5678, 3, 4, 5, v);
    let kernel = |logits, choose, report| SampleKernel { logits, choose, report };
    let params = SampleParams { temperature: 0.7, top_k: 3, top_p: 0.9, min_p: 0.05 };
    for row in logit_rows(&mut random, 40) {
        let bits = |values: &[f64]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        // The raw logits, greedily, with the probability of the token under them.
        let (token, report) =
            kernel(Logits::Raw, Choose::Greedy, Report::RawProbability).sample_row(&params, &row, draw);
        assert_eq!(token, argmax(&row));
        assert_eq!(bits(&report), bits(&[softmax(&row)[token as usize]]));
        // The candidates' scaling in f64, with Gumbel noise; the report stays the raw softmax's.
        let divided: Vec<f32> = row.iter().map(|&x| (f64::from(x) / params.temperature) as f32).collect();
        let (token, report) =
            kernel(Logits::Divided, Choose::Gumbel, Report::RawProbability).sample_row(&params, &row, draw);
        assert_eq!(token, gumbel_argmax(&divided, draw));
        assert_eq!(bits(&report), bits(&[softmax(&row)[token as usize]]));
        let (greedy, report) =
            kernel(Logits::Divided, Choose::Greedy, Report::Probability).sample_row(&params, &row, draw);
        assert_eq!(greedy, argmax(&divided));
        assert_eq!(bits(&report), bits(&[softmax(&divided)[greedy as usize]]));
        // Every filter: process_logits with the parameters, and the distribution drawn from.
        for nucleus in [Nucleus::KeepCrossing, Nucleus::DropCrossing] {
            let filters = Filters { top_k: true, top_p: Some(nucleus), min_p: true };
            let sampler = Sampler { temperature: 0.7, top_k: 3, top_p: 0.9, min_p: 0.05, nucleus };
            let mut processed = row.clone();
            process_logits(&mut processed, &sampler);
            let (token, report) = kernel(Logits::Processed(filters), Choose::Gumbel, Report::Distribution)
                .sample_row(&params, &row, draw);
            assert_eq!(token, gumbel_argmax(&processed, draw));
            assert_eq!(bits(&report), bits(&softmax(&processed)));
            // Greedily, the distribution is the point mass on the token.
            let (token, report) = kernel(Logits::Processed(filters), Choose::Greedy, Report::Distribution)
                .sample_row(&params, &row, draw);
            assert_eq!(token, argmax(&processed));
            let point: Vec<f64> = (0..row.len()).map(|j| if j == token as usize { 1.0 } else { 0.0 }).collect();
            assert_eq!(bits(&report), bits(&point));
        }
        // A module without filters applies the temperature only, whatever the filters' parameters.
        let mut tempered = row.clone();
        process_logits(&mut tempered, &Sampler { temperature: 0.7, ..Sampler::plain() });
        let plain = kernel(Logits::Processed(Filters::NONE), Choose::Gumbel, Report::Probability);
        let (token, report) = plain.sample_row(&params, &row, draw);
        assert_eq!(token, gumbel_argmax(&tempered, draw));
        assert_eq!(bits(&report), bits(&[softmax(&tempered)[token as usize]]));
        let (only, _) = kernel(Logits::Processed(Filters::NONE), Choose::Gumbel, Report::Token).sample_row(
            &SampleParams { top_k: 0, top_p: 1.0, min_p: 0.0, ..params },
            &row,
            draw,
        );
        assert_eq!(only, token);
        // The noise is drawn for the candidates only, once each.
        let drawn = std::cell::RefCell::new(Vec::new());
        kernel(Logits::Raw, Choose::Gumbel, Report::Token).sample_row(&params, &row, |v| {
            drawn.borrow_mut().push(v);
            draw(v)
        });
        let candidates: Vec<u32> = (0..row.len() as u32)
            .filter(|&j| !row[j as usize].is_nan() && row[j as usize] != f32::NEG_INFINITY)
            .collect();
        assert_eq!(drawn.into_inner(), candidates);
    }
    // Every module reports as many values as its ABI writes, and an empty row gives token 0 and
    // probability 0.
    let row = logit_rows(&mut random, 7).swap_remove(0);
    for kernel in every_sample_kernel() {
        let (token, report) = kernel.sample_row(&params, &row, draw);
        let (empty_token, empty) = kernel.sample_row(&params, &[], draw);
        assert!(token < 7, "{kernel}");
        assert_eq!(empty_token, 0, "{kernel}");
        let (length, empty_report) = match kernel.report {
            Report::Token => (0, vec![]),
            Report::RawProbability | Report::Probability => (1, vec![0.0]),
            Report::Distribution => (7, vec![]),
        };
        assert_eq!((report.len(), empty), (length, empty_report), "{kernel}");
    }
}

/// One sampling launch on the host and what the CPU gives for it.
struct SampleCase {
    kernel: SampleKernel,
    params: SampleParams,
    vocab: usize,
    rows: Vec<Vec<f32>>,
    samples: Vec<u32>,
    positions: Vec<u32>,
    seed: u64,
    site: u32,
    step: u32,
    grid: u32,
    id: Option<CaseId>,
}

/// The bits written over every output before a launch: a NaN no kernel writes.
const SENTINEL_F64: f64 = f64::from_bits(0x7ff4_a5a5_5a5a_a5a5);

impl SampleCase {
    /// Adds the case to `program`, per the row sampling ABI.
    fn place(&mut self, program: &mut Program, module: ModuleId) {
        let rows = self.rows.len();
        let mut case = Case::new(module);
        let logits = case.buffer(Buffer::F32(self.rows.concat()));
        let samples = case.buffer(Buffer::U32(self.samples.clone()));
        let positions = case.buffer(Buffer::U32(self.positions.clone()));
        let seed = case.buffer(Buffer::U32(vec![self.seed as u32, (self.seed >> 32) as u32]));
        let vocab = u32::try_from(self.vocab).expect("a small vocabulary");
        let slot = sample_scratch_bytes(&self.kernel, vocab) as usize;
        let scratch = case.buffer(Buffer::F64(vec![SENTINEL_F64; (self.grid as usize * slot).div_ceil(8)]));
        let token = case.buffer(Buffer::U32(vec![u32::MAX; rows]));
        let per_row = if self.kernel.report == Report::Distribution { self.vocab } else { 1 };
        let probability = case.buffer(Buffer::F64(vec![SENTINEL_F64; rows * per_row]));
        let args = vec![
            logits,
            samples,
            positions,
            seed,
            Arg::U32(self.site),
            Arg::U32(self.step),
            Arg::F64(self.params.temperature),
            Arg::U64(self.params.top_k),
            Arg::F64(self.params.top_p),
            Arg::F64(self.params.min_p),
            Arg::U32(rows as u32),
            Arg::U32(vocab),
            scratch,
            token,
            probability,
        ];
        case.launch(SAMPLE_ENTRY, self.grid, BLOCK_THREADS, args);
        self.id = Some(program.case(case));
    }

    /// Checks the host's tokens and reports against [`SampleKernel::sample_row`]: tokens equal,
    /// reports with the same bits (the host runs glibc's `exp` and `log`, as the CPU definitions
    /// do).
    fn check(&self, outputs: &Outputs) {
        let buffers = outputs.case(self.id.expect("the case is placed"));
        let (tokens, probabilities) = (buffers[buffers.len() - 2].as_u32(), buffers[buffers.len() - 1].as_f64());
        for (r, row) in self.rows.iter().enumerate() {
            let (sample, position, vocab) = (self.samples[r], self.positions[r], self.vocab as u32);
            let draw = |v: u32| {
                uniform_f64(self.seed, self.site, self.step, sample, position.wrapping_mul(vocab).wrapping_add(v))
            };
            let (token, report) = self.kernel.sample_row(&self.params, row, draw);
            let what = format!("{}, {:?}, vocab {}, row {r} {row:?}", self.kernel, self.params, self.vocab);
            assert_eq!(tokens[r], token, "the token of {what}");
            let got = match self.kernel.report {
                Report::Token => &[][..],
                Report::Distribution => &probabilities[r * self.vocab..(r + 1) * self.vocab],
                Report::RawProbability | Report::Probability => &probabilities[r..=r],
            };
            let same = got.len() == report.len() && got.iter().zip(&report).all(|(g, e)| g.to_bits() == e.to_bits());
            assert!(same, "the report of {what}: {got:?}, expected {report:?}");
        }
    }
}

/// The sampling modules that run on the host: the golden ones, and each filter alone.
fn host_samplers() -> Vec<SampleKernel> {
    let mut kernels: Vec<SampleKernel> = golden_samplers().into_iter().map(|(_, kernel)| kernel).collect();
    let only = [
        Filters { top_k: true, ..Filters::NONE },
        Filters { top_p: Some(Nucleus::KeepCrossing), ..Filters::NONE },
        Filters { top_p: Some(Nucleus::DropCrossing), ..Filters::NONE },
        Filters { min_p: true, ..Filters::NONE },
    ];
    for filters in only {
        kernels.push(SampleKernel {
            logits: Logits::Processed(filters),
            choose: Choose::Gumbel,
            report: Report::Probability,
        });
    }
    kernels.push(SampleKernel {
        logits: Logits::Processed(ALL_KEEP),
        choose: Choose::Greedy,
        report: Report::Distribution,
    });
    kernels.push(SampleKernel { logits: Logits::Divided, choose: Choose::Greedy, report: Report::Probability });
    kernels
}

/// The sampling modules, run on the host CPU, choose the tokens and report the probabilities of
/// `SampleKernel::sample_row` on rows of every special case, for every module shape the runtime
/// uses and each filter alone, with filters both at work and disabled by their parameters.
#[test]
fn sampling_modules_compute_the_reference_tokens_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("sampling_modules_compute_the_reference_tokens_on_the_host") else {
        return;
    };
    let mut random = Random(0x70c3);
    let mut program = Program::new();
    let mut cases = Vec::new();
    let seeds = [0, 0x1234_5678, 0xdead_beef_0000_0001, u64::MAX];
    // The host runs a block's 256 threads as fibers, and every barrier switches through all of
    // them: each case takes some of the special rows, in turn, to keep the run short.
    for (k, kernel) in host_samplers().into_iter().enumerate() {
        let module = program.module(Module::new(sample_source(&kernel), &[SAMPLE_ENTRY]));
        // The module with every filter runs every parameter set; the others one each.
        let every_set = kernel.logits == Logits::Processed(ALL_KEEP) && kernel.choose == Choose::Gumbel;
        for (vocab, taken) in [(1, 12), (5, 6), (300, 4)] {
            let sets = param_sets(vocab);
            let chosen = if every_set && vocab > 1 { sets } else { vec![sets[k % sets.len()]] };
            for (c, params) in chosen.into_iter().enumerate() {
                let special = logit_rows(&mut random, vocab);
                let rows: Vec<Vec<f32>> =
                    (0..taken).map(|i| special[(i + c * taken + k * 5) % special.len()].clone()).collect();
                let count = rows.len();
                let mut case = SampleCase {
                    kernel,
                    params,
                    vocab,
                    rows,
                    samples: (0..count).map(|_| random.below(1 << 20) as u32).collect(),
                    // Positions whose index position * vocab wraps around 2^32 as well.
                    positions: (0..count).map(|r| if r % 4 == 3 { (1 << 31) + r as u32 } else { r as u32 }).collect(),
                    seed: random.pick(&seeds),
                    site: random.below(100) as u32,
                    step: random.below(100) as u32,
                    // Fewer blocks than rows, so that blocks loop and reuse their scratch slot.
                    grid: 1 + random.below(3) as u32,
                    id: None,
                };
                case.place(&mut program, module);
                cases.push(case);
            }
        }
        // Rows whose probabilities are exact binary fractions (two, four or eight equal maxima), so
        // that the nucleus's cumulative sums reach top_p = 0.5 exactly: the boundary comparisons
        // decide.
        let boundary_rows: Vec<Vec<f32>> = [2, 4, 8]
            .iter()
            .map(|&equal| (0..8).map(|j| if j < equal { 1.5 } else { f32::NEG_INFINITY }).collect())
            .collect();
        let mut boundary = SampleCase {
            kernel,
            params: SampleParams { temperature: 1.0, top_k: 0, top_p: 0.5, min_p: 0.0 },
            vocab: 8,
            rows: boundary_rows,
            samples: vec![3, 4, 5],
            positions: vec![0, 1, 2],
            seed: 7,
            site: 1,
            step: 2,
            grid: 2,
            id: None,
        };
        boundary.place(&mut program, module);
        cases.push(boundary);
        // The modules with every filter also run random parameters on random vocabularies, up to
        // 600 entries (a sort of 1024 keys: several compare-exchanges per thread and pass).
        if kernel.logits == Logits::Processed(ALL_KEEP) || kernel.logits == Logits::Processed(ALL_DROP) {
            for _ in 0..4 {
                let vocab = 2 + random.below(599) as usize;
                let params = SampleParams {
                    temperature: 0.25 + random.unit() * 2.0,
                    top_k: random.below(vocab as u64 + 3),
                    top_p: if random.below(4) == 0 { 1.0 } else { random.unit() },
                    min_p: if random.below(2) == 0 { 0.0 } else { random.unit() * 0.3 },
                };
                let special = logit_rows(&mut random, vocab);
                let mut rows: Vec<Vec<f32>> = (0..4).map(|_| special[random.below(12) as usize].clone()).collect();
                rows.extend((0..4).map(|_| (0..vocab).map(|_| (random.unit() * 10.0 - 5.0) as f32).collect()));
                let mut case = SampleCase {
                    kernel,
                    params,
                    vocab,
                    rows,
                    samples: (0..8).map(|_| random.below(1 << 20) as u32).collect(),
                    positions: (0..8).map(|_| random.below(64) as u32).collect(),
                    seed: random.next(),
                    site: random.below(100) as u32,
                    step: random.below(100) as u32,
                    grid: 1 + random.below(3) as u32,
                    id: None,
                };
                case.place(&mut program, module);
                cases.push(case);
            }
        }
        // An empty vocabulary: token 0 and probability 0.
        let mut empty = SampleCase {
            kernel,
            params: param_sets(0)[1],
            vocab: 0,
            rows: vec![Vec::new(); 3],
            samples: vec![0; 3],
            positions: vec![0; 3],
            seed: 1,
            site: 0,
            step: 0,
            grid: 2,
            id: None,
        };
        empty.place(&mut program, module);
        cases.push(empty);
    }
    let outputs = program.run(&cxx, "cuda_tokens_sampling").unwrap_or_else(|e| panic!("{e}"));
    for case in &cases {
        case.check(&outputs);
    }
    let rows: usize = cases.iter().map(|case| case.rows.len()).sum();
    println!("{rows} rows in {} cases: compiled in {:?}, ran in {:?}", cases.len(), outputs.compile, outputs.execute);
}

/// Rows of confidences with ties, NaN, infinities and signed zeros, `width` entries each.
fn confidence_rows(random: &mut Random, width: usize) -> Vec<Vec<f64>> {
    let specials = [0.0, -0.0, 0.25, 1.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e-300];
    vec![
        // Probabilities as the runtime stores them: f32, widened.
        (0..width).map(|_| f64::from(random.unit() as f32)).collect(),
        (0..width).map(|_| [0.1, 0.2, 0.3][random.below(3) as usize]).collect(),
        (0..width).map(|_| random.pick(&specials)).collect(),
        vec![0.5; width],
        vec![f64::NAN; width],
        (0..width).map(|i| if i % 2 == 0 { f64::NEG_INFINITY } else { f64::NAN }).collect(),
    ]
}

/// Eligibility rows: random, all, none, and only the last position.
fn eligibility_rows(random: &mut Random, width: usize) -> Vec<Vec<bool>> {
    vec![
        (0..width).map(|_| random.below(10) < 6).collect(),
        vec![true; width],
        vec![false; width],
        (0..width).map(|i| i + 1 == width).collect(),
    ]
}

/// The runtime's commit count for `masked` eligible positions and the fraction `keep`.
fn transfer_count(masked: usize, keep: f64) -> usize {
    let steps_left = (1.0 / (1.0 - keep)).round().max(1.0);
    if keep >= 1.0 { 0 } else { (masked as f64 / steps_left).ceil() as usize }
}

/// How a selection case picks its positions.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// `top_k_positions` with the per-row counts of the case.
    TopK,
    /// The runtime's commit count for this `keep`, then `top_k_positions`.
    Transfer(f64),
    /// `threshold_positions` with this threshold.
    Threshold(f64),
}

/// One selection launch on the host.
struct SelectCase {
    rule: Rule,
    width: usize,
    confidence: Vec<Vec<f64>>,
    eligible: Vec<Vec<bool>>,
    counts: Vec<u32>,
    id: CaseId,
}

impl SelectCase {
    /// The mask of the selected positions of row `r`, by kernels/src/tokens.rs.
    fn expected(&self, r: usize) -> Vec<u32> {
        let (confidence, eligible) = (&self.confidence[r], &self.eligible[r]);
        let positions = match self.rule {
            Rule::TopK => top_k_positions(confidence, eligible, self.counts[r] as usize),
            Rule::Transfer(keep) => {
                let masked = eligible.iter().filter(|&&e| e).count();
                top_k_positions(confidence, eligible, transfer_count(masked, keep))
            }
            Rule::Threshold(threshold) => threshold_positions(confidence, eligible, threshold),
        };
        (0..self.width).map(|i| u32::from(positions.contains(&i))).collect()
    }
}

/// The selection entry points, run on the host CPU, select exactly the positions of
/// `top_k_positions` and `threshold_positions`, and of the runtime's transfer count, on rows with
/// ties at the boundary, NaN, infinities, signed zeros, and all, none or one position eligible.
#[test]
fn selection_computes_the_reference_positions_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("selection_computes_the_reference_positions_on_the_host") else {
        return;
    };
    let mut random = Random(0x5e1e);
    let mut program = Program::new();
    let entries = [SELECT_TOP_K_ENTRY, SELECT_TRANSFER_ENTRY, SELECT_THRESHOLD_ENTRY];
    let module = program.module(Module::new(select_source(), &entries));
    let rules = [
        Rule::TopK,
        Rule::Transfer(0.0),
        Rule::Transfer(0.5),
        Rule::Transfer(0.75),
        Rule::Transfer(1.0),
        Rule::Transfer(f64::NAN),
        Rule::Transfer(-0.5),
        Rule::Threshold(0.25),
        Rule::Threshold(0.0),
        Rule::Threshold(f64::NEG_INFINITY),
        Rule::Threshold(f64::INFINITY),
        Rule::Threshold(f64::NAN),
    ];
    let mut cases = Vec::new();
    for (k, &rule) in rules.iter().enumerate() {
        for width in [0, 1, 7, 300] {
            // Each row pairs a confidence row with an eligibility row, in turn; a radix select
            // costs a hundred barriers on the host, so the top-k rules take fewer rows.
            let taken = match (rule, width) {
                (_, 0) => 2,
                (Rule::Threshold(_), _) => 12,
                _ => 6,
            };
            let confidences = confidence_rows(&mut random, width);
            let eligibility = eligibility_rows(&mut random, width);
            let confidence: Vec<Vec<f64>> =
                (0..taken).map(|i| confidences[(i + k) % confidences.len()].clone()).collect();
            let eligible: Vec<Vec<bool>> =
                (0..taken).map(|i| eligibility[(i + k / 2) % eligibility.len()].clone()).collect();
            let count_choices = [0, 1, (width / 2) as u32, width as u32, width as u32 + 3, u32::MAX];
            let counts: Vec<u32> = (0..taken).map(|i| count_choices[(i * 5 + k) % count_choices.len()]).collect();
            let mut case = Case::new(module);
            let confidence_arg = case.buffer(Buffer::F64(confidence.concat()));
            let eligible_words: Vec<u32> = eligible.concat().into_iter().map(u32::from).collect();
            let eligible_arg = case.buffer(Buffer::U32(eligible_words));
            let rule_arg = match rule {
                Rule::TopK => case.buffer(Buffer::U32(counts.clone())),
                Rule::Transfer(value) | Rule::Threshold(value) => Arg::F64(value),
            };
            let selected = case.buffer(Buffer::U32(vec![7; taken * width]));
            let entry = match rule {
                Rule::TopK => entries[0],
                Rule::Transfer(_) => entries[1],
                Rule::Threshold(_) => entries[2],
            };
            let args =
                vec![confidence_arg, eligible_arg, rule_arg, Arg::U32(taken as u32), Arg::U32(width as u32), selected];
            case.launch(entry, 1 + random.below(3) as u32, BLOCK_THREADS, args);
            let id = program.case(case);
            cases.push(SelectCase { rule, width, confidence, eligible, counts, id });
        }
    }
    let outputs = program.run(&cxx, "cuda_tokens_selection").unwrap_or_else(|e| panic!("{e}"));
    for case in &cases {
        let buffers = outputs.case(case.id);
        let selected = buffers[buffers.len() - 1].as_u32();
        for r in 0..case.confidence.len() {
            let got = &selected[r * case.width..(r + 1) * case.width];
            assert_eq!(
                got,
                case.expected(r),
                "{:?}, width {}, count {}, confidence {:?}, eligible {:?}",
                case.rule,
                case.width,
                case.counts[r],
                case.confidence[r],
                case.eligible[r]
            );
        }
    }
    let rows: usize = cases.iter().map(|case| case.confidence.len()).sum();
    println!("{rows} rows in {} cases: compiled in {:?}, ran in {:?}", cases.len(), outputs.compile, outputs.execute);
}

/// One row of a verification: the draft, the model's distributions and tokens, the draft's
/// distributions, and the row's noise word.
struct VerifyRow {
    draft: Vec<u32>,
    /// `k + 1` distributions over the vocabulary.
    target: Vec<Vec<f64>>,
    /// `k` distributions over the vocabulary.
    proposal: Vec<Vec<f64>>,
    /// `k + 1` tokens.
    target_token: Vec<u32>,
    sample: u32,
}

/// A distribution over `vocab` entries of one of several kinds: a softmax of random logits with
/// some entries 0, a point mass, no mass at all, entries that are not finite and positive, or
/// unnormalized weights.
fn distribution(random: &mut Random, vocab: usize) -> Vec<f64> {
    match random.below(8) {
        0..=3 => {
            let logits: Vec<f32> = (0..vocab)
                .map(|_| if random.below(4) == 0 { f32::NEG_INFINITY } else { (random.unit() * 6.0) as f32 })
                .collect();
            softmax(&logits)
        }
        4 => {
            let hot = random.below(vocab as u64) as usize;
            (0..vocab).map(|j| if j == hot { 1.0 } else { 0.0 }).collect()
        }
        5 => vec![0.0; vocab],
        6 => (0..vocab).map(|_| random.pick(&[f64::NAN, -0.5, f64::INFINITY, 0.25, 0.0])).collect(),
        _ => (0..vocab).map(|_| random.unit() * 3.0).collect(),
    }
}

/// A token drawn from the finite positive entries of `q` by inverse transform sampling, or a
/// random token when `q` has no mass: how a draft picks its tokens.
fn draw_from(random: &mut Random, q: &[f64]) -> u32 {
    let masses: Vec<f64> = q.iter().map(|&x| if x.is_finite() && x > 0.0 { x } else { 0.0 }).collect();
    let total: f64 = masses.iter().sum();
    let mut left = random.unit() * total;
    for (j, &mass) in masses.iter().enumerate() {
        if mass > 0.0 && left < mass {
            return j as u32;
        }
        left -= mass;
    }
    random.below(q.len() as u64) as u32
}

/// One verification launch on the host: its rows and parameters.
struct VerifyCase {
    greedy: bool,
    vocab: usize,
    k: usize,
    eos: Option<u32>,
    seed: u64,
    site: u32,
    step: u32,
    rows: Vec<VerifyRow>,
    id: CaseId,
}

/// The buffers of a verification case that receive the appended tokens and their counts (the
/// draft and the model's tokens come first).
const TOKENS_BUFFER: usize = 2;
const COUNTS_BUFFER: usize = 3;

/// The verification entry points, run on the host CPU, append exactly the tokens of the
/// runtime's `verify` with kernels/src/tokens.rs's acceptance test, residual and exponential race:
/// drafts accepted, rejected, stopped at the end token, with tokens outside the vocabulary, and
/// residuals without mass.
#[test]
fn verification_computes_the_reference_tokens_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("verification_computes_the_reference_tokens_on_the_host") else {
        return;
    };
    let mut random = Random(0x5fec);
    let mut program = Program::new();
    let module = program.module(Module::new(verify_source(), &[VERIFY_GREEDY_ENTRY, VERIFY_SAMPLE_ENTRY]));
    let mut cases = Vec::new();
    for greedy in [true, false] {
        let shapes = [(1, 2, 6, false), (4, 0, 4, true), (4, 3, 40, true), (50, 2, 30, true), (300, 4, 8, false)];
        for (vocab, k, rows, with_eos) in shapes {
            let eos = with_eos.then(|| random.below(vocab as u64) as u32);
            let seed = random.next();
            let (site, step) = (random.below(50) as u32, random.below(50) as u32);
            let rows: Vec<VerifyRow> = (0..rows)
                .map(|_| {
                    let target: Vec<Vec<f64>> = (0..=k).map(|_| distribution(&mut random, vocab)).collect();
                    let proposal: Vec<Vec<f64>> = (0..k)
                        .map(
                            |i| if random.below(4) == 0 { target[i].clone() } else { distribution(&mut random, vocab) },
                        )
                        .collect();
                    let target_token: Vec<u32> = (0..=k).map(|_| random.below(vocab as u64) as u32).collect();
                    // Draft tokens: mostly drawn from the draft's distribution, as a draft does;
                    // often the model's own (so that greedy drafts get accepted); sometimes any
                    // token, or one outside the vocabulary.
                    let draft = (0..k)
                        .map(|i| match random.below(8) {
                            0 => vocab as u32 + random.below(3) as u32,
                            1 | 2 => target_token[i],
                            3 => random.below(vocab as u64) as u32,
                            _ => draw_from(&mut random, &proposal[i]),
                        })
                        .collect();
                    VerifyRow { draft, target, proposal, target_token, sample: random.below(1000) as u32 }
                })
                .collect();
            let mut case = Case::new(module);
            let count = rows.len() as u32;
            let draft = case.buffer(Buffer::U32(rows.iter().flat_map(|row| row.draft.clone()).collect()));
            let target_token = case.buffer(Buffer::U32(rows.iter().flat_map(|row| row.target_token.clone()).collect()));
            let (has_eos, eos_word) = (Arg::U32(u32::from(eos.is_some())), Arg::U32(eos.unwrap_or(0)));
            let tokens = case.buffer(Buffer::U32(vec![u32::MAX; rows.len() * (k + 1)]));
            let counts = case.buffer(Buffer::U32(vec![u32::MAX; rows.len()]));
            assert_eq!((tokens, counts), (Arg::Buffer(TOKENS_BUFFER), Arg::Buffer(COUNTS_BUFFER)));
            if greedy {
                let args =
                    vec![draft, target_token, has_eos, eos_word, Arg::U32(count), Arg::U32(k as u32), tokens, counts];
                case.launch(VERIFY_GREEDY_ENTRY, 1, BLOCK_THREADS, args);
            } else {
                let flat = |lists: Vec<&Vec<Vec<f64>>>| lists.into_iter().flatten().flatten().copied().collect();
                let target = case.buffer(Buffer::F64(flat(rows.iter().map(|row| &row.target).collect())));
                let proposal = case.buffer(Buffer::F64(flat(rows.iter().map(|row| &row.proposal).collect())));
                let samples = case.buffer(Buffer::U32(rows.iter().map(|row| row.sample).collect()));
                let seed_words = case.buffer(Buffer::U32(vec![seed as u32, (seed >> 32) as u32]));
                let grid = 1 + random.below(3) as u32;
                let slot = verify_scratch_bytes(vocab as u32) as usize;
                let scratch = case.buffer(Buffer::F64(vec![SENTINEL_F64; (grid as usize * slot).div_ceil(8)]));
                let args = vec![
                    draft,
                    target,
                    proposal,
                    target_token,
                    samples,
                    seed_words,
                    Arg::U32(site),
                    Arg::U32(step),
                    has_eos,
                    eos_word,
                    Arg::U32(count),
                    Arg::U32(k as u32),
                    Arg::U32(vocab as u32),
                    scratch,
                    tokens,
                    counts,
                ];
                case.launch(VERIFY_SAMPLE_ENTRY, grid, BLOCK_THREADS, args);
            }
            let id = program.case(case);
            cases.push(VerifyCase { greedy, vocab, k, eos, seed, site, step, rows, id });
        }
    }
    let outputs = program.run(&cxx, "cuda_tokens_verification").unwrap_or_else(|e| panic!("{e}"));
    let mut outcomes = Vec::new();
    for case in &cases {
        let buffers = outputs.case(case.id);
        let (tokens, counts) = (buffers[TOKENS_BUFFER].as_u32(), buffers[COUNTS_BUFFER].as_u32());
        for (r, row) in case.rows.iter().enumerate() {
            let draw = |index: u32| uniform_f64(case.seed, case.site, case.step, row.sample, index);
            let distributions = |i: usize| (row.target[i].clone(), Some(row.proposal[i].as_slice()));
            let (expected, outcome) = verify_row(
                &row.draft,
                case.eos,
                case.vocab,
                |i| row.target_token[i],
                (!case.greedy).then_some(distributions),
                draw,
            );
            outcomes.push(outcome);
            let width = case.k + 1;
            let count = counts[r] as usize;
            let got = &tokens[r * width..r * width + count.min(width)];
            let what = format!(
                "greedy {}, vocab {}, k {}, eos {:?}, row {r}: draft {:?}",
                case.greedy, case.vocab, case.k, case.eos, row.draft
            );
            assert_eq!(got, expected, "{what}");
            assert!(tokens[r * width + count.min(width)..(r + 1) * width].iter().all(|&t| t == u32::MAX), "{what}");
        }
    }
    // The cases exercise every outcome.
    let count = |outcome| outcomes.iter().filter(|&&o| o == outcome).count();
    let (whole, rejected, stopped) = (count(VerifyEnd::Whole), count(VerifyEnd::Rejected), count(VerifyEnd::Stopped));
    assert!(whole > 0 && rejected > 0 && stopped > 0, "{whole} whole, {rejected} rejected, {stopped} stopped");
    println!(
        "{} rows ({whole} accepted whole, {rejected} rejected, {stopped} stopped at the end token): \
         compiled in {:?}, ran in {:?}",
        outcomes.len(),
        outputs.compile,
        outputs.execute
    );
}

/// Logits for the guidance kernel: varied values, every special value, and pairs where either
/// call rules a token out.
fn guidance_operands(random: &mut Random, len: usize) -> (Vec<f32>, Vec<f32>) {
    let special = [0.0, -0.0, 1.0, -3.5, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE];
    let pick = |random: &mut Random, k: usize| {
        if k.is_multiple_of(3) { special[random.size(0, special.len() - 1)] } else { random.uniform(-20.0, 20.0) }
    };
    let un = (0..len).map(|k| pick(random, k)).collect();
    let cond = (0..len).map(|k| pick(random, k + 1)).collect();
    (un, cond)
}

#[test]
fn guidance_compiles_to_ptx_without_contraction() {
    if !nvrtc_or_skip("guidance_compiles_to_ptx_without_contraction") {
        return;
    }
    let ptx = compile(guide_source(), "guide");
    check_ptx(&ptx, &[GUIDE_ENTRY], "guide");
    assert!(!ptx.contains("fma.rn.f64"), "the guided logit's f64 arithmetic was contracted");
}

#[test]
fn guidance_computes_the_reference_on_the_host() {
    let Some(cxx) = host_cxx_or_skip("guidance_computes_the_reference_on_the_host") else {
        return;
    };
    let mut random = Random(0x6a1d);
    let mut program = Program::new();
    let module = program.module(Module::new(guide_source().to_string(), &[GUIDE_ENTRY]));
    let mut cases = Vec::new();
    for (len, scale, in_place, grid) in
        [(1, 1.0, false, 1), (257, 0.5, false, 1), (1000, 3.0, true, 2), (64, 0.0, false, 4)]
    {
        let (un, cond) = guidance_operands(&mut random, len);
        let mut case = Case::new(module);
        let un_arg = case.buffer(Buffer::F32(un.clone()));
        let cond_arg = case.buffer(Buffer::F32(cond.clone()));
        let out = if in_place { cond_arg } else { case.buffer(Buffer::F32(vec![f32::NAN; len])) };
        let args = vec![un_arg, cond_arg, Arg::F64(scale), Arg::U64(len as u64), out];
        case.launch(GUIDE_ENTRY, grid, BLOCK_THREADS, args);
        cases.push((program.case(case), out, un, cond, scale));
    }
    let outputs = program.run_or_panic(&cxx, "guide");
    for (case, out, un, cond, scale) in cases {
        let got = outputs.buffer(case, out).as_f32();
        let expected: Vec<f32> = un.iter().zip(&cond).map(|(&u, &c)| guided_logit(u, c, scale)).collect();
        // Bit for bit, but for which NaN a NaN operand gives (common::host_cuda::compare).
        compare(got, &expected).unwrap_or_else(|e| panic!("{} logits, scale {scale}: {e}", un.len()));
    }
}
