//! The launches of the decoder layer kernels (`sched_kernels::decoder`) on the GPU: RMSNorm,
//! rotary embeddings, SwiGLU and grouped-query attention over a key/value cache.

use cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
use sched_kernels::cuda as emit;
use sched_kernels::decoder::{self, CachedAttentionShape, RopeShape};

use super::{CudaDevice, Loaded, ModuleKind, driver, unknown};
use crate::device::op::{elements, rope_extent};
use crate::device::{BufferId, DeviceError};

/// A launch of one thread per item over `items` items.
fn per_item(items: u64, multiprocessors: u32) -> LaunchConfig {
    // `elementwise_blocks` sizes a grid for one thread per group of VECTOR_WIDTH elements.
    LaunchConfig {
        grid_dim: (emit::elementwise_blocks(items.saturating_mul(emit::VECTOR_WIDTH as u64), multiprocessors), 1, 1),
        block_dim: (emit::BLOCK_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A size passed to a kernel as 32 bits.
fn size32(buffer: BufferId, n: usize) -> Result<u32, DeviceError> {
    u32::try_from(n).map_err(|_| DeviceError::Buffer { buffer: buffer.0, problem: format!("{n} exceeds 2^32") })
}

impl CudaDevice {
    /// The entry `entry` of the module of `source`.
    fn decoder_kernel(&self, source: &str, entry: &'static str) -> Result<cudarc::driver::CudaFunction, DeviceError> {
        match self.load(source.to_string(), ModuleKind::Single(entry))? {
            Loaded::Single(function) => Ok(function),
            _ => Err(DeviceError::Driver { action: "loading a kernel", message: "wrong module kind".into() }),
        }
    }

    #[allow(clippy::too_many_arguments, reason = "the buffers and sizes of one layer")]
    pub(super) fn run_rms_norm(
        &self,
        x: BufferId,
        weight: BufferId,
        out: BufferId,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> Result<(), DeviceError> {
        if x == out {
            return Err(DeviceError::Buffer {
                buffer: out.0,
                problem: "is both the input and the output of an RMSNorm".into(),
            });
        }
        let len = elements(x, &[rows, width])?;
        if len == 0 {
            return Ok(());
        }
        let function = self.decoder_kernel(decoder::rms_norm_source(), decoder::RMS_NORM_ENTRY)?;
        let [x_address, out_address] = self.addresses(&[x, out], len)?[..] else { return Err(unknown(x)) };
        let [weight_address] = self.addresses(&[weight], width)?[..] else { return Err(unknown(weight)) };
        let (rows, width) = (rows as u64, size32(weight, width)?);
        let mut builder = self.stream.launch_builder(&function);
        builder.arg(&x_address).arg(&weight_address).arg(&out_address).arg(&rows).arg(&width).arg(&eps);
        // SAFETY: the arguments follow `sched_rms_norm`'s signature: `x` and `out` hold
        // `rows * width` elements and `weight` `width` (checked above), `out` is not `x`, and the
        // grid-stride loop over rows stays in bounds for any grid.
        unsafe { builder.launch(per_item(rows, self.multiprocessors)) }.map_err(driver("launching a layer kernel"))?;
        Ok(())
    }

    pub(super) fn run_rope(
        &self,
        x: BufferId,
        (cos, sin): (BufferId, BufferId),
        positions: &[u32],
        shape: RopeShape,
        table_positions: usize,
    ) -> Result<(), DeviceError> {
        let (len, table) = rope_extent(x, positions, shape, table_positions)?;
        if len == 0 {
            return Ok(());
        }
        let RopeShape { rows, heads, head_dim } = shape;
        let function = self.decoder_kernel(decoder::rope_source(), decoder::ROPE_ENTRY)?;
        let [x_address] = self.addresses(&[x], len)?[..] else { return Err(unknown(x)) };
        let [cos_address, sin_address] = self.addresses(&[cos, sin], table)?[..] else { return Err(unknown(cos)) };
        let on_device = self.stream.clone_htod(&positions[..rows]).map_err(driver("copying positions to the GPU"))?;
        let (positions_address, _guard) = on_device.device_ptr(&self.stream);
        let (rows64, heads32, head_dim32, table64) =
            (rows as u64, size32(x, heads)?, size32(x, head_dim)?, table_positions as u64);
        let mut builder = self.stream.launch_builder(&function);
        builder
            .arg(&x_address)
            .arg(&cos_address)
            .arg(&sin_address)
            .arg(&positions_address)
            .arg(&rows64)
            .arg(&heads32)
            .arg(&head_dim32)
            .arg(&table64);
        let pairs = (len / 2) as u64;
        // SAFETY: the arguments follow `sched_rope`'s signature: `x` holds `rows * heads *
        // head_dim` elements, the tables `table_positions * head_dim / 2`, and the positions
        // `rows` (checked above; a position outside the tables is skipped by the kernel); the
        // positions live on this stream until after the launch.
        unsafe { builder.launch(per_item(pairs, self.multiprocessors)) }.map_err(driver("launching a layer kernel"))?;
        Ok(())
    }

    pub(super) fn run_swiglu(
        &self,
        gate: BufferId,
        up: BufferId,
        out: BufferId,
        len: usize,
    ) -> Result<(), DeviceError> {
        if len == 0 {
            return Ok(());
        }
        let function = self.decoder_kernel(decoder::swiglu_source(), decoder::SWIGLU_ENTRY)?;
        let [gate, up, out] = self.addresses(&[gate, up, out], len)?[..] else { return Err(unknown(out)) };
        let len = len as u64;
        let mut builder = self.stream.launch_builder(&function);
        builder.arg(&gate).arg(&up).arg(&out).arg(&len);
        // SAFETY: the arguments follow `sched_swiglu`'s signature: the three buffers hold `len`
        // elements (checked above), and each thread reads and writes its own element.
        unsafe { builder.launch(per_item(len, self.multiprocessors)) }.map_err(driver("launching a layer kernel"))?;
        Ok(())
    }

    pub(super) fn run_cached_attention(
        &self,
        (q, keys, values): (BufferId, BufferId, BufferId),
        out: BufferId,
        shape: CachedAttentionShape,
    ) -> Result<(), DeviceError> {
        if [q, keys, values].contains(&out) {
            return Err(DeviceError::Buffer {
                buffer: out.0,
                problem: "is both an input and the output of attention".into(),
            });
        }
        let (queries, cache) = shape.elements().ok_or_else(|| DeviceError::Buffer {
            buffer: out.0,
            problem: format!("cannot hold an attention of shape {shape:?}"),
        })?;
        if queries == 0 {
            return Ok(());
        }
        let function = self.decoder_kernel(decoder::cached_attention_source(), decoder::CACHED_ATTENTION_ENTRY)?;
        let [q_address, out_address] = self.addresses(&[q, out], queries)?[..] else { return Err(unknown(out)) };
        let [keys_address, values_address] = self.addresses(&[keys, values], cache)?[..] else {
            return Err(unknown(keys));
        };
        let CachedAttentionShape { queries: n, start, heads, kv_heads, head_dim } = shape;
        let [n32, start32, heads32, kv_heads32, head_dim32] = [n, start, heads, kv_heads, head_dim];
        let (n32, start32, heads32, kv_heads32, head_dim32) = (
            size32(out, n32)?,
            size32(out, start32)?,
            size32(out, heads32)?,
            size32(out, kv_heads32)?,
            size32(out, head_dim32)?,
        );
        let mut builder = self.stream.launch_builder(&function);
        builder
            .arg(&q_address)
            .arg(&keys_address)
            .arg(&values_address)
            .arg(&out_address)
            .arg(&n32)
            .arg(&start32)
            .arg(&heads32)
            .arg(&kv_heads32)
            .arg(&head_dim32);
        let pairs = (n as u64).saturating_mul(heads as u64);
        // SAFETY: the arguments follow `sched_cached_attention`'s signature: `q` and `out` hold
        // `queries * heads * head_dim` elements and the caches `(start + queries) * kv_heads *
        // head_dim` (checked above), `out` is none of the inputs, and the grid-stride loop over
        // (query, head) pairs stays in bounds for any grid.
        unsafe { builder.launch(per_item(pairs, self.multiprocessors)) }.map_err(driver("launching a layer kernel"))?;
        Ok(())
    }
}
