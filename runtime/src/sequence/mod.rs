//! Token sequences at run time: the value the IR's `tokens` type holds ([`TokenSeq`]) and the
//! execution of every [`TokenOp`](sched_compiler::ir::TokenOp) against a
//! [`TokenModel`](crate::model::TokenModel), one file per operation.
//!
//! Rows may have different lengths (speculative decoding accepts a different number of draft
//! tokens per row); a model call groups the rows of equal length into one batch, and counts as one
//! evaluation in all. Random numbers come from sched's Philox stream: an operation at noise site
//! `site`, running for the `step`-th time, draws `uniform_f64(seed, site, step, row, index)` with
//! the indices given on each function, so both engines and any batch size draw the same numbers
//! for the same row.

mod candidates;
mod commit;
mod drafter;
mod extend;
mod groups;
mod jacobi;
mod launches;
mod speculative;
mod value;

pub use self::candidates::{LogitsCache, candidates};
pub use self::commit::commit;
pub use self::extend::extend;
pub use self::jacobi::repredict;
pub use self::launches::{DeviceModule, device_modules};
pub use self::speculative::{propose, verify};
pub use self::value::{MAX_ROW_LEN, Proposal, SequenceError, Specials, TokenSeq, row_text};
