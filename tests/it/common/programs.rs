//! A generator of random, well-typed `.sched` programs for differential testing.
//!
//! Each program has one schedule, `main`, with one or two continuous models (their analytic specs
//! are the parameters' defaults), a few host parameters, and sometimes one user-defined `step`
//! with `carry` state. Its body mixes elementwise arithmetic on tensors and host numbers, the math
//! builtins, reductions, noise, `let`, assignments, `if`/`else if`/`else`, `for` loops over grids
//! of every spacing, explicit `times(...)` and ranges, `repeat`, counter-driven and time-marching
//! `while` loops, `break`, `continue`, `refine` with prelude and user steps (through `cfg(...)` and
//! `condition(...)` when the model is class-conditional), `jump` with two-time and consistency
//! models, and `emit` of tensors and host values. Every loop is bounded, so every program
//! terminates, and the generator keeps an upper bound on the model calls of one run (at most
//! [`MAX_MODEL_CALLS`]) so that a run takes milliseconds.
//!
//! The strategy draws a list of numbers and the generator reads its decisions from it, one number
//! per decision, smaller numbers meaning earlier options. A decision read past the end of the list
//! takes option 0, which is always the simplest (no more statements, a literal, the first model),
//! so shrinking the list (shorter, then smaller numbers) shrinks the program.

use std::fmt;

use proptest::prelude::*;

/// The longest list of decisions the strategy draws; a program ends where its list does, so this
/// bounds the size of programs (and the time to compile them).
const MAX_CHOICES: usize = 300;

/// An upper bound on the model evaluations of one run of a generated program.
pub const MAX_MODEL_CALLS: u32 = 20;

/// A generated `.sched` source; its schedule is [`SCHEDULE`].
pub struct GeneratedProgram {
    pub source: String,
}

/// The name of the schedule every generated program defines.
pub const SCHEDULE: &str = "main";

impl fmt::Debug for GeneratedProgram {
    // Failures print the program as it would be written in a file, not as an escaped string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n{}", self.source)
    }
}

/// Random well-typed programs.
pub fn program() -> impl Strategy<Value = GeneratedProgram> {
    proptest::collection::vec(any::<u32>(), 0..MAX_CHOICES).prop_map(|choices| generate(&choices))
}

/// The program the generator writes for one list of decisions.
pub fn generate(choices: &[u32]) -> GeneratedProgram {
    let mut generator = Generator::new(choices);
    generator.models();
    if generator.below(3) > 0 {
        generator.user_step();
    }
    generator.schedule();
    GeneratedProgram { source: generator.out }
}

/// The type of a value the generator can write an expression for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Int,
    Float,
    Bool,
    Tensor,
}

/// A variable in scope.
#[derive(Clone, Debug)]
struct Var {
    name: String,
    ty: Ty,
    /// Whether generated statements may assign it; loop variables, times, parameters, loop
    /// counters and the state of a time-marching loop are read-only for them.
    assignable: bool,
}

/// A model parameter of the schedule.
#[derive(Clone, Debug)]
struct Model {
    name: &'static str,
    /// A two-time model (flow map, MeanFlow, shortcut): it jumps anywhere and has `flow`.
    two_time: bool,
    /// A consistency model: it jumps only to data.
    consistency: bool,
    /// A class-conditional model (the `classes` mixture): `cfg` and `condition` apply.
    classes: bool,
}

/// The user-defined step of the program.
#[derive(Clone, Debug)]
struct UserStep {
    name: String,
    /// Parameters: name, type and whether it has a default.
    params: Vec<(String, Ty, bool)>,
    /// An upper bound on the model calls of one call of the step.
    calls: u32,
    /// Whether it uses `flow`, which only two-time models have.
    flow: bool,
}

/// Where statements are being generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Schedule,
    Step,
}

/// The data distribution the analytic models share, which fixes the sample shape.
#[derive(Clone, Copy, Debug)]
enum Data {
    Gmm(&'static str),
    Gaussian { dim: usize, length: Option<usize> },
}

impl Data {
    fn spec(self, kind: &str, interpolant: &str) -> String {
        match self {
            Data::Gmm(preset) => format!("analytic:gmm(preset={preset}, kind={kind}, interpolant={interpolant})"),
            Data::Gaussian { dim, length: None } => {
                format!("analytic:gaussian(dim={dim}, kind={kind}, interpolant={interpolant})")
            }
            Data::Gaussian { dim, length: Some(length) } => {
                format!("analytic:gaussian(dim={dim}, length={length}, kind={kind}, interpolant={interpolant})")
            }
        }
    }

    /// The Gaussian with the same sample shape: its flow map is exact and cheap, while a mixture's
    /// is an adaptive ODE solve (milliseconds per call in the dev profile).
    fn gaussian_twin(self) -> Data {
        match self {
            Data::Gmm(_) => Data::Gaussian { dim: 2, length: None },
            gaussian => gaussian,
        }
    }
}

const LOCAL_KINDS: &[&str] = &["eps", "x0", "v", "velocity", "score"];
const TWO_TIME_KINDS: &[&str] = &["flow_map", "mean_flow", "shortcut"];
const INTERPOLANTS: &[&str] =
    &["rectified_flow", "vp_cosine", "scaled_linear", "linear", "squaredcos_cap_v2", "ve", "trigflow"];
const FLOAT_LITERALS: &[&str] = &["0.5", "1.0", "2.0", "0.25", "1.5", "0.1", "3.0", "0.75", "1e-3", "2.5E+1", "0.0"];
const INT_LITERALS: &[&str] = &["1", "2", "0", "3", "4", "5", "7", "10"];
/// Times a verb may start or end at, in decreasing order.
const TIMES: &[&str] = &["1", "0.9", "0.75", "0.6", "0.5", "0.3", "0.25", "0.1", "0"];

/// Reads decisions and writes the program.
struct Generator<'a> {
    choices: &'a [u32],
    next_choice: usize,
    out: String,
    indent: usize,
    fresh: usize,
    scopes: Vec<Vec<Var>>,
    /// The enclosing loops, innermost last: whether `continue` may be used in each (not in a
    /// time-marching loop, whose advance is its last statement).
    loops: Vec<bool>,
    /// Model calls the rest of the program may still make, at most.
    calls_left: u32,
    /// How often the statement being generated may run: the product of the enclosing loops' bounds.
    runs: u32,
    place: Place,
    /// In a step: model call sites written so far (an upper bound of one call's evaluations).
    step_calls: u32,
    /// In a step: whether it may use `flow`.
    step_flow: bool,
    data: Data,
    models: Vec<Model>,
    /// The model declarations, in order (`name: type = "spec"`).
    model_params: Vec<String>,
    /// `let`-bound `cfg(...)` or `condition(...)` wrappers: name and calls per evaluation.
    wrappers: Vec<(String, u32)>,
    step: Option<UserStep>,
    /// Int parameters of the schedule with their (never changed) values, for loop bounds.
    int_params: Vec<(String, i64)>,
    /// Float parameters of the schedule in (0.25, 1], for grid starts.
    time_params: Vec<String>,
    outputs: usize,
}

impl<'a> Generator<'a> {
    fn new(choices: &'a [u32]) -> Self {
        Generator {
            choices,
            next_choice: 0,
            out: String::new(),
            indent: 0,
            fresh: 0,
            scopes: vec![Vec::new()],
            loops: Vec::new(),
            calls_left: MAX_MODEL_CALLS,
            runs: 1,
            place: Place::Schedule,
            step_calls: 0,
            step_flow: false,
            data: Data::Gmm("eight"),
            models: Vec::new(),
            model_params: Vec::new(),
            wrappers: Vec::new(),
            step: None,
            int_params: Vec::new(),
            time_params: Vec::new(),
            outputs: 0,
        }
    }

    // ---------------------------------------------------------------------------------------
    // Decisions

    /// A number below `n`; 0 once the decisions have run out. It grows with the drawn number
    /// (scaled, not taken modulo `n`), so a smaller number is a simpler option.
    fn below(&mut self, n: usize) -> usize {
        let value = self.choices.get(self.next_choice).copied().unwrap_or(0);
        self.next_choice += 1;
        ((u64::from(value) * n as u64) >> 32) as usize
    }

    /// True about once in `n` decisions; false once the decisions have run out.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == n - 1
    }

    /// Whether every decision has been read: blocks end there, so a shorter list is a shorter
    /// program.
    fn exhausted(&self) -> bool {
        self.next_choice >= self.choices.len()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// An index drawn with the given weights; 0 once the decisions have run out.
    fn weighted(&mut self, weights: &[usize]) -> usize {
        let mut roll = self.below(weights.iter().sum());
        for (index, &weight) in weights.iter().enumerate() {
            if roll < weight {
                return index;
            }
            roll -= weight;
        }
        0
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.fresh += 1;
        format!("{prefix}{}", self.fresh)
    }

    // ---------------------------------------------------------------------------------------
    // Text and scopes

    fn line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.out.push_str("    ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// Writes `header {` and opens a scope holding `vars`.
    fn open(&mut self, header: &str, vars: Vec<Var>) {
        self.line(&format!("{header} {{"));
        self.indent += 1;
        self.scopes.push(vars);
    }

    fn close(&mut self) {
        self.scopes.pop();
        self.indent -= 1;
        self.line("}");
    }

    fn declare(&mut self, name: &str, ty: Ty, assignable: bool) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.push(Var { name: name.to_string(), ty, assignable });
        }
    }

    fn vars(&self, ty: Ty, assignable_only: bool) -> Vec<String> {
        self.scopes
            .iter()
            .flatten()
            .filter(|v| v.ty == ty && (v.assignable || !assignable_only))
            .map(|v| v.name.clone())
            .collect()
    }

    fn var(&mut self, ty: Ty) -> Option<String> {
        let vars = self.vars(ty, false);
        if vars.is_empty() { None } else { Some(vars[self.below(vars.len())].clone()) }
    }

    /// Block nesting below the item's body.
    fn depth(&self) -> usize {
        self.scopes.len().saturating_sub(2)
    }

    // ---------------------------------------------------------------------------------------
    // Models

    fn models(&mut self) {
        self.data = match self.below(6) {
            0 => Data::Gmm("eight"),
            1 => Data::Gmm("classes"),
            2 => Data::Gaussian { dim: 2, length: None },
            3 => Data::Gaussian { dim: 3, length: None },
            4 => Data::Gaussian { dim: 2, length: Some(3) },
            _ => Data::Gmm("checker"),
        };
        // 0: a local field; 1: a two-time model; 2: both; 3: a consistency model; 4: a local
        // field and a consistency model; 5: a two-time model first (the grids use its interpolant).
        match self.below(6) {
            0 => self.local_field(),
            1 => self.jumper(false),
            2 => {
                self.local_field();
                self.jumper(false);
            }
            3 => self.jumper(true),
            4 => {
                self.local_field();
                self.jumper(true);
            }
            _ => {
                self.jumper(false);
                self.local_field();
            }
        }
    }

    fn local_field(&mut self) {
        let kind = self.pick(LOCAL_KINDS);
        let interpolant = self.pick(INTERPOLANTS);
        let declared = if self.one_in(6) { "model".to_string() } else { format!("model<{kind}>") };
        let spec = self.data.spec(kind, interpolant);
        self.model_params.push(format!("net: {declared} = \"{spec}\""));
        let classes = matches!(self.data, Data::Gmm("classes"));
        self.models.push(Model { name: "net", two_time: false, consistency: false, classes });
    }

    fn jumper(&mut self, consistency: bool) {
        let kind = if consistency { "consistency" } else { self.pick(TWO_TIME_KINDS) };
        let interpolant = self.pick(INTERPOLANTS);
        // A mixture's flow map solves an ODE per sample: use it only now and then.
        let data = if self.one_in(12) { self.data } else { self.data.gaussian_twin() };
        let name = if consistency { "cm" } else { "fm" };
        let spec = data.spec(kind, interpolant);
        self.model_params.push(format!("{name}: model<{kind}> = \"{spec}\""));
        self.models.push(Model { name, two_time: !consistency, consistency, classes: false });
    }

    // ---------------------------------------------------------------------------------------
    // The user step

    fn user_step(&mut self) {
        let flow = self.models.iter().any(|m| m.two_time) && self.one_in(3);
        // Now and then the step shadows the prelude's `ddpm` (which delegations never use).
        let name = if self.one_in(4) { "ddpm".to_string() } else { self.fresh("my_step") };
        let mut params = Vec::new();
        let mut declarations = Vec::new();
        for _ in 0..self.below(3) {
            let param = self.fresh("p");
            let (ty, text) = match self.below(3) {
                0 => (Ty::Float, format!("{param}: float")),
                1 => (Ty::Int, format!("{param}: int")),
                _ => (Ty::Bool, format!("{param}: bool")),
            };
            let default = match ty {
                Ty::Float => self.pick(FLOAT_LITERALS).to_string(),
                Ty::Int => self.pick(INT_LITERALS).to_string(),
                _ => self.pick(&["true", "false"]).to_string(),
            };
            let has_default = !self.one_in(3);
            declarations.push(if has_default { format!("{text} = {default}") } else { text });
            params.push((param, ty, has_default));
        }
        self.place = Place::Step;
        self.step_flow = flow;
        self.step_calls = 0;
        let mut scope = vec![
            Var { name: "x".into(), ty: Ty::Tensor, assignable: true },
            Var { name: "t".into(), ty: Ty::Float, assignable: false },
            Var { name: "s".into(), ty: Ty::Float, assignable: false },
        ];
        scope.extend(params.iter().map(|(name, ty, _)| Var { name: name.clone(), ty: *ty, assignable: false }));
        self.open(&format!("step {name}({})", declarations.join(", ")), scope);
        for _ in 0..self.below(4) {
            let carry = self.fresh("c");
            let ty = self.pick(&[Ty::Tensor, Ty::Float, Ty::Int, Ty::Bool]);
            let init = self.expr(ty, 1);
            let type_name = match ty {
                Ty::Int => "int",
                Ty::Float => "float",
                Ty::Bool => "bool",
                Ty::Tensor => "tensor",
            };
            self.line(&format!("carry {carry}: {type_name} = {init}"));
            self.declare(&carry, ty, true);
        }
        self.model_call();
        self.block(3);
        let update = self.expr(Ty::Tensor, 2);
        self.line(&format!("x = {update}"));
        for _ in 0..self.below(3) {
            self.assignment();
        }
        self.close();
        self.out.push('\n');
        self.place = Place::Schedule;
        self.step = Some(UserStep { name, params, calls: self.step_calls, flow });
    }

    /// In a step: `let` of one model evaluation (at most three call sites per step).
    fn model_call(&mut self) {
        let first = self.step_calls == 0;
        if !self.step_budget(1) {
            return;
        }
        // The first call is at the state; later ones anywhere (Heun's second call is at x_euler).
        let at = if first || self.below(2) == 0 { "x".to_string() } else { self.expr(Ty::Tensor, 1) };
        let time = self.pick(&["t", "s"]);
        let name = self.fresh("m");
        if self.step_flow && self.below(2) == 0 {
            self.line(&format!("let {name} = flow({at}, t, s)"));
            self.declare(&name, Ty::Tensor, true);
            return;
        }
        match self.below(4) {
            0 => {
                let other = self.fresh("m");
                self.line(&format!("let ({name}, {other}) = predict({at}, {time})"));
                self.declare(&other, Ty::Tensor, true);
            }
            choice => {
                let builtin = ["x0", "eps", "velocity"][choice - 1];
                self.line(&format!("let {name} = {builtin}({at}, {time})"));
            }
        }
        self.declare(&name, Ty::Tensor, true);
    }

    /// In a step: a call of a prelude step on the same state, times and model.
    fn delegation(&mut self) {
        let (call, calls) = match self.below(6) {
            0 => ("euler()".to_string(), 1),
            1 => (format!("first_order({})", self.expr(Ty::Float, 1)), 1),
            2 => (format!("ddim({})", self.pick(&["0.5", "1.0", "eta = 0.25"])), 1),
            3 => ("renoise()".to_string(), 0),
            4 => ("heun()".to_string(), 2),
            _ => ("dpmpp_2m()".to_string(), 1),
        };
        if self.step_budget(calls) {
            self.line(&call);
        }
    }

    /// In a step: counts a call site of `calls` evaluations, which runs as often as the loops
    /// around it allow, if one call of the step stays within three evaluations.
    fn step_budget(&mut self, calls: u32) -> bool {
        let total = self.step_calls + calls * self.runs;
        if total > 3 {
            return false;
        }
        self.step_calls = total;
        true
    }

    // ---------------------------------------------------------------------------------------
    // The schedule

    fn schedule(&mut self) {
        let mut params = self.model_params.clone();
        let mut scope = Vec::new();
        for _ in 0..self.below(4) {
            let name = self.fresh("h");
            match self.below(3) {
                0 => {
                    let value = self.below(4) as i64 + 1;
                    params.push(format!("{name}: int = {value}"));
                    self.int_params.push((name.clone(), value));
                    scope.push(Var { name, ty: Ty::Int, assignable: false });
                }
                1 => {
                    let value = self.pick(&["0.5", "0.75", "1.0", "0.4", "-0.5"]);
                    params.push(format!("{name}: float = {value}"));
                    if !value.starts_with('-') {
                        self.time_params.push(name.clone());
                    }
                    scope.push(Var { name, ty: Ty::Float, assignable: false });
                }
                _ => {
                    let value = self.pick(&["true", "false"]);
                    params.push(format!("{name}: bool = {value}"));
                    scope.push(Var { name, ty: Ty::Bool, assignable: false });
                }
            }
        }
        let state_is_param = self.one_in(4);
        if state_is_param {
            let init = self.pick(&["gaussian()", "zeros()", "uniform_noise()"]);
            params.push(format!("x: tensor = {init}"));
            scope.push(Var { name: "x".into(), ty: Ty::Tensor, assignable: true });
        }
        self.line("/// A generated schedule.");
        self.open(&format!("schedule {SCHEDULE}({})", params.join(", ")), scope);
        if !state_is_param {
            let init = if self.one_in(5) { "uniform_noise()" } else { "gaussian()" };
            self.line(&format!("let x = {init}"));
            self.declare("x", Ty::Tensor, true);
        }
        if self.models.iter().any(|m| m.classes) && self.one_in(2) {
            let name = self.fresh("g");
            if self.below(2) == 0 {
                let scale = self.pick(&["2.0", "0.5", "3"]);
                let label = self.label();
                self.line(&format!("let {name} = cfg(net, {scale}, {label})"));
                self.wrappers.push((name, 2));
            } else {
                let label = self.label();
                self.line(&format!("let {name} = condition(net, {label})"));
                self.wrappers.push((name, 1));
            }
        }
        // The body starts with the state's way from noise to data, so that most programs call
        // their models; everything else is random.
        self.block(2);
        match self.below(4) {
            0 | 1 => self.pair_loop(),
            2 => self.marching_while(),
            _ => self.point_loop(),
        }
        self.block(3);
        self.line("emit x");
        self.close();
    }

    /// A class label of the `classes` mixture (0..4).
    fn label(&mut self) -> String {
        let params: Vec<String> =
            self.int_params.iter().filter(|(_, v)| (0..4).contains(v)).map(|(n, _)| n.clone()).collect();
        if !params.is_empty() && self.one_in(2) {
            params[self.below(params.len())].clone()
        } else {
            self.pick(&["0", "1", "2", "3"]).to_string()
        }
    }

    // ---------------------------------------------------------------------------------------
    // Statements

    fn statement(&mut self) {
        let in_loop = !self.loops.is_empty();
        let nest = self.depth() < 3;
        let schedule = self.place == Place::Schedule;
        // Weights, in order: let, assignment, if, break/continue, emit, verb, pair grid loop,
        // point grid loop, times loop, range loop, repeat, counter while, time-marching while,
        // model call (steps), delegation (steps).
        let weights = [
            4,
            4,
            if nest { 2 } else { 0 },
            if in_loop { 2 } else { 0 },
            if schedule { 2 } else { 0 },
            if schedule { 2 } else { 0 },
            if schedule && nest { 5 } else { 0 },
            if schedule && nest { 1 } else { 0 },
            if schedule && nest { 1 } else { 0 },
            if nest { 1 } else { 0 },
            if nest { 1 } else { 0 },
            if nest { 1 } else { 0 },
            if schedule && nest { 1 } else { 0 },
            if schedule { 0 } else { 2 },
            if schedule { 0 } else { 1 },
        ];
        match self.weighted(&weights) {
            0 => self.let_statement(),
            1 => self.assignment(),
            2 => self.if_statement(),
            3 => self.break_or_continue(),
            4 => self.emit(),
            5 => {
                let (t, s) = self.literal_times();
                self.verb(&t, &s);
            }
            6 => self.pair_loop(),
            7 => self.point_loop(),
            8 => self.times_loop(),
            9 => self.range_loop(),
            10 => self.repeat_loop(),
            11 => self.counter_while(),
            12 => self.marching_while(),
            13 => self.model_call(),
            _ => self.delegation(),
        }
    }

    fn block(&mut self, max: usize) {
        for _ in 0..self.below(max + 1) {
            if self.exhausted() {
                return;
            }
            self.statement();
        }
    }

    fn let_statement(&mut self) {
        let ty = self.pick(&[Ty::Tensor, Ty::Float, Ty::Int, Ty::Bool]);
        let value = self.expr(ty, 3);
        // In a nested block, a tensor `let` now and then shadows a variable of an outer block.
        let outer = self.scopes[..self.scopes.len() - 1]
            .iter()
            .flatten()
            .filter(|v| v.ty == Ty::Tensor && v.assignable)
            .map(|v| v.name.clone())
            .collect::<Vec<_>>();
        if ty == Ty::Tensor && self.depth() > 0 && !outer.is_empty() && self.one_in(6) {
            let name = outer[self.below(outer.len())].clone();
            self.line(&format!("let {name} = {value}"));
            self.declare(&name, Ty::Tensor, true);
            return;
        }
        let name = self.fresh("v");
        // Float expressions may be ints (`1 + 2`, an int variable) that widen where a float is
        // expected, so float variables are always annotated; ints are sometimes widened too.
        let annotated = match (ty, self.below(5)) {
            (Ty::Float, _) | (Ty::Int, 0) => Some((Ty::Float, "float")),
            (Ty::Tensor, 0) => Some((Ty::Tensor, "tensor")),
            _ => None,
        };
        match annotated {
            Some((declared, type_name)) => {
                self.line(&format!("let {name}: {type_name} = {value}"));
                self.declare(&name, declared, true);
            }
            None => {
                self.line(&format!("let {name} = {value}"));
                self.declare(&name, ty, true);
            }
        }
    }

    fn assignment(&mut self) {
        let ty = self.pick(&[Ty::Tensor, Ty::Float, Ty::Int, Ty::Bool]);
        let targets = self.vars(ty, true);
        if targets.is_empty() {
            return;
        }
        let target = targets[self.below(targets.len())].clone();
        let (op, rhs_ty) = match ty {
            Ty::Bool => ("=", Ty::Bool),
            Ty::Int => (self.pick(&["=", "+=", "-=", "*="]), Ty::Int),
            Ty::Float => (self.pick(&["=", "+=", "-=", "*=", "/="]), self.pick(&[Ty::Float, Ty::Float, Ty::Int])),
            Ty::Tensor => {
                let op = self.pick(&["=", "+=", "-=", "*=", "/="]);
                let rhs = if op == "=" { Ty::Tensor } else { self.pick(&[Ty::Tensor, Ty::Float, Ty::Int]) };
                (op, rhs)
            }
        };
        let value = self.expr(rhs_ty, 3);
        self.line(&format!("{target} {op} {value}"));
    }

    fn if_statement(&mut self) {
        let condition = self.expr(Ty::Bool, 2);
        self.open(&format!("if {condition}"), Vec::new());
        self.block(3);
        for _ in 0..self.below(3) {
            self.scopes.pop();
            let condition = self.expr(Ty::Bool, 2);
            self.indent -= 1;
            self.line(&format!("}} else if {condition} {{"));
            self.indent += 1;
            self.scopes.push(Vec::new());
            self.block(2);
        }
        if self.below(2) == 1 {
            self.scopes.pop();
            self.indent -= 1;
            self.line("} else {");
            self.indent += 1;
            self.scopes.push(Vec::new());
            self.block(2);
        }
        self.close();
    }

    fn break_or_continue(&mut self) {
        let continue_ok = self.loops.last().copied().unwrap_or(false);
        let word = if continue_ok && self.below(2) == 1 { "continue" } else { "break" };
        let condition = self.expr(Ty::Bool, 2);
        self.open(&format!("if {condition}"), Vec::new());
        self.line(word);
        self.close();
    }

    fn emit(&mut self) {
        let ty = self.pick(&[Ty::Tensor, Ty::Float, Ty::Int, Ty::Bool]);
        let value = if self.one_in(12) {
            // A divisor that may be zero fails the run, which every leg must do alike. Only an
            // emitted value may fail: dead-code elimination drops a `%` whose result is unused,
            // so the lowered code fails where the optimized code runs (`let unused = 7 % n`).
            format!("({} % {})", self.int_expr(1), self.int_expr(1))
        } else {
            self.expr(ty, 2)
        };
        let name = format!("out{}", self.outputs);
        self.outputs += 1;
        self.line(&format!("emit {value} as {name}"));
    }

    // ---------------------------------------------------------------------------------------
    // Verbs

    /// Two literal times `t > s`.
    fn literal_times(&mut self) -> (String, String) {
        let first = self.below(TIMES.len() - 1);
        let second = first + 1 + self.below(TIMES.len() - 1 - first);
        (TIMES[first].to_string(), TIMES[second].to_string())
    }

    /// A `refine` or `jump` of a tensor variable from `t` to `s` (host times in [0, 1] with
    /// `t >= s`), within the budget of model calls.
    fn verb(&mut self, t: &str, s: &str) {
        let targets = self.vars(Ty::Tensor, true);
        if targets.is_empty() {
            return;
        }
        let target = targets[self.below(targets.len())].clone();
        let jumpers: Vec<Model> = self.models.iter().filter(|m| m.two_time || m.consistency).cloned().collect();
        if !jumpers.is_empty() && self.below(3) == 2 && self.runs <= self.calls_left {
            self.calls_left -= self.runs;
            let model = jumpers[self.below(jumpers.len())].clone();
            let using = self.plain_using(&model);
            if model.consistency {
                self.line(&format!("jump {target} from {t} to 0{using}"));
                if self.below(2) == 1 {
                    self.line(&format!("refine {target} from 0 to {s} by renoise(){using}"));
                }
            } else {
                self.line(&format!("jump {target} from {t} to {s}{using}"));
            }
            return;
        }
        let index = self.below(self.models.len());
        let model = self.models[index].clone();
        let (using, per_call) = self.refine_using(&model);
        let (step, calls) = self.step_call(&model);
        let cost = calls * per_call * self.runs;
        if cost <= self.calls_left {
            self.calls_left -= cost;
            self.line(&format!("refine {target} from {t} to {s} by {step}{using}"));
        } else {
            // Over budget: the step that makes no model call.
            self.line(&format!("refine {target} from {t} to {s} by renoise(){using}"));
        }
    }

    /// ` using NAME`, required when the schedule has several models.
    fn plain_using(&mut self, model: &Model) -> String {
        if self.models.len() > 1 || self.one_in(3) { format!(" using {}", model.name) } else { String::new() }
    }

    /// The `using` clause of a refine and the model calls per evaluation it makes.
    fn refine_using(&mut self, model: &Model) -> (String, u32) {
        if !model.classes {
            return (self.plain_using(model), 1);
        }
        match self.below(4) {
            1 if !self.wrappers.is_empty() => {
                let index = self.below(self.wrappers.len());
                let (name, per_call) = self.wrappers[index].clone();
                (format!(" using {name}"), per_call)
            }
            2 => {
                let scale = self.expr(Ty::Float, 1);
                let label = self.label();
                (format!(" using cfg(net, {scale}, {label})"), 2)
            }
            3 => {
                let label = self.label();
                (format!(" using condition(net, {label})"), 1)
            }
            _ => (self.plain_using(model), 1),
        }
    }

    /// A step call for `refine` with `model`, and its model calls at most.
    fn step_call(&mut self, model: &Model) -> (String, u32) {
        if let Some(step) = self.step.clone()
            && (model.two_time || !step.flow)
            && self.below(2) == 0
        {
            return (self.user_step_call(&step), step.calls);
        }
        let eta = |this: &mut Self| match this.below(3) {
            0 => String::new(),
            1 => this.pick(&["0.0", "0.5", "1.0"]).to_string(),
            _ => format!("eta = {}", this.expr(Ty::Float, 1)),
        };
        match self.below(12) {
            0 => ("euler()".into(), 1),
            1 => (format!("ddim({})", eta(self)), 1),
            // A user step named `ddpm` shadows the prelude's; it is chosen above or not at all.
            2 if self.step.as_ref().is_some_and(|s| s.name == "ddpm") => ("euler()".into(), 1),
            2 => ("ddpm()".into(), 1),
            3 => (format!("euler_ancestral({})", eta(self)), 1),
            4 => ("heun()".into(), 2),
            5 => ("dpmpp_2m()".into(), 1),
            6 => (format!("dpmpp_2m_sde({})", eta(self)), 1),
            7 => ("flow_euler()".into(), 1),
            8 => ("flow_heun()".into(), 2),
            9 => ("lcm()".into(), 1),
            10 => (format!("first_order({})", self.expr(Ty::Float, 2)), 1),
            _ => ("renoise()".into(), 0),
        }
    }

    /// A call of the user step: some arguments by position, then some by name, the rest left to
    /// their defaults (parameters without one are always given).
    fn user_step_call(&mut self, step: &UserStep) -> String {
        let positional = self.below(step.params.len() + 1);
        let mut args = Vec::new();
        for (index, (name, ty, has_default)) in step.params.iter().enumerate() {
            if index < positional {
                args.push(self.expr(*ty, 1));
            } else if !has_default || self.below(2) == 1 {
                args.push(format!("{name} = {}", self.expr(*ty, 1)));
            }
        }
        format!("{}({})", step.name, args.join(", "))
    }

    // ---------------------------------------------------------------------------------------
    // Loops

    /// An int expression for a loop bound at most `max` (at least 1), and its value.
    fn bound(&mut self, max: i64) -> (String, i64) {
        let params: Vec<(String, i64)> = self.int_params.iter().filter(|(_, v)| *v <= max).cloned().collect();
        match self.below(3) {
            1 if !params.is_empty() => params[self.below(params.len())].clone(),
            2 if max >= 2 => {
                let value = self.below(max as usize - 1) as i64 + 1;
                (format!("({value} + 1)"), value + 1)
            }
            _ => {
                let value = self.below(max as usize) as i64 + 1;
                (value.to_string(), value)
            }
        }
    }

    /// The largest loop bound that leaves room for one model call per iteration.
    fn max_trips(&self, cap: i64) -> i64 {
        let per_run = (self.calls_left / self.runs.max(1)) as i64;
        per_run.clamp(1, cap)
    }

    fn enter_loop(&mut self, header: &str, vars: Vec<Var>, trips: i64, continue_ok: bool) -> u32 {
        self.open(header, vars);
        self.loops.push(continue_ok);
        let outer = self.runs;
        self.runs = self.runs.saturating_mul(trips.max(1) as u32);
        outer
    }

    fn leave_loop(&mut self, outer_runs: u32) {
        self.runs = outer_runs;
        self.loops.pop();
        self.close();
    }

    /// `grid(a -> b, steps, spacing)` for a grid of `steps` intervals; the ends suit the spacing
    /// (κ spacings need finite noise levels, the discrete ones start at 1).
    fn grid(&mut self, steps: &str) -> String {
        let start = |this: &mut Self| {
            if !this.time_params.is_empty() && this.one_in(3) {
                let index = this.below(this.time_params.len());
                this.time_params[index].clone()
            } else {
                this.pick(&["1", "1.0", "0.9", "0.8"]).to_string()
            }
        };
        let (from, to, spacing) = match self.below(14) {
            0 => (start(self), self.pick(&["0", "0.1", "0.25"]).to_string(), String::new()),
            1 => (start(self), "0".into(), ", uniform".into()),
            2 => (start(self), "0".into(), ", quadratic".into()),
            3 => (start(self), "0.1".into(), ", cosine".into()),
            4 => (start(self), "0".into(), format!(", shift({})", self.pick(&["3.0", "0.5", "2"]))),
            5 => ("0.9".into(), "0.1".into(), ", karras".into()),
            6 => ("0.95".into(), "0.05".into(), format!(", karras({})", self.pick(&["7", "3.0", "1"]))),
            7 => ("0.8".into(), "0.2".into(), ", exponential".into()),
            8 => ("0.9".into(), "0.1".into(), ", logsnr".into()),
            9 => ("1".into(), "0".into(), ", leading".into()),
            10 => ("1".into(), "0".into(), format!(", leading({})", self.pick(&["offset = 0", "ddim_stride = true"]))),
            11 => ("1".into(), "0".into(), ", trailing".into()),
            12 => ("1".into(), "0".into(), ", trailing(ddim_stride = true)".into()),
            _ => ("1".into(), "0".into(), ", linspace".into()),
        };
        format!("grid({from} -> {to}, {steps}{spacing})")
    }

    /// `for t, s in grid(...)` with a verb from `t` to `s`.
    fn pair_loop(&mut self) {
        let (steps, trips) = self.bound(self.max_trips(6));
        let grid = self.grid(&steps);
        let (t, s) = (self.fresh("t"), self.fresh("s"));
        let vars = vec![
            Var { name: t.clone(), ty: Ty::Float, assignable: false },
            Var { name: s.clone(), ty: Ty::Float, assignable: false },
        ];
        let outer = self.enter_loop(&format!("for {t}, {s} in {grid}"), vars, trips, true);
        self.block(2);
        self.verb(&t, &s);
        self.block(2);
        self.leave_loop(outer);
    }

    /// `for t in grid(...)` (the `steps + 1` points) with a verb from `t` to a later time.
    fn point_loop(&mut self) {
        let (steps, trips) = self.bound((self.max_trips(6) - 1).max(1));
        let grid = self.grid(&steps);
        let t = self.fresh("t");
        let vars = vec![Var { name: t.clone(), ty: Ty::Float, assignable: false }];
        let outer = self.enter_loop(&format!("for {t} in {grid}"), vars, trips + 1, true);
        self.block(1);
        let s = match self.below(3) {
            0 => format!("{t} * 0.5"),
            1 => format!("max({t} - 0.25, 0.0)"),
            _ => "0".to_string(),
        };
        self.verb(&t, &s);
        self.block(1);
        self.leave_loop(outer);
    }

    /// `for t, s in times(...)` over a few decreasing literal times, or `for t in times(...)`.
    fn times_loop(&mut self) {
        let mut points: Vec<&str> = TIMES.iter().copied().filter(|_| self.below(2) == 1).collect();
        if points.len() < 2 {
            points = vec!["1", "0.5", "0"];
        }
        let max = self.max_trips(6) as usize;
        points.truncate(max + 1);
        let list = points.join(", ");
        if self.below(3) == 0 {
            let t = self.fresh("t");
            let vars = vec![Var { name: t.clone(), ty: Ty::Float, assignable: false }];
            let trips = points.len() as i64;
            let outer = self.enter_loop(&format!("for {t} in times({list})"), vars, trips, true);
            self.block(2);
            self.verb(&t, &format!("{t} * 0.5"));
            self.leave_loop(outer);
        } else {
            let (t, s) = (self.fresh("t"), self.fresh("s"));
            let vars = vec![
                Var { name: t.clone(), ty: Ty::Float, assignable: false },
                Var { name: s.clone(), ty: Ty::Float, assignable: false },
            ];
            let trips = points.len() as i64 - 1;
            let outer = self.enter_loop(&format!("for {t}, {s} in times({list})"), vars, trips, true);
            self.block(1);
            self.verb(&t, &s);
            self.block(1);
            self.leave_loop(outer);
        }
    }

    /// `for i in range(n)` or `range(a, b)`; verbs at times computed from the index.
    fn range_loop(&mut self) {
        let (end, trips) = self.bound(self.max_trips(6));
        let i = self.fresh("i");
        let (header, first) = if self.below(2) == 0 {
            (format!("for {i} in range({end})"), 0)
        } else {
            let start = self.below(3) as i64;
            (format!("for {i} in range({start}, {end} + {start})"), start)
        };
        let vars = vec![Var { name: i.clone(), ty: Ty::Int, assignable: false }];
        let outer = self.enter_loop(&header, vars, trips, true);
        self.block(2);
        if self.place == Place::Schedule && self.below(2) == 0 {
            // Index `i` runs below first + 6, so these times stay in [0, 1] and decrease (the end
            // is clamped because 0.1 * 6 rounds above 0.6).
            let offset = (first + 6) as f64 * 0.1;
            self.verb(&format!("{offset:.1} - 0.1 * {i}"), &format!("max({offset:.1} - 0.1 * ({i} + 1), 0.0)"));
        }
        self.block(1);
        self.leave_loop(outer);
    }

    fn repeat_loop(&mut self) {
        let (count, trips) = self.bound(self.max_trips(4));
        let outer = self.enter_loop(&format!("repeat {count}"), Vec::new(), trips, true);
        self.block(3);
        self.leave_loop(outer);
    }

    /// `while` on a counter that the first statement of the body advances.
    fn counter_while(&mut self) {
        let counter = self.fresh("w");
        self.line(&format!("let {counter} = 0"));
        self.declare(&counter, Ty::Int, false);
        let (limit, trips) = self.bound(self.max_trips(5));
        let condition = match self.below(3) {
            2 => format!("{counter} < {limit} && {}", self.expr(Ty::Bool, 1)),
            _ => format!("{counter} < {limit}"),
        };
        let outer = self.enter_loop(&format!("while {condition}"), Vec::new(), trips, true);
        self.line(&format!("{counter} += 1"));
        self.block(3);
        self.leave_loop(outer);
    }

    /// `while` marching a time down to 0 by a fixed amount, as adaptive solvers do; the advance is
    /// the last statement, so the body may `break` but not `continue`.
    fn marching_while(&mut self) {
        // The bounds leave an iteration for rounding: 0.9 - 0.3 - 0.3 - 0.3 is 5.6e-17, not 0.
        let (start, step, trips) =
            self.pick(&[("1.0", "0.25", 5), ("0.9", "0.3", 4), ("0.8", "0.5", 3), ("1.0", "0.4", 4)]);
        if self.runs.saturating_mul(trips) > self.calls_left {
            return;
        }
        let (t, s) = (self.fresh("tw"), self.fresh("sw"));
        self.line(&format!("let {t} = {start}"));
        self.declare(&t, Ty::Float, false);
        let outer = self.enter_loop(&format!("while {t} > 0"), Vec::new(), trips as i64, false);
        self.line(&format!("let {s} = max({t} - {step}, 0.0)"));
        self.declare(&s, Ty::Float, false);
        self.block(1);
        self.verb(&t, &s);
        self.block(1);
        self.line(&format!("{t} = {s}"));
        self.leave_loop(outer);
    }

    // ---------------------------------------------------------------------------------------
    // Expressions (fully parenthesized; `depth` bounds the nesting)

    fn expr(&mut self, ty: Ty, depth: usize) -> String {
        match ty {
            Ty::Int => self.int_expr(depth),
            Ty::Float => self.float_expr(depth),
            Ty::Bool => self.bool_expr(depth),
            Ty::Tensor => self.tensor_expr(depth),
        }
    }

    /// An int or a float expression.
    fn number(&mut self, depth: usize) -> String {
        if self.below(3) == 2 { self.int_expr(depth) } else { self.float_expr(depth) }
    }

    fn int_expr(&mut self, depth: usize) -> String {
        let choice = if depth == 0 { 0 } else { self.below(9) };
        match choice {
            0..=2 => match self.var(Ty::Int) {
                Some(name) if choice > 0 => name,
                _ => self.pick(INT_LITERALS).to_string(),
            },
            3 => format!("({} {} {})", self.int_expr(depth - 1), self.pick(&["+", "-", "*"]), self.int_expr(depth - 1)),
            // `%` by a nonzero literal; only `emit` divides by anything (see there).
            4 => format!("({} % {})", self.int_expr(depth - 1), self.pick(&["2", "3", "5", "-4"])),
            5 => format!("int({})", self.float_expr(depth - 1)),
            6 => format!("round({})", self.float_expr(depth - 1)),
            7 => format!("(-{})", self.int_expr(depth - 1)),
            _ => format!("({} + {})", self.int_expr(depth - 1), self.pick(INT_LITERALS)),
        }
    }

    fn float_expr(&mut self, depth: usize) -> String {
        let choice = if depth == 0 { self.below(3) } else { self.below(14) };
        match choice {
            0 => self.pick(FLOAT_LITERALS).to_string(),
            1 | 2 => {
                let ty = if choice == 1 { Ty::Float } else { Ty::Int };
                match self.var(ty) {
                    Some(name) => name,
                    None => self.pick(FLOAT_LITERALS).to_string(),
                }
            }
            3 | 4 => {
                let op = self.pick(&["+", "-", "*", "/", "^", "+", "*"]);
                let a = self.number(depth - 1);
                let b = if op == "^" {
                    self.pick(&["2", "0.5", "3", "-1", "2.0"]).to_string()
                } else {
                    self.number(depth - 1)
                };
                format!("({a} {op} {b})")
            }
            5 => format!("(-{})", self.float_expr(depth - 1)),
            6 => self.math(Ty::Float, depth),
            7 => {
                let f = self.pick(&["min", "max"]);
                format!("{f}({}, {})", self.number(depth - 1), self.number(depth - 1))
            }
            8 => format!(
                "clamp({}, {}, {})",
                self.number(depth - 1),
                self.pick(&["0", "-1.0"]),
                self.pick(&["1", "2.5"])
            ),
            9 => format!("float({})", self.int_expr(depth - 1)),
            10 => {
                let f = self.pick(&["rms", "mean", "norm", "max_abs"]);
                format!("{f}({})", self.tensor_expr(depth - 1))
            }
            11 if self.place == Place::Step => {
                let f = self.pick(&["alpha", "sigma", "lambda", "alpha", "sigma"]);
                format!("{f}({})", self.pick(&["t", "s"]))
            }
            12 => "pi".to_string(),
            _ => format!("({} % {})", self.float_expr(depth - 1), self.pick(&["0.7", "2.0", "1.5"])),
        }
    }

    /// An elementwise math builtin applied to a `ty` expression.
    fn math(&mut self, ty: Ty, depth: usize) -> String {
        let arg = self.expr(ty, depth - 1);
        match self.below(16) {
            0 => format!("sqrt(abs({arg}))"),
            1 => format!("log(abs({arg}) + 0.5)"),
            2 => format!("log1p(abs({arg}))"),
            3 => format!("exp(clamp({arg}, -5.0, 5.0))"),
            4 => format!("expm1(clamp({arg}, -5.0, 5.0))"),
            5 => format!("sqrt({arg})"),
            6 => format!("log({arg})"),
            choice => {
                let f = ["sin", "cos", "tan", "tanh", "atan", "abs", "sigmoid", "floor", "ceil"][choice - 7];
                format!("{f}({arg})")
            }
        }
    }

    fn bool_expr(&mut self, depth: usize) -> String {
        let choice = if depth == 0 { self.below(2) } else { self.below(8) };
        match choice {
            0 => self.pick(&["true", "false"]).to_string(),
            1 => self.var(Ty::Bool).unwrap_or_else(|| "false".to_string()),
            2..=4 => {
                let op = self.pick(&["<", "<=", ">", ">=", "==", "!="]);
                format!("({} {op} {})", self.number(depth - 1), self.number(depth - 1))
            }
            5 => format!("({} {} {})", self.bool_expr(depth - 1), self.pick(&["&&", "||"]), self.bool_expr(depth - 1)),
            6 => format!("(!{})", self.bool_expr(depth - 1)),
            _ => format!("({} {} {})", self.bool_expr(depth - 1), self.pick(&["==", "!="]), self.bool_expr(depth - 1)),
        }
    }

    fn tensor_expr(&mut self, depth: usize) -> String {
        let choice = if depth == 0 { 0 } else { self.below(10) };
        match choice {
            0..=2 => match self.var(Ty::Tensor) {
                Some(name) if choice < 2 => name,
                _ => self.pick(&["gaussian()", "zeros()", "ones()", "uniform_noise()"]).to_string(),
            },
            3..=5 => {
                let op = self.pick(&["+", "-", "*", "/", "^", "+", "*"]);
                let a = self.tensor_expr(depth - 1);
                let b = match (op, self.below(2)) {
                    ("^", _) => self.pick(&["2", "0.5", "3", "-1", "2.0"]).to_string(),
                    (_, 0) => self.tensor_expr(depth - 1),
                    _ => self.number(depth - 1),
                };
                if self.below(2) == 0 || op == "^" { format!("({a} {op} {b})") } else { format!("({b} {op} {a})") }
            }
            6 => format!("(-{})", self.tensor_expr(depth - 1)),
            7 => self.math(Ty::Tensor, depth),
            8 => {
                let f = self.pick(&["min", "max"]);
                let other = if self.below(2) == 0 { self.tensor_expr(depth - 1) } else { self.number(depth - 1) };
                format!("{f}({}, {other})", self.tensor_expr(depth - 1))
            }
            _ => format!("clamp({}, {}, {})", self.tensor_expr(depth - 1), self.number(0), self.pick(&["1", "2.5"])),
        }
    }
}
