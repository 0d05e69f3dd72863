//! [`Ledger`]: the ledger table opened, read and written, one row per
//! migration id.

use super::codec::{decode, encode};
use super::create::{add_late_columns, check_schema, claim_format, create};
use super::entry::LedgerEntry;
use crate::error::{Error, Result};
use crate::lance::fence::Fence;
use crate::lance::fragments;
use crate::lance::latest_version;
use crate::lance::retry::{is_conflict_or_overwritten, retry};
use arrow_array::{RecordBatch, RecordBatchIterator};
use futures::TryStreamExt;
use lancedb::query::ExecutableQuery;
use lancedb::table::{CompactionOptions, OptimizeAction};
use lancedb::{Connection, Table};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, warn};

/// Fragments the ledger may have before a run compacts it.
pub(crate) const MAX_FRAGMENTS: usize = 16;
/// The ledger's old versions are pruned once every this many of its
/// versions.
pub(crate) const PRUNE_EVERY: u64 = 32;
/// How long the ledger keeps a version it no longer needs: long enough for
/// any read that started on it to end.
pub(crate) const HISTORY_KEPT: Duration = Duration::from_secs(3600);

/// An open ledger table.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    pub(super) table: Table,
    /// What this handle knows of the ledger, for skipping reads.
    pub(super) seen: Arc<Mutex<Seen>>,
    /// Whether this handle is used under the lease ([`held`](Self::held)).
    exclusive: bool,
    /// Under the lease: checked before every commit attempt, so that a
    /// process stalled past the lease's TTL in the middle of a ledger
    /// write (its lease check already passed) does not retry that write
    /// on the ledger another holder has written meanwhile.
    fence: Option<Fence>,
}

/// What a [`Ledger`] handle read and wrote last. Lance versions are
/// immutable, so anything tied to the version that is still the latest
/// holds.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The entries of one version, as [`Ledger::entries`] read them (or
    /// this handle wrote them).
    pub(super) entries: Option<(u64, Vec<LedgerEntry>)>,
    /// The first version this handle read: where this run started.
    pub(super) first: Option<u64>,
}

impl Ledger {
    /// Opens the ledger, creating it (empty) when it does not exist.
    #[cfg(test)]
    pub(crate) async fn open_or_create(db: &Connection, name: &str) -> Result<Self> {
        Self::open_or_create_after(db, name, async || Ok(())).await
    }

    /// Opens the ledger, creating it (empty) when it does not exist, after
    /// `before_create` succeeded.
    pub(crate) async fn open_or_create_after(
        db: &Connection,
        name: &str,
        before_create: impl AsyncFnOnce() -> Result<()>,
    ) -> Result<Self> {
        let table = match db.open_table(name).execute().await {
            Ok(table) => table,
            Err(lancedb::Error::TableNotFound { .. }) => {
                before_create().await?;
                create(db, name).await?
            }
            Err(e) => return Err(Error::lance(format!("open ledger `{name}`"))(e)),
        };
        check_schema(name, &table).await?;
        add_late_columns(name, &table).await?;
        Ok(Self::new(table))
    }

    pub(super) fn new(table: Table) -> Self {
        Self {
            table,
            seen: Arc::default(),
            exclusive: false,
            fence: None,
        }
    }

    /// This handle, for use while the caller holds the lease: no other
    /// process commits to the ledger then, so a version this handle read
    /// or committed that its table handle is still at is the latest, and
    /// a record need not look for a newer one (a listing on an object
    /// store).
    pub(crate) fn held(&self, fence: Fence) -> Self {
        Self {
            exclusive: true,
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// Whether this process may still commit to the ledger: always, but
    /// under the lease only while its fence holds.
    fn may_commit(&self) -> Result<()> {
        self.fence.as_ref().map_or(Ok(()), Fence::check)
    }

    /// Under the lease, the version this handle last read or wrote, when
    /// its table handle is still at that version.
    async fn own_head(&self) -> Option<u64> {
        if !self.exclusive {
            return None;
        }
        let at = self.seen().entries.as_ref().map(|(version, _)| *version)?;
        let handle = self.table.version().await.ok()?;
        (handle == at).then_some(at)
    }

    pub(super) fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
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

    /// Checks again that the ledger's format is one this build knows: under
    /// the lease, before the first write, in case a newer release wrote it
    /// since it was opened. The handle is at the latest version after
    /// [`entries`](Self::entries), so this reads nothing more.
    pub(crate) async fn check_format(&self) -> Result<()> {
        check_schema(self.table.name(), &self.table).await
    }

    /// Records this build's format in the ledger, if it holds an older one;
    /// the caller holds the lease and is about to write.
    pub(crate) async fn claim_format(&self) -> Result<()> {
        claim_format(self.table.name(), &self.table).await
    }

    /// The ledger's table handle (the lease's tags live on it).
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    /// Every entry, in the order the migrations were listed. A second call
    /// while the ledger has no new version (the usual case when a run reads
    /// it again under the lease) does not read it again.
    pub(crate) async fn entries(&self) -> Result<Vec<LedgerEntry>> {
        let version = latest_version(&self.table).await?;
        self.entries_at(version).await
    }

    /// Every entry, right after the ledger was opened: the handle is at the
    /// latest version then, so this does not look for a newer one (a
    /// listing, on an object store). Only for a handle just opened.
    pub(crate) async fn entries_as_opened(&self) -> Result<Vec<LedgerEntry>> {
        let version = self
            .table
            .version()
            .await
            .map_err(Error::lance("read the ledger's version"))?;
        self.entries_at(version).await
    }

    pub(super) async fn entries_at(&self, version: u64) -> Result<Vec<LedgerEntry>> {
        self.seen().first.get_or_insert(version);
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
    /// [`MAX_FRAGMENTS`] (more than one on an object store), and deletes its
    /// versions older than [`HISTORY_KEPT`] once this run's commits crossed
    /// a multiple of [`PRUNE_EVERY`]: reading the ledger and committing to
    /// it slow down with their number. Every [`record`](Self::record)
    /// leaves the ledger one fragment, so compacting is left for a ledger
    /// that a crash left with an appended row (or that an older release
    /// wrote). Called under the lease, so no other process writes the
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
        // On an object store every start reads each ledger fragment (one
        // request each): keep it to one there. Pruning lists and reads
        // every version (tens of requests on an object store): only when
        // this run's commits crossed a multiple of PRUNE_EVERY.
        let on_object_store = crate::lance::on_object_store(&self.table).await;
        let most = if on_object_store { 1 } else { MAX_FRAGMENTS };
        if fragments > most {
            let compact = OptimizeAction::Compact {
                options: CompactionOptions::default(),
                remap_options: None,
            };
            match self.table.optimize(compact).await {
                Ok(_) => debug!(fragments, "ledger compacted"),
                Err(e) => warn!(error = %e, "could not compact the ledger"),
            }
        }
        let first = self.seen().first.unwrap_or_default();
        let now = self.table.version().await.unwrap_or_default();
        if first / PRUNE_EVERY != now / PRUNE_EVERY {
            self.prune(HISTORY_KEPT).await;
        }
    }

    /// Deletes the ledger's versions older than `kept`, and the files only
    /// they used. Tagged versions (the lease's) stay, and so does the
    /// latest.
    pub(super) async fn prune(&self, kept: Duration) {
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
                    self.may_commit()?;
                    self.table
                        .add(batch)
                        .execute()
                        .await
                        .map_err(recording(entry))
                }
            },
        )
        .await?;
        self.remember_insert(entry, added.version);
        Ok(())
    }

    /// Writes `entries`, each replacing any row with the same id, in one
    /// commit when the ledger can be rewritten (else one each).
    pub(crate) async fn record_all(&self, entries: &[LedgerEntry]) -> Result<()> {
        match self.rewrite_with(entries).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e @ Error::LeaseLost { .. }) => return Err(e),
            Err(e) => debug!(error = %e, "ledger rewrite not possible; recording one by one"),
        }
        for entry in entries {
            self.record(entry).await?;
        }
        Ok(())
    }

    /// Writes `entry`, replacing any row with the same id, in one commit.
    pub(crate) async fn record(&self, entry: &LedgerEntry) -> Result<()> {
        match self.rewrite_with(std::slice::from_ref(entry)).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e @ Error::LeaseLost { .. }) => return Err(e),
            Err(e) => debug!(error = %e, "ledger rewrite not possible; merging"),
        }
        let batch = encode(std::slice::from_ref(entry))?;
        let schema = batch.schema();
        let reader = RecordBatchIterator::new([Ok(batch)], schema);
        self.may_commit()?;
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
    /// After this handle appended `entry` at `version`: when the entries it
    /// holds are those of the version just before, they are `version`'s
    /// with `entry` added (under the lease no one else commits), so the
    /// next [`record`](Self::record) need not read the ledger.
    pub(super) fn remember_insert(&self, entry: &LedgerEntry, version: u64) {
        let mut seen = self.seen();
        if let Some((at, entries)) = &mut seen.entries
            && *at + 1 == version
            && !entries.iter().any(|e| e.id == entry.id)
        {
            entries.push(entry.clone());
            entries.sort_by_key(|e| e.seq);
            *at = version;
        }
    }

    /// The cheap path of [`record`](Self::record): the ledger (one row per
    /// migration, so small) rewritten whole with `changed`'s rows replaced, as
    /// one new fragment in place of all there were, in one Lance `Update`
    /// commit. The ledger stays one fragment, so a start reads one data
    /// file and nothing needs compacting. `false` when Lance wrote it as
    /// something other than new fragments (nothing committed).
    pub(super) async fn rewrite_with(&self, changed: &[LedgerEntry]) -> Result<bool> {
        if let Some(head) = self.own_head().await {
            match self.rewrite_at(head, changed).await {
                Ok(done) => return Ok(done),
                // Someone committed to the ledger after all (a racing
                // create turned into an overwrite): from the latest.
                Err(e) => {
                    debug!(error = %e, "the ledger moved; rewriting it from its latest version")
                }
            }
        }
        let latest = latest_version(&self.table).await?;
        self.rewrite_at(latest, changed).await
    }

    /// [`rewrite_with`](Self::rewrite_with) from the entries of `version`,
    /// where the table handle is.
    async fn rewrite_at(&self, version: u64, changed: &[LedgerEntry]) -> Result<bool> {
        let mut entries = self.entries_at(version).await?;
        for entry in changed {
            match entries.iter_mut().find(|e| e.id == entry.id) {
                Some(row) => *row = entry.clone(),
                None => entries.push(entry.clone()),
            }
        }
        entries.sort_by_key(|e| e.seq);
        let batch = encode(&entries)?;
        self.may_commit()?;
        let Some(version) = fragments::replace_all(&self.table, batch).await? else {
            return Ok(false);
        };
        self.seen().entries = Some((version, entries));
        Ok(true)
    }
}

/// One row per id. A row restored after a racing create (see
/// [`restore_overwritten_rows`]) can land beside the newer row the lease
/// holder wrote for the same id at the same moment; the row that finished,
/// or else started, later wins.
pub(super) fn newest_per_id(entries: Vec<LedgerEntry>) -> Vec<LedgerEntry> {
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
pub(super) fn recording(entry: &LedgerEntry) -> impl FnOnce(lancedb::Error) -> Error {
    Error::lance(format!("record migration `{}` in the ledger", entry.id))
}
