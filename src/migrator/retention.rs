//! Backup retention: what happens to the backup tags applied migrations
//! leave on their tables, and to tags orphaned by earlier attempts.

use tracing::{info, warn};

use crate::backup::Backup;
use crate::ledger::{Ledger, LedgerEntry, LedgerStatus};
use crate::migrator::Migrator;

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
            .filter(|e| {
                &e.table == name && e.status == LedgerStatus::Applied && e.backup_tag.is_some()
            })
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
        .filter(|e| e.table == table && e.status == LedgerStatus::Applied)
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
