//! Throwaway databases: in memory, or in a temporary directory removed on
//! drop.

use crate::error::{Error, Result};
use lancedb::Connection;

/// A fresh, private in-memory database. A second call gives another,
/// separate one.
///
/// # Errors
///
/// [`Error::LanceDb`] if LanceDB cannot open it.
pub async fn memory_db() -> Result<Connection> {
    connect("memory://").await
}

async fn connect(uri: &str) -> Result<Connection> {
    lancedb::connect(uri)
        .execute()
        .await
        .map_err(Error::lance(format!("connect to `{uri}`")))
}

/// A database in a temporary directory, deleted when dropped.
///
/// Use it when a test needs two connections to the same data (for example
/// to simulate two application instances).
pub struct TempDb {
    dir: tempfile::TempDir,
    db: Connection,
}

impl std::fmt::Debug for TempDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempDb")
            .field("path", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TempDb {
    /// Creates the directory and connects to it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory cannot be created, [`Error::LanceDb`]
    /// if LanceDB cannot open it.
    pub async fn new() -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|source| Error::Io {
            operation: "create a temporary directory".to_owned(),
            source,
        })?;
        let db = connect(&dir.path().to_string_lossy()).await?;
        Ok(Self { dir, db })
    }

    /// The connection made by [`TempDb::new`].
    pub fn db(&self) -> &Connection {
        &self.db
    }

    /// The directory holding the database.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A new, independent connection to the same database.
    ///
    /// # Errors
    ///
    /// [`Error::LanceDb`] if LanceDB cannot open it.
    pub async fn connect(&self) -> Result<Connection> {
        connect(&self.dir.path().to_string_lossy()).await
    }
}
