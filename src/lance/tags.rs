//! Tags as the lease uses them: put-if-absent creation, a listing that
//! survives one damaged tag file, and in-place refresh.

use std::collections::HashMap;

use lancedb::Table;
use lancedb::table::TagContents;
use tracing::debug;

use crate::error::{Error, Result};
use crate::lance::retry::is_ref_conflict;
use crate::lance::{latest_version, local_dataset};

/// Creates tag `name` on the table's latest version: put-if-absent, so of
/// several processes creating it at once exactly one gets `true`.
pub(crate) async fn try_create(ledger: &Table, name: &str) -> Result<bool> {
    let version = latest_version(ledger).await?;
    let mut tags = ledger.tags().await.map_err(Error::lance(format!(
        "open the tags of `{}`",
        ledger.name()
    )))?;
    match tags.create(name, version).await {
        Ok(()) => Ok(true),
        Err(e) if is_ref_conflict(&e) => Ok(false),
        Err(e) => Err(Error::lance(format!("create tag `{name}`"))(e)),
    }
}

/// The ledger's tags. Lance's listing fails as a whole when one tag file
/// cannot be parsed, and a heartbeat that failed half-way (Lance rewrites a
/// tag in place; on a full disk the file is left empty) leaves exactly
/// that: the lease would be stuck for good. So when the listing fails, the
/// tags are read one by one, and one that cannot be read counts as written
/// when its file was last modified (no earlier than the holder's last
/// heartbeat that landed, so a waiter never takes over too soon).
pub(crate) async fn list(ledger: &Table) -> lancedb::Result<HashMap<String, TagContents>> {
    let listed = ledger.tags().await?.list().await;
    let Err(error) = listed else {
        return listed;
    };
    match read_tags_one_by_one(ledger).await {
        Ok(tags) => {
            debug!(error = %error, "a lease tag could not be read; read the others one by one");
            Ok(tags)
        }
        Err(_) => Err(error),
    }
}

async fn read_tags_one_by_one(ledger: &Table) -> Result<HashMap<String, TagContents>> {
    let dataset = local_dataset(ledger).await?;
    let lance_error = || Error::lance("read the ledger's tags");
    let store = dataset.object_store(None).await.map_err(lance_error())?;
    let dir = lance::dataset::refs::base_tags_path(&dataset.branch_location().path);
    let mut tags = HashMap::new();
    for file in store.read_dir(dir.clone()).await.map_err(lance_error())? {
        let Some(name) = file.strip_suffix(".json") else {
            continue;
        };
        let path = dir.clone().join(file.as_str());
        let contents = match TagContents::from_path(&path, &store).await {
            Ok(contents) => contents,
            // Only a local file can be left half-written (an object store's
            // put replaces an object whole).
            Err(e) if !store.is_local() => return Err(lance_error()(e)),
            Err(_) => {
                let local = std::path::Path::new(dataset.uri())
                    .join("_refs/tags")
                    .join(&file);
                let modified = std::fs::metadata(&local).and_then(|m| m.modified());
                let written =
                    chrono::DateTime::<chrono::Utc>::from(modified.map_err(|e| Error::Ledger {
                        ledger: ledger.name().to_owned(),
                        reason: format!("lease tag `{name}` cannot be read: {e}"),
                    })?);
                TagContents {
                    branch: None,
                    version: 0,
                    created_at: Some(written),
                    updated_at: Some(written),
                    manifest_size: 0,
                    metadata: HashMap::new(),
                }
            }
        };
        tags.insert(name.to_owned(), contents);
    }
    Ok(tags)
}

/// Whether tag `name` exists: one `HEAD` on an object store.
pub(crate) async fn exists(ledger: &Table, name: &str) -> Result<bool> {
    let dataset = local_dataset(ledger).await?;
    let lance_error = || Error::lance(format!("look for tag `{name}`"));
    let store = dataset.object_store(None).await.map_err(lance_error())?;
    let path = lance::dataset::refs::base_tags_path(&dataset.branch_location().path)
        .join(format!("{name}.json"));
    store.exists(&path).await.map_err(lance_error())
}

/// The version tag `name` points at; `None` when that cannot be read.
pub(crate) async fn version_of(ledger: &Table, name: &str) -> Option<u64> {
    ledger.tags().await.ok()?.get_version(name).await.ok()
}

/// Rewrites tag `name` (at `version`, which it already points at) so that
/// its `updated_at` is now; `false` when that failed.
pub(crate) async fn refresh(ledger: &Table, name: &str, version: u64) -> bool {
    let Ok(mut tags) = ledger.tags().await else {
        return false;
    };
    tags.update(name, version).await.is_ok()
}
