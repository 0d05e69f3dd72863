//! What a backfill computes from: one column, or an SQL expression over
//! the row's columns (evaluated by Lance's DataFusion planner, as Lance
//! evaluates the SQL of `add_columns`).

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema};
use datafusion_physical_expr::PhysicalExpr;
use lance_datafusion::planner::Planner;

use crate::error::{Error, Result};

/// The input of a backfill's computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// One column's values.
    Column(String),
    /// An SQL expression over the columns it names (`title || ' ' || body`).
    Expression {
        /// The expression.
        sql: String,
        /// The columns it reads, sorted.
        columns: Vec<String>,
    },
}

impl Source {
    /// A source of the expression `sql` over a table of `schema`, or why it
    /// is not one: it does not parse, names no column or an unknown one.
    pub(crate) fn expression(sql: &str, schema: &Schema) -> std::result::Result<Self, String> {
        let planner = Planner::new(Arc::new(schema.clone()));
        let expr = planner.parse_expr(sql).map_err(|e| e.to_string())?;
        let columns = Planner::column_names_in_expr(&expr);
        if columns.is_empty() {
            return Err("it reads no column".to_owned());
        }
        for column in &columns {
            if schema.field_with_name(column).is_err() {
                return Err(format!("the table has no column `{column}`"));
            }
        }
        Ok(Self::Expression {
            sql: sql.to_owned(),
            columns,
        })
    }

    /// The columns to read.
    pub(crate) fn columns(&self) -> Vec<&str> {
        match self {
            Self::Column(c) => vec![c.as_str()],
            Self::Expression { columns, .. } => columns.iter().map(String::as_str).collect(),
        }
    }

    /// The SQL condition "the source has a value" (`IS NOT NULL`).
    pub(crate) fn is_set(&self) -> String {
        match self {
            Self::Column(c) => format!("{} IS NOT NULL", super::backfill::quote(c)),
            Self::Expression { sql, .. } => format!("({sql}) IS NOT NULL"),
        }
    }

    /// The source's values for the rows of `batch`, which holds (at least)
    /// [`columns`](Self::columns).
    pub(crate) fn values(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        match self {
            Self::Column(c) => batch
                .column_by_name(c)
                .cloned()
                .ok_or_else(|| Error::verification("source", format!("column `{c}` was not read"))),
            Self::Expression { sql, .. } => {
                let failed = |e: String| {
                    Error::custom(format!(
                        "the source expression `{sql}` could not be evaluated: {e}"
                    ))
                };
                let planner = Planner::new(batch.schema());
                let expr = planner
                    .parse_expr(sql)
                    .and_then(|e| planner.optimize_expr(e))
                    .and_then(|e| planner.create_physical_expr(&e))
                    .map_err(|e| failed(e.to_string()))?;
                let values = evaluate(&expr, batch).map_err(failed)?;
                // DataFusion's string functions may give string views;
                // embedding functions take Utf8.
                match values.data_type() {
                    DataType::Utf8View => arrow_cast::cast(&values, &DataType::Utf8)
                        .map_err(Error::arrow("convert the source expression's text")),
                    _ => Ok(values),
                }
            }
        }
    }

    /// The type the source's values have on a table of `schema` (the
    /// expression evaluated on no rows).
    pub(crate) fn data_type(&self, schema: &Schema) -> Result<DataType> {
        let empty = RecordBatch::new_empty(Arc::new(schema.clone()));
        Ok(self.values(&empty)?.data_type().clone())
    }
}

fn evaluate(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> std::result::Result<ArrayRef, String> {
    expr.evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::StringArray;
    use arrow_array::cast::AsArray;
    use arrow_schema::Field;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("title", DataType::Utf8, true),
            Field::new("body", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("A"), None, Some("C")])),
                Arc::new(StringArray::from(vec![Some("x"), Some("y"), None])),
                Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn an_expression_reads_its_columns_and_evaluates_on_the_rows() {
        let b = batch();
        let source = Source::expression("title || ' ' || body", &b.schema()).unwrap();
        assert_eq!(source.columns(), ["body", "title"]);
        let values = source.values(&b).unwrap();
        let values: Vec<Option<&str>> = values.as_string::<i32>().iter().collect();
        assert_eq!(values, [Some("A x"), None, None]);
        let ws = Source::expression("concat_ws(' ', title, body)", &b.schema()).unwrap();
        let values = ws.values(&b).unwrap();
        let values: Vec<Option<&str>> = values.as_string_view_opt().map_or_else(
            || values.as_string::<i32>().iter().collect(),
            |v| v.iter().collect(),
        );
        assert_eq!(values, [Some("A x"), Some("y"), Some("C")]);
        assert_eq!(source.data_type(&b.schema()).unwrap(), DataType::Utf8);
    }

    #[test]
    fn bad_expressions_are_refused() {
        let schema = batch().schema();
        assert!(Source::expression("title ||", &schema).is_err());
        assert!(Source::expression("'constant'", &schema).is_err());
        assert!(Source::expression("nope || title", &schema).is_err());
    }
}
