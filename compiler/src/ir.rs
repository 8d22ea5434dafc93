//! The intermediate representation: one [`Function`] per schedule, a control-flow graph of
//! blocks (petgraph) whose instructions form a dataflow DAG of SSA values.
//!
//! Values are local to the block that defines them; everything that crosses a block boundary goes
//! through a mutable [`VarId`] (`Read` / `Write`). This keeps every block a self-contained DAG,
//! which is what fusion works on, and makes loops and branches need no phi nodes.

use std::fmt;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use sched_kernels::spec::{self, Distribution, ElementwiseKernel, ReduceOp};

/// An SSA value, defined by exactly one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// A mutable variable: a source variable, a loop counter, a carry, a grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(pub u32);

/// A basic block: a node of the control-flow graph.
pub type BlockId = NodeIndex<u32>;

/// A fused kernel of the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelId(pub u32);

impl UnaryOp {
    /// The kernel operation that computes this operation on tensors; `None` for the host-only
    /// operations (logic and conversions), which the checker never applies to tensors.
    pub fn elementwise(self) -> Option<spec::UnaryOp> {
        Some(match self {
            UnaryOp::Neg => spec::UnaryOp::Neg,
            UnaryOp::Sqrt => spec::UnaryOp::Sqrt,
            UnaryOp::Exp => spec::UnaryOp::Exp,
            UnaryOp::Log => spec::UnaryOp::Log,
            UnaryOp::Expm1 => spec::UnaryOp::Expm1,
            UnaryOp::Log1p => spec::UnaryOp::Log1p,
            UnaryOp::Sin => spec::UnaryOp::Sin,
            UnaryOp::Cos => spec::UnaryOp::Cos,
            UnaryOp::Tan => spec::UnaryOp::Tan,
            UnaryOp::Tanh => spec::UnaryOp::Tanh,
            UnaryOp::Atan => spec::UnaryOp::Atan,
            UnaryOp::Abs => spec::UnaryOp::Abs,
            UnaryOp::Sigmoid => spec::UnaryOp::Sigmoid,
            UnaryOp::Floor => spec::UnaryOp::Floor,
            UnaryOp::Ceil => spec::UnaryOp::Ceil,
            UnaryOp::Not | UnaryOp::ToFloat | UnaryOp::Truncate | UnaryOp::Round => return None,
        })
    }
}

impl BinaryOp {
    /// The kernel operation that computes this operation on tensors; `None` for comparisons,
    /// logic and `%`, which the checker never applies to tensors.
    pub fn elementwise(self) -> Option<spec::BinaryOp> {
        Some(match self {
            BinaryOp::Add => spec::BinaryOp::Add,
            BinaryOp::Sub => spec::BinaryOp::Sub,
            BinaryOp::Mul => spec::BinaryOp::Mul,
            BinaryOp::Div => spec::BinaryOp::Div,
            BinaryOp::Pow => spec::BinaryOp::Pow,
            BinaryOp::Min => spec::BinaryOp::Min,
            BinaryOp::Max => spec::BinaryOp::Max,
            _ => return None,
        })
    }
}

/// The type of a value or variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    F64,
    I64,
    Bool,
    /// A batch of continuous states (f32 on the device).
    Tensor,
    /// A materialised time grid.
    Grid,
    /// A batch of token rows (with, for a draft, the distributions it was drawn from).
    Tokens,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Constant {
    F64(f64),
    I64(i64),
    Bool(bool),
}

/// Operations of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Not,
    Sqrt,
    Exp,
    Log,
    Expm1,
    Log1p,
    Sin,
    Cos,
    Tan,
    Tanh,
    Atan,
    Abs,
    Sigmoid,
    Floor,
    Ceil,
    /// Int to float.
    ToFloat,
    /// Float to int, toward zero (saturating).
    Truncate,
    /// Float to int, to nearest with halves away from zero (saturating).
    Round,
}

/// Operations of two operands. Arithmetic works on host numbers and tensors (host operands
/// broadcast); comparisons and logic on host values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
    Min,
    Max,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

/// A function of the bound model's interpolant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InterpolantFn {
    Alpha,
    Sigma,
    Lambda,
    DAlpha,
    DSigma,
}

/// One of the four coefficients that turn a model's raw field output `m` at `(x, t)` into
/// `x̂₀ = X0FromX·x + X0FromOutput·m` and `ε̂ = EpsFromX·x + EpsFromOutput·m`; they depend on the
/// model's kind and interpolant, which are known only when a model is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coefficient {
    X0FromX,
    X0FromOutput,
    EpsFromX,
    EpsFromOutput,
}

/// The grid spacings, with their host arguments given as values of the `Grid` instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpacingKind {
    Uniform,
    Quadratic,
    Cosine,
    /// Argument: rho.
    Karras,
    Exponential,
    LogSnr,
    /// Argument: k.
    Shift,
    /// Arguments: offset, train_steps, ddim_stride.
    Leading,
    /// Arguments: train_steps, ddim_stride.
    Trailing,
    /// Arguments: train_steps, ddim_stride.
    Linspace,
    /// `times(...)`: the arguments are the points.
    Explicit,
}

/// Where a model is called from: a model parameter of the schedule, with its conditioning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelSlot(pub u32);

/// An operation. Operands are values defined earlier in the same block.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Const(Constant),
    /// The value of schedule parameter `index` (host scalar or initial tensor).
    Param(u32),
    /// Whether the caller gave tensor parameter `index` (otherwise its default is computed).
    ParamGiven(u32),
    Read(VarId),
    Write(VarId, ValueId),
    Unary(UnaryOp, ValueId),
    Binary(BinaryOp, ValueId, ValueId),
    /// A function of the bound model's interpolant at `t`: a host float, or a tensor of
    /// per-element values when `t` is a tensor of per-position times.
    Interpolant {
        func: InterpolantFn,
        model: ModelSlot,
        t: ValueId,
    },
    /// A conversion coefficient at `t`, of `t`'s type like `Interpolant`.
    Coefficient {
        which: Coefficient,
        model: ModelSlot,
        t: ValueId,
    },
    /// Fresh noise shaped like `like` (or like the schedule's state when `None`), from the
    /// counter-based stream at noise site `site`.
    Noise {
        dist: Distribution,
        site: u32,
        like: Option<ValueId>,
    },
    /// A tensor filled with a constant, shaped like `like` (or the schedule's state).
    Fill {
        value: f32,
        like: Option<ValueId>,
    },
    /// A tensor shaped like `like` (or the schedule's state) whose every element holds the index
    /// of its position along the sequence axis, the first axis after the batch: element
    /// `(b, p, ...)` is `p` (per-position times of diffusion forcing are arithmetic on it).
    Positions {
        like: Option<ValueId>,
    },
    /// One model evaluation of the local field at `(x, t)`: the raw output. `verb` is the verb
    /// of the source that makes the call (for error locations).
    Field {
        model: ModelSlot,
        x: ValueId,
        t: ValueId,
        label: Option<ValueId>,
        verb: Option<u32>,
    },
    /// One evaluation of a two-time model: `x` at `t` moved to `s`.
    Jump {
        model: ModelSlot,
        x: ValueId,
        t: ValueId,
        s: ValueId,
        label: Option<ValueId>,
        verb: Option<u32>,
    },
    /// A reduction of a tensor to a host float (the host waits for the device).
    Reduce(ReduceOp, ValueId),
    /// A time grid; `args` are the spacing's arguments in the order of [`SpacingKind`].
    Grid {
        spacing: SpacingKind,
        from: ValueId,
        to: ValueId,
        steps: ValueId,
        args: Vec<ValueId>,
        model: Option<ModelSlot>,
    },
    /// The number of points of a grid.
    GridLen(ValueId),
    /// Point `index` of a grid.
    GridPoint(ValueId, ValueId),
    /// The end time of pair `index` of a grid.
    GridPairEnd(ValueId, ValueId),
    /// Makes a value output number `index` of the schedule.
    Emit {
        index: u32,
        value: ValueId,
    },
    /// A fused elementwise kernel over tensors the shape of `inputs[0]` (or of the schedule's
    /// state when it has no tensor input); `params` are host floats. `in_place` (filled by buffer
    /// planning) lists outputs that may be written over the buffer of a dead input.
    Kernel {
        kernel: KernelId,
        inputs: Vec<ValueId>,
        params: Vec<ValueId>,
        sites: Vec<u32>,
        in_place: Vec<InPlace>,
    },
    /// Marks the end of one verb (refine, jump, extend) for progress reporting and traces.
    VerbDone {
        verb: u32,
    },
    /// An operation on token sequences; `args` are its operands in the order [`TokenOp`] gives.
    /// `site` is its noise site when it draws random numbers, `model` the model it calls.
    Tokens {
        op: TokenOp,
        args: Vec<ValueId>,
        model: Option<ModelSlot>,
        site: Option<u32>,
        verb: Option<u32>,
    },
}

/// How new tokens are chosen from a model's logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// The most likely token. No arguments.
    Greedy,
    /// Sampling after Hugging Face's processors. Arguments: temperature, top_k, top_p, min_p.
    Sample,
    /// Each new position from its own head of a multi-token model, in one call. Argument:
    /// temperature.
    Heads,
}

impl SamplerKind {
    /// The number of host arguments the sampler takes.
    pub fn arity(self) -> usize {
        match self {
            SamplerKind::Greedy => 0,
            SamplerKind::Sample => 4,
            SamplerKind::Heads => 1,
        }
    }
}

/// Which masked positions an unmasking step commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Remask {
    /// Each masked position stays masked with probability `keep` (MDLM, BD3-LM).
    Posterior,
    /// The most confident candidates, as many as the time grid schedules (LLaDA).
    Confidence,
    /// Randomly chosen candidates, as many as the time grid schedules (LLaDA).
    Random,
    /// Exactly one uniformly chosen masked position (BD3-LM's first-hitting sampler).
    FirstHitting,
    /// Every candidate more likely than a threshold, and at least one (Fast-dLLM). Argument: p.
    Threshold,
}

/// The operations on token sequences. The operands (`args`) of each are listed in order; a
/// sampler's host arguments (see [`SamplerKind::arity`]) come last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenOp {
    /// The run's prompt, one row per sample. No operands; result: tokens.
    Prompt,
    /// `seq` extended by `count` mask tokens. Operands: seq, count.
    ExtendMask,
    /// `seq` extended by `count` tentative guesses (copies of each row's last token) for a
    /// Jacobi refinement. Operands: seq, count.
    ExtendGuess,
    /// `seq` extended by `count` tokens chosen by the sampler: one model call per token, or one
    /// call in all for [`SamplerKind::Heads`]. Operands: seq, count, sampler arguments.
    Extend(SamplerKind),
    /// The number of positions of the shortest row still generating. Operand: seq; result: i64.
    Length,
    /// Whether every row has produced the end token. Operand: seq; result: bool.
    Ended,
    /// The last `count` positions of `seq` as the window a step refines. Operands: seq, count.
    Tail,
    /// `seq` with its window reset to the whole sequence. Operand: seq.
    Whole,
    /// One masked-model call (two with guidance): a candidate token at every masked position of
    /// the window and its probability. Operands: x, t, temperature, guidance scale; results:
    /// tokens, confidence tensor.
    Candidates,
    /// Commits some candidates of the window. Operands: x, candidates, confidence, keep (s/t),
    /// then the threshold for [`Remask::Threshold`].
    Commit(Remask),
    /// One causal-model call: every position of the window re-predicted greedily from the
    /// tokens before it (a Jacobi iteration). Operand: x.
    Repredict,
    /// Whether no position of `seq` is a tentative guess. Operand: seq; result: bool.
    Settled,
    /// `k` draft tokens after `seq`, with the distributions they were drawn from. Operands: seq,
    /// k, sampler arguments.
    Propose(SamplerKind),
    /// `seq` extended by the accepted prefix of `draft` and one token of the model. Operands:
    /// seq, draft, sampler arguments.
    Verify(SamplerKind),
}

impl TokenOp {
    /// Whether the operation evaluates its model.
    pub fn calls_model(self) -> bool {
        matches!(
            self,
            TokenOp::Extend(_) | TokenOp::Candidates | TokenOp::Propose(_) | TokenOp::Verify(_) | TokenOp::Repredict
        )
    }

    /// Whether the operation draws random numbers (and so needs a noise site).
    pub fn draws_noise(self) -> bool {
        matches!(
            self,
            TokenOp::Extend(_) | TokenOp::Candidates | TokenOp::Commit(_) | TokenOp::Propose(_) | TokenOp::Verify(_)
        )
    }

    /// The name the IR's text form uses.
    pub fn name(self) -> String {
        match self {
            TokenOp::Prompt => "prompt".into(),
            TokenOp::ExtendMask => "extend_mask".into(),
            TokenOp::ExtendGuess => "extend_guess".into(),
            TokenOp::Repredict => "repredict".into(),
            TokenOp::Settled => "settled".into(),
            TokenOp::Extend(sampler) => format!("extend.{}", sampler_name(sampler)),
            TokenOp::Length => "length".into(),
            TokenOp::Ended => "ended".into(),
            TokenOp::Tail => "tail".into(),
            TokenOp::Whole => "whole".into(),
            TokenOp::Candidates => "candidates".into(),
            TokenOp::Commit(remask) => format!("commit.{}", remask_name(remask)),
            TokenOp::Propose(sampler) => format!("propose.{}", sampler_name(sampler)),
            TokenOp::Verify(sampler) => format!("verify.{}", sampler_name(sampler)),
        }
    }
}

fn sampler_name(sampler: SamplerKind) -> &'static str {
    match sampler {
        SamplerKind::Greedy => "greedy",
        SamplerKind::Sample => "sample",
        SamplerKind::Heads => "heads",
    }
}

fn remask_name(remask: Remask) -> &'static str {
    match remask {
        Remask::Posterior => "posterior",
        Remask::Confidence => "confidence",
        Remask::Random => "random",
        Remask::FirstHitting => "first_hitting",
        Remask::Threshold => "threshold",
    }
}

impl Op {
    /// The values this operation reads.
    pub fn operands(&self) -> Vec<ValueId> {
        match self {
            Op::Const(_) | Op::Param(_) | Op::ParamGiven(_) | Op::Read(_) | Op::VerbDone { .. } => Vec::new(),
            Op::Write(_, v) | Op::Unary(_, v) | Op::Reduce(_, v) | Op::GridLen(v) => vec![*v],
            Op::Binary(_, a, b) | Op::GridPoint(a, b) | Op::GridPairEnd(a, b) => vec![*a, *b],
            Op::Interpolant { t, .. } | Op::Coefficient { t, .. } => vec![*t],
            Op::Noise { like, .. } | Op::Fill { like, .. } | Op::Positions { like } => like.iter().copied().collect(),
            Op::Field { x, t, label, .. } => [*x, *t].into_iter().chain(label.iter().copied()).collect(),
            Op::Jump { x, t, s, label, .. } => [*x, *t, *s].into_iter().chain(label.iter().copied()).collect(),
            Op::Grid { from, to, steps, args, .. } => {
                [*from, *to, *steps].into_iter().chain(args.iter().copied()).collect()
            }
            Op::Emit { value, .. } => vec![*value],
            Op::Kernel { inputs, params, .. } => inputs.iter().chain(params).copied().collect(),
            Op::Tokens { args, .. } => args.clone(),
        }
    }

    /// Rewrites every operand with `map`.
    pub fn map_operands(&mut self, mut map: impl FnMut(ValueId) -> ValueId) {
        let mut m = |v: &mut ValueId| *v = map(*v);
        match self {
            Op::Const(_) | Op::Param(_) | Op::ParamGiven(_) | Op::Read(_) | Op::VerbDone { .. } => {}
            Op::Write(_, v) | Op::Unary(_, v) | Op::Reduce(_, v) | Op::GridLen(v) => m(v),
            Op::Binary(_, a, b) | Op::GridPoint(a, b) | Op::GridPairEnd(a, b) => {
                m(a);
                m(b);
            }
            Op::Interpolant { t, .. } | Op::Coefficient { t, .. } => m(t),
            Op::Noise { like, .. } | Op::Fill { like, .. } | Op::Positions { like } => like.iter_mut().for_each(m),
            Op::Field { x, t, label, .. } => {
                m(x);
                m(t);
                label.iter_mut().for_each(m);
            }
            Op::Jump { x, t, s, label, .. } => {
                m(x);
                m(t);
                m(s);
                label.iter_mut().for_each(m);
            }
            Op::Grid { from, to, steps, args, .. } => {
                m(from);
                m(to);
                m(steps);
                args.iter_mut().for_each(m);
            }
            Op::Emit { value, .. } => m(value),
            Op::Kernel { inputs, params, .. } => inputs.iter_mut().chain(params.iter_mut()).for_each(m),
            Op::Tokens { args, .. } => args.iter_mut().for_each(m),
        }
    }

    /// Whether the operation only computes its results from its operands (no effect, no
    /// randomness), so that equal operations on equal operands give equal results. `Read` is
    /// pure between writes of its variable; the passes that use this handle that.
    pub fn is_pure(&self) -> bool {
        match self {
            Op::Tokens { op, .. } => !op.calls_model() && !op.draws_noise() && *op != TokenOp::Prompt,
            _ => !matches!(
                self,
                Op::Write(..) | Op::Noise { .. } | Op::Emit { .. } | Op::Kernel { .. } | Op::VerbDone { .. }
            ),
        }
    }

    /// Whether the operation evaluates a model.
    pub fn calls_model(&self) -> bool {
        match self {
            Op::Tokens { op, .. } => op.calls_model(),
            _ => matches!(self, Op::Field { .. } | Op::Jump { .. }),
        }
    }
}

/// An output of a kernel written over the buffer of one of its inputs, which is dead after the
/// kernel. When the input is a variable's value read in the same block, `var` names it: the
/// variable is overwritten later in the block, so its old value may be released first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InPlace {
    pub output: u32,
    pub input: u32,
    pub var: Option<VarId>,
}

/// One instruction: an operation and the values it defines.
#[derive(Clone, Debug, PartialEq)]
pub struct Inst {
    pub op: Op,
    pub results: Vec<ValueId>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Terminator {
    Jump(BlockId),
    Branch { cond: ValueId, then_block: BlockId, else_block: BlockId },
    Return,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub insts: Vec<Inst>,
    pub terminator: Terminator,
}

/// The kind of a control-flow edge, for drawing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    Jump,
    Then,
    Else,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VarInfo {
    pub name: String,
    pub ty: Ty,
}

/// A schedule parameter as the function sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub ty: ParamTy,
    /// The default of a host parameter, evaluated at compile time.
    pub default: Option<Constant>,
}

/// A model parameter of the schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    /// The kind declared with `model<kind>`.
    pub declared: Option<sched_lang::types::ModelKind>,
    /// The default checkpoint path or analytic spec.
    pub default_spec: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamTy {
    Host(Ty),
    Tensor,
    Model(u32),
    /// Values the IR does not represent (strings, spacings given as parameters).
    Other,
}

/// A verb of the source, for progress reporting and traces.
#[derive(Clone, Debug, PartialEq)]
pub struct VerbInfo {
    pub kind: &'static str,
    /// The line of the verb in the user's file.
    pub line: u32,
    /// The variable the verb updates (recorded in traces).
    pub target: VarId,
}

/// One schedule, lowered.
#[derive(Clone, Debug)]
pub struct Function {
    pub name: String,
    pub graph: StableDiGraph<Block, Edge, u32>,
    pub entry: BlockId,
    pub value_types: Vec<Ty>,
    pub vars: Vec<VarInfo>,
    pub params: Vec<ParamInfo>,
    /// The schedule's model parameters, by slot.
    pub models: Vec<ModelInfo>,
    /// The names of the outputs, by `Emit` index.
    pub outputs: Vec<String>,
    pub noise_sites: u32,
    pub kernels: Vec<ElementwiseKernel>,
    pub verbs: Vec<VerbInfo>,
}

impl Function {
    pub fn new_value(&mut self, ty: Ty) -> ValueId {
        self.value_types.push(ty);
        ValueId(self.value_types.len() as u32 - 1)
    }

    pub fn ty(&self, value: ValueId) -> Ty {
        self.value_types[value.0 as usize]
    }

    pub fn block(&self, id: BlockId) -> &Block {
        &self.graph[id]
    }

    /// Blocks in a deterministic order: reverse post-order from the entry, then any unreachable.
    pub fn block_order(&self) -> Vec<BlockId> {
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![(self.entry, false)];
        while let Some((block, done)) = stack.pop() {
            if done {
                order.push(block);
                continue;
            }
            if !seen.insert(block) {
                continue;
            }
            stack.push((block, true));
            let mut successors = self.successors(block);
            successors.reverse();
            for next in successors {
                if !seen.contains(&next) {
                    stack.push((next, false));
                }
            }
        }
        order.reverse();
        let mut rest: Vec<BlockId> = self.graph.node_indices().filter(|b| !seen.contains(b)).collect();
        rest.sort();
        order.extend(rest);
        order
    }

    pub fn successors(&self, block: BlockId) -> Vec<BlockId> {
        match self.graph[block].terminator {
            Terminator::Jump(next) => vec![next],
            Terminator::Branch { then_block, else_block, .. } => vec![then_block, else_block],
            Terminator::Return => Vec::new(),
        }
    }

    /// Rebuilds the graph's edges from the terminators.
    pub fn sync_edges(&mut self) {
        self.graph.clear_edges();
        let blocks: Vec<BlockId> = self.graph.node_indices().collect();
        for block in blocks {
            match self.graph[block].terminator {
                Terminator::Jump(next) => {
                    self.graph.add_edge(block, next, Edge::Jump);
                }
                Terminator::Branch { then_block, else_block, .. } => {
                    self.graph.add_edge(block, then_block, Edge::Then);
                    self.graph.add_edge(block, else_block, Edge::Else);
                }
                Terminator::Return => {}
            }
        }
    }

    /// The number of model-calling instructions, by block (the compiler's static NFE report).
    pub fn model_calls(&self) -> usize {
        self.graph.node_weights().flat_map(|b| &b.insts).filter(|i| i.op.calls_model()).count()
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::F64 => "f64",
            Ty::I64 => "i64",
            Ty::Bool => "bool",
            Ty::Tensor => "tensor",
            Ty::Grid => "grid",
            Ty::Tokens => "tokens",
        })
    }
}
