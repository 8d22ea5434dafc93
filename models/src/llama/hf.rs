//! Llama-family models from Hugging Face folders: `config.json`, the weights in
//! `model.safetensors` or in shards listed by `model.safetensors.index.json`, `tokenizer.json`,
//! and, when present, `generation_config.json` (its end tokens) and `tokenizer_config.json` (its
//! chat template). Weights of any float type (F32, F16, BF16) are read as f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use super::LlamaModel;
use super::config::LlamaConfig;
use super::matrix::Matrix;
use super::network::{Arithmetic, Block, Network, RopeAngles};
use super::tokenizer;
use crate::error::LoadError;

/// Whether `dir` is a Hugging Face model folder (it has a `config.json`).
pub fn is_folder(dir: &Path) -> bool {
    dir.is_dir() && dir.join("config.json").is_file()
}

fn read_text(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => LoadError::FileMissing { path: path.into() },
        _ => LoadError::Io { path: path.into(), source },
    })
}

/// The weight files of the folder, with the tensors each holds.
struct Shards {
    files: Vec<(PathBuf, Vec<u8>)>,
    /// Tensor name → index in `files`.
    index: HashMap<String, usize>,
}

impl Shards {
    fn open(dir: &Path) -> Result<Shards, LoadError> {
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<PathBuf> = if index_path.is_file() {
            let text = read_text(&index_path)?;
            let json: Json = serde_json::from_str(&text)
                .map_err(|e| LoadError::ConfigSyntax { path: index_path.clone(), message: e.to_string() })?;
            let map = json.get("weight_map").and_then(Json::as_object).ok_or_else(|| LoadError::ConfigField {
                path: index_path.clone(),
                field: "weight_map".into(),
                expected: "an object from tensor names to shard files".into(),
            })?;
            let mut shards: Vec<PathBuf> = map.values().filter_map(Json::as_str).map(|f| dir.join(f)).collect();
            shards.sort();
            shards.dedup();
            shards
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in names {
            let bytes = std::fs::read(&path).map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => LoadError::FileMissing { path: path.clone() },
                _ => LoadError::Io { path: path.clone(), source },
            })?;
            let tensors = SafeTensors::deserialize(&bytes)
                .map_err(|e| LoadError::NotSafetensors { path: path.clone(), reason: e.to_string() })?;
            for name in tensors.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((path, bytes));
        }
        Ok(Shards { files, index })
    }

    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The tensor `name` of shape `shape`, as f32.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let missing = || LoadError::TensorMissing {
            path: self.files.first().map(|(p, _)| p.clone()).unwrap_or_default(),
            tensor: name.into(),
            expected: format!("{shape:?}"),
        };
        let &file = self.index.get(name).ok_or_else(missing)?;
        let (path, bytes) = &self.files[file];
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| LoadError::NotSafetensors { path: path.clone(), reason: e.to_string() })?;
        let view = tensors.tensor(name).map_err(|_| missing())?;
        if view.shape() != shape {
            return Err(LoadError::TensorShape {
                path: path.clone(),
                tensor: name.into(),
                expected: format!("{shape:?}"),
                found: view.shape().to_vec(),
            });
        }
        let data = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(LoadError::TensorDtype {
                    path: path.clone(),
                    tensor: name.into(),
                    found: format!("{other:?}"),
                });
            }
        })
    }

    fn matrix(&self, name: &str, outputs: usize, inputs: usize) -> Result<Matrix, LoadError> {
        let values = self.tensor(name, &[outputs, inputs])?;
        let path = self.files[self.index[name]].0.clone();
        Matrix::dense(values, outputs, inputs).map_err(|e| LoadError::Backend { path, message: e.to_string() })
    }
}

/// The end tokens of `generation_config.json`, when it names any.
fn generation_eos(dir: &Path) -> Result<Option<Vec<u32>>, LoadError> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let json: Json = serde_json::from_str(&read_text(&path)?)
        .map_err(|e| LoadError::ConfigSyntax { path: path.clone(), message: e.to_string() })?;
    let ids = match json.get("eos_token_id") {
        Some(Json::Array(items)) => {
            items.iter().filter_map(Json::as_u64).filter_map(|n| u32::try_from(n).ok()).collect()
        }
        Some(value) => value.as_u64().and_then(|n| u32::try_from(n).ok()).into_iter().collect(),
        None => return Ok(None),
    };
    Ok(Some(ids))
}

/// The chat template of `tokenizer_config.json`, when it has one.
fn chat_template(dir: &Path) -> Result<Option<String>, LoadError> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let json: Json = serde_json::from_str(&read_text(&path)?)
        .map_err(|e| LoadError::ConfigSyntax { path, message: e.to_string() })?;
    Ok(json.get("chat_template").and_then(Json::as_str).map(str::to_string))
}

/// Loads the model of the folder `dir`.
pub fn load(dir: &Path) -> Result<LlamaModel, LoadError> {
    let config_path = dir.join("config.json");
    let mut config = LlamaConfig::from_hf(&config_path, &read_text(&config_path)?)?;
    if let Some(eos) = generation_eos(dir)? {
        config.eos = eos;
    }
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = if tokenizer_path.is_file() {
        let tokenizer = tokenizer::from_file(&tokenizer_path)?;
        tokenizer::check_vocab(&tokenizer_path, &tokenizer, config.vocab)?;
        Some(tokenizer)
    } else {
        None
    };
    let shards = Shards::open(dir)?;
    let network = read_network(&shards, config)?;
    Ok(LlamaModel::new(network, tokenizer, chat_template(dir)?, dir.display().to_string()))
}

fn read_network(shards: &Shards, config: LlamaConfig) -> Result<Network, LoadError> {
    let c = config.clone();
    let (hidden, kv, q_width) = (c.hidden, c.kv_heads * c.head_dim, c.heads * c.head_dim);
    let embedding = shards.matrix("model.embed_tokens.weight", c.vocab, hidden)?;
    let mut blocks = Vec::with_capacity(c.layers);
    for i in 0..c.layers {
        let name = |part: &str| format!("model.layers.{i}.{part}");
        let qkv_bias = if c.qkv_bias {
            Some([
                shards.tensor(&name("self_attn.q_proj.bias"), &[q_width])?,
                shards.tensor(&name("self_attn.k_proj.bias"), &[kv])?,
                shards.tensor(&name("self_attn.v_proj.bias"), &[kv])?,
            ])
        } else {
            None
        };
        blocks.push(Block {
            attention_norm: shards.tensor(&name("input_layernorm.weight"), &[hidden])?,
            q: shards.matrix(&name("self_attn.q_proj.weight"), q_width, hidden)?,
            k: shards.matrix(&name("self_attn.k_proj.weight"), kv, hidden)?,
            v: shards.matrix(&name("self_attn.v_proj.weight"), kv, hidden)?,
            qkv_bias,
            o: shards.matrix(&name("self_attn.o_proj.weight"), hidden, q_width)?,
            ffn_norm: shards.tensor(&name("post_attention_layernorm.weight"), &[hidden])?,
            gate: shards.matrix(&name("mlp.gate_proj.weight"), c.intermediate, hidden)?,
            up: shards.matrix(&name("mlp.up_proj.weight"), c.intermediate, hidden)?,
            down: shards.matrix(&name("mlp.down_proj.weight"), hidden, c.intermediate)?,
        });
    }
    let norm = shards.tensor("model.norm.weight", &[hidden])?;
    let output = if c.tied && !shards.has("lm_head.weight") {
        None
    } else {
        Some(shards.matrix("lm_head.weight", c.vocab, hidden)?)
    };
    let rope = RopeAngles::new(&c.rope, c.head_dim, None);
    Ok(Network {
        config,
        embedding,
        blocks,
        norm,
        output,
        rope,
        arithmetic: Arithmetic::Transformers,
        interleaved_heads: false,
    })
}
