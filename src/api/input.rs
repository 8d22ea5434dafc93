//! Values from outside a program: parameters written as text (the command line's `--param`),
//! tensors read from files (`--input`), and the prompt of token schedules (`--prompt`, `--chat`).

use std::path::Path;
use std::sync::Arc;

use sched_compiler::ir::{ParamInfo, ParamTy, Ty};
use sched_runtime::model::{ChatMessage, Model};
use sched_runtime::tensor::Tensor;

use super::{ApiError, Value};

/// What starts every row of a token schedule's `prompt()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Text: encoded by the token model's tokenizer, or, for a model with a word list and no
    /// tokenizer that writes text, its words separated by spaces.
    Text(String),
    /// One user message, rendered by the model's chat template, then encoded.
    Chat(String),
}

/// The token ids of `prompt` for the first token model of `models`.
pub fn encode_prompt(models: &[Arc<dyn Model>], prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
    let fail = |message: String| ApiError::Prompt { message };
    let Some(model) = models.iter().find_map(|m| m.tokens()) else {
        return Err(fail("a prompt needs a token model, and the schedule binds none".into()));
    };
    match (prompt, model.text()) {
        (Prompt::Text(text), Some(codec)) => Ok(codec.encode(text)?),
        (Prompt::Chat(message), Some(codec)) => {
            let rendered = codec.chat(&[ChatMessage { role: "user".into(), content: message.clone() }])?;
            Ok(codec.encode(&rendered)?)
        }
        (Prompt::Chat(_), None) => {
            Err(fail("a chat needs a language model with a tokenizer and a chat template".into()))
        }
        (Prompt::Text(text), None) => {
            let vocab = model.vocab();
            if vocab.words.is_none() {
                return Err(fail("the token model has no word list (give its checkpoint a tokenizer.json)".into()));
            }
            text.split_whitespace()
                .map(|word| {
                    vocab.id(word).ok_or_else(|| {
                        let known: Vec<&str> = vocab.words.iter().flatten().take(40).map(String::as_str).collect();
                        fail(format!("`{word}` is not in the model's vocabulary (it has: {})", known.join(", ")))
                    })
                })
                .collect()
        }
    }
}

/// The value of `param` written as `text`, by the parameter's type.
pub(super) fn parse_value(param: &ParamInfo, text: &str) -> Result<Value, ApiError> {
    let name = param.name.clone();
    let bad = |expected| ApiError::ParamText { name: name.clone(), expected, text: text.to_string() };
    let not_text = |what, help: String| ApiError::ParamNotText { name: name.clone(), what, help };
    match param.ty {
        ParamTy::Host(Ty::I64) => text.parse().map(Value::Int).map_err(|_| bad("an int")),
        ParamTy::Host(Ty::F64) => text.parse().map(Value::Float).map_err(|_| bad("a float")),
        ParamTy::Host(Ty::Bool) => text.parse().map(Value::Bool).map_err(|_| bad("a bool (true or false)")),
        ParamTy::Tensor => Err(not_text("a tensor", format!("pass it as a file (`--input {name}=FILE.npy`)"))),
        ParamTy::Model(_) => Err(not_text("a model", format!("bind it to a checkpoint (`--model {name}=PATH`)"))),
        _ => Err(not_text("not settable", "it cannot be set from outside the schedule".into())),
    }
}

/// Reads a tensor from `.npy` (f32 or f64) or `.safetensors` (its only, or first, f32 tensor).
pub fn read_tensor(path: &Path) -> Result<Tensor, ApiError> {
    let fail = |message: String| ApiError::Input { path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| fail(format!("not a .npy file: {e}")))?;
            let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
            let data: Vec<f32> = match npy.dtype() {
                npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 8 => {
                    let values: Vec<f64> = npy.into_vec().map_err(|e| fail(e.to_string()))?;
                    values.into_iter().map(|v| v as f32).collect()
                }
                _ => npy.into_vec().map_err(|e| fail(format!("expected f32 or f64 data: {e}")))?,
            };
            Ok(Tensor::new(shape, data))
        }
        Some("safetensors") => {
            let tensors = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| fail(format!("not a safetensors file: {e}")))?;
            let mut names = tensors.names();
            names.sort();
            let name = names.first().ok_or_else(|| fail("the file holds no tensor".into()))?;
            let view = tensors.tensor(name).map_err(|e| fail(e.to_string()))?;
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(fail(format!("tensor `{name}` is {:?}, expected F32", view.dtype())));
            }
            let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            Ok(Tensor::new(view.shape().to_vec(), data))
        }
        _ => Err(fail("inputs are .npy or .safetensors files".into())),
    }
}
