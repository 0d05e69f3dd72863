//! `CastColumn`: change a column's type within its family, every value
//! checked first.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::{CastOptions, can_cast_types, cast_with_options};
use arrow_schema::{DataType, Field, Schema};
use async_trait::async_trait;
use futures::TryStreamExt;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::ColumnAlteration;
use tracing::info;

use crate::error::{Error, Result};
use crate::lance::backfill::{Backfill, Compute};
use crate::lance::source::Source;
use crate::migration::{Definition, Migration, MigrationContext};
use crate::migration::{MigrationPlan, TableInfo, Writes};

/// A migration that changes a column's type: `Int64` to `Int32`, `Float64`
/// to `Float32`, a vector of `Float32` to one of `Float16`, `Utf8` to
/// `LargeUtf8`, a timestamp's unit, a decimal's precision.
///
/// **Checked.** Before anything is written, every value is cast: a value
/// that fails (an integer out of the new range, a date out of a timestamp
/// unit's range) or changes (a finite float that would become infinite)
/// refuses the migration with [`Error::LossyCast`], naming the value and
/// its row; the table is left as it was. A narrower float keeps fewer
/// digits by design and is not refused for that.
///
/// **Within a type family**: between integers, between floats, between
/// temporal types, between text types, between binary types, between
/// decimals, and between lists (including vectors) of those, as Lance's own
/// cast. Other casts (text to numbers, say) are refused before anything is
/// written with [`Error::ColumnType`]: add a new column with
/// [`AddColumns`](crate::AddColumns) and fill it in a custom migration.
///
/// **Beside the application's writes.** Only the one column is written:
/// a staging column of the new type is filled from it fragment by fragment
/// (commits that do not conflict with appends, as
/// [`ReEmbed`](crate::ReEmbed) fills vectors), with passes over the rows
/// appended meanwhile; then one metadata-only commit swaps it in under the
/// column's name and position (keeping the old column aside), the rows
/// appended before the swap are filled from the old column, and the old
/// column is dropped. Its indexes go with it and are built again as they
/// were on the new column by the default [`rebuild`](Migration::rebuild).
/// The application must write the new type once the swap lands (LanceDB
/// refuses a batch of the old type then).
///
/// # Examples
///
/// ```
/// use arrow_schema::DataType;
/// use lancedb_migrate::CastColumn;
///
/// let migration = CastColumn::new("0009_score_f32", "documents", "score", DataType::Float32);
/// # let _ = migration;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct CastColumn {
    id: String,
    table: String,
    column: String,
    to: DataType,
}

impl CastColumn {
    /// Rows per cast call when the column is filled.
    const BATCH: u32 = 65_536;

    /// A migration with id `id` that casts column `column` of `table` to
    /// `to`.
    pub fn new(
        id: impl Into<String>,
        table: impl Into<String>,
        column: impl Into<String>,
        to: DataType,
    ) -> Self {
        Self {
            id: id.into(),
            table: table.into(),
            column: column.into(),
            to,
        }
    }

    /// The column cast.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// The type it is cast to.
    pub fn to(&self) -> &DataType {
        &self.to
    }

    /// The column's field before, checked castable.
    fn source<'s>(&self, before: &'s Schema) -> Result<&'s Field> {
        let field = before
            .field_with_name(&self.column)
            .map_err(|_| Error::ColumnNotFound {
                table: self.table.clone(),
                column: self.column.clone(),
            })?;
        let from = field.data_type();
        if from == &self.to {
            return Err(Error::InvalidMigration {
                migration: self.id.clone(),
                reason: format!("column `{}` is already {}", self.column, self.to),
            });
        }
        if !(can_cast_types(from, &self.to) && same_family(from, &self.to)) {
            return Err(Error::ColumnType {
                table: self.table.clone(),
                column: self.column.clone(),
                expected: format!(
                    "a type that casts to {} within its family (integers, floats, temporal, text, binary, decimals, lists of them)",
                    self.to
                ),
                found: from.clone(),
            });
        }
        Ok(field)
    }

    /// Every value of the column, at the table's version now, cast: the
    /// first one that fails or changes is an error naming it.
    async fn check_values(&self, ctx: &MigrationContext) -> Result<()> {
        let read = Error::lance(format!("read `{}` of `{}`", self.column, self.table));
        let mut stream = ctx
            .table()
            .query()
            .select(Select::columns(&[self.column.as_str()]))
            .with_row_id()
            .execute()
            .await
            .map_err(&read)?;
        while let Some(batch) = stream.try_next().await.map_err(&read)? {
            self.check_batch(&batch)?;
        }
        Ok(())
    }

    fn check_batch(&self, batch: &RecordBatch) -> Result<()> {
        let values = batch.column(0);
        let row_id = |i: usize| {
            batch
                .column_by_name("_rowid")
                .and_then(|ids| ids.as_primitive_opt::<arrow_array::types::UInt64Type>())
                .map_or(0, |ids| ids.value(i))
        };
        let refuse = |i: usize, reason: String| Error::LossyCast {
            table: self.table.clone(),
            column: self.column.clone(),
            to: Box::new(self.to.clone()),
            value: arrow_cast::display::array_value_to_string(values, i)
                .unwrap_or_else(|_| "?".to_owned()),
            row: row_id(i),
            reason,
        };
        let strict = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        if let Err(e) = cast_with_options(values, &self.to, &strict) {
            // Find the row: cast one at a time.
            for i in 0..values.len() {
                if let Err(e) = cast_with_options(&values.slice(i, 1), &self.to, &strict) {
                    return Err(refuse(i, format!("does not convert ({e})")));
                }
            }
            return Err(refuse(0, format!("does not convert ({e})")));
        }
        if let Some(i) = overflowing_float(values, &self.to, &strict) {
            return Err(refuse(i, "would become infinite".to_owned()));
        }
        Ok(())
    }
}

/// Whether Lance casts `from` to `to` in place: the same family (its rule
/// for a column's cast, written out).
pub(crate) fn same_family(from: &DataType, to: &DataType) -> bool {
    use DataType::{
        Binary, Boolean, Decimal128, Decimal256, Dictionary, FixedSizeList, LargeBinary, LargeList,
        LargeUtf8, List, Utf8,
    };
    match (from, to) {
        (Dictionary(_, from), _) => same_family(from, to),
        (_, Dictionary(_, to)) => same_family(from, to),
        (from, to) if from.is_integer() => to.is_integer(),
        (from, to) if from.is_floating() => to.is_floating(),
        (from, to) if from.is_temporal() => to.is_temporal(),
        (Boolean, to) => matches!(to, Boolean),
        (Utf8 | LargeUtf8, to) => matches!(to, Utf8 | LargeUtf8),
        (Binary | LargeBinary, to) => matches!(to, Binary | LargeBinary),
        (Decimal128(..) | Decimal256(..), to) => matches!(to, Decimal128(..) | Decimal256(..)),
        (List(from) | LargeList(from) | FixedSizeList(from, _), List(to) | LargeList(to)) => {
            same_family(from.data_type(), to.data_type())
        }
        (List(from) | LargeList(from) | FixedSizeList(from, _), FixedSizeList(to, _)) => {
            same_family(from.data_type(), to.data_type())
        }
        _ => false,
    }
}

/// The first finite float of `values` (flat, or inside lists) that casting
/// to `to` makes infinite.
fn overflowing_float(values: &ArrayRef, to: &DataType, strict: &CastOptions) -> Option<usize> {
    let floats = |a: &ArrayRef| -> Option<Vec<Option<f64>>> {
        let as_f64 = cast_with_options(a, &DataType::Float64, strict).ok()?;
        Some(
            as_f64
                .as_primitive::<arrow_array::types::Float64Type>()
                .iter()
                .collect(),
        )
    };
    let (from_items, to_items, width) = match (values.data_type(), to) {
        (f, t) if f.is_floating() && t.is_floating() => {
            let cast = cast_with_options(values, to, strict).ok()?;
            (floats(values)?, floats(&cast)?, 1)
        }
        (DataType::FixedSizeList(_, n), DataType::FixedSizeList(item, _))
            if item.data_type().is_floating() =>
        {
            let list = values.as_fixed_size_list();
            let cast = cast_with_options(list.values(), item.data_type(), strict).ok()?;
            (floats(list.values())?, floats(&cast)?, *n as usize)
        }
        _ => return None,
    };
    from_items
        .iter()
        .zip(&to_items)
        .position(|(a, b)| matches!((a, b), (Some(a), Some(b)) if a.is_finite() && !b.is_finite()))
        .map(|item| item / width.max(1))
}

#[async_trait]
impl Migration for CastColumn {
    fn id(&self) -> &str {
        &self.id
    }

    fn table(&self) -> &str {
        &self.table
    }

    /// `cast_column@1`: the table, the column and the type.
    fn definition(&self) -> String {
        Definition::new("cast_column@1")
            .text("table", &self.table)
            .text("column", &self.column)
            .data_type("type", &self.to)
            .finish()
    }

    /// `before` with the column's type changed (same name, position,
    /// nullability and field metadata).
    ///
    /// # Errors
    ///
    /// [`Error::ColumnNotFound`]; [`Error::ColumnType`] for a cast Lance
    /// cannot make in place; [`Error::InvalidMigration`] when the column
    /// has the type already. The migrator calls this before it touches
    /// anything.
    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        self.source(before)?;
        let fields: Vec<Field> = before
            .fields()
            .iter()
            .map(|f| match f.name() == &self.column {
                true => f.as_ref().clone().with_data_type(self.to.clone()),
                false => f.as_ref().clone(),
            })
            .collect();
        Ok(Schema::new_with_metadata(fields, before.metadata().clone()))
    }

    /// Rewrites the one column for every row; its indexes are built again.
    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        let dimension = match &self.to {
            DataType::FixedSizeList(_, n) => Some(*n as usize),
            _ => None,
        };
        Ok(MigrationPlan::new(format!(
            "cast `{}` to {} (every value checked first)",
            self.column, self.to
        ))
        .writes(Writes::Columns { rows: table.rows })
        .columns([self.column.clone()])
        .rebuilds(table.rebuilt_on(&self.column, dimension)))
    }

    /// Checks every value, fills a staging column of the new type from
    /// the column (fragment by fragment, beside the application's appends),
    /// swaps it in, fills the rows appended meanwhile from the column it
    /// replaced, and drops that.
    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        self.check_values(ctx).await?;
        let source = self.source(ctx.schema_before())?.clone();
        let staging = format!("__lancedb_migrate_{}", self.column);
        let kept = format!("__lancedb_migrate_old_{}", self.column);
        ctx.add_null_columns(&Schema::new(vec![Field::new(
            &staging,
            self.to.clone(),
            true,
        )]))
        .await?;
        let to = self.to.clone();
        let operation = format!("cast `{}` of `{}` to {}", self.column, self.table, self.to);
        let what = operation.clone();
        let compute: Compute = Arc::new(move |values: ArrayRef| {
            let strict = CastOptions {
                safe: false,
                ..CastOptions::default()
            };
            cast_with_options(&values, &to, &strict).map_err(Error::arrow(what.as_str()))
        });
        let key = format!("lancedb_migrate.checkpoint.{}", self.id);
        let fill = Backfill::new(
            ctx.table(),
            &staging,
            ctx.version_before(),
            compute,
            key,
            ctx.progress(),
            ctx.fence().clone(),
        )
        .await?;
        let fill = Backfill {
            source: Some(Source::Column(self.column.clone())),
            batch_size: Self::BATCH,
            stop: ctx.stop_signal().clone(),
            ..fill
        };
        let mut rows = fill.run().await?;
        let same = |_: &[&str], _: &[&str], m: &HashMap<String, String>| m.clone();
        fill.swap_keeping(&self.column, Some(&kept), source.metadata(), &same)
            .await?;
        // Rows appended between the last pass and the swap.
        let late = Backfill {
            source: Some(Source::Column(kept.clone())),
            ..fill
        };
        rows += late.run().await?;
        let old = [kept.as_str()];
        ctx.retry_on_conflict(&operation, || ctx.table().drop_columns(&old))
            .await?;
        if !source.is_nullable() {
            let strict = [ColumnAlteration::new(self.column.clone()).set_nullable(false)];
            ctx.retry_on_conflict(&operation, || ctx.table().alter_columns(&strict))
                .await?;
        }
        ctx.record_detail("rows_cast", rows.to_string());
        info!(
            table = self.table,
            column = self.column,
            rows,
            to = %self.to,
            "column cast"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        use DataType::*;
        assert!(same_family(&Int64, &Int8));
        assert!(same_family(&Float64, &Float16));
        assert!(same_family(&Utf8, &LargeUtf8));
        assert!(!same_family(&Utf8, &Int64));
        assert!(!same_family(&Int64, &Float64));
        let vector = |t: DataType, n| FixedSizeList(Arc::new(Field::new("item", t, true)), n);
        assert!(same_family(&vector(Float32, 8), &vector(Float16, 8)));
        assert!(!same_family(&vector(Float32, 8), &Float32));
    }

    #[test]
    fn the_first_overflowing_float_is_found() {
        let values: ArrayRef = Arc::new(arrow_array::Float64Array::from(vec![1.0, 1e300, 2.0]));
        let strict = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        assert_eq!(
            overflowing_float(&values, &DataType::Float32, &strict),
            Some(1)
        );
        let fine: ArrayRef = Arc::new(arrow_array::Float64Array::from(vec![1.0, f64::INFINITY]));
        assert_eq!(overflowing_float(&fine, &DataType::Float32, &strict), None);
    }
}
