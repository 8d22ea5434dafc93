//! The fixed kernels of Llama-family decoders on a device (the layers around their matrix
//! products): RMSNorm of every row, rotary position embeddings from tables of cosines and sines,
//! SwiGLU, and grouped-query attention of new positions over a key/value cache.
//!
//! As in [`crate::layers`], each layer has a reference function ([`rms_norm`], [`rope`],
//! [`swiglu`], [`cached_attention`]) whose documentation is the NORMATIVE definition (every
//! operation, its order and its rounding) and which the emulated device runs, and the same
//! computation as CUDA C, compiled with the options of [`crate::nvrtc`] (no multiply-add
//! contraction, correctly rounded `/` and `sqrt`, subnormals kept). The kernels loop sequentially
//! in the reference's order, so they give the reference's bits, except through CUDA's `expf`
//! (SwiGLU, attention), which may differ from the C library's in the last place. Run on the host
//! with the C library (the harness of `kernels/tests/it/host_decoder.rs`), the CUDA text
//! reproduces the references exactly.
//!
//! The references follow the f32 arithmetic of `sched-models`' Llama network with transformers'
//! conventions (`models/src/llama/network.rs`): the mean of squares of RMSNorm in f64, RoPE's
//! rotation of the two halves of each head, SiLU as `v / (1 + exp(−v))`, the attention's softmax
//! normalized in f64. The cosines and sines come from the host, which computes them once per
//! position, so the device runs no trigonometry.

/// The entry point of [`rms_norm_source`].
pub const RMS_NORM_ENTRY: &str = "sched_rms_norm";
/// The entry point of [`rope_source`].
pub const ROPE_ENTRY: &str = "sched_rope";
/// The entry point of [`swiglu_source`].
pub const SWIGLU_ENTRY: &str = "sched_swiglu";
/// The entry point of [`cached_attention_source`].
pub const CACHED_ATTENTION_ENTRY: &str = "sched_cached_attention";

/// RMSNorm of each row of `x` (rows of `weight`'s length `width`) into `out`:
///
/// 1. `squares = ((0 + x_0²) + x_1²) + …` in f64, each `x_c²` the f64 product of the f64 value
///    with itself, summed from left to right;
/// 2. `mean = squares / width` in f64, rounded to f32;
/// 3. `inverse = 1 / sqrt(mean + eps)` in f32 (`+`, `sqrt` and `/` correctly rounded);
/// 4. `out_c = weight_c * (x_c * inverse)` in f32.
///
/// The rows are those that `x` and `out` both hold entirely; the rest of `out` is left
/// unchanged, as is all of it when `weight` is empty.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    if width == 0 {
        return;
    }
    for (row, result) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let mut squares = 0.0f64;
        for &v in row {
            squares += f64::from(v) * f64::from(v);
        }
        // Rounding the f64 mean to the nearest f32 is the intended conversion.
        let mean = (squares / width as f64) as f32;
        let inverse = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in result.iter_mut().zip(row).zip(weight) {
            *o = w * (v * inverse);
        }
    }
}

/// The CUDA C of [`rms_norm`]:
///
/// ```c
/// extern "C" __global__ void sched_rms_norm(
///     const float* x, const float* weight, float* out, unsigned long long rows, unsigned int width, float eps)
/// ```
///
/// One thread normalizes one row (a grid-stride loop over the rows); `x` and `out` hold
/// `rows * width` elements and do not overlap.
pub fn rms_norm_source() -> &'static str {
    r#"// sched: RMSNorm of every row of a decoder's activations.
extern "C" __global__ void sched_rms_norm(
    const float* x, const float* weight, float* out, unsigned long long rows, unsigned int width, float eps)
{
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long r = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += stride) {
        const float* row = x + r * width;
        float* result = out + r * width;
        double squares = 0.0;
        for (unsigned int c = 0; c < width; ++c) {
            squares += (double)row[c] * (double)row[c];
        }
        const float mean = (float)(squares / (double)width);
        const float inverse = 1.0f / sqrtf(mean + eps);
        for (unsigned int c = 0; c < width; ++c) {
            result[c] = weight[c] * (row[c] * inverse);
        }
    }
}
"#
}

/// The shape of a [`rope`]: rows of `heads * head_dim` elements, `head_dim` even.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RopeShape {
    pub rows: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// Rotary position embeddings in place: row `r` of `x` (`heads * head_dim` elements) is at
/// position `positions[r]`, and `cos` and `sin` hold `head_dim / 2` values per position
/// (`cos[p * half + i]`). For each head and `i < half`, with `a = x[i]` and `b = x[i + half]` of
/// the head, `x[i] = a * cos − b * sin` and `x[i + half] = b * cos + a * sin`, each evaluated from
/// left to right in f32 (transformers' `rotate_half`).
///
/// Rows beyond `positions`, beyond what `x` holds, or whose position has no table entries are
/// left unchanged, as is everything for an odd or zero `head_dim`.
pub fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], positions: &[u32], shape: RopeShape) {
    let RopeShape { rows, heads, head_dim } = shape;
    if head_dim == 0 || !head_dim.is_multiple_of(2) || heads == 0 {
        return;
    }
    let half = head_dim / 2;
    for (row, &p) in x.chunks_exact_mut(heads * head_dim).zip(positions).take(rows) {
        let at = p as usize * half;
        let (Some(cos), Some(sin)) = (cos.get(at..at + half), sin.get(at..at + half)) else { continue };
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos[i] - b * sin[i];
                head[i + half] = b * cos[i] + a * sin[i];
            }
        }
    }
}

/// The CUDA C of [`rope`]:
///
/// ```c
/// extern "C" __global__ void sched_rope(
///     float* x, const float* cos, const float* sin, const unsigned int* positions,
///     unsigned long long rows, unsigned int heads, unsigned int head_dim, unsigned long long table_positions)
/// ```
///
/// One thread rotates one pair (row, head, i) (a grid-stride loop over `rows * heads * head_dim /
/// 2` pairs); `table_positions` is the number of positions the tables hold, and a row whose
/// position is not below it is left unchanged.
pub fn rope_source() -> &'static str {
    r#"// sched: rotary position embeddings of a decoder's queries and keys.
extern "C" __global__ void sched_rope(
    float* x, const float* cos, const float* sin, const unsigned int* positions,
    unsigned long long rows, unsigned int heads, unsigned int head_dim, unsigned long long table_positions)
{
    if (head_dim == 0 || head_dim % 2 != 0) {
        return;
    }
    const unsigned long long half = head_dim / 2;
    const unsigned long long pairs = rows * heads * half;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; t < pairs; t += stride) {
        const unsigned long long i = t % half;
        const unsigned long long head = t / half;
        const unsigned long long r = head / heads;
        const unsigned long long p = positions[r];
        if (p >= table_positions) {
            continue;
        }
        float* h = x + head * head_dim;
        const float c = cos[p * half + i];
        const float s = sin[p * half + i];
        const float a = h[i];
        const float b = h[i + half];
        h[i] = a * c - b * s;
        h[i + half] = b * c + a * s;
    }
}
"#
}

/// SwiGLU: `out[i] = silu(gate[i]) * up[i]` in f32, with [`crate::layers::silu`]'s
/// `v / (1 + exp(−v))`, for the elements all three slices hold.
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = crate::layers::silu(g) * u;
    }
}

/// The CUDA C of [`swiglu`]:
///
/// ```c
/// extern "C" __global__ void sched_swiglu(const float* gate, const float* up, float* out, unsigned long long len)
/// ```
///
/// One thread per element (a grid-stride loop); `out` may be `gate` or `up`.
pub fn swiglu_source() -> &'static str {
    r#"// sched: SwiGLU of a decoder's gate and up projections.
extern "C" __global__ void sched_swiglu(const float* gate, const float* up, float* out, unsigned long long len)
{
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
"#
}

/// The shape of a [`cached_attention`]: `queries` new positions `start .. start + queries` of one
/// sequence, `heads` query heads sharing `kv_heads` key/value heads (`heads` a multiple of
/// `kv_heads`) of `head_dim` elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CachedAttentionShape {
    pub queries: usize,
    pub start: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl CachedAttentionShape {
    /// The number of elements of `q` and `out` (`queries * heads * head_dim`) and of the caches
    /// (`(start + queries) * kv_heads * head_dim`), or `None` when the shape is not one (a
    /// product overflows, no head, or heads not a multiple of the key/value heads).
    pub fn elements(self) -> Option<(usize, usize)> {
        if self.kv_heads == 0 || self.head_dim == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return None;
        }
        let queries = self.queries.checked_mul(self.heads)?.checked_mul(self.head_dim)?;
        let keys = self.start.checked_add(self.queries)?.checked_mul(self.kv_heads)?.checked_mul(self.head_dim)?;
        Some((queries, keys))
    }
}

/// Causal grouped-query attention of new positions over a key/value cache.
///
/// `q` and `out` are `[queries, heads * head_dim]`; `keys` and `values` are the cache,
/// `[positions, kv_heads * head_dim]`, holding at least the positions `0 .. start + queries` (the
/// new positions' keys and values included). Query `i` (position `p = start + i`) of head `h`
/// attends over positions `0..=p` with key/value head `h / (heads / kv_heads)`:
///
/// 1. `scale = 1 / sqrt(head_dim)` in f32 (`sqrt` of the f32 `head_dim`, then `/`);
/// 2. `s_j = (Σ_c q[c] * k_j[c]) * scale`, the dot product summed from left to right from 0 in
///    f32;
/// 3. `m = s_0`, then `m = s_j` whenever `m < s_j`, for `j` from 1;
/// 4. `e_j = exp(s_j − m)` in f32 and `total = Σ_j e_j` in f64, from left to right;
/// 5. `w_j = e_j / total` in f64, rounded to f32;
/// 6. `out[c] = ((0 + w_0 * v_0[c]) + w_1 * v_1[c]) + …` in f32, from left to right over `j`.
///
/// When the shape is not one or a slice is shorter than the shape needs, `out` is left unchanged.
pub fn cached_attention(q: &[f32], keys: &[f32], values: &[f32], shape: CachedAttentionShape, out: &mut [f32]) {
    let Some((query_elements, cache_elements)) = shape.elements() else { return };
    if q.len() < query_elements
        || out.len() < query_elements
        || keys.len() < cache_elements
        || values.len() < cache_elements
    {
        return;
    }
    let CachedAttentionShape { start, heads, kv_heads, head_dim, .. } = shape;
    let group = heads / kv_heads;
    let kv_width = kv_heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    for (t, (query, result)) in
        q[..query_elements].chunks_exact(head_dim).zip(out[..query_elements].chunks_exact_mut(head_dim)).enumerate()
    {
        let (i, h) = (t / heads, t % heads);
        let p = start + i;
        let at = |j: usize| j * kv_width + (h / group) * head_dim;
        let score = |j: usize| {
            let key = &keys[at(j)..at(j) + head_dim];
            let mut dot = 0.0f32;
            for (&a, &b) in query.iter().zip(key) {
                dot += a * b;
            }
            dot * scale
        };
        let mut max = score(0);
        for j in 1..=p {
            let s = score(j);
            if max < s {
                max = s;
            }
        }
        let mut total = 0.0f64;
        for j in 0..=p {
            total += f64::from((score(j) - max).exp());
        }
        result.fill(0.0);
        for j in 0..=p {
            // Rounding the f64 weight to the nearest f32 is the intended conversion.
            let weight = (f64::from((score(j) - max).exp()) / total) as f32;
            for (o, &v) in result.iter_mut().zip(&values[at(j)..at(j) + head_dim]) {
                *o += weight * v;
            }
        }
    }
}

/// The CUDA C of [`cached_attention`]:
///
/// ```c
/// extern "C" __global__ void sched_cached_attention(
///     const float* q, const float* keys, const float* values, float* out,
///     unsigned int queries, unsigned int start, unsigned int heads, unsigned int kv_heads, unsigned int head_dim)
/// ```
///
/// One thread computes one (query, head) pair (a grid-stride loop over `queries * heads`), in
/// three passes over the positions that recompute the scores with the same operations: the
/// maximum, the f64 total of the exponentials, and the weighted sum of the values accumulated in
/// the thread's slice of `out` (which overlaps no operand).
pub fn cached_attention_source() -> &'static str {
    r#"// sched: grouped-query attention of a decoder's new positions over its key/value cache.
__device__ float sched_cached_score(const float* query, const float* key, unsigned int head_dim, float scale)
{
    float dot = 0.0f;
    for (unsigned int c = 0; c < head_dim; ++c) {
        dot += query[c] * key[c];
    }
    return dot * scale;
}

extern "C" __global__ void sched_cached_attention(
    const float* q, const float* keys, const float* values, float* out,
    unsigned int queries, unsigned int start, unsigned int heads, unsigned int kv_heads, unsigned int head_dim)
{
    if (kv_heads == 0 || head_dim == 0 || heads % kv_heads != 0) {
        return;
    }
    const float scale = 1.0f / sqrtf((float)head_dim);
    const unsigned long long group = heads / kv_heads;
    const unsigned long long kv_width = (unsigned long long)kv_heads * head_dim;
    const unsigned long long pairs = (unsigned long long)queries * heads;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; t < pairs; t += stride) {
        const unsigned long long i = t / heads;
        const unsigned long long h = t % heads;
        const unsigned long long p = start + i;
        const float* query = q + t * head_dim;
        const unsigned long long offset = (h / group) * head_dim;
        float* result = out + t * head_dim;
        float max = sched_cached_score(query, keys + offset, head_dim, scale);
        for (unsigned long long j = 1; j <= p; ++j) {
            const float s = sched_cached_score(query, keys + j * kv_width + offset, head_dim, scale);
            if (max < s) {
                max = s;
            }
        }
        double total = 0.0;
        for (unsigned long long j = 0; j <= p; ++j) {
            total += (double)expf(sched_cached_score(query, keys + j * kv_width + offset, head_dim, scale) - max);
        }
        for (unsigned int c = 0; c < head_dim; ++c) {
            result[c] = 0.0f;
        }
        for (unsigned long long j = 0; j <= p; ++j) {
            const float e = expf(sched_cached_score(query, keys + j * kv_width + offset, head_dim, scale) - max);
            const float weight = (float)((double)e / total);
            const float* value = values + j * kv_width + offset;
            for (unsigned int c = 0; c < head_dim; ++c) {
                result[c] += weight * value[c];
            }
        }
    }
}
"#
}
