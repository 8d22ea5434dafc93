//! Local value numbering: within each block, a variable read after a write (or another read) of
//! it is the value already known, and a pure operation on the same operands as an earlier one is
//! that earlier result. This is where identical model calls in one step become one call: the
//! `Field` that `eps(x, t)` and `x0(x, t)` both lower to is computed once. A write that a later
//! write of the same variable overwrites in the same block is dropped.

use std::collections::HashMap;

use crate::ir::*;

pub fn run(function: &mut Function) {
    let blocks: Vec<BlockId> = function.graph.node_indices().collect();
    for block_id in blocks {
        let block = &mut function.graph[block_id];
        let mut replace: HashMap<ValueId, ValueId> = HashMap::new();
        let mut known_var: HashMap<VarId, ValueId> = HashMap::new();
        let mut last_write: HashMap<VarId, usize> = HashMap::new();
        let mut seen: HashMap<String, ValueId> = HashMap::new();
        let mut kept: Vec<Option<Inst>> = Vec::new();
        for mut inst in std::mem::take(&mut block.insts) {
            inst.op.map_operands(|v| replace.get(&v).copied().unwrap_or(v));
            match inst.op {
                Op::Read(var) => {
                    if let (Some(known), [result]) = (known_var.get(&var), inst.results.as_slice()) {
                        replace.insert(*result, *known);
                        continue;
                    }
                    if let [result] = inst.results.as_slice() {
                        known_var.insert(var, *result);
                    }
                }
                Op::Write(var, value) => {
                    known_var.insert(var, value);
                    if let Some(previous) = last_write.insert(var, kept.len()) {
                        kept[previous] = None;
                    }
                }
                _ if inst.op.is_pure() && inst.results.len() == 1 => {
                    let key = format!("{:?}", inst.op);
                    if let Some(existing) = seen.get(&key) {
                        replace.insert(inst.results[0], *existing);
                        continue;
                    }
                    seen.insert(key, inst.results[0]);
                }
                _ => {}
            }
            kept.push(Some(inst));
        }
        block.insts = kept.into_iter().flatten().collect();
        if let Terminator::Branch { cond, .. } = &mut block.terminator {
            *cond = replace.get(cond).copied().unwrap_or(*cond);
        }
    }
}
