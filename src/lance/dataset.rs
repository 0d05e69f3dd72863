//! The Lance dataset behind a LanceDB table handle, and the table's
//! latest version and row count read off it.

use std::sync::Arc;

use lance::Dataset;
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

/// Moves `table` to its latest version and counts its rows there, at that
/// one version (a table handle following the latest version could count a
/// newer one): returns the version and the count.
pub(crate) async fn latest_row_count(table: &Table) -> Result<(u64, u64)> {
    let version = latest_version(table).await?;
    Ok((version, row_count(table).await?))
}

/// The number of rows of `table` at the handle's version.
pub(crate) async fn row_count(table: &Table) -> Result<u64> {
    let count = format!("count the rows of `{}`", table.name());
    let rows = match dataset(table).await? {
        Some(dataset) => dataset
            .count_rows(None)
            .await
            .map_err(Error::lance(count))?,
        None => table.count_rows(None).await.map_err(Error::lance(count))?,
    };
    Ok(rows as u64)
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
    dataset(table).await?.ok_or_else(|| Error::NotLocal {
        table: table.name().to_owned(),
        operation: "this migration".to_owned(),
    })
}

/// Whether `table` is on an object store (S3, GCS, Azure, …), where each
/// request is a network round trip; `false` for a local directory or
/// memory, and for remote (LanceDB Cloud) tables.
pub(crate) async fn on_object_store(table: &Table) -> bool {
    let Ok(Some(dataset)) = dataset(table).await else {
        return false;
    };
    dataset
        .object_store(None)
        .await
        .is_ok_and(|store| store.is_cloud())
}
