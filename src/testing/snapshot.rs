//! Snapshots of a table's rows, for asserting what a migration changed and
//! what it kept.

use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use futures::TryStreamExt;
use lancedb::Table;
use lancedb::query::ExecutableQuery;

use crate::error::{Error, Result};
use crate::event::Event;

/// All rows of a table, read into one batch and sorted by a key column, for
/// comparing a table before and after a migration.
#[derive(Debug, Clone)]
pub struct Snapshot {
    batch: RecordBatch,
}

impl Snapshot {
    /// Reads every row of `table` at its latest version, sorted by `key`.
    ///
    /// # Errors
    ///
    /// [`Error::LanceDb`] if the table cannot be read, [`Error::Arrow`] if
    /// `key` cannot be sorted on, [`Error::ColumnNotFound`] if it is missing.
    pub async fn take(table: &Table, key: &str) -> Result<Self> {
        table
            .checkout_latest()
            .await
            .map_err(Error::lance("check out the latest version"))?;
        let schema = table
            .schema()
            .await
            .map_err(Error::lance("read the schema"))?;
        let batches: Vec<RecordBatch> = table
            .query()
            .execute()
            .await
            .map_err(Error::lance("scan the table"))?
            .try_collect()
            .await
            .map_err(Error::lance("scan the table"))?;
        let batch = arrow_select::concat::concat_batches(&schema, &batches)
            .map_err(Error::arrow("concatenate batches"))?;
        let keys = batch
            .column_by_name(key)
            .ok_or_else(|| Error::ColumnNotFound {
                table: table.name().to_owned(),
                column: key.to_owned(),
            })?;
        let order = arrow_ord::sort::sort_to_indices(keys, None, None)
            .map_err(Error::arrow(format!("sort by `{key}`")))?;
        let batch = arrow_select::take::take_record_batch(&batch, &order)
            .map_err(Error::arrow("reorder rows"))?;
        Ok(Self { batch })
    }

    /// The rows, sorted.
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// The number of rows.
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// A column, sorted.
    ///
    /// # Panics
    ///
    /// If the column is missing, naming the columns there are.
    pub fn column(&self, name: &str) -> &ArrayRef {
        self.batch.column_by_name(name).unwrap_or_else(|| {
            let names: Vec<_> = self
                .batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            panic!("column `{name}` is not in the snapshot; it has {names:?}")
        })
    }

    /// The schema of the snapshot.
    pub fn schema(&self) -> SchemaRef {
        self.batch.schema()
    }

    /// Asserts that `columns` hold exactly the same values (and types) in
    /// both snapshots.
    ///
    /// # Panics
    ///
    /// On the first column that differs, naming it.
    pub fn assert_same_columns(&self, other: &Self, columns: &[&str]) {
        assert_eq!(self.num_rows(), other.num_rows(), "row counts differ");
        for name in columns {
            let (a, b) = (self.column(name), other.column(name));
            assert_eq!(a.data_type(), b.data_type(), "column `{name}` changed type");
            assert!(a.to_data() == b.to_data(), "column `{name}` changed values");
        }
    }
}

/// Collects the [`Event`]s of a run, for asserting on progress reporting.
///
/// # Examples
///
/// ```
/// use lancedb_migrate::testing::{self, EventLog};
/// use lancedb_migrate::Migrator;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lancedb_migrate::Result<()> {
/// let log = EventLog::default();
/// let db = testing::memory_db().await?;
/// Migrator::new(db).on_event(log.observer()).run().await?;
/// assert!(log.events().is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventLog(Arc<Mutex<Vec<Event>>>);

impl EventLog {
    /// A callback for [`Migrator::on_event`](crate::Migrator::on_event) that
    /// appends to this log.
    pub fn observer(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let log = Arc::clone(&self.0);
        move |event| {
            log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(event.clone())
        }
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
