//! The Llama-family network on the host: its weights and the forward pass of a batch of rows over
//! the key/value cache, in f32 except for the matrix products of quantized weights.
//!
//! Per layer, as transformers computes it: `h = x + o(attention(rope(q(n)), rope(k(n)), v(n)))`
//! with `n = rms_norm(x)`, then `x' = h + down(silu(gate(m)) · up(m))` with `m = rms_norm(h)`;
//! after the last layer, `rms_norm` and the output layer (the token embedding when tied). RMSNorm
//! is `w · x / sqrt(mean(x²) + ε)`; RoPE rotates the two halves of each head (transformers'
//! `rotate_half`) by the angles `position · inverse frequency`; attention is causal, with each
//! key/value head serving `heads / kv_heads` query heads and scores scaled by `1/√head_dim`.
//!
//! Where transformers and llama.cpp round differently, [`Arithmetic`] picks whose rounding the
//! pass reproduces: a GGUF kept quantized follows llama.cpp, everything else transformers.

use std::ops::Range;

use super::cache::{NodeId, PrefixCache};
use super::config::{LlamaConfig, Rope, RopeScaling};
use super::matrix::Matrix;
use super::{ggml, team};

/// One transformer block.
pub(crate) struct Block {
    pub(crate) attention_norm: Vec<f32>,
    pub(crate) q: Matrix,
    pub(crate) k: Matrix,
    pub(crate) v: Matrix,
    /// The projections' biases (Qwen2).
    pub(crate) qkv_bias: Option<[Vec<f32>; 3]>,
    pub(crate) o: Matrix,
    pub(crate) ffn_norm: Vec<f32>,
    pub(crate) gate: Matrix,
    pub(crate) up: Matrix,
    pub(crate) down: Matrix,
}

/// The network's weights.
pub(crate) struct Network {
    pub(crate) config: LlamaConfig,
    pub(crate) embedding: Matrix,
    pub(crate) blocks: Vec<Block>,
    pub(crate) norm: Vec<f32>,
    /// The output layer, or `None` when it is the embedding.
    pub(crate) output: Option<Matrix>,
    pub(crate) rope: RopeAngles,
    pub(crate) arithmetic: Arithmetic,
    /// Whether the file held each query and key head with its halves interleaved (llama.cpp's
    /// `llama` order, whose rows the loader put back in transformers' order): llama.cpp's sums
    /// over a head run in the file's order.
    pub(crate) interleaved_heads: bool,
}

/// Whose floating-point rounding a forward pass reproduces where the references differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arithmetic {
    /// transformers' float32 model: RMSNorm's squares in f64 (within 1e-7 of torch's f32 mean),
    /// RoPE angles `position · inverse frequency`, attention in f32.
    Transformers,
    /// llama.cpp's CPU graph with its default f16 key/value cache: RMSNorm's squares rounded to
    /// f32 and summed in f64; RoPE angles by repeated f32 multiplication (`ggml_rope_cache_init`)
    /// and the rotation with fused multiply-adds;
    /// queries, keys, values and attention weights rounded to f16; both attention products,
    /// the softmax and SiLU as `ggml.rs` reproduces them. With the integer kernels of `quant.rs`
    /// the pass is llama.cpp's to the bit.
    LlamaCpp,
}

/// The rotary embedding's angles, in both references' ways.
pub(crate) struct RopeAngles {
    /// transformers: the angle of pair `i` is `position · inverse_frequencies[i]`.
    pub(crate) inverse_frequencies: Vec<f32>,
    /// llama.cpp: `θ_0 = position`, `θ_{i+1} = θ_i · theta_scale`, and the angle of pair `i` is
    /// `freq_scale · (θ_i / factors[i])`.
    pub(crate) theta_scale: f32,
    pub(crate) freq_scale: f32,
    pub(crate) factors: Vec<f32>,
}

impl RopeAngles {
    /// The angles of `rope` for heads of `head_dim`. `file_factors` are a GGUF's `rope_freqs`
    /// (the divisors of each pair's frequency), which take the place of the config's scaling.
    pub(crate) fn new(rope: &Rope, head_dim: usize, file_factors: Option<Vec<f32>>) -> RopeAngles {
        let unscaled = Rope { scaling: RopeScaling::None, ..*rope }.inverse_frequencies(head_dim);
        let (inverse_frequencies, freq_scale, factors) = match file_factors {
            Some(factors) => (unscaled.iter().zip(&factors).map(|(f, d)| f / d).collect(), 1.0, factors),
            None => match rope.scaling {
                RopeScaling::None => (unscaled.clone(), 1.0, vec![1.0; unscaled.len()]),
                RopeScaling::Linear { factor } => {
                    (rope.inverse_frequencies(head_dim), 1.0 / factor as f32, vec![1.0; unscaled.len()])
                }
                RopeScaling::Llama3 { .. } => {
                    let scaled = rope.inverse_frequencies(head_dim);
                    let factors = unscaled.iter().zip(&scaled).map(|(u, s)| u / s).collect();
                    (scaled, 1.0, factors)
                }
            },
        };
        let theta_scale = (rope.theta as f32).powf(-2.0 / head_dim as f32);
        RopeAngles { inverse_frequencies, theta_scale, freq_scale, factors }
    }

    /// The (cos, sin) of each pair's angle at `position`.
    pub(crate) fn at(&self, position: usize, arithmetic: Arithmetic) -> Vec<(f32, f32)> {
        match arithmetic {
            Arithmetic::Transformers => self
                .inverse_frequencies
                .iter()
                .map(|&f| {
                    let angle = position as f32 * f;
                    (angle.cos(), angle.sin())
                })
                .collect(),
            Arithmetic::LlamaCpp => {
                let mut theta = position as f32;
                self.factors
                    .iter()
                    .map(|&factor| {
                        let angle = self.freq_scale * (theta / factor);
                        theta *= self.theta_scale;
                        (angle.cos(), angle.sin())
                    })
                    .collect()
            }
        }
    }
}

/// One row of a forward pass: its tokens, the cached prefix it starts from, and the positions
/// whose output (the logits of the next token) the caller wants.
pub(crate) struct RowPass<'a> {
    pub(crate) tokens: &'a [u32],
    /// The cache's nodes of positions `0..path.len()`.
    pub(crate) path: Vec<NodeId>,
    /// Positions whose outputs are wanted; the pass computes every position from the first of
    /// them or the end of the cached prefix, whichever comes first.
    pub(crate) outputs: Range<usize>,
}

impl RowPass<'_> {
    /// The first position the pass computes.
    fn start(&self) -> usize {
        self.path.len().min(self.outputs.start)
    }
}

type Result<T> = candle_core::Result<T>;

/// The fewest multiply-adds of attention worth handing to another thread.
const MIN_PART_ATTENTION: usize = 1 << 13;

impl Network {
    fn kv_width(&self) -> usize {
        self.config.kv_heads * self.config.head_dim
    }

    /// The logits of every wanted position of every row, row after row (`vocab` each), computing
    /// only the positions the cache lacks, and adding them to it.
    pub(crate) fn forward(&self, cache: &mut PrefixCache, rows: &[RowPass<'_>]) -> Result<Vec<f32>> {
        let c = &self.config;
        let (hidden, kv_width) = (c.hidden, self.kv_width());
        // The computed positions of every row, one after another: (row, position).
        let mut tokens = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            if row.outputs.end > row.tokens.len() || row.outputs.start > row.outputs.end {
                candle_core::bail!("outputs {:?} of a row of {} tokens", row.outputs, row.tokens.len());
            }
            tokens.extend((row.start()..row.tokens.len()).map(|p| (r, p)));
        }
        let n = tokens.len();
        let mut x = Vec::with_capacity(n * hidden);
        for &(r, p) in &tokens {
            let id = rows[r].tokens[p] as usize;
            if id >= c.vocab {
                candle_core::bail!("token {id} is outside the vocabulary of {}", c.vocab);
            }
            x.extend(self.embedding.row(id)?);
        }
        // Each computed position's keys and values, `[n, layers, 2, kv_width]`, for the cache.
        let mut kv = vec![0.0f32; n * c.layers * 2 * kv_width];
        let positions: Vec<usize> = tokens.iter().map(|&(_, p)| p).collect();
        for (l, block) in self.blocks.iter().enumerate() {
            let normed = rms_norm(&x, &block.attention_norm, c.rms_eps, self.arithmetic);
            let mut q = block.q.forward(&normed, n)?;
            let mut k = block.k.forward(&normed, n)?;
            let mut v = block.v.forward(&normed, n)?;
            if let Some([bq, bk, bv]) = &block.qkv_bias {
                add_bias(&mut q, bq);
                add_bias(&mut k, bk);
                add_bias(&mut v, bv);
            }
            self.rope(&mut q, &positions, c.heads);
            self.rope(&mut k, &positions, c.kv_heads);
            if self.arithmetic == Arithmetic::LlamaCpp {
                for x in q.iter_mut().chain(k.iter_mut()).chain(v.iter_mut()) {
                    *x = half::f16::from_f32(*x).to_f32();
                }
                // Queries and keys meet only in their dot products, which llama.cpp sums in the
                // file's order: the cache keeps keys in it.
                if self.interleaved_heads {
                    interleave_halves(&mut q, c.head_dim);
                    interleave_halves(&mut k, c.head_dim);
                }
            }
            for t in 0..n {
                let at = (t * c.layers + l) * 2 * kv_width;
                kv[at..at + kv_width].copy_from_slice(&k[t * kv_width..(t + 1) * kv_width]);
                kv[at + kv_width..at + 2 * kv_width].copy_from_slice(&v[t * kv_width..(t + 1) * kv_width]);
            }
            let attended = self.attention(cache, rows, &tokens, l, &q, &k, &v);
            let out = block.o.forward(&attended, n)?;
            add(&mut x, &out);
            let normed = rms_norm(&x, &block.ffn_norm, c.rms_eps, self.arithmetic);
            let gate = block.gate.forward(&normed, n)?;
            let up = block.up.forward(&normed, n)?;
            let act = match self.arithmetic {
                Arithmetic::Transformers => gate.iter().zip(&up).map(|(&g, &u)| silu(g) * u).collect(),
                Arithmetic::LlamaCpp => {
                    let mut act = Vec::with_capacity(gate.len());
                    for (g, u) in gate.chunks_exact(c.intermediate).zip(up.chunks_exact(c.intermediate)) {
                        ggml::swiglu(g, u, &mut act);
                    }
                    act
                }
            };
            let down = block.down.forward(&act, n)?;
            add(&mut x, &down);
        }
        // The new positions join the cache, each under the one before it.
        let node_len = cache.node_len();
        let mut last: Vec<Option<NodeId>> = vec![None; rows.len()];
        for (t, &(r, p)) in tokens.iter().enumerate() {
            let row = &rows[r];
            // The first computed position follows the cached prefix; the others, each other.
            let parent = match p {
                0 => None,
                _ if p == row.start() => Some(row.path[p - 1]),
                _ => last[r],
            };
            let node = cache.insert(parent, row.tokens[p], &kv[t * node_len..(t + 1) * node_len]);
            last[r] = Some(node);
        }
        // The wanted outputs only go through the final norm and the output layer.
        let wanted: Vec<usize> =
            tokens.iter().enumerate().filter(|&(_, &(r, p))| rows[r].outputs.contains(&p)).map(|(t, _)| t).collect();
        let mut selected = Vec::with_capacity(wanted.len() * hidden);
        for &t in &wanted {
            selected.extend_from_slice(&x[t * hidden..(t + 1) * hidden]);
        }
        let normed = rms_norm(&selected, &self.norm, c.rms_eps, self.arithmetic);
        let output = self.output.as_ref().unwrap_or(&self.embedding);
        output.forward(&normed, wanted.len())
    }

    /// Rotates each head of `x` (`[n, heads · head_dim]`) by its position's angles.
    fn rope(&self, x: &mut [f32], positions: &[usize], heads: usize) {
        let head_dim = self.config.head_dim;
        let half = head_dim / 2;
        for (row, &p) in x.chunks_exact_mut(heads * head_dim).zip(positions) {
            let angles = self.rope.at(p, self.arithmetic);
            for head in row.chunks_exact_mut(head_dim) {
                for (i, &(cos, sin)) in angles.iter().enumerate() {
                    let (a, b) = (head[i], head[i + half]);
                    (head[i], head[i + half]) = match self.arithmetic {
                        Arithmetic::Transformers => (a * cos - b * sin, b * cos + a * sin),
                        // llama.cpp's `x0·cos − x1·sin` and `x0·sin + x1·cos` as GCC contracts
                        // them: one fused multiply-add each.
                        Arithmetic::LlamaCpp => (a.mul_add(cos, -(b * sin)), a.mul_add(sin, b * cos)),
                    };
                }
            }
        }
    }

    /// Causal attention of every computed position over its row's cached prefix and its row's
    /// computed positions up to itself: `[n, heads · head_dim]`.
    #[allow(clippy::too_many_arguments, reason = "the operands of one layer's attention")]
    fn attention(
        &self,
        cache: &PrefixCache,
        rows: &[RowPass<'_>],
        tokens: &[(usize, usize)],
        layer: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> Vec<f32> {
        let c = &self.config;
        let (head_dim, kv_width) = (c.head_dim, self.kv_width());
        let group = c.heads / c.kv_heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        // The index in `tokens` of each row's first computed position.
        let mut first = vec![0usize; rows.len()];
        for (t, &(r, p)) in tokens.iter().enumerate().rev() {
            if p == rows[r].start() {
                first[r] = t;
            }
        }
        let llama_cpp = self.arithmetic == Arithmetic::LlamaCpp;
        let sums = ggml::Sums::of_pass(tokens.len());
        // Head `h` of the computed position `t`, into `head`.
        let attend_head = |t: usize, h: usize, head: &mut [f32]| {
            let (r, p) = tokens[t];
            let row = &rows[r];
            let start = row.start();
            let heads = (h / group) * head_dim..(h / group + 1) * head_dim;
            // Keys and values of positions 0..=p: cached, then computed in this pass.
            let key = |j: usize| -> &[f32] {
                let keys = if j < start {
                    cache.keys(row.path[j], layer)
                } else {
                    let t = first[r] + (j - start);
                    &k[t * kv_width..(t + 1) * kv_width]
                };
                &keys[heads.clone()]
            };
            let value = |j: usize| -> &[f32] {
                let values = if j < start {
                    cache.values(row.path[j], layer)
                } else {
                    let t = first[r] + (j - start);
                    &v[t * kv_width..(t + 1) * kv_width]
                };
                &values[heads.clone()]
            };
            let query = &q[(t * c.heads + h) * head_dim..(t * c.heads + h + 1) * head_dim];
            if llama_cpp {
                // llama.cpp's key/value cache holds a multiple of 256 positions.
                let cache_len = (p + 1).div_ceil(256) * 256;
                ggml::attend(sums, query, &key, &value, p + 1, cache_len, scale, head);
                return;
            }
            let mut scores: Vec<f32> = (0..=p).map(|j| dot(query, key(j)) * scale).collect();
            softmax(&mut scores);
            for (j, &w) in scores.iter().enumerate() {
                for (o, &x) in head.iter_mut().zip(value(j)) {
                    *o += w * x;
                }
            }
        };
        // Every (position, head) pair is one item; the team takes parts of them when they
        // cover many positions.
        let items = tokens.len() * c.heads;
        let work: usize = tokens.iter().map(|&(_, p)| (p + 1) * c.heads * head_dim).sum();
        let min_part = (items * MIN_PART_ATTENTION).div_ceil(work.max(1));
        let parts = team::split(items, min_part, &|range: std::ops::Range<usize>| {
            let mut part = vec![0.0f32; range.len() * head_dim];
            for (item, head) in range.zip(part.chunks_exact_mut(head_dim)) {
                attend_head(item / c.heads, item % c.heads, head);
            }
            part
        });
        parts.concat()
    }
}

/// RMSNorm of each row of `x` (rows of `weight`'s length): `w · x / sqrt(mean(x²) + ε)`, the
/// mean of squares summed in f64.
fn rms_norm(x: &[f32], weight: &[f32], eps: f64, arithmetic: Arithmetic) -> Vec<f32> {
    let square = |v: f32| match arithmetic {
        Arithmetic::Transformers => f64::from(v) * f64::from(v),
        Arithmetic::LlamaCpp => f64::from(v * v),
    };
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(weight.len().max(1)) {
        let mean = row.iter().map(|&v| square(v)).sum::<f64>() / row.len() as f64;
        let inverse = 1.0 / (mean as f32 + eps as f32).sqrt();
        out.extend(row.iter().zip(weight).map(|(&v, &w)| w * (v * inverse)));
    }
    out
}

/// Each head of `x` (`head_dim` values) from transformers' order to llama.cpp's `llama` order:
/// element `2i + c` of a head becomes element `c · head_dim/2 + i`'s value.
fn interleave_halves(x: &mut [f32], head_dim: usize) {
    let half = head_dim / 2;
    let mut scratch = vec![0.0f32; head_dim];
    for head in x.chunks_exact_mut(head_dim.max(1)) {
        for (e, value) in scratch.iter_mut().enumerate() {
            *value = head[(e % 2) * half + e / 2];
        }
        head.copy_from_slice(&scratch);
    }
}

/// The softmax of `scores` in place, summed in f64.
fn softmax(scores: &mut [f32]) {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut total = 0.0f64;
    for score in scores.iter_mut() {
        *score = (*score - max).exp();
        total += f64::from(*score);
    }
    for score in scores {
        *score = (f64::from(*score) / total) as f32;
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Adds `bias` to every row of `x`.
fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len().max(1)) {
        add(row, bias);
    }
}
