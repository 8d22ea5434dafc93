//! The textual form of the IR (`sched build --emit ir`) and its Graphviz drawing (`--emit dot`).

use std::fmt::{self, Write as _};

use crate::ir::*;

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "function {}", self.name)?;
        for (index, param) in self.params.iter().enumerate() {
            let ty = match param.ty {
                ParamTy::Host(ty) => ty.to_string(),
                ParamTy::Tensor => "tensor".to_string(),
                ParamTy::Model(slot) => format!("model m{slot}"),
                ParamTy::Other => "other".to_string(),
            };
            match param.default {
                Some(default) => writeln!(f, "  param {index} {}: {ty} = {}", param.name, constant(default))?,
                None => writeln!(f, "  param {index} {}: {ty}", param.name)?,
            }
        }
        for (slot, model) in self.models.iter().enumerate() {
            let kind = model.declared.map_or("any".to_string(), |k| k.name().to_string());
            writeln!(f, "  model m{slot} {}: {kind}", model.name)?;
        }
        for (index, var) in self.vars.iter().enumerate() {
            writeln!(f, "  var v{index} {}: {}", var.name, var.ty)?;
        }
        for (index, name) in self.outputs.iter().enumerate() {
            writeln!(f, "  output {index} {name}")?;
        }
        for (index, kernel) in self.kernels.iter().enumerate() {
            let text = kernel.to_string();
            writeln!(f, "  k{index}: {}", text.trim_end().replace('\n', "\n      "))?;
        }
        let names = BlockNames::new(self);
        for block_id in self.block_order() {
            let block = &self.graph[block_id];
            writeln!(f, "{}:", names.name(block_id))?;
            for inst in &block.insts {
                f.write_str("  ")?;
                if !inst.results.is_empty() {
                    let results: Vec<String> =
                        inst.results.iter().map(|r| format!("%{}: {}", r.0, self.ty(*r))).collect();
                    write!(f, "{} = ", results.join(", "))?;
                }
                writeln!(f, "{}", op_text(&inst.op))?;
            }
            match block.terminator {
                Terminator::Jump(next) => writeln!(f, "  jump {}", names.name(next))?,
                Terminator::Branch { cond, then_block, else_block } => {
                    writeln!(f, "  branch %{} {} {}", cond.0, names.name(then_block), names.name(else_block))?
                }
                Terminator::Return => writeln!(f, "  return")?,
            }
        }
        Ok(())
    }
}

/// Instruction `index` of `block` as the dump prints it, prefixed with its block's name.
pub fn instruction(function: &Function, block: BlockId, index: usize) -> String {
    let name = BlockNames::new(function).name(block);
    let Some(inst) = function.graph.node_weight(block).and_then(|b| b.insts.get(index)) else {
        return format!("{name}: no instruction {index}");
    };
    let results: Vec<String> = inst.results.iter().map(|r| format!("%{}: {}", r.0, function.ty(*r))).collect();
    match results.is_empty() {
        true => format!("{name}: {}", op_text(&inst.op)),
        false => format!("{name}: {} = {}", results.join(", "), op_text(&inst.op)),
    }
}

/// Blocks are printed `b0, b1, ...` in [`Function::block_order`], so dumps do not depend on
/// petgraph's node indices.
struct BlockNames {
    names: std::collections::HashMap<BlockId, usize>,
}

impl BlockNames {
    fn new(function: &Function) -> BlockNames {
        BlockNames { names: function.block_order().into_iter().enumerate().map(|(i, b)| (b, i)).collect() }
    }

    fn name(&self, block: BlockId) -> String {
        format!("b{}", self.names.get(&block).copied().unwrap_or(usize::MAX))
    }
}

fn constant(c: Constant) -> String {
    match c {
        Constant::F64(v) => format!("{v:?}"),
        Constant::I64(v) => v.to_string(),
        Constant::Bool(v) => v.to_string(),
    }
}

fn v(value: ValueId) -> String {
    format!("%{}", value.0)
}

fn op_text(op: &Op) -> String {
    let opt = |value: &Option<ValueId>| value.map_or("state".to_string(), v);
    match op {
        Op::Const(c) => format!("const {}", constant(*c)),
        Op::Param(i) => format!("param {i}"),
        Op::ParamGiven(i) => format!("param_given {i}"),
        Op::Read(var) => format!("read v{}", var.0),
        Op::Write(var, value) => format!("write v{} {}", var.0, v(*value)),
        Op::Unary(op, a) => format!("{} {}", format!("{op:?}").to_lowercase(), v(*a)),
        Op::Binary(op, a, b) => format!("{} {}, {}", format!("{op:?}").to_lowercase(), v(*a), v(*b)),
        Op::Interpolant { func, model, t } => format!("{} m{} {}", format!("{func:?}").to_lowercase(), model.0, v(*t)),
        Op::Coefficient { which, model, t } => format!("coefficient {which:?} m{} {}", model.0, v(*t)),
        Op::Noise { dist, site, like } => {
            format!("noise {} site {site} like {}", format!("{dist:?}").to_lowercase(), opt(like))
        }
        Op::Fill { value, like } => format!("fill {value:?} like {}", opt(like)),
        Op::Positions { like } => format!("positions like {}", opt(like)),
        Op::Field { model, x, t, label, verb } => {
            let label = label.map_or(String::new(), |l| format!(" label {}", v(l)));
            let verb = verb.map_or(String::new(), |verb| format!(" in verb {verb}"));
            format!("field m{} {} at {}{label}{verb}", model.0, v(*x), v(*t))
        }
        Op::Jump { model, x, t, s, label, verb } => {
            let label = label.map_or(String::new(), |l| format!(" label {}", v(l)));
            let verb = verb.map_or(String::new(), |verb| format!(" in verb {verb}"));
            format!("jump m{} {} from {} to {}{label}{verb}", model.0, v(*x), v(*t), v(*s))
        }
        Op::Reduce(op, x) => format!("reduce {} {}", format!("{op:?}").to_lowercase(), v(*x)),
        Op::Grid { spacing, from, to, steps, args, model } => {
            let mut text = format!(
                "grid {} {} -> {} steps {}",
                format!("{spacing:?}").to_lowercase(),
                v(*from),
                v(*to),
                v(*steps)
            );
            for arg in args {
                let _ = write!(text, " {}", v(*arg));
            }
            if let Some(model) = model {
                let _ = write!(text, " m{}", model.0);
            }
            text
        }
        Op::GridLen(g) => format!("grid_len {}", v(*g)),
        Op::GridPoint(g, i) => format!("grid_point {}, {}", v(*g), v(*i)),
        Op::GridPairEnd(g, i) => format!("grid_pair_end {}, {}", v(*g), v(*i)),
        Op::Emit { index, value } => format!("emit {index} {}", v(*value)),
        Op::Kernel { kernel, inputs, params, sites, in_place } => {
            let inputs: Vec<String> = inputs.iter().map(|i| v(*i)).collect();
            let params: Vec<String> = params.iter().map(|p| v(*p)).collect();
            let mut text =
                format!("kernel k{} ({}) params ({}) sites {sites:?}", kernel.0, inputs.join(", "), params.join(", "));
            for update in in_place {
                let _ = write!(text, " out{} over in{}", update.output, update.input);
                if let Some(var) = update.var {
                    let _ = write!(text, " (releases v{})", var.0);
                }
            }
            text
        }
        Op::VerbDone { verb } => format!("verb_done {verb}"),
        Op::Tokens { op, args, model, site, verb } => {
            let args: Vec<String> = args.iter().map(|a| v(*a)).collect();
            let mut text = format!("tokens.{} ({})", op.name(), args.join(", "));
            if let Some(model) = model {
                let _ = write!(text, " m{}", model.0);
            }
            if let Some(site) = site {
                let _ = write!(text, " site {site}");
            }
            if let Some(verb) = verb {
                let _ = write!(text, " in verb {verb}");
            }
            text
        }
    }
}

/// The control-flow graph in Graphviz's dot language, one node per block with its instructions.
pub fn to_dot(function: &Function) -> String {
    let names = BlockNames::new(function);
    let mut out = format!("digraph \"{}\" {{\n  node [shape=box, fontname=monospace, fontsize=10];\n", function.name);
    for block_id in function.block_order() {
        let block = &function.graph[block_id];
        let mut label = format!("{}:\\l", names.name(block_id));
        for inst in &block.insts {
            let results: Vec<String> = inst.results.iter().map(|r| v(*r)).collect();
            let prefix = if results.is_empty() { String::new() } else { format!("{} = ", results.join(", ")) };
            let _ = write!(label, "{}{}\\l", prefix, op_text(&inst.op).replace('"', "\\\""));
        }
        let _ = writeln!(out, "  {} [label=\"{label}\"];", names.name(block_id));
        match block.terminator {
            Terminator::Jump(next) => {
                let _ = writeln!(out, "  {} -> {};", names.name(block_id), names.name(next));
            }
            Terminator::Branch { cond, then_block, else_block } => {
                let _ = writeln!(
                    out,
                    "  {} -> {} [label=\"{} true\"];",
                    names.name(block_id),
                    names.name(then_block),
                    v(cond)
                );
                let _ = writeln!(out, "  {} -> {} [label=\"false\"];", names.name(block_id), names.name(else_block));
            }
            Terminator::Return => {}
        }
    }
    out.push_str("}\n");
    out
}
