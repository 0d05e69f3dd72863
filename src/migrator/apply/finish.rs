//! After the change: verification and the ledger's `applied` row, or the
//! rollback and the failure's record.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tracing::{error, info};

use crate::error::{Error, Result, Rollback, chain};
use crate::event::Event;
use crate::ledger::{LedgerEntry, LedgerStatus};
use crate::migration::MigrationContext;
use crate::migrator::rollback::roll_back;
use crate::report::{MigrationReport, Outcome, Phase, Report};

use super::Apply;

impl Apply<'_> {
    /// Records success in the ledger and builds the report entry, once the
    /// table is confirmed to still be what verify checked.
    pub(super) async fn finish(
        &mut self,
        ctx: MigrationContext,
        entry: LedgerEntry,
        verified: u64,
        started: Instant,
        report: &Report,
    ) -> Result<MigrationReport> {
        let (version, rows) = match self.confirm(&ctx, verified).await {
            Ok(v) => v,
            Err(e) => return Err(self.roll_back(&ctx, entry, Phase::Record, e, report).await),
        };
        let entry = LedgerEntry {
            details: ctx.details(),
            ..entry.applied(version, rows)
        };
        if let Err(e) = self.write(|l| l.record(&entry)).await {
            return Err(self.roll_back(&ctx, entry, Phase::Record, e, report).await);
        }
        let duration = started.elapsed();
        info!(
            migration = self.id(),
            version,
            rows,
            ?duration,
            "migration applied"
        );
        self.emit(Event::MigrationApplied {
            migration: self.id().to_owned(),
            duration,
        });
        Ok(MigrationReport {
            backup: ctx.backup().cloned(),
            phases: std::mem::take(&mut self.phases),
            duration,
            ..crate::migrator::report_of(self.migration, &entry, Outcome::Applied)
        })
    }

    /// The version verify saw, and the table's row count at that very
    /// version: what the `applied` row records. The handle is still there
    /// (verify ended by moving it to the latest version), so this reads no
    /// version list. A commit after it is the application's (appends,
    /// deletes, compaction): another migrating process would have taken
    /// the lease, which the ledger write checks, and this one's own commits
    /// to the table are fenced.
    pub(super) async fn confirm(
        &self,
        ctx: &MigrationContext,
        verified: u64,
    ) -> Result<(u64, u64)> {
        let rows = crate::lance::row_count(ctx.table()).await?;
        Ok((verified, rows))
    }

    /// Restores the backup, records the failure, and builds the error.
    pub(super) async fn roll_back(
        &self,
        ctx: &MigrationContext,
        mut entry: LedgerEntry,
        phase: Phase,
        cause: Error,
        report: &Report,
    ) -> Error {
        // A commit the table's fence refused reaches here as the hook's
        // own error: the lease tells.
        if matches!(cause, Error::LeaseLost { .. }) || self.lease.check().is_err() {
            // Another process may hold the lease now: write nothing more.
            return self.failed(phase, Rollback::Deferred, cause, report);
        }
        let rollback = roll_back(ctx).await;
        if matches!(rollback, Rollback::NotNeeded | Rollback::Restored { .. }) {
            self.drop_created().await;
        }
        entry.error = Some(format!("{phase}: {}", chain(&cause)));
        entry.finished_at = Some(SystemTime::now());
        entry.version_after = ctx.table().version().await.ok();
        entry.status = match &rollback {
            // Left half-done: the next run must restore it first, which it
            // does for a `running` row.
            Rollback::RestoreFailed { .. } => LedgerStatus::Running,
            Rollback::Deferred => return self.failed(phase, rollback, cause, report),
            _ => LedgerStatus::Failed,
        };
        if let Err(e) = self.write(|l| l.record(&entry)).await {
            error!(
                migration = self.id(),
                error = %chain(&e),
                "could not record the failure in the ledger; it still shows the migration running, so the next run undoes it"
            );
        }
        self.failed(phase, rollback, cause, report)
    }

    pub(super) fn failed(
        &self,
        phase: Phase,
        rollback: Rollback,
        cause: Error,
        report: &Report,
    ) -> Error {
        error!(migration = self.id(), %phase, %rollback, error = %chain(&cause), "migration failed");
        let cause = Arc::new(cause);
        self.emit(Event::MigrationFailed {
            migration: self.id().to_owned(),
            phase,
            error: Arc::clone(&cause),
        });
        Error::MigrationFailed {
            migration: self.id().to_owned(),
            table: self.migration.table().to_owned(),
            phase,
            rollback: Box::new(rollback),
            report: Box::new(report.clone()),
            source: cause,
        }
    }
}
