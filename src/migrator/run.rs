//! The [`Migrator`]: its settings, and the run that applies the pending
//! migrations under the lease.

use super::divergence::{self, Divergence, Policies};
use super::drift::ChecksumUpgrade;
use super::retention::prune_backups;
use super::{drift, pending, retention::Retention};
use crate::backup::BackupLocation;
use crate::error::{Error, Result};
use crate::event::{Event, Events};
use crate::lance::store::require_put_if_absent;
use crate::ledger::lease::{Acquired, Busy, Lease, LeaseConfig};
use crate::ledger::{Ledger, LedgerEntry, LedgerStatus};
use crate::migration::Migration;
use crate::migrator::apply::Apply;
use crate::report::{MigrationReport, Outcome, Report};
use crate::stop::StopSignal;
use lancedb::Connection;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};
use tracing::{Instrument, info, info_span};

/// The default name of the ledger table.
pub const DEFAULT_LEDGER_TABLE: &str = "_lancedb_migrations";

/// What [`Migrator::run`] does when another process holds the migration
/// lease (it is applying migrations: a replica that started first, a
/// migration job). Set with [`Migrator::when_locked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenLocked {
    /// Wait until the migrations that block serving
    /// ([`Migration::blocks_serving`]) have landed, whoever applies them,
    /// then return a report listing the rest [`Outcome::Pending`] (and
    /// [`Report::holder`]). With none of those pending, return at once.
    /// Fails with [`Error::LeaseTimeout`] only when they have not landed
    /// within [`lease_wait`](Migrator::lease_wait). The default: a replica
    /// starting while another re-embeds for hours serves at once.
    #[default]
    UntilReady,
    /// Never wait: return at once with every migration not yet applied
    /// listed [`Outcome::Pending`]. Check [`Report::is_ready`] before
    /// serving.
    Return,
    /// Wait for the lease, up to [`lease_wait`](Migrator::lease_wait), and
    /// apply everything still pending (the behaviour before 0.1): for a
    /// dedicated migration job, or where every migration is quick.
    Wait,
}

/// Applies a list of migrations to a database, each exactly once, in order.
///
/// Build it at application start, add every migration the application has
/// ever had (in order), and call [`run`](Self::run). Migrations already in
/// the ledger are skipped; each pending one is backed up, transformed,
/// rebuilt and verified, and restored from its backup if any of that fails.
///
/// # Examples
///
/// ```
/// use arrow_schema::DataType;
/// use lancedb_migrate::{AddColumns, Migrator, NewColumn, DefaultValue, testing};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lancedb_migrate::Result<()> {
/// let db = testing::memory_db().await?;
/// testing::documents_table(&db, "documents", 100, 8).await?;
///
/// let migrator = Migrator::new(db).add(
///     AddColumns::new("0001_add_category", "documents")
///         .column(NewColumn::new("category", DataType::Utf8).default_value("general")),
/// );
/// let report = migrator.run().await?;
/// assert_eq!(report.applied().count(), 1);
///
/// // The next start finds it applied and does nothing.
/// let again = migrator.run().await?;
/// assert!(again.is_noop());
/// # Ok(())
/// # }
/// ```
#[must_use = "a Migrator does nothing until `run` is called"]
pub struct Migrator {
    pub(crate) db: Connection,
    pub(crate) migrations: Vec<Box<dyn Migration>>,
    pub(crate) ledger: String,
    pub(super) events: Events,
    pub(crate) lease: LeaseConfig,
    pub(super) copy_to: Option<BackupLocation>,
    pub(super) retention: Retention,
    pub(super) when_locked: WhenLocked,
    pub(crate) stop: StopSignal,
    pub(crate) policies: Policies,
}

impl Migrator {
    /// A migrator over `db` with no migrations, recording into the ledger
    /// table [`DEFAULT_LEDGER_TABLE`].
    pub fn new(db: Connection) -> Self {
        Self {
            db,
            migrations: Vec::new(),
            ledger: DEFAULT_LEDGER_TABLE.to_owned(),
            events: Events::default(),
            lease: LeaseConfig::new(),
            copy_to: None,
            retention: Retention::All,
            when_locked: WhenLocked::default(),
            stop: StopSignal::new(),
            policies: Policies::default(),
        }
    }

    /// What to do when the ledger shows migrations applied that are no
    /// longer in the list, at positions the list still has (they were
    /// deleted from the code). Default: [`Divergence::Refuse`], with
    /// [`Error::MissingMigrations`] before anything runs.
    pub fn on_missing(mut self, policy: Divergence) -> Self {
        self.policies.missing = policy;
        self
    }

    /// What to do when migrations that never ran are listed before one
    /// that was applied when they were not listed yet (a branch merged
    /// late). Default: [`Divergence::Refuse`], with [`Error::OutOfOrder`]
    /// before anything runs; [`Divergence::Allow`] applies them.
    ///
    /// A migration that was listed but deferred (a re-embed that runs after
    /// the migrations that block serving) is not out of order.
    pub fn on_out_of_order(mut self, policy: Divergence) -> Self {
        self.policies.out_of_order = policy;
        self
    }

    /// What to do when the ledger shows migrations applied after every
    /// migration in the list: a newer release of the application applied
    /// them, and this build is older (a rolling deploy, a rollback).
    /// Default: [`Divergence::Allow`] — this build applies its own pending
    /// migrations and serves; [`Divergence::Refuse`] fails with
    /// [`Error::NewerMigrations`].
    pub fn on_newer(mut self, policy: Divergence) -> Self {
        self.policies.newer = policy;
        self
    }

    /// What [`run`](Self::run) does when another process holds the
    /// migration lease. Default: [`WhenLocked::UntilReady`] — wait only
    /// for the migrations that block serving, then report the rest pending.
    pub fn when_locked(mut self, policy: WhenLocked) -> Self {
        self.when_locked = policy;
        self
    }

    /// The signal that stops this migrator's runs at their next safe
    /// point: call [`StopSignal::stop`] on SIGTERM. See [`StopSignal`] for
    /// what a stopped run leaves. [`start`](Self::start)'s handle has it
    /// too ([`MigrationHandle::stop`](crate::MigrationHandle::stop)).
    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }

    /// Appends a migration. Migrations run in the order they are added.
    ///
    /// Accepts any [`Migration`], including `Box<dyn Migration>` and
    /// `Arc<dyn Migration>`.
    // `add` is the name applications read as "add a migration"; it is not
    // arithmetic, so `std::ops::Add` would be the wrong trait.
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, migration: impl Migration + 'static) -> Self {
        self.migrations.push(Box::new(migration));
        self
    }

    /// Sets the name of the ledger table. Default: [`DEFAULT_LEDGER_TABLE`].
    ///
    /// Two migrators with different ledgers on one database know nothing of
    /// each other's migrations.
    pub fn ledger_table(mut self, name: impl Into<String>) -> Self {
        self.ledger = name.into();
        self
    }

    /// How long a run waits for another process's migrations to finish
    /// before failing with [`Error::LeaseTimeout`]. Default: 10 minutes.
    ///
    /// Only runs with pending migrations wait: a run with nothing to do takes
    /// no lease. With the default [`WhenLocked::UntilReady`] a run waits only
    /// while a migration that blocks serving is pending; with
    /// [`WhenLocked::Return`] it never waits; [`start`](Self::start) never
    /// gives up (it stands by).
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.lease.wait = wait;
        self
    }

    /// How long a lease lives without a heartbeat. Default: 30 seconds.
    ///
    /// The holder renews it every third of this; a process killed while
    /// holding it blocks others for at most this long. Clocks of the
    /// processes sharing a database must agree to well within it. Must be at
    /// least 100 ms.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease.ttl = ttl;
        self
    }

    /// Skips the check that the object store under the database enforces
    /// put-if-absent. Default: checked.
    ///
    /// Before the first lease on an object store (not a local directory),
    /// a run creates one probe object twice and refuses to go on, with
    /// [`Error::UnsafeStore`], when the second create is accepted: on such
    /// a store two processes can both take the lease, and Lance's own
    /// commits overwrite each other. Opt out only when a single process
    /// ever writes the database (one replica, no concurrent application
    /// writes), or when the store is known to be safe and the probe's two
    /// requests are not wanted.
    pub fn allow_unsafe_store(mut self) -> Self {
        self.lease.check_store = false;
        self
    }

    /// How this process names itself in the lease, shown to processes that
    /// wait for it. Default: `$HOSTNAME-pid<pid>-<nonce>`.
    pub fn lease_holder(mut self, name: impl Into<String>) -> Self {
        self.lease.holder = name.into();
        self
    }

    /// Before each migration, writes an independent copy of its table as it
    /// is then to `location` (a directory path or object-store URI, or a
    /// [`BackupLocation`] with its own storage options), on top of the
    /// backup tag. Default: no copies.
    ///
    /// The copy survives what the tag does not: dropping the table, pruning
    /// its versions, losing its volume. It streams (memory does not grow
    /// with the table) but reads and writes the whole table, so it costs
    /// time in proportion to the table's size. The ledger and the report
    /// say where each copy went ([`LedgerEntry::backup_copy`],
    /// [`Backup::copy`](crate::Backup::copy)); restore one with
    /// [`BackupCopy::restore`](crate::BackupCopy::restore). If the copy
    /// cannot be made, the migration does not start. For one migration
    /// only, wrap it in [`WithBackupCopy`](crate::WithBackupCopy).
    pub fn copy_backups_to(mut self, location: impl Into<BackupLocation>) -> Self {
        self.copy_to = Some(location.into());
        self
    }

    /// What to keep of the backup tags applied migrations leave behind.
    /// Default: [`Retention::All`].
    ///
    /// After a run that applied something, tags beyond the policy are
    /// deleted on the tables it touched (and recorded in the ledger as
    /// `backup_pruned` details), so that LanceDB's version cleanup can
    /// reclaim their data. Tags that a rollback may still need (of failed
    /// or running migrations) are never deleted.
    pub fn keep_backups(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Calls `observer` with every [`Event`] of a run: migrations and phases
    /// starting and finishing, progress of long phases, and the lease
    /// waited for, taken, lost and released. Default: none.
    ///
    /// Each call adds an observer: all of them get every event, in the
    /// order they were added (an application's own observer and the
    /// command line's progress bar, say).
    ///
    /// The callback runs on the migrating task; keep it quick.
    pub fn on_event(mut self, observer: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.events = self.events.and_then(observer);
        self
    }

    /// Applies every pending migration, in order, and reports what it did.
    ///
    /// Before changing anything it checks the whole list: ids must be unique
    /// and applied migrations must be unchanged. When everything is applied
    /// it returns at once, having only read the ledger. Otherwise it takes
    /// the database's migration lease, reads the ledger again, and runs
    /// what is still pending: the migrations that block serving first
    /// ([`Migration::blocks_serving`]), then the rest. When another process
    /// holds the lease, what it does is [`when_locked`](Self::when_locked)'s
    /// choice: by default it waits only for the migrations that block
    /// serving and reports the rest [`Outcome::Pending`]. A
    /// migration found `running` (its process died) is undone like a failed
    /// one — its backup restored, the rows other writers appended since
    /// appended again — and run again (a resumable one continues instead);
    /// a `failed` one is run again.
    ///
    /// # Errors
    ///
    /// - [`Error::DuplicateId`], [`Error::InvalidMigration`],
    ///   [`Error::InvalidConfig`] or [`Error::Drift`] before anything runs;
    /// - [`Error::LeaseTimeout`] when another process kept the lease, with
    ///   what this run must wait for still pending, longer than
    ///   [`lease_wait`](Self::lease_wait);
    /// - [`Error::Ledger`] when the ledger cannot be used;
    /// - [`Error::MigrationFailed`] when a migration fails (a panic in one of
    ///   its hooks included): it names the migration and phase, says how the
    ///   table was rolled back, and carries the report of what completed
    ///   before it. Later migrations do not run. Its source is
    ///   [`Error::LeaseLost`] when this process could no longer prove it held
    ///   the lease (it was stalled past the TTL): it then wrote nothing more.
    pub async fn run(&self) -> Result<Report> {
        self.validate()?;
        let span = info_span!("lancedb_migrate::run", ledger = %self.ledger);
        async {
            let ledger = self.open_ledger().await?;
            let entries = by_id(ledger.entries_as_opened().await?);
            let upgrades = self.check_ledger(&entries)?;
            let report = if self.all_applied(&entries) && upgrades.is_empty() {
                self.skip_all(&entries)
            } else {
                match self.take_lease(&ledger, entries).await? {
                    Taken::Held(lease) => self.run_held(&ledger, lease).await?,
                    Taken::Busy(report) => return Ok(report),
                }
            };
            info!(
                applied = report.applied().count(),
                skipped = report.skipped().count(),
                pending = report.pending().count(),
                "run finished"
            );
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// Runs what is pending under `lease`, prunes backups and tidies the
    /// ledger, and releases the lease.
    pub(super) async fn run_held(&self, ledger: &Ledger, lease: Lease) -> Result<Report> {
        let ledger = &ledger.held(lease.fence());
        let report = self.run_pending(ledger, &lease).await;
        if let Ok(report) = &report {
            let mut touched: Vec<String> = report.applied().map(|m| m.table.clone()).collect();
            touched.dedup();
            if lease.check().is_ok() {
                prune_backups(self, ledger, self.retention, &touched).await;
            }
        }
        if lease.check().is_ok() && report.as_ref().is_ok_and(|r| r.stopped().is_none()) {
            ledger.tidy().await;
        }
        self.release(lease).await;
        report
    }

    /// Takes the lease if it is free or becomes free within `wait`,
    /// sending the lease events.
    pub(super) async fn acquire(&self, ledger: &Ledger, wait: Duration) -> Result<Acquired> {
        let waiting = |busy: &Busy| self.waiting(busy);
        let acquired =
            Lease::acquire_within_observed(ledger.table(), &self.lease, wait, &waiting).await?;
        if let Acquired::Held(_) = &acquired {
            self.acquired();
        }
        Ok(acquired)
    }

    /// Waits for the lease up to [`lease_wait`](Self::lease_wait) and takes
    /// it, sending the lease events.
    pub(super) async fn acquire_waiting(&self, ledger: &Ledger) -> Result<Lease> {
        let waiting = |busy: &Busy| self.waiting(busy);
        let lease = Lease::acquire_observed(ledger.table(), &self.lease, &waiting).await?;
        self.acquired();
        Ok(lease)
    }

    fn waiting(&self, busy: &Busy) {
        self.events.emit(Event::LeaseWaiting {
            holder: busy.holder.clone(),
            last_heartbeat: busy.last_heartbeat,
        });
    }

    fn acquired(&self) {
        self.events.emit(Event::LeaseAcquired {
            holder: self.lease.holder.clone(),
        });
    }

    /// Releases `lease` (or leaves a lost one alone), sending
    /// [`Event::LeaseReleased`] or [`Event::LeaseLost`].
    pub(super) async fn release(&self, lease: Lease) {
        let holder = self.lease.holder.clone();
        let event = match lease.check() {
            Ok(()) => Event::LeaseReleased { holder },
            Err(_) => Event::LeaseLost { holder },
        };
        lease.release().await;
        self.events.emit(event);
    }

    /// Opens the ledger. When it must be created, first checks (unless
    /// [`allow_unsafe_store`](Self::allow_unsafe_store)) that the store
    /// enforces put-if-absent, through the first migrated table that
    /// exists: an unsafe store is then refused before anything is written,
    /// the ledger included. (With an existing ledger, the check is made
    /// before the lease.)
    pub(super) async fn open_ledger(&self) -> Result<Ledger> {
        Ledger::open_or_create_after(&self.db, &self.ledger, async || {
            if !self.lease.check_store {
                return Ok(());
            }
            for m in &self.migrations {
                if let Ok(table) = self.db.open_table(m.table()).execute().await {
                    return require_put_if_absent(&table).await;
                }
            }
            Ok(())
        })
        .await
    }

    /// Checks the ledger's rows against the list before anything runs:
    /// drift ([`Error::Drift`]), then migrations missing, out of order or
    /// newer, as the [policies](Divergence) say. Returns the applied rows
    /// whose checksum is to be upgraded.
    pub(crate) fn check_ledger(
        &self,
        entries: &HashMap<String, LedgerEntry>,
    ) -> Result<Vec<ChecksumUpgrade>> {
        let upgrades = drift::check(&self.migrations, entries)?;
        divergence::enforce(&divergence::find(&self.migrations, entries), self.policies)?;
        Ok(upgrades)
    }

    /// Rewrites the checksum of each row in `upgrades` to the current one,
    /// noting the old one and this crate's version in its details, in one
    /// ledger commit; returns `entries` with them rewritten. Under the
    /// lease; nothing is run again.
    pub(super) async fn upgrade_checksums(
        &self,
        ledger: &Ledger,
        lease: &Lease,
        mut entries: HashMap<String, LedgerEntry>,
        upgrades: &[ChecksumUpgrade],
    ) -> Result<HashMap<String, LedgerEntry>> {
        let mut upgraded = Vec::new();
        for upgrade in upgrades {
            let Some(entry) = entries.get_mut(&upgrade.id) else {
                continue;
            };
            entry.checksum = upgrade.to.clone();
            entry.details.insert(
                LedgerEntry::CHECKSUM_PREVIOUS.to_owned(),
                upgrade.from.clone(),
            );
            entry.details.insert(
                LedgerEntry::CHECKSUM_UPGRADED_BY.to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            );
            upgraded.push(entry.clone());
        }
        if upgraded.is_empty() {
            return Ok(entries);
        }
        lease.check()?;
        ledger.record_all(&upgraded).await?;
        for upgrade in upgrades {
            info!(
                migration = upgrade.id,
                from = upgrade.from,
                to = upgrade.to,
                "checksum upgraded to this release's encoding; nothing run again"
            );
        }
        Ok(entries)
    }

    pub(super) fn all_applied(&self, entries: &HashMap<String, LedgerEntry>) -> bool {
        self.migrations.iter().all(|m| {
            entries
                .get(m.id())
                .is_some_and(|e| e.status == LedgerStatus::Applied)
        })
    }

    pub(super) fn skip_all(&self, entries: &HashMap<String, LedgerEntry>) -> Report {
        let mut report = Report::default();
        for m in &self.migrations {
            report.push(self.skip(m.as_ref(), &entries[m.id()]));
        }
        report
    }

    /// Runs what is pending, under the lease; the ledger is read again since
    /// another process may have applied migrations while this one waited.
    pub(super) async fn run_pending(&self, ledger: &Ledger, lease: &Lease) -> Result<Report> {
        let entries = by_id(ledger.entries().await?);
        ledger.check_format().await?;
        let upgrades = self.check_ledger(&entries)?;
        let pending = !self.all_applied(&entries);
        if pending || !upgrades.is_empty() {
            lease.check()?;
            ledger.claim_format().await?;
        }
        let entries = self
            .upgrade_checksums(ledger, lease, entries, &upgrades)
            .await?;
        let mut report = Report::default();
        let mut stopped = false;
        for seq in self.order(&entries) {
            let migration = self.migrations[seq].as_ref();
            if stopped || self.stop.is_stopped() {
                stopped = true;
                report.push(pending::report(migration, entries.get(migration.id())));
                continue;
            }
            lease.check()?;
            let entry = self.run_one(ledger, lease, &entries, seq, migration, &report);
            let entry = entry.await?;
            stopped = entry.outcome == Outcome::Stopped;
            report.push(entry);
        }
        Ok(report)
    }

    /// The order pending migrations run in: those that block serving
    /// first, unless one that does not comes before them on the same
    /// table (their order is then kept); then the rest, in order. Applied
    /// migrations keep their place (they are skipped).
    pub(super) fn order(&self, entries: &HashMap<String, LedgerEntry>) -> Vec<usize> {
        let applied = |m: &dyn Migration| {
            entries
                .get(m.id())
                .is_some_and(|e| e.status == LedgerStatus::Applied)
        };
        let mut deferred_tables = HashSet::new();
        let mut first = Vec::new();
        let mut later = Vec::new();
        for (seq, m) in self.migrations.iter().enumerate() {
            let m = m.as_ref();
            if applied(m) {
                first.push(seq);
            } else if !m.blocks_serving() || deferred_tables.contains(m.table()) {
                deferred_tables.insert(m.table());
                later.push(seq);
            } else {
                first.push(seq);
            }
        }
        first.extend(later);
        first
    }

    /// Takes the lease, or, as [`when_locked`](Self::when_locked) says,
    /// reports what another process holding it leaves pending.
    pub(super) async fn take_lease(
        &self,
        ledger: &Ledger,
        mut entries: HashMap<String, LedgerEntry>,
    ) -> Result<Taken> {
        if self.when_locked == WhenLocked::Wait {
            return Ok(Taken::Held(self.acquire_waiting(ledger).await?));
        }
        let started = Instant::now();
        loop {
            let waiting = self.when_locked == WhenLocked::UntilReady
                && !pending::ready(&self.migrations, &entries);
            let wait = if waiting {
                self.lease.standby()
            } else {
                Duration::ZERO
            };
            let busy = match self.acquire(ledger, wait).await? {
                Acquired::Held(lease) => return Ok(Taken::Held(lease)),
                Acquired::Busy(busy) => busy,
            };
            if waiting {
                entries = by_id(ledger.entries().await?);
                self.check_ledger(&entries)?;
                if !pending::ready(&self.migrations, &entries) {
                    if started.elapsed() >= self.lease.wait {
                        return Err(Error::LeaseTimeout {
                            holder: busy
                                .holder
                                .unwrap_or_else(|| "an unknown holder".to_owned()),
                            waited: started.elapsed(),
                        });
                    }
                    continue;
                }
            }
            let report = pending::busy_report(&self.migrations, &entries, &busy);
            if let Some(holder) = report.holder() {
                info!(%holder, pending = report.pending().count(), "another process holds the migration lease; not waiting");
            }
            for m in report.skipped() {
                self.events.emit(Event::MigrationSkipped {
                    migration: m.id.clone(),
                });
            }
            return Ok(Taken::Busy(report));
        }
    }

    /// Whether the ledger shows migration `id` applied: one read of the
    /// ledger, nothing written. What a replica that found a migration
    /// [`Outcome::Pending`] polls to learn it landed (say, to switch to the
    /// new embedding model), or use [`wait_until_applied`](Self::wait_until_applied).
    ///
    /// # Errors
    ///
    /// [`Error::Ledger`] or [`Error::LanceDb`] when the ledger cannot be read.
    pub async fn applied(&self, id: &str) -> Result<bool> {
        Ok(self
            .ledger()
            .await?
            .iter()
            .any(|e| e.id == id && e.status == LedgerStatus::Applied))
    }

    /// Resolves once the ledger shows migration `id` applied, reading it
    /// every `every`.
    ///
    /// # Errors
    ///
    /// As [`applied`](Self::applied).
    pub async fn wait_until_applied(&self, id: &str, every: Duration) -> Result<()> {
        while !self.applied(id).await? {
            tokio::time::sleep(every).await;
        }
        Ok(())
    }

    /// The ledger's rows, in migration order; empty when no run has created
    /// the ledger yet.
    ///
    /// # Errors
    ///
    /// [`Error::Ledger`] or [`Error::LanceDb`] when the ledger cannot be read.
    pub async fn ledger(&self) -> Result<Vec<LedgerEntry>> {
        match Ledger::open(&self.db, &self.ledger).await? {
            Some(ledger) => ledger.entries_as_opened().await,
            None => Ok(Vec::new()),
        }
    }

    pub(super) async fn run_one(
        &self,
        ledger: &Ledger,
        lease: &Lease,
        entries: &HashMap<String, LedgerEntry>,
        seq: usize,
        migration: &dyn Migration,
        report: &Report,
    ) -> Result<MigrationReport> {
        let previous = entries.get(migration.id());
        if let Some(applied) = previous.filter(|e| e.status == LedgerStatus::Applied) {
            return Ok(self.skip(migration, applied));
        }
        // Boxed: the applying future is deep, and callers that await `run`
        // inside their own nested async code would otherwise hit rustc's
        // query-depth limit when it computes their future's layout.
        let apply = Apply::new(self, ledger, lease, migration, seq as u64);
        Box::pin(apply.run(previous, report)).await
    }

    pub(super) fn skip(&self, migration: &dyn Migration, applied: &LedgerEntry) -> MigrationReport {
        info!(migration = applied.id, "already applied; skipped");
        self.events.emit(Event::MigrationSkipped {
            migration: applied.id.clone(),
        });
        report_of(migration, applied, Outcome::Skipped)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.lease.ttl < Duration::from_millis(100) {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "lease_ttl is {:?}; it must be at least 100ms",
                    self.lease.ttl
                ),
            });
        }
        let mut seen = HashSet::new();
        for m in &self.migrations {
            if m.id().trim().is_empty() || m.table().trim().is_empty() {
                return Err(Error::InvalidMigration {
                    migration: m.id().to_owned(),
                    reason: "its id and table name must not be empty".to_owned(),
                });
            }
            if !seen.insert(m.id()) {
                return Err(Error::DuplicateId {
                    migration: m.id().to_owned(),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Migrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migrator")
            .field("db", &self.db.uri())
            .field("migrations", &self.migrations)
            .field("ledger", &self.ledger)
            .field("lease", &self.lease)
            .field("copy_to", &self.copy_to)
            .field("retention", &self.retention)
            .field("when_locked", &self.when_locked)
            .finish_non_exhaustive()
    }
}

pub(crate) fn by_id(entries: Vec<LedgerEntry>) -> HashMap<String, LedgerEntry> {
    entries.into_iter().map(|e| (e.id.clone(), e)).collect()
}

/// Whether [`Migrator::run`] took the lease.
pub(super) enum Taken {
    Held(Lease),
    /// Another process holds it: the report of what it leaves pending.
    Busy(Report),
}

/// The report of what `entry` records, with no backup or phase timings
/// (known only to the run that applied it).
pub(super) fn report_of(
    migration: &dyn Migration,
    entry: &LedgerEntry,
    outcome: Outcome,
) -> MigrationReport {
    MigrationReport {
        blocks_serving: migration.blocks_serving(),
        id: entry.id.clone(),
        table: entry.table.clone(),
        outcome,
        version_before: entry.version_before,
        version_after: entry.version_after,
        rows_before: entry.rows_before,
        rows_after: entry.rows_after,
        backup: None,
        phases: Vec::new(),
        details: entry.details.clone(),
        duration: entry.duration().unwrap_or_default(),
    }
}
