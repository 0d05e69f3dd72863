//! The one argument every migration hook receives.

use std::future::Future;
use std::sync::PoisonError;
use std::time::SystemTime;

use arrow_schema::{Schema, SchemaRef};
use lancedb::{Connection, Table};

use crate::backup::Backup;
use crate::error::{Error, Result};
use crate::lance::commits::append_commits;
use crate::lance::fence::Fence;
use crate::lance::indexes::{self, IndexSpec};
use crate::lance::retry::retry_commit;
use crate::progress::Progress;
use crate::stop::StopSignal;

/// What a hook knows about the migration in progress.
///
/// Fields are private so that new ones can be added without breaking
/// downstream migrations; read them through the accessors.
pub struct MigrationContext {
    db: Connection,
    table: Table,
    migration: String,
    version_before: u64,
    rows_before: u64,
    schema_before: SchemaRef,
    started_at: SystemTime,
    backup: Option<Backup>,
    progress: Progress,
    details: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    indexes_before: Vec<IndexSpec>,
    fence: Fence,
    stop: StopSignal,
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

    /// Rows an index check samples for its recall check.
    pub const RECALL_SAMPLE: usize = 20;
    /// The least share of sampled rows an indexed vector search must find by
    /// their own vector, in [`check_indexes`](Self::check_indexes).
    pub const MIN_RECALL: f64 = 0.9;

    /// The table's indexes before the migration (name, column, type,
    /// distance type, and the parameters Lance keeps in the manifest; see
    /// [`IndexSpec::parameters`] for those read only when an index is
    /// rebuilt).
    pub fn indexes_before(&self) -> &[IndexSpec] {
        &self.indexes_before
    }

    /// Makes every index the table had before the migration exist again on
    /// the column it now belongs to (following renames; a replaced column
    /// keeps its name), covering every row: recreates dropped ones under the
    /// same name, type and parameters, and indexes rows the migration
    /// rewrote. Indexes on columns the migration dropped are not recreated.
    /// The default [`Migration::rebuild`](crate::Migration::rebuild).
    ///
    /// The parameters are read from what Lance recorded of the index before
    /// the migration (see [`IndexSpec::parameters`]). One that cannot carry
    /// over — PQ sub-vectors that do not divide a re-embedded column's new
    /// dimension — is replaced by LanceDB's default for the new column, and
    /// the change is recorded as the detail `index_changed.<index>` (in the
    /// report and the ledger) and logged.
    ///
    /// # Errors
    ///
    /// [`Error::Index`] when an index cannot be recreated (e.g. too few rows
    /// to train it); [`Error::IndexNotRecreatable`] for an index type
    /// LanceDB has no builder for.
    pub async fn restore_indexes(&self) -> Result<()> {
        let recreated = indexes::restore(
            &self.table,
            &self.indexes_before,
            self.version_before,
            &self.fence,
        )
        .await?;
        if !recreated.is_empty() {
            let names: Vec<&str> = recreated.iter().map(|r| r.name.as_str()).collect();
            self.record_detail("indexes_recreated", names.join(","));
        }
        for index in recreated.iter().filter(|r| !r.changed.is_empty()) {
            self.record_detail(
                format!("index_changed.{}", index.name),
                index.changed.join("; "),
            );
        }
        Ok(())
    }

    /// Checks the indexes after the migration, with [`RECALL_SAMPLE`](Self::RECALL_SAMPLE)
    /// rows and [`MIN_RECALL`](Self::MIN_RECALL); see
    /// [`check_indexes_with`](Self::check_indexes_with).
    pub async fn check_indexes(&self) -> Result<()> {
        self.check_indexes_with(Self::RECALL_SAMPLE, Self::MIN_RECALL)
            .await
    }

    /// Checks that every index the table had before the migration (on a
    /// column that still exists) exists with the same type on that column;
    /// if it was rebuilt, with the same parameters and distance type as
    /// before (but for those [`restore_indexes`](Self::restore_indexes) had
    /// to change); has no unindexed rows; and, for vector indexes, that an
    /// indexed search for each of `sample` rows' own vector finds the row
    /// in the top 10 for at least `min_recall` of them. The hit rates are
    /// recorded as details (`recall.<index>`), and parameters that changed
    /// where LanceDB cannot set them (say an RQ rotation) as
    /// `index_changed.<index>`.
    ///
    /// # Errors
    ///
    /// [`Error::Index`] naming the index and what is wrong.
    pub async fn check_indexes_with(&self, sample: usize, min_recall: f64) -> Result<()> {
        let checked = indexes::check(
            &self.table,
            &self.indexes_before,
            self.version_before,
            sample,
            min_recall,
        )
        .await?;
        for (index, rate) in checked.recall {
            self.record_detail(format!("recall.{index}"), format!("{rate:.3}"));
        }
        for (index, changed) in checked.changed {
            self.record_detail(format!("index_changed.{index}"), changed.join("; "));
        }
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

    /// The most attempts [`retry_on_conflict`](Self::retry_on_conflict)
    /// makes.
    pub const CONFLICT_ATTEMPTS: u32 = crate::lance::retry::COMMIT_ATTEMPTS;

    /// Runs one LanceDB write, retrying it from the table's latest version
    /// when it conflicts with a concurrent writer (for example the
    /// application appending rows while a column is added).
    ///
    /// Before each attempt it checks the lease ([`check_lease`](Self::check_lease)).
    ///
    /// Use it only for a step that is correct to redo against newer data:
    /// `step` is called again after
    /// [`checkout_latest`](lancedb::Table::checkout_latest), up to
    /// [`CONFLICT_ATTEMPTS`](Self::CONFLICT_ATTEMPTS) times with a random
    /// pause (between half and all of a ceiling that doubles from 40 ms to
    /// 0.5 s, so attempts do not fall into step with a writer that commits
    /// on a rhythm; about half a minute in all). A LanceDB call inside
    /// `step` keeps LanceDB's own retries (up to 30 s), which run after the
    /// lease check. A writer that commits faster than the step can run may
    /// still exhaust the attempts; the migration then fails and is rolled
    /// back (keeping the writer's rows).
    ///
    /// # Errors
    ///
    /// [`Error::Lance`] naming `operation`: the last conflict, or the first
    /// error that is not a conflict. [`Error::LeaseLost`] when the lease is
    /// gone before an attempt.
    pub async fn retry_on_conflict<T, F, Fut>(&self, operation: &str, step: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = lancedb::Result<T>> + Send,
        T: Send,
    {
        // Each attempt starts from the latest version: a retry made on a
        // handle that went stale while it paused would lose again.
        let step = std::sync::Mutex::new(step);
        retry_commit(operation, |attempt| {
            let step = &step;
            async move {
                self.check_lease()?;
                if attempt > 1 {
                    self.table
                        .checkout_latest()
                        .await
                        .map_err(Error::lance("check out the latest version"))?;
                }
                let write = (step.lock().unwrap_or_else(PoisonError::into_inner))();
                write.await.map_err(Error::lance(operation))
            }
        })
        .await
    }

    /// Adds `columns` to the table, all NULL, in one metadata-only commit
    /// (no data file is written) that does not conflict with the
    /// application's appends; retried on conflicts with other schema
    /// changes, each attempt fenced. Returns the version it committed.
    /// What [`ReEmbed`](crate::ReEmbed) and [`AddColumns`](crate::AddColumns)
    /// start with; fill them with [`fill_column`](Self::fill_column).
    ///
    /// # Errors
    ///
    /// [`Error::Lance`] when the commit fails (a column that exists, a
    /// non-nullable field); [`Error::LeaseLost`].
    pub async fn add_null_columns(&self, columns: &Schema) -> Result<u64> {
        crate::lance::columns::add_null_columns(&self.table, columns, &self.fence).await
    }

    /// Fills column `column` (which must exist, say from
    /// [`add_null_columns`](Self::add_null_columns)) with `compute` of
    /// column `source`, as [`ReEmbed`](crate::ReEmbed) fills its vectors:
    /// fragment by fragment, each fragment's values written as a new data
    /// file of that column alone; `batch_size` rows per call of `compute`
    /// (only rows whose `source` is set; the rest stay NULL), small
    /// fragments many to a call; commits (fenced, retried against the
    /// application's appends) at least every 30 s, with a checkpoint, so a
    /// resumable migration calling it again after a crash continues where
    /// it stopped; then catch-up passes over the rows the application
    /// appended meanwhile, until one finds none. Progress goes to
    /// [`progress`](Self::progress). A stop ([`StopSignal`]) ends it after
    /// the batches in flight, their values committed, with
    /// [`Error::Stopped`]. Returns the rows filled.
    ///
    /// `compute` runs off the async executor and must return an array of
    /// the column's type and of its input's length.
    ///
    /// # Errors
    ///
    /// `compute`'s error; [`Error::ColumnNotFound`]-like Lance errors for
    /// a missing column; [`Error::Stopped`]; [`Error::LeaseLost`].
    pub async fn fill_column(
        &self,
        column: &str,
        source: &str,
        batch_size: u32,
        compute: impl Fn(arrow_array::ArrayRef) -> Result<arrow_array::ArrayRef> + Send + Sync + 'static,
    ) -> Result<u64> {
        let key = format!("lancedb_migrate.checkpoint.{}.{column}", self.migration);
        let fill = crate::lance::backfill::Backfill::new(
            &self.table,
            column,
            self.version_before,
            std::sync::Arc::new(compute),
            key,
            &self.progress,
            self.fence.clone(),
        )
        .await?;
        crate::lance::backfill::Backfill {
            source: Some(source.to_owned()),
            batch_size: batch_size.max(1),
            stop: self.stop.clone(),
            ..fill
        }
        .run()
        .await
    }

    /// The table's current schema.
    ///
    /// # Errors
    ///
    /// [`Error::Lance`] when the schema cannot be read.
    pub async fn current_schema(&self) -> Result<SchemaRef> {
        self.table.schema().await.map_err(Error::lance(format!(
            "read the schema of table `{}`",
            self.table_name()
        )))
    }

    /// Checks that the migration neither lost nor added rows: the table has
    /// as many rows as before, plus those that other writers appended while
    /// the migration ran (LanceDB `Append` commits since the migration
    /// started).
    ///
    /// A migration that appends rows to its own table itself must check
    /// row counts its own way.
    ///
    /// # Errors
    ///
    /// [`Error::Verification`] naming the counts when they differ.
    pub async fn check_row_count(&self) -> Result<()> {
        let name = self.table_name();
        // Count at the version the appends are listed up to, so that an
        // append landing in between cannot make them disagree; a quiet
        // table (the count unchanged) needs no list.
        let (version, now) = crate::lance::latest_row_count(&self.table).await?;
        if now == self.rows_before {
            return Ok(());
        }
        let commits = append_commits(&self.table, self.version_before + 1..version + 1).await?;
        let appended: u64 = commits.iter().map(|c| c.rows).sum();
        if now == self.rows_before || now == self.rows_before + appended {
            return Ok(());
        }
        Err(Error::verification(
            name,
            format!(
                "row count changed from {} to {now} ({appended} rows were appended by other writers meanwhile)",
                self.rows_before
            ),
        ))
    }

    /// Checks that the table's schema has exactly the fields of `expected`:
    /// the same names, data types and nullability (order and metadata are not
    /// compared).
    ///
    /// # Errors
    ///
    /// [`Error::Verification`] naming the first difference.
    pub async fn check_schema(&self, expected: &Schema) -> Result<()> {
        let actual = self.current_schema().await?;
        match schema_difference(expected, &actual) {
            None => Ok(()),
            Some(diff) => Err(Error::verification(self.table_name(), diff)),
        }
    }
}

/// The first difference between two schemas' fields, in words.
fn schema_difference(expected: &Schema, actual: &Schema) -> Option<String> {
    for want in expected.fields() {
        let Ok(got) = actual.field_with_name(want.name()) else {
            return Some(format!("column `{}` is missing", want.name()));
        };
        if !got.data_type().equals_datatype(want.data_type()) {
            return Some(format!(
                "column `{}` has type {}, expected {}",
                want.name(),
                got.data_type(),
                want.data_type()
            ));
        }
        if got.is_nullable() != want.is_nullable() {
            return Some(format!(
                "column `{}` has nullable={}, expected nullable={}",
                want.name(),
                got.is_nullable(),
                want.is_nullable()
            ));
        }
    }
    actual
        .fields()
        .iter()
        .find(|got| expected.field_with_name(got.name()).is_err())
        .map(|extra| format!("column `{}` was not expected", extra.name()))
}
