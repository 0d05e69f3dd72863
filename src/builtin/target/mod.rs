//! `TargetSchema`: the table as the application declares it; the steps
//! to get there are planned from the table as it is.

#[cfg(feature = "serde_arrow")]
mod row;
mod steps;

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use lancedb::table::ColumnAlteration;
use tracing::info;

use crate::builtin::create_table::column_definition;
use crate::builtin::default_value::DefaultValue;
use crate::error::{Error, Result};
use crate::migration::{Definition, Migration, MigrationContext};
use crate::migration::{MigrationPlan, TableInfo, Writes};

use steps::Steps;
pub(crate) use steps::declared_table;

/// What a table must look like: its columns, with the defaults existing
/// rows get for the ones it lacks. The migrator plans the steps from the
/// table as it finds it, and applies them as one migration, with one
/// backup, one verification and one rollback.
///
/// | the table | the step planned |
/// |---|---|
/// | missing | created, empty, with the declared schema |
/// | lacks a declared column | the column is added, every row set to its default (or NULL) — only the new column is written |
/// | a NOT NULL column declared nullable | relaxed (metadata only) |
/// | a column's type widened within its family (`int32` → `int64`, `float` → `double`, `utf8` → `large_utf8`) | the column is cast, every value checked ([`CastColumn`](crate::CastColumn)) |
/// | a column the declaration lacks | **refused** ([`Error::Destructive`]) unless [`allow_drops`](Self::allow_drops): then dropped (the backup keeps its data) |
/// | a type narrowed within its family (`int64` → `int32`) | **refused** ([`Error::Destructive`]) unless [`allow_narrowing`](Self::allow_narrowing): then cast, any value that does not fit refusing it ([`Error::LossyCast`]) |
/// | a type of another family, a vector of another dimension, a nullable column declared NOT NULL | **refused** ([`Error::SchemaMismatch`]): write that migration by hand ([`ReEmbed`](crate::ReEmbed), [`FillColumn`](crate::FillColumn), [`CastColumn`](crate::CastColumn)) before the declaration |
/// | has it all | nothing: the table is adopted as it is |
///
/// Column order does not count (added columns go last, as LanceDB adds
/// them), nor does metadata. A renamed column looks like a drop and an
/// add: rename it with [`RenameColumn`](crate::RenameColumn) first.
///
/// # Identity
///
/// The migration's [id](Migration::id) is `<table>@schema:<12 hex digits>`,
/// from the checksum of the declaration: a changed declaration is a new
/// migration, which the next run applies, and the ledger keeps one row per
/// declaration applied. Earlier declarations of the same table are not
/// [missing](crate::Migrator::on_missing) from the list: they are its
/// history. A declaration already applied is not applied again, even if the
/// table was changed since by other migrations.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use arrow_schema::{DataType, Field, Schema, TimeUnit};
/// use lancedb_migrate::{DefaultValue, Migrator, TargetSchema, testing};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lancedb_migrate::Result<()> {
/// let db = testing::memory_db().await?;
/// testing::documents_table(&db, "documents", 100, 8).await?; // id, text, vector
///
/// let utc = Some(Arc::from("UTC"));
/// let mut fields: Vec<Field> = testing::documents_schema(8)
///     .fields()
///     .iter()
///     .map(|f| f.as_ref().clone())
///     .collect();
/// fields.extend([
///     Field::new("category", DataType::Utf8, false),
///     Field::new("is_active", DataType::Boolean, false),
///     Field::new("created_at", DataType::Timestamp(TimeUnit::Microsecond, utc), false),
///     Field::new("metadata", DataType::Utf8, true),
/// ]);
/// let target = TargetSchema::new("documents", Schema::new(fields))
///     .default("category", "general")
///     .default("is_active", true)
///     .default("created_at", DefaultValue::MigrationTime);
///
/// let migrator = Migrator::new(db).add(target);
/// println!("{}", migrator.plan().await?); // add 4 column(s): ...
/// assert_eq!(migrator.run().await?.applied().count(), 1);
/// assert!(migrator.run().await?.is_noop());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct TargetSchema {
    id: String,
    table: String,
    schema: SchemaRef,
    defaults: Vec<(String, DefaultValue)>,
    allow_drops: bool,
    allow_narrowing: bool,
}

impl TargetSchema {
    /// `table` must have `schema`'s columns: their names, types and
    /// nullability.
    pub fn new(table: impl Into<String>, schema: impl Into<SchemaRef>) -> Self {
        Self {
            id: String::new(),
            table: table.into(),
            schema: schema.into(),
            defaults: Vec::new(),
            allow_drops: false,
            allow_narrowing: false,
        }
        .identified()
    }

    /// The value existing rows get in `column` when it is added. A
    /// nullable column without one is added all-NULL; a NOT NULL column
    /// without one cannot be added to a table with rows
    /// ([`Error::MissingDefault`]).
    pub fn default(mut self, column: impl Into<String>, value: impl Into<DefaultValue>) -> Self {
        let column = column.into();
        self.defaults.retain(|(c, _)| *c != column);
        self.defaults.push((column, value.into()));
        self.identified()
    }

    /// Drops the table's columns the declaration lacks. Default: such a
    /// column is refused with [`Error::Destructive`].
    pub fn allow_drops(mut self) -> Self {
        self.allow_drops = true;
        self.identified()
    }

    /// Casts columns declared with a narrower type of their family
    /// (`int64` → `int32`); a value that does not fit still refuses the
    /// migration ([`Error::LossyCast`]). Default: refused with
    /// [`Error::Destructive`].
    pub fn allow_narrowing(mut self) -> Self {
        self.allow_narrowing = true;
        self.identified()
    }

    /// Declares `column` a vector of `dimension` 32-bit floats
    /// (`FixedSizeList<Float32>`, as LanceDB's clients write vectors),
    /// keeping its nullability. For a schema traced from a row type, where a
    /// `Vec<f32>` has no dimension.
    pub fn vector(self, column: &str, dimension: i32) -> Self {
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        self.column_type(column, DataType::FixedSizeList(item, dimension))
    }

    /// Declares `column` of `data_type`, keeping its nullability (e.g. a
    /// timestamp for a row type's `i64` field). A default the column had
    /// from a row type is dropped: give one with [`default`](Self::default).
    /// A column the declaration does not have is left as it is.
    pub fn column_type(mut self, column: &str, data_type: DataType) -> Self {
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| match f.name() == column {
                true => f.as_ref().clone().with_data_type(data_type.clone()),
                false => f.as_ref().clone(),
            })
            .collect();
        self.schema = Arc::new(Schema::new_with_metadata(
            fields,
            self.schema.metadata().clone(),
        ));
        self.defaults.retain(|(c, _)| c != column);
        self.identified()
    }

    /// The declared schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The declared default of `column`, if any.
    pub fn default_of(&self, column: &str) -> Option<&DefaultValue> {
        self.defaults
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, v)| v)
    }

    fn identified(mut self) -> Self {
        let checksum = self.checksum();
        self.id = format!("{}{}{}", self.table, steps::ID_MARK, &checksum[..12]);
        self
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidMigration {
            migration: self.id.clone(),
            reason: reason.into(),
        }
    }

    /// The declaration itself: columns named once, defaults on declared
    /// columns.
    fn check(&self) -> Result<()> {
        if self.schema.fields().is_empty() {
            return Err(self.invalid("it declares no columns"));
        }
        let mut names = std::collections::HashSet::new();
        for field in self.schema.fields() {
            if !names.insert(field.name().as_str()) {
                return Err(self.invalid(format!("column `{}` is declared twice", field.name())));
            }
        }
        for (column, _) in &self.defaults {
            if !names.contains(column.as_str()) {
                return Err(self.invalid(format!(
                    "it gives a default to `{column}`, which it does not declare"
                )));
            }
        }
        Ok(())
    }

    fn steps(&self, before: &Schema) -> Result<Steps> {
        self.check()?;
        Steps::plan(self, before)
    }
}

#[async_trait]
impl Migration for TargetSchema {
    fn id(&self) -> &str {
        &self.id
    }

    fn table(&self) -> &str {
        &self.table
    }

    /// `target_schema@1`: the table; each column's name, type,
    /// nullability and default, in order; whether drops and narrowing are
    /// allowed.
    fn definition(&self) -> String {
        Definition::new("target_schema@1")
            .text("table", &self.table)
            .list(
                "columns",
                self.schema.fields().iter().map(|f| {
                    column_definition(f).raw(
                        "default",
                        &DefaultValue::canonical(self.default_of(f.name())),
                    )
                }),
            )
            .bool("allow_drops", self.allow_drops)
            .bool("allow_narrowing", self.allow_narrowing)
            .finish()
    }

    fn creates(&self) -> Option<SchemaRef> {
        Some(self.schema.clone())
    }

    /// The table after the planned steps: the declared columns, in the
    /// table's order, new ones last.
    ///
    /// # Errors
    ///
    /// [`Error::Destructive`] for drops or narrowing not allowed;
    /// [`Error::SchemaMismatch`] for differences no step reaches;
    /// [`Error::MissingDefault`] or [`Error::DefaultTypeMismatch`] for a
    /// column to add; [`Error::InvalidMigration`] for an inconsistent
    /// declaration. All before anything is written.
    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        if before.fields().is_empty() {
            self.check()?;
            return Ok(self.schema.as_ref().clone());
        }
        self.steps(before)?.expected_schema(before)
    }

    /// The steps, in words: what is dropped, cast, relaxed and added.
    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        if table.schema.fields().is_empty() {
            return Ok(MigrationPlan::new(format!(
                "create table `{}` with {} column(s)",
                self.table,
                self.schema.fields().len()
            ))
            .writes(Writes::MetadataOnly)
            .columns(self.schema.fields().iter().map(|f| f.name().clone())));
        }
        let steps = self.steps(&table.schema)?;
        let writes = match steps.writes_data() {
            true => Writes::Columns { rows: table.rows },
            false => Writes::MetadataOnly,
        };
        let mut rebuilds = Vec::new();
        for (column, to) in &steps.cast {
            let dimension = match to {
                DataType::FixedSizeList(_, n) => Some(*n as usize),
                _ => None,
            };
            rebuilds.extend(table.rebuilt_on(column, dimension));
        }
        Ok(MigrationPlan::new(steps.summary(&self.table))
            .writes(writes)
            .columns(steps.columns())
            .rebuilds(rebuilds))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        let before = ctx.schema_before();
        if before.fields().is_empty() {
            return Ok(());
        }
        let steps = self.steps(before)?;
        if steps.is_empty() {
            info!(table = self.table, "the table has the declared schema");
            return Ok(());
        }
        if let Some(drop) = steps.drop_columns(&self.id, &self.table) {
            drop.transform(ctx).await?;
        }
        for cast in steps.cast_columns(&self.id, &self.table) {
            cast.transform(ctx).await?;
        }
        if !steps.relax.is_empty() {
            let relax: Vec<ColumnAlteration> = steps
                .relax
                .iter()
                .map(|c| ColumnAlteration::new(c.clone()).set_nullable(true))
                .collect();
            let operation = format!("make columns of `{}` nullable", self.table);
            ctx.retry_on_conflict(&operation, || ctx.table().alter_columns(&relax))
                .await?;
        }
        if let Some(add) = steps.add_columns(&self.id, &self.table) {
            add.transform(ctx).await?;
        }
        info!(table = self.table, steps = %steps.summary(&self.table), "the table has the declared schema");
        Ok(())
    }
}
