//! One operation of a device on named buffers: what [`Device::execute`] runs, and what a captured
//! graph, a recorded run and a replay plan hold. `B` names the buffers: the device's own ids, or a
//! plan's slots.
//!
//! An operation borrows what a caller holds (a kernel, buffer lists, row indices), so issuing one
//! copies nothing; a recording keeps an owned copy ([`DeviceOp::into_owned`]).
//!
//! Adding an operation is one variant here (with its arms in [`DeviceOp::map`],
//! [`DeviceOp::written`] and [`PartialEq`]), its normative CPU reference in
//! [`sched_kernels::layers`], and its implementations in the devices; the wrappers pass it on.

use std::borrow::Cow;

use sched_kernels::decoder::{CachedAttentionShape, RopeShape};
use sched_kernels::layers::{Activation, AttentionShape};
use sched_kernels::spec::{ElementwiseKernel, NoiseLaunch, NoiseSlot};

use super::{BufferId, Device, DeviceError, Launch, LinearShape, RowMoves};

/// A device operation that computes on buffers and returns nothing to the host.
#[derive(Clone, Debug)]
pub enum DeviceOp<'a, B: Clone> {
    /// An elementwise launch over `len` elements; `seed` is the one it draws with (a plan's are 0:
    /// a replay gives it).
    Elementwise {
        kernel: Cow<'a, ElementwiseKernel>,
        len: usize,
        inputs: Cow<'a, [B]>,
        /// The outputs, in order; an output may be one of the inputs (updated in place).
        outputs: Cow<'a, [B]>,
        /// The kernel's scalar parameters, already rounded to f32.
        params: Cow<'a, [f32]>,
        seed: u64,
        per_sample: usize,
        slots: Cow<'a, [NoiseSlot]>,
    },
    /// The matrix product of a linear layer: `out[r, o] = Σ_i x[r, i] weight[o, i]` for
    /// `shape.rows` rows, with `x` of shape `[rows, inputs]` and `weight` of shape
    /// `[outputs, inputs]`, both row-major (candle's and PyTorch's layout). The sum's order is
    /// the device's.
    Linear { x: B, weight: B, out: B, shape: LinearShape },
    /// `data[r, c] = activation(data[r, c] + bias[c])` in place, for a row-major buffer of `len`
    /// elements whose rows have `bias`'s length ([`sched_kernels::layers::bias_activation`]).
    BiasActivation { data: B, bias: B, len: usize, activation: Activation },
    /// Copies the first `len` elements of `from` into `to` (distinct buffers).
    Copy { from: B, to: B, len: usize },
    /// LayerNorm of each row of `width` elements of `x` (`rows` rows) into `out`, with the scale
    /// `weight` and shift `bias` (`width` elements each) and `eps`
    /// ([`sched_kernels::layers::layer_norm`]); `out` is not `x`.
    LayerNorm { x: B, weight: B, bias: B, out: B, rows: usize, width: usize, eps: f32 },
    /// Multi-head attention of `q`, `k` and `v` into `out`, each `[batch, len, heads * head_dim]`
    /// ([`sched_kernels::layers::attention`]); `out` is none of the inputs.
    Attention { q: B, k: B, v: B, out: B, shape: AttentionShape },
    /// Row `i` of `out` becomes row `indices[i]` of `src` (rows of `width` elements), with element
    /// `blocked` of every row, when given, set to -inf ([`sched_kernels::layers::gather_rows`]).
    Gather { src: B, indices: Cow<'a, [u32]>, width: usize, blocked: Option<u32>, out: B },
    /// Row `to[i]` of `out` becomes a copy of row `from[i]` of `src` (rows of `width` elements)
    /// ([`sched_kernels::layers::move_rows`]); `out` is not `src`, and [`RowMoves::check`] says
    /// what else the operation must satisfy.
    MoveRows { src: B, from: Cow<'a, [u32]>, to: Cow<'a, [u32]>, width: usize, out: B },
    /// `out[i] = guided_logit(un[i], cond[i], scale)` for the first `len` elements
    /// ([`sched_kernels::tokens::guided_logit`], classifier-free guidance); `out` may be `cond`.
    GuideLogits { un: B, cond: B, scale: f64, len: usize, out: B },
    /// RMSNorm of each row of `width` elements of `x` (`rows` rows) into `out`, with the scale
    /// `weight` ([`sched_kernels::decoder::rms_norm`]); `out` is not `x`.
    RmsNorm { x: B, weight: B, out: B, rows: usize, width: usize, eps: f32 },
    /// Rotary position embeddings of the rows of `x` in place, row `r` at `positions[r]`, from
    /// tables of `table_positions` positions of `head_dim / 2` cosines and sines
    /// ([`sched_kernels::decoder::rope`]).
    Rope { x: B, cos: B, sin: B, positions: Cow<'a, [u32]>, shape: RopeShape, table_positions: usize },
    /// `out[i] = silu(gate[i]) * up[i]` for the first `len` elements
    /// ([`sched_kernels::decoder::swiglu`]); `out` may be `gate` or `up`.
    SwiGlu { gate: B, up: B, out: B, len: usize },
    /// Grouped-query attention of new positions `q` over the key/value cache `keys`, `values`
    /// into `out` ([`sched_kernels::decoder::cached_attention`]); `out` is none of the inputs.
    CachedAttention { q: B, keys: B, values: B, out: B, shape: CachedAttentionShape },
}

/// The product of a launch's `sizes`, or an error naming `buffer` when it overflows.
pub(crate) fn elements(buffer: BufferId, sizes: &[usize]) -> Result<usize, DeviceError> {
    sizes.iter().try_fold(1usize, |n, &k| n.checked_mul(k)).ok_or_else(|| DeviceError::Buffer {
        buffer: buffer.0,
        problem: format!("a launch of {sizes:?} elements overflows"),
    })
}

/// The elements of a [`DeviceOp::Rope`]'s rows and of its tables, checked: a position for every
/// row, and no size overflowing.
pub(crate) fn rope_extent(
    x: BufferId,
    positions: &[u32],
    shape: RopeShape,
    table_positions: usize,
) -> Result<(usize, usize), DeviceError> {
    let RopeShape { rows, heads, head_dim } = shape;
    if positions.len() < rows {
        return Err(DeviceError::Buffer {
            buffer: x.0,
            problem: format!("has {rows} rows and {} positions", positions.len()),
        });
    }
    Ok((elements(x, &[rows, heads, head_dim])?, elements(x, &[table_positions, head_dim / 2])?))
}

impl<'a> DeviceOp<'a, BufferId> {
    /// The operation of an elementwise launch, borrowing it.
    pub fn elementwise(kernel: &'a ElementwiseKernel, launch: &Launch<'a>) -> DeviceOp<'a, BufferId> {
        DeviceOp::Elementwise {
            kernel: Cow::Borrowed(kernel),
            len: launch.len,
            inputs: Cow::Borrowed(launch.inputs),
            outputs: Cow::Borrowed(launch.outputs),
            params: Cow::Borrowed(launch.params),
            seed: launch.noise.seed,
            per_sample: launch.noise.per_sample,
            slots: Cow::Borrowed(launch.noise.slots),
        }
    }

    /// The row move of `moves` from `src` to `out`, borrowing the rows.
    pub fn move_rows(src: BufferId, out: BufferId, moves: RowMoves<'a>) -> DeviceOp<'a, BufferId> {
        let RowMoves { from, to, width } = moves;
        DeviceOp::MoveRows { src, from: Cow::Borrowed(from), to: Cow::Borrowed(to), width, out }
    }

    /// An elementwise operation's kernel and launch, as the devices' evaluators take them.
    pub fn launch(&self) -> Option<(&ElementwiseKernel, Launch<'_>)> {
        match self {
            DeviceOp::Elementwise { kernel, len, inputs, outputs, params, seed, per_sample, slots } => {
                let noise = NoiseLaunch { seed: *seed, per_sample: *per_sample, slots };
                Some((&**kernel, Launch { len: *len, inputs, outputs, params, noise }))
            }
            _ => None,
        }
    }

    /// A row move's rows, as [`RowMoves::check`] checks them.
    pub fn row_moves(&self) -> Option<RowMoves<'_>> {
        match self {
            DeviceOp::MoveRows { from, to, width, .. } => Some(RowMoves { from, to, width: *width }),
            _ => None,
        }
    }
}

impl<B: Clone> DeviceOp<'_, B> {
    /// The operation with its own copy of everything it borrows.
    pub fn into_owned(self) -> DeviceOp<'static, B> {
        self.map(B::clone)
    }

    /// The same operation, owning its data, with every buffer renamed by `name`.
    pub fn map<C: Clone>(&self, mut name: impl FnMut(&B) -> C) -> DeviceOp<'static, C> {
        let names = |buffers: &[B], name: &mut dyn FnMut(&B) -> C| Cow::Owned(buffers.iter().map(name).collect());
        match self {
            DeviceOp::Elementwise { kernel, len, inputs, outputs, params, seed, per_sample, slots } => {
                DeviceOp::Elementwise {
                    kernel: Cow::Owned(kernel.clone().into_owned()),
                    len: *len,
                    inputs: names(inputs, &mut name),
                    outputs: names(outputs, &mut name),
                    params: Cow::Owned(params.to_vec()),
                    seed: *seed,
                    per_sample: *per_sample,
                    slots: Cow::Owned(slots.to_vec()),
                }
            }
            DeviceOp::Linear { x, weight, out, shape } => {
                DeviceOp::Linear { x: name(x), weight: name(weight), out: name(out), shape: *shape }
            }
            DeviceOp::BiasActivation { data, bias, len, activation } => {
                DeviceOp::BiasActivation { data: name(data), bias: name(bias), len: *len, activation: *activation }
            }
            DeviceOp::Copy { from, to, len } => DeviceOp::Copy { from: name(from), to: name(to), len: *len },
            DeviceOp::LayerNorm { x, weight, bias, out, rows, width, eps } => DeviceOp::LayerNorm {
                x: name(x),
                weight: name(weight),
                bias: name(bias),
                out: name(out),
                rows: *rows,
                width: *width,
                eps: *eps,
            },
            DeviceOp::Attention { q, k, v, out, shape } => {
                DeviceOp::Attention { q: name(q), k: name(k), v: name(v), out: name(out), shape: *shape }
            }
            DeviceOp::Gather { src, indices, width, blocked, out } => DeviceOp::Gather {
                src: name(src),
                indices: Cow::Owned(indices.to_vec()),
                width: *width,
                blocked: *blocked,
                out: name(out),
            },
            DeviceOp::MoveRows { src, from, to, width, out } => DeviceOp::MoveRows {
                src: name(src),
                from: Cow::Owned(from.to_vec()),
                to: Cow::Owned(to.to_vec()),
                width: *width,
                out: name(out),
            },
            DeviceOp::GuideLogits { un, cond, scale, len, out } => {
                DeviceOp::GuideLogits { un: name(un), cond: name(cond), scale: *scale, len: *len, out: name(out) }
            }
            DeviceOp::RmsNorm { x, weight, out, rows, width, eps } => DeviceOp::RmsNorm {
                x: name(x),
                weight: name(weight),
                out: name(out),
                rows: *rows,
                width: *width,
                eps: *eps,
            },
            DeviceOp::Rope { x, cos, sin, positions, shape, table_positions } => DeviceOp::Rope {
                x: name(x),
                cos: name(cos),
                sin: name(sin),
                positions: Cow::Owned(positions.to_vec()),
                shape: *shape,
                table_positions: *table_positions,
            },
            DeviceOp::SwiGlu { gate, up, out, len } => {
                DeviceOp::SwiGlu { gate: name(gate), up: name(up), out: name(out), len: *len }
            }
            DeviceOp::CachedAttention { q, keys, values, out, shape } => DeviceOp::CachedAttention {
                q: name(q),
                keys: name(keys),
                values: name(values),
                out: name(out),
                shape: *shape,
            },
        }
    }

    /// The buffers the operation writes.
    pub fn written(&self) -> Vec<&B> {
        match self {
            DeviceOp::Elementwise { outputs, .. } => outputs.iter().collect(),
            DeviceOp::Linear { out, .. }
            | DeviceOp::LayerNorm { out, .. }
            | DeviceOp::Attention { out, .. }
            | DeviceOp::Gather { out, .. }
            | DeviceOp::MoveRows { out, .. }
            | DeviceOp::GuideLogits { out, .. }
            | DeviceOp::RmsNorm { out, .. }
            | DeviceOp::SwiGlu { out, .. }
            | DeviceOp::CachedAttention { out, .. } => vec![out],
            DeviceOp::BiasActivation { data, .. } => vec![data],
            DeviceOp::Rope { x, .. } => vec![x],
            DeviceOp::Copy { to, .. } => vec![to],
        }
    }

    /// Whether the operation draws noise (so the seed it runs with matters).
    pub fn draws_noise(&self) -> bool {
        matches!(self, DeviceOp::Elementwise { slots, .. } if !slots.is_empty())
    }

    /// Issues the operation to `device`, with `buffer` naming each buffer on it and `seed` the
    /// seed of an elementwise launch.
    pub fn issue(&self, device: &dyn Device, buffer: impl Fn(&B) -> BufferId, seed: u64) -> Result<(), DeviceError> {
        let mut op = self.map(buffer);
        if let DeviceOp::Elementwise { seed: launched, .. } = &mut op {
            *launched = seed;
        }
        device.execute(&op)
    }
}

/// Two operations are equal when they would compute the same: floats compare by their bits, so
/// NaN payloads count, and two recordings of the same work compare equal.
impl<B: Clone + PartialEq> PartialEq for DeviceOp<'_, B> {
    fn eq(&self, other: &Self) -> bool {
        let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        match (self, other) {
            (
                DeviceOp::Elementwise { kernel, len, inputs, outputs, params, seed, per_sample, slots },
                DeviceOp::Elementwise {
                    kernel: kernel2,
                    len: len2,
                    inputs: inputs2,
                    outputs: outputs2,
                    params: params2,
                    seed: seed2,
                    per_sample: per_sample2,
                    slots: slots2,
                },
            ) => {
                kernel == kernel2
                    && len == len2
                    && inputs == inputs2
                    && outputs == outputs2
                    && bits(params) == bits(params2)
                    && seed == seed2
                    && per_sample == per_sample2
                    && slots == slots2
            }
            (
                DeviceOp::Linear { x, weight, out, shape },
                DeviceOp::Linear { x: x2, weight: weight2, out: out2, shape: shape2 },
            ) => (x, weight, out, shape) == (x2, weight2, out2, shape2),
            (
                DeviceOp::BiasActivation { data, bias, len, activation },
                DeviceOp::BiasActivation { data: data2, bias: bias2, len: len2, activation: activation2 },
            ) => (data, bias, len, activation) == (data2, bias2, len2, activation2),
            (DeviceOp::Copy { from, to, len }, DeviceOp::Copy { from: from2, to: to2, len: len2 }) => {
                (from, to, len) == (from2, to2, len2)
            }
            (
                DeviceOp::LayerNorm { x, weight, bias, out, rows, width, eps },
                DeviceOp::LayerNorm {
                    x: x2,
                    weight: weight2,
                    bias: bias2,
                    out: out2,
                    rows: rows2,
                    width: width2,
                    eps: eps2,
                },
            ) => {
                (x, weight, bias, out, rows, width) == (x2, weight2, bias2, out2, rows2, width2)
                    && eps.to_bits() == eps2.to_bits()
            }
            (
                DeviceOp::Attention { q, k, v, out, shape },
                DeviceOp::Attention { q: q2, k: k2, v: v2, out: out2, shape: shape2 },
            ) => (q, k, v, out, shape) == (q2, k2, v2, out2, shape2),
            (
                DeviceOp::Gather { src, indices, width, blocked, out },
                DeviceOp::Gather { src: src2, indices: indices2, width: width2, blocked: blocked2, out: out2 },
            ) => (src, indices, width, blocked, out) == (src2, indices2, width2, blocked2, out2),
            (
                DeviceOp::MoveRows { src, from, to, width, out },
                DeviceOp::MoveRows { src: src2, from: from2, to: to2, width: width2, out: out2 },
            ) => (src, from, to, width, out) == (src2, from2, to2, width2, out2),
            (
                DeviceOp::GuideLogits { un, cond, scale, len, out },
                DeviceOp::GuideLogits { un: un2, cond: cond2, scale: scale2, len: len2, out: out2 },
            ) => (un, cond, len, out) == (un2, cond2, len2, out2) && scale.to_bits() == scale2.to_bits(),
            (
                DeviceOp::RmsNorm { x, weight, out, rows, width, eps },
                DeviceOp::RmsNorm { x: x2, weight: weight2, out: out2, rows: rows2, width: width2, eps: eps2 },
            ) => (x, weight, out, rows, width) == (x2, weight2, out2, rows2, width2) && eps.to_bits() == eps2.to_bits(),
            (
                DeviceOp::Rope { x, cos, sin, positions, shape, table_positions },
                DeviceOp::Rope {
                    x: x2,
                    cos: cos2,
                    sin: sin2,
                    positions: positions2,
                    shape: shape2,
                    table_positions: table_positions2,
                },
            ) => {
                (x, cos, sin, positions, shape, table_positions)
                    == (x2, cos2, sin2, positions2, shape2, table_positions2)
            }
            (
                DeviceOp::SwiGlu { gate, up, out, len },
                DeviceOp::SwiGlu { gate: gate2, up: up2, out: out2, len: len2 },
            ) => (gate, up, out, len) == (gate2, up2, out2, len2),
            (
                DeviceOp::CachedAttention { q, keys, values, out, shape },
                DeviceOp::CachedAttention { q: q2, keys: keys2, values: values2, out: out2, shape: shape2 },
            ) => (q, keys, values, out, shape) == (q2, keys2, values2, out2, shape2),
            _ => false,
        }
    }
}

impl<B: Clone + Eq> Eq for DeviceOp<'_, B> {}
