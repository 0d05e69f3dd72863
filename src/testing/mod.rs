//! Helpers for unit-testing migrations against real LanceDB tables
//! (feature `testing`).
//!
//! Everything here runs on a real LanceDB: an in-memory database
//! ([`memory_db`]) or one in a temporary directory ([`TempDb`]) when two
//! connections or processes must share it. [`conformance`] checks the
//! properties every migration should have (applies once, reruns are no-ops,
//! rollback restores the table exactly) for a migration of yours.
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

use std::sync::{Arc, Mutex};

use arrow_array::types::Float32Type;
use arrow_array::{
    ArrayRef, FixedSizeListArray, Int64Array, RecordBatch, RecordBatchIterator, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::query::ExecutableQuery;
use lancedb::{Connection, Table};

use crate::error::{Error, Result};
use crate::event::Event;

/// A fresh, private in-memory database. A second call gives another,
/// separate one.
///
/// # Errors
///
/// [`Error::Lance`] if LanceDB cannot open it.
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
    /// [`Error::Custom`] if the directory cannot be created, [`Error::Lance`]
    /// if LanceDB cannot open it.
    pub async fn new() -> Result<Self> {
        let dir =
            tempfile::tempdir().map_err(|e| Error::wrap("create a temporary directory", e))?;
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
    /// [`Error::Lance`] if LanceDB cannot open it.
    pub async fn connect(&self) -> Result<Connection> {
        connect(&self.dir.path().to_string_lossy()).await
    }
}

/// The text of fixture row `id`: deterministic and distinct per row.
pub fn document_text(id: i64) -> String {
    format!(
        "document {id}: the quick brown fox number {id} jumps over lazy dog {}",
        id % 7
    )
}

/// The vector of fixture row `id`: `dims` deterministic floats in [-1, 1).
pub fn document_vector(id: i64, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|j| {
            let x = (id as u64)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(j as u64 * 40_503);
            ((x % 20_000) as f32 / 10_000.0) - 1.0
        })
        .collect()
}

/// The schema of [`documents_table`]: `id` Int64, `text` Utf8, `vector`
/// FixedSizeList(Float32, `dims`), all NOT NULL.
pub fn documents_schema(dims: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("vector", vector_type(dims), false),
    ]))
}

/// `FixedSizeList(Float32, dims)` with nullable items, as LanceDB writes it.
pub fn vector_type(dims: usize) -> DataType {
    let dims = i32::try_from(dims).expect("vector dimension fits in i32");
    DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), dims)
}

/// One batch of fixture rows with ids `ids`.
///
/// # Panics
///
/// If `dims` does not fit in an `i32`.
pub fn documents_batch(ids: std::ops::Range<i64>, dims: usize) -> RecordBatch {
    let id = Int64Array::from_iter_values(ids.clone());
    let text: StringArray = ids.clone().map(|i| Some(document_text(i))).collect();
    let vectors = ids.map(|i| Some(document_vector(i, dims).into_iter().map(Some)));
    let vector = FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(vectors, dims as i32);
    let columns: Vec<ArrayRef> = vec![Arc::new(id), Arc::new(text), Arc::new(vector)];
    RecordBatch::try_new(documents_schema(dims), columns).expect("fixture batch matches its schema")
}

/// Creates table `name` with `rows` fixture documents of `dims`-dimensional
/// vectors, written in batches of up to 10 000 rows.
///
/// # Errors
///
/// [`Error::Lance`] if the table cannot be created (e.g. it exists).
pub async fn documents_table(
    db: &Connection,
    name: &str,
    rows: usize,
    dims: usize,
) -> Result<Table> {
    let rows = rows as i64;
    let batches: Vec<_> = (0..rows)
        .step_by(10_000)
        .map(|start| Ok(documents_batch(start..(start + 10_000).min(rows), dims)))
        .collect();
    let reader = RecordBatchIterator::new(batches, documents_schema(dims));
    db.create_table(
        name,
        Box::new(reader) as Box<dyn arrow_array::RecordBatchReader + Send>,
    )
    .execute()
    .await
    .map_err(Error::lance(format!("create fixture table `{name}`")))
}

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
    /// [`Error::Lance`] if the table cannot be read, [`Error::Arrow`] if
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

/// Checks that a downstream migration behaves as the migrator expects, on a
/// real table: it applies, verifies, and leaves the other columns intact; a
/// second run is a no-op that creates no version; and when verification
/// fails after it ran, the rollback leaves the table exactly as it was.
///
/// `setup` creates the table the migration expects in a fresh database; it
/// is called twice (once per check). `key` is a column that orders rows.
///
/// # Panics
///
/// With a message naming the property that does not hold.
///
/// # Examples
///
/// ```
/// use arrow_schema::DataType;
/// use lancedb_migrate::testing;
/// use lancedb_migrate::{AddColumns, NewColumn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let migration = || {
///     AddColumns::new("0001", "documents")
///         .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
/// };
/// testing::conformance(migration, "id", async |db| {
///     testing::documents_table(db, "documents", 100, 8).await.unwrap();
/// })
/// .await;
/// # }
/// ```
pub async fn conformance<M, F>(migration: impl Fn() -> M, key: &str, setup: F)
where
    M: crate::Migration + 'static,
    F: AsyncFn(&Connection),
{
    let db = memory_db().await.expect("in-memory database");
    setup(&db).await;
    let m = migration();
    let table = open(&db, m.table()).await;
    let before = Snapshot::take(&table, key).await.expect("snapshot before");
    let migrator = crate::Migrator::new(db.clone()).add(m);
    let report = migrator
        .run()
        .await
        .unwrap_or_else(|e| panic!("the migration fails: {e:?}"));
    assert_eq!(report.applied().count(), 1, "the migration is applied");
    let after = Snapshot::take(&table, key).await.expect("snapshot after");
    let untouched: Vec<&str> = unchanged_columns(&before, &after);
    after.assert_same_columns(&before, &untouched);
    let version = crate::lance::latest_version(&table).await.expect("version");
    let again = migrator
        .run()
        .await
        .unwrap_or_else(|e| panic!("the second run fails: {e:?}"));
    assert!(again.is_noop(), "a second run applies nothing");
    let version_again = crate::lance::latest_version(&table).await.expect("version");
    assert_eq!(
        version_again, version,
        "a second run creates no table version"
    );

    let db = memory_db().await.expect("in-memory database");
    setup(&db).await;
    let m = migration();
    let table = open(&db, m.table()).await;
    let before = Snapshot::take(&table, key).await.expect("snapshot before");
    let failing = crate::Migrator::new(db.clone()).add(FailVerify { inner: m });
    let err = failing
        .run()
        .await
        .expect_err("verification was made to fail");
    assert!(
        matches!(
            &err,
            crate::Error::MigrationFailed {
                phase: crate::Phase::Verify,
                ..
            }
        ),
        "the run fails in verify: {err:?}"
    );
    let restored = Snapshot::take(&table, key)
        .await
        .expect("snapshot after rollback");
    assert_eq!(
        restored.schema(),
        before.schema(),
        "rollback restores the schema"
    );
    let all: Vec<String> = before
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    restored.assert_same_columns(&before, &all);
}

async fn open(db: &Connection, name: &str) -> Table {
    db.open_table(name)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("setup must create table `{name}`: {e}"))
}

/// Columns present with the same type in both snapshots.
fn unchanged_columns<'a>(before: &'a Snapshot, after: &Snapshot) -> Vec<&'a str> {
    before
        .batch
        .schema_ref()
        .fields()
        .iter()
        .filter(|f| {
            after
                .schema()
                .field_with_name(f.name())
                .is_ok_and(|g| g.data_type() == f.data_type())
        })
        .map(|f| f.name().as_str())
        .collect()
}

/// Runs a migration and then fails its verification, to exercise rollback.
#[derive(Debug)]
struct FailVerify<M> {
    inner: M,
}

crate::migration::forward_migration! {
    impl[M: crate::Migration] FailVerify<M> => inner;
    forward [id, table, definition, checksum, expected_schema, plan, resumable, backup, transform, rebuild];
    {
        async fn verify(&self, ctx: &crate::MigrationContext) -> Result<()> {
            self.inner.verify(ctx).await?;
            Err(Error::Verification {
                table: ctx.table_name().to_owned(),
                reason: "failed on purpose by `testing::conformance`, to check the rollback".to_owned(),
            })
        }
    }
}

/// A deterministic embedding function for tests: no model, no download.
///
/// Each text's vector is derived from a hash of the text (normalised to unit
/// length), so equal texts get equal vectors, and [`TestEmbedding::vector`]
/// gives the vector a row should have. It counts the texts it embeds, and
/// can be told to misbehave ([`fail_after`](Self::fail_after),
/// [`wrong_dimension`](Self::wrong_dimension), [`nan_for`](Self::nan_for),
/// [`drop_a_row`](Self::drop_a_row)) to test how a migration copes.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Array, StringArray};
/// use lancedb::embeddings::EmbeddingFunction;
/// use lancedb_migrate::testing::TestEmbedding;
///
/// let model = TestEmbedding::new("test-768", 768);
/// let texts = Arc::new(StringArray::from(vec!["a", "b"]));
/// let vectors = model.compute_source_embeddings(texts).unwrap();
/// assert_eq!(vectors.len(), 2);
/// assert_eq!(model.embedded(), 2);
/// assert_eq!(TestEmbedding::vector("a", 768).len(), 768);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct TestEmbedding {
    name: String,
    dims: usize,
    embedded: Arc<std::sync::atomic::AtomicU64>,
    fault: Option<Fault>,
    delay: std::time::Duration,
}

#[derive(Debug, Clone)]
enum Fault {
    FailAfter(u64),
    WrongDimension(usize),
    NanFor(String),
    DropARow,
}

impl TestEmbedding {
    /// A well-behaved function named `name` giving `dims`-dimensional
    /// vectors.
    pub fn new(name: impl Into<String>, dims: usize) -> Self {
        Self {
            name: name.into(),
            dims,
            embedded: Arc::default(),
            fault: None,
            delay: std::time::Duration::ZERO,
        }
    }

    /// The vector this function gives `text`.
    pub fn vector(text: &str, dims: usize) -> Vec<f32> {
        // FNV-1a of the text seeds a xorshift sequence.
        let mut seed = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        let norm = v
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(f32::EPSILON);
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    /// Texts embedded so far (by this value and its clones).
    pub fn embedded(&self) -> u64 {
        self.embedded.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Fails every call once `rows` texts have been embedded.
    pub fn fail_after(mut self, rows: u64) -> Self {
        self.fault = Some(Fault::FailAfter(rows));
        self
    }

    /// Returns vectors of `dims` dimensions while declaring its own.
    pub fn wrong_dimension(mut self, dims: usize) -> Self {
        self.fault = Some(Fault::WrongDimension(dims));
        self
    }

    /// Returns a vector of NaN for texts containing `needle`.
    pub fn nan_for(mut self, needle: impl Into<String>) -> Self {
        self.fault = Some(Fault::NanFor(needle.into()));
        self
    }

    /// Returns one vector fewer than it was given texts.
    pub fn drop_a_row(mut self) -> Self {
        self.fault = Some(Fault::DropARow);
        self
    }

    /// Sleeps this long per call, to make a run slow enough to interrupt.
    pub fn delay(mut self, per_call: std::time::Duration) -> Self {
        self.delay = per_call;
        self
    }
}

impl lancedb::embeddings::EmbeddingFunction for TestEmbedding {
    fn name(&self) -> &str {
        &self.name
    }

    fn source_type(&self) -> lancedb::Result<std::borrow::Cow<'_, DataType>> {
        Ok(std::borrow::Cow::Owned(DataType::Utf8))
    }

    fn dest_type(&self) -> lancedb::Result<std::borrow::Cow<'_, DataType>> {
        Ok(std::borrow::Cow::Owned(vector_type(self.dims)))
    }

    fn compute_source_embeddings(&self, source: ArrayRef) -> lancedb::Result<ArrayRef> {
        use arrow_array::Array;
        use std::sync::atomic::Ordering;
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let texts = arrow_cast::cast(&source, &DataType::Utf8)?;
        let texts = arrow_array::cast::AsArray::as_string::<i32>(&texts);
        let before = self
            .embedded
            .fetch_add(texts.len() as u64, Ordering::SeqCst);
        let mut dims = self.dims;
        let mut rows = texts.len();
        match &self.fault {
            Some(Fault::FailAfter(limit)) if before + texts.len() as u64 > *limit => {
                return Err(lancedb::Error::Runtime {
                    message: format!("test embedding told to fail after {limit} rows"),
                });
            }
            Some(Fault::WrongDimension(d)) => dims = *d,
            Some(Fault::DropARow) => rows = rows.saturating_sub(1),
            _ => {}
        }
        let vectors = (0..rows).map(|i| {
            let text = if texts.is_valid(i) {
                texts.value(i)
            } else {
                ""
            };
            let nan = matches!(&self.fault, Some(Fault::NanFor(n)) if text.contains(n.as_str()));
            Some(
                Self::vector(text, dims)
                    .into_iter()
                    .map(move |x| Some(if nan { f32::NAN } else { x })),
            )
        });
        let dims = i32::try_from(dims).unwrap_or(i32::MAX);
        Ok(Arc::new(FixedSizeListArray::from_iter_primitive::<
            Float32Type,
            _,
            _,
        >(vectors, dims)))
    }

    fn compute_query_embeddings(&self, input: ArrayRef) -> lancedb::Result<ArrayRef> {
        self.compute_source_embeddings(input)
    }
}
