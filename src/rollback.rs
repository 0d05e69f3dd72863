//! Undoing a failed migration without losing other writers' rows.
//!
//! Restoring the backup version alone would drop rows the application
//! appended while the migration ran. Lance records every commit's
//! transaction and keeps old versions readable, so the rollback restores the
//! backup first (commit R), then reads the rows that `Append` commits added
//! between the backup and R, as they were written, and appends them again,
//! projected onto the restored schema. Reading after the restore leaves no
//! window in which an append could slip past unseen; appends after R land on
//! the restored table as usual.

use std::collections::HashSet;

use arrow_array::{RecordBatch, new_null_array};
use arrow_schema::SchemaRef;
use futures::TryStreamExt;
use tracing::{info, warn};

use crate::apply::chain;
use crate::context::MigrationContext;
use crate::error::{Error, Result, Rollback};
use crate::tables::{self, latest_version};

/// Restores the backup if the migration changed the table, then re-appends
/// rows that other writers appended meanwhile.
pub(crate) async fn roll_back(ctx: &MigrationContext) -> Rollback {
    let Some(backup) = ctx.backup() else {
        return Rollback::NotNeeded;
    };
    let failed = |reason: String| Rollback::Failed {
        backup: backup.tag().to_owned(),
        reason,
    };
    match latest_version(ctx.table()).await {
        Ok(v) if v == backup.version() => return Rollback::NotNeeded,
        Ok(_) => {}
        Err(e) => return failed(chain(&e)),
    }
    if let Err(e) = backup.restore(ctx.table()).await {
        return failed(chain(&e));
    }
    let appended = match appended_rows(ctx, backup.version()).await {
        Ok(batches) => batches,
        Err(e) => {
            return failed(format!(
                "restored, but the rows appended during the migration (still in the versions after {}) could not be read: {}",
                backup.version(),
                chain(&e)
            ));
        }
    };
    let reappended = appended.iter().map(|b| b.num_rows() as u64).sum();
    if reappended > 0 {
        if let Err(e) = ctx.table().add(appended).execute().await {
            warn!(rows = reappended, error = %e, "restored, but could not re-append rows");
            return failed(format!(
                "restored, but {reappended} rows appended during the migration could not be re-appended: {e}"
            ));
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

/// The rows added by `Append` commits after `since` and before the table
/// handle's version (the restore commit), read at the version that appended
/// them and projected onto the schema before the migration.
async fn appended_rows(ctx: &MigrationContext, since: u64) -> Result<Vec<RecordBatch>> {
    let Some(latest) = tables::dataset(ctx.table()).await? else {
        return Ok(Vec::new());
    };
    let lance_err = |what: &str| Error::lance(format!("{what} of `{}`", ctx.table_name()));
    let versions = since + 1..latest.version().version;
    let mut batches = Vec::new();
    for (version, _) in tables::append_commits(&latest, ctx.table_name(), versions).await? {
        let at = |v: u64| latest.checkout_version(v);
        let (now, before) = (at(version).await, at(version - 1).await);
        let now = now.map_err(|e| lance_err("check out a version")(e.into()))?;
        let before = before.map_err(|e| lance_err("check out a version")(e.into()))?;
        let existing: HashSet<u64> = before.fragments().iter().map(|f| f.id).collect();
        let added = now
            .fragments()
            .iter()
            .filter(|f| !existing.contains(&f.id))
            .cloned();
        let mut scan = now.scan();
        scan.with_fragments(added.collect());
        let stream = scan
            .try_into_stream()
            .await
            .map_err(|e| lance_err("scan appended rows")(e.into()))?;
        let read: Vec<RecordBatch> = stream
            .try_collect()
            .await
            .map_err(|e| lance_err("read appended rows")(e.into()))?;
        for batch in read {
            batches.push(project(&batch, ctx.schema_before(), ctx.table_name())?);
        }
    }
    Ok(batches)
}

/// `batch`'s columns in the order of `schema`; columns it lacks become
/// NULL (an error for a NOT NULL column).
fn project(batch: &RecordBatch, schema: &SchemaRef, table: &str) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => Ok(column.clone()),
            None if field.is_nullable() => Ok(new_null_array(field.data_type(), batch.num_rows())),
            None => Err(Error::Verification {
                table: table.to_owned(),
                reason: format!("appended rows lack the NOT NULL column `{}`", field.name()),
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(Error::arrow("re-shape appended rows"))
}
