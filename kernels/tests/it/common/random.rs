//! A small deterministic generator of test material (SplitMix64), so that every run of a test
//! draws the same data.

use sched_kernels::spec::ElementwiseKernel;

use super::random_kernel;

/// SplitMix64 from the state `.0`: `Random(seed)` starts a stream.
pub struct Random(pub u64);

impl Random {
    /// The next 64-bit word.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// An integer in `0..n` (the word modulo `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A uniform f64 on [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One of `values`.
    pub fn pick<T: Copy>(&mut self, values: &[T]) -> T {
        values[self.below(values.len() as u64) as usize]
    }

    /// A uniform f32 in `[low, high)`.
    pub fn uniform(&mut self, low: f32, high: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }

    /// `count` uniform f32 values in `[low, high)`.
    pub fn values(&mut self, count: usize, low: f32, high: f32) -> Vec<f32> {
        (0..count).map(|_| self.uniform(low, high)).collect()
    }

    /// An integer in `low..=high`.
    pub fn size(&mut self, low: usize, high: usize) -> usize {
        low + (self.next() % (high - low + 1) as u64) as usize
    }

    /// A kernel of 1 to 27 nodes from [`random_kernel`], with material drawn from the stream.
    pub fn kernel(&mut self, wild: bool) -> ElementwiseKernel {
        let count = 1 + self.below(27) as usize;
        let raw: Vec<(u8, u32, u32, u32, f32)> = (0..count)
            .map(|_| {
                let kind = self.below(6) as u8;
                let (a, b, c) = (self.next() as u32, self.next() as u32, self.next() as u32);
                (kind, a, b, c, f32::from_bits(self.next() as u32))
            })
            .collect();
        let outputs: Vec<u32> = (0..self.below(4)).map(|_| self.next() as u32).collect();
        random_kernel(&raw, &outputs, wild, true)
    }
}
