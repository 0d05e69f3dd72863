//! [`SchemaChange`]: the schema a migration leaves, built from the one
//! before, for a custom migration's `expected_schema`.

use std::collections::HashMap;

use arrow_schema::{DataType, Field, Schema};

use crate::error::{Error, Result};

/// The schema a migration leaves, built from the one it finds: what a
/// custom migration's [`expected_schema`](crate::Migration::expected_schema)
/// returns. Columns keep their order; added ones go last, as LanceDB adds
/// them. Field and schema metadata are kept.
///
/// Each step names a column; the first step that names a column the schema
/// does not have (or adds one it has) is the error
/// [`finish`](Self::finish) returns, so `expected_schema` refuses bad input
/// before anything is written.
///
/// # Examples
///
/// ```
/// use arrow_schema::{DataType, Field, Schema};
/// use lancedb_migrate::SchemaChange;
///
/// let before = Schema::new(vec![
///     Field::new("id", DataType::Int64, false),
///     Field::new("text", DataType::Utf8, false),
///     Field::new("legacy", DataType::Utf8, true),
/// ]);
/// let after = SchemaChange::new("documents", &before)
///     .add_column(Field::new("text_length", DataType::Int64, true))
///     .drop_column("legacy")
///     .rename_column("text", "body")
///     .set_nullable("body", true)
///     .finish()?;
/// let names: Vec<&str> = after.fields().iter().map(|f| f.name().as_str()).collect();
/// assert_eq!(names, ["id", "body", "text_length"]);
/// assert!(after.field_with_name("body")?.is_nullable());
///
/// let missing = SchemaChange::new("documents", &before).drop_column("nope").finish();
/// assert!(matches!(missing, Err(lancedb_migrate::Error::ColumnNotFound { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "a SchemaChange is a schema only once `finish` is called"]
pub struct SchemaChange {
    table: String,
    fields: Vec<Field>,
    metadata: HashMap<String, String>,
    error: Option<Error>,
}

impl SchemaChange {
    /// Starts from `before`, the schema of `table` (named in errors).
    pub fn new(table: impl Into<String>, before: &Schema) -> Self {
        Self {
            table: table.into(),
            fields: before.fields().iter().map(|f| f.as_ref().clone()).collect(),
            metadata: before.metadata().clone(),
            error: None,
        }
    }

    /// Appends `field`.
    pub fn add_column(mut self, field: Field) -> Self {
        if self.error.is_none() && self.position(field.name()).is_some() {
            self.error = Some(Error::ColumnExists {
                table: self.table.clone(),
                column: field.name().clone(),
            });
        }
        self.fields.push(field);
        self
    }

    /// Removes column `name`.
    pub fn drop_column(mut self, name: &str) -> Self {
        if let Some(i) = self.find(name) {
            self.fields.remove(i);
        }
        self
    }

    /// Renames column `from` to `to`, in place.
    pub fn rename_column(mut self, from: &str, to: &str) -> Self {
        if self.error.is_none() && self.position(to).is_some() {
            self.error = Some(Error::ColumnExists {
                table: self.table.clone(),
                column: to.to_owned(),
            });
        }
        if let Some(i) = self.find(from) {
            let field = self.fields[i].clone().with_name(to);
            self.fields[i] = field;
        }
        self
    }

    /// Gives column `name` the type `data_type`, in place.
    pub fn set_type(mut self, name: &str, data_type: DataType) -> Self {
        if let Some(i) = self.find(name) {
            let field = self.fields[i].clone().with_data_type(data_type);
            self.fields[i] = field;
        }
        self
    }

    /// Makes column `name` nullable (`true`) or NOT NULL.
    pub fn set_nullable(mut self, name: &str, nullable: bool) -> Self {
        if let Some(i) = self.find(name) {
            let field = self.fields[i].clone().with_nullable(nullable);
            self.fields[i] = field;
        }
        self
    }

    /// The schema, or the first error a step met.
    ///
    /// # Errors
    ///
    /// [`Error::ColumnNotFound`] for a step on a column the schema does not
    /// have; [`Error::ColumnExists`] for an added or renamed-to column it
    /// has.
    pub fn finish(self) -> Result<Schema> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(Schema::new_with_metadata(self.fields, self.metadata)),
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name() == name)
    }

    /// The position of `name`, or the error recorded.
    fn find(&mut self, name: &str) -> Option<usize> {
        let found = self.position(name);
        if found.is_none() && self.error.is_none() {
            self.error = Some(Error::ColumnNotFound {
                table: self.table.clone(),
                column: name.to_owned(),
            });
        }
        found
    }
}
