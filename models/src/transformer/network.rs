//! The transformer's network on candle: its tensors by checkpoint name, and the forward pass that
//! inference on the host and training both evaluate (so a trained model and the checkpoint it
//! writes give identical logits).

use candle_core::{D, Device, Tensor as CTensor};
use candle_nn::{Linear, Module};

use super::manifest::TransformerManifest;

/// The ε of every LayerNorm (on the host and on a device).
pub(crate) const LN_EPS: f32 = 1e-5;

/// A LayerNorm's scale and shift.
struct Norm {
    weight: CTensor,
    bias: CTensor,
}

impl Norm {
    fn forward(&self, x: &CTensor) -> candle_core::Result<CTensor> {
        // The composite form: candle-nn's fused `layer_norm` has no backward pass, and training
        // must evaluate the same operations as inference.
        candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, LN_EPS)
    }
}

/// One pre-LayerNorm block.
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

/// Hands out a network's tensors by name, from a loader's or a trainer's `get`, and records
/// them in order.
struct Tensors<F> {
    get: F,
    named: Vec<(String, CTensor)>,
}

impl<F, E> Tensors<F>
where
    F: FnMut(&str, &[usize]) -> Result<CTensor, E>,
{
    fn tensor(&mut self, name: String, shape: &[usize]) -> Result<CTensor, E> {
        let tensor = (self.get)(&name, shape)?;
        self.named.push((name, tensor.clone()));
        Ok(tensor)
    }

    /// A LayerNorm of width `d`: `PREFIX.weight` and `PREFIX.bias`.
    fn norm(&mut self, prefix: &str, d: usize) -> Result<Norm, E> {
        Ok(Norm {
            weight: self.tensor(format!("{prefix}.weight"), &[d])?,
            bias: self.tensor(format!("{prefix}.bias"), &[d])?,
        })
    }

    /// A linear layer `input → out`: `PREFIX.weight` `[out, input]` and `PREFIX.bias` `[out]`.
    fn linear(&mut self, prefix: &str, out: usize, input: usize) -> Result<Linear, E> {
        let weight = self.tensor(format!("{prefix}.weight"), &[out, input])?;
        let bias = self.tensor(format!("{prefix}.bias"), &[out])?;
        Ok(Linear::new(weight, Some(bias)))
    }
}

/// The transformer's tensors, and the forward pass both inference and training use.
pub struct Network {
    attention_heads: usize,
    embed: CTensor,
    pos_embed: CTensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    unembed: Linear,
    /// The extra layers of heads 1.. of an `mtp_lm`.
    extra_heads: Vec<Linear>,
    /// Every tensor with its checkpoint name, in the order [`Network::build`] asks for them.
    named: Vec<(String, CTensor)>,
}

impl Network {
    /// Builds the network of `manifest` from `get(name, shape)`, which returns each tensor.
    pub fn build<E>(
        manifest: &TransformerManifest,
        get: impl FnMut(&str, &[usize]) -> Result<CTensor, E>,
    ) -> Result<Network, E> {
        let (d, vocab) = (manifest.d_model, manifest.vocab);
        let mut t = Tensors { get, named: Vec::new() };
        let embed = t.tensor("embed.weight".into(), &[vocab, d])?;
        let pos_embed = t.tensor("pos_embed.weight".into(), &[manifest.max_len, d])?;
        let mut blocks = Vec::new();
        for i in 0..manifest.layers {
            let p = format!("blocks.{i}");
            blocks.push(Block {
                ln1: t.norm(&format!("{p}.ln1"), d)?,
                q: t.linear(&format!("{p}.attn.q"), d, d)?,
                k: t.linear(&format!("{p}.attn.k"), d, d)?,
                v: t.linear(&format!("{p}.attn.v"), d, d)?,
                out: t.linear(&format!("{p}.attn.out"), d, d)?,
                ln2: t.norm(&format!("{p}.ln2"), d)?,
                fc1: t.linear(&format!("{p}.mlp.fc1"), 4 * d, d)?,
                fc2: t.linear(&format!("{p}.mlp.fc2"), d, 4 * d)?,
            });
        }
        let ln_f = t.norm("ln_f", d)?;
        let unembed = Linear::new(t.tensor("unembed.weight".into(), &[vocab, d])?, None);
        let extra_heads =
            (1..manifest.heads).map(|i| t.linear(&format!("heads.{i}"), d, d)).collect::<Result<_, E>>()?;
        let named = t.named;
        Ok(Network {
            attention_heads: manifest.attention_heads,
            embed,
            pos_embed,
            blocks,
            ln_f,
            unembed,
            extra_heads,
            named,
        })
    }

    /// The last block's output for token ids `[batch, n]` (u32): `[batch, n, d]`. With `causal`,
    /// position i attends to positions 0..=i only; the masked scores are −∞, so a later token
    /// contributes exactly nothing to an earlier position.
    pub fn hidden(&self, ids: &CTensor, causal: bool) -> candle_core::Result<CTensor> {
        let (batch, n) = ids.dims2()?;
        let d = self.embed.dim(1)?;
        let heads = self.attention_heads;
        let size = d / heads;
        let tokens = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((batch, n, d))?;
        let mut x = tokens.broadcast_add(&self.pos_embed.narrow(0, 0, n)?)?;
        let mask = if causal {
            let values: Vec<f32> = (0..n * n).map(|k| if k % n > k / n { f32::NEG_INFINITY } else { 0.0 }).collect();
            Some(CTensor::from_vec(values, (n, n), ids.device())?)
        } else {
            None
        };
        let scale = 1.0 / (size as f64).sqrt();
        for block in &self.blocks {
            let h = block.ln1.forward(&x)?;
            let split = |linear: &Linear| -> candle_core::Result<CTensor> {
                linear.forward(&h)?.reshape((batch, n, heads, size))?.transpose(1, 2)?.contiguous()
            };
            let (q, k, v) = (split(&block.q)?, split(&block.k)?, split(&block.v)?);
            let mut scores = (q.matmul(&k.t()?)? * scale)?;
            if let Some(mask) = &mask {
                scores = scores.broadcast_add(mask)?;
            }
            let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let attended = weights.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((batch, n, d))?;
            x = (x + block.out.forward(&attended)?)?;
            let h = block.ln2.forward(&x)?;
            x = (&x + block.fc2.forward(&block.fc1.forward(&h)?.gelu_erf()?)?)?;
        }
        Ok(x)
    }

    /// The logits of head `head` from hidden states `[..., d]`: `[..., vocab]`.
    pub fn logits(&self, hidden: &CTensor, head: usize) -> candle_core::Result<CTensor> {
        let h = match head.checked_sub(1) {
            None => hidden.clone(),
            Some(extra) => match self.extra_heads.get(extra) {
                Some(layer) => (hidden + layer.forward(hidden)?.gelu_erf()?)?,
                None => candle_core::bail!("head {head} does not exist ({} heads)", self.extra_heads.len() + 1),
            },
        };
        self.unembed.forward(&self.ln_f.forward(&h)?)
    }

    /// Every tensor with its checkpoint name, in the order [`Network::build`] asks for them.
    pub fn named(&self) -> &[(String, CTensor)] {
        &self.named
    }

    /// The tensor of the checkpoint named `name`, as f32 values in row-major order.
    pub(crate) fn tensor(&self, name: &str) -> candle_core::Result<Vec<f32>> {
        match self.named.iter().find(|(n, _)| n == name) {
            Some((_, tensor)) => tensor.flatten_all()?.to_vec1::<f32>(),
            None => candle_core::bail!("the network has no tensor `{name}`"),
        }
    }

    /// Evaluates the network on the host (candle on the CPU).
    pub(crate) fn evaluate(&self, evaluation: &Evaluation<'_>) -> candle_core::Result<Vec<Vec<f32>>> {
        let Evaluation { ids, batch, n, causal, ref positions, ref heads } = *evaluation;
        let input = CTensor::from_vec(ids.to_vec(), (batch, n), &Device::Cpu)?;
        let hidden = self.hidden(&input, causal)?.narrow(1, positions.start, positions.len())?;
        heads.clone().map(|head| self.logits(&hidden, head)?.flatten_all()?.to_vec1::<f32>()).collect()
    }
}

/// One evaluation of a transformer's network: the ids `[batch, n]` and the mask, and which
/// positions and heads to return. The result has one entry per head, each the logits
/// `[batch, positions.len(), vocab]` flattened.
pub(crate) struct Evaluation<'a> {
    pub ids: &'a [u32],
    pub batch: usize,
    pub n: usize,
    pub causal: bool,
    pub positions: std::ops::Range<usize>,
    pub heads: std::ops::Range<usize>,
}
