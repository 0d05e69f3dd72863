//! The ledger: a LanceDB table in the migrated database that records every
//! migration, one row per migration id.
//!
//! A migration's first row is an append, which leaves it alone in a
//! fragment; its next state replaces that fragment in one Lance `Update`
//! commit (about half the cost of a `merge_insert`, measured). Rows that
//! share a fragment (after compaction) are replaced with an atomic
//! `merge_insert` keyed on `id`. Either way a row moves from `running` to
//! `applied` or `failed` in one commit. The table's
//! schema metadata carries a format number; a ledger from a newer format is
//! refused instead of being misread.

mod codec;
mod create;
mod entry;
pub(crate) mod lease;
mod table;
#[cfg(test)]
mod tests;

pub use entry::{LedgerEntry, LedgerStatus};
pub(crate) use table::Ledger;
