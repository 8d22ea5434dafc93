//! Counting model evaluations (NFE) of a schedule with its default parameters.
//!
//! A small abstract interpreter runs the schedule on the host: integers, bools and times are
//! tracked exactly where they follow from literals and defaults; tensors, model outputs and the
//! model's interpolant are opaque values with an identity. Each model call in a step counts once
//! per step invocation and distinct arguments (identical calls in one step are one call, as the
//! compiler's CSE pass makes them); `cfg(...)` doubles a call. When control flow depends on a
//! value only known at run time, both branches of an `if` are counted and must agree, otherwise
//! the count is reported as dynamic with the reason.

use std::collections::{HashMap, HashSet};

use crate::ast::*;
use crate::builtins::{self, Builtin};
use crate::check::{Callee, LocalId, Program, Resolution, ScheduleId, StepId};
use crate::source::{FileId, Span};

/// The number of model evaluations of one run.
#[derive(Clone, Debug, PartialEq)]
pub enum Nfe {
    /// Known with the default parameters.
    Static(u64),
    /// Depends on run-time values.
    Dynamic { reason: String, span: Span },
}

/// The most statements the counter executes before it gives up.
const MAX_STEPS: u64 = 5_000_000;
/// The most points of one grid the counter materialises.
const MAX_GRID_POINTS: i64 = 1_000_000;

/// Counts the model evaluations of `schedule` run with its default parameters (and no prompt).
pub fn count(program: &Program, schedule: ScheduleId) -> Nfe {
    let mut exprs = HashMap::new();
    for (index, file) in program.files.iter().enumerate() {
        let file_id = FileId(index as u32);
        walk_exprs(file, &mut |expr| {
            exprs.insert((file_id, expr.id), expr);
        });
    }
    let mut interp = Interp {
        program,
        exprs,
        next_id: 0,
        calls: 0,
        executed: 0,
        frames: vec![HashMap::new()],
        carries: HashMap::new(),
        call_stack: Vec::new(),
        running: Vec::new(),
        cse: Vec::new(),
    };
    match interp.run_schedule(schedule) {
        Ok(()) => Nfe::Static(interp.calls),
        Err(Stop { reason, span }) => Nfe::Dynamic { reason, span },
    }
}

struct Stop {
    reason: String,
    span: Span,
}

type Result<T> = std::result::Result<T, Stop>;

/// A host number known exactly, or known only to lie in an open interval.
#[derive(Clone, Copy, Debug)]
struct Num {
    exact: Option<f64>,
    lo: f64,
    hi: f64,
    /// Identity, so that two reads of one unknown value compare equal in call keys.
    id: u64,
}

#[derive(Clone, Debug)]
enum Value {
    Int(Option<i64>),
    Num(Num),
    Bool(Option<bool>),
    /// A device value (tensor or tokens) with its identity and, for tokens, its known length.
    Device {
        id: u64,
        length: Option<i64>,
    },
    /// A model, with how many network passes one evaluation costs (2 with classifier-free guidance).
    Model {
        passes: u64,
    },
    /// A time grid: its points (exact where known).
    Grid(Vec<Num>),
    /// An option value (a spacing, sampler or remasking policy), by the name of its builtin.
    Option(&'static str),
    Range(Option<(i64, i64)>),
    Tuple(Vec<Value>),
    /// Anything the count does not need (strings, spacings, samplers).
    Opaque,
}

enum Flow {
    Normal,
    Break,
    Continue,
}

struct Interp<'p> {
    program: &'p Program,
    exprs: HashMap<(FileId, ExprId), &'p Expr>,
    next_id: u64,
    calls: u64,
    executed: u64,
    frames: Vec<HashMap<LocalId, Value>>,
    /// Carry variables, keyed by the chain of call sites that reaches them.
    carries: HashMap<(Vec<Span>, LocalId), Value>,
    call_stack: Vec<Span>,
    /// The steps running, innermost last, with the network passes per model call.
    running: Vec<(StepId, u64)>,
    /// Model calls already made in the current step invocation (for CSE), per nesting level.
    cse: Vec<HashSet<(String, Vec<u64>)>>,
}

impl<'p> Interp<'p> {
    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn exact(&mut self, v: f64) -> Value {
        let id = self.fresh();
        Value::Num(Num { exact: Some(v), lo: v, hi: v, id })
    }

    fn unknown_num(&mut self) -> Value {
        let id = self.fresh();
        Value::Num(Num { exact: None, lo: f64::NEG_INFINITY, hi: f64::INFINITY, id })
    }

    fn device(&mut self, length: Option<i64>) -> Value {
        let id = self.fresh();
        Value::Device { id, length }
    }

    fn set(&mut self, local: LocalId, value: Value) {
        for frame in self.frames.iter_mut().rev() {
            if let Some(slot) = frame.get_mut(&local) {
                *slot = value;
                return;
            }
        }
        if let Some(frame) = self.frames.last_mut() {
            frame.insert(local, value);
        }
    }

    fn declare(&mut self, local: LocalId, value: Value) {
        if let Some(frame) = self.frames.last_mut() {
            frame.insert(local, value);
        }
    }

    fn get(&self, local: LocalId) -> Option<Value> {
        self.frames.iter().rev().find_map(|f| f.get(&local).cloned())
    }

    fn tick(&mut self, span: Span) -> Result<()> {
        self.executed += 1;
        if self.executed > MAX_STEPS {
            return Err(Stop {
                reason: format!("the run is too long to count (more than {MAX_STEPS} statements)"),
                span,
            });
        }
        Ok(())
    }

    fn run_schedule(&mut self, id: ScheduleId) -> Result<()> {
        let info = &self.program.schedules[id.0 as usize];
        let ast = self.program.schedule_ast(id);
        let file = info.file;
        for (param, local) in ast.params.iter().zip(&info.param_locals) {
            let value = match &param.default {
                Some(default) => self.eval(file, default)?,
                None => self.default_for(&self.program.local(*local).ty.clone()),
            };
            self.declare(*local, value);
        }
        self.block(file, &ast.body)?;
        Ok(())
    }

    /// The value of a parameter given no default: opaque, but usable.
    fn default_for(&mut self, ty: &crate::types::Type) -> Value {
        use crate::types::Type;
        match ty {
            Type::Int => Value::Int(None),
            Type::Float => self.unknown_num(),
            Type::Bool => Value::Bool(None),
            Type::Tensor => self.device(None),
            Type::Tokens => self.device(Some(0)),
            Type::Model(_) => Value::Model { passes: 1 },
            _ => Value::Opaque,
        }
    }

    fn block(&mut self, file: FileId, block: &Block) -> Result<Flow> {
        self.frames.push(HashMap::new());
        let mut flow = Flow::Normal;
        for stmt in &block.stmts {
            flow = self.stmt(file, stmt)?;
            if !matches!(flow, Flow::Normal) {
                break;
            }
        }
        self.frames.pop();
        Ok(flow)
    }

    fn stmt(&mut self, file: FileId, stmt: &Stmt) -> Result<Flow> {
        self.tick(stmt.span)?;
        match &stmt.kind {
            StmtKind::Let { pattern, value, .. } => {
                let value = self.eval(file, value)?;
                self.bind_pattern(pattern, value);
            }
            StmtKind::Carry { name, init, .. } => {
                let Some(local) = self.local_at(name) else { return Ok(Flow::Normal) };
                let key = (self.call_stack.clone(), local);
                let value = match self.carries.get(&key) {
                    Some(value) => value.clone(),
                    None => self.eval(file, init)?,
                };
                self.declare(local, value);
            }
            StmtKind::Assign { target, op, value } => {
                let rhs = self.eval(file, value)?;
                let Some(local) = self.local_at(target) else { return Ok(Flow::Normal) };
                let new = match op.binary() {
                    None => rhs,
                    Some(binary) => {
                        let lhs = self.get(local).unwrap_or(Value::Opaque);
                        self.binary(binary, lhs, rhs)
                    }
                };
                self.set(local, new.clone());
                self.store_carry(local, new);
            }
            StmtKind::For { vars, iter, body } => {
                let iterable = self.eval(file, iter)?;
                let locals: Vec<Option<LocalId>> = vars.iter().map(|v| self.local_at(v)).collect();
                let rows: Box<dyn Iterator<Item = Vec<Value>>> = match iterable {
                    Value::Grid(points) if vars.len() == 2 => {
                        let pairs: Vec<Vec<Value>> =
                            points.windows(2).map(|w| vec![Value::Num(w[0]), Value::Num(w[1])]).collect();
                        Box::new(pairs.into_iter())
                    }
                    Value::Grid(points) => Box::new(points.into_iter().map(|p| vec![Value::Num(p)])),
                    Value::Range(Some((a, b))) => Box::new((a..b).map(|i| vec![Value::Int(Some(i))])),
                    _ => {
                        return Err(Stop {
                            reason: "the loop's length depends on run-time values".into(),
                            span: iter.span,
                        });
                    }
                };
                for row in rows {
                    self.tick(iter.span)?;
                    self.frames.push(HashMap::new());
                    for (local, value) in locals.iter().zip(row) {
                        if let Some(local) = local {
                            self.declare(*local, value);
                        }
                    }
                    let flow = self.block(file, body)?;
                    self.frames.pop();
                    if matches!(flow, Flow::Break) {
                        break;
                    }
                }
            }
            StmtKind::Repeat { count, body } => {
                let Value::Int(Some(n)) = self.eval(file, count)? else {
                    return Err(Stop {
                        reason: "the repeat count depends on run-time values".into(),
                        span: count.span,
                    });
                };
                for _ in 0..n.max(0) {
                    self.tick(count.span)?;
                    if matches!(self.block(file, body)?, Flow::Break) {
                        break;
                    }
                }
            }
            StmtKind::While { cond, body } => loop {
                self.tick(stmt.span)?;
                match self.eval(file, cond)? {
                    Value::Bool(Some(true)) => {
                        if matches!(self.block(file, body)?, Flow::Break) {
                            break;
                        }
                    }
                    Value::Bool(Some(false)) => break,
                    _ => {
                        return Err(Stop {
                            reason: "the loop condition depends on run-time values".into(),
                            span: cond.span,
                        });
                    }
                }
            },
            StmtKind::If { branches, else_block } => return self.if_stmt(file, branches, else_block.as_ref()),
            StmtKind::Break => return Ok(Flow::Break),
            StmtKind::Continue => return Ok(Flow::Continue),
            StmtKind::Emit { value, .. } => {
                self.eval(file, value)?;
            }
            StmtKind::Refine { target, from, to, step, using } => {
                let state = self.eval(file, target)?;
                let t = self.eval(file, from)?;
                let s = self.eval(file, to)?;
                let passes = self.verb_passes(file, stmt.span, using.as_ref())?;
                let Some((step_id, bound)) = self.program.step_refs.get(&step.span).cloned() else {
                    return Ok(Flow::Normal);
                };
                let args = self.step_arguments(file, step_id, &bound.per_param)?;
                self.call_stack.push(stmt.span);
                let result = self.run_step(step_id, state.clone(), t, s, args, passes);
                self.call_stack.pop();
                // A reason found inside a prelude step is reported at the user's `refine`.
                let new_state = result.map_err(|stop| {
                    if self.program.sources.get(stop.span.file).is_prelude {
                        let step_name = &self.program.step(step_id).name;
                        Stop { reason: format!("{} inside step `{step_name}`", stop.reason), span: stmt.span }
                    } else {
                        stop
                    }
                })?;
                self.assign_place(file, target, state, new_state);
            }
            StmtKind::Jump { target, from, to, using } => {
                let state = self.eval(file, target)?;
                self.eval(file, from)?;
                self.eval(file, to)?;
                let passes = self.verb_passes(file, stmt.span, using.as_ref())?;
                self.calls += passes;
                let new_state = self.device(None);
                self.assign_place(file, target, state, new_state);
            }
            StmtKind::Extend { target, count, how, using } => {
                let state = self.eval(file, target)?;
                let count_value = self.eval(file, count)?;
                let k = match count_value {
                    Value::Int(k) => k,
                    _ => None,
                };
                if let ExtendHow::With(sampler) = how {
                    let passes = self.verb_passes(file, stmt.span, using.as_ref())?;
                    let one_call = self.is_builtin(file, sampler, "heads");
                    match (one_call, k) {
                        (true, _) => self.calls += passes,
                        (false, Some(k)) => self.calls += passes * k.max(0) as u64,
                        (false, None) => {
                            return Err(Stop {
                                reason: "the number of new tokens depends on run-time values".into(),
                                span: count.span,
                            });
                        }
                    }
                }
                let length = match (&state, k) {
                    (Value::Device { length: Some(l), .. }, Some(k)) => Some(l + k),
                    _ => None,
                };
                let new_state = self.device(length);
                self.assign_place(file, target, state, new_state);
            }
            StmtKind::Expr(expr) => {
                if let Some((step_id, bound)) = self.program.step_refs.get(&expr.span).cloned() {
                    // A step delegating to another: same state, times and model.
                    let frame_state = self.current_step_state();
                    if let Some((x, t, s, passes, x_local)) = frame_state {
                        let args = self.step_arguments(file, step_id, &bound.per_param)?;
                        self.call_stack.push(expr.span);
                        let result = self.run_step(step_id, x, t, s, args, passes);
                        self.call_stack.pop();
                        let new_state = result?;
                        self.set(x_local, new_state);
                    }
                } else {
                    self.eval(file, expr)?;
                }
            }
        }
        Ok(Flow::Normal)
    }

    fn if_stmt(&mut self, file: FileId, branches: &[(Expr, Block)], else_block: Option<&Block>) -> Result<Flow> {
        for (index, (cond, block)) in branches.iter().enumerate() {
            match self.eval(file, cond)? {
                Value::Bool(Some(true)) => return self.block(file, block),
                Value::Bool(Some(false)) => continue,
                _ => {
                    // Unknown: count both ways; they must make the same number of calls.
                    let before_calls = self.calls;
                    let before_frames = self.frames.clone();
                    let before_carries = self.carries.clone();
                    // A model call on one side is not made on the other: each side starts from
                    // the calls made before the branch.
                    let before_cse = self.cse.clone();
                    let then_flow = self.block(file, block)?;
                    let then_calls = self.calls - before_calls;
                    let then_frames = std::mem::replace(&mut self.frames, before_frames);
                    let then_carries = std::mem::replace(&mut self.carries, before_carries);
                    self.cse.clone_from(&before_cse);
                    self.calls = before_calls;
                    let else_flow = self.if_stmt(file, &branches[index + 1..], else_block)?;
                    let else_calls = self.calls - before_calls;
                    let same_flow = matches!((&then_flow, &else_flow), (Flow::Normal, Flow::Normal));
                    if then_calls != else_calls || !same_flow {
                        return Err(Stop {
                            reason: "the number of model calls depends on this run-time condition".into(),
                            span: cond.span,
                        });
                    }
                    self.merge_frames(then_frames);
                    self.merge_carries(then_carries);
                    self.cse = before_cse;
                    return Ok(Flow::Normal);
                }
            }
        }
        match else_block {
            Some(block) => self.block(file, block),
            None => Ok(Flow::Normal),
        }
    }

    /// After an unknown branch: variables that differ between the two paths become unknown.
    fn merge_frames(&mut self, other: Vec<HashMap<LocalId, Value>>) {
        for (frame, other_frame) in self.frames.iter_mut().zip(other) {
            for (local, value) in frame.iter_mut() {
                if let Some(other_value) = other_frame.get(local)
                    && !same(value, other_value)
                {
                    *value = widen(value);
                }
            }
        }
    }

    fn merge_carries(&mut self, other: HashMap<(Vec<Span>, LocalId), Value>) {
        for (key, other_value) in other {
            match self.carries.get_mut(&key) {
                Some(value) if !same(value, &other_value) => *value = widen(value),
                Some(_) => {}
                None => {
                    self.carries.insert(key, widen(&other_value));
                }
            }
        }
    }

    fn bind_pattern(&mut self, pattern: &LetPattern, value: Value) {
        match pattern {
            LetPattern::Name(name) => {
                if let Some(local) = self.local_at(name) {
                    self.declare(local, value);
                }
            }
            LetPattern::Tuple(names) => {
                let items = match value {
                    Value::Tuple(items) => items,
                    _ => Vec::new(),
                };
                for (index, name) in names.iter().enumerate() {
                    let item = items.get(index).cloned().unwrap_or(Value::Opaque);
                    if let Some(local) = self.local_at(name) {
                        self.declare(local, item);
                    }
                }
            }
        }
    }

    /// The local a declared or assigned name refers to, as the checker recorded it.
    fn local_at(&self, name: &Ident) -> Option<LocalId> {
        self.program.name_locals.get(&name.span).copied()
    }

    fn store_carry(&mut self, local: LocalId, value: Value) {
        if self.program.local(local).kind == crate::check::LocalKind::Carry {
            self.carries.insert((self.call_stack.clone(), local), value);
        }
    }

    fn assign_place(&mut self, file: FileId, target: &Expr, old: Value, new: Value) {
        let name_expr = match &target.kind {
            ExprKind::Method { receiver, .. } => receiver.as_ref(),
            _ => target,
        };
        if let Some(Resolution::Local(local)) = self.program.resolutions.get(&(file, name_expr.id)) {
            // Refining a tail keeps the sequence's length.
            let new = match (&target.kind, old, new) {
                (ExprKind::Method { .. }, _, Value::Device { id, .. }) => {
                    let length = match self.get(*local) {
                        Some(Value::Device { length, .. }) => length,
                        _ => None,
                    };
                    Value::Device { id, length }
                }
                (_, _, new) => new,
            };
            self.set(*local, new);
        }
    }

    fn verb_passes(&mut self, file: FileId, span: Span, using: Option<&Expr>) -> Result<u64> {
        match using {
            Some(expr) => match self.eval(file, expr)? {
                Value::Model { passes } => Ok(passes),
                _ => Ok(1),
            },
            None => match self.program.verb_models.get(&span).and_then(|m| self.get(*m)) {
                Some(Value::Model { passes }) => Ok(passes),
                _ => Ok(1),
            },
        }
    }

    fn step_arguments(&mut self, file: FileId, step: StepId, per_param: &[Vec<ExprId>]) -> Result<Vec<Value>> {
        let info = self.program.step(step);
        let step_file = info.file;
        let defaults: Vec<Option<ExprId>> = info.params.iter().map(|p| p.default).collect();
        let mut values = Vec::new();
        for (index, given) in per_param.iter().enumerate() {
            let value = match given.first() {
                Some(id) => match self.exprs.get(&(file, *id)).copied() {
                    Some(expr) => self.eval(file, expr)?,
                    None => Value::Opaque,
                },
                None => match defaults
                    .get(index)
                    .copied()
                    .flatten()
                    .and_then(|id| self.exprs.get(&(step_file, id)).copied())
                {
                    Some(expr) => self.eval(step_file, expr)?,
                    None => Value::Opaque,
                },
            };
            values.push(value);
        }
        Ok(values)
    }

    /// The state, times and model passes of the innermost running step.
    fn current_step_state(&self) -> Option<(Value, Value, Value, u64, LocalId)> {
        let (step, passes) = self.running.last().copied()?;
        let info = self.program.step(step);
        Some((self.get(info.state_local)?, self.get(info.t_local)?, self.get(info.s_local)?, passes, info.state_local))
    }

    fn run_step(&mut self, step: StepId, x: Value, t: Value, s: Value, args: Vec<Value>, passes: u64) -> Result<Value> {
        let info = self.program.step(step);
        let ast = self.program.step_ast(step);
        let file = info.file;
        let mut frame = HashMap::new();
        frame.insert(info.state_local, x);
        frame.insert(info.t_local, t);
        frame.insert(info.s_local, s);
        for (local, value) in info.param_locals.iter().zip(args) {
            frame.insert(*local, value);
        }
        let saved = std::mem::replace(&mut self.frames, vec![frame]);
        self.running.push((step, passes));
        let is_top = self.running.len() == 1;
        if is_top {
            self.cse.push(HashSet::new());
        }
        let result = self.block(file, &ast.body);
        if is_top {
            self.cse.pop();
        }
        self.running.pop();
        let frames = std::mem::replace(&mut self.frames, saved);
        result?;
        Ok(frames.first().and_then(|f| f.get(&info.state_local).cloned()).unwrap_or(Value::Opaque))
    }

    fn is_builtin(&self, file: FileId, expr: &Expr, name: &str) -> bool {
        match self.program.resolutions.get(&(file, expr.id)) {
            Some(Resolution::Option(b)) => b.name == name,
            _ => matches!(self.program.callees.get(&(file, expr.id)), Some(Callee::Builtin(b)) if b.name == name),
        }
    }

    // -----------------------------------------------------------------------------------------

    fn eval(&mut self, file: FileId, expr: &Expr) -> Result<Value> {
        Ok(match &expr.kind {
            ExprKind::Int(v) => Value::Int(Some(*v)),
            ExprKind::Float(v) => self.exact(*v),
            ExprKind::Bool(b) => Value::Bool(Some(*b)),
            ExprKind::Str(_) | ExprKind::Error => Value::Opaque,
            ExprKind::Name(_) => match self.program.resolutions.get(&(file, expr.id)).copied() {
                Some(Resolution::Local(local)) => match self.get(local) {
                    Some(value) => value,
                    None => self.default_for(&self.program.local(local).ty.clone()),
                },
                Some(Resolution::Constant(v)) => self.exact(v),
                Some(Resolution::Option(builtin)) => self.builtin(builtin, Vec::new(), expr.span)?,
                None => Value::Opaque,
            },
            ExprKind::Tuple(items) => {
                let mut values = Vec::new();
                for item in items {
                    values.push(self.eval(file, item)?);
                }
                Value::Tuple(values)
            }
            ExprKind::Unary { op, operand } => {
                let value = self.eval(file, operand)?;
                match (op, value) {
                    (UnaryOp::Neg, Value::Int(v)) => Value::Int(v.and_then(i64::checked_neg)),
                    (UnaryOp::Neg, Value::Num(n)) => match n.exact {
                        Some(v) => self.exact(-v),
                        None => {
                            let id = self.fresh();
                            Value::Num(Num { exact: None, lo: -n.hi, hi: -n.lo, id })
                        }
                    },
                    (UnaryOp::Not, Value::Bool(b)) => Value::Bool(b.map(|b| !b)),
                    (_, Value::Device { .. }) => self.device(None),
                    _ => Value::Opaque,
                }
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let l = self.eval(file, lhs)?;
                let r = self.eval(file, rhs)?;
                self.binary(*op, l, r)
            }
            ExprKind::Method { receiver, args, .. } => {
                let value = self.eval(file, receiver)?;
                for arg in args.iter().flatten() {
                    self.eval(file, &arg.value)?;
                }
                value
            }
            ExprKind::Call { args, .. } => {
                let Some(Callee::Builtin(builtin)) = self.program.callees.get(&(file, expr.id)).copied() else {
                    return Ok(Value::Opaque);
                };
                let bound = self.program.bound_args.get(&(file, expr.id)).cloned();
                let mut values: Vec<Vec<Value>> = Vec::new();
                for ids in bound.map(|b| b.per_param).unwrap_or_default() {
                    let mut group = Vec::new();
                    for id in ids {
                        if let Some(arg) = args.iter().find(|a| a.value.id == id) {
                            if builtin.name == "grid" && arg.arrow_to.is_some() {
                                let from = self.eval(file, &arg.value)?;
                                let to = self.eval(file, arg.arrow_to.as_ref().map_or(&arg.value, |e| e))?;
                                group.push(Value::Tuple(vec![from, to]));
                            } else {
                                group.push(self.eval(file, &arg.value)?);
                            }
                        }
                    }
                    values.push(group);
                }
                self.builtin(builtin, values, expr.span)?
            }
        })
    }

    fn builtin(&mut self, builtin: &'static Builtin, args: Vec<Vec<Value>>, span: Span) -> Result<Value> {
        let arg = |i: usize| args.get(i).and_then(|g| g.first()).cloned();
        if builtin.calls_model {
            self.model_call(builtin, &args);
            return Ok(match builtin.name {
                "predict" => Value::Tuple(vec![self.device(None), self.device(None)]),
                "candidates" => Value::Tuple(vec![self.device(None), self.device(None)]),
                _ => self.device(None),
            });
        }
        Ok(match builtin.name {
            // Posterior remasking may commit no candidate in a step; the next step's input is then
            // unchanged, and its candidates reuse the last call instead of calling the model.
            "commit" if !matches!(arg(4), Some(Value::Option(name)) if name != "posterior") => {
                return Err(Stop {
                    reason: "posterior remasking may commit nothing in a step, and the next step then reuses the \
                             last model call (MDLM's caching)"
                        .into(),
                    span,
                });
            }
            "grid" => {
                let (from, to) = match arg(0) {
                    Some(Value::Tuple(pair)) => (num_of(pair.first()), num_of(pair.get(1))),
                    _ => (None, None),
                };
                let steps = match arg(1) {
                    Some(Value::Int(Some(n))) if n > MAX_GRID_POINTS => {
                        return Err(Stop { reason: format!("the grid has more than {MAX_GRID_POINTS} steps"), span });
                    }
                    Some(Value::Int(Some(n))) if n > 0 => n,
                    _ => {
                        return Err(Stop {
                            reason: "the number of grid steps depends on run-time values".into(),
                            span,
                        });
                    }
                };
                let uniform = matches!(arg(2), None | Some(Value::Option("uniform")));
                self.grid_points(from, to, steps, uniform)
            }
            "times" => {
                let points =
                    args.first().map(|g| g.iter().map(|v| num_of(Some(v))).collect::<Vec<_>>()).unwrap_or_default();
                let mut nums = Vec::new();
                for p in points {
                    let id = self.fresh();
                    nums.push(match p {
                        Some(v) => Num { exact: Some(v), lo: v, hi: v, id },
                        None => Num { exact: None, lo: f64::NEG_INFINITY, hi: f64::INFINITY, id },
                    });
                }
                Value::Grid(nums)
            }
            "range" => match (arg(0), arg(1)) {
                (Some(Value::Int(Some(a))), None) => Value::Range(Some((0, a))),
                (Some(Value::Int(Some(a))), Some(Value::Int(Some(b)))) => Value::Range(Some((a, b))),
                _ => Value::Range(None),
            },
            "cfg" => {
                let inner = match arg(0) {
                    Some(Value::Model { passes }) => passes,
                    _ => 1,
                };
                Value::Model { passes: 2 * inner }
            }
            "condition" => arg(0).unwrap_or(Value::Model { passes: 1 }),
            "prompt" => self.device(Some(0)),
            "length" => match arg(0) {
                Some(Value::Device { length, .. }) => Value::Int(length),
                _ => Value::Int(None),
            },
            "ended" => Value::Bool(None),
            "propose" => {
                let passes = match arg(0) {
                    Some(Value::Model { passes }) => passes,
                    _ => 1,
                };
                // A draft from the heads of a multi-token model is one call; otherwise one per token.
                let with_heads = matches!(arg(3), Some(Value::Option("heads")));
                match arg(2) {
                    Some(Value::Int(Some(_))) if with_heads => self.calls += passes,
                    Some(Value::Int(Some(k))) => self.calls += passes * k.max(0) as u64,
                    _ => return Err(Stop { reason: "the draft length depends on run-time values".into(), span }),
                }
                self.device(None)
            }
            "verify" => {
                if let Some(Value::Model { passes }) = arg(0) {
                    self.calls += passes;
                }
                self.device(None)
            }
            "int" | "round" => match arg(0).and_then(|v| num_of(Some(&v))) {
                Some(v) => Value::Int(Some(if builtin.name == "int" { v.trunc() } else { v.round() } as i64)),
                None => Value::Int(None),
            },
            "float" => match arg(0).and_then(|v| num_of(Some(&v))) {
                Some(v) => self.exact(v),
                None => self.unknown_num(),
            },
            _ => match builtins::lookup(builtin.name).map(|b| b.returns) {
                Some(builtins::Returns::Tensor | builtins::Returns::Tokens) => self.device(None),
                Some(builtins::Returns::NumericLikeArgs) => {
                    let any_device = args.iter().flatten().any(|v| matches!(v, Value::Device { .. }));
                    if any_device { self.device(None) } else { self.unknown_num() }
                }
                Some(builtins::Returns::Float) => self.unknown_num(),
                Some(builtins::Returns::Bool) => Value::Bool(None),
                Some(builtins::Returns::Int) => Value::Int(None),
                Some(builtins::Returns::Model) => Value::Model { passes: 1 },
                Some(builtins::Returns::Spacing | builtins::Returns::Sampler | builtins::Returns::Remask) => {
                    Value::Option(builtin.name)
                }
                _ => Value::Opaque,
            },
        })
    }

    /// Grid points: exact for uniform spacing; otherwise exact ends and interior points known
    /// only to lie strictly between them (other spacings depend on the model's interpolant).
    fn grid_points(&mut self, from: Option<f64>, to: Option<f64>, steps: i64, uniform: bool) -> Value {
        let mut points = Vec::new();
        for i in 0..=steps {
            let id = self.fresh();
            let point = match (from, to) {
                (Some(a), Some(_)) if i == 0 => Num { exact: Some(a), lo: a, hi: a, id },
                (Some(_), Some(b)) if i == steps => Num { exact: Some(b), lo: b, hi: b, id },
                (Some(a), Some(b)) if uniform => {
                    let v = a + (b - a) * i as f64 / steps as f64;
                    Num { exact: Some(v), lo: v, hi: v, id }
                }
                (Some(a), Some(b)) => Num { exact: None, lo: a.min(b), hi: a.max(b), id },
                _ => Num { exact: None, lo: f64::NEG_INFINITY, hi: f64::INFINITY, id },
            };
            points.push(point);
        }
        Value::Grid(points)
    }

    fn model_call(&mut self, builtin: &'static Builtin, args: &[Vec<Value>]) {
        let family = match builtin.name {
            "predict" | "x0" | "eps" | "velocity" => "field",
            other => other,
        };
        let key_parts: Vec<u64> = args.iter().flatten().map(identity).collect();
        let passes = self.running.last().map_or(1, |(_, p)| *p);
        // Guided candidates (`cfg > 0`) make a second call with the prompt masked.
        let guidance = args.get(3).and_then(|group| group.first()).and_then(|v| num_of(Some(v)));
        let passes =
            if builtin.name == "candidates" && guidance.is_some_and(|g| g > 0.0) { 2 * passes } else { passes };
        let key = (family.to_string(), key_parts);
        let fresh = match self.cse.last_mut() {
            Some(seen) => seen.insert(key),
            None => true,
        };
        if fresh {
            self.calls += passes;
        }
    }

    fn binary(&mut self, op: BinaryOp, l: Value, r: Value) -> Value {
        match (l, r) {
            (Value::Device { .. }, _) | (_, Value::Device { .. }) => self.device(None),
            (Value::Int(a), Value::Int(b)) => match op {
                BinaryOp::Add => Value::Int(a.zip(b).and_then(|(a, b)| a.checked_add(b))),
                BinaryOp::Sub => Value::Int(a.zip(b).and_then(|(a, b)| a.checked_sub(b))),
                BinaryOp::Mul => Value::Int(a.zip(b).and_then(|(a, b)| a.checked_mul(b))),
                BinaryOp::Rem => Value::Int(a.zip(b).and_then(|(a, b)| a.checked_rem(b))),
                _ if op.is_comparison() => Value::Bool(a.zip(b).map(|(a, b)| compare(op, a as f64, b as f64))),
                _ => match a.zip(b) {
                    Some((a, b)) => {
                        let v = float_op(op, a as f64, b as f64);
                        self.exact(v)
                    }
                    None => self.unknown_num(),
                },
            },
            (Value::Bool(a), Value::Bool(b)) => Value::Bool(match op {
                BinaryOp::And => match (a, b) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
                BinaryOp::Or => match (a, b) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
                BinaryOp::Eq => a.zip(b).map(|(a, b)| a == b),
                BinaryOp::Ne => a.zip(b).map(|(a, b)| a != b),
                _ => None,
            }),
            (l, r) => {
                let (Some(a), Some(b)) = (as_num(&l), as_num(&r)) else { return Value::Opaque };
                if op.is_comparison() {
                    return Value::Bool(decide(op, a, b));
                }
                match (a.exact, b.exact) {
                    (Some(x), Some(y)) => {
                        let v = float_op(op, x, y);
                        self.exact(v)
                    }
                    _ => self.unknown_num(),
                }
            }
        }
    }
}

fn as_num(value: &Value) -> Option<Num> {
    match value {
        Value::Num(n) => Some(*n),
        Value::Int(Some(i)) => Some(Num { exact: Some(*i as f64), lo: *i as f64, hi: *i as f64, id: 0 }),
        Value::Int(None) => Some(Num { exact: None, lo: f64::NEG_INFINITY, hi: f64::INFINITY, id: 0 }),
        _ => None,
    }
}

fn num_of(value: Option<&Value>) -> Option<f64> {
    value.and_then(as_num).and_then(|n| n.exact)
}

fn identity(value: &Value) -> u64 {
    match value {
        Value::Num(n) => n.exact.map_or(n.id, f64::to_bits),
        Value::Int(Some(i)) => *i as u64,
        Value::Device { id, .. } => *id,
        Value::Bool(Some(b)) => *b as u64,
        _ => u64::MAX,
    }
}

fn float_op(op: BinaryOp, a: f64, b: f64) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Rem => a % b,
        _ => a.powf(b),
    }
}

fn compare(op: BinaryOp, a: f64, b: f64) -> bool {
    match op {
        BinaryOp::Eq => a == b,
        BinaryOp::Ne => a != b,
        BinaryOp::Lt => a < b,
        BinaryOp::Le => a <= b,
        BinaryOp::Gt => a > b,
        _ => a >= b,
    }
}

/// Decides a comparison of possibly-unknown numbers, using their intervals.
fn decide(op: BinaryOp, a: Num, b: Num) -> Option<bool> {
    if let (Some(x), Some(y)) = (a.exact, b.exact) {
        return Some(compare(op, x, y));
    }
    if a.id != 0 && a.id == b.id {
        return Some(matches!(op, BinaryOp::Eq | BinaryOp::Le | BinaryOp::Ge));
    }
    // Unknown values lie strictly inside (lo, hi); exact values are points.
    let (a_lo, a_hi, a_open) = (a.lo, a.hi, a.exact.is_none());
    let (b_lo, b_hi, b_open) = (b.lo, b.hi, b.exact.is_none());
    let below = a_hi < b_lo || (a_hi == b_lo && (a_open || b_open));
    let above = a_lo > b_hi || (a_lo == b_hi && (a_open || b_open));
    match op {
        BinaryOp::Eq if below || above => Some(false),
        BinaryOp::Ne if below || above => Some(true),
        BinaryOp::Lt | BinaryOp::Le if below => Some(true),
        BinaryOp::Lt | BinaryOp::Le if above => Some(false),
        BinaryOp::Gt | BinaryOp::Ge if above => Some(true),
        BinaryOp::Gt | BinaryOp::Ge if below => Some(false),
        _ => None,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Num(x), Value::Num(y)) => x.id == y.id || (x.exact.is_some() && x.exact == y.exact),
        (Value::Device { id: x, .. }, Value::Device { id: y, .. }) => x == y,
        (Value::Model { passes: x }, Value::Model { passes: y }) => x == y,
        (Value::Opaque, Value::Opaque) => true,
        _ => false,
    }
}

/// The value that stands for "either of two different values".
fn widen(value: &Value) -> Value {
    match value {
        Value::Int(_) => Value::Int(None),
        Value::Bool(_) => Value::Bool(None),
        Value::Num(n) => {
            Value::Num(Num { exact: None, lo: f64::NEG_INFINITY, hi: f64::INFINITY, id: n.id.wrapping_add(1 << 40) })
        }
        Value::Device { id, .. } => Value::Device { id: id.wrapping_add(1 << 40), length: None },
        other => other.clone(),
    }
}

/// Calls `visit` on every expression of a file, outermost first.
fn walk_exprs<'a>(file: &'a SourceFile, visit: &mut impl FnMut(&'a Expr)) {
    fn expr<'a>(e: &'a Expr, visit: &mut impl FnMut(&'a Expr)) {
        visit(e);
        match &e.kind {
            ExprKind::Call { args, .. } => args.iter().for_each(|a| arg(a, visit)),
            ExprKind::Method { receiver, args, .. } => {
                expr(receiver, visit);
                args.iter().flatten().for_each(|a| arg(a, visit));
            }
            ExprKind::Unary { operand, .. } => expr(operand, visit),
            ExprKind::Binary { lhs, rhs, .. } => {
                expr(lhs, visit);
                expr(rhs, visit);
            }
            ExprKind::Tuple(items) => items.iter().for_each(|i| expr(i, visit)),
            _ => {}
        }
    }
    fn arg<'a>(a: &'a Arg, visit: &mut impl FnMut(&'a Expr)) {
        expr(&a.value, visit);
        if let Some(to) = &a.arrow_to {
            expr(to, visit);
        }
    }
    fn block<'a>(b: &'a Block, visit: &mut impl FnMut(&'a Expr)) {
        for s in &b.stmts {
            stmt(s, visit);
        }
    }
    fn stmt<'a>(s: &'a Stmt, visit: &mut impl FnMut(&'a Expr)) {
        match &s.kind {
            StmtKind::Let { value, .. } => expr(value, visit),
            StmtKind::Carry { init, .. } => expr(init, visit),
            StmtKind::For { iter, body, .. } => {
                expr(iter, visit);
                block(body, visit);
            }
            StmtKind::Repeat { count: e, body } | StmtKind::While { cond: e, body } => {
                expr(e, visit);
                block(body, visit);
            }
            StmtKind::If { branches, else_block } => {
                for (c, b) in branches {
                    expr(c, visit);
                    block(b, visit);
                }
                if let Some(b) = else_block {
                    block(b, visit);
                }
            }
            StmtKind::Emit { value, .. } | StmtKind::Assign { value, .. } | StmtKind::Expr(value) => expr(value, visit),
            StmtKind::Refine { target, from, to, step, using } => {
                expr(target, visit);
                expr(from, visit);
                expr(to, visit);
                step.args.iter().flatten().for_each(|a| arg(a, visit));
                if let Some(u) = using {
                    expr(u, visit);
                }
            }
            StmtKind::Jump { target, from, to, using } => {
                expr(target, visit);
                expr(from, visit);
                expr(to, visit);
                if let Some(u) = using {
                    expr(u, visit);
                }
            }
            StmtKind::Extend { target, count, how, using } => {
                expr(target, visit);
                expr(count, visit);
                if let ExtendHow::With(e) = how {
                    expr(e, visit);
                }
                if let Some(u) = using {
                    expr(u, visit);
                }
            }
            StmtKind::Break | StmtKind::Continue => {}
        }
    }
    for item in &file.items {
        let (params, body) = match item {
            Item::Schedule(s) => (&s.params, &s.body),
            Item::Step(s) => (&s.params, &s.body),
        };
        for p in params {
            if let Some(d) = &p.default {
                expr(d, visit);
            }
        }
        block(body, visit);
    }
}
