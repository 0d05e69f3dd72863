//! The crate's one error type, [`Error`]; what a failed migration's
//! rollback did, [`Rollback`]; and the problems some variants carry.

mod accessors;
mod ext;
mod problems;
mod rollback;
mod variants;

pub use ext::ResultExt;
pub(crate) use ext::{chain, panic_message};
pub use problems::{CopyProblem, EmbeddingProblem};
pub use rollback::Rollback;
pub use variants::Error;

/// A boxed error from code outside this crate, e.g. a downstream migration.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of every fallible function in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
