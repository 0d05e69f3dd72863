//! `AddColumns`: add columns with typed defaults, writing only the new
//! columns.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use async_trait::async_trait;
use lancedb::table::{ColumnAlteration, NewColumnTransform};
use tracing::info;

use arrow_array::ArrayRef;

use crate::builtin::default_value::DefaultValue;
use crate::builtin::legacy;
use crate::error::{Error, Result};
use crate::lance::backfill::{Backfill, Compute};
use crate::lance::retry::is_lancedb_conflict;
use crate::migration::MigrationContext;
use crate::migration::{Definition, Migration, hex_sha256};
use crate::migration::{MigrationPlan, TableInfo, Writes};

/// One column for [`AddColumns`] to add.
///
/// A column without a default is added as all-null (no data is written for
/// it). A column with a default gets that value in every existing row.
///
/// # Nullability
///
/// Added columns are **nullable by default**, with or without a default
/// value. LanceDB stores no default: a row that the application appends
/// later without this column gets NULL. A nullable column is what keeps the
/// application's existing writes working while it is being updated to set
/// the column. [`not_null`](Self::not_null) makes the column NOT NULL
/// instead; then every later append **must** set it, or LanceDB rejects the
/// write.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct NewColumn {
    name: String,
    data_type: DataType,
    default: Option<DefaultValue>,
    nullable: bool,
}

impl NewColumn {
    /// A nullable column of `data_type`, all-null unless given a default.
    pub fn new(name: impl Into<String>, data_type: DataType) -> Self {
        Self {
            name: name.into(),
            data_type,
            default: None,
            nullable: true,
        }
    }

    /// The value every existing row gets. Default: none (all-null).
    ///
    /// A value that does not fit the column's type is reported by
    /// [`Migrator::run`](crate::Migrator::run) as
    /// [`Error::DefaultTypeMismatch`].
    pub fn default_value(mut self, value: impl Into<DefaultValue>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// Makes the column NOT NULL. Default: nullable.
    ///
    /// The application's later appends that do not set this column will then
    /// fail; see the [type docs](Self#nullability). A NOT NULL column needs a
    /// default.
    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }

    /// The column's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Arrow field the column has once added.
    pub fn field(&self) -> Field {
        Field::new(&self.name, self.data_type.clone(), self.nullable)
    }

    /// Whether existing rows get a value (not NULL).
    pub(crate) fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// The column in the crate's stable encoding (see [`Definition`]).
    fn definition(&self) -> Definition {
        Definition::new("column")
            .text("name", &self.name)
            .data_type("type", &self.data_type)
            .raw("default", &DefaultValue::canonical(self.default.as_ref()))
            .bool("nullable", self.nullable)
    }

    fn check(&self) -> Result<()> {
        match &self.default {
            None if !self.nullable => Err(Error::MissingDefault {
                column: self.name.clone(),
            }),
            Some(v) => v
                .to_sql(&self.data_type, std::time::UNIX_EPOCH)
                .map(drop)
                .map_err(|found| self.mismatch(found)),
            None => Ok(()),
        }
    }

    fn mismatch(&self, found: String) -> Error {
        Error::DefaultTypeMismatch {
            column: self.name.clone(),
            expected: self.data_type.clone(),
            found,
        }
    }
}

/// A migration that adds columns to a table, filling existing rows with a
/// default or with NULL.
///
/// It uses LanceDB's column-level schema evolution: all-null columns are a
/// metadata-only change; columns with a default get one new data file per
/// fragment holding just that column. Existing columns, including ones this
/// migration does not mention, are never read or rewritten.
///
/// It commits one table version for the all-null columns and one for the
/// defaulted columns, each with the nullability [`NewColumn`] declares (a
/// remote table, written through SQL constants which LanceDB makes NOT
/// NULL, takes a third commit to relax them). A failure in between is
/// rolled back with the rest.
///
/// # Examples
///
/// ```
/// use arrow_schema::DataType;
/// use lancedb_migrate::{AddColumns, NewColumn, DefaultValue};
/// use arrow_schema::TimeUnit;
///
/// let migration = AddColumns::new("0002_document_metadata", "documents")
///     .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
///     .column(NewColumn::new("is_active", DataType::Boolean).default_value(true))
///     .column(
///         NewColumn::new("created_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))
///             .default_value(DefaultValue::MigrationTime),
///     )
///     .column(NewColumn::new("metadata", DataType::Utf8));
/// # let _ = migration;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct AddColumns {
    id: String,
    table: String,
    columns: Vec<NewColumn>,
}

impl AddColumns {
    /// Rows per batch when defaults are written fragment by fragment.
    const FILL_BATCH: u32 = 65_536;

    /// A migration with id `id` that adds columns to `table`.
    pub fn new(id: impl Into<String>, table: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            table: table.into(),
            columns: Vec::new(),
        }
    }

    /// Adds a column. Columns are added in the order given.
    pub fn column(mut self, column: NewColumn) -> Self {
        self.columns.push(column);
        self
    }

    /// The columns this migration adds.
    pub fn columns(&self) -> &[NewColumn] {
        &self.columns
    }

    fn check(&self, before: &Schema) -> Result<()> {
        if self.columns.is_empty() {
            return Err(self.invalid("it adds no columns"));
        }
        let mut names = HashSet::new();
        for column in &self.columns {
            if !names.insert(column.name.as_str()) {
                return Err(self.invalid(&format!("column `{}` is listed twice", column.name)));
            }
            if before.field_with_name(&column.name).is_ok() {
                return Err(Error::ColumnExists {
                    table: self.table.clone(),
                    column: column.name.clone(),
                });
            }
            column.check()?;
        }
        Ok(())
    }

    fn invalid(&self, reason: &str) -> Error {
        Error::InvalidMigration {
            migration: self.id.clone(),
            reason: reason.to_owned(),
        }
    }

    async fn add_nulls(&self, ctx: &MigrationContext) -> Result<()> {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .filter(|c| c.default.is_none())
            .map(NewColumn::field)
            .collect();
        if fields.is_empty() {
            return Ok(());
        }
        let version = ctx.add_null_columns(&Schema::new(fields)).await?;
        info!(table = self.table, version, "all-null columns added");
        Ok(())
    }

    async fn add_defaults(&self, ctx: &MigrationContext) -> Result<()> {
        let valued: Vec<&NewColumn> = self
            .columns
            .iter()
            .filter(|c| c.default.is_some())
            .collect();
        let mut expressions = Vec::new();
        for column in &valued {
            let value = column.default.as_ref().expect("filtered on default");
            let sql = value
                .to_sql(&column.data_type, ctx.started_at())
                .map_err(|found| column.mismatch(found))?;
            expressions.push((column.name.clone(), sql));
        }
        if expressions.is_empty() {
            return Ok(());
        }
        // One `add_columns` commit writes every defaulted column at once,
        // NULL or NOT NULL as declared (a table written elsewhere, a remote
        // one, takes them as SQL literals, NOT NULL, and a second commit
        // relaxes the nullable ones); it conflicts with appends committed
        // while it runs. On a busy table (it lost such a race) nullable
        // columns are added another way that appends cannot starve.
        let here = crate::lance::columns::writes_here(ctx.table());
        let mut values = Vec::with_capacity(valued.len());
        if here {
            for column in &valued {
                let value = column.default.as_ref().expect("filtered on default");
                let one = value
                    .to_array(&column.data_type, ctx.started_at(), 1)
                    .map_err(|found| column.mismatch(found))?;
                values.push(one);
            }
        }
        let fields: Vec<Field> = valued.iter().map(|c| c.field()).collect();
        let schema = Arc::new(Schema::new(fields));
        let transform = || {
            if here {
                crate::lance::columns::constant_columns(schema.clone(), values.clone())
            } else {
                NewColumnTransform::SqlExpressions(expressions.clone())
            }
        };
        let add = || {
            let add = ctx.table().add_columns().transform(transform());
            match here {
                true => add.read_columns(Vec::<String>::new()),
                false => add,
            }
            .execute()
        };
        ctx.check_lease()?;
        match add().await {
            Ok(result) => info!(
                table = self.table,
                version = result.version,
                "columns added"
            ),
            Err(e) if is_lancedb_conflict(&e) && valued.iter().all(|c| c.nullable) => {
                info!(
                    table = self.table,
                    "the table is busy; adding the columns metadata-only and filling them fragment by fragment"
                );
                return self.fill_while_busy(ctx, &valued).await;
            }
            Err(e) if is_lancedb_conflict(&e) => {
                let operation = format!("add defaulted columns to `{}`", self.table);
                let result = ctx.retry_on_conflict(&operation, add).await?;
                info!(
                    table = self.table,
                    version = result.version,
                    "columns added"
                );
            }
            Err(e) => {
                return Err(Error::lance(format!(
                    "add defaulted columns to `{}`",
                    self.table
                ))(e));
            }
        }
        let relax: Vec<ColumnAlteration> = valued
            .iter()
            .filter(|c| c.nullable && !here)
            .map(|c| ColumnAlteration::new(c.name.clone()).set_nullable(true))
            .collect();
        if relax.is_empty() {
            return Ok(());
        }
        let operation = format!("make the new columns of `{}` nullable", self.table);
        ctx.retry_on_conflict(&operation, || ctx.table().alter_columns(&relax))
            .await?;
        Ok(())
    }

    /// Adds `columns` (all nullable) in one metadata-only commit, which is
    /// quick enough to win against a steady stream of appends, then writes
    /// each column's default into the fragments that existed at that commit
    /// with the backfill engine's `DataReplacement` commits, which do not
    /// conflict with appends. Rows appended after the commit keep NULL, as
    /// rows appended after a single `add_columns` commit do.
    async fn fill_while_busy(&self, ctx: &MigrationContext, columns: &[&NewColumn]) -> Result<()> {
        let table = ctx.table();
        let fields: Vec<Field> = columns.iter().map(|c| c.field()).collect();
        let added = ctx.add_null_columns(&Schema::new(fields)).await?;
        for column in columns {
            let value = column
                .default
                .clone()
                .expect("only defaulted columns are filled");
            let (data_type, now, column_name) = (
                column.data_type.clone(),
                ctx.started_at(),
                column.name.clone(),
            );
            let compute: Compute = Arc::new(move |rows: ArrayRef| {
                value
                    .to_array(&data_type, now, rows.len())
                    .map_err(|found| Error::DefaultTypeMismatch {
                        column: column_name.clone(),
                        expected: data_type.clone(),
                        found,
                    })
            });
            let key = format!("lancedb_migrate.checkpoint.{}.{}", self.id, column.name);
            let fence = ctx.fence().clone();
            Backfill {
                batch_size: Self::FILL_BATCH,
                ..Backfill::new(
                    table,
                    &column.name,
                    added,
                    compute,
                    key,
                    ctx.progress(),
                    fence,
                )
                .await?
            }
            .run()
            .await?;
        }
        info!(
            table = self.table,
            version = added,
            "columns added and filled"
        );
        Ok(())
    }
}

#[async_trait]
impl Migration for AddColumns {
    fn id(&self) -> &str {
        &self.id
    }

    fn table(&self) -> &str {
        &self.table
    }

    /// `add_columns@1`: the table, then each column's name, type, default
    /// and nullability, in the crate's stable encoding ([`Definition`]).
    fn definition(&self) -> String {
        Definition::new("add_columns@1")
            .text("table", &self.table)
            .list("columns", self.columns.iter().map(NewColumn::definition))
            .finish()
    }

    /// The checksum lancedb-migrate 0.1 recorded for the same columns.
    fn previous_checksums(&self) -> Vec<String> {
        let columns = self.columns.iter().map(|c| {
            (
                c.name.as_str(),
                &c.data_type,
                c.default.as_ref(),
                c.nullable,
            )
        });
        vec![hex_sha256(
            legacy::add_columns(&self.table, columns).as_bytes(),
        )]
    }

    /// `before` with the new columns appended.
    ///
    /// # Errors
    ///
    /// [`Error::ColumnExists`], [`Error::MissingDefault`],
    /// [`Error::DefaultTypeMismatch`] or [`Error::InvalidMigration`] (no
    /// columns, or one listed twice). The migrator calls this before it
    /// touches anything, so bad input leaves the table as it was.
    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        self.check(before)?;
        let fields = before
            .fields()
            .iter()
            .cloned()
            .chain(self.columns.iter().map(|c| Arc::new(c.field())));
        Ok(Schema::new_with_metadata(
            fields.collect::<Vec<_>>(),
            before.metadata().clone(),
        ))
    }

    /// Metadata-only when every column is all-null; otherwise the new
    /// columns are written for every row (existing columns are not).
    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        let writes = if self.columns.iter().all(|c| c.default.is_none()) {
            Writes::MetadataOnly
        } else {
            Writes::Columns { rows: table.rows }
        };
        let summary = format!("add {} column(s): {}", names.len(), names.join(", "));
        Ok(MigrationPlan::new(summary).writes(writes).columns(names))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        self.check(ctx.schema_before())?;
        self.add_nulls(ctx).await?;
        self.add_defaults(ctx).await
    }
}
