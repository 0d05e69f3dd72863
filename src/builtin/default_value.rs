//! Default values for added columns, and their SQL form.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, TimeUnit};

/// A default value for a new column: what every existing row gets.
///
/// The column's declared type decides how it is stored: an integer default
/// fits any integer or float column it is in range for, a float default any
/// float column, a timestamp any timestamp unit.
///
/// # Examples
///
/// ```
/// use lancedb_migrate::DefaultValue;
///
/// let category: DefaultValue = "general".into();
/// let active: DefaultValue = true.into();
/// let launch = DefaultValue::date(2024, 1, 31);
/// let created = DefaultValue::MigrationTime;
/// # let _ = (category, active, launch, created);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DefaultValue {
    /// A string, for `Utf8` and `LargeUtf8` columns.
    Utf8(String),
    /// A boolean, for `Boolean` columns.
    Bool(bool),
    /// A signed integer, for any integer or float column it fits.
    Int(i64),
    /// An unsigned integer, for any integer or float column it fits.
    UInt(u64),
    /// A float, for `Float32` and `Float64` columns.
    Float(f64),
    /// A point in time as microseconds since the Unix epoch (UTC), for
    /// `Timestamp` columns of any unit.
    TimestampMicros(i64),
    /// The time the migration runs (one value for all rows, the same as
    /// [`MigrationContext::started_at`](crate::MigrationContext::started_at)),
    /// for `Timestamp` columns of any unit, and for string columns as ISO
    /// 8601 text in UTC with microseconds (`2026-12-02T06:30:00.123456Z`).
    ///
    /// Use it rather than a time computed when the application starts: a
    /// migration's definition must be the same on every start (it is
    /// recorded as `migration_time`), or the next start reports drift.
    MigrationTime,
    /// A calendar date, for `Date32` and `Date64` columns. Build it with
    /// [`DefaultValue::date`]; an impossible date is reported when the migration
    /// runs.
    Date {
        /// The year.
        year: i32,
        /// The month, 1 to 12.
        month: u32,
        /// The day of the month, 1 to 31.
        day: u32,
    },
}

impl DefaultValue {
    /// A calendar date.
    pub fn date(year: i32, month: u32, day: u32) -> Self {
        Self::Date { year, month, day }
    }

    /// A point in time.
    pub fn timestamp(time: SystemTime) -> Self {
        Self::TimestampMicros(micros_since_epoch(time))
    }

    /// `value` in the crate's stable definition encoding
    /// ([`Definition`](crate::Definition)): `null`, `utf8:"…"`, `bool:true`,
    /// `int:3`, `uint:3`, `float:f64:<bits>`, `timestamp_us:<n>`,
    /// `migration_time`, `date:2024-01-31`.
    pub(crate) fn canonical(value: Option<&Self>) -> String {
        let mut out = String::new();
        match value {
            None => out.push_str("null"),
            Some(Self::Utf8(s)) => {
                out.push_str("utf8:");
                crate::migration::push_quoted(&mut out, s);
            }
            Some(Self::Bool(b)) => out.push_str(if *b { "bool:true" } else { "bool:false" }),
            Some(Self::Int(i)) => out.push_str(&format!("int:{i}")),
            Some(Self::UInt(u)) => out.push_str(&format!("uint:{u}")),
            Some(Self::Float(f)) => out.push_str(&format!("float:f64:{:016x}", f.to_bits())),
            Some(Self::TimestampMicros(us)) => out.push_str(&format!("timestamp_us:{us}")),
            Some(Self::MigrationTime) => out.push_str("migration_time"),
            Some(Self::Date { year, month, day }) => {
                out.push_str(&format!("date:{year:04}-{month:02}-{day:02}"));
            }
        }
        out
    }

    /// The SQL expression that yields this value as `data_type`, with the
    /// time of migration `now`; `Err` says why it does not fit.
    pub(crate) fn to_sql(&self, data_type: &DataType, now: SystemTime) -> Result<String, String> {
        let literal = match (self, data_type) {
            (Self::Utf8(s), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => quote(s),
            (Self::Bool(b), DataType::Boolean) => b.to_string(),
            (Self::Int(_) | Self::UInt(_), t) if t.is_integer() => self.integer_in_range(t)?,
            (Self::Int(i), t) if t.is_floating() => i.to_string(),
            (Self::UInt(u), t) if t.is_floating() => u.to_string(),
            (Self::Float(f), t) if t.is_floating() => float(*f),
            (Self::TimestampMicros(us), DataType::Timestamp(unit, _)) => in_unit(*us, *unit)?,
            (Self::MigrationTime, DataType::Timestamp(unit, _)) => {
                in_unit(micros_since_epoch(now), *unit)?
            }
            (Self::MigrationTime, t) if is_text(t) => quote(&iso_time(now)?),
            (Self::Date { year, month, day }, DataType::Date32 | DataType::Date64) => {
                quote(&iso_date(*year, *month, *day)?)
            }
            _ => return Err(format!("{self} cannot be stored as {data_type}")),
        };
        Ok(format!(
            "arrow_cast({literal}, {})",
            quote(&data_type.to_string())
        ))
    }

    /// `len` copies of this value as an array of `data_type`, the same
    /// values [`to_sql`](Self::to_sql)'s expression yields: the literal is
    /// cast to the column's type as that expression casts it.
    pub(crate) fn to_array(
        &self,
        data_type: &DataType,
        now: SystemTime,
        len: usize,
    ) -> Result<ArrayRef, String> {
        self.to_sql(data_type, now)?;
        let one: ArrayRef = match (self, data_type) {
            (Self::Utf8(s), _) => Arc::new(StringArray::from(vec![s.clone()])),
            (Self::Bool(b), _) => Arc::new(BooleanArray::from(vec![*b])),
            (Self::Int(i), _) => Arc::new(Int64Array::from(vec![*i])),
            (Self::UInt(u), _) => Arc::new(UInt64Array::from(vec![*u])),
            (Self::Float(f), _) => Arc::new(Float64Array::from(vec![*f])),
            (Self::TimestampMicros(us), DataType::Timestamp(unit, _)) => {
                Arc::new(Int64Array::from(vec![in_unit_value(*us, *unit)?]))
            }
            (Self::MigrationTime, DataType::Timestamp(unit, _)) => Arc::new(Int64Array::from(
                vec![in_unit_value(micros_since_epoch(now), *unit)?],
            )),
            (Self::MigrationTime, t) if is_text(t) => {
                Arc::new(StringArray::from(vec![iso_time(now)?]))
            }
            (Self::Date { year, month, day }, _) => {
                Arc::new(StringArray::from(vec![iso_date(*year, *month, *day)?]))
            }
            _ => return Err(format!("{self} cannot be stored as {data_type}")),
        };
        let typed = arrow_cast::cast(&one, data_type).map_err(|e| e.to_string())?;
        let zeros = UInt32Array::from(vec![0; len]);
        arrow_select::take::take(typed.as_ref(), &zeros, None).map_err(|e| e.to_string())
    }

    fn integer_in_range(&self, t: &DataType) -> Result<String, String> {
        let (value, fits) = match *self {
            Self::Int(i) => (i128::from(i), int_range(t)),
            Self::UInt(u) => (i128::from(u), int_range(t)),
            _ => unreachable!("only called for integers"),
        };
        let (lo, hi) = fits;
        if value < lo || value > hi {
            return Err(format!("{self} is out of range for {t}"));
        }
        Ok(value.to_string())
    }
}

impl fmt::Display for DefaultValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Utf8(s) => write!(f, "the string {s:?}"),
            Self::Bool(b) => write!(f, "the boolean {b}"),
            Self::Int(i) => write!(f, "the integer {i}"),
            Self::UInt(u) => write!(f, "the integer {u}"),
            Self::Float(x) => write!(f, "the float {x:?}"),
            Self::TimestampMicros(us) => write!(f, "the timestamp {us}us"),
            Self::MigrationTime => f.write_str("the time of migration"),
            Self::Date { year, month, day } => write!(f, "the date {year:04}-{month:02}-{day:02}"),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident via $conv:expr),* $(,)?) => {$(
        impl From<$t> for DefaultValue {
            fn from(v: $t) -> Self {
                Self::$variant($conv(v))
            }
        }
    )*};
}

value_from! {
    &str => Utf8 via str::to_owned,
    String => Utf8 via std::convert::identity,
    bool => Bool via std::convert::identity,
    i8 => Int via i64::from,
    i16 => Int via i64::from,
    i32 => Int via i64::from,
    i64 => Int via std::convert::identity,
    u8 => UInt via u64::from,
    u16 => UInt via u64::from,
    u32 => UInt via u64::from,
    u64 => UInt via std::convert::identity,
    f32 => Float via f64::from,
    f64 => Float via std::convert::identity,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn float(f: f64) -> String {
    if f.is_finite() {
        format!("{f:?}")
    } else {
        // arrow casts the strings "NaN", "inf" and "-inf" to floats.
        quote(&f.to_string())
    }
}

fn int_range(t: &DataType) -> (i128, i128) {
    match t {
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
        DataType::UInt8 => (0, u8::MAX.into()),
        DataType::UInt16 => (0, u16::MAX.into()),
        DataType::UInt32 => (0, u32::MAX.into()),
        _ => (0, u64::MAX.into()),
    }
}

fn in_unit(micros: i64, unit: TimeUnit) -> Result<String, String> {
    let value = match unit {
        TimeUnit::Second => Some(micros.div_euclid(1_000_000)),
        TimeUnit::Millisecond => Some(micros.div_euclid(1_000)),
        TimeUnit::Microsecond => Some(micros),
        TimeUnit::Nanosecond => micros.checked_mul(1_000),
    };
    value
        .map(|v| v.to_string())
        .ok_or_else(|| format!("the timestamp {micros}us is out of range for nanoseconds"))
}

fn in_unit_value(micros: i64, unit: TimeUnit) -> Result<i64, String> {
    in_unit(micros, unit)?
        .parse()
        .map_err(|e| format!("timestamp out of range: {e}"))
}

fn iso_date(year: i32, month: u32, day: u32) -> Result<String, String> {
    chrono::NaiveDate::from_ymd_opt(year, month, day)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .ok_or_else(|| format!("{year:04}-{month:02}-{day:02} is not a valid date"))
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// `time` as ISO 8601 text in UTC, with microseconds.
fn iso_time(time: SystemTime) -> Result<String, String> {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros_since_epoch(time))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .ok_or_else(|| "the time of migration is out of range".to_owned())
}

pub(crate) fn micros_since_epoch(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: SystemTime = UNIX_EPOCH;

    #[test]
    fn strings_are_quoted_and_escaped() {
        let sql = DefaultValue::from("it's")
            .to_sql(&DataType::Utf8, NOW)
            .unwrap();
        assert_eq!(sql, "arrow_cast('it''s', 'Utf8')");
    }

    #[test]
    fn integers_are_range_checked() {
        assert!(
            DefaultValue::from(300)
                .to_sql(&DataType::Int8, NOW)
                .is_err()
        );
        assert!(
            DefaultValue::from(-1)
                .to_sql(&DataType::UInt32, NOW)
                .is_err()
        );
        assert_eq!(
            DefaultValue::from(7).to_sql(&DataType::UInt8, NOW).unwrap(),
            "arrow_cast(7, 'UInt8')"
        );
    }

    /// On a string column the time of migration is ISO 8601 text in UTC.
    #[test]
    fn the_time_of_migration_fits_a_string_column() {
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_764_657_000_123_456);
        let sql = DefaultValue::MigrationTime
            .to_sql(&DataType::Utf8, at)
            .unwrap();
        assert_eq!(sql, "arrow_cast('2025-12-02T06:30:00.123456Z', 'Utf8')");
        let err = DefaultValue::MigrationTime
            .to_sql(&DataType::Boolean, at)
            .unwrap_err();
        assert_eq!(err, "the time of migration cannot be stored as Boolean");
    }

    #[test]
    fn wrong_kinds_are_rejected() {
        let err = DefaultValue::from(true)
            .to_sql(&DataType::Utf8, NOW)
            .unwrap_err();
        assert_eq!(err, "the boolean true cannot be stored as Utf8");
        assert!(
            DefaultValue::from(1.5)
                .to_sql(&DataType::Int32, NOW)
                .is_err()
        );
        assert!(
            DefaultValue::date(2024, 2, 30)
                .to_sql(&DataType::Date32, NOW)
                .is_err()
        );
    }

    /// The array path (used on busy tables) stores what the SQL path
    /// stores, for every kind of value.
    #[test]
    fn arrays_hold_the_sql_values() {
        use arrow_array::Array;
        let utc = Some("UTC".into());
        let cases: Vec<(DefaultValue, DataType, &str)> = vec![
            ("general".into(), DataType::Utf8, "general"),
            (true.into(), DataType::Boolean, "true"),
            (7.into(), DataType::UInt8, "7"),
            ((-3).into(), DataType::Int32, "-3"),
            (2.5.into(), DataType::Float32, "2.5"),
            (4.into(), DataType::Float64, "4.0"),
            (
                DefaultValue::MigrationTime,
                DataType::Timestamp(TimeUnit::Millisecond, utc.clone()),
                "1970-01-01T00:00:00Z",
            ),
            (
                DefaultValue::TimestampMicros(1_500_000),
                DataType::Timestamp(TimeUnit::Second, None),
                "1970-01-01T00:00:01",
            ),
            (
                DefaultValue::date(2024, 2, 29),
                DataType::Date32,
                "2024-02-29",
            ),
            (
                DefaultValue::MigrationTime,
                DataType::Utf8,
                "1970-01-01T00:00:00.000000Z",
            ),
        ];
        for (value, data_type, shown) in cases {
            let array = value.to_array(&data_type, NOW, 3).unwrap();
            assert_eq!(array.data_type(), &data_type);
            assert_eq!(array.len(), 3);
            assert_eq!(array.null_count(), 0);
            let text = arrow_cast::display::ArrayFormatter::try_new(
                array.as_ref(),
                &arrow_cast::display::FormatOptions::default(),
            )
            .unwrap()
            .value(2)
            .to_string();
            assert_eq!(text, shown, "{value:?} as {data_type}");
        }
        assert!(
            DefaultValue::from(-1)
                .to_array(&DataType::UInt8, NOW, 1)
                .is_err()
        );
    }

    #[test]
    fn timestamps_convert_to_the_column_unit() {
        assert_eq!(in_unit(1_500_000, TimeUnit::Millisecond).unwrap(), "1500");
        assert_eq!(in_unit(-1, TimeUnit::Second).unwrap(), "-1");
        assert!(in_unit(i64::MAX, TimeUnit::Nanosecond).is_err());
    }
}
