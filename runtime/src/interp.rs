//! The reference interpreter: walks an IR [`Function`] on the CPU.
//!
//! It executes fused kernels with the kernel crate's reference evaluator and unfused elementwise
//! operations with the same f32 semantics, so a function gives the same bits before and after
//! fusion. It is the oracle the JIT is tested against. Its instructions run on the executor both
//! engines share ([`crate::machine`]); the interpreter adds the walk of the control flow.

use std::sync::Arc;

use sched_compiler::ir::{Function, Terminator};

use crate::machine::Machine;
use crate::model::Model;
use crate::run::{Outputs, ParamValue, RunError, RunOptions, located};

/// Runs a function with bound parameters and models.
pub fn run(
    function: &Function,
    params: &[Option<ParamValue>],
    models: &[Arc<dyn Model>],
    options: &RunOptions<'_>,
) -> Result<Outputs, RunError> {
    let mut machine = Machine::new(function, params, models, options, None)?;
    let mut block = function.entry;
    loop {
        for (index, inst) in function.graph[block].insts.iter().enumerate() {
            machine.execute(inst).map_err(|error| located(function, block, index, error))?;
        }
        block = match function.graph[block].terminator {
            Terminator::Jump(next) => next,
            Terminator::Branch { cond, then_block, else_block } => {
                if machine.is_true(cond) {
                    then_block
                } else {
                    else_block
                }
            }
            Terminator::Return => break,
        };
    }
    Ok(machine.finish())
}
