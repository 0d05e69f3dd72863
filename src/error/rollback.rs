//! [`Rollback`]: what was done to the table after a migration failed.

use std::fmt;
use std::sync::Arc;

use super::{Error, chain};

/// What happened to the table after a migration failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Rollback {
    /// Nothing had been written, so nothing needed restoring.
    NotNeeded,
    /// The table was restored to the given version (its state before the
    /// migration) in a new commit, and the rows other writers appended while
    /// the migration ran were appended again.
    Restored {
        /// The version the table's contents were restored to.
        version: u64,
        /// Rows appended by other writers during the migration, kept by
        /// appending them again after the restore.
        reappended: u64,
    },
    /// Not attempted: this run lost its lease, so another process may be
    /// working on the table. The process that holds the lease next finds the
    /// migration interrupted and restores its backup.
    Deferred,
    /// Restoring the table failed (for example the disk is full); the table
    /// may be left half-migrated. The ledger keeps the migration `running`,
    /// so the next run restores the backup first (keeping rows appended
    /// meanwhile) before it tries again; nothing needs doing by hand once
    /// the cause is fixed.
    RestoreFailed {
        /// The backup that could not be restored.
        backup: String,
        /// The step of the rollback that failed, e.g. "re-append the 12
        /// rows appended during the migration".
        step: String,
        /// Why it failed.
        source: Arc<Error>,
    },
    /// Not restored, to keep rows that the old schema cannot hold: other
    /// writers appended rows in the migrated schema (e.g. vectors of the new
    /// dimension) that restoring the backup would drop. The table is left as
    /// the migration left it, those rows included; the ledger records the
    /// migration `failed`, so the next run applies it again from there.
    /// The backup tag (in the ledger row and the report) still holds the
    /// version before the migration.
    KeptNewRows {
        /// Which rows could not go back, and why.
        reason: String,
    },
}

/// Equal when they say the same: a failed restore's errors are compared
/// by their messages (an [`Error`] has no equality of its own).
impl PartialEq for Rollback {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::NotNeeded, Self::NotNeeded) | (Self::Deferred, Self::Deferred) => true,
            (
                Self::Restored {
                    version: a,
                    reappended: m,
                },
                Self::Restored {
                    version: b,
                    reappended: n,
                },
            ) => a == b && m == n,
            (
                Self::RestoreFailed {
                    backup: a,
                    step: s,
                    source: e,
                },
                Self::RestoreFailed {
                    backup: b,
                    step: t,
                    source: f,
                },
            ) => a == b && s == t && chain(e.as_ref()) == chain(f.as_ref()),
            (Self::KeptNewRows { reason: a }, Self::KeptNewRows { reason: b }) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotNeeded => f.write_str("the table was not changed"),
            Self::Deferred => {
                f.write_str("the lease was lost, so the next holder restores the table")
            }
            Self::Restored {
                version,
                reappended: 0,
            } => write!(f, "the table was restored to version {version}"),
            Self::Restored {
                version,
                reappended,
            } => write!(
                f,
                "the table was restored to version {version} and {reappended} rows appended meanwhile were kept"
            ),
            Self::RestoreFailed {
                backup,
                step,
                source,
            } => write!(
                f,
                "restoring backup `{backup}` failed (could not {step}: {}); the migration stays `running` in the ledger, \
                 so the next run restores the backup first, once the cause is fixed",
                chain(source.as_ref())
            ),
            Self::KeptNewRows { reason } => write!(
                f,
                "the table was left as the migration left it, not restored from its backup, \
                 because {reason}; the next run applies the migration again from there"
            ),
        }
    }
}
