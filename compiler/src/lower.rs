//! Lowering of a checked schedule into an IR [`Function`].
//!
//! Steps are inlined while lowering: each `refine ... by STEP` (and each step a step delegates to)
//! lowers the step's body in a fresh frame whose `x` is the verb's target variable, whose `t`, `s`
//! and parameters are new variables, and whose `carry` variables become function-level variables
//! that live for the whole run (one set per call site, initialised on the site's first run). A
//! step is generic over its call site (its model, its state), so inlining at lowering time is what
//! gives each site its own code and carries.
//!
//! Model calls lower to a raw `Field` evaluation plus the affine conversion to (x̂₀, ε̂) with
//! `Coefficient`s that the runtime computes from the bound model's kind and interpolant, so the
//! conversion fuses into the step's kernel. Classifier-free guidance lowers to two evaluations
//! combined elementwise.

use std::collections::HashMap;

use petgraph::stable_graph::StableDiGraph;
use sched_kernels::spec::{Distribution, ReduceOp};
use sched_lang::ast::{
    self, Arg, Block as AstBlock, Expr, ExprKind, ExtendHow, LetPattern, Stmt, StmtKind, UnaryOp as AstUnary,
};
use sched_lang::builtins::{Builtin, DefaultValue};
use sched_lang::check::{Callee, LocalId, Program, Resolution, ScheduleId, StepId};
use sched_lang::types::Type;
use sched_lang::{FileId, Span};

use crate::diagnostics::{CompileError, non_constant_default, unsupported};
use crate::ir::*;
use crate::{cse, dce, fold};

/// Lowers one schedule of a checked program.
pub fn lower(program: &Program, schedule: ScheduleId) -> Result<Function, CompileError> {
    let info = &program.schedules[schedule.0 as usize];
    let ast = program.schedule_ast(schedule);
    let mut graph = StableDiGraph::default();
    let entry = graph.add_node(Block { insts: Vec::new(), terminator: Terminator::Return });
    let mut lowerer = Lowerer {
        program,
        func: Function {
            name: info.name.clone(),
            graph,
            entry,
            value_types: Vec::new(),
            vars: Vec::new(),
            params: Vec::new(),
            models: Vec::new(),
            outputs: Vec::new(),
            noise_sites: 0,
            kernels: Vec::new(),
            verbs: Vec::new(),
        },
        current: entry,
        frames: vec![Frame { file: info.file, locals: HashMap::new(), options: HashMap::new(), step: None }],
        loops: Vec::new(),
        model_slots: HashMap::new(),
        model_vars: HashMap::new(),
        entry_inits: Vec::new(),
        in_verb: false,
        tensor_time: None,
        tensor_steps: Vec::new(),
    };
    lowerer.params(info, ast)?;
    lowerer.block(&ast.body)?;
    let tensor_steps = std::mem::take(&mut lowerer.tensor_steps);
    let function = lowerer.finish()?;
    check_per_position_times(&function, &tensor_steps)?;
    Ok(function)
}

/// A step inlined with per-position (tensor) times: the values its body defined, its name, and
/// the time of the verb that runs it.
struct TensorStep {
    values: std::ops::Range<u32>,
    step: String,
    span: Span,
}

/// Reports a step that compares or converts a per-position time on the host. A step is checked
/// with float `t` and `s`, so its body may branch on them (`if s == 0`) or on values computed
/// from them; with tensor times those operations have no value. The check runs on a copy folded
/// with the parameters' defaults, so that a branch that folds away (DDIM's `if eta > 0` with eta
/// 0) is no error; a run that binds a parameter which keeps such a branch alive fails at run time
/// instead (a comparison of a tensor has no value).
fn check_per_position_times(function: &Function, steps: &[TensorStep]) -> Result<(), CompileError> {
    let Some(last) = steps.last() else { return Ok(()) };
    let mut folded = function.clone();
    let defaults: Vec<Option<Constant>> = folded.params.iter().map(|p| p.default).collect();
    fold::bind_params(&mut folded, &defaults);
    cse::run(&mut folded);
    fold::run(&mut folded);
    cse::run(&mut folded);
    dce::run(&mut folded);
    let tensor = |value: &ValueId| folded.ty(*value) == Ty::Tensor;
    for inst in folded.graph.node_weights().flat_map(|block| &block.insts) {
        let host_operand = match &inst.op {
            Op::Unary(op, a) if op.elementwise().is_none() => Some(*a).filter(tensor),
            Op::Binary(op, a, b) if op.elementwise().is_none() => [*a, *b].into_iter().find(tensor),
            Op::Grid { .. } | Op::GridPoint(..) | Op::GridPairEnd(..) => inst.op.operands().into_iter().find(tensor),
            // A commit's confidence (its third operand) is the only tensor a token operation takes.
            Op::Tokens { op: TokenOp::Commit(_), args, .. } => {
                args.iter().enumerate().find(|(i, v)| *i != 2 && tensor(v)).map(|(_, v)| *v)
            }
            Op::Tokens { args, .. } => args.iter().copied().find(tensor),
            _ => None,
        };
        let Some(operand) = host_operand else { continue };
        let value = inst.results.first().copied().unwrap_or(operand);
        // The innermost step whose body defined the value (a delegated step's range lies inside
        // its caller's).
        let step = steps.iter().filter(|s| s.values.contains(&value.0)).min_by_key(|s| s.values.len()).unwrap_or(last);
        return Err(unsupported(
            step.span,
            &format!("step `{}` with per-position times (it compares or converts a time on the host)", step.step),
            "a step that branches on its times, or on values computed from them, needs one time for the \
             whole state; give this verb host times, or use a step without such a branch (`ddim()` with \
             eta = 0, `euler()`, `flow_euler()`)",
        ));
    }
    Ok(())
}

/// A model as a verb or builtin uses it: a schedule model slot plus conditioning, whose values
/// live in variables so that a `let`-bound model can be used from any block.
#[derive(Clone, Copy, Debug)]
struct ModelRef {
    slot: ModelSlot,
    label: Option<VarId>,
    /// Classifier-free guidance: the scale; the label above is the conditional one.
    guidance: Option<VarId>,
}

/// One level of inlining: the schedule itself, or a step inlined at a call site.
struct Frame {
    file: FileId,
    locals: HashMap<LocalId, VarId>,
    /// Step parameters that hold an option (a sampler or a remasking policy), by local.
    options: HashMap<LocalId, OptionValue>,
    step: Option<StepFrame>,
}

/// An option value (`sample(0.8, 50)`, `confidence`): the builtin that makes it and its
/// arguments, held in variables so that any block can use them.
#[derive(Clone, Debug)]
struct OptionValue {
    builtin: &'static Builtin,
    args: Vec<VarId>,
}

#[derive(Clone, Copy)]
struct StepFrame {
    model: ModelRef,
    state: VarId,
    t: VarId,
    s: VarId,
}

struct Lowerer<'p> {
    program: &'p Program,
    func: Function,
    current: BlockId,
    frames: Vec<Frame>,
    /// (continue target, break target) of the enclosing loops.
    loops: Vec<(BlockId, BlockId)>,
    model_slots: HashMap<LocalId, ModelSlot>,
    /// `let`-bound models.
    model_vars: HashMap<LocalId, ModelRef>,
    /// Writes that must run at the very start (carry flags).
    entry_inits: Vec<(VarId, Constant)>,
    /// Whether a verb is being lowered; its model calls name it, for error locations.
    in_verb: bool,
    /// The last verb given a per-position (tensor) time (its index when done) and the span of
    /// its tensor times.
    tensor_time: Option<(u32, Span)>,
    /// The steps inlined with per-position times, for [`check_per_position_times`].
    tensor_steps: Vec<TensorStep>,
}

impl<'p> Lowerer<'p> {
    fn frame(&self) -> &Frame {
        // The schedule's frame is pushed first and never popped.
        self.frames.last().expect("the schedule frame is always present")
    }

    fn file(&self) -> FileId {
        self.frame().file
    }

    fn new_var(&mut self, name: &str, ty: Ty) -> VarId {
        self.func.vars.push(VarInfo { name: name.to_string(), ty });
        VarId(self.func.vars.len() as u32 - 1)
    }

    fn new_block(&mut self) -> BlockId {
        self.func.graph.add_node(Block { insts: Vec::new(), terminator: Terminator::Return })
    }

    fn push(&mut self, op: Op, ty: Option<Ty>) -> Option<ValueId> {
        let result = ty.map(|t| self.func.new_value(t));
        let current = self.current;
        self.func.graph[current].insts.push(Inst { op, results: result.into_iter().collect() });
        result
    }

    /// Pushes an operation with one result.
    fn value(&mut self, op: Op, ty: Ty) -> ValueId {
        // `push` returns the result it was asked to create.
        self.push(op, Some(ty)).expect("a result was requested")
    }

    fn effect(&mut self, op: Op) {
        self.push(op, None);
    }

    fn terminate(&mut self, terminator: Terminator) {
        let current = self.current;
        self.func.graph[current].terminator = terminator;
    }

    fn constant(&mut self, c: Constant) -> ValueId {
        let ty = match c {
            Constant::F64(_) => Ty::F64,
            Constant::I64(_) => Ty::I64,
            Constant::Bool(_) => Ty::Bool,
        };
        self.value(Op::Const(c), ty)
    }

    fn read(&mut self, var: VarId) -> ValueId {
        let ty = self.func.vars[var.0 as usize].ty;
        self.value(Op::Read(var), ty)
    }

    fn write(&mut self, var: VarId, value: ValueId) {
        self.effect(Op::Write(var, value));
    }

    fn finish(mut self) -> Result<Function, CompileError> {
        // Carry flags start false before anything runs.
        let mut prologue = Vec::new();
        for (var, c) in std::mem::take(&mut self.entry_inits) {
            let ty = match c {
                Constant::Bool(_) => Ty::Bool,
                Constant::I64(_) => Ty::I64,
                Constant::F64(_) => Ty::F64,
            };
            let value = self.func.new_value(ty);
            prologue.push(Inst { op: Op::Const(c), results: vec![value] });
            prologue.push(Inst { op: Op::Write(var, value), results: Vec::new() });
        }
        let entry = self.func.entry;
        self.func.graph[entry].insts.splice(0..0, prologue);
        self.terminate(Terminator::Return);
        self.func.sync_edges();
        Ok(self.func)
    }

    // -----------------------------------------------------------------------------------------

    fn params(&mut self, info: &sched_lang::check::ScheduleInfo, ast: &ast::Schedule) -> Result<(), CompileError> {
        for (index, ((param, sig), local)) in ast.params.iter().zip(&info.params).zip(&info.param_locals).enumerate() {
            let index = index as u32;
            match &sig.ty {
                Type::Model(declared) => {
                    let slot = ModelSlot(self.func.models.len() as u32);
                    let default_spec = match param.default.as_ref().map(|d| &d.kind) {
                        Some(ExprKind::Str(spec)) => Some(spec.clone()),
                        _ => None,
                    };
                    self.func.models.push(crate::ir::ModelInfo {
                        name: sig.name.clone(),
                        declared: *declared,
                        default_spec,
                    });
                    self.func.params.push(ParamInfo {
                        name: sig.name.clone(),
                        ty: ParamTy::Model(slot.0),
                        default: None,
                    });
                    self.model_slots.insert(*local, slot);
                }
                Type::Int | Type::Float | Type::Bool => {
                    let ty = host_ty(&sig.ty);
                    let default = match &param.default {
                        Some(expr) => {
                            let value = const_eval(expr).ok_or_else(|| non_constant_default(expr.span, &sig.name))?;
                            Some(coerce_constant(value, ty))
                        }
                        None => None,
                    };
                    self.func.params.push(ParamInfo { name: sig.name.clone(), ty: ParamTy::Host(ty), default });
                    let var = self.new_var(&sig.name, ty);
                    let value = self.value(Op::Param(index), ty);
                    self.write(var, value);
                    self.bind_local(*local, var);
                }
                Type::Tensor => {
                    self.func.params.push(ParamInfo { name: sig.name.clone(), ty: ParamTy::Tensor, default: None });
                    let var = self.new_var(&sig.name, Ty::Tensor);
                    match &param.default {
                        None => {
                            let value = self.value(Op::Param(index), Ty::Tensor);
                            self.write(var, value);
                        }
                        Some(default) => {
                            let given = self.value(Op::ParamGiven(index), Ty::Bool);
                            let (then_block, else_block, join) = (self.new_block(), self.new_block(), self.new_block());
                            self.terminate(Terminator::Branch { cond: given, then_block, else_block });
                            self.current = then_block;
                            let value = self.value(Op::Param(index), Ty::Tensor);
                            self.write(var, value);
                            self.terminate(Terminator::Jump(join));
                            self.current = else_block;
                            let value = self.expr(default)?;
                            self.write(var, value);
                            self.terminate(Terminator::Jump(join));
                            self.current = join;
                        }
                    }
                    self.bind_local(*local, var);
                }
                other => {
                    return Err(unsupported(
                        param.span,
                        &format!("a `{other}` parameter"),
                        "only numbers, bools, tensors and models can be schedule parameters for now",
                    ));
                }
            }
        }
        Ok(())
    }

    fn bind_local(&mut self, local: LocalId, var: VarId) {
        if let Some(frame) = self.frames.last_mut() {
            frame.locals.insert(local, var);
        }
    }

    fn local_var(&self, local: LocalId) -> Option<VarId> {
        // Inside a step only its own locals are visible; in a schedule, the schedule's.
        self.frame().locals.get(&local).copied()
    }

    fn name_var(&self, name: &ast::Ident) -> Option<VarId> {
        self.program.name_locals.get(&name.span).and_then(|local| self.local_var(*local))
    }

    // -----------------------------------------------------------------------------------------
    // Statements

    fn block(&mut self, block: &AstBlock) -> Result<(), CompileError> {
        for stmt in &block.stmts {
            self.stmt(stmt)?;
        }
        Ok(())
    }

    fn stmt(&mut self, stmt: &Stmt) -> Result<(), CompileError> {
        match &stmt.kind {
            StmtKind::Let { pattern, value, .. } => match pattern {
                LetPattern::Name(name) => {
                    let local = self.program.name_locals.get(&name.span).copied();
                    let local_ty = local.map(|l| self.program.local(l).ty.clone()).unwrap_or(Type::Error);
                    if let Type::Model(_) = local_ty {
                        let model = self.model(value)?;
                        if let Some(local) = local {
                            self.model_vars.insert(local, model);
                        }
                        return Ok(());
                    }
                    let ty = self.ir_ty(&local_ty, name.span)?;
                    let value = self.expr_as(value, ty)?;
                    let ty = widened(ty, self.func.ty(value));
                    let var = self.new_var(&name.name, ty);
                    self.write(var, value);
                    if let Some(local) = local {
                        self.bind_local(local, var);
                    }
                }
                LetPattern::Tuple(names) => {
                    let values = self.tuple(value)?;
                    for (name, value) in names.iter().zip(values) {
                        let Some(local) = self.program.name_locals.get(&name.span).copied() else { continue };
                        let ty = self.func.ty(value);
                        let var = self.new_var(&name.name, ty);
                        self.write(var, value);
                        self.bind_local(local, var);
                    }
                }
            },
            StmtKind::Carry { name, init, .. } => {
                let local = self.program.name_locals.get(&name.span).copied();
                let local_ty = local.map(|l| self.program.local(l).ty.clone()).unwrap_or(Type::Error);
                let ty = self.ir_ty(&local_ty, name.span)?;
                let var = self.new_var(&name.name, ty);
                let flag = self.new_var(&format!("{}.initialized", name.name), Ty::Bool);
                self.entry_inits.push((flag, Constant::Bool(false)));
                let initialized = self.read(flag);
                let (init_block, join) = (self.new_block(), self.new_block());
                self.terminate(Terminator::Branch { cond: initialized, then_block: join, else_block: init_block });
                self.current = init_block;
                let value = self.expr_as(init, ty)?;
                self.check_store(init.span, &name.name, ty, value)?;
                self.write(var, value);
                let yes = self.constant(Constant::Bool(true));
                self.write(flag, yes);
                self.terminate(Terminator::Jump(join));
                self.current = join;
                if let Some(local) = local {
                    self.bind_local(local, var);
                }
            }
            StmtKind::Assign { target, op, value } => {
                let Some(var) = self.name_var(target) else {
                    return Err(unsupported(target.span, "this assignment", "assignments to models are not supported"));
                };
                let ty = self.func.vars[var.0 as usize].ty;
                let rhs = self.expr(value)?;
                let new = match op.binary() {
                    None => self.coerce(rhs, ty),
                    Some(binary) => {
                        let current = self.read(var);
                        let op = arith_op(binary);
                        self.binary(op, current, rhs)
                    }
                };
                let new = self.coerce(new, ty);
                self.check_store(value.span, &target.name, ty, new)?;
                self.write(var, new);
            }
            StmtKind::If { branches, else_block } => {
                let join = self.new_block();
                for (cond, block) in branches {
                    let cond = self.expr(cond)?;
                    let (then_block, next) = (self.new_block(), self.new_block());
                    self.terminate(Terminator::Branch { cond, then_block, else_block: next });
                    self.current = then_block;
                    self.block(block)?;
                    self.terminate(Terminator::Jump(join));
                    self.current = next;
                }
                if let Some(block) = else_block {
                    self.block(block)?;
                }
                self.terminate(Terminator::Jump(join));
                self.current = join;
            }
            StmtKind::While { cond, body } => {
                let (header, body_block, exit) = (self.new_block(), self.new_block(), self.new_block());
                self.terminate(Terminator::Jump(header));
                self.current = header;
                let cond = self.expr(cond)?;
                self.terminate(Terminator::Branch { cond, then_block: body_block, else_block: exit });
                self.current = body_block;
                self.loops.push((header, exit));
                self.block(body)?;
                self.loops.pop();
                self.terminate(Terminator::Jump(header));
                self.current = exit;
            }
            StmtKind::Repeat { count, body } => {
                let count = self.expr_as(count, Ty::I64)?;
                let limit = self.new_var("repeat.count", Ty::I64);
                self.write(limit, count);
                let zero = self.constant(Constant::I64(0));
                self.counted_loop(limit, zero, |_, _| Ok(()), body)?;
            }
            StmtKind::For { vars, iter, body } => self.for_loop(vars, iter, body)?,
            StmtKind::Break | StmtKind::Continue => {
                let Some(&(continue_to, break_to)) = self.loops.last() else {
                    return Ok(());
                };
                let target = if matches!(stmt.kind, StmtKind::Break) { break_to } else { continue_to };
                self.terminate(Terminator::Jump(target));
                // Statements after `break` in the same block are unreachable; give them a block.
                self.current = self.new_block();
            }
            StmtKind::Emit { value, name } => {
                let output_name = match (name, &value.kind) {
                    (Some(name), _) => name.name.clone(),
                    (None, ExprKind::Name(ident)) => ident.name.clone(),
                    (None, _) => format!("output{}", self.func.outputs.len()),
                };
                let index = match self.func.outputs.iter().position(|n| *n == output_name) {
                    Some(i) => i as u32,
                    None => {
                        self.func.outputs.push(output_name);
                        self.func.outputs.len() as u32 - 1
                    }
                };
                let value = self.expr(value)?;
                self.effect(Op::Emit { index, value });
            }
            StmtKind::Refine { target, from, to, step, using } => {
                self.refine(stmt, target, from, to, step, using.as_ref())?
            }
            StmtKind::Jump { target, from, to, using } => {
                self.in_verb = true;
                let var = self.place(target)?;
                let t = self.time(from)?;
                let s = self.time(to)?;
                let model = self.verb_model(stmt.span, using.as_ref())?;
                let x = self.read(var);
                let label = self.model_label(model);
                let verb = self.current_verb();
                let moved = self.value(Op::Jump { model: model.slot, x, t, s, label, verb }, Ty::Tensor);
                self.write(var, moved);
                self.verb_done("jump", stmt.span, var);
            }
            StmtKind::Extend { target, count, how, using } => self.extend(stmt, target, count, how, using.as_ref())?,
            StmtKind::Expr(expr) => {
                if let Some((step, bound)) = self.program.step_refs.get(&expr.span).cloned() {
                    let Some(frame) = self.frame().step else { return Ok(()) };
                    let args = match &expr.kind {
                        ExprKind::Call { args, .. } => args.as_slice(),
                        _ => &[],
                    };
                    let t = self.read(frame.t);
                    let s = self.read(frame.s);
                    self.inline_step(step, &bound.per_param, args, frame.state, t, s, frame.model)?;
                } else {
                    self.expr(expr)?;
                }
            }
        }
        Ok(())
    }

    /// `for i in 0..limit`-style loop over an I64 counter; `bind` runs at the top of the body.
    fn counted_loop(
        &mut self,
        limit: VarId,
        start: ValueId,
        mut bind: impl FnMut(&mut Self, ValueId) -> Result<(), CompileError>,
        body: &AstBlock,
    ) -> Result<(), CompileError> {
        let counter = self.new_var("loop.index", Ty::I64);
        self.write(counter, start);
        let (header, body_block, latch, exit) =
            (self.new_block(), self.new_block(), self.new_block(), self.new_block());
        self.terminate(Terminator::Jump(header));
        self.current = header;
        let i = self.read(counter);
        let n = self.read(limit);
        let cond = self.value(Op::Binary(BinaryOp::Lt, i, n), Ty::Bool);
        self.terminate(Terminator::Branch { cond, then_block: body_block, else_block: exit });
        self.current = body_block;
        let i = self.read(counter);
        bind(self, i)?;
        self.loops.push((latch, exit));
        self.block(body)?;
        self.loops.pop();
        self.terminate(Terminator::Jump(latch));
        self.current = latch;
        let i = self.read(counter);
        let one = self.constant(Constant::I64(1));
        let next = self.value(Op::Binary(BinaryOp::Add, i, one), Ty::I64);
        self.write(counter, next);
        self.terminate(Terminator::Jump(header));
        self.current = exit;
        Ok(())
    }

    fn for_loop(&mut self, vars: &[ast::Ident], iter: &Expr, body: &AstBlock) -> Result<(), CompileError> {
        let loop_locals: Vec<Option<LocalId>> =
            vars.iter().map(|v| self.program.name_locals.get(&v.span).copied()).collect();
        // `range(a)` / `range(a, b)` loops count directly.
        if let ExprKind::Call { args, .. } = &iter.kind
            && let Some(Callee::Builtin(b)) = self.program.callees.get(&(self.file(), iter.id))
            && b.name == "range"
        {
            let (start, end) = match args.as_slice() {
                [end] => (self.constant(Constant::I64(0)), self.expr_as(&end.value, Ty::I64)?),
                [start, end, ..] => (self.expr_as(&start.value, Ty::I64)?, self.expr_as(&end.value, Ty::I64)?),
                [] => return Ok(()),
            };
            let limit = self.new_var("range.end", Ty::I64);
            self.write(limit, end);
            let var = self.new_var(&vars[0].name, Ty::I64);
            if let Some(local) = loop_locals[0] {
                self.bind_local(local, var);
            }
            return self.counted_loop(
                limit,
                start,
                |this, i| {
                    this.write(var, i);
                    Ok(())
                },
                body,
            );
        }
        let grid = self.expr(iter)?;
        let grid_var = self.new_var("grid", Ty::Grid);
        self.write(grid_var, grid);
        let count = self.value(Op::GridLen(grid), Ty::I64);
        let pairs = vars.len() == 2;
        let limit_value = if pairs {
            let one = self.constant(Constant::I64(1));
            self.value(Op::Binary(BinaryOp::Sub, count, one), Ty::I64)
        } else {
            count
        };
        let limit = self.new_var("grid.len", Ty::I64);
        self.write(limit, limit_value);
        let point_vars: Vec<VarId> = vars.iter().map(|v| self.new_var(&v.name, Ty::F64)).collect();
        for (local, var) in loop_locals.iter().zip(&point_vars) {
            if let Some(local) = local {
                self.bind_local(*local, *var);
            }
        }
        let zero = self.constant(Constant::I64(0));
        self.counted_loop(
            limit,
            zero,
            |this, i| {
                let grid = this.read(grid_var);
                let t = this.value(Op::GridPoint(grid, i), Ty::F64);
                this.write(point_vars[0], t);
                if pairs {
                    let s = this.value(Op::GridPairEnd(grid, i), Ty::F64);
                    this.write(point_vars[1], s);
                }
                Ok(())
            },
            body,
        )
    }

    /// The verb being lowered: the index it gets when it is done.
    fn current_verb(&self) -> Option<u32> {
        self.in_verb.then_some(self.func.verbs.len() as u32)
    }

    fn verb_done(&mut self, kind: &'static str, span: Span, target: VarId) {
        self.in_verb = false;
        let (line, _) = self.program.sources.line_col(span);
        self.func.verbs.push(VerbInfo { kind, line: line as u32, target });
        let verb = self.func.verbs.len() as u32 - 1;
        self.effect(Op::VerbDone { verb });
    }

    /// The variable a verb updates.
    fn place(&mut self, target: &Expr) -> Result<VarId, CompileError> {
        match &target.kind {
            ExprKind::Name(name) => match self.program.resolutions.get(&(self.file(), target.id)) {
                Some(Resolution::Local(local)) => {
                    self.local_var(*local).ok_or_else(|| unsupported(name.span, "this target", "internal"))
                }
                _ => Err(unsupported(target.span, "this target", "only variables can be refined")),
            },
            _ => Err(unsupported(
                target.span,
                "this target",
                "verbs update variables; `refine` also takes the last positions of a sequence, `SEQ.tail(k)`",
            )),
        }
    }

    /// `extend SEQ by COUNT with SAMPLER | as mask | as guess`.
    fn extend(
        &mut self,
        stmt: &Stmt,
        target: &Expr,
        count: &Expr,
        how: &ExtendHow,
        using: Option<&Expr>,
    ) -> Result<(), CompileError> {
        self.in_verb = true;
        let var = self.place(target)?;
        let count = self.expr_as(count, Ty::I64)?;
        let (op, model, sampler_args) = match how {
            ExtendHow::As(word) if word.name == "mask" => (TokenOp::ExtendMask, None, Vec::new()),
            ExtendHow::As(word) if word.name == "guess" => (TokenOp::ExtendGuess, None, Vec::new()),
            ExtendHow::As(word) => {
                return Err(unsupported(
                    word.span,
                    &format!("`extend ... as {}`", word.name),
                    "a continuous sequence has its model's fixed length: start from `gaussian()` over all of it and \
                     hold the positions not started yet at t = 1 with per-position times (examples/diffusion_forcing.sched)",
                ));
            }
            ExtendHow::With(sampler) => {
                let (kind, args) = self.sampler(sampler)?;
                let model = self.verb_model(stmt.span, using)?;
                (TokenOp::Extend(kind), Some(model.slot), args)
            }
        };
        let seq = self.read(var);
        let mut args = vec![seq, count];
        args.extend(sampler_args);
        let extended = self.token_op(op, args, model, Ty::Tokens);
        self.write(var, extended);
        self.verb_done("extend", stmt.span, var);
        Ok(())
    }

    /// Pushes a token operation with one result, giving it a noise site when it draws noise.
    fn token_op(&mut self, op: TokenOp, args: Vec<ValueId>, model: Option<ModelSlot>, ty: Ty) -> ValueId {
        let site = self.token_site(op);
        let verb = if op.calls_model() { self.current_verb() } else { None };
        self.value(Op::Tokens { op, args, model, site, verb }, ty)
    }

    fn token_site(&mut self, op: TokenOp) -> Option<u32> {
        op.draws_noise().then(|| {
            self.func.noise_sites += 1;
            self.func.noise_sites - 1
        })
    }

    /// A sampler argument: its kind and its host arguments.
    fn sampler(&mut self, expr: &Expr) -> Result<(SamplerKind, Vec<ValueId>), CompileError> {
        let option = self.option_value(expr, self.file())?;
        let kind = match option.builtin.name {
            "greedy" => SamplerKind::Greedy,
            "sample" => SamplerKind::Sample,
            "heads" => SamplerKind::Heads,
            _ => return Err(unsupported(expr.span, "this sampler", "internal")),
        };
        let args = option.args.iter().map(|var| self.read(*var)).collect();
        Ok((kind, args))
    }

    /// An option expression (`greedy`, `sample(0.8)`, `confidence`, or a step parameter that
    /// holds one) with its arguments evaluated into variables. Names resolve in `file` (a step's
    /// default is written in the step's file).
    fn option_value(&mut self, expr: &Expr, file: FileId) -> Result<OptionValue, CompileError> {
        let (builtin, args): (&'static Builtin, &[Arg]) = match &expr.kind {
            ExprKind::Name(_) => match self.program.resolutions.get(&(file, expr.id)) {
                Some(Resolution::Option(builtin)) => (builtin, &[]),
                Some(Resolution::Local(local)) => {
                    return self
                        .frame()
                        .options
                        .get(local)
                        .cloned()
                        .ok_or_else(|| unsupported(expr.span, "this option", "internal"));
                }
                _ => return Err(unsupported(expr.span, "this option", "internal")),
            },
            ExprKind::Call { args, .. } => match self.program.callees.get(&(file, expr.id)) {
                Some(Callee::Builtin(builtin)) => (builtin, args.as_slice()),
                _ => return Err(unsupported(expr.span, "this option", "internal")),
            },
            _ => return Err(unsupported(expr.span, "this option expression", "write the option where it is used")),
        };
        let mut vars = Vec::new();
        for (index, param) in builtin.params.iter().enumerate() {
            let (value, ty) = self.option_arg(expr, args, index, param, "this option")?;
            let var = self.new_var(&format!("{}.{}", builtin.name, param.name), ty);
            self.write(var, value);
            vars.push(var);
        }
        Ok(OptionValue { builtin, args: vars })
    }

    /// A time: a host float, or a tensor of per-position times (diffusion forcing). A verb's
    /// tensor time makes the step it runs see tensor `t` and `s`; inside a step, a time computed
    /// from them is a tensor too, and so are the interpolant functions and model calls at it.
    fn time(&mut self, expr: &Expr) -> Result<ValueId, CompileError> {
        let value = self.expr_as(expr, Ty::F64)?;
        if self.func.ty(value) == Ty::Tensor && self.frame().step.is_none() {
            // A verb whose `from` and `to` are both tensors is labelled from one to the other.
            let verb = self.func.verbs.len() as u32;
            let span = match self.tensor_time {
                Some((previous, from)) if previous == verb && from.file == expr.span.file => from.to(expr.span),
                _ => expr.span,
            };
            self.tensor_time = Some((verb, span));
        }
        Ok(value)
    }

    /// Checks that a store into variable `name` of type `ty` keeps its type: a value computed from
    /// per-position times is a tensor, which a number variable cannot hold.
    fn check_store(&self, span: Span, name: &str, ty: Ty, value: ValueId) -> Result<(), CompileError> {
        let value_ty = self.func.ty(value);
        if value_ty == ty {
            return Ok(());
        }
        Err(unsupported(
            span,
            &format!("storing a {value_ty} in the {ty} variable `{name}`"),
            "values computed from per-position times are tensors, and a variable keeps its type",
        ))
    }

    fn refine(
        &mut self,
        stmt: &Stmt,
        target: &Expr,
        from: &Expr,
        to: &Expr,
        step_ref: &ast::StepRef,
        using: Option<&Expr>,
    ) -> Result<(), CompileError> {
        self.in_verb = true;
        // `refine seq.tail(k) ...` refines the window of the last k positions of `seq`: the step
        // works on a copy whose window is the tail, and `seq` gets the result back whole.
        let (var, tail) = match &target.kind {
            ExprKind::Method { receiver, method, args } if method.name == "tail" => {
                let var = self.place(receiver)?;
                let count = match args.as_deref() {
                    Some([count]) => self.expr_as(&count.value, Ty::I64)?,
                    _ => return Err(unsupported(target.span, "this `.tail`", "it takes one count")),
                };
                (var, Some(count))
            }
            _ => (self.place(target)?, None),
        };
        let t = self.time(from)?;
        let s = self.time(to)?;
        let model = self.verb_model(stmt.span, using)?;
        let Some((step, bound)) = self.program.step_refs.get(&step_ref.span).cloned() else { return Ok(()) };
        let args = step_ref.args.as_deref().unwrap_or(&[]);
        let state = match tail {
            None => var,
            Some(count) => {
                let seq = self.read(var);
                let window = self.token_op(TokenOp::Tail, vec![seq, count], None, Ty::Tokens);
                let state = self.new_var("tail", Ty::Tokens);
                self.write(state, window);
                state
            }
        };
        self.inline_step(step, &bound.per_param, args, state, t, s, model)?;
        if state != var {
            let refined = self.read(state);
            let whole = self.token_op(TokenOp::Whole, vec![refined], None, Ty::Tokens);
            self.write(var, whole);
        }
        self.verb_done("refine", stmt.span, var);
        Ok(())
    }

    /// Lowers a step's body in a new frame at the current point.
    #[allow(clippy::too_many_arguments, reason = "every part of a step call site is needed")]
    fn inline_step(
        &mut self,
        step: StepId,
        per_param: &[Vec<ast::ExprId>],
        args: &[Arg],
        state: VarId,
        t: ValueId,
        s: ValueId,
        model: ModelRef,
    ) -> Result<(), CompileError> {
        let info = self.program.step(step).clone();
        let ast = self.program.step_ast(step);
        let first_value = self.func.value_types.len() as u32;
        // Arguments are evaluated in the caller's frame, defaults in the step's file.
        let mut arg_values = Vec::new();
        let mut options = HashMap::new();
        for (index, param) in info.params.iter().enumerate() {
            let given =
                per_param.get(index).and_then(|ids| ids.first()).and_then(|id| args.iter().find(|a| a.value.id == *id));
            if matches!(param.ty, Type::Remask | Type::Sampler) {
                let option = match given {
                    Some(arg) => self.option_value(&arg.value, self.file())?,
                    None => {
                        let default = ast.params.get(index).and_then(|p| p.default.as_ref());
                        let default = default.ok_or_else(|| non_constant_default(param.span, &param.name))?;
                        self.option_value(default, info.file)?
                    }
                };
                if let Some(local) = info.param_locals.get(index) {
                    options.insert(*local, option);
                }
                continue;
            }
            let ty = self.ir_ty(&param.ty, param.span)?;
            let value = match given {
                Some(arg) => self.expr_as(&arg.value, ty)?,
                None => {
                    let default = ast.params.get(index).and_then(|p| p.default.as_ref());
                    let constant =
                        default.and_then(const_eval).ok_or_else(|| non_constant_default(param.span, &param.name))?;
                    let constant = coerce_constant(constant, ty);
                    self.constant(constant)
                }
            };
            arg_values.push((index, widened(ty, self.func.ty(value)), value));
        }
        // Per-position times make `t` and `s` tensors, and with them what the step computes from
        // them (a float parameter too, as DDIM's noise level passed to `first_order`).
        let per_position =
            [t, s].iter().chain(arg_values.iter().map(|(_, _, v)| v)).any(|v| self.func.ty(*v) == Ty::Tensor);
        let t_var = self.new_var(&format!("{}.t", info.name), self.func.ty(t));
        let s_var = self.new_var(&format!("{}.s", info.name), self.func.ty(s));
        self.write(t_var, t);
        self.write(s_var, s);
        let mut locals = HashMap::new();
        locals.insert(info.state_local, state);
        locals.insert(info.t_local, t_var);
        locals.insert(info.s_local, s_var);
        for (index, ty, value) in arg_values {
            let (Some(local), Some(param)) = (info.param_locals.get(index), info.params.get(index)) else { continue };
            let var = self.new_var(&format!("{}.{}", info.name, param.name), ty);
            self.write(var, value);
            locals.insert(*local, var);
        }
        self.frames.push(Frame {
            file: info.file,
            locals,
            options,
            step: Some(StepFrame { model, state, t: t_var, s: s_var }),
        });
        let result = self.block(&ast.body);
        self.frames.pop();
        if per_position {
            let values = first_value..self.func.value_types.len() as u32;
            let span = self.tensor_time.map_or(info.span, |(_, span)| span);
            self.tensor_steps.push(TensorStep { values, step: info.name.clone(), span });
        }
        result
    }

    fn verb_model(&mut self, span: Span, using: Option<&Expr>) -> Result<ModelRef, CompileError> {
        match using {
            Some(expr) => self.model(expr),
            None => {
                let local = self.program.verb_models.get(&span).copied();
                let slot = local.and_then(|l| self.model_slots.get(&l)).copied();
                slot.map(|slot| ModelRef { slot, label: None, guidance: None })
                    .ok_or_else(|| unsupported(span, "this verb", "it has no model"))
            }
        }
    }

    /// Lowers a model expression: a model parameter, a `let`-bound model, `cfg(...)`, `condition(...)`.
    fn model(&mut self, expr: &Expr) -> Result<ModelRef, CompileError> {
        match &expr.kind {
            ExprKind::Name(_) => match self.program.resolutions.get(&(self.file(), expr.id)) {
                Some(Resolution::Local(local)) => {
                    if let Some(slot) = self.model_slots.get(local) {
                        return Ok(ModelRef { slot: *slot, label: None, guidance: None });
                    }
                    self.model_vars.get(local).copied().ok_or_else(|| unsupported(expr.span, "this model", "internal"))
                }
                _ => Err(unsupported(expr.span, "this model expression", "internal")),
            },
            ExprKind::Call { callee, args } if callee.name == "cfg" || callee.name == "condition" => {
                let bound = self.program.bound_args.get(&(self.file(), expr.id)).cloned();
                let arg_of = |index: usize| -> Option<&Expr> {
                    let id = bound.as_ref()?.per_param.get(index)?.first()?;
                    args.iter().find(|a| a.value.id == *id).map(|a| &a.value)
                };
                let inner = arg_of(0).ok_or_else(|| unsupported(expr.span, "this model", "internal"))?;
                let mut model = self.model(inner)?;
                let label_expr = if callee.name == "cfg" { arg_of(2) } else { arg_of(1) };
                if let Some(label_expr) = label_expr {
                    let label = self.expr_as(label_expr, Ty::I64)?;
                    let var = self.new_var("label", Ty::I64);
                    self.write(var, label);
                    model.label = Some(var);
                }
                if callee.name == "cfg"
                    && let Some(scale_expr) = arg_of(1)
                {
                    let scale = self.expr_as(scale_expr, Ty::F64)?;
                    let var = self.new_var("guidance", Ty::F64);
                    self.write(var, scale);
                    model.guidance = Some(var);
                }
                Ok(model)
            }
            _ => Err(unsupported(
                expr.span,
                "this model expression",
                "models are parameters, `cfg(...)` or `condition(...)`",
            )),
        }
    }

    fn model_label(&mut self, model: ModelRef) -> Option<ValueId> {
        model.label.map(|var| self.read(var))
    }

    /// The raw field output at (x, t), with classifier-free guidance applied.
    fn field(&mut self, model: ModelRef, x: ValueId, t: ValueId) -> ValueId {
        let label = self.model_label(model);
        let verb = self.current_verb();
        let conditional = self.value(Op::Field { model: model.slot, x, t, label, verb }, Ty::Tensor);
        let Some(scale_var) = model.guidance else { return conditional };
        let unconditional = self.value(Op::Field { model: model.slot, x, t, label: None, verb }, Ty::Tensor);
        let scale = self.read(scale_var);
        let difference = self.value(Op::Binary(BinaryOp::Sub, conditional, unconditional), Ty::Tensor);
        let scaled = self.value(Op::Binary(BinaryOp::Mul, scale, difference), Ty::Tensor);
        self.value(Op::Binary(BinaryOp::Add, unconditional, scaled), Ty::Tensor)
    }

    /// (x̂₀, ε̂) at (x, t) from one (guided) evaluation.
    fn predict(&mut self, model: ModelRef, x: ValueId, t: ValueId) -> (ValueId, ValueId) {
        let m = self.field(model, x, t);
        // The coefficients have the type of `t`: tensors for per-position times.
        let ty = self.func.ty(t);
        let part = |this: &mut Self, from_x: Coefficient, from_m: Coefficient| {
            let a = this.value(Op::Coefficient { which: from_x, model: model.slot, t }, ty);
            let b = this.value(Op::Coefficient { which: from_m, model: model.slot, t }, ty);
            let ax = this.value(Op::Binary(BinaryOp::Mul, a, x), Ty::Tensor);
            let bm = this.value(Op::Binary(BinaryOp::Mul, b, m), Ty::Tensor);
            this.value(Op::Binary(BinaryOp::Add, ax, bm), Ty::Tensor)
        };
        let x0 = part(self, Coefficient::X0FromX, Coefficient::X0FromOutput);
        let eps = part(self, Coefficient::EpsFromX, Coefficient::EpsFromOutput);
        (x0, eps)
    }

    // -----------------------------------------------------------------------------------------
    // Expressions

    fn ir_ty(&self, ty: &Type, span: Span) -> Result<Ty, CompileError> {
        match ty {
            Type::Int => Ok(Ty::I64),
            Type::Float => Ok(Ty::F64),
            Type::Bool => Ok(Ty::Bool),
            Type::Tensor => Ok(Ty::Tensor),
            Type::Grid => Ok(Ty::Grid),
            Type::Tokens => Ok(Ty::Tokens),
            other => Err(unsupported(
                span,
                &format!("a `{other}` variable"),
                "only numbers, bools, tensors and grids are run-time values for now",
            )),
        }
    }

    /// Converts an int to a float where the checker widened it.
    fn coerce(&mut self, value: ValueId, to: Ty) -> ValueId {
        match (self.func.ty(value), to) {
            (Ty::I64, Ty::F64) => self.value(Op::Unary(UnaryOp::ToFloat, value), Ty::F64),
            _ => value,
        }
    }

    fn expr_as(&mut self, expr: &Expr, ty: Ty) -> Result<ValueId, CompileError> {
        let value = self.expr(expr)?;
        Ok(self.coerce(value, ty))
    }

    fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
        let (ta, tb) = (self.func.ty(a), self.func.ty(b));
        let tensor = ta == Ty::Tensor || tb == Ty::Tensor;
        let result_ty = match op {
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::And
            | BinaryOp::Or => Ty::Bool,
            _ if tensor => Ty::Tensor,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Rem | BinaryOp::Min | BinaryOp::Max
                if ta == Ty::I64 && tb == Ty::I64 =>
            {
                Ty::I64
            }
            _ => Ty::F64,
        };
        // Operands of one type are used as they are (int comparisons stay integral), except that
        // an int operation with a float result (`/`, `^`) and mixed int/float operands compute in f64.
        let same = ta == tb && !(ta == Ty::I64 && result_ty == Ty::F64);
        let (a, b) = if same || ta == Ty::Bool || tb == Ty::Bool {
            (a, b)
        } else {
            (self.coerce(a, Ty::F64), self.coerce(b, Ty::F64))
        };
        self.value(Op::Binary(op, a, b), result_ty)
    }

    fn expr(&mut self, expr: &Expr) -> Result<ValueId, CompileError> {
        match &expr.kind {
            ExprKind::Int(v) => Ok(self.constant(Constant::I64(*v))),
            ExprKind::Float(v) => Ok(self.constant(Constant::F64(*v))),
            ExprKind::Bool(b) => Ok(self.constant(Constant::Bool(*b))),
            ExprKind::Name(name) => match self.program.resolutions.get(&(self.file(), expr.id)).copied() {
                Some(Resolution::Local(local)) => match self.local_var(local) {
                    Some(var) => Ok(self.read(var)),
                    None => Err(unsupported(name.span, &format!("`{}` here", name.name), "models are not values")),
                },
                Some(Resolution::Constant(v)) => Ok(self.constant(Constant::F64(v))),
                Some(Resolution::Option(_)) | None => {
                    Err(unsupported(expr.span, "this value", "options are only arguments"))
                }
            },
            ExprKind::Unary { op, operand } => {
                let value = self.expr(operand)?;
                let ty = self.func.ty(value);
                let op = match op {
                    AstUnary::Neg => UnaryOp::Neg,
                    AstUnary::Not => UnaryOp::Not,
                };
                Ok(self.value(Op::Unary(op, value), ty))
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.expr(lhs)?;
                let b = self.expr(rhs)?;
                Ok(self.binary(arith_op(*op), a, b))
            }
            ExprKind::Call { callee, args } => {
                let Some(Callee::Builtin(builtin)) = self.program.callees.get(&(self.file(), expr.id)).copied() else {
                    return Err(unsupported(callee.span, "this call", "internal"));
                };
                let values = self.call(expr, builtin, args)?;
                values.first().copied().ok_or_else(|| unsupported(expr.span, "this call", "it returns several values"))
            }
            ExprKind::Tuple(_) | ExprKind::Method { .. } | ExprKind::Str(_) | ExprKind::Error => {
                Err(unsupported(expr.span, "this expression", "it has no run-time value yet"))
            }
        }
    }

    fn tuple(&mut self, expr: &Expr) -> Result<Vec<ValueId>, CompileError> {
        match &expr.kind {
            ExprKind::Tuple(items) => items.iter().map(|item| self.expr(item)).collect(),
            ExprKind::Call { args, .. } => match self.program.callees.get(&(self.file(), expr.id)).copied() {
                Some(Callee::Builtin(builtin)) => self.call(expr, builtin, args),
                _ => Err(unsupported(expr.span, "this call", "internal")),
            },
            _ => Ok(vec![self.expr(expr)?]),
        }
    }

    /// The argument expression bound to parameter `index` of a builtin call.
    fn arg<'a>(&self, call: &Expr, args: &'a [Arg], index: usize) -> Option<&'a Arg> {
        let bound = self.program.bound_args.get(&(self.file(), call.id))?;
        let id = bound.per_param.get(index)?.first()?;
        args.iter().find(|a| a.value.id == *id)
    }

    fn arg_value(
        &mut self,
        call: &Expr,
        args: &[Arg],
        builtin: &Builtin,
        index: usize,
        ty: Ty,
    ) -> Result<ValueId, CompileError> {
        match self.arg(call, args, index) {
            Some(arg) => self.expr_as(&arg.value, ty),
            None => {
                let constant = match builtin.params.get(index).and_then(|p| p.default) {
                    Some(DefaultValue::Int(v)) => Constant::I64(v),
                    Some(DefaultValue::Float(v)) => Constant::F64(v),
                    _ => {
                        return Err(unsupported(
                            call.span,
                            &format!("`{}` without this argument", builtin.name),
                            "internal",
                        ));
                    }
                };
                Ok(self.constant(coerce_constant(constant, ty)))
            }
        }
    }

    fn step_frame(&self, span: Span) -> Result<StepFrame, CompileError> {
        self.frame().step.ok_or_else(|| unsupported(span, "this builtin outside a step", "internal"))
    }

    /// Lowers a builtin call; returns its results (two for `predict`).
    fn call(&mut self, call: &Expr, builtin: &'static Builtin, args: &[Arg]) -> Result<Vec<ValueId>, CompileError> {
        let numeric = |this: &mut Self, index: usize| -> Result<ValueId, CompileError> {
            let arg = this.arg(call, args, index).ok_or_else(|| unsupported(call.span, "this call", "internal"))?;
            let value = this.expr(&arg.value)?;
            Ok(if this.func.ty(value) == Ty::I64 { this.coerce(value, Ty::F64) } else { value })
        };
        let unary = |this: &mut Self, op: UnaryOp| -> Result<Vec<ValueId>, CompileError> {
            let x = numeric(this, 0)?;
            let ty = this.func.ty(x);
            Ok(vec![this.value(Op::Unary(op, x), ty)])
        };
        let like =
            |this: &mut Self| -> Option<ValueId> { this.frame().step.map(|f| f.state).map(|state| this.read(state)) };
        Ok(match builtin.name {
            "sqrt" => unary(self, UnaryOp::Sqrt)?,
            "exp" => unary(self, UnaryOp::Exp)?,
            "log" => unary(self, UnaryOp::Log)?,
            "expm1" => unary(self, UnaryOp::Expm1)?,
            "log1p" => unary(self, UnaryOp::Log1p)?,
            "sin" => unary(self, UnaryOp::Sin)?,
            "cos" => unary(self, UnaryOp::Cos)?,
            "tan" => unary(self, UnaryOp::Tan)?,
            "tanh" => unary(self, UnaryOp::Tanh)?,
            "atan" => unary(self, UnaryOp::Atan)?,
            "abs" => unary(self, UnaryOp::Abs)?,
            "sigmoid" => unary(self, UnaryOp::Sigmoid)?,
            "floor" => unary(self, UnaryOp::Floor)?,
            "ceil" => unary(self, UnaryOp::Ceil)?,
            "min" | "max" => {
                let a = numeric(self, 0)?;
                let b = numeric(self, 1)?;
                let op = if builtin.name == "min" { BinaryOp::Min } else { BinaryOp::Max };
                vec![self.binary(op, a, b)]
            }
            "clamp" => {
                let x = numeric(self, 0)?;
                let lo = numeric(self, 1)?;
                let hi = numeric(self, 2)?;
                let above = self.binary(BinaryOp::Max, x, lo);
                vec![self.binary(BinaryOp::Min, above, hi)]
            }
            "round" | "int" => {
                let x = self.arg_value(call, args, builtin, 0, Ty::F64)?;
                let op = if builtin.name == "round" { UnaryOp::Round } else { UnaryOp::Truncate };
                vec![self.value(Op::Unary(op, x), Ty::I64)]
            }
            "float" => vec![self.arg_value(call, args, builtin, 0, Ty::F64)?],
            "gaussian" | "uniform_noise" => {
                let like = like(self);
                let site = self.func.noise_sites;
                self.func.noise_sites += 1;
                let dist = if builtin.name == "gaussian" { Distribution::Gaussian } else { Distribution::Uniform };
                vec![self.value(Op::Noise { dist, site, like }, Ty::Tensor)]
            }
            "zeros" | "ones" => {
                let like = like(self);
                let value = if builtin.name == "zeros" { 0.0 } else { 1.0 };
                vec![self.value(Op::Fill { value, like }, Ty::Tensor)]
            }
            "rms" | "mean" | "norm" | "max_abs" => {
                let x = numeric(self, 0)?;
                let op = match builtin.name {
                    "rms" => ReduceOp::Rms,
                    "mean" => ReduceOp::Mean,
                    "norm" => ReduceOp::Norm,
                    _ => ReduceOp::MaxAbs,
                };
                vec![self.value(Op::Reduce(op, x), Ty::F64)]
            }
            "predict" | "x0" | "eps" | "velocity" => {
                let frame = self.step_frame(call.span)?;
                let x = self.arg_value(call, args, builtin, 0, Ty::Tensor)?;
                let t = self.time_arg(call, args, 1)?;
                let (x0, eps) = self.predict(frame.model, x, t);
                match builtin.name {
                    "predict" => vec![x0, eps],
                    "x0" => vec![x0],
                    "eps" => vec![eps],
                    _ => {
                        let ty = self.func.ty(t);
                        let da =
                            self.value(Op::Interpolant { func: InterpolantFn::DAlpha, model: frame.model.slot, t }, ty);
                        let ds =
                            self.value(Op::Interpolant { func: InterpolantFn::DSigma, model: frame.model.slot, t }, ty);
                        let a = self.value(Op::Binary(BinaryOp::Mul, da, x0), Ty::Tensor);
                        let b = self.value(Op::Binary(BinaryOp::Mul, ds, eps), Ty::Tensor);
                        vec![self.value(Op::Binary(BinaryOp::Add, a, b), Ty::Tensor)]
                    }
                }
            }
            "flow" => {
                let frame = self.step_frame(call.span)?;
                let x = self.arg_value(call, args, builtin, 0, Ty::Tensor)?;
                let t = self.time_arg(call, args, 1)?;
                let s = self.time_arg(call, args, 2)?;
                let label = self.model_label(frame.model);
                let verb = self.current_verb();
                vec![self.value(Op::Jump { model: frame.model.slot, x, t, s, label, verb }, Ty::Tensor)]
            }
            "alpha" | "sigma" | "lambda" => {
                let frame = self.step_frame(call.span)?;
                let t = self.time_arg(call, args, 0)?;
                let func = match builtin.name {
                    "alpha" => InterpolantFn::Alpha,
                    "sigma" => InterpolantFn::Sigma,
                    _ => InterpolantFn::Lambda,
                };
                let ty = self.func.ty(t);
                vec![self.value(Op::Interpolant { func, model: frame.model.slot, t }, ty)]
            }
            "grid" => vec![self.grid(call, args)?],
            "times" => {
                let mut points = Vec::new();
                for arg in args {
                    points.push(self.expr_as(&arg.value, Ty::F64)?);
                }
                let (from, to, steps) = match (points.first().copied(), points.last().copied()) {
                    (Some(first), Some(last)) => (first, last, self.constant(Constant::I64(points.len() as i64 - 1))),
                    _ => return Err(unsupported(call.span, "an empty `times()`", "a grid needs points")),
                };
                vec![self.value(
                    Op::Grid { spacing: SpacingKind::Explicit, from, to, steps, args: points, model: None },
                    Ty::Grid,
                )]
            }
            "positions" => {
                let like = like(self);
                vec![self.value(Op::Positions { like }, Ty::Tensor)]
            }
            "prompt" => vec![self.token_op(TokenOp::Prompt, Vec::new(), None, Ty::Tokens)],
            "length" | "ended" => {
                let seq = self.arg_value(call, args, builtin, 0, Ty::Tokens)?;
                if self.func.ty(seq) != Ty::Tokens {
                    return Err(unsupported(call.span, "the length of a tensor", "only token sequences have one"));
                }
                let (op, ty) =
                    if builtin.name == "length" { (TokenOp::Length, Ty::I64) } else { (TokenOp::Ended, Ty::Bool) };
                vec![self.token_op(op, vec![seq], None, ty)]
            }
            "settled" => {
                let seq = self.arg_value(call, args, builtin, 0, Ty::Tokens)?;
                vec![self.token_op(TokenOp::Settled, vec![seq], None, Ty::Bool)]
            }
            "repredict" => {
                let frame = self.step_frame(call.span)?;
                let x = self.arg_value(call, args, builtin, 0, Ty::Tokens)?;
                vec![self.token_op(TokenOp::Repredict, vec![x], Some(frame.model.slot), Ty::Tokens)]
            }
            "propose" | "verify" => {
                let model_arg =
                    self.arg(call, args, 0).ok_or_else(|| unsupported(call.span, "this call", "internal"))?;
                let model = self.model(&model_arg.value)?;
                let seq = self.arg_value(call, args, builtin, 1, Ty::Tokens)?;
                let second_ty = if builtin.name == "propose" { Ty::I64 } else { Ty::Tokens };
                let second = self.arg_value(call, args, builtin, 2, second_ty)?;
                let (kind, sampler_args) = match self.arg(call, args, 3) {
                    Some(arg) => self.sampler(&arg.value)?,
                    None => (SamplerKind::Greedy, Vec::new()),
                };
                let op = if builtin.name == "propose" { TokenOp::Propose(kind) } else { TokenOp::Verify(kind) };
                let mut operands = vec![seq, second];
                operands.extend(sampler_args);
                vec![self.token_op(op, operands, Some(model.slot), Ty::Tokens)]
            }
            "candidates" => {
                let frame = self.step_frame(call.span)?;
                let x = self.arg_value(call, args, builtin, 0, Ty::Tokens)?;
                let t = self.arg_value(call, args, builtin, 1, Ty::F64)?;
                let temperature = self.arg_value(call, args, builtin, 2, Ty::F64)?;
                let guidance = self.arg_value(call, args, builtin, 3, Ty::F64)?;
                let op = TokenOp::Candidates;
                let site = self.token_site(op);
                let verb = self.current_verb();
                let tokens = self.func.new_value(Ty::Tokens);
                let confidence = self.func.new_value(Ty::Tensor);
                let current = self.current;
                self.func.graph[current].insts.push(Inst {
                    op: Op::Tokens {
                        op,
                        args: vec![x, t, temperature, guidance],
                        model: Some(frame.model.slot),
                        site,
                        verb,
                    },
                    results: vec![tokens, confidence],
                });
                vec![tokens, confidence]
            }
            "commit" => {
                let x = self.arg_value(call, args, builtin, 0, Ty::Tokens)?;
                let candidates = self.arg_value(call, args, builtin, 1, Ty::Tokens)?;
                let confidence = self.arg_value(call, args, builtin, 2, Ty::Tensor)?;
                let keep = self.arg_value(call, args, builtin, 3, Ty::F64)?;
                let policy = self.arg(call, args, 4).ok_or_else(|| unsupported(call.span, "this call", "internal"))?;
                let option = self.option_value(&policy.value, self.file())?;
                let remask = match option.builtin.name {
                    "posterior" => Remask::Posterior,
                    "confidence" => Remask::Confidence,
                    "random" => Remask::Random,
                    "first_hitting" => Remask::FirstHitting,
                    "threshold" => Remask::Threshold,
                    _ => return Err(unsupported(policy.value.span, "this remasking policy", "internal")),
                };
                let mut operands = vec![x, candidates, confidence, keep];
                operands.extend(option.args.iter().map(|var| self.read(*var)).collect::<Vec<_>>());
                vec![self.token_op(TokenOp::Commit(remask), operands, None, Ty::Tokens)]
            }
            other => {
                return Err(unsupported(
                    call.span,
                    &format!("`{other}(...)` here"),
                    "it is not a run-time value in continuous schedules yet",
                ));
            }
        })
    }

    fn time_arg(&mut self, call: &Expr, args: &[Arg], index: usize) -> Result<ValueId, CompileError> {
        let arg = self.arg(call, args, index).ok_or_else(|| unsupported(call.span, "this call", "internal"))?;
        self.time(&arg.value)
    }

    fn grid(&mut self, call: &Expr, args: &[Arg]) -> Result<ValueId, CompileError> {
        let range = self.arg(call, args, 0).ok_or_else(|| unsupported(call.span, "this grid", "internal"))?;
        let from = self.expr_as(&range.value, Ty::F64)?;
        let to = match &range.arrow_to {
            Some(to) => self.expr_as(to, Ty::F64)?,
            None => return Err(unsupported(call.span, "this grid", "internal")),
        };
        let steps_arg = self.arg(call, args, 1).ok_or_else(|| unsupported(call.span, "this grid", "internal"))?;
        let steps = self.expr_as(&steps_arg.value, Ty::I64)?;
        let (spacing, spacing_args) = match self.arg(call, args, 2) {
            None => (SpacingKind::Uniform, Vec::new()),
            Some(arg) => self.spacing(&arg.value)?,
        };
        let model = self.func.models.first().map(|_| ModelSlot(0));
        Ok(self.value(Op::Grid { spacing, from, to, steps, args: spacing_args, model }, Ty::Grid))
    }

    /// A spacing option and its arguments, in the order of [`SpacingKind`].
    fn spacing(&mut self, expr: &Expr) -> Result<(SpacingKind, Vec<ValueId>), CompileError> {
        let (builtin, args): (&'static Builtin, &[Arg]) =
            match (&expr.kind, self.program.resolutions.get(&(self.file(), expr.id))) {
                (ExprKind::Name(_), Some(Resolution::Option(b))) => (b, &[]),
                (ExprKind::Call { args, .. }, _) => match self.program.callees.get(&(self.file(), expr.id)) {
                    Some(Callee::Builtin(b)) => (b, args.as_slice()),
                    _ => return Err(unsupported(expr.span, "this spacing", "internal")),
                },
                _ => {
                    return Err(unsupported(
                        expr.span,
                        "a spacing held in a variable",
                        "write the spacing in the grid",
                    ));
                }
            };
        let kind = match builtin.name {
            "uniform" => SpacingKind::Uniform,
            "quadratic" => SpacingKind::Quadratic,
            "cosine" => SpacingKind::Cosine,
            "karras" => SpacingKind::Karras,
            "exponential" => SpacingKind::Exponential,
            "logsnr" => SpacingKind::LogSnr,
            "shift" => SpacingKind::Shift,
            "leading" => SpacingKind::Leading,
            "trailing" => SpacingKind::Trailing,
            "linspace" => SpacingKind::Linspace,
            _ => return Err(unsupported(expr.span, "this spacing", "internal")),
        };
        let mut values = Vec::new();
        for (index, param) in builtin.params.iter().enumerate() {
            values.push(self.option_arg(expr, args, index, param, "this spacing")?.0);
        }
        Ok((kind, values))
    }

    /// Argument `index` of an option (a spacing, sampler or remasking policy) written `expr`: the
    /// given value, or the parameter's default; with its type. `what` names the option in errors.
    fn option_arg(
        &mut self,
        expr: &Expr,
        args: &[Arg],
        index: usize,
        param: &sched_lang::builtins::BuiltinParam,
        what: &str,
    ) -> Result<(ValueId, Ty), CompileError> {
        let ty = match param.ty {
            sched_lang::builtins::ParamType::Int => Ty::I64,
            sched_lang::builtins::ParamType::Bool => Ty::Bool,
            _ => Ty::F64,
        };
        let value = match self.arg(expr, args, index) {
            Some(arg) => self.expr_as(&arg.value, ty)?,
            None => {
                let constant = match param.default {
                    Some(DefaultValue::Int(v)) => Constant::I64(v),
                    Some(DefaultValue::Float(v)) => Constant::F64(v),
                    Some(DefaultValue::Bool(v)) => Constant::Bool(v),
                    _ => return Err(unsupported(expr.span, what, "internal")),
                };
                self.constant(coerce_constant(constant, ty))
            }
        };
        Ok((value, ty))
    }
}

/// The type of a variable the checker typed `ty` that is given a value of type `value`: a float
/// computed from per-position times is a tensor.
fn widened(ty: Ty, value: Ty) -> Ty {
    if ty == Ty::F64 && value == Ty::Tensor { Ty::Tensor } else { ty }
}

fn host_ty(ty: &Type) -> Ty {
    match ty {
        Type::Int => Ty::I64,
        Type::Bool => Ty::Bool,
        _ => Ty::F64,
    }
}

fn arith_op(op: ast::BinaryOp) -> BinaryOp {
    match op {
        ast::BinaryOp::Or => BinaryOp::Or,
        ast::BinaryOp::And => BinaryOp::And,
        ast::BinaryOp::Eq => BinaryOp::Eq,
        ast::BinaryOp::Ne => BinaryOp::Ne,
        ast::BinaryOp::Lt => BinaryOp::Lt,
        ast::BinaryOp::Le => BinaryOp::Le,
        ast::BinaryOp::Gt => BinaryOp::Gt,
        ast::BinaryOp::Ge => BinaryOp::Ge,
        ast::BinaryOp::Add => BinaryOp::Add,
        ast::BinaryOp::Sub => BinaryOp::Sub,
        ast::BinaryOp::Mul => BinaryOp::Mul,
        ast::BinaryOp::Div => BinaryOp::Div,
        ast::BinaryOp::Rem => BinaryOp::Rem,
        ast::BinaryOp::Pow => BinaryOp::Pow,
    }
}

/// Evaluates a constant expression (literals, negation, arithmetic on them).
pub fn const_eval(expr: &Expr) -> Option<Constant> {
    match &expr.kind {
        ExprKind::Int(v) => Some(Constant::I64(*v)),
        ExprKind::Float(v) => Some(Constant::F64(*v)),
        ExprKind::Bool(b) => Some(Constant::Bool(*b)),
        ExprKind::Unary { op: AstUnary::Neg, operand } => match const_eval(operand)? {
            Constant::I64(v) => v.checked_neg().map(Constant::I64),
            Constant::F64(v) => Some(Constant::F64(-v)),
            Constant::Bool(_) => None,
        },
        ExprKind::Unary { op: AstUnary::Not, operand } => match const_eval(operand)? {
            Constant::Bool(b) => Some(Constant::Bool(!b)),
            _ => None,
        },
        _ => None,
    }
}

fn coerce_constant(value: Constant, ty: Ty) -> Constant {
    match (value, ty) {
        (Constant::I64(v), Ty::F64) => Constant::F64(v as f64),
        (other, _) => other,
    }
}
