//! Training programs for the built-in MLP: real checkpoints of six model kinds on the 2-D data
//! sets of [`crate::datasets`], on the CPU, bit-for-bit deterministic for a seed.
//!
//! The network is exactly the one [`MlpModel`] evaluates (docs/models.md,
//! "Checkpoints"): `concat(x, temb(τ), temb(τ₂) for two-time kinds)` → `l1` → SiLU → `l2` → SiLU →
//! `l3`, with the time features computed in f64 and rounded to f32 as the runtime computes them,
//! so a trained [`Mlp`] and the checkpoint it writes give the same outputs (tested to 1e-5
//! through `load_model`). Candle multiplies the matrices; the rest of the forward pass, the
//! backward pass (written out: three layers, SiLU) and AdamW run on the host. This is about
//! twice as fast as candle's autograd on these small matrices, which spent half its time
//! allocating, and it makes the Jacobian-vector product MeanFlow needs a few lines.
//!
//! The objectives, in sched's time (t = 1 noise, t = 0 data, `x_t = α(t) x0 + σ(t) ε`), all a
//! mean squared error over the minibatch's rows and coordinates:
//!
//! - `velocity`: flow matching on `rectified_flow`: x_t = (1 − t) x0 + t ε, t ~ U[0, 1), target
//!   dx/dt = ε − x0.
//! - `eps`: ε-prediction on the discrete cosine schedule (`squaredcos_cap_v2`, N = 1000, time
//!   input the fractional index t N − 1): t ~ U[1/N, 1), so the index covers [0, N − 1); α and σ
//!   are the interpolant's (the table's at whole indices, κ interpolated between them); target ε.
//! - `flow_map`: distillation from a `velocity` teacher by flow-map matching: a pool of pairs
//!   (x_t, t, s) with x_t from the interpolant, t ~ U(0, 1], s ~ U[0, t) (a quarter of them
//!   s = t), and the teacher's ODE solution X_{t→s}(x_t) by ⌈64 (t − s)⌉ + 1 Heun steps; the
//!   network's average velocity u regresses on (X_{t→s}(x_t) − x_t)/(s − t), and on the teacher's
//!   velocity where s = t; minibatches are drawn from the pool. (Lagrangian or Eulerian
//!   self-distillation needs the network's derivative in time through autodiff's forward mode,
//!   which candle lacks; regression on teacher trajectories is the direct flow-map-matching
//!   objective and needs none.)
//! - `mean_flow`: MeanFlow (Geng et al. 2025): u(z_t, t, s) regresses on the stop-gradient target
//!   v − (t − s) du/dt, with v = ε − x0, t ~ U(0, 1], s ~ U[0, t) (half the rows s = t: flow
//!   matching), and du/dt the total derivative along (v, 1, 0) in (z, t, s) (the gap input
//!   t − s moves with t). The derivative is the exact Jacobian-vector product of the MLP,
//!   propagated forward through its layers (no finite difference). Two stabilizers: the paper's
//!   adaptive weight 1/(‖Δ‖² + 10⁻³) per row, and a decoupled penalty on the time derivative:
//!   after each step the first layer's weights on a time feature of frequency ω = 2^k π shrink by
//!   1 − lr λ ω² (λ = 10⁻²). Without it the features' top frequency 2^7 π ≈ 402 made du/dt grow
//!   to ~50 and the loss to 10⁵ within a few thousand steps: the target feeds the network's own
//!   time derivative back to it.
//! - `shortcut`: shortcut models (Frans et al. 2024) with the gap d = t − s as second time: three
//!   quarters of the rows flow matching at d = 0, a quarter self-consistency rows: d = 2^−k with
//!   k uniform in 1..=7, t = j d for j uniform in 2..=1/d, and the target of a step of 2d the mean
//!   of two d-steps of the model itself (stop-gradient): u₁ = u(x_t, t, d), u₂ = u(x_t − d u₁,
//!   t − d, d). Steps of the smallest d = 1/128 query the model at d = 0, its flow velocity.
//! - `consistency`: consistency distillation by trajectory regression (knowledge distillation)
//!   from the same `velocity` teacher, on `ve` (σ_max = 80) with EDM preconditioning (σ_d = 0.5):
//!   κ log-uniform on [0.002, 80] (EDM's log-normal puts little mass near 80, where sampling
//!   starts), the VE state x0 + κ ε is the rectified-flow state x_VE / (1 + κ) at
//!   t = κ / (1 + κ), the target the teacher's ODE endpoint at t = 0 from there, and the loss is
//!   on the preconditioned output D = c_skip x + c_out F(c_in x, τ), unweighted.
//!
//! Teacher pairs whose ODE solution left the box ±10 (the teacher extrapolating from a rare start
//! such as a 6σ noise draw; 2 of 65536 on the checkerboard) are dropped from the pool.
//!
//! Every random number (weights, data, noise, times, minibatch picks) comes from sched's
//! counter-based stream ([`sched_kernels::philox`]), never from candle's global generator.
//! Initialization: uniform in ±1/√fan_in (PyTorch's default), except in the first layer: its
//! columns of the sample scaled by 10 (higher-frequency random features in x: the spirals'
//! arms, 0.5 apart, came out visibly sharper), and its column of a time feature of frequency
//! 2^k π scaled by 2^−k. Optimization: AdamW (β = 0.9, 0.999,
//! ε = 10⁻⁸, weight decay 10⁻⁴), linear warm-up to the peak rate ([`TrainConfig::default_lr`])
//! over 200 steps, then a cosine decay to 1 % of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor as CTensor};
use sched_kernels::philox;
use sched_lang::types::ModelKind;

use sched_models::checkpoint::write_safetensors;
use sched_models::error::LoadError;
use sched_models::mlp::MlpModel;
use sched_models::mlp::manifest::{CONSISTENCY_KAPPA_MIN, Manifest, Preconditioning, TimeInput};
use sched_models::mlp::network::time_embedding;
use sched_runtime::interpolant::{BetaSchedule, DiscreteVp, Interpolant};

use crate::datasets::Dataset;

/// The kinds this module trains, in the order `--all` trains them (teachers first).
pub const KINDS: [ModelKind; 6] = [
    ModelKind::Velocity,
    ModelKind::Eps,
    ModelKind::FlowMap,
    ModelKind::MeanFlow,
    ModelKind::Shortcut,
    ModelKind::Consistency,
];

/// The tensor names of the network, in the order of [`Mlp::tensors`].
const NAMES: [&str; 6] = ["l1.weight", "l1.bias", "l2.weight", "l2.bias", "l3.weight", "l3.bias"];

/// The training table size of the `eps` model's discrete schedule.
const EPS_TRAIN_STEPS: usize = 1000;
/// σ_max of the consistency model's `ve` interpolant.
const SIGMA_MAX: f64 = 80.0;
/// σ_d of the consistency model's EDM preconditioning.
const SIGMA_DATA: f64 = 0.5;
/// How much wider than ±1/√fan_in the first layer's weights on the sample start: random
/// features of higher frequency in x, which the data sets' fine structure needs (measured: the
/// spirals' velocity model puts 79 % of its samples within 0.15 of an arm after 20k steps with
/// 10, 71 % with 1; the checkerboard's 85 % on dark squares after 5k steps, against 83 %).
const SAMPLE_INIT_SCALE: f32 = 10.0;
/// The shortcut levels: self-consistency steps 2d with d = 2^−k for k in 1..=7; the half steps
/// of the finest, d = 1/128, query the model at d = 0 (its flow velocity).
const SHORTCUT_LEVELS: u32 = 7;
/// Heun steps per unit of time of the teacher's ODE solutions.
const TEACHER_STEPS_PER_UNIT: f64 = 64.0;
/// The share of rows with s = t in the flow map's pool and the MeanFlow batches.
const FLOW_MAP_DIAGONAL: f32 = 0.25;
const MEAN_FLOW_DIAGONAL: f64 = 0.5;
/// The c of MeanFlow's adaptive loss weight 1/(‖Δ‖² + c).
const MEAN_FLOW_ADAPTIVE_C: f32 = 1e-3;
/// λ of MeanFlow's penalty on the time derivative (see [`Mlp::smooth_in_time`]).
const MEAN_FLOW_SMOOTHNESS: f64 = 1e-2;
/// The share of flow-matching rows (d = 0) in a shortcut batch.
const SHORTCUT_FLOW_MATCHING: f64 = 0.75;

// The sites of sched's random stream, one per use (the Philox counter's `site` word).
const SITE_INIT: u32 = 100;
const SITE_TIME: u32 = 1;
const SITE_SECOND: u32 = 2;
const SITE_BRANCH: u32 = 3;
const SITE_NOISE: u32 = 4;
const SITE_PICK: u32 = 5;
const SITE_LEVEL: u32 = 6;
const SITE_POOL_TIME: u32 = 11;
const SITE_POOL_SECOND: u32 = 12;
const SITE_POOL_BRANCH: u32 = 13;
const SITE_POOL_NOISE: u32 = 14;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}")]
    Config(String),
    #[error("training diverged: the loss is {loss} at step {step}")]
    Diverged { step: usize, loss: f32 },
}

/// Whether `kind` is trained by distillation from a `velocity` teacher (`flow_map`,
/// `consistency`).
pub fn needs_teacher(kind: ModelKind) -> bool {
    matches!(kind, ModelKind::FlowMap | ModelKind::Consistency)
}

/// The manifest a trained `kind` model gets: unconditional, `sample_shape = [2]`,
/// `time_features` frequencies, and the interpolant and time input of its objective.
pub fn manifest(kind: ModelKind, time_features: usize) -> Result<Manifest, TrainError> {
    let (interpolant, time_input, preconditioning) = match kind {
        ModelKind::Velocity | ModelKind::FlowMap | ModelKind::MeanFlow | ModelKind::Shortcut => {
            (Interpolant::RectifiedFlow, TimeInput::T, None)
        }
        ModelKind::Eps => (
            Interpolant::Discrete(DiscreteVp::new(BetaSchedule::SquaredCosCapV2, EPS_TRAIN_STEPS)),
            TimeInput::Index,
            None,
        ),
        ModelKind::Consistency => (
            Interpolant::Ve { sigma_max: SIGMA_MAX },
            TimeInput::EdmLogSigma,
            Some(Preconditioning::Edm { sigma_data: SIGMA_DATA }),
        ),
        other => {
            return Err(TrainError::Config(format!(
                "no training program for the kind `{}` (these are: {})",
                other.name(),
                KINDS.map(ModelKind::name).join(", ")
            )));
        }
    };
    Ok(Manifest { kind, interpolant, time_input, preconditioning, sample_shape: vec![2], time_features, classes: 0 })
}

/// What one training run does.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub kind: ModelKind,
    pub dataset: Dataset,
    /// Optimizer steps.
    pub steps: usize,
    /// Rows per minibatch.
    pub batch: usize,
    /// Units of both hidden layers.
    pub hidden: usize,
    /// F, the sinusoidal frequencies of each time input.
    pub time_features: usize,
    /// The peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up to the peak rate (a cosine decay to 1 % of it follows).
    pub warmup: usize,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// The seed of every random number of the run.
    pub seed: u64,
    /// Teacher pairs precomputed for the distilled kinds (`flow_map`, `consistency`).
    pub pool: usize,
}

impl TrainConfig {
    /// The settings of the shipped checkpoints: width 128, F = 8, batch 512, seed 0, 200
    /// warm-up steps, and per kind the steps, peak rate and pool of [`TrainConfig::default_steps`],
    /// [`TrainConfig::default_lr`] and [`TrainConfig::default_pool`].
    pub fn new(kind: ModelKind, dataset: Dataset) -> TrainConfig {
        TrainConfig {
            kind,
            dataset,
            steps: TrainConfig::default_steps(kind),
            batch: 512,
            hidden: 128,
            time_features: 8,
            lr: TrainConfig::default_lr(kind),
            warmup: 200,
            weight_decay: 1e-4,
            seed: 0,
            pool: TrainConfig::default_pool(kind),
        }
    }

    /// The steps of the shipped checkpoints for `kind`: about a minute each on one core of the
    /// machine they were trained on, teacher pairs included.
    pub fn default_steps(kind: ModelKind) -> usize {
        match kind {
            ModelKind::Velocity | ModelKind::Eps => 20_000,
            ModelKind::MeanFlow => 12_000,
            _ => 14_000,
        }
    }

    /// The peak learning rate for `kind`: 2e-2 where the target does not depend on the network
    /// (measured: the checkerboard's velocity model lands 66 % of its samples on dark squares
    /// after 20k steps at 1e-3, 88 % at 2e-2); 1e-2 for the kinds whose targets are the
    /// network's own outputs (MeanFlow, shortcut) and for the consistency model, which
    /// diverged at 2e-2.
    pub fn default_lr(kind: ModelKind) -> f64 {
        match kind {
            ModelKind::MeanFlow | ModelKind::Shortcut | ModelKind::Consistency => 1e-2,
            _ => 2e-2,
        }
    }

    /// The teacher pairs precomputed for a distilled kind: 2^17 for the flow map, 2^16 for the
    /// consistency model (whose pairs each cost a solve to t = 0, twice the flow map's mean).
    pub fn default_pool(kind: ModelKind) -> usize {
        match kind {
            ModelKind::Consistency => 1 << 16,
            _ => 1 << 17,
        }
    }

    fn check(&self) -> Result<(), TrainError> {
        let bad = |what: &str| Err(TrainError::Config(what.to_string()));
        if self.steps == 0 || self.steps > u32::MAX as usize {
            return bad("the number of steps must be at least 1 (and fit in 32 bits)");
        }
        if self.batch < 4 || self.batch > u32::MAX as usize {
            return bad("the batch must have at least 4 rows");
        }
        if self.hidden == 0 {
            return bad("the hidden width must be at least 1");
        }
        if self.time_features == 0 || self.time_features > 64 {
            return bad("time_features must be in 1..=64");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("the learning rate must be positive");
        }
        if needs_teacher(self.kind) && (self.pool == 0 || self.pool > u32::MAX as usize) {
            return bad("a distilled kind needs a pool of at least one teacher pair");
        }
        Ok(())
    }

    /// The learning rate of step `step` (0-based).
    pub fn learning_rate(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps - self.warmup.min(self.steps)).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        let floor = 0.01;
        self.lr * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
    }
}

/// One line of progress, after each step.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Steps done.
    pub step: usize,
    pub steps: usize,
    /// This step's minibatch loss.
    pub loss: f32,
    pub lr: f64,
    /// Seconds since the run started (teacher pool included).
    pub seconds: f64,
}

/// What a training run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// The minibatch loss of every step.
    pub losses: Vec<f32>,
    /// Seconds of the whole run.
    pub seconds: f64,
    /// Seconds spent precomputing teacher pairs (distilled kinds; 0 otherwise).
    pub pool_seconds: f64,
    /// Teacher pairs dropped because the teacher's ODE solution diverged (see the pool).
    pub dropped_pairs: usize,
}

impl Report {
    /// The mean minibatch loss over the last tenth of the steps (at least one, at most 500).
    pub fn final_loss(&self) -> f32 {
        let n = (self.losses.len() / 10).clamp(1, 500).min(self.losses.len());
        let tail = &self.losses[self.losses.len() - n..];
        tail.iter().sum::<f32>() / n.max(1) as f32
    }
}

/// The built-in MLP during training: its manifest and weights, row-major on the host (candle
/// multiplies the matrices; the elementwise work, the gradients' sums and AdamW run on the host,
/// without allocating a gradient graph).
pub struct Mlp {
    manifest: Manifest,
    /// `l1.weight` `[h1, in]`, `l1.bias`, `l2.weight` `[h2, h1]`, `l2.bias`, `l3.weight`
    /// `[n, h2]`, `l3.bias`.
    params: [Vec<f32>; 6],
    /// The three weight matrices as candle tensors, rebuilt after each update.
    weights: [CTensor; 3],
}

/// The activations of one forward pass, kept for the backward pass.
struct Forward {
    rows: usize,
    input: CTensor,
    /// Pre-activations (bias added) and their sigmoids, `[rows, h]`.
    a1: Vec<f32>,
    s1: Vec<f32>,
    h1: CTensor,
    a2: Vec<f32>,
    s2: Vec<f32>,
    h2: CTensor,
    out: Vec<f32>,
}

/// `x Wᵀ` for rows `x` `[r, in]` and a weight `[out, in]`, as a row-major `[r, out]` vector.
fn times_transposed(x: &CTensor, weight: &CTensor) -> candle_core::Result<Vec<f32>> {
    x.matmul(&weight.t()?)?.flatten_all()?.to_vec1::<f32>()
}

/// Adds `bias` to every row of `a` (row-major, rows of `bias.len()`).
fn add_bias(a: &mut [f32], bias: &[f32]) {
    for row in a.chunks_exact_mut(bias.len()) {
        for (value, b) in row.iter_mut().zip(bias) {
            *value += b;
        }
    }
}

/// The sigmoid of each pre-activation and SiLU(a) = a σ(a), as candle's `silu` computes it
/// (`a / (1 + exp(−a))`).
fn silu(a: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut sigmoid = Vec::with_capacity(a.len());
    let mut h = Vec::with_capacity(a.len());
    for &v in a {
        let denominator = 1.0 + (-v).exp();
        sigmoid.push(1.0 / denominator);
        h.push(v / denominator);
    }
    (sigmoid, h)
}

/// `g ⊙ silu'(a)` with silu'(a) = σ(a) (1 + a (1 − σ(a))).
fn silu_backward(g: &mut [f32], a: &[f32], sigmoid: &[f32]) {
    for ((g, &a), &s) in g.iter_mut().zip(a).zip(sigmoid) {
        *g *= s * (1.0 + a * (1.0 - s));
    }
}

/// The column sums of a row-major `[rows, width]` matrix.
fn column_sums(values: &[f32], width: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; width];
    for row in values.chunks_exact(width) {
        for (sum, v) in sums.iter_mut().zip(row) {
            *sum += v;
        }
    }
    sums
}

impl Mlp {
    fn new(manifest: Manifest, params: [Vec<f32>; 6]) -> Result<Mlp, TrainError> {
        let input = manifest.sample_len() + manifest.time_len();
        let (h1, h2, n) = (params[1].len(), params[3].len(), params[5].len());
        let shapes = [(h1, input), (h2, h1), (n, h2)];
        for (i, &(rows, cols)) in shapes.iter().enumerate() {
            if params[2 * i].len() != rows * cols || rows == 0 || n != manifest.sample_len() {
                return Err(TrainError::Config(format!(
                    "{}: {} values do not make a [{rows}, {cols}] matrix",
                    NAMES[2 * i],
                    params[2 * i].len()
                )));
            }
        }
        let weights = [0, 1, 2].map(|i| CTensor::from_slice(&params[2 * i], shapes[i], &Device::Cpu));
        let [w1, w2, w3] = weights;
        Ok(Mlp { manifest, params, weights: [w1?, w2?, w3?] })
    }

    /// A freshly initialized network for `manifest` with two hidden layers of `hidden` units:
    /// weights and biases uniform in ±1/√fan_in (PyTorch's default), from sched's random stream.
    pub fn init(manifest: Manifest, hidden: usize, seed: u64) -> Result<Mlp, TrainError> {
        if manifest.classes > 0 {
            return Err(TrainError::Config("class-conditional training is not supported".into()));
        }
        if hidden == 0 {
            return Err(TrainError::Config("the hidden width must be at least 1".into()));
        }
        let sample = manifest.sample_len();
        let input = sample + manifest.time_len();
        let output = sample;
        let mut params: [Vec<f32>; 6] = Default::default();
        for (layer, (fan_in, fan_out)) in [(input, hidden), (hidden, hidden), (hidden, output)].into_iter().enumerate()
        {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let draw = |tensor: usize, row: usize, col: usize| {
                let u = f64::from(philox::uniform(seed, SITE_INIT, tensor as u32, row as u32, col as u32));
                ((2.0 * u - 1.0) * bound) as f32
            };
            // The first layer's columns of the sample start SAMPLE_INIT_SCALE times wider, and
            // its column of the time feature of frequency 2^k π 2^k times narrower, so the
            // initial network varies quickly in x and slowly in t (its derivative in t, which
            // MeanFlow's target contains, starts small instead of near 2^F).
            let column_scale = |col: usize| {
                if layer > 0 {
                    return 1.0;
                }
                if col < sample {
                    return SAMPLE_INIT_SCALE;
                }
                let k = (col - sample) % manifest.time_features;
                0.5f32.powi(k as i32)
            };
            params[2 * layer] = (0..fan_out * fan_in)
                .map(|i| draw(2 * layer, i / fan_in, i % fan_in) * column_scale(i % fan_in))
                .collect();
            params[2 * layer + 1] = (0..fan_out).map(|r| draw(2 * layer + 1, r, 0)).collect();
        }
        Mlp::new(manifest, params)
    }

    /// Loads a checkpoint (its manifest checked by [`MlpModel::load`]) for evaluation or as a
    /// teacher. Class-conditional checkpoints are refused.
    pub fn load(path: &Path) -> Result<Mlp, TrainError> {
        let manifest = MlpModel::load(path)?.manifest().clone();
        if manifest.classes > 0 {
            return Err(TrainError::Config(format!(
                "{}: class-conditional checkpoints are not supported",
                path.display()
            )));
        }
        let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let mut params: [Vec<f32>; 6] = Default::default();
        for (param, name) in params.iter_mut().zip(NAMES) {
            let tensor = tensors
                .remove(name)
                .ok_or_else(|| TrainError::Config(format!("{}: no tensor `{name}`", path.display())))?;
            *param = tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        }
        Mlp::new(manifest, params)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The width of the first hidden layer.
    pub fn hidden(&self) -> usize {
        self.params[1].len()
    }

    /// The tensors as [`write_safetensors`] takes them: (name, shape, values).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let (h1, h2, n) = (self.params[1].len(), self.params[3].len(), self.params[5].len());
        let shapes = [vec![h1, self.input_len()], vec![h1], vec![h2, h1], vec![h2], vec![n, h2], vec![n]];
        NAMES
            .iter()
            .zip(shapes)
            .zip(&self.params)
            .map(|((name, shape), p)| (name.to_string(), shape, p.clone()))
            .collect()
    }

    /// Writes the checkpoint `path` (the manifest also in its `__metadata__`, with the entries of
    /// `notes` beside it) and its manifest `NAME.toml`; returns the manifest's path.
    pub fn save(&self, path: &Path, notes: &[(&str, String)]) -> Result<PathBuf, TrainError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LoadError::Io { path: dir.into(), source })?;
        }
        let mut metadata: HashMap<String, String> = self.manifest.to_metadata();
        metadata.extend(notes.iter().map(|(k, v)| (k.to_string(), v.clone())));
        write_safetensors(path, &self.tensors(), Some(metadata))?;
        let toml_path = path.with_extension("toml");
        std::fs::write(&toml_path, self.manifest.to_table().to_string())
            .map_err(|source| LoadError::Io { path: toml_path.clone(), source })?;
        Ok(toml_path)
    }

    /// The length of a network input row: the sample and the time features.
    fn input_len(&self) -> usize {
        self.manifest.sample_len() + self.manifest.time_len()
    }

    /// The network F on input rows `[rows, in]` (sample, then conditioning), keeping what the
    /// backward pass needs.
    fn forward(&self, input: Vec<f32>, rows: usize) -> candle_core::Result<Forward> {
        let input = CTensor::from_vec(input, (rows, self.input_len()), &Device::Cpu)?;
        let (h1, h2) = (self.params[1].len(), self.params[3].len());
        let mut a1 = times_transposed(&input, &self.weights[0])?;
        add_bias(&mut a1, &self.params[1]);
        let (s1, h) = silu(&a1);
        let h1 = CTensor::from_vec(h, (rows, h1), &Device::Cpu)?;
        let mut a2 = times_transposed(&h1, &self.weights[1])?;
        add_bias(&mut a2, &self.params[3]);
        let (s2, h) = silu(&a2);
        let h2 = CTensor::from_vec(h, (rows, h2), &Device::Cpu)?;
        let mut out = times_transposed(&h2, &self.weights[2])?;
        add_bias(&mut out, &self.params[5]);
        Ok(Forward { rows, input, a1, s1, h1, a2, s2, h2, out })
    }

    /// The gradients of the six tensors from the gradient `g_out` of the loss in the network's
    /// output.
    fn backward(&self, forward: &Forward, g_out: Vec<f32>) -> candle_core::Result<[Vec<f32>; 6]> {
        let rows = forward.rows;
        let (h1, h2, n) = (self.params[1].len(), self.params[3].len(), self.params[5].len());
        let db3 = column_sums(&g_out, n);
        let g = CTensor::from_vec(g_out, (rows, n), &Device::Cpu)?;
        let dw3 = g.t()?.matmul(&forward.h2)?.flatten_all()?.to_vec1::<f32>()?;
        let mut da2 = g.matmul(&self.weights[2])?.flatten_all()?.to_vec1::<f32>()?;
        silu_backward(&mut da2, &forward.a2, &forward.s2);
        let db2 = column_sums(&da2, h2);
        let da2 = CTensor::from_vec(da2, (rows, h2), &Device::Cpu)?;
        let dw2 = da2.t()?.matmul(&forward.h1)?.flatten_all()?.to_vec1::<f32>()?;
        let mut da1 = da2.matmul(&self.weights[1])?.flatten_all()?.to_vec1::<f32>()?;
        silu_backward(&mut da1, &forward.a1, &forward.s1);
        let db1 = column_sums(&da1, h1);
        let da1 = CTensor::from_vec(da1, (rows, h1), &Device::Cpu)?;
        let dw1 = da1.t()?.matmul(&forward.input)?.flatten_all()?.to_vec1::<f32>()?;
        Ok([dw1, db1, dw2, db2, dw3, db3])
    }

    /// The network's output and its Jacobian-vector product along the input tangent `tangent`
    /// (rows like `input`), by forward-mode propagation: for `h = silu(a)`, `ḣ = silu'(a) ȧ`.
    fn jvp(&self, input: Vec<f32>, tangent: Vec<f32>, rows: usize) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let forward = self.forward(input, rows)?;
        let (h1, h2) = (self.params[1].len(), self.params[3].len());
        let tangent = CTensor::from_vec(tangent, (rows, self.input_len()), &Device::Cpu)?;
        let mut d = times_transposed(&tangent, &self.weights[0])?;
        silu_backward(&mut d, &forward.a1, &forward.s1);
        let mut d = times_transposed(&CTensor::from_vec(d, (rows, h1), &Device::Cpu)?, &self.weights[1])?;
        silu_backward(&mut d, &forward.a2, &forward.s2);
        let d = times_transposed(&CTensor::from_vec(d, (rows, h2), &Device::Cpu)?, &self.weights[2])?;
        Ok((forward.out, d))
    }

    /// AdamW's update of the weights by `gradients`.
    fn update(&mut self, adam: &mut Adam, gradients: &[Vec<f32>; 6], lr: f64) -> candle_core::Result<()> {
        adam.step += 1;
        let correction1 = (1.0 - ADAM_BETA1.powi(adam.step)) as f32;
        let correction2 = (1.0 - ADAM_BETA2.powi(adam.step)) as f32;
        let decay = (1.0 - lr * adam.weight_decay) as f32;
        let (beta1, beta2, lr) = (ADAM_BETA1 as f32, ADAM_BETA2 as f32, lr as f32);
        for (i, (param, grad)) in self.params.iter_mut().zip(gradients).enumerate() {
            for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(adam.m[i].iter_mut()).zip(adam.v[i].iter_mut()) {
                *m = beta1 * *m + (1.0 - beta1) * g;
                *v = beta2 * *v + (1.0 - beta2) * g * g;
                let step = (*m / correction1) / ((*v / correction2).sqrt() + ADAM_EPS);
                *p = *p * decay - lr * step;
            }
        }
        for i in 0..3 {
            self.weights[i] = CTensor::from_slice(&self.params[2 * i], self.weights[i].dims(), &Device::Cpu)?;
        }
        Ok(())
    }

    /// Shrinks the first layer's weights on each time feature of frequency ω = 2^k π / R by
    /// the factor max(0, 1 − rate ω²): a decoupled penalty on the squared time derivative the
    /// features feed the network.
    fn smooth_in_time(&mut self, rate: f64) -> candle_core::Result<()> {
        let sample = self.manifest.sample_len();
        let features = self.manifest.time_features;
        let span = self.manifest.time_input.span(&self.manifest.interpolant);
        let width = self.input_len();
        for row in self.params[0].chunks_exact_mut(width) {
            for (j, value) in row[sample..].iter_mut().enumerate() {
                let omega = std::f64::consts::PI * 2f64.powi((j % features) as i32) / span;
                *value *= (1.0 - rate * omega * omega).max(0.0) as f32;
            }
        }
        self.weights[0] = CTensor::from_slice(&self.params[0], self.weights[0].dims(), &Device::Cpu)?;
        Ok(())
    }

    /// The fed time values (before division by the span) of a row at time `t` with the second
    /// time `s` of a two-time kind: τ₁ = time(t), τ₂ = time(s) for a flow map and gap(t − s)
    /// otherwise, as the runtime feeds them.
    fn fed(&self, t: f64, s: Option<f64>) -> (f64, Option<f64>) {
        let interpolant = &self.manifest.interpolant;
        let time_input = self.manifest.time_input;
        let second = s.map(|s| match self.manifest.kind {
            ModelKind::FlowMap => time_input.time(s, interpolant),
            _ => time_input.gap(t - s, interpolant),
        });
        (time_input.time(t, interpolant), second)
    }

    /// Input rows: each row of `x` followed by its conditioning, temb(τ₁/R) and for two-time
    /// kinds temb(τ₂/R).
    fn inputs(&self, x: &[f32], t: &[f64], s: Option<&[f64]>) -> Vec<f32> {
        let n = self.manifest.sample_len();
        let span = self.manifest.time_input.span(&self.manifest.interpolant);
        let features = self.manifest.time_features;
        let mut out = Vec::with_capacity(t.len() * self.input_len());
        for (i, &ti) in t.iter().enumerate() {
            out.extend_from_slice(&x[i * n..(i + 1) * n]);
            let (first, second) = self.fed(ti, s.map(|s| s[i]));
            time_embedding(first / span, features, &mut out);
            if let Some(second) = second {
                time_embedding(second / span, features, &mut out);
            }
        }
        out
    }

    /// The tangent rows of [`Mlp::inputs`] along (dx, dt = 1, ds = 0): `dx` then the features'
    /// derivatives in t. The time inputs are linear in t, with slopes time(1) − time(0) and
    /// gap(1) (0 for a flow map's s).
    fn input_tangents(&self, dx: &[f32], t: &[f64], s: &[f64]) -> Vec<f32> {
        let n = self.manifest.sample_len();
        let interpolant = &self.manifest.interpolant;
        let time_input = self.manifest.time_input;
        let span = time_input.span(interpolant);
        let first_slope = (time_input.time(1.0, interpolant) - time_input.time(0.0, interpolant)) / span;
        let second_slope =
            if self.manifest.kind == ModelKind::FlowMap { 0.0 } else { time_input.gap(1.0, interpolant) / span };
        let features = self.manifest.time_features;
        let mut out = Vec::with_capacity(t.len() * self.input_len());
        for (i, (&ti, &si)) in t.iter().zip(s).enumerate() {
            out.extend_from_slice(&dx[i * n..(i + 1) * n]);
            let (first, second) = self.fed(ti, self.manifest.kind.is_two_time().then_some(si));
            time_embedding_derivative(first / span, first_slope, features, &mut out);
            if let Some(second) = second {
                time_embedding_derivative(second / span, second_slope, features, &mut out);
            }
        }
        out
    }

    /// The model's output on rows `x` at per-row times: for a two-time kind the average
    /// velocity u(x, t, s), else the one-time output at t (with a preconditioning
    /// `c_skip x + c_out F(c_in x, τ)`, which is `c_skip x` where c_out = 0).
    fn output(&self, x: &[f32], t: &[f64], s: Option<&[f64]>) -> candle_core::Result<Vec<f32>> {
        let Some(preconditioning) = self.manifest.preconditioning else {
            return Ok(self.forward(self.inputs(x, t, s), t.len())?.out);
        };
        let n = self.manifest.sample_len();
        let scalings: Vec<_> = t
            .iter()
            .map(|&ti| preconditioning.scalings(self.manifest.kind, self.manifest.interpolant.kappa(ti)))
            .collect();
        let scaled: Vec<f32> =
            x.iter().enumerate().map(|(j, &v)| (scalings[j / n].c_in * f64::from(v)) as f32).collect();
        // Rows that skip the network are fed a finite time (their F is multiplied by 0).
        let fed_t: Vec<f64> = t.iter().zip(&scalings).map(|(&ti, c)| if c.c_out == 0.0 { 1.0 } else { ti }).collect();
        let network = self.forward(self.inputs(&scaled, &fed_t, None), t.len())?.out;
        Ok(x.iter()
            .zip(&network)
            .enumerate()
            .map(|(j, (&xv, &fv))| {
                let c = scalings[j / n];
                (c.c_skip * f64::from(xv) + c.c_out * f64::from(fv)) as f32
            })
            .collect())
    }

    /// [`Model::field`](sched_runtime::model::Model::field) of the checkpoint this network writes, with a time per row:
    /// the one-time output at `t`, or a two-time model's velocity u(x, t, t). `x` is `[rows, n]`
    /// row-major.
    pub fn field(&self, x: &[f32], t: &[f64]) -> Result<Vec<f32>, TrainError> {
        self.check_rows(x, t.len())?;
        let s = self.manifest.kind.is_two_time().then_some(t);
        Ok(self.output(x, t, s)?)
    }

    /// [`Model::jump`](sched_runtime::model::Model::jump) of the checkpoint, with times per row: x + (s − t) u(x, t, s)
    /// for a two-time kind; a consistency model's x̂₀ (every s must be 0).
    pub fn jump(&self, x: &[f32], t: &[f64], s: &[f64]) -> Result<Vec<f32>, TrainError> {
        self.check_rows(x, t.len())?;
        if s.len() != t.len() {
            return Err(TrainError::Config("jump: t and s differ in length".into()));
        }
        match self.manifest.kind {
            ModelKind::Consistency if s.iter().all(|&s| s == 0.0) => Ok(self.output(x, t, None)?),
            kind if kind.is_two_time() => {
                let u = self.output(x, t, Some(s))?;
                let n = self.manifest.sample_len();
                Ok(x.iter().zip(&u).enumerate().map(|(j, (xv, uv))| xv + (s[j / n] - t[j / n]) as f32 * uv).collect())
            }
            kind => Err(TrainError::Config(format!("a `{}` model cannot jump there", kind.name()))),
        }
    }

    fn check_rows(&self, x: &[f32], rows: usize) -> Result<(), TrainError> {
        let n = self.manifest.sample_len();
        if x.len() != rows * n {
            return Err(TrainError::Config(format!("{} values are not {rows} rows of {n}", x.len())));
        }
        Ok(())
    }
}

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f32 = 1e-8;

/// AdamW's moments.
struct Adam {
    m: [Vec<f32>; 6],
    v: [Vec<f32>; 6],
    step: i32,
    weight_decay: f64,
}

impl Adam {
    fn new(mlp: &Mlp, weight_decay: f64) -> Adam {
        let zeros = || mlp.params.clone().map(|p| vec![0.0; p.len()]);
        Adam { m: zeros(), v: zeros(), step: 0, weight_decay }
    }
}

/// The derivative of [`time_embedding`] when τ moves at rate `slope`.
fn time_embedding_derivative(tau: f64, slope: f64, features: usize, out: &mut Vec<f32>) {
    let frequency = |k: usize| std::f64::consts::PI * 2f64.powi(k as i32);
    out.extend((0..features).map(|k| (frequency(k) * slope * (frequency(k) * tau).cos()) as f32));
    out.extend((0..features).map(|k| (-frequency(k) * slope * (frequency(k) * tau).sin()) as f32));
}

/// SplitMix64 of `a` and `b`: the seed of a step's data.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The tag of the teacher pool's seed.
const POOL_TAG: u64 = u64::MAX;

/// Precomputed teacher pairs: start rows `x` at times `t` (and second times `s`), with the
/// regression target of each.
struct Pool {
    x: Vec<f32>,
    t: Vec<f64>,
    s: Vec<f64>,
    target: Vec<f32>,
}

/// The bound on a teacher endpoint's coordinates beyond which a pair is dropped: the data lie
/// within ±3 and the noise within ±6.8, and only a teacher's ODE solution that diverged (a rare
/// start far from anything it was trained on, such as a 6σ draw) leaves this box.
const TEACHER_BOUND: f32 = 10.0;

impl Pool {
    /// Keeps the rows whose teacher endpoint `end` (2 values a row) is finite and within
    /// [`TEACHER_BOUND`]; returns how many were dropped.
    fn keep_bounded(&mut self, end: &[f32]) -> usize {
        let keep: Vec<usize> = (0..self.t.len())
            .filter(|&i| end[2 * i..2 * i + 2].iter().all(|v| v.is_finite() && v.abs() <= TEACHER_BOUND))
            .collect();
        let dropped = self.t.len() - keep.len();
        let pairs = |v: &[f32]| keep.iter().flat_map(|&i| [v[2 * i], v[2 * i + 1]]).collect::<Vec<f32>>();
        *self = Pool {
            x: pairs(&self.x),
            t: keep.iter().map(|&i| self.t[i]).collect(),
            s: keep.iter().map(|&i| self.s[i]).collect(),
            target: pairs(&self.target),
        };
        dropped
    }
}

/// Solves the teacher's ODE dx/dt = v(x, t) from each row's `t` to its `s` by
/// ⌈64 |t − s|⌉ + 1 Heun steps; rows with the same number of steps are solved together.
fn solve_teacher(teacher: &Mlp, x: &[f32], t: &[f64], s: &[f64]) -> Result<Vec<f32>, TrainError> {
    let n = teacher.manifest.sample_len();
    let mut out = x.to_vec();
    let mut buckets: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (&ti, &si)) in t.iter().zip(s).enumerate() {
        if ti != si {
            let steps = (TEACHER_STEPS_PER_UNIT * (ti - si).abs()).ceil() as usize + 1;
            buckets.entry(steps).or_default().push(i);
        }
    }
    let mut keys: Vec<usize> = buckets.keys().copied().collect();
    keys.sort_unstable();
    const CHUNK: usize = 8192;
    for steps in keys {
        for rows in buckets[&steps].chunks(CHUNK) {
            let mut state: Vec<f32> = rows.iter().flat_map(|&i| x[i * n..(i + 1) * n].iter().copied()).collect();
            let at = |k: usize| -> Vec<f64> {
                rows.iter().map(|&i| t[i] + (s[i] - t[i]) * (k as f64 / steps as f64)).collect()
            };
            let h: Vec<f32> = rows.iter().map(|&i| ((s[i] - t[i]) / steps as f64) as f32).collect();
            for k in 0..steps {
                let (t0, t1) = (at(k), at(k + 1));
                let v0 = teacher.field(&state, &t0)?;
                let predicted: Vec<f32> =
                    state.iter().zip(&v0).enumerate().map(|(j, (xv, vv))| xv + h[j / n] * vv).collect();
                let v1 = teacher.field(&predicted, &t1)?;
                for (j, value) in state.iter_mut().enumerate() {
                    *value += 0.5 * h[j / n] * (v0[j] + v1[j]);
                }
            }
            for (r, &i) in rows.iter().enumerate() {
                out[i * n..(i + 1) * n].copy_from_slice(&state[r * n..(r + 1) * n]);
            }
        }
    }
    Ok(out)
}

/// Checks that `teacher` is a rectified-flow velocity model on 2-D samples.
fn check_teacher(teacher: &Mlp) -> Result<(), TrainError> {
    let manifest = &teacher.manifest;
    if manifest.kind != ModelKind::Velocity || manifest.interpolant != Interpolant::RectifiedFlow {
        return Err(TrainError::Config(format!(
            "the teacher must be a `velocity` model on `rectified_flow`, not a `{}` model on `{}`",
            manifest.kind.name(),
            manifest.interpolant.name()
        )));
    }
    if manifest.sample_shape != [2] {
        return Err(TrainError::Config("the teacher's samples must have shape [2]".into()));
    }
    Ok(())
}

/// The pool's data and noise: `size` data points and standard normal draws.
fn pool_draws(config: &TrainConfig, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let data = config.dataset.sample(config.pool, mix(config.seed, POOL_TAG)).data;
    let noise = (0..config.pool)
        .flat_map(|i| (0..2).map(move |d| philox::gaussian(seed, SITE_POOL_NOISE, 0, i as u32, d)))
        .collect();
    (data, noise)
}

/// The flow map's pool: x_t = (1 − t) x0 + t ε with t ~ U(0, 1], s = t for a quarter of the rows
/// and s ~ U[0, t) otherwise; targets (X_{t→s}(x_t) − x_t)/(s − t), or the teacher's velocity.
fn flow_map_pool(config: &TrainConfig, teacher: &Mlp) -> Result<(Pool, usize), TrainError> {
    let seed = config.seed;
    let (data, noise) = pool_draws(config, seed);
    let rows = config.pool;
    let mut t = Vec::with_capacity(rows);
    let mut s = Vec::with_capacity(rows);
    let mut x = Vec::with_capacity(2 * rows);
    for i in 0..rows {
        let u = |site| f64::from(philox::uniform(seed, site, 0, i as u32, 0));
        let ti = 1.0 - u(SITE_POOL_TIME);
        let si = if philox::uniform(seed, SITE_POOL_BRANCH, 0, i as u32, 0) < FLOW_MAP_DIAGONAL {
            ti
        } else {
            u(SITE_POOL_SECOND) * ti
        };
        for d in 0..2 {
            x.push(((1.0 - ti) * f64::from(data[2 * i + d]) + ti * f64::from(noise[2 * i + d])) as f32);
        }
        t.push(ti);
        s.push(si);
    }
    let end = solve_teacher(teacher, &x, &t, &s)?;
    let diagonal: Vec<usize> = (0..rows).filter(|&i| t[i] == s[i]).collect();
    let diagonal_x: Vec<f32> = diagonal.iter().flat_map(|&i| [x[2 * i], x[2 * i + 1]]).collect();
    let diagonal_t: Vec<f64> = diagonal.iter().map(|&i| t[i]).collect();
    let velocity = teacher.field(&diagonal_x, &diagonal_t)?;
    let mut target: Vec<f32> = (0..2 * rows)
        .map(|j| {
            let i = j / 2;
            if t[i] == s[i] { 0.0 } else { ((f64::from(end[j]) - f64::from(x[j])) / (s[i] - t[i])) as f32 }
        })
        .collect();
    for (k, &i) in diagonal.iter().enumerate() {
        target[2 * i..2 * i + 2].copy_from_slice(&velocity[2 * k..2 * k + 2]);
    }
    let mut pool = Pool { x, t, s, target };
    let dropped = pool.keep_bounded(&end);
    Ok((pool, dropped))
}

/// The consistency model's pool: κ log-uniform on [κ_min, σ_max], the VE state x0 + κ ε at
/// t = κ/σ_max, and the teacher's endpoint at 0 from the rectified-flow state x/(1 + κ) at
/// κ/(1 + κ).
fn consistency_pool(
    config: &TrainConfig,
    teacher: &Mlp,
    interpolant: &Interpolant,
) -> Result<(Pool, usize), TrainError> {
    let seed = config.seed;
    let (data, noise) = pool_draws(config, seed);
    let rows = config.pool;
    let (low, high) = (CONSISTENCY_KAPPA_MIN.ln(), SIGMA_MAX.ln());
    let mut t = Vec::with_capacity(rows);
    let mut x = Vec::with_capacity(2 * rows);
    let mut x_rf = Vec::with_capacity(2 * rows);
    let mut t_rf = Vec::with_capacity(rows);
    for i in 0..rows {
        let u = f64::from(philox::uniform(seed, SITE_POOL_TIME, 0, i as u32, 0));
        let ti = (low + u * (high - low)).exp() / SIGMA_MAX;
        let kappa = interpolant.kappa(ti);
        for d in 0..2 {
            let state = f64::from(data[2 * i + d]) + kappa * f64::from(noise[2 * i + d]);
            x.push(state as f32);
            x_rf.push((state / (1.0 + kappa)) as f32);
        }
        t.push(ti);
        t_rf.push(kappa / (1.0 + kappa));
    }
    let target = solve_teacher(teacher, &x_rf, &t_rf, &vec![0.0; rows])?;
    let mut pool = Pool { x, t, s: vec![0.0; rows], target: target.clone() };
    let dropped = pool.keep_bounded(&target);
    Ok((pool, dropped))
}

/// One minibatch: the network's input rows and the regression target, and for a preconditioned
/// model the per-row `c_out` and `c_skip x` (the prediction is `c_skip x + c_out F`).
struct Batch {
    input: Vec<f32>,
    target: Vec<f32>,
    preconditioned: Option<(Vec<f32>, Vec<f32>)>,
}

/// What a step of training needs besides the network.
struct Objective<'a> {
    config: &'a TrainConfig,
    pool: Option<Pool>,
}

impl Objective<'_> {
    /// The step's data points and standard normal draws, `[rows, 2]` each.
    fn draws(&self, step: usize) -> (Vec<f32>, Vec<f32>) {
        let (seed, rows) = (self.config.seed, self.config.batch);
        let data = self.config.dataset.sample(rows, mix(seed, step as u64)).data;
        let noise = (0..rows)
            .flat_map(|i| (0..2).map(move |d| philox::gaussian(seed, SITE_NOISE, step as u32, i as u32, d)))
            .collect();
        (data, noise)
    }

    fn uniform(&self, site: u32, step: usize, row: usize) -> f64 {
        f64::from(philox::uniform(self.config.seed, site, step as u32, row as u32, 0))
    }

    fn batch(&self, mlp: &Mlp, step: usize) -> Result<Batch, TrainError> {
        let rows = self.config.batch;
        let manifest = &mlp.manifest;
        match manifest.kind {
            ModelKind::Velocity | ModelKind::Eps => {
                let (data, noise) = self.draws(step);
                let n_train = EPS_TRAIN_STEPS as f64;
                let mut t = Vec::with_capacity(rows);
                let mut x = Vec::with_capacity(2 * rows);
                let mut target = Vec::with_capacity(2 * rows);
                for i in 0..rows {
                    let u = self.uniform(SITE_TIME, step, i);
                    let ti =
                        if manifest.kind == ModelKind::Eps { 1.0 / n_train + u * (1.0 - 1.0 / n_train) } else { u };
                    let (alpha, sigma) = (manifest.interpolant.alpha(ti), manifest.interpolant.sigma(ti));
                    for d in 0..2 {
                        let (x0, e) = (f64::from(data[2 * i + d]), f64::from(noise[2 * i + d]));
                        x.push((alpha * x0 + sigma * e) as f32);
                        target.push(if manifest.kind == ModelKind::Eps { e as f32 } else { (e - x0) as f32 });
                    }
                    t.push(ti);
                }
                Ok(Batch { input: mlp.inputs(&x, &t, None), target, preconditioned: None })
            }
            ModelKind::FlowMap | ModelKind::Consistency => {
                let pool = self.pool.as_ref().ok_or_else(|| TrainError::Config("no teacher pool".into()))?;
                let size = pool.t.len();
                let picks: Vec<usize> = (0..rows)
                    .map(|i| ((self.uniform(SITE_PICK, step, i) * size as f64) as usize).min(size - 1))
                    .collect();
                let gather = |v: &[f32]| picks.iter().flat_map(|&j| [v[2 * j], v[2 * j + 1]]).collect::<Vec<f32>>();
                let t: Vec<f64> = picks.iter().map(|&j| pool.t[j]).collect();
                let x = gather(&pool.x);
                let target = gather(&pool.target);
                if manifest.kind == ModelKind::FlowMap {
                    let s: Vec<f64> = picks.iter().map(|&j| pool.s[j]).collect();
                    return Ok(Batch { input: mlp.inputs(&x, &t, Some(&s)), target, preconditioned: None });
                }
                let Some(preconditioning) = manifest.preconditioning else {
                    return Err(TrainError::Config("the consistency manifest has no preconditioning".into()));
                };
                let mut x_in = Vec::with_capacity(2 * rows);
                let mut c_out = Vec::with_capacity(rows);
                let mut skip = Vec::with_capacity(2 * rows);
                for i in 0..rows {
                    let scalings = preconditioning.scalings(manifest.kind, manifest.interpolant.kappa(t[i]));
                    for d in 0..2 {
                        let value = f64::from(x[2 * i + d]);
                        x_in.push((scalings.c_in * value) as f32);
                        skip.push((scalings.c_skip * value) as f32);
                    }
                    c_out.push(scalings.c_out as f32);
                }
                Ok(Batch { input: mlp.inputs(&x_in, &t, None), target, preconditioned: Some((c_out, skip)) })
            }
            ModelKind::MeanFlow => {
                let (data, noise) = self.draws(step);
                let mut t = Vec::with_capacity(rows);
                let mut s = Vec::with_capacity(rows);
                let mut z = Vec::with_capacity(2 * rows);
                let mut v = Vec::with_capacity(2 * rows);
                for i in 0..rows {
                    let ti = 1.0 - self.uniform(SITE_TIME, step, i);
                    let si = if self.uniform(SITE_BRANCH, step, i) < MEAN_FLOW_DIAGONAL {
                        ti
                    } else {
                        self.uniform(SITE_SECOND, step, i) * ti
                    };
                    for d in 0..2 {
                        let (x0, e) = (f64::from(data[2 * i + d]), f64::from(noise[2 * i + d]));
                        z.push(((1.0 - ti) * x0 + ti * e) as f32);
                        v.push((e - x0) as f32);
                    }
                    t.push(ti);
                    s.push(si);
                }
                // The target v − (t − s) du/dt, with du/dt the JVP along (v, 1, 0).
                let input = mlp.inputs(&z, &t, Some(&s));
                let (_, du_dt) = mlp.jvp(input.clone(), mlp.input_tangents(&v, &t, &s), rows)?;
                let target = v
                    .iter()
                    .zip(&du_dt)
                    .enumerate()
                    .map(|(j, (&v, &d))| v - (t[j / 2] - s[j / 2]) as f32 * d)
                    .collect();
                Ok(Batch { input, target, preconditioned: None })
            }
            ModelKind::Shortcut => {
                let (data, noise) = self.draws(step);
                let flow_rows = ((rows as f64 * SHORTCUT_FLOW_MATCHING).round() as usize).min(rows);
                let mut t = Vec::with_capacity(rows);
                let mut gap = Vec::with_capacity(rows - flow_rows);
                let mut x = Vec::with_capacity(2 * rows);
                let mut target = Vec::with_capacity(2 * rows);
                for i in 0..rows {
                    let ti = if i < flow_rows {
                        1.0 - self.uniform(SITE_TIME, step, i)
                    } else {
                        let k = (1 + (self.uniform(SITE_LEVEL, step, i) * f64::from(SHORTCUT_LEVELS)) as u32)
                            .min(SHORTCUT_LEVELS);
                        let d = 0.5f64.powi(k as i32);
                        // t = j d with j uniform in 2..=2^k: the step of 2d ends at or above 0.
                        let choices = (1u64 << k) - 1;
                        let j = 2 + ((self.uniform(SITE_TIME, step, i) * choices as f64) as u64).min(choices - 1);
                        gap.push(d);
                        j as f64 * d
                    };
                    for dim in 0..2 {
                        let (x0, e) = (f64::from(data[2 * i + dim]), f64::from(noise[2 * i + dim]));
                        x.push(((1.0 - ti) * x0 + ti * e) as f32);
                        if i < flow_rows {
                            target.push((e - x0) as f32);
                        }
                    }
                    t.push(ti);
                }
                // The bootstrap rows: two steps of d with the model itself (no gradient flows
                // through targets); steps of the finest d query the model at d = 0.
                if flow_rows < rows {
                    let finest = 0.5f64.powi(SHORTCUT_LEVELS as i32);
                    let x_boot = &x[2 * flow_rows..];
                    let t_boot = &t[flow_rows..];
                    let query: Vec<f64> = gap.iter().map(|&d| if d <= finest { 0.0 } else { d }).collect();
                    let s1: Vec<f64> = t_boot.iter().zip(&query).map(|(t, q)| t - q).collect();
                    let u1 = mlp.output(x_boot, t_boot, Some(&s1))?;
                    let x_mid: Vec<f32> =
                        x_boot.iter().zip(&u1).enumerate().map(|(j, (x, u))| x - gap[j / 2] as f32 * u).collect();
                    let t_mid: Vec<f64> = t_boot.iter().zip(&gap).map(|(t, d)| t - d).collect();
                    let s2: Vec<f64> = t_mid.iter().zip(&query).map(|(t, q)| t - q).collect();
                    let u2 = mlp.output(&x_mid, &t_mid, Some(&s2))?;
                    target.extend(u1.iter().zip(&u2).map(|(a, b)| 0.5 * (a + b)));
                }
                // Second times: s = t for flow matching (gap 0), s = t − 2d for the bootstrap.
                let s: Vec<f64> =
                    (0..rows).map(|i| if i < flow_rows { t[i] } else { t[i] - 2.0 * gap[i - flow_rows] }).collect();
                Ok(Batch { input: mlp.inputs(&x, &t, Some(&s)), target, preconditioned: None })
            }
            other => Err(TrainError::Config(format!("no training program for `{}`", other.name()))),
        }
    }
}

/// Trains a model as `config` says; `teacher` is the `velocity` checkpoint the distilled kinds
/// (`flow_map`, `consistency`) learn from, ignored by the others. `progress` hears of every step.
pub fn train(
    config: &TrainConfig,
    teacher: Option<&Mlp>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(Mlp, Report), TrainError> {
    config.check()?;
    let start = Instant::now();
    let manifest = manifest(config.kind, config.time_features)?;
    let mut dropped_pairs = 0;
    let pool = if needs_teacher(config.kind) {
        let teacher = teacher.ok_or_else(|| {
            TrainError::Config(format!(
                "`{}` is distilled from a `velocity` teacher; none was given",
                config.kind.name()
            ))
        })?;
        check_teacher(teacher)?;
        let (pool, dropped) = match config.kind {
            ModelKind::FlowMap => flow_map_pool(config, teacher)?,
            _ => consistency_pool(config, teacher, &manifest.interpolant)?,
        };
        if pool.t.is_empty() {
            return Err(TrainError::Config("every teacher pair diverged: is the teacher trained?".into()));
        }
        dropped_pairs = dropped;
        Some(pool)
    } else {
        None
    };
    let pool_seconds = if pool.is_some() { start.elapsed().as_secs_f64() } else { 0.0 };
    let mut mlp = Mlp::init(manifest, config.hidden, config.seed)?;
    let mut adam = Adam::new(&mlp, config.weight_decay);
    let objective = Objective { config, pool };
    let n = mlp.manifest.sample_len();
    let scale = 2.0 / (config.batch * n) as f32;
    let mut losses = Vec::with_capacity(config.steps);
    for step in 0..config.steps {
        let lr = config.learning_rate(step);
        let batch = objective.batch(&mlp, step)?;
        let forward = mlp.forward(batch.input, config.batch)?;
        // The mean squared error and its gradient in the network's output.
        let mut sum = 0.0f64;
        let mut g_out: Vec<f32> = match &batch.preconditioned {
            None => forward
                .out
                .iter()
                .zip(&batch.target)
                .map(|(&f, &y)| {
                    let r = f - y;
                    sum += f64::from(r * r);
                    scale * r
                })
                .collect(),
            Some((c_out, skip)) => forward
                .out
                .iter()
                .zip(&batch.target)
                .enumerate()
                .map(|(j, (&f, &y))| {
                    let c = c_out[j / n];
                    let r = skip[j] + c * f - y;
                    sum += f64::from(r * r);
                    scale * r * c
                })
                .collect(),
        };
        if config.kind == ModelKind::MeanFlow {
            // MeanFlow's adaptive weighting (p = 1): each row's gradient divided by its
            // squared error plus c, without gradient through the weight.
            for row in g_out.chunks_exact_mut(n) {
                let squared: f32 = row.iter().map(|g| (g / scale) * (g / scale)).sum();
                let weight = 1.0 / (squared + MEAN_FLOW_ADAPTIVE_C);
                row.iter_mut().for_each(|g| *g *= weight);
            }
        }
        let loss = (sum / (config.batch * n) as f64) as f32;
        if !loss.is_finite() {
            return Err(TrainError::Diverged { step, loss });
        }
        let gradients = mlp.backward(&forward, g_out)?;
        mlp.update(&mut adam, &gradients, lr)?;
        if config.kind == ModelKind::MeanFlow {
            mlp.smooth_in_time(lr * MEAN_FLOW_SMOOTHNESS)?;
        }
        losses.push(loss);
        progress(&Progress { step: step + 1, steps: config.steps, loss, lr, seconds: start.elapsed().as_secs_f64() });
    }
    Ok((mlp, Report { losses, seconds: start.elapsed().as_secs_f64(), pool_seconds, dropped_pairs }))
}

/// The path of the checkpoint of `kind` on `dataset` under `dir`: `DIR/<data>/<kind>.safetensors`.
pub fn checkpoint_path(dir: &Path, dataset: Dataset, kind: ModelKind) -> PathBuf {
    dir.join(dataset.name()).join(format!("{}.safetensors", kind.name()))
}

/// The `__metadata__` notes of a trained checkpoint: how it was made.
pub fn notes(config: &TrainConfig, report: &Report) -> Vec<(&'static str, String)> {
    vec![
        ("train.data", config.dataset.name().to_string()),
        ("train.steps", config.steps.to_string()),
        ("train.batch", config.batch.to_string()),
        ("train.seed", config.seed.to_string()),
        ("train.lr", config.lr.to_string()),
        ("train.final_loss", format!("{:.5}", report.final_loss())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loss of `mlp` on `input` against `target` (mean squared error), in f64.
    fn loss(mlp: &Mlp, input: &[f32], target: &[f32], rows: usize) -> f64 {
        let out = mlp.forward(input.to_vec(), rows).expect("it evaluates").out;
        out.iter().zip(target).map(|(&f, &y)| f64::from(f - y).powi(2)).sum::<f64>() / out.len() as f64
    }

    #[test]
    fn gradients_match_finite_differences() {
        let manifest = manifest(ModelKind::FlowMap, 3).expect("it evaluates");
        let mut mlp = Mlp::init(manifest, 8, 5).expect("it evaluates");
        let rows = 6;
        let width = mlp.input_len();
        let input: Vec<f32> = (0..rows * width).map(|i| philox::gaussian(1, 0, 0, i as u32, 0)).collect();
        let target: Vec<f32> = (0..rows * 2).map(|i| philox::gaussian(2, 0, 0, i as u32, 0)).collect();
        let forward = mlp.forward(input.clone(), rows).expect("it evaluates");
        let scale = 2.0 / (rows * 2) as f32;
        let g_out = forward.out.iter().zip(&target).map(|(f, y)| scale * (f - y)).collect();
        let gradients = mlp.backward(&forward, g_out).expect("it evaluates");
        for (p, gradient) in gradients.iter().enumerate() {
            for i in (0..gradient.len()).step_by(7) {
                let original = mlp.params[p][i];
                let h = 1e-2f32;
                mlp.params[p][i] = original + h;
                mlp = Mlp::new(mlp.manifest.clone(), mlp.params.clone()).expect("it evaluates");
                let plus = loss(&mlp, &input, &target, rows);
                mlp.params[p][i] = original - h;
                mlp = Mlp::new(mlp.manifest.clone(), mlp.params.clone()).expect("it evaluates");
                let minus = loss(&mlp, &input, &target, rows);
                mlp.params[p][i] = original;
                mlp = Mlp::new(mlp.manifest.clone(), mlp.params.clone()).expect("it evaluates");
                let numeric = (plus - minus) / (2.0 * f64::from(h));
                let analytic = f64::from(gradient[i]);
                assert!(
                    (numeric - analytic).abs() < 2e-3 + 2e-2 * analytic.abs(),
                    "{} [{i}]: numeric {numeric} analytic {analytic}",
                    NAMES[p]
                );
            }
        }
    }

    #[test]
    fn the_jvp_matches_a_finite_difference_along_the_trajectory() {
        for kind in [ModelKind::MeanFlow, ModelKind::FlowMap, ModelKind::Velocity] {
            let mlp = Mlp::init(manifest(kind, 4).expect("it evaluates"), 16, 3).expect("it evaluates");
            let rows = 5;
            let x: Vec<f32> = (0..2 * rows).map(|i| philox::gaussian(1, 0, 0, i as u32, 0)).collect();
            let v: Vec<f32> = (0..2 * rows).map(|i| philox::gaussian(2, 0, 0, i as u32, 0)).collect();
            let t: Vec<f64> = (0..rows).map(|i| 0.3 + 0.1 * i as f64).collect();
            let s: Vec<f64> = t.iter().map(|t| t * 0.4).collect();
            let second = kind.is_two_time().then_some(&s[..]);
            let input = mlp.inputs(&x, &t, second);
            let (out, jvp) = mlp.jvp(input.clone(), mlp.input_tangents(&v, &t, &s), rows).expect("it evaluates");
            assert_eq!(out, mlp.forward(input, rows).expect("it evaluates").out);
            let h = 1e-3;
            let moved = |sign: f64| {
                let x: Vec<f32> = x.iter().zip(&v).map(|(x, v)| x + (sign * h) as f32 * v).collect();
                let t: Vec<f64> = t.iter().map(|t| t + sign * h).collect();
                mlp.forward(mlp.inputs(&x, &t, second), rows).expect("it evaluates").out
            };
            let (plus, minus) = (moved(1.0), moved(-1.0));
            for j in 0..2 * rows {
                let numeric = f64::from(plus[j] - minus[j]) / (2.0 * h);
                let analytic = f64::from(jvp[j]);
                assert!(
                    (numeric - analytic).abs() < 1e-2 * (1.0 + analytic.abs()),
                    "{kind:?} {j}: {numeric} vs {analytic}"
                );
            }
        }
    }
}
