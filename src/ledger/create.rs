//! Creating the ledger, and checking it on open: a late create of a racing
//! process undone, the format checked, columns of later formats added.

use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchIterator};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lancedb::table::NewColumnTransform;
use lancedb::{Connection, Table};
use tracing::warn;

use crate::error::{Error, Result};
use crate::lance::commits::rows_at;
use crate::lance::latest_version;
use crate::lance::retry::{is_conflict_or_overwritten, is_lancedb_conflict, retry};
use crate::ledger::codec::{FORMAT, FORMAT_KEY, LATE_COLUMNS, schema};

/// Creates the ledger; a process that finds it created by another
/// meanwhile opens that one.
pub(super) async fn create(db: &Connection, name: &str) -> Result<Table> {
    match db.create_empty_table(name, schema()).execute().await {
        Ok(table) => {
            restore_overwritten_rows(name, &table).await?;
            Ok(table)
        }
        // Another process created it between our open and create (racing
        // creates fail either way: "already exists" or a commit conflict).
        Err(e)
            if matches!(e, lancedb::Error::TableAlreadyExists { .. })
                || is_lancedb_conflict(&e) =>
        {
            db.open_table(name)
                .execute()
                .await
                .map_err(Error::lance(format!("open ledger `{name}`")))
        }
        Err(e) => Err(Error::lance(format!("create ledger `{name}`"))(e)),
    }
}

/// Undoes a late create. Of two processes creating the ledger at once, the
/// one that finds it missing but commits second does not fail: Lance
/// commits its empty create as an overwrite on top of the other's ledger,
/// erasing any rows the other already wrote. That process knows it from
/// its commit's version (a real create is version 1), and re-inserts the
/// rows of the version just before its own whose ids the ledger no longer
/// has. Rows written since (the winner carries on on top of the empty
/// ledger) are newer and are kept.
pub(super) async fn restore_overwritten_rows(name: &str, table: &Table) -> Result<()> {
    let failed = || Error::lance(format!("restore ledger `{name}` after a racing create"));
    let created = table.version().await.map_err(failed())?;
    if created <= 1 {
        return Ok(());
    }
    let lost = rows_at(table, created - 1).await?;
    let rows: usize = lost.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 {
        return Ok(());
    }
    warn!(
        ledger = name,
        version = created,
        rows,
        "this process created the ledger after another one did; restoring the rows its create overwrote"
    );
    let schema = lost[0].schema();
    retry(
        "restore the ledger after a racing create",
        is_conflict_or_overwritten,
        |_| {
            let lost = lost.clone();
            let schema = schema.clone();
            async move {
                // Matched against the latest rows, not the empty ones of this create.
                latest_version(table).await?;
                let reader = RecordBatchIterator::new(lost.into_iter().map(Ok), schema);
                let mut merge = table.merge_insert(&["id"]);
                merge.when_not_matched_insert_all().use_index(false);
                merge.execute(Box::new(reader)).await.map_err(failed())?;
                Ok(())
            }
        },
    )
    .await
}

pub(super) async fn check_schema(name: &str, table: &Table) -> Result<()> {
    let actual = table
        .schema()
        .await
        .map_err(Error::lance(format!("read the schema of ledger `{name}`")))?;
    let damaged = |reason: String| Error::Ledger {
        ledger: name.to_owned(),
        reason,
        source: None,
    };
    let format = actual.metadata().get(FORMAT_KEY);
    match format.map(|f| f.parse::<u32>()) {
        None => {
            return Err(damaged(format!(
                "it has no `{FORMAT_KEY}` marker; is it really a ledger?"
            )));
        }
        Some(Ok(f)) if f > FORMAT => {
            return Err(Error::NewerFormat {
                ledger: name.to_owned(),
                what: "ledger",
                found: f,
                known: FORMAT,
            });
        }
        Some(Err(_)) => {
            return Err(damaged(format!(
                "its `{FORMAT_KEY}` marker is not a number"
            )));
        }
        Some(Ok(_)) => {}
    }
    for field in schema().fields() {
        if LATE_COLUMNS.contains(&field.name().as_str()) {
            continue;
        }
        match actual.field_with_name(field.name()) {
            Ok(f) if f.data_type() == field.data_type() => {}
            _ => {
                return Err(damaged(format!(
                    "column `{}` is missing or has the wrong type",
                    field.name()
                )));
            }
        }
    }
    Ok(())
}

/// Records [`FORMAT`] in the ledger's schema metadata when it holds an
/// older number (a ledger [`check_schema`] accepted), so that older
/// releases refuse the ledger from then on ([`Error::NewerFormat`])
/// instead of misreading it. One metadata-only commit, once per ledger;
/// the caller holds the lease.
pub(super) async fn claim_format(name: &str, table: &Table) -> Result<()> {
    let schema = table
        .schema()
        .await
        .map_err(Error::lance(format!("read the schema of ledger `{name}`")))?;
    let format: u32 = schema
        .metadata()
        .get(FORMAT_KEY)
        .and_then(|f| f.parse().ok())
        .unwrap_or(1);
    if format >= FORMAT {
        return Ok(());
    }
    let Some(native) = table.as_native() else {
        // A remote table's ledger: its format is LanceDB Cloud's business.
        return Ok(());
    };
    let mut metadata = schema.metadata().clone();
    metadata.insert(FORMAT_KEY.to_owned(), FORMAT.to_string());
    native
        .replace_schema_metadata(metadata)
        .await
        .map_err(Error::lance(format!(
            "record format {FORMAT} in ledger `{name}`"
        )))?;
    tracing::info!(ledger = name, format = FORMAT, "ledger format upgraded");
    Ok(())
}

/// Ledgers written before the [`LATE_COLUMNS`] existed get them, all-null
/// (metadata-only).
pub(super) async fn add_late_columns(name: &str, table: &Table) -> Result<()> {
    let missing = |schema: &SchemaRef| -> Vec<Field> {
        LATE_COLUMNS
            .iter()
            .filter(|c| schema.field_with_name(c).is_err())
            .map(|c| Field::new(*c, DataType::Utf8, true))
            .collect()
    };
    let read = Error::lance(format!("read the schema of ledger `{name}`"));
    let columns = missing(&table.schema().await.map_err(read)?);
    if columns.is_empty() {
        return Ok(());
    }
    let names = columns.iter().map(|f| f.name().clone()).collect::<Vec<_>>();
    let column = Arc::new(Schema::new(columns));
    let added = table
        .add_columns()
        .transform(NewColumnTransform::AllNulls(column))
        .execute()
        .await;
    if let Err(e) = added {
        // Another process may have added it meanwhile.
        table.checkout_latest().await.ok();
        let read = Error::lance(format!("read the schema of ledger `{name}`"));
        if !missing(&table.schema().await.map_err(read)?).is_empty() {
            return Err(Error::lance(format!(
                "add columns {names:?} to ledger `{name}`"
            ))(e));
        }
    }
    Ok(())
}
