//! Host tensors: a shape and f32 data in row-major order; the first dimension is the batch.

use sched_kernels::philox;
use sched_kernels::spec::Distribution;

/// A batch of samples on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// `[batch, ...sample shape]`.
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len(), "shape and data disagree");
        Tensor { shape, data }
    }

    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let len = shape.iter().product();
        Tensor { shape, data: vec![0.0; len] }
    }

    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per sample: the product of the non-batch dimensions.
    pub fn per_sample(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Sample `b` as a slice.
    pub fn sample(&self, b: usize) -> &[f32] {
        let n = self.per_sample();
        &self.data[b * n..(b + 1) * n]
    }

    /// The noise of draw `step` of noise site `site` with `seed`, of `shape` (`[batch, ...]`):
    /// element `i` of sample `b` is draw `(seed, site, step, b, i)` of sched's Philox stream, as
    /// every kernel draws it.
    pub fn noise(dist: Distribution, seed: u64, site: u32, step: u32, shape: Vec<usize>) -> Tensor {
        let per_sample = shape.iter().skip(1).product::<usize>().max(1);
        let len: usize = shape.iter().product();
        let draw = match dist {
            Distribution::Gaussian => philox::gaussian,
            Distribution::Uniform => philox::uniform,
        };
        let data = (0..len).map(|i| draw(seed, site, step, (i / per_sample) as u32, (i % per_sample) as u32)).collect();
        Tensor::new(shape, data)
    }
}
