//! The lease's unit tests.

use std::collections::HashMap;

use lancedb::table::TagContents;

use std::time::{Duration, Instant, SystemTime};

use lancedb::Table;

use super::holder::*;
use super::state::{State, tag};
use crate::error::Error;
use crate::lance::tags::{self, refresh, version_of};

fn contents(updated: SystemTime) -> TagContents {
    TagContents {
        branch: None,
        version: 1,
        created_at: Some(updated.into()),
        updated_at: Some(updated.into()),
        manifest_size: 0,
        metadata: HashMap::new(),
    }
}

#[test]
fn newest_generation_and_holder_are_read_from_tags() {
    let now = SystemTime::now();
    let tags: HashMap<_, _> = [
        (tag(1), contents(now)),
        (format!("{}-released", tag(1)), contents(now)),
        (tag(2), contents(now)),
        (format!("{}-by-web-1", tag(2)), contents(now)),
        ("lancedb-migrate_x_v1".to_owned(), contents(now)),
    ]
    .into();
    let state = State::from_tags(&tags);
    assert_eq!(state.generation, 2);
    assert_eq!(state.holder.as_deref(), Some("web-1"));
    assert!(!state.released);
    assert!(!state.is_free(Duration::from_secs(30)));
    assert_eq!(state.old.len(), 2);
}

async fn ledger_table(dir: &tempfile::TempDir) -> Table {
    let db = lancedb::connect(dir.path().to_str().unwrap())
        .execute()
        .await
        .unwrap();
    let ledger = crate::ledger::Ledger::open_or_create(&db, "ledger")
        .await
        .unwrap();
    ledger.table().clone()
}

/// A ledger on the S3 server, or `None` after saying why `test` skipped.
async fn ledger_on_s3(test: &str) -> Option<Table> {
    let s3 = crate::s3_test_server::S3::from_env(test)?;
    let db = s3
        .connect(&format!("s3://{}/db", s3.fresh_bucket("lease")))
        .await;
    let ledger = crate::ledger::Ledger::open_or_create(&db, "ledger")
        .await
        .unwrap();
    Some(ledger.table().clone())
}

fn config(ttl: Duration, holder: &str) -> LeaseConfig {
    LeaseConfig {
        ttl,
        wait: Duration::from_secs(10),
        holder: holder.to_owned(),
        check_store: true,
    }
}

/// A racer reads the tags (generation 0 free), stalls while three
/// generations come and go (the cleanup deletes `lease-1`'s tags), then
/// creates `lease-1` again: it must not believe it holds the lease while
/// generation 3's holder does.
#[tokio::test]
async fn a_racer_stalled_before_its_create_never_overlaps_a_holder() {
    let dir = tempfile::tempdir().unwrap();
    stalled_racer(ledger_table(&dir).await).await;
}

/// The same on the S3 server (tags are objects created with
/// `If-None-Match: *` there).
#[tokio::test(flavor = "multi_thread")]
async fn a_racer_stalled_before_its_create_never_overlaps_a_holder_on_s3() {
    let test = "a_racer_stalled_before_its_create_never_overlaps_a_holder_on_s3";
    if let Some(ledger) = ledger_on_s3(test).await {
        stalled_racer(ledger).await;
    }
}

async fn stalled_racer(ledger: Table) {
    let cfg = config(Duration::from_secs(30), "racer");
    let stale = State::read(&ledger).await.unwrap();
    assert_eq!(stale.generation, 0);
    // Enough generations for the cleanup to have deleted the first ones
    // (it deletes in batches).
    let before = (super::state::OLD_TAGS_KEPT / 3 + 2) as u64;
    for _ in 0..before {
        Lease::acquire(&ledger, &cfg).await.unwrap().release().await;
    }
    let holder = Lease::acquire(&ledger, &cfg).await.unwrap();
    assert_eq!(holder.generation, before + 1);
    let names = tags::names(&ledger).await.unwrap();
    assert!(
        !names.contains(&tag(1)),
        "the cleanup deleted generation 1's tag, so its name can be created again: {names:?}"
    );

    let taken = Lease::try_take(&ledger, &cfg, &stale).await.unwrap();
    assert!(
        taken.is_none(),
        "the stalled racer re-created `lease-1` and believed it held the lease"
    );
    holder.check().unwrap();
    holder.release().await;
    let next = Lease::acquire(&ledger, &cfg).await.unwrap();
    assert_eq!(
        next.generation,
        before + 2,
        "generation names keep increasing"
    );
    next.release().await;
}

/// A holder whose heartbeat cannot land in time (as under SIGSTOP, or
/// a store that stops answering) finds the lease lapsed and does not
/// get it back, even though no one took it over and a later heartbeat
/// would succeed.
#[tokio::test]
async fn a_lapsed_lease_is_never_revived() {
    let dir = tempfile::tempdir().unwrap();
    lapsed_lease(ledger_table(&dir).await, Duration::from_millis(300)).await;
}

/// The same on the S3 server, with a TTL that leaves room for its
/// latency: taking the lease there is several requests, and the holder's
/// proof starts when the first is issued.
#[tokio::test(flavor = "multi_thread")]
async fn a_lapsed_lease_is_never_revived_on_s3() {
    if let Some(ledger) = ledger_on_s3("a_lapsed_lease_is_never_revived_on_s3").await {
        lapsed_lease(ledger, Duration::from_secs(1)).await;
    }
}

async fn lapsed_lease(ledger: Table, ttl: Duration) {
    let mut lease = Lease::acquire(&ledger, &config(ttl, "stalled"))
        .await
        .unwrap();
    lease.check().unwrap();
    // No heartbeat lands (stopped, as when the process is stopped).
    lease.heartbeat.stop();
    tokio::time::sleep(ttl).await;
    let err = lease.check().unwrap_err();
    assert!(matches!(err, Error::LeaseLost { generation: 1 }), "{err:?}");
    // A heartbeat that lands now must not revive it.
    assert!(
        refresh(
            &ledger,
            &tag(1),
            version_of(&ledger, &tag(1)).await.unwrap()
        )
        .await
    );
    assert!(!lease.fence.extend(Instant::now()));
    assert!(lease.check().is_err(), "a lapsed lease came back");
    // A waiter takes it once it has expired on the tags' clock.
    let waiter = Lease::acquire(&ledger, &config(ttl, "waiter"))
        .await
        .unwrap();
    assert_eq!(waiter.generation, 2);
    waiter.check().unwrap();
    lease.release().await;
    let state = State::read(&ledger).await.unwrap();
    assert!(
        !state.released && state.generation == 2,
        "the lost holder's release touched nothing"
    );
    waiter.release().await;
}

/// A heartbeat that failed half-way on a full disk leaves its tag file
/// empty, which Lance's listing cannot parse: the lease must neither
/// get stuck nor be taken over before the file is `ttl` old.
#[tokio::test]
async fn a_truncated_lease_tag_does_not_block_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_table(&dir).await;
    let ttl = Duration::from_millis(300);
    let mut lease = Lease::acquire(&ledger, &config(ttl, "full-disk"))
        .await
        .unwrap();
    lease.heartbeat.stop();
    let file = dir
        .path()
        .join("ledger.lance/_refs/tags")
        .join(format!("{}.json", tag(1)));
    std::fs::write(&file, b"").unwrap();
    assert!(
        list_tags_strict(&ledger).await.is_err(),
        "Lance's listing fails"
    );
    let state = State::read(&ledger).await.unwrap();
    assert_eq!(state.generation, 1);
    assert!(
        !state.is_free(ttl),
        "taken over before the file was ttl old"
    );
    drop(lease);
    let next = Lease::acquire(&ledger, &config(ttl, "next")).await.unwrap();
    assert_eq!(next.generation, 2);
    next.release().await;
}

async fn list_tags_strict(ledger: &Table) -> lancedb::Result<HashMap<String, TagContents>> {
    ledger.tags().await?.list().await
}

/// A caller's runtime that is blocked (one thread, busy with CPU work
/// such as training an index) does not cost it the lease.
#[tokio::test(flavor = "current_thread")]
async fn a_blocked_runtime_keeps_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    blocked_runtime(ledger_table(&dir).await, Duration::from_millis(400)).await;
}

/// The same on the S3 server: the heartbeat's requests must not depend on
/// connections that the blocked runtime drives.
#[tokio::test(flavor = "current_thread")]
async fn a_blocked_runtime_keeps_its_lease_on_s3() {
    if let Some(ledger) = ledger_on_s3("a_blocked_runtime_keeps_its_lease_on_s3").await {
        // Warm the caller's connection pool, as a migration would.
        for _ in 0..3 {
            State::read(&ledger).await.unwrap();
        }
        blocked_runtime(ledger, Duration::from_secs(1)).await;
    }
}

async fn blocked_runtime(ledger: Table, ttl: Duration) {
    let lease = Lease::acquire(&ledger, &config(ttl, "busy")).await.unwrap();
    std::thread::sleep(ttl * 3);
    lease.check().unwrap();
    lease.release().await;
}

/// A holder that keeps beating keeps its lease well past the TTL. (A TTL
/// of seconds: a heartbeat is a few file writes, which a loaded machine
/// can delay by more than a fraction of a second.)
#[tokio::test(flavor = "multi_thread")]
async fn a_beating_holder_keeps_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_table(&dir).await;
    let ttl = Duration::from_secs(2);
    let lease = Lease::acquire(&ledger, &config(ttl, "a")).await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(ttl / 4).await;
        lease.check().unwrap();
    }
    lease.release().await;
}

#[test]
fn a_stale_lease_is_free() {
    let old = SystemTime::now() - Duration::from_secs(60);
    let state = State::from_tags(&[(tag(5), contents(old))].into());
    assert!(state.is_free(Duration::from_secs(30)));
    assert!(!state.is_free(Duration::from_secs(120)));
    assert!(
        State::default().is_free(Duration::from_secs(1)),
        "no lease yet"
    );
}

/// What a heartbeat costs on an object store, request by request: the
/// look for a newer generation, then Lance's rewrite of the tag (it checks
/// the tag exists, reads it (a `HEAD` and a `GET`), checks the version's
/// manifest twice, writes it).
/// Kept small because every holder makes one every `ttl / 4`.
#[tokio::test(flavor = "multi_thread")]
async fn a_heartbeat_is_seven_requests_on_s3() {
    let Some(s3) = crate::s3_test_server::S3::from_env("a_heartbeat_is_seven_requests_on_s3")
    else {
        return;
    };
    let (bucket, db) = s3.fresh_db("beat").await;
    let ledger = crate::ledger::Ledger::open_or_create(&db, "ledger")
        .await
        .unwrap();
    let ttl = Duration::from_secs(2);
    let lease = Lease::acquire(ledger.table(), &config(ttl, "beating"))
        .await
        .unwrap();
    s3.reset_requests(&bucket);
    let beat = format!("PUT db/ledger.lance/_refs/tags/{}.json", tag(1));
    let started = Instant::now();
    let requests = loop {
        let requests = s3.requests(&bucket);
        if requests.contains(&beat) {
            break requests;
        }
        assert!(started.elapsed() < ttl * 2, "no heartbeat: {requests:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    lease.release().await;
    let first_beat: Vec<&String> = requests
        .iter()
        .take_while(|r| **r != beat)
        .chain([&beat])
        .collect();
    assert_eq!(first_beat.len(), 7, "{first_beat:#?}");
    assert!(first_beat[0].contains(&tag(2)), "{first_beat:#?}");
}

/// Old generations' tags are deleted in batches: after many takes the
/// lease has at most `OLD_TAGS_KEPT` of them beside the newest two
/// generations' (and more takes keep working).
#[tokio::test]
async fn old_generations_are_cleaned_up_in_batches() {
    use super::state::OLD_TAGS_KEPT;
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_table(&dir).await;
    let cfg = config(Duration::from_secs(30), "one");
    let lease_tags = async || {
        tags::names(&ledger)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.starts_with("lease-"))
            .count()
    };
    let mut most = 0;
    for _ in 0..20 {
        Lease::acquire(&ledger, &cfg).await.unwrap().release().await;
        most = most.max(lease_tags().await);
    }
    // Three tags a generation; the two newest generations are never deleted.
    assert!(most <= OLD_TAGS_KEPT + 6, "{most} lease tags");
    assert!(lease_tags().await < 20 * 3, "old generations were deleted");
    assert_eq!(State::read(&ledger).await.unwrap().generation, 20);
}
