//! The defining property of each language-model schedule, on exact token models, on both engines:
//! autoregressive sampling draws the model's law and greedy decoding its argmax chain; masked
//! diffusion reuses p(x₀) when nothing changed; first-hitting unmasking is exact while
//! one-step unmasking is not; LLaDA commits exactly the scheduled number of tokens per step;
//! greedy draft + verify and Jacobi decoding are greedy decoding; sampling verification and
//! speculative decoding reproduce the target distribution (chi-square tests with fixed seeds).

use std::collections::HashMap;
use std::sync::Arc;

use sched::api::{Engine, Value, compile};
use sched_models::load::load_model;
use sched_models::poker;
use sched_runtime::model::Model;
use sched_runtime::model::TokenRows;
use sched_runtime::run::{OutputValue, Outputs, RunOptions};

use crate::common::stats::{chi_square, chi_square_critical};

/// Runs `schedule` of `source` on both engines, checks that they agree bit for bit, and returns
/// the JIT's outputs.
fn run(
    source: &str,
    schedule: &str,
    params: &[(&str, Value)],
    models: &[(&str, &str)],
    batch: usize,
    seed: u64,
) -> Outputs {
    run_prompted(source, schedule, params, models, batch, seed, &[])
}

/// [`run`] with every row starting with `prompt`.
fn run_prompted(
    source: &str,
    schedule: &str,
    params: &[(&str, Value)],
    models: &[(&str, &str)],
    batch: usize,
    seed: u64,
    prompt: &[u32],
) -> Outputs {
    let program = compile("test.sched", source).unwrap_or_else(|e| panic!("{e}"));
    let executable = program.schedule(schedule).and_then(|s| s.bind(params)).unwrap_or_else(|e| panic!("{e}"));
    // Models not given are loaded from the defaults the schedule declares.
    let loaded: Vec<(&str, Arc<dyn Model>)> = executable
        .function()
        .models
        .iter()
        .map(|model| {
            let given = models.iter().find(|(name, _)| *name == model.name).map(|(_, spec)| *spec);
            let spec = given.or(model.default_spec.as_deref()).expect("every model has a default or is given");
            (model.name.as_str(), load_model(spec, None).unwrap_or_else(|e| panic!("{e}")))
        })
        .collect();
    let options = RunOptions { seed, batch, trace: true, prompt: prompt.to_vec(), ..RunOptions::default() };
    let jit = executable.run_on(Engine::Jit, &loaded, &options).unwrap_or_else(|e| panic!("{e}"));
    let interpreted = executable.run_on(Engine::Interpreter, &loaded, &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows(&jit), rows(&interpreted), "the engines disagree on {schedule}");
    assert_eq!(jit.model_calls, interpreted.model_calls);
    assert_eq!(jit.token_trace, interpreted.token_trace);
    jit
}

fn rows(outputs: &Outputs) -> Vec<Vec<u32>> {
    outputs
        .values
        .iter()
        .find_map(|(_, value)| match value {
            OutputValue::Tokens { rows, .. } => Some(rows.clone()),
            _ => None,
        })
        .expect("the schedule emits tokens")
}

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))).expect("the example exists")
}

fn word(w: &str) -> u32 {
    poker::id(w).expect("a poker word")
}

fn histogram(rows: &[Vec<u32>], len: usize) -> HashMap<Vec<u32>, usize> {
    let mut counts = HashMap::new();
    for row in rows {
        *counts.entry(row[..len].to_vec()).or_insert(0) += 1;
    }
    counts
}

/// The hands' probabilities, keyed by their two words.
fn hand_law() -> HashMap<Vec<u32>, f64> {
    poker::hand_ids().into_iter().map(|(a, b, p)| (vec![a, b], p)).collect()
}

/// The exact law of the first `len` tokens of a causal model, by the chain rule.
fn causal_law(spec: &str, len: usize) -> HashMap<Vec<u32>, f64> {
    let model = load_model(spec, None).expect("the spec loads");
    let tokens = model.tokens().expect("a token model");
    let vocab = tokens.vocab().size;
    let mut law: HashMap<Vec<u32>, f64> = HashMap::from([(Vec::new(), 1.0)]);
    for position in 0..len {
        let mut next = HashMap::new();
        for (prefix, p) in law {
            let logits = tokens
                .causal_logits(TokenRows { ids: &prefix, batch: 1, len: position }, position)
                .expect("the model scores the prefix");
            let probs = sched_kernels::tokens::softmax(&logits[..vocab]);
            for (token, q) in probs.iter().enumerate() {
                if *q > 0.0 {
                    let mut key = prefix.clone();
                    key.push(token as u32);
                    next.insert(key, p * q);
                }
            }
        }
        law = next;
    }
    law
}

fn assert_distribution(rows: &[Vec<u32>], len: usize, law: &HashMap<Vec<u32>, f64>, what: &str) {
    let (statistic, df) = chi_square(&histogram(rows, len), law, rows.len());
    let critical = chi_square_critical(df);
    assert!(
        statistic < critical,
        "{what}: chi-square {statistic:.1} with {df} degrees of freedom (critical {critical:.1})"
    );
}

#[test]
fn autoregressive_sampling_draws_the_hands_with_their_frequencies() {
    let source = example("autoregressive.sched");
    let plain = [("temperature", Value::Float(1.0)), ("top_k", Value::Int(0)), ("top_p", Value::Float(1.0))];
    let outputs = run(&source, "sample_tokens", &plain, &[], 20_000, 1);
    let rows = rows(&outputs);
    assert!(rows.iter().all(|row| row.len() == 3 && row[2] == poker::EOS), "two words, then the end token");
    assert_distribution(&rows, 2, &hand_law(), "autoregressive sampling");
    assert_eq!(outputs.model_calls, 3);
    // Top-p (Hugging Face's rule) keeps the smallest set of first words with mass >= 0.5, with
    // the word that crosses it: high (0.30) and one (0.25).
    let nucleus = [("top_p", Value::Float(0.5)), ("temperature", Value::Float(1.0))];
    let rows = self::rows(&run(&source, "sample_tokens", &nucleus, &[], 4000, 2));
    let kept = HashMap::from([
        (vec![word("high"), word("card")], 0.30 / 0.55),
        (vec![word("one"), word("pair")], 0.25 / 0.55),
    ]);
    assert_distribution(&rows, 2, &kept, "top-p 0.5");
    // Min-p 0.5 keeps the first words at least half as likely as the most likely one (0.30): the
    // same two.
    let min_p = [("min_p", Value::Float(0.5)), ("temperature", Value::Float(1.0)), ("top_k", Value::Int(0))];
    let source_min_p = source.replace("sample(temperature, top_k, top_p)", "sample(temperature, top_k, top_p, min_p)");
    let source_min_p = source_min_p.replace("top_p: float = 0.95,", "top_p: float = 0.95,\n    min_p: float = 0.0,");
    let rows = self::rows(&run(&source_min_p, "sample_tokens", &min_p, &[], 4000, 3));
    assert_distribution(&rows, 2, &kept, "min-p 0.5");
    // Top-k 1 is greedy.
    let top_one = [("top_k", Value::Int(1))];
    let rows = self::rows(&run(&source, "sample_tokens", &top_one, &[], 64, 3));
    assert!(rows.iter().all(|row| row[..2] == [word("high"), word("card")]));
}

#[test]
fn greedy_decoding_stops_at_the_end_token_and_pads_finished_rows() {
    let source = example("autoregressive.sched");
    let outputs = run(&source, "greedy_tokens", &[("max_tokens", Value::Int(1))], &[], 3, 0);
    assert_eq!(rows(&outputs), vec![vec![word("high")]; 3], "max_tokens bounds the length");
    let padded = r#"
        schedule padded(lm: model<causal_lm> = "analytic:poker") {
            let seq = prompt()
            repeat 5 {
                extend seq by 1 with greedy
            }
            emit seq
        }
    "#;
    let outputs = run(padded, "padded", &[], &[], 2, 0);
    let eos = poker::EOS;
    assert_eq!(rows(&outputs), vec![vec![word("high"), word("card"), eos, eos, eos]; 2]);
    assert_eq!(outputs.model_calls, 3, "no call once every row has ended");
}

#[test]
fn masked_diffusion_calls_the_model_only_after_a_change() {
    let source = example("mdlm.sched");
    for seed in 0..4 {
        let params = [("gen_length", Value::Int(8)), ("steps", Value::Int(64))];
        let outputs = run(&source, "mdlm", &params, &[], 1, seed);
        let rows = rows(&outputs);
        assert!(rows[0].len() == 8 && !rows[0].contains(&16), "every position unmasked: {rows:?}");
        // One call, then one more after each step that changed the row, except the step that
        // unmasks the last position: as many calls as steps that changed something.
        let changes = outputs.token_trace.windows(2).filter(|w| w[0].1 != w[1].1).count();
        assert!(outputs.model_calls <= 8, "{} calls for 8 tokens", outputs.model_calls);
        assert_eq!(outputs.model_calls as usize, changes, "seed {seed}");
    }
}

#[test]
fn first_hitting_unmasking_is_exact_and_one_step_unmasking_is_not() {
    let blocks = r#"
        schedule first_hitting(lm: model<masked_lm> = "analytic:poker(kind=masked_lm)") {
            let seq = prompt()
            extend seq by 3 as mask
            for t, s in grid(1 -> 0, 3) {
                refine seq.tail(3) from t to s by unmask(first_hitting, temperature = 1.0)
            }
            emit seq
        }
        schedule one_step(lm: model<masked_lm> = "analytic:poker(kind=masked_lm)") {
            let seq = prompt()
            extend seq by 3 as mask
            refine seq.tail(3) from 1.0 to 0.0 by unmask(posterior, temperature = 1.0)
            emit seq
        }
    "#;
    let outputs = run(blocks, "first_hitting", &[], &[], 20_000, 4);
    for step in outputs.token_trace.windows(2).skip(1) {
        for (before, after) in step[0].1.iter().zip(&step[1].1) {
            let unmasked = before.iter().zip(after).filter(|(b, a)| b != a).count();
            assert_eq!(unmasked, 1, "first-hitting commits exactly one position per step");
        }
    }
    let rows = rows(&outputs);
    assert!(rows.iter().all(|row| sched::poker::is_hand(row)));
    assert_distribution(&rows, 2, &hand_law(), "first-hitting unmasking");
    // All three positions from their marginals at once: the pairs are independent.
    let rows = self::rows(&run(blocks, "one_step", &[], &[], 20_000, 5));
    let invalid = rows.iter().filter(|row| !sched::poker::is_hand(row)).count();
    let rate = invalid as f64 / rows.len() as f64;
    let predicted = poker::independent_invalid_rate();
    assert!(
        (rate - predicted).abs() < 4.0 * (predicted * (1.0 - predicted) / 20_000.0).sqrt(),
        "{rate} vs {predicted}"
    );
}

#[test]
fn llada_commits_exactly_the_scheduled_number_of_tokens_per_step() {
    let source = example("block_diffusion.sched");
    let mask = 16;
    for (block, steps, expected) in [(10, 4, vec![3, 3, 2, 2]), (8, 4, vec![2, 2, 2, 2]), (7, 3, vec![3, 2, 2])] {
        let params = [
            ("gen_length", Value::Int(2 * block)),
            ("block", Value::Int(block)),
            ("steps", Value::Int(steps)),
            ("temperature", Value::Float(1.0)),
        ];
        let outputs = run(&source, "llada", &params, &[], 3, 9);
        // The trace holds the sequence after each verb: an extension, then the block's steps.
        let per_block = steps as usize + 1;
        assert_eq!(outputs.token_trace.len(), 2 * per_block);
        for blk in outputs.token_trace.chunks(per_block) {
            let masked = |rows: &Vec<Vec<u32>>| -> Vec<usize> {
                rows.iter().map(|row| row.iter().filter(|&&t| t == mask).count()).collect()
            };
            for (i, pair) in blk.windows(2).enumerate() {
                let (before, after) = (masked(&pair[0].1), masked(&pair[1].1));
                for (b, a) in before.iter().zip(&after) {
                    assert_eq!(b - a, expected[i], "block {block}, {steps} steps, step {i}");
                }
            }
        }
        assert_eq!(outputs.model_calls, 2 * steps as u64);
    }
    // Random remasking commits the same counts, at random positions.
    let random = source.replace("unmask(confidence, temperature)", "unmask(random, temperature)");
    let params = [("gen_length", Value::Int(10)), ("block", Value::Int(10)), ("steps", Value::Int(4))];
    let outputs = run(&random, "llada", &params, &[], 3, 9);
    let masked: Vec<usize> =
        outputs.token_trace.iter().map(|(_, rows)| rows[0].iter().filter(|&&t| t == mask).count()).collect();
    assert_eq!(masked, vec![10, 7, 4, 2, 0]);
    // The commit count of each step matches LLaDA's get_num_transfer_tokens.
    assert_eq!(sched_kernels::tokens::transfer_counts(10, 4), vec![3, 3, 2, 2]);
}

#[test]
fn fast_dllm_commits_at_least_one_token_per_step_and_everything_confident() {
    let source = example("block_diffusion.sched");
    let params = [("gen_length", Value::Int(8)), ("block", Value::Int(8)), ("p", Value::Float(0.0))];
    let outputs = run(&source, "fast_dllm", &params, &[], 2, 0);
    // With p = 0 every candidate is confident enough: one step unmasks the whole block.
    assert_eq!(outputs.model_calls, 1);
    let params = [("gen_length", Value::Int(8)), ("block", Value::Int(8)), ("p", Value::Float(1.0))];
    let outputs = run(&source, "fast_dllm", &params, &[], 2, 0);
    // With p = 1 no candidate is, and each step commits only the most confident one.
    assert_eq!(outputs.model_calls, 8);
}

#[test]
fn greedy_draft_and_verify_is_greedy_decoding() {
    let source = r#"
        schedule speculative(mtp: model<mtp_lm> = "analytic:markov(vocab=16, order=2, seed=3, kind=mtp_lm, heads=3)") {
            let seq = prompt()
            while length(seq) < 12 {
                let draft = propose(mtp, seq, 3, heads())
                seq = verify(mtp, seq, draft, greedy)
            }
            emit seq
        }
        schedule greedy(lm: model<mtp_lm> = "analytic:markov(vocab=16, order=2, seed=3, kind=mtp_lm, heads=3)") {
            let seq = prompt()
            repeat 40 {
                extend seq by 1 with greedy
            }
            emit seq
        }
    "#;
    let reference = rows(&run(source, "greedy", &[], &[], 1, 0));
    for seed in 0..5 {
        let outputs = run(source, "speculative", &[], &[], 4, seed);
        for row in rows(&outputs) {
            assert!(row.len() >= 12);
            assert_eq!(row[..], reference[0][..row.len()], "seed {seed}");
        }
    }
}

/// Jacobi decoding (examples/jacobi.sched) returns greedy decoding's tokens, in no more calls, for
/// any prompt and block; on the poker model, whose rows end, with the same end-token padding.
#[test]
fn jacobi_decoding_is_greedy_decoding() {
    let source = example("jacobi.sched");
    for (prompt, block) in [(vec![], 4), (vec![3], 3), (vec![5, 7], 1), (vec![2, 2, 9], 5)] {
        let params = [("max_tokens", Value::Int(15)), ("block", Value::Int(block))];
        let jacobi = run_prompted(&source, "jacobi_decoding", &params, &[], 2, 0, &prompt);
        let greedy = run_prompted(&source, "greedy_decoding", &[("max_tokens", Value::Int(15))], &[], 2, 0, &prompt);
        let end = prompt.len() + 15;
        for (j, g) in rows(&jacobi).iter().zip(rows(&greedy)) {
            assert!(j.len() >= end, "prompt {prompt:?}, block {block}: {j:?}");
            assert_eq!(j[..end], g[..end], "prompt {prompt:?}, block {block}");
        }
        assert!(jacobi.model_calls <= greedy.model_calls + block as u64, "prompt {prompt:?}, block {block}");
    }
    let poker = [("lm", "analytic:poker(kind=causal_lm)")];
    let params = [("max_tokens", Value::Int(6)), ("block", Value::Int(3))];
    let jacobi = run(&source, "jacobi_decoding", &params, &poker, 1, 0);
    let eos = poker::EOS;
    assert_eq!(rows(&jacobi), vec![vec![word("high"), word("card"), eos]]);
}

#[test]
fn sampling_verification_reproduces_the_model() {
    let spec = "analytic:markov(vocab=4, order=2, seed=5, kind=mtp_lm, heads=2)";
    let source = format!(
        r#"
        schedule draft_verify(mtp: model<mtp_lm> = "{spec}") {{
            let seq = prompt()
            while length(seq) < 3 {{
                let draft = propose(mtp, seq, 2, heads())
                seq = verify(mtp, seq, draft, sample())
            }}
            emit seq
        }}
    "#
    );
    let outputs = run(&source, "draft_verify", &[], &[], 20_000, 6);
    let rows = rows(&outputs);
    assert_distribution(&rows, 3, &causal_law(spec, 3), "self-speculative sampling verification");
    // The heads propose two tokens per call and verification accepts some of them: fewer calls
    // than tokens.
    assert!(outputs.model_calls < 2 * 3, "{} calls", outputs.model_calls);
}

#[test]
fn speculative_decoding_reproduces_the_target_model() {
    let target = "analytic:markov(vocab=4, order=2, seed=7, kind=causal_lm)";
    let draft = "analytic:markov(vocab=4, order=1, seed=7, kind=causal_lm)";
    let source = example("speculative.sched");
    let params = [("max_tokens", Value::Int(4)), ("k", Value::Int(3))];
    let outputs = run(&source, "speculative", &params, &[("target", target), ("draft", draft)], 20_000, 8);
    let rows = rows(&outputs);
    assert!(rows.iter().all(|row| row.len() >= 4));
    assert_distribution(&rows, 3, &causal_law(target, 3), "speculative decoding (first three tokens)");
    // A wrong law is rejected by the same test: the draft's own law differs from the target's.
    let (statistic, df) = chi_square(&histogram(&rows, 3), &causal_law(draft, 3), rows.len());
    assert!(statistic > chi_square_critical(df), "the test cannot tell the draft from the target");
}

#[test]
fn llada_guidance_masks_the_prompt_in_its_second_call() {
    let source = r#"
        schedule guided(lm: model<masked_lm> = "analytic:poker(kind=masked_lm)", cfg: float = 1.0) {
            let seq = prompt()
            extend seq by 2 as mask
            for t, s in grid(1 -> 0, 2) {
                refine seq.tail(2) from t to s by unmask(confidence, cfg = cfg)
            }
            emit seq
        }
    "#;
    let full = word("full");
    // Conditioned on "full", only "house" can follow; guidance keeps it (un + 2 (cond - un)).
    let outputs = run_prompted(source, "guided", &[], &[], 4, 0, &[full]);
    assert_eq!(rows(&outputs), vec![vec![full, word("house"), poker::EOS]; 4]);
    assert_eq!(outputs.model_calls, 4, "two calls per step: with and without the prompt");
    let unguided = run_prompted(source, "guided", &[("cfg", Value::Float(0.0))], &[], 4, 0, &[full]);
    assert_eq!(unguided.model_calls, 2);
    assert_eq!(rows(&unguided), rows(&outputs));
}
