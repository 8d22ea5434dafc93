//! Every diagnostic the front end can report, as plain data.
//!
//! A diagnostic is a [`Code`] (stable, documented, used by the golden tests), a message, labelled
//! spans and a help line that tells the user what to do. The constructors below are the only place
//! where front-end messages are written, so wording stays consistent and every code is reachable
//! from one file. Rendering (colours, widths) is the caller's business: [`Diagnostic::to_miette`]
//! turns one into a `miette::Diagnostic` the CLI or a test can print.

use std::fmt;

use crate::source::{SourceMap, Span};

macro_rules! codes {
    ($($variant:ident => $text:literal, $summary:literal;)*) => {
        /// The stable identity of a diagnostic.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($variant,)* }

        impl Code {
            /// Every code, in declaration order (the golden tests check each has an example).
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as printed, e.g. `sched::type::jump_needs_two_time_model`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text,)* }
            }

            /// One line saying when the code is reported.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary,)* }
            }
        }
    };
}

codes! {
    // Reading and parsing.
    NotUtf8 => "sched::syntax::not_utf8", "the file is not UTF-8 text";
    FileTooLarge => "sched::syntax::file_too_large", "the file is larger than the front end accepts";
    UnexpectedToken => "sched::syntax::unexpected_token", "the parser met a token it did not expect";
    UnbalancedDelimiter => "sched::syntax::unbalanced_delimiter", "a bracket is never closed or closes nothing";
    NestingTooDeep => "sched::syntax::nesting_too_deep", "brackets or blocks are nested too deeply";
    ExpressionTooLong => "sched::syntax::expression_too_long", "one expression has too many operators";
    IntegerTooLarge => "sched::syntax::integer_too_large", "an integer literal does not fit in 64 bits";
    InvalidEscape => "sched::syntax::invalid_escape", "a string literal has an unknown escape";
    // Names.
    DuplicateItem => "sched::resolve::duplicate_item", "two schedules or steps have the same name";
    DuplicateParam => "sched::resolve::duplicate_param", "two parameters of one item have the same name";
    UnknownName => "sched::resolve::unknown_name", "a name is not defined";
    UnknownFunction => "sched::resolve::unknown_function", "a called function does not exist";
    UnknownStep => "sched::resolve::unknown_step", "`refine ... by` names a step that does not exist";
    UnknownType => "sched::resolve::unknown_type", "a type name is not a type";
    UnknownModelKind => "sched::resolve::unknown_model_kind", "`model<...>` names an unknown kind";
    UnknownMethod => "sched::resolve::unknown_method", "a method call names an unknown method";
    UndeclaredAssignment => "sched::resolve::undeclared_assignment", "assignment to a variable that was never declared";
    AssignToReadOnly => "sched::resolve::assign_to_read_only", "assignment to a loop variable, a time or a step parameter";
    CarryOutsideStep => "sched::resolve::carry_outside_step", "`carry` used in a schedule";
    StepOnlyBuiltin => "sched::resolve::step_only_builtin", "a builtin that needs a step's model used in a schedule";
    ScheduleOnlyBuiltin => "sched::resolve::schedule_only_builtin", "a builtin that needs the whole schedule used in a step";
    VerbInStep => "sched::resolve::verb_in_step", "`refine`, `jump`, `extend` or `emit` inside a step";
    BreakOutsideLoop => "sched::resolve::break_outside_loop", "`break` or `continue` outside a loop";
    RecursiveStep => "sched::resolve::recursive_step", "a step calls itself, directly or through others";
    NoModel => "sched::resolve::no_model", "a verb needs a model but the schedule has none";
    AmbiguousModel => "sched::resolve::ambiguous_model", "a verb could use several models and names none";
    // Types.
    TypeMismatch => "sched::type::mismatch", "a value has the wrong type";
    InvalidOperands => "sched::type::invalid_operands", "an operator is applied to types it does not support";
    TensorCondition => "sched::type::tensor_condition", "a condition is a device tensor, not a host bool";
    MissingArgument => "sched::type::missing_argument", "a required argument is missing";
    UnknownArgument => "sched::type::unknown_argument", "a named argument matches no parameter";
    TooManyArguments => "sched::type::too_many_arguments", "more positional arguments than parameters";
    DuplicateArgument => "sched::type::duplicate_argument", "one parameter is given twice";
    PositionalAfterNamed => "sched::type::positional_after_named", "a positional argument follows a named one";
    ArrowOutsideGrid => "sched::type::arrow_outside_grid", "`a -> b` used outside `grid(...)`";
    GridRunsBackwards => "sched::type::grid_runs_backwards", "a grid goes from data to noise";
    ForPattern => "sched::type::for_pattern", "`for` binds a number of variables the iterable does not yield";
    TuplePattern => "sched::type::tuple_pattern", "`let (a, b) = ...` does not match the value's shape";
    NotAPlace => "sched::type::not_a_place", "a verb's target is not a variable or a view of one";
    StateTypeMismatch => "sched::type::state_type_mismatch", "a step is used on a state of another type";
    ExtendTarget => "sched::type::extend_target", "`extend` on something that is not a sequence";
    ExtendMode => "sched::type::extend_mode", "`extend ... as` names none of `mask`, `guess` and `noise`";
    JumpNeedsTwoTimeModel => "sched::type::jump_needs_two_time_model", "`jump` with a model that does not know the target time";
    ModelKindMismatch => "sched::type::model_kind_mismatch", "a model's kind cannot do what the schedule asks of it";
    ConsistencyRenoise => "sched::type::consistency_renoise", "a consistency model jumps to a nonzero time (warning)";
    MissingEmit => "sched::type::missing_emit", "a schedule emits nothing";
    UselessExpression => "sched::type::useless_expression", "an expression statement has no effect";
    InvalidDefault => "sched::type::invalid_default", "a parameter's default cannot be evaluated before the run";
    StateNeverUpdated => "sched::type::state_never_updated", "a step never assigns its state `x` (warning)";
    NotAValue => "sched::type::not_a_value", "a function or step is used as a value";
    ModelParamInStep => "sched::type::model_param_in_step", "a step declares a model parameter";
    // Binding checkpoints to a checked program.
    UnknownBoundKind => "sched::bind::unknown_kind", "a bound checkpoint declares a kind sched does not know";
    UnknownModelParam => "sched::bind::unknown_model_param", "a model is bound to a name that is no model parameter";
    DeclaredKindDiffers => "sched::bind::declared_kind_differs", "a bound checkpoint's kind differs from `model<kind>`";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A labelled span. The primary label marks where the problem is; others give context.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
    pub primary: bool,
}

/// One problem found in a program.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub labels: Vec<Label>,
    pub help: String,
}

impl Diagnostic {
    fn error(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
        help: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            labels: vec![Label { span, message: label.into(), primary: true }],
            help: help.into(),
        }
    }

    fn warning(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
        help: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message, span, label, help) }
    }

    fn with_label(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label { span, message: message.into(), primary: false });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The span of the primary label.
    pub fn primary_span(&self) -> Span {
        self.labels.iter().find(|l| l.primary).or(self.labels.first()).map(|l| l.span).unwrap_or(Span {
            file: crate::source::FileId(0),
            start: 0,
            end: 0,
        })
    }

    /// A `miette` view of this diagnostic over the program's sources, ready to render.
    pub fn to_miette(&self, sources: &SourceMap) -> MietteDiagnostic {
        let primary = self.primary_span();
        let source = sources.get(primary.file);
        let in_file = |label: &&Label| label.span.file == primary.file;
        let labels = self.labels.iter().filter(in_file).map(to_labeled_span).collect();
        let related = self
            .labels
            .iter()
            .filter(|l| l.span.file != primary.file)
            .map(|l| {
                let file = sources.get(l.span.file);
                MietteDiagnostic {
                    code: None,
                    severity: miette::Severity::Advice,
                    message: format!("see `{}`", file.name),
                    help: None,
                    source: miette::NamedSource::new(file.name.clone(), file.text.clone()),
                    labels: vec![to_labeled_span(l)],
                    related: Vec::new(),
                }
            })
            .collect();
        MietteDiagnostic {
            code: Some(self.code.as_str().to_string()),
            severity: match self.severity {
                Severity::Error => miette::Severity::Error,
                Severity::Warning => miette::Severity::Warning,
            },
            message: self.message.clone(),
            help: Some(self.help.clone()),
            source: miette::NamedSource::new(source.name.clone(), source.text.clone()),
            labels,
            related,
        }
    }
}

/// A `miette` view of an error of a later phase (the compiler, the runtime) that points into
/// the program's sources, so every phase renders alike.
pub fn external_to_miette(
    code: &str,
    message: &str,
    span: Span,
    label: &str,
    help: &str,
    sources: &SourceMap,
) -> MietteDiagnostic {
    let diagnostic = Diagnostic::error(Code::UnexpectedToken, message, span, label, help);
    let mut rendered = diagnostic.to_miette(sources);
    rendered.code = Some(code.to_string());
    rendered
}

fn to_labeled_span(label: &Label) -> miette::LabeledSpan {
    let span = miette::SourceSpan::new((label.span.start as usize).into(), label.span.len());
    if label.primary {
        miette::LabeledSpan::new_primary_with_span(Some(label.message.clone()), span)
    } else {
        miette::LabeledSpan::new_with_span(Some(label.message.clone()), span)
    }
}

/// A diagnostic joined with its source text, implementing [`miette::Diagnostic`].
#[derive(Debug)]
pub struct MietteDiagnostic {
    code: Option<String>,
    severity: miette::Severity,
    message: String,
    help: Option<String>,
    source: miette::NamedSource<std::sync::Arc<str>>,
    labels: Vec<miette::LabeledSpan>,
    related: Vec<MietteDiagnostic>,
}

impl fmt::Display for MietteDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for MietteDiagnostic {}

impl miette::Diagnostic for MietteDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.code.as_ref().map(|c| Box::new(c) as Box<dyn fmt::Display>)
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(self.related.iter().map(|d| d as &dyn miette::Diagnostic)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Constructors, one per situation. Messages say what is wrong; help says what to do.

/// Quotes a list of names for a message: `` `a`, `b` or `c` ``.
pub fn quote_list(names: &[&str], conjunction: &str) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} {conjunction} {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

/// "a `word`" or "an `word`", for names that start with a vowel sound.
pub fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u' | 'x') => "an",
        _ => "a",
    }
}

fn did_you_mean(suggestion: Option<&str>, otherwise: impl Into<String>) -> String {
    match suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None => otherwise.into(),
    }
}

pub mod syntax {
    use super::*;

    pub fn not_utf8(span: Span, valid_up_to: usize) -> Diagnostic {
        Diagnostic::error(
            Code::NotUtf8,
            format!("this file is not UTF-8 text (invalid byte at offset {valid_up_to})"),
            span,
            "this byte",
            "`.sched` files are UTF-8 text; check that you passed the right file",
        )
    }

    pub fn file_too_large(span: Span, bytes: usize, limit: usize) -> Diagnostic {
        Diagnostic::error(
            Code::FileTooLarge,
            format!("this file is {bytes} bytes; the limit is {limit}"),
            span,
            "the file starts here",
            "split the schedules over several files, or check that you passed the right file",
        )
    }

    pub fn unexpected_token(span: Span, found: &str, expected: &str) -> Diagnostic {
        Diagnostic::error(
            Code::UnexpectedToken,
            format!("unexpected {found}"),
            span,
            format!("expected {expected}"),
            "see docs/language.md for the syntax of each construct",
        )
    }

    pub fn unclosed_delimiter(open: Span, open_char: char, close_char: char) -> Diagnostic {
        Diagnostic::error(
            Code::UnbalancedDelimiter,
            format!("this `{open_char}` is never closed"),
            open,
            "opened here",
            format!("add the matching `{close_char}`"),
        )
    }

    pub fn unmatched_close(close: Span, close_char: char) -> Diagnostic {
        Diagnostic::error(
            Code::UnbalancedDelimiter,
            format!("this `{close_char}` closes nothing"),
            close,
            "no open bracket matches this",
            "remove it, or add the opening bracket it was meant to close",
        )
    }

    pub fn mismatched_close(open: Span, open_char: char, close: Span, close_char: char) -> Diagnostic {
        let expected = super::closing_of(open_char);
        Diagnostic::error(
            Code::UnbalancedDelimiter,
            format!("`{close_char}` closes a `{open_char}`"),
            close,
            format!("expected `{expected}` here"),
            format!("close the `{open_char}` with `{expected}` first"),
        )
        .with_label(open, "the bracket that is still open")
    }

    pub fn nesting_too_deep(span: Span, limit: usize) -> Diagnostic {
        Diagnostic::error(
            Code::NestingTooDeep,
            format!("brackets and blocks are nested more than {limit} deep"),
            span,
            "this one is too deep",
            "name intermediate values with `let`, or move inner loops into a step",
        )
    }

    pub fn expression_too_long(span: Span, limit: usize) -> Diagnostic {
        Diagnostic::error(
            Code::ExpressionTooLong,
            format!("this expression nests more than {limit} operations"),
            span,
            "this expression",
            "split it into several `let` bindings",
        )
    }

    pub fn integer_too_large(span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::IntegerTooLarge,
            "integer literal too large",
            span,
            "does not fit in a 64-bit signed integer",
            "use a float literal (`1e30`) if you meant a large real number",
        )
    }

    pub fn invalid_escape(span: Span, escape: &str) -> Diagnostic {
        Diagnostic::error(
            Code::InvalidEscape,
            format!("unknown escape `{escape}` in a string"),
            span,
            "unknown escape",
            "the escapes are `\\\"`, `\\\\`, `\\n` and `\\t`",
        )
    }
}

pub(crate) fn closing_of(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

pub mod resolve {
    use super::*;

    pub fn duplicate_item(kind: &str, name: &str, span: Span, first: Span) -> Diagnostic {
        Diagnostic::error(
            Code::DuplicateItem,
            format!("the {kind} `{name}` is defined twice"),
            span,
            "defined again here",
            "rename one of them",
        )
        .with_label(first, "first defined here")
    }

    pub fn duplicate_param(name: &str, span: Span, first: Span) -> Diagnostic {
        Diagnostic::error(
            Code::DuplicateParam,
            format!("the parameter `{name}` is declared twice"),
            span,
            "declared again here",
            "rename one of them",
        )
        .with_label(first, "first declared here")
    }

    pub fn unknown_name(name: &str, span: Span, suggestion: Option<&str>) -> Diagnostic {
        Diagnostic::error(
            Code::UnknownName,
            format!("unknown name `{name}`"),
            span,
            "not defined here",
            did_you_mean(suggestion, "declare it with `let`, or add a parameter"),
        )
    }

    pub fn unknown_function(name: &str, span: Span, suggestion: Option<&str>, is_step: bool) -> Diagnostic {
        let help = if is_step {
            format!(
                "`{name}` is a step: use it with `refine x from t to s by {name}(...)`, or call it as a statement inside another step"
            )
        } else {
            did_you_mean(suggestion, "the builtin functions are listed in docs/language.md")
        };
        Diagnostic::error(Code::UnknownFunction, format!("unknown function `{name}`"), span, "not a function", help)
    }

    pub fn unknown_step(name: &str, span: Span, suggestion: Option<&str>) -> Diagnostic {
        Diagnostic::error(
            Code::UnknownStep,
            format!("unknown step `{name}`"),
            span,
            "no step has this name",
            did_you_mean(
                suggestion,
                "define it with `step NAME(...) { ... }`; the prelude steps are listed in docs/language.md",
            ),
        )
    }

    pub fn unknown_type(name: &str, span: Span, suggestion: Option<&str>) -> Diagnostic {
        Diagnostic::error(
            Code::UnknownType,
            format!("unknown type `{name}`"),
            span,
            "not a type",
            did_you_mean(
                suggestion,
                "the types are `int`, `float`, `bool`, `string`, `tensor`, `tokens`, `model`, `spacing`, `sampler` and `remask`",
            ),
        )
    }

    pub fn unknown_model_kind(name: &str, span: Span, suggestion: Option<&str>, kinds: &[&str]) -> Diagnostic {
        Diagnostic::error(
            Code::UnknownModelKind,
            format!("unknown model kind `{name}`"),
            span,
            "not a model kind",
            did_you_mean(suggestion, format!("the kinds are {}", quote_list(kinds, "and"))),
        )
    }

    pub fn unknown_method(name: &str, receiver: &str, span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::UnknownMethod,
            format!("`{receiver}` has no method `{name}`"),
            span,
            "unknown method",
            "the only method is `.tail(k)`, the last k positions of a sequence",
        )
    }

    pub fn undeclared_assignment(name: &str, span: Span, suggestion: Option<&str>) -> Diagnostic {
        Diagnostic::error(
            Code::UndeclaredAssignment,
            format!("assignment to undeclared variable `{name}`"),
            span,
            "never declared",
            match suggestion {
                Some(s) => format!("did you mean `{s}`? To declare a new variable write `let {name} = ...`"),
                None => format!("declare it first: `let {name} = ...`"),
            },
        )
    }

    pub fn assign_to_read_only(name: &str, what: &str, span: Span, declared: Span) -> Diagnostic {
        Diagnostic::error(
            Code::AssignToReadOnly,
            format!("cannot assign to `{name}`: it is {what}"),
            span,
            "assigned here",
            format!("copy it first: `let {name}2 = {name}`"),
        )
        .with_label(declared, "declared here")
    }

    pub fn carry_outside_step(span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::CarryOutsideStep,
            "`carry` is only allowed inside a step",
            span,
            "in a schedule",
            "a schedule's variables already live for the whole run; use `let`",
        )
    }

    pub fn step_only_builtin(name: &str, span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::StepOnlyBuiltin,
            format!("`{name}` can only be used inside a step"),
            span,
            "used in a schedule",
            format!(
                "`{name}` needs the model and the times `t`, `s` a step is run with: write a step that uses it and call it with `refine x from t to s by STEP(...)`"
            ),
        )
    }

    pub fn schedule_only_builtin(name: &str, span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::ScheduleOnlyBuiltin,
            format!("`{name}` can only be used in a schedule"),
            span,
            "used inside a step",
            "a step sees only its state `x`, the times `t`, `s` and its model; move this to the schedule",
        )
    }

    pub fn verb_in_step(verb: &str, span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::VerbInStep,
            format!("`{verb}` is not allowed inside a step"),
            span,
            "inside a step",
            "a step updates its state `x` directly (`x = ...`) or delegates to another step (`first_order(c)`); verbs belong to schedules",
        )
    }

    pub fn break_outside_loop(keyword: &str, span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::BreakOutsideLoop,
            format!("`{keyword}` outside a loop"),
            span,
            "not inside `for`, `repeat` or `while`",
            "remove it, or move it into the loop it should leave",
        )
    }

    pub fn recursive_step(name: &str, span: Span, chain: &str) -> Diagnostic {
        Diagnostic::error(
            Code::RecursiveStep,
            format!("step `{name}` calls itself ({chain})"),
            span,
            "this call closes the cycle",
            "steps are inlined into the schedule, so they cannot recurse; use a loop in the schedule instead",
        )
    }

    pub fn no_model(verb: &str, span: Span, schedule: Span) -> Diagnostic {
        Diagnostic::error(
            Code::NoModel,
            format!("`{verb}` needs a model, but this schedule has no model parameter"),
            span,
            "needs a model",
            "add a parameter such as `net: model<eps>` and bind it with `--model net=PATH`",
        )
        .with_label(schedule, "parameters of this schedule")
    }

    pub fn ambiguous_model(verb: &str, span: Span, names: &[&str]) -> Diagnostic {
        Diagnostic::error(
            Code::AmbiguousModel,
            format!("`{verb}` could use {}", quote_list(names, "or")),
            span,
            "which model?",
            format!("name it: `{verb} ... using {}`", names.first().copied().unwrap_or("net")),
        )
    }
}

pub mod types {
    use super::*;

    pub fn mismatch(span: Span, expected: &str, found: &str, context: &str) -> Diagnostic {
        Diagnostic::error(
            Code::TypeMismatch,
            format!("expected `{expected}`, found `{found}` {context}"),
            span,
            format!("this is `{found}`"),
            mismatch_help(expected, found),
        )
    }

    fn mismatch_help(expected: &str, found: &str) -> String {
        match (expected, found) {
            ("int", "float") => "convert explicitly with `int(...)` (rounds toward zero) or `round(...)`".into(),
            ("float", "tensor") | ("bool", "tensor") => {
                "a tensor lives on the device; reduce it to a host number first, e.g. `rms(x)` or `mean(x)`".into()
            }
            ("model", _) => "pass a model parameter, e.g. `net`, or wrap one: `cfg(net, 7.5, label)`".into(),
            _ => format!("give a `{expected}` here"),
        }
    }

    pub fn invalid_operands(span: Span, op: &str, lhs: &str, rhs: &str) -> Diagnostic {
        let help = if lhs == "tensor" || rhs == "tensor" {
            "tensors support `+ - * / ^` with each other and with numbers; comparisons and logic work on host values only"
        } else if lhs == "bool" || rhs == "bool" {
            "`&&`, `||` and `!` take bools; arithmetic takes numbers"
        } else {
            "arithmetic takes `int`, `float` and `tensor`; comparisons take numbers; `&&` and `||` take bools"
        };
        Diagnostic::error(
            Code::InvalidOperands,
            format!("`{op}` cannot be applied to `{lhs}` and `{rhs}`"),
            span,
            format!("`{lhs} {op} {rhs}`"),
            help,
        )
    }

    pub fn invalid_operand(span: Span, op: &str, operand: &str) -> Diagnostic {
        Diagnostic::error(
            Code::InvalidOperands,
            format!("`{op}` cannot be applied to `{operand}`"),
            span,
            format!("this is `{operand}`"),
            if op == "!" { "`!` negates a bool" } else { "`-` negates a number or a tensor" },
        )
    }

    pub fn tensor_condition(span: Span, construct: &str) -> Diagnostic {
        Diagnostic::error(
            Code::TensorCondition,
            format!("the condition of `{construct}` is a tensor"),
            span,
            "a device tensor",
            "host control flow needs a host `bool`: reduce the tensor first, e.g. `rms(x) < tol`",
        )
    }

    pub fn missing_argument(callee: &str, param: &str, ty: &str, span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::MissingArgument,
            format!("`{callee}` needs an argument for `{param}`"),
            span,
            format!("`{param}: {ty}` is missing"),
            format!("pass it by position or by name: `{callee}({param} = ...)`"),
        )
    }

    pub fn unknown_argument(
        callee: &str,
        name: &str,
        span: Span,
        params: &[&str],
        suggestion: Option<&str>,
    ) -> Diagnostic {
        let otherwise = if params.is_empty() {
            format!("`{callee}` takes no arguments")
        } else {
            format!("`{callee}` takes {}", quote_list(params, "and"))
        };
        Diagnostic::error(
            Code::UnknownArgument,
            format!("`{callee}` has no parameter `{name}`"),
            span,
            "unknown parameter",
            did_you_mean(suggestion, otherwise),
        )
    }

    pub fn too_many_arguments(callee: &str, expected: usize, found: usize, span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::TooManyArguments,
            format!(
                "`{callee}` takes {expected} argument{}, but {found} were given",
                if expected == 1 { "" } else { "s" }
            ),
            span,
            "one too many",
            "remove the extra arguments",
        )
    }

    pub fn duplicate_argument(name: &str, span: Span, first: Span) -> Diagnostic {
        Diagnostic::error(
            Code::DuplicateArgument,
            format!("`{name}` is given twice"),
            span,
            "given again here",
            "remove one of them",
        )
        .with_label(first, "first given here")
    }

    pub fn positional_after_named(span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::PositionalAfterNamed,
            "a positional argument follows a named one",
            span,
            "positional",
            "put positional arguments first, or name this one too",
        )
    }

    pub fn arrow_outside_grid(span: Span, callee: &str) -> Diagnostic {
        Diagnostic::error(
            Code::ArrowOutsideGrid,
            format!("`a -> b` is only meaningful in `grid(...)`, not in `{callee}(...)`"),
            span,
            "a time range",
            "write `grid(1 -> 0, steps)` for a time grid",
        )
    }

    pub fn grid_runs_backwards(span: Span, from: f64, to: f64) -> Diagnostic {
        Diagnostic::error(
            Code::GridRunsBackwards,
            format!("this grid runs from {from} to {to}, from data towards noise"),
            span,
            "time must decrease",
            "time runs from 1 (pure noise) to 0 (data): write `grid(1 -> 0, ...)`; to add noise use a step that re-noises",
        )
    }

    pub fn times_not_decreasing(span: Span, previous: f64, next: f64) -> Diagnostic {
        Diagnostic::error(
            Code::GridRunsBackwards,
            format!("`times(...)` goes from {previous} up to {next}"),
            span,
            "not below the previous time",
            "list the times in strictly decreasing order, from noise (1) to data (0)",
        )
    }

    pub fn for_pattern(span: Span, iterable: &str, yields: usize, found: usize) -> Diagnostic {
        let example = if iterable == "grid" {
            "`for t, s in grid(1 -> 0, steps)` (or `for t in ...` for the points)"
        } else {
            "`for i in range(n)`"
        };
        Diagnostic::error(
            Code::ForPattern,
            format!(
                "a `{iterable}` yields {yields} value{} per iteration, but {found} names are bound",
                if yields == 1 { "" } else { "s" }
            ),
            span,
            "these names",
            format!("write {example}"),
        )
    }

    pub fn tuple_pattern(span: Span, found: &str, expected: usize) -> Diagnostic {
        Diagnostic::error(
            Code::TuplePattern,
            format!("cannot unpack `{found}` into {expected} names"),
            span,
            "this pattern",
            "`predict(x, t)` returns a pair: `let (x0, e) = predict(x, t)`",
        )
    }

    pub fn not_a_place(verb: &str, span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::NotAPlace,
            format!("`{verb}` needs a variable to update"),
            span,
            "not a variable",
            format!("bind the value first: `let y = ...` then `{verb} y ...`"),
        )
    }

    pub fn state_type_mismatch(step: &str, step_state: &str, target: &str, span: Span, declared: Span) -> Diagnostic {
        Diagnostic::error(
            Code::StateTypeMismatch,
            format!("step `{step}` works on `{step_state}`, but the target is `{target}`"),
            span,
            format!("{} `{target}`", article(target)),
            if step_state == "tokens" {
                "token steps such as `unmask` refine sequences; for tensors use a solver step such as `ddim()`"
                    .to_string()
            } else {
                "solver steps refine tensors; for token sequences use `unmask(...)`".to_string()
            },
        )
        .with_label(declared, format!("`{step}` is declared `on {step_state}`"))
    }

    pub fn extend_target(span: Span, found: &str) -> Diagnostic {
        Diagnostic::error(
            Code::ExtendTarget,
            format!("`extend` appends positions to a sequence, but this is `{found}`"),
            span,
            format!("{} `{found}`", article(found)),
            "extend a `tokens` value (`let seq = prompt()`) or a sequence tensor",
        )
    }

    pub fn extend_mode(span: Span, word: &str, suggestion: Option<&str>) -> Diagnostic {
        Diagnostic::error(
            Code::ExtendMode,
            format!("`extend ... as {word}` is not a way to extend"),
            span,
            "unknown",
            did_you_mean(
                suggestion,
                "write `as mask` (masked positions), `as guess` (guesses for a Jacobi refinement), `as noise` (Gaussian positions) or `with SAMPLER`",
            ),
        )
    }

    pub fn extend_mode_type(span: Span, mode: &str, target: &str) -> Diagnostic {
        Diagnostic::error(
            Code::ExtendMode,
            format!("`extend ... as {mode}` does not apply to `{target}`"),
            span,
            format!("not for `{target}`"),
            "`as mask`, `as guess` and `with SAMPLER` extend `tokens`; `as noise` extends a sequence `tensor`",
        )
    }

    pub fn jump_needs_two_time_model(
        span: Span,
        model: &str,
        kind: &str,
        origin: Option<(Span, String)>,
    ) -> Diagnostic {
        let diag = Diagnostic::error(
            Code::JumpNeedsTwoTimeModel,
            format!("`jump` needs a model that is told the target time, but `{model}` is a local field (`{kind}`)"),
            span,
            format!("`{model}` only knows a local field"),
            format!(
                "a local field ({kind}) gives the direction at `t` alone and does not know where to land at `s`; \
                 solve the ODE with `refine x from t to s by ddim()` (or `heun()`, `dpmpp_2m()`), \
                 or bind a two-time checkpoint (flow_map, mean_flow, shortcut or consistency)"
            ),
        );
        match origin {
            Some((span, label)) => diag.with_label(span, label),
            None => diag,
        }
    }

    pub fn model_kind_mismatch(
        span: Span,
        model: &str,
        kind: &str,
        wants: &str,
        accepted: &[&str],
        origin: Option<(Span, String)>,
    ) -> Diagnostic {
        let diag = Diagnostic::error(
            Code::ModelKindMismatch,
            format!("`{model}` is {} `{kind}` model, but {wants}", article(kind)),
            span,
            format!("needs {}", quote_list(accepted, "or")),
            format!("bind a checkpoint of kind {}, or change the schedule", quote_list(accepted, "or")),
        );
        match origin {
            Some((span, label)) => diag.with_label(span, label),
            None => diag,
        }
    }

    pub fn consistency_renoise(span: Span, model: &str) -> Diagnostic {
        Diagnostic::warning(
            Code::ConsistencyRenoise,
            format!("`{model}` is a consistency model: it can only jump to data (s = 0)"),
            span,
            "jumps to data, then re-noises to `s`",
            "this is the published multistep sampler (jump to 0, then add fresh noise for level s); \
             write the re-noise yourself, or use a flow map, to silence this",
        )
    }

    pub fn missing_emit(name: &str, span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::MissingEmit,
            format!("schedule `{name}` emits nothing"),
            span,
            "no `emit` in this schedule",
            "end the schedule with `emit x` to output the final state",
        )
    }

    pub fn useless_expression(span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::UselessExpression,
            "this expression is computed and thrown away",
            span,
            "has no effect",
            "assign it (`x = ...`), bind it (`let y = ...`), or emit it (`emit ...`)",
        )
    }

    pub fn invalid_default(span: Span, reason: &str) -> Diagnostic {
        Diagnostic::error(
            Code::InvalidDefault,
            format!("this default cannot be used: {reason}"),
            span,
            "default value",
            "defaults are literals or builtin calls such as `gaussian()`; for models, a checkpoint path or an analytic spec string",
        )
    }

    pub fn not_a_value(name: &str, what: &str, span: Span) -> Diagnostic {
        let help = if what == "step" {
            format!("run a step with `refine x from t to s by {name}(...)`")
        } else {
            format!("call it: `{name}(...)`")
        };
        Diagnostic::error(
            Code::NotAValue,
            format!("`{name}` is a {what}, not a value"),
            span,
            format!("a {what}"),
            help,
        )
    }

    pub fn model_param_in_step(span: Span) -> Diagnostic {
        Diagnostic::error(
            Code::ModelParamInStep,
            "a step cannot take a model parameter",
            span,
            "a model parameter",
            "a step runs with the model of the verb that calls it (`refine ... using net`); wrap models in the schedule, e.g. `using cfg(net, 7.5, label)`",
        )
    }

    pub fn state_never_updated(step: &str, span: Span) -> Diagnostic {
        Diagnostic::warning(
            Code::StateNeverUpdated,
            format!("step `{step}` never assigns its state `x`"),
            span,
            "this step leaves `x` unchanged",
            "assign the new state with `x = ...`, or delegate to another step",
        )
    }
}

pub mod bind {
    use super::*;

    pub fn unknown_kind(span: Span, kind: &str, suggestion: Option<&str>, kinds: &[&str]) -> Diagnostic {
        Diagnostic::error(
            Code::UnknownBoundKind,
            format!("the bound model declares the kind `{kind}`, which sched does not know"),
            span,
            "bound here",
            did_you_mean(suggestion, format!("the kinds are {}", quote_list(kinds, "and"))),
        )
    }

    pub fn unknown_model_param(schedule: &str, name: &str, span: Span, models: &[&str]) -> Diagnostic {
        Diagnostic::error(
            Code::UnknownModelParam,
            format!("schedule `{schedule}` has no model parameter `{name}`"),
            span,
            "its parameters",
            if models.is_empty() {
                "this schedule takes no models".to_string()
            } else {
                format!("its model parameters are {}", quote_list(models, "and"))
            },
        )
    }

    pub fn declared_kind_differs(span: Span, param: &str, declared: &str, bound: &str) -> Diagnostic {
        Diagnostic::error(
            Code::DeclaredKindDiffers,
            format!("`{param}` is declared `model<{declared}>`, but the bound model is `{bound}`"),
            span,
            format!("declared `model<{declared}>`"),
            format!(
                "bind {} `{declared}` checkpoint, or declare `{param}: model` to accept any compatible kind",
                article(declared)
            ),
        )
    }
}
