//! The order in which the host's matrix kernels (`dense.rs` for f32, `quant.rs` for llama.cpp's
//! blocks) meet weights and activations: each thread of the team takes a contiguous part of the
//! output rows, and within it [`ROWS`] weight rows at a time, output `g` of each quarter of the
//! part, so that each of the kernel's rows walks through memory in one sequential stream (rows
//! a block apart defeat the prefetchers). Each group of weight rows meets the activation rows two
//! at a time, then the last one alone.

use super::team;

/// Weight rows a kernel multiplies at once.
pub(crate) const ROWS: usize = 4;

/// The products of `outputs` weight rows with `rows` activation rows, `[rows, outputs]`: `weight(o)`
/// is weight row `o`, `activation(r)` activation row `r`, and `one` and `two` the kernels that
/// multiply [`ROWS`] weight rows with one or two activation rows (for each activation row, its
/// products with the weight rows). A part of the team's work has at least `min_part` output rows
/// unless there are fewer.
pub(crate) fn product<W: Copy, A: Copy>(
    outputs: usize,
    rows: usize,
    min_part: usize,
    weight: &(dyn Fn(usize) -> W + Sync),
    activation: &(dyn Fn(usize) -> A + Sync),
    one: &(dyn Fn([W; ROWS], [A; 1]) -> [[f32; ROWS]; 1] + Sync),
    two: &(dyn Fn([W; ROWS], [A; 2]) -> [[f32; ROWS]; 2] + Sync),
) -> Vec<f32> {
    // Computed as `[outputs, rows]`, each thread a contiguous run of output rows.
    let parts = team::split(outputs, min_part, &|range: std::ops::Range<usize>| {
        let (start, len) = (range.start, range.len());
        let mut part = vec![0.0f32; len * rows];
        let quarter = len.div_ceil(ROWS);
        for g in 0..quarter {
            // Output `g` of each quarter; where the quarters are uneven, the last group takes a
            // quarter's last row again.
            let group: [usize; ROWS] = std::array::from_fn(|k| {
                let first = (k * quarter).min(len.saturating_sub(1));
                let last = ((k + 1) * quarter).min(len).saturating_sub(1).max(first);
                start + (first + g).min(last)
            });
            let weights = group.map(weight);
            let mut store = |r: usize, values: [f32; ROWS]| {
                for (k, value) in values.into_iter().enumerate() {
                    part[(group[k] - start) * rows + r] = value;
                }
            };
            let pairs = rows / 2 * 2;
            for r in (0..pairs).step_by(2) {
                let [a, b] = two(weights, [activation(r), activation(r + 1)]);
                store(r, a);
                store(r + 1, b);
            }
            if pairs < rows {
                let [a] = one(weights, [activation(pairs)]);
                store(pairs, a);
            }
        }
        part
    });
    let transposed = parts.concat();
    if rows == 1 {
        return transposed;
    }
    let mut out = vec![0.0f32; rows * outputs];
    for (o, column) in transposed.chunks_exact(rows).enumerate() {
        for (r, &value) in column.iter().enumerate() {
            out[r * outputs + o] = value;
        }
    }
    out
}
