//! What a run that found the lease taken (or was stopped) reports: the
//! migrations left pending, and who holds them with its last progress.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ledger::lease::Busy;
use crate::ledger::{LedgerEntry, LedgerStatus};
use crate::migration::Migration;
use crate::report::{LeaseHolder, MigrationReport, Outcome, PhaseProgress, Report};

/// Ledger detail keys under which a holder publishes its progress while a
/// long phase runs. They are replaced by the migration's own details when
/// it finishes.
pub(crate) const DONE: &str = "progress.done";
pub(crate) const TOTAL: &str = "progress.total";
pub(crate) const RATE: &str = "progress.rate";
pub(crate) const AT: &str = "progress.at_ms";

/// The details that publish progress `done` of `total` at `rate` rows/s.
pub(crate) fn details(done: u64, total: Option<u64>, rate: f64) -> [(&'static str, String); 4] {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    [
        (DONE, done.to_string()),
        (TOTAL, total.map(|t| t.to_string()).unwrap_or_default()),
        (RATE, format!("{rate:.1}")),
        (AT, at.to_string()),
    ]
}

/// The progress a running entry's details publish, if any.
fn progress(entry: &LedgerEntry) -> Option<PhaseProgress> {
    let d = &entry.details;
    let at: u64 = d.get(AT)?.parse().ok()?;
    Some(PhaseProgress {
        done: d.get(DONE)?.parse().ok()?,
        total: d.get(TOTAL).and_then(|t| t.parse().ok()),
        rate: d.get(RATE).and_then(|r| r.parse().ok()).unwrap_or(0.0),
        at: UNIX_EPOCH + Duration::from_millis(at),
    })
}

fn applied(m: &dyn Migration, entries: &HashMap<String, LedgerEntry>) -> bool {
    entries
        .get(m.id())
        .is_some_and(|e| e.status == LedgerStatus::Applied)
}

/// Whether every migration that blocks serving is applied.
pub(crate) fn ready(
    migrations: &[Box<dyn Migration>],
    entries: &HashMap<String, LedgerEntry>,
) -> bool {
    migrations
        .iter()
        .all(|m| !m.blocks_serving() || applied(m.as_ref(), entries))
}

/// The report of `migration`, not applied by this run; `entry` is its
/// ledger row, if an attempt started.
pub(crate) fn report(migration: &dyn Migration, entry: Option<&LedgerEntry>) -> MigrationReport {
    MigrationReport {
        id: migration.id().to_owned(),
        table: migration.table().to_owned(),
        outcome: Outcome::Pending,
        version_before: entry.map_or(0, |e| e.version_before),
        version_after: None,
        rows_before: entry.map_or(0, |e| e.rows_before),
        rows_after: None,
        backup: None,
        phases: Vec::new(),
        details: entry.map(|e| e.details.clone()).unwrap_or_default(),
        duration: Duration::ZERO,
        blocks_serving: migration.blocks_serving(),
    }
}

/// The report of a run that found the lease held by `busy`: applied
/// migrations skipped, the rest pending, and the holder with what the
/// ledger shows it running.
pub(crate) fn busy_report(
    migrations: &[Box<dyn Migration>],
    entries: &HashMap<String, LedgerEntry>,
    busy: &Busy,
) -> Report {
    let mut report = as_far_as_applied(migrations, entries);
    report.set_holder(holder(entries, busy));
    report
}

/// The report of a run that applied nothing: what the ledger shows
/// applied skipped, the rest pending.
pub(crate) fn as_far_as_applied(
    migrations: &[Box<dyn Migration>],
    entries: &HashMap<String, LedgerEntry>,
) -> Report {
    let mut report = Report::default();
    for m in migrations {
        let m = m.as_ref();
        let entry = entries.get(m.id());
        match entry.filter(|e| e.status == LedgerStatus::Applied) {
            Some(e) => report.push(super::report_of(m, e, Outcome::Skipped)),
            None => report.push(self::report(m, entry)),
        }
    }
    report
}

/// The lease holder as `busy` and the ledger's running row show it.
pub(crate) fn holder(entries: &HashMap<String, LedgerEntry>, busy: &Busy) -> LeaseHolder {
    let running = entries
        .values()
        .filter(|e| e.status == LedgerStatus::Running)
        .max_by_key(|e| e.started_at);
    LeaseHolder {
        name: busy.holder.clone(),
        last_heartbeat: busy.last_heartbeat,
        migration: running.map(|e| e.id.clone()),
        since: running.map(|e| e.started_at),
        progress: running.and_then(progress),
    }
}
