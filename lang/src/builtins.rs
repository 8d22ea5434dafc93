//! The builtin functions and constants: one table that drives the checker, the documentation
//! test and (later) lowering.

use crate::types::{Capability, Type};

/// The type a builtin parameter accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    Int,
    Float,
    Bool,
    Str,
    Tensor,
    Tokens,
    /// A tensor or a host number (elementwise math).
    Numeric,
    /// A time: a host number, or a tensor of per-position times.
    Time,
    /// Tokens or a sequence tensor.
    Sequence,
    Model,
    Spacing,
    Sampler,
    Remask,
}

impl ParamType {
    pub fn accepts(self, ty: &Type) -> bool {
        match self {
            _ if ty.is_error() => true,
            ParamType::Int => *ty == Type::Int,
            ParamType::Float => ty.is_host_number(),
            ParamType::Bool => *ty == Type::Bool,
            ParamType::Str => *ty == Type::Str,
            ParamType::Tensor => *ty == Type::Tensor,
            ParamType::Tokens => *ty == Type::Tokens,
            ParamType::Numeric | ParamType::Time => ty.is_numeric(),
            ParamType::Sequence => matches!(ty, Type::Tokens | Type::Tensor),
            ParamType::Model => matches!(ty, Type::Model(_)),
            ParamType::Spacing => *ty == Type::Spacing,
            ParamType::Sampler => *ty == Type::Sampler,
            ParamType::Remask => *ty == Type::Remask,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::Str => "string",
            ParamType::Tensor => "tensor",
            ParamType::Tokens => "tokens",
            ParamType::Numeric => "float or tensor",
            ParamType::Time => "time (float or tensor)",
            ParamType::Sequence => "tokens or tensor",
            ParamType::Model => "model",
            ParamType::Spacing => "spacing",
            ParamType::Sampler => "sampler",
            ParamType::Remask => "remask",
        }
    }
}

/// A default value of a builtin parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DefaultValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// An option value written by name, e.g. `greedy`.
    Named(&'static str),
    /// The argument may be left out and means "absent" (e.g. the second bound of `range`).
    Absent,
}

#[derive(Clone, Copy, Debug)]
pub struct BuiltinParam {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: Option<DefaultValue>,
}

/// How the result type follows from the arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Returns {
    Int,
    Float,
    Bool,
    Tensor,
    Tokens,
    Model,
    Spacing,
    Sampler,
    Remask,
    Grid,
    Range,
    /// `(tensor, tensor)`.
    TensorPair,
    /// `(tokens, tensor)`.
    TokensAndTensor,
    /// A tensor if any `Numeric`/`Time` argument is a tensor, else a float.
    NumericLikeArgs,
}

/// Where a builtin may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    Anywhere,
    /// Needs a step's model and times.
    StepOnly,
    /// Needs the whole schedule (sequences, several models).
    ScheduleOnly,
}

/// What a builtin is for; groups the reference in docs/language.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Math,
    Noise,
    Reduction,
    Model,
    Grid,
    Spacing,
    Sampler,
    Remask,
    Sequence,
    ModelWrapper,
}

#[derive(Clone, Copy, Debug)]
pub struct Builtin {
    pub name: &'static str,
    pub params: &'static [BuiltinParam],
    /// The last parameter may repeat (`times(1, 0.5, 0)`).
    pub variadic: bool,
    pub returns: Returns,
    pub context: Context,
    /// What it asks of the model it runs with (steps only).
    pub needs: Option<Capability>,
    /// Whether it evaluates the model (counted as one model evaluation, NFE).
    pub calls_model: bool,
    /// Reading the result on the host waits for the device (reported by the compiler).
    pub syncs: bool,
    pub group: Group,
    pub doc: &'static str,
}

impl Builtin {
    /// Whether the bare name (without parentheses) denotes a call with default arguments:
    /// true for option values such as `uniform`, `greedy`, `karras`.
    pub fn callable_without_parens(&self) -> bool {
        matches!(self.returns, Returns::Spacing | Returns::Sampler | Returns::Remask)
            && self.params.iter().all(|p| p.default.is_some())
    }
}

const fn p(name: &'static str, ty: ParamType) -> BuiltinParam {
    BuiltinParam { name, ty, default: None }
}

const fn d(name: &'static str, ty: ParamType, default: DefaultValue) -> BuiltinParam {
    BuiltinParam { name, ty, default: Some(default) }
}

const X: BuiltinParam = p("x", ParamType::Numeric);
/// diffusers DDIM's `prev_timestep = t - N // n` instead of the next grid point (a compatibility
/// option: it is only right for `leading` spacing, notes/samplers.md §7.3).
const STRIDE: BuiltinParam = d("ddim_stride", ParamType::Bool, DefaultValue::Bool(false));
const STATE: BuiltinParam = p("x", ParamType::Tensor);
const TIME: BuiltinParam = p("t", ParamType::Time);

macro_rules! builtin {
    ($name:literal, [$($param:expr),*], $returns:ident, $context:ident, $group:ident, $doc:literal) => {
        Builtin { name: $name, params: &[$($param),*], variadic: false, returns: Returns::$returns,
                  context: Context::$context, needs: None, calls_model: false, syncs: false, group: Group::$group, doc: $doc }
    };
}

macro_rules! math1 {
    ($name:literal, $doc:literal) => {
        builtin!($name, [X], NumericLikeArgs, Anywhere, Math, $doc)
    };
}

const fn needs(mut b: Builtin, capability: Capability) -> Builtin {
    b.needs = Some(capability);
    b
}

/// A builtin that evaluates the step's model.
const fn calls(mut b: Builtin, capability: Capability) -> Builtin {
    b.needs = Some(capability);
    b.calls_model = true;
    b
}

const fn syncs(mut b: Builtin) -> Builtin {
    b.syncs = true;
    b
}

const fn variadic(mut b: Builtin) -> Builtin {
    b.variadic = true;
    b
}

/// Every builtin function.
pub const BUILTINS: &[Builtin] = &[
    // Elementwise math on host numbers and tensors.
    math1!("sqrt", "Square root."),
    math1!("exp", "e to the power x."),
    math1!("log", "Natural logarithm."),
    math1!("expm1", "exp(x) - 1, accurate near 0."),
    math1!("log1p", "log(1 + x), accurate near 0."),
    math1!("sin", "Sine."),
    math1!("cos", "Cosine."),
    math1!("tan", "Tangent."),
    math1!("tanh", "Hyperbolic tangent."),
    math1!("atan", "Arc tangent."),
    math1!("abs", "Absolute value."),
    math1!("sigmoid", "1 / (1 + exp(-x))."),
    math1!("floor", "Largest integer value not above x (as a float)."),
    math1!("ceil", "Smallest integer value not below x (as a float)."),
    builtin!(
        "min",
        [p("a", ParamType::Numeric), p("b", ParamType::Numeric)],
        NumericLikeArgs,
        Anywhere,
        Math,
        "The smaller of a and b."
    ),
    builtin!(
        "max",
        [p("a", ParamType::Numeric), p("b", ParamType::Numeric)],
        NumericLikeArgs,
        Anywhere,
        Math,
        "The larger of a and b."
    ),
    builtin!(
        "clamp",
        [X, p("lo", ParamType::Numeric), p("hi", ParamType::Numeric)],
        NumericLikeArgs,
        Anywhere,
        Math,
        "x limited to [lo, hi]."
    ),
    builtin!("round", [p("x", ParamType::Float)], Int, Anywhere, Math, "The nearest integer (halves away from zero)."),
    builtin!("int", [p("x", ParamType::Float)], Int, Anywhere, Math, "x rounded toward zero."),
    builtin!("float", [p("x", ParamType::Float)], Float, Anywhere, Math, "x as a float."),
    // Noise and constant tensors, shaped like the state (in a step) or the model's input (in a schedule).
    builtin!(
        "gaussian",
        [],
        Tensor,
        Anywhere,
        Noise,
        "Standard normal noise, from the run's counter-based random stream."
    ),
    builtin!("uniform_noise", [], Tensor, Anywhere, Noise, "Uniform noise on [0, 1), from the run's random stream."),
    builtin!("zeros", [], Tensor, Anywhere, Noise, "A tensor of zeros."),
    builtin!("ones", [], Tensor, Anywhere, Noise, "A tensor of ones."),
    builtin!(
        "positions",
        [],
        Tensor,
        Anywhere,
        Noise,
        "The index of each position along the sequence axis (0, 1, ...), for per-position times (diffusion forcing)."
    ),
    // Reductions to host numbers (the host waits for the device).
    syncs(builtin!("rms", [STATE], Float, Anywhere, Reduction, "Root mean square over all elements.")),
    syncs(builtin!("mean", [STATE], Float, Anywhere, Reduction, "Mean over all elements.")),
    syncs(builtin!("norm", [STATE], Float, Anywhere, Reduction, "Euclidean norm over all elements.")),
    syncs(builtin!("max_abs", [STATE], Float, Anywhere, Reduction, "Largest absolute value.")),
    // The step's model and its interpolant (alpha(t) x0 + sigma(t) eps).
    calls(
        builtin!(
            "predict",
            [STATE, TIME],
            TensorPair,
            StepOnly,
            Model,
            "One model call at (x, t), converted to the pair (x̂₀, ε̂), whatever the model outputs."
        ),
        Capability::Continuous,
    ),
    calls(builtin!("x0", [STATE, TIME], Tensor, StepOnly, Model, "The model's x̂₀ at (x, t)."), Capability::Continuous),
    calls(builtin!("eps", [STATE, TIME], Tensor, StepOnly, Model, "The model's ε̂ at (x, t)."), Capability::Continuous),
    calls(
        builtin!("velocity", [STATE, TIME], Tensor, StepOnly, Model, "The flow velocity dx/dt at (x, t)."),
        Capability::Continuous,
    ),
    calls(
        builtin!(
            "flow",
            [STATE, TIME, p("s", ParamType::Time)],
            Tensor,
            StepOnly,
            Model,
            "The two-time map: where x at time t lands at time s."
        ),
        Capability::Flow,
    ),
    needs(
        builtin!(
            "alpha",
            [TIME],
            NumericLikeArgs,
            StepOnly,
            Model,
            "The signal scale α(t) of the model's interpolant."
        ),
        Capability::Continuous,
    ),
    needs(
        builtin!("sigma", [TIME], NumericLikeArgs, StepOnly, Model, "The noise scale σ(t) of the model's interpolant."),
        Capability::Continuous,
    ),
    needs(
        builtin!(
            "lambda",
            [TIME],
            NumericLikeArgs,
            StepOnly,
            Model,
            "The log signal-to-noise ratio log(α(t)/σ(t)); +inf at t = 0."
        ),
        Capability::Continuous,
    ),
    // Grids of times, from 1 (noise) to 0 (data).
    builtin!(
        "grid",
        [
            p("range", ParamType::Float),
            p("steps", ParamType::Int),
            d("spacing", ParamType::Spacing, DefaultValue::Named("uniform"))
        ],
        Grid,
        Anywhere,
        Grid,
        "`steps + 1` times from `a` to `b` (written `a -> b`), spaced by `spacing`; iterate pairs with `for t, s in ...`."
    ),
    variadic(builtin!(
        "times",
        [p("t", ParamType::Float)],
        Grid,
        Anywhere,
        Grid,
        "An explicit grid: `times(1, 0.6, 0.3, 0)`."
    )),
    builtin!(
        "range",
        [p("a", ParamType::Int), d("b", ParamType::Int, DefaultValue::Absent)],
        Range,
        Anywhere,
        Grid,
        "The integers 0..a (one argument) or a..b (two), end excluded."
    ),
    // Spacings of grid(...).
    builtin!("uniform", [], Spacing, Anywhere, Spacing, "Evenly spaced in t."),
    builtin!("quadratic", [], Spacing, Anywhere, Spacing, "Evenly spaced in sqrt(t): denser near the data."),
    builtin!("cosine", [], Spacing, Anywhere, Spacing, "t = 1 - cos(u π/2) for evenly spaced u."),
    builtin!(
        "karras",
        [d("rho", ParamType::Float, DefaultValue::Float(7.0))],
        Spacing,
        Anywhere,
        Spacing,
        "Karras et al.: evenly spaced in κ^(1/ρ), κ = σ/α, between the model's κ range."
    ),
    builtin!("exponential", [], Spacing, Anywhere, Spacing, "Evenly spaced in log κ."),
    builtin!("logsnr", [], Spacing, Anywhere, Spacing, "Evenly spaced in log-SNR λ (DPM-Solver's `lu_lambdas`)."),
    builtin!(
        "shift",
        [p("k", ParamType::Float)],
        Spacing,
        Anywhere,
        Spacing,
        "Uniform, then t -> k t / (1 + (k - 1) t) (SD3, Flux)."
    ),
    builtin!(
        "leading",
        [
            d("offset", ParamType::Int, DefaultValue::Int(1)),
            d("train_steps", ParamType::Int, DefaultValue::Int(1000)),
            STRIDE
        ],
        Spacing,
        Anywhere,
        Spacing,
        "diffusers' `leading` spacing over the discrete training table."
    ),
    builtin!(
        "trailing",
        [d("train_steps", ParamType::Int, DefaultValue::Int(1000)), STRIDE],
        Spacing,
        Anywhere,
        Spacing,
        "diffusers' `trailing` spacing over the discrete training table."
    ),
    builtin!(
        "linspace",
        [d("train_steps", ParamType::Int, DefaultValue::Int(1000)), STRIDE],
        Spacing,
        Anywhere,
        Spacing,
        "diffusers' `linspace` spacing over the discrete training table."
    ),
    // Token samplers.
    builtin!("greedy", [], Sampler, Anywhere, Sampler, "The most likely token."),
    builtin!(
        "sample",
        [
            d("temperature", ParamType::Float, DefaultValue::Float(1.0)),
            d("top_k", ParamType::Int, DefaultValue::Int(0)),
            d("top_p", ParamType::Float, DefaultValue::Float(1.0)),
            d("min_p", ParamType::Float, DefaultValue::Float(0.0))
        ],
        Sampler,
        Anywhere,
        Sampler,
        "Sampling after temperature, top-k, top-p and min-p (in Hugging Face's order); 0 disables top-k."
    ),
    builtin!(
        "heads",
        [d("temperature", ParamType::Float, DefaultValue::Float(1.0))],
        Sampler,
        Anywhere,
        Sampler,
        "Each new position sampled independently from its own head of a multi-token model, in one call."
    ),
    // Remasking policies of unmasking steps.
    builtin!(
        "posterior",
        [],
        Remask,
        Anywhere,
        Remask,
        "Each masked position stays masked with probability s/t (MDLM, BD3-LM)."
    ),
    builtin!(
        "confidence",
        [],
        Remask,
        Anywhere,
        Remask,
        "Commit the most confident candidates; the count follows the time grid exactly (LLaDA)."
    ),
    builtin!(
        "random",
        [],
        Remask,
        Anywhere,
        Remask,
        "Commit randomly chosen candidates; the count follows the time grid exactly (LLaDA)."
    ),
    builtin!(
        "first_hitting",
        [],
        Remask,
        Anywhere,
        Remask,
        "Commit exactly one uniformly chosen position per step (BD3-LM)."
    ),
    builtin!(
        "threshold",
        [d("p", ParamType::Float, DefaultValue::Float(0.9))],
        Remask,
        Anywhere,
        Remask,
        "Commit every candidate with probability above p, and at least one (Fast-dLLM)."
    ),
    // Sequences.
    builtin!("prompt", [], Tokens, ScheduleOnly, Sequence, "The prompt tokens given to the run (empty if none)."),
    builtin!(
        "length",
        [p("seq", ParamType::Sequence)],
        Int,
        ScheduleOnly,
        Sequence,
        "The number of positions of a sequence (of tokens: of the shortest row still generating)."
    ),
    syncs(builtin!(
        "ended",
        [p("seq", ParamType::Tokens)],
        Bool,
        ScheduleOnly,
        Sequence,
        "True when every row has produced its end token."
    )),
    syncs(builtin!(
        "settled",
        [p("seq", ParamType::Tokens)],
        Bool,
        ScheduleOnly,
        Sequence,
        "True when no position of seq is a guess that a Jacobi refinement may still change."
    )),
    builtin!(
        "propose",
        [
            p("model", ParamType::Model),
            p("seq", ParamType::Tokens),
            p("k", ParamType::Int),
            d("sampler", ParamType::Sampler, DefaultValue::Named("greedy"))
        ],
        Tokens,
        ScheduleOnly,
        Sequence,
        "k draft tokens after seq, sampled one by one from `model`."
    ),
    builtin!(
        "verify",
        [
            p("model", ParamType::Model),
            p("seq", ParamType::Tokens),
            p("draft", ParamType::Tokens),
            d("sampler", ParamType::Sampler, DefaultValue::Named("greedy"))
        ],
        Tokens,
        ScheduleOnly,
        Sequence,
        "seq extended by the accepted prefix of `draft` and one token from `model` (speculative decoding)."
    ),
    calls(
        builtin!(
            "candidates",
            [
                p("x", ParamType::Tokens),
                TIME,
                d("temperature", ParamType::Float, DefaultValue::Float(0.0)),
                d("cfg", ParamType::Float, DefaultValue::Float(0.0))
            ],
            TokensAndTensor,
            StepOnly,
            Sequence,
            "One masked-model call: a candidate token at every position and its probability (the confidence); with `cfg > 0`, LLaDA's guidance: a second call with the prompt masked, logits un + (cfg + 1)(cond - un)."
        ),
        Capability::Masked,
    ),
    calls(
        builtin!(
            "repredict",
            [p("x", ParamType::Tokens)],
            Tokens,
            StepOnly,
            Sequence,
            "One causal-model call: every position of the window re-predicted greedily from the tokens before it (a Jacobi iteration)."
        ),
        Capability::NextToken,
    ),
    builtin!(
        "commit",
        [
            p("x", ParamType::Tokens),
            p("candidates", ParamType::Tokens),
            p("confidence", ParamType::Tensor),
            p("keep_masked", ParamType::Float),
            p("policy", ParamType::Remask)
        ],
        Tokens,
        StepOnly,
        Sequence,
        "x with some masked positions replaced by their candidates; about `keep_masked` of them stay masked."
    ),
    // Model wrappers.
    builtin!(
        "cfg",
        [p("model", ParamType::Model), p("scale", ParamType::Float), p("label", ParamType::Int)],
        Model,
        Anywhere,
        ModelWrapper,
        "Classifier-free guidance: uncond + scale (cond - uncond), two calls per evaluation."
    ),
    builtin!(
        "condition",
        [p("model", ParamType::Model), p("label", ParamType::Int)],
        Model,
        Anywhere,
        ModelWrapper,
        "The model conditioned on a class label."
    ),
];

/// Named constants.
pub const CONSTANTS: &[(&str, f64, &str)] =
    &[("pi", std::f64::consts::PI, "π."), ("inf", f64::INFINITY, "Positive infinity.")];

pub fn lookup(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

pub fn constant(name: &str) -> Option<f64> {
    CONSTANTS.iter().find(|(n, _, _)| *n == name).map(|(_, v, _)| *v)
}
