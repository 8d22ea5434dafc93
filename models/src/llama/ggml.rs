//! llama.cpp's CPU rounding, reproduced for [`Arithmetic::LlamaCpp`](super::network::Arithmetic):
//! the order of its f32 sums and its own `exp`.
//!
//! The reference is the AVX-512 build of llama.cpp that made the fixtures: its f16 products sum
//! in 16 f32 lanes reduced by `_mm512_reduce_add_ps` (tinyBLAS for batches, `ggml_vec_dot_f16`
//! for one token, see [`Sums`]), and softmax and SiLU use `ggml_v_expf`, a polynomial `exp`
//! within 1.5 ulp (adapted from Arm's optimized routines). Each function here is the scalar image
//! of one of those vector routines, bit for bit.

/// The f32 lanes of an AVX-512 register.
const LANES: usize = 16;

/// The sum of 16 lanes in `_mm512_reduce_add_ps`'s order: halves, then quarters, then pairs.
fn lane_sum(lanes: &[f32; LANES]) -> f32 {
    let eighths: [f32; 8] = std::array::from_fn(|i| lanes[i + 8] + lanes[i]);
    let quarters: [f32; 4] = std::array::from_fn(|i| eighths[i + 4] + eighths[i]);
    (quarters[0] + quarters[2]) + (quarters[1] + quarters[3])
}

/// How llama.cpp orders the sums of an attention product: tinyBLAS (`llamafile_sgemm`) takes
/// every product of two or more tokens, `ggml_vec_dot_f16` a single token's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sums {
    /// Element `e` is fused into lane `e mod 16` of one register.
    TinyBlas,
    /// Element `e` is fused into lane `e mod 16` of register `(e / 16) mod 4`; the four are
    /// added as `(r0 + r2) + (r1 + r3)` at the end. Elements past the last whole 64 are summed
    /// one by one in f64.
    VecDot,
}

impl Sums {
    /// The sums of a pass that computes `tokens` positions.
    pub(crate) fn of_pass(tokens: usize) -> Sums {
        if tokens == 1 { Sums::VecDot } else { Sums::TinyBlas }
    }
}

/// One output of a product, accumulated element by element in llama.cpp's order.
pub(crate) struct Accumulator {
    sums: Sums,
    registers: [[f32; LANES]; 4],
    /// `ggml_vec_dot_f16`'s elements past the last whole 64.
    tail: f64,
}

impl Accumulator {
    pub(crate) fn new(sums: Sums) -> Accumulator {
        Accumulator { sums, registers: [[0.0; LANES]; 4], tail: 0.0 }
    }

    /// Adds `x · y` as element `e` of a product of `len` elements.
    pub(crate) fn add(&mut self, e: usize, len: usize, x: f32, y: f32) {
        let register = match self.sums {
            Sums::TinyBlas => 0,
            Sums::VecDot if e >= len / 64 * 64 => {
                self.tail += f64::from(x * y);
                return;
            }
            Sums::VecDot => (e / LANES) % 4,
        };
        let lane = &mut self.registers[register][e % LANES];
        *lane = x.mul_add(y, *lane);
    }

    pub(crate) fn sum(&self) -> f32 {
        let [r0, r1, r2, r3] = &self.registers;
        match self.sums {
            Sums::TinyBlas => lane_sum(r0),
            Sums::VecDot => {
                let combined: [f32; LANES] = std::array::from_fn(|l| (r0[l] + r2[l]) + (r1[l] + r3[l]));
                (f64::from(lane_sum(&combined)) + self.tail) as f32
            }
        }
    }
}

/// `a · b` summed as `sums` orders it. `interleaved`: llama.cpp holds the two vectors with their
/// halves interleaved, so its element `2i + c` is element `c · len/2 + i` here.
pub(crate) fn dot(sums: Sums, a: &[f32], b: &[f32], interleaved: bool) -> f32 {
    let (len, half) = (a.len().min(b.len()), a.len().min(b.len()) / 2);
    let mut accumulator = Accumulator::new(sums);
    for e in 0..len {
        let k = if interleaved { (e % 2) * half + e / 2 } else { e };
        accumulator.add(e, len, a[k], b[k]);
    }
    accumulator.sum()
}

/// `ggml_v_expf` of one lane: `e^x = 2^n · p(b)` with `n = round(x / ln 2)`, `b = x − n ln 2`
/// (ln 2 in two parts) and a degree-5 polynomial `p`; `|n| > 192` flushes to 0 or ∞.
pub(crate) fn expf(x: f32) -> f32 {
    let shift = f32::from_bits(0x4B40_0000); // 0x1.8p23: adding it rounds to an integer.
    let z = x.mul_add(f32::from_bits(0x3FB8_AA3B), shift); // 0x1.715476p+0 = 1/ln 2
    let n = z - shift;
    let b = (-n).mul_add(f32::from_bits(0x35BF_BE8E), (-n).mul_add(f32::from_bits(0x3F31_7200), x));
    if n.abs() > 192.0 {
        return if n > 0.0 { f32::INFINITY } else { 0.0 };
    }
    let u = b * b;
    let c = |bits: u32| f32::from_bits(bits);
    // 0x1.0e4020p-7, 0x1.573e2ep-5, 0x1.555e66p-3, 0x1.fffdb6p-2, 0x1.ffffecp-1.
    let high = c(0x3C07_2010).mul_add(b, c(0x3D2B_9F17)).mul_add(u, c(0x3E2A_AF33).mul_add(b, c(0x3EFF_FEDB)));
    let j = high.mul_add(u, c(0x3F7F_FFF6).mul_add(b, 1.0));
    // `_mm512_scalef_ps(j, n)`: j · 2^n, rounded once (exact in f64, then to f32).
    (f64::from(j) * 2f64.powi(n as i32)) as f32
}

/// `ggml_v_silu`: `x / (1 + expf(−x))`.
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + expf(0.0 - x))
}

/// `ggml_vec_swiglu_f32` over a row: [`silu`]`(gate) · up` in whole 16-lane chunks, the C
/// library's `expf` for the rest.
pub(crate) fn swiglu(gate: &[f32], up: &[f32], out: &mut Vec<f32>) {
    let whole = gate.len() / LANES * LANES;
    out.extend(gate[..whole].iter().zip(up).map(|(&g, &u)| silu(g) * u));
    out.extend(gate[whole..].iter().zip(&up[whole..]).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u));
}

/// `ggml_vec_soft_max_f32` and the scaling after it: each score becomes `expf(s − max)`, summed
/// 16 at a time in f32 ([`lane_sum`]) and across chunks in f64, then multiplied by the f32
/// reciprocal of the sum. llama.cpp pads its key/value cache to a multiple of 256 positions with
/// masked (zero-weight) ones, so every chunk takes the vector path.
pub(crate) fn softmax(scores: &mut [f32]) {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut total = 0.0f64;
    for chunk in scores.chunks_mut(LANES) {
        let mut lanes = [0.0f32; LANES];
        for (lane, score) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *score = expf(*score - max);
            *lane = *score;
        }
        total += f64::from(lane_sum(&lanes));
    }
    let reciprocal = (1.0 / total) as f32;
    for score in scores {
        *score *= reciprocal;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_within_two_ulp_of_the_c_library() {
        for i in -2000..=400 {
            let x = i as f32 * 0.05 + 0.013;
            let (got, want) = (expf(x), x.exp());
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
            assert!(ulp <= 2, "expf({x}) = {got}, the C library's {want} ({ulp} ulp)");
        }
        assert_eq!(expf(0.0), 1.0);
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf(-200.0), 0.0);
    }

    #[test]
    fn the_lane_sums_add_halves_first() {
        let mut lanes = [0.0f32; LANES];
        lanes[0] = 1.0e8;
        lanes[8] = -1.0e8;
        lanes[1] = 1.0;
        // (1e8 + −1e8) first, then 1: exact; a left-to-right sum would lose the 1 to 1e8.
        assert_eq!(lane_sum(&lanes), 1.0);
        assert_eq!(dot(Sums::TinyBlas, &[1.0; 40], &[0.5; 40], false), 20.0);
        assert_eq!(dot(Sums::VecDot, &[1.0; 70], &[0.5; 70], true), 35.0);
    }
}
