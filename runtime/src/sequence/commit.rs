//! `commit(x, candidates, confidence)` of masked diffusion: which candidates replace their mask
//! this step, by the remasking policy.

use sched_compiler::ir::Remask;
use sched_kernels::tokens as kernels;

use super::value::{SequenceError, Specials, TokenSeq};
use crate::model::draw::Noise;
use crate::tensor::Tensor;

/// Commits some candidates of the window of `x`. `keep` = s/t is the fraction of masked
/// positions that stay masked in expectation; `threshold` is Fast-dLLM's p.
///
/// - posterior: each masked position commits when `uniform(row, p) >= keep` (MDLM's step);
/// - confidence / random: the `n` most confident (or, by `uniform(row, p)`, random) masked
///   positions commit, `n = ceil(m / round(1 / (1 - keep)))` for `m` masked positions: on a
///   uniform grid of N steps this is exactly LLaDA's `get_num_transfer_tokens`;
/// - first-hitting: one masked position, chosen by `uniform(row, 0)`;
/// - threshold: the most confident one and every other above `threshold`.
#[allow(clippy::too_many_arguments, reason = "the operands of one commit")]
pub fn commit(
    x: &TokenSeq,
    candidates: &TokenSeq,
    confidence: &Tensor,
    keep: f64,
    remask: Remask,
    threshold: Option<f64>,
    specials: Specials,
    noise: Noise,
) -> Result<TokenSeq, SequenceError> {
    if !(0.0..=1.0).contains(&keep) {
        return Err(SequenceError::Invalid(format!("the fraction of masks kept ({keep}) must be in [0, 1]")));
    }
    let mask =
        specials.mask.ok_or_else(|| SequenceError::Invalid("unmasking needs a model with a mask token".into()))?;
    if candidates.rows.len() != x.rows.len() {
        return Err(SequenceError::Invalid("the candidates do not match the sequence".into()));
    }
    let width = confidence.shape.get(1).copied().unwrap_or(0);
    if confidence.shape.len() != 2 || confidence.data.len() != x.rows.len() * width {
        return Err(SequenceError::Invalid(format!(
            "the confidence has shape {:?}; `commit` takes the one `candidates` returns ({} rows by the window)",
            confidence.shape,
            x.rows.len()
        )));
    }
    let mut rows = x.rows.clone();
    for (b, row) in rows.iter_mut().enumerate() {
        let start = x.window_start(b);
        let window = row.len() - start;
        if candidates.rows[b].len() != row.len() || window > width {
            return Err(SequenceError::Invalid("the candidates do not match the sequence".into()));
        }
        let eligible: Vec<bool> = row[start..].iter().map(|&token| token == mask).collect();
        let masked = eligible.iter().filter(|&&e| e).count();
        let scores: Vec<f64> = (0..window).map(|p| f64::from(confidence.data[b * width + p])).collect();
        let chosen: Vec<usize> = match remask {
            Remask::Posterior => (0..window).filter(|&p| eligible[p] && noise.uniform(b, start + p) >= keep).collect(),
            Remask::Confidence | Remask::Random => {
                let steps_left = (1.0 / (1.0 - keep)).round().max(1.0);
                let count = if keep >= 1.0 { 0 } else { (masked as f64 / steps_left).ceil() as usize };
                let ranking: Vec<f64> = match remask {
                    Remask::Random => (0..window).map(|p| noise.uniform(b, start + p)).collect(),
                    _ => scores,
                };
                kernels::top_k_positions(&ranking, &eligible, count)
            }
            Remask::FirstHitting => {
                let open: Vec<usize> = (0..window).filter(|&p| eligible[p]).collect();
                let pick = (noise.uniform(b, 0) * open.len() as f64) as usize;
                open.get(pick.min(open.len().saturating_sub(1))).copied().into_iter().collect()
            }
            Remask::Threshold => {
                let p = threshold.unwrap_or(f64::NAN);
                kernels::threshold_positions(&scores, &eligible, p)
            }
        };
        for p in chosen {
            row[start + p] = candidates.rows[b][start + p];
        }
    }
    Ok(TokenSeq { rows, prompt: x.prompt, window: x.window, proposal: None, tentative: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequence::value::noise_room;

    #[test]
    fn the_window_limits_what_a_commit_writes() {
        let specials = Specials { mask: Some(9), eos: None };
        let x = TokenSeq { rows: vec![vec![9, 9, 9, 9]], prompt: 0, window: None, proposal: None, tentative: 0 }
            .tail(2)
            .unwrap_or_else(|e| panic!("{e}"));
        let candidates = TokenSeq { rows: vec![vec![1, 2, 3, 4]], ..x.clone() };
        let confidence = Tensor::new(vec![1, 2], vec![0.5, 0.9]);
        let noise = Noise { seed: 0, site: 0, step: 0 };
        let committed = commit(&x, &candidates, &confidence, 0.0, Remask::Confidence, None, specials, noise)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(committed.rows, vec![vec![9, 9, 3, 4]], "keep = 0 commits the whole window, nothing else");
        let half = commit(&x, &candidates, &confidence, 0.5, Remask::Confidence, None, specials, noise)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(half.rows, vec![vec![9, 9, 9, 4]], "two steps left: one token, the most confident");
        assert!(x.tail(-1).is_err());
        assert!(x.extend_mask(1 << 21, specials).is_err(), "rows are bounded");
        assert!(noise_room(1 << 16, 1 << 16).is_ok());
        assert!(noise_room((1 << 16) + 1, 1 << 16).is_err());
        assert!(commit(&x, &candidates, &confidence, 1.5, Remask::Posterior, None, specials, noise).is_err());
        let wrong = Tensor::new(vec![2, 2], vec![0.0; 4]);
        assert!(commit(&x, &candidates, &wrong, 0.5, Remask::Confidence, None, specials, noise).is_err());
    }
}
