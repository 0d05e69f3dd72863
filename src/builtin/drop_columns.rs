//! `DropColumns`: drop columns in one metadata-only commit; the backup keeps
//! their data.

use std::collections::HashSet;

use arrow_schema::Schema;
use async_trait::async_trait;
use tracing::info;

use crate::error::{Error, Result};
use crate::migration::{Definition, Migration, MigrationContext};
use crate::migration::{MigrationPlan, TableInfo, Writes};

/// A migration that drops columns from a table.
///
/// LanceDB's `drop_columns` is one metadata-only commit: no data file is
/// read or written, and the dropped columns' data stays in the versions
/// before it. The backup (a tag on the version before) keeps it: a failed
/// run, [`Migrator::rollback_to`](crate::Migrator::rollback_to) or a restore
/// of the backup brings the columns back with their values. Once the backup
/// is pruned ([`Migrator::keep_backups`](crate::Migrator::keep_backups)) and the
/// old versions cleaned up, the data is gone.
///
/// Indexes on a dropped column go with it; the table's other indexes stay
/// as they were (the default [`rebuild`](Migration::rebuild) and
/// [`verify`](Migration::verify) skip indexes whose column is gone).
///
/// The application's writers must stop setting a dropped column before it
/// runs: LanceDB refuses a row with a column the table does not have. A
/// column the application still writes is best made nullable and left
/// unset first (one release), then dropped (the next).
///
/// # Examples
///
/// ```
/// use lancedb_migrate::DropColumns;
///
/// let migration = DropColumns::new("0007_drop_legacy", "documents")
///     .column("legacy_score")
///     .column("old_tags");
/// # let _ = migration;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct DropColumns {
    id: String,
    table: String,
    columns: Vec<String>,
}

impl DropColumns {
    /// A migration with id `id` that drops columns from `table`.
    pub fn new(id: impl Into<String>, table: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            table: table.into(),
            columns: Vec::new(),
        }
    }

    /// Adds a top-level column to drop.
    pub fn column(mut self, name: impl Into<String>) -> Self {
        self.columns.push(name.into());
        self
    }

    /// The columns this migration drops.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    fn check(&self, before: &Schema) -> Result<()> {
        let invalid = |reason: String| Error::InvalidMigration {
            migration: self.id.clone(),
            reason,
        };
        if self.columns.is_empty() {
            return Err(invalid("it drops no columns".to_owned()));
        }
        let mut names = HashSet::new();
        for column in &self.columns {
            if !names.insert(column.as_str()) {
                return Err(invalid(format!("column `{column}` is listed twice")));
            }
            if before.field_with_name(column).is_err() {
                return Err(Error::ColumnNotFound {
                    table: self.table.clone(),
                    column: column.clone(),
                });
            }
        }
        if names.len() == before.fields().len() {
            return Err(invalid(
                "it would drop every column; a Lance table keeps at least one".to_owned(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Migration for DropColumns {
    fn id(&self) -> &str {
        &self.id
    }

    fn table(&self) -> &str {
        &self.table
    }

    /// `drop_columns@1`: the table, then the columns' names, in order.
    fn definition(&self) -> String {
        Definition::new("drop_columns@1")
            .text("table", &self.table)
            .list(
                "columns",
                self.columns
                    .iter()
                    .map(|c| Definition::new("column").text("name", c)),
            )
            .finish()
    }

    /// `before` without the dropped columns.
    ///
    /// # Errors
    ///
    /// [`Error::ColumnNotFound`] for a column the table does not have;
    /// [`Error::InvalidMigration`] when no column is listed, one is listed
    /// twice, or every column would go. The migrator calls this before it
    /// touches anything.
    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        self.check(before)?;
        let kept: Vec<_> = before
            .fields()
            .iter()
            .filter(|f| !self.columns.contains(f.name()))
            .cloned()
            .collect();
        Ok(Schema::new_with_metadata(kept, before.metadata().clone()))
    }

    /// Metadata only; names the columns dropped and the indexes that go
    /// with them.
    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        let indexes: Vec<String> = self
            .columns
            .iter()
            .flat_map(|c| table.indexes_on(c))
            .collect();
        let mut summary = format!("drop {}", self.columns.join(", "));
        if !indexes.is_empty() {
            summary += &format!(" (and the indexes {})", indexes.join(", "));
        }
        Ok(MigrationPlan::new(summary)
            .writes(Writes::MetadataOnly)
            .columns(self.columns.clone()))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        let names: Vec<&str> = self.columns.iter().map(String::as_str).collect();
        let operation = format!("drop columns from `{}`", self.table);
        let dropped = ctx
            .retry_on_conflict(&operation, || ctx.table().drop_columns(&names))
            .await?;
        info!(
            table = self.table,
            version = dropped.version,
            columns = ?self.columns,
            "columns dropped"
        );
        Ok(())
    }
}
