//! The ledger's rows as Arrow: its schema (with the format number in the
//! schema metadata), and entries encoded to and decoded from record
//! batches.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType, UInt64Type};
use arrow_array::{
    Array, ArrayRef, Int64Array, PrimitiveArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};
use crate::ledger::{LedgerEntry, LedgerStatus};

/// The ledger format this crate writes. A ledger with a larger number was
/// written by a newer version of the crate and is not touched.
///
/// - 1: lancedb-migrate 0.1. Checksums of the built-in migrations hashed
///   a text holding arrow's `Display` of types and LanceDB's `Debug` of
///   index builders.
/// - 2: the built-ins' checksums hash their stable encoding
///   ([`Definition`](crate::Definition)); a row of format 1 is upgraded
///   in place ([`Migration::previous_checksums`](crate::Migration::previous_checksums)).
///   The lease's holder tag names the lease format
///   (`lease::state::FORMAT`).
///
/// A release writes its number the first time it writes the ledger (under
/// the lease); releases that know only older formats then refuse it.
pub(crate) const FORMAT: u32 = 2;
/// The schema metadata key holding the format number.
pub(super) const FORMAT_KEY: &str = "lancedb_migrate.ledger_format";
/// The column holding a migration's recorded details, as a JSON object.
const DETAILS: &str = "details";
/// The column holding the URI of a migration's independent backup copy.
const BACKUP_COPY: &str = "backup_copy";
/// Nullable text columns added after the first format; ledgers written
/// before them get them, all-null, when opened.
pub(super) const LATE_COLUMNS: [&str; 2] = [DETAILS, BACKUP_COPY];

/// The ledger's schema.
pub(super) fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("checksum", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("version_before", DataType::UInt64, false),
        Field::new("version_after", DataType::UInt64, true),
        Field::new("backup_tag", DataType::Utf8, true),
        Field::new("started_at", ts.clone(), false),
        Field::new("finished_at", ts, true),
        Field::new("duration_ms", DataType::Int64, true),
        Field::new("rows_before", DataType::UInt64, false),
        Field::new("rows_after", DataType::UInt64, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("crate_version", DataType::Utf8, false),
        Field::new(DETAILS, DataType::Utf8, true),
        Field::new(BACKUP_COPY, DataType::Utf8, true),
    ];
    let metadata = [(FORMAT_KEY.to_owned(), FORMAT.to_string())].into();
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

fn micros(t: SystemTime) -> i64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn from_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// `entries` as one record batch of the ledger's schema.
pub(super) fn encode(entries: &[LedgerEntry]) -> Result<RecordBatch> {
    let strings = |f: fn(&LedgerEntry) -> Option<&str>| -> ArrayRef {
        Arc::new(entries.iter().map(f).collect::<StringArray>())
    };
    let u64s = |f: fn(&LedgerEntry) -> Option<u64>| -> ArrayRef {
        Arc::new(entries.iter().map(f).collect::<UInt64Array>())
    };
    let times = |f: fn(&LedgerEntry) -> Option<SystemTime>| -> ArrayRef {
        Arc::new(
            entries
                .iter()
                .map(|e| f(e).map(micros))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        )
    };
    let columns = vec![
        strings(|e| Some(&e.id)),
        Arc::new(entries.iter().map(|e| e.seq as i64).collect::<Int64Array>()) as ArrayRef,
        strings(|e| Some(&e.table)),
        strings(|e| Some(&e.checksum)),
        strings(|e| Some(e.status.as_str())),
        u64s(|e| Some(e.version_before)),
        u64s(|e| e.version_after),
        strings(|e| e.backup_tag.as_deref()),
        times(|e| Some(e.started_at)),
        times(|e| e.finished_at),
        Arc::new(
            entries
                .iter()
                .map(|e| e.duration().map(|d| d.as_millis() as i64))
                .collect::<Int64Array>(),
        ),
        u64s(|e| Some(e.rows_before)),
        u64s(|e| e.rows_after),
        strings(|e| e.error.as_deref()),
        strings(|e| Some(&e.crate_version)),
        Arc::new(
            entries
                .iter()
                .map(|e| {
                    (!e.details.is_empty())
                        .then(|| serde_json::to_string(&e.details).unwrap_or_default())
                })
                .collect::<StringArray>(),
        ),
        strings(|e| e.backup_copy.as_deref()),
    ];
    RecordBatch::try_new(schema(), columns).map_err(Error::arrow("encode a ledger row"))
}

/// The entries in `batch`, read from the ledger named `ledger`.
pub(super) fn decode(ledger: &str, batch: &RecordBatch) -> Result<Vec<LedgerEntry>> {
    let columns = Columns::of(ledger, batch)?;
    (0..batch.num_rows())
        .map(|row| columns.entry(row))
        .collect()
}

/// The typed columns of one batch of ledger rows.
struct Columns<'b> {
    ledger: &'b str,
    id: &'b StringArray,
    table: &'b StringArray,
    checksum: &'b StringArray,
    status: &'b StringArray,
    backup: &'b StringArray,
    error: &'b StringArray,
    crate_version: &'b StringArray,
    seq: &'b Int64Array,
    version_before: &'b UInt64Array,
    version_after: &'b UInt64Array,
    rows_before: &'b UInt64Array,
    rows_after: &'b UInt64Array,
    started: &'b TimestampMicrosecondArray,
    finished: &'b TimestampMicrosecondArray,
    /// Late columns: absent from batches of ledgers not yet upgraded.
    details: Option<&'b StringArray>,
    backup_copy: Option<&'b StringArray>,
}

impl<'b> Columns<'b> {
    fn of(ledger: &'b str, batch: &'b RecordBatch) -> Result<Self> {
        let damaged = |column: &str| Error::Ledger {
            ledger: ledger.to_owned(),
            reason: format!("column `{column}` is missing or has the wrong type"),
            source: None,
        };
        let s = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| damaged(name))
        };
        let u = |name: &str| primitive::<UInt64Type>(batch, name).ok_or_else(|| damaged(name));
        let t = |name: &str| {
            primitive::<TimestampMicrosecondType>(batch, name).ok_or_else(|| damaged(name))
        };
        Ok(Self {
            ledger,
            id: s("id")?,
            table: s("table_name")?,
            checksum: s("checksum")?,
            status: s("status")?,
            backup: s("backup_tag")?,
            error: s("error")?,
            crate_version: s("crate_version")?,
            seq: primitive::<Int64Type>(batch, "seq").ok_or_else(|| damaged("seq"))?,
            version_before: u("version_before")?,
            version_after: u("version_after")?,
            rows_before: u("rows_before")?,
            rows_after: u("rows_after")?,
            started: t("started_at")?,
            finished: t("finished_at")?,
            details: s(DETAILS).ok(),
            backup_copy: s(BACKUP_COPY).ok(),
        })
    }

    fn entry(&self, row: usize) -> Result<LedgerEntry> {
        let text = |a: &StringArray| a.is_valid(row).then(|| a.value(row).to_owned());
        let number = |a: &UInt64Array| a.is_valid(row).then(|| a.value(row));
        let status = LedgerStatus::parse(self.status.value(row)).ok_or_else(|| Error::Ledger {
            ledger: self.ledger.to_owned(),
            reason: format!(
                "unknown status `{}` for `{}`",
                self.status.value(row),
                self.id.value(row)
            ),
            source: None,
        })?;
        Ok(LedgerEntry {
            id: self.id.value(row).to_owned(),
            seq: u64::try_from(self.seq.value(row)).unwrap_or(0),
            table: self.table.value(row).to_owned(),
            checksum: self.checksum.value(row).to_owned(),
            status,
            version_before: self.version_before.value(row),
            version_after: number(self.version_after),
            backup_tag: text(self.backup),
            backup_copy: self.backup_copy.and_then(text),
            started_at: from_micros(self.started.value(row)),
            finished_at: self
                .finished
                .is_valid(row)
                .then(|| from_micros(self.finished.value(row))),
            rows_before: self.rows_before.value(row),
            rows_after: number(self.rows_after),
            error: text(self.error),
            crate_version: self.crate_version.value(row).to_owned(),
            details: self
                .details
                .and_then(text)
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default(),
        })
    }
}

fn primitive<'b, T: arrow_array::ArrowPrimitiveType>(
    batch: &'b RecordBatch,
    name: &str,
) -> Option<&'b PrimitiveArray<T>> {
    batch.column_by_name(name)?.as_primitive_opt::<T>()
}
