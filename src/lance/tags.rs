//! Tags as the lease uses them: put-if-absent creation, names listed
//! without reading each tag, one tag's time read (surviving a damaged tag
//! file), existence checks and in-place refresh. On an object store each
//! of these is one or two requests.

use std::sync::Arc;
use std::time::SystemTime;

use lance::Dataset;
use lance::io::ObjectStore;
use lancedb::Table;
use lancedb::table::TagContents;
use object_store::path::Path;
use tracing::debug;

use crate::error::{BoxError, Error, Result};
use crate::lance::retry::is_ref_conflict;
use crate::lance::{latest_version, local_dataset};

/// Creates tag `name` put-if-absent, so of several processes creating it
/// at once exactly one gets the version it points at (the others `None`).
/// It points at the version the handle is at (any version does, for the
/// lease; that saves finding the latest), or at the latest version when
/// the handle's is gone.
pub(crate) async fn try_create(ledger: &Table, name: &str) -> Result<Option<u64>> {
    match create_at_handle(ledger, name).await {
        Ok(created) => return Ok(created),
        Err(e) => debug!(error = %e, tag = name, "tag not written directly; through Lance"),
    }
    let mut tags = ledger.tags().await.map_err(Error::lance(format!(
        "open the tags of `{}`",
        ledger.name()
    )))?;
    if let Ok(version) = ledger.version().await {
        match tags.create(name, version).await {
            Err(e) if !is_ref_conflict(&e) => {
                debug!(error = %e, version, "tag on the handle's version failed; on the latest");
            }
            created => return Ok(created.ok().map(|()| version)),
        }
    }
    let version = latest_version(ledger).await?;
    match tags.create(name, version).await {
        Err(e) if !is_ref_conflict(&e) => Err(Error::lance(format!("create tag `{name}`"))(e)),
        created => Ok(created.ok().map(|()| version)),
    }
}

/// Creates tag `name` put-if-absent at the version the handle is at, with
/// the contents Lance writes, from what the handle already holds: the
/// version and its manifest's size. One conditional `PUT`, where Lance's
/// own create first reads the version's manifest (two `HEAD`s on an object
/// store). `Ok(None)` when the tag exists; `Err` when the handle does not
/// know its manifest's size or the store refused the write (the caller
/// then goes through Lance).
pub(crate) async fn create_at_handle(
    table: &Table,
    name: &str,
) -> std::result::Result<Option<u64>, BoxError> {
    let files = TagFiles::of(table).await?;
    let location = files.dataset.manifest_location();
    let (version, Some(manifest_size)) = (location.version, location.size) else {
        return Err("the handle does not know its manifest's size".into());
    };
    let now = chrono::Utc::now();
    let contents = TagContents {
        branch: None,
        version,
        created_at: Some(now),
        updated_at: Some(now),
        manifest_size: usize::try_from(manifest_size)?,
        metadata: Default::default(),
    };
    let bytes = serde_json::to_vec_pretty(&contents)?;
    match files
        .store
        .put_if_absent(&files.path(name), bytes.into())
        .await
    {
        Ok(()) => Ok(Some(version)),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The ledger's tag files, reached directly through its object store: one
/// request per question, where Lance's tag API reads more.
struct TagFiles {
    dataset: Arc<Dataset>,
    store: Arc<ObjectStore>,
    dir: Path,
}

impl TagFiles {
    async fn of(ledger: &Table) -> Result<Self> {
        let dataset = local_dataset(ledger).await?;
        let store = dataset
            .object_store(None)
            .await
            .map_err(Error::lance("open the ledger's object store"))?;
        let dir = lance::dataset::refs::base_tags_path(&dataset.branch_location().path);
        Ok(Self {
            dataset,
            store,
            dir,
        })
    }

    fn path(&self, name: &str) -> Path {
        self.dir.clone().join(format!("{name}.json").as_str())
    }
}

/// The names of the ledger's tags: one listing, no tag read.
pub(crate) async fn names(ledger: &Table) -> Result<Vec<String>> {
    let files = TagFiles::of(ledger).await?;
    let listed = match files.store.read_dir(files.dir).await {
        Ok(listed) => listed,
        // No tag was ever created: locally, no directory.
        Err(lance::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(Error::lance("list the ledger's tags")(e)),
    };
    Ok(listed
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
    let files = TagFiles::of(ledger).await?;
    match TagContents::from_path(&files.path(name), &files.store).await {
        Ok(contents) => Ok(contents
            .updated_at
            .or(contents.created_at)
            .map(SystemTime::from)),
        Err(e) if !files.store.is_local() => {
            Err(Error::lance(format!("read the ledger's tag `{name}`"))(e))
        }
        Err(e) => {
            let local = std::path::Path::new(files.dataset.uri())
                .join("_refs/tags")
                .join(format!("{name}.json"));
            let modified = std::fs::metadata(&local).and_then(|m| m.modified());
            debug!(error = %e, "a lease tag could not be parsed; using its file's time");
            modified.map(Some).map_err(|e| Error::Ledger {
                ledger: ledger.name().to_owned(),
                reason: format!("lease tag `{name}` cannot be read"),
                source: Some(e.into()),
            })
        }
    }
}

/// Whether tag `name` exists: one `HEAD` on an object store.
pub(crate) async fn exists(ledger: &Table, name: &str) -> Result<bool> {
    let files = TagFiles::of(ledger).await?;
    files
        .store
        .exists(&files.path(name))
        .await
        .map_err(Error::lance(format!("look for tag `{name}`")))
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
