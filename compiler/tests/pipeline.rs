//! The compiler on the shipped examples: every schedule compiles through every stage
//! with a valid IR; the fused IR of classic solver steps has the launch structure the design
//! promises; golden dumps of the IR after each stage (`SCHED_BLESS=1` to accept changes).

use std::path::PathBuf;

use cranelift_codegen::settings::Configurable;
use sched_compiler::clif;
use sched_compiler::ir::{Function, Op, Remask, SamplerKind, TokenOp};
use sched_compiler::pipeline::{self, Stage};
use sched_compiler::verify::verify;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn program(file: &str) -> sched_lang::Program {
    let path = root().join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {file}: {e}"));
    let analysis = sched_lang::analyze(file, &bytes);
    analysis.program.unwrap_or_else(|| panic!("{file} does not check: {:?}", analysis.diagnostics))
}

fn compile(file: &str, schedule: &str, stage: Stage) -> Function {
    let program = program(file);
    let (id, _) = program.schedule_by_name(schedule).unwrap_or_else(|| panic!("no schedule {schedule} in {file}"));
    pipeline::compile_until(&program, id, stage).unwrap_or_else(|e| panic!("{file}:{schedule}: {e:?}"))
}

/// Model calls and kernel launches in the block that holds the given number of model calls.
fn launches_in_step_blocks(function: &Function) -> Vec<(usize, usize)> {
    function
        .graph
        .node_weights()
        .map(|block| {
            let calls = block.insts.iter().filter(|i| i.op.calls_model()).count();
            let kernels = block.insts.iter().filter(|i| matches!(i.op, Op::Kernel { .. })).count();
            (calls, kernels)
        })
        .filter(|(calls, _)| *calls > 0)
        .collect()
}

#[test]
fn continuous_examples_compile_through_every_stage() {
    let continuous = [
        ("examples/ddim.sched", &["ddim"][..]),
        ("examples/ddpm.sched", &["ddpm", "ddpm_x0"]),
        ("examples/euler_karras.sched", &["euler_karras", "euler_ancestral_karras"]),
        ("examples/heun_karras.sched", &["heun_karras"]),
        ("examples/dpmpp_2m.sched", &["dpmpp_2m", "dpmpp_2m_sde"]),
        ("examples/flow_euler.sched", &["flow_euler"]),
        ("examples/cfg.sched", &["cfg_ddim", "cfg_dpmpp_2m"]),
        ("examples/few_step.sched", &["few_step"]),
        ("examples/meanflow.sched", &["meanflow_one_step", "meanflow_two_step"]),
        ("examples/shortcut.sched", &["shortcut"]),
        ("examples/consistency.sched", &["consistency", "lcm"]),
        ("examples/hybrid.sched", &["hybrid"]),
        ("examples/adaptive.sched", &["adaptive"]),
        ("examples/diffusion_forcing.sched", &["pyramid", "full_sequence", "autoregressive_frames"]),
    ];
    for (file, schedules) in continuous {
        for schedule in schedules {
            for &stage in Stage::ALL {
                let function = compile(file, schedule, stage);
                if let Err(errors) = verify(&function) {
                    panic!("{file}:{schedule} after {stage:?}: {errors:#?}");
                }
            }
        }
    }
}

#[test]
fn token_examples_compile_through_every_stage() {
    let sequences = [
        ("examples/autoregressive.sched", &["sample_tokens", "greedy_tokens"][..]),
        ("examples/mdlm.sched", &["mdlm"]),
        ("examples/block_diffusion.sched", &["llada", "fast_dllm", "bd3lm"]),
        ("examples/mtp_independent.sched", &["mtp_independent"]),
        ("examples/draft_verify.sched", &["draft_verify"]),
        ("examples/speculative.sched", &["speculative"]),
        ("examples/jacobi.sched", &["jacobi_decoding", "greedy_decoding"]),
        ("examples/poker.sched", &["independent", "autoregressive", "draft_verify"]),
    ];
    for (file, schedules) in sequences {
        for schedule in schedules {
            for &stage in Stage::ALL {
                let function = compile(file, schedule, stage);
                if let Err(errors) = verify(&function) {
                    panic!("{file}:{schedule} after {stage:?}: {errors:#?}");
                }
            }
        }
    }
}

/// The token operations of `function`, by block, in order.
fn token_ops(function: &Function) -> Vec<Vec<TokenOp>> {
    function
        .block_order()
        .into_iter()
        .map(|block| {
            function.graph[block]
                .insts
                .iter()
                .filter_map(|inst| match inst.op {
                    Op::Tokens { op, .. } => Some(op),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .filter(|ops| !ops.is_empty())
        .collect()
}

#[test]
fn an_unmasking_step_is_one_model_call_and_one_commit_on_the_window() {
    let function = compile("examples/block_diffusion.sched", "llada", Stage::Plan);
    let blocks = token_ops(&function);
    let step = [TokenOp::Tail, TokenOp::Candidates, TokenOp::Commit(Remask::Confidence), TokenOp::Whole];
    assert!(blocks.iter().any(|ops| ops[..] == step), "{blocks:?}");
    assert!(blocks.iter().any(|ops| ops[..] == [TokenOp::ExtendMask]), "{blocks:?}");
    assert_eq!(function.model_calls(), 1, "one call site: the candidates of the unmasking step");
    // Each drawing operation has its own noise site.
    let sites: Vec<u32> = function
        .graph
        .node_weights()
        .flat_map(|b| &b.insts)
        .filter_map(|inst| match inst.op {
            Op::Tokens { site, .. } => site,
            _ => None,
        })
        .collect();
    let mut unique = sites.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), sites.len(), "{sites:?}");
}

#[test]
fn speculative_decoding_is_a_proposal_and_a_verification_per_round() {
    let function = compile("examples/speculative.sched", "speculative", Stage::Plan);
    let blocks = token_ops(&function);
    let round = blocks.iter().find(|ops| ops.contains(&TokenOp::Verify(SamplerKind::Sample))).expect("a round");
    assert_eq!(round[..2], [TokenOp::Propose(SamplerKind::Sample), TokenOp::Verify(SamplerKind::Sample)]);
    let slots: Vec<u32> = function
        .graph
        .node_weights()
        .flat_map(|b| &b.insts)
        .filter_map(|inst| match &inst.op {
            Op::Tokens { op: TokenOp::Propose(_) | TokenOp::Verify(_), model, .. } => model.map(|m| m.0),
            _ => None,
        })
        .collect();
    assert_eq!(slots, vec![1, 0], "the draft model proposes, the target verifies");
}

#[test]
fn a_first_order_step_is_one_model_call_and_one_kernel() {
    for (file, schedule) in [
        ("examples/ddim.sched", "ddim"),
        ("examples/euler_karras.sched", "euler_ancestral_karras"),
        ("examples/ddpm.sched", "ddpm"),
    ] {
        // `ddim` and `first_order` branch on the noise level before the model call, so a step
        // whose level is a run-time value has a step block per branch, each one call and one
        // kernel.
        let function = compile(file, schedule, Stage::Fuse);
        let blocks = launches_in_step_blocks(&function);
        assert!(!blocks.is_empty() && blocks.iter().all(|b| *b == (1, 1)), "{file}:{schedule}\n{function}");
    }
}

#[test]
fn identical_model_calls_in_a_step_are_one_call() {
    let source = br#"
        step both() {
            let a = eps(x, t)
            let (b, c) = predict(x, t)
            x = a + b + x0(x, t) + velocity(x, t) + c
        }
        schedule s(net: model<eps>) {
            let x = gaussian()
            refine x from 1 to 0.5 by both()
            emit x
        }
    "#;
    let analysis = sched_lang::analyze("cse.sched", source);
    let program = analysis.program.expect("checks");
    let (id, _) = program.schedule_by_name("s").expect("schedule");
    let lowered = pipeline::compile_until(&program, id, Stage::Lower).expect("lowers");
    let after_cse = pipeline::compile_until(&program, id, Stage::Cse).expect("cse");
    assert_eq!(lowered.model_calls(), 4, "{lowered}");
    assert_eq!(after_cse.model_calls(), 1, "{after_cse}");
}

#[test]
fn guidance_makes_two_calls_and_fuses_their_combination() {
    let function = compile("examples/cfg.sched", "cfg_ddim", Stage::Fuse);
    let blocks = launches_in_step_blocks(&function);
    assert!(!blocks.is_empty() && blocks.iter().all(|b| *b == (2, 1)), "{function}");
}

#[test]
fn multistep_and_second_order_steps_fuse_per_model_call() {
    // DPM++ 2M: the first-order and the second-order branch each are one call and one kernel,
    // except the final step to data (a copy of x0, which is one kernel too).
    let function = compile("examples/dpmpp_2m.sched", "dpmpp_2m", Stage::Fuse);
    for (calls, kernels) in launches_in_step_blocks(&function) {
        assert_eq!(calls, 1);
        assert!(kernels <= 1, "{function}");
    }
}

/// Compares `text` with the golden file `name` in `compiler/tests/golden/` (or writes it there
/// with `SCHED_BLESS=1`), recording a difference in `failures`.
fn check_golden(name: &str, text: &str, failures: &mut Vec<String>) {
    let path = root().join("compiler/tests/golden").join(name);
    if std::env::var_os("SCHED_BLESS").is_some() {
        std::fs::write(&path, text).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != text {
        failures.push(format!("{} differs (SCHED_BLESS=1 to accept)\n{text}", path.display()));
    }
}

#[test]
fn golden_ir_dumps() {
    let cases = [
        ("examples/ddim.sched", "ddim"),
        ("examples/heun_karras.sched", "heun_karras"),
        ("examples/few_step.sched", "few_step"),
        ("examples/block_diffusion.sched", "llada"),
        ("examples/jacobi.sched", "jacobi_decoding"),
    ];
    let mut failures = Vec::new();
    for (file, schedule) in cases {
        for &stage in Stage::ALL {
            let text = compile(file, schedule, stage).to_string();
            check_golden(&format!("{schedule}.{}.ir", stage.name()), &text, &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The host code of the same schedules, as `sched build --emit clif` prints it. Generating it
/// needs no JIT, so these goldens hold on any machine.
#[test]
fn golden_host_code() {
    let cases = [
        ("examples/ddim.sched", "ddim"),
        ("examples/heun_karras.sched", "heun_karras"),
        ("examples/few_step.sched", "few_step"),
        ("examples/adaptive.sched", "adaptive"),
        ("examples/speculative.sched", "speculative"),
    ];
    let mut failures = Vec::new();
    for (file, schedule) in cases {
        let function = compile(file, schedule, Stage::Plan);
        let host = clif::generate(&function, clif::reference_target()).expect("host code");
        let mut verifier_flags = cranelift_codegen::settings::builder();
        verifier_flags.enable("enable_verifier").expect("a known flag");
        let flags = cranelift_codegen::settings::Flags::new(verifier_flags);
        if let Err(errors) = cranelift_codegen::verify_function(&host.function, &flags) {
            failures.push(format!("{schedule}: the CLIF does not verify: {errors}"));
        }
        check_golden(&format!("{schedule}.clif"), &host.render(&function), &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The host code names hook `h` as function `h as u32`, and the JIT declares `Hook::ALL` in
/// order: the list must hold every hook, in declaration order, with distinct symbols.
#[test]
fn the_hook_table_is_in_declaration_order() {
    for (index, hook) in clif::Hook::ALL.iter().enumerate() {
        assert_eq!(*hook as usize, index, "{hook:?}");
    }
    let last = clif::Hook::Positions as usize;
    assert_eq!(clif::Hook::ALL.len(), last + 1, "Hook::ALL ends with the last hook");
    let symbols: std::collections::HashSet<&str> = clif::Hook::ALL.iter().map(|h| h.symbol()).collect();
    assert_eq!(symbols.len(), clif::Hook::ALL.len());
}

/// Every hook call of the host code names a site, every site an instruction that touches
/// tensors, grids or models, and host arithmetic compiles inline: the DDIM loop's counter and
/// grid arithmetic are Cranelift instructions, not calls.
#[test]
fn host_code_hands_only_tensor_work_to_the_runtime() {
    use sched_compiler::ir::Ty;
    let function = compile("examples/ddim.sched", "ddim", Stage::Plan);
    let host = clif::generate(&function, clif::reference_target()).expect("host code");
    for site in &host.sites {
        let inst = &function.graph[site.block].insts[site.index as usize];
        let touches_runtime =
            inst.results.iter().chain(&inst.op.operands()).any(|v| matches!(function.ty(*v), Ty::Tensor | Ty::Grid))
                || matches!(
                    inst.op,
                    Op::Param(_)
                        | Op::ParamGiven(_)
                        | Op::Interpolant { .. }
                        | Op::Coefficient { .. }
                        | Op::VerbDone { .. }
                        | Op::Emit { .. }
                );
        assert!(touches_runtime, "site for a host-only instruction: {:?}", inst.op);
    }
    let host_arithmetic = function
        .graph
        .node_weights()
        .flat_map(|b| &b.insts)
        .filter(|inst| matches!(inst.op, Op::Binary(..) | Op::Unary(..)))
        .count();
    assert!(host_arithmetic > 5, "the DDIM schedule has host arithmetic to compile inline");
    let layout = &host.function.layout;
    let calls = layout
        .blocks()
        .flat_map(|block| layout.block_insts(block))
        .filter(|&inst| host.function.dfg.insts[inst].opcode().is_call())
        .count();
    assert!(calls < host.sites.len() + host_arithmetic, "{calls} calls for {} sites", host.sites.len());
}

#[test]
fn bound_parameters_fold_and_unbound_ones_stay_parameters() {
    use sched_compiler::ir::{Constant, Terminator};
    let program = program("examples/heun_karras.sched");
    let (id, _) = program.schedule_by_name("heun_karras").expect("schedule");
    let unbound = pipeline::compile(&program, id).expect("compiles");
    let has_param = |f: &Function| f.graph.node_weights().flat_map(|b| &b.insts).any(|i| matches!(i.op, Op::Param(1)));
    assert!(has_param(&unbound), "steps stays a run-time parameter\n{unbound}");
    let bound = pipeline::compile_bound(&program, id, &[None, Some(Constant::I64(3))], Stage::Fuse).expect("compiles");
    assert!(!has_param(&bound), "steps = 3 is folded\n{bound}");
    let branches =
        |f: &Function| f.graph.node_weights().filter(|b| matches!(b.terminator, Terminator::Branch { .. })).count();
    assert!(branches(&bound) <= branches(&unbound));
}

#[test]
fn buffer_planning_updates_the_state_in_place() {
    // DDIM's step kernels read x and write the new x: the output goes over x's buffer and the
    // variable's old value is released first.
    let function = compile("examples/ddim.sched", "ddim", Stage::Plan);
    let state_var = function.vars.iter().position(|v| v.name == "x").expect("x") as u32;
    let updates: Vec<_> = function
        .graph
        .node_weights()
        .flat_map(|b| &b.insts)
        .filter_map(|i| match &i.op {
            Op::Kernel { in_place, .. } if !in_place.is_empty() => Some(in_place.clone()),
            _ => None,
        })
        .collect();
    // One step kernel per branch (with noise when the noise level is positive, without
    // otherwise).
    assert!(updates.len() >= 2, "{function}");
    for update in &updates {
        assert_eq!(update.len(), 1);
        assert_eq!(update[0].var.map(|v| v.0), Some(state_var), "{function}");
    }
}

/// A noise draw nobody reads is removed before fusion, so no kernel is built without outputs
/// (neither the reference evaluator nor the JIT can run such a kernel).
#[test]
fn dead_noise_draws_leave_no_kernel() {
    let source = "schedule s(net: model<eps>) {
        let x = gaussian()
        let y = gaussian()
        repeat 2 { let unused = uniform_noise() }
        emit x
    }";
    let analysis = sched_lang::analyze("dead.sched", source.as_bytes());
    let program = analysis.program.expect("checks");
    let (id, _) = program.schedule_by_name("s").expect("the schedule");
    let function = pipeline::compile(&program, id).expect("compiles");
    assert!(function.kernels.iter().all(|kernel| !kernel.outputs.is_empty()), "{function}");
    let noise_sites: usize = function
        .graph
        .node_weights()
        .flat_map(|b| &b.insts)
        .map(|inst| match &inst.op {
            Op::Kernel { sites, .. } => sites.len(),
            Op::Noise { .. } => 1,
            _ => 0,
        })
        .sum();
    assert_eq!(noise_sites, 1, "only x's draw is left: {function}");
}

/// DDIM with eta = 0 bound, like Euler, is deterministic: its step folds to one model call and
/// one kernel that draws no noise, as diffusers' DDIM with eta = 0 draws none.
#[test]
fn a_deterministic_step_draws_no_noise() {
    use sched_compiler::ir::Constant;
    let program = program("examples/ddim.sched");
    let (id, _) = program.schedule_by_name("ddim").expect("schedule");
    let unbound = pipeline::compile(&program, id).expect("compiles");
    let eta = unbound.params.iter().position(|p| p.name == "eta").expect("an eta parameter");
    let mut params = vec![None; unbound.params.len()];
    params[eta] = Some(Constant::F64(0.0));
    let function = pipeline::compile_bound(&program, id, &params, Stage::Fuse).expect("compiles");
    assert_eq!(launches_in_step_blocks(&function), vec![(1, 1)], "{function}");
    let step_sites: usize = function
        .graph
        .node_weights()
        .filter(|block| block.insts.iter().any(|i| i.op.calls_model()))
        .flat_map(|block| &block.insts)
        .map(|inst| match &inst.op {
            Op::Kernel { sites, .. } => sites.len(),
            Op::Noise { .. } => 1,
            _ => 0,
        })
        .sum();
    assert_eq!(step_sites, 0, "{function}");
}
