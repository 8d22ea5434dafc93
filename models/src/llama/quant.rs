//! Matrices of llama.cpp's 32-weight blocks (Q4_0, Q4_1, Q8_0) times f32 activations, as
//! llama.cpp multiplies them.
//!
//! A block holds 32 weights of one row and an f16 scale `d`:
//! - Q4_0: 16 bytes of 4-bit codes `q` (byte `j` holds code `j` in its low half, code `j + 16` in
//!   its high half); weight `j` is `d (q_j − 8)`;
//! - Q4_1: also an f16 minimum `m`; weight `j` is `d q_j + m`;
//! - Q8_0: 32 signed bytes; weight `j` is `d q_j`.
//!
//! The activations are quantized first, as llama.cpp's x86 `quantize_row_q8_0` and
//! `quantize_row_q8_1` do: per block of 32, the scale `d_a = max|x| / 127` (stored as f16) and the
//! codes `round(x · 127 / max|x|)`, rounded half to even; Q8_1 (for Q4_1) also keeps
//! `s_a = d_a Σ codes` as f16. A block's product is `d d_a Σ q_j a_j` (Q4_0 with `q_j − 8`, Q8_0),
//! plus `m s_a` for Q4_1, as `ggml_vec_dot_*` compute them: the sums of codes are exact integers,
//! so the kernels differ only in the order of their f32 additions.
//!
//! The AVX2 kernels (chosen at run time when the CPU has AVX2 and FMA) multiply 32 codes at a time
//! with `vpmaddubsw`; the scalar kernels are their reference elsewhere.

use half::f16;
use rayon::prelude::*;

/// Weights per block.
const BLOCK: usize = 32;
/// Output rows one task computes.
const ROWS_PER_TASK: usize = 16;

/// The block formats with kernels here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Format {
    /// Bytes per block.
    fn block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
        }
    }

    /// The weights of one block.
    fn dequantize(self, block: &[u8], out: &mut Vec<f32>) {
        let d = half(block, 0);
        match self {
            Format::Q4_0 => {
                let codes = &block[2..18];
                out.extend(codes.iter().map(|&c| d * (f32::from(c & 0xF) - 8.0)));
                out.extend(codes.iter().map(|&c| d * (f32::from(c >> 4) - 8.0)));
            }
            Format::Q4_1 => {
                let (m, codes) = (half(block, 2), &block[4..20]);
                out.extend(codes.iter().map(|&c| d * f32::from(c & 0xF) + m));
                out.extend(codes.iter().map(|&c| d * f32::from(c >> 4) + m));
            }
            Format::Q8_0 => out.extend(block[2..34].iter().map(|&c| d * f32::from(c as i8))),
        }
    }
}

/// One block of activations quantized to 8 bits.
#[derive(Clone, Copy)]
struct Q8Block {
    d: f32,
    /// `d Σ codes`, rounded through f16 (Q8_1's `s`).
    s: f32,
    codes: [i8; BLOCK],
}

/// A matrix `[outputs, inputs]` of blocks, row-major.
pub(crate) struct BlockMatrix {
    format: Format,
    data: Vec<u8>,
    outputs: usize,
    inputs: usize,
}

impl BlockMatrix {
    /// The matrix of a GGUF tensor's bytes.
    pub(crate) fn new(
        format: Format,
        data: Vec<u8>,
        outputs: usize,
        inputs: usize,
    ) -> candle_core::Result<BlockMatrix> {
        if !inputs.is_multiple_of(BLOCK) {
            candle_core::bail!("a {format:?} matrix's rows hold whole blocks of {BLOCK}, not {inputs} weights");
        }
        if Some(data.len()) != outputs.checked_mul(inputs / BLOCK * format.block_bytes()) {
            candle_core::bail!("{} bytes are not {outputs} rows of {inputs} {format:?} weights", data.len());
        }
        Ok(BlockMatrix { format, data, outputs, inputs })
    }

    pub(crate) fn outputs(&self) -> usize {
        self.outputs
    }

    pub(crate) fn inputs(&self) -> usize {
        self.inputs
    }

    fn row_bytes(&self, row: usize) -> &[u8] {
        let width = self.inputs / BLOCK * self.format.block_bytes();
        &self.data[row * width..(row + 1) * width]
    }

    /// Row `row` dequantized.
    pub(crate) fn row(&self, row: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.inputs);
        for block in self.row_bytes(row).chunks_exact(self.format.block_bytes()) {
            self.format.dequantize(block, &mut out);
        }
        out
    }

    /// `x wᵀ` for `rows` rows of `x`: `[rows, outputs]`.
    pub(crate) fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let outputs = self.outputs;
        let activations: Vec<Vec<Q8Block>> = x.chunks_exact(self.inputs).map(quantize_row).collect();
        let dot = dot_kernel(self.format);
        // Computed as `[outputs, rows]`, so each task writes whole rows of its own.
        let mut transposed = vec![0.0f32; outputs * rows];
        transposed.par_chunks_mut(ROWS_PER_TASK * rows).enumerate().for_each(|(task, chunk)| {
            for (k, out) in chunk.chunks_exact_mut(rows).enumerate() {
                let weights = self.row_bytes(task * ROWS_PER_TASK + k);
                for (value, activation) in out.iter_mut().zip(&activations) {
                    *value = dot(weights, activation);
                }
            }
        });
        if rows == 1 {
            return transposed;
        }
        let mut out = vec![0.0f32; rows * outputs];
        for (o, column) in transposed.chunks_exact(rows).enumerate() {
            for (r, &value) in column.iter().enumerate() {
                out[r * outputs + o] = value;
            }
        }
        out
    }
}

/// The f16 at `at` of a block, as f32.
fn half(block: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[at], block[at + 1]])).to_f32()
}

/// One row of activations as 8-bit blocks.
fn quantize_row(x: &[f32]) -> Vec<Q8Block> {
    x.chunks_exact(BLOCK)
        .map(|values| {
            let max = values.iter().fold(0.0f32, |max, v| max.max(v.abs()));
            let d = max / 127.0;
            let inverse = if max != 0.0 { 127.0 / max } else { 0.0 };
            let mut codes = [0i8; BLOCK];
            let mut sum = 0i32;
            for (code, &v) in codes.iter_mut().zip(values) {
                // |v · 127 / max| ≤ 127 up to rounding, so the code fits a byte.
                let q = (v * inverse).round_ties_even() as i32;
                *code = q.clamp(-127, 127) as i8;
                sum += i32::from(*code);
            }
            Q8Block { d: f16::from_f32(d).to_f32(), s: f16::from_f32(d * sum as f32).to_f32(), codes }
        })
        .collect()
}

/// The dot product of a row of weight blocks with a row of activation blocks.
type Dot = fn(&[u8], &[Q8Block]) -> f32;

/// The fastest dot product of `format` this CPU runs.
fn dot_kernel(format: Format) -> Dot {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        return match format {
            Format::Q4_0 => avx2::q4_0,
            Format::Q4_1 => avx2::q4_1,
            Format::Q8_0 => avx2::q8_0,
        };
    }
    match format {
        Format::Q4_0 => scalar_q4_0,
        Format::Q4_1 => scalar_q4_1,
        Format::Q8_0 => scalar_q8_0,
    }
}

fn scalar_q4_0(weights: &[u8], activations: &[Q8Block]) -> f32 {
    let mut sum = 0.0f32;
    for (block, a) in weights.chunks_exact(18).zip(activations) {
        let codes = &block[2..18];
        let (low, high) = a.codes.split_at(BLOCK / 2);
        let mut integer = 0i32;
        for ((&c, &x), &y) in codes.iter().zip(low).zip(high) {
            integer += (i32::from(c & 0xF) - 8) * i32::from(x) + (i32::from(c >> 4) - 8) * i32::from(y);
        }
        sum += half(block, 0) * a.d * integer as f32;
    }
    sum
}

fn scalar_q4_1(weights: &[u8], activations: &[Q8Block]) -> f32 {
    let mut sum = 0.0f32;
    for (block, a) in weights.chunks_exact(20).zip(activations) {
        let codes = &block[4..20];
        let (low, high) = a.codes.split_at(BLOCK / 2);
        let mut integer = 0i32;
        for ((&c, &x), &y) in codes.iter().zip(low).zip(high) {
            integer += i32::from(c & 0xF) * i32::from(x) + i32::from(c >> 4) * i32::from(y);
        }
        sum += half(block, 0) * a.d * integer as f32 + half(block, 2) * a.s;
    }
    sum
}

fn scalar_q8_0(weights: &[u8], activations: &[Q8Block]) -> f32 {
    let mut sum = 0.0f32;
    for (block, a) in weights.chunks_exact(34).zip(activations) {
        let integer: i32 = block[2..34].iter().zip(&a.codes).map(|(&w, &x)| i32::from(w as i8) * i32::from(x)).sum();
        sum += half(block, 0) * a.d * integer as f32;
    }
    sum
}

/// The AVX2 kernels, each the scalar kernel of its format with the block's 32 products summed in
/// 8 integer lanes, then scaled and accumulated in llama.cpp's order (see `dot`).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Q8Block, half};

    pub(super) fn q4_0(weights: &[u8], activations: &[Q8Block]) -> f32 {
        // SAFETY: `dot_kernel` returns this function only when the CPU has AVX2 and FMA.
        unsafe { dot::<18>(weights, activations, Codes::Q4_0) }
    }

    pub(super) fn q4_1(weights: &[u8], activations: &[Q8Block]) -> f32 {
        // SAFETY: as for `q4_0`.
        unsafe { dot::<20>(weights, activations, Codes::Q4_1) }
    }

    pub(super) fn q8_0(weights: &[u8], activations: &[Q8Block]) -> f32 {
        // SAFETY: as for `q4_0`.
        unsafe { dot::<34>(weights, activations, Codes::Q8_0) }
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Codes {
        Q4_0,
        Q4_1,
        Q8_0,
    }

    /// The 32 weight codes of a block as bytes: unsigned 0..15 for Q4_1, signed otherwise.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn codes(block: &[u8], kind: Codes) -> __m256i {
        // SAFETY: the caller's block holds the format's bytes (18, 20 or 34), so the loads below
        // stay inside it; unaligned loads are allowed.
        unsafe {
            match kind {
                Codes::Q8_0 => _mm256_loadu_si256(block.as_ptr().add(2).cast::<__m256i>()),
                Codes::Q4_0 | Codes::Q4_1 => {
                    let at = if kind == Codes::Q4_0 { 2 } else { 4 };
                    let packed = _mm_loadu_si128(block.as_ptr().add(at).cast::<__m128i>());
                    let low = _mm_set1_epi8(0x0F);
                    let lo = _mm_and_si128(packed, low);
                    let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
                    let unpacked = _mm256_set_m128i(hi, lo);
                    if kind == Codes::Q4_0 { _mm256_sub_epi8(unpacked, _mm256_set1_epi8(8)) } else { unpacked }
                }
            }
        }
    }

    /// Σ w_j a_j of 32 byte pairs as 8 i32 lanes: unsigned × signed directly, signed × signed by
    /// moving the weights' signs onto the activations (llama.cpp's `mul_sum_i8_pairs`).
    #[target_feature(enable = "avx2,fma")]
    fn products(weights: __m256i, activations: __m256i, unsigned: bool) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        let pairs = if unsigned {
            _mm256_maddubs_epi16(weights, activations)
        } else {
            _mm256_maddubs_epi16(_mm256_sign_epi8(weights, weights), _mm256_sign_epi8(activations, weights))
        };
        _mm256_madd_epi16(pairs, ones)
    }

    /// The sum of 8 i32 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn lane_sum(lanes: __m256i) -> i32 {
        let half_sum = _mm_add_epi32(_mm256_castsi256_si128(lanes), _mm256_extracti128_si256(lanes, 1));
        let quarter = _mm_add_epi32(half_sum, _mm_unpackhi_epi64(half_sum, half_sum));
        _mm_cvtsi128_si32(_mm_add_epi32(quarter, _mm_shuffle_epi32(quarter, 1)))
    }

    /// The dot product of a row of blocks. Q4_1 and Q8_0 keep 8 f32 lanes across blocks, as
    /// llama.cpp's `ggml_vec_dot_q4_1_q8_1` and `ggml_vec_dot_q8_0_q8_0`; Q4_0 sums each block's
    /// products as one integer and accumulates it with one fused multiply-add, as llama.cpp's
    /// x86 kernels of repacked Q4_0 (`ggml_gemv_q4_0_8x8_q8_0`), which it uses for every Q4_0
    /// matrix whose rows come in eights.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot<const BYTES: usize>(weights: &[u8], activations: &[Q8Block], kind: Codes) -> f32 {
        let mut lanes = _mm256_setzero_ps();
        let mut scalar = 0.0f32;
        for (block, a) in weights.chunks_exact(BYTES).zip(activations) {
            let d = half(block, 0);
            if kind == Codes::Q4_1 {
                scalar += half(block, 2) * a.s;
            }
            // SAFETY: `block` holds `BYTES` bytes of the format; an activation block holds 32
            // codes. Unaligned loads are allowed.
            let (w, x) = unsafe { (codes(block, kind), _mm256_loadu_si256(a.codes.as_ptr().cast::<__m256i>())) };
            let products = products(w, x, kind == Codes::Q4_1);
            if kind == Codes::Q4_0 {
                scalar = (lane_sum(products) as f32).mul_add(d * a.d, scalar);
            } else {
                lanes = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(products), lanes);
            }
        }
        let half_sum = _mm_add_ps(_mm256_castps256_ps128(lanes), _mm256_extractf128_ps(lanes, 1));
        let quarter = _mm_add_ps(half_sum, _mm_movehl_ps(half_sum, half_sum));
        let total = _mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1));
        _mm_cvtss_f32(total) + scalar
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random matrix of `format` and activations, from a SplitMix64 stream.
    fn random(format: Format, outputs: usize, inputs: usize, rows: usize, seed: u64) -> (BlockMatrix, Vec<f32>) {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut data = Vec::new();
        for _ in 0..outputs * inputs / BLOCK {
            data.extend(f16::from_f32((next() % 1000) as f32 / 20000.0).to_bits().to_le_bytes());
            match format {
                Format::Q4_0 => data.extend((0..16).map(|_| next() as u8)),
                Format::Q4_1 => {
                    data.extend(f16::from_f32(-((next() % 1000) as f32) / 5000.0).to_bits().to_le_bytes());
                    data.extend((0..16).map(|_| next() as u8));
                }
                Format::Q8_0 => data.extend((0..32).map(|_| (next() % 255) as u8 ^ 0x80)),
            }
        }
        let x = (0..rows * inputs).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
        (BlockMatrix::new(format, data, outputs, inputs).expect("a whole matrix"), x)
    }

    #[test]
    fn the_kernels_are_the_scalar_dots_and_close_to_the_dequantized_products() {
        for format in [Format::Q4_0, Format::Q4_1, Format::Q8_0] {
            let (outputs, inputs, rows) = (37, 96, 3);
            let (matrix, x) = random(format, outputs, inputs, rows, 7);
            let product = matrix.forward(&x, rows);
            let scalar = match format {
                Format::Q4_0 => scalar_q4_0,
                Format::Q4_1 => scalar_q4_1,
                Format::Q8_0 => scalar_q8_0,
            };
            for r in 0..rows {
                let activation = quantize_row(&x[r * inputs..(r + 1) * inputs]);
                for o in 0..outputs {
                    let reference = scalar(matrix.row_bytes(o), &activation);
                    let got = product[r * outputs + o];
                    assert!(
                        (got - reference).abs() <= 1e-5 * reference.abs().max(1.0),
                        "{format:?}: {got} vs {reference}"
                    );
                    // Against the product of the dequantized weights: each activation is off by at
                    // most half its block's step, so the product by at most Σ |w_j| step_j / 2.
                    let weights = matrix.row(o);
                    let exact: f32 = weights.iter().zip(&x[r * inputs..]).map(|(w, v)| w * v).sum();
                    let bound: f32 =
                        weights.iter().enumerate().map(|(j, w)| w.abs() * activation[j / BLOCK].d / 2.0).sum();
                    assert!((got - exact).abs() <= bound * 1.01 + 1e-4, "{format:?}: {got} vs {exact} (bound {bound})");
                }
            }
        }
        assert!(BlockMatrix::new(Format::Q4_1, vec![0; 19], 1, 32).is_err());
        assert!(BlockMatrix::new(Format::Q8_0, vec![0; 34], 1, 31).is_err());
    }
}
