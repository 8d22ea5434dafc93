//! The device half of the Llama-family model ([`super::LlamaModel`]): its weights as f32 on a
//! [`Device`] (a quantized file dequantized), the matrix products through [`DeviceOp::Linear`]
//! (cuBLAS on a GPU), and the decoder layers (RMSNorm, RoPE, SwiGLU, grouped-query attention)
//! through the kernels of [`sched_kernels::decoder`], with each sequence's keys and values kept on
//! the device between calls.
//!
//! A pass follows [`super::network`] with transformers' arithmetic: the same layers in the same
//! order, the RoPE angles computed on the host as the host pass computes them and uploaded as
//! tables. The matrix products and the sums of the layers run in the device's order, so the
//! logits agree with the host's f32 pass to f32 rounding, not bit for bit. The token embeddings
//! are gathered on the host and uploaded once per pass; only the positions the caller asked for
//! go through the final RMSNorm and the output layer, and their logits come back to the host.
//!
//! The key/value cache: a few sequences ([`SEQUENCES`]), each the tokens it holds and one key and
//! one value buffer per layer. A row reuses the sequence that shares its longest prefix, and a
//! pass computes only the positions after that prefix (and from the first wanted output).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sched_kernels::decoder::{CachedAttentionShape, RopeShape};
use sched_kernels::layers::Activation;
use sched_runtime::device::{Device, DeviceError, DeviceOp, DeviceTensor, RowMoves};

use super::network::{Arithmetic, Network};
use crate::on_device::{DeviceNetworkError, Linear, add};

/// How many sequences' keys and values the device keeps.
const SEQUENCES: usize = 4;

struct Block {
    attention_norm: DeviceTensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: DeviceTensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// One sequence of the cache: its tokens and, per layer, the keys and values of its positions
/// (`capacity` rows of `kv_heads * head_dim`).
struct Sequence {
    tokens: Vec<u32>,
    keys: Vec<DeviceTensor>,
    values: Vec<DeviceTensor>,
    capacity: usize,
    /// When the sequence was last used, for eviction.
    used: u64,
}

/// The RoPE tables on the device: `positions` positions of `head_dim / 2` cosines and sines.
struct Tables {
    positions: usize,
    cos: DeviceTensor,
    sin: DeviceTensor,
}

struct State {
    sequences: Vec<Sequence>,
    tables: Option<Tables>,
    clock: u64,
}

/// The network's weights on one device, and its key/value cache there.
pub(crate) struct DeviceLlama {
    blocks: Vec<Block>,
    norm: DeviceTensor,
    output: Linear,
    state: Mutex<State>,
}

impl std::fmt::Debug for DeviceLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLlama").field("layers", &self.blocks.len()).finish_non_exhaustive()
    }
}

fn upload(device: &Arc<dyn Device>, values: &[f32]) -> Result<DeviceTensor, DeviceError> {
    DeviceTensor::upload(device, values, vec![values.len()])
}

fn linear(
    device: &Arc<dyn Device>,
    matrix: &super::matrix::Matrix,
    bias: Option<&[f32]>,
) -> Result<Linear, DeviceNetworkError> {
    let (outputs, inputs) = matrix.shape()?;
    let weight = upload(device, &matrix.to_f32()?)?;
    let bias = bias.map(|b| upload(device, b)).transpose()?;
    Ok(Linear { weight, bias, inputs, outputs })
}

/// A new buffer of `len` elements.
fn alloc(device: &Arc<dyn Device>, len: usize) -> Result<DeviceTensor, DeviceError> {
    DeviceTensor::alloc(device, vec![len])
}

/// The length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl DeviceLlama {
    /// Uploads the weights of `network` to `device`.
    pub(crate) fn upload(network: &Network, device: &Arc<dyn Device>) -> Result<DeviceLlama, DeviceNetworkError> {
        let mut blocks = Vec::with_capacity(network.blocks.len());
        for block in &network.blocks {
            let bias = |i: usize| block.qkv_bias.as_ref().map(|b| b[i].as_slice());
            blocks.push(Block {
                attention_norm: upload(device, &block.attention_norm)?,
                q: linear(device, &block.q, bias(0))?,
                k: linear(device, &block.k, bias(1))?,
                v: linear(device, &block.v, bias(2))?,
                o: linear(device, &block.o, None)?,
                ffn_norm: upload(device, &block.ffn_norm)?,
                gate: linear(device, &block.gate, None)?,
                up: linear(device, &block.up, None)?,
                down: linear(device, &block.down, None)?,
            });
        }
        let output = linear(device, network.output.as_ref().unwrap_or(&network.embedding), None)?;
        let state = State { sequences: Vec::new(), tables: None, clock: 0 };
        Ok(DeviceLlama { blocks, norm: upload(device, &network.norm)?, output, state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A pass that failed leaves a sequence whose tokens are cleared before its buffers are
        // written (see `forward`), so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The logits (`vocab` each, row-major) of the positions `outputs` of `tokens`: position `j`'s
    /// logits predict the token at `j + 1`.
    pub(crate) fn forward(
        &self,
        network: &Network,
        device: &Arc<dyn Device>,
        tokens: &[u32],
        outputs: std::ops::Range<usize>,
    ) -> Result<Vec<f32>, DeviceNetworkError> {
        let c = &network.config;
        if outputs.end > tokens.len() || outputs.start > outputs.end {
            return Err(
                candle_core::Error::Msg(format!("outputs {outputs:?} of a row of {} tokens", tokens.len())).into()
            );
        }
        if outputs.is_empty() {
            return Ok(Vec::new());
        }
        let kv_width = c.kv_heads * c.head_dim;
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        self.ensure_tables(&mut state, network, device, tokens.len())?;
        // The sequence sharing the longest prefix, else a new one, else the least recently used.
        let best = state
            .sequences
            .iter()
            .enumerate()
            .map(|(i, s)| (common_prefix(&s.tokens, tokens), i))
            .max()
            .filter(|&(shared, _)| shared > 0 || state.sequences.len() >= SEQUENCES);
        let index = match best {
            Some((_, i)) => i,
            None if state.sequences.len() < SEQUENCES => {
                state.sequences.push(Sequence {
                    tokens: Vec::new(),
                    keys: Vec::new(),
                    values: Vec::new(),
                    capacity: 0,
                    used: 0,
                });
                state.sequences.len() - 1
            }
            None => (0..state.sequences.len()).min_by_key(|&i| state.sequences[i].used).unwrap_or(0),
        };
        let Some(tables) = state.tables.as_ref().map(|t| (t.positions, t.cos.buffer(), t.sin.buffer())) else {
            return Err(candle_core::Error::Msg("the RoPE tables are missing".into()).into());
        };
        let sequence = &mut state.sequences[index];
        let start = common_prefix(&sequence.tokens, tokens).min(outputs.start);
        // Until this pass has written its keys and values, the sequence holds only its prefix.
        sequence.tokens.truncate(start);
        sequence.used = clock;
        if sequence.capacity < tokens.len() || sequence.keys.len() != self.blocks.len() {
            let capacity = tokens.len().max(2 * sequence.capacity).max(16);
            let grow = |old: Option<&DeviceTensor>| -> Result<DeviceTensor, DeviceError> {
                let new = alloc(device, capacity * kv_width)?;
                if let Some(old) = old.filter(|_| start > 0) {
                    device.execute(&DeviceOp::Copy { from: old.buffer(), to: new.buffer(), len: start * kv_width })?;
                }
                Ok(new)
            };
            let mut keys = Vec::with_capacity(self.blocks.len());
            let mut values = Vec::with_capacity(self.blocks.len());
            for l in 0..self.blocks.len() {
                keys.push(grow(sequence.keys.get(l))?);
                values.push(grow(sequence.values.get(l))?);
            }
            (sequence.keys, sequence.values, sequence.capacity) = (keys, values, capacity);
        }
        let n = tokens.len() - start;
        let mut embeddings = Vec::with_capacity(n * c.hidden);
        for &id in &tokens[start..] {
            if id as usize >= c.vocab {
                return Err(
                    candle_core::Error::Msg(format!("token {id} is outside the vocabulary of {}", c.vocab)).into()
                );
            }
            embeddings.extend(network.embedding.row(id as usize)?);
        }
        let x = upload(device, &embeddings)?;
        let positions: Vec<u32> = (start..tokens.len()).map(|p| p as u32).collect();
        let eps = c.rms_eps as f32;
        let normed = alloc(device, n * c.hidden)?;
        let (q_width, kv_rows): (usize, Vec<u32>) = (c.heads * c.head_dim, (0..n as u32).collect());
        for (l, block) in self.blocks.iter().enumerate() {
            rms_norm(device, &x, &block.attention_norm, &normed, n, c.hidden, eps)?;
            let q = block.q.forward(device, &normed, n, Activation::Identity)?;
            let k = block.k.forward(device, &normed, n, Activation::Identity)?;
            let v = block.v.forward(device, &normed, n, Activation::Identity)?;
            let (table_positions, cos, sin) = tables;
            for (projection, heads) in [(&q, c.heads), (&k, c.kv_heads)] {
                device.execute(&DeviceOp::Rope {
                    x: projection.buffer(),
                    cos,
                    sin,
                    positions: positions.as_slice().into(),
                    shape: RopeShape { rows: n, heads, head_dim: c.head_dim },
                    table_positions,
                })?;
            }
            // The new positions' keys and values join the sequence's cache.
            let moves = RowMoves { from: &kv_rows, to: &positions, width: kv_width };
            device.execute(&DeviceOp::move_rows(k.buffer(), sequence.keys[l].buffer(), moves))?;
            device.execute(&DeviceOp::move_rows(v.buffer(), sequence.values[l].buffer(), moves))?;
            let attended = alloc(device, n * q_width)?;
            device.execute(&DeviceOp::CachedAttention {
                q: q.buffer(),
                keys: sequence.keys[l].buffer(),
                values: sequence.values[l].buffer(),
                out: attended.buffer(),
                shape: CachedAttentionShape {
                    queries: n,
                    start,
                    heads: c.heads,
                    kv_heads: c.kv_heads,
                    head_dim: c.head_dim,
                },
            })?;
            let o = block.o.forward(device, &attended, n, Activation::Identity)?;
            add(device, &x, &o, &x)?;
            rms_norm(device, &x, &block.ffn_norm, &normed, n, c.hidden, eps)?;
            let gate = block.gate.forward(device, &normed, n, Activation::Identity)?;
            let up = block.up.forward(device, &normed, n, Activation::Identity)?;
            device.execute(&DeviceOp::SwiGlu {
                gate: gate.buffer(),
                up: up.buffer(),
                out: gate.buffer(),
                len: n * c.intermediate,
            })?;
            let down = block.down.forward(device, &gate, n, Activation::Identity)?;
            add(device, &x, &down, &x)?;
        }
        sequence.tokens = tokens.to_vec();
        // The wanted positions only go through the final norm and the output layer.
        let wanted: Vec<u32> = (outputs.start - start..outputs.end - start).map(|t| t as u32).collect();
        let selected = alloc(device, wanted.len() * c.hidden)?;
        device.execute(&DeviceOp::Gather {
            src: x.buffer(),
            indices: wanted.as_slice().into(),
            width: c.hidden,
            blocked: None,
            out: selected.buffer(),
        })?;
        let final_normed = alloc(device, wanted.len() * c.hidden)?;
        rms_norm(device, &selected, &self.norm, &final_normed, wanted.len(), c.hidden, eps)?;
        let logits = self.output.forward(device, &final_normed, wanted.len(), Activation::Identity)?;
        Ok(device.download(logits.buffer())?)
    }

    /// The RoPE tables for at least `positions` positions, computed on the host as the host pass
    /// computes its angles.
    fn ensure_tables(
        &self,
        state: &mut State,
        network: &Network,
        device: &Arc<dyn Device>,
        positions: usize,
    ) -> Result<(), DeviceError> {
        if state.tables.as_ref().is_some_and(|t| t.positions >= positions) {
            return Ok(());
        }
        let count = positions.max(state.tables.as_ref().map_or(0, |t| 2 * t.positions)).max(64);
        let count = count.min(network.config.max_positions.max(positions));
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in 0..count {
            for (c, s) in network.rope.at(p, Arithmetic::Transformers) {
                cos.push(c);
                sin.push(s);
            }
        }
        state.tables = Some(Tables { positions: count, cos: upload(device, &cos)?, sin: upload(device, &sin)? });
        Ok(())
    }
}

/// RMSNorm of `rows` rows of `width` of `x` into `out`.
fn rms_norm(
    device: &Arc<dyn Device>,
    x: &DeviceTensor,
    weight: &DeviceTensor,
    out: &DeviceTensor,
    rows: usize,
    width: usize,
    eps: f32,
) -> Result<(), DeviceError> {
    device.execute(&DeviceOp::RmsNorm { x: x.buffer(), weight: weight.buffer(), out: out.buffer(), rows, width, eps })
}
