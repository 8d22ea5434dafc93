//! Counter-based random numbers: Philox4x32-10 and the noise functions of sched's random stream.
//!
//! Philox4x32-10 is the generator of Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as
//! easy as 1, 2, 3" (SC 2011), as implemented in Random123. It maps a 128-bit counter and a 64-bit
//! key to 128 random bits with no state, so every element of every launch can draw its noise
//! independently and every implementation (this CPU reference, the Cranelift loops, the CUDA
//! kernels) draws the same numbers.
//!
//! The functions [`gaussian`], [`uniform`] and [`uniform_f64`] define sched's random stream. Their doc comments are
//! the normative definitions that the other emitters copy.

/// The multiplier applied to counter word 0 in each round.
const PHILOX_M0: u32 = 0xD251_1F53;
/// The multiplier applied to counter word 2 in each round.
const PHILOX_M1: u32 = 0xCD9E_8D57;
/// The Weyl increment of key word 0 between rounds (the golden ratio).
const PHILOX_W0: u32 = 0x9E37_79B9;
/// The Weyl increment of key word 1 between rounds (sqrt(3) - 1).
const PHILOX_W1: u32 = 0xBB67_AE85;
/// The number of rounds of Philox4x32-10.
const ROUNDS: usize = 10;

/// 2^-32 as an f64, the scale of a 32-bit word onto [0, 1).
const TWO_POW_MINUS_32: f64 = 1.0 / 4_294_967_296.0;
/// 2^-24 as an f32, the scale of a 24-bit integer onto [0, 1).
const TWO_POW_MINUS_24: f32 = 1.0 / 16_777_216.0;
/// 2^-52 as an f64, the scale of a 52-bit integer onto [0, 1).
const TWO_POW_MINUS_52: f64 = 1.0 / 4_503_599_627_370_496.0;

/// Returns the high and low 32-bit halves of the 64-bit product `a * b`.
#[inline]
fn mul_hi_lo(a: u32, b: u32) -> (u32, u32) {
    let product = u64::from(a) * u64::from(b);
    ((product >> 32) as u32, product as u32)
}

/// One Philox round, exactly as `philox4x32round` of Random123.
#[inline]
fn round(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mul_hi_lo(PHILOX_M0, counter[0]);
    let (hi1, lo1) = mul_hi_lo(PHILOX_M1, counter[2]);
    [hi1 ^ counter[1] ^ key[0], lo1, hi0 ^ counter[3] ^ key[1], lo0]
}

/// Philox4x32-10: ten rounds of the Philox4x32 bijection of `counter` under `key`, with the key
/// bumped by the Weyl sequence (0x9E3779B9, 0xBB67AE85) between rounds and multipliers 0xD2511F53
/// and 0xCD9E8D57. The result equals Random123's `philox4x32(counter, key)`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut counter = counter;
    let mut key = key;
    for r in 0..ROUNDS {
        if r > 0 {
            key = [key[0].wrapping_add(PHILOX_W0), key[1].wrapping_add(PHILOX_W1)];
        }
        counter = round(counter, key);
    }
    counter
}

/// The Philox block of one noise value: counter `[index, sample, step, site]`, key
/// `[seed as u32, (seed >> 32) as u32]`.
#[inline]
fn block(seed: u64, site: u32, step: u32, sample: u32, index: u32) -> [u32; 4] {
    philox4x32_10([index, sample, step, site], [seed as u32, (seed >> 32) as u32])
}

/// A standard normal draw of sched's random stream.
///
/// Definition (normative; every emitter computes exactly this):
///
/// - `counter = [index, sample, step, site]`, `key = [seed as u32, (seed >> 32) as u32]`,
///   `r = philox4x32_10(counter, key)`;
/// - `u1 = (r[0] as f64 + 0.5) * 2^-32` and `u2 = (r[1] as f64 + 0.5) * 2^-32`, both in (0, 1);
/// - `z = sqrt(-2.0 * ln(u1)) * cos(TAU * u2)` in f64, where `TAU` is the f64 nearest to 2π
///   (`std::f64::consts::TAU`) and `ln`, `cos` are the platform's libm `log` and `cos`;
/// - the result is `z as f32` (rounded to nearest).
///
/// `site` is the noise operation of the compiled schedule, `step` how many times it has run
/// before, `sample` the sample in the batch and `index` the element within the sample. The result
/// is finite, with `|z| < 6.77` (the bound for `u1 = 2^-33`).
pub fn gaussian(seed: u64, site: u32, step: u32, sample: u32, index: u32) -> f32 {
    let r = block(seed, site, step, sample, index);
    let u1 = (f64::from(r[0]) + 0.5) * TWO_POW_MINUS_32;
    let u2 = (f64::from(r[1]) + 0.5) * TWO_POW_MINUS_32;
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    z as f32
}

/// A uniform draw on [0, 1) of sched's random stream.
///
/// Definition (normative; every emitter computes exactly this):
///
/// - `counter = [index, sample, step, site]`, `key = [seed as u32, (seed >> 32) as u32]`,
///   `r = philox4x32_10(counter, key)`;
/// - the result is `(r[0] >> 8) as f32 * 2^-24`, exact in f32, in [0, 1) on the grid of
///   multiples of 2^-24.
///
/// The arguments mean the same as for [`gaussian`]; a uniform and a Gaussian draw at the same
/// coordinates share the Philox block.
pub fn uniform(seed: u64, site: u32, step: u32, sample: u32, index: u32) -> f32 {
    let r = block(seed, site, step, sample, index);
    (r[0] >> 8) as f32 * TWO_POW_MINUS_24
}

/// A uniform draw on the open interval (0, 1) in f64 of sched's random stream, for the token
/// samplers (Gumbel-max, the exponential race, acceptance tests), which need f64 resolution and
/// must never see 0 or 1.
///
/// Definition (normative; every emitter computes exactly this):
///
/// - `counter = [index, sample, step, site]`, `key = [seed as u32, (seed >> 32) as u32]`,
///   `r = philox4x32_10(counter, key)` (the same block as [`uniform`] and [`gaussian`] at these
///   coordinates);
/// - `n = ((r[0] as u64) << 20) | ((r[1] as u64) >> 12)`, a 52-bit integer: the 32 bits of `r[0]`
///   above the top 20 bits of `r[1]`;
/// - the result is `(n as f64 + 0.5) * 2^-52`.
///
/// Every step is exact in f64 (`n + 0.5` needs 53 significant bits), so the result is the midpoint
/// of one of 2^52 equal cells of [0, 1): it lies in [2^-53, 1 - 2^-53], never 0 or 1, and is
/// symmetric (`1 - u` has the same distribution as `u`). A 53-bit integer would not do: for
/// `n >= 2^52`, `n + 0.5` rounds, and `n = 2^53 - 1` would give exactly 1.
pub fn uniform_f64(seed: u64, site: u32, step: u32, sample: u32, index: u32) -> f64 {
    let r = block(seed, site, step, sample, index);
    let n = (u64::from(r[0]) << 20) | (u64::from(r[1]) >> 12);
    (n as f64 + 0.5) * TWO_POW_MINUS_52
}
