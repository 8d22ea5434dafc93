//! Buffer planning: which kernel outputs may be written over the buffer of an input that dies
//! at the kernel, so a state update `x = f(x, ...)` reuses `x`'s memory instead of allocating.
//!
//! An input qualifies when it is a tensor that nothing later in the block uses, that no variable
//! holds after the kernel, and that is not a schedule parameter (whose buffer belongs to the
//! caller). A variable that holds it is allowed only when the value was read from that variable in
//! this block and the variable is overwritten later in the block (then the old value is dead);
//! the plan names the variable, so an executor can release it before the kernel runs.

use std::collections::{HashMap, HashSet};

use crate::ir::*;

pub fn run(function: &mut Function) {
    let blocks: Vec<BlockId> = function.graph.node_indices().collect();
    for block_id in blocks {
        let tensor_ty = |v: ValueId, f: &Function| f.ty(v) == Ty::Tensor;
        let block = &function.graph[block_id];
        // Where each value is defined, and the last instruction that uses it.
        let mut defined_by: HashMap<ValueId, usize> = HashMap::new();
        let mut last_use: HashMap<ValueId, usize> = HashMap::new();
        let mut stored: HashSet<ValueId> = HashSet::new();
        for (index, inst) in block.insts.iter().enumerate() {
            for operand in inst.op.operands() {
                last_use.insert(operand, index);
            }
            if let Op::Write(_, value) = inst.op {
                stored.insert(value);
            }
            for result in &inst.results {
                defined_by.insert(*result, index);
            }
        }
        let mut plans: Vec<(usize, Vec<InPlace>)> = Vec::new();
        for (index, inst) in block.insts.iter().enumerate() {
            let Op::Kernel { inputs, .. } = &inst.op else { continue };
            let mut updates = Vec::new();
            let mut next_output = 0u32;
            for (input_index, &input) in inputs.iter().enumerate() {
                if next_output as usize >= inst.results.len() {
                    break;
                }
                if !tensor_ty(input, function) || last_use.get(&input) != Some(&index) || stored.contains(&input) {
                    continue;
                }
                let var = match defined_by.get(&input).map(|&d| &block.insts[d].op) {
                    Some(Op::Read(var)) => {
                        let overwritten_later =
                            block.insts[index + 1..].iter().any(|i| matches!(i.op, Op::Write(w, _) if w == *var));
                        if !overwritten_later {
                            continue;
                        }
                        Some(*var)
                    }
                    Some(Op::Param(_)) | Some(Op::Fill { .. }) | None => continue,
                    Some(_) => None,
                };
                updates.push(InPlace { output: next_output, input: input_index as u32, var });
                next_output += 1;
            }
            if !updates.is_empty() {
                plans.push((index, updates));
            }
        }
        let block = &mut function.graph[block_id];
        for (index, updates) in plans {
            if let Op::Kernel { in_place, .. } = &mut block.insts[index].op {
                *in_place = updates;
            }
        }
    }
}
