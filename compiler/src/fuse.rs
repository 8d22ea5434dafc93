//! Fusion: every block's elementwise tensor operations become fused kernels, as few as the
//! dependencies through model calls and other non-elementwise operations allow.
//!
//! Each instruction gets a level: non-elementwise operations that consume values ("barriers":
//! model calls, reductions, writes, emits, anything else that reads a tensor outside a kernel) are
//! one level above their operands; elementwise and host operations are at the level of their
//! operands. All elementwise operations of one level form one kernel, placed after that level's
//! barriers and before the next level's. A classic solver step is then one model call followed by
//! one kernel.

use std::collections::{HashMap, HashSet};

use sched_kernels::builder::KernelBuilder;
use sched_kernels::spec::{self, NodeId};

use crate::ir::*;

fn is_elementwise(function: &Function, inst: &Inst) -> bool {
    let tensor_result = inst.results.len() == 1 && function.ty(inst.results[0]) == Ty::Tensor;
    match inst.op {
        Op::Unary(..) | Op::Binary(..) => tensor_result,
        Op::Noise { .. } | Op::Fill { .. } => true,
        _ => false,
    }
}

fn is_barrier(function: &Function, inst: &Inst) -> bool {
    match inst.op {
        Op::Field { .. }
        | Op::Jump { .. }
        | Op::Reduce(..)
        | Op::Write(..)
        | Op::Emit { .. }
        | Op::VerbDone { .. }
        | Op::Kernel { .. }
        | Op::Tokens { .. } => true,
        // Any other operation outside kernels that reads a tensor (a function of per-position
        // times, `positions()` shaped like a state) reads what a kernel of its operands' level
        // may compute, so it comes after that kernel.
        _ => !is_elementwise(function, inst) && inst.op.operands().iter().any(|v| function.ty(*v) == Ty::Tensor),
    }
}

pub fn run(function: &mut Function) {
    let blocks: Vec<BlockId> = function.graph.node_indices().collect();
    for block_id in blocks {
        let insts = std::mem::take(&mut function.graph[block_id].insts);
        let fused = fuse_block(function, insts);
        function.graph[block_id].insts = fused;
    }
}

fn fuse_block(function: &mut Function, insts: Vec<Inst>) -> Vec<Inst> {
    let mut level_of: HashMap<ValueId, u32> = HashMap::new();
    let mut levels = Vec::with_capacity(insts.len());
    for inst in &insts {
        let operand_level = inst.op.operands().iter().map(|v| level_of.get(v).copied().unwrap_or(0)).max().unwrap_or(0);
        let level = if is_barrier(function, inst) { operand_level + 1 } else { operand_level };
        for result in &inst.results {
            level_of.insert(*result, level);
        }
        levels.push(level);
    }
    // Writes and progress marks end the block: nothing in the block reads a variable after
    // writing it (value numbering forwarded those reads), so they can wait for the last kernel.
    let top = levels.iter().copied().max().unwrap_or(0);
    for (index, inst) in insts.iter().enumerate() {
        match inst.op {
            Op::Write(..) => levels[index] = top.max(1),
            Op::VerbDone { .. } => levels[index] = top.max(1) + 1,
            _ => {}
        }
    }
    let elementwise: Vec<bool> = insts.iter().map(|i| is_elementwise(function, i)).collect();
    // Elementwise work moves as late as its consumers allow, so that what a model call does not
    // need joins the kernel after the call instead of forming a kernel of its own before it.
    let mut definer: HashMap<ValueId, usize> = HashMap::new();
    for (index, inst) in insts.iter().enumerate() {
        for result in &inst.results {
            definer.insert(*result, index);
        }
    }
    let mut latest: Vec<Option<u32>> = vec![None; insts.len()];
    for index in (0..insts.len()).rev() {
        for operand in insts[index].op.operands() {
            let Some(&def) = definer.get(&operand) else { continue };
            if !elementwise[def] {
                continue;
            }
            let allowed = if elementwise[index] {
                latest[index].unwrap_or(levels[index])
            } else {
                levels[index].saturating_sub(1)
            };
            latest[def] = Some(latest[def].map_or(allowed, |l| l.min(allowed)));
        }
    }
    for index in 0..insts.len() {
        if let (true, Some(late)) = (elementwise[index], latest[index]) {
            levels[index] = late.max(levels[index]);
        }
    }
    // Values consumed by instructions outside the kernel of their level must be kernel outputs.
    let mut consumers_outside: HashSet<ValueId> = HashSet::new();
    for (index, inst) in insts.iter().enumerate() {
        for operand in inst.op.operands() {
            let defined_elementwise_same_level = insts
                .iter()
                .enumerate()
                .find(|(_, d)| d.results.contains(&operand))
                .is_some_and(|(d, _)| elementwise[d] && elementwise[index] && levels[d] == levels[index]);
            if !defined_elementwise_same_level {
                consumers_outside.insert(operand);
            }
        }
    }
    let max_level = levels.iter().copied().max().unwrap_or(0);
    let mut out = Vec::new();
    for level in 0..=max_level {
        for (index, inst) in insts.iter().enumerate() {
            if levels[index] == level && !elementwise[index] {
                out.push(inst.clone());
            }
        }
        let group: Vec<&Inst> = insts
            .iter()
            .enumerate()
            .filter(|(i, _)| levels[*i] == level && elementwise[*i])
            .map(|(_, inst)| inst)
            .collect();
        if !group.is_empty()
            && let Some(kernel) = build_kernel(function, &group, &consumers_outside)
        {
            out.push(kernel);
        }
    }
    out
}

/// The kernel that computes a group of elementwise instructions, or `None` when nothing outside
/// the group uses its results (dead-code elimination runs first, so only noise whose draws nobody
/// reads could be left; dropping it changes no live value).
fn build_kernel(function: &mut Function, group: &[&Inst], consumers_outside: &HashSet<ValueId>) -> Option<Inst> {
    let mut builder = KernelBuilder::new();
    let mut nodes: HashMap<ValueId, NodeId> = HashMap::new();
    let mut inputs: Vec<ValueId> = Vec::new();
    let mut params: Vec<ValueId> = Vec::new();
    let mut sites = Vec::new();
    let mut shape_source: Option<ValueId> = None;
    for inst in group {
        let node = match &inst.op {
            Op::Unary(op, a) => {
                let a = operand(*a, function, &mut builder, &nodes, &mut inputs, &mut params);
                // The checker admits only elementwise operations on tensors.
                let Some(op) = op.elementwise() else { continue };
                builder.unary(op, a)
            }
            Op::Binary(op, a, b) => {
                let a = operand(*a, function, &mut builder, &nodes, &mut inputs, &mut params);
                let b = operand(*b, function, &mut builder, &nodes, &mut inputs, &mut params);
                // The checker admits only arithmetic, min and max on tensors.
                let Some(op) = op.elementwise() else { continue };
                builder.binary(op, a, b)
            }
            Op::Noise { dist, site, like } => {
                shape_source = shape_source.or(*like);
                sites.push(*site);
                builder.noise(*dist)
            }
            Op::Fill { value, like } => {
                shape_source = shape_source.or(*like);
                builder.constant(*value)
            }
            // Only elementwise instructions are grouped.
            _ => continue,
        };
        if let [result] = inst.results.as_slice() {
            nodes.insert(*result, node);
        }
    }
    // A kernel made only of noise and constants takes its shape from the value they are shaped like.
    if let (true, Some(like)) = (inputs.is_empty(), shape_source) {
        let _ = operand(like, function, &mut builder, &nodes, &mut inputs, &mut params);
    }
    let mut results = Vec::new();
    for inst in group {
        for result in &inst.results {
            if consumers_outside.contains(result)
                && let Some(node) = nodes.get(result)
            {
                builder.output(*node);
                results.push(*result);
            }
        }
    }
    if results.is_empty() {
        return None;
    }
    let kernel: spec::ElementwiseKernel = builder.finish();
    function.kernels.push(kernel);
    let id = KernelId(function.kernels.len() as u32 - 1);
    Some(Inst { op: Op::Kernel { kernel: id, inputs, params, sites, in_place: Vec::new() }, results })
}

/// The node for an operand of a grouped instruction: its node if the group computes it, else a
/// kernel input (tensors) or parameter (host values), each added once.
fn operand(
    value: ValueId,
    function: &Function,
    builder: &mut KernelBuilder,
    nodes: &HashMap<ValueId, NodeId>,
    inputs: &mut Vec<ValueId>,
    params: &mut Vec<ValueId>,
) -> NodeId {
    if let Some(node) = nodes.get(&value) {
        return *node;
    }
    let (list, tensor) = if function.ty(value) == Ty::Tensor { (inputs, true) } else { (params, false) };
    let index = list.iter().position(|v| *v == value).unwrap_or_else(|| {
        list.push(value);
        list.len() - 1
    }) as u32;
    if tensor { builder.input(index) } else { builder.param(index) }
}
