//! A [`TargetSchema`] from a Rust row type (feature `serde_arrow`), as a
//! pydantic `LanceModel` declares a table in Python.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, FieldRef, Schema};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_arrow::schema::{SchemaLike, TracingOptions};

use super::TargetSchema;
use crate::builtin::default_value::DefaultValue;
use crate::error::{Error, Result};

impl TargetSchema {
    /// The schema of row type `T`, traced from its serde derives with
    /// [`serde_arrow`], and the defaults of its [`Default`] value: what
    /// existing rows get in each column the table lacks.
    ///
    /// - `String` is `Utf8`, `bool` `Boolean`, `i64` `Int64`, `f32`
    ///   `Float32`…; an `Option<_>` field is nullable, the others NOT NULL.
    /// - A `Vec<f32>` is a list without a dimension: declare vector columns
    ///   with [`vector`](Self::vector). Other types are set with
    ///   [`column_type`](Self::column_type) (a timestamp kept as `i64`
    ///   microseconds, say), which also drops the column's default from
    ///   `T::default()`.
    /// - A default of `None`, and a default that is not a plain value
    ///   (a list, a struct), gives no default: such a nullable column is
    ///   added all-NULL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMigration`] when `T` cannot be traced (a type serde
    /// cannot describe without a value, such as an untagged enum) or its
    /// default cannot be written as a row.
    ///
    /// # Examples
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use lancedb_migrate::{DefaultValue, TargetSchema};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Document {
    ///     id: i64,
    ///     text: String,
    ///     vector: Vec<f32>,
    ///     category: String,
    ///     is_active: bool,
    ///     created_at: i64,
    ///     metadata: Option<String>,
    /// }
    ///
    /// impl Default for Document {
    ///     fn default() -> Self {
    ///         Self {
    ///             id: 0,
    ///             text: String::new(),
    ///             vector: Vec::new(),
    ///             category: "general".into(),
    ///             is_active: true,
    ///             created_at: 0,
    ///             metadata: None,
    ///         }
    ///     }
    /// }
    ///
    /// use arrow_schema::{DataType, TimeUnit};
    /// let target = TargetSchema::from_row::<Document>("documents")?
    ///     .vector("vector", 384)
    ///     .column_type("created_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))
    ///     .default("created_at", DefaultValue::MigrationTime);
    /// assert_eq!(target.default_of("category"), Some(&DefaultValue::from("general")));
    /// assert!(target.schema().field_with_name("metadata").unwrap().is_nullable());
    /// # Ok::<(), lancedb_migrate::Error>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "serde_arrow")))]
    pub fn from_row<T>(table: impl Into<String>) -> Result<Self>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        let table = table.into();
        let invalid = |what: &str, e: serde_arrow::Error| Error::InvalidMigration {
            migration: format!("{table}{}", super::steps::ID_MARK),
            reason: format!("its row type cannot be {what}: {e}"),
        };
        let options = TracingOptions::default()
            .strings_as_large_utf8(false)
            .sequence_as_large_list(false)
            .bytes_as_large_binary(false);
        let fields = Vec::<FieldRef>::from_type::<T>(options)
            .map_err(|e| invalid("traced as an Arrow schema", e))?;
        let row = serde_arrow::to_record_batch(&fields, &[T::default()])
            .map_err(|e| invalid("written as a row (its Default)", e))?;
        let mut target = Self::new(table, Schema::new(fields.clone()));
        for (field, column) in fields.iter().zip(row.columns()) {
            if let Some(value) = default_value(column) {
                target = target.default(field.name().clone(), value);
            }
        }
        Ok(target)
    }
}

/// The first value of `column` as a default, when it is a plain value.
fn default_value(column: &ArrayRef) -> Option<DefaultValue> {
    if column.is_empty() || column.is_null(0) {
        return None;
    }
    let value = match column.data_type() {
        DataType::Utf8 => DefaultValue::Utf8(column.as_string::<i32>().value(0).to_owned()),
        DataType::LargeUtf8 => DefaultValue::Utf8(column.as_string::<i64>().value(0).to_owned()),
        DataType::Boolean => DefaultValue::Bool(column.as_boolean().value(0)),
        DataType::Int8 => DefaultValue::Int(column.as_primitive::<Int8Type>().value(0).into()),
        DataType::Int16 => DefaultValue::Int(column.as_primitive::<Int16Type>().value(0).into()),
        DataType::Int32 => DefaultValue::Int(column.as_primitive::<Int32Type>().value(0).into()),
        DataType::Int64 => DefaultValue::Int(column.as_primitive::<Int64Type>().value(0)),
        DataType::UInt8 => DefaultValue::UInt(column.as_primitive::<UInt8Type>().value(0).into()),
        DataType::UInt16 => DefaultValue::UInt(column.as_primitive::<UInt16Type>().value(0).into()),
        DataType::UInt32 => DefaultValue::UInt(column.as_primitive::<UInt32Type>().value(0).into()),
        DataType::UInt64 => DefaultValue::UInt(column.as_primitive::<UInt64Type>().value(0)),
        DataType::Float32 => {
            DefaultValue::Float(column.as_primitive::<Float32Type>().value(0).into())
        }
        DataType::Float64 => DefaultValue::Float(column.as_primitive::<Float64Type>().value(0)),
        _ => return None,
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::sync::Arc;

    #[derive(Serialize, Deserialize)]
    struct Row {
        id: i64,
        text: String,
        vector: Vec<f32>,
        score: f32,
        tags: Option<String>,
    }

    impl Default for Row {
        fn default() -> Self {
            Self {
                id: 7,
                text: "none".into(),
                vector: vec![1.0],
                score: 0.5,
                tags: None,
            }
        }
    }

    #[test]
    fn a_row_type_gives_its_columns_and_its_defaults() {
        let target = TargetSchema::from_row::<Row>("t")
            .unwrap()
            .vector("vector", 4);
        let schema = target.schema();
        let types: Vec<(&str, &DataType, bool)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type(), f.is_nullable()))
            .collect();
        let item = Arc::new(arrow_schema::Field::new("item", DataType::Float32, true));
        assert_eq!(
            types,
            [
                ("id", &DataType::Int64, false),
                ("text", &DataType::Utf8, false),
                ("vector", &DataType::FixedSizeList(item, 4), false),
                ("score", &DataType::Float32, false),
                ("tags", &DataType::Utf8, true),
            ]
        );
        assert_eq!(target.default_of("id"), Some(&DefaultValue::Int(7)));
        assert_eq!(
            target.default_of("text"),
            Some(&DefaultValue::Utf8("none".into()))
        );
        assert_eq!(target.default_of("score"), Some(&DefaultValue::Float(0.5)));
        assert_eq!(target.default_of("vector"), None);
        assert_eq!(target.default_of("tags"), None);
    }
}
