//! Undoing a failed (or interrupted) migration without losing other
//! writers' rows.
//!
//! Restoring the backup version alone would drop rows the application
//! appended while the migration ran. Lance records every commit's
//! transaction and keeps old versions readable, so the rollback:
//!
//! 1. checks, before touching anything, that every row appended since the
//!    backup fits the backup's schema (a row with a 768-d vector cannot go
//!    back into a 384-d column); if one does not, it refuses and leaves the
//!    table as it is ([`Rollback::KeptNewRows`]);
//! 2. restores the backup (commit R);
//! 3. reads the rows that `Append` commits added between the backup and R,
//!    as they were written, and appends them again, projected onto the
//!    restored schema, in one commit marked as a re-append
//!    ([`REAPPEND_KEY`]).
//!
//! Reading after the restore leaves no window in which an append could slip
//! past unseen; appends after R land on the restored table as usual. The
//! mark keeps a second rollback of the same attempt (the process died after
//! the re-append, before the ledger said so) from appending those rows
//! twice: it restores the backup again and re-appends the original commits,
//! never its own earlier copies.
//!
//! The same path undoes a failed attempt and recovers an interrupted one.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{RecordBatch, new_null_array};
use arrow_schema::{Schema, SchemaRef};
use tracing::{info, warn};

use crate::error::Rollback;
use crate::error::{Error, Result, chain};
use crate::lance::commits::{self, append_commits};
use crate::lance::latest_version;
use crate::migration::MigrationContext;

/// Restores the backup if the migration changed the table, then re-appends
/// rows that other writers appended meanwhile. Writes nothing once the
/// lease is lost ([`Rollback::Deferred`]).
// Long on purpose: the rollback's steps in their order, each with the lease check before it
// writes and its own failure; the order is what a reader must check.
pub(crate) async fn roll_back(ctx: &MigrationContext) -> Rollback {
    let Some(backup) = ctx.backup() else {
        return Rollback::NotNeeded;
    };
    let failed = |step: String, e: Error| Rollback::RestoreFailed {
        backup: backup.tag().to_owned(),
        step,
        source: Arc::new(e),
    };
    if ctx.check_lease().is_err() {
        return Rollback::Deferred;
    }
    match latest_version(ctx.table()).await {
        Ok(v) if v == backup.version() => return Rollback::NotNeeded,
        Ok(_) => {}
        Err(e) => return failed("read the table's version".to_owned(), e),
    }
    match misfits(ctx, backup.version()).await {
        Ok(None) => {}
        Ok(Some(reason)) => {
            warn!(
                reason,
                "rollback refused: appended rows do not fit the backup's schema"
            );
            return Rollback::KeptNewRows { reason };
        }
        Err(e) => {
            return failed("check the rows appended meanwhile".to_owned(), e);
        }
    }
    if ctx.check_lease().is_err() {
        return Rollback::Deferred;
    }
    if let Err(e) = backup.restore_fenced(ctx.table(), ctx.fence()).await {
        return failed("restore it".to_owned(), e);
    }
    let appended = match appended_rows(ctx, backup.version()).await {
        Ok(batches) => batches,
        Err(e) => {
            return failed(
                format!(
                    "read the rows appended during the migration (the table is restored; the rows are still in the versions after {})",
                    backup.version()
                ),
                e,
            );
        }
    };
    let reappended = appended.iter().map(|b| b.num_rows() as u64).sum();
    if reappended > 0 {
        if ctx.check_lease().is_err() {
            return Rollback::Deferred;
        }
        if let Err(e) =
            commits::reappend(ctx.table(), ctx.migration_id(), appended, ctx.fence()).await
        {
            warn!(rows = reappended, error = %chain(&e), "restored, but could not re-append rows");
            return failed(
                format!(
                    "append again the {reappended} rows appended during the migration (the table is restored)"
                ),
                e,
            );
        }
        info!(
            rows = reappended,
            "re-appended rows written during the failed migration"
        );
    }
    Rollback::Restored {
        version: backup.version(),
        reappended,
    }
}

/// Why the rows appended after `since` cannot all go back into the schema
/// before the migration, or `None` when they can.
async fn misfits(ctx: &MigrationContext, since: u64) -> Result<Option<String>> {
    let latest = latest_version(ctx.table()).await?;
    let mut bad: HashMap<String, u64> = HashMap::new();
    for appended in append_commits(ctx.table(), since + 1..latest + 1).await? {
        if let Err(reason) = fits(&appended.schema, ctx.schema_before()) {
            *bad.entry(reason).or_default() += appended.rows;
        }
    }
    Ok(bad
        .into_iter()
        .next()
        .map(|(reason, rows)| format!("{rows} rows appended during the migration {reason}")))
}

/// Whether rows of `schema` can be projected onto `target`.
fn fits(schema: &Schema, target: &Schema) -> std::result::Result<(), String> {
    for field in target.fields() {
        match schema.field_with_name(field.name()) {
            Ok(have) if have.data_type().equals_datatype(field.data_type()) => {}
            Ok(have) => {
                return Err(format!(
                    "have `{}` as {}, which the restored column ({}) cannot hold",
                    field.name(),
                    have.data_type(),
                    field.data_type()
                ));
            }
            Err(_) if field.is_nullable() => {}
            Err(_) => {
                return Err(format!(
                    "lack the NOT NULL column `{}` of the restored schema",
                    field.name()
                ));
            }
        }
    }
    Ok(())
}

/// The rows added by `Append` commits after `since` and before the table
/// handle's version (the restore commit), read at the version that appended
/// them and projected onto the schema before the migration.
async fn appended_rows(ctx: &MigrationContext, since: u64) -> Result<Vec<RecordBatch>> {
    let name = ctx.table_name();
    let restored = ctx
        .table()
        .version()
        .await
        .map_err(Error::lance(format!("read the version of `{name}`")))?;
    let mut batches = Vec::new();
    for appended in append_commits(ctx.table(), since + 1..restored).await? {
        for batch in commits::appended_rows(ctx.table(), appended.version).await? {
            batches.push(project(&batch, ctx.schema_before(), name)?);
        }
    }
    Ok(batches)
}

/// `batch`'s columns in the order of `schema`; columns it lacks become
/// NULL (an error for a NOT NULL column).
fn project(batch: &RecordBatch, schema: &SchemaRef, table: &str) -> Result<RecordBatch> {
    fits(&batch.schema(), schema).map_err(|reason| {
        Error::verification(
            table,
            format!("rows appended during the migration {reason}"),
        )
    })?;
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => column.clone(),
            None => new_null_array(field.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).map_err(Error::arrow("re-shape appended rows"))
}
