//! Small helpers over LanceDB table handles.

pub(crate) mod backfill;
pub(crate) mod indexes;

use std::ops::Range;
use std::sync::Arc;

use lance::Dataset;
use lance::dataset::transaction::{Operation, Transaction};
use lancedb::Table;

use crate::error::{Error, Result};

/// Moves `table` to its latest version (leaving any checked-out version)
/// and returns that version.
pub(crate) async fn latest_version(table: &Table) -> Result<u64> {
    let name = table.name();
    table.checkout_latest().await.map_err(Error::lance(format!(
        "check out the latest version of `{name}`"
    )))?;
    table
        .version()
        .await
        .map_err(Error::lance(format!("read the version of `{name}`")))
}

/// The Lance dataset behind `table` at the handle's version; `None` for
/// tables that are not local Lance datasets (remote tables).
pub(crate) async fn dataset(table: &Table) -> Result<Option<Arc<Dataset>>> {
    let Some(wrapper) = table.dataset() else {
        return Ok(None);
    };
    let open = Error::lance(format!("open the dataset of `{}`", table.name()));
    wrapper.get().await.map(Some).map_err(open)
}

/// The Lance dataset behind `table` at the handle's version, for work that
/// needs direct access to its files; an error for remote tables.
pub(crate) async fn local_dataset(table: &Table) -> Result<Arc<Dataset>> {
    dataset(table).await?.ok_or_else(|| {
        Error::custom(format!(
            "table `{}` is not a local Lance dataset; this migration needs direct access to its files",
            table.name()
        ))
    })
}

/// The transaction property that marks the commits in which a rollback
/// appended other writers' rows again (its value is the migration id), so
/// that a later rollback of the same attempt does not count them twice.
pub(crate) const REAPPEND_KEY: &str = "lancedb_migrate.reappend";

/// The `Append` commits among `versions` of `dataset` (the table `name`),
/// oldest first, each with the number of rows it added. A rollback's own
/// re-appends ([`REAPPEND_KEY`]) are left out: they copy rows that earlier
/// `Append` commits hold.
pub(crate) async fn append_commits(
    dataset: &Dataset,
    name: &str,
    versions: Range<u64>,
) -> Result<Vec<(u64, u64)>> {
    let mut commits = Vec::new();
    for version in versions {
        let Some(transaction) = transaction(dataset, name, version).await? else {
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
            commits.push((version, rows as u64));
        }
    }
    Ok(commits)
}

/// The first commit among `versions` of `dataset` that replaced the table's
/// contents or schema (a restore, an overwrite, a schema change), with the
/// name of its operation; `None` when every commit only added, removed or
/// reorganised rows, or built indexes.
pub(crate) async fn first_reshaping_commit(
    dataset: &Dataset,
    name: &str,
    versions: Range<u64>,
) -> Result<Option<(u64, String)>> {
    for version in versions {
        let Some(transaction) = transaction(dataset, name, version).await? else {
            continue;
        };
        match &transaction.operation {
            Operation::Append { .. }
            | Operation::Delete { .. }
            | Operation::Update { .. }
            | Operation::Rewrite { .. }
            | Operation::CreateIndex { .. }
            | Operation::UpdateConfig { .. } => {}
            other => return Ok(Some((version, other.name().to_owned()))),
        }
    }
    Ok(None)
}

/// The transaction of commit `version` of `dataset` (the table `name`), if
/// Lance recorded one.
async fn transaction(dataset: &Dataset, name: &str, version: u64) -> Result<Option<Transaction>> {
    dataset
        .read_transaction_by_version(version)
        .await
        .map_err(|e| Error::lance(format!("read commit {version} of `{name}`"))(e.into()))
}
