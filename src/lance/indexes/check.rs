//! Checking the indexes after a migration: they cover every row, kept
//! their parameters, and vector search through them still finds rows.

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt64Type};
use futures::TryStreamExt;
use lancedb::Table;
use lancedb::index::Index;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use tracing::info;

use super::params;
use super::snapshot::{
    current, current_column, describe, described, dims_of, snapshot, unindexed_rows,
};
use super::spec::IndexSpec;
use crate::error::{Error, Result};

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
// Long on purpose: one index's checks in their order (exists, same column, parameters,
// coverage, recall), each with its own error.
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
        source: None,
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
pub(super) async fn compare_rebuilt(
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
            source: None,
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
            source: None,
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
            source: None,
        })
    }
}

/// Candidates re-ranked by exact distance per result in the recall check:
/// quantized indexes (PQ) rank a row's own vector only approximately, and
/// an application that needs exact top results refines the same way.
pub(super) const REFINE_FACTOR: u32 = 10;

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
