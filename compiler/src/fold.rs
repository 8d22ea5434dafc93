//! Constant folding: host parameters bound to values become constants, host operations on
//! constants are computed (with the interpreter's own semantics, `host.rs`), branches on
//! constants become jumps, and blocks no longer reachable are removed. With parameters bound,
//! loop bounds and grid arguments are constants, and a step's `if s == 0` on a literal grid end
//! disappears where it can.

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
