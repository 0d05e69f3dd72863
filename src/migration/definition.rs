//! [`Definition`]: the crate's own stable text of what a migration does,
//! from which its checksum is computed.

use std::fmt::Write as _;

use arrow_schema::{DataType, Field, IntervalUnit, TimeUnit, UnionMode};

/// A migration's definition in this crate's stable encoding: a kind, then
/// named values in the order they are given, each written by this crate
/// (never by a dependency's `Display` or `Debug`, which change between
/// versions).
///
/// The built-in migrations write their
/// [`definition`](crate::Migration::definition) with it, and downstream
/// migrations can too. The encoding of each value is fixed: a
/// release that changed it would change checksums, and the golden tests of
/// this crate fail first.
///
/// # What belongs in a definition
///
/// Everything that changes what the migration does to the data: the table,
/// columns, types, default values, expressions, the model. Nothing that
/// only changes how fast or how safely it does it (batch sizes,
/// concurrency, sample sizes, timeouts): those can then be tuned after the
/// migration was applied without the next start reporting
/// [`Error::Drift`](crate::Error::Drift).
///
/// # Examples
///
/// ```
/// use arrow_schema::DataType;
/// use lancedb_migrate::Definition;
///
/// let definition = Definition::new("lowercase")
///     .text("table", "documents")
///     .text("column", "category")
///     .data_type("type", &DataType::Utf8)
///     .int("revision", 2)
///     .finish();
/// assert_eq!(
///     definition,
///     r#"lowercase{table="documents";column="category";type=utf8;revision=2}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Definition is only text once `finish` is called"]
pub struct Definition {
    text: String,
    empty: bool,
}

impl Definition {
    /// A definition of the given kind (e.g. `"add_columns"`), with no values
    /// yet.
    pub fn new(kind: &str) -> Self {
        let mut text = String::with_capacity(64);
        push_quoted_if_needed(&mut text, kind);
        text.push('{');
        Self { text, empty: true }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.empty {
            self.text.push(';');
        }
        self.empty = false;
        push_quoted_if_needed(&mut self.text, key);
        self.text.push('=');
        &mut self.text
    }

    /// A text value, quoted (`"…"`, with `\"`, `\\` and control characters
    /// escaped).
    pub fn text(mut self, key: &str, value: &str) -> Self {
        push_quoted(self.key(key), value);
        self
    }

    /// An optional text value: `null` when absent.
    pub fn opt_text(mut self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(value) => push_quoted(self.key(key), value),
            None => self.key(key).push_str("null"),
        }
        self
    }

    /// A signed integer.
    pub fn int(mut self, key: &str, value: i64) -> Self {
        let _ = write!(self.key(key), "{value}");
        self
    }

    /// An unsigned integer.
    pub fn uint(mut self, key: &str, value: u64) -> Self {
        let _ = write!(self.key(key), "{value}");
        self
    }

    /// A float, written as the hexadecimal of its IEEE 754 bits (exact, and
    /// independent of how floats are formatted as decimals).
    pub fn float(mut self, key: &str, value: f64) -> Self {
        let _ = write!(self.key(key), "f64:{:016x}", value.to_bits());
        self
    }

    /// A boolean.
    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    /// An Arrow data type, in this crate's own names (`utf8`, `int32`,
    /// `timestamp(us,"UTC")`, `fixed_size_list(768,field("item",float32,nullable))`,
    /// …), which do not follow Arrow's `Display`.
    pub fn data_type(mut self, key: &str, value: &DataType) -> Self {
        push_type(self.key(key), value);
        self
    }

    /// A nested definition (its own kind and values).
    pub fn nested(mut self, key: &str, value: Self) -> Self {
        self.key(key).push_str(&value.finish());
        self
    }

    /// A list of nested definitions, in order.
    pub fn list(mut self, key: &str, values: impl IntoIterator<Item = Self>) -> Self {
        let out = self.key(key);
        out.push('[');
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&value.finish());
        }
        out.push(']');
        self
    }

    /// A value already in the stable encoding, written as is.
    pub(crate) fn raw(mut self, key: &str, encoded: &str) -> Self {
        self.key(key).push_str(encoded);
        self
    }

    /// A JSON value, written with object keys sorted and no whitespace.
    pub(crate) fn json(mut self, key: &str, value: &serde_json::Value) -> Self {
        push_json(self.key(key), value);
        self
    }

    /// The checksum the ledger records for a migration whose
    /// [`definition`](crate::Migration::definition) is `definition`: its
    /// SHA-256, hex-encoded. For
    /// [`previous_checksums`](crate::Migration::previous_checksums): the
    /// checksum of the text an earlier version of the migration had.
    ///
    /// ```
    /// use lancedb_migrate::Definition;
    ///
    /// // What `#[derive(Debug)] struct TextLength { column: String }` had
    /// // as its definition before it wrote one with `Definition`.
    /// let old = Definition::checksum_of(r#"TextLength { column: "text" }"#);
    /// assert_eq!(old.len(), 64);
    /// ```
    pub fn checksum_of(definition: &str) -> String {
        super::hex_sha256(definition.as_bytes())
    }

    /// The definition's text.
    pub fn finish(mut self) -> String {
        self.text.push('}');
        self.text
    }
}

impl From<Definition> for String {
    fn from(definition: Definition) -> Self {
        definition.finish()
    }
}

/// A key or kind made of letters, digits, `_`, `.`, `-` and `@` is written
/// as is; anything else quoted.
fn push_quoted_if_needed(out: &mut String, word: &str) {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-@".contains(c));
    if plain {
        out.push_str(word);
    } else {
        push_quoted(out, word);
    }
}

pub(crate) fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn unit(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    }
}

fn push_field(out: &mut String, field: &Field) {
    out.push_str("field(");
    push_quoted(out, field.name());
    out.push(',');
    push_type(out, field.data_type());
    out.push_str(if field.is_nullable() {
        ",nullable"
    } else {
        ",not_null"
    });
    if !field.metadata().is_empty() {
        let mut entries: Vec<_> = field.metadata().iter().collect();
        entries.sort();
        out.push_str(",metadata{");
        for (i, (k, v)) in entries.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_quoted(out, k);
            out.push(':');
            push_quoted(out, v);
        }
        out.push('}');
    }
    out.push(')');
}

/// `data_type` in this crate's own spelling. Exhaustive on purpose: a new
/// Arrow type must be given a name here (and a golden test) before it can
/// be used.
fn push_type(out: &mut String, data_type: &DataType) {
    match data_type {
        DataType::Null => out.push_str("null"),
        DataType::Boolean => out.push_str("bool"),
        DataType::Int8 => out.push_str("int8"),
        DataType::Int16 => out.push_str("int16"),
        DataType::Int32 => out.push_str("int32"),
        DataType::Int64 => out.push_str("int64"),
        DataType::UInt8 => out.push_str("uint8"),
        DataType::UInt16 => out.push_str("uint16"),
        DataType::UInt32 => out.push_str("uint32"),
        DataType::UInt64 => out.push_str("uint64"),
        DataType::Float16 => out.push_str("float16"),
        DataType::Float32 => out.push_str("float32"),
        DataType::Float64 => out.push_str("float64"),
        DataType::Date32 => out.push_str("date32"),
        DataType::Date64 => out.push_str("date64"),
        DataType::Binary => out.push_str("binary"),
        DataType::LargeBinary => out.push_str("large_binary"),
        DataType::BinaryView => out.push_str("binary_view"),
        DataType::Utf8 => out.push_str("utf8"),
        DataType::LargeUtf8 => out.push_str("large_utf8"),
        DataType::Utf8View => out.push_str("utf8_view"),
        DataType::Timestamp(u, tz) => {
            let _ = write!(out, "timestamp({}", unit(*u));
            if let Some(tz) = tz {
                out.push(',');
                push_quoted(out, tz);
            }
            out.push(')');
        }
        DataType::Time32(u) => {
            let _ = write!(out, "time32({})", unit(*u));
        }
        DataType::Time64(u) => {
            let _ = write!(out, "time64({})", unit(*u));
        }
        DataType::Duration(u) => {
            let _ = write!(out, "duration({})", unit(*u));
        }
        DataType::Interval(u) => out.push_str(match u {
            IntervalUnit::YearMonth => "interval(year_month)",
            IntervalUnit::DayTime => "interval(day_time)",
            IntervalUnit::MonthDayNano => "interval(month_day_nano)",
        }),
        DataType::FixedSizeBinary(n) => {
            let _ = write!(out, "fixed_size_binary({n})");
        }
        DataType::Decimal32(p, s) => {
            let _ = write!(out, "decimal32({p},{s})");
        }
        DataType::Decimal64(p, s) => {
            let _ = write!(out, "decimal64({p},{s})");
        }
        DataType::Decimal128(p, s) => {
            let _ = write!(out, "decimal128({p},{s})");
        }
        DataType::Decimal256(p, s) => {
            let _ = write!(out, "decimal256({p},{s})");
        }
        DataType::List(f) => wrap(out, "list(", f),
        DataType::LargeList(f) => wrap(out, "large_list(", f),
        DataType::ListView(f) => wrap(out, "list_view(", f),
        DataType::LargeListView(f) => wrap(out, "large_list_view(", f),
        DataType::FixedSizeList(f, n) => wrap(out, &format!("fixed_size_list({n},"), f),
        DataType::Struct(fields) => {
            out.push_str("struct(");
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_field(out, f);
            }
            out.push(')');
        }
        DataType::Union(fields, mode) => {
            out.push_str(match mode {
                UnionMode::Sparse => "sparse_union(",
                UnionMode::Dense => "dense_union(",
            });
            for (i, (id, f)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{id}:");
                push_field(out, f);
            }
            out.push(')');
        }
        DataType::Dictionary(key, value) => {
            out.push_str("dictionary(");
            push_type(out, key);
            out.push(',');
            push_type(out, value);
            out.push(')');
        }
        DataType::Map(f, sorted) => {
            out.push_str("map(");
            push_field(out, f);
            out.push_str(if *sorted { ",sorted)" } else { ",unsorted)" });
        }
        DataType::RunEndEncoded(run_ends, values) => {
            out.push_str("run_end_encoded(");
            push_field(out, run_ends);
            out.push(',');
            push_field(out, values);
            out.push(')');
        }
    }
}

fn wrap(out: &mut String, open: &str, field: &Field) {
    out.push_str(open);
    push_field(out, field);
    out.push(')');
}

/// `value` as JSON with object keys sorted, whatever order the map keeps.
fn push_json(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => {
                let _ = write!(out, "{i}");
            }
            (None, Some(u), _) => {
                let _ = write!(out, "{u}");
            }
            (None, None, Some(f)) => {
                let _ = write!(out, "f64:{:016x}", f.to_bits());
            }
            (None, None, None) => out.push_str("null"),
        },
        Value::String(s) => push_quoted(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_quoted(out, key);
                out.push(':');
                push_json(out, &map[key]);
            }
            out.push('}');
        }
    }
}
