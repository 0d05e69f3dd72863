//! The change itself: the transform and rebuild phases, their progress
//! published in the ledger, and a stop on request.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::FutureExt;

use tracing::{Instrument, info, info_span, warn};

use crate::backup::Backup;
use crate::error::{Error, Result, chain, panic_message};
use crate::event::Event;
use crate::ledger::LedgerEntry;
use crate::migration::MigrationContext;
use crate::report::{MigrationReport, Outcome, Phase, PhaseTiming};
use crate::stop::StopSignal;

use super::{Apply, PUBLISH_EVERY, PhaseError, during};

impl Apply<'_> {
    /// [`change`](Self::change), publishing the progress of long phases in
    /// the migration's ledger row every [`PUBLISH_EVERY`] (for processes
    /// that find the lease taken to report), until it ends.
    pub(super) async fn change_publishing(
        &mut self,
        ctx: &MigrationContext,
        entry: &LedgerEntry,
    ) -> Result<u64, PhaseError> {
        let (ledger, lease) = (self.ledger, self.lease);
        let done = StopSignal::new();
        let publish = async {
            let mut published = None;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(PUBLISH_EVERY) => {}
                    () = done.stopped() => return,
                }
                let (rows, total, rate) = ctx.progress().snapshot();
                if rows == 0 || published == Some(rows) || lease.check().is_err() {
                    continue;
                }
                let mut entry = entry.clone();
                entry.details = ctx.details();
                for (key, value) in crate::migrator::pending::details(rows, total, rate) {
                    entry.details.insert(key.to_owned(), value);
                }
                match ledger.record(&entry).await {
                    Ok(()) => published = Some(rows),
                    Err(e) => {
                        warn!(migration = entry.id, error = %chain(&e), "could not publish progress in the ledger")
                    }
                }
            }
        };
        let change = async {
            let changed = self.change(ctx).await;
            done.stop();
            changed
        };
        let (changed, ()) = tokio::join!(change, publish);
        changed
    }

    /// The report of a migration stopped on request: left `running` in
    /// the ledger with its backup and progress, for the next process.
    pub(super) fn stopped(
        &mut self,
        ctx: &MigrationContext,
        phase: Phase,
        started: Instant,
    ) -> MigrationReport {
        let done = ctx.progress().done();
        info!(migration = self.id(), %phase, rows = done, "stopped on request; the next run continues it");
        self.emit(Event::MigrationStopped {
            migration: self.id().to_owned(),
            phase,
        });
        MigrationReport {
            backup: ctx.backup().cloned(),
            phases: std::mem::take(&mut self.phases),
            duration: started.elapsed(),
            ..crate::migrator::report_of(self.migration, &self.running_entry(ctx), Outcome::Stopped)
        }
    }

    /// Transform, rebuild, verify; returns the table version verify saw.
    pub(super) async fn change(&mut self, ctx: &MigrationContext) -> Result<u64, PhaseError> {
        let m = self.migration;
        self.phase(Phase::Transform, m.transform(ctx)).await?;
        self.phase(Phase::Rebuild, m.rebuild(ctx)).await?;
        let verify = async {
            m.verify(ctx).await?;
            crate::lance::latest_version(ctx.table()).await
        };
        self.phase(Phase::Verify, verify).await
    }

    /// Runs one phase, timing it and tagging its error with the phase. A
    /// lost lease stops the migration before the phase starts; a panic in
    /// the phase is caught and becomes [`Error::Panicked`].
    pub(super) async fn phase<T>(
        &mut self,
        phase: Phase,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T, PhaseError> {
        self.lease.check().map_err(during(phase))?;
        self.emit(Event::PhaseStarted {
            migration: self.id().to_owned(),
            phase,
        });
        let start = Instant::now();
        let span = info_span!("phase", phase = phase.as_str());
        let out = AssertUnwindSafe(work)
            .catch_unwind()
            .instrument(span.clone())
            .await
            .unwrap_or_else(|payload| {
                Err(Error::Panicked {
                    message: panic_message(payload.as_ref()),
                })
            })
            .map_err(during(phase))?;
        let duration = start.elapsed();
        span.in_scope(|| info!(migration = self.id(), %phase, ?duration, "phase finished"));
        self.phases.push(PhaseTiming { phase, duration });
        self.emit(Event::PhaseFinished {
            migration: self.id().to_owned(),
            phase,
            duration,
        });
        Ok(out)
    }

    pub(super) fn running_entry(&self, ctx: &MigrationContext) -> LedgerEntry {
        let backup = ctx.backup();
        LedgerEntry {
            started_at: ctx.started_at(),
            backup_tag: backup.map(|b| b.tag().to_owned()),
            backup_copy: backup.and_then(Backup::copy).map(|c| c.uri().to_owned()),
            details: ctx.details(),
            ..LedgerEntry::running(
                self.id(),
                self.seq,
                ctx.table_name(),
                self.migration.checksum(),
                ctx.version_before(),
                ctx.rows_before(),
            )
        }
    }
}
