//! Backups: a LanceDB tag on the table's version before a migration, and the
//! restore that undoes a failed migration.
//!
//! A tag costs one small file whatever the table's size, keeps its version
//! safe from `optimize` pruning, and `restore` from it commits a new version
//! whose manifest copies the tagged one, so rollback is O(1) too. It lives
//! inside the table: dropping the table or deleting its files loses it. An
//! independent [`BackupCopy`] can be added to it for that.

pub(crate) mod content;
mod copy;
mod location;
mod tag;
mod types;

pub use location::BackupLocation;
pub(crate) use location::Options;
pub use types::{Backup, BackupCopy};
