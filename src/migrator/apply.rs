//! Applying one pending migration: backup, transform, rebuild, verify, and
//! the rollback when any of them fails.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::FutureExt;

use lancedb::Connection;
use tracing::{Instrument, error, info, info_span, warn};

use crate::backup::Backup;
use crate::backup::{BackupCopy, BackupLocation};
use crate::error::{Error, Result, chain, panic_message};
use crate::event::{Event, Events};
use crate::lance::commits::first_reshaping_commit;
use crate::lance::indexes;
use crate::ledger::lease::Lease;
use crate::ledger::{Ledger, LedgerEntry, LedgerStatus};
use crate::migration::Migration;
use crate::migration::MigrationContext;
use crate::migration::TableInfo;
use crate::migrator::rollback::roll_back;
use crate::progress::Progress;
use crate::report::{MigrationReport, Outcome, Phase, PhaseTiming, Report, Rollback};
use crate::stop::StopSignal;

/// How often a long phase's progress is published in the ledger.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// An error, with the phase it happened in.
struct PhaseError {
    phase: Phase,
    error: Error,
}

/// Tags an error with the phase it happened in.
fn during(phase: Phase) -> impl FnOnce(Error) -> PhaseError {
    move |error| PhaseError { phase, error }
}

/// One migration being applied.
pub(crate) struct Apply<'a> {
    db: &'a Connection,
    ledger: &'a Ledger,
    lease: &'a Lease,
    events: &'a Events,
    migration: &'a dyn Migration,
    seq: u64,
    copy_to: Option<&'a BackupLocation>,
    stop: &'a StopSignal,
    phases: Vec<PhaseTiming>,
}

impl<'a> Apply<'a> {
    pub(crate) fn new(
        migrator: &'a super::Migrator,
        ledger: &'a Ledger,
        lease: &'a Lease,
        migration: &'a dyn Migration,
        seq: u64,
    ) -> Self {
        Self {
            db: &migrator.db,
            ledger,
            lease,
            events: &migrator.events,
            migration,
            seq,
            copy_to: migrator.copy_to.as_ref(),
            stop: &migrator.stop,
            phases: Vec::new(),
        }
    }

    /// Runs the migration; `previous` is its ledger row from an earlier,
    /// unfinished or failed attempt.
    pub(crate) async fn run(
        mut self,
        previous: Option<&LedgerEntry>,
        report: &Report,
    ) -> Result<MigrationReport> {
        let span = info_span!(
            "migration",
            id = self.migration.id(),
            table = self.migration.table()
        );
        async {
            let started = Instant::now();
            self.emit(Event::MigrationStarted {
                migration: self.id().to_owned(),
                table: self.migration.table().to_owned(),
            });
            let ctx = match self.prepare(previous).await {
                Ok(ctx) => ctx,
                Err(PhaseError {
                    phase,
                    error: Error::Interrupted { rollback, source },
                }) => return Err(self.failed(phase, *rollback, *source, report)),
                Err(PhaseError { phase, error }) => {
                    return Err(self.failed(phase, Rollback::NotNeeded, error, report));
                }
            };
            let entry = self.running_entry(&ctx);
            let first = match previous {
                None => self.write(|l| l.insert(&entry)).await,
                Some(_) => self.write(|l| l.record(&entry)).await,
            };
            if let Err(e) = first {
                return Err(self.failed(Phase::Record, Rollback::NotNeeded, e, report));
            }
            let changed = self.change_publishing(&ctx, &entry).await;
            match changed {
                Ok(verified) => self.finish(ctx, entry, verified, started, report).await,
                Err(PhaseError {
                    phase,
                    error: Error::Stopped,
                }) if self.migration.resumable() => Ok(self.stopped(&ctx, phase, started)),
                Err(PhaseError { phase, error }) => {
                    Err(self.roll_back(&ctx, entry, phase, error, report).await)
                }
            }
        }
        .instrument(span)
        .await
    }

    fn id(&self) -> &str {
        self.migration.id()
    }

    /// A ledger write, made only while the lease is provably held.
    async fn write<'l, F, Fut>(&'l self, write: F) -> Result<()>
    where
        F: FnOnce(&'l Ledger) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        self.lease.check()?;
        write(self.ledger).await
    }

    /// The migration's `expected_schema` for the table as it is, with a
    /// panic in it caught as an error; and every index the migration will
    /// have to build again (its column keeps its name with another type,
    /// or the migration's plan names it in [`MigrationPlan::rebuilds`]) is one
    /// LanceDB can build.
    ///
    /// [`MigrationPlan::rebuilds`]: crate::MigrationPlan::rebuilds
    async fn expected(&self, ctx: &MigrationContext) -> Result<()> {
        let schema = ctx.schema_before();
        let caught = |payload: Box<dyn std::any::Any + Send>| {
            Err(Error::Panicked {
                message: panic_message(payload.as_ref()),
            })
        };
        let after =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.migration.expected_schema(schema)))
                .unwrap_or_else(caught)?;
        if ctx.indexes_before().is_empty() {
            return Ok(());
        }
        let info = TableInfo {
            name: self.migration.table().to_owned(),
            rows: ctx.rows_before(),
            schema: schema.as_ref().clone(),
            indexes: ctx.indexes_before().to_vec(),
        };
        // A plan that fails or panics names nothing: the column types
        // still tell.
        let rebuilt: Vec<String> =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.migration.plan(&info)))
                .ok()
                .and_then(Result::ok)
                .map(|work| work.rebuilds.into_iter().map(|s| s.name).collect())
                .unwrap_or_default();
        let specs = indexes::to_rebuild(ctx.indexes_before(), schema, &after, &rebuilt);
        indexes::check_buildable(ctx.table(), ctx.version_before(), &specs, &after).await
    }

    /// Opens the table, recovers an interrupted attempt, takes the backup.
    async fn prepare(
        &mut self,
        previous: Option<&LedgerEntry>,
    ) -> Result<MigrationContext, PhaseError> {
        let (m, db) = (self.migration, self.db);
        let progress = Progress::new(m.id(), self.events.clone());
        let fence = self.lease.fence();
        let open =
            MigrationContext::open(db, m.table(), m.id(), progress, fence, self.stop.clone());
        let mut ctx = self.phase(Phase::Prepare, open).await?;
        let interrupted = previous.filter(|e| e.status == LedgerStatus::Running);
        if let Some(entry) = interrupted
            && let Some(tag) = entry.backup_tag.clone()
            && m.resumable()
        {
            self.resume(&mut ctx, entry, tag)
                .await
                .map_err(during(Phase::Prepare))?;
            return Ok(ctx);
        }
        if let Some(interrupted) = interrupted {
            ctx = self
                .recover(ctx, interrupted)
                .await
                .map_err(during(Phase::Prepare))?;
        }
        // Bad input is refused here, before anything is written.
        self.expected(&ctx).await.map_err(during(Phase::Prepare))?;
        let copy_to = self.copy_to;
        let backup = async {
            let backup = m.backup(&ctx).await?;
            match copy_to {
                Some(location) => backup.copy_to(ctx.table(), location.clone()).await,
                None => Ok(backup),
            }
        };
        let backup = self.phase(Phase::Backup, backup).await?;
        ctx.set_backup(backup);
        Ok(ctx)
    }

    /// A resumable migration's earlier attempt was interrupted: continue
    /// it with its backup (and backup copy, if still usable).
    async fn resume(
        &self,
        ctx: &mut MigrationContext,
        entry: &LedgerEntry,
        tag: String,
    ) -> Result<()> {
        warn!(
            migration = self.id(),
            tag, "an earlier attempt was interrupted; continuing it"
        );
        let copy = match &entry.backup_copy {
            Some(uri) => match BackupCopy::reopen(ctx.table(), uri).await {
                Ok(copy) => Some(copy),
                Err(e) => {
                    let error = chain(&e);
                    warn!(
                        migration = self.id(),
                        error,
                        "the first attempt's backup copy is unusable; continuing with the tag only"
                    );
                    None
                }
            },
            None => None,
        };
        let backup = Backup::new(ctx.table_name(), entry.version_before, tag).with_copy(copy);
        ctx.resume(entry.version_before, entry.rows_before, backup)
            .await?;
        self.expected(ctx).await
    }

    /// A previous attempt died mid-migration: undo it exactly as a failed
    /// attempt is undone (restore its backup, keep the rows others appended
    /// since), then start afresh.
    async fn recover(
        &self,
        mut ctx: MigrationContext,
        interrupted: &LedgerEntry,
    ) -> Result<MigrationContext> {
        let Some(tag) = &interrupted.backup_tag else {
            return Ok(ctx);
        };
        warn!(
            migration = self.id(),
            tag, "an earlier attempt was interrupted; undoing it"
        );
        let backup = Backup::new(ctx.table_name(), interrupted.version_before, tag.clone());
        ctx.resume(interrupted.version_before, interrupted.rows_before, backup)
            .await?;
        match roll_back(&ctx).await {
            Rollback::NotNeeded | Rollback::Restored { .. } => {}
            Rollback::Deferred => {
                return Err(ctx
                    .check_lease()
                    .err()
                    .unwrap_or(Error::LeaseLost { generation: 0 }));
            }
            rollback => {
                let source = Error::verification(
                    ctx.table_name(),
                    "the interrupted attempt could not be undone",
                );
                if let Rollback::KeptNewRows { .. } = rollback {
                    // Restoring would drop rows: record the attempt failed, so
                    // the next run starts from the table as it is.
                    let mut entry = interrupted.clone();
                    entry.status = LedgerStatus::Failed;
                    entry.finished_at = Some(SystemTime::now());
                    entry.error = Some(format!("prepare: {rollback}"));
                    if let Err(e) = self.write(|l| l.record(&entry)).await {
                        error!(migration = self.id(), error = %chain(&e), "could not record the refusal in the ledger");
                    }
                }
                return Err(Error::Interrupted {
                    rollback: Box::new(rollback),
                    source: Box::new(source),
                });
            }
        }
        let progress = Progress::new(self.id(), self.events.clone());
        let fence = self.lease.fence();
        let stop = self.stop.clone();
        MigrationContext::open(
            self.db,
            self.migration.table(),
            self.id(),
            progress,
            fence,
            stop,
        )
        .await
    }

    /// [`change`](Self::change), publishing the progress of long phases in
    /// the migration's ledger row every [`PUBLISH_EVERY`] (for processes
    /// that find the lease taken to report), until it ends.
    async fn change_publishing(
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
                for (key, value) in super::pending::details(rows, total, rate) {
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
    fn stopped(
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
            ..super::report_of(self.migration, &self.running_entry(ctx), Outcome::Stopped)
        }
    }

    /// Transform, rebuild, verify; returns the table version verify saw.
    async fn change(&mut self, ctx: &MigrationContext) -> Result<u64, PhaseError> {
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
    async fn phase<T>(
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
        let out = AssertUnwindSafe(work)
            .catch_unwind()
            .await
            .unwrap_or_else(|payload| {
                Err(Error::Panicked {
                    message: panic_message(payload.as_ref()),
                })
            })
            .map_err(during(phase))?;
        let duration = start.elapsed();
        info!(migration = self.id(), %phase, ?duration, "phase finished");
        self.phases.push(PhaseTiming { phase, duration });
        self.emit(Event::PhaseFinished {
            migration: self.id().to_owned(),
            phase,
            duration,
        });
        Ok(out)
    }

    fn running_entry(&self, ctx: &MigrationContext) -> LedgerEntry {
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

    /// Records success in the ledger and builds the report entry, once the
    /// table is confirmed to still be what verify checked.
    async fn finish(
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
            ..super::report_of(self.migration, &entry, Outcome::Applied)
        })
    }

    /// The table's version and row count now, after checking that no commit
    /// since the version verify saw replaced its contents or schema (a
    /// restore by a process that took the lease over, say). Appends,
    /// deletes and compaction by the application are expected.
    async fn confirm(&self, ctx: &MigrationContext, verified: u64) -> Result<(u64, u64)> {
        let table = ctx.table_name();
        // The row count of the very version recorded as the one after.
        let (version, rows) = crate::lance::latest_row_count(ctx.table()).await?;
        if version > verified
            && let Some((at, op)) =
                first_reshaping_commit(ctx.table(), verified + 1..version + 1).await?
        {
            return Err(Error::verification(
                table,
                format!(
                    "another writer's {op} commit (version {at}) changed the table after it was verified"
                ),
            ));
        }
        Ok((version, rows))
    }

    /// Restores the backup, records the failure, and builds the error.
    async fn roll_back(
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

    fn failed(&self, phase: Phase, rollback: Rollback, cause: Error, report: &Report) -> Error {
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

    fn emit(&self, event: Event) {
        self.events.emit(event);
    }
}
