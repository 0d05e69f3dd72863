//! `RenameColumn`: rename a column in one metadata-only commit, its indexes
//! and the clients' embedding configuration following it.

use std::collections::HashMap;

use arrow_schema::{Field, Schema};
use async_trait::async_trait;
use lancedb::table::ColumnAlteration;
use serde_json::Value as Json;
use tracing::info;

use crate::builtin::reembed::EMBEDDING_FUNCTIONS_KEY;
use crate::error::{Error, Result};
use crate::migration::{Definition, Migration, MigrationContext};
use crate::migration::{MigrationPlan, TableInfo, Writes};

/// The keys of an `embedding_functions` entry that name a column, as the
/// Python and the TypeScript clients write them.
const COLUMN_KEYS: [&str; 4] = [
    "source_column",
    "vector_column",
    "sourceColumn",
    "vectorColumn",
];

/// A migration that renames a top-level column.
///
/// LanceDB's rename is one metadata-only commit: no data is read or
/// written, and the column keeps its data and its indexes (an index keeps
/// its name, e.g. `vector_idx` on a column renamed to `embedding`). When
/// the Python or TypeScript client's embedding configuration (the schema
/// metadata `embedding_functions`) names the column as a source or a
/// vector column, a second metadata-only commit rewrites it, so that the
/// clients embed into and from the column under its new name.
///
/// The application's readers and writers must use the new name once it
/// runs (LanceDB refuses a row with a column the table does not have); on a
/// table written while it runs, leave the column unset in appends (it must
/// be nullable) until the new code is out.
///
/// # Examples
///
/// ```
/// use lancedb_migrate::RenameColumn;
///
/// let migration = RenameColumn::new("0008_rename_vector", "documents", "vector", "embedding");
/// # let _ = migration;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct RenameColumn {
    id: String,
    table: String,
    from: String,
    to: String,
}

impl RenameColumn {
    /// A migration with id `id` that renames column `from` of `table` to
    /// `to`.
    pub fn new(
        id: impl Into<String>,
        table: impl Into<String>,
        from: impl Into<String>,
        to: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            table: table.into(),
            from: from.into(),
            to: to.into(),
        }
    }

    /// The column's name before.
    pub fn from(&self) -> &str {
        &self.from
    }

    /// The column's name after.
    pub fn to(&self) -> &str {
        &self.to
    }

    fn check(&self, before: &Schema) -> Result<()> {
        if self.from == self.to || self.to.is_empty() {
            return Err(Error::InvalidMigration {
                migration: self.id.clone(),
                reason: format!(
                    "it renames `{}` to `{}`: give a different, non-empty name",
                    self.from, self.to
                ),
            });
        }
        if before.field_with_name(&self.from).is_err() {
            return Err(Error::ColumnNotFound {
                table: self.table.clone(),
                column: self.from.clone(),
            });
        }
        if before.field_with_name(&self.to).is_ok() {
            return Err(Error::ColumnExists {
                table: self.table.clone(),
                column: self.to.clone(),
            });
        }
        Ok(())
    }

    /// The clients' embedding configuration in `metadata` with every
    /// mention of the column under its old name changed to the new one;
    /// `None` when it has none.
    fn clients_after(&self, metadata: &HashMap<String, String>) -> Option<String> {
        let mut list: Vec<Json> =
            serde_json::from_str(metadata.get(EMBEDDING_FUNCTIONS_KEY)?).ok()?;
        let mut changed = false;
        for entry in &mut list {
            for key in COLUMN_KEYS {
                if let Some(value) = entry.get_mut(key)
                    && value.as_str() == Some(self.from.as_str())
                {
                    *value = Json::String(self.to.clone());
                    changed = true;
                }
            }
        }
        changed.then(|| serde_json::to_string(&list).ok()).flatten()
    }
}

#[async_trait]
impl Migration for RenameColumn {
    fn id(&self) -> &str {
        &self.id
    }

    fn table(&self) -> &str {
        &self.table
    }

    /// `rename_column@1`: the table and the two names.
    fn definition(&self) -> String {
        Definition::new("rename_column@1")
            .text("table", &self.table)
            .text("from", &self.from)
            .text("to", &self.to)
            .finish()
    }

    /// `before` with the column renamed in place (same type, nullability
    /// and field metadata), and the clients' embedding configuration
    /// following it.
    ///
    /// # Errors
    ///
    /// [`Error::ColumnNotFound`] (no column `from`), [`Error::ColumnExists`]
    /// (a column `to` already), [`Error::InvalidMigration`] (the same or
    /// an empty name). The migrator calls this before it touches anything.
    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        self.check(before)?;
        let fields: Vec<Field> = before
            .fields()
            .iter()
            .map(|f| match f.name() == &self.from {
                true => f.as_ref().clone().with_name(&self.to),
                false => f.as_ref().clone(),
            })
            .collect();
        let mut metadata = before.metadata().clone();
        if let Some(clients) = self.clients_after(&metadata) {
            metadata.insert(EMBEDDING_FUNCTIONS_KEY.to_owned(), clients);
        }
        Ok(Schema::new_with_metadata(fields, metadata))
    }

    /// Metadata only.
    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        let indexes = table.indexes_on(&self.from);
        let mut summary = format!("rename `{}` to `{}`", self.from, self.to);
        if !indexes.is_empty() {
            summary += &format!(" (its indexes {} follow it)", indexes.join(", "));
        }
        Ok(MigrationPlan::new(summary)
            .writes(Writes::MetadataOnly)
            .columns([self.to.clone()]))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        let rename = [ColumnAlteration::new(self.from.clone()).rename(self.to.clone())];
        let operation = format!("rename `{}` of `{}`", self.from, self.table);
        let renamed = ctx
            .retry_on_conflict(&operation, || ctx.table().alter_columns(&rename))
            .await?;
        info!(
            table = self.table,
            version = renamed.version,
            from = self.from,
            to = self.to,
            "column renamed"
        );
        let clients = self.clients_after(ctx.schema_before().metadata());
        if let (Some(clients), Some(native)) = (clients, ctx.table().as_native()) {
            let operation = format!("rewrite the embedding configuration of `{}`", self.table);
            ctx.retry_on_conflict(&operation, || async {
                let mut metadata = ctx.table().schema().await?.metadata().clone();
                metadata.insert(EMBEDDING_FUNCTIONS_KEY.to_owned(), clients.clone());
                native.replace_schema_metadata(metadata).await
            })
            .await?;
        }
        Ok(())
    }

    /// The default checks, and that the clients' embedding configuration
    /// names the column by its new name.
    async fn verify(&self, ctx: &MigrationContext) -> Result<()> {
        ctx.check_row_count().await?;
        let expected = self.expected_schema(ctx.schema_before())?;
        ctx.check_schema(&expected).await?;
        let now = ctx.current_schema().await?;
        if let Some(clients) = expected.metadata().get(EMBEDDING_FUNCTIONS_KEY)
            && ctx.table().as_native().is_some()
            && now.metadata().get(EMBEDDING_FUNCTIONS_KEY) != Some(clients)
        {
            return Err(Error::verification(
                &self.table,
                "the clients' embedding configuration still names the old column",
            ));
        }
        ctx.check_indexes().await
    }
}
