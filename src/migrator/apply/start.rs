//! Before the change: the table as the migration expects it, the
//! backup, and the recovery of an interrupted earlier attempt.

use std::panic::AssertUnwindSafe;
use std::time::SystemTime;

use tracing::{error, info, warn};

use crate::backup::Backup;
use crate::backup::BackupCopy;
use crate::error::{Error, Result, Rollback, chain, panic_message};
use crate::lance::indexes;
use crate::ledger::lease::Lease;
use crate::ledger::{LedgerEntry, LedgerStatus};
use crate::migration::Migration;
use crate::migration::MigrationContext;
use crate::migration::TableInfo;
use crate::migrator::rollback::roll_back;
use crate::progress::Progress;
use crate::report::Phase;
use lancedb::Connection;

use super::{Apply, PhaseError, during};

impl Apply<'_> {
    /// The migration's `expected_schema` for the table as it is, with a
    /// panic in it caught as an error; and every index the migration will
    /// have to build again (its column keeps its name with another type,
    /// or the migration's plan names it in [`MigrationPlan::rebuilds`]) is one
    /// LanceDB can build.
    ///
    /// [`MigrationPlan::rebuilds`]: crate::MigrationPlan::rebuilds
    pub(super) async fn expected(&self, ctx: &MigrationContext) -> Result<()> {
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
    pub(super) async fn prepare(
        &mut self,
        previous: Option<&LedgerEntry>,
    ) -> Result<MigrationContext, PhaseError> {
        let (m, db) = (self.migration, self.db);
        let progress = Progress::new(m.id(), self.events.clone());
        let (lease, events, stop) = (self.lease, self.events, self.stop);
        let open = async move {
            let open = |progress| {
                MigrationContext::open(db, m.table(), m.id(), progress, lease.fence(), stop.clone())
            };
            match open(progress).await {
                Err(Error::TableNotFound { .. }) if m.creates().is_some() => {
                    let created = create_missing(db, lease, m).await?;
                    let ctx = open(Progress::new(m.id(), events.clone())).await?;
                    Ok((ctx, created))
                }
                opened => opened.map(|ctx| (ctx, false)),
            }
        };
        let (mut ctx, created) = self.phase(Phase::Prepare, open).await?;
        self.created = created;
        // The migration's span (the caller's) names its rows from here on
        // (once: a span's field recorded twice shows twice).
        let rows = |ctx: &MigrationContext| {
            tracing::Span::current().record("rows", ctx.rows_before());
        };
        let interrupted = previous.filter(|e| e.status == LedgerStatus::Running);
        if let Some(entry) = interrupted
            && let Some(tag) = entry.backup_tag.clone()
            && m.resumable()
        {
            self.resume(&mut ctx, entry, tag)
                .await
                .map_err(during(Phase::Prepare))?;
            rows(&ctx);
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
        rows(&ctx);
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

    /// Drops the table this attempt created ([`create_missing`]) if it
    /// is still empty, so that a failed attempt leaves the database as it
    /// was. A table someone wrote rows to meanwhile is kept (the next run
    /// adopts it).
    pub(super) async fn drop_created(&self) {
        if !self.created || self.lease.check().is_err() {
            return;
        }
        let name = self.migration.table();
        let empty = match self.db.open_table(name).execute().await {
            Ok(table) => table.count_rows(None).await.is_ok_and(|rows| rows == 0),
            Err(_) => false,
        };
        if !empty {
            return;
        }
        match self.db.drop_table(name, &[]).await {
            Ok(()) => info!(
                migration = self.id(),
                table = name,
                "the table this attempt created is dropped again"
            ),
            Err(e) => warn!(
                migration = self.id(),
                table = name,
                error = %e,
                "could not drop the empty table this attempt created; the next run adopts it"
            ),
        }
    }

    /// A resumable migration's earlier attempt was interrupted: continue
    /// it with its backup (and backup copy, if still usable).
    pub(super) async fn resume(
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
    pub(super) async fn recover(
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
}

/// Creates the migration's table, found missing, empty with the schema
/// the migration [creates](crate::Migration::creates) it with; `true`
/// when this call created it (`false`: another process did meanwhile).
/// The migration's `expected_schema` of a table still to be created is
/// checked first, so bad input creates nothing.
async fn create_missing(db: &Connection, lease: &Lease, m: &dyn Migration) -> Result<bool> {
    let Some(schema) = m.creates() else {
        return Ok(false);
    };
    let name = m.table();
    let caught = |payload: Box<dyn std::any::Any + Send>| {
        Err(Error::Panicked {
            message: panic_message(payload.as_ref()),
        })
    };
    let empty = arrow_schema::Schema::empty();
    std::panic::catch_unwind(AssertUnwindSafe(|| m.expected_schema(&empty)))
        .unwrap_or_else(caught)?;
    lease.check()?;
    match db.create_empty_table(name, schema).execute().await {
        Ok(_) => {
            info!(migration = m.id(), table = name, "table created");
            Ok(true)
        }
        // The application created it meanwhile: migrate that one.
        Err(lancedb::Error::TableAlreadyExists { .. }) => Ok(false),
        Err(e) => Err(Error::lance(format!("create table `{name}`"))(e)),
    }
}
