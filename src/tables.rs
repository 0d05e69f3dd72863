//! Small helpers over LanceDB table handles.

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
