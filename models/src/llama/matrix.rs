//! The weight matrices of a language model and their products with activations, on the host.
//!
//! A matrix is `[outputs, inputs]`, row-major, as checkpoints store linear layers. It is kept the
//! way its file stores it:
//! - f32 (a Hugging Face checkpoint, or a GGUF file read dequantized): [`super::dense`]'s kernels
//!   for the few rows of a decoding step, candle's matrix product for more;
//! - Q4_0, Q4_1 and Q8_0: [`super::quant`]'s kernels, which quantize the activations to 8 bits
//!   exactly as llama.cpp does (candle multiplies Q4_1 one scalar at a time, and rounds Q8_0's
//!   activations to 256-weight blocks);
//! - the K-quants: candle's quantized product, whose activations are llama.cpp's Q8_K, with the
//!   CPU's integer dot products where candle has kernels for them.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{CpuStorage, Device, Module, Storage, Tensor as CTensor};

use super::dense;
use super::quant::{BlockMatrix, Format};

/// A weight matrix and how it multiplies.
pub(crate) enum Matrix {
    Dense(CTensor),
    Quantized(QMatMul),
    Blocks(BlockMatrix),
}

impl Matrix {
    /// A matrix of f32 values `[outputs, inputs]`.
    pub(crate) fn dense(values: Vec<f32>, outputs: usize, inputs: usize) -> candle_core::Result<Matrix> {
        Ok(Matrix::Dense(CTensor::from_vec(values, (outputs, inputs), &Device::Cpu)?))
    }

    /// A quantized matrix as its file stores it, or dequantized to f32 when `dequantize`.
    pub(crate) fn quantized(tensor: QTensor, dequantize: bool) -> candle_core::Result<Matrix> {
        if dequantize || tensor.dtype() == GgmlDType::F32 {
            return Ok(Matrix::Dense(tensor.dequantize(&Device::Cpu)?));
        }
        let format = match tensor.dtype() {
            GgmlDType::Q4_0 => Some(Format::Q4_0),
            GgmlDType::Q4_1 => Some(Format::Q4_1),
            GgmlDType::Q8_0 => Some(Format::Q8_0),
            _ => None,
        };
        if let (Some(format), Ok((outputs, inputs))) = (format, tensor.shape().dims2()) {
            return Ok(Matrix::Blocks(BlockMatrix::new(format, &tensor.data()?, outputs, inputs)?));
        }
        Ok(Matrix::Quantized(QMatMul::from_qtensor(tensor)?))
    }

    /// `(outputs, inputs)`.
    pub(crate) fn shape(&self) -> candle_core::Result<(usize, usize)> {
        match self {
            Matrix::Dense(w) => w.dims2(),
            Matrix::Quantized(QMatMul::QTensor(w)) => w.shape().dims2(),
            Matrix::Quantized(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => w.dims2(),
            Matrix::Blocks(w) => Ok((w.outputs(), w.inputs())),
        }
    }

    /// `x wᵀ` for `rows` rows of `x` (`[rows, inputs]`): `[rows, outputs]`.
    pub(crate) fn forward(&self, x: &[f32], rows: usize) -> candle_core::Result<Vec<f32>> {
        let (_, inputs) = self.shape()?;
        if x.len() != rows * inputs {
            candle_core::bail!("{rows} rows of {inputs} inputs need {} values, got {}", rows * inputs, x.len());
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        match self {
            Matrix::Dense(w) if rows <= dense::FEW_ROWS => {
                let (storage, layout) = w.storage_and_layout();
                match (&*storage, layout.contiguous_offsets()) {
                    (Storage::Cpu(CpuStorage::F32(values)), Some((start, end))) => {
                        let (outputs, _) = w.dims2()?;
                        Ok(dense::product(&values[start..end], outputs, inputs, x, rows))
                    }
                    _ => candle_core::bail!("a dense matrix is contiguous f32 on the host"),
                }
            }
            Matrix::Dense(w) => {
                let x = CTensor::from_slice(x, (rows, inputs), &Device::Cpu)?;
                x.matmul(&w.t()?)?.flatten_all()?.to_vec1::<f32>()
            }
            Matrix::Quantized(w) => {
                let x = CTensor::from_slice(x, (rows, inputs), &Device::Cpu)?;
                w.forward(&x)?.flatten_all()?.to_vec1::<f32>()
            }
            Matrix::Blocks(w) => Ok(w.forward(x, rows)),
        }
    }

    /// Every weight as f32, row-major `[outputs, inputs]` (a quantized matrix dequantized).
    pub(crate) fn to_f32(&self) -> candle_core::Result<Vec<f32>> {
        match self {
            Matrix::Dense(w) => w.flatten_all()?.to_vec1::<f32>(),
            Matrix::Quantized(QMatMul::QTensor(w)) => w.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>(),
            Matrix::Quantized(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => {
                w.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()
            }
            Matrix::Blocks(w) => Ok((0..w.outputs()).flat_map(|row| w.row(row)).collect()),
        }
    }

    /// Row `row` of the matrix as f32 (an embedding's lookup).
    pub(crate) fn row(&self, row: usize) -> candle_core::Result<Vec<f32>> {
        match self {
            Matrix::Dense(w) => w.get(row)?.to_vec1::<f32>(),
            Matrix::Quantized(QMatMul::QTensor(w)) => {
                let ids = CTensor::new(&[row as u32], &Device::Cpu)?;
                w.embedding(&ids)?.flatten_all()?.to_vec1::<f32>()
            }
            Matrix::Quantized(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => w.get(row)?.to_vec1::<f32>(),
            Matrix::Blocks(w) => Ok(w.row(row)),
        }
    }
}
