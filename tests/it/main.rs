//! The integration tests of sched end to end, one binary: the embedding API, the command line, the
//! golden diagnostics, the differential tests of the engines, the schedules against references
//! (diffusers conformance, convergence orders, sequences, poker) and the GPU parity tests.

mod common;

mod api;
mod cli;
mod cli_run;
mod conformance;
mod cuda;
mod differential;
mod diffusion_forcing;
mod docs;
mod jit;
mod llm;
mod poker;
mod replay;
mod schedules;
mod sequences;
mod ui;
