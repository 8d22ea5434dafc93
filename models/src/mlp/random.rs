//! Random MLP checkpoints: seeded weights for any manifest, the same bytes on every machine (for
//! tests and benchmarks).

use std::path::{Path, PathBuf};

use super::manifest::Manifest;
use crate::checkpoint::write_safetensors;
use crate::error::LoadError;

/// The tensors of a random MLP for `manifest`: hidden sizes 32 and 32 (see
/// [`random_mlp_tensors_of_width`]). Each entry is (name, shape, values).
pub fn random_mlp_tensors(manifest: &Manifest, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    random_mlp_tensors_of_width(manifest, 32, seed)
}

/// The tensors of a random MLP for `manifest` with two hidden layers of `hidden` units, a class
/// embedding of size 8 when the manifest has classes, weights and biases uniform in ±1/√fan_in
/// (PyTorch's default initialization) from a SplitMix64 stream seeded by `seed`: the same bytes
/// on every machine. Each entry is (name, shape, values).
pub fn random_mlp_tensors_of_width(
    manifest: &Manifest,
    hidden: usize,
    seed: u64,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    const CLASS_DIM: usize = 8;
    let mut state = seed;
    let mut uniform = move |bound: f64| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        ((2.0 * unit - 1.0) * bound) as f32
    };
    let class_dim = if manifest.classes > 0 { CLASS_DIM } else { 0 };
    let input = manifest.sample_len() + manifest.time_len() + class_dim;
    let out = manifest.sample_len();
    let mut tensors = Vec::new();
    if manifest.classes > 0 {
        let shape = vec![manifest.classes + 1, CLASS_DIM];
        tensors.push((
            "class_embed.weight".to_string(),
            shape,
            (0..(manifest.classes + 1) * CLASS_DIM).map(|_| uniform(1.0)).collect(),
        ));
    }
    for (name, fan_in, fan_out) in [("l1", input, hidden), ("l2", hidden, hidden), ("l3", hidden, out)] {
        let bound = 1.0 / (fan_in as f64).sqrt();
        tensors.push((
            format!("{name}.weight"),
            vec![fan_out, fan_in],
            (0..fan_out * fan_in).map(|_| uniform(bound)).collect(),
        ));
        tensors.push((format!("{name}.bias"), vec![fan_out], (0..fan_out).map(|_| uniform(bound)).collect()));
    }
    tensors
}

/// Writes a random MLP checkpoint ([`random_mlp_tensors`]) to `path` with its manifest in
/// `NAME.toml` beside it; returns the manifest's path.
pub fn write_random_mlp(path: &Path, manifest: &Manifest, seed: u64) -> Result<PathBuf, LoadError> {
    write_safetensors(path, &random_mlp_tensors(manifest, seed), None)?;
    let toml_path = path.with_extension("toml");
    std::fs::write(&toml_path, manifest.to_table().to_string())
        .map_err(|source| LoadError::Io { path: toml_path.clone(), source })?;
    Ok(toml_path)
}
