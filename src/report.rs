//! What a run did: which migrations were applied or skipped, how long
//! each phase took, and what a failure's rollback did to the table.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::backup::Backup;

/// The outcome of one [`Migrator::run`](crate::Migrator::run).
///
/// Lists every migration the migrator was given, in order, up to the one that
/// failed (a failing run returns the partial report inside
/// [`Error::MigrationFailed`](crate::Error::MigrationFailed)).
///
/// A run that did not take the lease (another process holds it; see
/// [`Migrator::when_locked`](crate::Migrator::when_locked)) or that was
/// stopped lists the migrations left as [`Outcome::Pending`], and
/// [`holder`](Self::holder) says who is applying them.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Report {
    migrations: Vec<MigrationReport>,
    holder: Option<LeaseHolder>,
}

impl Report {
    pub(crate) fn push(&mut self, entry: MigrationReport) {
        self.migrations.push(entry);
    }

    pub(crate) fn set_holder(&mut self, holder: LeaseHolder) {
        self.holder = Some(holder);
    }

    /// The migrations left for another process or a later run: another
    /// process held the lease, or this run was stopped before them. The
    /// one a stop interrupted is [`Outcome::Stopped`], not listed here.
    pub fn pending(&self) -> impl Iterator<Item = &MigrationReport> {
        self.with_outcome(Outcome::Pending)
    }

    /// The migration a stop interrupted, left `running` for the next
    /// process to continue.
    pub fn stopped(&self) -> Option<&MigrationReport> {
        self.with_outcome(Outcome::Stopped).next()
    }

    /// Whether every migration that must land before the application
    /// serves ([`Migration::blocks_serving`](crate::Migration::blocks_serving))
    /// has landed. The rest may still be pending.
    pub fn is_ready(&self) -> bool {
        self.migrations
            .iter()
            .all(|m| !m.blocks_serving || matches!(m.outcome, Outcome::Applied | Outcome::Skipped))
    }

    /// Whether every migration has landed (none pending or stopped).
    pub fn is_complete(&self) -> bool {
        self.migrations
            .iter()
            .all(|m| matches!(m.outcome, Outcome::Applied | Outcome::Skipped))
    }

    /// Who held the lease when this run found it taken, and what it was
    /// doing; `None` when this run held it or needed none.
    pub fn holder(&self) -> Option<&LeaseHolder> {
        self.holder.as_ref()
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

    /// Whether the run applied nothing (every migration was already
    /// applied, or the rest are pending elsewhere).
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
        if let Some(holder) = &self.holder {
            writeln!(f, "{holder}")?;
        }
        Ok(())
    }
}

/// The process applying the migrations a run found pending, as the lease
/// and the ledger show it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LeaseHolder {
    /// Its name ([`Migrator::lease_holder`](crate::Migrator::lease_holder));
    /// `None` when its name tag could not be read.
    pub name: Option<String>,
    /// When it last renewed the lease, on its clock.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serde_fmt::opt_time")
    )]
    pub last_heartbeat: Option<SystemTime>,
    /// The migration the ledger shows `running`, if any.
    pub migration: Option<String>,
    /// When that migration started (its first attempt).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serde_fmt::opt_time")
    )]
    pub since: Option<SystemTime>,
    /// Its last published progress (every few seconds while a long phase
    /// runs), if any.
    pub progress: Option<PhaseProgress>,
}

/// A long phase's progress: this process's own
/// ([`RunState::progress`](crate::RunState::progress)), or another's as it
/// last published it in the ledger ([`LeaseHolder::progress`]).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PhaseProgress {
    /// Rows done.
    pub done: u64,
    /// Rows to do, when known.
    pub total: Option<u64>,
    /// Rows per second so far.
    pub rate: f64,
    /// When it was measured, on the clock of the process doing the work.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serde_fmt::time"))]
    pub at: SystemTime,
}

impl PhaseProgress {
    /// The time left at this rate, when the total is known and the rate
    /// is not zero.
    pub fn eta(&self) -> Option<Duration> {
        let total = self.total?;
        (self.rate > 0.0)
            .then(|| Duration::from_secs_f64(total.saturating_sub(self.done) as f64 / self.rate))
    }
}

impl fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name.as_deref().unwrap_or("an unknown process");
        write!(f, "held by {name}")?;
        if let Some(m) = &self.migration {
            write!(f, ", running {m}")?;
        }
        if let Some(p) = &self.progress {
            match p.total {
                Some(total) => write!(f, ", {}/{total} rows", p.done)?,
                None => write!(f, ", {} rows", p.done)?,
            }
            write!(f, " at {:.0} rows/s", p.rate)?;
        }
        Ok(())
    }
}

/// Whether a migration ran in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Outcome {
    /// The migration ran and verified in this run.
    Applied,
    /// The ledger shows it applied by an earlier run; nothing was done.
    Skipped,
    /// Not applied by this run: another process holds the lease (see
    /// [`Report::holder`]), or this run stopped before it.
    Pending,
    /// This run was stopped ([`StopSignal`](crate::StopSignal)) while
    /// applying it; its progress is saved and the ledger shows it
    /// `running`, for the next process to continue.
    Stopped,
}

/// How long one phase of a migration took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PhaseTiming {
    /// The phase.
    pub phase: Phase,
    /// Its wall-clock duration.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "duration_secs", serialize_with = "crate::serde_fmt::secs")
    )]
    pub duration: Duration,
}

/// What happened to one migration in a run.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct MigrationReport {
    /// The migration's id.
    pub id: String,
    /// The table it migrates.
    pub table: String,
    /// Applied now, skipped, pending or stopped.
    pub outcome: Outcome,
    /// The table's version before the migration (from the ledger when
    /// skipped; 0 when pending and not yet started).
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
    #[cfg_attr(
        feature = "serde",
        serde(rename = "duration_secs", serialize_with = "crate::serde_fmt::secs")
    )]
    pub duration: Duration,
    /// Whether the application must wait for it before serving
    /// ([`Migration::blocks_serving`](crate::Migration::blocks_serving)).
    pub blocks_serving: bool,
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
            Outcome::Pending if self.blocks_serving => "pending (blocks serving)",
            Outcome::Pending => "pending (runs behind serving)",
            Outcome::Stopped => "stopped (the next run continues it)",
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

/// The phases a migration goes through, in order.
///
/// Errors and reports name the phase that failed or was timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Phase {
    /// Opening the table and checking the migration's input.
    Prepare,
    /// [`Migration::backup`](crate::Migration::backup).
    Backup,
    /// [`Migration::transform`](crate::Migration::transform).
    Transform,
    /// [`Migration::rebuild`](crate::Migration::rebuild).
    Rebuild,
    /// [`Migration::verify`](crate::Migration::verify).
    Verify,
    /// Recording the outcome in the ledger.
    Record,
}

impl Phase {
    /// The phase's name in lowercase, as written in logs and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepare => "prepare",
            Self::Backup => "backup",
            Self::Transform => "transform",
            Self::Rebuild => "rebuild",
            Self::Verify => "verify",
            Self::Record => "record",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
