//! The syntax tree of a `.sched` file.
//!
//! Every node carries the byte span of its source text. Expressions also carry an [`ExprId`], dense
//! and unique within one [`SourceFile`], so later phases can attach facts to them (resolution, type)
//! in side tables instead of mutating the tree.

use crate::source::Span;

/// Index of an expression within its [`SourceFile`]; dense from zero in parse order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExprId(pub u32);

/// One parsed file: its items in source order.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub items: Vec<Item>,
    /// One past the largest [`ExprId`] used in this file.
    pub expr_count: u32,
}

#[derive(Clone, Debug)]
pub enum Item {
    Schedule(Schedule),
    Step(Step),
}

impl Item {
    pub fn name(&self) -> &Ident {
        match self {
            Item::Schedule(schedule) => &schedule.name,
            Item::Step(step) => &step.name,
        }
    }
}

/// `schedule NAME(params) { body }`: a whole sampling procedure; the unit that runs.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub doc: Vec<String>,
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Block,
    pub span: Span,
}

/// `step NAME(params) [on TYPE] { body }`: one solver step from `t` to `s` on the state `x`.
#[derive(Clone, Debug)]
pub struct Step {
    pub doc: Vec<String>,
    pub name: Ident,
    pub params: Vec<Param>,
    /// The type of the state `x` (`on tokens`); `None` means `tensor`.
    pub state: Option<TypeExpr>,
    pub body: Block,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Param {
    pub doc: Vec<String>,
    pub name: Ident,
    pub ty: TypeExpr,
    pub default: Option<Expr>,
    pub span: Span,
}

/// A type as written: `float`, `model<eps>`. Resolved by the checker.
#[derive(Clone, Debug)]
pub struct TypeExpr {
    pub name: Ident,
    pub argument: Option<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum StmtKind {
    /// `let NAME [: TYPE] = VALUE` or `let (A, B) = VALUE`.
    Let {
        pattern: LetPattern,
        ty: Option<TypeExpr>,
        value: Expr,
    },
    /// `carry NAME [: TYPE] = INIT`: a step variable that keeps its value between calls.
    Carry {
        name: Ident,
        ty: Option<TypeExpr>,
        init: Expr,
    },
    /// `for A[, B] in ITER { body }`.
    For {
        vars: Vec<Ident>,
        iter: Expr,
        body: Block,
    },
    /// `repeat N { body }`.
    Repeat {
        count: Expr,
        body: Block,
    },
    While {
        cond: Expr,
        body: Block,
    },
    /// `if C { } else if C2 { } else { }`: the conditional branches in order, then the `else` block.
    If {
        branches: Vec<(Expr, Block)>,
        else_block: Option<Block>,
    },
    Break,
    Continue,
    /// `emit VALUE [as NAME]`: make a value an output of the schedule.
    Emit {
        value: Expr,
        name: Option<Ident>,
    },
    /// `refine TARGET from T to S by STEP(args) [using MODEL]`.
    Refine {
        target: Expr,
        from: Expr,
        to: Expr,
        step: StepRef,
        using: Option<Expr>,
    },
    /// `jump TARGET from T to S [using MODEL]`.
    Jump {
        target: Expr,
        from: Expr,
        to: Expr,
        using: Option<Expr>,
    },
    /// `extend TARGET by COUNT (with SAMPLER | as mask | as noise) [using MODEL]`.
    Extend {
        target: Expr,
        count: Expr,
        how: ExtendHow,
        using: Option<Expr>,
    },
    /// `NAME = VALUE`, `NAME += VALUE`, ...
    Assign {
        target: Ident,
        op: AssignOp,
        value: Expr,
    },
    /// A call used for its effect: a step delegating to another step.
    Expr(Expr),
}

#[derive(Clone, Debug)]
pub enum LetPattern {
    Name(Ident),
    Tuple(Vec<Ident>),
}

#[derive(Clone, Debug)]
pub struct StepRef {
    pub name: Ident,
    /// `None` when written without parentheses (`by euler`).
    pub args: Option<Vec<Arg>>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ExtendHow {
    /// `with SAMPLER`: sample the new positions from the model.
    With(Expr),
    /// `as mask` / `as noise` (any other word is reported by the checker).
    As(Ident),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignOp {
    Set,
    Add,
    Sub,
    Mul,
    Div,
}

impl AssignOp {
    /// The binary operator a compound assignment applies, `None` for plain `=`.
    pub fn binary(self) -> Option<BinaryOp> {
        match self {
            AssignOp::Set => None,
            AssignOp::Add => Some(BinaryOp::Add),
            AssignOp::Sub => Some(BinaryOp::Sub),
            AssignOp::Mul => Some(BinaryOp::Mul),
            AssignOp::Div => Some(BinaryOp::Div),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub id: ExprId,
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Name(Ident),
    /// `NAME(args)`: a builtin function (steps are only called as statements).
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    /// `RECEIVER.NAME(args)`, e.g. `seq.tail(block)`.
    Method {
        receiver: Box<Expr>,
        method: Ident,
        args: Option<Vec<Arg>>,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `(a, b)`; a single parenthesised expression is not a tuple.
    Tuple(Vec<Expr>),
    /// A placeholder where the parser already reported an error.
    Error,
}

/// One argument of a call: `value`, `name = value`, or `from -> to` (grids only).
#[derive(Clone, Debug)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub arrow_to: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::Pow => "^",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge)
    }

    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::Or | BinaryOp::And)
    }
}

impl UnaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            UnaryOp::Neg => "-",
            UnaryOp::Not => "!",
        }
    }
}
