//! The 2-D data sets of the training programs and the inference-time scaling study.
//!
//! Each is a distribution on about [−2, 2]² that samples deterministically from a seed, through
//! sched's counter-based random stream ([`sched_kernels::philox`]), so a training set and a
//! held-out set are reproducible anywhere. Definitions (u uniform on [0, 1), z standard normal):
//!
//! - `checker`: uniform on the 8 dark squares of a 4×4 checkerboard on [−2, 2]², the unit cells
//!   [i−2, i−1]×[j−2, j−1] with i + j even (the squares of `analytic:gmm(preset=checker)`).
//! - `moons`: scikit-learn's two moons (upper: (cos πu, sin πu); lower: (1 − cos πu,
//!   0.5 − sin πu)), shifted by (−0.5, −0.25) and scaled by 1.6, plus Gaussian noise of std 0.08.
//! - `eight`: eight Gaussians of std 0.1 at radius 2 and angles kπ/4, equally likely (the
//!   components of `analytic:gmm(preset=eight)`).
//! - `spirals`: two interleaved spiral arms, r = 0.5 + 1.5 u at angle 3π u (the second arm
//!   rotated by π), plus Gaussian noise of std 0.05.

use std::f64::consts::{FRAC_PI_4, PI};

use sched_kernels::philox;

use sched_runtime::tensor::Tensor;

/// A 2-D data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dataset {
    Checker,
    Moons,
    Eight,
    Spirals,
}

/// The noise site of each random number a sample draws (the Philox counter's `site` word).
const SITES: u32 = 4;

impl Dataset {
    pub const ALL: [Dataset; 4] = [Dataset::Checker, Dataset::Moons, Dataset::Eight, Dataset::Spirals];

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Checker => "checker",
            Dataset::Moons => "moons",
            Dataset::Eight => "eight",
            Dataset::Spirals => "spirals",
        }
    }

    pub fn from_name(name: &str) -> Option<Dataset> {
        Dataset::ALL.into_iter().find(|d| d.name() == name)
    }

    /// `n` samples as an `[n, 2]` tensor; the same `(n, seed)` gives the same bits, and sample `i`
    /// does not depend on `n`.
    pub fn sample(self, n: usize, seed: u64) -> Tensor {
        let mut data = Vec::with_capacity(2 * n);
        for i in 0..n {
            // Each sample's numbers come from its own counters: (site k, step 0, sample i).
            let index = i as u32;
            let step = (i >> 32) as u32;
            let u = |k: u32| f64::from(philox::uniform(seed, k, step, index, 0));
            let z = |k: u32| f64::from(philox::gaussian(seed, SITES + k, step, index, 0));
            let (x, y) = match self {
                Dataset::Checker => {
                    let cell = (u(0) * 8.0).floor().min(7.0) as u32;
                    let (row, half) = (cell / 2, cell % 2);
                    // Row r holds the dark cells i with i + r even: i = 2 half + (r mod 2).
                    let column = 2 * half + row % 2;
                    (f64::from(column) - 2.0 + u(1), f64::from(row) - 2.0 + u(2))
                }
                Dataset::Moons => {
                    let angle = PI * u(1);
                    let (mx, my) =
                        if u(0) < 0.5 { (angle.cos(), angle.sin()) } else { (1.0 - angle.cos(), 0.5 - angle.sin()) };
                    (1.6 * (mx - 0.5) + 0.08 * z(0), 1.6 * (my - 0.25) + 0.08 * z(1))
                }
                Dataset::Eight => {
                    let k = (u(0) * 8.0).floor().min(7.0);
                    let angle = k * FRAC_PI_4;
                    (2.0 * angle.cos() + 0.1 * z(0), 2.0 * angle.sin() + 0.1 * z(1))
                }
                Dataset::Spirals => {
                    let v = u(1);
                    let arm = if u(0) < 0.5 { 0.0 } else { PI };
                    let (radius, angle) = (0.5 + 1.5 * v, 3.0 * PI * v + arm);
                    (radius * angle.cos() + 0.05 * z(0), radius * angle.sin() + 0.05 * z(1))
                }
            };
            data.push(x as f32);
            data.push(y as f32);
        }
        Tensor::new(vec![n, 2], data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_reproducible_and_prefix_stable() {
        for dataset in Dataset::ALL {
            let a = dataset.sample(100, 7);
            assert_eq!(a, dataset.sample(100, 7));
            assert_eq!(a.data[..40], dataset.sample(20, 7).data[..]);
            assert_ne!(a, dataset.sample(100, 8));
            assert!(a.data.iter().all(|v| v.abs() < 3.5), "{}: a sample is far outside [-2, 2]", dataset.name());
            assert_eq!(Dataset::from_name(dataset.name()), Some(dataset));
        }
    }

    #[test]
    fn checker_samples_lie_on_dark_squares_in_equal_shares() {
        let samples = Dataset::Checker.sample(8000, 1);
        let mut counts = [0usize; 16];
        for point in samples.data.chunks(2) {
            let (i, j) = ((point[0] + 2.0).floor() as usize, (point[1] + 2.0).floor() as usize);
            assert_eq!((i + j) % 2, 0, "({}, {}) is on a light square", point[0], point[1]);
            counts[i * 4 + j] += 1;
        }
        for (cell, &count) in counts.iter().enumerate() {
            let expected = if (cell / 4 + cell % 4) % 2 == 0 { 1000.0 } else { 0.0 };
            assert!((count as f64 - expected).abs() <= 4.0 * expected.sqrt().max(1.0), "cell {cell}: {count}");
        }
    }

    #[test]
    fn eight_has_the_documented_modes() {
        let samples = Dataset::Eight.sample(4000, 3);
        for point in samples.data.chunks(2) {
            let radius = f64::from(point[0]).hypot(f64::from(point[1]));
            assert!((radius - 2.0).abs() < 0.6, "radius {radius}");
        }
        let mean_x: f64 = samples.data.chunks(2).map(|p| f64::from(p[0])).sum::<f64>() / 4000.0;
        assert!(mean_x.abs() < 0.1, "the modes are balanced around 0, mean x = {mean_x}");
    }
}
