//! Keeping a table's indexes across a migration: what they were before,
//! recreating or refreshing them after, and checking that they cover every
//! row and that vector search through them still finds rows.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt64Type};
use futures::TryStreamExt;
use lance::index::DatasetIndexExt;
use lancedb::DistanceType;
use lancedb::Table;
use lancedb::index::{Index, IndexType};
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::{OptimizeAction, OptimizeOptions};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::lance::fence::Fence;

mod params;

pub(crate) use params::requested;

/// An index of a table, as recorded before a migration: its name, column,
/// type and the parameters it was built with.
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
    /// The parameters it was built with, under the names of LanceDB's
    /// builder methods (`num_partitions`, `num_sub_vectors`, `m`,
    /// `ef_construction`, `sample_rate`, `language`, `stem`,
    /// `number_of_items`, …); values as text. Those Lance keeps only in
    /// the index files (a vector index's partition count, a bloom filter's
    /// sizes, FTS custom stop words) are read when the index is rebuilt or
    /// planned, and are absent from the cheaper snapshot a migration takes
    /// when it starts.
    pub parameters: BTreeMap<String, String>,
    /// The ids of the index's segments (which change when it is rebuilt).
    pub(crate) segments: Vec<String>,
}

// `DistanceType` has no `Eq` only because nobody derived it: no floats.
impl Eq for IndexSpec {}

impl IndexSpec {
    /// The indexes of `table` at its latest version, each with every
    /// parameter Lance recorded (reading some opens the index files; see
    /// [`parameters`](Self::parameters)).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn example() -> lancedb_migrate::Result<()> {
    /// use lancedb::index::Index;
    /// use lancedb::index::vector::IvfFlatIndexBuilder;
    /// use lancedb_migrate::{IndexSpec, testing};
    ///
    /// let db = testing::memory_db().await?;
    /// let table = testing::documents_table(&db, "docs", 300, 16).await?;
    /// let ivf = IvfFlatIndexBuilder::default().num_partitions(3).max_iterations(20);
    /// table.create_index(&["vector"], Index::IvfFlat(ivf)).execute().await?;
    /// let specs = IndexSpec::list(&table).await?;
    /// assert_eq!(specs[0].parameters["num_partitions"], "3");
    /// assert_eq!(specs[0].parameters["max_iterations"], "20");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Lance`](crate::Error::Lance) when the table's indexes
    /// cannot be read.
    pub async fn list(table: &Table) -> Result<Vec<Self>> {
        crate::lance::latest_version(table).await?;
        snapshot_described(table).await
    }

    /// Whether this is a vector index.
    pub fn is_vector(&self) -> bool {
        params::is_vector(&self.index_type)
    }

    /// How this index is built again on a column of `dims` dimensions.
    pub(crate) fn recreate(
        &self,
        dims: Option<usize>,
    ) -> std::result::Result<params::Recreate, String> {
        params::recreate(&self.index_type, &self.parameters, dims)
    }

    /// This index as it will be built again on a column of `dims`
    /// dimensions: its parameters as the rebuild sets them. Itself when it
    /// cannot be rebuilt.
    pub(crate) fn rebuilt(&self, dims: Option<usize>) -> Self {
        let mut spec = self.clone();
        if let Ok(rebuild) = self.recreate(dims) {
            spec.parameters.extend(rebuild.expected);
        }
        spec
    }
}

impl fmt::Display for IndexSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} on `{}`", self.name, self.index_type, self.column)?;
        if let Some(d) = self.distance_type {
            write!(f, ", {d}")?;
        }
        let mut first = true;
        for (key, value) in &self.parameters {
            if key == "distance_type" {
                continue;
            }
            f.write_str(if first { "; " } else { ", " })?;
            first = false;
            write!(f, "{key}={value}")?;
        }
        f.write_str(")")
    }
}

/// The indexes of `table` at its current version, with the parameters
/// Lance keeps in the manifest (no index file is opened).
pub(crate) async fn snapshot(table: &Table) -> Result<Vec<IndexSpec>> {
    let name = table.name();
    let read = |what: &str| Error::lance(format!("read the {what} of `{name}`"));
    let configs = table.list_indices().await.map_err(read("indexes"))?;
    if configs.is_empty() {
        return Ok(Vec::new());
    }
    struct Described {
        field_id: Option<i32>,
        details: Option<String>,
        segments: Vec<String>,
    }
    let mut lance_info: HashMap<String, Described> = HashMap::new();
    if let Some(dataset) = crate::lance::dataset(table).await? {
        let described = dataset
            .describe_indices(None)
            .await
            .map_err(|e| read("index descriptions")(e.into()))?;
        for d in described {
            let field_id = d.field_ids().first().and_then(|f| i32::try_from(*f).ok());
            let mut segments: Vec<String> =
                d.metadata().iter().map(|m| m.uuid.to_string()).collect();
            segments.sort();
            lance_info.insert(
                d.name().to_owned(),
                Described {
                    field_id,
                    details: d.details().ok(),
                    segments,
                },
            );
        }
    }
    let mut specs = Vec::with_capacity(configs.len());
    for config in configs {
        let Some(column) = config.columns.first().cloned() else {
            continue;
        };
        let info = lance_info.remove(&config.name);
        let details = info.as_ref().and_then(|i| i.details.clone());
        let mut parameters = details
            .as_deref()
            .map(|d| params::from_details(&config.index_type, d))
            .unwrap_or_default();
        // Lance records a vector index's distance type in its details;
        // indexes from before it did are asked (which opens the index).
        let mut distance_type = parameters
            .get("distance_type")
            .and_then(|d| serde_json::from_value(serde_json::Value::String(d.clone())).ok());
        if distance_type.is_none() && params::is_vector(&config.index_type) {
            let stats = table
                .index_stats(&config.name)
                .await
                .map_err(read("index statistics"))?;
            distance_type = stats.and_then(|s| s.distance_type);
            if let Some(d) = distance_type {
                parameters.insert("distance_type".to_owned(), d.to_string());
            }
        }
        specs.push(IndexSpec {
            name: config.name,
            column,
            field_id: info.as_ref().and_then(|i| i.field_id),
            index_type: config.index_type,
            distance_type,
            details,
            parameters,
            segments: info.map(|i| i.segments).unwrap_or_default(),
        });
    }
    Ok(specs)
}

/// Adds to `specs` the parameters Lance keeps only in the index files
/// (read through Lance's index statistics, which opens each index), as
/// of `table`'s `version` (`None`: the handle's version).
pub(crate) async fn describe(
    table: &Table,
    version: Option<u64>,
    specs: &mut [IndexSpec],
) -> Result<()> {
    if !specs
        .iter()
        .any(|s| params::needs_statistics(&s.index_type))
    {
        return Ok(());
    }
    let Some(mut dataset) = crate::lance::dataset(table).await? else {
        return Ok(());
    };
    let name = table.name();
    if let Some(version) = version
        && dataset.version().version != version
    {
        dataset = std::sync::Arc::new(dataset.checkout_version(version).await.map_err(|e| {
            Error::lance(format!("read version {version} of `{name}`"))(lancedb::Error::from(e))
        })?);
    }
    for spec in specs
        .iter_mut()
        .filter(|s| params::needs_statistics(&s.index_type))
    {
        let statistics = dataset.index_statistics(&spec.name).await.map_err(|e| {
            Error::lance(format!(
                "read the parameters of index `{}` of `{name}`",
                spec.name
            ))(lancedb::Error::from(e))
        })?;
        let statistics: serde_json::Value = serde_json::from_str(&statistics).unwrap_or_default();
        params::add_statistics(&spec.index_type, &statistics, &mut spec.parameters);
    }
    Ok(())
}

/// `spec` (an index of `table` at `version_before`) with every parameter
/// ([`describe`]). When the index files cannot be read (damaged, or from
/// a format this Lance reads no statistics of), the parameters from the
/// manifest alone, and why, in words: the others fall back to LanceDB's
/// defaults, said, not silently.
async fn described(
    table: &Table,
    version_before: u64,
    spec: &IndexSpec,
) -> (IndexSpec, Option<String>) {
    let mut full = vec![spec.clone()];
    match describe(table, Some(version_before), &mut full).await {
        Ok(()) => (full.remove(0), None),
        Err(e) => {
            let unread = format!(
                "the parameters Lance keeps in the index files could not be read ({}); those take LanceDB's defaults",
                crate::error::chain(&e)
            );
            (spec.clone(), Some(unread))
        }
    }
}

/// [`snapshot`] with every parameter, including those only the index
/// files hold ([`describe`]).
pub(crate) async fn snapshot_described(table: &Table) -> Result<Vec<IndexSpec>> {
    let mut specs = snapshot(table).await?;
    describe(table, None, &mut specs).await?;
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

pub(crate) fn dims_of(schema: &arrow_schema::Schema, column: &str) -> Option<usize> {
    match schema.field_with_name(column).ok()?.data_type() {
        arrow_schema::DataType::FixedSizeList(_, n) => usize::try_from(*n).ok(),
        _ => None,
    }
}

/// The table's indexes at its latest version, by name.
async fn current(table: &Table) -> Result<HashMap<String, IndexSpec>> {
    crate::lance::latest_version(table).await?;
    Ok(snapshot(table)
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
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

/// The indexes of `before` that a migration into `after` (the schema it
/// will leave) must build again: their column keeps its name with another
/// type, or the migration names them among the indexes it rebuilds
/// (`rebuilt`).
pub(crate) fn to_rebuild<'a>(
    before: &'a [IndexSpec],
    schema_before: &arrow_schema::Schema,
    after: &arrow_schema::Schema,
    rebuilt: &[String],
) -> Vec<&'a IndexSpec> {
    before
        .iter()
        .filter(|spec| {
            let replaced = match (
                schema_before.field_with_name(&spec.column),
                after.field_with_name(&spec.column),
            ) {
                (Ok(was), Ok(now)) => was.data_type() != now.data_type(),
                _ => false,
            };
            replaced || rebuilt.contains(&spec.name)
        })
        .collect()
}

/// Refuses, naming it, the first of `specs` (indexes of `table` at
/// `version_before` that a migration into `after` will build again) that
/// LanceDB cannot build:
/// a type without a LanceDB builder, or parameters this build of Lance
/// cannot read back (e.g. an R-tree index without LanceDB's `geo`
/// feature, which alone compiles Lance's R-tree).
pub(crate) async fn check_buildable(
    table: &Table,
    version_before: u64,
    specs: &[&IndexSpec],
    after: &arrow_schema::Schema,
) -> Result<()> {
    let refuse = |spec: &IndexSpec, reason: String| Error::IndexNotRecreatable {
        table: table.name().to_owned(),
        index: spec.name.clone(),
        index_type: spec.index_type.to_string(),
        reason,
    };
    for spec in specs {
        // Lance without `geo` can neither read nor build an R-tree index;
        // for other types the rebuild reads the index files (and says what
        // it could not read).
        if spec.index_type == IndexType::RTree
            && let Err(e) = describe(table, Some(version_before), &mut [(*spec).clone()]).await
        {
            return Err(refuse(
                spec,
                format!(
                    "this build of Lance cannot read it ({}): R-tree indexes need LanceDB's `geo` feature",
                    crate::error::chain(&e)
                ),
            ));
        }
        if let Err(reason) = spec.recreate(dims_of(after, &spec.column)) {
            return Err(refuse(spec, reason));
        }
    }
    Ok(())
}

/// What [`restore`] did to one index.
#[derive(Debug, Clone)]
pub(crate) struct Recreated {
    /// The index's name.
    pub(crate) name: String,
    /// Parameters that had to change, in words.
    pub(crate) changed: Vec<String>,
}

/// After a transform: every index in `before` (the table's indexes at
/// `version_before`) exists again on the column it now belongs to, with
/// the same type and parameters, covering every row. Returns the indexes
/// it recreated.
pub(crate) async fn restore(
    table: &Table,
    before: &[IndexSpec],
    version_before: u64,
    fence: &Fence,
) -> Result<Vec<Recreated>> {
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
        if let Some(existing) = now.get(&spec.name) {
            if existing.column == column {
                stale |= unindexed_rows(table, &spec.name).await? > 0;
            } else {
                warn!(
                    index = spec.name,
                    "an index of that name now covers another column; leaving it"
                );
            }
            continue;
        }
        let (full, unread) = described(table, version_before, spec).await;
        let mut rebuild = full.recreate(dims_of(&schema, &column)).map_err(|reason| {
            Error::IndexNotRecreatable {
                table: name.clone(),
                index: spec.name.clone(),
                index_type: spec.index_type.to_string(),
                reason,
            }
        })?;
        rebuild.changed.extend(unread);
        for change in &rebuild.changed {
            warn!(
                index = spec.name,
                change, "an index parameter could not carry over"
            );
        }
        info!(index = %full, column, "recreating index");
        fence.check()?;
        table
            .create_index(&[column.as_str()], rebuild.index)
            .name(spec.name.clone())
            .execute()
            .await
            .map_err(|e| Error::Index {
                table: name.clone(),
                index: spec.name.clone(),
                reason: format!("could not recreate it on `{column}`: {e}"),
            })?;
        recreated.push(Recreated {
            name: spec.name.clone(),
            changed: rebuild.changed,
        });
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

/// What [`check`] found: each vector index's recall, and per rebuilt
/// index the parameters that changed where LanceDB could not set them.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub(crate) recall: Vec<(String, f64)>,
    pub(crate) changed: Vec<(String, Vec<String>)>,
}

/// Checks every index of `before` (the table's indexes at
/// `version_before`) whose column still exists: it exists again with the
/// same type; if it was rebuilt, with the same parameters (where one could
/// not carry over, as [`IndexSpec::recreate`] chose instead; a different
/// partition count is said, not refused); it covers
/// every row; and, for vector indexes, an indexed search for a sample of
/// rows' own vectors finds them in the top 10 for at least `min_recall`
/// of them.
pub(crate) async fn check(
    table: &Table,
    before: &[IndexSpec],
    version_before: u64,
    sample: usize,
    min_recall: f64,
) -> Result<Checked> {
    let mut checked = Checked::default();
    if before.is_empty() {
        return Ok(checked);
    }
    let name = table.name().to_owned();
    let now = current(table).await?;
    let schema = table
        .schema()
        .await
        .map_err(Error::lance(format!("read the schema of `{name}`")))?;
    let failed = |index: &str, reason: String| Error::Index {
        table: name.clone(),
        index: index.to_owned(),
        reason,
    };
    for spec in before {
        let Some(column) = current_column(table, spec).await? else {
            continue;
        };
        let Some(after) = now.get(&spec.name) else {
            return Err(failed(
                &spec.name,
                format!("it is missing after the migration (was {spec})"),
            ));
        };
        if after.index_type != spec.index_type || after.column != column {
            return Err(failed(
                &spec.name,
                format!(
                    "it is {} on `{}`, expected {} on `{column}`",
                    after.index_type, after.column, spec.index_type
                ),
            ));
        }
        if after.segments != spec.segments
            && let Some(changed) =
                compare_rebuilt(table, spec, after, version_before, &schema, &column).await?
        {
            checked.changed.push((spec.name.clone(), changed));
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
            checked.recall.push((spec.name.clone(), rate));
        }
    }
    Ok(checked)
}

/// An index that was rebuilt (its segments changed) has the parameters it
/// had at `version_before`, but for those a rebuild had to change. Returns
/// what changed that is said rather than refused (parameters LanceDB
/// cannot set, the partition count), if anything.
async fn compare_rebuilt(
    table: &Table,
    before: &IndexSpec,
    after: &IndexSpec,
    version_before: u64,
    schema: &arrow_schema::Schema,
    column: &str,
) -> Result<Option<Vec<String>>> {
    let (was, _) = described(table, version_before, before).await;
    let mut now = vec![after.clone()];
    describe(table, None, &mut now).await?;
    let (was, now) = (&was, &now[0]);
    let Ok(rebuild) = was.recreate(dims_of(schema, column)) else {
        // Not a type LanceDB builds: whoever rebuilt it chose its parameters.
        return Ok(None);
    };
    let differences = params::differences(&rebuild.expected, &now.parameters);
    if !differences.is_empty() {
        return Err(Error::Index {
            table: table.name().to_owned(),
            index: before.name.clone(),
            reason: format!(
                "it was rebuilt with other parameters than it had: {}",
                differences.join("; ")
            ),
        });
    }
    let mut changed = rebuild.changed;
    changed.extend(params::partition_change(&rebuild.expected, &now.parameters));
    changed.extend(params::unsettable_changes(
        &was.parameters,
        &now.parameters,
        &rebuild.expected,
    ));
    Ok((!changed.is_empty()).then_some(changed))
}

/// Checks that index `name` of `table` was built with what `index` asks
/// for (the parameters set on the builder).
pub(crate) async fn check_requested(table: &Table, name: &str, index: &Index) -> Result<()> {
    let mut now: Vec<IndexSpec> = snapshot(table)
        .await?
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    describe(table, None, &mut now).await?;
    let Some(now) = now.first() else {
        return Err(Error::Index {
            table: table.name().to_owned(),
            index: name.to_owned(),
            reason: "it does not exist after being built".to_owned(),
        });
    };
    let differences = params::differences(&params::requested(index), &now.parameters);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Error::Index {
            table: table.name().to_owned(),
            index: name.to_owned(),
            reason: format!(
                "it was built with other parameters than asked for: {}",
                differences.join("; ")
            ),
        })
    }
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
