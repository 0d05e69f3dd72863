//! What indexes a table has: from the manifest alone (cheap, at every
//! migration's start), or with the parameters only the index files hold.

use std::collections::HashMap;

use lance::index::DatasetIndexExt;
use lancedb::Table;

use super::params;
use super::spec::IndexSpec;
use crate::error::{Error, Result};

/// The indexes of `table` at its current version, with the parameters
/// Lance keeps in the manifest (no index file is opened).
// Long on purpose: one pass over the manifest's index records, each turned into an IndexSpec in
// place.
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
pub(super) async fn described(
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
pub(super) async fn current_column(table: &Table, spec: &IndexSpec) -> Result<Option<String>> {
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
pub(super) async fn current(table: &Table) -> Result<HashMap<String, IndexSpec>> {
    crate::lance::latest_version(table).await?;
    Ok(snapshot(table)
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect())
}

/// Rows of the table that index `index` does not cover yet.
pub(super) async fn unindexed_rows(table: &Table, index: &str) -> Result<usize> {
    let stats = table
        .index_stats(index)
        .await
        .map_err(Error::lance(format!(
            "read the statistics of index `{index}`"
        )))?;
    Ok(stats.map_or(0, |s| s.num_unindexed_rows))
}

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
    /// [`Error::LanceDb`](crate::Error::LanceDb) when the table's indexes
    /// cannot be read.
    pub async fn list(table: &Table) -> Result<Vec<Self>> {
        crate::lance::latest_version(table).await?;
        snapshot_described(table).await
    }
}
