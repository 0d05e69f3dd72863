//! The ledger's unit tests.

use std::time::{Duration, SystemTime};

use lancedb::Connection;

use super::codec::schema;
use super::create::restore_overwritten_rows;
use super::table::*;
use super::*;
use lancedb::database::CreateTableMode;

fn entry(id: &str, seq: u64, status: LedgerStatus) -> LedgerEntry {
    LedgerEntry {
        status,
        ..LedgerEntry::running(id, seq, "docs", "c".repeat(64), 1, 10)
    }
}

async fn states(ledger: &Ledger) -> Vec<(String, LedgerStatus)> {
    let entries = ledger.entries().await.unwrap();
    entries.into_iter().map(|e| (e.id, e.status)).collect()
}

#[test]
fn a_duplicated_id_reads_as_its_newest_row() {
    let running = entry("m2", 1, LedgerStatus::Running);
    let mut applied = entry("m2", 1, LedgerStatus::Applied);
    applied.finished_at = Some(SystemTime::now());
    let m1 = entry("m1", 0, LedgerStatus::Applied);
    for rows in [
        vec![m1.clone(), running.clone(), applied.clone()],
        vec![m1.clone(), applied.clone(), running.clone()],
    ] {
        let kept = newest_per_id(rows);
        let got: Vec<_> = kept.iter().map(|e| (e.id.as_str(), e.status)).collect();
        assert_eq!(
            got,
            [("m1", LedgerStatus::Applied), ("m2", LedgerStatus::Applied)]
        );
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

fn finished(id: &str, seq: u64, status: LedgerStatus) -> LedgerEntry {
    let mut e = entry(id, seq, status);
    e.finished_at = Some(SystemTime::now());
    e
}

async fn insert(ledger: &Ledger, id: &str, seq: u64, status: LedgerStatus) {
    ledger.insert(&entry(id, seq, status)).await.unwrap();
}

async fn finish(ledger: &Ledger, id: &str, seq: u64, status: LedgerStatus) {
    ledger.record(&finished(id, seq, status)).await.unwrap();
}

/// `record` finds the row `insert` wrote without searching when nothing
/// was committed in between, and by searching otherwise: either way
/// exactly that row changes.
#[tokio::test]
async fn record_replaces_the_row_insert_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ledger) = ledger_in(&dir).await;
    insert(&ledger, "m1", 0, LedgerStatus::Running).await;
    finish(&ledger, "m1", 0, LedgerStatus::Applied).await;
    assert_eq!(
        fragment_count(&ledger).await,
        1,
        "a record leaves one fragment"
    );

    insert(&ledger, "m2", 1, LedgerStatus::Running).await;
    insert(&ledger, "m3", 2, LedgerStatus::Running).await;
    finish(&ledger, "m2", 1, LedgerStatus::Failed).await;
    // Another handle (another process) writes between insert and record.
    let other = Ledger::open_or_create(&db, "ledger").await.unwrap();
    insert(&other, "m4", 3, LedgerStatus::Running).await;
    finish(&ledger, "m3", 2, LedgerStatus::Applied).await;

    let expected = [
        ("m1".to_owned(), LedgerStatus::Applied),
        ("m2".to_owned(), LedgerStatus::Failed),
        ("m3".to_owned(), LedgerStatus::Applied),
        ("m4".to_owned(), LedgerStatus::Running),
    ];
    assert_eq!(states(&ledger).await, expected);
    assert_eq!(ledger.table().count_rows(None).await.unwrap(), 4);
    assert_eq!(fragment_count(&ledger).await, 1);
}

async fn fragment_count(ledger: &Ledger) -> usize {
    ledger.table().checkout_latest().await.unwrap();
    ledger
        .table()
        .stats()
        .await
        .unwrap()
        .fragment_stats
        .num_fragments
}

/// A read while the ledger has no new version answers from the last
/// one; a write by anyone makes the next read see it.
#[tokio::test]
async fn entries_are_read_again_only_after_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ledger) = ledger_in(&dir).await;
    insert(&ledger, "m1", 0, LedgerStatus::Running).await;
    assert_eq!(states(&ledger).await.len(), 1);
    let cached = ledger.seen().entries.as_ref().map(|(v, _)| *v);
    assert_eq!(cached, Some(ledger.table().version().await.unwrap()));
    let other = Ledger::open_or_create(&db, "ledger").await.unwrap();
    finish(&other, "m1", 0, LedgerStatus::Applied).await;
    assert_eq!(
        states(&ledger).await,
        [("m1".to_owned(), LedgerStatus::Applied)]
    );
}

/// Pruning leaves the latest version and the tagged ones (the lease's),
/// and the rows as they were.
#[tokio::test]
async fn pruning_keeps_the_latest_and_the_tagged_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, ledger) = ledger_in(&dir).await;
    for i in 0..6 {
        ledger
            .insert(&entry(&format!("m{i}"), i, LedgerStatus::Running))
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
    insert(&winner, "m1", 0, LedgerStatus::Applied).await;
    insert(&winner, "m2", 1, LedgerStatus::Running).await;

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
        .record(&entry("m2", 1, LedgerStatus::Applied))
        .await
        .unwrap();

    restore_overwritten_rows("ledger", &late).await.unwrap();

    let applied = [
        ("m1".to_owned(), LedgerStatus::Applied),
        ("m2".to_owned(), LedgerStatus::Applied),
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

/// A holder stalled past its lease in the middle of a ledger write (its
/// lease check passed before the stall) finds, when it resumes, the ledger
/// moved on by the process that took over. Its write at its own head
/// conflicts; it must not retry from the latest version (that would
/// overwrite the new holder's `applied` row with its stale one), nor merge,
/// nor append: every commit attempt checks the fence first.
#[tokio::test]
async fn a_stalled_holder_does_not_retry_its_write_over_the_new_holders() {
    use crate::lance::fence::Fence;
    let dir = tempfile::tempdir().unwrap();
    let (db, ledger) = ledger_in(&dir).await;
    insert(&ledger, "m1", 0, LedgerStatus::Running).await;
    let stale = ledger.held(Fence::lapsed());
    // Its handle saw the ledger with `m1` running; the new holder then
    // finished `m1`.
    stale.entries().await.unwrap();
    let other = Ledger::open_or_create(&db, "ledger").await.unwrap();
    finish(&other, "m1", 0, LedgerStatus::Applied).await;

    let mut late = entry("m1", 0, LedgerStatus::Running);
    late.details
        .insert("progress.done".to_owned(), "5".to_owned());
    let refused = [
        stale.record(&late).await,
        stale.record_all(std::slice::from_ref(&late)).await,
        stale.insert(&entry("m2", 1, LedgerStatus::Running)).await,
    ];
    for result in refused {
        assert!(
            matches!(result, Err(crate::Error::LeaseLost { .. })),
            "{result:?}"
        );
    }
    let fresh = Ledger::open_or_create(&db, "ledger").await.unwrap();
    assert_eq!(
        states(&fresh).await,
        [("m1".to_owned(), LedgerStatus::Applied)]
    );
}
