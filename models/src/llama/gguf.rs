//! Llama-family models from GGUF files (llama.cpp's format): the configuration and the tokenizer
//! from the metadata, the tensors kept quantized or dequantized to f32.
//!
//! Every tensor's extent is checked against the file before it is read, so a truncated file or a
//! tensor offset that lies is an error naming the tensor. llama.cpp stores a `llama` model's query
//! and key rows permuted for its interleaved RoPE; they are permuted back here, whole rows at a
//! time (quantized rows too: a row's blocks hold only its own weights), so one RoPE serves every
//! format.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};

use super::LlamaModel;
use super::config::LlamaConfig;
use super::matrix::Matrix;
use super::network::{Arithmetic, Block, Network, RopeAngles};
use super::tokenizer;
use crate::error::LoadError;

/// The quantizations a GGUF tensor may have (the rest of ggml's are refused by name).
const SUPPORTED: &[GgmlDType] = &[
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// An open GGUF file: its metadata and tensor table, and the reader of its tensors.
struct GgufFile<'p> {
    path: &'p Path,
    content: Content,
    reader: BufReader<File>,
    size: u64,
}

impl GgufFile<'_> {
    fn invalid(&self, reason: String) -> LoadError {
        LoadError::GgufInvalid { path: self.path.into(), reason }
    }

    fn number(&self, key: &str) -> Option<f64> {
        match self.content.metadata.get(key)? {
            Value::F32(v) => Some(f64::from(*v)),
            Value::F64(v) => Some(*v),
            other => tokenizer::integer(other).map(|v| v as f64),
        }
    }

    fn string(&self, key: &str) -> Option<&str> {
        self.content.metadata.get(key).and_then(|v| v.to_string().ok()).map(String::as_str)
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The tensor `name`, of shape `shape` (`[outputs, inputs]` for a matrix), checked against the
    /// file before it is read.
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor, LoadError> {
        let info = self.content.tensor_infos.get(name).ok_or_else(|| LoadError::TensorMissing {
            path: self.path.into(),
            tensor: name.into(),
            expected: format!("{shape:?}"),
        })?;
        if info.shape.dims() != shape {
            return Err(LoadError::TensorShape {
                path: self.path.into(),
                tensor: name.into(),
                expected: format!("{shape:?}"),
                found: info.shape.dims().to_vec(),
            });
        }
        let dtype = info.ggml_dtype;
        if !SUPPORTED.contains(&dtype) {
            return Err(LoadError::UnsupportedQuantization {
                path: self.path.into(),
                tensor: Some(name.into()),
                dtype: format!("{dtype:?}"),
                supported: SUPPORTED.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(", "),
            });
        }
        let elements = info.shape.elem_count();
        if !elements.is_multiple_of(dtype.block_size()) {
            return Err(self.invalid(format!("tensor `{name}` has {elements} elements, not whole {dtype:?} blocks")));
        }
        let bytes = (elements / dtype.block_size()) as u64 * dtype.type_size() as u64;
        let start = self.content.tensor_data_offset.checked_add(info.offset);
        if start.and_then(|s| s.checked_add(bytes)).is_none_or(|end| end > self.size) {
            return Err(self.invalid(format!(
                "tensor `{name}` ({bytes} bytes at offset {}) lies beyond the end of the file ({} bytes)",
                info.offset, self.size
            )));
        }
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| self.invalid(format!("tensor `{name}`: {e}")))
    }

    /// A vector (a norm's weights or a bias) as f32.
    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>, LoadError> {
        let tensor = self.tensor(name, &[len])?;
        let values = tensor.dequantize(&Device::Cpu).and_then(|t| t.to_vec1::<f32>());
        values.map_err(|e| self.invalid(format!("tensor `{name}`: {e}")))
    }

    /// A weight matrix `[outputs, inputs]`, its rows permuted back from llama.cpp's RoPE order
    /// when `heads` is given.
    fn matrix(
        &mut self,
        name: &str,
        outputs: usize,
        inputs: usize,
        heads: Option<usize>,
        dequantize: bool,
    ) -> Result<Matrix, LoadError> {
        let mut tensor = self.tensor(name, &[outputs, inputs])?;
        if let Some(heads) = heads {
            tensor = unpermute(&tensor, heads).map_err(|e| self.invalid(format!("tensor `{name}`: {e}")))?;
        }
        Matrix::quantized(tensor, dequantize).map_err(|e| self.invalid(format!("tensor `{name}`: {e}")))
    }
}

/// llama.cpp's query/key row order back to transformers': within each head, row `2i + c` of the
/// file is row `c · head_dim/2 + i` of the model.
fn unpermute(tensor: &QTensor, heads: usize) -> candle_core::Result<QTensor> {
    let (outputs, _) = tensor.shape().dims2()?;
    let data = tensor.data()?;
    let row_bytes = data.len() / outputs.max(1);
    let head_dim = outputs / heads.max(1);
    let half = head_dim / 2;
    let mut permuted = vec![0u8; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for c in 0..2 {
                let from = h * head_dim + 2 * i + c;
                let to = h * head_dim + c * half + i;
                permuted[to * row_bytes..(to + 1) * row_bytes]
                    .copy_from_slice(&data[from * row_bytes..(from + 1) * row_bytes]);
            }
        }
    }
    let storage = QStorage::from_data(Cow::Owned(permuted), &Device::Cpu, tensor.dtype())?;
    QTensor::new(storage, tensor.shape().clone())
}

/// The error of a file candle cannot read. candle reads the whole tensor table first and fails
/// on the first type it lacks (`unknown dtype for tensor N`): that is a quantization sched does
/// not run, named after ggml's type ids.
fn unreadable(path: &Path, error: &candle_core::Error) -> LoadError {
    let message = error.to_string();
    let unknown = message.split("unknown dtype for tensor ").nth(1).and_then(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    match unknown {
        Some(id) => LoadError::UnsupportedQuantization {
            path: path.into(),
            tensor: None,
            dtype: ggml_type_name(id),
            supported: SUPPORTED.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(", "),
        },
        // candle's message may carry a backtrace after its first line.
        None => LoadError::GgufInvalid {
            path: path.into(),
            reason: format!("not a readable GGUF file: {}", message.lines().next().unwrap_or_default()),
        },
    }
}

/// ggml's name of type `id` (`ggml.h`'s `enum ggml_type`), for the types candle lacks.
fn ggml_type_name(id: u32) -> String {
    let name = match id {
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("ggml type {id}"),
    };
    name.to_string()
}

/// Loads the GGUF file at `path`: its tensors kept as the file quantizes them, or dequantized to
/// f32 when `dequantize`.
pub fn load(path: &Path, dequantize: bool) -> Result<LlamaModel, LoadError> {
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => LoadError::FileMissing { path: path.into() },
        _ => LoadError::Io { path: path.into(), source },
    })?;
    let size = file.metadata().map_err(|source| LoadError::Io { path: path.into(), source })?.len();
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| unreadable(path, &e))?;
    reader.rewind().map_err(|source| LoadError::Io { path: path.into(), source })?;
    let mut file = GgufFile { path, content, reader, size };
    let architecture = file
        .string("general.architecture")
        .ok_or_else(|| LoadError::GgufMetadata {
            path: path.into(),
            key: "general.architecture".into(),
            expected: "the model's architecture, e.g. `llama`".into(),
        })?
        .to_string();
    let tokenizer = tokenizer::from_gguf(path, &file.content)?;
    let vocab = match file.content.metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array(tokens)) => tokens.len(),
        _ => 0,
    };
    let special = |key: &str| file.number(key).and_then(|v| u32::try_from(v as i64).ok());
    let (bos, eos) = (special("tokenizer.ggml.bos_token_id"), special("tokenizer.ggml.eos_token_id"));
    let facts = super::config::GgufFacts {
        tied: !file.has("output.weight"),
        qkv_bias: file.has("blk.0.attn_q.bias"),
        vocab,
        bos,
        eos: eos.into_iter().collect(),
    };
    let scaling_key = format!("{architecture}.rope.scaling.type");
    if let Some(scaling) = file.string(&scaling_key).filter(|&t| t != "none" && t != "linear") {
        return Err(LoadError::GgufMetadata {
            path: path.into(),
            key: scaling_key,
            expected: format!("`none` or `linear` (sched has no `{scaling}` RoPE scaling)"),
        });
    }
    let config = LlamaConfig::from_gguf(path, &architecture, &|key| file.number(key), facts)?;
    let chat_template = file.string("tokenizer.chat_template").map(str::to_string);
    let network = read_network(&mut file, config, dequantize, architecture == "llama")?;
    tokenizer::check_vocab(path, &tokenizer, network.config.vocab)?;
    Ok(LlamaModel::new(network, Some(tokenizer), chat_template, path.display().to_string()))
}

/// Every weight of the network. `permuted`: the query and key rows are in llama.cpp's order.
fn read_network(
    file: &mut GgufFile<'_>,
    config: LlamaConfig,
    dequantize: bool,
    permuted: bool,
) -> Result<Network, LoadError> {
    let c = config.clone();
    let (hidden, kv) = (c.hidden, c.kv_heads * c.head_dim);
    let q_width = c.heads * c.head_dim;
    let embedding = file.matrix("token_embd.weight", c.vocab, hidden, None, dequantize)?;
    let mut blocks = Vec::with_capacity(c.layers);
    for i in 0..c.layers {
        let name = |part: &str| format!("blk.{i}.{part}");
        let (q_heads, k_heads) = if permuted { (Some(c.heads), Some(c.kv_heads)) } else { (None, None) };
        let qkv_bias = if c.qkv_bias {
            Some([
                file.vector(&name("attn_q.bias"), q_width)?,
                file.vector(&name("attn_k.bias"), kv)?,
                file.vector(&name("attn_v.bias"), kv)?,
            ])
        } else {
            None
        };
        blocks.push(Block {
            attention_norm: file.vector(&name("attn_norm.weight"), hidden)?,
            q: file.matrix(&name("attn_q.weight"), q_width, hidden, q_heads, dequantize)?,
            k: file.matrix(&name("attn_k.weight"), kv, hidden, k_heads, dequantize)?,
            v: file.matrix(&name("attn_v.weight"), kv, hidden, None, dequantize)?,
            qkv_bias,
            o: file.matrix(&name("attn_output.weight"), hidden, q_width, None, dequantize)?,
            ffn_norm: file.vector(&name("ffn_norm.weight"), hidden)?,
            gate: file.matrix(&name("ffn_gate.weight"), c.intermediate, hidden, None, dequantize)?,
            up: file.matrix(&name("ffn_up.weight"), c.intermediate, hidden, None, dequantize)?,
            down: file.matrix(&name("ffn_down.weight"), hidden, c.intermediate, None, dequantize)?,
        });
    }
    let norm = file.vector("output_norm.weight", hidden)?;
    let output = if c.tied { None } else { Some(file.matrix("output.weight", c.vocab, hidden, None, dequantize)?) };
    // Llama 3's scaled RoPE is in the file as each frequency's divisor.
    let factors =
        if file.has("rope_freqs.weight") { Some(file.vector("rope_freqs.weight", c.head_dim / 2)?) } else { None };
    let rope = RopeAngles::new(&c.rope, c.head_dim, factors);
    let arithmetic = if dequantize { Arithmetic::Transformers } else { Arithmetic::LlamaCpp };
    Ok(Network { config, embedding, blocks, norm, output, rope, arithmetic, interleaved_heads: permuted })
}
