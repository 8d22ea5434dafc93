//! The fixed kernels of the built-in networks on a device (the layers around their matrix
//! products): a bias added to every row of a row-major matrix followed by an activation, a
//! LayerNorm of every row, multi-head scaled dot-product attention, the gather of chosen rows of a
//! matrix (the logits of the masked positions, with the mask token's logit blocked), and the move
//! of chosen rows of one matrix to chosen rows of another (a draft's logits, assembled row by row).
//!
//! Each layer has a reference function ([`bias_activation`], [`layer_norm`], [`attention`],
//! [`gather_rows`], [`move_rows`]), which the emulated device runs and whose documentation is the
//! NORMATIVE definition of the layer (every operation, its order and its rounding), and the same
//! computation as CUDA C ([`bias_activation_source`], [`layer_norm_source`], [`attention_source`],
//! [`gather_rows_source`], [`move_rows_source`]), compiled with the options of [`crate::nvrtc`]: `--fmad=false` (no
//! multiply-add contraction), `--prec-div=true` and `--prec-sqrt=true` (correctly rounded `/` and
//! `sqrtf`) and `--ftz=false` (subnormals kept). Under these options every `+`, `-`, `*`, `/`
//! and `sqrtf` of the CUDA text is the reference's IEEE f32 operation, and the kernels loop
//! sequentially in the reference's order, so a kernel's results are the reference's bit for bit,
//! except where a transcendental function is involved: CUDA's `expf` (SiLU, attention) and `erf`
//! (GELU) are not the host C library's and may differ from it in the last unit in the last place.
//! Run on the host with the C library's functions (the test harness of `tests/host_layers.rs`),
//! the CUDA text reproduces the references exactly.
//!
//! The references follow the operation order of the candle code that the transformer token
//! model runs on the CPU (`runtime/src/tokens/transformer.rs`), with two documented
//! exceptions, neither of which the transformer's results depend on beyond rounding: sums are
//! sequential from left to right, where candle's f32 sum uses AVX2 lanes on a CPU that has them,
//! and matrix products are sequential dot products, where candle calls the `gemm` crate.

use std::f32::consts::FRAC_1_SQRT_2;

/// The C library's double-precision error function, which Rust's standard library does not
/// offer in a stable release. Every Rust program on a hosted target links the C math library
/// (the standard library's own `f64` functions call it), so the declaration adds no dependency.
mod c_math {
    // SAFETY: C99's `erf` (7.12.8.1) takes any double by value and returns one, touching no
    // memory the caller owns, so calling it as a safe function is sound for every argument.
    unsafe extern "C" {
        /// `erf(x)` of the C library (glibc's on Linux), accurate to within one unit in the last
        /// place of an f64.
        pub safe fn erf(x: f64) -> f64;
    }
}

/// The activation after a layer's bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// None: the layer's output is its affine map.
    Identity,
    /// SiLU, `v / (1 + exp(-v))` (see [`silu`]).
    Silu,
    /// GELU in its exact form, `0.5 * v * (1 + erf(v / sqrt(2)))` (see [`gelu`]).
    Gelu,
}

/// The code of `activation` in the last parameter of [`bias_activation_source`]'s kernel:
/// 0 for [`Activation::Identity`], 1 for [`Activation::Silu`] and 2 for [`Activation::Gelu`].
pub fn activation_code(activation: Activation) -> i32 {
    match activation {
        Activation::Identity => 0,
        Activation::Silu => 1,
        Activation::Gelu => 2,
    }
}

/// The entry point of [`bias_activation_source`].
pub const BIAS_ACTIVATION_ENTRY: &str = "sched_bias_activation";

/// SiLU of one value, as the reference and the CUDA kernel compute it: `v / (1 + exp(-v))` in
/// f32, with `exp` the f32 exponential (`expf` of the C library here, CUDA's `expf` on a GPU).
pub fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// GELU of one value in its exact form, as the reference and the CUDA kernel compute it, in this
/// order:
///
/// 1. `t = v * FRAC_1_SQRT_2`, an f32 product with the f32 constant `0.70710677`
///    (`0x3f3504f3`), as candle's `gelu_erf` computes it;
/// 2. `e = erf(t)`: the f64 error function of `t` (exactly representable as an f64), rounded to
///    f32. Candle calls the f32 `erff` of the `libm` crate (a port of musl's) instead; both are
///    within about one f32 ulp of the exact value, so the two differ at most in the last bit of
///    `e`. The f64 function is used because the GPU has an accurate one too: CUDA's `erf` (at
///    most 2 f64 ulps from the exact value) and the C library's round to the same f32 except in
///    the rare case where the exact value lies within a few f64 ulps of the midpoint between two
///    f32s, whereas CUDA's `erff` differs from the C library's `erff` far more often;
/// 3. `(e + 1) * 0.5 * v`, evaluated from left to right in f32, as candle does.
///
/// So `gelu(0) = 0`, `gelu(-0) = -0`, `gelu(v) = v` for large positive `v`, `gelu(v) = -0` for
/// large negative `v` (where `e = -1`), `gelu(+inf) = +inf`, and `gelu(-inf)` and `gelu(NaN)` are
/// NaN (as in candle: `0 * -inf`).
pub fn gelu(v: f32) -> f32 {
    let t = v * FRAC_1_SQRT_2;
    // Rounding the f64 result to the nearest f32 is the intended conversion.
    let e = c_math::erf(f64::from(t)) as f32;
    (e + 1.0) * 0.5 * v
}

/// Adds `bias[c]` to every element `data[r * cols + c]` (where `cols = bias.len()`) and applies
/// `activation`, in place: `v = data[i] + bias[i % cols]` in f32, then `v` itself, [`silu`]`(v)`
/// or [`gelu`]`(v)`. The data need not be a whole number of rows: the elements after the last
/// full row take the first elements of the bias. An empty bias leaves `data` unchanged.
pub fn bias_activation(data: &mut [f32], bias: &[f32], activation: Activation) {
    if bias.is_empty() {
        return;
    }
    for row in data.chunks_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            let sum = *v + b;
            *v = match activation {
                Activation::Identity => sum,
                Activation::Silu => silu(sum),
                Activation::Gelu => gelu(sum),
            };
        }
    }
}

/// The CUDA C of [`bias_activation`]:
///
/// ```c
/// extern "C" __global__ void sched_bias_activation(
///     float* data, const float* bias, unsigned int cols, unsigned long long len, int activation)
/// ```
///
/// with `activation` the [`activation_code`] of the activation (a code other than 1 or 2 applies
/// none), launched with any grid of [`crate::cuda::BLOCK_THREADS`]-thread blocks (a grid-stride
/// loop covers `len` elements); `cols` must be at least 1. SiLU uses CUDA's `expf` and GELU
/// CUDA's f64 `erf`, which may differ from the C library's in the last bit (see [`gelu`]).
pub fn bias_activation_source() -> &'static str {
    r#"// sched: bias and activation of a layer of a built-in network.
extern "C" __global__ void sched_bias_activation(
    float* data, const float* bias, unsigned int cols, unsigned long long len, int activation)
{
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        float v = data[i] + bias[i % cols];
        if (activation == 1) {
            v = v / (1.0f + expf(-v));
        } else if (activation == 2) {
            // GELU: erf of the f32 product v * FRAC_1_SQRT_2, in double, rounded to float.
            const float e = (float)erf((double)(v * __int_as_float(0x3f3504f3)));
            v = (e + 1.0f) * 0.5f * v;
        }
        data[i] = v;
    }
}
"#
}

/// The entry point of [`layer_norm_source`].
pub const LN_ENTRY: &str = "sched_layer_norm";

/// LayerNorm of every row of `width = weight.len()` elements of `x` into the same row of `out`,
/// with the scale `weight`, the shift `bias` and `eps`, as candle's `layer_norm_slow` computes it
/// in f32. For each row `x[0..width]`, in this order and in f32:
///
/// 1. `inverse = 1 / width`, computed in f64 and rounded to f32 (candle divides a tensor by the
///    f64 `width` as an affine map `v * (1 / width) + 0` whose factor is rounded to f32);
/// 2. `sum = ((0 + x[0]) + x[1]) + ... + x[width - 1]`, from left to right, and
///    `mean = sum * inverse + 0` (the `+ 0` of candle's affine map only turns `-0` into `+0`);
/// 3. `squares = ((0 + c[0] * c[0]) + c[1] * c[1]) + ...` from left to right, with
///    `c[i] = x[i] - mean`, and `variance = squares * inverse + 0`;
/// 4. `deviation = sqrt(variance + eps)`, correctly rounded;
/// 5. `out[i] = (x[i] - mean) / deviation * weight[i] + bias[i]`, evaluated from left to right.
///
/// Candle's f32 sum is this sequential one on a CPU without AVX2 and for rows of fewer than 32
/// elements; with AVX2 it sums the first `32 * floor(width / 32)` elements in 32 lanes, combines
/// the lanes in a tree, and adds the rest sequentially, which differs from this in the last bits.
///
/// The rows are those that `x` and `out` both hold entirely (`min(x.len(), out.len()) / width`
/// of them); the elements of `out` after them are left unchanged, as is all of `out` when
/// `weight` is empty or `bias` does not have `weight`'s length.
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    if width == 0 || bias.len() != width {
        return;
    }
    // Rounding the f64 reciprocal to the nearest f32 is the intended conversion.
    let inverse = (1.0 / width as f64) as f32;
    for (row, result) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let mut sum = 0.0_f32;
        for &v in row {
            sum += v;
        }
        let mean = sum * inverse + 0.0;
        let mut squares = 0.0_f32;
        for &v in row {
            let centered = v - mean;
            squares += centered * centered;
        }
        let variance = squares * inverse + 0.0;
        let deviation = (variance + eps).sqrt();
        for (((o, &v), &w), &b) in result.iter_mut().zip(row).zip(weight).zip(bias) {
            *o = (v - mean) / deviation * w + b;
        }
    }
}

/// The CUDA C of [`layer_norm`]:
///
/// ```c
/// extern "C" __global__ void sched_layer_norm(
///     const float* x, const float* weight, const float* bias, float* out,
///     unsigned long long rows, unsigned int width, float eps)
/// ```
///
/// `x` and `out` hold `rows * width` elements and must not overlap; `weight` and `bias` hold
/// `width` elements. One thread normalizes one row with the reference's sequential loops (a
/// grid-stride loop over the rows, so any grid of [`crate::cuda::BLOCK_THREADS`]-thread blocks
/// covers them), so the result is [`layer_norm`]'s bit for bit: the kernel has no transcendental
/// function, and `/` and `sqrtf` are correctly rounded under the options of [`crate::nvrtc`].
pub fn layer_norm_source() -> &'static str {
    r#"// sched: LayerNorm of every row of a built-in network's activations.
extern "C" __global__ void sched_layer_norm(
    const float* x, const float* weight, const float* bias, float* out,
    unsigned long long rows, unsigned int width, float eps)
{
    // Candle multiplies by the reciprocal of the width, computed in double and rounded to float.
    const float inverse = (float)(1.0 / (double)width);
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long r = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += stride) {
        const float* row = x + r * width;
        float* result = out + r * width;
        float sum = 0.0f;
        for (unsigned int c = 0; c < width; ++c) {
            sum += row[c];
        }
        const float mean = sum * inverse + 0.0f;
        float squares = 0.0f;
        for (unsigned int c = 0; c < width; ++c) {
            const float centered = row[c] - mean;
            squares += centered * centered;
        }
        const float variance = squares * inverse + 0.0f;
        const float deviation = sqrtf(variance + eps);
        for (unsigned int c = 0; c < width; ++c) {
            result[c] = (row[c] - mean) / deviation * weight[c] + bias[c];
        }
    }
}
"#
}

/// The shape of an [`attention`]: `batch` sequences of `len` tokens, each token a row of
/// `heads * head_dim` elements in `q`, `k`, `v` and the output, and whether the attention is
/// causal (query `i` sees keys `0..=i` only) or not (every query sees every key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionShape {
    pub batch: usize,
    pub len: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub causal: bool,
}

/// The entry point of [`attention_source`].
pub const ATTENTION_ENTRY: &str = "sched_attention";

/// The number of elements of each of an attention's operands, `batch * len * heads * head_dim`,
/// or `None` if it overflows.
fn attention_elements(shape: AttentionShape) -> Option<usize> {
    [shape.len, shape.heads, shape.head_dim].iter().try_fold(shape.batch, |n, &k| n.checked_mul(k))
}

/// The scale of an attention's scores: `1 / sqrt(head_dim)` computed in f64 and rounded to f32,
/// as candle multiplies an f32 tensor by an f64 scalar (an affine map whose factor is rounded to
/// f32).
fn attention_scale(head_dim: usize) -> f32 {
    // Rounding the f64 scale to the nearest f32 is the intended conversion.
    (1.0 / (head_dim as f64).sqrt()) as f32
}

/// The score of a query and a key: their dot product, summed from left to right from 0 in f32,
/// times `scale`, plus 0 (candle's affine map; it only turns `-0` into `+0`).
fn attention_score(query: &[f32], key: &[f32], scale: f32) -> f32 {
    let mut dot = 0.0_f32;
    for (&a, &b) in query.iter().zip(key) {
        dot += a * b;
    }
    dot * scale + 0.0
}

/// Multi-head scaled dot-product attention, as the transformer token model computes it with
/// candle, in f32.
///
/// `q`, `k`, `v` and `out` are row-major `[batch, len, heads * head_dim]`: the rows of a
/// `d → d` linear layer applied to `batch * len` tokens, with `d = heads * head_dim`; head `h`
/// of a token is the columns `h * head_dim .. (h + 1) * head_dim` of its row. For each sequence
/// `b`, head `h` and query `i`, with `q_i`, `k_j` and `v_j` the head's slices of the rows of
/// tokens `i` and `j` of sequence `b`, and `j` running over the keys `0..len`, or `0..=i` when
/// `causal`, in increasing order:
///
/// 1. `scale = 1 / sqrt(head_dim)`, computed in f64 and rounded to f32 (candle multiplies the
///    f32 scores by the f64 scale as an affine map `s * scale + 0` whose factor is rounded to
///    f32);
/// 2. `s_j = (Σ_c q_i[c] * k_j[c]) * scale + 0`, the dot product summed from left to right from
///    0 (candle computes it with the `gemm` crate, in another order), the `+ 0` being candle's;
/// 3. `m = s_0`, then `m = s_j` whenever `m < s_j`, for `j` from 1 (candle's maximum, which keeps
///    the first of equal values and never takes a NaN after the first element);
/// 4. `sum = ((0 + exp(s_0 - m)) + exp(s_1 - m)) + ...`, from left to right (candle's sum is
///    sequential for fewer than 32 keys, or without AVX2; see [`layer_norm`]);
/// 5. `w_j = exp(s_j - m) / sum`;
/// 6. `out_i[c] = ((0 + w_0 * v_0[c]) + w_1 * v_1[c]) + ...`, from left to right over `j`
///    (candle: a `gemm` product).
///
/// `exp` is the f32 exponential: the C library's `expf` here, CUDA's `expf` on a GPU, which may
/// differ in the last bit. Candle masks a causal attention by adding `-inf` to the scores of the
/// later keys, whose weights are then exactly 0, so for finite operands the two agree except
/// perhaps in the sign of a zero; here a later key is not read at all, so it changes nothing for
/// an earlier query, even when it is infinite or NaN (which makes candle's output NaN).
///
/// The operands may be longer than `batch * len * heads * head_dim` elements, and only that
/// prefix of `out` is written. If that product overflows or any of the four slices is shorter,
/// `out` is left unchanged.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape, out: &mut [f32]) {
    let Some(elements) = attention_elements(shape) else {
        return;
    };
    if elements == 0 || [q.len(), k.len(), v.len(), out.len()].iter().any(|&n| n < elements) {
        return;
    }
    let AttentionShape { len, heads, head_dim, causal, .. } = shape;
    let scale = attention_scale(head_dim);
    let row = heads * head_dim;
    // `t` numbers the (sequence, query, head) triples, so that `t * head_dim` is the start of
    // the query's and the output's slice; `t / heads = b * len + i` is the query's token.
    for (t, (query, result)) in
        q[..elements].chunks_exact(head_dim).zip(out[..elements].chunks_exact_mut(head_dim)).enumerate()
    {
        let (token, h) = (t / heads, t % heads);
        let i = token % len;
        let first = token - i;
        let keys = if causal { i + 1 } else { len };
        // The head's slice of the row of key (and value) `j`.
        let key = |j: usize| {
            let start = (first + j) * row + h * head_dim;
            start..start + head_dim
        };
        let score = |j: usize| attention_score(query, &k[key(j)], scale);
        let mut max = score(0);
        for j in 1..keys {
            let s = score(j);
            if max < s {
                max = s;
            }
        }
        let mut sum = 0.0_f32;
        for j in 0..keys {
            sum += (score(j) - max).exp();
        }
        result.fill(0.0);
        for j in 0..keys {
            let weight = (score(j) - max).exp() / sum;
            for (o, &x) in result.iter_mut().zip(&v[key(j)]) {
                *o += weight * x;
            }
        }
    }
}

/// The CUDA C of [`attention`]:
///
/// ```c
/// extern "C" __global__ void sched_attention(
///     const float* q, const float* k, const float* v, float* out,
///     unsigned int batch, unsigned int len, unsigned int heads, unsigned int head_dim, int causal)
/// ```
///
/// `q`, `k`, `v` and `out` hold `batch * len * heads * head_dim` elements each, laid out as
/// [`attention`] says, and `out` overlaps none of the others; `causal` is 0 or 1. One thread
/// computes one (sequence, query, head) triple, number `t = (b * len + i) * heads + h` (a
/// grid-stride loop over the `batch * len * heads` triples, so any grid of
/// [`crate::cuda::BLOCK_THREADS`]-thread blocks covers them), in three passes over its keys: the
/// maximum score, the sum of the exponentials, and the weighted sum of the values, accumulated
/// directly into the thread's slice of `out` (no local array, so any `head_dim` works). Each
/// pass recomputes the scores with the same operations, hence the same bits. The result is
/// [`attention`]'s bit for bit, except that CUDA's `expf` may differ from the C library's in the
/// last bit.
pub fn attention_source() -> &'static str {
    r#"// sched: multi-head scaled dot-product attention of a built-in network.

// The score of a query and a key: their dot product, summed from left to right, times the
// scale, plus 0 (as candle's affine map computes it).
__device__ float sched_attention_score(const float* query, const float* key, unsigned int head_dim, float scale)
{
    float dot = 0.0f;
    for (unsigned int c = 0; c < head_dim; ++c) {
        dot += query[c] * key[c];
    }
    return dot * scale + 0.0f;
}

extern "C" __global__ void sched_attention(
    const float* q, const float* k, const float* v, float* out,
    unsigned int batch, unsigned int len, unsigned int heads, unsigned int head_dim, int causal)
{
    // 1 / sqrt(head_dim) in double, rounded to float, as candle scales the scores.
    const float scale = (float)(1.0 / sqrt((double)head_dim));
    const unsigned long long triples = (unsigned long long)batch * len * heads;
    const unsigned long long row = (unsigned long long)heads * head_dim;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; t < triples; t += stride) {
        const unsigned long long token = t / heads;
        const unsigned long long h = t % heads;
        const unsigned long long i = token % len;
        const unsigned long long keys = causal ? i + 1 : len;
        const float* query = q + t * head_dim;
        // The head's slices of the sequence's first token; key j is `row` elements after key j - 1.
        const unsigned long long first = (token - i) * row + h * head_dim;
        const float* key = k + first;
        const float* value = v + first;
        float* result = out + t * head_dim;
        float max = sched_attention_score(query, key, head_dim, scale);
        for (unsigned long long j = 1; j < keys; ++j) {
            const float s = sched_attention_score(query, key + j * row, head_dim, scale);
            if (max < s) {
                max = s;
            }
        }
        float sum = 0.0f;
        for (unsigned long long j = 0; j < keys; ++j) {
            sum += expf(sched_attention_score(query, key + j * row, head_dim, scale) - max);
        }
        for (unsigned int c = 0; c < head_dim; ++c) {
            result[c] = 0.0f;
        }
        for (unsigned long long j = 0; j < keys; ++j) {
            const float weight = expf(sched_attention_score(query, key + j * row, head_dim, scale) - max) / sum;
            const float* value_j = value + j * row;
            for (unsigned int c = 0; c < head_dim; ++c) {
                result[c] += weight * value_j[c];
            }
        }
    }
}
"#
}

/// The entry point of [`gather_rows_source`].
pub const GATHER_ENTRY: &str = "sched_gather_rows";

/// Gathers rows of `src`, a row-major matrix of rows of `width` elements, into `out`: row `i` of
/// `out` (`out[i * width .. (i + 1) * width]`) becomes a copy of row `indices[i]` of `src`, and
/// then, when `blocked` is `Some(c)` with `c < width`, its element `c` becomes `-inf` (the mask
/// token's logit of a masked position, so that the mask token is never chosen). `Some(c)` with
/// `c >= width` blocks nothing, like `None`. The copy is exact: every element keeps its bits, NaN
/// payloads included. Indices may repeat.
///
/// Bad input does not panic; it leaves parts of `out` unchanged:
///
/// - the rows of `src` are its whole rows, `src.len() / width` of them, and a row `i` whose index
///   is not below that count is left unchanged;
/// - only the whole rows that `out` holds are written, so when `out` is shorter than
///   `indices.len() * width` the rows it does not hold entirely (a partial last row included) are
///   left unchanged, and the elements after the first `indices.len() * width` are never written;
/// - `width = 0` writes nothing.
pub fn gather_rows(src: &[f32], indices: &[u32], width: usize, blocked: Option<u32>, out: &mut [f32]) {
    if width == 0 {
        return;
    }
    let rows = src.len() / width;
    let blocked = blocked.and_then(|c| usize::try_from(c).ok()).filter(|&c| c < width);
    for (&index, row) in indices.iter().zip(out.chunks_exact_mut(width)) {
        let Some(index) = usize::try_from(index).ok().filter(|&index| index < rows) else {
            continue;
        };
        row.copy_from_slice(&src[index * width..(index + 1) * width]);
        if let Some(c) = blocked {
            row[c] = f32::NEG_INFINITY;
        }
    }
}

/// The CUDA C of [`gather_rows`]:
///
/// ```c
/// extern "C" __global__ void sched_gather_rows(
///     const float* src, const unsigned int* indices, unsigned long long rows, unsigned int width,
///     unsigned int blocked, float* out)
/// ```
///
/// `rows` is the number of indices, `indices` holds `rows` of them and `out` `rows * width`
/// elements, which must not overlap `src`; `blocked` is the column set to `-inf` in every row of
/// `out`, and a value of at least `width` (such as `0xffffffff`) blocks none. The launcher
/// guarantees that every index is below the number of rows of `src` (the kernel does not check).
/// Thread `t` of the grid copies elements `t, t + T, t + 2T, ...` of `out` (a grid-stride loop
/// over the `rows * width` elements, `T` the threads of the grid, so any grid of
/// [`crate::cuda::BLOCK_THREADS`]-thread blocks covers them), each a load and a store of its bits:
/// the result is [`gather_rows`]'s bit for bit on a GPU as on the host.
pub fn gather_rows_source() -> &'static str {
    r#"// sched: gather of chosen rows of a matrix, with one column blocked.
extern "C" __global__ void sched_gather_rows(
    const float* src, const unsigned int* indices, unsigned long long rows, unsigned int width,
    unsigned int blocked, float* out)
{
    const unsigned long long len = rows * width;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        const unsigned long long r = i / width;
        const unsigned int c = (unsigned int)(i - r * width);
        // -inf from its bits; a blocked column of at least width matches no element.
        out[i] = c == blocked ? __uint_as_float(0xff800000u) : src[(unsigned long long)indices[r] * width + c];
    }
}
"#
}

/// The entry point of [`move_rows_source`].
pub const MOVE_ROWS_ENTRY: &str = "sched_move_rows";

/// Moves rows of `src` to rows of `out`, both row-major matrices of rows of `width` elements: for
/// each `i`, row `to[i]` of `out` becomes a copy of row `from[i]` of `src`, every element keeping
/// its bits (NaN payloads included). Rows of `out` that no `to[i]` names are left unchanged.
///
/// The destinations must be distinct (a launcher refuses repeated ones: the copies of a launch
/// run in parallel). Bad input does not panic; the moves it names are skipped: a move whose
/// `from[i]` is not below `src`'s whole rows (`src.len() / width`) or whose `to[i]` is not below
/// `out`'s, and the moves past the shorter of `from` and `to`. `width = 0` moves nothing.
pub fn move_rows(src: &[f32], from: &[u32], to: &[u32], width: usize, out: &mut [f32]) {
    if width == 0 {
        return;
    }
    let (src_rows, out_rows) = (src.len() / width, out.len() / width);
    for (&from, &to) in from.iter().zip(to) {
        let (Ok(from), Ok(to)) = (usize::try_from(from), usize::try_from(to)) else { continue };
        if from < src_rows && to < out_rows {
            out[to * width..(to + 1) * width].copy_from_slice(&src[from * width..(from + 1) * width]);
        }
    }
}

/// The CUDA C of [`move_rows`]:
///
/// ```c
/// extern "C" __global__ void sched_move_rows(
///     const float* src, const unsigned int* from, const unsigned int* to, unsigned long long rows,
///     unsigned int width, float* out)
/// ```
///
/// `rows` is the number of moves, `from` and `to` hold `rows` row numbers each, and `out`, which
/// must not overlap `src`, holds every row that `to` names. The launcher guarantees that every
/// `from[i]` is below the rows of `src` and every `to[i]` below the rows of `out`, and that the
/// destinations are distinct (the kernel does not check). Thread `t` of the grid copies elements
/// `t, t + T, t + 2T, ...` of the `rows * width` moved elements (a grid-stride loop, `T` the
/// threads of the grid), each a load and a store of its bits: the result is [`move_rows`]'s bit
/// for bit on a GPU as on the host.
pub fn move_rows_source() -> &'static str {
    r#"// sched: move of chosen rows of a matrix to chosen rows of another.
extern "C" __global__ void sched_move_rows(
    const float* src, const unsigned int* from, const unsigned int* to, unsigned long long rows,
    unsigned int width, float* out)
{
    const unsigned long long len = rows * width;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        const unsigned long long r = i / width;
        const unsigned long long c = i - r * width;
        out[(unsigned long long)to[r] * width + c] = src[(unsigned long long)from[r] * width + c];
    }
}
"#
}
