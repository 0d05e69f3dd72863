//! Which indexes a migration must build again, whether they can be, and
//! building them again with the parameters they had.

use lancedb::Table;
use lancedb::index::IndexType;
use lancedb::table::{OptimizeAction, OptimizeOptions};
use tracing::{info, warn};

use super::snapshot::{current, current_column, describe, described, dims_of, unindexed_rows};
use super::spec::IndexSpec;
use crate::error::{Error, Result};
use crate::lance::fence::Fence;

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
        recreated.push(recreate(table, version_before, spec, &column, &schema, fence).await?);
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

/// Builds `spec` (an index of the table at `version_before`) again on
/// `column` of `schema`, with the parameters it had where LanceDB can set
/// them; each that could not carry over is logged and returned.
async fn recreate(
    table: &Table,
    version_before: u64,
    spec: &IndexSpec,
    column: &str,
    schema: &arrow_schema::Schema,
    fence: &Fence,
) -> Result<Recreated> {
    let name = table.name();
    let (full, unread) = described(table, version_before, spec).await;
    let mut rebuild =
        full.recreate(dims_of(schema, column))
            .map_err(|reason| Error::IndexNotRecreatable {
                table: name.to_owned(),
                index: spec.name.clone(),
                index_type: spec.index_type.to_string(),
                reason,
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
        .create_index(&[column], rebuild.index)
        .name(spec.name.clone())
        .execute()
        .await
        .map_err(|e| Error::Index {
            table: name.to_owned(),
            index: spec.name.clone(),
            reason: format!("could not recreate it on `{column}`"),
            source: Some(e.into()),
        })?;
    Ok(Recreated {
        name: spec.name.clone(),
        changed: rebuild.changed,
    })
}
