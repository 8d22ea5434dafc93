//! Trains sched's transformer token model on the poker-hands data set and writes checkpoints that
//! `load_model` loads. See `--help`, and examples/models/poker/README.md for the shipped ones.
//!
//! ```text
//! cargo run --release --example train_tokens -- --kind causal_lm
//! cargo run --release --example train_tokens -- --all          # the three shipped checkpoints
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use sched_kernels::tokens::softmax;
use sched_lang::types::ModelKind;
use sched_models::load::load_model;
use sched_models::poker::{self, EOS, HANDS, MASK, WORDS};
use sched_runtime::model::TokenRows;
use sched_train::transformer::{TokenProgress, TokenTrainConfig, TokenTrainError, save_poker, train_poker};

const ABOUT: &str = "Trains sched's transformer token model on the poker hands, on the CPU, deterministically for \
a seed, and writes OUT/<kind>.safetensors, its manifest OUT/<kind>.toml and OUT/tokenizer.json.";

const LONG_ABOUT: &str = "\
Trains sched's transformer token model (pre-LayerNorm, d 32, 2 layers, 2 attention heads, max_len 8) on the \
poker hands [w1, w2, <eos>] of sched_models::poker, on the CPU with candle's autodiff and AdamW, \
deterministically for a seed, and writes OUT/<kind>.safetensors with its manifest OUT/<kind>.toml and the \
word-level OUT/tokenizer.json beside them. Then it reloads each checkpoint and prints the total-variation \
distance of its distributions from the exact poker model.

Kinds and their objectives:
  causal_lm  next-token cross-entropy at the 3 positions of [<eos>, w1, w2] (<eos> is the start token)
  masked_lm  MDLM-style: t ~ U(0, 1), each position masked with probability t (at least one), cross-entropy
             on the masked positions
  mtp_lm     2 heads: head 0 the next token, head 1 the token after it";

const EXAMPLES: &str = "\
Examples:
  cargo run --release --example train_tokens -- --all
  cargo run --release --example train_tokens -- --kind masked_lm --steps 1000 --out /tmp/poker";

#[derive(Parser, Debug)]
#[command(name = "train_tokens", about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
struct Args {
    /// The model kind: causal_lm, masked_lm, mtp_lm.
    #[arg(long, value_parser = parse_kind, required_unless_present = "all")]
    kind: Option<ModelKind>,
    /// Train all three kinds, as the shipped checkpoints were.
    #[arg(long, conflicts_with = "kind")]
    all: bool,
    /// Where checkpoints go: OUT/<kind>.safetensors, OUT/<kind>.toml, OUT/tokenizer.json.
    #[arg(long, default_value = "examples/models/poker")]
    out: PathBuf,
    /// Optimizer steps [default: 3000].
    #[arg(long)]
    steps: Option<usize>,
    /// The seed of every random number (weights, rows, masks).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Rows per minibatch [default: 64].
    #[arg(long)]
    batch: Option<usize>,
}

const KINDS: [ModelKind; 3] = [ModelKind::CausalLm, ModelKind::MaskedLm, ModelKind::MtpLm];

fn parse_kind(name: &str) -> Result<ModelKind, String> {
    ModelKind::from_name(name)
        .filter(|kind| KINDS.contains(kind))
        .ok_or_else(|| format!("expected one of {}", KINDS.map(ModelKind::name).join(", ")))
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Train(#[from] TokenTrainError),
    #[error(transparent)]
    Load(#[from] sched_models::error::LoadError),
    #[error(transparent)]
    Model(#[from] sched_runtime::model::ModelError),
    #[error("{0} is not a token model")]
    NotTokens(String),
}

/// One trained checkpoint, for the summary.
struct Done {
    kind: ModelKind,
    steps: usize,
    final_loss: f32,
    seconds: f64,
    distances: Distances,
}

fn main() {
    let args = Args::parse();
    if let Err(error) = run(&args) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Error> {
    let kinds: Vec<ModelKind> = if args.all { KINDS.to_vec() } else { args.kind.into_iter().collect() };
    let start = Instant::now();
    let mut done = Vec::new();
    for kind in kinds {
        done.push(train_one(args, kind)?);
    }
    println!(
        "\n| kind | steps | final loss | seconds | TV first word | max TV second given first | TV joint | TV head 1 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for d in &done {
        let head = d.distances.head1.map_or("–".to_string(), |x| format!("{x:.4}"));
        println!(
            "| {} | {} | {:.4} | {:.1} | {:.4} | {:.4} | {:.4} | {head} |",
            d.kind.name(),
            d.steps,
            d.final_loss,
            d.seconds,
            d.distances.first,
            d.distances.second,
            d.distances.joint,
        );
    }
    let bytes: u64 = std::fs::read_dir(&args.out)
        .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0);
    println!(
        "\n{} checkpoints in {}: {bytes} bytes in all, {:.1} s",
        done.len(),
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn train_one(args: &Args, kind: ModelKind) -> Result<Done, Error> {
    let mut config = TokenTrainConfig::new(kind);
    config.steps = args.steps.unwrap_or(config.steps);
    config.seed = args.seed;
    config.batch = args.batch.unwrap_or(config.batch);
    println!(
        "{}: {} steps, batch {}, d {}, {} layers, {} attention heads, lr {}, seed {}",
        kind.name(),
        config.steps,
        config.batch,
        config.d_model,
        config.layers,
        config.attention_heads,
        config.lr,
        config.seed
    );
    let every = (config.steps / 10).max(1);
    let mut window: Vec<f32> = Vec::new();
    let mut report_progress = |p: &TokenProgress| {
        window.push(p.loss);
        if p.step.is_multiple_of(every) || p.step == p.steps {
            let mean = window.iter().sum::<f32>() / window.len() as f32;
            println!("  step {:>6}/{}  loss {:.5}  lr {:.2e}  {:.1} s", p.step, p.steps, mean, p.lr, p.seconds);
            window.clear();
        }
    };
    let (model, report) = train_poker(&config, &mut report_progress)?;
    let path = save_poker(&model, &args.out)?;
    println!(
        "  final loss {:.5} (mean of the last tenth of the steps), {:.1} s: wrote {}",
        report.final_loss(),
        report.seconds,
        path.display()
    );
    let distances = measure(&path)?;
    println!(
        "  total variation from the exact poker model: first word {:.4}, second given first (max) {:.4}, joint {:.4}{}",
        distances.first,
        distances.second,
        distances.joint,
        distances.head1.map_or(String::new(), |x| format!(", head 1 (second word) {x:.4}"))
    );
    Ok(Done { kind, steps: config.steps, final_loss: report.final_loss(), seconds: report.seconds, distances })
}

/// One row of `ids`.
fn one(ids: &[u32]) -> TokenRows<'_> {
    TokenRows { ids, batch: 1, len: ids.len() }
}

/// Total-variation distances of a reloaded model from the exact poker distribution.
struct Distances {
    /// Of the first word's distribution.
    first: f64,
    /// The largest over the hands' first words, of the second word's distribution given it.
    second: f64,
    /// Of the distribution of the two words, q(w1) q(w2 | w1) over the whole vocabulary.
    joint: f64,
    /// Of head 1's distribution at the empty row (the second word, marginally); mtp_lm only.
    head1: Option<f64>,
}

fn tv(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

/// Reloads the checkpoint at `path` as `sched run` would, and measures it against `poker::HANDS`.
fn measure(path: &Path) -> Result<Distances, Error> {
    let model = load_model(&path.display().to_string(), None)?;
    let lm = model.tokens().ok_or_else(|| Error::NotTokens(path.display().to_string()))?;
    let v = WORDS.len();
    let hands = poker::hand_ids();
    let mut exact = vec![vec![0.0; v]; v];
    for &(first, second, p) in &hands {
        exact[first as usize][second as usize] += p;
    }
    let exact_first: Vec<f64> = exact.iter().map(|row| row.iter().sum()).collect();
    // q(w1), and q(w2 | w1) for every w1 of the vocabulary.
    let (first, seconds): (Vec<f64>, Vec<Vec<f64>>) = match lm.heads() {
        0 => {
            let marginal = lm.masked_logits(one(&[MASK, MASK, EOS]))?;
            let mut seconds = Vec::with_capacity(v);
            for w in 0..v as u32 {
                let logits = lm.masked_logits(one(&[w, MASK, EOS]))?;
                seconds.push(softmax(&logits[v..2 * v]));
            }
            (softmax(&marginal[..v]), seconds)
        }
        _ => {
            let all: Vec<u32> = (0..v as u32).collect();
            let next = lm.causal_logits(TokenRows { ids: &all, batch: v, len: 1 }, 1)?;
            let seconds = next.chunks_exact(v).map(softmax).collect();
            (softmax(&lm.causal_logits(one(&[]), 0)?), seconds)
        }
    };
    let mut joint = 0.0;
    for a in 0..v {
        for b in 0..v {
            joint += (first[a] * seconds[a][b] - exact[a][b]).abs();
        }
    }
    let second = HANDS
        .iter()
        .filter_map(|h| poker::id(h.0))
        .map(|a| {
            let a = a as usize;
            let conditional: Vec<f64> = exact[a].iter().map(|p| p / exact_first[a]).collect();
            tv(&seconds[a], &conditional)
        })
        .fold(0.0, f64::max);
    let head1 = if lm.heads() >= 2 {
        let heads = lm.head_logits(one(&[]))?;
        let exact_second: Vec<f64> = (0..v).map(|b| exact.iter().map(|row| row[b]).sum()).collect();
        Some(tv(&softmax(&heads[v..2 * v]), &exact_second))
    } else {
        None
    };
    Ok(Distances { first: tv(&first, &exact_first), second, joint: 0.5 * joint, head1 })
}
