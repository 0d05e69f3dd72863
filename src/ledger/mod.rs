//! The ledger: a LanceDB table in the migrated database that records every
//! migration, one row per migration id.
//!
//! A migration's first row is an append, which leaves it alone in a
//! fragment; its next state replaces that fragment in one Lance `Update`
//! commit (about half the cost of a `merge_insert`, measured). Rows that
//! share a fragment (after compaction) are replaced with an atomic
//! `merge_insert` keyed on `id`. Either way a row moves from `running` to
//! `applied` or `failed` in one commit. The table's
//! schema metadata carries a format number; a ledger from a newer format is
//! refused instead of being misread.

pub(crate) mod lease;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType, UInt64Type};
use arrow_array::{
    Array, ArrayRef, Int64Array, RecordBatch, RecordBatchIterator, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::TryStreamExt;
use lancedb::query::ExecutableQuery;
use lancedb::table::{CompactionOptions, NewColumnTransform, OptimizeAction};
use lancedb::{Connection, Table};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::lance::commits::rows_at;
use crate::lance::fragments;
use crate::lance::latest_version;
use crate::lance::retry::{is_conflict_or_overwritten, is_lancedb_conflict, retry};

/// The ledger format this crate writes. A ledger with a larger number was
/// written by a newer version of the crate and is not touched.
pub(crate) const FORMAT: u32 = 1;
/// Fragments the ledger may have before a run compacts it.
pub(crate) const MAX_FRAGMENTS: usize = 16;
/// How long the ledger keeps a version it no longer needs: long enough for
/// any read that started on it to end.
pub(crate) const HISTORY_KEPT: Duration = Duration::from_secs(3600);
const FORMAT_KEY: &str = "lancedb_migrate.ledger_format";
/// The column holding a migration's recorded details, as a JSON object.
const DETAILS: &str = "details";
/// The column holding the URI of a migration's independent backup copy.
const BACKUP_COPY: &str = "backup_copy";
/// Nullable text columns added after the first format; ledgers written
/// before them get them, all-null, when opened.
const LATE_COLUMNS: [&str; 2] = [DETAILS, BACKUP_COPY];

/// Where a migration stands according to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Started and not finished: either running now or interrupted by a crash.
    Running,
    /// Applied and verified.
    Applied,
    /// Failed and rolled back; it runs again on the next `run()`.
    Failed,
    /// Applied, then undone by
    /// [`Migrator::rollback_to`](crate::Migrator::rollback_to); it runs again
    /// on the next `run()` that lists it.
    RolledBack,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Applied, Self::Failed, Self::RolledBack]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    /// The status in words, e.g. "rolled back".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RolledBack => "rolled back",
            other => other.as_str(),
        })
    }
}

/// One row of the ledger: the last recorded state of one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerEntry {
    /// The migration's id.
    pub id: String,
    /// Its position in the migrator's list when it last ran (0-based).
    pub seq: u64,
    /// The table it migrates.
    pub table: String,
    /// SHA-256 of its definition, hex-encoded.
    pub checksum: String,
    /// Where it stands.
    pub status: Status,
    /// The table's version before it ran.
    pub version_before: u64,
    /// The table's version after it was applied (or restored, when failed).
    pub version_after: Option<u64>,
    /// The backup tag taken before it ran.
    pub backup_tag: Option<String>,
    /// The URI of the independent backup copy made before it ran, when one
    /// was asked for ([`BackupCopy`](crate::BackupCopy)).
    pub backup_copy: Option<String>,
    /// When it started.
    pub started_at: SystemTime,
    /// When it finished or failed.
    pub finished_at: Option<SystemTime>,
    /// Rows in the table before it ran.
    pub rows_before: u64,
    /// Rows in the table after it was applied.
    pub rows_after: Option<u64>,
    /// The error, when it failed.
    pub error: Option<String>,
    /// The crate version that wrote the row.
    pub crate_version: String,
    /// Details the migration recorded about its outcome (e.g. the model a
    /// re-embedding used); see [`MigrationContext::record_detail`](crate::MigrationContext::record_detail).
    pub details: BTreeMap<String, String>,
}

impl LedgerEntry {
    /// How long it took, once finished.
    pub fn duration(&self) -> Option<Duration> {
        self.finished_at?.duration_since(self.started_at).ok()
    }
}

/// An open ledger table.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    table: Table,
    /// What this handle knows of the ledger, for skipping reads.
    seen: Arc<Mutex<Seen>>,
}

/// What a [`Ledger`] handle read and wrote last. Lance versions are
/// immutable, so anything tied to the version that is still the latest
/// holds.
#[derive(Debug, Default)]
struct Seen {
    /// The entries of one version, as [`Ledger::entries`] read them.
    entries: Option<(u64, Vec<LedgerEntry>)>,
    /// The one-row fragment [`Ledger::insert`] appended, with its id and
    /// the version its append made.
    inserted: Option<(String, u64, u64)>,
}

impl Ledger {
    /// Opens the ledger, creating it (empty) when it does not exist.
    pub(crate) async fn open_or_create(db: &Connection, name: &str) -> Result<Self> {
        let table = match db.open_table(name).execute().await {
            Ok(table) => table,
            Err(lancedb::Error::TableNotFound { .. }) => create(db, name).await?,
            Err(e) => return Err(Error::lance(format!("open ledger `{name}`"))(e)),
        };
        check_schema(name, &table).await?;
        add_late_columns(name, &table).await?;
        Ok(Self::new(table))
    }

    fn new(table: Table) -> Self {
        Self {
            table,
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // The data is a cache: a panic elsewhere cannot leave it wrong.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the ledger if it exists.
    pub(crate) async fn open(db: &Connection, name: &str) -> Result<Option<Self>> {
        match db.open_table(name).execute().await {
            Ok(table) => {
                check_schema(name, &table).await?;
                Ok(Some(Self::new(table)))
            }
            Err(lancedb::Error::TableNotFound { .. }) => Ok(None),
            Err(e) => Err(Error::lance(format!("open ledger `{name}`"))(e)),
        }
    }

    /// The ledger's table handle (the lease's tags live on it).
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    /// Every entry, in the order the migrations were listed. A second call
    /// while the ledger has no new version (the usual case when a run reads
    /// it again under the lease) does not read it again.
    pub(crate) async fn entries(&self) -> Result<Vec<LedgerEntry>> {
        let version = crate::lance::latest_version(&self.table).await?;
        if let Some((seen, entries)) = &self.seen().entries
            && *seen == version
        {
            return Ok(entries.clone());
        }
        let batches: Vec<RecordBatch> = self
            .table
            .query()
            .execute()
            .await
            .map_err(Error::lance("read the ledger"))?
            .try_collect()
            .await
            .map_err(Error::lance("read the ledger"))?;
        let mut entries = Vec::new();
        for batch in &batches {
            entries.extend(decode(self.table.name(), batch)?);
        }
        entries.sort_by_key(|e| e.seq);
        let entries = newest_per_id(entries);
        self.seen().entries = Some((version, entries.clone()));
        Ok(entries)
    }

    /// Merges the ledger's fragments once there are more than
    /// [`MAX_FRAGMENTS`], and then deletes its versions older than
    /// [`HISTORY_KEPT`]: every ledger write adds a small fragment and a
    /// version, and reading the ledger and committing to it slow down with
    /// their number. Called under the lease, so no other process writes the
    /// ledger; a failure is logged and ignored (the ledger stays correct,
    /// only slower).
    pub(crate) async fn tidy(&self) {
        let fragments = match self.table.stats().await {
            Ok(stats) => stats.fragment_stats.num_fragments,
            Err(e) => {
                warn!(error = %e, "could not read the ledger's statistics");
                return;
            }
        };
        if fragments <= MAX_FRAGMENTS {
            return;
        }
        let compact = OptimizeAction::Compact {
            options: CompactionOptions::default(),
            remap_options: None,
        };
        match self.table.optimize(compact).await {
            Ok(_) => debug!(fragments, "ledger compacted"),
            Err(e) => warn!(error = %e, "could not compact the ledger"),
        }
        self.prune(HISTORY_KEPT).await;
    }

    /// Deletes the ledger's versions older than `kept`, and the files only
    /// they used. Tagged versions (the lease's) stay, and so does the
    /// latest.
    async fn prune(&self, kept: Duration) {
        let older_than = chrono::Duration::from_std(kept).unwrap_or(chrono::Duration::MAX);
        let prune = OptimizeAction::Prune {
            older_than: Some(older_than),
            delete_unverified: Some(false),
            error_if_tagged_old_versions: Some(false),
        };
        match self.table.optimize(prune).await {
            Ok(stats) => debug!(
                versions = stats.prune.map_or(0, |p| p.old_versions),
                "old ledger versions deleted"
            ),
            Err(e) => warn!(error = %e, "could not delete the ledger's old versions"),
        }
    }

    /// Writes the first row for `entry`'s id with a plain append (cheaper
    /// than a merge); the caller knows the ledger has no row for it and
    /// holds the lease, so no other writer can add one meanwhile.
    ///
    /// A process that lost the race to create the ledger can still commit
    /// its create (Lance turns it into an overwrite; see
    /// [`restore_overwritten_rows`]), and an append racing that commit fails
    /// as incompatible; the append is then retried on the latest version, a
    /// few times.
    pub(crate) async fn insert(&self, entry: &LedgerEntry) -> Result<()> {
        let batch = encode(std::slice::from_ref(entry))?;
        let added = retry(
            "append a ledger row",
            is_conflict_or_overwritten,
            |attempt| {
                let batch = batch.clone();
                async move {
                    if attempt > 1 {
                        latest_version(&self.table).await?;
                    }
                    self.table
                        .add(batch)
                        .execute()
                        .await
                        .map_err(recording(entry))
                }
            },
        )
        .await?;
        self.remember_insert(&entry.id, added.version).await;
        Ok(())
    }

    /// Writes `entry`, replacing any row with the same id, in one commit.
    pub(crate) async fn record(&self, entry: &LedgerEntry) -> Result<()> {
        let batch = encode(std::slice::from_ref(entry))?;
        match self.replace_own_fragment(&entry.id, batch.clone()).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => debug!(error = %e, "fast ledger update not possible; merging"),
        }
        let schema = batch.schema();
        let reader = RecordBatchIterator::new([Ok(batch)], schema);
        let mut merge = self.table.merge_insert(&["id"]);
        merge
            .when_matched_update_all(None)
            .when_not_matched_insert_all()
            .use_index(false);
        merge
            .execute(Box::new(reader))
            .await
            .map_err(recording(entry))?;
        Ok(())
    }
}

impl Ledger {
    /// Notes the fragment an append of `id`'s row made (the newest one at
    /// `version`), so that [`record`](Self::record) need not search for it.
    async fn remember_insert(&self, id: &str, version: u64) {
        if let Some(fragment) = fragments::newest_if_single_row(&self.table, version).await {
            self.seen().inserted = Some((id.to_owned(), fragment, version));
        }
    }

    /// The fragment holding `id`'s row alone, when [`insert`](Self::insert)
    /// appended it and nothing was committed to the ledger since (under the
    /// lease nothing else writes it): fragment ids are never reused within
    /// one history, so it is still that row.
    fn remembered_fragment(&self, id: &str, latest: u64) -> Option<u64> {
        match &self.seen().inserted {
            Some((seen, fragment, version)) if seen == id && *version == latest => Some(*fragment),
            _ => None,
        }
    }

    /// The cheap path of [`record`](Self::record): when the row for `id` is
    /// alone in its fragment (as [`insert`](Self::insert) leaves it), one
    /// Lance `Update` commit swaps that fragment for a new one holding
    /// `batch`, with none of `merge_insert`'s query planning. Returns
    /// `false` when the row shares its fragment (e.g. after compaction).
    async fn replace_own_fragment(&self, id: &str, batch: RecordBatch) -> Result<bool> {
        let latest = crate::lance::latest_version(&self.table).await?;
        let fragment = match self.remembered_fragment(id, latest) {
            Some(fragment) => Some(fragment),
            None => fragments::alone_with(&self.table, "id", id).await?,
        };
        match fragment {
            Some(fragment) => fragments::replace(&self.table, fragment, batch).await,
            None => Ok(false),
        }
    }
}

/// One row per id. A row restored after a racing create (see
/// [`restore_overwritten_rows`]) can land beside the newer row the lease
/// holder wrote for the same id at the same moment; the row that finished,
/// or else started, later wins.
fn newest_per_id(entries: Vec<LedgerEntry>) -> Vec<LedgerEntry> {
    let mut kept: Vec<LedgerEntry> = Vec::with_capacity(entries.len());
    for entry in entries {
        match kept.iter_mut().find(|k| k.id == entry.id) {
            Some(k) if (entry.finished_at, entry.started_at) > (k.finished_at, k.started_at) => {
                *k = entry;
            }
            Some(_) => {}
            None => kept.push(entry),
        }
    }
    kept
}

/// The error of a failed ledger write for `entry`.
fn recording(entry: &LedgerEntry) -> impl FnOnce(lancedb::Error) -> Error {
    Error::lance(format!("record migration `{}` in the ledger", entry.id))
}

fn schema() -> SchemaRef {
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

async fn create(db: &Connection, name: &str) -> Result<Table> {
    match db.create_empty_table(name, schema()).execute().await {
        Ok(table) => {
            restore_overwritten_rows(name, &table).await?;
            Ok(table)
        }
        // Another process created it between our open and create (racing
        // creates fail either way: "already exists" or a commit conflict).
        Err(e)
            if matches!(e, lancedb::Error::TableAlreadyExists { .. })
                || is_lancedb_conflict(&e) =>
        {
            db.open_table(name)
                .execute()
                .await
                .map_err(Error::lance(format!("open ledger `{name}`")))
        }
        Err(e) => Err(Error::lance(format!("create ledger `{name}`"))(e)),
    }
}

/// Undoes a late create. Of two processes creating the ledger at once, the
/// one that finds it missing but commits second does not fail: Lance
/// commits its empty create as an overwrite on top of the other's ledger,
/// erasing any rows the other already wrote. That process knows it from
/// its commit's version (a real create is version 1), and re-inserts the
/// rows of the version just before its own whose ids the ledger no longer
/// has. Rows written since (the winner carries on on top of the empty
/// ledger) are newer and are kept.
async fn restore_overwritten_rows(name: &str, table: &Table) -> Result<()> {
    let failed = || Error::lance(format!("restore ledger `{name}` after a racing create"));
    let created = table.version().await.map_err(failed())?;
    if created <= 1 {
        return Ok(());
    }
    let lost = rows_at(table, created - 1).await?;
    let rows: usize = lost.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 {
        return Ok(());
    }
    warn!(
        ledger = name,
        version = created,
        rows,
        "this process created the ledger after another one did; restoring the rows its create overwrote"
    );
    let schema = lost[0].schema();
    retry(
        "restore the ledger after a racing create",
        is_conflict_or_overwritten,
        |_| {
            let lost = lost.clone();
            let schema = schema.clone();
            async move {
                // Matched against the latest rows, not the empty ones of this create.
                latest_version(table).await?;
                let reader = RecordBatchIterator::new(lost.into_iter().map(Ok), schema);
                let mut merge = table.merge_insert(&["id"]);
                merge.when_not_matched_insert_all().use_index(false);
                merge.execute(Box::new(reader)).await.map_err(failed())?;
                Ok(())
            }
        },
    )
    .await
}

async fn check_schema(name: &str, table: &Table) -> Result<()> {
    let actual = table
        .schema()
        .await
        .map_err(Error::lance(format!("read the schema of ledger `{name}`")))?;
    let damaged = |reason: String| Error::Ledger {
        ledger: name.to_owned(),
        reason,
    };
    let format = actual.metadata().get(FORMAT_KEY);
    match format.map(|f| f.parse::<u32>()) {
        None => {
            return Err(damaged(format!(
                "it has no `{FORMAT_KEY}` marker; is it really a ledger?"
            )));
        }
        Some(Ok(f)) if f > FORMAT => {
            return Err(damaged(format!(
                "it has format {f}, written by a newer lancedb-migrate (this one reads up to {FORMAT}); upgrade the crate"
            )));
        }
        Some(Err(_)) => {
            return Err(damaged(format!(
                "its `{FORMAT_KEY}` marker is not a number"
            )));
        }
        Some(Ok(_)) => {}
    }
    for field in schema().fields() {
        if LATE_COLUMNS.contains(&field.name().as_str()) {
            continue;
        }
        match actual.field_with_name(field.name()) {
            Ok(f) if f.data_type() == field.data_type() => {}
            _ => {
                return Err(damaged(format!(
                    "column `{}` is missing or has the wrong type",
                    field.name()
                )));
            }
        }
    }
    Ok(())
}

/// Ledgers written before the [`LATE_COLUMNS`] existed get them, all-null
/// (metadata-only).
async fn add_late_columns(name: &str, table: &Table) -> Result<()> {
    let missing = |schema: &SchemaRef| -> Vec<Field> {
        LATE_COLUMNS
            .iter()
            .filter(|c| schema.field_with_name(c).is_err())
            .map(|c| Field::new(*c, DataType::Utf8, true))
            .collect()
    };
    let read = Error::lance(format!("read the schema of ledger `{name}`"));
    let columns = missing(&table.schema().await.map_err(read)?);
    if columns.is_empty() {
        return Ok(());
    }
    let names = columns.iter().map(|f| f.name().clone()).collect::<Vec<_>>();
    let column = Arc::new(Schema::new(columns));
    let added = table
        .add_columns()
        .transform(NewColumnTransform::AllNulls(column))
        .execute()
        .await;
    if let Err(e) = added {
        // Another process may have added it meanwhile.
        table.checkout_latest().await.ok();
        let read = Error::lance(format!("read the schema of ledger `{name}`"));
        if !missing(&table.schema().await.map_err(read)?).is_empty() {
            return Err(Error::lance(format!(
                "add columns {names:?} to ledger `{name}`"
            ))(e));
        }
    }
    Ok(())
}

fn micros(t: SystemTime) -> i64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn from_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

fn encode(entries: &[LedgerEntry]) -> Result<RecordBatch> {
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

fn decode(ledger: &str, batch: &RecordBatch) -> Result<Vec<LedgerEntry>> {
    let damaged = |column: &str| Error::Ledger {
        ledger: ledger.to_owned(),
        reason: format!("column `{column}` is missing or has the wrong type"),
    };
    let col = |name: &str| batch.column_by_name(name).ok_or_else(|| damaged(name));
    let s = |name: &str| {
        col(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| damaged(name))
    };
    let u = |name: &str| {
        col(name)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| damaged(name))
    };
    let i = |name: &str| {
        col(name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| damaged(name))
    };
    let t = |name: &str| {
        col(name)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| damaged(name))
    };
    let (id, table, checksum, status) = (s("id")?, s("table_name")?, s("checksum")?, s("status")?);
    let (backup, error, crate_version) = (s("backup_tag")?, s("error")?, s("crate_version")?);
    let (seq, v_before, v_after) = (i("seq")?, u("version_before")?, u("version_after")?);
    let (r_before, r_after) = (u("rows_before")?, u("rows_after")?);
    let (started, finished) = (t("started_at")?, t("finished_at")?);
    let details = batch
        .column_by_name(DETAILS)
        .and_then(|c| c.as_string_opt::<i32>());
    let backup_copy = batch
        .column_by_name(BACKUP_COPY)
        .and_then(|c| c.as_string_opt::<i32>());
    let opt_s = |a: &StringArray, row: usize| a.is_valid(row).then(|| a.value(row).to_owned());
    let opt_u = |a: &UInt64Array, row: usize| a.is_valid(row).then(|| a.value(row));
    (0..batch.num_rows())
        .map(|row| {
            let status = Status::parse(status.value(row)).ok_or_else(|| Error::Ledger {
                ledger: ledger.to_owned(),
                reason: format!(
                    "unknown status `{}` for `{}`",
                    status.value(row),
                    id.value(row)
                ),
            })?;
            Ok(LedgerEntry {
                id: id.value(row).to_owned(),
                seq: u64::try_from(seq.value(row)).unwrap_or(0),
                table: table.value(row).to_owned(),
                checksum: checksum.value(row).to_owned(),
                status,
                version_before: v_before.value(row),
                version_after: opt_u(v_after, row),
                backup_tag: opt_s(backup, row),
                backup_copy: backup_copy.and_then(|c| opt_s(c, row)),
                started_at: from_micros(started.value(row)),
                finished_at: finished
                    .is_valid(row)
                    .then(|| from_micros(finished.value(row))),
                rows_before: r_before.value(row),
                rows_after: opt_u(r_after, row),
                error: opt_s(error, row),
                crate_version: crate_version.value(row).to_owned(),
                details: details
                    .and_then(|d| opt_s(d, row))
                    .and_then(|json| serde_json::from_str(&json).ok())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lancedb::database::CreateTableMode;

    fn entry(id: &str, seq: u64, status: Status) -> LedgerEntry {
        LedgerEntry {
            id: id.to_owned(),
            seq,
            table: "docs".to_owned(),
            checksum: "c".repeat(64),
            status,
            version_before: 1,
            version_after: None,
            backup_tag: None,
            backup_copy: None,
            started_at: SystemTime::now(),
            finished_at: None,
            rows_before: 10,
            rows_after: None,
            error: None,
            crate_version: env!("CARGO_PKG_VERSION").to_owned(),
            details: BTreeMap::new(),
        }
    }

    async fn states(ledger: &Ledger) -> Vec<(String, Status)> {
        let entries = ledger.entries().await.unwrap();
        entries.into_iter().map(|e| (e.id, e.status)).collect()
    }

    #[test]
    fn a_duplicated_id_reads_as_its_newest_row() {
        let running = entry("m2", 1, Status::Running);
        let mut applied = entry("m2", 1, Status::Applied);
        applied.finished_at = Some(SystemTime::now());
        let m1 = entry("m1", 0, Status::Applied);
        for rows in [
            vec![m1.clone(), running.clone(), applied.clone()],
            vec![m1.clone(), applied.clone(), running.clone()],
        ] {
            let kept = newest_per_id(rows);
            let got: Vec<_> = kept.iter().map(|e| (e.id.as_str(), e.status)).collect();
            assert_eq!(got, [("m1", Status::Applied), ("m2", Status::Applied)]);
        }
    }

    async fn ledger_in(dir: &tempfile::TempDir) -> (Connection, Ledger) {
        let db = lancedb::connect(dir.path().to_str().unwrap())
            .execute()
            .await
            .unwrap();
        let ledger = Ledger::open_or_create(&db, "ledger").await.unwrap();
        (db, ledger)
    }

    fn finished(id: &str, seq: u64, status: Status) -> LedgerEntry {
        let mut e = entry(id, seq, status);
        e.finished_at = Some(SystemTime::now());
        e
    }

    async fn insert(ledger: &Ledger, id: &str, seq: u64, status: Status) {
        ledger.insert(&entry(id, seq, status)).await.unwrap();
    }

    async fn finish(ledger: &Ledger, id: &str, seq: u64, status: Status) {
        ledger.record(&finished(id, seq, status)).await.unwrap();
    }

    /// `record` finds the row `insert` wrote without searching when nothing
    /// was committed in between, and by searching otherwise: either way
    /// exactly that row changes.
    #[tokio::test]
    async fn record_replaces_the_row_insert_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (db, ledger) = ledger_in(&dir).await;
        insert(&ledger, "m1", 0, Status::Running).await;
        let version = ledger.table().version().await.unwrap();
        assert!(ledger.remembered_fragment("m1", version).is_some());
        finish(&ledger, "m1", 0, Status::Applied).await;

        insert(&ledger, "m2", 1, Status::Running).await;
        insert(&ledger, "m3", 2, Status::Running).await;
        finish(&ledger, "m2", 1, Status::Failed).await;
        // Another handle (another process) writes between insert and record.
        let other = Ledger::open_or_create(&db, "ledger").await.unwrap();
        insert(&other, "m4", 3, Status::Running).await;
        finish(&ledger, "m3", 2, Status::Applied).await;

        let expected = [
            ("m1".to_owned(), Status::Applied),
            ("m2".to_owned(), Status::Failed),
            ("m3".to_owned(), Status::Applied),
            ("m4".to_owned(), Status::Running),
        ];
        assert_eq!(states(&ledger).await, expected);
        assert_eq!(ledger.table().count_rows(None).await.unwrap(), 4);
    }

    /// A read while the ledger has no new version answers from the last
    /// one; a write by anyone makes the next read see it.
    #[tokio::test]
    async fn entries_are_read_again_only_after_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let (db, ledger) = ledger_in(&dir).await;
        insert(&ledger, "m1", 0, Status::Running).await;
        assert_eq!(states(&ledger).await.len(), 1);
        let cached = ledger.seen().entries.as_ref().map(|(v, _)| *v);
        assert_eq!(cached, Some(ledger.table().version().await.unwrap()));
        let other = Ledger::open_or_create(&db, "ledger").await.unwrap();
        finish(&other, "m1", 0, Status::Applied).await;
        assert_eq!(states(&ledger).await, [("m1".to_owned(), Status::Applied)]);
    }

    /// Pruning leaves the latest version and the tagged ones (the lease's),
    /// and the rows as they were.
    #[tokio::test]
    async fn pruning_keeps_the_latest_and_the_tagged_versions() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, ledger) = ledger_in(&dir).await;
        for i in 0..6 {
            ledger
                .insert(&entry(&format!("m{i}"), i, Status::Running))
                .await
                .unwrap();
            if i == 2 {
                let version = ledger.table().version().await.unwrap();
                let mut tags = ledger.table().tags().await.unwrap();
                tags.create("lease-00000000000000000001", version)
                    .await
                    .unwrap();
            }
        }
        let versions = || async { ledger.table().list_versions().await.unwrap().len() };
        assert_eq!(versions().await, 7);
        ledger.prune(HISTORY_KEPT).await;
        assert_eq!(versions().await, 7, "all of them are recent");
        ledger.prune(Duration::ZERO).await;
        let kept: Vec<u64> = ledger
            .table()
            .list_versions()
            .await
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(kept, [4, 7], "the tagged one and the latest");
        assert_eq!(states(&ledger).await.len(), 6);
    }

    /// The race Lance leaves open: a process that found no ledger commits
    /// its create after another process created the ledger and wrote rows.
    /// Lance makes that create an overwrite; reproduced here with an
    /// explicit overwrite, which commits the same operation.
    #[tokio::test]
    async fn a_late_create_gives_back_the_rows_it_overwrote() {
        let dir = tempfile::tempdir().unwrap();
        let (db, winner) = ledger_in(&dir).await;
        assert_eq!(winner.table().version().await.unwrap(), 1);
        insert(&winner, "m1", 0, Status::Applied).await;
        insert(&winner, "m2", 1, Status::Running).await;

        let late = db
            .create_empty_table("ledger", schema())
            .mode(CreateTableMode::Overwrite)
            .execute()
            .await
            .unwrap();
        assert_eq!(late.version().await.unwrap(), 4, "committed on top");
        assert!(
            states(&winner).await.is_empty(),
            "the create erased the rows"
        );
        // The winner carries on on the empty ledger before the repair.
        winner
            .record(&entry("m2", 1, Status::Applied))
            .await
            .unwrap();

        restore_overwritten_rows("ledger", &late).await.unwrap();

        let applied = [
            ("m1".to_owned(), Status::Applied),
            ("m2".to_owned(), Status::Applied),
        ];
        assert_eq!(
            states(&winner).await,
            applied,
            "m1 back, m2's newer row kept"
        );
        // A second repair (or one by a process whose create was real) changes nothing.
        restore_overwritten_rows("ledger", &late).await.unwrap();
        assert_eq!(states(&winner).await, applied);
    }
}
