//! Operations on the ledger and the migrated tables, for the people who run
//! an application: plan, status, rollback to a migration, baseline, repair,
//! and what happens to backup tags afterwards.
//!
//! Every operation that writes takes the migration lease first, so it never
//! races a starting application.

use std::collections::BTreeMap;

use lancedb::Table;
use tracing::info;

use crate::backup::Backup;
use crate::error::{Error, Result};
use crate::lance::latest_version;
use crate::ledger::lease::Lease;
use crate::ledger::{Ledger, LedgerEntry, LedgerStatus};
use crate::migrator::{Migrator, by_id};

/// What [`Migrator::rollback_to`] and [`Migrator::repair`] do about writes
/// made to the table after the migration (by the application): a restore
/// to the backup loses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LaterWrites {
    /// Refuse with [`Error::Refused`] when the table has commits the ledger
    /// does not account for.
    Refuse,
    /// Restore anyway; those writes are lost.
    Discard,
}

/// The error an operation refused with.
fn refusal<'a>(operation: &'a str, migration: &'a str) -> impl Fn(String) -> Error + 'a {
    move |reason| Error::Refused {
        operation: operation.to_owned(),
        migration: migration.to_owned(),
        reason,
        source: None,
    }
}

impl Migrator {
    /// Undoes the applied migration `id` and every migration applied after
    /// it on the same table: restores the table from `id`'s backup tag and
    /// marks those migrations [`LedgerStatus::RolledBack`]. Returns their updated
    /// ledger rows, in order.
    ///
    /// The next [`run`](Self::run) applies them again if the migrator still
    /// lists them: remove or fix them in the code first.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`], with nothing changed, when `id` is not applied,
    /// its backup tag is gone (see [`Retention`](crate::Retention)), or, with
    /// [`LaterWrites::Refuse`], the table has commits made after the last
    /// migration on it (the application's writes, which the restore would
    /// lose). [`Error::LeaseTimeout`] when a run holds the lease.
    pub async fn rollback_to(&self, id: &str, later: LaterWrites) -> Result<Vec<LedgerEntry>> {
        let refuse = refusal("rollback", id);
        let ledger = self.existing_ledger(&refuse).await?;
        self.under_lease(&ledger, async |lease| {
            let entries = ledger.entries().await?;
            let target = entries
                .iter()
                .find(|e| e.id == id)
                .ok_or_else(|| refuse("it is not in the ledger".to_owned()))?;
            if target.status != LedgerStatus::Applied {
                return Err(refuse(format!("it is {}, not applied", target.status)));
            }
            let undone: Vec<&LedgerEntry> = entries
                .iter()
                .filter(|e| e.table == target.table && e.status == LedgerStatus::Applied)
                .filter(|e| e.seq >= target.seq)
                .collect();
            let table = self.open(&target.table).await?;
            let tag = target
                .backup_tag
                .clone()
                .ok_or_else(|| refuse("its backup tag was pruned".to_owned()))?;
            let tags = table
                .tags()
                .await
                .map_err(Error::lance("open the table's tags"))?;
            if tags.get_version(&tag).await.is_err() {
                return Err(refuse(format!(
                    "its backup tag `{tag}` no longer exists on `{}`",
                    target.table
                )));
            }
            if let Some(reason) = later_writes(&table, &undone, later).await? {
                return Err(refuse(reason));
            }
            lease.check()?;
            Backup::new(&target.table, target.version_before, tag)
                .restore_fenced(&table, &lease.fence())
                .await?;
            let version = latest_version(&table).await?;
            let mut updated = Vec::new();
            for e in undone {
                let mut e = e.clone();
                e.status = LedgerStatus::RolledBack;
                e.version_after = Some(version);
                e.details
                    .insert("rolled_back_at_version".to_owned(), version.to_string());
                ledger.record(&e).await?;
                updated.push(e);
            }
            info!(migration = id, table = target.table, version, "rolled back");
            Ok(updated)
        })
        .await
    }

    /// Records the migrations up to and including `id` as applied, without
    /// running them: for a database whose tables already have their schema
    /// (made by hand, or by scripts before this crate was adopted). Returns
    /// the rows written.
    ///
    /// Baselining trusts you: it checks that the tables exist and that none
    /// of these migrations is in the ledger, not that the schema matches.
    /// [`plan`](Self::plan) first shows what the migrations would have done.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`], with nothing written, when `id` is not one of the
    /// migrator's migrations, one of them is already in the ledger, or a
    /// table is missing. [`Error::LeaseTimeout`] when a run holds the lease.
    pub async fn baseline(&self, id: &str) -> Result<Vec<LedgerEntry>> {
        self.validate()?;
        let refuse = refusal("baseline", id);
        let upto = self
            .migrations
            .iter()
            .position(|m| m.id() == id)
            .ok_or_else(|| refuse("the migrator has no migration with this id".to_owned()))?;
        let ledger = self.open_ledger().await?;
        self.under_lease(&ledger, async |lease| {
            let entries = by_id(ledger.entries().await?);
            let mut rows = Vec::new();
            for (seq, m) in self.migrations[..=upto].iter().enumerate() {
                if let Some(e) = entries.get(m.id()) {
                    return Err(refuse(format!(
                        "`{}` is already in the ledger ({})",
                        e.id, e.status
                    )));
                }
                let table = self.open(m.table()).await.map_err(|e| {
                    let reason = format!("table `{}` cannot be opened", m.table());
                    Error::Refused {
                        operation: "baseline".to_owned(),
                        migration: id.to_owned(),
                        reason,
                        source: Some(e.into()),
                    }
                })?;
                let version = latest_version(&table).await?;
                let count = table
                    .count_rows(None)
                    .await
                    .map_err(Error::lance(format!("count the rows of `{}`", m.table())))?
                    as u64;
                let entry = LedgerEntry::running(
                    m.id(),
                    seq as u64,
                    m.table(),
                    m.checksum(),
                    version,
                    count,
                )
                .applied(version, count);
                rows.push(LedgerEntry {
                    details: BTreeMap::from([("baseline".to_owned(), "true".to_owned())]),
                    ..entry
                });
            }
            lease.check()?;
            for row in &rows {
                ledger.insert(row).await?;
            }
            info!(upto = id, migrations = rows.len(), "baselined");
            Ok(rows)
        })
        .await
    }

    /// Fixes the ledger row of migration `id` so that runs can go on:
    ///
    /// - **drifted** (applied, then edited): accepts the current definition
    ///   by recording its checksum. Use it only when the edit does not change
    ///   what the migration did (a comment, a renamed variable); otherwise
    ///   add a new migration.
    /// - **failed**: restores the table from the attempt's backup tag again
    ///   (for a failure whose rollback itself failed), so the next run starts
    ///   from the table as it was before the migration.
    ///
    /// Returns the updated row.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`], with nothing changed, for a row in any other
    /// state (an interrupted migration is recovered by [`run`](Self::run)),
    /// a migration the migrator does not list, a failed row whose backup tag
    /// is gone, or, with [`LaterWrites::Refuse`], a table written since the
    /// failure. [`Error::LeaseTimeout`] when a run holds the lease.
    pub async fn repair(&self, id: &str, later: LaterWrites) -> Result<LedgerEntry> {
        let refuse = refusal("repair", id);
        let migration = self
            .migrations
            .iter()
            .find(|m| m.id() == id)
            .ok_or_else(|| refuse("the migrator has no migration with this id".to_owned()))?;
        let ledger = self.existing_ledger(&refuse).await?;
        self.under_lease(&ledger, async |lease| {
            let entries = by_id(ledger.entries().await?);
            let mut entry = entries
                .get(id)
                .cloned()
                .ok_or_else(|| refuse("it is not in the ledger".to_owned()))?;
            match entry.status {
                LedgerStatus::Applied if entry.checksum != migration.checksum() => {
                    let old = std::mem::replace(&mut entry.checksum, migration.checksum());
                    entry.details.insert("repaired_checksum".to_owned(), old);
                }
                LedgerStatus::Failed => {
                    let table = self.open(&entry.table).await?;
                    let tag = entry
                        .backup_tag
                        .clone()
                        .ok_or_else(|| refuse("its failed attempt has no backup tag".to_owned()))?;
                    if let Some(reason) = later_writes(&table, &[&entry], later).await? {
                        return Err(refuse(reason));
                    }
                    lease.check()?;
                    Backup::new(&entry.table, entry.version_before, tag)
                        .restore_fenced(&table, &lease.fence())
                        .await?;
                    let version = latest_version(&table).await?;
                    entry.version_after = Some(version);
                    entry
                        .details
                        .insert("repaired_at_version".to_owned(), version.to_string());
                }
                LedgerStatus::Running => {
                    return Err(refuse(
                        "it was interrupted; the next run() restores its backup and runs it again"
                            .to_owned(),
                    ));
                }
                _ => {
                    return Err(refuse(format!(
                        "it is {} and unchanged: there is nothing to repair",
                        entry.status
                    )));
                }
            }
            lease.check()?;
            ledger.record(&entry).await?;
            info!(migration = id, "ledger row repaired");
            Ok(entry)
        })
        .await
    }

    /// The ledger, or a refusal when no migration has run yet.
    async fn existing_ledger(&self, refuse: impl Fn(String) -> Error) -> Result<Ledger> {
        Ledger::open(&self.db, &self.ledger).await?.ok_or_else(|| {
            refuse("the database has no ledger yet: no migration has run".to_owned())
        })
    }

    /// Runs `work` holding the migration lease, released whatever the
    /// outcome.
    async fn under_lease<T>(
        &self,
        ledger: &Ledger,
        work: impl AsyncFnOnce(&Lease) -> Result<T>,
    ) -> Result<T> {
        let lease = self.acquire_waiting(ledger).await?;
        // An operator's command writes the ledger like a run: the ledger
        // must be of a format this build knows, and is recorded in its own.
        let result = async {
            latest_version(ledger.table()).await?;
            ledger.check_format().await?;
            lease.check()?;
            ledger.claim_format().await?;
            work(&lease).await
        }
        .await;
        self.release(lease).await;
        result
    }

    pub(super) async fn open(&self, table: &str) -> Result<Table> {
        match self.db.open_table(table).execute().await {
            Ok(t) => Ok(t),
            Err(lancedb::Error::TableNotFound { .. }) => Err(Error::TableNotFound {
                table: table.to_owned(),
            }),
            Err(e) => Err(Error::lance(format!("open table `{table}`"))(e)),
        }
    }
}

/// Why to refuse, when `table` has commits after the last version that
/// `entries` recorded and `later` does not allow discarding them.
async fn later_writes(
    table: &Table,
    entries: &[&LedgerEntry],
    later: LaterWrites,
) -> Result<Option<String>> {
    let last = entries.iter().filter_map(|e| e.version_after).max();
    let current = latest_version(table).await?;
    Ok(match last {
        Some(last) if current > last && later == LaterWrites::Refuse => Some(format!(
            "table `{}` is at version {current}, but the ledger's last change to it left version {last}: \
             {} later commit(s), e.g. the application's writes, would be lost; \
             pass LaterWrites::Discard to go ahead anyway",
            table.name(),
            current - last
        )),
        _ => None,
    })
}
