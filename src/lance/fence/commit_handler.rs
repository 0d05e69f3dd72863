//! Fenced by construction: the migrated table's handle commits through a
//! Lance commit handler that checks the migration lease just before each
//! manifest is written.
//!
//! Every write a hook makes through [`MigrationContext::table`] — a
//! LanceDB `add`, `update`, `delete`, `merge_insert`, `add_columns`,
//! `optimize`, an index build, a `restore`, or a Lance transaction on its
//! dataset — ends in a manifest commit, and every commit of that handle
//! goes through [`FencedCommits::commit`]: a process that can no longer
//! prove it holds the lease (stopped past the TTL, taken over) commits
//! nothing, whether or not the hook remembered
//! [`MigrationContext::check_lease`]. The check is the last step before
//! the manifest is written, so the window it leaves is the write itself.
//!
//! [`MigrationContext::table`]: crate::MigrationContext::table
//! [`MigrationContext::check_lease`]: crate::MigrationContext::check_lease

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use lance::dataset::ReadParams;
use lance::io::ObjectStore;
use lance_table::format::{IndexMetadata, Manifest, Transaction};
use lance_table::io::commit::{
    CommitError, CommitHandler, ManifestLocation, ManifestNamingScheme, ManifestWriter,
    PredecessorIdentity, commit_handler_from_url,
};
use lancedb::{Connection, Table};
use object_store::ObjectStore as OSObjectStore;
use object_store::path::Path;

use super::Fence;

/// The commit handler Lance would use, checking the fence before each
/// commit.
#[derive(Debug)]
pub(crate) struct FencedCommits {
    inner: Arc<dyn CommitHandler>,
    fence: Fence,
}

impl FencedCommits {
    fn check(&self) -> Result<(), CommitError> {
        self.fence.check().map_err(|e| {
            CommitError::OtherError(lance::Error::invalid_input(format!(
                "lancedb-migrate refused the commit: {e}"
            )))
        })
    }
}

/// Opens `name` in `db` with every commit fenced by `fence`. A table of a
/// remote LanceDB Cloud database (its commits are made by the server) is
/// opened as it is.
pub(crate) async fn open(db: &Connection, name: &str, fence: Fence) -> lancedb::Result<Table> {
    let open = db.open_table(name);
    if db.uri().starts_with("db://") {
        return open.execute().await;
    }
    // Lance picks the handler from the URI's scheme, the same for the
    // database and its tables: one open, no lookup of the table first.
    let inner = commit_handler_from_url(db.uri(), &None)
        .await
        .map_err(|e| lancedb::Error::Lance { source: e })?;
    let params = ReadParams {
        commit_handler: Some(Arc::new(FencedCommits { inner, fence })),
        ..ReadParams::default()
    };
    open.lance_read_params(params).execute().await
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl CommitHandler for FencedCommits {
    fn is_version_not_found_definitive(&self) -> bool {
        self.inner.is_version_not_found_definitive()
    }

    fn propagate_commit_error_after_success(&self) -> bool {
        self.inner.propagate_commit_error_after_success()
    }

    async fn resolve_latest_location(
        &self,
        base_path: &Path,
        object_store: &ObjectStore,
    ) -> lance::Result<ManifestLocation> {
        self.inner
            .resolve_latest_location(base_path, object_store)
            .await
    }

    async fn resolve_version_location(
        &self,
        base_path: &Path,
        version: u64,
        object_store: &dyn OSObjectStore,
    ) -> lance::Result<ManifestLocation> {
        self.inner
            .resolve_version_location(base_path, version, object_store)
            .await
    }

    async fn version_exists(
        &self,
        base_path: &Path,
        version: u64,
        object_store: &dyn OSObjectStore,
        naming_scheme: ManifestNamingScheme,
    ) -> lance::Result<bool> {
        self.inner
            .version_exists(base_path, version, object_store, naming_scheme)
            .await
    }

    fn list_detached_manifest_locations<'a>(
        &self,
        base_path: &Path,
        object_store: &'a ObjectStore,
    ) -> BoxStream<'a, lance::Result<ManifestLocation>> {
        self.inner
            .list_detached_manifest_locations(base_path, object_store)
    }

    fn list_manifest_locations<'a>(
        &self,
        base_path: &Path,
        object_store: &'a ObjectStore,
        sorted_descending: bool,
    ) -> BoxStream<'a, lance::Result<ManifestLocation>> {
        self.inner
            .list_manifest_locations(base_path, object_store, sorted_descending)
    }

    fn list_manifest_locations_since<'a>(
        &self,
        base_path: &Path,
        object_store: &'a ObjectStore,
        since_version: u64,
    ) -> BoxStream<'a, lance::Result<ManifestLocation>> {
        self.inner
            .list_manifest_locations_since(base_path, object_store, since_version)
    }

    async fn commit(
        &self,
        manifest: &mut Manifest,
        indices: Option<Vec<IndexMetadata>>,
        base_path: &Path,
        object_store: &ObjectStore,
        manifest_writer: ManifestWriter,
        naming_scheme: ManifestNamingScheme,
        transaction: Option<Transaction>,
    ) -> Result<ManifestLocation, CommitError> {
        self.check()?;
        self.inner
            .commit(
                manifest,
                indices,
                base_path,
                object_store,
                manifest_writer,
                naming_scheme,
                transaction,
            )
            .await
    }

    fn supports_predecessor_condition(&self) -> bool {
        self.inner.supports_predecessor_condition()
    }

    async fn resolve_latest_identity(
        &self,
        base_path: &Path,
        object_store: &ObjectStore,
    ) -> lance::Result<Option<PredecessorIdentity>> {
        self.inner
            .resolve_latest_identity(base_path, object_store)
            .await
    }

    async fn resolve_identity(
        &self,
        base_path: &Path,
        object_store: &ObjectStore,
        version: u64,
    ) -> lance::Result<Option<PredecessorIdentity>> {
        self.inner
            .resolve_identity(base_path, object_store, version)
            .await
    }

    async fn commit_after(
        &self,
        manifest: &mut Manifest,
        indices: Option<Vec<IndexMetadata>>,
        base_path: &Path,
        object_store: &ObjectStore,
        manifest_writer: ManifestWriter,
        naming_scheme: ManifestNamingScheme,
        transaction: Option<Transaction>,
        predecessor: &PredecessorIdentity,
    ) -> Result<ManifestLocation, CommitError> {
        self.check()?;
        self.inner
            .commit_after(
                manifest,
                indices,
                base_path,
                object_store,
                manifest_writer,
                naming_scheme,
                transaction,
                predecessor,
            )
            .await
    }

    async fn forget_version(
        &self,
        base_path: &Path,
        version: u64,
        identity: &str,
    ) -> lance::Result<()> {
        self.inner
            .forget_version(base_path, version, identity)
            .await
    }

    async fn delete(&self, base_path: &Path) -> lance::Result<()> {
        self.inner.delete(base_path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow_array::{Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    fn rows(ids: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
        ]));
        let texts: Vec<String> = ids.clone().map(|i| format!("row {i}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(ids)),
                Arc::new(StringArray::from(texts)),
            ],
        )
        .unwrap()
    }

    /// A handle opened with a lapsed fence commits nothing, through any
    /// LanceDB call; one with a held fence commits as usual.
    #[tokio::test]
    async fn a_lapsed_fence_refuses_every_commit_of_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let db = lancedb::connect(dir.path().to_str().unwrap())
            .execute()
            .await
            .unwrap();
        db.create_table("t", rows(0..10)).execute().await.unwrap();

        let fenced = open(&db, "t", Fence::lapsed()).await.unwrap();
        let before = fenced.version().await.unwrap();
        let err = fenced
            .add(rows(10..20))
            .execute()
            .await
            .expect_err("the append is refused");
        assert!(
            err.to_string()
                .contains("lancedb-migrate refused the commit"),
            "{err}"
        );
        assert!(fenced.delete("id < 5").await.is_err());
        assert!(fenced.drop_columns(&["text"]).await.is_err());
        fenced.checkout_latest().await.unwrap();
        assert_eq!(fenced.version().await.unwrap(), before, "nothing committed");
        assert_eq!(fenced.count_rows(None).await.unwrap(), 10);

        let held = open(&db, "t", Fence::default()).await.unwrap();
        held.add(rows(10..20)).execute().await.unwrap();
        assert_eq!(held.count_rows(None).await.unwrap(), 20);
    }
}
