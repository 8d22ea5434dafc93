//! Recorded runs: what a run asked of its device, as a plan that replays without the host code.
//!
//! A schedule whose control flow does not depend on the values it computes asks its device for
//! the same work on every run with the same parameters: the same launches with the same scalars,
//! the same uploads of host-computed data (a model's conditioning), the same downloads. Only the
//! seed changes. So the work of one run, recorded by a [`Recorder`], is a [`Plan`] that a
//! [`Replay`] runs again with a new seed: launch by launch, or as one graph on a device that has
//! them (a CUDA graph: one launch of the whole schedule, no host code between its kernels).
//!
//! Whether a run can be replayed is decided from its recording, never assumed:
//! - a reduction read back into host control flow makes the control flow data-dependent, and so
//!   do tokens drawn on the device and read back;
//! - an upload after a download means data went to the host and back (a model that runs on the
//!   host, a token operation), which a replay cannot redo;
//! - every launch must use the run's seed, so that a replay may substitute its own;
//! - two runs with different seeds must record equal plans ([`crate::seeds`] checks it), which
//!   catches host-side work that depends on the seed.
//!
//! Invariants of a plan:
//! - its buffers are its own (allocated when a [`Replay`] is made, reused in the order the run
//!   freed and allocated them), its constants (the data of uploads) and its results (one per
//!   download: a copy of the downloaded buffer where the run downloaded it), except the external
//!   buffers it names: buffers that existed before the run or outlived it (a model's weights),
//!   which must outlive the replay;
//! - its steps are [`DeviceOp`]s on its slots, with seed 0: a replay gives every launch its seed;
//! - an uploaded buffer that no step writes is read from its constant directly; one that a step
//!   writes is filled from its constant first, so every replay starts from the same data.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sched_kernels::cuda_tokens::SampleKernel;
use sched_kernels::spec::ReductionKernel;

use super::op::DeviceOp;
use super::{BufferId, Device, DeviceError, GraphId, Launch, SampleLaunch, Sampled, VerifyLaunch};

/// One operation a run asked of its device.
#[derive(Clone, Debug)]
enum Recorded {
    Alloc {
        buffer: BufferId,
        len: usize,
    },
    Upload {
        buffer: BufferId,
        data: Vec<f32>,
    },
    Free {
        buffer: BufferId,
    },
    Download {
        buffer: BufferId,
        len: usize,
    },
    Reduce,
    /// Token work: logits guided, tokens drawn and read back.
    Tokens,
    Op(DeviceOp<'static, BufferId>),
}

/// A device that passes everything to another one and records it, one run at a time.
#[derive(Debug)]
pub struct Recorder {
    inner: Arc<dyn Device>,
    recorded: Mutex<Vec<Recorded>>,
}

/// What a [`Recorder`] saw during one run.
#[derive(Debug)]
pub struct Recording {
    operations: Vec<Recorded>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update of the log is one push or one replacement, so a panic leaves it consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    pub fn new(inner: Arc<dyn Device>) -> Recorder {
        Recorder { inner, recorded: Mutex::new(Vec::new()) }
    }

    /// The device the recorder passes everything to.
    pub fn inner(&self) -> &Arc<dyn Device> {
        &self.inner
    }

    /// Everything recorded since the last call, which starts a new recording.
    pub fn take(&self) -> Recording {
        Recording { operations: std::mem::take(&mut *lock(&self.recorded)) }
    }

    fn record(&self, operation: Recorded) {
        lock(&self.recorded).push(operation);
    }
}

impl Device for Recorder {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn alloc(&self, len: usize) -> Result<BufferId, DeviceError> {
        let buffer = self.inner.alloc(len)?;
        self.record(Recorded::Alloc { buffer, len });
        Ok(buffer)
    }

    fn upload(&self, data: &[f32]) -> Result<BufferId, DeviceError> {
        let buffer = self.inner.upload(data)?;
        self.record(Recorded::Upload { buffer, data: data.to_vec() });
        Ok(buffer)
    }

    fn download(&self, buffer: BufferId) -> Result<Vec<f32>, DeviceError> {
        let data = self.inner.download(buffer)?;
        self.record(Recorded::Download { buffer, len: data.len() });
        Ok(data)
    }

    fn free(&self, buffer: BufferId) {
        self.inner.free(buffer);
        self.record(Recorded::Free { buffer });
    }

    fn execute(&self, op: &DeviceOp<'_, BufferId>) -> Result<(), DeviceError> {
        self.inner.execute(op)?;
        self.record(match op {
            // Guided logits are token work: what is drawn from them is read back.
            DeviceOp::GuideLogits { .. } => Recorded::Tokens,
            _ => Recorded::Op(op.clone().into_owned()),
        });
        Ok(())
    }

    fn reduce(&self, kernel: &ReductionKernel, launch: &Launch<'_>) -> Result<f64, DeviceError> {
        let value = self.inner.reduce(kernel, launch)?;
        self.record(Recorded::Reduce);
        Ok(value)
    }

    fn has_linear(&self) -> bool {
        self.inner.has_linear()
    }

    fn sample_rows(&self, kernel: &SampleKernel, launch: &SampleLaunch<'_>) -> Result<Sampled, DeviceError> {
        let sampled = self.inner.sample_rows(kernel, launch)?;
        self.record(Recorded::Tokens);
        Ok(sampled)
    }

    fn verify_drafts(&self, launch: &VerifyLaunch<'_>) -> Result<Vec<Vec<u32>>, DeviceError> {
        let appended = self.inner.verify_drafts(launch)?;
        self.record(Recorded::Tokens);
        Ok(appended)
    }

    fn live_buffers(&self) -> usize {
        self.inner.live_buffers()
    }

    fn holder(&self) -> Option<Arc<dyn Device>> {
        Some(self.inner.holder().unwrap_or_else(|| Arc::clone(&self.inner)))
    }
}

/// A buffer as a plan names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// One of the plan's own buffers.
    Own(usize),
    /// The buffer holding one of the plan's constants.
    Constant(usize),
    /// The buffer of one of the plan's results.
    Result(usize),
    /// A buffer of the device that the plan did not create.
    External(BufferId),
}

/// The device work of one run, replayable with another seed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The lengths of the plan's own buffers.
    buffers: Vec<usize>,
    /// The data of its uploads, as f32 bits.
    constants: Vec<Vec<u32>>,
    /// The lengths of its results, in the order the run downloaded them.
    results: Vec<usize>,
    /// The operations, with the plan's slots for buffers and seed 0.
    steps: Vec<DeviceOp<'static, Slot>>,
}

/// Why a run's recording is not a plan.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReplayable {
    #[error("a reduction is read back into the host's control flow, which may then differ from run to run")]
    Reduction,
    #[error("data goes to the host and back during the run (a model or an operation that runs on the host)")]
    HostRoundTrip,
    #[error("a launch uses seed {found}, not the run's seed {expected}")]
    OtherSeed { expected: u64, found: u64 },
    #[error("buffer {buffer} is created during the run and outlives it, but a step writes it")]
    WrittenSurvivor { buffer: u64 },
    #[error("tokens are drawn on the device and read back into the host's control flow")]
    Tokens,
}

impl Plan {
    /// The plan of a recorded run whose launches used `seed`.
    pub fn new(recording: &Recording, seed: u64) -> Result<Plan, NotReplayable> {
        let operations = &recording.operations;
        let mut created = HashSet::new();
        let mut freed = HashSet::new();
        let mut written = HashSet::new();
        let mut downloaded = false;
        for operation in operations {
            match operation {
                Recorded::Alloc { buffer, .. } => {
                    created.insert(*buffer);
                }
                Recorded::Upload { buffer, .. } => {
                    if downloaded {
                        return Err(NotReplayable::HostRoundTrip);
                    }
                    created.insert(*buffer);
                }
                Recorded::Free { buffer } => {
                    freed.insert(*buffer);
                }
                Recorded::Download { .. } => downloaded = true,
                Recorded::Reduce => return Err(NotReplayable::Reduction),
                Recorded::Tokens => return Err(NotReplayable::Tokens),
                Recorded::Op(op) => {
                    if let DeviceOp::Elementwise { seed: found, .. } = op
                        && op.draws_noise()
                        && *found != seed
                    {
                        return Err(NotReplayable::OtherSeed { expected: seed, found: *found });
                    }
                    written.extend(op.written().into_iter().copied());
                }
            }
        }
        // A buffer the run created and did not free outlives it (a model's weights, cached on the
        // device): the plan refers to it as it does to buffers created before the run.
        let survivors: HashSet<BufferId> = created.difference(&freed).copied().collect();
        if let Some(buffer) = survivors.iter().find(|b| written.contains(b)) {
            return Err(NotReplayable::WrittenSurvivor { buffer: buffer.0 });
        }
        let mut builder = PlanBuilder::default();
        for operation in operations {
            builder.add(operation, &survivors, &written);
        }
        Ok(builder.plan)
    }

    /// How many launches and copies a replay makes.
    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    /// How many values a replay returns (the run's downloads).
    pub fn results(&self) -> usize {
        self.results.len()
    }
}

/// Builds a plan from a recording, mapping the run's buffers to the plan's.
#[derive(Default)]
struct PlanBuilder {
    plan: Plan,
    /// The slot of each buffer the run created and has not freed yet.
    slots: HashMap<BufferId, Slot>,
    /// Own buffers free for reuse, by length.
    free: HashMap<usize, Vec<usize>>,
}

impl PlanBuilder {
    fn add(&mut self, operation: &Recorded, survivors: &HashSet<BufferId>, written: &HashSet<BufferId>) {
        match operation {
            Recorded::Alloc { buffer, len } => {
                if !survivors.contains(buffer) {
                    let own = self.own(*len);
                    self.slots.insert(*buffer, Slot::Own(own));
                }
            }
            Recorded::Upload { buffer, data } => {
                if survivors.contains(buffer) {
                    return;
                }
                let constant = self.plan.constants.len();
                self.plan.constants.push(data.iter().map(|x| x.to_bits()).collect());
                if written.contains(buffer) {
                    let own = self.own(data.len());
                    self.slots.insert(*buffer, Slot::Own(own));
                    let (from, to) = (Slot::Constant(constant), Slot::Own(own));
                    self.plan.steps.push(DeviceOp::Copy { from, to, len: data.len() });
                } else {
                    self.slots.insert(*buffer, Slot::Constant(constant));
                }
            }
            Recorded::Free { buffer } => {
                if let Some(Slot::Own(own)) = self.slots.remove(buffer) {
                    self.free.entry(self.plan.buffers[own]).or_default().push(own);
                }
            }
            Recorded::Download { buffer, len } => {
                let result = self.plan.results.len();
                self.plan.results.push(*len);
                let from = self.slot(*buffer);
                self.plan.steps.push(DeviceOp::Copy { from, to: Slot::Result(result), len: *len });
            }
            // `Plan::new` returned before building a plan with a reduction or token work.
            Recorded::Reduce | Recorded::Tokens => {}
            Recorded::Op(op) => {
                let mut step = op.map(|b| self.slot(*b));
                if let DeviceOp::Elementwise { seed, .. } = &mut step {
                    *seed = 0;
                }
                self.plan.steps.push(step);
            }
        }
    }

    /// An own buffer of `len` elements: a freed one of that length, or a new one.
    fn own(&mut self, len: usize) -> usize {
        if let Some(own) = self.free.get_mut(&len).and_then(Vec::pop) {
            return own;
        }
        self.plan.buffers.push(len);
        self.plan.buffers.len() - 1
    }

    fn slot(&self, buffer: BufferId) -> Slot {
        self.slots.get(&buffer).copied().unwrap_or(Slot::External(buffer))
    }
}

/// A plan made ready on a device: its buffers allocated, its constants uploaded, and, where the
/// device has graphs, captured as one.
#[derive(Debug)]
pub struct Replay {
    device: Arc<dyn Device>,
    plan: Plan,
    own: Vec<BufferId>,
    constants: Vec<BufferId>,
    results: Vec<BufferId>,
    graph: Option<GraphId>,
}

impl Replay {
    /// Prepares `plan` on `device` and captures it as a graph if the device has them (the
    /// capture uses `seed`; every replay gives its own).
    pub fn new(device: Arc<dyn Device>, plan: Plan, seed: u64) -> Result<Replay, DeviceError> {
        let mut replay =
            Replay { device, plan, own: Vec::new(), constants: Vec::new(), results: Vec::new(), graph: None };
        for &len in &replay.plan.buffers {
            let buffer = replay.device.alloc(len)?;
            replay.own.push(buffer);
        }
        for constant in &replay.plan.constants {
            let data: Vec<f32> = constant.iter().map(|&bits| f32::from_bits(bits)).collect();
            let buffer = replay.device.upload(&data)?;
            replay.constants.push(buffer);
        }
        for &len in &replay.plan.results {
            let buffer = replay.device.alloc(len)?;
            replay.results.push(buffer);
        }
        let graph = replay.device.capture(seed, &mut || replay.execute(seed))?;
        replay.graph = graph;
        Ok(replay)
    }

    /// Whether the replay runs as one graph of the device.
    pub fn is_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// The launches and copies of one replay.
    pub fn steps(&self) -> usize {
        self.plan.steps()
    }

    /// Runs the plan with `seed` and returns its results, in the order the recorded run
    /// downloaded them.
    pub fn run(&self, seed: u64) -> Result<Vec<Vec<f32>>, DeviceError> {
        match self.graph {
            Some(graph) => self.device.replay_graph(graph, seed)?,
            None => self.execute(seed)?,
        }
        self.results.iter().map(|buffer| self.device.download(*buffer)).collect()
    }

    /// Issues every step of the plan to the device.
    fn execute(&self, seed: u64) -> Result<(), DeviceError> {
        self.plan.steps.iter().try_for_each(|step| step.issue(&*self.device, |slot| self.buffer(*slot), seed))
    }

    fn buffer(&self, slot: Slot) -> BufferId {
        // Every own, constant and result slot of the plan has its buffer: `new` made one for each
        // before the first `execute`.
        match slot {
            Slot::Own(k) => self.own[k],
            Slot::Constant(k) => self.constants[k],
            Slot::Result(k) => self.results[k],
            Slot::External(buffer) => buffer,
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Some(graph) = self.graph {
            self.device.free_graph(graph);
        }
        for buffer in self.own.iter().chain(&self.constants).chain(&self.results) {
            self.device.free(*buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use sched_kernels::builder::KernelBuilder;
    use sched_kernels::spec::{BinaryOp, Distribution, ElementwiseKernel, NoiseLaunch, NoiseSlot};

    use super::*;
    use crate::device::emulated::EmulatedDevice;

    /// `out = in0 + gaussian`.
    fn noisy() -> ElementwiseKernel {
        let mut b = KernelBuilder::new();
        let x = b.input(0);
        let z = b.noise(Distribution::Gaussian);
        let out = b.binary(BinaryOp::Add, x, z);
        b.output(out);
        b.finish()
    }

    fn launch<'a>(buffers: &'a [BufferId; 2], seed: u64, slots: &'a [NoiseSlot]) -> Launch<'a> {
        let noise = NoiseLaunch { seed, per_sample: 1, slots };
        Launch { len: 3, inputs: &buffers[..1], outputs: &buffers[1..], params: &[], noise }
    }

    const SLOT: [NoiseSlot; 1] = [NoiseSlot { site: 0, step: 0 }];

    /// Records `out = x + z` with `seed`, on a fresh uploaded `x`, then frees both buffers.
    fn recorded(recorder: &Recorder, seed: u64) -> Recording {
        let x = recorder.upload(&[1.0, 2.0, 3.0]).expect("uploads");
        let out = recorder.alloc(3).expect("allocates");
        recorder.execute(&DeviceOp::elementwise(&noisy(), &launch(&[x, out], seed, &SLOT))).expect("launches");
        recorder.download(out).expect("downloads");
        recorder.free(x);
        recorder.free(out);
        recorder.take()
    }

    #[test]
    fn a_plan_reads_constants_in_place_and_replays_with_any_seed() {
        let device: Arc<dyn Device> = Arc::new(EmulatedDevice::new());
        let recorder = Recorder::new(Arc::clone(&device));
        let plan = Plan::new(&recorded(&recorder, 5), 5).expect("replayable");
        assert_eq!(plan, Plan::new(&recorded(&recorder, 6), 6).expect("replayable"), "the seed is not in the plan");
        // The uploaded input is never written, so the launch reads its constant: one launch and
        // the copy of the result.
        assert_eq!((plan.steps(), plan.results(), plan.buffers.len()), (2, 1, 1));
        let replay = Replay::new(Arc::clone(&device), plan, 5).expect("prepares");
        assert!(replay.is_graph());
        for seed in [5, 9] {
            let expected = [1.0f32, 2.0, 3.0]
                .iter()
                .enumerate()
                .map(|(i, x)| x + sched_kernels::philox::gaussian(seed, 0, 0, i as u32, 0));
            assert_eq!(replay.run(seed).expect("replays"), vec![expected.collect::<Vec<f32>>()]);
        }
        drop(replay);
        assert_eq!(device.live_buffers(), 0);
    }

    #[test]
    fn recordings_that_cannot_be_replayed_say_why() {
        let recorder = Recorder::new(Arc::new(EmulatedDevice::new()));
        let x = recorder.upload(&[1.0, 2.0, 3.0]).expect("uploads");
        let out = recorder.alloc(3).expect("allocates");
        recorder.execute(&DeviceOp::elementwise(&noisy(), &launch(&[x, out], 8, &SLOT))).expect("launches");
        assert_eq!(Plan::new(&recorder.take(), 7), Err(NotReplayable::OtherSeed { expected: 7, found: 8 }));
        recorder.download(out).expect("downloads");
        recorder.upload(&[0.0]).expect("uploads");
        assert_eq!(Plan::new(&recorder.take(), 8), Err(NotReplayable::HostRoundTrip));
        // `out` outlives the recording (it is not freed) and a launch writes it.
        recorder.execute(&DeviceOp::elementwise(&noisy(), &launch(&[x, out], 8, &SLOT))).expect("launches");
        let kept = recorder.alloc(3).expect("allocates");
        recorder.execute(&DeviceOp::elementwise(&noisy(), &launch(&[x, kept], 8, &SLOT))).expect("launches");
        assert_eq!(Plan::new(&recorder.take(), 8), Err(NotReplayable::WrittenSurvivor { buffer: kept.0 }));
    }

    #[test]
    fn a_capture_holds_launches_and_copies_only() {
        let device = EmulatedDevice::new();
        let x = device.upload(&[1.0]).expect("uploads");
        let refused = device.capture(0, &mut || device.alloc(1).map(|_| ()));
        assert!(matches!(refused, Err(DeviceError::Capturing { operation: "allocating a buffer" })), "{refused:?}");
        let refused = device.capture(0, &mut || device.download(x).map(|_| ()));
        assert!(matches!(refused, Err(DeviceError::Capturing { .. })), "{refused:?}");
        // After a failed capture the device works as before.
        assert_eq!(device.download(x).expect("downloads"), vec![1.0]);
    }
}
