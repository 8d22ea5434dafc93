//! The device half of the transformer token model ([`super::TransformerModel`]): its matrix products
//! through [`Device::linear`] (cuBLAS on a GPU), biases and GELUs through
//! [`Device::bias_activation`], LayerNorms and attention through their layer kernels
//! ([`sched_kernels::layers`]), and residual additions as elementwise kernels.
//!
//! The input embeddings (a token's row plus its position's row) are gathered and added on the
//! host, as candle adds them, and uploaded once per evaluation; everything after runs on the
//! device, and only the positions the caller asked for go through the final LayerNorm and the
//! unembedding. Their logits come back to the host, or stay on the device where a token
//! operation draws from them there (the model's `draw_next_on` and `*_kept_on` methods). The
//! network computes what candle computes on the CPU in the same order of layers; the matrix
//! products and the attention's sums run in another order, so the logits agree to f32 rounding,
//! not bit for bit.

use std::sync::Arc;

use sched_kernels::layers::{Activation, AttentionShape};

use sched_runtime::device::{Device, DeviceError, DeviceOp, DeviceTensor, RowMoves};

use super::manifest::TransformerManifest;
use super::network::{Evaluation, LN_EPS, Network};
use crate::on_device::{DeviceNetworkError, Linear, add};

/// A LayerNorm's scale and shift on the device.
struct Norm {
    weight: DeviceTensor,
    bias: DeviceTensor,
}

struct Block {
    ln1: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// The transformer's weights on one device, and the embeddings on the host.
pub struct DeviceTransformer {
    /// `embed.weight`, `[vocab, d]`, on the host: the input rows are gathered there.
    embed: Vec<f32>,
    /// `pos_embed.weight`, `[max_len, d]`, on the host.
    pos_embed: Vec<f32>,
    blocks: Vec<Block>,
    ln_f: Norm,
    unembed: Linear,
    /// The extra layers of heads 1.. of an `mtp_lm`.
    extra_heads: Vec<Linear>,
    d: usize,
    attention_heads: usize,
    pub(crate) vocab: usize,
}

impl std::fmt::Debug for DeviceTransformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTransformer")
            .field("d", &self.d)
            .field("layers", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

impl DeviceTransformer {
    /// Uploads the weights of `network`, of `manifest`'s shapes, to `device`.
    pub(crate) fn upload(
        network: &Network,
        manifest: &TransformerManifest,
        device: &Arc<dyn Device>,
    ) -> Result<DeviceTransformer, DeviceNetworkError> {
        let d = manifest.d_model;
        let weight = |name: &str, shape: Vec<usize>| -> Result<DeviceTensor, DeviceNetworkError> {
            Ok(DeviceTensor::upload(device, &network.tensor(name)?, shape)?)
        };
        let linear = |prefix: &str, outputs: usize, inputs: usize| -> Result<Linear, DeviceNetworkError> {
            Ok(Linear {
                weight: weight(&format!("{prefix}.weight"), vec![outputs, inputs])?,
                bias: Some(weight(&format!("{prefix}.bias"), vec![outputs])?),
                inputs,
                outputs,
            })
        };
        let norm = |prefix: &str| -> Result<Norm, DeviceNetworkError> {
            Ok(Norm {
                weight: weight(&format!("{prefix}.weight"), vec![d])?,
                bias: weight(&format!("{prefix}.bias"), vec![d])?,
            })
        };
        let blocks = (0..manifest.layers)
            .map(|i| {
                let p = format!("blocks.{i}");
                Ok(Block {
                    ln1: norm(&format!("{p}.ln1"))?,
                    q: linear(&format!("{p}.attn.q"), d, d)?,
                    k: linear(&format!("{p}.attn.k"), d, d)?,
                    v: linear(&format!("{p}.attn.v"), d, d)?,
                    out: linear(&format!("{p}.attn.out"), d, d)?,
                    ln2: norm(&format!("{p}.ln2"))?,
                    fc1: linear(&format!("{p}.mlp.fc1"), 4 * d, d)?,
                    fc2: linear(&format!("{p}.mlp.fc2"), d, 4 * d)?,
                })
            })
            .collect::<Result<_, DeviceNetworkError>>()?;
        let unembed = Linear {
            weight: weight("unembed.weight", vec![manifest.vocab, d])?,
            bias: None,
            inputs: d,
            outputs: manifest.vocab,
        };
        Ok(DeviceTransformer {
            embed: network.tensor("embed.weight")?,
            pos_embed: network.tensor("pos_embed.weight")?,
            blocks,
            ln_f: norm("ln_f")?,
            unembed,
            extra_heads: (1..manifest.heads).map(|i| linear(&format!("heads.{i}"), d, d)).collect::<Result<_, _>>()?,
            d,
            attention_heads: manifest.attention_heads,
            vocab: manifest.vocab,
        })
    }

    /// The logits of an evaluation on the host: for each of its heads, `[batch, positions, vocab]`.
    pub(crate) fn evaluate(
        &self,
        device: &Arc<dyn Device>,
        evaluation: &Evaluation<'_>,
    ) -> Result<Vec<Vec<f32>>, DeviceError> {
        self.logits(device, evaluation)?.iter().map(|logits| device.download(logits.buffer())).collect()
    }

    /// The logits of an evaluation on the device: for each of its heads, `[batch × positions,
    /// vocab]`. Only the positions asked for go through the heads.
    pub(crate) fn logits(
        &self,
        device: &Arc<dyn Device>,
        evaluation: &Evaluation<'_>,
    ) -> Result<Vec<DeviceTensor>, DeviceError> {
        let Evaluation { batch, n, ref positions, ref heads, .. } = *evaluation;
        let hidden = self.hidden(device, evaluation)?;
        let selected_rows = batch * positions.len();
        let selected = if positions.len() == n {
            hidden
        } else {
            let indices: Vec<u32> =
                (0..batch).flat_map(|b| positions.clone().map(move |p| (b * n + p) as u32)).collect();
            let selected = DeviceTensor::alloc(device, vec![selected_rows, self.d])?;
            device.execute(&DeviceOp::Gather {
                src: hidden.buffer(),
                indices: indices.as_slice().into(),
                width: self.d,
                blocked: None,
                out: selected.buffer(),
            })?;
            selected
        };
        heads
            .clone()
            .map(|head| match head.checked_sub(1).map(|extra| self.extra_heads.get(extra)) {
                None => self.head(device, &selected, selected_rows),
                Some(Some(layer)) => {
                    // h + gelu(heads.i(h)), as a new tensor: `selected` serves the other heads.
                    let branch = layer.forward(device, &selected, selected_rows, Activation::Gelu)?;
                    let sum = DeviceTensor::alloc(device, vec![selected_rows, self.d])?;
                    add(device, &selected, &branch, &sum)?;
                    self.head(device, &sum, selected_rows)
                }
                Some(None) => Err(DeviceError::Buffer {
                    buffer: 0,
                    problem: format!("head {head} does not exist ({} heads)", self.extra_heads.len() + 1),
                }),
            })
            .collect()
    }

    /// The last block's output for every position of an evaluation: `[batch × n, d]`.
    fn hidden(&self, device: &Arc<dyn Device>, evaluation: &Evaluation<'_>) -> Result<DeviceTensor, DeviceError> {
        let Evaluation { ids, batch, n, causal, .. } = *evaluation;
        let (d, rows) = (self.d, batch * n);
        // The input rows: the token's embedding plus the position's, added as candle adds them.
        let mut input = Vec::with_capacity(rows * d);
        for (k, &id) in ids.iter().enumerate() {
            let (token, position) = (id as usize * d, (k % n) * d);
            let (Some(token), Some(position)) =
                (self.embed.get(token..token + d), self.pos_embed.get(position..position + d))
            else {
                return Err(DeviceError::Buffer { buffer: 0, problem: format!("token {id} at {k} has no embedding") });
            };
            input.extend(token.iter().zip(position).map(|(t, p)| t + p));
        }
        let x = DeviceTensor::upload(device, &input, vec![rows, d])?;
        let attention =
            AttentionShape { batch, len: n, heads: self.attention_heads, head_dim: d / self.attention_heads, causal };
        for block in &self.blocks {
            let h = self.norm(device, &x, &block.ln1, rows)?;
            let (q, k, v) = (
                block.q.forward(device, &h, rows, Activation::Identity)?,
                block.k.forward(device, &h, rows, Activation::Identity)?,
                block.v.forward(device, &h, rows, Activation::Identity)?,
            );
            let attended = DeviceTensor::alloc(device, vec![rows, d])?;
            device.execute(&DeviceOp::Attention {
                q: q.buffer(),
                k: k.buffer(),
                v: v.buffer(),
                out: attended.buffer(),
                shape: attention,
            })?;
            let out = block.out.forward(device, &attended, rows, Activation::Identity)?;
            add(device, &x, &out, &x)?;
            let h = self.norm(device, &x, &block.ln2, rows)?;
            let hidden = block.fc1.forward(device, &h, rows, Activation::Gelu)?;
            let out = block.fc2.forward(device, &hidden, rows, Activation::Identity)?;
            add(device, &x, &out, &x)?;
        }
        Ok(x)
    }

    /// The logits of hidden states `h` (`rows` of them): `unembed(ln_f(h))`, on the device.
    fn head(&self, device: &Arc<dyn Device>, h: &DeviceTensor, rows: usize) -> Result<DeviceTensor, DeviceError> {
        let normed = self.norm(device, h, &self.ln_f, rows)?;
        self.unembed.forward(device, &normed, rows, Activation::Identity)
    }

    /// The logits of each head (`[batch, vocab]` each) interleaved as `[batch, heads, vocab]`.
    pub(crate) fn interleave(
        &self,
        device: &Arc<dyn Device>,
        per_head: &[DeviceTensor],
        batch: usize,
    ) -> Result<DeviceTensor, DeviceError> {
        let (heads, vocab) = (per_head.len(), self.vocab);
        let logits = DeviceTensor::alloc(device, vec![batch, heads, vocab])?;
        let from: Vec<u32> = (0..batch as u32).collect();
        for (j, head) in per_head.iter().enumerate() {
            let to: Vec<u32> = (0..batch).map(|b| (b * heads + j) as u32).collect();
            device.execute(&DeviceOp::move_rows(
                head.buffer(),
                logits.buffer(),
                RowMoves { from: &from, to: &to, width: vocab },
            ))?;
        }
        Ok(logits)
    }

    fn norm(
        &self,
        device: &Arc<dyn Device>,
        x: &DeviceTensor,
        norm: &Norm,
        rows: usize,
    ) -> Result<DeviceTensor, DeviceError> {
        let out = DeviceTensor::alloc(device, vec![rows, self.d])?;
        device.execute(&DeviceOp::LayerNorm {
            x: x.buffer(),
            weight: norm.weight.buffer(),
            bias: norm.bias.buffer(),
            out: out.buffer(),
            rows,
            width: self.d,
            eps: LN_EPS,
        })?;
        Ok(out)
    }
}
