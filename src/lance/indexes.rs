//! Keeping a table's indexes across a migration: what they were before,
//! recreating or refreshing them after, and checking that they cover every
//! row and that vector search through them still finds rows.

use std::collections::HashMap;
use std::fmt;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt64Type};
use futures::TryStreamExt;
use lance::index::DatasetIndexExt;
use lancedb::DistanceType;
use lancedb::Table;
use lancedb::index::scalar::{
    BTreeIndexBuilder, BitmapIndexBuilder, FtsIndexBuilder, LabelListIndexBuilder,
};
use lancedb::index::vector::{
    IvfFlatIndexBuilder, IvfHnswPqIndexBuilder, IvfHnswSqIndexBuilder, IvfPqIndexBuilder,
};
use lancedb::index::{Index, IndexType};
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::{OptimizeAction, OptimizeOptions};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::ledger::lease::Fence;

/// An index of a table, as recorded before a migration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IndexSpec {
    /// The index's name.
    pub name: String,
    /// The column it is on.
    pub column: String,
    /// The Lance field id of that column (follows renames).
    pub field_id: Option<i32>,
    /// Its type.
    pub index_type: IndexType,
    /// Its distance type, for vector indexes.
    pub distance_type: Option<DistanceType>,
    /// Lance's description of its parameters (JSON), when Lance has one.
    pub details: Option<String>,
}

impl IndexSpec {
    /// Whether this is a vector index.
    pub fn is_vector(&self) -> bool {
        matches!(
            self.index_type,
            IndexType::IvfFlat
                | IndexType::IvfSq
                | IndexType::IvfPq
                | IndexType::IvfRq
                | IndexType::IvfHnswPq
                | IndexType::IvfHnswSq
                | IndexType::IvfHnswFlat
        )
    }

    /// A builder that recreates this index on a column of `dims` dimensions:
    /// same type and distance type; PQ sub-vectors and bits are kept when
    /// they fit the new dimension, other parameters are LanceDB's defaults
    /// for the data. `None` for types this crate cannot recreate.
    pub(crate) fn builder(&self, dims: Option<usize>) -> Option<Index> {
        let distance = self.distance_type.unwrap_or(DistanceType::L2);
        let details: serde_json::Value = self
            .details
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        let find = |key: &str| find_u32(&details, key);
        let sub_vectors = find("num_sub_vectors")
            .filter(|n| *n > 0 && dims.is_some_and(|d| d % *n as usize == 0));
        let bits = find("num_bits").filter(|n| *n > 0);
        Some(match self.index_type {
            IndexType::IvfPq => {
                let mut b = IvfPqIndexBuilder::default().distance_type(distance);
                if let Some(n) = sub_vectors {
                    b = b.num_sub_vectors(n);
                }
                if let Some(n) = bits {
                    b = b.num_bits(n);
                }
                Index::IvfPq(b)
            }
            IndexType::IvfFlat => {
                Index::IvfFlat(IvfFlatIndexBuilder::default().distance_type(distance))
            }
            IndexType::IvfHnswSq => {
                Index::IvfHnswSq(IvfHnswSqIndexBuilder::default().distance_type(distance))
            }
            IndexType::IvfHnswPq => {
                let mut b = IvfHnswPqIndexBuilder::default().distance_type(distance);
                if let Some(n) = sub_vectors {
                    b = b.num_sub_vectors(n);
                }
                Index::IvfHnswPq(b)
            }
            IndexType::BTree => Index::BTree(BTreeIndexBuilder::default()),
            IndexType::Bitmap => Index::Bitmap(BitmapIndexBuilder::default()),
            IndexType::LabelList => Index::LabelList(LabelListIndexBuilder::default()),
            IndexType::FTS => Index::FTS(FtsIndexBuilder::default()),
            _ => return None,
        })
    }
}

impl fmt::Display for IndexSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} on `{}`", self.name, self.index_type, self.column)?;
        if let Some(d) = self.distance_type {
            write!(f, ", {d}")?;
        }
        f.write_str(")")
    }
}

/// The first unsigned number under `key` anywhere in `value`.
fn find_u32(value: &serde_json::Value, key: &str) -> Option<u32> {
    match value {
        serde_json::Value::Object(map) => map
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .or_else(|| map.values().find_map(|v| find_u32(v, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_u32(v, key)),
        _ => None,
    }
}

/// The indexes of `table` at its current version.
pub(crate) async fn snapshot(table: &Table) -> Result<Vec<IndexSpec>> {
    let name = table.name();
    let read = |what: &str| Error::lance(format!("read the {what} of `{name}`"));
    let configs = table.list_indices().await.map_err(read("indexes"))?;
    if configs.is_empty() {
        return Ok(Vec::new());
    }
    let mut lance_info: HashMap<String, (Option<i32>, Option<String>)> = HashMap::new();
    if let Some(dataset) = crate::lance::dataset(table).await? {
        let described = dataset
            .describe_indices(None)
            .await
            .map_err(|e| read("index descriptions")(e.into()))?;
        for d in described {
            let field = d.field_ids().first().and_then(|f| i32::try_from(*f).ok());
            lance_info.insert(d.name().to_owned(), (field, d.details().ok()));
        }
    }
    let mut specs = Vec::with_capacity(configs.len());
    for config in configs {
        let Some(column) = config.columns.first().cloned() else {
            continue;
        };
        let stats = table
            .index_stats(&config.name)
            .await
            .map_err(read("index statistics"))?;
        let (field_id, details) = lance_info.remove(&config.name).unwrap_or_default();
        specs.push(IndexSpec {
            name: config.name,
            column,
            field_id,
            index_type: config.index_type,
            distance_type: stats.and_then(|s| s.distance_type),
            details,
        });
    }
    Ok(specs)
}

/// Where `spec`'s column is now: the same field if it still exists (under
/// its current name, after a rename), else a column with the old name (the
/// column was replaced, e.g. re-embedded). `None` when it was dropped.
async fn current_column(table: &Table, spec: &IndexSpec) -> Result<Option<String>> {
    if let (Some(id), Some(dataset)) = (spec.field_id, crate::lance::dataset(table).await?)
        && let Some(field) = dataset.schema().field_by_id(id)
    {
        return Ok(Some(field.name.clone()));
    }
    let schema = table.schema().await.map_err(Error::lance(format!(
        "read the schema of `{}`",
        table.name()
    )))?;
    Ok(schema
        .field_with_name(&spec.column)
        .ok()
        .map(|f| f.name().clone()))
}

fn dims_of(schema: &arrow_schema::Schema, column: &str) -> Option<usize> {
    match schema.field_with_name(column).ok()?.data_type() {
        arrow_schema::DataType::FixedSizeList(_, n) => usize::try_from(*n).ok(),
        _ => None,
    }
}

/// The table's indexes at its latest version, by name: type and columns.
async fn current(table: &Table) -> Result<HashMap<String, (IndexType, Vec<String>)>> {
    crate::lance::latest_version(table).await?;
    Ok(table
        .list_indices()
        .await
        .map_err(Error::lance(format!(
            "list the indexes of `{}`",
            table.name()
        )))?
        .into_iter()
        .map(|c| (c.name, (c.index_type, c.columns)))
        .collect())
}

/// Rows of the table that index `index` does not cover yet.
async fn unindexed_rows(table: &Table, index: &str) -> Result<usize> {
    let stats = table
        .index_stats(index)
        .await
        .map_err(Error::lance(format!(
            "read the statistics of index `{index}`"
        )))?;
    Ok(stats.map_or(0, |s| s.num_unindexed_rows))
}

/// After a transform: every index in `before` exists again on the column it
/// now belongs to, covering every row. Returns the names of the indexes it
/// recreated.
pub(crate) async fn restore(
    table: &Table,
    before: &[IndexSpec],
    fence: &Fence,
) -> Result<Vec<String>> {
    if before.is_empty() {
        return Ok(Vec::new());
    }
    let name = table.name().to_owned();
    let now = current(table).await?;
    let schema = table
        .schema()
        .await
        .map_err(Error::lance(format!("read the schema of `{name}`")))?;
    let mut recreated = Vec::new();
    let mut stale = false;
    for spec in before {
        let Some(column) = current_column(table, spec).await? else {
            warn!(
                index = spec.name,
                column = spec.column,
                "the indexed column was dropped; not recreating its index"
            );
            continue;
        };
        if let Some((_, columns)) = now.get(&spec.name) {
            if columns.first() == Some(&column) {
                stale |= unindexed_rows(table, &spec.name).await? > 0;
            } else {
                warn!(
                    index = spec.name,
                    "an index of that name now covers another column; leaving it"
                );
            }
            continue;
        }
        let Some(builder) = spec.builder(dims_of(&schema, &column)) else {
            warn!(index = %spec, "this index type cannot be recreated by lancedb-migrate; recreate it by hand");
            continue;
        };
        info!(index = %spec, column, "recreating index");
        fence.check()?;
        table
            .create_index(&[column.as_str()], builder)
            .name(spec.name.clone())
            .execute()
            .await
            .map_err(|e| Error::Index {
                table: name.clone(),
                index: spec.name.clone(),
                reason: format!("could not recreate it on `{column}`: {e}"),
            })?;
        recreated.push(spec.name.clone());
    }
    if stale {
        info!(table = name, "indexing rows the migration rewrote");
        fence.check()?;
        table
            .optimize(OptimizeAction::Index(OptimizeOptions::default()))
            .await
            .map_err(Error::lance(format!("optimize the indexes of `{name}`")))?;
    }
    Ok(recreated)
}

/// Checks every index of `before` whose column still exists: it exists
/// again with the same type, covers every row, and — for vector indexes —
/// an indexed search for a sample of rows' own vectors finds them in the
/// top 10 for at least `min_recall` of them. Returns each vector index's
/// hit rate.
pub(crate) async fn check(
    table: &Table,
    before: &[IndexSpec],
    sample: usize,
    min_recall: f64,
) -> Result<Vec<(String, f64)>> {
    if before.is_empty() {
        return Ok(Vec::new());
    }
    let name = table.name().to_owned();
    let now = current(table).await?;
    let failed = |index: &str, reason: String| Error::Index {
        table: name.clone(),
        index: index.to_owned(),
        reason,
    };
    let mut rates = Vec::new();
    for spec in before {
        let Some(column) = current_column(table, spec).await? else {
            continue;
        };
        let Some((index_type, columns)) = now.get(&spec.name) else {
            return Err(failed(
                &spec.name,
                format!("it is missing after the migration (was {spec})"),
            ));
        };
        if index_type != &spec.index_type || columns.first() != Some(&column) {
            return Err(failed(
                &spec.name,
                format!(
                    "it is {index_type} on {columns:?}, expected {} on `{column}`",
                    spec.index_type
                ),
            ));
        }
        let unindexed = unindexed_rows(table, &spec.name).await?;
        if unindexed > 0 {
            return Err(failed(
                &spec.name,
                format!("{unindexed} rows are not indexed"),
            ));
        }
        if spec.is_vector() && sample > 0 {
            let rate = recall(table, &column, sample).await?;
            info!(
                index = spec.name,
                recall = rate,
                "indexed search finds sampled rows"
            );
            if rate < min_recall {
                return Err(failed(
                    &spec.name,
                    format!(
                        "an indexed search found only {:.0}% of sampled rows by their own vector (at least {:.0}% required)",
                        rate * 100.0,
                        min_recall * 100.0
                    ),
                ));
            }
            rates.push((spec.name.clone(), rate));
        }
    }
    Ok(rates)
}

/// Candidates re-ranked by exact distance per result in the recall check:
/// quantized indexes (PQ) rank a row's own vector only approximately, and
/// an application that needs exact top results refines the same way.
const REFINE_FACTOR: u32 = 10;

/// The share of `sample` rows (spread over the table) that an indexed
/// vector search (refined by [`REFINE_FACTOR`]) for the row's own vector
/// returns in its top 10 (or at distance zero, for duplicate vectors).
pub(crate) async fn recall(table: &Table, column: &str, sample: usize) -> Result<f64> {
    let name = table.name();
    let read = || Error::lance(format!("sample rows of `{name}`"));
    let rows = table.count_rows(None).await.map_err(read())? as u64;
    if rows == 0 {
        return Ok(1.0);
    }
    let n = (sample as u64).min(rows);
    let offsets: Vec<u64> = (0..n).map(|i| i * rows / n).collect();
    let batches: Vec<RecordBatch> = table
        .take_offsets(offsets)
        .select(Select::columns(&[column]))
        .with_row_id()
        .execute()
        .await
        .map_err(read())?
        .try_collect()
        .await
        .map_err(read())?;
    let (mut tried, mut hits) = (0u64, 0u64);
    for batch in &batches {
        let vectors = batch.column(0).as_fixed_size_list();
        let Some(ids) = batch.column_by_name("_rowid") else {
            continue;
        };
        let ids = ids.as_primitive::<UInt64Type>();
        for i in 0..batch.num_rows() {
            if vectors.is_null(i) {
                continue;
            }
            let vector = arrow_cast::cast(&vectors.value(i), &arrow_schema::DataType::Float32)
                .map_err(Error::arrow("read a vector"))?;
            let vector = vector.as_primitive::<Float32Type>().values().to_vec();
            let search = || Error::lance(format!("search `{name}`"));
            let results: Vec<RecordBatch> = table
                .vector_search(vector)
                .map_err(search())?
                .column(column)
                .limit(10)
                .refine_factor(REFINE_FACTOR)
                .with_row_id()
                .execute()
                .await
                .map_err(search())?
                .try_collect()
                .await
                .map_err(search())?;
            tried += 1;
            let found = search_found(&results, ids.value(i));
            hits += u64::from(found);
        }
    }
    Ok(if tried == 0 {
        1.0
    } else {
        hits as f64 / tried as f64
    })
}

/// Whether the results of a search for a row's own vector found it: its
/// row id is among them, or every result is at distance zero (duplicates of
/// the vector filled the results).
pub(crate) fn search_found(results: &[RecordBatch], row_id: u64) -> bool {
    let mut all_zero = true;
    for batch in results {
        if let Some(ids) = batch.column_by_name("_rowid")
            && ids.as_primitive::<UInt64Type>().values().contains(&row_id)
        {
            return true;
        }
        if let Some(d) = batch.column_by_name("_distance") {
            all_zero &= d
                .as_primitive::<Float32Type>()
                .values()
                .iter()
                .all(|v| *v <= 1e-6);
        }
    }
    all_zero && results.iter().any(|b| b.num_rows() > 0)
}

use arrow_array::Array as _;
