//! From source text to the syntax tree.
//!
//! Parsing runs in three stages, each of which may stop with diagnostics:
//! 1. a byte-level check (size, UTF-8) and a scan of brackets that reports unbalanced or too
//!    deeply nested delimiters with precise spans (pest alone would only say "unexpected token");
//! 2. the pest grammar (`grammar.pest`);
//! 3. the conversion of pest pairs into [`ast`](crate::ast) nodes, applying operator precedence
//!    with a Pratt parser and bounding expression depth, so that no input, however pathological,
//!    makes a later recursive pass overflow the stack.

use std::cell::{Cell, RefCell};
use std::sync::LazyLock;

use pest::Parser as _;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};

use crate::ast::*;
use crate::diagnostics::{Diagnostic, syntax};
use crate::source::{FileId, MAX_SOURCE_BYTES, Span};

#[derive(pest_derive::Parser)]
#[grammar = "grammar.pest"]
struct SchedParser;

/// The deepest bracket or block nesting accepted.
pub const MAX_NESTING: usize = 64;
/// The most operators (infix, prefix, method calls) accepted in one expression without brackets.
pub const MAX_OPERATORS: usize = 256;
/// The deepest expression tree accepted.
pub const MAX_EXPR_DEPTH: u32 = 128;

/// Decodes raw file bytes, reporting non-UTF-8 input and oversized files as diagnostics.
pub fn decode(file: FileId, bytes: &[u8]) -> Result<&str, Diagnostic> {
    if bytes.len() > MAX_SOURCE_BYTES {
        return Err(syntax::file_too_large(Span::new(file, 0, 0), bytes.len(), MAX_SOURCE_BYTES));
    }
    std::str::from_utf8(bytes)
        .map_err(|e| syntax::not_utf8(Span::new(file, e.valid_up_to(), e.valid_up_to() + 1), e.valid_up_to()))
}

/// Parses one file. On error, returns every diagnostic found (parse errors stop at the first).
pub fn parse(file: FileId, text: &str) -> Result<SourceFile, Vec<Diagnostic>> {
    if text.len() > MAX_SOURCE_BYTES {
        return Err(vec![syntax::file_too_large(Span::new(file, 0, 0), text.len(), MAX_SOURCE_BYTES)]);
    }
    check_delimiters(file, text)?;
    let mut pairs = SchedParser::parse(Rule::file, text).map_err(|e| vec![convert_pest_error(file, text, e)])?;
    let builder = Builder { file, next_id: Cell::new(0), diagnostics: RefCell::new(Vec::new()) };
    let top_level = pairs.next().map(|file_pair| file_pair.into_inner()).into_iter().flatten();
    let items: Vec<Item> = top_level
        .filter(|p| matches!(p.as_rule(), Rule::schedule_item | Rule::step_item))
        .map(|p| builder.item(p))
        .collect();
    let diagnostics = builder.diagnostics.into_inner();
    if diagnostics.is_empty() { Ok(SourceFile { items, expr_count: builder.next_id.get() }) } else { Err(diagnostics) }
}

// ---------------------------------------------------------------------------------------------
// Stage 1: delimiters.

/// Checks that `()`, `[]` and `{}` balance and nest at most [`MAX_NESTING`] deep, skipping
/// comments and string literals.
fn check_delimiters(file: FileId, text: &str) -> Result<(), Vec<Diagnostic>> {
    let bytes = text.as_bytes();
    let mut stack: Vec<(u8, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            open @ (b'(' | b'[' | b'{') => {
                stack.push((open, i));
                if stack.len() > MAX_NESTING {
                    return Err(vec![syntax::nesting_too_deep(Span::new(file, i, i + 1), MAX_NESTING)]);
                }
            }
            close @ (b')' | b']' | b'}') => match stack.pop() {
                None => return Err(vec![syntax::unmatched_close(Span::new(file, i, i + 1), close as char)]),
                Some((open, at)) if crate::diagnostics::closing_of(open as char) != close as char => {
                    return Err(vec![syntax::mismatched_close(
                        Span::new(file, at, at + 1),
                        open as char,
                        Span::new(file, i, i + 1),
                        close as char,
                    )]);
                }
                Some(_) => {}
            },
            _ => {}
        }
        i += 1;
    }
    match stack.first() {
        Some(&(open, at)) => {
            // Report the innermost unclosed bracket: it is usually the one the user forgot.
            let (open, at) = stack.last().copied().unwrap_or((open, at));
            Err(vec![syntax::unclosed_delimiter(
                Span::new(file, at, at + 1),
                open as char,
                crate::diagnostics::closing_of(open as char),
            )])
        }
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 2: pest errors as diagnostics.

fn convert_pest_error(file: FileId, text: &str, error: pest::error::Error<Rule>) -> Diagnostic {
    let position = match error.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((start, _)) => start,
    };
    let found = describe_found(text, position);
    let span = Span::new(file, position, position + found.1);
    let expected = match &error.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => describe_expected(positives),
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    syntax::unexpected_token(span, &found.0, &expected)
}

/// Names the token at `position` and its length in bytes.
fn describe_found(text: &str, position: usize) -> (String, usize) {
    let rest = text.get(position..).unwrap_or("");
    let Some(first) = rest.chars().next() else {
        return ("end of file".to_string(), 0);
    };
    if first.is_ascii_alphanumeric() || first == '_' {
        let word: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let len = word.len();
        if KEYWORDS.contains(&word.as_str()) {
            return (format!("keyword `{word}`"), len);
        }
        return (format!("`{word}`"), len);
    }
    if first == '\n' || first == '\r' {
        return ("end of line".to_string(), 1);
    }
    if first.is_control() {
        return (format!("control character U+{:04X}", first as u32), first.len_utf8());
    }
    (format!("`{first}`"), first.len_utf8())
}

const KEYWORDS: &[&str] = &[
    "schedule", "step", "let", "carry", "for", "in", "repeat", "while", "if", "else", "break", "continue", "emit",
    "refine", "jump", "extend", "from", "to", "by", "using", "with", "as", "on", "true", "false",
];

fn describe_expected(positives: &[Rule]) -> String {
    const STATEMENT_STARTS: &[Rule] = &[
        Rule::kw_let,
        Rule::kw_carry,
        Rule::kw_for,
        Rule::kw_repeat,
        Rule::kw_while,
        Rule::kw_if,
        Rule::kw_break,
        Rule::kw_continue,
        Rule::kw_emit,
        Rule::kw_refine,
        Rule::kw_jump,
        Rule::kw_extend,
    ];
    let mut names: Vec<String> = Vec::new();
    let mut push = |name: String| {
        if !names.contains(&name) {
            names.push(name);
        }
    };
    let statement = positives.iter().filter(|r| STATEMENT_STARTS.contains(r)).count() >= 3;
    if statement {
        push("a statement".into());
    }
    for rule in positives {
        if statement
            && (STATEMENT_STARTS.contains(rule) || matches!(rule, Rule::ident | Rule::expr | Rule::assign_stmt))
        {
            continue;
        }
        push(describe_rule(*rule));
    }
    match names.len() {
        0 => "something else".into(),
        1 => names.remove(0),
        n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

fn describe_rule(rule: Rule) -> String {
    let text = match rule {
        Rule::EOI => "end of file",
        Rule::schedule_item | Rule::kw_schedule => "`schedule`",
        Rule::step_item | Rule::kw_step => "`step`",
        Rule::doc => "a doc comment",
        Rule::ident => "a name",
        Rule::type_expr => "a type",
        Rule::param | Rule::param_list => "a parameter",
        Rule::block => "a block `{ ... }`",
        Rule::step_state | Rule::kw_on => "`on`",
        Rule::expr | Rule::postfix_expr | Rule::call | Rule::paren_or_tuple => "an expression",
        Rule::int | Rule::float => "a number",
        Rule::string => "a string",
        Rule::arg | Rule::arg_list => "arguments `(...)`",
        Rule::arrow => "`->`",
        Rule::assign_op => "`=`",
        Rule::let_pattern | Rule::tuple_pattern => "a name or `(a, b)`",
        Rule::method_call => "`.method(...)`",
        Rule::step_ref => "a step",
        Rule::using_clause | Rule::kw_using => "`using`",
        Rule::extend_with | Rule::kw_with => "`with`",
        Rule::extend_as | Rule::kw_as => "`as`",
        Rule::else_if | Rule::else_block | Rule::kw_else => "`else`",
        Rule::kw_from => "`from`",
        Rule::kw_to => "`to`",
        Rule::kw_by => "`by`",
        Rule::kw_in => "`in`",
        Rule::op_or
        | Rule::op_and
        | Rule::op_eq
        | Rule::op_ne
        | Rule::op_le
        | Rule::op_ge
        | Rule::op_lt
        | Rule::op_gt
        | Rule::op_add
        | Rule::op_sub
        | Rule::op_mul
        | Rule::op_div
        | Rule::op_rem
        | Rule::op_pow => "an operator",
        Rule::op_neg | Rule::op_not => "an expression",
        other => return format!("{other:?}").trim_start_matches("kw_").replace('_', " "),
    };
    text.to_string()
}

// ---------------------------------------------------------------------------------------------
// Stage 3: pairs to syntax tree.

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::op_or, Assoc::Left))
        .op(Op::infix(Rule::op_and, Assoc::Left))
        .op(Op::infix(Rule::op_eq, Assoc::Left)
            | Op::infix(Rule::op_ne, Assoc::Left)
            | Op::infix(Rule::op_lt, Assoc::Left)
            | Op::infix(Rule::op_le, Assoc::Left)
            | Op::infix(Rule::op_gt, Assoc::Left)
            | Op::infix(Rule::op_ge, Assoc::Left))
        .op(Op::infix(Rule::op_add, Assoc::Left) | Op::infix(Rule::op_sub, Assoc::Left))
        .op(Op::infix(Rule::op_mul, Assoc::Left)
            | Op::infix(Rule::op_div, Assoc::Left)
            | Op::infix(Rule::op_rem, Assoc::Left))
        .op(Op::prefix(Rule::op_neg) | Op::prefix(Rule::op_not))
        .op(Op::infix(Rule::op_pow, Assoc::Right))
});

struct Builder {
    file: FileId,
    next_id: Cell<u32>,
    diagnostics: RefCell<Vec<Diagnostic>>,
}

/// An expression under construction together with the depth of its tree.
struct Sized {
    expr: Expr,
    depth: u32,
}

impl Builder {
    /// The span of a pair without the whitespace and comments pest lets it swallow at its end.
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let start = pair.as_span().start();
        Span::new(self.file, start, start + tight_len(pair.as_str()))
    }

    fn report(&self, diagnostic: Diagnostic) {
        self.diagnostics.borrow_mut().push(diagnostic);
    }

    fn expr_node(&self, kind: ExprKind, span: Span) -> Expr {
        let id = ExprId(self.next_id.get());
        self.next_id.set(id.0 + 1);
        Expr { id, kind, span }
    }

    fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        Ident { name: pair.as_str().to_string(), span: self.span(&pair) }
    }

    fn docs(&self, inner: &mut std::iter::Peekable<Pairs<'_, Rule>>) -> Vec<String> {
        let mut docs = Vec::new();
        while let Some(pair) = inner.next_if(|p| p.as_rule() == Rule::doc) {
            let line = pair.as_str().trim_start_matches("///");
            docs.push(line.strip_prefix(' ').unwrap_or(line).to_string());
        }
        docs
    }

    fn item(&self, pair: Pair<'_, Rule>) -> Item {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner().peekable();
        let doc = self.docs(&mut inner);
        let mut name = None;
        let mut params = Vec::new();
        let mut state = None;
        let mut body = None;
        for p in inner {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(p)),
                Rule::param_list => params = p.into_inner().map(|param| self.param(param)).collect(),
                Rule::step_state => {
                    state = p.into_inner().find(|q| q.as_rule() == Rule::type_expr).map(|t| self.type_expr(t))
                }
                Rule::block => body = Some(self.block(p)),
                _ => {}
            }
        }
        // The grammar guarantees a name and a body for both item kinds.
        let name = name.unwrap_or_else(|| Ident { name: String::new(), span });
        let body = body.unwrap_or(Block { stmts: Vec::new(), span });
        if rule == Rule::schedule_item {
            Item::Schedule(Schedule { doc, name, params, body, span })
        } else {
            Item::Step(Step { doc, name, params, state, body, span })
        }
    }

    fn param(&self, pair: Pair<'_, Rule>) -> Param {
        let span = self.span(&pair);
        let mut inner = pair.into_inner().peekable();
        let doc = self.docs(&mut inner);
        let mut name = None;
        let mut ty = None;
        let mut default = None;
        for p in inner {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(p)),
                Rule::type_expr => ty = Some(self.type_expr(p)),
                Rule::expr => default = Some(self.expr(p)),
                _ => {}
            }
        }
        let name = name.unwrap_or_else(|| Ident { name: String::new(), span });
        let ty = ty.unwrap_or_else(|| TypeExpr { name: name.clone(), argument: None, span });
        Param { doc, name, ty, default, span }
    }

    fn type_expr(&self, pair: Pair<'_, Rule>) -> TypeExpr {
        let span = self.span(&pair);
        let mut idents = pair.into_inner().map(|p| self.ident(p));
        let name = idents.next().unwrap_or_else(|| Ident { name: String::new(), span });
        TypeExpr { name, argument: idents.next(), span }
    }

    fn block(&self, pair: Pair<'_, Rule>) -> Block {
        let span = self.span(&pair);
        Block { stmts: pair.into_inner().map(|p| self.stmt(p)).collect(), span }
    }

    fn stmt(&self, pair: Pair<'_, Rule>) -> Stmt {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner().filter(|p| !is_keyword(p.as_rule()));
        let kind = match rule {
            Rule::let_stmt => {
                let pattern = self.let_pattern(inner.next());
                let mut ty = None;
                let mut value = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::type_expr => ty = Some(self.type_expr(p)),
                        _ => value = Some(self.expr(p)),
                    }
                }
                StmtKind::Let { pattern, ty, value: self.or_error(value, span) }
            }
            Rule::carry_stmt => {
                let name = self.ident_or(inner.next(), span);
                let mut ty = None;
                let mut init = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::type_expr => ty = Some(self.type_expr(p)),
                        _ => init = Some(self.expr(p)),
                    }
                }
                StmtKind::Carry { name, ty, init: self.or_error(init, span) }
            }
            Rule::for_stmt => {
                let mut vars = Vec::new();
                let mut iter = None;
                let mut body = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::ident => vars.push(self.ident(p)),
                        Rule::expr => iter = Some(self.expr(p)),
                        _ => body = Some(self.block(p)),
                    }
                }
                StmtKind::For { vars, iter: self.or_error(iter, span), body: self.block_or_empty(body, span) }
            }
            Rule::repeat_stmt => {
                let count = inner.next().map(|p| self.expr(p));
                let body = inner.next().map(|p| self.block(p));
                StmtKind::Repeat { count: self.or_error(count, span), body: self.block_or_empty(body, span) }
            }
            Rule::while_stmt => {
                let cond = inner.next().map(|p| self.expr(p));
                let body = inner.next().map(|p| self.block(p));
                StmtKind::While { cond: self.or_error(cond, span), body: self.block_or_empty(body, span) }
            }
            Rule::if_stmt => {
                let mut branches = Vec::new();
                let mut else_block = None;
                let cond = inner.next().map(|p| self.expr(p));
                let then_block = inner.next().map(|p| self.block(p));
                branches.push((self.or_error(cond, span), self.block_or_empty(then_block, span)));
                for p in inner {
                    match p.as_rule() {
                        Rule::else_if => {
                            let mut parts = p.into_inner().filter(|q| !is_keyword(q.as_rule()));
                            let cond = parts.next().map(|q| self.expr(q));
                            let block = parts.next().map(|q| self.block(q));
                            branches.push((self.or_error(cond, span), self.block_or_empty(block, span)));
                        }
                        _ => else_block = p.into_inner().find(|q| q.as_rule() == Rule::block).map(|q| self.block(q)),
                    }
                }
                StmtKind::If { branches, else_block }
            }
            Rule::break_stmt => StmtKind::Break,
            Rule::continue_stmt => StmtKind::Continue,
            Rule::emit_stmt => {
                let value = inner.next().map(|p| self.expr(p));
                let name = inner.next().map(|p| self.ident(p));
                StmtKind::Emit { value: self.or_error(value, span), name }
            }
            Rule::refine_stmt => {
                let target = self.or_error(inner.next().map(|p| self.expr(p)), span);
                let from = self.or_error(inner.next().map(|p| self.expr(p)), span);
                let to = self.or_error(inner.next().map(|p| self.expr(p)), span);
                let step = match inner.next() {
                    Some(p) => self.step_ref(p),
                    None => StepRef { name: Ident { name: String::new(), span }, args: None, span },
                };
                let using = inner.next().map(|p| self.using(p));
                StmtKind::Refine { target, from, to, step, using: using.flatten() }
            }
            Rule::jump_stmt => {
                let target = self.or_error(inner.next().map(|p| self.expr(p)), span);
                let from = self.or_error(inner.next().map(|p| self.expr(p)), span);
                let to = self.or_error(inner.next().map(|p| self.expr(p)), span);
                let using = inner.next().map(|p| self.using(p));
                StmtKind::Jump { target, from, to, using: using.flatten() }
            }
            Rule::extend_stmt => {
                let target = self.or_error(inner.next().map(|p| self.expr(p)), span);
                let count = self.or_error(inner.next().map(|p| self.expr(p)), span);
                let mut how = ExtendHow::As(Ident { name: String::new(), span });
                let mut using = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::extend_with => {
                            let value = p.into_inner().find(|q| q.as_rule() == Rule::expr).map(|q| self.expr(q));
                            how = ExtendHow::With(self.or_error(value, span));
                        }
                        Rule::extend_as => {
                            if let Some(word) = p.into_inner().find(|q| q.as_rule() == Rule::ident) {
                                how = ExtendHow::As(self.ident(word));
                            }
                        }
                        _ => using = self.using(p),
                    }
                }
                StmtKind::Extend { target, count, how, using }
            }
            Rule::assign_stmt => {
                let target = self.ident_or(inner.next(), span);
                let op = match inner.next().map(|p| p.as_str().to_string()).as_deref() {
                    Some("+=") => AssignOp::Add,
                    Some("-=") => AssignOp::Sub,
                    Some("*=") => AssignOp::Mul,
                    Some("/=") => AssignOp::Div,
                    _ => AssignOp::Set,
                };
                let value = inner.next().map(|p| self.expr(p));
                StmtKind::Assign { target, op, value: self.or_error(value, span) }
            }
            _ => {
                let value = inner.next().map(|p| self.expr(p));
                StmtKind::Expr(self.or_error(value, span))
            }
        };
        Stmt { kind, span }
    }

    fn let_pattern(&self, pair: Option<Pair<'_, Rule>>) -> LetPattern {
        let Some(pair) = pair else {
            return LetPattern::Tuple(Vec::new());
        };
        match pair.into_inner().next() {
            Some(p) if p.as_rule() == Rule::ident => LetPattern::Name(self.ident(p)),
            Some(p) => LetPattern::Tuple(p.into_inner().map(|q| self.ident(q)).collect()),
            None => LetPattern::Tuple(Vec::new()),
        }
    }

    fn step_ref(&self, pair: Pair<'_, Rule>) -> StepRef {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let name = self.ident_or(inner.next(), span);
        let args = inner.next().map(|p| self.args(p));
        StepRef { name, args, span }
    }

    fn using(&self, pair: Pair<'_, Rule>) -> Option<Expr> {
        pair.into_inner().find(|p| p.as_rule() == Rule::expr).map(|p| self.expr(p))
    }

    fn ident_or(&self, pair: Option<Pair<'_, Rule>>, span: Span) -> Ident {
        pair.map(|p| self.ident(p)).unwrap_or_else(|| Ident { name: String::new(), span })
    }

    fn or_error(&self, expr: Option<Expr>, span: Span) -> Expr {
        expr.unwrap_or_else(|| self.expr_node(ExprKind::Error, span))
    }

    fn block_or_empty(&self, block: Option<Block>, span: Span) -> Block {
        block.unwrap_or(Block { stmts: Vec::new(), span })
    }

    fn args(&self, pair: Pair<'_, Rule>) -> Vec<Arg> {
        pair.into_inner()
            .map(|arg| {
                let span = self.span(&arg);
                let mut name = None;
                let mut exprs = Vec::new();
                for p in arg.into_inner() {
                    match p.as_rule() {
                        Rule::ident => name = Some(self.ident(p)),
                        Rule::expr => exprs.push(self.expr(p)),
                        _ => {}
                    }
                }
                let mut exprs = exprs.into_iter();
                let value = self.or_error(exprs.next(), span);
                Arg { name, value, arrow_to: exprs.next(), span }
            })
            .collect()
    }

    /// Builds an expression from an `expr` pair, enforcing the operator and depth limits.
    fn expr(&self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let operators = pair
            .clone()
            .into_inner()
            .map(|p| match p.as_rule() {
                Rule::postfix_expr => p.into_inner().filter(|q| q.as_rule() == Rule::method_call).count(),
                _ => 1,
            })
            .sum::<usize>();
        if operators > MAX_OPERATORS {
            self.report(syntax::expression_too_long(span, MAX_OPERATORS));
            return self.expr_node(ExprKind::Error, span);
        }
        let sized = PRATT
            .map_primary(|p| self.postfix(p))
            .map_prefix(|op, operand| {
                let span = self.span(&op).to(operand.expr.span);
                let op = if op.as_rule() == Rule::op_neg { UnaryOp::Neg } else { UnaryOp::Not };
                self.bounded(ExprKind::Unary { op, operand: Box::new(operand.expr) }, span, operand.depth + 1)
            })
            .map_infix(|lhs, op, rhs| {
                let span = lhs.expr.span.to(rhs.expr.span);
                let depth = lhs.depth.max(rhs.depth) + 1;
                let op = binary_op(op.as_rule());
                self.bounded(ExprKind::Binary { op, lhs: Box::new(lhs.expr), rhs: Box::new(rhs.expr) }, span, depth)
            })
            .parse(pair.into_inner());
        sized.expr
    }

    /// Makes a node unless it exceeds [`MAX_EXPR_DEPTH`], in which case it reports and returns an
    /// error node (depth 0) so the tree stops growing.
    fn bounded(&self, kind: ExprKind, span: Span, depth: u32) -> Sized {
        if depth > MAX_EXPR_DEPTH {
            if !self.diagnostics.borrow().iter().any(|d| d.code == crate::diagnostics::Code::ExpressionTooLong) {
                self.report(syntax::expression_too_long(span, MAX_EXPR_DEPTH as usize));
            }
            return Sized { expr: self.expr_node(ExprKind::Error, span), depth: 0 };
        }
        Sized { expr: self.expr_node(kind, span), depth }
    }

    fn postfix(&self, pair: Pair<'_, Rule>) -> Sized {
        let mut inner = pair.into_inner();
        let Some(first) = inner.next() else {
            return Sized { expr: self.expr_node(ExprKind::Error, Span::new(self.file, 0, 0)), depth: 0 };
        };
        let mut current = self.primary(first);
        for method in inner {
            let span = current.expr.span.to(self.span(&method));
            let mut parts = method.into_inner();
            let name = self.ident_or(parts.next(), span);
            let args = parts.next().map(|p| self.args(p));
            let depth = current.depth + 1;
            current =
                self.bounded(ExprKind::Method { receiver: Box::new(current.expr), method: name, args }, span, depth);
        }
        current
    }

    fn primary(&self, pair: Pair<'_, Rule>) -> Sized {
        let span = self.span(&pair);
        let leaf = |kind| Sized { expr: self.expr_node(kind, span), depth: 1 };
        match pair.as_rule() {
            Rule::int => match pair.as_str().parse::<i64>() {
                Ok(v) => leaf(ExprKind::Int(v)),
                Err(_) => {
                    self.report(syntax::integer_too_large(span));
                    leaf(ExprKind::Error)
                }
            },
            // The grammar only admits digit strings with an optional fraction and exponent, which
            // always parse; an out-of-range exponent parses to infinity, which the checker accepts.
            Rule::float => leaf(ExprKind::Float(pair.as_str().parse::<f64>().unwrap_or(f64::INFINITY))),
            Rule::string => {
                let inner = pair.into_inner().next().map(|p| (p.as_str(), self.span(&p)));
                let (raw, raw_span) = inner.unwrap_or(("", span));
                leaf(ExprKind::Str(self.unescape(raw, raw_span)))
            }
            Rule::kw_true => leaf(ExprKind::Bool(true)),
            Rule::kw_false => leaf(ExprKind::Bool(false)),
            Rule::ident => leaf(ExprKind::Name(self.ident(pair))),
            Rule::call => {
                let mut inner = pair.into_inner();
                let callee = self.ident_or(inner.next(), span);
                let args = inner.next().map(|p| self.args(p)).unwrap_or_default();
                leaf(ExprKind::Call { callee, args })
            }
            Rule::paren_or_tuple => {
                let mut items: Vec<Expr> = pair.into_inner().map(|p| self.expr(p)).collect();
                if items.len() == 1 {
                    let mut expr = items.remove(0);
                    // Keep the parentheses in the span so diagnostics underline what was written.
                    expr.span = span;
                    Sized { expr, depth: 1 }
                } else {
                    leaf(ExprKind::Tuple(items))
                }
            }
            _ => leaf(ExprKind::Error),
        }
    }

    fn unescape(&self, raw: &str, span: Span) -> String {
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((j, other)) => {
                    let start = span.start as usize + i;
                    let end = span.start as usize + j + other.len_utf8();
                    self.report(syntax::invalid_escape(Span::new(self.file, start, end), &format!("\\{other}")));
                }
                None => {}
            }
        }
        out
    }
}

/// The length of `text` without trailing whitespace and trailing `//` comments.
fn tight_len(text: &str) -> usize {
    let mut end = text.len();
    loop {
        end = text[..end].trim_end().len();
        let line_start = text[..end].rfind('\n').map_or(0, |i| i + 1);
        match comment_start(&text[line_start..end]) {
            Some(offset) => end = line_start + offset,
            None => return end,
        }
    }
}

/// Where a `//` comment starts in one line, ignoring `//` inside string literals.
fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn binary_op(rule: Rule) -> BinaryOp {
    match rule {
        Rule::op_or => BinaryOp::Or,
        Rule::op_and => BinaryOp::And,
        Rule::op_eq => BinaryOp::Eq,
        Rule::op_ne => BinaryOp::Ne,
        Rule::op_lt => BinaryOp::Lt,
        Rule::op_le => BinaryOp::Le,
        Rule::op_gt => BinaryOp::Gt,
        Rule::op_ge => BinaryOp::Ge,
        Rule::op_add => BinaryOp::Add,
        Rule::op_sub => BinaryOp::Sub,
        Rule::op_mul => BinaryOp::Mul,
        Rule::op_div => BinaryOp::Div,
        Rule::op_rem => BinaryOp::Rem,
        _ => BinaryOp::Pow,
    }
}

fn is_keyword(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::kw_schedule
            | Rule::kw_step
            | Rule::kw_on
            | Rule::kw_let
            | Rule::kw_carry
            | Rule::kw_for
            | Rule::kw_in
            | Rule::kw_repeat
            | Rule::kw_while
            | Rule::kw_if
            | Rule::kw_else
            | Rule::kw_break
            | Rule::kw_continue
            | Rule::kw_emit
            | Rule::kw_refine
            | Rule::kw_jump
            | Rule::kw_extend
            | Rule::kw_from
            | Rule::kw_to
            | Rule::kw_by
            | Rule::kw_using
            | Rule::kw_with
            | Rule::kw_as
    )
}
