//! Name resolution and type checking.
//!
//! The checker walks every item once. Steps are checked first, so that a schedule's `refine ...
//! by STEP` can use each step's signature and the capabilities it asks of its model (collected
//! transitively through the steps it delegates to). Facts about the tree (the type of every
//! expression, what every name refers to) are stored in side tables of the [`Program`], keyed by
//! file and [`ExprId`]; the tree itself is never changed.
//!
//! Every problem is reported, not only the first: an expression whose type could not be found
//! gets [`Type::Error`], which fits everywhere, so one mistake gives one diagnostic.

use std::collections::HashMap;

use crate::ast::*;
use crate::builtins::{self, Builtin, Context, ParamType, Returns};
use crate::diagnostics::{Diagnostic, bind as bind_diag, resolve, types as type_diag};
use crate::source::{FileId, SourceMap, Span};
use crate::types::{Capability, ModelKind, Type};

/// Index of a local variable in [`Program::locals`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalId(pub u32);

/// Index of a step in [`Program::steps`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(pub u32);

/// Index of a schedule in [`Program::schedules`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScheduleId(pub u32);

/// An expression's key in the side tables.
pub type ExprKey = (FileId, ExprId);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalKind {
    ScheduleParam,
    StepParam,
    Let,
    Carry,
    LoopVar,
    /// The state `x` of a step.
    State,
    /// The times `t` and `s` of a step.
    Time,
}

#[derive(Clone, Debug)]
pub struct Local {
    pub name: String,
    pub ty: Type,
    pub kind: LocalKind,
    pub span: Span,
}

impl Local {
    /// Why the variable cannot be assigned, if it cannot.
    fn read_only_reason(&self) -> Option<&'static str> {
        match self.kind {
            LocalKind::LoopVar => Some("a loop variable"),
            LocalKind::Time => Some("a time of the step"),
            LocalKind::StepParam => Some("a step parameter"),
            _ => None,
        }
    }
}

/// What a name in an expression refers to.
#[derive(Clone, Copy, Debug)]
pub enum Resolution {
    Local(LocalId),
    Constant(f64),
    /// A builtin named without parentheses, meaning a call with its defaults (`uniform`).
    Option(&'static Builtin),
}

/// What a call expression calls.
#[derive(Clone, Copy, Debug)]
pub enum Callee {
    Builtin(&'static Builtin),
    Step(StepId),
}

/// The parameter a call argument was bound to.
#[derive(Clone, Debug, PartialEq)]
pub struct BoundArgs {
    /// For each parameter in order, the argument expressions given for it (empty: default;
    /// several: the repeated last parameter of a variadic builtin).
    pub per_param: Vec<Vec<ExprId>>,
}

#[derive(Clone, Debug)]
pub struct ParamSig {
    pub name: String,
    pub ty: Type,
    pub default: Option<ExprId>,
    pub span: Span,
}

/// Something a schedule asks of one of its model parameters.
#[derive(Clone, Debug)]
pub struct ModelUse {
    /// The model parameter (after looking through `cfg(...)` and `let` aliases).
    pub model: LocalId,
    pub capability: Capability,
    /// Where it is asked (the verb, or the builtin call).
    pub span: Span,
    /// What asks, for messages: "`jump`", "step `ddim` (it calls `predict`)".
    pub what: String,
    /// For `jump`: whether the target time is the literal 0 (a consistency model then needs no re-noise).
    pub jumps_to_data: bool,
}

#[derive(Clone, Debug)]
pub struct StepInfo {
    pub name: String,
    pub file: FileId,
    /// Index of the item in its file.
    pub item: usize,
    pub params: Vec<ParamSig>,
    pub state: Type,
    pub state_span: Span,
    /// The implicit locals `x`, `t`, `s`.
    pub state_local: LocalId,
    pub t_local: LocalId,
    pub s_local: LocalId,
    /// The locals of the step's parameters, in order.
    pub param_locals: Vec<LocalId>,
    /// Capabilities asked of the model, with the builtin that asks, including those of the
    /// steps it delegates to.
    pub needs: Vec<(Capability, &'static str)>,
    /// Steps this step delegates to, with the span of the call.
    pub delegates: Vec<(StepId, Span)>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct ScheduleInfo {
    pub name: String,
    pub file: FileId,
    pub item: usize,
    pub params: Vec<ParamSig>,
    pub param_locals: Vec<LocalId>,
    /// Indices into `params` of the model parameters.
    pub model_params: Vec<usize>,
    pub uses: Vec<ModelUse>,
    pub span: Span,
}

/// A checked program: the syntax trees of the user's file and the prelude, plus every fact the
/// checker established about them.
#[derive(Clone, Debug)]
pub struct Program {
    pub sources: SourceMap,
    /// Parsed files, indexed by [`FileId`].
    pub files: Vec<SourceFile>,
    /// The user's file (schedules from the prelude are not listed as the program's).
    pub main_file: FileId,
    pub schedules: Vec<ScheduleInfo>,
    pub steps: Vec<StepInfo>,
    pub locals: Vec<Local>,
    pub expr_types: HashMap<ExprKey, Type>,
    pub resolutions: HashMap<ExprKey, Resolution>,
    pub callees: HashMap<ExprKey, Callee>,
    pub bound_args: HashMap<ExprKey, BoundArgs>,
    /// Step references of `refine ... by STEP(...)` and step delegations, keyed by span.
    pub step_refs: HashMap<Span, (StepId, BoundArgs)>,
    /// The model each verb uses, keyed by the verb statement's span.
    pub verb_models: HashMap<Span, LocalId>,
    /// Locals bound to a `let` of a model expression, and the model parameters they wrap.
    pub model_aliases: HashMap<LocalId, Vec<LocalId>>,
    /// The local each declared name (`let`, `carry`, `for`) or assignment target refers to,
    /// keyed by the span of the name.
    pub name_locals: HashMap<Span, LocalId>,
}

impl Program {
    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn local(&self, id: LocalId) -> &Local {
        &self.locals[id.0 as usize]
    }

    pub fn step(&self, id: StepId) -> &StepInfo {
        &self.steps[id.0 as usize]
    }

    pub fn schedule_by_name(&self, name: &str) -> Option<(ScheduleId, &ScheduleInfo)> {
        self.schedules
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name && s.file == self.main_file)
            .map(|(i, s)| (ScheduleId(i as u32), s))
    }

    /// The schedules of the user's file, in source order.
    pub fn user_schedules(&self) -> impl Iterator<Item = (ScheduleId, &ScheduleInfo)> {
        self.schedules
            .iter()
            .enumerate()
            .filter(|(_, s)| s.file == self.main_file)
            .map(|(i, s)| (ScheduleId(i as u32), s))
    }

    pub fn schedule_ast(&self, id: ScheduleId) -> &Schedule {
        let info = &self.schedules[id.0 as usize];
        match &self.file(info.file).items[info.item] {
            Item::Schedule(schedule) => schedule,
            // `ScheduleInfo::item` is only ever set to the index of a schedule item.
            Item::Step(_) => unreachable!("schedule info points at a step"),
        }
    }

    pub fn step_ast(&self, id: StepId) -> &Step {
        let info = self.step(id);
        match &self.file(info.file).items[info.item] {
            Item::Step(step) => step,
            // `StepInfo::item` is only ever set to the index of a step item.
            Item::Schedule(_) => unreachable!("step info points at a schedule"),
        }
    }

    pub fn type_of(&self, file: FileId, expr: &Expr) -> &Type {
        self.expr_types.get(&(file, expr.id)).unwrap_or(&Type::Error)
    }

    /// Checks that a model of kind `kind` (as a checkpoint's manifest names it) may be bound to
    /// the model parameter `param` of `schedule`. Returns the errors and warnings; an empty list
    /// means the binding is fine.
    pub fn check_model_binding(&self, schedule: &str, param: &str, kind: &str) -> Vec<Diagnostic> {
        let Some((_, info)) = self.schedule_by_name(schedule) else {
            return vec![bind_diag::unknown_model_param(schedule, param, Span::new(self.main_file, 0, 0), &[])];
        };
        let model_names: Vec<&str> = info.model_params.iter().map(|&i| info.params[i].name.as_str()).collect();
        let Some(&index) = info.model_params.iter().find(|&&i| info.params[i].name == param) else {
            return vec![bind_diag::unknown_model_param(schedule, param, info.span, &model_names)];
        };
        let sig = &info.params[index];
        let Some(kind) = ModelKind::from_name(kind) else {
            let names = ModelKind::names();
            return vec![bind_diag::unknown_kind(
                sig.span,
                kind,
                suggest(kind, names.iter().copied()).as_deref(),
                &names,
            )];
        };
        if let Type::Model(Some(declared)) = sig.ty
            && declared != kind
        {
            return vec![bind_diag::declared_kind_differs(sig.span, param, declared.name(), kind.name())];
        }
        let local = info.param_locals[index];
        let mut diagnostics = Vec::new();
        let origin = (sig.span, format!("bound to {} `{kind}` checkpoint", crate::diagnostics::article(kind.name())));
        for model_use in info.uses.iter().filter(|u| u.model == local) {
            if let Some(d) = capability_diagnostic(model_use, param, kind, Some(origin.clone())) {
                diagnostics.push(d);
            }
        }
        diagnostics
    }
}

/// The diagnostic for asking `capability` of a model of `kind`, if it cannot do it (or, for a
/// consistency model jumping to a nonzero time, the warning that it re-noises).
fn capability_diagnostic(
    model_use: &ModelUse,
    model: &str,
    kind: ModelKind,
    origin: Option<(Span, String)>,
) -> Option<Diagnostic> {
    if model_use.capability.accepts(kind) {
        if model_use.capability == Capability::Jump && kind == ModelKind::Consistency && !model_use.jumps_to_data {
            return Some(type_diag::consistency_renoise(model_use.span, model));
        }
        return None;
    }
    if model_use.capability == Capability::Jump && kind.is_local_field() {
        return Some(type_diag::jump_needs_two_time_model(model_use.span, model, kind.name(), origin));
    }
    let wants = format!("{} needs {}", model_use.what, model_use.capability.describe());
    Some(type_diag::model_kind_mismatch(
        model_use.span,
        model,
        kind.name(),
        &wants,
        &model_use.capability.accepted_kinds(),
        origin,
    ))
}

/// The closest of `candidates` to `name`, if any is close enough to be a plausible typo: at most
/// one edit (Damerau-Levenshtein) per three characters of `name`, or a distance of at most half
/// the longer word (so a truncated name, `causal` for `causal_lm`, finds its word). Every
/// suggestion of sched, in the front end and in the model formats, is this one.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1);
    let close = |distance: usize, candidate: &str| {
        distance <= limit || 2 * distance <= name.chars().count().max(candidate.chars().count())
    };
    candidates
        .into_iter()
        .filter(|c| *c != name && !c.is_empty())
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|&(distance, c)| close(distance, c))
        .min_by_key(|(distance, c)| (*distance, c.len()))
        .map(|(_, c)| c.to_string())
}

// ---------------------------------------------------------------------------------------------

/// The program-wide state of one checking run.
pub(crate) struct Checker {
    program: Program,
    diagnostics: Vec<Diagnostic>,
    /// Steps visible from user files (user steps shadow prelude steps) and from prelude files.
    user_steps: HashMap<String, StepId>,
    prelude_steps: HashMap<String, StepId>,
}

impl Checker {
    pub(crate) fn new(sources: SourceMap, files: Vec<SourceFile>, main_file: FileId) -> Checker {
        Checker {
            program: Program {
                sources,
                files,
                main_file,
                schedules: Vec::new(),
                steps: Vec::new(),
                locals: Vec::new(),
                expr_types: HashMap::new(),
                resolutions: HashMap::new(),
                callees: HashMap::new(),
                bound_args: HashMap::new(),
                step_refs: HashMap::new(),
                verb_models: HashMap::new(),
                model_aliases: HashMap::new(),
                name_locals: HashMap::new(),
            },
            diagnostics: Vec::new(),
            user_steps: HashMap::new(),
            prelude_steps: HashMap::new(),
        }
    }

    /// Checks everything and returns the program with all diagnostics (errors and warnings).
    pub(crate) fn run(mut self) -> (Program, Vec<Diagnostic>) {
        self.declare_items();
        let step_count = self.program.steps.len();
        for index in 0..step_count {
            self.check_step(StepId(index as u32));
        }
        self.close_step_needs();
        for index in 0..self.program.schedules.len() {
            self.check_schedule(index);
        }
        (self.program, self.diagnostics)
    }

    fn report(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn new_local(&mut self, name: &str, ty: Type, kind: LocalKind, span: Span) -> LocalId {
        let id = LocalId(self.program.locals.len() as u32);
        self.program.locals.push(Local { name: name.to_string(), ty, kind, span });
        id
    }

    fn is_prelude(&self, file: FileId) -> bool {
        self.program.sources.get(file).is_prelude
    }

    /// Registers every schedule and step, reporting duplicates, and resolves parameter types.
    fn declare_items(&mut self) {
        let mut first_seen: HashMap<(bool, String), Span> = HashMap::new();
        for file_index in 0..self.program.files.len() {
            let file = FileId(file_index as u32);
            let prelude = self.is_prelude(file);
            for item_index in 0..self.program.files[file_index].items.len() {
                let item = self.program.files[file_index].items[item_index].clone();
                let name = item.name().clone();
                if let Some(first) = first_seen.get(&(prelude, name.name.clone())) {
                    let kind = if matches!(item, Item::Schedule(_)) { "schedule" } else { "step" };
                    self.report(resolve::duplicate_item(kind, &name.name, name.span, *first));
                    continue;
                }
                first_seen.insert((prelude, name.name.clone()), name.span);
                match &item {
                    Item::Schedule(schedule) => self.declare_schedule(file, item_index, schedule),
                    Item::Step(step) => self.declare_step(file, item_index, step, prelude),
                }
            }
        }
    }

    fn declare_params(&mut self, params: &[Param], in_step: bool) -> (Vec<ParamSig>, Vec<LocalId>) {
        let mut sigs: Vec<ParamSig> = Vec::new();
        let mut locals = Vec::new();
        for param in params {
            if let Some(first) = sigs.iter().find(|s| s.name == param.name.name) {
                self.report(resolve::duplicate_param(&param.name.name, param.name.span, first.span));
            }
            let ty = self.resolve_type(&param.ty);
            if in_step && matches!(ty, Type::Model(_)) {
                self.report(type_diag::model_param_in_step(param.ty.span));
            }
            let kind = if in_step { LocalKind::StepParam } else { LocalKind::ScheduleParam };
            let local = self.new_local(&param.name.name, ty.clone(), kind, param.name.span);
            sigs.push(ParamSig {
                name: param.name.name.clone(),
                ty,
                default: param.default.as_ref().map(|d| d.id),
                span: param.name.span,
            });
            locals.push(local);
        }
        (sigs, locals)
    }

    fn declare_schedule(&mut self, file: FileId, item: usize, schedule: &Schedule) {
        let (params, param_locals) = self.declare_params(&schedule.params, false);
        let model_params =
            params.iter().enumerate().filter(|(_, p)| matches!(p.ty, Type::Model(_))).map(|(i, _)| i).collect();
        self.program.schedules.push(ScheduleInfo {
            name: schedule.name.name.clone(),
            file,
            item,
            params,
            param_locals,
            model_params,
            uses: Vec::new(),
            span: schedule.name.span,
        });
    }

    fn declare_step(&mut self, file: FileId, item: usize, step: &Step, prelude: bool) {
        let (params, param_locals) = self.declare_params(&step.params, true);
        let (state, state_span) = match &step.state {
            Some(ty) => {
                let resolved = self.resolve_type(ty);
                if !matches!(resolved, Type::Tensor | Type::Tokens | Type::Error) {
                    self.report(type_diag::mismatch(
                        ty.span,
                        "tensor` or `tokens",
                        &resolved.to_string(),
                        "as a step's state",
                    ));
                }
                (resolved, ty.span)
            }
            None => (Type::Tensor, step.name.span),
        };
        let state_local = self.new_local("x", state.clone(), LocalKind::State, step.name.span);
        let t_local = self.new_local("t", Type::Float, LocalKind::Time, step.name.span);
        let s_local = self.new_local("s", Type::Float, LocalKind::Time, step.name.span);
        let id = StepId(self.program.steps.len() as u32);
        self.program.steps.push(StepInfo {
            name: step.name.name.clone(),
            file,
            item,
            params,
            state,
            state_span,
            state_local,
            t_local,
            s_local,
            param_locals,
            needs: Vec::new(),
            delegates: Vec::new(),
            span: step.name.span,
        });
        let table = if prelude { &mut self.prelude_steps } else { &mut self.user_steps };
        table.insert(step.name.name.clone(), id);
    }

    fn resolve_type(&mut self, ty: &TypeExpr) -> Type {
        let name = ty.name.name.as_str();
        let Some(base) = Type::from_name(name) else {
            let suggestion = suggest(name, Type::NAMES.iter().copied());
            self.report(resolve::unknown_type(name, ty.name.span, suggestion.as_deref()));
            return Type::Error;
        };
        match (&base, &ty.argument) {
            (_, None) => base,
            (Type::Model(_), Some(kind)) => match ModelKind::from_name(&kind.name) {
                Some(k) => Type::Model(Some(k)),
                None => {
                    let names = ModelKind::names();
                    let suggestion = suggest(&kind.name, names.iter().copied());
                    self.report(resolve::unknown_model_kind(&kind.name, kind.span, suggestion.as_deref(), &names));
                    Type::Model(None)
                }
            },
            (_, Some(_)) => {
                let written = format!("{}<...>", name);
                self.report(resolve::unknown_type(&written, ty.span, None));
                Type::Error
            }
        }
    }

    fn find_step(&self, from_file: FileId, name: &str) -> Option<StepId> {
        if self.is_prelude(from_file) {
            self.prelude_steps.get(name).copied()
        } else {
            self.user_steps.get(name).or_else(|| self.prelude_steps.get(name)).copied()
        }
    }

    fn step_names(&self, from_file: FileId) -> Vec<String> {
        let mut names: Vec<String> = self.prelude_steps.keys().cloned().collect();
        if !self.is_prelude(from_file) {
            names.extend(self.user_steps.keys().cloned());
        }
        names.sort();
        names
    }

    fn check_step(&mut self, id: StepId) {
        let info = self.program.step(id).clone();
        let step = match &self.program.files[info.file.0 as usize].items[info.item] {
            Item::Step(step) => step.clone(),
            Item::Schedule(_) => return,
        };
        let mut body = BodyChecker::new(self, info.file, Some(id));
        body.push_scope();
        for (param, local) in step.params.iter().zip(&info.param_locals) {
            body.check_default(param, &info.params);
            body.bind(&param.name.name, *local);
        }
        body.bind("x", info.state_local);
        body.bind("t", info.t_local);
        body.bind("s", info.s_local);
        body.block(&step.body);
        let updates_state = body.state_updated;
        let needs = std::mem::take(&mut body.needs);
        let delegates = std::mem::take(&mut body.delegates);
        if !updates_state {
            self.report(type_diag::state_never_updated(&info.name, info.span));
        }
        let entry = &mut self.program.steps[id.0 as usize];
        entry.needs = needs;
        entry.delegates = delegates;
    }

    /// Adds to each step the needs of the steps it delegates to, and reports delegation cycles.
    fn close_step_needs(&mut self) {
        let count = self.program.steps.len();
        let mut closed: Vec<Option<Vec<(Capability, &'static str)>>> = vec![None; count];
        for start in 0..count {
            let mut path = Vec::new();
            self.collect_needs(StepId(start as u32), &mut path, &mut closed);
        }
        for (index, needs) in closed.into_iter().enumerate() {
            if let Some(needs) = needs {
                self.program.steps[index].needs = needs;
            }
        }
    }

    fn collect_needs(
        &mut self,
        id: StepId,
        path: &mut Vec<StepId>,
        closed: &mut Vec<Option<Vec<(Capability, &'static str)>>>,
    ) -> Vec<(Capability, &'static str)> {
        if let Some(needs) = &closed[id.0 as usize] {
            return needs.clone();
        }
        path.push(id);
        let mut needs = self.program.step(id).needs.clone();
        for (callee, span) in self.program.step(id).delegates.clone() {
            if let Some(position) = path.iter().position(|p| *p == callee) {
                let mut chain: Vec<&str> =
                    path[position..].iter().map(|s| self.program.step(*s).name.as_str()).collect();
                chain.push(self.program.step(callee).name.as_str());
                let chain = chain.join(" -> ");
                let name = self.program.step(callee).name.clone();
                self.report(resolve::recursive_step(&name, span, &chain));
                continue;
            }
            for need in self.collect_needs(callee, path, closed) {
                if !needs.contains(&need) {
                    needs.push(need);
                }
            }
        }
        path.pop();
        closed[id.0 as usize] = Some(needs.clone());
        needs
    }

    fn check_schedule(&mut self, index: usize) {
        let info = self.program.schedules[index].clone();
        let schedule = match &self.program.files[info.file.0 as usize].items[info.item] {
            Item::Schedule(schedule) => schedule.clone(),
            Item::Step(_) => return,
        };
        let mut body = BodyChecker::new(self, info.file, None);
        body.model_params = info.model_params.iter().map(|&i| info.param_locals[i]).collect();
        body.schedule_params_span = schedule.name.span;
        body.push_scope();
        for (param, local) in schedule.params.iter().zip(&info.param_locals) {
            body.check_default(param, &info.params);
            body.bind(&param.name.name, *local);
        }
        body.block(&schedule.body);
        let emits = body.emits;
        let uses = std::mem::take(&mut body.uses);
        if emits == 0 {
            self.report(type_diag::missing_emit(&info.name, schedule.name.span));
        }
        self.program.schedules[index].uses = uses;
    }
}

/// Checks the body of one schedule or step.
struct BodyChecker<'c> {
    cx: &'c mut Checker,
    file: FileId,
    /// The step being checked, `None` in a schedule.
    step: Option<StepId>,
    scopes: Vec<Vec<(String, LocalId)>>,
    loop_depth: u32,
    // Schedules.
    model_params: Vec<LocalId>,
    schedule_params_span: Span,
    uses: Vec<ModelUse>,
    emits: usize,
    // Steps.
    needs: Vec<(Capability, &'static str)>,
    delegates: Vec<(StepId, Span)>,
    state_updated: bool,
}

/// A verb's target after checking.
struct Place {
    ty: Type,
}

/// A parameter as argument binding sees it.
struct ArgParam<'a> {
    name: &'a str,
    has_default: bool,
    /// The type, for messages.
    ty: String,
}

impl<'c> BodyChecker<'c> {
    fn new(cx: &'c mut Checker, file: FileId, step: Option<StepId>) -> BodyChecker<'c> {
        BodyChecker {
            cx,
            file,
            step,
            scopes: Vec::new(),
            loop_depth: 0,
            model_params: Vec::new(),
            schedule_params_span: Span::new(file, 0, 0),
            uses: Vec::new(),
            emits: 0,
            needs: Vec::new(),
            delegates: Vec::new(),
            state_updated: false,
        }
    }

    fn in_step(&self) -> bool {
        self.step.is_some()
    }

    fn report(&mut self, diagnostic: Diagnostic) {
        self.cx.report(diagnostic);
    }

    fn push_scope(&mut self) {
        self.scopes.push(Vec::new());
    }

    fn pop_scope(&mut self) {
        self.scopes.pop();
    }

    fn bind(&mut self, name: &str, local: LocalId) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.push((name.to_string(), local));
        }
    }

    /// Creates the local a name declares and records it for later passes.
    fn declare(&mut self, name: &Ident, ty: Type, kind: LocalKind) -> LocalId {
        let local = self.cx.new_local(&name.name, ty, kind, name.span);
        self.cx.program.name_locals.insert(name.span, local);
        local
    }

    fn lookup(&self, name: &str) -> Option<LocalId> {
        self.scopes.iter().rev().flat_map(|scope| scope.iter().rev()).find(|(n, _)| n == name).map(|(_, id)| *id)
    }

    fn visible_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.scopes.iter().flatten().map(|(n, _)| n.clone()).collect();
        names.extend(builtins::CONSTANTS.iter().map(|(n, _, _)| n.to_string()));
        names.extend(builtins::BUILTINS.iter().filter(|b| b.callable_without_parens()).map(|b| b.name.to_string()));
        names
    }

    fn set_type(&mut self, expr: &Expr, ty: Type) -> Type {
        self.cx.program.expr_types.insert((self.file, expr.id), ty.clone());
        ty
    }

    // -----------------------------------------------------------------------------------------
    // Statements

    fn block(&mut self, block: &Block) {
        self.push_scope();
        for stmt in &block.stmts {
            self.stmt(stmt);
        }
        self.pop_scope();
    }

    fn loop_body(&mut self, body: &Block, bindings: &[(String, LocalId)]) {
        self.loop_depth += 1;
        self.push_scope();
        for (name, local) in bindings {
            self.bind(name, *local);
        }
        self.block(body);
        self.pop_scope();
        self.loop_depth -= 1;
    }

    fn stmt(&mut self, stmt: &Stmt) {
        match &stmt.kind {
            StmtKind::Let { pattern, ty, value } => self.let_stmt(pattern, ty.as_ref(), value),
            StmtKind::Carry { name, ty, init } => {
                if !self.in_step() {
                    self.report(resolve::carry_outside_step(stmt.span));
                }
                let found = self.expr(init);
                let declared = ty.as_ref().map(|t| self.cx.resolve_type(t));
                let local_ty = self.declared_or_found(declared, found, init, "for this carry");
                let local = self.declare(name, local_ty, LocalKind::Carry);
                self.bind(&name.name, local);
            }
            StmtKind::For { vars, iter, body } => {
                let ty = self.expr(iter);
                let var_ty = match ty {
                    Type::Grid => {
                        if vars.len() > 2 {
                            self.report(type_diag::for_pattern(span_of(vars, stmt.span), "grid", 2, vars.len()));
                        }
                        Type::Float
                    }
                    Type::Range => {
                        if vars.len() != 1 {
                            self.report(type_diag::for_pattern(span_of(vars, stmt.span), "range", 1, vars.len()));
                        }
                        Type::Int
                    }
                    Type::Error => Type::Error,
                    other => {
                        self.report(type_diag::mismatch(
                            iter.span,
                            "grid` or `range",
                            &other.to_string(),
                            "to iterate over",
                        ));
                        Type::Error
                    }
                };
                let bindings: Vec<(String, LocalId)> = vars
                    .iter()
                    .map(|v| (v.name.clone(), self.declare(v, var_ty.clone(), LocalKind::LoopVar)))
                    .collect();
                self.loop_body(body, &bindings);
            }
            StmtKind::Repeat { count, body } => {
                self.expect(count, ParamType::Int, "as a repeat count");
                self.loop_body(body, &[]);
            }
            StmtKind::While { cond, body } => {
                self.condition(cond, "while");
                self.loop_body(body, &[]);
            }
            StmtKind::If { branches, else_block } => {
                for (cond, block) in branches {
                    self.condition(cond, "if");
                    self.block(block);
                }
                if let Some(block) = else_block {
                    self.block(block);
                }
            }
            StmtKind::Break | StmtKind::Continue => {
                if self.loop_depth == 0 {
                    let keyword = if matches!(stmt.kind, StmtKind::Break) { "break" } else { "continue" };
                    self.report(resolve::break_outside_loop(keyword, stmt.span));
                }
            }
            StmtKind::Emit { value, .. } => {
                if self.in_step() {
                    self.report(resolve::verb_in_step("emit", stmt.span));
                }
                let ty = self.expr(value);
                if matches!(
                    ty,
                    Type::Model(_)
                        | Type::Grid
                        | Type::Range
                        | Type::Spacing
                        | Type::Sampler
                        | Type::Remask
                        | Type::Tuple(_)
                ) {
                    self.report(type_diag::mismatch(
                        value.span,
                        "tensor",
                        &ty.to_string(),
                        "to emit (emit tensors, tokens or numbers)",
                    ));
                }
                self.emits += 1;
            }
            StmtKind::Refine { target, from, to, step, using } => {
                self.refine(stmt.span, target, from, to, step, using.as_ref())
            }
            StmtKind::Jump { target, from, to, using } => self.jump(stmt.span, target, from, to, using.as_ref()),
            StmtKind::Extend { target, count, how, using } => {
                self.extend(stmt.span, target, count, how, using.as_ref())
            }
            StmtKind::Assign { target, op, value } => self.assign(target, *op, value),
            StmtKind::Expr(expr) => self.expr_stmt(expr),
        }
    }

    fn let_stmt(&mut self, pattern: &LetPattern, ty: Option<&TypeExpr>, value: &Expr) {
        let found = self.expr(value);
        let declared = ty.map(|t| self.cx.resolve_type(t));
        match pattern {
            LetPattern::Name(name) => {
                let local_ty = self.declared_or_found(declared, found, value, "for this binding");
                let local = self.declare(name, local_ty.clone(), LocalKind::Let);
                if matches!(local_ty, Type::Model(_)) {
                    let roots = self.model_roots(value);
                    self.cx.program.model_aliases.insert(local, roots);
                }
                self.bind(&name.name, local);
            }
            LetPattern::Tuple(names) => {
                let span =
                    names.first().map(|n| n.span.to(names.last().map_or(n.span, |l| l.span))).unwrap_or(value.span);
                let items = match &found {
                    Type::Tuple(items) if items.len() == names.len() => items.clone(),
                    Type::Error => vec![Type::Error; names.len()],
                    other => {
                        self.report(type_diag::tuple_pattern(span, &other.to_string(), names.len()));
                        vec![Type::Error; names.len()]
                    }
                };
                for (name, item_ty) in names.iter().zip(items) {
                    if name.name == "_" {
                        continue;
                    }
                    let local = self.declare(name, item_ty, LocalKind::Let);
                    self.bind(&name.name, local);
                }
            }
        }
    }

    /// The type of a new variable: the declared one (checking the value fits it), else the value's.
    fn declared_or_found(&mut self, declared: Option<Type>, found: Type, value: &Expr, context: &str) -> Type {
        match declared {
            Some(declared) => {
                if !found.fits(&declared) {
                    self.report(type_diag::mismatch(value.span, &declared.to_string(), &found.to_string(), context));
                }
                declared
            }
            None => found,
        }
    }

    fn condition(&mut self, cond: &Expr, construct: &str) {
        let ty = self.expr(cond);
        match ty {
            Type::Bool | Type::Error => {}
            Type::Tensor => self.report(type_diag::tensor_condition(cond.span, construct)),
            other => self.report(type_diag::mismatch(
                cond.span,
                "bool",
                &other.to_string(),
                &format!("as the condition of `{construct}`"),
            )),
        }
    }

    fn assign(&mut self, target: &Ident, op: AssignOp, value: &Expr) {
        let found = self.expr(value);
        let Some(local_id) = self.lookup(&target.name) else {
            let names = self.visible_names();
            let suggestion = suggest(&target.name, names.iter().map(String::as_str));
            self.report(resolve::undeclared_assignment(&target.name, target.span, suggestion.as_deref()));
            return;
        };
        let local = self.cx.program.local(local_id).clone();
        if let Some(reason) = local.read_only_reason() {
            self.report(resolve::assign_to_read_only(&target.name, reason, target.span, local.span));
            return;
        }
        self.cx.program.name_locals.insert(target.span, local_id);
        if local.kind == LocalKind::State {
            self.state_updated = true;
        }
        let result = match op.binary() {
            None => found,
            Some(binary) => match arithmetic_result(binary, &local.ty, &found) {
                Some(ty) => ty,
                None => {
                    self.report(type_diag::invalid_operands(
                        target.span.to(value.span),
                        binary.symbol(),
                        &local.ty.to_string(),
                        &found.to_string(),
                    ));
                    Type::Error
                }
            },
        };
        if !result.fits(&local.ty) {
            self.report(type_diag::mismatch(
                value.span,
                &local.ty.to_string(),
                &result.to_string(),
                &format!("to assign to `{}`", target.name),
            ));
        }
    }

    fn expr_stmt(&mut self, expr: &Expr) {
        if let ExprKind::Call { callee, args } = &expr.kind
            && let Some(step) = self.cx.find_step(self.file, &callee.name)
        {
            if self.in_step() {
                self.delegate(expr, step, args);
                return;
            }
            // Outside a step this reports that steps run through `refine`.
            self.expr(expr);
            return;
        }
        let ty = self.expr(expr);
        if !ty.is_error() {
            self.report(type_diag::useless_expression(expr.span));
        }
    }

    /// A step calling another step as a statement: it runs with the same state, times and model.
    fn delegate(&mut self, expr: &Expr, callee: StepId, args: &[Arg]) {
        let info = self.cx.program.step(callee).clone();
        let bound = self.step_args(&info, args, expr.span);
        let own_state = self.step.map(|s| self.cx.program.step(s).state.clone()).unwrap_or(Type::Tensor);
        if !info.state.fits(&own_state) {
            self.report(type_diag::state_type_mismatch(
                &info.name,
                &info.state.to_string(),
                &own_state.to_string(),
                expr.span,
                info.state_span,
            ));
        }
        self.cx.program.step_refs.insert(expr.span, (callee, bound));
        self.delegates.push((callee, expr.span));
        self.state_updated = true;
    }

    /// Binds and checks the arguments of a step reference against the step's parameters.
    fn step_args(&mut self, info: &StepInfo, args: &[Arg], span: Span) -> BoundArgs {
        let params: Vec<ArgParam> = info
            .params
            .iter()
            .map(|p| ArgParam { name: &p.name, has_default: p.default.is_some(), ty: p.ty.to_string() })
            .collect();
        let per_param = self.bind_args(&info.name, &params, false, args, span);
        for (param, given) in info.params.iter().zip(&per_param) {
            for arg in given {
                let ty = self.expr(&arg.value);
                if !ty.fits(&param.ty) {
                    self.report(type_diag::mismatch(
                        arg.value.span,
                        &param.ty.to_string(),
                        &ty.to_string(),
                        &format!("for `{}` of step `{}`", param.name, info.name),
                    ));
                }
            }
        }
        BoundArgs { per_param: per_param.iter().map(|given| given.iter().map(|a| a.value.id).collect()).collect() }
    }

    /// Matches arguments to parameters by position, then by name, reporting every mismatch.
    fn bind_args<'a>(
        &mut self,
        callee: &str,
        params: &[ArgParam],
        variadic: bool,
        args: &'a [Arg],
        call_span: Span,
    ) -> Vec<Vec<&'a Arg>> {
        let mut per_param: Vec<Vec<&Arg>> = vec![Vec::new(); params.len()];
        let mut given_at: Vec<Option<Span>> = vec![None; params.len()];
        let mut seen_named = false;
        let mut positional = 0;
        for arg in args {
            match &arg.name {
                None => {
                    if seen_named {
                        self.report(type_diag::positional_after_named(arg.span));
                        self.expr(&arg.value);
                        continue;
                    }
                    let index = if variadic && positional >= params.len() {
                        params.len().saturating_sub(1)
                    } else {
                        positional
                    };
                    positional += 1;
                    if index >= params.len() {
                        self.report(type_diag::too_many_arguments(
                            callee,
                            params.len(),
                            args.iter().filter(|a| a.name.is_none()).count(),
                            arg.span,
                        ));
                        self.expr(&arg.value);
                        continue;
                    }
                    per_param[index].push(arg);
                    given_at[index].get_or_insert(arg.span);
                }
                Some(name) => {
                    seen_named = true;
                    let Some(index) = params.iter().position(|p| p.name == name.name) else {
                        let names: Vec<&str> = params.iter().map(|p| p.name).collect();
                        let suggestion = suggest(&name.name, names.iter().copied());
                        self.report(type_diag::unknown_argument(
                            callee,
                            &name.name,
                            name.span,
                            &names,
                            suggestion.as_deref(),
                        ));
                        self.expr(&arg.value);
                        continue;
                    };
                    if let Some(first) = given_at[index] {
                        self.report(type_diag::duplicate_argument(&name.name, arg.span, first));
                        self.expr(&arg.value);
                        continue;
                    }
                    per_param[index].push(arg);
                    given_at[index] = Some(arg.span);
                }
            }
        }
        for (index, param) in params.iter().enumerate() {
            if per_param[index].is_empty() && !param.has_default {
                self.report(type_diag::missing_argument(callee, param.name, &param.ty, call_span));
            }
        }
        per_param
    }

    // -----------------------------------------------------------------------------------------
    // Verbs

    /// Checks a verb's target: a mutable variable, or `.tail(k)` of one.
    fn place(&mut self, verb: &str, target: &Expr) -> Place {
        match &target.kind {
            ExprKind::Name(name) => {
                let ty = self.expr(target);
                if let Some(id) = self.lookup(&name.name) {
                    let local = self.cx.program.local(id).clone();
                    if let Some(reason) = local.read_only_reason() {
                        self.report(resolve::assign_to_read_only(&name.name, reason, name.span, local.span));
                    }
                }
                Place { ty }
            }
            // `seq.tail(k)`; other methods are reported as unknown by `expr`.
            ExprKind::Method { receiver, .. } if matches!(receiver.kind, ExprKind::Name(_)) => {
                let ty = self.expr(target);
                Place { ty }
            }
            _ => {
                self.expr(target);
                self.report(type_diag::not_a_place(verb, target.span));
                Place { ty: Type::Error }
            }
        }
    }

    fn time(&mut self, expr: &Expr, what: &str) {
        self.expect(expr, ParamType::Time, what);
    }

    /// Resolves the model a verb uses: its `using` expression, or the schedule's only model.
    fn verb_model(&mut self, verb: &str, stmt_span: Span, using: Option<&Expr>) -> Vec<LocalId> {
        if let Some(model) = using {
            let ty = self.expr(model);
            if !matches!(ty, Type::Model(_) | Type::Error) {
                self.report(type_diag::mismatch(model.span, "model", &ty.to_string(), "after `using`"));
                return Vec::new();
            }
            let roots = self.model_roots(model);
            if let Some(first) = roots.first() {
                self.cx.program.verb_models.insert(stmt_span, *first);
            }
            return roots;
        }
        match self.model_params.as_slice() {
            [] => {
                let span = self.schedule_params_span;
                self.report(resolve::no_model(verb, stmt_span, span));
                Vec::new()
            }
            [only] => {
                self.cx.program.verb_models.insert(stmt_span, *only);
                vec![*only]
            }
            several => {
                let names: Vec<String> = several.iter().map(|id| self.cx.program.local(*id).name.clone()).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                self.report(resolve::ambiguous_model(verb, stmt_span, &names));
                Vec::new()
            }
        }
    }

    /// The model parameters a model expression wraps.
    fn model_roots(&self, expr: &Expr) -> Vec<LocalId> {
        match &expr.kind {
            ExprKind::Name(_) => match self.cx.program.resolutions.get(&(self.file, expr.id)) {
                Some(Resolution::Local(id)) => match self.cx.program.model_aliases.get(id) {
                    Some(roots) => roots.clone(),
                    None if self.cx.program.local(*id).kind == LocalKind::ScheduleParam => vec![*id],
                    None => Vec::new(),
                },
                _ => Vec::new(),
            },
            ExprKind::Call { callee, args } if matches!(callee.name.as_str(), "cfg" | "condition") => {
                let model_arg = args.iter().find(|a| a.name.as_ref().is_none_or(|n| n.name == "model"));
                model_arg.map(|a| self.model_roots(&a.value)).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Records that `roots` must provide `capability`, checking declared kinds now.
    fn require(&mut self, roots: &[LocalId], capability: Capability, span: Span, what: String, jumps_to_data: bool) {
        for &model in roots {
            let local = self.cx.program.local(model).clone();
            let model_use = ModelUse { model, capability, span, what: what.clone(), jumps_to_data };
            if let Type::Model(Some(kind)) = local.ty {
                let origin = (local.span, format!("declared `model<{kind}>` here"));
                if let Some(d) = capability_diagnostic(&model_use, &local.name, kind, Some(origin)) {
                    self.report(d);
                }
            }
            self.uses.push(model_use);
        }
    }

    fn refine(&mut self, span: Span, target: &Expr, from: &Expr, to: &Expr, step_ref: &StepRef, using: Option<&Expr>) {
        if self.in_step() {
            self.report(resolve::verb_in_step("refine", span));
            // Reported once: the step's state is considered updated by the verb.
            self.state_updated = true;
        }
        let place = self.place("refine", target);
        self.time(from, "as the start time of `refine`");
        self.time(to, "as the end time of `refine`");
        let Some(step) = self.cx.find_step(self.file, &step_ref.name.name) else {
            let names = self.cx.step_names(self.file);
            let suggestion = suggest(&step_ref.name.name, names.iter().map(String::as_str));
            self.report(resolve::unknown_step(&step_ref.name.name, step_ref.name.span, suggestion.as_deref()));
            for arg in step_ref.args.iter().flatten() {
                self.expr(&arg.value);
            }
            if let Some(model) = using {
                self.expr(model);
            }
            return;
        };
        let info = self.cx.program.step(step).clone();
        let bound = self.step_args(&info, step_ref.args.as_deref().unwrap_or(&[]), step_ref.span);
        self.cx.program.step_refs.insert(step_ref.span, (step, bound));
        if !place.ty.fits(&info.state) {
            self.report(type_diag::state_type_mismatch(
                &info.name,
                &info.state.to_string(),
                &place.ty.to_string(),
                target.span,
                info.state_span,
            ));
            return;
        }
        if self.in_step() {
            return;
        }
        let roots = self.verb_model("refine", span, using);
        for (capability, builtin) in info.needs.clone() {
            let what = format!("step `{}` (it calls `{builtin}`)", info.name);
            self.require(&roots, capability, step_ref.span, what, false);
        }
    }

    fn jump(&mut self, span: Span, target: &Expr, from: &Expr, to: &Expr, using: Option<&Expr>) {
        if self.in_step() {
            self.report(resolve::verb_in_step("jump", span));
            // Reported once: the step's state is considered updated by the verb.
            self.state_updated = true;
        }
        let place = self.place("jump", target);
        if !matches!(place.ty, Type::Tensor | Type::Error) {
            self.report(type_diag::mismatch(target.span, "tensor", &place.ty.to_string(), "as the state of `jump`"));
        }
        self.time(from, "as the start time of `jump`");
        self.time(to, "as the end time of `jump`");
        if self.in_step() {
            return;
        }
        let roots = self.verb_model("jump", span, using);
        let to_data = matches!(const_number(to), Some(v) if v == 0.0);
        self.require(&roots, Capability::Jump, span, "`jump`".to_string(), to_data);
    }

    fn extend(&mut self, span: Span, target: &Expr, count: &Expr, how: &ExtendHow, using: Option<&Expr>) {
        if self.in_step() {
            self.report(resolve::verb_in_step("extend", span));
            // Reported once: the step's state is considered updated by the verb.
            self.state_updated = true;
        }
        let place = self.place("extend", target);
        if !matches!(place.ty, Type::Tokens | Type::Tensor | Type::Error) {
            self.report(type_diag::extend_target(target.span, &place.ty.to_string()));
        }
        self.expect(count, ParamType::Int, "as the number of new positions");
        match how {
            ExtendHow::With(sampler) => {
                let ty = self.expr(sampler);
                if !matches!(ty, Type::Sampler | Type::Error) {
                    self.report(type_diag::mismatch(
                        sampler.span,
                        "sampler",
                        &ty.to_string(),
                        "after `extend ... with`",
                    ));
                }
                if place.ty == Type::Tensor {
                    self.report(type_diag::extend_mode_type(sampler.span, "with", "tensor"));
                }
                if self.in_step() {
                    return;
                }
                let capability =
                    if self.is_builtin_call(sampler, "heads") { Capability::Heads } else { Capability::NextToken };
                let roots = self.verb_model("extend", span, using);
                self.require(&roots, capability, span, "`extend ... with`".to_string(), false);
            }
            ExtendHow::As(word) => {
                let expected = match word.name.as_str() {
                    "mask" | "guess" => Type::Tokens,
                    "noise" => Type::Tensor,
                    other => {
                        let suggestion = suggest(other, ["mask", "guess", "noise"]);
                        self.report(type_diag::extend_mode(word.span, other, suggestion.as_deref()));
                        Type::Error
                    }
                };
                if !place.ty.fits(&expected) && !expected.is_error() {
                    self.report(type_diag::extend_mode_type(word.span, &word.name, &place.ty.to_string()));
                }
                if let Some(model) = using {
                    self.expr(model);
                }
            }
        }
    }

    fn is_builtin_call(&self, expr: &Expr, name: &str) -> bool {
        match self.cx.program.resolutions.get(&(self.file, expr.id)) {
            Some(Resolution::Option(b)) => b.name == name,
            _ => {
                matches!(self.cx.program.callees.get(&(self.file, expr.id)), Some(Callee::Builtin(b)) if b.name == name)
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Expressions

    fn expect(&mut self, expr: &Expr, expected: ParamType, context: &str) -> Type {
        let ty = self.expr(expr);
        if !expected.accepts(&ty) {
            self.report(type_diag::mismatch(expr.span, expected.name(), &ty.to_string(), context));
        }
        ty
    }

    /// Checks a parameter's default value.
    #[allow(clippy::collapsible_match, reason = "a model's default must not fall through to the type comparison arm")]
    fn check_default(&mut self, param: &Param, sigs: &[ParamSig]) {
        let Some(default) = &param.default else { return };
        let Some(sig) = sigs.iter().find(|s| s.name == param.name.name) else { return };
        // Defaults are evaluated before the run, where no variable exists yet.
        let saved = std::mem::take(&mut self.scopes);
        let found = self.expr(default);
        self.scopes = saved;
        match &sig.ty {
            Type::Model(_) => {
                if !matches!(default.kind, ExprKind::Str(_)) && !found.is_error() {
                    self.report(type_diag::invalid_default(
                        default.span,
                        "a model's default is a checkpoint path or an analytic spec string",
                    ));
                }
            }
            ty if !found.fits(ty) => {
                self.report(type_diag::mismatch(
                    default.span,
                    &ty.to_string(),
                    &found.to_string(),
                    &format!("as the default of `{}`", sig.name),
                ));
            }
            _ => {}
        }
    }

    fn expr(&mut self, expr: &Expr) -> Type {
        let ty = self.expr_inner(expr);
        self.set_type(expr, ty)
    }

    fn expr_inner(&mut self, expr: &Expr) -> Type {
        match &expr.kind {
            ExprKind::Int(_) => Type::Int,
            ExprKind::Float(_) => Type::Float,
            ExprKind::Bool(_) => Type::Bool,
            ExprKind::Str(_) => Type::Str,
            ExprKind::Error => Type::Error,
            ExprKind::Name(name) => self.name(expr, name),
            ExprKind::Call { callee, args } => self.call(expr, callee, args),
            ExprKind::Method { receiver, method, args } => {
                let receiver_ty = self.expr(receiver);
                if method.name != "tail" {
                    self.report(resolve::unknown_method(&method.name, &receiver_ty.to_string(), method.span));
                    for arg in args.iter().flatten() {
                        self.expr(&arg.value);
                    }
                    return Type::Error;
                }
                let params = [ArgParam { name: "k", has_default: false, ty: "int".to_string() }];
                let given = self.bind_args("tail", &params, false, args.as_deref().unwrap_or(&[]), expr.span);
                for arg in given.iter().flatten() {
                    self.expect(&arg.value, ParamType::Int, "as the length of `.tail(k)`");
                }
                match receiver_ty {
                    Type::Tokens | Type::Tensor | Type::Error => receiver_ty,
                    other => {
                        self.report(type_diag::mismatch(
                            receiver.span,
                            "tokens",
                            &other.to_string(),
                            "before `.tail(k)`",
                        ));
                        Type::Error
                    }
                }
            }
            ExprKind::Unary { op, operand } => {
                let ty = self.expr(operand);
                match (op, &ty) {
                    (_, Type::Error) => Type::Error,
                    (UnaryOp::Neg, Type::Int | Type::Float | Type::Tensor) => ty,
                    (UnaryOp::Not, Type::Bool) => Type::Bool,
                    _ => {
                        self.report(type_diag::invalid_operand(expr.span, op.symbol(), &ty.to_string()));
                        Type::Error
                    }
                }
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let left = self.expr(lhs);
                let right = self.expr(rhs);
                if left.is_error() || right.is_error() {
                    return Type::Error;
                }
                let result = if op.is_logical() {
                    (left == Type::Bool && right == Type::Bool).then_some(Type::Bool)
                } else if op.is_comparison() {
                    let numbers = left.is_host_number() && right.is_host_number();
                    let bools = left == Type::Bool && right == Type::Bool && matches!(op, BinaryOp::Eq | BinaryOp::Ne);
                    (numbers || bools).then_some(Type::Bool)
                } else {
                    arithmetic_result(*op, &left, &right)
                };
                match result {
                    Some(ty) => ty,
                    None => {
                        self.report(type_diag::invalid_operands(
                            expr.span,
                            op.symbol(),
                            &left.to_string(),
                            &right.to_string(),
                        ));
                        Type::Error
                    }
                }
            }
            ExprKind::Tuple(items) => Type::Tuple(items.iter().map(|item| self.expr(item)).collect()),
        }
    }

    fn name(&mut self, expr: &Expr, name: &Ident) -> Type {
        if let Some(local) = self.lookup(&name.name) {
            self.cx.program.resolutions.insert((self.file, expr.id), Resolution::Local(local));
            return self.cx.program.local(local).ty.clone();
        }
        if let Some(value) = builtins::constant(&name.name) {
            self.cx.program.resolutions.insert((self.file, expr.id), Resolution::Constant(value));
            return Type::Float;
        }
        if let Some(builtin) = builtins::lookup(&name.name) {
            if builtin.callable_without_parens() {
                self.cx.program.resolutions.insert((self.file, expr.id), Resolution::Option(builtin));
                return returns_type(builtin.returns, &[]);
            }
            self.report(type_diag::not_a_value(&name.name, "function", name.span));
            return Type::Error;
        }
        if self.cx.find_step(self.file, &name.name).is_some() {
            self.report(type_diag::not_a_value(&name.name, "step", name.span));
            return Type::Error;
        }
        let names = self.visible_names();
        let suggestion = suggest(&name.name, names.iter().map(String::as_str));
        self.report(resolve::unknown_name(&name.name, name.span, suggestion.as_deref()));
        Type::Error
    }

    fn call(&mut self, expr: &Expr, callee: &Ident, args: &[Arg]) -> Type {
        let Some(builtin) = builtins::lookup(&callee.name) else {
            let is_step = self.cx.find_step(self.file, &callee.name).is_some();
            let candidates: Vec<&str> = builtins::BUILTINS.iter().map(|b| b.name).collect();
            let suggestion = suggest(&callee.name, candidates);
            self.report(resolve::unknown_function(&callee.name, callee.span, suggestion.as_deref(), is_step));
            for arg in args {
                self.expr(&arg.value);
            }
            return Type::Error;
        };
        self.cx.program.callees.insert((self.file, expr.id), Callee::Builtin(builtin));
        match builtin.context {
            Context::StepOnly if !self.in_step() => self.report(resolve::step_only_builtin(builtin.name, callee.span)),
            Context::ScheduleOnly if self.in_step() => {
                self.report(resolve::schedule_only_builtin(builtin.name, callee.span))
            }
            _ => {}
        }
        if let Some(capability) = builtin.needs
            && self.in_step()
            && !self.needs.iter().any(|(c, _)| *c == capability)
        {
            self.needs.push((capability, builtin.name));
        }
        // Arrows: only the first argument of `grid`, which must be one.
        for (index, arg) in args.iter().enumerate() {
            let allowed = builtin.name == "grid" && index == 0 && arg.name.is_none();
            if arg.arrow_to.is_some() && !allowed {
                self.report(type_diag::arrow_outside_grid(arg.span, builtin.name));
            }
        }
        let params: Vec<ArgParam> = builtin
            .params
            .iter()
            .map(|p| ArgParam { name: p.name, has_default: p.default.is_some(), ty: p.ty.name().to_string() })
            .collect();
        let given = self.bind_args(builtin.name, &params, builtin.variadic, args, expr.span);
        let mut arg_types: Vec<Type> = Vec::new();
        for (param, args_for_param) in builtin.params.iter().zip(&given) {
            for arg in args_for_param {
                if builtin.name == "grid" && param.name == "range" {
                    self.grid_range(arg);
                    continue;
                }
                let ty = self.expect(&arg.value, param.ty, &format!("for `{}` of `{}`", param.name, builtin.name));
                if matches!(param.ty, ParamType::Numeric | ParamType::Time) {
                    arg_types.push(ty);
                }
            }
        }
        if builtin.name == "times" {
            self.check_times_decrease(args);
        }
        if matches!(builtin.name, "propose" | "verify")
            && !self.in_step()
            && let Some(model_arg) = given.first().and_then(|g| g.first())
        {
            let with_heads =
                given.get(3).and_then(|g| g.first()).is_some_and(|a| self.is_builtin_call(&a.value, "heads"));
            let capability = if with_heads { Capability::Heads } else { Capability::NextToken };
            let roots = self.model_roots(&model_arg.value);
            self.require(&roots, capability, expr.span, format!("`{}`", builtin.name), false);
        }
        self.cx.program.bound_args.insert(
            (self.file, expr.id),
            BoundArgs { per_param: given.iter().map(|g| g.iter().map(|a| a.value.id).collect()).collect() },
        );
        returns_type(builtin.returns, &arg_types)
    }

    /// Checks the `a -> b` argument of `grid`: two host numbers, decreasing when both are known.
    fn grid_range(&mut self, arg: &Arg) {
        self.expect(&arg.value, ParamType::Float, "as the start of a grid");
        let Some(to) = &arg.arrow_to else {
            self.report(type_diag::mismatch(
                arg.value.span,
                "a -> b",
                "a single value",
                "as the time range of `grid` (write `1 -> 0`)",
            ));
            return;
        };
        self.expect(to, ParamType::Float, "as the end of a grid");
        if let (Some(a), Some(b)) = (const_number(&arg.value), const_number(to))
            && a <= b
        {
            self.report(type_diag::grid_runs_backwards(arg.span, a, b));
        }
    }

    fn check_times_decrease(&mut self, args: &[Arg]) {
        let mut previous: Option<f64> = None;
        for arg in args {
            let Some(value) = const_number(&arg.value) else {
                previous = None;
                continue;
            };
            if let Some(prev) = previous
                && value >= prev
            {
                self.report(type_diag::times_not_decreasing(arg.value.span, prev, value));
            }
            previous = Some(value);
        }
    }
}

fn span_of(vars: &[Ident], fallback: Span) -> Span {
    match (vars.first(), vars.last()) {
        (Some(first), Some(last)) => first.span.to(last.span),
        _ => fallback,
    }
}

/// The value of a literal number, possibly negated.
pub fn const_number(expr: &Expr) -> Option<f64> {
    match &expr.kind {
        ExprKind::Int(v) => Some(*v as f64),
        ExprKind::Float(v) => Some(*v),
        ExprKind::Unary { op: UnaryOp::Neg, operand } => const_number(operand).map(|v| -v),
        _ => None,
    }
}

/// The type of `lhs op rhs` for arithmetic operators, `None` when undefined.
fn arithmetic_result(op: BinaryOp, lhs: &Type, rhs: &Type) -> Option<Type> {
    if lhs.is_error() || rhs.is_error() {
        return Some(Type::Error);
    }
    if !lhs.is_numeric() || !rhs.is_numeric() {
        return None;
    }
    let tensor = *lhs == Type::Tensor || *rhs == Type::Tensor;
    Some(match op {
        _ if tensor && op == BinaryOp::Rem => return None,
        _ if tensor => Type::Tensor,
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Rem if *lhs == Type::Int && *rhs == Type::Int => {
            Type::Int
        }
        _ => Type::Float,
    })
}

fn returns_type(returns: Returns, numeric_args: &[Type]) -> Type {
    match returns {
        Returns::Int => Type::Int,
        Returns::Float => Type::Float,
        Returns::Bool => Type::Bool,
        Returns::Tensor => Type::Tensor,
        Returns::Tokens => Type::Tokens,
        Returns::Model => Type::Model(None),
        Returns::Spacing => Type::Spacing,
        Returns::Sampler => Type::Sampler,
        Returns::Remask => Type::Remask,
        Returns::Grid => Type::Grid,
        Returns::Range => Type::Range,
        Returns::TensorPair => Type::Tuple(vec![Type::Tensor, Type::Tensor]),
        Returns::TokensAndTensor => Type::Tuple(vec![Type::Tokens, Type::Tensor]),
        Returns::NumericLikeArgs => {
            if numeric_args.contains(&Type::Tensor) {
                Type::Tensor
            } else if numeric_args.iter().any(|t| t.is_error()) {
                Type::Error
            } else {
                Type::Float
            }
        }
    }
}
