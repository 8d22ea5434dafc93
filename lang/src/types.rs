//! The types of the language and the kinds of models.

use std::fmt;

/// What a model outputs, which decides what a schedule may ask of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelKind {
    /// Predicts the noise ε.
    Eps,
    /// Predicts the clean sample x̂₀.
    X0,
    /// Predicts v = α ε − σ x₀.
    V,
    /// Predicts the flow velocity dx/dt.
    Velocity,
    /// Predicts the score ∇ log p.
    Score,
    /// The two-time map X(x, t, s).
    FlowMap,
    /// The average velocity u(x, t, r) of MeanFlow.
    MeanFlow,
    /// The shortcut velocity s(x, t, d) with step size d.
    Shortcut,
    /// A consistency function f(x, t) that maps any time to data.
    Consistency,
    /// Next-token logits.
    CausalLm,
    /// Logits at masked positions.
    MaskedLm,
    /// Next-token logits from k heads (multi-token prediction).
    MtpLm,
}

impl ModelKind {
    pub const ALL: &'static [ModelKind] = &[
        ModelKind::Eps,
        ModelKind::X0,
        ModelKind::V,
        ModelKind::Velocity,
        ModelKind::Score,
        ModelKind::FlowMap,
        ModelKind::MeanFlow,
        ModelKind::Shortcut,
        ModelKind::Consistency,
        ModelKind::CausalLm,
        ModelKind::MaskedLm,
        ModelKind::MtpLm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Eps => "eps",
            ModelKind::X0 => "x0",
            ModelKind::V => "v",
            ModelKind::Velocity => "velocity",
            ModelKind::Score => "score",
            ModelKind::FlowMap => "flow_map",
            ModelKind::MeanFlow => "mean_flow",
            ModelKind::Shortcut => "shortcut",
            ModelKind::Consistency => "consistency",
            ModelKind::CausalLm => "causal_lm",
            ModelKind::MaskedLm => "masked_lm",
            ModelKind::MtpLm => "mtp_lm",
        }
    }

    pub fn from_name(name: &str) -> Option<ModelKind> {
        ModelKind::ALL.iter().copied().find(|k| k.name() == name)
    }

    pub fn names() -> Vec<&'static str> {
        ModelKind::ALL.iter().map(|k| k.name()).collect()
    }

    /// A local field: it knows the direction at one time, not where to land at another.
    pub fn is_local_field(self) -> bool {
        matches!(self, ModelKind::Eps | ModelKind::X0 | ModelKind::V | ModelKind::Velocity | ModelKind::Score)
    }

    /// A two-time model that is told the target time.
    pub fn is_two_time(self) -> bool {
        matches!(self, ModelKind::FlowMap | ModelKind::MeanFlow | ModelKind::Shortcut)
    }

    pub fn is_token_model(self) -> bool {
        matches!(self, ModelKind::CausalLm | ModelKind::MaskedLm | ModelKind::MtpLm)
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a schedule asks of a model; checked against the model's kind when it is declared
/// (`model<eps>`) and again when a checkpoint is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// A continuous model with an interpolant: `predict`, `x0`, `eps`, `alpha`, ...
    Continuous,
    /// The two-time map itself: `flow(x, t, s)`.
    Flow,
    /// `jump x from t to s`: a two-time model, or a consistency model (to data).
    Jump,
    /// Next-token logits: `extend ... with SAMPLER`, `propose`, `verify`.
    NextToken,
    /// Logits at masked positions: `candidates(...)` in an unmasking step.
    Masked,
    /// Several independent next-token heads: `extend ... with heads(...)`.
    Heads,
}

impl Capability {
    pub fn accepts(self, kind: ModelKind) -> bool {
        match self {
            Capability::Continuous => !kind.is_token_model(),
            Capability::Flow => kind.is_two_time(),
            Capability::Jump => kind.is_two_time() || kind == ModelKind::Consistency,
            Capability::NextToken => matches!(kind, ModelKind::CausalLm | ModelKind::MtpLm),
            Capability::Masked => kind == ModelKind::MaskedLm,
            Capability::Heads => kind == ModelKind::MtpLm,
        }
    }

    pub fn accepted_kinds(self) -> Vec<&'static str> {
        ModelKind::ALL.iter().filter(|k| self.accepts(**k)).map(|k| k.name()).collect()
    }

    /// What the capability is, as the end of "this ... needs ...".
    pub fn describe(self) -> &'static str {
        match self {
            Capability::Continuous => "a continuous model (a field or map over noisy states)",
            Capability::Flow => "a two-time map",
            Capability::Jump => "a model that is told the target time",
            Capability::NextToken => "next-token logits",
            Capability::Masked => "logits at masked positions",
            Capability::Heads => "several independent next-token heads",
        }
    }
}

/// The type of a value.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    /// A host 64-bit integer.
    Int,
    /// A host 64-bit float.
    Float,
    /// A host bool.
    Bool,
    Str,
    /// A continuous state on the device (batch × shape, f32).
    Tensor,
    /// Token sequences on the device (batch × length).
    Tokens,
    /// A model, with its kind when declared.
    Model(Option<ModelKind>),
    /// How a time grid is spaced.
    Spacing,
    /// How new tokens are sampled.
    Sampler,
    /// Which masked positions an unmasking step commits.
    Remask,
    /// A time grid: iterating yields points, or consecutive pairs (t, s).
    Grid,
    /// A range of integers.
    Range,
    Tuple(Vec<Type>),
    /// The "type" of something already reported as an error; it matches everything, so one
    /// mistake gives one diagnostic.
    Error,
}

impl Type {
    pub fn is_error(&self) -> bool {
        matches!(self, Type::Error)
    }

    /// Int or float: a host number.
    pub fn is_host_number(&self) -> bool {
        matches!(self, Type::Int | Type::Float)
    }

    /// A number or a tensor: something elementwise arithmetic applies to.
    pub fn is_numeric(&self) -> bool {
        matches!(self, Type::Int | Type::Float | Type::Tensor)
    }

    /// Whether a value of type `self` may be used where `target` is expected (ints widen to
    /// floats; errors match everything; a declared model kind fits an open `model`).
    pub fn fits(&self, target: &Type) -> bool {
        match (self, target) {
            (Type::Error, _) | (_, Type::Error) => true,
            (Type::Int, Type::Float) => true,
            (Type::Model(_), Type::Model(None)) => true,
            (Type::Model(a), Type::Model(b)) => a == b,
            (Type::Tuple(a), Type::Tuple(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.fits(y)),
            (a, b) => a == b,
        }
    }

    /// Resolves a written type name; `None` when unknown.
    pub fn from_name(name: &str) -> Option<Type> {
        Some(match name {
            "int" => Type::Int,
            "float" => Type::Float,
            "bool" => Type::Bool,
            "string" => Type::Str,
            "tensor" => Type::Tensor,
            "tokens" => Type::Tokens,
            "model" => Type::Model(None),
            "spacing" => Type::Spacing,
            "sampler" => Type::Sampler,
            "remask" => Type::Remask,
            _ => return None,
        })
    }

    pub const NAMES: &'static [&'static str] =
        &["int", "float", "bool", "string", "tensor", "tokens", "model", "spacing", "sampler", "remask"];
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Int => f.write_str("int"),
            Type::Float => f.write_str("float"),
            Type::Bool => f.write_str("bool"),
            Type::Str => f.write_str("string"),
            Type::Tensor => f.write_str("tensor"),
            Type::Tokens => f.write_str("tokens"),
            Type::Model(None) => f.write_str("model"),
            Type::Model(Some(kind)) => write!(f, "model<{kind}>"),
            Type::Spacing => f.write_str("spacing"),
            Type::Sampler => f.write_str("sampler"),
            Type::Remask => f.write_str("remask"),
            Type::Grid => f.write_str("grid"),
            Type::Range => f.write_str("range"),
            Type::Tuple(items) => {
                f.write_str("(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(")")
            }
            Type::Error => f.write_str("{error}"),
        }
    }
}
