//! `FillColumn`: set a column, new or existing, to an SQL expression over
//! the row.

use arrow_schema::{DataType, Field, Schema};
use async_trait::async_trait;
use futures::TryStreamExt;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::{ColumnAlteration, NewColumnTransform};
use tracing::info;

use crate::error::{Error, Result};
use crate::lance::retry::is_lancedb_conflict;
use crate::migration::{Definition, Migration, MigrationContext};
use crate::migration::{MigrationPlan, TableInfo, Writes};

/// A migration that sets a column to an SQL expression over each row
/// (DataFusion's SQL, as LanceDB's `update` and `add_columns` take it):
/// `lower(category)`, `coalesce(score, 0)`, `concat(title, ' ', body)`.
///
/// - [`FillColumn::new`] fills an **existing** column: LanceDB's `update`,
///   which writes the rows again (every column of them); the column's
///   indexes are brought up to date by the default
///   [`rebuild`](Migration::rebuild). Rows the application appends while it
///   runs keep what they were written with.
/// - [`FillColumn::new_column`] **adds** the column, of the type given,
///   computed for every row: LanceDB's `add_columns`, which writes that one
///   column and reads only the columns the expression names. The column is
///   nullable; rows appended later without it get NULL.
///
/// The expression is tried on the table before anything is written: one
/// that does not parse, names a column the table does not have, or gives
/// a type that does not convert to the column's, is refused with
/// [`Error::InvalidMigration`] naming it.
///
/// # Examples
///
/// ```
/// use arrow_schema::DataType;
/// use lancedb_migrate::FillColumn;
///
/// let lower = FillColumn::new("0010_lower_category", "documents", "category", "lower(category)");
/// let length = FillColumn::new_column(
///     "0011_text_length",
///     "documents",
///     "text_length",
///     DataType::Int64,
///     "character_length(text)",
/// );
/// # let _ = (lower, length);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct FillColumn {
    id: String,
    table: String,
    column: String,
    expression: String,
    /// The new column's type; `None` for an existing column.
    new: Option<DataType>,
}

impl FillColumn {
    /// A migration with id `id` that sets the existing column `column` of
    /// `table` to `expression` in every row.
    pub fn new(
        id: impl Into<String>,
        table: impl Into<String>,
        column: impl Into<String>,
        expression: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            table: table.into(),
            column: column.into(),
            expression: expression.into(),
            new: None,
        }
    }

    /// A migration with id `id` that adds column `column` of type
    /// `data_type` to `table`, set to `expression` in every row.
    pub fn new_column(
        id: impl Into<String>,
        table: impl Into<String>,
        column: impl Into<String>,
        data_type: DataType,
        expression: impl Into<String>,
    ) -> Self {
        Self {
            new: Some(data_type),
            ..Self::new(id, table, column, expression)
        }
    }

    /// The column filled.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// The SQL expression.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidMigration {
            migration: self.id.clone(),
            reason,
        }
    }

    /// The expression as the column's type (a new column's: cast to it).
    fn typed_expression(&self) -> String {
        match &self.new {
            Some(t) => format!("arrow_cast({}, '{t}')", self.expression),
            None => self.expression.clone(),
        }
    }

    /// Adds the new column of type `t` set to the expression: one
    /// `add_columns` commit writing that column alone; on a table the
    /// application appends to (the commit lost the race), the column is
    /// added all-NULL in a commit appends cannot starve and set with an
    /// `update`, which rewrites the rows. Returns the last version.
    async fn add(&self, ctx: &MigrationContext, t: &DataType, operation: &str) -> Result<u64> {
        ctx.check_lease()?;
        let sql = vec![(self.column.clone(), self.typed_expression())];
        let added = ctx
            .table()
            .add_columns()
            .transform(NewColumnTransform::SqlExpressions(sql))
            .execute()
            .await;
        match added {
            Ok(added) => {
                // DataFusion may call the expression NOT NULL; the column is
                // nullable, so that appends without it keep working.
                let schema = ctx.current_schema().await?;
                if schema
                    .field_with_name(&self.column)
                    .is_ok_and(|f| !f.is_nullable())
                {
                    let relax = [ColumnAlteration::new(self.column.clone()).set_nullable(true)];
                    let relaxed = ctx
                        .retry_on_conflict(operation, || ctx.table().alter_columns(&relax))
                        .await?;
                    return Ok(relaxed.version);
                }
                Ok(added.version)
            }
            Err(e) if is_lancedb_conflict(&e) => {
                info!(
                    table = self.table,
                    column = self.column,
                    "the table is busy; adding the column all-NULL and setting it row by row"
                );
                let field = Field::new(&self.column, t.clone(), true);
                ctx.add_null_columns(&Schema::new(vec![field])).await?;
                let updated = ctx
                    .retry_on_conflict(operation, || {
                        ctx.table()
                            .update()
                            .column(self.column.clone(), self.typed_expression())
                            .execute()
                    })
                    .await?;
                Ok(updated.version)
            }
            Err(e) => Err(Error::lance(operation)(e)),
        }
    }

    /// Evaluates the expression on a few rows: it parses, its columns
    /// exist, and its type converts to the column's.
    async fn try_expression(&self, ctx: &MigrationContext, column_type: &DataType) -> Result<()> {
        let tried = ctx
            .table()
            .query()
            .select(Select::dynamic(&[("value", self.typed_expression())]))
            .limit(8)
            .execute()
            .await;
        let refuse = |e: lancedb::Error| {
            self.invalid(format!(
                "the expression `{}` cannot be evaluated on `{}`: {e}",
                self.expression, self.table
            ))
        };
        let batches: Vec<_> = tried.map_err(refuse)?.try_collect().await.map_err(refuse)?;
        if let Some(batch) = batches.first() {
            let found = batch.schema().field(0).data_type().clone();
            if !arrow_cast::can_cast_types(&found, column_type) {
                return Err(self.invalid(format!(
                    "the expression `{}` gives {found}, which does not convert to {column_type}",
                    self.expression
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Migration for FillColumn {
    fn id(&self) -> &str {
        &self.id
    }

    fn table(&self) -> &str {
        &self.table
    }

    /// `fill_column@1`: the table, the column, the expression and, for a
    /// new column, its type.
    fn definition(&self) -> String {
        let definition = Definition::new("fill_column@1")
            .text("table", &self.table)
            .text("column", &self.column)
            .text("expression", &self.expression);
        match &self.new {
            Some(t) => definition.data_type("new_column", t),
            None => definition.raw("new_column", "null"),
        }
        .finish()
    }

    /// `before`, with the new column (nullable) appended.
    ///
    /// # Errors
    ///
    /// [`Error::ColumnNotFound`] for an existing column the table does not
    /// have; [`Error::ColumnExists`] for a new column it has already;
    /// [`Error::InvalidMigration`] for an empty expression.
    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        if self.expression.trim().is_empty() {
            return Err(self.invalid("the expression is empty".to_owned()));
        }
        let exists = before.field_with_name(&self.column).is_ok();
        match (&self.new, exists) {
            (None, true) => Ok(before.clone()),
            (None, false) => Err(Error::ColumnNotFound {
                table: self.table.clone(),
                column: self.column.clone(),
            }),
            (Some(_), true) => Err(Error::ColumnExists {
                table: self.table.clone(),
                column: self.column.clone(),
            }),
            (Some(t), false) => {
                let mut fields: Vec<Field> =
                    before.fields().iter().map(|f| f.as_ref().clone()).collect();
                fields.push(Field::new(&self.column, t.clone(), true));
                Ok(Schema::new_with_metadata(fields, before.metadata().clone()))
            }
        }
    }

    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        let (summary, writes) = match &self.new {
            Some(t) => (
                format!("add `{}` ({t}) = {}", self.column, self.expression),
                Writes::Columns { rows: table.rows },
            ),
            None => (
                format!(
                    "set `{}` = {} in every row (rows rewritten)",
                    self.column, self.expression
                ),
                Writes::Unknown,
            ),
        };
        Ok(MigrationPlan::new(summary)
            .writes(writes)
            .columns([self.column.clone()]))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        let column_type = match &self.new {
            Some(t) => t.clone(),
            None => ctx
                .schema_before()
                .field_with_name(&self.column)
                .map_err(|_| Error::ColumnNotFound {
                    table: self.table.clone(),
                    column: self.column.clone(),
                })?
                .data_type()
                .clone(),
        };
        self.try_expression(ctx, &column_type).await?;
        let operation = format!("fill `{}` of `{}`", self.column, self.table);
        let version = match &self.new {
            None => {
                ctx.retry_on_conflict(&operation, || {
                    ctx.table()
                        .update()
                        .column(self.column.clone(), self.expression.clone())
                        .execute()
                })
                .await?
                .version
            }
            Some(t) => self.add(ctx, t, &operation).await?,
        };
        info!(
            table = self.table,
            column = self.column,
            version,
            "column filled"
        );
        Ok(())
    }
}
