//! The emulated device: buffers in host memory, kernels on the reference evaluator.
//!
//! It behaves like an accelerator from the executor's side (every tensor a kernel produces stays
//! in a buffer the executor must move explicitly), so the tests run the device path of the
//! executor without a GPU, and its results must equal the CPU's bit for bit. New buffers are
//! filled with NaN, so reading a buffer before a kernel wrote it shows up in the results.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use candle_core::{Device as CDevice, Tensor as CTensor};
use sched_kernels::cpu;
use sched_kernels::layers::{self, Activation};
use sched_kernels::spec::{ElementwiseKernel, ReductionKernel};

use super::{BufferId, Device, DeviceError, Launch, LinearShape, check_counts};

/// A device that keeps its buffers in host memory.
#[derive(Debug, Default)]
pub struct EmulatedDevice {
    buffers: Mutex<HashMap<u64, Vec<f32>>>,
    next_id: AtomicU64,
}

impl EmulatedDevice {
    pub fn new() -> EmulatedDevice {
        EmulatedDevice::default()
    }

    fn buffers(&self) -> MutexGuard<'_, HashMap<u64, Vec<f32>>> {
        // A panic while the lock was held cannot leave the map inconsistent: every update is a
        // single insert or remove.
        self.buffers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, data: Vec<f32>) -> BufferId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.buffers().insert(id, data);
        BufferId(id)
    }

    /// Copies of the inputs of a launch, each at least `len` long.
    fn inputs(&self, launch: &Launch<'_>) -> Result<Vec<Vec<f32>>, DeviceError> {
        let buffers = self.buffers();
        launch
            .inputs
            .iter()
            .map(|id| match buffers.get(&id.0) {
                Some(data) if data.len() >= launch.len => Ok(data[..launch.len].to_vec()),
                Some(data) => Err(short(*id, data.len(), launch.len)),
                None => Err(unknown(*id)),
            })
            .collect()
    }
}

fn unknown(buffer: BufferId) -> DeviceError {
    DeviceError::Buffer { buffer: buffer.0, problem: "does not exist on the device".into() }
}

fn short(buffer: BufferId, actual: usize, len: usize) -> DeviceError {
    DeviceError::Buffer { buffer: buffer.0, problem: format!("has {actual} elements, fewer than the launch's {len}") }
}

impl Device for EmulatedDevice {
    fn name(&self) -> String {
        "emulated".into()
    }

    fn alloc(&self, len: usize) -> Result<BufferId, DeviceError> {
        Ok(self.insert(vec![f32::NAN; len]))
    }

    fn upload(&self, data: &[f32]) -> Result<BufferId, DeviceError> {
        Ok(self.insert(data.to_vec()))
    }

    fn download(&self, buffer: BufferId) -> Result<Vec<f32>, DeviceError> {
        self.buffers().get(&buffer.0).cloned().ok_or_else(|| unknown(buffer))
    }

    fn free(&self, buffer: BufferId) {
        self.buffers().remove(&buffer.0);
    }

    fn elementwise(&self, kernel: &ElementwiseKernel, launch: &Launch<'_>) -> Result<(), DeviceError> {
        check_counts(kernel, launch, kernel.outputs.len())?;
        let inputs = self.inputs(launch)?;
        let slices: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let results = cpu::evaluate(kernel, launch.len, &slices, launch.params, &launch.noise)?;
        let mut buffers = self.buffers();
        for (id, result) in launch.outputs.iter().zip(results) {
            match buffers.get_mut(&id.0) {
                Some(data) if data.len() >= launch.len => data[..launch.len].copy_from_slice(&result),
                Some(data) => return Err(short(*id, data.len(), launch.len)),
                None => return Err(unknown(*id)),
            }
        }
        Ok(())
    }

    fn reduce(&self, kernel: &ReductionKernel, launch: &Launch<'_>) -> Result<f64, DeviceError> {
        check_counts(&kernel.body, launch, 0)?;
        let inputs = self.inputs(launch)?;
        let slices: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        Ok(cpu::reduce(kernel, launch.len, &slices, launch.params, &launch.noise)?)
    }

    fn has_linear(&self) -> bool {
        true
    }

    fn linear(&self, x: BufferId, weight: BufferId, out: BufferId, shape: LinearShape) -> Result<(), DeviceError> {
        let LinearShape { rows, inputs, outputs } = shape;
        let (x_data, w_data) = {
            let buffers = self.buffers();
            let read = |id: BufferId, len: usize| match buffers.get(&id.0) {
                Some(data) if data.len() >= len => Ok(data[..len].to_vec()),
                Some(data) => Err(short(id, data.len(), len)),
                None => Err(unknown(id)),
            };
            (read(x, rows * inputs)?, read(weight, outputs * inputs)?)
        };
        // candle's CPU matrix product stands in for the GPU's.
        let product = || -> candle_core::Result<Vec<f32>> {
            let x = CTensor::from_vec(x_data, (rows, inputs), &CDevice::Cpu)?;
            let w = CTensor::from_vec(w_data, (outputs, inputs), &CDevice::Cpu)?;
            x.matmul(&w.t()?)?.flatten_all()?.to_vec1::<f32>()
        };
        let result =
            product().map_err(|e| DeviceError::Driver { action: "multiplying matrices", message: e.to_string() })?;
        match self.buffers().get_mut(&out.0) {
            Some(data) if data.len() >= result.len() => data[..result.len()].copy_from_slice(&result),
            Some(data) => return Err(short(out, data.len(), result.len())),
            None => return Err(unknown(out)),
        }
        Ok(())
    }

    fn bias_activation(
        &self,
        data: BufferId,
        bias: BufferId,
        len: usize,
        activation: Activation,
    ) -> Result<(), DeviceError> {
        let mut buffers = self.buffers();
        let bias = buffers.get(&bias.0).cloned().ok_or_else(|| unknown(bias))?;
        match buffers.get_mut(&data.0) {
            Some(values) if values.len() >= len => {
                layers::bias_activation(&mut values[..len], &bias, activation);
                Ok(())
            }
            Some(values) => Err(short(data, values.len(), len)),
            None => Err(unknown(data)),
        }
    }

    fn live_buffers(&self) -> usize {
        self.buffers().len()
    }
}
