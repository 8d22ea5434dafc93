//! The standard prelude: steps written in `.sched` itself and always in scope.

/// The prelude files, as (name, source).
pub const FILES: &[(&str, &str)] = &[
    ("<prelude>/solvers.sched", include_str!("../std/solvers.sched")),
    ("<prelude>/tokens.sched", include_str!("../std/tokens.sched")),
];
