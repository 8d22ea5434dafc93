//! sched: a language and compiler for the inference schedules of generative models.
//!
//! Programs that embed sched use [`api`]: compile a `.sched` source, bind a schedule's
//! parameters, load or bring models, and run it on the JIT or the reference interpreter, on the
//! CPU or a device. The `sched` command line is a client of the same API. [`poker`] is the study
//! behind the README's "high house" table.
//!
//! The crates beneath are usable on their own: `sched-lang` (the front end), `sched-compiler`
//! (IR and passes), `sched-kernels` (fused kernels), `sched-runtime` (the model contract, devices
//! and engines), `sched-models` (model formats) and `sched-train` (training and metrics).

pub mod api;
pub mod poker;
