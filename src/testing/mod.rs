//! Helpers for unit-testing migrations against real LanceDB tables
//! (feature `testing`).
//!
//! Everything here runs on a real LanceDB: an in-memory database
//! ([`memory_db`]) or one in a temporary directory ([`TempDb`]) when two
//! connections or processes must share it. [`conformance`] checks the
//! properties every migration should have (applies once, reruns are no-ops,
//! rollback restores the table exactly) for a migration of yours.
//!
//! A LanceDB table handle stays at the version it last saw until
//! [`checkout_latest`](lancedb::Table::checkout_latest): after
//! [`Migrator::run`](crate::Migrator::run), which commits through handles of
//! its own, check out the latest version of a fixture's handle before you
//! read it directly; [`Snapshot::take`] does that for you.
//!
//! # Examples
//!
//! ```
//! use arrow_schema::DataType;
//! use lancedb_migrate::testing::{self, Snapshot};
//! use lancedb_migrate::{AddColumns, Migrator, NewColumn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lancedb_migrate::Result<()> {
//! let db = testing::memory_db().await?;
//! let table = testing::documents_table(&db, "documents", 50, 4).await?;
//! let before = Snapshot::take(&table, "id").await?;
//!
//! Migrator::new(db)
//!     .add(AddColumns::new("1", "documents").column(NewColumn::new("note", DataType::Utf8)))
//!     .run()
//!     .await?;
//!
//! let after = Snapshot::take(&table, "id").await?;
//! after.assert_same_columns(&before, &["id", "text", "vector"]);
//! assert_eq!(after.column("note").null_count(), 50);
//! # Ok(())
//! # }
//! ```

mod conformance;
mod databases;
mod embedder;
mod embedding_server;
mod fixtures;
mod snapshot;

pub use conformance::conformance;
pub use databases::{TempDb, memory_db};
pub use embedder::TestEmbedding;
pub use embedding_server::{EmbeddingServer, Fault, Faults};
pub use fixtures::{
    document_text, document_vector, documents_batch, documents_schema, documents_table, vector_type,
};
pub use snapshot::{EventLog, Snapshot};
