//! Constant folding: host parameters bound to values become constants, host operations on
//! constants are computed (with the interpreter's own semantics, `host.rs`), branches on
//! constants become jumps, and blocks no longer reachable are removed. With parameters bound,
//! loop bounds and grid arguments are constants, and a step's `if s == 0` on a literal grid end
//! disappears where it can. Variables that hold one constant for the whole run (written once,
//! in the entry block) are read as that constant.

use std::collections::{HashMap, HashSet};

use crate::host;
use crate::ir::*;

/// Replaces `Param(i)` of every host parameter given a value with that value. Parameters left
/// `None` stay run-time parameters (their default applies only if the run gives no value).
pub fn bind_params(function: &mut Function, values: &[Option<Constant>]) {
    let constants: Vec<Option<Constant>> = function
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| match p.ty {
            ParamTy::Host(_) => values.get(i).copied().flatten(),
            _ => None,
        })
        .collect();
    for block in function.graph.node_weights_mut() {
        for inst in &mut block.insts {
            if let Op::Param(index) = inst.op
                && let Some(Some(value)) = constants.get(index as usize)
            {
                inst.op = Op::Const(*value);
            }
        }
    }
}

pub fn run(function: &mut Function) {
    propagate_constant_variables(function);
    let blocks: Vec<BlockId> = function.graph.node_indices().collect();
    for block_id in blocks {
        let block = &mut function.graph[block_id];
        let mut known: HashMap<ValueId, Constant> = HashMap::new();
        for inst in &mut block.insts {
            let folded = match &inst.op {
                Op::Const(c) => Some(*c),
                Op::Unary(op, a) => known.get(a).and_then(|a| host::unary(*op, *a)),
                Op::Binary(op, a, b) => match (known.get(a), known.get(b)) {
                    (Some(a), Some(b)) => host::binary(*op, *a, *b),
                    _ => None,
                },
                _ => None,
            };
            if let (Some(value), [result]) = (folded, inst.results.as_slice()) {
                known.insert(*result, value);
                inst.op = Op::Const(value);
            }
        }
        if let Terminator::Branch { cond, then_block, else_block } = block.terminator
            && let Some(Constant::Bool(taken)) = known.get(&cond)
        {
            block.terminator = Terminator::Jump(if *taken { then_block } else { else_block });
        }
    }
    remove_unreachable(function);
}

/// Replaces the reads of variables that hold one constant for the whole run: variables written
/// exactly once, in the entry block, with a constant (a bound parameter, a literal `let`). The
/// entry block runs first and only once, so every read in another block sees that value; this is
/// what lets a step's `if eta > 0` fold when `eta` is bound.
fn propagate_constant_variables(function: &mut Function) {
    let entry = function.entry;
    if function.graph.node_indices().any(|b| function.successors(b).contains(&entry)) {
        return;
    }
    let mut writes: HashMap<VarId, usize> = HashMap::new();
    for inst in function.graph.node_weights().flat_map(|b| &b.insts) {
        if let Op::Write(var, _) = inst.op {
            *writes.entry(var).or_insert(0) += 1;
        }
    }
    let mut constants_in_entry: HashMap<ValueId, Constant> = HashMap::new();
    let mut constant_vars: HashMap<VarId, Constant> = HashMap::new();
    for inst in &function.graph[entry].insts {
        match (&inst.op, inst.results.as_slice()) {
            (Op::Const(c), [result]) => {
                constants_in_entry.insert(*result, *c);
            }
            (Op::Write(var, value), _) if writes.get(var) == Some(&1) => {
                if let Some(c) = constants_in_entry.get(value) {
                    constant_vars.insert(*var, *c);
                }
            }
            _ => {}
        }
    }
    let blocks: Vec<BlockId> = function.graph.node_indices().filter(|b| *b != entry).collect();
    for block in blocks {
        for inst in &mut function.graph[block].insts {
            if let Op::Read(var) = inst.op
                && let Some(c) = constant_vars.get(&var)
            {
                inst.op = Op::Const(*c);
            }
        }
    }
}

fn remove_unreachable(function: &mut Function) {
    let mut seen = HashSet::new();
    let mut stack = vec![function.entry];
    while let Some(block) = stack.pop() {
        if seen.insert(block) {
            stack.extend(function.successors(block));
        }
    }
    let dead: Vec<BlockId> = function.graph.node_indices().filter(|b| !seen.contains(b)).collect();
    for block in dead {
        function.graph.remove_node(block);
    }
    function.sync_edges();
}
