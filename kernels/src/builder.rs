//! A convenient way to construct [`ElementwiseKernel`]s, with hash-consing of identical nodes.

use std::collections::HashMap;

use crate::spec::{BinaryOp, Distribution, ElementwiseKernel, Node, NodeId, UnaryOp};

/// Builds an [`ElementwiseKernel`] node by node.
///
/// Asking twice for the same node (the same input, parameter, constant bits, or operation on the
/// same operands) returns the same [`NodeId`], so common subexpressions are shared. A noise node
/// is the exception: every call of [`KernelBuilder::noise`] allocates a new slot, because two
/// draws are two independent random values. Nothing is folded, not even an operation on
/// constants, so the kernel evaluates exactly the operations it was given, in order.
#[derive(Clone, Debug)]
pub struct KernelBuilder {
    kernel: ElementwiseKernel,
    /// The id of every node pushed so far except noise nodes.
    ids: HashMap<Node, NodeId>,
}

impl Default for KernelBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelBuilder {
    /// Starts an empty kernel.
    pub fn new() -> Self {
        KernelBuilder {
            kernel: ElementwiseKernel { inputs: 0, params: 0, noise_slots: 0, nodes: Vec::new(), outputs: Vec::new() },
            ids: HashMap::new(),
        }
    }

    /// Appends a node that was not pushed before, and returns its id.
    ///
    /// # Panics
    ///
    /// If the kernel already has `u32::MAX + 1` nodes, which a [`NodeId`] cannot index; such a
    /// kernel (over 48 GiB of nodes) cannot be built in practice.
    fn push(&mut self, node: Node) -> NodeId {
        // A kernel of 2^32 nodes does not fit in memory, so the conversion cannot fail in practice.
        let id = NodeId(u32::try_from(self.kernel.nodes.len()).expect("a kernel has fewer than 2^32 nodes"));
        self.kernel.nodes.push(node);
        id
    }

    /// Returns the id of `node`, pushing it if it is new.
    fn intern(&mut self, node: Node) -> NodeId {
        if let Some(&id) = self.ids.get(&node) {
            return id;
        }
        let id = self.push(node);
        self.ids.insert(node, id);
        id
    }

    /// Reads element `i` of tensor input `k`, declaring inputs `0..=k` if they are not yet.
    ///
    /// `k = u32::MAX` cannot be declared (the count would not fit); the kernel then fails
    /// validation.
    pub fn input(&mut self, k: u32) -> NodeId {
        self.kernel.inputs = self.kernel.inputs.max(k.saturating_add(1));
        self.intern(Node::Input(k))
    }

    /// Reads scalar parameter `k`, declaring parameters `0..=k` if they are not yet.
    ///
    /// `k = u32::MAX` cannot be declared (the count would not fit); the kernel then fails
    /// validation.
    pub fn param(&mut self, k: u32) -> NodeId {
        self.kernel.params = self.kernel.params.max(k.saturating_add(1));
        self.intern(Node::Param(k))
    }

    /// A constant. Constants are shared by their bits, so `0.0` and `-0.0` are two nodes.
    pub fn constant(&mut self, value: f32) -> NodeId {
        self.intern(Node::constant(value))
    }

    /// `op(a)`.
    pub fn unary(&mut self, op: UnaryOp, a: NodeId) -> NodeId {
        self.intern(Node::Unary(op, a))
    }

    /// `op(a, b)`. Operands are not reordered, even for commutative operations.
    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        self.intern(Node::Binary(op, a, b))
    }

    /// A draw from a new noise slot: slots are numbered in the order of these calls.
    pub fn noise(&mut self, dist: Distribution) -> NodeId {
        let slot = self.kernel.noise_slots;
        // Every slot has its own node, and a kernel has fewer than 2^32 nodes (see `push`), so
        // the count cannot overflow in practice.
        self.kernel.noise_slots += 1;
        self.push(Node::Noise(dist, slot))
    }

    /// Appends `node` to the outputs. A node may be written to several outputs.
    pub fn output(&mut self, node: NodeId) {
        self.kernel.outputs.push(node);
    }

    /// Returns the kernel built so far.
    pub fn finish(self) -> ElementwiseKernel {
        self.kernel
    }
}
