//! The emitted CUDA C, executed on the host CPU by `common::host_cuda`, computes exactly the
//! numbers of the CPU evaluator: indexing, `float4` groups and tails, the grid-stride loop,
//! in-place updates, the Philox noise coordinates and the reduction tree.
//!
//! Each test compiles one C++ program with the host's C++ compiler (`CXX`, else `c++`, else
//! `g++`) and skips, saying why, when there is none; CI sets `SCHED_REQUIRE_HOST_CXX=1`, which
//! makes a missing compiler a failure. The programs are kept under the target directory's
//! `tmp/host_cuda/<program>/<process id>/` for inspection (see `Program::run`).

use crate::common;

use std::fs;
use std::path::PathBuf;

use common::host_cuda::{
    Arg, Buffer, Case, CaseId, Module, ModuleId, Outputs, Program, check_output, compare, host_cxx_or_skip, sentinel,
};
use common::{
    REDUCTIONS, all_ops_kernel, ddim_kernel, in_place_ddim_kernel, noise_kernel, ramp, random_kernel, reduction_body,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use sched_kernels::cpu::{InPlace, evaluate_in_place};
use sched_kernels::cuda::{
    BLOCK_THREADS, ELEMENTWISE_ENTRY, REDUCE_FINISH_ENTRY, REDUCE_MAX_BLOCKS, REDUCE_PARTIALS_ENTRY, VECTOR_WIDTH,
    elementwise_blocks, elementwise_source, reduction_blocks, reduction_source,
};
use sched_kernels::layers::{
    Activation, BIAS_ACTIVATION_ENTRY, activation_code, bias_activation, bias_activation_source,
};
use sched_kernels::{ElementwiseKernel, NoiseLaunch, NoiseSlot, ReduceOp, ReductionKernel, evaluate, reduce};

/// The multiprocessors of the emulated device: one, so that [`elementwise_blocks`] caps the grid
/// at 16 blocks and the grid-stride loop runs several times over the longest launches.
const MULTIPROCESSORS: u32 = 1;

/// The launch lengths of the golden kernels: empty, shorter than a group, one group, a group and
/// a tail, many blocks with a tail, and more than one pass of the grid-stride loop with a tail.
const LENGTHS: [usize; 8] = [0, 1, 3, 4, 5, 1023, 4096 + 7, 2 * 16 * 1024 + 7];

/// The seeds of the noise: zero, a low word only, both words, and all ones.
const SEEDS: [u64; 4] = [0, 0x1234_5678, 0xdead_beef_0000_0001, u64::MAX];

/// Checks that a golden file holds exactly `emitted`, the emitter's text for the test's kernel,
/// so that this test runs the kernels whose text `tests/cuda.rs` checks.
fn check_golden(name: &str, emitted: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden").join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        text == emitted,
        "{} is not the emitted text of its kernel: rerun `SCHED_BLESS=1 cargo test -p sched-kernels --test it cuda::` \
         after an intended change of the emitter, and keep the kernels of this test those of tests/cuda.rs",
        path.display()
    );
}

/// Values that exercise the special cases of every operation: zeros, subnormals, the edges of
/// `exp`, huge values, infinities and NaNs.
fn special_values() -> Vec<f32> {
    vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -2.5,
        1e-30,
        f32::MIN_POSITIVE,
        -1e-40,
        1e-45,
        88.7,
        -104.0,
        1e30,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        std::f32::consts::PI,
        1e7,
        -3e9,
    ]
}

/// [`ramp`] with every fifth element replaced by one of [`special_values`].
fn varied(len: usize, offset: f32) -> Vec<f32> {
    let specials = special_values();
    let mut values = ramp(len, offset);
    for (k, v) in values.iter_mut().enumerate().filter(|(k, _)| k % 5 == 2) {
        *v = specials[(k / 5 + offset as usize) % specials.len()];
    }
    values
}

/// One launch of an elementwise kernel and its arguments.
#[derive(Clone)]
struct Elementwise<'a> {
    kernel: &'a ElementwiseKernel,
    len: usize,
    /// One buffer per input, of `len` elements.
    inputs: Vec<Vec<f32>>,
    params: Vec<f32>,
    seed: u64,
    per_sample: usize,
    /// One entry per noise slot of the kernel.
    slots: Vec<NoiseSlot>,
    /// The pairs `(input, output)` whose output is written over the input's buffer.
    in_place: Vec<(usize, usize)>,
}

/// Where the results of an [`Elementwise`] launch are: the case, and the buffer of every output.
struct Placed {
    case: CaseId,
    /// The buffer of every output, as the argument that passes it.
    outputs: Vec<Arg>,
}

impl Elementwise<'_> {
    fn noise(&self) -> NoiseLaunch<'_> {
        NoiseLaunch { seed: self.seed, per_sample: self.per_sample, slots: &self.slots }
    }

    /// The arguments that follow the tensors in both ABIs: the parameters, a pointer to the seed
    /// (a new buffer of `case`), one site and step per noise slot, the elements per sample and
    /// the length.
    fn scalar_args(&self, case: &mut Case) -> Vec<Arg> {
        let mut args: Vec<Arg> = self.params.iter().map(|&p| Arg::F32(p)).collect();
        args.push(case.buffer(Buffer::U32(vec![self.seed as u32, (self.seed >> 32) as u32])));
        for slot in &self.slots {
            args.extend([Arg::U32(slot.site), Arg::U32(slot.step)]);
        }
        args.push(Arg::U32(u32::try_from(self.per_sample).expect("per_sample fits in 32 bits")));
        args.push(Arg::U64(self.len as u64));
        args
    }

    /// Adds the case of this launch to `program`, per the elementwise ABI, with the grid of
    /// [`elementwise_blocks`].
    fn place(&self, program: &mut Program, module: ModuleId) -> Placed {
        let mut case = Case::new(module);
        let inputs: Vec<Arg> = self.inputs.iter().map(|x| case.buffer(Buffer::F32(x.clone()))).collect();
        let outputs: Vec<Arg> = (0..self.kernel.outputs.len())
            .map(|k| match self.in_place.iter().find(|&&(_, output)| output == k) {
                Some(&(input, _)) => inputs[input],
                None => case.buffer(sentinel(self.len)),
            })
            .collect();
        let mut args: Vec<Arg> = inputs.iter().chain(&outputs).copied().collect();
        args.extend(self.scalar_args(&mut case));
        let grid = elementwise_blocks(self.len as u64, MULTIPROCESSORS);
        case.launch(ELEMENTWISE_ENTRY, grid, BLOCK_THREADS, args);
        Placed { case: program.case(case), outputs }
    }

    /// The CPU evaluator's values of every output, written in place where the launch says so.
    fn expected(&self) -> Vec<Vec<f32>> {
        if self.in_place.is_empty() {
            let inputs: Vec<&[f32]> = self.inputs.iter().map(Vec::as_slice).collect();
            return evaluate(self.kernel, self.len, &inputs, &self.params, &self.noise()).expect("the CPU evaluates");
        }
        let mut buffers: Vec<Vec<f32>> = self.in_place.iter().map(|&(input, _)| self.inputs[input].clone()).collect();
        let inputs: Vec<&[f32]> = (0..self.inputs.len())
            .map(|k| if self.in_place.iter().any(|&(input, _)| input == k) { &[][..] } else { &self.inputs[k] })
            .collect();
        let mut entries: Vec<InPlace<'_>> = self
            .in_place
            .iter()
            .zip(&mut buffers)
            .map(|(&(input, output), buffer)| InPlace { input, output, buffer })
            .collect();
        let others = evaluate_in_place(self.kernel, self.len, &inputs, &mut entries, &self.params, &self.noise())
            .expect("the CPU evaluates in place");
        drop(entries);
        others
            .into_iter()
            .enumerate()
            .map(|(k, values)| {
                values.unwrap_or_else(|| {
                    let slot = self.in_place.iter().position(|&(_, output)| output == k).expect("an in-place output");
                    buffers[slot].clone()
                })
            })
            .collect()
    }

    /// Checks that the host run wrote exactly the CPU evaluator's values (see [`compare`]) to
    /// the first `len` elements of every output, and nothing after them; returns how many NaNs
    /// differ in their bits.
    fn check(&self, placed: &Placed, outputs: &Outputs, what: &str) -> usize {
        let mut nan_differences = 0;
        for (k, (&buffer, expected)) in placed.outputs.iter().zip(self.expected()).enumerate() {
            let got = outputs.buffer(placed.case, buffer).as_f32();
            let what = format!(
                "{what}, output {k}, len {}, seed {:#x}, per_sample {}, in place {:?}",
                self.len, self.seed, self.per_sample, self.in_place
            );
            nan_differences += check_output(got, &expected, &what);
        }
        nan_differences
    }
}

/// The bits written over the partials and the result of a reduction before its launches: a
/// signalling NaN, which no arithmetic produces.
const SENTINEL_F64: u64 = 0x7ff4_a5a5_5a5a_a5a5;

/// Whether two f64 results are the same: the same bits, or both NaN (see [`compare`]).
fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// A reduction: the launch of its body (without in-place updates), its operation, and the
/// blocks of its first pass.
struct Reduce<'a> {
    op: ReduceOp,
    launch: Elementwise<'a>,
    /// [`reduction_blocks`] of the length, as the ABI launches, or fewer: the kernel reduces with
    /// any grid up to [`REDUCE_MAX_BLOCKS`], and a small one makes its grid-stride loop run
    /// without the many blocks of a long launch.
    blocks: u32,
}

/// Where the results of a [`Reduce`] are: two cases that run the same launches, and the buffers
/// of the partials and the result in each.
struct ReducePlaced {
    runs: [CaseId; 2],
    partials: Arg,
    result: Arg,
}

impl Reduce<'_> {
    fn kernel(&self) -> ReductionKernel {
        ReductionKernel { body: self.launch.kernel.clone(), op: self.op }
    }

    /// Adds the reduction's module and two cases that run it, each per the reduction ABI: the
    /// first pass as `blocks` blocks, then the second as one block.
    fn place(&self, program: &mut Program) -> ReducePlaced {
        let source = reduction_source(&self.kernel()).expect("the body is valid");
        let module = program.module(Module::new(source, &[REDUCE_PARTIALS_ENTRY, REDUCE_FINISH_ENTRY]));
        let mut buffers = None;
        let runs = [(); 2].map(|()| {
            let launch = &self.launch;
            let mut case = Case::new(module);
            let mut args: Vec<Arg> = launch.inputs.iter().map(|x| case.buffer(Buffer::F32(x.clone()))).collect();
            args.extend(launch.scalar_args(&mut case));
            let sentinel = f64::from_bits(SENTINEL_F64);
            let partials = case.buffer(Buffer::F64(vec![sentinel; REDUCE_MAX_BLOCKS as usize]));
            let result = case.buffer(Buffer::F64(vec![sentinel]));
            buffers = Some((partials, result));
            args.push(partials);
            case.launch(REDUCE_PARTIALS_ENTRY, self.blocks, BLOCK_THREADS, args);
            let finish = vec![partials, Arg::U32(self.blocks), Arg::U64(launch.len as u64), result];
            case.launch(REDUCE_FINISH_ENTRY, 1, BLOCK_THREADS, finish);
            program.case(case)
        });
        let (partials, result) = buffers.expect("the cases have buffers");
        ReducePlaced { runs, partials, result }
    }

    /// The partials and the result of the reduction in the order of the emitted kernels, computed
    /// in Rust from the CPU evaluator's values of the body.
    ///
    /// The module documentation fixes the launch shape, the grid-stride set of groups of each
    /// thread and what a thread accumulates, but only says "a fixed shared-memory tree" and "a
    /// fixed order" for the combination of a block's threads and of the partials; the tree here
    /// is the emitted one: for `half` from 128 down to 1, thread `t < half` combines its value
    /// with that of `t + half`, and thread `t` of the second pass first combines partials `t`,
    /// `t + 256`, ... in order.
    fn model(&self) -> (Vec<f64>, f64) {
        let launch = &self.launch;
        let inputs: Vec<&[f32]> = launch.inputs.iter().map(Vec::as_slice).collect();
        let values = evaluate(launch.kernel, launch.len, &inputs, &launch.params, &launch.noise())
            .expect("the CPU evaluates the body")
            .remove(0);
        let op = self.op;
        let accumulate = |acc: f64, v: f32| {
            let v = f64::from(v);
            match op {
                ReduceOp::Mean => acc + v,
                ReduceOp::Rms | ReduceOp::Norm => acc + v * v,
                ReduceOp::MaxAbs => {
                    let a = v.abs();
                    if a.is_nan() || a > acc { a } else { acc }
                }
            }
        };
        let combine = |a: f64, b: f64| match op {
            ReduceOp::MaxAbs => {
                if b.is_nan() || b > a {
                    b
                } else {
                    a
                }
            }
            ReduceOp::Mean | ReduceOp::Rms | ReduceOp::Norm => a + b,
        };
        let tree = |mut shared: Vec<f64>| {
            let mut half = shared.len() / 2;
            while half > 0 {
                for t in 0..half {
                    shared[t] = combine(shared[t], shared[t + half]);
                }
                half /= 2;
            }
            shared[0]
        };
        let threads = BLOCK_THREADS as usize;
        let blocks = self.blocks as usize;
        let groups = launch.len.div_ceil(VECTOR_WIDTH);
        let partials: Vec<f64> = (0..blocks)
            .map(|b| {
                let accumulators = (0..threads)
                    .map(|t| {
                        (b * threads + t..groups).step_by(blocks * threads).fold(0.0, |acc, g| {
                            let group = &values[g * VECTOR_WIDTH..((g + 1) * VECTOR_WIDTH).min(launch.len)];
                            group.iter().fold(acc, |acc, &v| accumulate(acc, v))
                        })
                    })
                    .collect();
                tree(accumulators)
            })
            .collect();
        let accumulators = (0..threads)
            .map(|t| partials.iter().skip(t).step_by(threads).fold(0.0, |acc, &p| combine(acc, p)))
            .collect();
        let total = tree(accumulators);
        let len = launch.len as f64;
        let result = match op {
            ReduceOp::Mean => total / len,
            ReduceOp::Rms => (total / len).sqrt(),
            ReduceOp::Norm => total.sqrt(),
            ReduceOp::MaxAbs => total,
        };
        (partials, result)
    }

    /// The partials and the result of one run.
    fn results<'b>(&self, placed: &ReducePlaced, outputs: &'b Outputs, run: usize) -> (&'b [f64], f64) {
        let case = placed.runs[run];
        (outputs.buffer(case, placed.partials).as_f64(), outputs.buffer(case, placed.result).as_f64()[0])
    }

    /// A description of the reduction for failure messages.
    fn describe(&self) -> String {
        format!("{} of {} elements in {} blocks of\n{}", self.op, self.launch.len, self.blocks, self.launch.kernel)
    }

    /// Checks that both runs wrote the same bits, that the first pass wrote exactly the partials
    /// of [`Reduce::model`] and nothing after them, and that the result is the model's.
    fn check_against_model(&self, placed: &ReducePlaced, outputs: &Outputs) {
        let what = self.describe();
        let (partials, result) = self.results(placed, outputs, 0);
        let (again, result_again) = self.results(placed, outputs, 1);
        let bits = |values: &[f64]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(partials), bits(again), "the partials of two runs differ: {what}");
        assert_eq!(result.to_bits(), result_again.to_bits(), "the results of two runs differ: {what}");
        let (expected_partials, expected) = self.model();
        let blocks = expected_partials.len();
        for (b, (&got, &want)) in partials.iter().zip(&expected_partials).enumerate() {
            assert!(same_f64(got, want), "partial {b} is {got:?}, the model's {want:?}: {what}");
        }
        assert!(partials[blocks..].iter().all(|p| p.to_bits() == SENTINEL_F64), "partials after {blocks}: {what}");
        assert!(same_f64(result, expected), "the result is {result:?}, the model's {expected:?}: {what}");
    }

    /// Checks that the result is the CPU evaluator's: the same for `MaxAbs` (a maximum does not
    /// depend on the order), within `1e-12` relative for the sums, whose order differs.
    fn check_against_cpu(&self, placed: &ReducePlaced, outputs: &Outputs) {
        let launch = &self.launch;
        let inputs: Vec<&[f32]> = launch.inputs.iter().map(Vec::as_slice).collect();
        let expected =
            reduce(&self.kernel(), launch.len, &inputs, &launch.params, &launch.noise()).expect("the CPU reduces");
        let (_, got) = self.results(placed, outputs, 0);
        let close = match self.op {
            ReduceOp::MaxAbs => same_f64(got, expected),
            ReduceOp::Mean | ReduceOp::Rms | ReduceOp::Norm => {
                same_f64(got, expected) || (got - expected).abs() <= 1e-12 * expected.abs()
            }
        };
        assert!(close, "the result is {got:?}, the CPU's {expected:?}: {}", self.describe());
    }
}

#[test]
fn golden_kernels_compute_the_cpu_evaluators_bits() {
    let Some(cxx) = host_cxx_or_skip("golden_kernels_compute_the_cpu_evaluators_bits") else {
        return;
    };
    let mut program = Program::new();
    let goldens = [
        ("ddim.cu", ddim_kernel(), vec![0.9, -0.3, 0.05]),
        ("all_ops.cu", all_ops_kernel(), vec![1.25]),
        ("noise.cu", noise_kernel(), vec![]),
    ];
    let mut launches = Vec::new();
    for (name, kernel, params) in &goldens {
        let emitted = elementwise_source(kernel).expect("the kernel is valid");
        let module = program.module(Module::new(emitted, &[ELEMENTWISE_ENTRY]));
        for (s, &seed) in SEEDS.iter().enumerate() {
            for len in LENGTHS {
                for per_sample in [1, 3, len.max(1)] {
                    let s = s as u32;
                    let slots =
                        (0..kernel.noise_slots).map(|k| NoiseSlot { site: 3 * k + s, step: 7 * s + k }).collect();
                    let launch = Elementwise {
                        kernel,
                        len,
                        inputs: (0..kernel.inputs).map(|k| varied(len, k as f32 + s as f32)).collect(),
                        params: params.clone(),
                        seed,
                        per_sample,
                        slots,
                        in_place: Vec::new(),
                    };
                    let placed = launch.place(&mut program, module);
                    launches.push((name, launch, placed));
                }
            }
        }
    }
    let outputs = program.run_or_panic(&cxx, "golden_kernels");
    let nans: usize = launches.iter().map(|(name, launch, placed)| launch.check(placed, &outputs, name)).sum();
    println!("{} launches match; {nans} NaNs differ in their bits", launches.len());
    for (name, kernel, _) in &goldens {
        check_golden(name, &elementwise_source(kernel).expect("the kernel is valid"));
    }
}

#[test]
fn in_place_updates_compute_the_cpu_evaluators_bits() {
    let Some(cxx) = host_cxx_or_skip("in_place_updates_compute_the_cpu_evaluators_bits") else {
        return;
    };
    // The DDIM step of `tests/in_place.rs`, which writes its state over input 0 and a second
    // output elsewhere, and the all-operations kernel, which writes input 0 back over input 1.
    let ddim = in_place_ddim_kernel();
    let all_ops = all_ops_kernel();
    let shapes = [
        (&ddim, vec![0.9, -0.3, 0.05], vec![(0, 0)]),
        (&ddim, vec![0.9, -0.3, 0.05], vec![(1, 0), (0, 1)]),
        (&all_ops, vec![-0.75], vec![(1, 1)]),
        (&all_ops, vec![-0.75], vec![(0, 0), (1, 1)]),
    ];
    let mut program = Program::new();
    let mut launches = Vec::new();
    for (kernel, params, in_place) in &shapes {
        let module = program.module(Module::new(elementwise_source(kernel).expect("valid"), &[ELEMENTWISE_ENTRY]));
        for len in [1, 5, 255, 1003, 2 * 16 * 1024 + 3] {
            let launch = Elementwise {
                kernel,
                len,
                inputs: (0..kernel.inputs).map(|k| varied(len, 0.5 + k as f32)).collect(),
                params: params.clone(),
                seed: 11,
                per_sample: 6,
                slots: vec![NoiseSlot { site: 2, step: 7 }],
                in_place: in_place.clone(),
            };
            let placed = launch.place(&mut program, module);
            launches.push((launch, placed));
        }
    }
    let outputs = program.run_or_panic(&cxx, "in_place");
    let nans: usize = launches.iter().map(|(launch, placed)| launch.check(placed, &outputs, "in place")).sum();
    println!("{} launches match; {nans} NaNs differ in their bits", launches.len());
}

/// Test inputs of the random kernels: mostly ordinary values, with any value and the special
/// values mixed in.
fn arbitrary_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -4.0_f32..4.0,
        1 => any::<f32>(),
        1 => prop::sample::select(special_values()),
    ]
}

/// The raw material of one random node (see `common::random_kernel`).
fn arbitrary_node() -> impl Strategy<Value = (u8, u32, u32, u32, f32)> {
    (0_u8..6, any::<u32>(), any::<u32>(), any::<u32>(), arbitrary_value())
}

/// The number of random kernels run on the host.
const RANDOM_KERNELS: usize = 48;

/// The launch of a random kernel: its material, its length and data, and its noise.
type RandomMaterial = (Vec<(u8, u32, u32, u32, f32)>, Vec<u32>, Vec<f32>, Vec<f32>, usize, u64);

/// Random kernels from the material of the evaluator's and the JIT's property tests, with
/// launches of up to 5000 elements, drawn by proptest's deterministic runner so that every run
/// tests the same kernels.
fn random_material() -> Vec<RandomMaterial> {
    let length = prop_oneof![0_usize..40, 0_usize..300, 1000_usize..5000];
    let strategy = (
        prop::collection::vec(arbitrary_node(), 1..28),
        prop::collection::vec(any::<u32>(), 0..4),
        length.prop_flat_map(|len| prop::collection::vec(arbitrary_value(), 3 * len)),
        prop::collection::vec(arbitrary_value(), 2),
        1_usize..50,
        any::<u64>(),
    );
    let mut runner = TestRunner::deterministic();
    (0..RANDOM_KERNELS).map(|_| strategy.new_tree(&mut runner).expect("a random launch").current()).collect()
}

#[test]
fn random_kernels_compute_the_cpu_evaluators_bits() {
    let Some(cxx) = host_cxx_or_skip("random_kernels_compute_the_cpu_evaluators_bits") else {
        return;
    };
    let material = random_material();
    let kernels: Vec<ElementwiseKernel> =
        material.iter().map(|(raw, outputs, ..)| random_kernel(raw, outputs, false, true)).collect();
    let mut program = Program::new();
    let mut launches = Vec::new();
    let mut reductions = Vec::new();
    for (k, (kernel, (_, _, data, params, per_sample, seed))) in kernels.iter().zip(&material).enumerate() {
        let len = data.len() / 3;
        let launch = Elementwise {
            kernel,
            len,
            inputs: data.chunks(len.max(1)).map(<[f32]>::to_vec).collect(),
            params: params.clone(),
            seed: *seed,
            per_sample: *per_sample,
            slots: vec![NoiseSlot { site: 5, step: 1 }, NoiseSlot { site: 6, step: 2 }],
            // Every third launch writes its first output over its first input.
            in_place: if k % 3 == 0 { vec![(0, 0)] } else { Vec::new() },
        };
        let module = program.module(Module::new(elementwise_source(kernel).expect("valid"), &[ELEMENTWISE_ENTRY]));
        let placed = launch.place(&mut program, module);
        // A kernel with one output is also the body of a reduction.
        if kernel.outputs.len() == 1 {
            let op = REDUCTIONS[k % REDUCTIONS.len()].0;
            let blocks = reduction_blocks(len as u64);
            let reduce = Reduce { op, launch: Elementwise { in_place: Vec::new(), ..launch.clone() }, blocks };
            let placed = reduce.place(&mut program);
            reductions.push((reduce, placed));
        }
        launches.push((launch, placed));
    }
    let outputs = program.run_or_panic(&cxx, "random_kernels");
    for (k, (launch, placed)) in launches.iter().enumerate() {
        launch.check(placed, &outputs, &format!("random kernel {k}\n{}", launch.kernel));
    }
    for (reduce, placed) in &reductions {
        reduce.check_against_model(placed, &outputs);
    }
    println!("{} random kernels and {} reductions of them match", launches.len(), reductions.len());
}

#[test]
fn reductions_compute_the_cpu_evaluators_values_in_a_fixed_order() {
    let Some(cxx) = host_cxx_or_skip("reductions_compute_the_cpu_evaluators_values_in_a_fixed_order") else {
        return;
    };
    let body = reduction_body();
    let mut program = Program::new();
    let mut reductions = Vec::new();
    // Empty, tails, one block, just over one block and many blocks, launched as the ABI says;
    // then a grid of fewer blocks, so that the first pass's grid-stride loop runs; and, once as
    // it is slow on the host, the ABI's launch of more groups than its largest grid has threads.
    let lengths = [0, 1, 3, 5, 1023, 1024, 1025, 3 * 4096 + 5];
    let mut shapes: Vec<(ReduceOp, usize, u32)> = REDUCTIONS
        .iter()
        .flat_map(|&(op, _)| lengths.map(|len| (op, len, reduction_blocks(len as u64))))
        .chain(REDUCTIONS.iter().map(|&(op, _)| (op, 100_003, 3)))
        .collect();
    let capped = REDUCE_MAX_BLOCKS as usize * BLOCK_THREADS as usize * VECTOR_WIDTH + 2 * 4096 + 3;
    shapes.push((ReduceOp::Rms, capped, reduction_blocks(capped as u64)));
    for (op, len, blocks) in shapes {
        // The body's values are positive, so that the sums are well conditioned and the
        // sequential and tree orders agree to within 1e-12 relative.
        let launch = Elementwise {
            kernel: &body,
            len,
            inputs: vec![ramp(len, 0.0).iter().map(|v| v + 10.0).collect(), ramp(len, 1.0)],
            params: vec![0.25],
            seed: 0,
            per_sample: 1,
            slots: Vec::new(),
            in_place: Vec::new(),
        };
        let reduce = Reduce { op, launch, blocks };
        let placed = reduce.place(&mut program);
        reductions.push((reduce, placed));
    }
    // A NaN anywhere makes the result NaN; an infinity makes it infinite.
    for (op, _) in REDUCTIONS {
        for special in [f32::NAN, f32::INFINITY] {
            let len = 5000;
            let mut x = ramp(len, 0.0);
            x[4321] = special;
            let launch = Elementwise {
                kernel: &body,
                len,
                inputs: vec![x, ramp(len, 1.0)],
                params: vec![0.25],
                seed: 0,
                per_sample: 1,
                slots: Vec::new(),
                in_place: Vec::new(),
            };
            let reduce = Reduce { op, launch, blocks: reduction_blocks(len as u64) };
            let placed = reduce.place(&mut program);
            reductions.push((reduce, placed));
        }
    }
    let outputs = program.run_or_panic(&cxx, "reductions");
    for (reduce, placed) in &reductions {
        reduce.check_against_model(placed, &outputs);
        reduce.check_against_cpu(placed, &outputs);
    }
    println!("{} reductions match", reductions.len());
    for (op, name) in REDUCTIONS {
        let kernel = ReductionKernel { body: body.clone(), op };
        check_golden(name, &reduction_source(&kernel).expect("the body is valid"));
    }
}

/// The definition of `layers::bias_activation_source`, written out: `v = data[i] + bias[i % cols]`,
/// then, for SiLU, `v / (1 + exp(-v))`, all in f32.
fn bias_activation_definition(data: &[f32], bias: &[f32], silu: bool) -> Vec<f32> {
    data.iter()
        .enumerate()
        .map(|(i, &x)| {
            let v = x + bias[i % bias.len()];
            if silu { v / (1.0 + (-v).exp()) } else { v }
        })
        .collect()
}

/// A launch of the bias and activation kernel, and its data.
struct BiasLaunch {
    case: CaseId,
    data_buffer: Arg,
    bias_buffer: Arg,
    data: Vec<f32>,
    bias: Vec<f32>,
    activation: Activation,
    grid: u32,
}

#[test]
fn bias_activation_computes_its_definition() {
    let Some(cxx) = host_cxx_or_skip("bias_activation_computes_its_definition") else {
        return;
    };
    let mut program = Program::new();
    let module = program.module(Module::new(bias_activation_source(), &[BIAS_ACTIVATION_ENTRY]));
    let mut launches = Vec::new();
    // Rows and columns, and elements after the last full row.
    for (rows, cols, extra) in [(1_usize, 1, 0_usize), (3, 5, 0), (7, 3, 2), (33, 17, 5), (5, 640, 0), (2000, 3, 1)] {
        let len = rows * cols + extra;
        for activation in [Activation::Identity, Activation::Silu] {
            // Any grid covers the data: one block, a few, and one thread per element.
            for grid in [1, 3, len.div_ceil(BLOCK_THREADS as usize) as u32] {
                let data = varied(len, cols as f32);
                let bias: Vec<f32> = varied(cols, 3.0).iter().map(|b| b * 8.0).collect();
                let mut case = Case::new(module);
                let data_buffer = case.buffer(Buffer::F32(data.clone()));
                let bias_buffer = case.buffer(Buffer::F32(bias.clone()));
                let code = activation_code(activation);
                let args = vec![data_buffer, bias_buffer, Arg::U32(cols as u32), Arg::U64(len as u64), Arg::I32(code)];
                case.launch(BIAS_ACTIVATION_ENTRY, grid, BLOCK_THREADS, args);
                let case = program.case(case);
                launches.push(BiasLaunch { case, data_buffer, bias_buffer, data, bias, activation, grid });
            }
        }
    }
    let outputs = program.run_or_panic(&cxx, "bias_activation");
    for launch in &launches {
        let (data, bias) = (&launch.data, &launch.bias);
        let what =
            format!("{:?}, {} elements, {} columns, {} blocks", launch.activation, data.len(), bias.len(), launch.grid);
        let expected = bias_activation_definition(data, bias, launch.activation == Activation::Silu);
        if let Err(e) = compare(outputs.buffer(launch.case, launch.data_buffer).as_f32(), &expected) {
            panic!("{what}: {e}");
        }
        let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let bias_after = outputs.buffer(launch.case, launch.bias_buffer).as_f32();
        assert_eq!(bits(bias_after), bits(bias), "{what}: the bias is read only");
        let mut reference = data.clone();
        bias_activation(&mut reference, bias, launch.activation);
        if let Err(e) = compare(&reference, &expected) {
            panic!("{what}: layers::bias_activation: {e}");
        }
    }
    println!("{} launches match", launches.len());
}
