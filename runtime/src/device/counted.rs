//! A device that passes everything to another one and counts what crosses between the host and
//! the device: the [`Transfers`] a run reports.
//!
//! A run wraps its device in one ([`crate::interp`]), so its count includes the transfers its
//! device models make (weights on first use, per-call conditioning, token draws and
//! verifications), and no other run's, even when runs share a device. What counts:
//! - an upload: [`Device::upload`], and the host data a launch takes along (the row numbers of a
//!   gather or a row move, the per-row inputs of a sampling or verification launch), its bytes as the host holds
//!   them;
//! - a download, each one a synchronisation: [`Device::download`], and the tokens and reports a
//!   sampling or verification launch returns;
//! - a reduction read back ([`Device::reduce`]), also a synchronisation.
//!
//! The seed words a launch writes (8 bytes, asynchronous) are not counted, nor are a model's
//! weights: they are uploaded once per device, through the device that holds the buffers
//! ([`Device::holder`]), and kept there for every later run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sched_kernels::cuda_tokens::SampleKernel;
use sched_kernels::spec::ReductionKernel;

use super::op::DeviceOp;
use super::{BufferId, Device, DeviceError, GraphId, Launch, SampleLaunch, Sampled, Transfers, VerifyLaunch};

/// A device that counts the transfers of the work it passes on.
#[derive(Debug)]
pub struct Counted {
    inner: Arc<dyn Device>,
    transfers: Mutex<Transfers>,
    /// How many times [`Device::download`] was called: the ordinal of the next one, which a
    /// recorded plan numbers its results by.
    download_calls: AtomicU64,
}

impl Counted {
    pub fn new(inner: Arc<dyn Device>) -> Counted {
        Counted { inner, transfers: Mutex::new(Transfers::default()), download_calls: AtomicU64::new(0) }
    }

    /// The transfers counted so far (no model calls: the executor counts those).
    pub fn transfers(&self) -> Transfers {
        *self.lock()
    }

    /// How many times [`Device::download`] was called so far.
    pub fn download_calls(&self) -> u64 {
        self.download_calls.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Transfers> {
        // Every update is a few additions to plain counters, so a panic leaves them consistent.
        self.transfers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn uploaded(&self, bytes: usize) {
        let mut transfers = self.lock();
        transfers.uploads += 1;
        transfers.upload_bytes += bytes as u64;
    }

    fn downloaded(&self, bytes: usize) {
        let mut transfers = self.lock();
        transfers.downloads += 1;
        transfers.download_bytes += bytes as u64;
    }
}

impl Device for Counted {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn alloc(&self, len: usize) -> Result<BufferId, DeviceError> {
        self.inner.alloc(len)
    }

    fn upload(&self, data: &[f32]) -> Result<BufferId, DeviceError> {
        let buffer = self.inner.upload(data)?;
        self.uploaded(size_of_val(data));
        Ok(buffer)
    }

    fn download(&self, buffer: BufferId) -> Result<Vec<f32>, DeviceError> {
        let data = self.inner.download(buffer)?;
        self.download_calls.fetch_add(1, Ordering::Relaxed);
        self.downloaded(size_of_val(data.as_slice()));
        Ok(data)
    }

    fn free(&self, buffer: BufferId) {
        self.inner.free(buffer);
    }

    fn execute(&self, op: &DeviceOp<'_, BufferId>) -> Result<(), DeviceError> {
        self.inner.execute(op)?;
        // The host data an operation takes along: the row numbers of a gather or a row move, the
        // positions of a rotary embedding.
        match op {
            DeviceOp::Gather { indices, .. } => self.uploaded(size_of_val(&**indices)),
            DeviceOp::MoveRows { from, to, .. } => self.uploaded(size_of_val(&**from) + size_of_val(&**to)),
            DeviceOp::Rope { positions, .. } => self.uploaded(size_of_val(&**positions)),
            _ => {}
        }
        Ok(())
    }

    fn reduce(&self, kernel: &ReductionKernel, launch: &Launch<'_>) -> Result<f64, DeviceError> {
        let value = self.inner.reduce(kernel, launch)?;
        self.lock().reductions += 1;
        Ok(value)
    }

    fn has_linear(&self) -> bool {
        self.inner.has_linear()
    }

    fn sample_rows(&self, kernel: &SampleKernel, launch: &SampleLaunch<'_>) -> Result<Sampled, DeviceError> {
        let sampled = self.inner.sample_rows(kernel, launch)?;
        self.uploaded(size_of_val(launch.noise_sample) + size_of_val(launch.noise_position));
        self.downloaded(size_of_val(sampled.tokens.as_slice()) + size_of_val(sampled.report.as_slice()));
        Ok(sampled)
    }

    fn verify_drafts(&self, launch: &VerifyLaunch<'_>) -> Result<Vec<Vec<u32>>, DeviceError> {
        let appended = self.inner.verify_drafts(launch)?;
        self.uploaded(size_of_val(launch.draft) + size_of_val(launch.noise_sample));
        // The appended tokens, and their count per row.
        let tokens: usize = appended.iter().map(Vec::len).sum();
        self.downloaded(size_of::<u32>() * (tokens + appended.len()));
        Ok(appended)
    }

    fn live_buffers(&self) -> usize {
        self.inner.live_buffers()
    }

    fn holder(&self) -> Option<Arc<dyn Device>> {
        Some(self.inner.holder().unwrap_or_else(|| Arc::clone(&self.inner)))
    }

    fn capture(
        &self,
        seed: u64,
        body: &mut dyn FnMut() -> Result<(), DeviceError>,
    ) -> Result<Option<GraphId>, DeviceError> {
        self.inner.capture(seed, body)
    }

    fn replay_graph(&self, graph: GraphId, seed: u64) -> Result<(), DeviceError> {
        self.inner.replay_graph(graph, seed)
    }

    fn free_graph(&self, graph: GraphId) {
        self.inner.free_graph(graph);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::emulated::EmulatedDevice;

    #[test]
    fn uploads_downloads_and_reductions_are_counted_with_their_bytes() {
        let counted = Counted::new(Arc::new(EmulatedDevice::new()));
        let x = counted.upload(&[1.0, 2.0, 3.0]).expect("uploads");
        let out = counted.alloc(2).expect("allocates");
        let gather = DeviceOp::Gather { src: x, indices: vec![0, 0].into(), width: 1, blocked: None, out };
        counted.execute(&gather).expect("gathers");
        assert_eq!(counted.download(out).expect("downloads"), vec![1.0, 1.0]);
        let kernel = ReductionKernel::of_input(sched_kernels::ReduceOp::Mean);
        let noise = sched_kernels::spec::NoiseLaunch { seed: 0, per_sample: 3, slots: &[] };
        let launch = Launch { len: 3, inputs: &[x], outputs: &[], params: &[], noise };
        assert_eq!(counted.reduce(&kernel, &launch).expect("reduces"), 2.0);
        let transfers = counted.transfers();
        assert_eq!((transfers.uploads, transfers.upload_bytes), (2, 12 + 8), "the data and the indices");
        assert_eq!((transfers.downloads, transfers.download_bytes, transfers.reductions), (1, 8, 1));
        assert_eq!((transfers.syncs(), counted.download_calls()), (2, 1));
        counted.free(x);
        counted.free(out);
        assert_eq!(counted.live_buffers(), 0);
    }
}
