//! llama.cpp's CPU rounding, reproduced for [`Arithmetic::LlamaCpp`](super::network::Arithmetic):
//! the order of its f32 sums and its own `exp`.
//!
//! The reference is the AVX-512 build of llama.cpp that made the fixtures: its f16 products sum
//! in 16 f32 lanes reduced by `_mm512_reduce_add_ps` (tinyBLAS for batches, `ggml_vec_dot_f16`
//! for one token, see [`Sums`]), and softmax and SiLU use `ggml_v_expf`, a polynomial `exp`
//! within 1.5 ulp (adapted from Arm's optimized routines). Each function here is the scalar image
//! of one of those vector routines, bit for bit, written so that the compiler vectorizes it.
//!
//! The fused multiply-adds must be fused: the public functions ([`fused!`]) run their bodies
//! compiled for FMA where the CPU has it, and through the C library's `fmaf` (exact, slower)
//! elsewhere.

/// The f32 lanes of an AVX-512 register.
const LANES: usize = 16;

/// Whether this CPU has the AVX2 and FMA instructions the `*_fused` variants are compiled for.
#[inline(always)]
pub(crate) fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `$name`, which runs `$body` (an `#[inline(always)]` function of the same arguments)
/// compiled for AVX2 and FMA where the CPU has them, and as it is elsewhere.
macro_rules! fused {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:ident) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn fused($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::llama::ggml::has_fma() {
                // SAFETY: the CPU has the features `fused` is compiled for.
                return unsafe { fused($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use fused;

/// The sum of 16 lanes in `_mm512_reduce_add_ps`'s order: halves, then quarters, then pairs.
#[inline(always)]
fn lane_sum(lanes: &[f32; LANES]) -> f32 {
    let mut eighths = [0.0f32; 8];
    for i in 0..8 {
        eighths[i] = lanes[i + 8] + lanes[i];
    }
    let mut quarters = [0.0f32; 4];
    for i in 0..4 {
        quarters[i] = eighths[i + 4] + eighths[i];
    }
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

    /// The register of element `e` of a product of `len` elements, `None` past the vector part.
    #[inline(always)]
    fn register(self, e: usize, len: usize) -> Option<usize> {
        match self {
            Sums::TinyBlas => Some(0),
            Sums::VecDot if e >= len / 64 * 64 => None,
            Sums::VecDot => Some((e / LANES) % 4),
        }
    }

    /// The final sum of the registers and the f64 tail.
    #[inline(always)]
    fn total(self, registers: &[[f32; LANES]; 4], tail: f64) -> f32 {
        let [r0, r1, r2, r3] = registers;
        match self {
            Sums::TinyBlas => lane_sum(r0),
            Sums::VecDot => {
                let mut combined = [0.0f32; LANES];
                for l in 0..LANES {
                    combined[l] = (r0[l] + r2[l]) + (r1[l] + r3[l]);
                }
                (f64::from(lane_sum(&combined)) + tail) as f32
            }
        }
    }
}

/// `a · b` summed as `sums` orders it.
#[inline(always)]
fn dot_body(sums: Sums, a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    // Each register's lanes by fixed index, so that the compiler keeps them in vector registers.
    let fuse = |register: &mut [f32; LANES], x: &[f32], y: &[f32]| {
        for ((lane, &x), &y) in register.iter_mut().zip(x).zip(y) {
            *lane = x.mul_add(y, *lane);
        }
    };
    let mut registers = [[0.0f32; LANES]; 4];
    let mut tail = 0.0f64;
    match sums {
        Sums::TinyBlas => {
            let whole = len / LANES * LANES;
            for (x, y) in a[..whole].chunks_exact(LANES).zip(b[..whole].chunks_exact(LANES)) {
                fuse(&mut registers[0], x, y);
            }
            // A last partial chunk, padded with zeros (which add exactly nothing).
            if whole < len {
                let (mut x, mut y) = ([0.0f32; LANES], [0.0f32; LANES]);
                x[..len - whole].copy_from_slice(&a[whole..]);
                y[..len - whole].copy_from_slice(&b[whole..]);
                fuse(&mut registers[0], &x, &y);
            }
        }
        Sums::VecDot => {
            let whole = len / (4 * LANES) * (4 * LANES);
            let [r0, r1, r2, r3] = &mut registers;
            for (x, y) in a[..whole].chunks_exact(4 * LANES).zip(b[..whole].chunks_exact(4 * LANES)) {
                fuse(r0, &x[..LANES], &y[..LANES]);
                fuse(r1, &x[LANES..2 * LANES], &y[LANES..2 * LANES]);
                fuse(r2, &x[2 * LANES..3 * LANES], &y[2 * LANES..3 * LANES]);
                fuse(r3, &x[3 * LANES..], &y[3 * LANES..]);
            }
            for e in whole..len {
                tail += f64::from(a[e] * b[e]);
            }
        }
    }
    sums.total(&registers, tail)
}

fused! {
    /// `a · b` summed as `sums` orders it (the vectors in llama.cpp's order).
    #[cfg(test)]
    fn dot(sums: Sums, a: &[f32], b: &[f32]) -> f32 => dot_body
}

/// `ggml_v_expf` of one lane: `e^x = 2^n · p(b)` with `n = round(x / ln 2)`, `b = x − n ln 2`
/// (ln 2 in two parts) and a degree-5 polynomial `p`; `|n| > 192` flushes to 0 or ∞.
#[inline(always)]
fn expf_body(x: f32) -> f32 {
    let c = f32::from_bits;
    let shift = c(0x4B40_0000); // 0x1.8p23: adding it rounds to an integer.
    let z = x.mul_add(c(0x3FB8_AA3B), shift); // 0x1.715476p+0 = 1/ln 2
    let n = z - shift;
    let b = (-n).mul_add(c(0x35BF_BE8E), (-n).mul_add(c(0x3F31_7200), x));
    if n.abs() > 192.0 {
        return if n > 0.0 { f32::INFINITY } else { 0.0 };
    }
    let u = b * b;
    // 0x1.0e4020p-7, 0x1.573e2ep-5, 0x1.555e66p-3, 0x1.fffdb6p-2, 0x1.ffffecp-1.
    let high = c(0x3C07_2010).mul_add(b, c(0x3D2B_9F17)).mul_add(u, c(0x3E2A_AF33).mul_add(b, c(0x3EFF_FEDB)));
    let j = high.mul_add(u, c(0x3F7F_FFF6).mul_add(b, 1.0));
    // `_mm512_scalef_ps(j, n)`: j · 2^n, rounded once (exact in f64, then to f32); |n| ≤ 192
    // keeps 2^n a normal f64.
    let power = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    (f64::from(j) * power) as f32
}

fused! {
    /// `ggml_v_expf` (see `expf_body`).
    #[cfg(test)]
    fn expf(x: f32) -> f32 => expf_body
}

fused! {
    /// `ggml_vec_swiglu_f32` over a row: `ggml_v_silu(gate) · up` (`x / (1 + expf(−x))`) in
    /// whole 16-lane chunks, the C library's `expf` for the rest.
    pub(crate) fn swiglu(gate: &[f32], up: &[f32], out: &mut Vec<f32>) => swiglu_body
}

#[inline(always)]
fn swiglu_body(gate: &[f32], up: &[f32], out: &mut Vec<f32>) {
    let whole = gate.len() / LANES * LANES;
    out.reserve(gate.len());
    for (&g, &u) in gate[..whole].iter().zip(up) {
        out.push(g / (1.0 + expf_body(0.0 - g)) * u);
    }
    for (&g, &u) in gate[whole..].iter().zip(&up[whole..]) {
        out.push(g / (1.0 + (-g).exp()) * u);
    }
}

/// `ggml_vec_soft_max_f32` and the scaling after it: each score becomes `expf(s − max)`, summed
/// 16 at a time in f32 ([`lane_sum`]) and across chunks in f64, then multiplied by the f32
/// reciprocal of the sum. llama.cpp pads its key/value cache to a multiple of 256 positions with
/// masked (zero-weight) ones, so every chunk takes the vector path.
#[inline(always)]
fn softmax_body(scores: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    for &score in scores.iter() {
        max = max.max(score);
    }
    let mut total = 0.0f64;
    for chunk in scores.chunks_mut(LANES) {
        let mut lanes = [0.0f32; LANES];
        for (lane, score) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *score = expf_body(*score - max);
            *lane = *score;
        }
        total += f64::from(lane_sum(&lanes));
    }
    let reciprocal = (1.0 / total) as f32;
    for score in scores {
        *score *= reciprocal;
    }
}

/// The keys or the values of one head: position `j`'s vector.
pub(crate) type Positions<'a, 'b> = &'b dyn Fn(usize) -> &'a [f32];

fused! {
    /// One head's attention at one position, as llama.cpp computes it over its f16 cache: the
    /// scores `scale · q · k_j` of the positions `0..count` (summed as `sums` orders them), their
    /// softmax, the weights rounded to f16, and `out = Σ_j w_j v_j` with position `j` as element
    /// `j` of a product over the cache's `cache_len` positions. Queries, keys and values are
    /// already rounded to f16, queries and keys in llama.cpp's order.
    #[allow(clippy::too_many_arguments, reason = "one head's operands")]
    pub(crate) fn attend(
        sums: Sums,
        query: &[f32],
        keys: Positions<'_, '_>,
        values: Positions<'_, '_>,
        count: usize,
        cache_len: usize,
        scale: f32,
        out: &mut [f32]
    ) => attend_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "one head's operands")]
fn attend_body(
    sums: Sums,
    query: &[f32],
    keys: Positions<'_, '_>,
    values: Positions<'_, '_>,
    count: usize,
    cache_len: usize,
    scale: f32,
    out: &mut [f32],
) {
    let mut scores = vec![0.0f32; count];
    for (j, score) in scores.iter_mut().enumerate() {
        *score = dot_body(sums, query, keys(j)) * scale;
    }
    softmax_body(&mut scores);
    // Each output's registers, kept lane-major ([register][lane][output]) so that one
    // position's update, and each step of the final sums, is one contiguous run of multiply-adds
    // or additions over the outputs.
    let width = out.len();
    let registers_used = if sums == Sums::VecDot { 4 } else { 1 };
    let mut registers = vec![0.0f32; registers_used * LANES * width];
    let mut tail = vec![0.0f64; width];
    for (j, &w) in scores.iter().enumerate() {
        let w = half::f16::from_f32(w).to_f32();
        let value = &values(j)[..width];
        match sums.register(j, cache_len) {
            Some(r) => {
                let at = (r * LANES + j % LANES) * width;
                for (acc, &x) in registers[at..at + width].iter_mut().zip(value) {
                    *acc = w.mul_add(x, *acc);
                }
            }
            None => {
                for (acc, &x) in tail.iter_mut().zip(value) {
                    *acc += f64::from(w * x);
                }
            }
        }
    }
    // `ggml_vec_dot_f16`'s `(r0 + r2) + (r1 + r3)`, lane by lane, into register 0.
    if sums == Sums::VecDot {
        let (r0, rest) = registers.split_at_mut(LANES * width);
        let (r1, rest) = rest.split_at_mut(LANES * width);
        let (r2, r3) = rest.split_at_mut(LANES * width);
        for (((a, &b), &c), &d) in r0.iter_mut().zip(r1.iter()).zip(r2.iter()).zip(r3.iter()) {
            *a = (*a + c) + (b + d);
        }
    }
    // `_mm512_reduce_add_ps` over the 16 lanes of each output: lane i + 8 onto lane i, then
    // i + 4 onto i, then (0 + 2) + (1 + 3).
    let lane = |l: usize| l * width..(l + 1) * width;
    for (half, count) in [(8, 8), (4, 4)] {
        for l in 0..count {
            let (low, high) = registers.split_at_mut(lane(l + half).start);
            for (a, &b) in low[lane(l)].iter_mut().zip(&high[..width]) {
                // `b + a` in llama.cpp; f32 addition commutes exactly.
                *a += b;
            }
        }
    }
    for (o, out) in out.iter_mut().enumerate() {
        let total = (registers[o] + registers[2 * width + o]) + (registers[width + o] + registers[3 * width + o]);
        *out = match sums {
            Sums::TinyBlas => total,
            Sums::VecDot => (f64::from(total) + tail[o]) as f32,
        };
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
        assert_eq!(dot(Sums::TinyBlas, &[1.0; 40], &[0.5; 40]), 20.0);
        assert_eq!(dot(Sums::VecDot, &[1.0; 70], &[0.5; 70]), 35.0);
    }

    #[test]
    fn attention_weighs_the_values_by_the_softmax_of_the_scores() {
        let keys = [vec![1.0f32; 64], vec![0.0; 64]];
        let values = [vec![2.0f32; 8], vec![4.0; 8]];
        for sums in [Sums::TinyBlas, Sums::VecDot] {
            let mut out = [0.0f32; 8];
            attend(sums, &[0.0; 64], &|j| &keys[j], &|j| &values[j], 2, 256, 0.125, &mut out);
            // Equal scores: weights ½ each.
            assert!(out.iter().all(|&o| (o - 3.0).abs() < 1e-6), "{out:?}");
        }
    }
}
