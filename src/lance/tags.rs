//! Tags as the lease uses them: put-if-absent creation, names listed
//! without reading each tag, one tag's time read (surviving a damaged tag
//! file), existence checks and in-place refresh. On an object store each
//! of these is one or two requests.

use std::time::SystemTime;

use lancedb::Table;
use lancedb::table::TagContents;
use tracing::debug;

use crate::error::{Error, Result};
use crate::lance::retry::is_ref_conflict;
use crate::lance::{latest_version, local_dataset};

/// Creates tag `name` put-if-absent, so of several processes creating it
/// at once exactly one gets the version it points at (the others `None`).
/// It points at the version the handle is at (any version does, for the
/// lease; that saves finding the latest), or at the latest version when
/// the handle's is gone.
pub(crate) async fn try_create(ledger: &Table, name: &str) -> Result<Option<u64>> {
    let mut tags = ledger.tags().await.map_err(Error::lance(format!(
        "open the tags of `{}`",
        ledger.name()
    )))?;
    if let Ok(version) = ledger.version().await {
        match tags.create(name, version).await {
            Ok(()) => return Ok(Some(version)),
            Err(e) if is_ref_conflict(&e) => return Ok(None),
            Err(e) => {
                debug!(error = %e, version, "tag on the handle's version failed; on the latest");
            }
        }
    }
    let version = latest_version(ledger).await?;
    match tags.create(name, version).await {
        Ok(()) => Ok(Some(version)),
        Err(e) if is_ref_conflict(&e) => Ok(None),
        Err(e) => Err(Error::lance(format!("create tag `{name}`"))(e)),
    }
}

/// The names of the ledger's tags: one listing, no tag read.
pub(crate) async fn names(ledger: &Table) -> Result<Vec<String>> {
    let dataset = local_dataset(ledger).await?;
    let lance_error = || Error::lance("list the ledger's tags");
    let store = dataset.object_store(None).await.map_err(lance_error())?;
    let dir = lance::dataset::refs::base_tags_path(&dataset.branch_location().path);
    let files = match store.read_dir(dir).await {
        Ok(files) => files,
        // No tag was ever created: locally, no directory.
        Err(lance::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(lance_error()(e)),
    };
    Ok(files
        .into_iter()
        .filter_map(|f| f.strip_suffix(".json").map(str::to_owned))
        .collect())
}

/// When tag `name` was last written: one read. A tag file that cannot be
/// parsed (a heartbeat that failed half-way on a full disk leaves it empty:
/// Lance rewrites tags in place) counts as written when the file was last
/// modified, which is no earlier than the holder's last heartbeat that
/// landed, so a waiter never takes over too soon. Only a local file can be
/// left half-written; an object store's put replaces an object whole.
pub(crate) async fn updated_at(ledger: &Table, name: &str) -> Result<Option<SystemTime>> {
    let dataset = local_dataset(ledger).await?;
    let lance_error = || Error::lance(format!("read the ledger's tag `{name}`"));
    let store = dataset.object_store(None).await.map_err(lance_error())?;
    let file = format!("{name}.json");
    let path =
        lance::dataset::refs::base_tags_path(&dataset.branch_location().path).join(file.as_str());
    match TagContents::from_path(&path, &store).await {
        Ok(contents) => Ok(contents
            .updated_at
            .or(contents.created_at)
            .map(SystemTime::from)),
        Err(e) if !store.is_local() => Err(lance_error()(e)),
        Err(e) => {
            let local = std::path::Path::new(dataset.uri())
                .join("_refs/tags")
                .join(&file);
            let modified = std::fs::metadata(&local).and_then(|m| m.modified());
            debug!(error = %e, "a lease tag could not be parsed; using its file's time");
            modified.map(Some).map_err(|e| Error::Ledger {
                ledger: ledger.name().to_owned(),
                reason: format!("lease tag `{name}` cannot be read: {e}"),
            })
        }
    }
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
#[cfg(test)]
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
