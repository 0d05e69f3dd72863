//! Operations on the ledger and the migrated tables, for the people who run
//! an application: plan, status, rollback to a migration, baseline, repair,
//! and what happens to backup tags afterwards.
//!
//! Every operation that writes takes the migration lease first, so it never
//! races a starting application.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use lancedb::Table;
use tracing::{info, warn};

use crate::backup::Backup;
use crate::error::{Error, Result};
use crate::lance::latest_version;
use crate::ledger::lease::Lease;
use crate::ledger::{Ledger, LedgerEntry, Status};
use crate::migrator::plan;
use crate::migrator::{Migrator, by_id};
use crate::plan::Plan;

/// What to keep of the backup tags that applied migrations leave on their
/// tables ([`Migrator::keep_backups`]).
///
/// A tag keeps its table version (and every data file it uses) safe from
/// version pruning, so tags of long-applied migrations keep old data on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Retention {
    /// Keep every tag (the default).
    #[default]
    All,
    /// Per table, keep the tags of the last `n` applied migrations; delete
    /// older ones after each run that applied something. `Last(0)` deletes a
    /// migration's tag as soon as it has verified. Tags of migrations that
    /// are failed or running are never deleted: their rollback needs them.
    /// Tags that earlier, interrupted or failed attempts of an applied
    /// migration left (the ledger no longer names them) are deleted too.
    /// [`Migrator::rollback_to`] can only go back as far as the tags kept.
    Last(usize),
}

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

/// The ledger as a table, from [`Migrator::status`]: one row per migration
/// ever recorded, in order. Displays as a text table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTable {
    entries: Vec<LedgerEntry>,
    known: Vec<String>,
}

impl StatusTable {
    /// The ledger's rows, in migration order.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    /// Ids in the ledger that the migrator does not list (removed from the
    /// application's code, or recorded by another application).
    pub fn unknown(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .map(|e| e.id.as_str())
            .filter(|id| !self.known.iter().any(|k| k == id))
    }
}

impl fmt::Display for StatusTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("the ledger is empty: no migration has run\n");
        }
        let rows: Vec<[String; 7]> = self
            .entries
            .iter()
            .map(|e| {
                let versions = match e.version_after {
                    Some(after) => format!("{} -> {after}", e.version_before),
                    None => format!("{} -> ?", e.version_before),
                };
                let unknown = if self.known.contains(&e.id) {
                    ""
                } else {
                    " (unknown)"
                };
                let status = format!("{}{unknown}", e.status);
                [
                    e.id.clone(),
                    e.table.clone(),
                    status,
                    versions,
                    e.rows_after.unwrap_or(e.rows_before).to_string(),
                    e.backup_copy
                        .clone()
                        .or_else(|| e.backup_tag.clone())
                        .unwrap_or_else(|| "-".to_owned()),
                    e.duration()
                        .map(|d| format!("{d:.1?}"))
                        .unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect();
        let header = ["id", "table", "status", "version", "rows", "backup", "took"];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[&str]| -> fmt::Result {
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    writeln!(f, "{cell}")?;
                } else {
                    write!(f, "{cell:<w$}  ")?;
                }
            }
            Ok(())
        };
        line(f, &header)?;
        for row in &rows {
            line(f, &row.each_ref().map(String::as_str))?;
        }
        for e in self.entries.iter().filter(|e| e.error.is_some()) {
            writeln!(f, "{}: {}", e.id, e.error.as_deref().unwrap_or_default())?;
        }
        Ok(())
    }
}

/// The error an operation refused with.
fn refusal<'a>(operation: &'a str, migration: &'a str) -> impl Fn(String) -> Error + 'a {
    move |reason| Error::Refused {
        operation: operation.to_owned(),
        migration: migration.to_owned(),
        reason,
    }
}

impl Migrator {
    /// What the next [`run`](Self::run) would do, without changing anything
    /// (not even creating the ledger): every migration's state (applied,
    /// drifted, failed, pending, ...) and, for those it would apply, the
    /// work each will do ([`Migration::plan`](crate::Migration::plan)): rows
    /// written, columns touched, data or metadata only, indexes rebuilt.
    /// Bad input the run would refuse shows as [`PlanState::Refused`](crate::PlanState::Refused).
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateId`] or [`Error::InvalidMigration`] for the list
    /// itself, [`Error::Ledger`] or [`Error::Lance`] when the ledger or a
    /// table cannot be read.
    pub async fn plan(&self) -> Result<Plan> {
        self.validate()?;
        let entries = by_id(self.ledger().await?);
        plan::plan(&self.db, &self.migrations, &entries).await
    }

    /// The ledger as a table: every recorded migration with its status,
    /// versions, rows, backup and duration.
    ///
    /// # Errors
    ///
    /// [`Error::Ledger`] or [`Error::Lance`] when the ledger cannot be read.
    pub async fn status(&self) -> Result<StatusTable> {
        Ok(StatusTable {
            entries: self.ledger().await?,
            known: self.migrations.iter().map(|m| m.id().to_owned()).collect(),
        })
    }

    /// Undoes the applied migration `id` and every migration applied after
    /// it on the same table: restores the table from `id`'s backup tag and
    /// marks those migrations [`Status::RolledBack`]. Returns their updated
    /// ledger rows, in order.
    ///
    /// The next [`run`](Self::run) applies them again if the migrator still
    /// lists them: remove or fix them in the code first.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`], with nothing changed, when `id` is not applied,
    /// its backup tag is gone (see [`Retention`]), or, with
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
            if target.status != Status::Applied {
                return Err(refuse(format!("it is {}, not applied", target.status)));
            }
            let undone: Vec<&LedgerEntry> = entries
                .iter()
                .filter(|e| e.table == target.table && e.status == Status::Applied)
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
                .restore(&table)
                .await?;
            let version = latest_version(&table).await?;
            let mut updated = Vec::new();
            for e in undone {
                let mut e = e.clone();
                e.status = Status::RolledBack;
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
        let ledger = Ledger::open_or_create(&self.db, &self.ledger).await?;
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
                let table = self
                    .open(m.table())
                    .await
                    .map_err(|e| refuse(e.to_string()))?;
                let version = latest_version(&table).await?;
                let count = table
                    .count_rows(None)
                    .await
                    .map_err(Error::lance(format!("count the rows of `{}`", m.table())))?
                    as u64;
                let now = SystemTime::now();
                rows.push(LedgerEntry {
                    id: m.id().to_owned(),
                    seq: seq as u64,
                    table: m.table().to_owned(),
                    checksum: m.checksum(),
                    status: Status::Applied,
                    version_before: version,
                    version_after: Some(version),
                    backup_tag: None,
                    backup_copy: None,
                    started_at: now,
                    finished_at: Some(now),
                    rows_before: count,
                    rows_after: Some(count),
                    error: None,
                    crate_version: env!("CARGO_PKG_VERSION").to_owned(),
                    details: BTreeMap::from([("baseline".to_owned(), "true".to_owned())]),
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
                Status::Applied if entry.checksum != migration.checksum() => {
                    let old = std::mem::replace(&mut entry.checksum, migration.checksum());
                    entry.details.insert("repaired_checksum".to_owned(), old);
                }
                Status::Failed => {
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
                        .restore(&table)
                        .await?;
                    let version = latest_version(&table).await?;
                    entry.version_after = Some(version);
                    entry
                        .details
                        .insert("repaired_at_version".to_owned(), version.to_string());
                }
                Status::Running => {
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
        let lease = Lease::acquire(ledger.table(), &self.lease).await?;
        let result = work(&lease).await;
        lease.release().await;
        result
    }

    async fn open(&self, table: &str) -> Result<Table> {
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

/// Deletes the backup tags that `retention` does not keep, for the tables
/// in `tables`, and records the deletion in the ledger. Failures are logged:
/// a kept tag costs disk space, not correctness.
pub(crate) async fn prune_backups(
    migrator: &Migrator,
    ledger: &Ledger,
    retention: Retention,
    tables: &[String],
) {
    let Retention::Last(keep) = retention else {
        return;
    };
    let entries = match ledger.entries().await {
        Ok(entries) => entries,
        Err(e) => {
            warn!(error = %e, "could not read the ledger to prune backups");
            return;
        }
    };
    for name in tables {
        prune_orphans(migrator, name, &entries).await;
        let mut applied: Vec<&LedgerEntry> = entries
            .iter()
            .filter(|e| &e.table == name && e.status == Status::Applied && e.backup_tag.is_some())
            .collect();
        applied.sort_by_key(|e| e.seq);
        let prune = applied.len().saturating_sub(keep);
        if prune == 0 {
            continue;
        }
        let table = match migrator.open(name).await {
            Ok(t) => t,
            Err(e) => {
                warn!(table = name, error = %e, "could not open the table to prune backups");
                continue;
            }
        };
        for entry in &applied[..prune] {
            let tag = entry.backup_tag.clone().unwrap_or_default();
            let deleted = match table.tags().await {
                Ok(mut tags) => match tags.delete(&tag).await {
                    Ok(()) => Ok(()),
                    // Already gone (deleted by hand): record it as pruned.
                    Err(_) if tags.get_version(&tag).await.is_err() => Ok(()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = deleted {
                warn!(table = name, tag, error = %e, "could not delete a backup tag");
                continue;
            }
            let mut entry = (*entry).clone();
            entry.backup_tag = None;
            entry
                .details
                .insert("backup_pruned".to_owned(), tag.clone());
            if let Err(e) = ledger.record(&entry).await {
                warn!(tag, error = %e, "could not record a pruned backup tag");
            }
            info!(table = name, tag, "backup tag pruned");
        }
    }
}

/// Deletes the backup tags on `table` that earlier, interrupted or failed
/// attempts of now-applied migrations left behind: the ledger no longer
/// names them, so nothing can restore from them, but each pins a version.
async fn prune_orphans(migrator: &Migrator, table: &str, entries: &[LedgerEntry]) {
    let named: std::collections::HashSet<&str> = entries
        .iter()
        .filter_map(|e| e.backup_tag.as_deref())
        .collect();
    let prefixes: Vec<String> = entries
        .iter()
        .filter(|e| e.table == table && e.status == Status::Applied)
        .map(|e| Backup::tag_name(&e.id, 0).trim_end_matches('0').to_owned())
        .collect();
    let orphan = |tag: &str| {
        !named.contains(tag)
            && prefixes.iter().any(|p| {
                tag.strip_prefix(p.as_str())
                    .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            })
    };
    let Ok(handle) = migrator.open(table).await else {
        return;
    };
    let Ok(mut tags) = handle.tags().await else {
        return;
    };
    let Ok(listed) = tags.list().await else {
        return;
    };
    for tag in listed.keys().filter(|t| orphan(t)) {
        match tags.delete(tag).await {
            Ok(()) => info!(
                table,
                tag, "orphaned backup tag of an earlier attempt pruned"
            ),
            Err(e) => warn!(table, tag, error = %e, "could not delete an orphaned backup tag"),
        }
    }
}
