//! Values from outside a program: parameters written as text (the command line's `--param`) and
//! tensors read from files (`--input`).

use std::path::Path;

use sched_compiler::ir::{ParamInfo, ParamTy, Ty};
use sched_runtime::tensor::Tensor;

use super::{ApiError, Value};

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
