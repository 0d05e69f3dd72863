//! What the ledger records: a migration's status and its row.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Where a migration stands according to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum LedgerStatus {
    /// Started and not finished: either running now or interrupted by a crash.
    Running,
    /// Applied and verified.
    Applied,
    /// Failed and rolled back; it runs again on the next `run()`.
    Failed,
    /// Applied, then undone by
    /// [`Migrator::rollback_to`](crate::Migrator::rollback_to); it runs again
    /// on the next `run()` that lists it.
    RolledBack,
}

impl LedgerStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Applied, Self::Failed, Self::RolledBack]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for LedgerStatus {
    /// The status in words, e.g. "rolled back".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RolledBack => "rolled back",
            other => other.as_str(),
        })
    }
}

/// One row of the ledger: the last recorded state of one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LedgerEntry {
    /// The migration's id.
    pub id: String,
    /// Its position in the migrator's list when it last ran (0-based).
    pub seq: u64,
    /// The table it migrates.
    pub table: String,
    /// SHA-256 of its definition, hex-encoded.
    pub checksum: String,
    /// Where it stands.
    pub status: LedgerStatus,
    /// The table's version before it ran.
    pub version_before: u64,
    /// The table's version after it was applied (or restored, when failed).
    pub version_after: Option<u64>,
    /// The backup tag taken before it ran.
    pub backup_tag: Option<String>,
    /// The URI of the independent backup copy made before it ran, when one
    /// was asked for ([`BackupCopy`](crate::BackupCopy)).
    pub backup_copy: Option<String>,
    /// When it started.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serde_fmt::time"))]
    pub started_at: SystemTime,
    /// When it finished or failed.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serde_fmt::opt_time")
    )]
    pub finished_at: Option<SystemTime>,
    /// Rows in the table before it ran.
    pub rows_before: u64,
    /// Rows in the table after it was applied.
    pub rows_after: Option<u64>,
    /// The error, when it failed.
    pub error: Option<String>,
    /// The crate version that wrote the row.
    pub crate_version: String,
    /// Details the migration recorded about its outcome (e.g. the model a
    /// re-embedding used); see [`MigrationContext::record_detail`](crate::MigrationContext::record_detail).
    pub details: BTreeMap<String, String>,
}

impl LedgerEntry {
    /// [`details`](Self::details) key: the checksum the row held before a
    /// later release upgraded it to its own encoding of the same
    /// definition ([`Migration::previous_checksums`](crate::Migration::previous_checksums)).
    pub const CHECKSUM_PREVIOUS: &'static str = "checksum.previous";
    /// [`details`](Self::details) key: the lancedb-migrate version that
    /// upgraded the row's checksum.
    pub const CHECKSUM_UPGRADED_BY: &'static str = "checksum.upgraded_by";

    /// The row of a migration starting now: `running`, with the table's
    /// version and row count before it.
    pub(crate) fn running(
        id: &str,
        seq: u64,
        table: &str,
        checksum: String,
        version_before: u64,
        rows_before: u64,
    ) -> Self {
        Self {
            id: id.to_owned(),
            seq,
            table: table.to_owned(),
            checksum,
            status: LedgerStatus::Running,
            version_before,
            version_after: None,
            backup_tag: None,
            backup_copy: None,
            started_at: SystemTime::now(),
            finished_at: None,
            rows_before,
            rows_after: None,
            error: None,
            crate_version: env!("CARGO_PKG_VERSION").to_owned(),
            details: BTreeMap::new(),
        }
    }

    /// The row, finished now as `applied` at `version` with `rows` rows.
    pub(crate) fn applied(self, version: u64, rows: u64) -> Self {
        Self {
            status: LedgerStatus::Applied,
            version_after: Some(version),
            rows_after: Some(rows),
            finished_at: Some(SystemTime::now()),
            ..self
        }
    }

    /// How long it took, once finished.
    pub fn duration(&self) -> Option<Duration> {
        self.finished_at?.duration_since(self.started_at).ok()
    }
}
