//! [`ReEmbed`]: its settings, its plan, and its hooks.

use crate::builtin::legacy;
use crate::error::{Error, Result};
use crate::lance::backfill::Backfill;
use crate::migration::MigrationContext;
use crate::migration::{Definition, Migration, hex_sha256};
use crate::migration::{MigrationPlan, TableInfo, Writes};
use arrow_schema::Schema;
use async_trait::async_trait;
use lancedb::embeddings::EmbeddingFunction;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

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
///   model in the column's metadata ([`MODEL_KEY`](Self::MODEL_KEY), [`DIMENSION_KEY`](Self::DIMENSION_KEY)) and
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
/// embedding of their text — cosine similarity at least
/// [`min_similarity`](Self::min_similarity), 0.999 by default, since
/// embedding services and GPU kernels are not bit-deterministic (the
/// same text differs by up to ~1e-4 per element between calls); the
/// lowest similarity seen is recorded as the detail `lowest_similarity` —
/// and, as for every migration, that the table's indexes (a vector index
/// on the target is rebuilt) are back and find sampled rows.
///
/// Rows whose text is NULL get a NULL vector.
///
/// # Examples
///
/// ```
/// # async fn example() -> lancedb_migrate::Result<()> {
/// use std::sync::Arc;
/// use lancedb_migrate::testing::{self, TestEmbedding};
/// use lancedb_migrate::{AddColumns, Migrator, NewColumn, ReEmbed, DefaultValue};
/// use arrow_schema::{DataType, TimeUnit};
///
/// let db = testing::memory_db().await?;
/// testing::documents_table(&db, "docs", 100, 384).await?;
///
/// let model = Arc::new(TestEmbedding::new("test-model-768", 768));
/// Migrator::new(db.clone())
///     .add(ReEmbed::new("0002_reembed_768", "docs", model))
///     .add(
///         AddColumns::new("0003_embedding_model", "docs")
///             .column(NewColumn::new("embedding_model", DataType::Utf8)
///                 .default_value("test-model-768"))
///             .column(NewColumn::new("migrated_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))
///                 .default_value(DefaultValue::MigrationTime)),
///     )
///     .run()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use]
#[derive(Clone)]
pub struct ReEmbed {
    pub(super) id: String,
    pub(super) table: String,
    pub(super) source: String,
    /// An SQL expression over the row to embed instead of the source
    /// column.
    pub(super) source_expr: Option<String>,
    pub(super) target: String,
    pub(super) embedder: Arc<dyn EmbeddingFunction>,
    pub(super) model: String,
    pub(super) batch_size: u32,
    pub(super) concurrency: usize,
    pub(super) checkpoint_every: Duration,
    pub(super) sample: usize,
    pub(super) min_similarity: f32,
    pub(super) tolerance: Option<f32>,
    /// What other clients (Python, TypeScript) should embed queries with:
    /// `{"name": …, "model": {…}}` of their embedding registry.
    pub(super) client_config: Option<String>,
}

impl fmt::Debug for ReEmbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReEmbed")
            .field("id", &self.id)
            .field("table", &self.table)
            .field("source", &self.source)
            .field("source_expression", &self.source_expr)
            .field("target", &self.target)
            .field("model", &self.model)
            .field("batch_size", &self.batch_size)
            .field("concurrency", &self.concurrency)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("sample", &self.sample)
            .field("min_similarity", &self.min_similarity)
            .field("tolerance", &self.tolerance)
            .field("client_config", &self.client_config)
            .finish_non_exhaustive()
    }
}

impl ReEmbed {
    /// Field metadata key on the vector column: the name of the model that
    /// produced it (LanceDB's `lancedb:tag:<name>` convention).
    pub const MODEL_KEY: &str = "lancedb:tag:model";
    /// Field metadata key on the vector column: the vector dimension.
    pub const DIMENSION_KEY: &str = "lancedb:tag:dimension";
    /// Field metadata key on the vector column: the id of the migration
    /// that produced it.
    pub const MIGRATION_KEY: &str = "lancedb_migrate.migration";

    /// Default rows per embedding call.
    pub const DEFAULT_BATCH_SIZE: u32 = 256;
    /// Passes over the table before the swap: the first, then catch-up
    /// passes over what the application appended meanwhile.
    pub(super) const PASSES_BEFORE_SWAP: usize = 3;
    /// Default time between checkpoints.
    pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(30);
    /// Default number of rows `verify` re-embeds and compares.
    pub const DEFAULT_SAMPLE: usize = 16;
    /// Default largest difference allowed, per vector element, between a
    /// stored vector and a fresh embedding of its text, when
    /// [`tolerance`](Self::tolerance) asks for that comparison.
    pub const DEFAULT_TOLERANCE: f32 = 1e-4;
    /// Default least cosine similarity between a stored vector and a fresh
    /// embedding of its text in `verify`: a real model served by GPUs or an
    /// API is not bit-deterministic, and its vectors for one text differ by
    /// up to ~1e-4 per element between calls (cosine ≥ 0.9999 for unit
    /// vectors of a few hundred dimensions), while a vector of another text,
    /// or of another model, is far below.
    pub const DEFAULT_MIN_SIMILARITY: f32 = 0.999;

    /// The text column re-embedded from, unless
    /// [`source_column`](Self::source_column) names another.
    pub const DEFAULT_SOURCE_COLUMN: &'static str = "text";
    /// The vector column written, unless
    /// [`target_column`](Self::target_column) names another.
    pub const DEFAULT_TARGET_COLUMN: &'static str = "vector";

    /// Re-embeds the vector column of `table` from its text column with
    /// `embedder`: by default the column `vector` from the column `text`
    /// (name them with [`source_column`](Self::source_column) and
    /// [`target_column`](Self::target_column)). The model is recorded under
    /// the embedder's [`name`](EmbeddingFunction::name); change it with
    /// [`model`](Self::model).
    pub fn new(
        id: impl Into<String>,
        table: impl Into<String>,
        embedder: Arc<dyn EmbeddingFunction>,
    ) -> Self {
        let model = embedder.name().to_owned();
        Self {
            id: id.into(),
            table: table.into(),
            source: Self::DEFAULT_SOURCE_COLUMN.to_owned(),
            target: Self::DEFAULT_TARGET_COLUMN.to_owned(),
            embedder,
            model,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
            checkpoint_every: Self::DEFAULT_CHECKPOINT_EVERY,
            sample: Self::DEFAULT_SAMPLE,
            min_similarity: Self::DEFAULT_MIN_SIMILARITY,
            tolerance: None,
            client_config: None,
            source_expr: None,
        }
    }

    /// The text column the vectors are computed from (Utf8). Default
    /// [`DEFAULT_SOURCE_COLUMN`](Self::DEFAULT_SOURCE_COLUMN).
    pub fn source_column(mut self, column: impl Into<String>) -> Self {
        self.source = column.into();
        self.source_expr = None;
        self
    }

    /// Embeds an SQL expression over the row instead of one column: several
    /// text columns at once, e.g. `title || ' ' || body` (NULL when either
    /// is NULL) or `concat_ws(' ', title, body)` (skips NULLs). It is
    /// evaluated by Lance's SQL engine (DataFusion's functions), fragment
    /// by fragment like a column; a row where it is NULL gets no vector.
    ///
    /// The expression must give text and read at least one column; it is
    /// tried on the table's schema before anything is written
    /// ([`Error::InvalidMigration`](crate::Error::InvalidMigration)
    /// otherwise). Python's and TypeScript's `embedding_functions` entry
    /// names one source column, so it cannot be combined with
    /// [`client_embedding_config`](Self::client_embedding_config).
    pub fn source_expression(mut self, sql: impl Into<String>) -> Self {
        self.source_expr = Some(sql.into());
        self
    }

    /// How the LanceDB clients that keep their embedding configuration in
    /// the table (Python and TypeScript: the `embedding_functions` schema
    /// metadata) embed text queries against the new vectors: the JSON of
    /// their registry entry, `{"name": <registered name>, "model": {<its
    /// arguments>}}`, e.g.
    /// `{"name": "sentence-transformers", "model": {"name": "all-mpnet-base-v2"}}`.
    ///
    /// The swap writes it as the target column's entry (with this
    /// migration's source and target columns), so those clients embed
    /// their queries with the new model. Without it, an entry for the
    /// target column is **removed** (with a warning and a note in the
    /// ledger details, `embedding_functions`): a client then refuses text
    /// queries on the column ("no embedding function") instead of embedding
    /// them with the old model. A rollback restores the old entry.
    ///
    /// The JSON is checked (an object with a string `name` and an object
    /// `model`) before anything is written: [`Error::InvalidMigration`](crate::Error::InvalidMigration).
    pub fn client_embedding_config(mut self, json: impl Into<String>) -> Self {
        self.client_config = Some(json.into());
        self
    }

    /// The vector column written: an existing one (a fixed-size list) is
    /// replaced, in place, by the new vectors; a missing one is added.
    /// Default [`DEFAULT_TARGET_COLUMN`](Self::DEFAULT_TARGET_COLUMN).
    pub fn target_column(mut self, column: impl Into<String>) -> Self {
        self.target = column.into();
        self
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

    /// The least cosine similarity `verify` accepts between a sampled
    /// row's stored vector and a fresh embedding of its text, in [-1, 1].
    /// Default [`DEFAULT_MIN_SIMILARITY`](Self::DEFAULT_MIN_SIMILARITY).
    /// Lower it for a model whose outputs vary more between calls (say
    /// quantised inference on mixed hardware); `verify` records the lowest
    /// similarity it saw as the detail `lowest_similarity`, which shows how
    /// much room there is.
    pub fn min_similarity(mut self, similarity: f32) -> Self {
        self.min_similarity = similarity;
        self
    }

    /// Also compares element by element: the largest difference allowed
    /// per element between a stored vector and a fresh embedding of its
    /// text (e.g. [`DEFAULT_TOLERANCE`](Self::DEFAULT_TOLERANCE) for a
    /// deterministic in-process model). Off by default: the cosine
    /// comparison ([`min_similarity`](Self::min_similarity)) is the one
    /// that fits models served by GPUs or APIs.
    pub fn tolerance(mut self, tolerance: f32) -> Self {
        self.tolerance = Some(tolerance);
        self
    }

    /// The name of the staging column that holds the new vectors until the
    /// swap.
    pub fn staging_column(&self) -> String {
        format!("__lancedb_migrate_{}", self.target)
    }
}

#[async_trait]
impl Migration for ReEmbed {
    fn id(&self) -> &str {
        &self.id
    }

    fn table(&self) -> &str {
        &self.table
    }

    /// `reembed@1`: the table, columns, model name, output type and client
    /// configuration, in the crate's stable encoding ([`Definition`]);
    /// tuning (batch size, concurrency, checkpoints, verification) can
    /// change without drift.
    fn definition(&self) -> String {
        let dest = self.embedder.dest_type().ok();
        let mut definition = Definition::new("reembed@1")
            .text("table", &self.table)
            .text("source", &self.source)
            .text("target", &self.target)
            .text("model", &self.model);
        // Only when set: the definitions (and checksums) of re-embeds from
        // a column stay as they were.
        if let Some(sql) = &self.source_expr {
            definition = definition.text("source_expression", sql);
        }
        definition = match &dest {
            Some(dest) => definition.data_type("dest", dest),
            None => definition.raw("dest", "null"),
        };
        match self.client_config.as_deref().map(serde_json::from_str) {
            Some(Ok(json)) => definition.json("client_config", &json),
            // Refused before anything runs; kept apart from valid JSON.
            Some(Err(_)) => definition.opt_text("client_config", self.client_config.as_deref()),
            None => definition.raw("client_config", "null"),
        }
        .finish()
    }

    /// The checksum lancedb-migrate 0.1 recorded for the same re-embed.
    fn previous_checksums(&self) -> Vec<String> {
        let dest = self.embedder.dest_type().ok();
        let legacy = legacy::reembed(
            &self.table,
            &self.source,
            &self.target,
            &self.model,
            dest.as_deref(),
            self.client_config.as_deref(),
        );
        vec![hex_sha256(legacy.as_bytes())]
    }

    fn resumable(&self) -> bool {
        true
    }

    /// `false`: the application serves with the old vectors while the
    /// re-embed runs (it is online), and switches model when it lands.
    fn blocks_serving(&self) -> bool {
        false
    }

    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        self.schema_after(before)
    }

    /// Writes the target column for every row (into a staging column, then
    /// one metadata-only swap); rebuilds the indexes on the target.
    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        let (_, dim) = self.dest()?;
        let from = match &self.source_expr {
            Some(sql) => format!("`{sql}`"),
            None => format!("`{}`", self.source),
        };
        let summary = format!(
            "re-embed {from} into `{}` with model `{}` ({dim} dimensions)",
            self.target, self.model
        );
        Ok(MigrationPlan::new(summary)
            .writes(Writes::Columns { rows: table.rows })
            .columns([self.target.as_str()])
            .rebuilds(table.rebuilt_on(&self.target, Some(dim))))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        let current = ctx.current_schema().await?;
        let swapped = current
            .field_with_name(&self.target)
            .is_ok_and(|f| self.is_ours(f));
        let staging = self.staging_column();
        if !swapped && current.field_with_name(&staging).is_err() {
            self.add_staging_column(ctx).await?;
        }
        if !swapped {
            self.note_client_config(ctx, current.metadata());
        }
        let backfill = self
            .backfill(ctx, if swapped { &self.target } else { &staging })
            .await?;
        let mut rows = 0;
        if !swapped {
            // The first pass and at most two catch-up passes: on a busy
            // table every pass finds newly appended rows, so the swap does
            // not wait for a pass that finds none. Rows the last pass missed
            // are filled right after the swap.
            rows += backfill.run_passes(Self::PASSES_BEFORE_SWAP).await?;
            let metadata = self.target_field()?.metadata().clone();
            let rewrite = |before: &[&str], after: &[&str], m: &HashMap<String, String>| {
                self.metadata_after(before, after, m)
            };
            backfill
                .swap_into(&self.target, &metadata, &rewrite)
                .await?;
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
        let missing = self.rows_without_vector(ctx).await?;
        if missing > 0 {
            return Err(Error::verification(
                ctx.table_name(),
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
    /// Says in the ledger details (and the log) what the swap does to the
    /// other clients' embedding configuration of the target column.
    pub(super) fn note_client_config(
        &self,
        ctx: &MigrationContext,
        metadata: &HashMap<String, String>,
    ) {
        let before = self.client_model_before(metadata);
        let note = match (&self.client_config, before) {
            (Some(config), _) => format!("set for `{}` to {config}", self.target),
            (None, Some(old)) => {
                warn!(
                    table = self.table,
                    column = self.target,
                    old,
                    "the table's client embedding configuration for the re-embedded column is removed: \
                     give ReEmbed::client_embedding_config so Python and TypeScript clients embed \
                     text queries with the new model"
                );
                format!(
                    "removed for `{}` (it named {old}); other clients refuse text queries on it until one is set",
                    self.target
                )
            }
            (None, None) => return,
        };
        ctx.record_detail("embedding_functions", note);
    }

    /// Adds the staging column, all-null (metadata only, in a commit that
    /// does not conflict with the application's appends).
    pub(super) async fn add_staging_column(&self, ctx: &MigrationContext) -> Result<()> {
        let staging = self.staging_column();
        let mut field = self.target_field()?;
        field.set_name(&staging);
        ctx.add_null_columns(&Schema::new(vec![field])).await?;
        info!(table = self.table, staging, "staging column added");
        Ok(())
    }

    /// The backfill of `column` (the staging column, or the target once
    /// swapped in) from the source, with this migration's settings.
    pub(super) async fn backfill<'c>(
        &self,
        ctx: &'c MigrationContext,
        column: &str,
    ) -> Result<Backfill<'c>> {
        let key = format!("lancedb_migrate.checkpoint.{}", self.id);
        let fill = Backfill::new(
            ctx.table(),
            column,
            ctx.version_before(),
            self.compute(Some(ctx.progress().embedding_usage()))?,
            key,
            ctx.progress(),
            ctx.fence().clone(),
        )
        .await?;
        Ok(Backfill {
            source: Some(self.source_spec(ctx.schema_before())?),
            batch_size: self.batch_size,
            concurrency: self.concurrency,
            checkpoint_every: self.checkpoint_every,
            stop: ctx.stop_signal().clone(),
            ..fill
        })
    }
}
