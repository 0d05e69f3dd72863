//! The steps from a table's schema to a [`TargetSchema`]: what to drop,
//! cast, relax and add, or why it cannot be reached.

use arrow_schema::{DataType, Schema};

use super::TargetSchema;
use crate::builtin::cast_column::same_family;
use crate::builtin::{AddColumns, CastColumn, DropColumns, NewColumn};
use crate::error::{Error, Result};
use crate::migration::Migration;

/// What separates a declaration's table name from its checksum in its id.
pub(super) const ID_MARK: &str = "@schema:";

/// The table a declaration's id names (`documents@schema:0123456789ab` →
/// `documents`), or `None` for an id of another kind.
pub(crate) fn declared_table(id: &str) -> Option<&str> {
    let (table, hash) = id.rsplit_once(ID_MARK)?;
    let hex = hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then_some(table)
}

/// The steps, in the order they run: drop, cast, relax, add.
#[derive(Debug, Default)]
pub(super) struct Steps {
    pub(super) drop: Vec<String>,
    pub(super) cast: Vec<(String, DataType)>,
    pub(super) relax: Vec<String>,
    pub(super) add: Vec<NewColumn>,
}

impl Steps {
    /// The steps from `before` to `target`, or the error naming every
    /// difference that refuses them.
    pub(super) fn plan(target: &TargetSchema, before: &Schema) -> Result<Self> {
        let mut steps = Self::default();
        let mut destructive = Vec::new();
        let mut mismatches = Vec::new();
        for field in before.fields() {
            if target.schema.field_with_name(field.name()).is_err() {
                match target.allow_drops {
                    true => steps.drop.push(field.name().clone()),
                    false => destructive.push(format!("drop column `{}`", field.name())),
                }
            }
        }
        for want in target.schema.fields() {
            let name = want.name();
            let Ok(have) = before.field_with_name(name) else {
                let mut column = NewColumn::new(name.clone(), want.data_type().clone());
                if let Some(value) = target.default_of(name) {
                    column = column.default_value(value.clone());
                }
                if !want.is_nullable() {
                    column = column.not_null();
                }
                steps.add.push(column);
                continue;
            };
            let (from, to) = (have.data_type(), want.data_type());
            if from != to {
                match change(from, to) {
                    Change::Widen => steps.cast.push((name.clone(), to.clone())),
                    Change::Narrow if target.allow_narrowing => {
                        steps.cast.push((name.clone(), to.clone()));
                    }
                    Change::Narrow => {
                        destructive.push(format!("narrow column `{name}` from {from} to {to}"));
                    }
                    Change::Unreachable(why) => {
                        mismatches.push(format!("column `{name}` is {from}, declared {to}{why}"));
                    }
                }
            }
            match (have.is_nullable(), want.is_nullable()) {
                (false, true) => steps.relax.push(name.clone()),
                (true, false) => mismatches.push(format!(
                    "column `{name}` is nullable, declared NOT NULL (fill its NULLs with FillColumn, then declare it)"
                )),
                _ => {}
            }
        }
        if !mismatches.is_empty() {
            return Err(Error::SchemaMismatch {
                table: target.table.clone(),
                differences: mismatches,
            });
        }
        if !destructive.is_empty() {
            return Err(Error::Destructive {
                table: target.table.clone(),
                changes: destructive,
            });
        }
        if let Some(add) = steps.add_columns(&target.id, &target.table) {
            add.expected_schema(before)?;
        }
        if steps.drop.len() == before.fields().len() {
            return Err(target.invalid(
                "it shares no column with the table, which would lose every column; a Lance table keeps at least one",
            ));
        }
        Ok(steps)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.drop.is_empty() && self.cast.is_empty() && self.relax.is_empty() && self.add.is_empty()
    }

    /// Whether a step writes column data (a cast, a defaulted column).
    pub(super) fn writes_data(&self) -> bool {
        !self.cast.is_empty() || self.add.iter().any(NewColumn::has_default)
    }

    /// Every column a step touches.
    pub(super) fn columns(&self) -> Vec<String> {
        let mut out = self.drop.clone();
        out.extend(self.cast.iter().map(|(c, _)| c.clone()));
        out.extend(self.relax.iter().cloned());
        out.extend(self.add.iter().map(|c| c.name().to_owned()));
        let mut seen = std::collections::HashSet::new();
        out.retain(|c| seen.insert(c.clone()));
        out
    }

    /// The steps in words.
    pub(super) fn summary(&self, table: &str) -> String {
        if self.is_empty() {
            return format!("nothing: `{table}` has the declared schema (adopted as it is)");
        }
        let mut parts = Vec::new();
        if !self.drop.is_empty() {
            parts.push(format!("drop {}", self.drop.join(", ")));
        }
        for (column, to) in &self.cast {
            parts.push(format!("cast `{column}` to {to}"));
        }
        if !self.relax.is_empty() {
            parts.push(format!("make {} nullable", self.relax.join(", ")));
        }
        if !self.add.is_empty() {
            let names: Vec<&str> = self.add.iter().map(NewColumn::name).collect();
            parts.push(format!(
                "add {} column(s): {}",
                names.len(),
                names.join(", ")
            ));
        }
        parts.join("; ")
    }

    pub(super) fn drop_columns(&self, id: &str, table: &str) -> Option<DropColumns> {
        if self.drop.is_empty() {
            return None;
        }
        let drop = DropColumns::new(format!("{id}/drop"), table);
        Some(self.drop.iter().fold(drop, |d, c| d.column(c.clone())))
    }

    /// One [`CastColumn`] per column, each with its own id (its
    /// checkpoint's key).
    pub(super) fn cast_columns(&self, id: &str, table: &str) -> Vec<CastColumn> {
        self.cast
            .iter()
            .map(|(column, to)| {
                CastColumn::new(format!("{id}/cast/{column}"), table, column, to.clone())
            })
            .collect()
    }

    pub(super) fn add_columns(&self, id: &str, table: &str) -> Option<AddColumns> {
        if self.add.is_empty() {
            return None;
        }
        let add = AddColumns::new(format!("{id}/add"), table);
        Some(self.add.iter().fold(add, |a, c| a.column(c.clone())))
    }

    /// `before` after the steps, each step's own `expected_schema` in turn.
    pub(super) fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        let mut schema = before.clone();
        if let Some(drop) = self.drop_columns("target", "table") {
            schema = drop.expected_schema(&schema)?;
        }
        for cast in self.cast_columns("target", "table") {
            schema = cast.expected_schema(&schema)?;
        }
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| match self.relax.contains(f.name()) {
                true => std::sync::Arc::new(f.as_ref().clone().with_nullable(true)),
                false => f.clone(),
            })
            .collect();
        schema = Schema::new_with_metadata(fields, schema.metadata().clone());
        if let Some(add) = self.add_columns("target", "table") {
            schema = add.expected_schema(&schema)?;
        }
        Ok(schema)
    }
}

/// What changing a column's type from `from` to `to` is.
enum Change {
    Widen,
    Narrow,
    /// No cast reaches it; why, for the error.
    Unreachable(&'static str),
}

fn change(from: &DataType, to: &DataType) -> Change {
    use DataType::*;
    match (from, to) {
        (FixedSizeList(..), FixedSizeList(..)) => Change::Unreachable(
            " (a vector of another dimension or element type: re-embed it with ReEmbed)",
        ),
        (List(_) | LargeList(_) | FixedSizeList(..), _)
        | (_, List(_) | LargeList(_) | FixedSizeList(..)) => {
            Change::Unreachable(" (list columns are not cast by a declaration: use CastColumn)")
        }
        _ if !same_family(from, to) => Change::Unreachable(
            " (another type family: add a new column and fill it with FillColumn)",
        ),
        (Utf8, LargeUtf8) | (Binary, LargeBinary) => Change::Widen,
        (f, t) if f.is_floating() && t.is_floating() => width(f, t),
        (f, t) if f.is_signed_integer() && t.is_signed_integer() => width(f, t),
        (f, t) if f.is_unsigned_integer() && t.is_unsigned_integer() => width(f, t),
        (f, t) if f.is_unsigned_integer() && t.is_signed_integer() => {
            match (f.primitive_width(), t.primitive_width()) {
                (Some(a), Some(b)) if b > a => Change::Widen,
                _ => Change::Narrow,
            }
        }
        _ => Change::Narrow,
    }
}

fn width(from: &DataType, to: &DataType) -> Change {
    match (from.primitive_width(), to.primitive_width()) {
        (Some(a), Some(b)) if b > a => Change::Widen,
        _ => Change::Narrow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;

    fn kind(from: DataType, to: DataType) -> &'static str {
        match change(&from, &to) {
            Change::Widen => "widen",
            Change::Narrow => "narrow",
            Change::Unreachable(_) => "unreachable",
        }
    }

    #[test]
    fn type_changes_are_classified() {
        let cases = [
            (Int32, Int64, "widen"),
            (Int64, Int32, "narrow"),
            (UInt16, Int32, "widen"),
            (UInt32, Int32, "narrow"),
            (Int32, UInt64, "narrow"),
            (Float32, Float64, "widen"),
            (Float64, Float16, "narrow"),
            (Utf8, LargeUtf8, "widen"),
            (LargeUtf8, Utf8, "narrow"),
            (Binary, LargeBinary, "widen"),
            (Utf8, Int64, "unreachable"),
            (Int64, Float64, "unreachable"),
            (Boolean, Int8, "unreachable"),
        ];
        for (from, to, expected) in cases {
            assert_eq!(kind(from.clone(), to.clone()), expected, "{from} -> {to}");
        }
        let item = std::sync::Arc::new(arrow_schema::Field::new("item", Float32, true));
        let v = |n| FixedSizeList(item.clone(), n);
        assert_eq!(kind(v(384), v(768)), "unreachable");
    }

    #[test]
    fn a_declarations_id_names_its_table() {
        assert_eq!(
            declared_table("documents@schema:0123456789ab"),
            Some("documents")
        );
        assert_eq!(declared_table("a@b@schema:abcdefABCDEF"), Some("a@b"));
        assert_eq!(declared_table("documents@schema:0123"), None);
        assert_eq!(declared_table("documents@schema:0123456789ag"), None);
        assert_eq!(declared_table("0001_add_category"), None);
    }
}
