//! `CreateTable`: a table, its first rows and its indexes, created as a
//! ledger migration; an existing table with the same schema is adopted.

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use lancedb::index::Index;
use std::collections::HashSet;
use tracing::info;

use crate::builtin::rebuild_index::index_definition;
use crate::error::{Error, Result};
use crate::migration::{Definition, Migration, MigrationContext};
use crate::migration::{MigrationPlan, TableInfo, Writes};

/// A migration that creates a table, with optional first rows and indexes.
///
/// It is a ledger migration like any other: it runs once, and later starts
/// skip it. A fresh database is brought up by the same
/// [`Migrator`](crate::Migrator) list that migrates it later:
///
/// - **No table**: the run creates it empty with the schema (the first
///   thing it writes, under the lease), backs up that first version,
///   appends the first rows, builds the indexes, and verifies the lot. If
///   any of that fails, the table is dropped again.
/// - **A table with the same schema** (column names, types and
///   nullability; column order and metadata do not count) is adopted: the
///   migration is recorded applied, the indexes it lacks are built, and
///   the first rows are written only if the table is empty. This is how a
///   table made before the migrator was introduced (by a script, another
///   client) joins the ledger.
/// - **A table with another schema** is refused before anything is
///   written, with [`Error::SchemaMismatch`] naming each difference.
///
/// The first rows are seed data: they are written when the table is
/// created, and are not part of the [definition](Migration::definition),
/// so changing them later is not drift (it has no effect on a table that
/// exists). A vector index needs enough rows to train
/// ([`RebuildIndex::MIN_TRAINING_ROWS`](crate::RebuildIndex::MIN_TRAINING_ROWS)
/// for IVF_PQ): declare one here only with enough first rows, or add it later
/// with [`RebuildIndex`](crate::RebuildIndex).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use arrow_schema::{DataType, Field, Schema};
/// use lancedb::index::{Index, scalar::BTreeIndexBuilder};
/// use lancedb_migrate::{AddColumns, CreateTable, Migrator, NewColumn, testing};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lancedb_migrate::Result<()> {
/// let schema = Schema::new(vec![
///     Field::new("id", DataType::Int64, false),
///     Field::new("text", DataType::Utf8, true),
///     Field::new(
///         "vector",
///         DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), 8),
///         true,
///     ),
/// ]);
/// let db = testing::memory_db().await?; // empty: no table yet
/// let migrator = Migrator::new(db.clone())
///     .add(CreateTable::new("0000_create_documents", "documents", schema)
///         .index("id", Index::BTree(BTreeIndexBuilder::default())))
///     .add(AddColumns::new("0001_add_category", "documents")
///         .column(NewColumn::new("category", DataType::Utf8).default_value("general")));
/// let report = migrator.run().await?;
/// assert_eq!(report.applied().count(), 2);
/// assert!(migrator.run().await?.is_noop());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct CreateTable {
    id: String,
    table: String,
    schema: SchemaRef,
    rows: Vec<RecordBatch>,
    indexes: Vec<NewIndex>,
}

/// An index [`CreateTable`] builds.
#[derive(Debug, Clone)]
struct NewIndex {
    column: String,
    name: String,
    index: Index,
}

impl CreateTable {
    /// A migration with id `id` that creates `table` with `schema`.
    pub fn new(
        id: impl Into<String>,
        table: impl Into<String>,
        schema: impl Into<SchemaRef>,
    ) -> Self {
        Self {
            id: id.into(),
            table: table.into(),
            schema: schema.into(),
            rows: Vec::new(),
            indexes: Vec::new(),
        }
    }

    /// Adds first rows, written when the table is created (or adopted
    /// empty). The batch must have the table's columns, with the same
    /// types.
    pub fn rows(mut self, batch: RecordBatch) -> Self {
        self.rows.push(batch);
        self
    }

    /// Adds an index on `column`, named `<column>_idx`.
    pub fn index(self, column: impl Into<String>, index: Index) -> Self {
        let column = column.into();
        let name = format!("{column}_idx");
        self.named_index(column, name, index)
    }

    /// Adds an index on `column` with the name `name`.
    pub fn named_index(
        mut self,
        column: impl Into<String>,
        name: impl Into<String>,
        index: Index,
    ) -> Self {
        self.indexes.push(NewIndex {
            column: column.into(),
            name: name.into(),
            index,
        });
        self
    }

    /// The schema the table is created with.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidMigration {
            migration: self.id.clone(),
            reason: reason.into(),
        }
    }

    /// The declaration itself: columns, first rows and indexes agree.
    fn check(&self) -> Result<()> {
        if self.schema.fields().is_empty() {
            return Err(self.invalid("its schema has no columns"));
        }
        let mut names = HashSet::new();
        for field in self.schema.fields() {
            if !names.insert(field.name().as_str()) {
                return Err(self.invalid(format!("column `{}` is declared twice", field.name())));
            }
        }
        for (i, batch) in self.rows.iter().enumerate() {
            let differences = differences(batch.schema().as_ref(), &self.schema, false);
            if !differences.is_empty() {
                return Err(self.invalid(format!(
                    "its first rows (batch {i}) do not fit the schema: {}",
                    differences.join("; ")
                )));
            }
        }
        let mut index_names = HashSet::new();
        for index in &self.indexes {
            if self.schema.field_with_name(&index.column).is_err() {
                return Err(self.invalid(format!(
                    "index `{}` is on column `{}`, which the schema does not have",
                    index.name, index.column
                )));
            }
            if !index_names.insert(index.name.as_str()) {
                return Err(self.invalid(format!("index `{}` is declared twice", index.name)));
            }
        }
        Ok(())
    }

    fn first_rows(&self) -> u64 {
        self.rows.iter().map(|b| b.num_rows() as u64).sum()
    }
}

/// A declared column in the crate's stable encoding: its name, type and
/// nullability.
pub(crate) fn column_definition(field: &Field) -> Definition {
    Definition::new("column")
        .text("name", field.name())
        .data_type("type", field.data_type())
        .bool("nullable", field.is_nullable())
}

/// How `actual` differs from `declared`, in words: columns missing, extra,
/// of another type or nullability (when `nullability` counts). Column
/// order and metadata do not count.
pub(crate) fn differences(actual: &Schema, declared: &Schema, nullability: bool) -> Vec<String> {
    let mut out = Vec::new();
    for want in declared.fields() {
        match actual.field_with_name(want.name()) {
            Err(_) => out.push(format!("column `{}` is missing", want.name())),
            Ok(got) if got.data_type() != want.data_type() => out.push(format!(
                "column `{}` is {}, declared {}",
                want.name(),
                got.data_type(),
                want.data_type()
            )),
            Ok(got) if nullability && got.is_nullable() != want.is_nullable() => {
                let null = |n: bool| if n { "nullable" } else { "NOT NULL" };
                out.push(format!(
                    "column `{}` is {}, declared {}",
                    want.name(),
                    null(got.is_nullable()),
                    null(want.is_nullable())
                ));
            }
            Ok(_) => {}
        }
    }
    for got in actual.fields() {
        if declared.field_with_name(got.name()).is_err() {
            out.push(format!("column `{}` is not declared", got.name()));
        }
    }
    out
}

#[async_trait]
impl Migration for CreateTable {
    fn id(&self) -> &str {
        &self.id
    }

    fn table(&self) -> &str {
        &self.table
    }

    /// `create_table@1`: the table; each column's name, type and
    /// nullability in order; each index's column, name, kind and the
    /// parameters that differ from LanceDB's defaults. Not the first rows.
    fn definition(&self) -> String {
        Definition::new("create_table@1")
            .text("table", &self.table)
            .list(
                "columns",
                self.schema.fields().iter().map(|f| column_definition(f)),
            )
            .list(
                "indexes",
                self.indexes.iter().map(|i| {
                    let (kind, params) = index_definition(&i.index);
                    Definition::new("index")
                        .text("column", &i.column)
                        .text("name", &i.name)
                        .text("index", kind)
                        .json("params", &params)
                }),
            )
            .finish()
    }

    fn creates(&self) -> Option<SchemaRef> {
        Some(self.schema.clone())
    }

    /// The declared schema for a table still to be created (`before` has
    /// no fields); `before` itself when the table has the declared schema.
    ///
    /// # Errors
    ///
    /// [`Error::SchemaMismatch`] naming each difference when the table
    /// exists with another schema; [`Error::InvalidMigration`] when the
    /// declaration is inconsistent (no columns, a column declared twice,
    /// first rows of other columns or types, an index on an undeclared
    /// column).
    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        self.check()?;
        if before.fields().is_empty() {
            return Ok(self.schema.as_ref().clone());
        }
        let differences = differences(before, &self.schema, true);
        if differences.is_empty() {
            Ok(before.clone())
        } else {
            Err(Error::SchemaMismatch {
                table: self.table.clone(),
                differences,
            })
        }
    }

    /// "create" (or "adopt"), with the first rows and indexes it writes.
    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        let creating = table.schema.fields().is_empty();
        let indexes: Vec<String> = self
            .indexes
            .iter()
            .filter(|i| !table.indexes.iter().any(|have| have.name == i.name))
            .map(|i| i.name.clone())
            .collect();
        let rows = if table.rows == 0 {
            self.first_rows()
        } else {
            0
        };
        let mut summary = match creating {
            true => format!(
                "create table `{}` with {} column(s)",
                self.table,
                self.schema.fields().len()
            ),
            false => format!("adopt the existing table `{}`", self.table),
        };
        if rows > 0 {
            summary += &format!(", {rows} first row(s)");
        }
        let writes = match (rows, indexes.is_empty()) {
            (0, true) => Writes::MetadataOnly,
            (0, false) => Writes::Index { rows: table.rows },
            (rows, _) => Writes::Columns { rows },
        };
        Ok(MigrationPlan::new(summary)
            .writes(writes)
            .columns(self.schema.fields().iter().map(|f| f.name().clone()))
            .indexes(indexes))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        self.expected_schema(ctx.schema_before())?;
        let table = ctx.table();
        if ctx.rows_before() == 0 && !self.rows.is_empty() {
            // Marked as the migration's own rows, so that a rollback
            // does not append them again as another writer's.
            crate::lance::commits::reappend(
                table,
                ctx.migration_id(),
                self.rows.clone(),
                ctx.fence(),
            )
            .await?;
            let added = crate::lance::latest_version(table).await?;
            ctx.record_detail("rows.first", self.first_rows().to_string());
            info!(
                table = self.table,
                version = added,
                rows = self.first_rows(),
                "first rows written"
            );
        }
        let existing = table.list_indices().await.map_err(Error::lance(format!(
            "list the indexes of `{}`",
            self.table
        )))?;
        for new in &self.indexes {
            if existing.iter().any(|have| have.name == new.name) {
                continue;
            }
            ctx.check_lease()?;
            table
                .create_index(&[new.column.as_str()], new.index.clone())
                .name(new.name.clone())
                .execute()
                .await
                .map_err(|e| Error::Index {
                    table: self.table.clone(),
                    index: new.name.clone(),
                    reason: "could not be built".to_owned(),
                    source: Some(Box::new(e)),
                })?;
            info!(table = self.table, index = new.name, "index built");
        }
        Ok(())
    }

    /// The declared schema, every declared index on its column, and the
    /// rows: at least the first rows when this run wrote them (the
    /// application may append beside it), the rows before otherwise.
    async fn verify(&self, ctx: &MigrationContext) -> Result<()> {
        let table = ctx.table();
        let name = &self.table;
        let schema = table
            .schema()
            .await
            .map_err(Error::lance(format!("read the schema of `{name}`")))?;
        let differences = differences(&schema, &self.schema, true);
        if !differences.is_empty() {
            return Err(Error::verification(name, differences.join("; ")));
        }
        let rows = crate::lance::row_count(table).await?;
        let wrote = ctx
            .details()
            .get("rows.first")
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(0);
        if rows < ctx.rows_before() + wrote {
            return Err(Error::verification(
                name,
                format!(
                    "{rows} rows, but {} were there and {wrote} first rows were written",
                    ctx.rows_before()
                ),
            ));
        }
        let indexes = table
            .list_indices()
            .await
            .map_err(Error::lance(format!("list the indexes of `{name}`")))?;
        for new in &self.indexes {
            match indexes.iter().find(|have| have.name == new.name) {
                Some(have) if have.columns == [new.column.clone()] => {}
                Some(have) => {
                    return Err(Error::verification(
                        name,
                        format!(
                            "index `{}` is on {:?}, declared on `{}`",
                            new.name, have.columns, new.column
                        ),
                    ));
                }
                None => {
                    return Err(Error::verification(
                        name,
                        format!("index `{}` is missing", new.name),
                    ));
                }
            }
        }
        ctx.check_indexes().await
    }
}
