//! The executor of IR instructions both engines share: the interpreter hands it every
//! instruction and walks the control flow itself; the JIT's native host code computes host values
//! and hands it every instruction on tensors, grids and models, and it then launches the
//! Cranelift-compiled kernels instead of the reference evaluator (except when noise is replayed,
//! which only the reference evaluator supports).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sched_compiler::grid::Spacing;
use sched_compiler::host;
use sched_compiler::ir::*;
use sched_kernels::cpu;
use sched_kernels::jit::CompiledKernel;
use sched_kernels::spec::{self, NoiseLaunch, NoiseSlot};

use crate::convert::{FieldCoefficients, field_coefficients, field_kind_of};
use crate::device::counted::Counted;
use crate::device::{Device, DeviceOp, DeviceTensor, Launch, Transfers};
use crate::grid::{Grid, materialize};
use crate::model::draw::{Choice, Noise};
use crate::model::{Model, ModelError, OnDevice, TokenModel, Vocab, uniform_time};
use crate::run::{NoiseSource, OutputValue, Outputs, ParamValue, RunError, RunOptions};
use crate::sequence::{self, Specials, TokenSeq};
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
enum Val {
    F64(f64),
    I64(i64),
    Bool(bool),
    Tensor(Arc<Tensor>),
    /// A tensor in a buffer of the run's device.
    Device(Arc<DeviceTensor>),
    Grid(Arc<Grid>),
    Tokens(Arc<TokenSeq>),
}

impl Val {
    fn from_constant(c: Constant) -> Val {
        match c {
            Constant::F64(v) => Val::F64(v),
            Constant::I64(v) => Val::I64(v),
            Constant::Bool(v) => Val::Bool(v),
        }
    }

    /// The host value as a constant (`None` for tensors and grids).
    fn constant(&self) -> Option<Constant> {
        match self {
            Val::F64(v) => Some(Constant::F64(*v)),
            Val::I64(v) => Some(Constant::I64(*v)),
            Val::Bool(v) => Some(Constant::Bool(*v)),
            Val::Tensor(_) | Val::Device(_) | Val::Grid(_) | Val::Tokens(_) => None,
        }
    }

    fn f64(&self) -> f64 {
        match self {
            Val::F64(v) => *v,
            Val::I64(v) => *v as f64,
            Val::Bool(b) => f64::from(u8::from(*b)),
            Val::Tensor(_) | Val::Device(_) | Val::Grid(_) | Val::Tokens(_) => f64::NAN,
        }
    }

    fn i64(&self) -> i64 {
        match self {
            Val::I64(v) => *v,
            Val::F64(v) => *v as i64,
            Val::Bool(b) => i64::from(*b),
            Val::Tensor(_) | Val::Device(_) | Val::Grid(_) | Val::Tokens(_) => 0,
        }
    }

    fn bool(&self) -> bool {
        matches!(self, Val::Bool(true))
    }
}

/// The executor of instructions, shared by the interpreter (which also walks the control flow
/// and computes host values with it) and the JIT (whose native code computes host values and
/// hands every instruction on tensors, grids and models to it).
pub(crate) struct Machine<'a> {
    function: &'a Function,
    params: &'a [Option<ParamValue>],
    models: &'a [Arc<dyn Model>],
    options: &'a RunOptions<'a>,
    state_shape: Vec<usize>,
    values: Vec<Option<Val>>,
    vars: Vec<Option<Val>>,
    /// How many times each noise site has drawn.
    site_steps: Vec<u32>,
    replay_next: usize,
    outputs: Vec<Option<OutputValue>>,
    /// For each output, the ordinal of the download its last emitted value came from.
    output_downloads: Vec<Option<u64>>,
    trace: Vec<(u32, Tensor)>,
    token_trace: Vec<(u32, Vec<Vec<u32>>)>,
    model_calls: u64,
    model_calls_by_slot: Vec<u64>,
    kernel_launches: u64,
    /// The JIT-compiled kernels of the function, by kernel id; the reference evaluator runs the
    /// kernels when `None`.
    compiled: Option<&'a [CompiledKernel]>,
    /// The threads a compiled kernel may use.
    threads: usize,
    /// The accelerator of the run, if any, as the run sees it: counting its transfers.
    device: Option<Arc<dyn Device>>,
    /// The same device, for its count.
    counted: Option<Arc<Counted>>,
    /// The model calls of the run on the device and on the host (the device counts the rest).
    transfers: Transfers,
    /// The vocabulary of the first bound token model: its special tokens and words.
    vocab: Option<Vocab>,
    /// The last masked-model input and logits of each candidate site (MDLM's reuse of p(x₀)).
    candidate_cache: Vec<Option<sequence::LogitsCache>>,
}

/// Compiled kernels for the executor to launch, and the threads a launch may use.
#[derive(Clone, Copy)]
pub(crate) struct NativeKernels<'a> {
    pub kernels: &'a [CompiledKernel],
    pub threads: usize,
}

impl<'a> Machine<'a> {
    pub(crate) fn new(
        function: &'a Function,
        params: &'a [Option<ParamValue>],
        models: &'a [Arc<dyn Model>],
        options: &'a RunOptions<'a>,
        native: Option<NativeKernels<'a>>,
    ) -> Result<Machine<'a>, RunError> {
        if models.len() < function.models.len() {
            return Err(RunError::MissingModel(function.models[models.len()].name.clone()));
        }
        let state_shape = match models.first() {
            Some(model) => std::iter::once(options.batch).chain(model.info().sample_shape.iter().copied()).collect(),
            None => vec![options.batch],
        };
        let counted = options.device.clone().map(|device| Arc::new(Counted::new(device)));
        Ok(Machine {
            function,
            params,
            models,
            options,
            state_shape,
            values: vec![None; function.value_types.len()],
            vars: vec![None; function.vars.len()],
            site_steps: vec![0; function.noise_sites as usize],
            replay_next: 0,
            outputs: vec![None; function.outputs.len()],
            output_downloads: vec![None; function.outputs.len()],
            trace: Vec::new(),
            token_trace: Vec::new(),
            model_calls: 0,
            model_calls_by_slot: vec![0; function.models.len()],
            kernel_launches: 0,
            compiled: native.map(|n| n.kernels),
            threads: native.map_or(1, |n| n.threads),
            device: counted.clone().map(|counted| counted as Arc<dyn Device>),
            counted,
            transfers: Transfers::default(),
            vocab: models.iter().find_map(|m| m.tokens()).map(|m| m.vocab().clone()),
            candidate_cache: vec![None; function.noise_sites as usize],
        })
    }

    /// What the run produced.
    pub(crate) fn finish(self) -> Outputs {
        let transfers = self.transfers();
        let values = self
            .function
            .outputs
            .iter()
            .zip(self.outputs)
            .filter_map(|(name, value)| value.map(|v| (name.clone(), v)))
            .collect();
        let output_downloads = self
            .function
            .outputs
            .iter()
            .zip(self.output_downloads)
            .filter_map(|(name, download)| download.map(|d| (name.clone(), d)))
            .collect();
        Outputs {
            values,
            trace: self.trace,
            token_trace: self.token_trace,
            model_calls: self.model_calls,
            model_calls_by_model: self.model_calls_by_slot,
            kernel_launches: self.kernel_launches,
            transfers,
            output_downloads,
        }
    }

    /// The run's transfers: what its device counted, and the model calls the executor counted.
    fn transfers(&self) -> Transfers {
        let mut transfers = self.counted.as_ref().map(|counted| counted.transfers()).unwrap_or_default();
        transfers.host_model_calls = self.transfers.host_model_calls;
        transfers.device_model_calls = self.transfers.device_model_calls;
        transfers
    }

    /// Sets a host value from its 64 bits (an f64's bits, an i64, or 0/1 for a bool).
    pub(crate) fn set_host_bits(&mut self, value: ValueId, bits: u64) {
        let val = match self.function.ty(value) {
            Ty::F64 => Val::F64(f64::from_bits(bits)),
            Ty::I64 => Val::I64(bits as i64),
            Ty::Bool => Val::Bool(bits & 1 == 1),
            Ty::Tensor | Ty::Grid | Ty::Tokens => return,
        };
        self.values[value.0 as usize] = Some(val);
    }

    /// The 64 bits of a host value, as the value's IR type reads them.
    pub(crate) fn host_bits(&self, value: ValueId) -> u64 {
        let val = self.get(value);
        match self.function.ty(value) {
            Ty::F64 => val.f64().to_bits(),
            Ty::I64 => val.i64() as u64,
            Ty::Bool => u64::from(val.bool()),
            Ty::Tensor | Ty::Grid | Ty::Tokens => 0,
        }
    }

    /// The bound model in a slot.
    pub(crate) fn model(&self, slot: ModelSlot) -> &Arc<dyn Model> {
        &self.models[slot.0 as usize]
    }

    /// Point `index` (or the end of pair `index`) of the grid `grid`.
    pub(crate) fn grid_value(&self, grid: ValueId, index: i64, pair_end: bool) -> Result<f64, RunError> {
        let Val::Grid(grid) = self.get(grid) else { return Err(RunError::GridIndex(index)) };
        let list = if pair_end { &grid.pair_ends } else { &grid.points };
        usize::try_from(index).ok().and_then(|i| list.get(i)).copied().ok_or(RunError::GridIndex(index))
    }

    /// Whether a bool value is true (a branch's condition).
    pub(crate) fn is_true(&self, value: ValueId) -> bool {
        self.get(value).bool()
    }

    fn get(&self, value: ValueId) -> Val {
        // The verifier guarantees operands are defined before use in their block.
        self.values[value.0 as usize].clone().unwrap_or(Val::F64(f64::NAN))
    }

    /// A value as a host tensor: a device tensor is copied down, and a host number fills the
    /// state's shape.
    fn tensor(&mut self, value: ValueId) -> Result<Arc<Tensor>, RunError> {
        Ok(match self.get(value) {
            Val::Tensor(t) => t,
            Val::Device(t) => Arc::new(self.download(&t)?),
            other => Arc::new(Tensor::new(
                self.state_shape.clone(),
                vec![other.f64() as f32; self.state_shape.iter().product()],
            )),
        })
    }

    /// A value with any device tensor copied down to the host.
    fn host(&mut self, value: ValueId) -> Result<Val, RunError> {
        Ok(match self.get(value) {
            Val::Device(t) => Val::Tensor(Arc::new(self.download(&t)?)),
            other => other,
        })
    }

    fn download(&mut self, tensor: &DeviceTensor) -> Result<Tensor, RunError> {
        let Some(device) = &self.device else {
            return Err(RunError::Jit("a device tensor exists in a run without a device".into()));
        };
        let data = device.download(tensor.buffer())?;
        Ok(Tensor::new(tensor.shape.clone(), data))
    }

    /// A value as a tensor on `device`: a host tensor or number is copied up, and the copy
    /// replaces the host value, so later kernels reuse it.
    fn device_tensor(&mut self, device: &Arc<dyn Device>, value: ValueId) -> Result<Arc<DeviceTensor>, RunError> {
        let host = match self.get(value) {
            Val::Device(t) => return Ok(t),
            Val::Tensor(t) => t,
            other => Arc::new(Tensor::new(
                self.state_shape.clone(),
                vec![other.f64() as f32; self.state_shape.iter().product()],
            )),
        };
        let uploaded = Arc::new(self.upload(device, &host)?);
        self.values[value.0 as usize] = Some(Val::Device(Arc::clone(&uploaded)));
        Ok(uploaded)
    }

    fn upload(&mut self, device: &Arc<dyn Device>, tensor: &Tensor) -> Result<DeviceTensor, RunError> {
        Ok(DeviceTensor::upload(device, &tensor.data, tensor.shape.clone())?)
    }

    fn set(&mut self, inst: &Inst, value: Val) {
        if let Some(result) = inst.results.first() {
            self.values[result.0 as usize] = Some(value);
        }
    }

    fn label(&self, label: Option<ValueId>) -> Option<i64> {
        label.map(|l| self.get(l).i64())
    }

    fn shape_like(&self, like: Option<ValueId>) -> Vec<usize> {
        match like.map(|l| self.get(l)) {
            Some(Val::Tensor(t)) => t.shape.clone(),
            Some(Val::Device(t)) => t.shape.clone(),
            _ => self.state_shape.clone(),
        }
    }

    /// The step of a noise site's next draw (and counts the draw).
    fn next_step(&mut self, site: u32) -> u32 {
        let index = site as usize;
        if index >= self.site_steps.len() {
            self.site_steps.resize(index + 1, 0);
        }
        let current = self.site_steps[index];
        self.site_steps[index] += 1;
        current
    }

    fn replayed(&mut self, shape: &[usize]) -> Result<Option<Tensor>, RunError> {
        let NoiseSource::Replay(draws) = &self.options.noise else { return Ok(None) };
        let Some(draw) = draws.get(self.replay_next) else {
            return Err(RunError::ReplayExhausted { available: draws.len() });
        };
        if draw.shape != shape {
            return Err(RunError::ReplayShape { expected: shape.to_vec(), found: draw.shape.clone() });
        }
        self.replay_next += 1;
        Ok(Some(draw.clone()))
    }

    pub(crate) fn execute(&mut self, inst: &Inst) -> Result<(), RunError> {
        if let Some(output) = self.evaluate_on_device(&inst.op)? {
            self.transfers.device_model_calls += 1;
            if let Op::Field { model, .. } | Op::Jump { model, .. } = inst.op {
                self.count_calls(Some(model), 1);
            }
            self.set(inst, Val::Device(Arc::new(output)));
            return Ok(());
        }
        let value = match &inst.op {
            Op::Const(c) => Some(Val::from_constant(*c)),
            Op::Param(index) => {
                let name = || self.function.params[*index as usize].name.clone();
                let given = self.params.get(*index as usize).and_then(|p| p.as_ref());
                let default = self.function.params[*index as usize].default.as_ref();
                Some(match (given, default) {
                    (Some(ParamValue::Tensor(t)), _) => Val::Tensor(Arc::new(t.clone())),
                    (Some(ParamValue::Host(c)), _) | (None, Some(c)) => Val::from_constant(*c),
                    (None, None) => return Err(RunError::MissingParam(name())),
                })
            }
            Op::ParamGiven(index) => Some(Val::Bool(matches!(self.params.get(*index as usize), Some(Some(_))))),
            Op::Read(var) => Some(self.vars[var.0 as usize].clone().unwrap_or(Val::F64(f64::NAN))),
            Op::Write(var, value) => {
                self.vars[var.0 as usize] = Some(self.get(*value));
                None
            }
            Op::Unary(op, a) => {
                let a = self.host(*a)?;
                Some(self.unary(*op, a))
            }
            Op::Binary(op, a, b) => {
                let (a, b) = (self.host(*a)?, self.host(*b)?);
                Some(self.binary(*op, a, b)?)
            }
            Op::Interpolant { func, model, t } => Some(match self.host(*t)? {
                // Per-position times: the function at each element's time, in f64, rounded to f32.
                Val::Tensor(times) => {
                    let model = self.model(*model);
                    Val::Tensor(Arc::new(map_times(&times, |time| Ok(interpolant_value(&**model, *func, time)))?))
                }
                time => Val::F64(interpolant_value(&**self.model(*model), *func, time.f64())),
            }),
            Op::Coefficient { which, model, t } => Some(match self.host(*t)? {
                Val::Tensor(times) => {
                    let model = self.model(*model);
                    let coefficient = |time| coefficients(&**model, time).map(|c| coefficient_value(&c, *which));
                    Val::Tensor(Arc::new(map_times(&times, coefficient)?))
                }
                time => Val::F64(coefficient_value(&coefficients(&**self.model(*model), time.f64())?, *which)),
            }),
            Op::Noise { dist, site, like } => {
                let shape = self.shape_like(*like);
                let step = self.next_step(*site);
                let tensor = match self.replayed(&shape)? {
                    Some(t) => t,
                    None => Tensor::noise(*dist, self.options.seed, *site, step, shape),
                };
                Some(Val::Tensor(Arc::new(tensor)))
            }
            Op::Fill { value, like } => {
                let shape = self.shape_like(*like);
                let len = shape.iter().product();
                Some(Val::Tensor(Arc::new(Tensor::new(shape, vec![*value; len]))))
            }
            Op::Positions { like } => Some(Val::Tensor(Arc::new(positions_tensor(self.shape_like(*like))))),
            Op::Field { model, x, t, label, .. } => {
                let x = self.tensor(*x)?;
                self.count_host_model_call();
                let label = self.label(*label);
                let (output, _kind) = match self.host(*t)? {
                    Val::Tensor(times) if times.shape != x.shape => {
                        return Err(RunError::Shape(x.shape.clone(), times.shape.clone()));
                    }
                    Val::Tensor(times) => self.model(*model).field_at(&x, &times, label)?,
                    time => self.model(*model).field(&x, time.f64(), label)?,
                };
                self.count_calls(Some(*model), 1);
                Some(Val::Tensor(Arc::new(output)))
            }
            Op::Jump { model, x, t, s, label, .. } => {
                let x = self.tensor(*x)?;
                self.count_host_model_call();
                let (t, s) = (self.one_time(*model, *t)?, self.one_time(*model, *s)?);
                let label = self.label(*label);
                let output = self.model(*model).jump(&x, t, s, label)?;
                self.count_calls(Some(*model), 1);
                Some(Val::Tensor(Arc::new(output)))
            }
            Op::Reduce(op, x) => {
                let kernel = spec::ReductionKernel::of_input(*op);
                let seed = self.options.seed;
                if let (Val::Device(x), Some(device)) = (self.get(*x), &self.device) {
                    let noise = NoiseLaunch { seed, per_sample: x.len().max(1), slots: &[] };
                    let launch = Launch { len: x.len(), inputs: &[x.buffer()], outputs: &[], params: &[], noise };
                    Some(Val::F64(device.reduce(&kernel, &launch)?))
                } else {
                    let x = self.tensor(*x)?;
                    let noise = NoiseLaunch { seed, per_sample: x.per_sample().max(1), slots: &[] };
                    Some(Val::F64(cpu::reduce(&kernel, x.len(), &[&x.data], &[], &noise)?))
                }
            }
            Op::Grid { spacing, from, to, steps, args, model } => {
                Some(Val::Grid(Arc::new(self.grid(*spacing, *from, *to, *steps, args, *model)?)))
            }
            Op::GridLen(g) => Some(Val::I64(match self.get(*g) {
                Val::Grid(grid) => grid.points.len() as i64,
                _ => 0,
            })),
            Op::GridPoint(g, i) | Op::GridPairEnd(g, i) => {
                let pair_end = matches!(inst.op, Op::GridPairEnd(..));
                Some(Val::F64(self.grid_value(*g, self.get(*i).i64(), pair_end)?))
            }
            Op::Emit { index, value } => {
                let download = match (self.get(*value), &self.counted) {
                    (Val::Device(_), Some(counted)) => Some(counted.download_calls()),
                    _ => None,
                };
                let output = match self.host(*value)? {
                    Val::Tensor(t) => OutputValue::Tensor((*t).clone()),
                    Val::F64(v) => OutputValue::F64(v),
                    Val::I64(v) => OutputValue::I64(v),
                    Val::Bool(v) => OutputValue::Bool(v),
                    Val::Tokens(seq) => OutputValue::Tokens { text: self.row_texts(&seq)?, rows: seq.rows.clone() },
                    Val::Device(_) | Val::Grid(_) => return Ok(()),
                };
                self.outputs[*index as usize] = Some(output);
                self.output_downloads[*index as usize] = download;
                None
            }
            Op::Kernel { kernel, inputs, params, sites, in_place } => {
                self.kernel(inst, *kernel, inputs, params, sites, in_place)?;
                return Ok(());
            }
            Op::Tokens { op, args, model, site, .. } => {
                self.tokens(inst, *op, args, *model, *site)?;
                return Ok(());
            }
            Op::VerbDone { verb } => {
                if self.options.trace {
                    let target = self.function.verbs[*verb as usize].target;
                    match self.vars[target.0 as usize].clone() {
                        Some(Val::Tensor(t)) => self.trace.push((*verb, (*t).clone())),
                        Some(Val::Device(t)) => {
                            let t = self.download(&t)?;
                            self.trace.push((*verb, t));
                        }
                        Some(Val::Tokens(seq)) => self.token_trace.push((*verb, seq.rows.clone())),
                        _ => {}
                    }
                }
                let target = self.function.verbs[*verb as usize].target.0 as usize;
                if let Some(Val::Tokens(seq)) = &self.vars[target]
                    && let Some(ended) = self.through_hook(seq)
                {
                    self.vars[target] = Some(Val::Tokens(Arc::new(ended)));
                }
                if let Some(on_verb) = self.options.on_verb {
                    on_verb(*verb);
                }
                if self.options.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(RunError::Cancelled);
                }
                None
            }
        };
        if let Some(value) = value {
            self.set(inst, value);
        }
        Ok(())
    }

    /// Counts `calls` evaluations of the model in `slot`.
    fn count_calls(&mut self, slot: Option<ModelSlot>, calls: u64) {
        self.model_calls += calls;
        if let Some(count) = slot.and_then(|slot| self.model_calls_by_slot.get_mut(slot.0 as usize)) {
            *count += calls;
        }
    }

    /// The text of each row, up to its first end token: decoded by the first bound token model's
    /// tokenizer when it has one that writes text, else its words; `None` without either.
    fn row_texts(&self, seq: &TokenSeq) -> Result<Option<Vec<String>>, RunError> {
        let Some(model) = self.models.iter().find_map(|m| m.tokens()) else { return Ok(None) };
        let vocab = model.vocab();
        match model.text() {
            Some(text) => {
                let texts =
                    (0..seq.rows.len()).map(|b| text.decode(seq.until_end(b, vocab.eos))).collect::<Result<_, _>>()?;
                Ok(Some(texts))
            }
            None if vocab.words.is_some() => {
                Ok(Some((0..seq.rows.len()).map(|b| sequence::row_text(seq.until_end(b, vocab.eos), vocab)).collect()))
            }
            None => Ok(None),
        }
    }

    fn token_seq(&self, value: ValueId) -> Result<Arc<TokenSeq>, RunError> {
        match self.get(value) {
            Val::Tokens(seq) => Ok(seq),
            _ => Err(RunError::Jit("a token operation was given a value that is not tokens".into())),
        }
    }

    /// The model a token operation calls (its token side is taken with [`token_model_of`]).
    fn token_model(&self, slot: Option<ModelSlot>) -> Result<Arc<dyn Model>, RunError> {
        let slot = slot.ok_or_else(|| RunError::Jit("a token operation that calls a model has none".into()))?;
        Ok(Arc::clone(self.model(slot)))
    }

    fn specials(&self) -> Specials {
        self.vocab.as_ref().map_or(Specials { mask: None, eos: None }, Specials::of)
    }

    /// Shows `seq`'s settled rows to the streaming hook; where it ends rows, the sequence with
    /// those rows ended.
    fn through_hook(&self, seq: &TokenSeq) -> Option<TokenSeq> {
        let on_tokens = self.options.on_tokens?;
        let ending = on_tokens(&seq.settled_rows());
        let eos = self.specials().eos?;
        (!ending.is_empty()).then(|| seq.end_rows(&ending, eos))
    }

    /// Executes a token operation (see [`TokenOp`] for its operands).
    fn tokens(
        &mut self,
        inst: &Inst,
        op: TokenOp,
        args: &[ValueId],
        slot: Option<ModelSlot>,
        site: Option<u32>,
    ) -> Result<(), RunError> {
        let host = |this: &Self, i: usize| args.get(i).map_or(f64::NAN, |v| this.get(*v).f64());
        let int = |this: &Self, i: usize| args.get(i).map_or(0, |v| this.get(*v).i64());
        let seq = |this: &Self, i: usize| -> Result<Arc<TokenSeq>, RunError> {
            let value = args.get(i).ok_or_else(|| RunError::Jit("a token operation lacks an operand".into()))?;
            this.token_seq(*value)
        };
        let noise = match site {
            Some(site) => Noise { seed: self.options.seed, site, step: self.next_step(site) },
            None => Noise { seed: self.options.seed, site: 0, step: 0 },
        };
        let specials = self.specials();
        let sampler_args = |this: &Self, from: usize, kind: SamplerKind| -> Result<Choice, RunError> {
            let values: Vec<f64> = (from..from + kind.arity()).map(|i| host(this, i)).collect();
            Ok(Choice::new(kind, &values).map_err(sequence::SequenceError::from)?)
        };
        let value = match op {
            TokenOp::Prompt => Val::Tokens(Arc::new(TokenSeq::prompt(&self.options.prompt, self.options.batch))),
            TokenOp::ExtendMask => Val::Tokens(Arc::new(seq(self, 0)?.extend_mask(int(self, 1), specials)?)),
            TokenOp::ExtendGuess => Val::Tokens(Arc::new(seq(self, 0)?.extend_guess(int(self, 1), specials)?)),
            TokenOp::Settled => Val::Bool(seq(self, 0)?.settled()),
            TokenOp::Repredict => {
                // The model runs where the run does; the greedy choices are made on the host.
                let model = self.token_model(slot)?;
                let device = self.device.clone();
                let bound = on_device(token_model_of(&model)?, device.as_ref());
                let evaluated_on_device = matches!(bound, BoundTokenModel::Device(_));
                let (repredicted, calls) = sequence::repredict(bound.model(), &*seq(self, 0)?, specials)?;
                self.count_calls(slot, calls);
                if evaluated_on_device {
                    self.transfers.device_model_calls += calls;
                }
                Val::Tokens(Arc::new(repredicted))
            }
            TokenOp::Extend(kind) => {
                let model = self.token_model(slot)?;
                let choice = sampler_args(self, 2, kind)?;
                let device = self.device.clone();
                let bound = on_device(token_model_of(&model)?, device.as_ref());
                let tokens = bound.model();
                let evaluated_on_device = matches!(bound, BoundTokenModel::Device(_));
                let (extended, calls) =
                    sequence::extend(tokens, &*seq(self, 0)?, int(self, 1), kind, choice, specials, noise)?;
                self.count_calls(slot, calls);
                if evaluated_on_device {
                    self.transfers.device_model_calls += calls;
                }
                Val::Tokens(Arc::new(extended))
            }
            TokenOp::Length => Val::I64(seq(self, 0)?.length(specials)),
            TokenOp::Ended => Val::Bool(seq(self, 0)?.ended(specials)),
            TokenOp::Tail => Val::Tokens(Arc::new(seq(self, 0)?.tail(int(self, 1))?)),
            TokenOp::Whole => Val::Tokens(Arc::new(seq(self, 0)?.whole())),
            TokenOp::Candidates => {
                let model = self.token_model(slot)?;
                let device = self.device.clone();
                let bound = on_device(token_model_of(&model)?, device.as_ref());
                let tokens = bound.model();
                let evaluated_on_device = matches!(bound, BoundTokenModel::Device(_));
                let x = seq(self, 0)?;
                let cache_index = site.unwrap_or(0) as usize;
                if cache_index >= self.candidate_cache.len() {
                    self.candidate_cache.resize(cache_index + 1, None);
                }
                let mut cache = self.candidate_cache[cache_index].take();
                let outcome =
                    sequence::candidates(tokens, &x, host(self, 2), host(self, 3), specials, noise, &mut cache);
                self.candidate_cache[cache_index] = cache;
                let (candidates, confidence, calls) = outcome?;
                self.count_calls(slot, calls);
                if evaluated_on_device {
                    self.transfers.device_model_calls += calls;
                }
                if let [tokens_result, confidence_result] = inst.results.as_slice() {
                    self.values[tokens_result.0 as usize] = Some(Val::Tokens(Arc::new(candidates)));
                    self.values[confidence_result.0 as usize] = Some(Val::Tensor(Arc::new(confidence)));
                }
                return Ok(());
            }
            TokenOp::Commit(remask) => {
                let confidence = match args.get(2) {
                    Some(value) => self.tensor(*value)?,
                    None => return Err(RunError::Jit("commit lacks its confidence".into())),
                };
                let threshold = (remask == Remask::Threshold).then(|| host(self, 4));
                let committed = sequence::commit(
                    &*seq(self, 0)?,
                    &*seq(self, 1)?,
                    &confidence,
                    host(self, 3),
                    remask,
                    threshold,
                    specials,
                    noise,
                )?;
                Val::Tokens(Arc::new(committed))
            }
            TokenOp::Propose(kind) => {
                let model = self.token_model(slot)?;
                let choice = sampler_args(self, 2, kind)?;
                let device = self.device.clone();
                let bound = on_device(token_model_of(&model)?, device.as_ref());
                let tokens = bound.model();
                let evaluated_on_device = matches!(bound, BoundTokenModel::Device(_));
                let (draft, calls) = sequence::propose(tokens, &*seq(self, 0)?, int(self, 1), kind, choice, noise)?;
                self.count_calls(slot, calls);
                if evaluated_on_device {
                    self.transfers.device_model_calls += calls;
                }
                Val::Tokens(Arc::new(draft))
            }
            TokenOp::Verify(kind) => {
                let model = self.token_model(slot)?;
                let choice = sampler_args(self, 2, kind)?;
                let device = self.device.clone();
                let bound = on_device(token_model_of(&model)?, device.as_ref());
                let tokens = bound.model();
                let evaluated_on_device = matches!(bound, BoundTokenModel::Device(_));
                let (verified, calls) =
                    sequence::verify(tokens, &*seq(self, 0)?, &*seq(self, 1)?, choice, specials, noise)?;
                self.count_calls(slot, calls);
                if evaluated_on_device {
                    self.transfers.device_model_calls += calls;
                }
                // A verification accepts tokens as a verb does: the streaming hook sees them.
                let verified = self.through_hook(&verified).unwrap_or(verified);
                Val::Tokens(Arc::new(verified))
            }
        };
        self.set(inst, value);
        Ok(())
    }

    fn kernel(
        &mut self,
        inst: &Inst,
        id: KernelId,
        inputs: &[ValueId],
        params: &[ValueId],
        sites: &[u32],
        in_place: &[InPlace],
    ) -> Result<(), RunError> {
        if let Some(device) = self.device.clone() {
            return self.kernel_on_device(&device, inst, id, inputs, params, sites, in_place);
        }
        let kernel = &self.function.kernels[id.0 as usize];
        // Buffer planning: release the variables whose old values die here, so that the inputs
        // written in place have no other owner.
        for update in in_place {
            if let Some(var) = update.var {
                self.vars[var.0 as usize] = None;
            }
        }
        let tensors: Vec<Arc<Tensor>> = inputs.iter().map(|v| self.tensor(*v)).collect::<Result<_, _>>()?;
        for update in in_place {
            self.values[inputs[update.input as usize].0 as usize] = None;
        }
        let shape = tensors.first().map_or_else(|| self.state_shape.clone(), |t| t.shape.clone());
        for t in &tensors {
            if t.shape != shape {
                return Err(RunError::Shape(shape, t.shape.clone()));
            }
        }
        let param_values: Vec<f32> = params.iter().map(|p| self.get(*p).f64() as f32).collect();
        let slots: Vec<NoiseSlot> =
            sites.iter().map(|site| NoiseSlot { site: *site, step: self.next_step(*site) }).collect();
        let len: usize = shape.iter().product();
        let per_sample = shape.iter().skip(1).product::<usize>().max(1);
        let outputs = if matches!(self.options.noise, NoiseSource::Replay(_)) && !slots.is_empty() {
            // Replayed noise enters as extra inputs: rewrite the noise nodes to read them.
            let mut replayed = Vec::new();
            for _ in &slots {
                match self.replayed(&shape)? {
                    Some(t) => replayed.push(t),
                    None => return Err(RunError::ReplayExhausted { available: 0 }),
                }
            }
            let rewritten = replace_noise_with_inputs(kernel);
            let mut all: Vec<&[f32]> = tensors.iter().map(|t| t.data.as_slice()).collect();
            all.extend(replayed.iter().map(|t| t.data.as_slice()));
            let noise = NoiseLaunch { seed: self.options.seed, per_sample, slots: &[] };
            cpu::evaluate(&rewritten, len, &all, &param_values, &noise)?
        } else if in_place.is_empty() {
            let data: Vec<&[f32]> = tensors.iter().map(|t| t.data.as_slice()).collect();
            let noise = NoiseLaunch { seed: self.options.seed, per_sample, slots: &slots };
            match self.compiled {
                Some(compiled) => compiled[id.0 as usize]
                    .run_in_place(self.threads, len, &data, &mut [], &param_values, &noise)?
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect(),
                None => cpu::evaluate(kernel, len, &data, &param_values, &noise)?,
            }
        } else {
            return self.kernel_in_place(inst, id, tensors, in_place, &param_values, &slots, per_sample);
        };
        self.kernel_launches += 1;
        for (result, data) in inst.results.iter().zip(outputs) {
            self.values[result.0 as usize] = Some(Val::Tensor(Arc::new(Tensor::new(shape.clone(), data))));
        }
        Ok(())
    }

    /// Runs a kernel whose planned outputs overwrite the buffers of dead inputs.
    #[allow(clippy::too_many_arguments, reason = "the parts of one launch")]
    fn kernel_in_place(
        &mut self,
        inst: &Inst,
        id: KernelId,
        mut tensors: Vec<Arc<Tensor>>,
        in_place: &[InPlace],
        params: &[f32],
        slots: &[NoiseSlot],
        per_sample: usize,
    ) -> Result<(), RunError> {
        let shape = tensors.first().map_or_else(|| self.state_shape.clone(), |t| t.shape.clone());
        let len: usize = shape.iter().product();
        // Take each in-place input out of the list; it has a single owner now unless something
        // else (a trace, an output) still holds it, in which case it is copied.
        let mut buffers: Vec<(usize, usize, Vec<f32>)> = Vec::new();
        for update in in_place {
            let slot = &mut tensors[update.input as usize];
            let taken = std::mem::replace(slot, Arc::new(Tensor::new(vec![0], Vec::new())));
            let data = Arc::try_unwrap(taken).map_or_else(|shared| shared.data.clone(), |owned| owned.data);
            buffers.push((update.input as usize, update.output as usize, data));
        }
        let data: Vec<&[f32]> = tensors.iter().map(|t| t.data.as_slice()).collect();
        let mut entries: Vec<cpu::InPlace<'_>> = buffers
            .iter_mut()
            .map(|(input, output, buffer)| cpu::InPlace { input: *input, output: *output, buffer })
            .collect();
        let noise = NoiseLaunch { seed: self.options.seed, per_sample, slots };
        let outputs = match self.compiled {
            Some(compiled) => {
                compiled[id.0 as usize].run_in_place(self.threads, len, &data, &mut entries, params, &noise)?
            }
            None => {
                cpu::evaluate_in_place(&self.function.kernels[id.0 as usize], len, &data, &mut entries, params, &noise)?
            }
        };
        drop(entries);
        self.kernel_launches += 1;
        for (output, (result, data)) in inst.results.iter().zip(outputs).enumerate() {
            let data = match data {
                Some(data) => data,
                None => match buffers.iter_mut().find(|(_, o, _)| *o == output) {
                    Some((_, _, buffer)) => std::mem::take(buffer),
                    None => Vec::new(),
                },
            };
            self.values[result.0 as usize] = Some(Val::Tensor(Arc::new(Tensor::new(shape.clone(), data))));
        }
        Ok(())
    }

    /// Evaluates a model call on the run's device, when there is one and the model evaluates
    /// there; `None` for every other instruction, and for calls with per-position times, which
    /// the host evaluates (a device model takes one time per evaluation).
    fn evaluate_on_device(&mut self, op: &Op) -> Result<Option<DeviceTensor>, RunError> {
        let (Op::Field { model, .. } | Op::Jump { model, .. }) = op else { return Ok(None) };
        if op_times(op).any(|time| self.function.ty(time) != Ty::F64) {
            return Ok(None);
        }
        let Some(device) = self.device.clone().filter(|d| d.has_linear()) else { return Ok(None) };
        let net = Arc::clone(self.model(*model));
        let Some(on_device) = net.on_device() else { return Ok(None) };
        Ok(Some(match *op {
            Op::Field { x, t, label, .. } => {
                let x = self.device_tensor(&device, x)?;
                on_device.field_on(&device, &x, self.get(t).f64(), self.label(label))?
            }
            Op::Jump { x, t, s, label, .. } => {
                let x = self.device_tensor(&device, x)?;
                on_device.jump_on(&device, &x, self.get(t).f64(), self.get(s).f64(), self.label(label))?
            }
            _ => return Ok(None),
        }))
    }

    /// A two-time model's time as one number: a tensor of per-position times must hold the same
    /// time everywhere, since such a model is told one start and one target per evaluation.
    fn one_time(&mut self, slot: ModelSlot, time: ValueId) -> Result<f64, RunError> {
        match self.host(time)? {
            Val::Tensor(times) => uniform_time(&times).ok_or_else(|| {
                let info = self.model(slot).info();
                RunError::Model(ModelError::Unsupported {
                    model: info.source.clone(),
                    kind: info.kind,
                    what: "jump with a different time per position".into(),
                })
            }),
            other => Ok(other.f64()),
        }
    }

    /// Counts a model evaluation on the host during a run on a device (its input came down and
    /// its output goes up).
    fn count_host_model_call(&mut self) {
        if self.device.is_some() {
            self.transfers.host_model_calls += 1;
        }
    }

    /// Launches a kernel on the run's device. Its inputs move to the device if they are not
    /// there yet; an output planned to overwrite a dead input reuses that input's buffer when
    /// nothing else holds it, and gets a new buffer otherwise.
    #[allow(clippy::too_many_arguments, reason = "the parts of one launch")]
    fn kernel_on_device(
        &mut self,
        device: &Arc<dyn Device>,
        inst: &Inst,
        id: KernelId,
        inputs: &[ValueId],
        params: &[ValueId],
        sites: &[u32],
        in_place: &[InPlace],
    ) -> Result<(), RunError> {
        for update in in_place {
            if let Some(var) = update.var {
                self.vars[var.0 as usize] = None;
            }
        }
        let mut tensors: Vec<Arc<DeviceTensor>> =
            inputs.iter().map(|v| self.device_tensor(device, *v)).collect::<Result<_, _>>()?;
        for update in in_place {
            self.values[inputs[update.input as usize].0 as usize] = None;
        }
        let shape = tensors.first().map_or_else(|| self.state_shape.clone(), |t| t.shape.clone());
        if let Some(t) = tensors.iter().find(|t| t.shape != shape) {
            return Err(RunError::Shape(shape, t.shape.clone()));
        }
        let param_values: Vec<f32> = params.iter().map(|p| self.get(*p).f64() as f32).collect();
        let slots: Vec<NoiseSlot> =
            sites.iter().map(|site| NoiseSlot { site: *site, step: self.next_step(*site) }).collect();
        let len: usize = shape.iter().product();
        let per_sample = shape.iter().skip(1).product::<usize>().max(1);
        let mut kernel = std::borrow::Cow::Borrowed(&self.function.kernels[id.0 as usize]);
        let mut launch_slots = slots.as_slice();
        if matches!(self.options.noise, NoiseSource::Replay(_)) && !slots.is_empty() {
            // Replayed noise enters as extra inputs: rewrite the noise nodes to read them.
            for _ in &slots {
                let Some(t) = self.replayed(&shape)? else { return Err(RunError::ReplayExhausted { available: 0 }) };
                tensors.push(Arc::new(self.upload(device, &t)?));
            }
            kernel = std::borrow::Cow::Owned(replace_noise_with_inputs(&kernel));
            launch_slots = &[];
        }
        let input_buffers: Vec<_> = tensors.iter().map(|t| t.buffer()).collect();
        // Inputs written in place that this launch holds alone: their outputs reuse the buffer.
        let mut held: Vec<Held> = tensors.into_iter().map(Held::Shared).collect();
        for update in in_place {
            let slot = &mut held[update.input as usize];
            if let Held::Shared(tensor) = std::mem::replace(slot, Held::Taken) {
                *slot = match Arc::try_unwrap(tensor) {
                    Ok(alone) => Held::Owned(alone),
                    Err(shared) => Held::Shared(shared),
                };
            }
        }
        let reused_input = |output: usize, held: &[Held]| {
            in_place
                .iter()
                .find(|u| u.output as usize == output && matches!(held[u.input as usize], Held::Owned(_)))
                .map(|u| u.input as usize)
        };
        let mut fresh: Vec<Option<DeviceTensor>> = Vec::new();
        let mut output_buffers = Vec::new();
        for output in 0..kernel.outputs.len() {
            match reused_input(output, &held) {
                Some(input) => {
                    output_buffers.push(input_buffers[input]);
                    fresh.push(None);
                }
                None => {
                    let t = DeviceTensor::alloc(device, shape.clone())?;
                    output_buffers.push(t.buffer());
                    fresh.push(Some(t));
                }
            }
        }
        let noise = NoiseLaunch { seed: self.options.seed, per_sample, slots: launch_slots };
        let launch = Launch { len, inputs: &input_buffers, outputs: &output_buffers, params: &param_values, noise };
        device.execute(&DeviceOp::elementwise(&kernel, &launch))?;
        self.kernel_launches += 1;
        for (output, (result, fresh)) in inst.results.iter().zip(fresh).enumerate() {
            let tensor = match (fresh, reused_input(output, &held)) {
                (Some(t), _) => t,
                (None, Some(input)) => match std::mem::replace(&mut held[input], Held::Taken) {
                    Held::Owned(t) => DeviceTensor::new(shape.clone(), t.into_buffer(), Arc::clone(device)),
                    // `reused_input` only names inputs that are `Owned`.
                    Held::Shared(_) | Held::Taken => continue,
                },
                // Every output without a fresh buffer has an owned input.
                (None, None) => continue,
            };
            self.values[result.0 as usize] = Some(Val::Device(Arc::new(tensor)));
        }
        Ok(())
    }

    fn grid(
        &self,
        spacing: SpacingKind,
        from: ValueId,
        to: ValueId,
        steps: ValueId,
        args: &[ValueId],
        model: Option<ModelSlot>,
    ) -> Result<Grid, RunError> {
        let (from, to) = (self.get(from).f64(), self.get(to).f64());
        let arg = |i: usize| args.get(i).map(|a| self.get(*a));
        if spacing == SpacingKind::Explicit {
            let points: Vec<f64> = args.iter().map(|a| self.get(*a).f64()).collect();
            let pair_ends = points.iter().skip(1).copied().collect();
            return Ok(Grid { points, pair_ends });
        }
        let steps = usize::try_from(self.get(steps).i64()).unwrap_or(0);
        let f = |i: usize| arg(i).map_or(f64::NAN, |v| v.f64());
        let i = |i: usize| arg(i).map_or(0, |v| v.i64());
        let b = |i: usize| arg(i).is_some_and(|v| v.bool());
        let spacing = match spacing {
            SpacingKind::Uniform => Spacing::Uniform,
            SpacingKind::Quadratic => Spacing::Quadratic,
            SpacingKind::Cosine => Spacing::Cosine,
            SpacingKind::Karras => Spacing::Karras { rho: f(0) },
            SpacingKind::Exponential => Spacing::Exponential,
            SpacingKind::LogSnr => Spacing::LogSnr,
            SpacingKind::Shift => Spacing::Shift { k: f(0) },
            SpacingKind::Leading => Spacing::Leading { offset: i(0), train_steps: i(1), ddim_stride: b(2) },
            SpacingKind::Trailing => Spacing::Trailing { train_steps: i(0), ddim_stride: b(1) },
            SpacingKind::Linspace => Spacing::Linspace { train_steps: i(0), ddim_stride: b(1) },
            SpacingKind::Explicit => Spacing::Uniform,
        };
        let interpolant = match model {
            Some(slot) => self.model(slot).info().interpolant.clone(),
            None => crate::interpolant::Interpolant::RectifiedFlow,
        };
        Ok(materialize(from, to, steps, &spacing, &interpolant)?)
    }

    fn unary(&self, op: UnaryOp, a: Val) -> Val {
        if let Val::Tensor(t) = &a {
            let Some(kernel_op) = op.elementwise() else { return Val::F64(f64::NAN) };
            let data = t.data.iter().map(|&x| cpu::apply_unary(kernel_op, x)).collect();
            return Val::Tensor(Arc::new(Tensor::new(t.shape.clone(), data)));
        }
        match a.constant().and_then(|c| host::unary(op, c)) {
            Some(c) => Val::from_constant(c),
            None => Val::F64(f64::NAN),
        }
    }

    fn binary(&self, op: BinaryOp, a: Val, b: Val) -> Result<Val, RunError> {
        match (&a, &b) {
            (Val::Tensor(_), _) | (_, Val::Tensor(_)) => {
                let Some(kernel_op) = op.elementwise() else { return Err(RunError::TensorOperation) };
                let (ta, tb) = (self.as_tensor_operand(&a), self.as_tensor_operand(&b));
                let shape = match (&a, &b) {
                    (Val::Tensor(t), Val::Tensor(u)) if t.shape != u.shape => {
                        return Err(RunError::Shape(t.shape.clone(), u.shape.clone()));
                    }
                    (Val::Tensor(t), _) | (_, Val::Tensor(t)) => t.shape.clone(),
                    _ => self.state_shape.clone(),
                };
                let len = shape.iter().product::<usize>();
                let data = (0..len).map(|i| cpu::apply_binary(kernel_op, ta(i), tb(i))).collect();
                Ok(Val::Tensor(Arc::new(Tensor::new(shape, data))))
            }
            _ => match (a.constant(), b.constant()) {
                (Some(x), Some(y)) => match host::binary(op, x, y) {
                    Some(c) => Ok(Val::from_constant(c)),
                    None if op == BinaryOp::Rem => Err(RunError::DivisionByZero),
                    None => Ok(Val::F64(f64::NAN)),
                },
                _ => Ok(Val::F64(f64::NAN)),
            },
        }
    }

    /// An elementwise operand: a tensor's elements, or a host value rounded to f32 once.
    fn as_tensor_operand(&self, value: &Val) -> impl Fn(usize) -> f32 + use<> {
        let (data, scalar) = match value {
            Val::Tensor(t) => (Some(Arc::clone(t)), 0.0),
            other => (None, other.f64() as f32),
        };
        move |i| data.as_ref().map_or(scalar, |t| t.data[i])
    }
}

/// A function of a model's interpolant at `t`.
/// A token model as a run calls it: on the run's device when the model has a device evaluation.
enum BoundTokenModel<'a> {
    Host(&'a dyn TokenModel),
    Device(OnDevice<'a>),
}

impl BoundTokenModel<'_> {
    fn model(&self) -> &dyn TokenModel {
        match self {
            BoundTokenModel::Host(model) => *model,
            BoundTokenModel::Device(on_device) => on_device,
        }
    }
}

/// `model` bound to the run's device, if there is one and the model runs on devices.
fn on_device<'a>(model: &'a dyn TokenModel, device: Option<&'a Arc<dyn Device>>) -> BoundTokenModel<'a> {
    match (device, model.on_device()) {
        (Some(device), Some(network)) => BoundTokenModel::Device(OnDevice { model, device, network }),
        _ => BoundTokenModel::Host(model),
    }
}

/// The token side of a model a token operation calls; binding checks the kind first, so a model
/// without one is refused here only when a schedule is run without that check.
fn token_model_of(model: &Arc<dyn Model>) -> Result<&dyn TokenModel, RunError> {
    model.tokens().ok_or_else(|| {
        let info = model.info();
        RunError::ModelKind(
            info.kind.name().to_string(),
            format!("`{}` is not a token model, and the schedule generates tokens", info.source),
        )
    })
}

pub(crate) fn interpolant_value(model: &dyn Model, func: InterpolantFn, t: f64) -> f64 {
    let interpolant = &model.info().interpolant;
    match func {
        InterpolantFn::Alpha => interpolant.alpha(t),
        InterpolantFn::Sigma => interpolant.sigma(t),
        InterpolantFn::Lambda => interpolant.lambda(t),
        InterpolantFn::DAlpha => interpolant.d_alpha(t),
        InterpolantFn::DSigma => interpolant.d_sigma(t),
    }
}

/// The coefficients that convert a model's field output at `t` to x̂₀ and ε̂.
pub(crate) fn coefficients(model: &dyn Model, t: f64) -> Result<FieldCoefficients, RunError> {
    let info = model.info();
    let Some(kind) = field_kind_of(info.kind) else {
        return Err(RunError::ModelKind(info.kind.name().to_string(), "they have no continuous field".into()));
    };
    Ok(field_coefficients(kind, &info.interpolant, t))
}

/// One of the four conversion coefficients.
pub(crate) fn coefficient_value(c: &FieldCoefficients, which: Coefficient) -> f64 {
    match which {
        Coefficient::X0FromX => c.x0.0,
        Coefficient::X0FromOutput => c.x0.1,
        Coefficient::EpsFromX => c.eps.0,
        Coefficient::EpsFromOutput => c.eps.1,
    }
}

/// The times of a model call: `t`, and `s` for a jump.
fn op_times(op: &Op) -> impl Iterator<Item = ValueId> {
    let (t, s) = match *op {
        Op::Field { t, .. } => (Some(t), None),
        Op::Jump { t, s, .. } => (Some(t), Some(s)),
        _ => (None, None),
    };
    t.into_iter().chain(s)
}

/// `f` of every element of a tensor of per-position times, computed in f64 from the f32 time and
/// rounded to f32.
fn map_times(times: &Tensor, f: impl Fn(f64) -> Result<f64, RunError>) -> Result<Tensor, RunError> {
    let data = times.data.iter().map(|&time| f(f64::from(time)).map(|v| v as f32)).collect::<Result<_, _>>()?;
    Ok(Tensor::new(times.shape.clone(), data))
}

/// A tensor of `shape` whose elements hold their index along the sequence axis, the first axis
/// after the batch (all zero when the shape has no such axis).
fn positions_tensor(shape: Vec<usize>) -> Tensor {
    let per_sample = shape.iter().skip(1).product::<usize>().max(1);
    let per_position = shape.iter().skip(2).product::<usize>().max(1);
    let len = shape.iter().product();
    let data = (0..len).map(|i| ((i % per_sample) / per_position) as f32).collect();
    Tensor::new(shape, data)
}

/// An input of a device launch, as the launch holds it.
enum Held {
    /// Others may hold it too.
    Shared(Arc<DeviceTensor>),
    /// Only this launch holds it: an in-place output may take its buffer.
    Owned(DeviceTensor),
    /// Its buffer went to an output.
    Taken,
}

/// A copy of `kernel` whose noise slots read extra inputs (after the kernel's own) instead.
fn replace_noise_with_inputs(kernel: &spec::ElementwiseKernel) -> spec::ElementwiseKernel {
    let mut rewritten = kernel.clone();
    for node in &mut rewritten.nodes {
        if let spec::Node::Noise(_, slot) = *node {
            *node = spec::Node::Input(kernel.inputs + slot);
        }
    }
    rewritten.inputs += kernel.noise_slots;
    rewritten.noise_slots = 0;
    rewritten
}
