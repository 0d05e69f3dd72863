//! Safe, exactly-once migrations for [LanceDB](https://lancedb.com) tables.
//!
//! Applications change their tables' schemas over time: a `category` column
//! here, a new embedding model there. `lancedb-migrate` applies such changes
//! at application start, each exactly once, in order, with a backup before,
//! a verification after, and an automatic rollback when anything fails.
//!
//! # Quick start
//!
//! ```
//! use arrow_schema::{DataType, TimeUnit};
//! use lancedb_migrate::{AddColumns, Migrator, NewColumn, DefaultValue};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lancedb_migrate::Result<()> {
//! # let db = lancedb_migrate::testing::memory_db().await?;
//! # lancedb_migrate::testing::documents_table(&db, "documents", 100, 8).await?;
//! // let db = lancedb::connect("data/lancedb").execute().await?;
//! let utc_micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
//! let report = Migrator::new(db)
//!     .add(
//!         AddColumns::new("0001_categories", "documents")
//!             .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
//!             .column(NewColumn::new("is_active", DataType::Boolean).default_value(true)),
//!     )
//!     .add(
//!         AddColumns::new("0002_created_at", "documents")
//!             .column(NewColumn::new("created_at", utc_micros).default_value(DefaultValue::MigrationTime)),
//!     )
//!     .run()
//!     .await?;
//! println!("{report}");
//! # assert_eq!(report.applied().count(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # How a migration runs
//!
//! The [`Migrator`] keeps a ledger table (default [`DEFAULT_LEDGER_TABLE`])
//! in the same database, one row per migration id. On [`Migrator::run`] it:
//!
//! 1. refuses duplicate ids and applied migrations whose definition changed
//!    ([`Error::Drift`]);
//! 2. skips what the ledger shows applied — a run with nothing to do reads
//!    the ledger and writes nothing;
//! 3. otherwise takes the database's migration lease, so that of several
//!    application instances starting at once one migrates; the others wait
//!    for what must land before they serve ([`Migration::blocks_serving`])
//!    and report the rest pending ([`Migrator::when_locked`],
//!    [`Migrator::lease_wait`], [`Migrator::lease_ttl`]);
//! 4. for each pending [`Migration`]: checks its input against the table
//!    ([`Migration::expected_schema`]), tags the table's version as a backup,
//!    records `running`, then calls `transform`, `rebuild` and `verify`;
//! 5. on success records `applied` with versions, row counts and timings;
//!    on failure restores the backup (keeping rows other writers appended
//!    meanwhile), records `failed`, and returns [`Error::MigrationFailed`]
//!    carrying the [`Report`] so far.
//!
//! A process killed mid-migration leaves its ledger row `running`; the next
//! run undoes it like a failure (restores the backup, keeps the rows other
//! writers appended meanwhile) and applies it again. A process stalled past
//! the lease TTL writes nothing more once it resumes ([`Error::LeaseLost`]),
//! and a panic in a hook is caught and rolled back ([`Error::Panicked`]).
//!
//! `DESIGN.md` in the repository explains each decision; `BENCHMARKS.md`
//! measures the cost against plain LanceDB calls.
//!
//! # Rolling deploys
//!
//! A re-embed of hours should not keep replicas from serving:
//! [`Migrator::start`] runs the migrations in a task and returns a
//! [`MigrationHandle`]; the application serves once
//! [`ready`](MigrationHandle::ready) resolves, switches models when
//! [`landed`](MigrationHandle::landed) does, and on SIGTERM calls
//! [`stop_and_wait`](MigrationHandle::stop_and_wait): the batch in flight is
//! committed, the lease released, and another replica continues at once.
//!
//! # Built-in migrations
//!
//! - [`AddColumns`]: columns with typed defaults, writing only the new
//!   columns;
//! - [`ReEmbed`]: a vector column recomputed from text with another model,
//!   online and resumable;
//! - [`RebuildIndex`]: an index (re)built with given parameters;
//! - [`DropColumns`], [`RenameColumn`]: metadata only;
//! - [`CastColumn`]: a type changed within its family, every value checked
//!   first;
//! - [`FillColumn`]: a new or existing column set to an SQL expression;
//! - [`CreateTable`]: a table created with a schema, first rows and
//!   indexes (or adopted when it has that schema);
//! - [`TargetSchema`]: the table declared as a schema with defaults, the
//!   steps to it planned from the table as it is (feature `serde_arrow`:
//!   from a Rust row type);
//! - [`WithBackupCopy`]: any migration with an independent backup copy.
//!
//! # Writing your own migration
//!
//! Implement [`Migration`]: an id, a table, and a `transform`. The other
//! hooks have defaults. Test it with the helpers in `testing` (feature
//! `testing`) against a real in-memory LanceDB.
//!
//! # Feature flags
//!
//! - `testing`: the `testing` module — throwaway databases, fixture tables
//!   and snapshots for downstream tests.
//! - `minilm`: the `embeddings::minilm` module — a sentence-transformers model such as
//!   all-MiniLM-L6-v2, loaded from local files and run in-process, as an
//!   embedding function for [`ReEmbed`].
//! - `remote`: [`embeddings::RemoteEmbedding`], an embedding function for
//!   services speaking the OpenAI `/v1/embeddings` protocol (OpenAI,
//!   text-embeddings-inference, vLLM, Infinity, Ollama), with batching,
//!   bounded concurrency and retries. The rest of [`embeddings`] (the
//!   retry wrapper for any embedding function, the service error) is
//!   always there.
//! - `serde_arrow`: [`TargetSchema::from_row`], a table's target schema
//!   traced from a serde row type, with its `Default` for new columns.
//! - `cli`: [`cli::Cli`], the operator's commands (`status`, `plan`, `up`,
//!   `rollback`, `repair`, `baseline`, `validate`, `lock`, `history`) for
//!   an application's own binary, with `--json`, exit codes and a progress
//!   bar. Implies `serde`.
//! - `serde`: `serde::Serialize` on what a run reports ([`Report`],
//!   [`Plan`], [`StatusTable`], [`LedgerEntry`], [`Event`], [`Lockfile`],
//!   ...), with stable field names.
//! - `aws`, `gcs`, `azure`: tables on S3 (and S3-compatible stores),
//!   Google Cloud Storage and Azure Blob Storage, through LanceDB's
//!   features of the same names. The connection's storage options reach
//!   everything the crate opens; backup copies take theirs from a
//!   [`BackupLocation`]. Before its first lease on an object store a
//!   process checks that the store enforces put-if-absent
//!   ([`Error::UnsafeStore`], [`Migrator::allow_unsafe_store`]).

// docs.rs (`--cfg docsrs`, nightly) shows the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backup;
mod builtin;
#[cfg(feature = "cli")]
pub mod cli;

pub mod embeddings;
mod error;
mod event;
mod jitter;
mod lance;
mod ledger;
mod lockfile;
mod migration;
mod migrator;

mod progress;
mod report;
/// The local S3 server of the tests (`scripts/s3-server.sh`).
#[cfg(test)]
#[path = "../tests/support/s3.rs"]
mod s3_test_server;
#[cfg(feature = "serde")]
mod serde_fmt;
mod stop;

#[cfg(feature = "testing")]
pub mod testing;

pub use crate::lance::indexes::IndexSpec;
/// The attribute that implementing [`Migration`] needs (its hooks are async
/// trait methods), re-exported so that downstream crates need not depend on
/// `async-trait` themselves: `#[lancedb_migrate::async_trait]`.
pub use async_trait::async_trait;
pub use backup::{Backup, BackupCopy, BackupLocation};
pub use builtin::{
    AddColumns, CastColumn, CreateTable, DefaultValue, DropColumns, FillColumn, NewColumn, ReEmbed,
    RebuildIndex, RenameColumn, TargetSchema, WithBackupCopy,
};

pub use error::{BoxError, CopyProblem, EmbeddingProblem, Error, Result, ResultExt, Rollback};
pub use event::{EmbeddingProgress, Event};
pub use ledger::{LedgerEntry, LedgerStatus};
pub use lockfile::{LockProblem, LockedMigration, Lockfile};
pub use migration::{Definition, Migration, MigrationContext, SchemaChange};
pub use migration::{MigrationPlan, TableInfo, Writes};
pub use migrator::{
    DEFAULT_LEDGER_TABLE, Divergence, LaterWrites, MigrationHandle, Migrator, Retention, RunState,
    StatusTable, Stopping, WhenLocked,
};
pub use migrator::{Plan, PlanState, PlanStep};
pub use progress::Progress;
pub use report::{
    LeaseHolder, MigrationReport, Outcome, Phase, PhaseProgress, PhaseTiming, Report,
};
pub use stop::StopSignal;
