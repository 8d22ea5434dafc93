//! The IR verifier: run between passes in debug builds and by the tests, so a pass that breaks
//! an invariant is caught where it happens.
//!
//! Invariants: every operand is defined earlier in the same block; every value is defined once;
//! a `Write` stores a value of its variable's type; a branch condition is a bool of its block;
//! terminators name existing blocks; kernels and slots referenced exist; interpolant values and
//! coefficients have their time's type, and positions are a tensor.

use std::collections::HashSet;

use crate::ir::*;

/// Checks a function; returns every violation found.
pub fn verify(function: &Function) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let mut defined_anywhere = HashSet::new();
    let type_of = |value: ValueId| function.value_types.get(value.0 as usize).copied();
    for block_id in function.graph.node_indices() {
        let block = &function.graph[block_id];
        let mut defined = HashSet::new();
        for (index, inst) in block.insts.iter().enumerate() {
            let at = || format!("block {} instruction {index}", block_id.index());
            for operand in inst.op.operands() {
                if !defined.contains(&operand) {
                    errors.push(format!("{}: %{} is used before it is defined in this block", at(), operand.0));
                }
            }
            for result in &inst.results {
                if result.0 as usize >= function.value_types.len() {
                    errors.push(format!("{}: %{} has no type", at(), result.0));
                }
                if !defined_anywhere.insert(*result) {
                    errors.push(format!("{}: %{} is defined twice", at(), result.0));
                }
                defined.insert(*result);
            }
            match &inst.op {
                Op::Write(var, value) => {
                    match function.vars.get(var.0 as usize) {
                        Some(info) if defined.contains(value) && function.ty(*value) != info.ty => errors.push(
                            format!("{}: writes a {} to v{} of type {}", at(), function.ty(*value), var.0, info.ty),
                        ),
                        None => errors.push(format!("{}: v{} does not exist", at(), var.0)),
                        _ => {}
                    }
                }
                Op::Read(var) if function.vars.get(var.0 as usize).is_none() => {
                    errors.push(format!("{}: v{} does not exist", at(), var.0))
                }
                Op::Kernel { kernel, .. } if kernel.0 as usize >= function.kernels.len() => {
                    errors.push(format!("{}: kernel k{} does not exist", at(), kernel.0))
                }
                Op::Field { model, .. }
                | Op::Jump { model, .. }
                | Op::Interpolant { model, .. }
                | Op::Coefficient { model, .. }
                    if model.0 as usize >= function.models.len() =>
                {
                    errors.push(format!("{}: model m{} does not exist", at(), model.0))
                }
                // An interpolant value or a coefficient has the type of its time: a host float, or
                // a tensor for per-position times.
                Op::Interpolant { t, .. } | Op::Coefficient { t, .. }
                    if inst.results.iter().any(|r| type_of(*r) != type_of(*t)) =>
                {
                    errors.push(format!("{}: a function of time %{} does not have its time's type", at(), t.0))
                }
                Op::Positions { .. } if inst.results.iter().any(|r| type_of(*r) != Some(Ty::Tensor)) => {
                    errors.push(format!("{}: positions are not a tensor", at()))
                }
                _ => {}
            }
        }
        match block.terminator {
            Terminator::Jump(next) if !function.graph.contains_node(next) => {
                errors.push(format!("block {} jumps to a missing block", block_id.index()))
            }
            Terminator::Branch { cond, then_block, else_block } => {
                if !defined.contains(&cond) {
                    errors.push(format!(
                        "block {}: branch condition %{} is not defined in the block",
                        block_id.index(),
                        cond.0
                    ));
                } else if function.ty(cond) != Ty::Bool {
                    errors.push(format!("block {}: branch condition %{} is not a bool", block_id.index(), cond.0));
                }
                if !function.graph.contains_node(then_block) || !function.graph.contains_node(else_block) {
                    errors.push(format!("block {} branches to a missing block", block_id.index()));
                }
            }
            _ => {}
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}
