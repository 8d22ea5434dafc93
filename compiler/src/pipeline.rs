//! The pass pipeline: lowering, then each pass in order, with the verifier after every pass in
//! debug builds (and always in tests).

use sched_lang::Span;
use sched_lang::check::{Program, ScheduleId};

use crate::diagnostics::CompileError;
use crate::ir::{Constant, Function};
use crate::{cse, dce, fold, fuse, lower, plan, verify};

/// The stages of compilation, in order; `--emit ir` can stop after any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Lowering with step inlining.
    Lower,
    /// Local value numbering: forwarded reads, CSE of model calls and pure operations.
    Cse,
    /// Constant folding of host operations and branches.
    Fold,
    /// Dead-code elimination.
    Dce,
    /// Fusion of elementwise regions into kernels (followed by a second DCE).
    Fuse,
    /// Buffer planning: kernel outputs written in place over dead inputs.
    Plan,
}

impl Stage {
    pub const ALL: &'static [Stage] = &[Stage::Lower, Stage::Cse, Stage::Fold, Stage::Dce, Stage::Fuse, Stage::Plan];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Lower => "lower",
            Stage::Cse => "cse",
            Stage::Fold => "fold",
            Stage::Dce => "dce",
            Stage::Fuse => "fuse",
            Stage::Plan => "plan",
        }
    }
}

/// Compiles a schedule through every stage up to and including `last`, with its host
/// parameters bound to `params` (by position) so they fold; `None` leaves a parameter to the run.
pub fn compile_bound(
    program: &Program,
    schedule: ScheduleId,
    params: &[Option<Constant>],
    last: Stage,
) -> Result<Function, CompileError> {
    let mut function = lower::lower(program, schedule)?;
    fold::bind_params(&mut function, params);
    check(&function, Stage::Lower)?;
    for &stage in &Stage::ALL[1..] {
        if stage > last {
            break;
        }
        match stage {
            Stage::Lower => {}
            Stage::Cse => cse::run(&mut function),
            Stage::Fold => {
                fold::run(&mut function);
                cse::run(&mut function);
            }
            Stage::Dce => dce::run(&mut function),
            Stage::Fuse => {
                fuse::run(&mut function);
                dce::run(&mut function);
            }
            Stage::Plan => plan::run(&mut function),
        }
        check(&function, stage)?;
    }
    Ok(function)
}

/// Compiles a schedule through every stage up to and including `last`, with default parameters.
pub fn compile_until(program: &Program, schedule: ScheduleId, last: Stage) -> Result<Function, CompileError> {
    compile_bound(program, schedule, &[], last)
}

/// Compiles a schedule through the whole pipeline, with default parameters.
pub fn compile(program: &Program, schedule: ScheduleId) -> Result<Function, CompileError> {
    compile_until(program, schedule, Stage::Plan)
}

fn check(function: &Function, stage: Stage) -> Result<(), CompileError> {
    if (cfg!(debug_assertions) || cfg!(test))
        && let Err(errors) = verify::verify(function)
    {
        return Err(CompileError {
            code: "sched::compile::internal",
            message: format!("the IR is invalid after the {} stage (a compiler bug)", stage.name()),
            span: Span::new(sched_lang::FileId(0), 0, 0),
            label: errors.join("; "),
            help: "please report this with the .sched file".into(),
        });
    }
    Ok(())
}
