//! Dead-code elimination: pure instructions whose results nobody uses are removed (a model call
//! whose result is unused costs nothing), and so are writes to variables that are never read.
//!
//! Noise draws and kernels whose results nobody uses are removed too. Their one effect is to
//! advance the draw counter of their noise sites, and a site belongs to exactly one instruction,
//! so the draws a removal skips are all draws of that same, dead, instruction: no live value
//! changes.

use std::collections::HashSet;

use crate::ir::*;

pub fn run(function: &mut Function) {
    loop {
        let mut used: HashSet<ValueId> = HashSet::new();
        let mut read_vars: HashSet<VarId> = HashSet::new();
        for block in function.graph.node_weights() {
            for inst in &block.insts {
                used.extend(inst.op.operands());
                if let Op::Read(var) = inst.op {
                    read_vars.insert(var);
                }
            }
            if let Terminator::Branch { cond, .. } = block.terminator {
                used.insert(cond);
            }
        }
        let mut changed = false;
        for block in function.graph.node_weights_mut() {
            let before = block.insts.len();
            block.insts.retain(|inst| match inst.op {
                Op::Write(var, _) => read_vars.contains(&var),
                Op::Noise { .. } | Op::Kernel { .. } => inst.results.iter().any(|r| used.contains(r)),
                _ if inst.op.is_pure() => inst.results.iter().any(|r| used.contains(r)),
                _ => true,
            });
            changed |= block.insts.len() != before;
        }
        if !changed {
            return;
        }
    }
}
