//! The definitions lancedb-migrate 0.1.0 wrote, reproduced byte for byte
//! without the dependencies they were built from, so that ledgers it
//! wrote keep matching whatever versions of arrow and LanceDB this build
//! uses. A built-in migration offers their checksums as
//! [`previous_checksums`](crate::Migration::previous_checksums); the
//! ledger then upgrades the row in place.
//!
//! 0.1.0 embedded arrow 58's `Display` of data types and the derived
//! `Debug` of [`DefaultValue`]; both are frozen here. Golden tests
//! (`builtin::golden`) pin the output for every type and default.

use std::collections::HashMap;
use std::fmt::Write as _;

use arrow_schema::{DataType, Field, TimeUnit};

use crate::builtin::DefaultValue;

/// arrow-schema 58.4.1's `Display` of `data_type`.
pub(crate) fn arrow58_type(data_type: &DataType) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = push_type(&mut out, data_type);
    out
}

fn unit(u: TimeUnit) -> &'static str {
    match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "µs",
        TimeUnit::Nanosecond => "ns",
    }
}

fn metadata(m: &HashMap<String, String>) -> String {
    if m.is_empty() {
        return String::new();
    }
    let mut entries: Vec<(&String, &String)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let body = entries
        .iter()
        .map(|(k, v)| format!("{k:?}: {v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(", metadata: {{{body}}}")
}

fn nullability(f: &Field) -> &'static str {
    if f.is_nullable() { "" } else { "non-null " }
}

fn field(f: &Field) -> String {
    format!(
        "{:?}: {}{}{}",
        f.name(),
        nullability(f),
        arrow58_type(f.data_type()),
        metadata(f.metadata())
    )
}

fn item(f: &Field) -> String {
    let name = if f.name() == "item" {
        String::new()
    } else {
        format!(", field: '{}'", f.name())
    };
    format!(
        "{}{}{name}{}",
        nullability(f),
        arrow58_type(f.data_type()),
        metadata(f.metadata())
    )
}

fn push_type(out: &mut String, t: &DataType) -> std::fmt::Result {
    match t {
        DataType::Timestamp(u, Some(tz)) => write!(out, "Timestamp({}, {tz:?})", unit(*u)),
        DataType::Timestamp(u, None) => write!(out, "Timestamp({})", unit(*u)),
        DataType::Time32(u) => write!(out, "Time32({})", unit(*u)),
        DataType::Time64(u) => write!(out, "Time64({})", unit(*u)),
        DataType::Duration(u) => write!(out, "Duration({})", unit(*u)),
        DataType::Interval(u) => write!(out, "Interval({u:?})"),
        DataType::FixedSizeBinary(n) => write!(out, "FixedSizeBinary({n:?})"),
        DataType::List(f) => write!(out, "List({})", item(f)),
        DataType::LargeList(f) => write!(out, "LargeList({})", item(f)),
        DataType::ListView(f) => write!(out, "ListView({})", item(f)),
        DataType::LargeListView(f) => write!(out, "LargeListView({})", item(f)),
        DataType::FixedSizeList(f, n) => write!(out, "FixedSizeList({n} x {})", item(f)),
        DataType::Struct(fields) => {
            let body = fields.iter().map(|f| field(f)).collect::<Vec<_>>();
            write!(out, "Struct({})", body.join(", "))
        }
        DataType::Union(fields, mode) => {
            write!(out, "Union({mode:?}")?;
            if !fields.is_empty() {
                let body = fields
                    .iter()
                    .map(|(id, f)| format!("{id:?}: ({})", field(f)))
                    .collect::<Vec<_>>();
                write!(out, ", {}", body.join(", "))?;
            }
            write!(out, ")")
        }
        DataType::Dictionary(k, v) => {
            write!(out, "Dictionary({}, {})", arrow58_type(k), arrow58_type(v))
        }
        DataType::Decimal32(p, s) => write!(out, "Decimal32({p}, {s})"),
        DataType::Decimal64(p, s) => write!(out, "Decimal64({p}, {s})"),
        DataType::Decimal128(p, s) => write!(out, "Decimal128({p}, {s})"),
        DataType::Decimal256(p, s) => write!(out, "Decimal256({p}, {s})"),
        DataType::Map(f, sorted) => {
            let sorted = if *sorted { "sorted" } else { "unsorted" };
            write!(out, "Map({}, {sorted})", field(f))
        }
        DataType::RunEndEncoded(r, v) => {
            write!(out, "RunEndEncoded({}, {})", field(r), field(v))
        }
        DataType::Null => out.write_str("Null"),
        DataType::Boolean => out.write_str("Boolean"),
        DataType::Int8 => out.write_str("Int8"),
        DataType::Int16 => out.write_str("Int16"),
        DataType::Int32 => out.write_str("Int32"),
        DataType::Int64 => out.write_str("Int64"),
        DataType::UInt8 => out.write_str("UInt8"),
        DataType::UInt16 => out.write_str("UInt16"),
        DataType::UInt32 => out.write_str("UInt32"),
        DataType::UInt64 => out.write_str("UInt64"),
        DataType::Float16 => out.write_str("Float16"),
        DataType::Float32 => out.write_str("Float32"),
        DataType::Float64 => out.write_str("Float64"),
        DataType::Date32 => out.write_str("Date32"),
        DataType::Date64 => out.write_str("Date64"),
        DataType::Binary => out.write_str("Binary"),
        DataType::LargeBinary => out.write_str("LargeBinary"),
        DataType::BinaryView => out.write_str("BinaryView"),
        DataType::Utf8 => out.write_str("Utf8"),
        DataType::LargeUtf8 => out.write_str("LargeUtf8"),
        DataType::Utf8View => out.write_str("Utf8View"),
    }
}

/// 0.1.0's text of a default value: `null`, `migration_time`, or the
/// derived `Debug` of the value.
pub(crate) fn default_value(value: Option<&DefaultValue>) -> String {
    match value {
        None => "null".to_owned(),
        Some(DefaultValue::MigrationTime) => "migration_time".to_owned(),
        Some(DefaultValue::Utf8(s)) => format!("Utf8({s:?})"),
        Some(DefaultValue::Bool(b)) => format!("Bool({b:?})"),
        Some(DefaultValue::Int(i)) => format!("Int({i:?})"),
        Some(DefaultValue::UInt(u)) => format!("UInt({u:?})"),
        Some(DefaultValue::Float(f)) => format!("Float({f:?})"),
        Some(DefaultValue::TimestampMicros(us)) => format!("TimestampMicros({us:?})"),
        Some(DefaultValue::Date { year, month, day }) => {
            format!("Date {{ year: {year:?}, month: {month:?}, day: {day:?} }}")
        }
    }
}

/// 0.1.0's definition of an `AddColumns`: the table, then each column's
/// name, type, default and nullability.
pub(crate) fn add_columns<'a>(
    table: &str,
    columns: impl IntoIterator<Item = (&'a str, &'a DataType, Option<&'a DefaultValue>, bool)>,
) -> String {
    let mut out = format!("add_columns table={table};");
    for (name, data_type, default, nullable) in columns {
        let _ = write!(
            out,
            "{name}:{} default={}{}",
            arrow58_type(data_type),
            default_value(default),
            if nullable { " nullable;" } else { " not_null;" }
        );
    }
    out
}

/// 0.1.0's definition of a `ReEmbed`.
pub(crate) fn reembed(
    table: &str,
    source: &str,
    target: &str,
    model: &str,
    dest: Option<&DataType>,
    client_config: Option<&str>,
) -> String {
    let dest = dest.map(arrow58_type).unwrap_or_default();
    let mut out = format!(
        "ReEmbed {{ table: {table:?}, source: {source:?}, target: {target:?}, model: {model:?}, dest: {dest} }}"
    );
    if let Some(config) = client_config {
        let _ = write!(out, " client_config: {config}");
    }
    out
}
