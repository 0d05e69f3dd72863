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
//!    table as it is ([`Rollback::Refused`]);
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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{RecordBatch, new_null_array};
use arrow_schema::{Schema, SchemaRef};
use futures::TryStreamExt;
use lance::Dataset;
use lance::dataset::{InsertBuilder, WriteMode, WriteParams};
use tracing::{info, warn};

use crate::context::MigrationContext;
use crate::error::{Error, Result, chain};
use crate::lance::backfill::lance_err;
use crate::lance::{REAPPEND_KEY, latest_version};
use crate::report::Rollback;

/// Restores the backup if the migration changed the table, then re-appends
/// rows that other writers appended meanwhile. Writes nothing once the
/// lease is lost ([`Rollback::Deferred`]).
pub(crate) async fn roll_back(ctx: &MigrationContext) -> Rollback {
    let Some(backup) = ctx.backup() else {
        return Rollback::NotNeeded;
    };
    let failed = |reason: String| Rollback::Failed {
        backup: backup.tag().to_owned(),
        reason,
    };
    if ctx.check_lease().is_err() {
        return Rollback::Deferred;
    }
    match latest_version(ctx.table()).await {
        Ok(v) if v == backup.version() => return Rollback::NotNeeded,
        Ok(_) => {}
        Err(e) => return failed(chain(&e)),
    }
    match misfits(ctx, backup.version()).await {
        Ok(None) => {}
        Ok(Some(reason)) => {
            warn!(
                reason,
                "rollback refused: appended rows do not fit the backup's schema"
            );
            return Rollback::Refused { reason };
        }
        Err(e) => {
            return failed(format!(
                "the appended rows could not be checked: {}",
                chain(&e)
            ));
        }
    }
    if ctx.check_lease().is_err() {
        return Rollback::Deferred;
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
        if ctx.check_lease().is_err() {
            return Rollback::Deferred;
        }
        if let Err(e) = reappend(ctx, appended).await {
            warn!(rows = reappended, error = %chain(&e), "restored, but could not re-append rows");
            return failed(format!(
                "restored, but {reappended} rows appended during the migration could not be re-appended: {}",
                chain(&e)
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

/// Why the rows appended after `since` cannot all go back into the schema
/// before the migration, or `None` when they can.
async fn misfits(ctx: &MigrationContext, since: u64) -> Result<Option<String>> {
    let Some(latest) = crate::lance::dataset(ctx.table()).await? else {
        return Ok(None);
    };
    let versions = since + 1..latest.version().version + 1;
    let mut bad: HashMap<String, u64> = HashMap::new();
    for (version, rows) in crate::lance::append_commits(&latest, ctx.table_name(), versions).await?
    {
        let at = checkout(&latest, ctx.table_name(), version).await?;
        let schema = Schema::from(at.schema());
        if let Err(reason) = fits(&schema, ctx.schema_before()) {
            *bad.entry(reason).or_default() += rows;
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

async fn checkout(dataset: &Dataset, table: &str, version: u64) -> Result<Dataset> {
    dataset
        .checkout_version(version)
        .await
        .map_err(lance_err(format!(
            "check out version {version} of `{table}`"
        )))
}

/// The rows added by `Append` commits after `since` and before the table
/// handle's version (the restore commit), read at the version that appended
/// them and projected onto the schema before the migration.
async fn appended_rows(ctx: &MigrationContext, since: u64) -> Result<Vec<RecordBatch>> {
    let Some(latest) = crate::lance::dataset(ctx.table()).await? else {
        return Ok(Vec::new());
    };
    let name = ctx.table_name();
    let versions = since + 1..latest.version().version;
    let mut batches = Vec::new();
    for (version, _) in crate::lance::append_commits(&latest, name, versions).await? {
        let now = checkout(&latest, name, version).await?;
        let before = checkout(&latest, name, version - 1).await?;
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
            .map_err(lance_err(format!("scan rows appended to `{name}`")))?;
        let read: Vec<RecordBatch> = stream
            .try_collect()
            .await
            .map_err(lance_err(format!("read rows appended to `{name}`")))?;
        for batch in read {
            batches.push(project(&batch, ctx.schema_before(), name)?);
        }
    }
    Ok(batches)
}

/// Appends `batches` in one commit marked with [`REAPPEND_KEY`].
async fn reappend(ctx: &MigrationContext, batches: Vec<RecordBatch>) -> Result<()> {
    let dataset = crate::lance::local_dataset(ctx.table()).await?;
    let params = WriteParams {
        mode: WriteMode::Append,
        transaction_properties: Some(Arc::new(HashMap::from([(
            REAPPEND_KEY.to_owned(),
            ctx.migration_id().to_owned(),
        )]))),
        ..Default::default()
    };
    InsertBuilder::new(dataset)
        .with_params(&params)
        .execute(batches)
        .await
        .map_err(lance_err(format!(
            "re-append rows to `{}`",
            ctx.table_name()
        )))?;
    latest_version(ctx.table()).await?;
    Ok(())
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
