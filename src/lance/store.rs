//! The object store under the database: whether it enforces put-if-absent,
//! which the lease's tags and Lance's commits rely on.
//!
//! On S3 both are a `PUT` with `If-None-Match: *`. A store that accepts the
//! header but ignores it lets every racer win: two lease holders, and
//! commits that overwrite each other. So before the first lease on an
//! object store, one probe object is created twice; the second create must
//! be refused. A local directory needs no probe (Lance creates by
//! rename-if-not-exists there).

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use lancedb::Table;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::lance::dataset;

/// Databases (by location) whose store was found to enforce put-if-absent
/// in this process.
static CHECKED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// The folder, inside the probed table's dataset (the ledger's, or the
/// first migrated table's before the ledger exists), that probe objects are
/// created in and removed from at once.
const PROBE_DIR: &str = "_lancedb_migrate_probe";

/// Fails with [`Error::UnsafeStore`] unless the store under `table`
/// enforces put-if-absent. Probes once per process and database; a local
/// directory is not probed.
pub(crate) async fn require_put_if_absent(table: &Table) -> Result<()> {
    // A LanceDB Cloud table has no store of ours to probe.
    let Some(dataset) = dataset(table).await? else {
        return Ok(());
    };
    let uri = dataset.uri().to_owned();
    // The database's location: every table of it is in the same store.
    let database = uri
        .trim_end_matches('/')
        .rsplit_once('/')
        .map_or(uri.as_str(), |(parent, _)| parent)
        .to_owned();
    if checked().as_ref().is_some_and(|c| c.contains(&database)) {
        return Ok(());
    }
    let open = Error::lance(format!("open the object store of `{uri}`"));
    let store = dataset.object_store(None).await.map_err(open)?;
    if store.is_local() {
        return Ok(());
    }
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path = dataset
        .branch_location()
        .path
        .join(PROBE_DIR)
        .join(format!("{}-{nonce}", std::process::id()));
    let unsafe_store = |found: String| Error::UnsafeStore {
        uri: uri.clone(),
        found,
    };
    let first = store.put_if_absent(&path, "1".into()).await;
    let second = match first {
        Ok(()) => store.put_if_absent(&path, "2".into()).await,
        Err(e) => Err(e),
    };
    if let Err(e) = store.delete(&path).await {
        debug!(path = %path, error = %e, "could not remove the put-if-absent probe");
    }
    match second {
        Ok(()) => Err(unsafe_store(
            "a second create of the same object was accepted".to_owned(),
        )),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => {
            checked().get_or_insert_with(HashSet::new).insert(database);
            Ok(())
        }
        Err(
            e @ (object_store::Error::NotImplemented { .. }
            | object_store::Error::NotSupported { .. }),
        ) => {
            warn!(uri, error = %e, "the object store refuses conditional writes");
            Err(unsafe_store(format!(
                "conditional writes are not supported: {e}"
            )))
        }
        Err(e) => Err(Error::lance(format!(
            "check that the object store at `{uri}` enforces put-if-absent"
        ))(e)),
    }
}

fn checked() -> std::sync::MutexGuard<'static, Option<HashSet<String>>> {
    CHECKED.lock().unwrap_or_else(PoisonError::into_inner)
}
