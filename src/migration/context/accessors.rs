//! [`MigrationContext`]: what a hook is given — the table, the state
//! before the migration, the lease, the stop signal and progress.

use crate::backup::Backup;
use crate::error::{Error, Result};
use crate::lance::fence::Fence;
use crate::lance::indexes::{self, IndexSpec};
use crate::progress::Progress;
use crate::stop::StopSignal;
use arrow_schema::SchemaRef;
use lancedb::{Connection, Table};
use std::time::SystemTime;

/// What a hook knows about the migration in progress.
///
/// Fields are private so that new ones can be added without breaking
/// downstream migrations; read them through the accessors.
pub struct MigrationContext {
    pub(super) db: Connection,
    pub(super) table: Table,
    pub(super) migration: String,
    pub(super) version_before: u64,
    pub(super) rows_before: u64,
    pub(super) schema_before: SchemaRef,
    pub(super) started_at: SystemTime,
    pub(super) backup: Option<Backup>,
    pub(super) progress: Progress,
    pub(super) details: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    pub(super) indexes_before: Vec<IndexSpec>,
    pub(super) fence: Fence,
    pub(super) stop: StopSignal,
}

impl std::fmt::Debug for MigrationContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationContext")
            .field("db", &self.db.uri())
            .field("table", &self.table.name())
            .field("migration", &self.migration)
            .field("version_before", &self.version_before)
            .field("rows_before", &self.rows_before)
            .field("started_at", &self.started_at)
            .field("backup", &self.backup)
            .finish_non_exhaustive()
    }
}

impl MigrationContext {
    /// Opens `table` and records its state before the migration.
    pub(crate) async fn open(
        db: &Connection,
        table: &str,
        migration: &str,
        progress: Progress,
        fence: Fence,
        stop: StopSignal,
    ) -> Result<Self> {
        // Every commit through this handle checks the lease first.
        let handle = match crate::lance::fence::open(db, table, fence.clone()).await {
            Ok(handle) => handle,
            Err(lancedb::Error::TableNotFound { .. }) => {
                return Err(Error::TableNotFound {
                    table: table.to_owned(),
                });
            }
            Err(e) => return Err(Error::lance(format!("open table `{table}`"))(e)),
        };
        let read = |what: &str| Error::lance(format!("read the {what} of table `{table}`"));
        let indexes_before = indexes::snapshot(&handle).await?;
        Ok(Self {
            version_before: handle.version().await.map_err(read("version"))?,
            rows_before: handle.count_rows(None).await.map_err(read("row count"))? as u64,
            schema_before: handle.schema().await.map_err(read("schema"))?,
            db: db.clone(),
            table: handle,
            migration: migration.to_owned(),
            started_at: SystemTime::now(),
            backup: None,
            progress,
            details: Default::default(),
            indexes_before,
            fence,
            stop,
        })
    }

    /// Continues an interrupted attempt: the table's state before that
    /// attempt (version, rows, schema) and its backup.
    pub(crate) async fn resume(
        &mut self,
        version_before: u64,
        rows_before: u64,
        backup: Backup,
    ) -> Result<()> {
        let name = self.table.name().to_owned();
        let read = |what: &str| {
            Error::lance(format!(
                "read the {what} of `{name}` before the interrupted attempt"
            ))
        };
        self.table
            .checkout(version_before)
            .await
            .map_err(read("version"))?;
        let schema = self.table.schema().await.map_err(read("schema"));
        let indexes = indexes::snapshot(&self.table).await;
        crate::lance::latest_version(&self.table).await?;
        self.schema_before = schema?;
        self.indexes_before = indexes?;
        self.version_before = version_before;
        self.rows_before = rows_before;
        self.backup = Some(backup);
        Ok(())
    }

    /// Records a detail about this migration's outcome (e.g. the model a
    /// re-embedding used), stored with its ledger entry and shown in its
    /// report. A later value for the same key replaces the earlier one.
    pub fn record_detail(&self, key: impl Into<String>, value: impl Into<String>) {
        self.details
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.into(), value.into());
    }

    /// The details recorded so far.
    pub fn details(&self) -> std::collections::BTreeMap<String, String> {
        self.details
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_backup(&mut self, backup: Backup) {
        self.backup = Some(backup);
    }

    /// The database connection the migrator was given.
    pub fn db(&self) -> &Connection {
        &self.db
    }

    /// A handle to the table being migrated, writable and at its latest
    /// version.
    ///
    /// **Fenced**: every commit made through it — LanceDB's `add`,
    /// `update`, `delete`, `merge_insert`, `add_columns`, `alter_columns`,
    /// `drop_columns`, `optimize`, index builds, `restore`, or a Lance
    /// transaction on its dataset — first checks that this process still
    /// holds the migration lease (the check runs in the Lance commit
    /// handler the handle was opened with, just before the manifest is
    /// written). A hook that was stalled past the lease TTL and taken over
    /// commits nothing, whether or not it calls
    /// [`check_lease`](Self::check_lease). The refused commit fails with a
    /// LanceDB error that says so; the migrator then reports
    /// [`Error::LeaseLost`] and leaves the table to the new holder. A handle
    /// opened another way (`ctx.db().open_table(..)`) is not fenced: use it
    /// only to read, or for other tables.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The name of the table being migrated.
    pub fn table_name(&self) -> &str {
        self.table.name()
    }

    /// The id of the migration running.
    pub fn migration_id(&self) -> &str {
        &self.migration
    }

    /// The table's version before the migration started.
    pub fn version_before(&self) -> u64 {
        self.version_before
    }

    /// The table's row count before the migration started.
    pub fn rows_before(&self) -> u64 {
        self.rows_before
    }

    /// The table's schema before the migration started.
    pub fn schema_before(&self) -> &SchemaRef {
        &self.schema_before
    }

    /// The time the migration started: the value of "time of migration"
    /// defaults, the same for every row.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// The backup taken by the backup hook, once it ran.
    pub fn backup(&self) -> Option<&Backup> {
        self.backup.as_ref()
    }

    /// Where long phases report rows done.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Fails with [`Error::LeaseLost`] when this process can no longer prove
    /// that it holds the migration lease (another process may have taken
    /// over the migration). Costs no I/O.
    ///
    /// Commits through [`table`](Self::table) are checked already; call it
    /// before writes the fence cannot see (another table, files, a remote
    /// service with side effects), and before long work that is pointless
    /// once the lease is gone, and return its error. The migrator checks
    /// it before every phase and ledger write too.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`].
    pub fn check_lease(&self) -> Result<()> {
        self.fence.check()
    }

    pub(crate) fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Whether the run was asked to stop ([`StopSignal`]). A resumable
    /// migration's long hook checks it between units of work; when set, it
    /// finishes the unit in hand, commits it and saves what it needs to
    /// continue, and returns [`Error::Stopped`]. The migration is then left
    /// `running` for the next process, which calls the hook again (see
    /// [`Migration::resumable`](crate::Migration::resumable)). Hooks of
    /// migrations that are not resumable need not look: the run stops
    /// after them.
    pub fn stop_requested(&self) -> bool {
        self.stop.is_stopped()
    }

    /// The run's stop signal, to wait on ([`StopSignal::stopped`]) in a
    /// hook that sleeps or polls.
    pub fn stop_signal(&self) -> &StopSignal {
        &self.stop
    }
}
