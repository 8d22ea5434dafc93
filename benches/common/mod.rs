//! What the benchmarks share (benches/engine.rs on the CPU, benches/gpu.rs on a GPU): the DDIM
//! schedule, a null model, the end-to-end checkpoint's manifest, and the files
//! `bench/diffusers_e2e.py` reads.

#![allow(dead_code, reason = "each benchmark uses a different subset")]

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sched_kernels::spec::Distribution;
use sched_lang::types::ModelKind;
use sched_models::checkpoint::write_safetensors;
use sched_models::mlp::manifest::{Manifest, TimeInput};
use sched_models::mlp::random::random_mlp_tensors_of_width;
use sched_runtime::interpolant::{BetaSchedule, DiscreteVp, Interpolant};
use sched_runtime::model::{FieldKind, Label, Model, ModelError, ModelInfo};
use sched_runtime::tensor::Tensor;

/// DDIM on an ε model over diffusers' `leading` grid with `steps_offset = 0` (DDIMScheduler's
/// default; `leading(offset = 1)`, the grid of examples/ddim.sched, has no room for 1000 steps on a
/// 1000-entry table). The state is a parameter, so the end-to-end benchmark can start every
/// implementation from the same noise.
pub const DDIM: &str = r#"
schedule ddim_bench(net: model<eps>, steps: int = 50, eta: float = 0.0, x: tensor = gaussian()) {
    for t, s in grid(1 -> 0, steps, leading(offset = 0)) {
        refine x from t to s by ddim(eta)
    }
    emit x
}
"#;

/// N of the training table, diffusers' default.
pub const TRAIN_STEPS: usize = 1000;
/// The hidden width of the end-to-end MLP.
pub const WIDTH: usize = 256;
/// Sinusoidal frequencies of the MLP's time embedding.
pub const TIME_FEATURES: usize = 8;
/// The sample shape of every benchmark: a 2-D point.
pub const SAMPLE: usize = 2;

/// The manifest of the end-to-end checkpoint: an ε model on diffusers' default table (linear
/// betas 0.0001 → 0.02, N = 1000), fed the integer timestep, as DDIMScheduler's defaults expect.
pub fn e2e_manifest() -> Manifest {
    Manifest {
        kind: ModelKind::Eps,
        interpolant: Interpolant::Discrete(DiscreteVp::new(BetaSchedule::DDPM_LINEAR, TRAIN_STEPS)),
        time_input: TimeInput::Index,
        preconditioning: None,
        sample_shape: vec![SAMPLE],
        time_features: TIME_FEATURES,
        classes: 0,
    }
}

/// The end-to-end benchmark's inputs, as written to its directory.
pub struct Inputs {
    pub manifest: Manifest,
    /// `mlp.safetensors` (its manifest is `mlp.toml` beside it).
    pub checkpoint: PathBuf,
    pub net: Arc<dyn Model>,
    /// The initial noise, `x_init.safetensors`: `batch` samples.
    pub x_init: Tensor,
}

/// Writes a random MLP of width [`WIDTH`] and `batch` samples of initial noise into `dir`, and
/// loads the MLP.
pub fn write_inputs(dir: &Path, batch: usize) -> Result<Inputs, Box<dyn Error>> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let manifest = e2e_manifest();
    let checkpoint = dir.join("mlp.safetensors");
    write_safetensors(&checkpoint, &random_mlp_tensors_of_width(&manifest, WIDTH, 20261130), None)?;
    std::fs::write(checkpoint.with_extension("toml"), manifest.to_table().to_string())?;
    let net = sched_models::load::load_model(&checkpoint.display().to_string(), None)?;
    let x_init = Tensor::noise(Distribution::Gaussian, 2026, 0, 0, vec![batch, SAMPLE]);
    write_safetensors(
        &dir.join("x_init.safetensors"),
        &[("x".into(), x_init.shape.clone(), x_init.data.clone())],
        None,
    )?;
    Ok(Inputs { manifest, checkpoint, net, x_init })
}

/// A model that returns zeros: an ε model on diffusers' default `linear` table, so that a run
/// measures everything but a network.
pub struct NullModel {
    info: ModelInfo,
}

impl NullModel {
    pub fn new() -> NullModel {
        NullModel {
            info: ModelInfo {
                kind: ModelKind::Eps,
                interpolant: Interpolant::Discrete(DiscreteVp::new(BetaSchedule::DDPM_LINEAR, TRAIN_STEPS)),
                sample_shape: vec![SAMPLE],
                num_classes: None,
                source: "null model (zeros)".into(),
            },
        }
    }
}

impl Model for NullModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn field(&self, x: &Tensor, _t: f64, _label: Label) -> std::result::Result<(Tensor, FieldKind), ModelError> {
        Ok((Tensor::zeros(x.shape.clone()), FieldKind::Eps))
    }

    fn jump(&self, _x: &Tensor, _t: f64, _s: f64, _label: Label) -> std::result::Result<Tensor, ModelError> {
        Err(ModelError::Unsupported {
            model: self.info.source.clone(),
            kind: self.info.kind,
            what: "jump (it is a local field)".into(),
        })
    }
}
