//! `ReEmbed`: recompute a vector column from a text column with a new
//! embedding model — streaming, resumable, online.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use async_trait::async_trait;
use futures::TryStreamExt;
use lance::dataset::CommitBuilder;
use lance::dataset::transaction::{Operation, Transaction};
use lancedb::embeddings::EmbeddingFunction;
use lancedb::query::{ExecutableQuery, Select};
use lancedb::table::{ColumnDefinition, ColumnKind, NewColumnTransform};
use tracing::info;

use crate::context::MigrationContext;
use crate::error::is_lance_conflict;
use crate::error::{EmbeddingProblem, Error, Result, panic_message};
use crate::lance::backfill::{Backfill, Compute, lance_err, quote};
use crate::migration::Migration;
use crate::plan::{TableInfo, Work, Writes};

/// Field metadata key on the vector column: the name of the model that
/// produced it (LanceDB's `lancedb:tag:<name>` convention).
pub const MODEL_KEY: &str = "lancedb:tag:model";
/// Field metadata key on the vector column: the vector dimension.
pub const DIMENSION_KEY: &str = "lancedb:tag:dimension";
/// Field metadata key on the vector column: the id of the migration that
/// produced it.
pub const MIGRATION_KEY: &str = "lancedb_migrate.migration";

const COLUMN_DEFINITIONS_KEY: &str = "lancedb::column_definitions";

/// Recomputes a vector column from a text column with a new embedding model,
/// e.g. to move from a 384-dimension model to a 768-dimension one.
///
/// The embedding function is LanceDB's own [`EmbeddingFunction`], so any
/// function an application already registers with LanceDB plugs in. Its
/// (synchronous) work runs on Tokio's blocking pool, `concurrency` batches at
/// a time, never on the async executor.
///
/// # How it runs
///
/// - The new vectors go into a **staging column** (added all-null, which
///   writes nothing) while the application keeps reading — and appending
///   to — the old column. Only the staging column's data is written: one
///   new file per fragment; text and other columns are not rewritten.
/// - Memory is bounded by `concurrency × batch_size` rows, whatever the
///   table's size.
/// - Work is **checkpointed**: finished fragments are committed at least
///   every [`checkpoint_every`](Self::checkpoint_every), and a fragment that
///   takes longer is written in parts, each recorded in the table's config.
///   If the process dies, the next [`Migrator::run`](crate::Migrator::run)
///   continues where it stopped: at most one checkpoint's worth of rows is
///   embedded again.
/// - Rows the application appends meanwhile are embedded too.
/// - When every row has its new vector, one metadata-only commit swaps the
///   staging column in under the target's name (same position), records the
///   model in the column's metadata ([`MODEL_KEY`], [`DIMENSION_KEY`]) and
///   points the table's LanceDB embedding definition for the column, if it
///   has one, at the new model (register the function under
///   [`model`](Self::model) on the application's connection, so its later
///   `add`s use it).
///
/// The model and dimension are also recorded in the ledger entry's details.
/// A vector index on the old column is dropped with it; rebuilding it is
/// the rebuild step's job.
///
/// # Verification
///
/// Every vector is checked as it is computed: the embedder must return one
/// vector per input, of the declared dimension, with no NULL, NaN or
/// infinity — otherwise the migration fails with [`Error::Embedding`] and
/// the table is restored. After the swap, `verify` checks that no row with
/// text lacks a vector (without reading again the vectors it checked while
/// writing them), that a sample of rows' vectors match a fresh
/// embedding of their text (within [`tolerance`](Self::tolerance)), and, as
/// for every migration, that the table's indexes (a vector index on the
/// target is rebuilt) are back and find sampled rows.
///
/// Rows whose text is NULL get a NULL vector.
///
/// # Examples
///
/// ```
/// # async fn example() -> lancedb_migrate::Result<()> {
/// use std::sync::Arc;
/// use lancedb_migrate::testing::{self, TestEmbedding};
/// use lancedb_migrate::{AddColumns, Migrator, NewColumn, ReEmbed, Value};
/// use arrow_schema::{DataType, TimeUnit};
///
/// let db = testing::memory_db().await?;
/// testing::documents_table(&db, "docs", 100, 384).await?;
///
/// let model = Arc::new(TestEmbedding::new("test-model-768", 768));
/// Migrator::new(db.clone())
///     .add(ReEmbed::new("0002_reembed_768", "docs", "text", "vector", model))
///     .add(
///         AddColumns::new("0003_embedding_model", "docs")
///             .column(NewColumn::new("embedding_model", DataType::Utf8)
///                 .default_value("test-model-768"))
///             .column(NewColumn::new("migrated_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))
///                 .default_value(Value::MigrationTime)),
///     )
///     .run()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use]
#[derive(Clone)]
pub struct ReEmbed {
    id: String,
    table: String,
    source: String,
    target: String,
    embedder: Arc<dyn EmbeddingFunction>,
    model: String,
    batch_size: u32,
    concurrency: usize,
    checkpoint_every: Duration,
    sample: usize,
    tolerance: f32,
}

impl fmt::Debug for ReEmbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReEmbed")
            .field("id", &self.id)
            .field("table", &self.table)
            .field("source", &self.source)
            .field("target", &self.target)
            .field("model", &self.model)
            .field("batch_size", &self.batch_size)
            .field("concurrency", &self.concurrency)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("sample", &self.sample)
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl ReEmbed {
    /// Default rows per embedding call.
    pub const DEFAULT_BATCH_SIZE: u32 = 256;
    /// Passes over the table before the swap: the first, then catch-up
    /// passes over what the application appended meanwhile.
    const PASSES_BEFORE_SWAP: usize = 3;
    /// Default time between checkpoints.
    pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(30);
    /// Default number of rows `verify` re-embeds and compares.
    pub const DEFAULT_SAMPLE: usize = 16;
    /// Default largest difference allowed, per vector element, between a
    /// stored vector and a fresh embedding of its text.
    pub const DEFAULT_TOLERANCE: f32 = 1e-4;

    /// Re-embeds `target` (a vector column, replaced; or a new column) of
    /// `table` from its text column `source` with `embedder`. The model is
    /// recorded under the embedder's [`name`](EmbeddingFunction::name);
    /// change it with [`model`](Self::model).
    pub fn new(
        id: impl Into<String>,
        table: impl Into<String>,
        source: impl Into<String>,
        target: impl Into<String>,
        embedder: Arc<dyn EmbeddingFunction>,
    ) -> Self {
        let model = embedder.name().to_owned();
        Self {
            id: id.into(),
            table: table.into(),
            source: source.into(),
            target: target.into(),
            embedder,
            model,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
            checkpoint_every: Self::DEFAULT_CHECKPOINT_EVERY,
            sample: Self::DEFAULT_SAMPLE,
            tolerance: Self::DEFAULT_TOLERANCE,
        }
    }

    /// The model name recorded on the column, in the ledger, and in the
    /// table's embedding definition (the name the application registers the
    /// function under). Default: the embedder's `name()`.
    pub fn model(mut self, name: impl Into<String>) -> Self {
        self.model = name.into();
        self
    }

    /// Rows per embedding call. Default [`DEFAULT_BATCH_SIZE`](Self::DEFAULT_BATCH_SIZE).
    pub fn batch_size(mut self, rows: u32) -> Self {
        self.batch_size = rows;
        self
    }

    /// Embedding calls run at once. Default: the number of CPUs, at most 8.
    pub fn concurrency(mut self, calls: usize) -> Self {
        self.concurrency = calls;
        self
    }

    /// How much work may be lost to a crash: finished work is committed, or
    /// saved as a checkpoint, at least this often. Default
    /// [`DEFAULT_CHECKPOINT_EVERY`](Self::DEFAULT_CHECKPOINT_EVERY).
    /// Shorter means more, smaller commits.
    pub fn checkpoint_every(mut self, every: Duration) -> Self {
        self.checkpoint_every = every;
        self
    }

    /// Rows `verify` re-embeds and compares; 0 skips the comparison. Default [`DEFAULT_SAMPLE`](Self::DEFAULT_SAMPLE).
    pub fn verify_sample(mut self, rows: usize) -> Self {
        self.sample = rows;
        self
    }

    /// Largest difference allowed per element between a stored vector and a
    /// fresh embedding of its text. Default
    /// [`DEFAULT_TOLERANCE`](Self::DEFAULT_TOLERANCE).
    pub fn tolerance(mut self, tolerance: f32) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The name of the staging column that holds the new vectors until the
    /// swap.
    pub fn staging_column(&self) -> String {
        format!("__lancedb_migrate_{}", self.target)
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidMigration {
            migration: self.id.clone(),
            reason: reason.into(),
        }
    }

    /// The vector type the embedder declares, and its dimension.
    fn dest(&self) -> Result<(DataType, usize)> {
        let dest = self
            .embedder
            .dest_type()
            .map_err(|e| self.invalid(format!("the embedding function has no output type: {e}")))?
            .into_owned();
        match &dest {
            DataType::FixedSizeList(item, n) if item.data_type().is_floating() && *n > 0 => {
                let n = *n as usize;
                Ok((dest, n))
            }
            other => Err(self.invalid(format!(
                "the embedding function outputs {other}; re-embedding needs fixed-size lists of floats"
            ))),
        }
    }

    fn target_field(&self) -> Result<Field> {
        let (dest, dim) = self.dest()?;
        let metadata = [
            (MODEL_KEY.to_owned(), self.model.clone()),
            (DIMENSION_KEY.to_owned(), dim.to_string()),
            (MIGRATION_KEY.to_owned(), self.id.clone()),
        ];
        Ok(Field::new(&self.target, dest, true).with_metadata(metadata.into()))
    }

    /// Builds the embedding step: embed, then check what came back.
    fn compute(&self) -> Result<Compute> {
        let (dest, dim) = self.dest()?;
        let embedder = self.embedder.clone();
        let model = self.model.clone();
        Ok(Arc::new(move |texts: ArrayRef| {
            let fail = |problem| Error::Embedding {
                model: model.clone(),
                problem,
            };
            let call = || embedder.compute_source_embeddings(texts.clone());
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
                .map_err(|payload| {
                    fail(EmbeddingProblem::Panicked {
                        message: panic_message(payload.as_ref()),
                    })
                })?
                .map_err(|e| fail(EmbeddingProblem::Failed(e)))?;
            check_vectors(&out, &texts, dim).map_err(fail)?;
            if out.data_type() == &dest {
                Ok(out)
            } else {
                arrow_cast::cast(&out, &dest).map_err(Error::arrow("convert the vectors"))
            }
        }))
    }

    /// Whether `field` is the column this migration produced (the swap is
    /// done).
    fn is_ours(&self, field: &Field) -> bool {
        field.metadata().get(MIGRATION_KEY) == Some(&self.id)
    }
}

/// Checks an embedder's output for `texts`: one vector each, of dimension
/// `dim`, none NULL, all finite.
fn check_vectors(
    out: &ArrayRef,
    texts: &ArrayRef,
    dim: usize,
) -> std::result::Result<(), EmbeddingProblem> {
    let text = |i: usize| arrow_cast::display::array_value_to_string(texts, i).unwrap_or_default();
    let Some(list) = out.as_fixed_size_list_opt() else {
        return Err(EmbeddingProblem::WrongType {
            actual: out.data_type().clone(),
        });
    };
    if list.len() != texts.len() {
        return Err(EmbeddingProblem::WrongRowCount {
            expected: texts.len(),
            actual: list.len(),
        });
    }
    if list.value_length() as usize != dim {
        return Err(EmbeddingProblem::WrongDimension {
            expected: dim,
            actual: list.value_length() as usize,
        });
    }
    if let Some(i) = (0..list.len()).find(|&i| list.is_null(i)) {
        return Err(EmbeddingProblem::Null { text: text(i) });
    }
    let values = list.values();
    let bad = match values.data_type() {
        DataType::Float32 => first_bad(values.as_primitive::<Float32Type>().values(), |v| {
            v.is_finite()
        }),
        DataType::Float64 => first_bad(values.as_primitive::<Float64Type>().values(), |v| {
            v.is_finite()
        }),
        DataType::Float16 => first_bad(values.as_primitive::<Float16Type>().values(), |v| {
            v.is_finite()
        }),
        other => {
            return Err(EmbeddingProblem::WrongType {
                actual: DataType::FixedSizeList(
                    Arc::new(Field::new("item", other.clone(), true)),
                    dim as i32,
                ),
            });
        }
    };
    match bad {
        Some(at) => Err(EmbeddingProblem::NotFinite {
            text: text(at / dim),
        }),
        None => Ok(()),
    }
}

fn first_bad<T: Copy>(values: &[T], ok: impl Fn(T) -> bool) -> Option<usize> {
    values.iter().position(|&v| !ok(v))
}

#[async_trait]
impl Migration for ReEmbed {
    fn id(&self) -> &str {
        &self.id
    }

    fn table(&self) -> &str {
        &self.table
    }

    /// The table, columns, model name and output type; tuning (batch size,
    /// concurrency, checkpoints, verification) can change without drift.
    fn definition(&self) -> String {
        let dest = self
            .embedder
            .dest_type()
            .map(|t| t.to_string())
            .unwrap_or_default();
        format!(
            "ReEmbed {{ table: {:?}, source: {:?}, target: {:?}, model: {:?}, dest: {dest} }}",
            self.table, self.source, self.target, self.model
        )
    }

    fn resumable(&self) -> bool {
        true
    }

    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        let table = &self.table;
        if self.batch_size == 0 || self.concurrency == 0 {
            return Err(self.invalid("batch_size and concurrency must be at least 1"));
        }
        let source = before
            .field_with_name(&self.source)
            .map_err(|_| Error::ColumnNotFound {
                table: table.clone(),
                column: self.source.clone(),
            })?;
        if !matches!(
            source.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return Err(Error::ColumnType {
                table: table.clone(),
                column: self.source.clone(),
                expected: "text (Utf8)".to_owned(),
                found: source.data_type().clone(),
            });
        }
        if self.source == self.target {
            return Err(self.invalid("the source and target columns are the same column"));
        }
        let staging = self.staging_column();
        if before.field_with_name(&staging).is_ok() {
            return Err(Error::ColumnExists {
                table: table.clone(),
                column: staging,
            });
        }
        let new = self.target_field()?;
        let mut fields: Vec<Field> = Vec::with_capacity(before.fields().len() + 1);
        let mut replaced = false;
        for field in before.fields() {
            if field.name() == &self.target {
                if !matches!(field.data_type(), DataType::FixedSizeList(..)) {
                    return Err(Error::ColumnType {
                        table: table.clone(),
                        column: self.target.clone(),
                        expected: "a vector column (fixed-size list), or no column of that name"
                            .to_owned(),
                        found: field.data_type().clone(),
                    });
                }
                fields.push(new.clone());
                replaced = true;
            } else {
                fields.push(field.as_ref().clone());
            }
        }
        if !replaced {
            fields.push(new);
        }
        Ok(Schema::new_with_metadata(fields, before.metadata().clone()))
    }

    /// Writes the target column for every row (into a staging column, then
    /// one metadata-only swap); rebuilds the indexes on the target.
    fn plan(&self, table: &TableInfo) -> Result<Work> {
        let (_, dim) = self.dest()?;
        let summary = format!(
            "re-embed `{}` into `{}` with model `{}` ({dim} dimensions)",
            self.source, self.target, self.model
        );
        Ok(Work::new(summary)
            .writes(Writes::Columns { rows: table.rows })
            .columns([self.target.as_str()])
            .indexes(table.indexes_on(&self.target)))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        let table = ctx.table();
        let staging = self.staging_column();
        let compute = self.compute()?;
        let current = ctx.current_schema().await?;
        let swapped = current
            .field_with_name(&self.target)
            .is_ok_and(|f| self.is_ours(f));
        if !swapped && current.field_with_name(&staging).is_err() {
            let mut field = self.target_field()?;
            field.set_name(&staging);
            let schema = Arc::new(Schema::new(vec![field]));
            let operation = format!("add staging column `{staging}` to `{}`", self.table);
            ctx.retry_on_conflict(&operation, || {
                table
                    .add_columns()
                    .transform(NewColumnTransform::AllNulls(schema.clone()))
                    .execute()
            })
            .await?;
            info!(table = self.table, staging, "staging column added");
        }
        let dataset = crate::lance::local_dataset(table).await?;
        let column = if swapped { &self.target } else { &staging };
        let field_id = dataset
            .schema()
            .field_id(column)
            .map_err(lance_err(format!("find column `{column}`")))?;
        let original = dataset
            .checkout_version(ctx.version_before())
            .await
            .map_err(lance_err("read the table as it was before the migration"))?;
        let backfill = Backfill {
            table,
            source: Some(self.source.clone()),
            field_id,
            compute,
            batch_size: self.batch_size,
            concurrency: self.concurrency,
            checkpoint_every: self.checkpoint_every,
            original_fragments: original
                .get_fragments()
                .iter()
                .map(|f| f.id() as u64)
                .collect::<HashSet<_>>(),
            checkpoint_key: format!("lancedb_migrate.checkpoint.{}", self.id),
            progress: ctx.progress(),
            fence: ctx.fence().clone(),
        };
        let mut rows = 0;
        if !swapped {
            let mut attempt = 1;
            // The first pass and at most two catch-up passes: on a busy
            // table every pass finds newly appended rows, so the swap does
            // not wait for a pass that finds none. Rows the last pass missed
            // are filled right after the swap.
            rows += backfill.run_passes(Self::PASSES_BEFORE_SWAP).await?;
            loop {
                if self.swap(&backfill, field_id).await? {
                    break;
                }
                if attempt == MigrationContext::CONFLICT_ATTEMPTS {
                    return Err(Error::custom(format!(
                        "could not swap the new vectors into `{}`: other writers kept changing it",
                        self.table
                    )));
                }
                attempt += 1;
            }
        }
        // Rows appended between the last pass and the swap.
        let late = backfill.run().await?;
        let (_, dim) = self.dest()?;
        ctx.record_detail("model", &self.model);
        ctx.record_detail("dimension", dim.to_string());
        ctx.record_detail("rows_embedded", (rows + late).to_string());
        info!(
            table = self.table,
            model = self.model,
            rows = rows + late,
            "re-embedded"
        );
        Ok(())
    }

    async fn verify(&self, ctx: &MigrationContext) -> Result<()> {
        ctx.check_row_count().await?;
        let expected = self.expected_schema(ctx.schema_before())?;
        ctx.check_schema(&expected).await?;
        let name = ctx.table_name();
        let missing = self.rows_without_vector(ctx).await?;
        if missing > 0 {
            return Err(Error::verification(
                name,
                format!(
                    "{missing} rows with text have no vector in `{}`",
                    self.target
                ),
            ));
        }
        if self.sample > 0 {
            self.check_sample(ctx).await?;
        }
        ctx.check_indexes().await
    }
}

impl ReEmbed {
    /// One metadata-only commit: the staging column takes the target's
    /// name and position, the old column goes, and the embedding definition
    /// (if any) names the new model. It conflicts with appends committed
    /// concurrently (`preserves_nullability: false`): an application
    /// instance still writing old-model rows cannot have them rebased past
    /// the swap (they would read as NULL vectors); it gets an error instead.
    /// Rows appended before the swap that the last pass missed are filled
    /// right after it. Returns `false` when the commit lost a race.
    async fn swap(&self, backfill: &Backfill<'_>, field_id: i32) -> Result<bool> {
        let dataset = backfill.latest().await?;
        let old = dataset.schema().clone();
        let mut staged = old
            .field_by_id(field_id)
            .cloned()
            .ok_or_else(|| Error::custom("the staging column disappeared"))?;
        if staged.name == self.target {
            // Already swapped (by an earlier attempt): swapping again would
            // drop the column.
            return Ok(true);
        }
        staged.name = self.target.clone();
        let target_field = self.target_field()?;
        staged.metadata.extend(
            target_field
                .metadata()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let mut fields = Vec::with_capacity(old.fields.len());
        let replaces = old.fields.iter().any(|f| f.name == self.target);
        for field in &old.fields {
            if field.id == field_id {
                if !replaces {
                    fields.push(staged.clone());
                }
            } else if field.name == self.target {
                fields.push(staged.clone());
            } else {
                fields.push(field.clone());
            }
        }
        let mut schema = old.clone();
        schema.fields = fields;
        schema.metadata = self.definitions(&old, &schema);
        schema
            .validate()
            .map_err(lance_err("build the swapped schema"))?;
        backfill.fence.check()?;
        let transaction = Transaction::new(
            dataset.version().version,
            Operation::Project {
                schema,
                preserves_nullability: false,
            },
            None,
        );
        match CommitBuilder::new(dataset.clone())
            .execute(transaction)
            .await
        {
            Ok(_) => {}
            Err(e) if is_lance_conflict(&e) => {
                info!(
                    table = self.table,
                    "a concurrent commit beat the swap; retrying"
                );
                return Ok(false);
            }
            Err(e) => return Err(lance_err("swap the re-embedded column in")(e)),
        }
        crate::lance::latest_version(backfill.table).await?;
        info!(
            table = self.table,
            column = self.target,
            "new vectors swapped in"
        );
        Ok(true)
    }

    /// The schema metadata after the swap: LanceDB's column definitions are
    /// positional, so they are rebuilt for the new field order, and the
    /// target's embedding definition (if any) names the new model.
    fn definitions(
        &self,
        old: &lance::datatypes::Schema,
        new: &lance::datatypes::Schema,
    ) -> std::collections::HashMap<String, String> {
        let mut metadata = old.metadata.clone();
        let Some(raw) = metadata.get(COLUMN_DEFINITIONS_KEY) else {
            return metadata;
        };
        let Ok(defs) = serde_json::from_str::<Vec<ColumnDefinition>>(raw) else {
            return metadata;
        };
        let by_name: BTreeMap<&str, &ColumnDefinition> = old
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .zip(defs.iter())
            .collect();
        let rebuilt: Vec<ColumnDefinition> = new
            .fields
            .iter()
            .map(|f| {
                let mut def = by_name.get(f.name.as_str()).map_or(
                    ColumnDefinition {
                        kind: ColumnKind::Physical,
                    },
                    |d| (*d).clone(),
                );
                if f.name == self.target
                    && let ColumnKind::Embedding(embedding) = &mut def.kind
                {
                    embedding.embedding_name = self.model.clone();
                }
                def
            })
            .collect();
        if let Ok(json) = serde_json::to_string(&rebuilt) {
            metadata.insert(COLUMN_DEFINITIONS_KEY.to_owned(), json);
        }
        metadata
    }

    /// Rows with text but no vector. Every vector this migration wrote was
    /// checked as it was computed (not NULL, finite, right dimension), so
    /// only rows it may not have written are counted: a fragment of the
    /// table as it was before the migration must have a data file for the
    /// column (a metadata check); any other fragment (appended or rewritten
    /// meanwhile) is scanned. This keeps verification from reading every
    /// vector again.
    async fn rows_without_vector(&self, ctx: &MigrationContext) -> Result<u64> {
        let name = ctx.table_name();
        crate::lance::latest_version(ctx.table()).await?;
        let dataset = crate::lance::local_dataset(ctx.table()).await?;
        let count = lance_err(format!("count rows without vectors in `{name}`"));
        let field_id = dataset.schema().field_id(&self.target).map_err(&count)?;
        let original: HashSet<usize> = dataset
            .checkout_version(ctx.version_before())
            .await
            .map_err(&count)?
            .get_fragments()
            .iter()
            .map(|f| f.id())
            .collect();
        let filter = format!(
            "{} IS NULL AND {} IS NOT NULL",
            quote(&self.target),
            quote(&self.source)
        );
        let mut missing = 0;
        for fragment in dataset.get_fragments() {
            let covered = fragment
                .metadata()
                .files
                .iter()
                .any(|f| f.fields.contains(&field_id));
            if covered && original.contains(&fragment.id()) {
                continue;
            }
            missing += fragment
                .count_rows(Some(filter.clone()))
                .await
                .map_err(&count)? as u64;
        }
        Ok(missing)
    }

    /// Re-embeds a sample of rows and compares.
    ///
    /// No nearest-neighbour search here: with a vector index the index check
    /// searches through it; without one a search would only scan the very
    /// vectors just compared, at the cost of reading the whole column.
    async fn check_sample(&self, ctx: &MigrationContext) -> Result<()> {
        let table = ctx.table();
        let name = ctx.table_name();
        let rows = table
            .count_rows(None)
            .await
            .map_err(Error::lance(format!("count the rows of `{name}`")))?
            as u64;
        if rows == 0 {
            return Ok(());
        }
        let n = (self.sample as u64).min(rows);
        let offsets: Vec<u64> = (0..n).map(|i| i * rows / n).collect();
        let batches: Vec<RecordBatch> = table
            .take_offsets(offsets)
            .select(Select::columns(&[
                self.source.as_str(),
                self.target.as_str(),
            ]))
            .execute()
            .await
            .map_err(Error::lance(format!("read sample rows of `{name}`")))?
            .try_collect()
            .await
            .map_err(Error::lance(format!("read sample rows of `{name}`")))?;
        let compute = self.compute()?;
        for batch in &batches {
            let texts = batch
                .column_by_name(&self.source)
                .ok_or_else(|| Error::custom("sample lacks the source column"))?
                .clone();
            let stored = batch
                .column_by_name(&self.target)
                .ok_or_else(|| Error::custom("sample lacks the target column"))?
                .as_fixed_size_list()
                .clone();
            let live: Vec<usize> = (0..texts.len()).filter(|&i| texts.is_valid(i)).collect();
            if live.is_empty() {
                continue;
            }
            let indices =
                arrow_array::UInt32Array::from_iter_values(live.iter().map(|&i| i as u32));
            let input = arrow_select::take::take(&texts, &indices, None)
                .map_err(Error::arrow("select sample texts"))?;
            let fresh = tokio::task::spawn_blocking({
                let compute = compute.clone();
                move || compute(input)
            })
            .await
            .map_err(|e| Error::wrap("the verification embedding task panicked", e))??;
            let fresh = fresh.as_fixed_size_list();
            for (k, &i) in live.iter().enumerate() {
                let want = floats(&fresh.value(k))?;
                let got = floats(&stored.value(i))?;
                let worst = want
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                if got.len() != want.len() || worst > self.tolerance {
                    return Err(Error::verification(
                        name,
                        format!(
                            "the stored vector of sampled row {} differs from a fresh embedding of its text by {worst} (tolerance {})",
                            arrow_cast::display::array_value_to_string(&texts, i)
                                .unwrap_or_default(),
                            self.tolerance
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn floats(values: &ArrayRef) -> Result<Vec<f32>> {
    let as_f32 =
        arrow_cast::cast(values, &DataType::Float32).map_err(Error::arrow("read a vector"))?;
    Ok(as_f32.as_primitive::<Float32Type>().values().to_vec())
}
