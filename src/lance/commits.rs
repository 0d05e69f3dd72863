//! A table's history, read from the transactions Lance records with every
//! commit: which commits appended rows (and which rows), which replaced the
//! table's contents; and the marked re-append a rollback commits.
//!
//! Every function works on the table's latest version as the handle sees
//! it, and finds no history in a table that is not a local Lance dataset
//! (a remote table): there it returns nothing.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use futures::TryStreamExt;
use lance::Dataset;
use lance::dataset::transaction::{Operation, Transaction};
use lance::dataset::{InsertBuilder, WriteMode, WriteParams};
use lancedb::Table;

use crate::error::{Error, Result};
use crate::lance::fence::Fence;
use crate::lance::retry::{retry_commit, single_attempt};
use crate::lance::{dataset, latest_version, local_dataset};

/// The transaction property that marks the commits in which a rollback
/// appended other writers' rows again, or appended rows of its own (a
/// [`CreateTable`](crate::CreateTable)'s first rows); its value is the
/// migration id. A rollback does not count such rows as another writer's.
pub(crate) const REAPPEND_KEY: &str = "lancedb_migrate.reappend";

/// One `Append` commit of another writer.
#[derive(Debug, Clone)]
pub(crate) struct Appended {
    /// The version it made.
    pub(crate) version: u64,
    /// Rows it added.
    pub(crate) rows: u64,
    /// The table's schema at that version: the schema its rows were
    /// written in.
    pub(crate) schema: Schema,
}

/// The `Append` commits among `versions` of `table`, oldest first. A
/// rollback's own re-appends ([`REAPPEND_KEY`]) are left out: they copy rows
/// that earlier `Append` commits hold.
pub(crate) async fn append_commits(table: &Table, versions: Range<u64>) -> Result<Vec<Appended>> {
    let Some(latest) = dataset(table).await? else {
        return Ok(Vec::new());
    };
    let mut commits = Vec::new();
    for version in versions {
        let Some(transaction) = transaction(&latest, table.name(), version).await? else {
            continue;
        };
        let ours = transaction
            .transaction_properties
            .as_ref()
            .is_some_and(|p| p.contains_key(REAPPEND_KEY));
        if let Operation::Append { fragments } = &transaction.operation
            && !ours
        {
            let rows = fragments
                .iter()
                .filter_map(|f| f.physical_rows)
                .sum::<usize>();
            let at = checkout(&latest, table.name(), version).await?;
            commits.push(Appended {
                version,
                rows: rows as u64,
                schema: Schema::from(at.schema()),
            });
        }
    }
    Ok(commits)
}

/// The rows the `Append` commit `version` of `table` added, as it wrote
/// them (read at that version, so later deletes do not hide them).
pub(crate) async fn appended_rows(table: &Table, version: u64) -> Result<Vec<RecordBatch>> {
    let Some(latest) = dataset(table).await? else {
        return Ok(Vec::new());
    };
    let name = table.name();
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
        .map_err(Error::lance(format!("scan rows appended to `{name}`")))?;
    stream
        .try_collect()
        .await
        .map_err(Error::lance(format!("read rows appended to `{name}`")))
}

/// Every row of `table` at `version`.
pub(crate) async fn rows_at(table: &Table, version: u64) -> Result<Vec<RecordBatch>> {
    let Some(latest) = dataset(table).await? else {
        return Ok(Vec::new());
    };
    let name = table.name();
    let read = || Error::lance(format!("read version {version} of `{name}`"));
    checkout(&latest, name, version)
        .await?
        .scan()
        .try_into_stream()
        .await
        .map_err(read())?
        .try_collect()
        .await
        .map_err(read())
}

/// Appends `batches` (of `schema`) to `table` in one commit marked with
/// [`REAPPEND_KEY`] = `migration`, and moves the handle to it. The files
/// are written once; the commit is retried on lost races, each attempt
/// after checking `fence`.
pub(crate) async fn reappend(
    table: &Table,
    migration: &str,
    batches: Vec<RecordBatch>,
    fence: &Fence,
) -> Result<()> {
    let operation = format!("re-append rows to `{}`", table.name());
    let dataset = local_dataset(table).await?;
    let params = WriteParams {
        mode: WriteMode::Append,
        transaction_properties: Some(Arc::new(HashMap::from([(
            REAPPEND_KEY.to_owned(),
            migration.to_owned(),
        )]))),
        ..Default::default()
    };
    let transaction = InsertBuilder::new(dataset)
        .with_params(&params)
        .execute_uncommitted(batches)
        .await
        .map_err(Error::lance(operation.as_str()))?;
    retry_commit(&operation, |_| async {
        fence.check()?;
        latest_version(table).await?;
        let dataset = local_dataset(table).await?;
        // Read at the latest version: an append does not depend on what
        // it read, and Lance would otherwise re-check every commit since
        // the first attempt's version on each attempt, a window that grows
        // as long as the application keeps appending.
        let transaction = Transaction {
            read_version: dataset.version().version,
            ..transaction.clone()
        };
        single_attempt(dataset)
            .execute(transaction)
            .await
            .map_err(Error::lance(operation.as_str()))
    })
    .await?;
    latest_version(table).await?;
    Ok(())
}

async fn checkout(dataset: &Dataset, name: &str, version: u64) -> Result<Dataset> {
    dataset
        .checkout_version(version)
        .await
        .map_err(Error::lance(format!(
            "check out version {version} of `{name}`"
        )))
}

/// The transaction of commit `version` of `dataset` (the table `name`), if
/// Lance recorded one.
async fn transaction(dataset: &Dataset, name: &str, version: u64) -> Result<Option<Transaction>> {
    dataset
        .read_transaction_by_version(version)
        .await
        .map_err(Error::lance(format!("read commit {version} of `{name}`")))
}
