//! Host code generation: one schedule's control flow and host scalar math as one Cranelift
//! function
//!
//! ```text
//! extern "C" fn(ctx: *mut RuntimeCtx) -> i32
//! ```
//!
//! Blocks of the IR become blocks of the function and its terminators branches; host values
//! (`f64`, `i64`, `bool` as `i8`) are Cranelift values and host variables Cranelift variables, so
//! grid arithmetic, loop counters, conditions and every coefficient are native code. Everything
//! that touches tensors, grids or models is a call of a runtime hook (see [`Hook`]): the hook
//! receives the context, the instruction's *site* (its number in [`HostCode::sites`], from which
//! the runtime reads the instruction), a pointer to the instruction's host operands (each as 64
//! bits, in operand order, tensor and grid operands left out: the runtime holds those by value
//! id) and a pointer where it writes the instruction's host result. A hook returns a status; a
//! nonzero status makes the function return it at once, and the runtime turns it into the error
//! it recorded.
//!
//! The host arithmetic reproduces [`host`](crate::host) bit for bit: IEEE operations are the
//! corresponding Cranelift instructions, and the functions whose Rust implementation is a libm
//! call (or has semantics Cranelift's instruction lacks: `min`, `max`, `round`, float `%`) call
//! small shims, which the runtime implements with the very Rust methods `host` uses.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, ExtFuncData, ExternalName, FuncRef, InstBuilder, Signature, StackSlot, StackSlotData,
    StackSlotKind, Type, UserExternalName, UserFuncName, Value, types,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use target_lexicon::PointerWidth;

use crate::diagnostics::{CompileError, codegen};
use crate::ir::{BinaryOp, BlockId, Constant, Function, Op, Terminator, Ty, UnaryOp, ValueId};

/// A function the host code calls: a runtime hook, or a shim of a host math function.
///
/// The generated code imports each hook as the user external name `(0, hook as u32)`, so a
/// module that declares the functions of [`Hook::ALL`] (every hook, in declaration order) first,
/// in that order, gives them exactly those ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// A schedule parameter's value.
    Param,
    /// Whether a tensor parameter was given.
    ParamGiven,
    /// A tensor or grid variable's value.
    Read,
    /// An assignment of a tensor or grid variable.
    Write,
    /// An elementwise operation on tensors that fusion left outside a kernel.
    Elementwise,
    /// α, σ, λ or a derivative of the bound model's interpolant.
    Interpolant,
    /// A coefficient converting a model's output to x̂₀ and ε̂.
    Coefficient,
    /// Fresh noise.
    Noise,
    /// A constant tensor.
    Fill,
    /// A model call of the local field.
    Field,
    /// A model call of a two-time model.
    Jump,
    /// A reduction of a tensor to a host float.
    Reduce,
    /// A time grid.
    Grid,
    /// The number of points of a grid.
    GridLen,
    /// A point or a pair end of a grid.
    GridPoint,
    /// An output of the schedule.
    Emit,
    /// A fused kernel launch.
    Kernel,
    /// The end of a verb: traces, the progress callback, the cancellation check.
    VerbDone,
    /// `exp` of an f64.
    Exp,
    Log,
    Expm1,
    Log1p,
    Sin,
    Cos,
    Tan,
    Tanh,
    Atan,
    /// Rounding to nearest with halves away from zero.
    Round,
    Pow,
    /// Float remainder (`fmod`).
    Fmod,
    /// Rust's `f64::min`, which ignores NaN.
    Fmin,
    /// Rust's `f64::max`, which ignores NaN.
    Fmax,
    /// An operation on token sequences (declared after the others, so that adding it kept their
    /// ids).
    Tokens,
    /// The position indices of `positions()` (declared last, so that adding it kept the other
    /// ids).
    Positions,
}

impl Hook {
    pub const ALL: &'static [Hook] = &[
        Hook::Param,
        Hook::ParamGiven,
        Hook::Read,
        Hook::Write,
        Hook::Elementwise,
        Hook::Interpolant,
        Hook::Coefficient,
        Hook::Noise,
        Hook::Fill,
        Hook::Field,
        Hook::Jump,
        Hook::Reduce,
        Hook::Grid,
        Hook::GridLen,
        Hook::GridPoint,
        Hook::Emit,
        Hook::Kernel,
        Hook::VerbDone,
        Hook::Exp,
        Hook::Log,
        Hook::Expm1,
        Hook::Log1p,
        Hook::Sin,
        Hook::Cos,
        Hook::Tan,
        Hook::Tanh,
        Hook::Atan,
        Hook::Round,
        Hook::Pow,
        Hook::Fmod,
        Hook::Fmin,
        Hook::Fmax,
        Hook::Tokens,
        Hook::Positions,
    ];

    /// The symbol the runtime registers the hook under.
    pub fn symbol(self) -> &'static str {
        match self {
            Hook::Param => "sched_param",
            Hook::ParamGiven => "sched_param_given",
            Hook::Read => "sched_read",
            Hook::Write => "sched_write",
            Hook::Elementwise => "sched_elementwise",
            Hook::Interpolant => "sched_interpolant",
            Hook::Coefficient => "sched_coefficient",
            Hook::Noise => "sched_noise",
            Hook::Fill => "sched_fill",
            Hook::Field => "sched_field",
            Hook::Jump => "sched_jump",
            Hook::Reduce => "sched_reduce",
            Hook::Grid => "sched_grid",
            Hook::GridLen => "sched_grid_len",
            Hook::GridPoint => "sched_grid_point",
            Hook::Emit => "sched_emit",
            Hook::Kernel => "sched_kernel",
            Hook::VerbDone => "sched_verb_done",
            Hook::Exp => "sched_exp",
            Hook::Log => "sched_log",
            Hook::Expm1 => "sched_expm1",
            Hook::Log1p => "sched_log1p",
            Hook::Sin => "sched_sin",
            Hook::Cos => "sched_cos",
            Hook::Tan => "sched_tan",
            Hook::Tanh => "sched_tanh",
            Hook::Atan => "sched_atan",
            Hook::Round => "sched_round",
            Hook::Pow => "sched_pow",
            Hook::Fmod => "sched_fmod",
            Hook::Fmin => "sched_fmin",
            Hook::Fmax => "sched_fmax",
            Hook::Tokens => "sched_tokens",
            Hook::Positions => "sched_positions",
        }
    }

    /// The shape of the hook's signature.
    pub fn kind(self) -> HookKind {
        match self {
            Hook::Exp
            | Hook::Log
            | Hook::Expm1
            | Hook::Log1p
            | Hook::Sin
            | Hook::Cos
            | Hook::Tan
            | Hook::Tanh
            | Hook::Atan
            | Hook::Round => HookKind::Unary,
            Hook::Pow | Hook::Fmod | Hook::Fmin | Hook::Fmax => HookKind::Binary,
            _ => HookKind::Runtime,
        }
    }

    /// The Cranelift signature of the hook, for a target with pointers of type `pointer`.
    pub fn signature(self, pointer: Type) -> Signature {
        let mut signature = Signature::new(CallConv::SystemV);
        match self.kind() {
            HookKind::Runtime => {
                signature.params.extend([
                    AbiParam::new(pointer),
                    AbiParam::new(types::I32),
                    AbiParam::new(pointer),
                    AbiParam::new(pointer),
                ]);
                signature.returns.push(AbiParam::new(types::I32));
            }
            HookKind::Unary => {
                signature.params.push(AbiParam::new(types::F64));
                signature.returns.push(AbiParam::new(types::F64));
            }
            HookKind::Binary => {
                signature.params.extend([AbiParam::new(types::F64), AbiParam::new(types::F64)]);
                signature.returns.push(AbiParam::new(types::F64));
            }
        }
        signature
    }
}

/// The signatures of hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// `extern "C" fn(ctx, site: u32, operands: *const u64, result: *mut u64) -> i32`.
    Runtime,
    /// `extern "C" fn(f64) -> f64`.
    Unary,
    /// `extern "C" fn(f64, f64) -> f64`.
    Binary,
}

/// An instruction of the IR that the host code hands to the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    pub block: BlockId,
    /// The instruction's index in its block.
    pub index: u32,
}

/// The host code of one schedule.
#[derive(Clone, Debug)]
pub struct HostCode {
    /// The Cranelift function, before optimisation; its calling convention is the target's
    /// default, to be set by whoever compiles it.
    pub function: cranelift_codegen::ir::Function,
    /// The instruction each site number stands for.
    pub sites: Vec<Site>,
}

impl HostCode {
    /// The CLIF text of the function followed by the instruction of each site, as
    /// `sched build --emit clif` prints it.
    pub fn render(&self, function: &Function) -> String {
        let mut text = self.function.display().to_string();
        text.push_str("\n; hooks:\n");
        let mut used: Vec<u32> = self.function.params.user_named_funcs().values().map(|name| name.index).collect();
        used.sort_unstable();
        for index in used {
            if let Some(hook) = Hook::ALL.get(index as usize) {
                text.push_str(&format!(";   u0:{index} = {}\n", hook.symbol()));
            }
        }
        text.push_str("; sites (the second argument of each runtime hook call):\n");
        for (number, site) in self.sites.iter().enumerate() {
            let instruction = crate::print::instruction(function, site.block, site.index as usize);
            text.push_str(&format!(";   {number}: {instruction}\n"));
        }
        text
    }
}

/// The status a hook returns when it succeeded.
pub const STATUS_OK: i32 = 0;

/// The target the golden CLIF tests and `sched build --emit clif` describe: 64-bit pointers and
/// the System V calling convention (the JIT uses the host's own).
pub fn reference_target() -> TargetFrontendConfig {
    TargetFrontendConfig {
        default_call_conv: CallConv::SystemV,
        pointer_width: PointerWidth::U64,
        page_size_align_log2: 12,
    }
}

/// Generates the host code of a function (normally after the whole pipeline) for `target`.
pub fn generate(function: &Function, target: TargetFrontendConfig) -> Result<HostCode, CompileError> {
    let (pointer, call_conv) = (target.pointer_type(), target.default_call_conv);
    let mut signature = Signature::new(call_conv);
    signature.params.push(AbiParam::new(pointer));
    signature.returns.push(AbiParam::new(types::I32));
    let mut clif = cranelift_codegen::ir::Function::with_name_signature(UserFuncName::user(0, 0), signature);
    let mut builder_context = FunctionBuilderContext::new();
    let builder = FunctionBuilder::new(&mut clif, &mut builder_context);
    let mut emitter = Emitter {
        function,
        builder,
        pointer,
        call_conv,
        imported: HashMap::new(),
        vars: HashMap::new(),
        values: HashMap::new(),
        sites: Vec::new(),
        ctx: None,
        operands: None,
        result: None,
        error_block: None,
    };
    emitter.emit()?;
    let Emitter { builder, sites, .. } = emitter;
    builder.finalize(target);
    Ok(HostCode { function: clif, sites })
}

struct Emitter<'a, 'f> {
    function: &'a Function,
    builder: FunctionBuilder<'f>,
    pointer: Type,
    call_conv: CallConv,
    imported: HashMap<Hook, FuncRef>,
    /// The Cranelift variable of each host variable of the IR.
    vars: HashMap<u32, Variable>,
    /// The Cranelift value of each host value of the block being emitted.
    values: HashMap<ValueId, Value>,
    sites: Vec<Site>,
    ctx: Option<Value>,
    /// Where host operands are stored for a hook.
    operands: Option<StackSlot>,
    /// Where a hook writes its host result.
    result: Option<StackSlot>,
    /// The block that returns a failed hook's status.
    error_block: Option<cranelift_codegen::ir::Block>,
}

/// The Cranelift type of a host IR type, or `None` for tensors and grids.
fn host_type(ty: Ty) -> Option<Type> {
    match ty {
        Ty::F64 => Some(types::F64),
        Ty::I64 => Some(types::I64),
        Ty::Bool => Some(types::I8),
        Ty::Tensor | Ty::Grid | Ty::Tokens => None,
    }
}

impl Emitter<'_, '_> {
    fn emit(&mut self) -> Result<(), CompileError> {
        let order = self.function.block_order();
        let entry = self.builder.create_block();
        self.builder.append_block_params_for_function_params(entry);
        let blocks: HashMap<BlockId, cranelift_codegen::ir::Block> =
            order.iter().map(|&id| (id, self.builder.create_block())).collect();
        let error_block = self.builder.create_block();
        self.builder.append_block_param(error_block, types::I32);
        self.error_block = Some(error_block);

        let max_operands = self
            .function
            .graph
            .node_weights()
            .flat_map(|b| &b.insts)
            .map(|inst| inst.op.operands().len())
            .max()
            .unwrap_or(0)
            .max(1);
        let operand_bytes =
            u32::try_from(8 * max_operands).map_err(|_| codegen("an instruction has too many operands"))?;
        self.operands = Some(self.builder.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            operand_bytes,
            3,
        )));
        self.result = Some(self.builder.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 8, 3)));

        self.builder.switch_to_block(entry);
        self.ctx = Some(self.builder.block_params(entry)[0]);
        // Host variables start as the interpreter's unset value reads: NaN, 0 and false.
        for (index, var) in self.function.vars.iter().enumerate() {
            let Some(ty) = host_type(var.ty) else { continue };
            let variable = self.builder.declare_var(ty);
            let initial = match var.ty {
                Ty::F64 => self.builder.ins().f64const(f64::NAN),
                _ => self.builder.ins().iconst(ty, 0),
            };
            self.builder.def_var(variable, initial);
            self.vars.insert(index as u32, variable);
        }
        let first = blocks[&self.function.entry];
        self.builder.ins().jump(first, &[]);

        // `block_order` lists every block of the graph, so every block and every successor has
        // a Cranelift block in `blocks`.
        for &id in &order {
            self.builder.switch_to_block(blocks[&id]);
            self.values.clear();
            let block = self.function.block(id);
            for (index, inst) in block.insts.iter().enumerate() {
                self.instruction(id, index as u32, &inst.op, &inst.results)?;
            }
            match &block.terminator {
                Terminator::Jump(next) => {
                    self.builder.ins().jump(blocks[next], &[]);
                }
                Terminator::Branch { cond, then_block, else_block } => {
                    let cond = self.host(*cond)?;
                    self.builder.ins().brif(cond, blocks[then_block], &[], blocks[else_block], &[]);
                }
                Terminator::Return => {
                    let ok = self.builder.ins().iconst(types::I32, i64::from(STATUS_OK));
                    self.builder.ins().return_(&[ok]);
                }
            }
        }
        self.builder.switch_to_block(error_block);
        let status = self.builder.block_params(error_block)[0];
        self.builder.ins().return_(&[status]);
        self.builder.seal_all_blocks();
        Ok(())
    }

    /// The Cranelift value of a host value defined earlier in the block.
    fn host(&self, value: ValueId) -> Result<Value, CompileError> {
        self.values
            .get(&value)
            .copied()
            .ok_or_else(|| codegen(&format!("v{} is used as a host value but is not one", value.0)))
    }

    fn define(&mut self, results: &[ValueId], value: Value) {
        if let Some(result) = results.first() {
            self.values.insert(*result, value);
        }
    }

    fn is_host(&self, value: ValueId) -> bool {
        host_type(self.function.ty(value)).is_some()
    }

    fn instruction(&mut self, block: BlockId, index: u32, op: &Op, results: &[ValueId]) -> Result<(), CompileError> {
        let hook = match op {
            Op::Const(constant) => {
                let value = match *constant {
                    Constant::F64(v) => self.builder.ins().f64const(v),
                    Constant::I64(v) => self.builder.ins().iconst(types::I64, v),
                    Constant::Bool(v) => self.builder.ins().iconst(types::I8, i64::from(v)),
                };
                self.define(results, value);
                return Ok(());
            }
            Op::Read(var) | Op::Write(var, _) if self.vars.contains_key(&var.0) => {
                let variable = self.vars[&var.0];
                match op {
                    Op::Write(_, value) => {
                        let value = self.host(*value)?;
                        self.builder.def_var(variable, value);
                    }
                    _ => {
                        let value = self.builder.use_var(variable);
                        self.define(results, value);
                    }
                }
                return Ok(());
            }
            Op::Unary(unary, a) if self.is_host(*a) => {
                let value = self.unary(*unary, *a)?;
                self.define(results, value);
                return Ok(());
            }
            Op::Binary(binary, a, b) if self.is_host(*a) && self.is_host(*b) => {
                let value = self.binary(*binary, *a, *b, Site { block, index })?;
                self.define(results, value);
                return Ok(());
            }
            Op::Param(_) => Hook::Param,
            Op::ParamGiven(_) => Hook::ParamGiven,
            Op::Read(_) => Hook::Read,
            Op::Write(..) => Hook::Write,
            Op::Unary(..) | Op::Binary(..) => Hook::Elementwise,
            Op::Interpolant { .. } => Hook::Interpolant,
            Op::Coefficient { .. } => Hook::Coefficient,
            Op::Noise { .. } => Hook::Noise,
            Op::Fill { .. } => Hook::Fill,
            Op::Field { .. } => Hook::Field,
            Op::Jump { .. } => Hook::Jump,
            Op::Reduce(..) => Hook::Reduce,
            Op::Grid { .. } => Hook::Grid,
            Op::GridLen(_) => Hook::GridLen,
            Op::GridPoint(..) | Op::GridPairEnd(..) => Hook::GridPoint,
            Op::Emit { .. } => Hook::Emit,
            Op::Kernel { .. } => Hook::Kernel,
            Op::VerbDone { .. } => Hook::VerbDone,
            Op::Tokens { .. } => Hook::Tokens,
            Op::Positions { .. } => Hook::Positions,
        };
        self.call_runtime(hook, Site { block, index }, op, results)
    }

    /// Calls a runtime hook for one instruction: stores its host operands, calls, returns the
    /// status on failure, and loads its host result.
    fn call_runtime(&mut self, hook: Hook, site: Site, op: &Op, results: &[ValueId]) -> Result<(), CompileError> {
        let operands = self.operands.ok_or_else(|| codegen("no operand slot"))?;
        let result = self.result.ok_or_else(|| codegen("no result slot"))?;
        let mut offset = 0i32;
        for operand in op.operands() {
            let ty = self.function.ty(operand);
            if host_type(ty).is_none() {
                continue;
            }
            let mut value = self.host(operand)?;
            if ty == Ty::Bool {
                value = self.builder.ins().uextend(types::I64, value);
            }
            self.builder.ins().stack_store(self.pointer, value, operands, offset);
            offset += 8;
        }
        let status = self.call_hook(hook, site)?;
        let next = self.builder.create_block();
        let error_block = self.error_block.ok_or_else(|| codegen("no error block"))?;
        self.builder.ins().brif(status, error_block, &[BlockArg::Value(status)], next, &[]);
        self.builder.switch_to_block(next);
        if let Some(&value) = results.first()
            && let Some(ty) = host_type(self.function.ty(value))
        {
            let loaded = match ty {
                types::F64 => self.builder.ins().stack_load(self.pointer, types::F64, result, 0),
                types::I8 => {
                    let word = self.builder.ins().stack_load(self.pointer, types::I64, result, 0);
                    self.builder.ins().ireduce(types::I8, word)
                }
                _ => self.builder.ins().stack_load(self.pointer, types::I64, result, 0),
            };
            self.values.insert(value, loaded);
        }
        Ok(())
    }

    /// Calls a runtime hook for the instruction at `site`, whose host operands are stored, and
    /// returns its status.
    fn call_hook(&mut self, hook: Hook, site: Site) -> Result<Value, CompileError> {
        let operands = self.operands.ok_or_else(|| codegen("no operand slot"))?;
        let result = self.result.ok_or_else(|| codegen("no result slot"))?;
        let site_number = i64::try_from(self.sites.len()).map_err(|_| codegen("too many sites"))?;
        self.sites.push(site);
        let callee = self.import(hook);
        let ctx = self.ctx.ok_or_else(|| codegen("no context"))?;
        let site_value = self.builder.ins().iconst(types::I32, site_number);
        let operands_address = self.builder.ins().stack_addr(self.pointer, operands, 0);
        let result_address = self.builder.ins().stack_addr(self.pointer, result, 0);
        let call = self.builder.ins().call(callee, &[ctx, site_value, operands_address, result_address]);
        Ok(self.builder.inst_results(call)[0])
    }

    /// Imports a hook into the function on first use.
    fn import(&mut self, hook: Hook) -> FuncRef {
        if let Some(&callee) = self.imported.get(&hook) {
            return callee;
        }
        let mut signature = hook.signature(self.pointer);
        signature.call_conv = self.call_conv;
        let signature = self.builder.import_signature(signature);
        let index = hook as u32;
        let name = self.builder.func.declare_imported_user_function(UserExternalName { namespace: 0, index });
        let callee = self.builder.import_function(ExtFuncData {
            name: ExternalName::user(name),
            signature,
            colocated: false,
            patchable: false,
        });
        self.imported.insert(hook, callee);
        callee
    }

    fn call_shim(&mut self, hook: Hook, args: &[Value]) -> Value {
        let callee = self.import(hook);
        let call = self.builder.ins().call(callee, args);
        self.builder.inst_results(call)[0]
    }

    fn unsupported(&self, what: &str, ty: Ty) -> CompileError {
        codegen(&format!("{what} of a {ty} value has no host code (the IR is not well typed)"))
    }

    fn unary(&mut self, op: UnaryOp, a: ValueId) -> Result<Value, CompileError> {
        let ty = self.function.ty(a);
        let x = self.host(a)?;
        let b = &mut self.builder;
        Ok(match (op, ty) {
            (UnaryOp::Not, Ty::Bool) => b.ins().bxor_imm_u(x, 1),
            (UnaryOp::Neg, Ty::I64) => b.ins().ineg(x),
            (UnaryOp::ToFloat, Ty::I64) => b.ins().fcvt_from_sint(types::F64, x),
            (UnaryOp::Truncate, Ty::F64) => b.ins().fcvt_to_sint_sat(types::I64, x),
            (UnaryOp::Round, Ty::F64) => {
                let rounded = self.call_shim(Hook::Round, &[x]);
                self.builder.ins().fcvt_to_sint_sat(types::I64, rounded)
            }
            (UnaryOp::Neg, Ty::F64) => b.ins().fneg(x),
            (UnaryOp::Sqrt, Ty::F64) => b.ins().sqrt(x),
            (UnaryOp::Abs, Ty::F64) => b.ins().fabs(x),
            (UnaryOp::Floor, Ty::F64) => b.ins().floor(x),
            (UnaryOp::Ceil, Ty::F64) => b.ins().ceil(x),
            (UnaryOp::Sigmoid, Ty::F64) => {
                // 1 / (1 + exp(-x)), as `host` computes it.
                let minus = b.ins().fneg(x);
                let exp = self.call_shim(Hook::Exp, &[minus]);
                let one = self.builder.ins().f64const(1.0);
                let denominator = self.builder.ins().fadd(one, exp);
                self.builder.ins().fdiv(one, denominator)
            }
            (op, Ty::F64) => {
                let hook = match op {
                    UnaryOp::Exp => Hook::Exp,
                    UnaryOp::Log => Hook::Log,
                    UnaryOp::Expm1 => Hook::Expm1,
                    UnaryOp::Log1p => Hook::Log1p,
                    UnaryOp::Sin => Hook::Sin,
                    UnaryOp::Cos => Hook::Cos,
                    UnaryOp::Tan => Hook::Tan,
                    UnaryOp::Tanh => Hook::Tanh,
                    UnaryOp::Atan => Hook::Atan,
                    _ => return Err(self.unsupported(&format!("{op:?}"), ty)),
                };
                self.call_shim(hook, &[x])
            }
            _ => return Err(self.unsupported(&format!("{op:?}"), ty)),
        })
    }

    fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId, site: Site) -> Result<Value, CompileError> {
        let (ta, tb) = (self.function.ty(a), self.function.ty(b));
        if ta != tb {
            return Err(codegen(&format!("{op:?} of {ta} and {tb} (lowering converts operands to one type)")));
        }
        let (x, y) = (self.host(a)?, self.host(b)?);
        let int_compare = |op| match op {
            BinaryOp::Eq => Some(IntCC::Equal),
            BinaryOp::Ne => Some(IntCC::NotEqual),
            BinaryOp::Lt => Some(IntCC::SignedLessThan),
            BinaryOp::Le => Some(IntCC::SignedLessThanOrEqual),
            BinaryOp::Gt => Some(IntCC::SignedGreaterThan),
            BinaryOp::Ge => Some(IntCC::SignedGreaterThanOrEqual),
            _ => None,
        };
        Ok(match ta {
            Ty::I64 => match op {
                BinaryOp::Add => self.builder.ins().iadd(x, y),
                BinaryOp::Sub => self.builder.ins().isub(x, y),
                BinaryOp::Mul => self.builder.ins().imul(x, y),
                BinaryOp::Min => self.builder.ins().smin(x, y),
                BinaryOp::Max => self.builder.ins().smax(x, y),
                BinaryOp::Rem => self.checked_rem(x, y, site)?,
                op => match int_compare(op) {
                    Some(cc) => self.builder.ins().icmp(cc, x, y),
                    None => return Err(self.unsupported(&format!("{op:?}"), ta)),
                },
            },
            Ty::F64 => match op {
                BinaryOp::Add => self.builder.ins().fadd(x, y),
                BinaryOp::Sub => self.builder.ins().fsub(x, y),
                BinaryOp::Mul => self.builder.ins().fmul(x, y),
                BinaryOp::Div => self.builder.ins().fdiv(x, y),
                BinaryOp::Rem => self.call_shim(Hook::Fmod, &[x, y]),
                BinaryOp::Pow => self.call_shim(Hook::Pow, &[x, y]),
                BinaryOp::Min => self.call_shim(Hook::Fmin, &[x, y]),
                BinaryOp::Max => self.call_shim(Hook::Fmax, &[x, y]),
                BinaryOp::Eq => self.builder.ins().fcmp(FloatCC::Equal, x, y),
                BinaryOp::Ne => self.builder.ins().fcmp(FloatCC::NotEqual, x, y),
                BinaryOp::Lt => self.builder.ins().fcmp(FloatCC::LessThan, x, y),
                BinaryOp::Le => self.builder.ins().fcmp(FloatCC::LessThanOrEqual, x, y),
                BinaryOp::Gt => self.builder.ins().fcmp(FloatCC::GreaterThan, x, y),
                BinaryOp::Ge => self.builder.ins().fcmp(FloatCC::GreaterThanOrEqual, x, y),
                BinaryOp::And | BinaryOp::Or => return Err(self.unsupported(&format!("{op:?}"), ta)),
            },
            Ty::Bool => match op {
                BinaryOp::And => self.builder.ins().band(x, y),
                BinaryOp::Or => self.builder.ins().bor(x, y),
                BinaryOp::Eq => self.builder.ins().icmp(IntCC::Equal, x, y),
                BinaryOp::Ne => self.builder.ins().icmp(IntCC::NotEqual, x, y),
                _ => return Err(self.unsupported(&format!("{op:?}"), ta)),
            },
            Ty::Tensor | Ty::Grid | Ty::Tokens => return Err(self.unsupported(&format!("{op:?}"), ta)),
        })
    }

    /// `x % y` on i64, which has no value when `y` is 0 or the quotient overflows (`i64::MIN %
    /// -1`, as Rust's `checked_rem`). Then a cold path hands the instruction to the runtime,
    /// which records the error with its location, and returns the failure.
    fn checked_rem(&mut self, x: Value, y: Value, site: Site) -> Result<Value, CompileError> {
        let b = &mut self.builder;
        let zero = b.ins().icmp_imm_s(IntCC::Equal, y, 0);
        let minus_one = b.ins().icmp_imm_s(IntCC::Equal, y, -1);
        let min = b.ins().icmp_imm_s(IntCC::Equal, x, i64::MIN);
        let overflow = b.ins().band(minus_one, min);
        let invalid = b.ins().bor(zero, overflow);
        let cold = b.create_block();
        let next = b.create_block();
        b.set_cold_block(cold);
        b.ins().brif(invalid, cold, &[], next, &[]);
        self.builder.switch_to_block(cold);
        let operands = self.operands.ok_or_else(|| codegen("no operand slot"))?;
        self.builder.ins().stack_store(self.pointer, x, operands, 0);
        self.builder.ins().stack_store(self.pointer, y, operands, 8);
        let status = self.call_hook(Hook::Elementwise, site)?;
        let fallback = self.builder.ins().iconst(types::I32, i64::from(STATUS_DIVISION_BY_ZERO));
        let status = self.builder.ins().select(status, status, fallback);
        self.builder.ins().return_(&[status]);
        self.builder.switch_to_block(next);
        Ok(self.builder.ins().srem(x, y))
    }
}

/// The status the host code returns when an integer `%` has no value and the runtime did not say
/// why (it always does).
pub const STATUS_DIVISION_BY_ZERO: i32 = -1;
