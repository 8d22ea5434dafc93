//! Matrices of llama.cpp's 32-weight blocks (Q4_0, Q4_1, Q8_0) times f32 activations, as
//! llama.cpp multiplies them.
//!
//! A block holds 32 weights of one row and an f16 scale `d`:
//! - Q4_0: 16 bytes of 4-bit codes `q` (byte `j` holds code `j` in its low half, code `j + 16` in
//!   its high half); weight `j` is `d (q_j − 8)`;
//! - Q4_1: also an f16 minimum `m`; weight `j` is `d q_j + m`;
//! - Q8_0: 32 signed bytes; weight `j` is `d q_j`.
//!
//! The matrix keeps the file's blocks as they are: a product streams the fewest bytes, in one
//! stream per row.
//!
//! The activations are quantized first, as llama.cpp's x86 `quantize_row_q8_0` and
//! `quantize_row_q8_1` do: per block of 32, the scale `d_a = max|x| / 127` (stored as f16) and the
//! codes `round(x · 127 / max|x|)`, rounded half to even; Q8_1 (for Q4_1) also keeps
//! `s_a = d_a Σ codes` as f16. A block's product is `d d_a Σ q_j a_j` (Q4_0 with `q_j − 8`, Q8_0),
//! plus `m s_a` for Q4_1, as `ggml_vec_dot_*` compute them: the sums of codes are exact integers,
//! and the AVX2 kernels add the f32 terms in llama.cpp's order (see `avx2::dot`).
//!
//! The AVX2 kernels are chosen at run time when the CPU has AVX2, FMA and F16C; the scalar kernels are
//! their reference elsewhere, equal up to the order of their f32 additions.

use half::f16;

use super::ggml::fused;
use super::streams::{self, ROWS};

/// Weights per block.
const BLOCK: usize = 32;
/// The fewest block products worth handing to another thread (some microseconds of work).
const MIN_PART_BLOCKS: usize = 2048;

/// The block formats with kernels here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Format {
    /// Bytes per block in a file.
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
pub(crate) struct BlockMatrix(Blocks);

struct Blocks {
    format: Format,
    /// The file's blocks, row after row.
    data: Vec<u8>,
    outputs: usize,
    inputs: usize,
}

/// One row of a [`BlockMatrix`]: its blocks' bytes.
type Row<'a> = &'a [u8];

impl BlockMatrix {
    /// The matrix of a GGUF tensor's bytes.
    pub(crate) fn new(format: Format, data: &[u8], outputs: usize, inputs: usize) -> candle_core::Result<BlockMatrix> {
        if !inputs.is_multiple_of(BLOCK) {
            candle_core::bail!("a {format:?} matrix's rows hold whole blocks of {BLOCK}, not {inputs} weights");
        }
        if Some(data.len()) != outputs.checked_mul(inputs / BLOCK * format.block_bytes()) {
            candle_core::bail!("{} bytes are not {outputs} rows of {inputs} {format:?} weights", data.len());
        }
        let matrix = Blocks { format, data: data.to_vec(), outputs, inputs };
        Ok(BlockMatrix(matrix))
    }

    pub(crate) fn outputs(&self) -> usize {
        self.0.outputs
    }

    pub(crate) fn inputs(&self) -> usize {
        self.0.inputs
    }

    /// Row `row` dequantized.
    pub(crate) fn row(&self, row: usize) -> Vec<f32> {
        self.0.row(row)
    }

    /// `x wᵀ` for `rows` rows of `x`: `[rows, outputs]`.
    pub(crate) fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let (outputs, inputs) = (self.0.outputs, self.0.inputs);
        let activations: Vec<Vec<Q8Block>> = x.chunks_exact(inputs).map(quantize_row).collect();
        let Kernels { one, two } = kernels(self.0.format);
        let min_part = MIN_PART_BLOCKS.div_ceil((rows * (inputs / BLOCK)).max(1));
        let weight = |o: usize| self.0.row_of(o);
        let activation = |r: usize| activations[r].as_slice();
        // Two activation rows at a time share each weight block's decoding.
        streams::product(outputs, activations.len(), min_part, &weight, &activation, &one, &two)
    }
}

impl Blocks {
    fn row_of(&self, row: usize) -> Row<'_> {
        let width = self.inputs / BLOCK * self.format.block_bytes();
        &self.data[row * width..(row + 1) * width]
    }

    fn row(&self, row: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.inputs);
        for block in self.row_of(row).chunks_exact(self.format.block_bytes()) {
            self.format.dequantize(block, &mut out);
        }
        out
    }
}

/// The f16 at `at` of a block, as f32.
fn half(block: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[at], block[at + 1]])).to_f32()
}

fused! {
    /// One row of activations as 8-bit blocks.
    fn quantize_row(x: &[f32]) -> Vec<Q8Block> => quantize_row_body
}

#[inline(always)]
fn quantize_row_body(x: &[f32]) -> Vec<Q8Block> {
    let mut blocks = Vec::with_capacity(x.len() / BLOCK);
    for values in x.chunks_exact(BLOCK) {
        let mut max = 0.0f32;
        for &v in values {
            max = max.max(v.abs());
        }
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
        blocks.push(Q8Block { d: f16::from_f32(d).to_f32(), s: f16::from_f32(d * sum as f32).to_f32(), codes });
    }
    blocks
}

/// The dot products of `ROWS` rows of weight blocks with `C` rows of activation blocks: for each
/// activation row, its products with the weight rows.
type Dot<const C: usize> = fn([Row<'_>; ROWS], [&[Q8Block]; C]) -> [[f32; ROWS]; C];

/// The kernels of one format, for one and two activation rows at a time.
struct Kernels {
    one: Dot<1>,
    two: Dot<2>,
}

/// The fastest kernels of `format` this CPU runs.
fn kernels(format: Format) -> Kernels {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
    {
        return match format {
            Format::Q4_0 => Kernels { one: avx2::q4_0::<1>, two: avx2::q4_0::<2> },
            Format::Q4_1 => Kernels { one: avx2::q4_1::<1>, two: avx2::q4_1::<2> },
            Format::Q8_0 => Kernels { one: avx2::q8_0::<1>, two: avx2::q8_0::<2> },
        };
    }
    fn scalar<const C: usize>(
        dot: fn(Row<'_>, &[Q8Block]) -> f32,
    ) -> impl Fn([Row<'_>; ROWS], [&[Q8Block]; C]) -> [[f32; ROWS]; C] {
        move |rows, activations| activations.map(|a| rows.map(|row| dot(row, a)))
    }
    match format {
        Format::Q4_0 => Kernels { one: |r, a| scalar(scalar_q4_0)(r, a), two: |r, a| scalar(scalar_q4_0)(r, a) },
        Format::Q4_1 => Kernels { one: |r, a| scalar(scalar_q4_1)(r, a), two: |r, a| scalar(scalar_q4_1)(r, a) },
        Format::Q8_0 => Kernels { one: |r, a| scalar(scalar_q8_0)(r, a), two: |r, a| scalar(scalar_q8_0)(r, a) },
    }
}

fn scalar_q4_0(weights: Row<'_>, activations: &[Q8Block]) -> f32 {
    let mut sum = 0.0f32;
    for (block, a) in weights.chunks_exact(18).zip(activations) {
        let (low, high) = a.codes.split_at(BLOCK / 2);
        let mut integer = 0i32;
        for ((&c, &x), &y) in block[2..].iter().zip(low).zip(high) {
            integer += (i32::from(c & 0xF) - 8) * i32::from(x) + (i32::from(c >> 4) - 8) * i32::from(y);
        }
        sum += half(block, 0) * a.d * integer as f32;
    }
    sum
}

fn scalar_q4_1(weights: Row<'_>, activations: &[Q8Block]) -> f32 {
    let mut sum = 0.0f32;
    for (block, a) in weights.chunks_exact(20).zip(activations) {
        let (low, high) = a.codes.split_at(BLOCK / 2);
        let mut integer = 0i32;
        for ((&c, &x), &y) in block[4..].iter().zip(low).zip(high) {
            integer += i32::from(c & 0xF) * i32::from(x) + i32::from(c >> 4) * i32::from(y);
        }
        sum += half(block, 0) * a.d * integer as f32 + half(block, 2) * a.s;
    }
    sum
}

fn scalar_q8_0(weights: Row<'_>, activations: &[Q8Block]) -> f32 {
    let mut sum = 0.0f32;
    for (block, a) in weights.chunks_exact(34).zip(activations) {
        let integer: i32 = block[2..].iter().zip(&a.codes).map(|(&w, &x)| i32::from(w as i8) * i32::from(x)).sum();
        sum += half(block, 0) * a.d * integer as f32;
    }
    sum
}

/// The AVX2 kernels, each the scalar kernel of its format with the block's 32 products summed in
/// 8 integer lanes, then scaled and accumulated in llama.cpp's order (see `dot`).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Q8Block, ROWS, Row};

    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q8_0: u8 = 2;

    pub(super) fn q4_0<const C: usize>(weights: [Row<'_>; ROWS], activations: [&[Q8Block]; C]) -> [[f32; ROWS]; C] {
        // SAFETY: `kernels` returns this function only when the CPU has AVX2, FMA and F16C.
        unsafe { dot::<Q4_0, C>(weights, activations) }
    }

    pub(super) fn q4_1<const C: usize>(weights: [Row<'_>; ROWS], activations: [&[Q8Block]; C]) -> [[f32; ROWS]; C] {
        // SAFETY: as for `q4_0`.
        unsafe { dot::<Q4_1, C>(weights, activations) }
    }

    pub(super) fn q8_0<const C: usize>(weights: [Row<'_>; ROWS], activations: [&[Q8Block]; C]) -> [[f32; ROWS]; C] {
        // SAFETY: as for `q4_0`.
        unsafe { dot::<Q8_0, C>(weights, activations) }
    }

    /// The 32 weight codes of the block at `codes`: unsigned 0..15 for Q4_1, signed otherwise.
    ///
    /// # Safety
    /// `codes` points at the block's 16 (Q4) or 32 (Q8_0) bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn codes<const KIND: u8>(codes: *const u8) -> __m256i {
        // SAFETY: the caller's pointer holds the block's codes; unaligned loads are allowed.
        unsafe {
            if KIND == Q8_0 {
                return _mm256_loadu_si256(codes.cast::<__m256i>());
            }
            let packed = _mm_loadu_si128(codes.cast::<__m128i>());
            let low = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(packed, low);
            let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
            let unpacked = _mm256_set_m128i(hi, lo);
            if KIND == Q4_0 { _mm256_sub_epi8(unpacked, _mm256_set1_epi8(8)) } else { unpacked }
        }
    }

    /// Σ w_j a_j of 32 byte pairs as 8 i32 lanes: unsigned × signed directly (Q4_1), signed ×
    /// signed by moving the weights' signs onto the activations (llama.cpp's `mul_sum_i8_pairs`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn products<const KIND: u8>(weights: __m256i, activations: __m256i) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        let pairs = if KIND == Q4_1 {
            _mm256_maddubs_epi16(weights, activations)
        } else {
            _mm256_maddubs_epi16(_mm256_sign_epi8(weights, weights), _mm256_sign_epi8(activations, weights))
        };
        _mm256_madd_epi16(pairs, ones)
    }

    /// The sum of 8 i32 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn lane_sum(lanes: __m256i) -> i32 {
        let half_sum = _mm_add_epi32(_mm256_castsi256_si128(lanes), _mm256_extracti128_si256(lanes, 1));
        let quarter = _mm_add_epi32(half_sum, _mm_unpackhi_epi64(half_sum, half_sum));
        _mm_cvtsi128_si32(_mm_add_epi32(quarter, _mm_shuffle_epi32(quarter, 1)))
    }

    /// The f16 at `at` as f32.
    ///
    /// # Safety
    /// `at` points at two readable bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn half(at: *const u8) -> f32 {
        // SAFETY: the caller's two bytes; unaligned reads are allowed.
        let bits = unsafe { at.cast::<u16>().read_unaligned() };
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// The dot products of `ROWS` rows of blocks with `C` rows of activations, each product's
    /// sum on its own (they only share the loop, which hides the latency of each chain of
    /// multiply-adds, and the decoding of each weight block). Q4_1 and Q8_0 keep 8 f32 lanes across blocks, as llama.cpp's
    /// `ggml_vec_dot_q4_1_q8_1` and `ggml_vec_dot_q8_0_q8_0`; Q4_0 sums each block's products as
    /// one integer and accumulates it with one fused multiply-add, as llama.cpp's x86 kernels of
    /// repacked Q4_0 (`ggml_gemv_q4_0_8x8_q8_0`), which it uses for every Q4_0 matrix whose rows
    /// come in eights.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot<const KIND: u8, const C: usize>(
        weights: [Row<'_>; ROWS],
        activations: [&[Q8Block]; C],
    ) -> [[f32; ROWS]; C] {
        let (bytes, codes_at) = match KIND {
            Q4_0 => (18, 2),
            Q4_1 => (20, 4),
            _ => (34, 2),
        };
        let mut blocks = usize::MAX;
        for row in &weights {
            blocks = blocks.min(row.len() / bytes);
        }
        for a in &activations {
            blocks = blocks.min(a.len());
        }
        let mut lanes = [[_mm256_setzero_ps(); ROWS]; C];
        let mut scalar = [[0.0f32; ROWS]; C];
        for b in 0..blocks {
            let mut x = [_mm256_setzero_si256(); C];
            for (x, a) in x.iter_mut().zip(&activations) {
                // SAFETY: an activation block holds 32 codes; unaligned loads are allowed.
                *x = unsafe { _mm256_loadu_si256(a[b].codes.as_ptr().cast::<__m256i>()) };
            }
            for r in 0..ROWS {
                // SAFETY: `b < blocks`, so the block's `bytes` bytes lie inside the row.
                let block = unsafe { weights[r].as_ptr().add(b * bytes) };
                // SAFETY: the scale, the minimum and the codes are bytes of the block.
                let (d, w) = unsafe { (half(block), codes::<KIND>(block.add(codes_at))) };
                // SAFETY: as above.
                let m = if KIND == Q4_1 { unsafe { half(block.add(2)) } } else { 0.0 };
                for c in 0..C {
                    let a = &activations[c][b];
                    if KIND == Q4_1 {
                        scalar[c][r] += m * a.s;
                    }
                    let products = products::<KIND>(w, x[c]);
                    if KIND == Q4_0 {
                        scalar[c][r] = (lane_sum(products) as f32).mul_add(d * a.d, scalar[c][r]);
                    } else {
                        lanes[c][r] =
                            _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(products), lanes[c][r]);
                    }
                }
            }
        }
        let mut out = [[0.0f32; ROWS]; C];
        for c in 0..C {
            for r in 0..ROWS {
                let half_sum = _mm_add_ps(_mm256_castps256_ps128(lanes[c][r]), _mm256_extractf128_ps(lanes[c][r], 1));
                let quarter = _mm_add_ps(half_sum, _mm_movehl_ps(half_sum, half_sum));
                let total = _mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1));
                out[c][r] = _mm_cvtss_f32(total) + scalar[c][r];
            }
        }
        out
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
        (BlockMatrix::new(format, &data, outputs, inputs).expect("a whole matrix"), x)
    }

    #[test]
    fn the_kernels_are_the_scalar_dots_and_close_to_the_dequantized_products() {
        for format in [Format::Q4_0, Format::Q4_1, Format::Q8_0] {
            // More outputs than one task takes, and a last task of fewer rows.
            let (outputs, inputs, rows) = (1000, 96, 3);
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
                    let reference = scalar(matrix.0.row_of(o), &activation);
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
        assert!(BlockMatrix::new(Format::Q4_1, &[0; 19], 1, 32).is_err());
        assert!(BlockMatrix::new(Format::Q8_0, &[0; 34], 1, 31).is_err());
    }
}
