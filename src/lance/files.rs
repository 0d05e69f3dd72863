//! Whole datasets as files: one version opened, scanned, cloned to another
//! location, or given a config record; and locations (a directory path or
//! an object-store URI) probed, listed and removed. What backup copies are
//! made of.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use lance::Dataset;
use lance::dataset::builder::DatasetBuilder;
use lance::index::DatasetIndexExt;
use lance::io::{ObjectStore, ObjectStoreParams, ObjectStoreRegistry, StorageOptionsAccessor};
use lancedb::Table;

use crate::error::{BoxError, Error, Result};
use crate::lance::local_dataset;

/// I/O buffer of a whole-version scan: bounds memory whatever the table's
/// size.
const SCAN_IO_BUFFER: u64 = 16 * 1024 * 1024;

/// One version of a Lance dataset.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot(Dataset);

impl Snapshot {
    /// `table` (a local dataset) at `version`.
    pub(crate) async fn of(table: &Table, version: u64) -> Result<Self> {
        local_dataset(table)
            .await?
            .checkout_version(version)
            .await
            .map(Self)
            .map_err(Error::lance(format!(
                "check out version {version} of `{}`",
                table.name()
            )))
    }

    /// `table` (a local dataset) at the handle's version.
    pub(crate) async fn current(table: &Table) -> Result<Self> {
        Ok(Self(local_dataset(table).await?.as_ref().clone()))
    }

    /// The dataset at `uri` (opened with storage `options`), at its latest
    /// version.
    pub(crate) async fn open(uri: &str, options: &StorageOptions) -> Result<Self, BoxError> {
        let builder = DatasetBuilder::from_uri(uri).with_store_params(params(options));
        Ok(Self(builder.load().await?))
    }

    /// The dataset at `uri` (opened with storage `options`), at `version`.
    pub(crate) async fn open_at(
        uri: &str,
        version: u64,
        options: &StorageOptions,
    ) -> Result<Self, BoxError> {
        let latest = Self::open(uri, options).await?;
        Ok(Self(latest.0.checkout_version(version).await?))
    }

    /// The storage options it was opened with (a LanceDB connection's, for
    /// a table's dataset).
    pub(crate) fn storage_options(&self) -> StorageOptions {
        self.0
            .store_params()
            .and_then(ObjectStoreParams::storage_options)
            .cloned()
            .unwrap_or_default()
    }

    /// Its version.
    pub(crate) fn version(&self) -> u64 {
        self.0.version().version
    }

    /// Its schema.
    pub(crate) fn schema(&self) -> SchemaRef {
        Arc::new(self.0.schema().into())
    }

    /// The value of config key `key`.
    pub(crate) fn config(&self, key: &str) -> Option<&str> {
        self.0.config().get(key).map(String::as_str)
    }

    /// Sets config key `key` in a new version.
    pub(crate) async fn set_config(&mut self, key: &str, value: &str) -> Result<(), BoxError> {
        self.0.update_config([(key, value)]).await?;
        Ok(())
    }

    /// Copies this version (data, deletion and index files, file by file
    /// with bounded memory) to a new dataset at `uri`, written with storage
    /// `options` (without them Lance would use only the environment's).
    pub(crate) async fn deep_clone(
        &self,
        uri: &str,
        options: &StorageOptions,
    ) -> Result<Self, BoxError> {
        let mut source = self.0.clone();
        let version = self.version();
        Ok(Self(
            source
                .deep_clone(uri, version, Some(params(options)))
                .await?,
        ))
    }

    /// Every row, in scan order, in small batches with little read-ahead:
    /// a consumer slower than the read (a checksum) keeps memory flat.
    pub(crate) async fn rows(&self) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let mut scan = self.0.scan();
        scan.io_buffer_size(SCAN_IO_BUFFER);
        scan.batch_size(1024);
        scan.batch_readahead(1);
        scan.fragment_readahead(1);
        let read = Error::lance("read a dataset");
        let stream = scan.try_into_stream().await.map_err(&read)?;
        Ok(stream.map_err(read).boxed())
    }

    /// Names of its own indexes (not Lance's bookkeeping ones), sorted.
    pub(crate) async fn index_names(&self) -> Result<Vec<String>, BoxError> {
        let mut names: Vec<String> = self
            .0
            .load_indices()
            .await?
            .iter()
            .filter(|i| !i.name.starts_with("__"))
            .map(|i| i.name.clone())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}

/// Storage options (`aws_endpoint`, `aws_region`, `allow_http`, …) as
/// LanceDB's `storage_options` takes them.
pub(crate) type StorageOptions = HashMap<String, String>;

/// Lance's store parameters for `options`.
fn params(options: &StorageOptions) -> ObjectStoreParams {
    ObjectStoreParams {
        storage_options_accessor: (!options.is_empty())
            .then(|| Arc::new(StorageOptionsAccessor::with_static_options(options.clone()))),
        ..ObjectStoreParams::default()
    }
}

/// The object store at `uri`, opened with `options`.
async fn store(
    uri: &str,
    options: &StorageOptions,
) -> Result<(Arc<ObjectStore>, object_store::path::Path), BoxError> {
    let registry = Arc::new(ObjectStoreRegistry::default());
    Ok(ObjectStore::from_uri_and_params(registry, uri, &params(options)).await?)
}

/// Whether nothing is stored at or under `uri`.
pub(crate) async fn is_empty(uri: &str, options: &StorageOptions) -> Result<bool, BoxError> {
    let (store, path) = store(uri, options).await?;
    Ok(store.list(Some(path)).next().await.transpose()?.is_none())
}

/// The names of the entries directly in `location`. Listed through the
/// object store, not a LanceDB connection, which would create a missing
/// directory.
pub(crate) async fn list(
    location: &str,
    options: &StorageOptions,
) -> Result<Vec<String>, BoxError> {
    let (store, path) = store(location, options).await?;
    Ok(store.read_dir(path).await?)
}

/// Removes everything at or under `uri`.
pub(crate) async fn remove_all(uri: &str, options: &StorageOptions) -> Result<(), BoxError> {
    let (store, path) = store(uri, options).await?;
    store.remove_dir_all(path).await?;
    Ok(())
}
