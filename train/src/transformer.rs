//! Training of the transformer token model ([`sched_models::transformer`]) on the poker-hands data
//! set ([`sched_models::poker`]), on candle's autodiff with candle-nn's AdamW. It evaluates the
//! very network that inference evaluates ([`Network`]), so a trained model and the checkpoint it
//! writes give identical logits.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, Device, Tensor as CTensor, Var};
use candle_nn::Optimizer;
use sched_kernels::philox;
use sched_lang::types::ModelKind;
use sched_models::error::LoadError;
use sched_models::poker;
use sched_models::transformer::TransformerModel;
use sched_models::transformer::manifest::TransformerManifest;
use sched_models::transformer::network::Network;
use sched_models::transformer::tokenizer::write_word_level_tokenizer;

/// Why training a token model failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenTrainError {
    #[error("the training configuration is invalid: {0}")]
    Config(String),
    #[error("candle failed during training: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Save(#[from] LoadError),
}

/// The configuration of [`train_poker`].
#[derive(Clone, Debug, PartialEq)]
pub struct TokenTrainConfig {
    /// `causal_lm`, `masked_lm` or `mtp_lm`.
    pub kind: ModelKind,
    /// Optimizer steps.
    pub steps: usize,
    /// The seed of every random number (weights, rows, masks).
    pub seed: u64,
    /// Rows per minibatch.
    pub batch: usize,
    /// The peak learning rate (AdamW, linear warm-up over the first 5 % of the steps, then a
    /// cosine decay to 1 % of it).
    pub lr: f64,
    pub d_model: usize,
    pub layers: usize,
    pub attention_heads: usize,
    pub max_len: usize,
    /// The heads of an `mtp_lm`.
    pub heads: usize,
}

impl TokenTrainConfig {
    /// The configuration of the shipped poker checkpoints: d 32, 2 layers, 2 attention heads,
    /// max_len 8, 2 heads for `mtp_lm`, 3000 steps of 64 rows, peak rate 3e-3, seed 0.
    pub fn new(kind: ModelKind) -> TokenTrainConfig {
        TokenTrainConfig {
            kind,
            steps: 3000,
            seed: 0,
            batch: 64,
            lr: 3e-3,
            d_model: 32,
            layers: 2,
            attention_heads: 2,
            max_len: 8,
            heads: 2,
        }
    }

    /// The manifest of the model this configuration trains (poker's vocabulary and tokenizer).
    pub fn manifest(&self) -> TransformerManifest {
        TransformerManifest {
            kind: self.kind,
            vocab: poker::WORDS.len(),
            d_model: self.d_model,
            layers: self.layers,
            attention_heads: self.attention_heads,
            max_len: self.max_len,
            heads: match self.kind {
                ModelKind::MtpLm => self.heads,
                ModelKind::CausalLm => 1,
                _ => 0,
            },
            mask_id: Some(poker::MASK),
            eos_id: poker::EOS,
            tokenizer: Some(POKER_TOKENIZER.into()),
        }
    }
}

/// The file name of the poker tokenizer, beside the checkpoints.
pub const POKER_TOKENIZER: &str = "tokenizer.json";

/// One optimizer step's numbers, for progress reports.
#[derive(Clone, Copy, Debug)]
pub struct TokenProgress {
    /// The step just taken, from 1.
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    pub lr: f64,
    /// Seconds since training started.
    pub seconds: f64,
}

/// What a training run measured.
#[derive(Clone, Debug, Default)]
pub struct TokenTrainReport {
    /// The loss of every step.
    pub losses: Vec<f32>,
    pub seconds: f64,
}

impl TokenTrainReport {
    /// The mean loss over the last tenth of the steps.
    pub fn final_loss(&self) -> f32 {
        let tail = (self.losses.len() / 10).max(1).min(self.losses.len());
        if tail == 0 {
            return f32::NAN;
        }
        self.losses[self.losses.len() - tail..].iter().sum::<f32>() / tail as f32
    }
}

/// Philox sites of the training's random numbers.
const SITE_INIT: u32 = 1;
const SITE_HAND: u32 = 2;
const SITE_TIME: u32 = 3;
const SITE_MASK: u32 = 4;
const SITE_PICK: u32 = 5;

/// The hand a uniform draw `u` in [0, 1) picks, by cumulative probability.
fn pick_hand(hands: &[(u32, u32, f64)], u: f64) -> (u32, u32) {
    let mut total = 0.0;
    for &(first, second, p) in hands {
        total += p;
        if u < total {
            return (first, second);
        }
    }
    // Rounding left u above the last cumulative sum: the last hand.
    hands.last().map_or((poker::EOS, poker::EOS), |h| (h.0, h.1))
}

/// The initial value of tensor number `index` called `name`: LayerNorm scales 1, biases 0, every
/// other weight N(0, 0.02²) from Philox.
fn initial(seed: u64, index: usize, name: &str, shape: &[usize]) -> Vec<f32> {
    let count = shape.iter().product::<usize>();
    let leaf = name.rsplit('.').nth(1).unwrap_or("");
    if name.ends_with(".bias") {
        vec![0.0; count]
    } else if leaf.starts_with("ln") {
        vec![1.0; count]
    } else {
        (0..count).map(|k| 0.02 * philox::gaussian(seed, SITE_INIT, index as u32, 0, k as u32)).collect()
    }
}

/// `−Σ w log softmax(logits)[target] / Σ w` over the rows of `logits` `[N, vocab]`.
fn weighted_cross_entropy(logits: &CTensor, targets: &[u32], weights: &[f32]) -> candle_core::Result<CTensor> {
    let n = targets.len();
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_p.gather(&CTensor::from_slice(targets, (n, 1), &Device::Cpu)?, 1)?.squeeze(1)?;
    let w = CTensor::from_slice(weights, n, &Device::Cpu)?;
    let total = f64::from(weights.iter().sum::<f32>().max(1.0));
    (picked * w)?.sum_all()? * (-1.0 / total)
}

/// Trains a transformer of `config.kind` on the poker hands, on the CPU, deterministically for a
/// seed; `progress` sees every step.
///
/// Each row is a hand `[w1, w2, eos]` drawn from [`poker::HANDS`]. Objectives:
///
/// - `causal_lm`: next-token cross-entropy at the 3 positions of the input `[eos, w1, w2]`;
/// - `masked_lm` (MDLM-style): t ~ U(0, 1), each of the 3 positions masked with probability t (at
///   least one: when none is, one uniformly chosen), cross-entropy on the masked positions;
/// - `mtp_lm`: head 0 as `causal_lm`, head i the token i places further (where the row has one),
///   each head's cross-entropy averaged over its targets, summed over the heads.
pub fn train_poker(
    config: &TokenTrainConfig,
    progress: &mut dyn FnMut(&TokenProgress),
) -> Result<(TransformerModel, TokenTrainReport), TokenTrainError> {
    let manifest = config.manifest();
    // The manifest's own checks (sizes, heads, ids) validate the configuration.
    TransformerManifest::from_table(&manifest.to_table(), "the configuration", true)
        .map_err(|e| TokenTrainError::Config(e.to_string()))?;
    if config.max_len < 3 || config.batch == 0 {
        return Err(TokenTrainError::Config("poker rows need max_len ≥ 3 and a batch of at least one row".into()));
    }
    let mut vars = Vec::new();
    let network = Network::build(&manifest, |name, shape| {
        let var = Var::from_vec(initial(config.seed, vars.len(), name, shape), shape, &Device::Cpu)?;
        let tensor = var.as_tensor().clone();
        vars.push(var);
        Ok::<_, candle_core::Error>(tensor)
    })?;
    let params = candle_nn::ParamsAdamW { lr: config.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let mut optimizer = candle_nn::AdamW::new(vars, params)?;
    let hands = poker::hand_ids();
    let (kind, batch, seed) = (config.kind, config.batch, config.seed);
    let warmup = (config.steps / 20).max(1);
    let start = Instant::now();
    let mut report = TokenTrainReport::default();
    for step in 0..config.steps {
        let lr = if step < warmup {
            config.lr * (step + 1) as f64 / warmup as f64
        } else {
            let progress = (step - warmup) as f64 / (config.steps - warmup).max(1) as f64;
            config.lr * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
        };
        optimizer.set_learning_rate(lr);
        let uniform = |site: u32, row: usize, index: usize| {
            f64::from(philox::uniform(seed, site, step as u32, row as u32, index as u32))
        };
        let rows: Vec<[u32; 3]> = (0..batch)
            .map(|r| {
                let (first, second) = pick_hand(&hands, uniform(SITE_HAND, r, 0));
                [first, second, poker::EOS]
            })
            .collect();
        let loss = match kind {
            ModelKind::MaskedLm => {
                let mut input = Vec::with_capacity(3 * batch);
                let mut weights = Vec::with_capacity(3 * batch);
                for (r, row) in rows.iter().enumerate() {
                    let t = uniform(SITE_TIME, r, 0);
                    let mut masked: Vec<bool> = (0..3).map(|j| uniform(SITE_MASK, r, j) < t).collect();
                    if !masked.contains(&true) {
                        masked[((uniform(SITE_PICK, r, 0) * 3.0) as usize).min(2)] = true;
                    }
                    for (j, &m) in masked.iter().enumerate() {
                        input.push(if m { poker::MASK } else { row[j] });
                        weights.push(if m { 1.0 } else { 0.0 });
                    }
                }
                let targets: Vec<u32> = rows.iter().flatten().copied().collect();
                let ids = CTensor::from_vec(input, (batch, 3), &Device::Cpu)?;
                let logits = network.logits(&network.hidden(&ids, false)?, 0)?.reshape((3 * batch, manifest.vocab))?;
                weighted_cross_entropy(&logits, &targets, &weights)?
            }
            _ => {
                let input: Vec<u32> = rows.iter().flat_map(|row| [poker::EOS, row[0], row[1]]).collect();
                let ids = CTensor::from_vec(input, (batch, 3), &Device::Cpu)?;
                let hidden = network.hidden(&ids, true)?;
                let mut total: Option<CTensor> = None;
                for head in 0..manifest.heads {
                    // Output j predicts row[j + head], where the row has it.
                    let mut targets = Vec::with_capacity(3 * batch);
                    let mut weights = Vec::with_capacity(3 * batch);
                    for row in &rows {
                        for j in 0..3 {
                            let target = row.get(j + head);
                            targets.push(target.copied().unwrap_or(poker::EOS));
                            weights.push(if target.is_some() { 1.0 } else { 0.0 });
                        }
                    }
                    let logits = network.logits(&hidden, head)?.reshape((3 * batch, manifest.vocab))?;
                    let loss = weighted_cross_entropy(&logits, &targets, &weights)?;
                    total = Some(match total {
                        None => loss,
                        Some(sum) => (sum + loss)?,
                    });
                }
                total.ok_or_else(|| TokenTrainError::Config("the model has no heads".into()))?
            }
        };
        optimizer.backward_step(&loss)?;
        let value = loss.to_scalar::<f32>()?;
        report.losses.push(value);
        progress(&TokenProgress {
            step: step + 1,
            steps: config.steps,
            loss: value,
            lr,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    report.seconds = start.elapsed().as_secs_f64();
    // The trained tensors, detached from the optimizer's variables.
    let mut trained = network.named().iter().map(|(_, t)| t.detach());
    let network = Network::build(&manifest, |name, _| {
        trained.next().ok_or_else(|| TokenTrainError::Config(format!("the trained network lost `{name}`")))
    })?;
    let words = poker::WORDS.iter().map(|w| (*w).to_string()).collect();
    let source = format!("poker {} (trained in memory)", kind.name());
    Ok((TransformerModel::new(manifest, network, Some(words), None, source), report))
}

/// Writes a trained poker model into `dir`: `<kind>.safetensors`, its manifest `<kind>.toml`, and
/// the poker vocabulary's `tokenizer.json`; returns the checkpoint's path.
pub fn save_poker(model: &TransformerModel, dir: &Path) -> Result<PathBuf, LoadError> {
    std::fs::create_dir_all(dir).map_err(|source| LoadError::Io { path: dir.into(), source })?;
    write_word_level_tokenizer(&dir.join(POKER_TOKENIZER), poker::WORDS, &[poker::EOS, poker::MASK])?;
    let path = dir.join(format!("{}.safetensors", model.manifest().kind.name()));
    model.save(&path)?;
    Ok(path)
}
