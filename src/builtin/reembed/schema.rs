//! The schemas of a re-embed: what it accepts and produces, and LanceDB's
//! column definitions (positional, so rebuilt for the new field order) with
//! the target's embedding definition naming the new model.

use std::collections::{BTreeMap, HashMap};

use arrow_schema::{DataType, Field, Schema};
use lancedb::table::{ColumnDefinition, ColumnKind};

use crate::builtin::reembed::ReEmbed;
use crate::error::{Error, Result};

const COLUMN_DEFINITIONS_KEY: &str = "lancedb::column_definitions";

impl ReEmbed {
    /// The schema after the re-embed, checking the input on the way.
    pub(super) fn schema_after(&self, before: &Schema) -> Result<Schema> {
        let table = &self.table;
        if self.batch_size == 0 || self.concurrency == 0 {
            return Err(self.invalid("batch_size and concurrency must be at least 1"));
        }
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
}
