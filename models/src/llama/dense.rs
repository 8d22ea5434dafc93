//! Products of an f32 matrix with a few rows of activations: decoding steps, verifications and
//! drafts, where streaming the weights once is the whole cost.
//!
//! A general matrix product (candle's) tiles for arithmetic, which pays at prefill but leaves a
//! one-token step at half the memory bandwidth. Here [`ROWS`] streamed weight rows at a time (in
//! the order of [`streams`]) meet one or two activation rows in 8-lane fused multiply-adds.
//!
//! Invariant: a product's value depends only on its weight row and its activation row, never on
//! how many rows (up to [`FEW_ROWS`]) are multiplied at once, so a verification of a few tokens
//! computes exactly what single steps would.

use super::streams::{self, ROWS};

/// The most activation rows worth multiplying here; more go to the general product.
pub(crate) const FEW_ROWS: usize = 16;
/// The fewest multiply-adds worth handing to another thread (some microseconds of work).
const MIN_PART_PRODUCTS: usize = 65_536;

/// The dot products of `ROWS` weight rows with `C` activation rows: for each activation row, its
/// products with the weight rows.
type Dot<const C: usize> = fn([&[f32]; ROWS], [&[f32]; C]) -> [[f32; ROWS]; C];

/// `x wᵀ` for `rows` rows of `x` (`[rows, inputs]`) and `w` `[outputs, inputs]`: `[rows, outputs]`.
pub(crate) fn product(w: &[f32], outputs: usize, inputs: usize, x: &[f32], rows: usize) -> Vec<f32> {
    let (one, two) = kernels();
    let min_part = MIN_PART_PRODUCTS.div_ceil((rows * inputs).max(1));
    let weight = |o: usize| &w[o * inputs..(o + 1) * inputs];
    let activation = |r: usize| &x[r * inputs..(r + 1) * inputs];
    streams::product(outputs, rows, min_part, &weight, &activation, &one, &two)
}

/// The fastest kernels this CPU runs, for one and two activation rows.
fn kernels() -> (Dot<1>, Dot<2>) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        return (avx2::dot::<1>, avx2::dot::<2>);
    }
    (scalar::<1>, scalar::<2>)
}

/// The reference kernel: each product summed in input order.
fn scalar<const C: usize>(weights: [&[f32]; ROWS], activations: [&[f32]; C]) -> [[f32; ROWS]; C] {
    activations.map(|a| weights.map(|w| w.iter().zip(a).map(|(w, a)| w * a).sum()))
}

/// The AVX2 kernel: each product in 8 lanes of fused multiply-adds over the inputs in eights,
/// the lanes summed, then the last `inputs mod 8` products added in order.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::ROWS;

    pub(super) fn dot<const C: usize>(weights: [&[f32]; ROWS], activations: [&[f32]; C]) -> [[f32; ROWS]; C] {
        // SAFETY: `kernels` returns this function only when the CPU has AVX2 and FMA.
        unsafe { lanes::<C>(weights, activations) }
    }

    /// The sum of 8 lanes: halves, then quarters, then pairs.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn lane_sum(lanes: __m256) -> f32 {
        let half = _mm_add_ps(_mm256_castps256_ps128(lanes), _mm256_extractf128_ps(lanes, 1));
        let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1)))
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lanes<const C: usize>(weights: [&[f32]; ROWS], activations: [&[f32]; C]) -> [[f32; ROWS]; C] {
        let mut n = usize::MAX;
        for row in weights.iter().chain(&activations) {
            n = n.min(row.len());
        }
        let eights = n / 8 * 8;
        let mut sums = [[_mm256_setzero_ps(); ROWS]; C];
        for i in (0..eights).step_by(8) {
            let mut x = [_mm256_setzero_ps(); C];
            for (x, a) in x.iter_mut().zip(&activations) {
                // SAFETY: `i + 8 <= n`, and every row holds at least `n` values.
                *x = unsafe { _mm256_loadu_ps(a.as_ptr().add(i)) };
            }
            for r in 0..ROWS {
                // SAFETY: as for the activations.
                let w = unsafe { _mm256_loadu_ps(weights[r].as_ptr().add(i)) };
                for c in 0..C {
                    sums[c][r] = _mm256_fmadd_ps(w, x[c], sums[c][r]);
                }
            }
        }
        let mut out = [[0.0f32; ROWS]; C];
        for c in 0..C {
            for r in 0..ROWS {
                let mut sum = lane_sum(sums[c][r]);
                for i in eights..n {
                    sum += weights[r][i] * activations[c][i];
                }
                out[c][r] = sum;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 8) as f32 / (1 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn products_match_the_reference_and_do_not_depend_on_the_batch() {
        // 37 inputs leave a remainder after the eights; 7 outputs leave uneven quarters.
        for (outputs, inputs) in [(7, 37), (300, 64), (1, 8)] {
            let w = values(outputs * inputs, 1);
            let x = values(5 * inputs, 2);
            let batch = product(&w, outputs, inputs, &x, 5);
            for r in 0..5 {
                let single = product(&w, outputs, inputs, &x[r * inputs..(r + 1) * inputs], 1);
                assert_eq!(single, batch[r * outputs..(r + 1) * outputs], "row {r} of {outputs}×{inputs}");
                for (o, &value) in single.iter().enumerate() {
                    let exact: f64 =
                        (0..inputs).map(|i| f64::from(w[o * inputs + i]) * f64::from(x[r * inputs + i])).sum();
                    assert!((f64::from(value) - exact).abs() < 1e-5, "{value} against {exact}");
                }
            }
        }
    }
}
