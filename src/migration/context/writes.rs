//! Writing to the table under the lease: retries on conflict, the
//! built-ins' metadata-only column add and resumable column fill.

use std::future::Future;
use std::sync::PoisonError;

use arrow_schema::Schema;

use crate::error::{Error, Result};
use crate::lance::retry::retry_commit;

use super::MigrationContext;

impl MigrationContext {
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
    /// [`Error::LanceDb`] naming `operation`: the last conflict, or the first
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
    /// [`Error::LanceDb`] when the commit fails (a column that exists, a
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
    /// [`progress`](Self::progress). A stop ([`StopSignal`](crate::StopSignal)) ends it after
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
            source: Some(crate::lance::source::Source::Column(source.to_owned())),
            batch_size: batch_size.max(1),
            stop: self.stop.clone(),
            ..fill
        }
        .run()
        .await
    }
}
