//! Checks a `verify` hook makes: the table's schema and row count
//! against what the migration promised.

use arrow_schema::{Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::lance::commits::append_commits;

use super::MigrationContext;

impl MigrationContext {
    /// The table's current schema.
    ///
    /// # Errors
    ///
    /// [`Error::LanceDb`] when the schema cannot be read.
    pub async fn current_schema(&self) -> Result<SchemaRef> {
        self.table.schema().await.map_err(Error::lance(format!(
            "read the schema of table `{}`",
            self.table_name()
        )))
    }

    /// Checks that the migration neither lost nor added rows: the table has
    /// as many rows as before, plus those that other writers appended while
    /// the migration ran (LanceDB `Append` commits since the migration
    /// started).
    ///
    /// A migration that appends rows to its own table itself must check
    /// row counts its own way.
    ///
    /// # Errors
    ///
    /// [`Error::Verification`] naming the counts when they differ.
    pub async fn check_row_count(&self) -> Result<()> {
        let name = self.table_name();
        // Count at the version the appends are listed up to, so that an
        // append landing in between cannot make them disagree; a quiet
        // table (the count unchanged) needs no list.
        let (version, now) = crate::lance::latest_row_count(&self.table).await?;
        if now == self.rows_before {
            return Ok(());
        }
        let commits = append_commits(&self.table, self.version_before + 1..version + 1).await?;
        let appended: u64 = commits.iter().map(|c| c.rows).sum();
        if now == self.rows_before || now == self.rows_before + appended {
            return Ok(());
        }
        Err(Error::verification(
            name,
            format!(
                "row count changed from {} to {now} ({appended} rows were appended by other writers meanwhile)",
                self.rows_before
            ),
        ))
    }

    /// Checks that the table's schema has exactly the fields of `expected`:
    /// the same names, data types and nullability (order and metadata are not
    /// compared).
    ///
    /// # Errors
    ///
    /// [`Error::Verification`] naming the first difference.
    pub async fn check_schema(&self, expected: &Schema) -> Result<()> {
        let actual = self.current_schema().await?;
        match schema_difference(expected, &actual) {
            None => Ok(()),
            Some(diff) => Err(Error::verification(self.table_name(), diff)),
        }
    }
}

/// The first difference between two schemas' fields, in words.
fn schema_difference(expected: &Schema, actual: &Schema) -> Option<String> {
    for want in expected.fields() {
        let Ok(got) = actual.field_with_name(want.name()) else {
            return Some(format!("column `{}` is missing", want.name()));
        };
        if !got.data_type().equals_datatype(want.data_type()) {
            return Some(format!(
                "column `{}` has type {}, expected {}",
                want.name(),
                got.data_type(),
                want.data_type()
            ));
        }
        if got.is_nullable() != want.is_nullable() {
            return Some(format!(
                "column `{}` has nullable={}, expected nullable={}",
                want.name(),
                got.is_nullable(),
                want.is_nullable()
            ));
        }
    }
    actual
        .fields()
        .iter()
        .find(|got| expected.field_with_name(got.name()).is_err())
        .map(|extra| format!("column `{}` was not expected", extra.name()))
}
