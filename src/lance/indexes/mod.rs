//! Keeping a table's indexes across a migration: what they were before,
//! recreating or refreshing them after, and checking that they cover every
//! row and that vector search through them still finds rows.
//!
//! - `spec`: [`IndexSpec`], an index as Lance records it;
//! - `snapshot`: the indexes a table has;
//! - `rebuild`: which a migration must build again, and building them;
//! - `check`: coverage, parameters and recall after a migration;
//! - `params`: the parameters an index was built with, and the LanceDB
//!   builder that builds it again with them.

mod check;
mod params;
mod rebuild;
mod snapshot;
mod spec;

pub(crate) use check::{check, check_requested};
pub(crate) use params::requested;
pub(crate) use rebuild::{check_buildable, restore, to_rebuild};
pub(crate) use snapshot::{snapshot, snapshot_described};
pub use spec::IndexSpec;
