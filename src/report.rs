//! What a run did: which migrations were applied or skipped, and how long
//! each phase took.

use std::fmt;
use std::time::Duration;

use crate::backup::Backup;
use crate::error::Phase;

/// The outcome of one [`Migrator::run`](crate::Migrator::run).
///
/// Lists every migration the migrator was given, in order, up to the one that
/// failed (a failing run returns the partial report inside
/// [`Error::MigrationFailed`](crate::Error::MigrationFailed)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    migrations: Vec<MigrationReport>,
}

impl Report {
    pub(crate) fn push(&mut self, entry: MigrationReport) {
        self.migrations.push(entry);
    }

    /// Every migration considered, in order.
    pub fn migrations(&self) -> &[MigrationReport] {
        &self.migrations
    }

    /// The migrations this run applied.
    pub fn applied(&self) -> impl Iterator<Item = &MigrationReport> {
        self.with_outcome(Outcome::Applied)
    }

    /// The migrations this run skipped because an earlier run applied them.
    pub fn skipped(&self) -> impl Iterator<Item = &MigrationReport> {
        self.with_outcome(Outcome::Skipped)
    }

    /// Whether the run changed nothing: every migration was already applied.
    pub fn is_noop(&self) -> bool {
        self.applied().next().is_none()
    }

    fn with_outcome(&self, outcome: Outcome) -> impl Iterator<Item = &MigrationReport> {
        self.migrations.iter().filter(move |m| m.outcome == outcome)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.migrations.is_empty() {
            return f.write_str("no migrations");
        }
        for m in &self.migrations {
            writeln!(f, "{m}")?;
        }
        Ok(())
    }
}

/// Whether a migration ran in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The migration ran and verified in this run.
    Applied,
    /// The ledger shows it applied by an earlier run; nothing was done.
    Skipped,
}

/// How long one phase of a migration took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTiming {
    /// The phase.
    pub phase: Phase,
    /// Its wall-clock duration.
    pub duration: Duration,
}

/// What happened to one migration in a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// The migration's id.
    pub id: String,
    /// The table it migrates.
    pub table: String,
    /// Applied now, or skipped.
    pub outcome: Outcome,
    /// The table's version before the migration (from the ledger when
    /// skipped).
    pub version_before: u64,
    /// The table's version after the migration.
    pub version_after: Option<u64>,
    /// Row count before the migration.
    pub rows_before: u64,
    /// Row count after the migration.
    pub rows_after: Option<u64>,
    /// The backup taken before the migration, while it is still known.
    pub backup: Option<Backup>,
    /// Phase durations, in the order they ran (empty when skipped).
    pub phases: Vec<PhaseTiming>,
    /// Details the migration recorded (e.g. the model a re-embedding used).
    pub details: std::collections::BTreeMap<String, String>,
    /// Total duration of the migration (from the ledger when skipped).
    pub duration: Duration,
}

impl MigrationReport {
    /// The duration of `phase`, if it ran.
    pub fn phase(&self, phase: Phase) -> Option<Duration> {
        self.phases
            .iter()
            .find(|t| t.phase == phase)
            .map(|t| t.duration)
    }
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.outcome {
            Outcome::Applied => "applied",
            Outcome::Skipped => "skipped (already applied)",
        };
        write!(f, "{} on `{}`: {what}", self.id, self.table)?;
        if self.outcome == Outcome::Applied {
            let after = self.version_after.unwrap_or(self.version_before);
            write!(
                f,
                ", version {} -> {after}, {} rows, {:.1?}",
                self.version_before,
                self.rows_after.unwrap_or(self.rows_before),
                self.duration
            )?;
            for t in &self.phases {
                write!(f, " [{} {:.1?}]", t.phase, t.duration)?;
            }
        }
        Ok(())
    }
}
