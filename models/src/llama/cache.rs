//! The key/value cache of a language model: a prefix tree of token rows, one node per position
//! holding that position's keys and values in every layer.
//!
//! The keys and values live in one slab per layer, a node's at its id, so that attending over a
//! row's positions (nodes mostly made one after another) reads each layer's keys nearly in one
//! stream rather than one scattered node at a time.
//!
//! A row finds the longest prefix of itself that is in the tree and computes only the positions
//! after it, so decoding never recomputes its prefix, rows that share a prompt share its keys and
//! values (one prefill for any number of rows), rows that a verification truncates find their
//! accepted prefix, and rows that end simply stop extending theirs. Nodes that no call used
//! recently are evicted, leaves first, when the tree outgrows its budget.
//!
//! Invariants: a node's keys and values are those of its position given the tokens on its path
//! from the root (they are computed once and never change); a node's parent is at the previous
//! position; nodes a call holds (the paths of its rows) are not evicted during the call.

use std::collections::HashMap;

/// A node of the tree: one position of some rows.
pub(crate) type NodeId = u32;

/// The parent of the first position.
const ROOT: NodeId = NodeId::MAX;

struct Node {
    parent: NodeId,
    token: u32,
    children: u32,
    /// The call that last used the node.
    used: u64,
}

/// The prefix tree.
pub(crate) struct PrefixCache {
    nodes: Vec<Option<Node>>,
    free: Vec<NodeId>,
    children: HashMap<(NodeId, u32), NodeId>,
    /// Each layer's keys and values, `kv_width` floats per node id.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// Floats per node: `layers × 2 × kv_width`.
    node_len: usize,
    kv_width: usize,
    /// The most nodes the tree keeps between calls.
    capacity: usize,
    live: usize,
    clock: u64,
}

impl PrefixCache {
    /// A cache for `layers` layers of keys and values `kv_width` wide, holding at most `budget`
    /// bytes between calls (at least one position).
    pub(crate) fn new(layers: usize, kv_width: usize, budget: usize) -> PrefixCache {
        let node_len = layers * 2 * kv_width;
        let capacity = (budget / (4 * node_len).max(1)).max(1);
        PrefixCache {
            nodes: Vec::new(),
            free: Vec::new(),
            children: HashMap::new(),
            keys: vec![Vec::new(); layers],
            values: vec![Vec::new(); layers],
            node_len,
            kv_width,
            capacity,
            live: 0,
            clock: 0,
        }
    }

    /// Starts a call: nodes used from now on are this call's.
    pub(crate) fn begin(&mut self) {
        self.clock += 1;
    }

    /// The nodes of the longest cached prefix of `row` (at most `limit` positions), marked used
    /// by this call.
    pub(crate) fn lookup(&mut self, row: &[u32], limit: usize) -> Vec<NodeId> {
        let mut path = Vec::new();
        let mut parent = ROOT;
        let clock = self.clock;
        for &token in row.iter().take(limit) {
            let Some(&child) = self.children.get(&(parent, token)) else { break };
            if let Some(node) = self.node_mut(child) {
                node.used = clock;
            }
            path.push(child);
            parent = child;
        }
        path
    }

    /// Appends the position after `parent` (the end of a cached path, or `None` for the first
    /// position) holding `token` with `kv` (`[layers][2][kv_width]`: each layer's keys, then its
    /// values); returns its node, an existing one when another row of the call computed the same
    /// position.
    pub(crate) fn insert(&mut self, parent: Option<NodeId>, token: u32, kv: &[f32]) -> NodeId {
        let parent = parent.unwrap_or(ROOT);
        if let Some(&existing) = self.children.get(&(parent, token)) {
            return existing;
        }
        let node = Node { parent, token, children: 0, used: self.clock };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                (self.nodes.len() - 1) as NodeId
            }
        };
        let width = self.kv_width;
        let at = id as usize * width;
        for (layer, (keys, values)) in self.keys.iter_mut().zip(&mut self.values).enumerate() {
            if keys.len() < at + width {
                keys.resize(at + width, 0.0);
                values.resize(at + width, 0.0);
            }
            let from = layer * 2 * width;
            if let Some(source) = kv.get(from..from + 2 * width) {
                keys[at..at + width].copy_from_slice(&source[..width]);
                values[at..at + width].copy_from_slice(&source[width..]);
            }
        }
        if let Some(parent) = self.node_mut(parent) {
            parent.children += 1;
        }
        self.children.insert((parent, token), id);
        self.live += 1;
        id
    }

    /// The keys of layer `layer` at a node (`kv_width` floats; none for a node not held).
    pub(crate) fn keys(&self, node: NodeId, layer: usize) -> &[f32] {
        Self::slice(&self.keys, node, layer, self.kv_width)
    }

    /// The values of layer `layer` at a node.
    pub(crate) fn values(&self, node: NodeId, layer: usize) -> &[f32] {
        Self::slice(&self.values, node, layer, self.kv_width)
    }

    fn slice(slabs: &[Vec<f32>], node: NodeId, layer: usize, width: usize) -> &[f32] {
        let at = node as usize * width;
        slabs.get(layer).and_then(|slab| slab.get(at..at + width)).unwrap_or(&[])
    }

    /// Floats per node.
    pub(crate) fn node_len(&self) -> usize {
        self.node_len
    }

    fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// Ends a call: evicts the least recently used leaves until the tree fits its capacity.
    pub(crate) fn end(&mut self) {
        while self.live > self.capacity {
            let mut leaves: Vec<(u64, NodeId)> = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(id, node)| node.as_ref().filter(|n| n.children == 0).map(|n| (n.used, id as NodeId)))
                .collect();
            if leaves.is_empty() {
                return;
            }
            leaves.sort_unstable();
            let excess = self.live - self.capacity;
            for &(_, id) in leaves.iter().take(excess) {
                self.remove(id);
            }
        }
    }

    fn remove(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(id as usize).and_then(Option::take) else { return };
        self.children.remove(&(node.parent, node.token));
        if let Some(parent) = self.node_mut(node.parent) {
            parent.children -= 1;
        }
        self.free.push(id);
        self.live -= 1;
    }

    /// How many positions the tree holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: f32) -> [f32; 4] {
        [value; 4]
    }

    #[test]
    fn rows_share_prefixes_and_the_oldest_leaves_go_first() {
        // One layer of width 2: four floats a node; room for three nodes.
        let mut cache = PrefixCache::new(1, 2, 3 * 16);
        cache.begin();
        let a = cache.insert(None, 7, &kv(1.0));
        let b = cache.insert(Some(a), 8, &kv(2.0));
        assert_eq!(cache.insert(Some(a), 8, &kv(9.0)), b, "the same position is one node");
        assert_eq!(cache.lookup(&[7, 8, 9], 3), vec![a, b]);
        assert_eq!(cache.lookup(&[7, 8, 9], 1), vec![a], "the limit bounds the prefix");
        assert_eq!(cache.lookup(&[8], 1), Vec::<NodeId>::new());
        assert_eq!((cache.keys(b, 0), cache.values(b, 0)), (&[2.0, 2.0][..], &[2.0, 2.0][..]));
        cache.end();
        cache.begin();
        let c = cache.insert(Some(a), 5, &kv(3.0));
        let d = cache.insert(Some(c), 6, &kv(4.0));
        assert_eq!(cache.len(), 4);
        cache.end();
        assert_eq!(cache.len(), 3, "over capacity: the least recently used leaf is evicted");
        assert_eq!(cache.lookup(&[7, 8], 2), vec![a], "`b` went");
        assert_eq!(cache.lookup(&[7, 5, 6], 3), vec![a, c, d]);
    }
}
