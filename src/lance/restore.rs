//! Restoring a table to a tagged version: a `Restore` commit, made one
//! Lance attempt at a time and fenced before each attempt, so that it
//! lands between other writers' commits and never after the lease is lost.

use lance::dataset::transaction::{Operation, Transaction};
use lancedb::Table;

use crate::error::{Error, Result};
use crate::lance::fence::Fence;
use crate::lance::retry::{retry_commit, single_attempt};
use crate::lance::{dataset, latest_version, local_dataset};

/// Restores `table` to the version tag `tag` names, which is `version`:
/// commits a new version whose contents (schema, rows, indexes) are that
/// version's. Returns `false`, committing nothing, when the table is
/// already at `version`.
pub(crate) async fn to_tag(table: &Table, tag: &str, version: u64, fence: &Fence) -> Result<bool> {
    if latest_version(table).await? == version {
        return Ok(false);
    }
    let operation = format!("restore backup tag `{tag}`");
    let Some(dataset) = dataset(table).await? else {
        remote(table, tag, &operation).await?;
        return Ok(true);
    };
    // The version the tag names (which the tag keeps from cleanup).
    let tagged = dataset
        .tags()
        .get_version(tag)
        .await
        .map_err(Error::lance(format!("check out backup tag `{tag}`")))?;
    retry_commit(&operation, |_| async {
        fence.check()?;
        latest_version(table).await?;
        let dataset = local_dataset(table).await?;
        let restore = Transaction::new(
            dataset.version().version,
            Operation::Restore { version: tagged },
            None,
        );
        single_attempt(dataset)
            .execute(restore)
            .await
            .map_err(Error::lance(operation.as_str()))
    })
    .await?;
    latest_version(table).await?;
    Ok(true)
}

/// The restore of a table that is not a local Lance dataset (a remote
/// table), through LanceDB's own `restore`.
async fn remote(table: &Table, tag: &str, operation: &str) -> Result<()> {
    table
        .checkout_tag(tag)
        .await
        .map_err(Error::lance(format!("check out backup tag `{tag}`")))?;
    let restored = table.restore().await;
    if restored.is_err() {
        // Leave the handle usable for writes whatever happened.
        let _ = table.checkout_latest().await;
    }
    restored.map_err(Error::lance(operation))?;
    Ok(())
}
