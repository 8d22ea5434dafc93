//! Model calls on rows of different lengths: a call groups the rows of equal length into one
//! batch (each group is one evaluation of the model, and all of them count as one).

use super::value::SequenceError;
use crate::model::{KeptLogits, ModelError, TokenRows};

/// Evaluates `call` once per group of rows with the same `key` (rows of one key have one length):
/// the rows of a group, in increasing order, form one batch. Returns each group's members and what
/// its call returned.
pub(super) fn each_group<K: Copy + Ord, T>(
    rows: &[&[u32]],
    key: impl Fn(usize) -> K,
    call: impl Fn(K, TokenRows<'_>, &[usize]) -> Result<T, ModelError>,
) -> Result<Vec<(K, Vec<usize>, T)>, SequenceError> {
    let keys: Vec<K> = (0..rows.len()).map(&key).collect();
    let mut groups = keys.clone();
    groups.sort_unstable();
    groups.dedup();
    groups
        .into_iter()
        .map(|group| {
            let members: Vec<usize> = (0..rows.len()).filter(|&b| keys[b] == group).collect();
            let len = members.first().map_or(0, |&b| rows[b].len());
            let ids: Vec<u32> = members.iter().flat_map(|&b| rows[b].iter().copied()).collect();
            let result = call(group, TokenRows { ids: &ids, batch: members.len(), len }, &members)?;
            Ok((group, members, result))
        })
        .collect()
}

/// The logits of one group of rows of equal length (one model call): the rows' indices in the
/// batch, and `[rows × len, vocab]` logits on the host or on the device that computed them.
#[derive(Clone, Debug)]
pub(super) struct RowGroup {
    pub(super) members: Vec<usize>,
    pub(super) logits: KeptLogits,
}

/// The slot of row `b` in a group: its rank among the group's `members`, which are increasing
/// and include it.
pub(super) fn slot_of(members: &[usize], b: usize) -> usize {
    members.binary_search(&b).unwrap_or(0)
}

/// Evaluates `call` once per group of rows of equal length (their indices increasing), keeping
/// each group's `[rows × len, vocab]` logits where the call left them.
pub(super) fn row_groups(
    rows: &[&[u32]],
    vocab: usize,
    call: impl Fn(TokenRows<'_>) -> Result<KeptLogits, ModelError>,
) -> Result<Vec<RowGroup>, SequenceError> {
    kept_groups(rows, |b| rows[b].len(), |len| len * vocab, |_, batch| call(batch))
}

/// Evaluates `call` once per group of rows with the same `key` (rows of one key have one length;
/// the indices of a group increasing), keeping each group's logits where the call left them;
/// each row has `per_row(key)` of them.
pub(super) fn kept_groups<K: Copy + Ord>(
    rows: &[&[u32]],
    key: impl Fn(usize) -> K,
    per_row: impl Fn(K) -> usize,
    call: impl Fn(K, TokenRows<'_>) -> Result<KeptLogits, ModelError>,
) -> Result<Vec<RowGroup>, SequenceError> {
    each_group(rows, key, |group, batch, _| call(group, batch))?
        .into_iter()
        .map(|(group, members, logits)| {
            let count = match &logits {
                KeptLogits::Host(logits) => logits.len(),
                KeptLogits::Device(logits) => logits.len(),
            };
            let expected = members.len() * per_row(group);
            if count != expected {
                let len = members.first().map_or(0, |&b| rows[b].len());
                return Err(SequenceError::Invalid(format!(
                    "the model returned {count} logits for {} rows of length {len}, expected {expected}",
                    members.len()
                )));
            }
            Ok(RowGroup { members, logits })
        })
        .collect()
}
