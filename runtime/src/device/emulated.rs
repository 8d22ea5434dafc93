//! The emulated device: buffers in host memory, kernels on the reference evaluator.
//!
//! It behaves like an accelerator from the executor's side (every tensor a kernel produces stays
//! in a buffer the executor must move explicitly), so the tests run the device path of the
//! executor without a GPU, and its results must equal the CPU's bit for bit. New buffers are
//! filled with NaN, so reading a buffer before a kernel wrote it shows up in the results.
//!
//! It has graphs, like CUDA's stream capture: while [`Device::capture`] runs its body, launches
//! and copies are recorded instead of executed and every other operation is an error, and a replay
//! executes the recording with its own seed. So the replay of recorded schedules
//! ([`super::replay`]) runs its graph path in CI. [`EmulatedDevice::without_graphs`] makes a
//! device that has none, for the path that replays launch by launch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use candle_core::{Device as CDevice, Tensor as CTensor};
use sched_kernels::cpu;
use sched_kernels::cuda_tokens::SampleKernel;
use sched_kernels::decoder::{self, CachedAttentionShape, RopeShape};
use sched_kernels::layers::{self, Activation, AttentionShape};
use sched_kernels::spec::{ElementwiseKernel, ReductionKernel};
use sched_kernels::{philox, tokens};

use super::op::{DeviceOp, elements, rope_extent};
use super::{
    BufferId, Device, DeviceError, GraphId, Launch, LinearShape, RowMoves, SampleLaunch, Sampled, VerifyLaunch,
    check_counts, reporting_distribution,
};

/// A device that keeps its buffers in host memory.
#[derive(Debug, Default)]
pub struct EmulatedDevice {
    buffers: Mutex<HashMap<u64, Vec<f32>>>,
    next_id: AtomicU64,
    /// Whether [`Device::capture`] makes graphs.
    no_graphs: bool,
    /// The operations recorded so far, while a capture runs.
    capturing: Mutex<Option<Vec<DeviceOp<'static, BufferId>>>>,
    graphs: Mutex<HashMap<u64, Vec<DeviceOp<'static, BufferId>>>>,
}

/// Locks a mutex whose data stays consistent across a panic (every update is one insert, remove,
/// push or replacement).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EmulatedDevice {
    pub fn new() -> EmulatedDevice {
        EmulatedDevice::default()
    }

    /// A device whose [`Device::capture`] returns `None`, as a GPU without graph support would.
    pub fn without_graphs() -> EmulatedDevice {
        EmulatedDevice { no_graphs: true, ..EmulatedDevice::default() }
    }

    fn buffers(&self) -> MutexGuard<'_, HashMap<u64, Vec<f32>>> {
        lock(&self.buffers)
    }

    /// Records `operation` if a capture runs, and says whether it did.
    fn record(&self, operation: impl FnOnce() -> DeviceOp<'static, BufferId>) -> bool {
        match lock(&self.capturing).as_mut() {
            Some(recorded) => {
                recorded.push(operation());
                true
            }
            None => false,
        }
    }

    /// An error if a capture runs: `operation` cannot be part of a graph.
    fn refuse_while_capturing(&self, operation: &'static str) -> Result<(), DeviceError> {
        match lock(&self.capturing).as_ref() {
            Some(_) => Err(DeviceError::Capturing { operation }),
            None => Ok(()),
        }
    }

    /// A copy of the first `len` elements of a buffer.
    fn read(&self, buffer: BufferId, len: usize) -> Result<Vec<f32>, DeviceError> {
        match self.buffers().get(&buffer.0) {
            Some(data) if data.len() >= len => Ok(data[..len].to_vec()),
            Some(data) => Err(short(buffer, data.len(), len)),
            None => Err(unknown(buffer)),
        }
    }

    /// Writes `data` to the start of a buffer.
    fn write(&self, buffer: BufferId, data: &[f32]) -> Result<(), DeviceError> {
        match self.buffers().get_mut(&buffer.0) {
            Some(values) if values.len() >= data.len() => {
                values[..data.len()].copy_from_slice(data);
                Ok(())
            }
            Some(values) => Err(short(buffer, values.len(), data.len())),
            None => Err(unknown(buffer)),
        }
    }

    fn insert(&self, data: Vec<f32>) -> BufferId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.buffers().insert(id, data);
        BufferId(id)
    }

    /// Copies of the inputs of a launch, each at least `len` long.
    fn inputs(&self, launch: &Launch<'_>) -> Result<Vec<Vec<f32>>, DeviceError> {
        let buffers = self.buffers();
        launch
            .inputs
            .iter()
            .map(|id| match buffers.get(&id.0) {
                Some(data) if data.len() >= launch.len => Ok(data[..launch.len].to_vec()),
                Some(data) => Err(short(*id, data.len(), launch.len)),
                None => Err(unknown(*id)),
            })
            .collect()
    }
}

fn unknown(buffer: BufferId) -> DeviceError {
    DeviceError::Buffer { buffer: buffer.0, problem: "does not exist on the device".into() }
}

fn short(buffer: BufferId, actual: usize, len: usize) -> DeviceError {
    DeviceError::Buffer { buffer: buffer.0, problem: format!("has {actual} elements, fewer than the launch's {len}") }
}

/// The operations of [`DeviceOp`] on host buffers, each the reference of its kernel.
impl EmulatedDevice {
    fn run_elementwise(&self, kernel: &ElementwiseKernel, launch: &Launch<'_>) -> Result<(), DeviceError> {
        let inputs = self.inputs(launch)?;
        let slices: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let results = cpu::evaluate(kernel, launch.len, &slices, launch.params, &launch.noise)?;
        let mut buffers = self.buffers();
        for (id, result) in launch.outputs.iter().zip(results) {
            match buffers.get_mut(&id.0) {
                Some(data) if data.len() >= launch.len => data[..launch.len].copy_from_slice(&result),
                Some(data) => return Err(short(*id, data.len(), launch.len)),
                None => return Err(unknown(*id)),
            }
        }
        Ok(())
    }

    fn run_linear(&self, x: BufferId, weight: BufferId, out: BufferId, shape: LinearShape) -> Result<(), DeviceError> {
        let LinearShape { rows, inputs, outputs } = shape;
        let (x_data, w_data) = {
            let buffers = self.buffers();
            let read = |id: BufferId, len: usize| match buffers.get(&id.0) {
                Some(data) if data.len() >= len => Ok(data[..len].to_vec()),
                Some(data) => Err(short(id, data.len(), len)),
                None => Err(unknown(id)),
            };
            (read(x, rows * inputs)?, read(weight, outputs * inputs)?)
        };
        // candle's CPU matrix product stands in for the GPU's.
        let product = || -> candle_core::Result<Vec<f32>> {
            let x = CTensor::from_vec(x_data, (rows, inputs), &CDevice::Cpu)?;
            let w = CTensor::from_vec(w_data, (outputs, inputs), &CDevice::Cpu)?;
            x.matmul(&w.t()?)?.flatten_all()?.to_vec1::<f32>()
        };
        let result =
            product().map_err(|e| DeviceError::Driver { action: "multiplying matrices", message: e.to_string() })?;
        match self.buffers().get_mut(&out.0) {
            Some(data) if data.len() >= result.len() => data[..result.len()].copy_from_slice(&result),
            Some(data) => return Err(short(out, data.len(), result.len())),
            None => return Err(unknown(out)),
        }
        Ok(())
    }

    fn run_bias_activation(
        &self,
        data: BufferId,
        bias: BufferId,
        len: usize,
        activation: Activation,
    ) -> Result<(), DeviceError> {
        let mut buffers = self.buffers();
        let bias = buffers.get(&bias.0).cloned().ok_or_else(|| unknown(bias))?;
        match buffers.get_mut(&data.0) {
            Some(values) if values.len() >= len => {
                layers::bias_activation(&mut values[..len], &bias, activation);
                Ok(())
            }
            Some(values) => Err(short(data, values.len(), len)),
            None => Err(unknown(data)),
        }
    }

    fn run_copy(&self, from: BufferId, to: BufferId, len: usize) -> Result<(), DeviceError> {
        let mut buffers = self.buffers();
        let source = match buffers.get(&from.0) {
            Some(data) if data.len() >= len => data[..len].to_vec(),
            Some(data) => return Err(short(from, data.len(), len)),
            None => return Err(unknown(from)),
        };
        match buffers.get_mut(&to.0) {
            Some(data) if data.len() >= len => data[..len].copy_from_slice(&source),
            Some(data) => return Err(short(to, data.len(), len)),
            None => return Err(unknown(to)),
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments, reason = "the buffers and sizes of one layer")]
    fn run_layer_norm(
        &self,
        x: BufferId,
        weight: BufferId,
        bias: BufferId,
        out: BufferId,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> Result<(), DeviceError> {
        let len = rows * width;
        let (x, weight, bias) = (self.read(x, len)?, self.read(weight, width)?, self.read(bias, width)?);
        let mut result = vec![0.0; len];
        layers::layer_norm(&x, &weight, &bias, eps, &mut result);
        self.write(out, &result)
    }

    fn run_attention(
        &self,
        q: BufferId,
        k: BufferId,
        v: BufferId,
        out: BufferId,
        shape: AttentionShape,
    ) -> Result<(), DeviceError> {
        let len = shape.batch * shape.len * shape.heads * shape.head_dim;
        let (q, k, v) = (self.read(q, len)?, self.read(k, len)?, self.read(v, len)?);
        let mut result = vec![0.0; len];
        layers::attention(&q, &k, &v, shape, &mut result);
        self.write(out, &result)
    }

    fn run_gather_rows(
        &self,
        src: BufferId,
        indices: &[u32],
        width: usize,
        blocked: Option<u32>,
        out: BufferId,
    ) -> Result<(), DeviceError> {
        if indices.is_empty() || width == 0 {
            return Ok(());
        }
        let source = self.buffers().get(&src.0).cloned().ok_or_else(|| unknown(src))?;
        let rows = source.len() / width;
        if let Some(&index) = indices.iter().find(|&&i| i as usize >= rows) {
            return Err(DeviceError::Buffer {
                buffer: src.0,
                problem: format!("has {rows} rows, and row {index} is gathered"),
            });
        }
        let mut result = vec![0.0; indices.len() * width];
        layers::gather_rows(&source, indices, width, blocked, &mut result);
        self.write(out, &result)
    }

    fn run_move_rows(&self, src: BufferId, out: BufferId, moves: RowMoves<'_>) -> Result<(), DeviceError> {
        let RowMoves { from, to, width } = moves;
        let source = self.buffers().get(&src.0).cloned().ok_or_else(|| unknown(src))?;
        let mut buffers = self.buffers();
        let target = buffers.get_mut(&out.0).ok_or_else(|| unknown(out))?;
        moves.check(src, source.len(), out, target.len())?;
        layers::move_rows(&source, from, to, width, target);
        Ok(())
    }

    #[allow(clippy::too_many_arguments, reason = "the buffers and sizes of one layer")]
    fn run_rms_norm(
        &self,
        x: BufferId,
        weight: BufferId,
        out: BufferId,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> Result<(), DeviceError> {
        let len = elements(x, &[rows, width])?;
        let (x, weight) = (self.read(x, len)?, self.read(weight, width)?);
        let mut result = vec![0.0; len];
        decoder::rms_norm(&x, &weight, eps, &mut result);
        self.write(out, &result)
    }

    fn run_rope(
        &self,
        x: BufferId,
        (cos, sin): (BufferId, BufferId),
        positions: &[u32],
        shape: RopeShape,
        table_positions: usize,
    ) -> Result<(), DeviceError> {
        let (len, table) = rope_extent(x, positions, shape, table_positions)?;
        let (mut data, cos, sin) = (self.read(x, len)?, self.read(cos, table)?, self.read(sin, table)?);
        decoder::rope(&mut data, &cos, &sin, positions, shape);
        self.write(x, &data)
    }

    fn run_swiglu(&self, gate: BufferId, up: BufferId, out: BufferId, len: usize) -> Result<(), DeviceError> {
        let (gate, up) = (self.read(gate, len)?, self.read(up, len)?);
        let mut result = vec![0.0; len];
        decoder::swiglu(&gate, &up, &mut result);
        self.write(out, &result)
    }

    fn run_cached_attention(
        &self,
        (q, keys, values): (BufferId, BufferId, BufferId),
        out: BufferId,
        shape: CachedAttentionShape,
    ) -> Result<(), DeviceError> {
        let (queries, cache) = shape.elements().ok_or_else(|| DeviceError::Buffer {
            buffer: out.0,
            problem: format!("cannot hold an attention of shape {shape:?}"),
        })?;
        let (q, keys, values) = (self.read(q, queries)?, self.read(keys, cache)?, self.read(values, cache)?);
        let mut result = vec![0.0; queries];
        decoder::cached_attention(&q, &keys, &values, shape, &mut result);
        self.write(out, &result)
    }

    fn run_guide_logits(
        &self,
        un: BufferId,
        cond: BufferId,
        scale: f64,
        len: usize,
        out: BufferId,
    ) -> Result<(), DeviceError> {
        let (un, cond) = (self.read(un, len)?, self.read(cond, len)?);
        let guided: Vec<f32> = un.iter().zip(&cond).map(|(&u, &c)| tokens::guided_logit(u, c, scale)).collect();
        self.write(out, &guided)
    }
}

impl Device for EmulatedDevice {
    fn name(&self) -> String {
        "emulated".into()
    }

    fn alloc(&self, len: usize) -> Result<BufferId, DeviceError> {
        self.refuse_while_capturing("allocating a buffer")?;
        Ok(self.insert(vec![f32::NAN; len]))
    }

    fn upload(&self, data: &[f32]) -> Result<BufferId, DeviceError> {
        self.refuse_while_capturing("copying to the device")?;
        Ok(self.insert(data.to_vec()))
    }

    fn download(&self, buffer: BufferId) -> Result<Vec<f32>, DeviceError> {
        self.refuse_while_capturing("copying from the device")?;
        self.buffers().get(&buffer.0).cloned().ok_or_else(|| unknown(buffer))
    }

    fn free(&self, buffer: BufferId) {
        self.buffers().remove(&buffer.0);
    }

    fn execute(&self, op: &DeviceOp<'_, BufferId>) -> Result<(), DeviceError> {
        if let Some((kernel, launch)) = op.launch() {
            check_counts(kernel, &launch, kernel.outputs.len())?;
        }
        if let DeviceOp::GuideLogits { .. } = op {
            // Token work reads its results back: it is no part of a graph.
            self.refuse_while_capturing("guiding logits")?;
        } else if self.record(|| op.clone().into_owned()) {
            return Ok(());
        }
        match op {
            DeviceOp::Elementwise { .. } => match op.launch() {
                Some((kernel, launch)) => self.run_elementwise(kernel, &launch),
                None => Ok(()),
            },
            &DeviceOp::Linear { x, weight, out, shape } => self.run_linear(x, weight, out, shape),
            &DeviceOp::BiasActivation { data, bias, len, activation } => {
                self.run_bias_activation(data, bias, len, activation)
            }
            &DeviceOp::Copy { from, to, len } => self.run_copy(from, to, len),
            &DeviceOp::LayerNorm { x, weight, bias, out, rows, width, eps } => {
                self.run_layer_norm(x, weight, bias, out, rows, width, eps)
            }
            &DeviceOp::Attention { q, k, v, out, shape } => self.run_attention(q, k, v, out, shape),
            DeviceOp::Gather { src, indices, width, blocked, out } => {
                self.run_gather_rows(*src, indices, *width, *blocked, *out)
            }
            DeviceOp::MoveRows { src, out, .. } => match op.row_moves() {
                Some(moves) => self.run_move_rows(*src, *out, moves),
                None => Ok(()),
            },
            &DeviceOp::GuideLogits { un, cond, scale, len, out } => self.run_guide_logits(un, cond, scale, len, out),
            &DeviceOp::RmsNorm { x, weight, out, rows, width, eps } => {
                self.run_rms_norm(x, weight, out, rows, width, eps)
            }
            DeviceOp::Rope { x, cos, sin, positions, shape, table_positions } => {
                self.run_rope(*x, (*cos, *sin), positions, *shape, *table_positions)
            }
            &DeviceOp::SwiGlu { gate, up, out, len } => self.run_swiglu(gate, up, out, len),
            &DeviceOp::CachedAttention { q, keys, values, out, shape } => {
                self.run_cached_attention((q, keys, values), out, shape)
            }
        }
    }

    fn reduce(&self, kernel: &ReductionKernel, launch: &Launch<'_>) -> Result<f64, DeviceError> {
        check_counts(&kernel.body, launch, 0)?;
        self.refuse_while_capturing("reading a reduction back")?;
        let inputs = self.inputs(launch)?;
        let slices: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        Ok(cpu::reduce(kernel, launch.len, &slices, launch.params, &launch.noise)?)
    }

    fn has_linear(&self) -> bool {
        true
    }

    fn sample_rows(&self, kernel: &SampleKernel, launch: &SampleLaunch<'_>) -> Result<Sampled, DeviceError> {
        self.refuse_while_capturing("reading tokens back")?;
        launch.check()?;
        let SampleLaunch { rows, vocab, seed, site, step, .. } = *launch;
        let logits = self.read(launch.logits, rows * vocab)?;
        let mut sampled = Sampled { tokens: Vec::with_capacity(rows), report: Vec::new() };
        for (r, row) in logits.chunks_exact(vocab.max(1)).take(rows).enumerate() {
            let (sample, position) = (launch.noise_sample[r], launch.noise_position[r]);
            let uniform = |v: u32| {
                philox::uniform_f64(seed, site, step, sample, position.wrapping_mul(vocab as u32).wrapping_add(v))
            };
            let (token, report) = kernel.sample_row(&launch.params, if vocab == 0 { &[] } else { row }, uniform);
            sampled.tokens.push(token);
            sampled.report.extend(report);
        }
        Ok(sampled)
    }

    fn verify_drafts(&self, launch: &VerifyLaunch<'_>) -> Result<Vec<Vec<u32>>, DeviceError> {
        self.refuse_while_capturing("reading verified tokens back")?;
        launch.check()?;
        let VerifyLaunch { rows, k, vocab, seed, site, step, eos, .. } = *launch;
        let target = self.read(launch.target, rows * (k + 1) * vocab)?;
        let proposal = self.read(launch.proposal, rows * k * vocab)?;
        let (target_kernel, proposal_kernel) =
            (reporting_distribution(launch.target_kernel), reporting_distribution(launch.proposal_kernel));
        let appended = (0..rows)
            .map(|r| {
                let sample = launch.noise_sample[r];
                let uniform = |index: u32| philox::uniform_f64(seed, site, step, sample, index);
                // Position `i`'s entry `v` draws index `i * vocab + v`, as the sampling launch of
                // the CUDA device does.
                let at = |i: usize| move |v: u32| uniform((i as u32).wrapping_mul(vocab as u32).wrapping_add(v));
                let scored: Vec<(u32, Vec<f64>)> = (0..=k)
                    .map(|i| {
                        let logits = &target[(r * (k + 1) + i) * vocab..][..vocab];
                        target_kernel.sample_row(&launch.target_params, logits, at(i))
                    })
                    .collect();
                let drafted: Vec<Vec<f64>> = (0..k)
                    .map(|i| {
                        let logits = &proposal[(r * k + i) * vocab..][..vocab];
                        proposal_kernel.sample_row(&launch.proposal_params, logits, at(i)).1
                    })
                    .collect();
                let distributions = |i: usize| (scored[i].1.clone(), drafted.get(i).map(Vec::as_slice));
                let draft = &launch.draft[r * k..(r + 1) * k];
                tokens::verify_row(draft, eos, vocab, |i| scored[i].0, Some(distributions), uniform).0
            })
            .collect();
        Ok(appended)
    }

    fn live_buffers(&self) -> usize {
        self.buffers().len()
    }

    fn capture(
        &self,
        // The seed is each replay's argument here; a CUDA capture needs it to set the device's
        // seed words before it starts.
        _seed: u64,
        body: &mut dyn FnMut() -> Result<(), DeviceError>,
    ) -> Result<Option<GraphId>, DeviceError> {
        if self.no_graphs {
            return Ok(None);
        }
        {
            let mut capturing = lock(&self.capturing);
            if capturing.is_some() {
                return Err(DeviceError::Capturing { operation: "starting a capture" });
            }
            *capturing = Some(Vec::new());
        }
        let result = body();
        let recorded = lock(&self.capturing).take().unwrap_or_default();
        result?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.graphs).insert(id, recorded);
        Ok(Some(GraphId(id)))
    }

    fn replay_graph(&self, graph: GraphId, seed: u64) -> Result<(), DeviceError> {
        let recorded = lock(&self.graphs).remove(&graph.0).ok_or(DeviceError::UnknownGraph { graph: graph.0 })?;
        let result = recorded.iter().try_for_each(|operation| operation.issue(self, |b| *b, seed));
        lock(&self.graphs).insert(graph.0, recorded);
        result
    }

    fn free_graph(&self, graph: GraphId) {
        lock(&self.graphs).remove(&graph.0);
    }
}
