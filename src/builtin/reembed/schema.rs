//! The schemas of a re-embed: what it accepts and produces, and LanceDB's
//! column definitions (positional, so rebuilt for the new field order) with
//! the target's embedding definition naming the new model.

use std::collections::{BTreeMap, HashMap};

use arrow_schema::{DataType, Field, Schema};
use lancedb::table::{ColumnDefinition, ColumnKind};
use serde_json::Value as Json;

use crate::builtin::reembed::ReEmbed;
use crate::error::{Error, Result};
use crate::lance::source::Source;

const COLUMN_DEFINITIONS_KEY: &str = "lancedb::column_definitions";
/// The schema metadata key under which the Python and TypeScript clients
/// keep their embedding configuration: a JSON list of `{name, model,
/// source_column, vector_column}` (Python's keys; the TypeScript client
/// writes `sourceColumn`, `vectorColumn`, and reads both).
pub(crate) const EMBEDDING_FUNCTIONS_KEY: &str = "embedding_functions";

/// The vector column an `embedding_functions` entry is for, under either
/// client's key.
fn vector_column(entry: &Json) -> Option<&str> {
    entry
        .get("vector_column")
        .or_else(|| entry.get("vectorColumn"))
        .and_then(Json::as_str)
}

impl ReEmbed {
    /// The schema after the re-embed, checking the input on the way.
    pub(super) fn schema_after(&self, before: &Schema) -> Result<Schema> {
        let table = &self.table;
        if self.batch_size == 0 || self.concurrency == 0 {
            return Err(self.invalid("batch_size and concurrency must be at least 1"));
        }
        self.client_entry()?;
        if self.source_expr.is_some() {
            self.check_expression(before)?;
        } else {
            self.check_source_column(before)?;
        }
        let staging = self.staging_column();
        if before.field_with_name(&staging).is_ok() {
            return Err(Error::ColumnExists {
                table: table.clone(),
                column: staging,
            });
        }
        let new = self.target_field()?;
        let mut fields: Vec<Field> = Vec::with_capacity(before.fields().len() + 1);
        let mut replaced = false;
        for field in before.fields() {
            if field.name() == &self.target {
                if !matches!(field.data_type(), DataType::FixedSizeList(..)) {
                    return Err(Error::ColumnType {
                        table: table.clone(),
                        column: self.target.clone(),
                        expected: "a vector column (fixed-size list), or no column of that name"
                            .to_owned(),
                        found: field.data_type().clone(),
                    });
                }
                fields.push(new.clone());
                replaced = true;
            } else {
                fields.push(field.as_ref().clone());
            }
        }
        if !replaced {
            fields.push(new);
        }
        Ok(Schema::new_with_metadata(fields, before.metadata().clone()))
    }

    /// The table's schema metadata after the swap, given the column names
    /// before and after it, in order.
    pub(super) fn metadata_after(
        &self,
        before: &[&str],
        after: &[&str],
        metadata: &HashMap<String, String>,
    ) -> HashMap<String, String> {
        let mut metadata = metadata.clone();
        match self.clients_after(&metadata) {
            Some(list) if list == "[]" => {
                metadata.remove(EMBEDDING_FUNCTIONS_KEY);
            }
            Some(list) => {
                metadata.insert(EMBEDDING_FUNCTIONS_KEY.to_owned(), list);
            }
            None => {}
        }
        let Some(raw) = metadata.get(COLUMN_DEFINITIONS_KEY) else {
            return metadata;
        };
        let Ok(defs) = serde_json::from_str::<Vec<ColumnDefinition>>(raw) else {
            return metadata;
        };
        let by_name: BTreeMap<&str, &ColumnDefinition> =
            before.iter().copied().zip(defs.iter()).collect();
        let rebuilt: Vec<ColumnDefinition> = after
            .iter()
            .map(|name| {
                let mut def = by_name.get(name).map_or(
                    ColumnDefinition {
                        kind: ColumnKind::Physical,
                    },
                    |d| (*d).clone(),
                );
                if *name == self.target
                    && let ColumnKind::Embedding(embedding) = &mut def.kind
                {
                    embedding.embedding_name = self.model.clone();
                }
                def
            })
            .collect();
        if let Ok(json) = serde_json::to_string(&rebuilt) {
            metadata.insert(COLUMN_DEFINITIONS_KEY.to_owned(), json);
        }
        metadata
    }

    /// The client-side entry for the target column, from
    /// [`client_embedding_config`](ReEmbed::client_embedding_config); `None`
    /// without one. An error when the JSON is not `{"name": "…", "model":
    /// {…}}`.
    pub(super) fn client_entry(&self) -> Result<Option<Json>> {
        let Some(config) = &self.client_config else {
            return Ok(None);
        };
        let bad = |why: &str| {
            self.invalid(format!(
                "client_embedding_config must be a JSON object with a string `name` and an object `model` ({why}): {config}"
            ))
        };
        let parsed: Json = serde_json::from_str(config).map_err(|e| bad(&e.to_string()))?;
        let (Some(name), Some(model)) = (
            parsed.get("name").and_then(Json::as_str),
            parsed.get("model").filter(|m| m.is_object()),
        ) else {
            return Err(bad("a field is missing or has the wrong type"));
        };
        Ok(Some(serde_json::json!({
            "name": name,
            "model": model,
            "source_column": self.source,
            "vector_column": self.target,
        })))
    }

    /// `metadata`'s client embedding configuration with the target column's
    /// entry replaced by [`client_entry`](Self::client_entry), or removed
    /// without one; `None` when nothing changes (no such metadata, no entry
    /// for the target and no client configuration given).
    pub(super) fn clients_after(&self, metadata: &HashMap<String, String>) -> Option<String> {
        let entry = self.client_entry().ok().flatten();
        let mut list: Vec<Json> = match metadata.get(EMBEDDING_FUNCTIONS_KEY) {
            Some(raw) => serde_json::from_str(raw).ok()?,
            None if entry.is_some() => Vec::new(),
            None => return None,
        };
        let before = list.len();
        list.retain(|e| vector_column(e) != Some(&self.target));
        if entry.is_none() && list.len() == before {
            return None;
        }
        list.extend(entry);
        serde_json::to_string(&list).ok()
    }

    /// The model a client entry for the target column names, when
    /// `metadata` has one.
    pub(super) fn client_model_before(&self, metadata: &HashMap<String, String>) -> Option<String> {
        let list: Vec<Json> = serde_json::from_str(metadata.get(EMBEDDING_FUNCTIONS_KEY)?).ok()?;
        list.iter()
            .find(|e| vector_column(e) == Some(&self.target))
            .map(|e| {
                let name = e.get("name").and_then(Json::as_str).unwrap_or("?");
                format!("{name} {}", e.get("model").cloned().unwrap_or_default())
            })
    }
}

impl ReEmbed {
    /// The source column exists and holds text, and is not the target.
    fn check_source_column(&self, before: &Schema) -> Result<()> {
        let table = &self.table;
        let source = before
            .field_with_name(&self.source)
            .map_err(|_| Error::ColumnNotFound {
                table: table.clone(),
                column: self.source.clone(),
            })?;
        if !matches!(
            source.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return Err(Error::ColumnType {
                table: table.clone(),
                column: self.source.clone(),
                expected: "text (Utf8)".to_owned(),
                found: source.data_type().clone(),
            });
        }
        if self.source == self.target {
            return Err(self.invalid("the source and target columns are the same column"));
        }
        Ok(())
    }

    /// The source expression reads columns the table has and gives text.
    fn check_expression(&self, before: &Schema) -> Result<()> {
        let spec = self.source_spec(before)?;
        if self.client_config.is_some() {
            return Err(self.invalid(
                "client_embedding_config names one source column for the other clients; it cannot go with source_expression",
            ));
        }
        let found = spec.data_type(before)?;
        if !matches!(
            found,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            let sql = self.source_expr.as_deref().unwrap_or_default();
            return Err(self.invalid(format!(
                "the source expression `{sql}` gives {found}, not text"
            )));
        }
        Ok(())
    }

    /// What the backfill embeds: the source column, or the expression.
    pub(super) fn source_spec(&self, before: &Schema) -> Result<Source> {
        match &self.source_expr {
            None => Ok(Source::Column(self.source.clone())),
            Some(sql) => Source::expression(sql, before).map_err(|reason| {
                self.invalid(format!(
                    "the source expression `{sql}` is not usable: {reason}"
                ))
            }),
        }
    }
}
