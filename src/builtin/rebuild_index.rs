//! `RebuildIndex`: (re)create an index with a given type and parameters.

use arrow_schema::{DataType, Schema};
use async_trait::async_trait;
use lancedb::index::Index;

use crate::error::{Error, Result};
use crate::lance::indexes::{self, IndexSpec};
use crate::migration::MigrationContext;
use crate::migration::{Definition, Migration, hex_sha256};
use crate::migration::{MigrationPlan, TableInfo, Writes};

/// Creates, or replaces, an index on one column — e.g. the vector index a
/// table needs once it has grown past the size where an index pays off, or
/// an index with new parameters.
///
/// The index type and parameters are LanceDB's own [`Index`] builders. The
/// index replaces any index of the same name (default `<column>_idx`, as
/// LanceDB names it).
///
/// Before anything is written, the column must exist and fit the index type
/// ([`Error::ColumnNotFound`], [`Error::ColumnType`]), and a vector index
/// needs at least [`MIN_TRAINING_ROWS`](Self::MIN_TRAINING_ROWS) rows to
/// train on ([`Error::Index`]).
///
/// `verify` checks that the index covers every row and, for a vector index,
/// that an indexed search finds a sample of rows by their own vector at
/// least [`min_recall`](Self::min_recall) of the time; the hit rate is
/// recorded in the report's details as `recall.<index>`.
///
/// # Examples
///
/// ```
/// # async fn example() -> lancedb_migrate::Result<()> {
/// use lancedb::DistanceType;
/// use lancedb::index::Index;
/// use lancedb::index::vector::IvfPqIndexBuilder;
/// use lancedb_migrate::{Migrator, RebuildIndex, testing};
///
/// let db = testing::memory_db().await?;
/// testing::documents_table(&db, "docs", 1000, 32).await?;
/// let ivf_pq = IvfPqIndexBuilder::default()
///     .distance_type(DistanceType::Cosine)
///     .num_partitions(4)
///     .num_sub_vectors(8);
/// let report = Migrator::new(db)
///     .add(RebuildIndex::new("0004_vector_index", "docs", "vector", Index::IvfPq(ivf_pq)))
///     .run()
///     .await?;
/// assert!(report.migrations()[0].details.contains_key("recall.vector_idx"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RebuildIndex {
    id: String,
    table: String,
    column: String,
    index: Index,
    name: Option<String>,
    min_recall: f64,
    sample: usize,
}

impl RebuildIndex {
    /// Rows a vector index needs at least to train (its quantizer's 256
    /// centroids).
    pub const MIN_TRAINING_ROWS: usize = 256;

    /// (Re)creates `index` on `column` of `table`.
    pub fn new(
        id: impl Into<String>,
        table: impl Into<String>,
        column: impl Into<String>,
        index: Index,
    ) -> Self {
        Self {
            id: id.into(),
            table: table.into(),
            column: column.into(),
            index,
            name: None,
            min_recall: MigrationContext::MIN_RECALL,
            sample: MigrationContext::RECALL_SAMPLE,
        }
    }

    /// The index's name. Default: `<column>_idx`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The least share of sampled rows an indexed search must find by their
    /// own vector. Default [`MigrationContext::MIN_RECALL`].
    pub fn min_recall(mut self, share: f64) -> Self {
        self.min_recall = share;
        self
    }

    /// Rows sampled for the recall check; 0 skips it. Default
    /// [`MigrationContext::RECALL_SAMPLE`].
    pub fn recall_sample(mut self, rows: usize) -> Self {
        self.sample = rows;
        self
    }

    fn index_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}_idx", self.column))
    }

    fn is_vector(&self) -> bool {
        matches!(
            self.index,
            Index::IvfFlat(_)
                | Index::IvfSq(_)
                | Index::IvfPq(_)
                | Index::IvfRq(_)
                | Index::IvfHnswPq(_)
                | Index::IvfHnswSq(_)
                | Index::IvfHnswFlat(_)
        )
    }

    fn column_type_error(&self, found: &DataType, expected: &str) -> Error {
        Error::ColumnType {
            table: self.table.clone(),
            column: self.column.clone(),
            expected: expected.to_owned(),
            found: found.clone(),
        }
    }
}

/// The index's kind in the crate's own names, and the parameters that
/// differ from the builder's defaults, as LanceDB serializes them (the form
/// it sends to LanceDB Cloud). Parameters left at their defaults are not
/// named, so a parameter that a later LanceDB adds with a default does not
/// change the definition.
pub(crate) fn index_definition(index: &Index) -> (&'static str, serde_json::Value) {
    use lancedb::index::scalar as s;
    use lancedb::index::vector as v;
    fn changed<T: serde::Serialize + Default>(builder: &T) -> serde_json::Value {
        let (Ok(actual), Ok(default)) = (
            serde_json::to_value(builder),
            serde_json::to_value(T::default()),
        ) else {
            return serde_json::Value::String("unserializable".to_owned());
        };
        match (actual, default) {
            (serde_json::Value::Object(actual), serde_json::Value::Object(default)) => actual
                .into_iter()
                .filter(|(k, v)| default.get(k) != Some(v))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            (actual, _) => actual,
        }
    }
    match index {
        Index::Auto => ("auto", serde_json::Value::Null),
        Index::BTree(b) => ("btree", changed::<s::BTreeIndexBuilder>(b)),
        Index::Bitmap(b) => ("bitmap", changed::<s::BitmapIndexBuilder>(b)),
        Index::LabelList(b) => ("label_list", changed::<s::LabelListIndexBuilder>(b)),
        Index::Fm(b) => ("fm", changed::<s::FmIndexBuilder>(b)),
        Index::ZoneMap(b) => ("zone_map", changed::<s::ZoneMapIndexBuilder>(b)),
        Index::NGram(b) => ("ngram", changed::<s::NGramIndexBuilder>(b)),
        Index::BloomFilter(b) => ("bloom_filter", changed::<s::BloomFilterIndexBuilder>(b)),
        Index::RTree(b) => ("rtree", changed::<s::RTreeIndexBuilder>(b)),
        Index::FTS(b) => ("fts", changed::<s::FtsIndexBuilder>(b)),
        Index::IvfFlat(b) => ("ivf_flat", changed::<v::IvfFlatIndexBuilder>(b)),
        Index::IvfPq(b) => ("ivf_pq", changed::<v::IvfPqIndexBuilder>(b)),
        Index::IvfSq(b) => ("ivf_sq", changed::<v::IvfSqIndexBuilder>(b)),
        Index::IvfRq(b) => ("ivf_rq", changed::<v::IvfRqIndexBuilder>(b)),
        Index::IvfHnswPq(b) => ("ivf_hnsw_pq", changed::<v::IvfHnswPqIndexBuilder>(b)),
        Index::IvfHnswSq(b) => ("ivf_hnsw_sq", changed::<v::IvfHnswSqIndexBuilder>(b)),
        Index::IvfHnswFlat(b) => ("ivf_hnsw_flat", changed::<v::IvfHnswFlatIndexBuilder>(b)),
    }
}

#[async_trait]
impl Migration for RebuildIndex {
    fn id(&self) -> &str {
        &self.id
    }

    /// `rebuild_index@1`: the table, column, index name, index kind and
    /// the parameters set away from their defaults, in the crate's stable
    /// encoding ([`Definition`]); the recall check's settings can change
    /// without drift.
    fn definition(&self) -> String {
        let (kind, params) = index_definition(&self.index);
        Definition::new("rebuild_index@1")
            .text("table", &self.table)
            .text("column", &self.column)
            .text("name", &self.index_name())
            .text("index", kind)
            .json("params", &params)
            .finish()
    }

    /// The checksum lancedb-migrate 0.1 recorded: that of the migration's
    /// `Debug`, which shows LanceDB's index builder. It matches while
    /// LanceDB's `Debug` of the builder is unchanged (golden tests pin
    /// it); ledgers are upgraded on the first run of this release.
    fn previous_checksums(&self) -> Vec<String> {
        // 0.1's derived `Debug`, written out so that new fields change nothing.
        let legacy = format!(
            "RebuildIndex {{ id: {:?}, table: {:?}, column: {:?}, index: {:?}, name: {:?}, min_recall: {:?}, sample: {:?} }}",
            self.id, self.table, self.column, self.index, self.name, self.min_recall, self.sample
        );
        vec![hex_sha256(legacy.as_bytes())]
    }

    /// `false`: searches keep working while the index is rebuilt (on the
    /// old index, or unindexed), so the application need not wait.
    fn blocks_serving(&self) -> bool {
        false
    }

    fn table(&self) -> &str {
        &self.table
    }

    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        if !(0.0..=1.0).contains(&self.min_recall) {
            return Err(Error::InvalidMigration {
                migration: self.id.clone(),
                reason: format!("min_recall {} is not between 0 and 1", self.min_recall),
            });
        }
        let field = before
            .field_with_name(&self.column)
            .map_err(|_| Error::ColumnNotFound {
                table: self.table.clone(),
                column: self.column.clone(),
            })?;
        let ty = field.data_type();
        let fits = match &self.index {
            _ if self.is_vector() => {
                matches!(ty, DataType::FixedSizeList(item, _) if item.data_type().is_floating())
            }
            Index::FTS(_) => matches!(ty, DataType::Utf8 | DataType::LargeUtf8),
            Index::LabelList(_) => matches!(ty, DataType::List(_) | DataType::LargeList(_)),
            Index::BTree(_) | Index::Bitmap(_) => {
                ty.is_primitive()
                    || matches!(ty, DataType::Utf8 | DataType::LargeUtf8 | DataType::Boolean)
            }
            _ => true,
        };
        if !fits {
            let expected = if self.is_vector() {
                "a vector column (fixed-size list of floats) for a vector index"
            } else {
                "a column type this index supports"
            };
            return Err(self.column_type_error(ty, expected));
        }
        Ok(before.clone())
    }

    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        let name = self.index_name();
        let mut summary = format!("build index `{name}` on `{}`", self.column);
        let requested = indexes::requested(&self.index);
        if !requested.is_empty() {
            let params: Vec<String> = requested.iter().map(|(k, v)| format!("{k}={v}")).collect();
            summary.push_str(&format!(" with {}", params.join(", ")));
        }
        Ok(MigrationPlan::new(summary)
            .writes(Writes::Index { rows: table.rows })
            .indexes([name]))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        let name = self.index_name();
        if self.is_vector() {
            let rows = ctx.rows_before() as usize;
            if rows < Self::MIN_TRAINING_ROWS {
                return Err(Error::Index {
                    table: self.table.clone(),
                    index: name,
                    reason: format!(
                        "the table has {rows} rows, too few to train a vector index (at least {}); add it once the table has grown",
                        Self::MIN_TRAINING_ROWS
                    ),
                    source: None,
                });
            }
        }
        ctx.check_lease()?;
        ctx.table()
            .create_index(&[self.column.as_str()], self.index.clone())
            .name(name.clone())
            .replace(true)
            .execute()
            .await
            .map_err(|e| Error::Index {
                table: self.table.clone(),
                index: name.clone(),
                reason: "LanceDB could not build it".to_owned(),
                source: Some(e.into()),
            })?;
        tracing::info!(table = self.table, index = name, "index built");
        Ok(())
    }

    async fn verify(&self, ctx: &MigrationContext) -> Result<()> {
        ctx.check_row_count().await?;
        ctx.check_schema(ctx.schema_before()).await?;
        let name = self.index_name();
        // The other indexes the table had are kept as they were.
        let others: Vec<IndexSpec> = ctx
            .indexes_before()
            .iter()
            .filter(|s| s.name != name)
            .cloned()
            .collect();
        let version_before = ctx.version_before();
        indexes::check(
            ctx.table(),
            &others,
            version_before,
            MigrationContext::RECALL_SAMPLE,
            MigrationContext::MIN_RECALL,
        )
        .await?;
        // Built with the type and the parameters asked for.
        indexes::check_requested(ctx.table(), &name, &self.index).await?;
        let ours = indexes::snapshot(ctx.table())
            .await?
            .into_iter()
            .filter(|s| s.name == name)
            .collect::<Vec<_>>();
        let sample = if self.is_vector() { self.sample } else { 0 };
        let checked =
            indexes::check(ctx.table(), &ours, version_before, sample, self.min_recall).await?;
        for (index, rate) in checked.recall {
            ctx.record_detail(format!("recall.{index}"), format!("{rate:.3}"));
        }
        Ok(())
    }
}
