//! `sched build`: compile a schedule and print one of its stages.

use sched_compiler::clif;
use sched_compiler::ir::{Function, Op, TokenOp};
use sched_compiler::pipeline::{self, Stage};
use sched_compiler::print::to_dot;
use sched_kernels::cuda;
use sched_kernels::jit::CompiledKernel;
use sched_kernels::spec::ReductionKernel;
use sched_lang::Program;
use sched_runtime::sequence;

/// What `sched build --emit` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// The syntax tree of the schedule.
    Ast,
    /// The IR after a stage (`--stage`, default: the last).
    Ir,
    /// The control-flow graph in Graphviz's dot language (`dot -Tsvg`).
    Dot,
    /// The fused kernels: each one's expression and its CLIF.
    Kernels,
    /// The host code: the schedule's control flow and host math as one CLIF function, with
    /// the instruction each runtime hook call stands for.
    Clif,
    /// The fused kernels as the CUDA C that NVRTC compiles for `--device cuda`, plus the
    /// reduction kernels the schedule reads back into host control flow and the token kernels
    /// its token operations launch where their model runs on the device.
    Cuda,
}

/// The stage `--emit ir` stops after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StageArg {
    Lower,
    Cse,
    Fold,
    Dce,
    Fuse,
    Plan,
}

impl StageArg {
    pub fn stage(self) -> Stage {
        match self {
            StageArg::Lower => Stage::Lower,
            StageArg::Cse => Stage::Cse,
            StageArg::Dce => Stage::Dce,
            StageArg::Fuse => Stage::Fuse,
            StageArg::Fold => Stage::Fold,
            StageArg::Plan => Stage::Plan,
        }
    }
}

/// Renders `emit` for one schedule; `Err` carries a compile error's text.
pub fn render(
    program: &Program,
    schedule: &str,
    emit: Emit,
    stage: Stage,
) -> Result<String, sched_compiler::diagnostics::CompileError> {
    let Some((id, _)) = program.schedule_by_name(schedule) else {
        return Ok(String::new());
    };
    Ok(match emit {
        Emit::Ast => format!("{:#?}\n", program.schedule_ast(id)),
        Emit::Ir => pipeline::compile_until(program, id, stage)?.to_string(),
        Emit::Dot => to_dot(&pipeline::compile_until(program, id, stage)?),
        Emit::Kernels => {
            let function = pipeline::compile(program, id)?;
            let mut out = String::new();
            for (index, kernel) in function.kernels.iter().enumerate() {
                out.push_str(&format!("k{index}: {kernel}\n"));
                match CompiledKernel::compile(kernel) {
                    Ok(compiled) => out.push_str(&format!("{}\n", compiled.clif())),
                    Err(error) => out.push_str(&format!("; cannot compile k{index}: {error}\n\n")),
                }
            }
            out
        }
        Emit::Cuda => {
            let function = pipeline::compile(program, id)?;
            cuda_sources(&function)
        }
        Emit::Clif => {
            let function = pipeline::compile(program, id)?;
            clif::generate(&function, clif::reference_target())?.render(&function)
        }
    })
}

/// The CUDA C of every fused kernel of a function, then of each reduction it reads back (each a
/// host synchronisation on a GPU), with the line of the source it belongs to.
fn cuda_sources(function: &Function) -> String {
    let mut out = String::new();
    for (index, kernel) in function.kernels.iter().enumerate() {
        out.push_str(&format!("// k{index}: {kernel}\n"));
        match cuda::elementwise_source(kernel) {
            Ok(source) => out.push_str(&source),
            Err(error) => out.push_str(&format!("// cannot emit k{index}: {error}\n")),
        }
        out.push('\n');
    }
    let mut reductions: Vec<_> = function
        .graph
        .node_weights()
        .flat_map(|block| &block.insts)
        .filter_map(|inst| match inst.op {
            Op::Reduce(op, _) => Some(op),
            _ => None,
        })
        .collect();
    reductions.sort_by_key(|op| format!("{op:?}"));
    reductions.dedup();
    for op in reductions {
        out.push_str(&format!("// reduction {op:?}: read back into host control flow (a synchronisation)\n"));
        match cuda::reduction_source(&ReductionKernel::of_input(op)) {
            Ok(source) => out.push_str(&source),
            Err(error) => out.push_str(&format!("// cannot emit the reduction: {error}\n")),
        }
        out.push('\n');
    }
    out.push_str(&token_sources(function));
    out
}

/// The CUDA modules of the function's token operations (where their model runs on the device),
/// each once, after a comment naming the operations that launch it and what for.
fn token_sources(function: &Function) -> String {
    let mut ops: Vec<TokenOp> = function
        .graph
        .node_weights()
        .flat_map(|block| &block.insts)
        .filter_map(|inst| match inst.op {
            Op::Tokens { op, .. } => Some(op),
            _ => None,
        })
        .collect();
    ops.dedup();
    let mut modules: Vec<(Vec<String>, String)> = Vec::new();
    for op in ops {
        for module in sequence::device_modules(op) {
            let use_line = format!("// {}: {}", op.name(), module.role);
            match modules.iter_mut().find(|(_, source)| *source == module.source) {
                Some((uses, _)) if uses.contains(&use_line) => {}
                Some((uses, _)) => uses.push(use_line),
                None => modules.push((vec![use_line], module.source)),
            }
        }
    }
    let mut out = String::new();
    for (uses, source) in modules {
        out.push_str(
            "// A token kernel, launched where the token model runs on the device (the operation then \
             reads its tokens back: a host synchronisation per call):\n",
        );
        for line in uses {
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(&source);
        out.push('\n');
    }
    out
}
