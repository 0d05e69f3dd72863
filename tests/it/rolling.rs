//! Rolling deploys in one process: the lease policies, the background run
//! and its handle, a graceful stop, and catch-up passes at the embedder's
//! speed. (The multi-process cases — replicas starting while another
//! re-embeds, SIGTERM and SIGKILL handovers — are in `nothing_lost`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_schema::DataType;
use lancedb::Connection;
use lancedb::embeddings::EmbeddingFunction;
use lancedb_migrate::testing::{self, TempDb, TestEmbedding};
use lancedb_migrate::{
    AddColumns, Error, Event, LedgerStatus, Migrator, NewColumn, Outcome, ReEmbed, WhenLocked,
};

use crate::reembed::assert_reembedded;
use crate::support::Hooked;

const DIMS: usize = 8;
const NEW_DIMS: usize = 16;

/// What an embedder saw, and a gate that holds its calls.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    texts: Mutex<HashMap<String, usize>>,
    /// Calls after this many wait for `open`.
    hold_after: Option<usize>,
    held: AtomicBool,
    open: AtomicBool,
}

impl Seen {
    fn holding_after(calls: usize) -> Arc<Self> {
        Arc::new(Self {
            hold_after: Some(calls),
            ..Self::default()
        })
    }

    /// Texts embedded more than once (each extra time counted).
    fn twice(&self) -> usize {
        self.texts.lock().unwrap().values().map(|n| n - 1).sum()
    }

    /// Waits until a call is held at the gate.
    async fn held(&self) {
        let started = Instant::now();
        while !self.held.load(Ordering::SeqCst) {
            assert!(started.elapsed() < Duration::from_secs(60), "no call held");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// The test model, through `seen`; `then` runs after each call.
fn model(
    seen: &Arc<Seen>,
    delay: Duration,
    then: impl Fn(usize) + Send + Sync + 'static,
) -> Arc<dyn EmbeddingFunction> {
    let seen = seen.clone();
    let inner = TestEmbedding::new("test-16", NEW_DIMS).delay(delay);
    Arc::new(Hooked::new(inner, move |texts, inner| {
        let call = seen.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if seen.hold_after.is_some_and(|n| call > n) {
            seen.held.store(true, Ordering::SeqCst);
            while !seen.open.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        {
            let mut counts = seen.texts.lock().unwrap();
            for text in texts.as_string::<i32>().iter().flatten() {
                *counts.entry(text.to_owned()).or_default() += 1;
            }
        }
        let out = inner.compute_source_embeddings(texts);
        then(call);
        out
    }))
}

fn reembed(model: Arc<dyn EmbeddingFunction>) -> ReEmbed {
    ReEmbed::new("0002_reembed", "documents", model)
        .batch_size(50)
        .concurrency(2)
        .verify_sample(0)
}

fn category() -> AddColumns {
    AddColumns::new("0003_category", "documents")
        .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
}

async fn documents(rows: usize) -> (TempDb, Connection) {
    let tmp = TempDb::new().await.unwrap();
    let db = tmp.db().clone();
    testing::documents_table(&db, "documents", rows, DIMS)
        .await
        .unwrap();
    (tmp, db)
}

/// A stop asked for in the middle of a re-embed's fragment: the batches
/// in flight are written, the checkpoint saved, the run returns the
/// migration `Stopped` (no rollback: the ledger shows it `running`) and
/// releases the lease — the next run, which does not wait for a lease,
/// takes it and finishes, embedding no text a second time.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_hands_the_reembed_to_the_next_run_without_embedding_twice() {
    let (_tmp, db) = documents(1_000).await;
    let seen = Arc::new(Seen::default());
    let first = Migrator::new(db.clone());
    let stop = first.stop_signal();
    // Slow enough (about 500 rows/s) that the fragment is written in
    // parts, which a stop can cut short.
    let first = first.add(reembed(model(
        &seen,
        Duration::from_millis(200),
        move |call| {
            if call == 3 {
                stop.stop();
            }
        },
    )));
    let report = first.run().await.unwrap();
    assert_eq!(report.applied().count(), 0);
    let stopped = report.stopped().expect("the re-embed was stopped");
    assert_eq!(stopped.outcome, Outcome::Stopped);
    assert!(!report.is_complete());
    let ledger = first.ledger().await.unwrap();
    assert_eq!(
        ledger[0].status,
        LedgerStatus::Running,
        "left for the next run"
    );
    let embedded_first = seen.calls.load(Ordering::SeqCst);
    assert!(
        embedded_first < 20,
        "it stopped: {embedded_first} of 20 calls"
    );

    let next = Migrator::new(db.clone())
        .when_locked(WhenLocked::Return)
        .add(reembed(model(&seen, Duration::ZERO, |_| {})));
    let report = next.run().await.unwrap();
    assert_eq!(
        report.applied().count(),
        1,
        "the lease was released: {report}"
    );
    let table = db.open_table("documents").execute().await.unwrap();
    assert_eq!(assert_reembedded(&table, NEW_DIMS).await, 1_000);
    assert_eq!(seen.twice(), 0, "the stopped run's batches were kept");
    assert_eq!(seen.texts.lock().unwrap().len(), 1_000);
}

/// Rows the application appended a few at a time (forty 5-row fragments)
/// are embedded many to a call: 6 calls (2 for the 100-row fragment, 4 for
/// the forty small ones, up to 64 rows each), not 42.
#[tokio::test]
async fn small_fragments_are_embedded_many_to_a_call() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 100, DIMS)
        .await
        .unwrap();
    for i in 0..40 {
        let from = 100 + i * 5;
        table
            .add(testing::documents_batch(from..from + 5, DIMS))
            .execute()
            .await
            .unwrap();
    }
    let seen = Arc::new(Seen::default());
    let migration = ReEmbed::new(
        "0002_reembed",
        "documents",
        model(&seen, Duration::ZERO, |_| {}),
    )
    .batch_size(64)
    .concurrency(1)
    .verify_sample(0);
    let report = Migrator::new(db.clone())
        .add(migration)
        .run()
        .await
        .unwrap();
    assert_eq!(report.applied().count(), 1);
    assert_eq!(assert_reembedded(&table, NEW_DIMS).await, 300);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 6);
    assert_eq!(seen.twice(), 0);
}

/// While one process re-embeds (held inside its embedder), the others:
/// the default policy and `Return` report it pending at once, naming the
/// holder with the progress it published; `Wait` times out as before;
/// a migration that blocks serving and that the holder does not run keeps
/// the default policy waiting, up to `lease_wait`; a background run
/// stands by and learns when the re-embed landed.
#[tokio::test(flavor = "multi_thread")]
async fn other_processes_serve_while_one_reembeds() {
    let (_tmp, db) = documents(200).await;
    let seen = Seen::holding_after(1);
    let holder = Migrator::new(db.clone())
        .lease_holder("replica-a")
        .add(reembed(model(&seen, Duration::ZERO, |_| {})));
    let holding = tokio::spawn(async move { holder.run().await });
    seen.held().await;
    let plain = || reembed(Arc::new(TestEmbedding::new("test-16", NEW_DIMS)));

    // The holder publishes its progress in the ledger every few seconds.
    let started = Instant::now();
    let observer = Migrator::new(db.clone()).add(plain());
    while !observer
        .ledger()
        .await
        .unwrap()
        .iter()
        .any(|e| e.details.contains_key("progress.done"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for policy in [WhenLocked::UntilReady, WhenLocked::Return] {
        let report = Migrator::new(db.clone())
            .when_locked(policy)
            .add(plain())
            .run()
            .await
            .unwrap();
        let pending: Vec<&str> = report.pending().map(|m| m.id.as_str()).collect();
        assert_eq!(pending, ["0002_reembed"], "{policy:?}");
        assert!(report.is_ready(), "nothing pending blocks serving");
        assert!(!report.is_complete());
        let holder = report.holder().expect("the holder is named");
        assert_eq!(holder.name.as_deref(), Some("replica-a"));
        assert_eq!(holder.migration.as_deref(), Some("0002_reembed"));
        let progress = holder.progress.expect("its published progress");
        assert!(progress.done >= 50, "{progress:?}");
        assert_eq!(progress.total, Some(200));
        assert!(report.to_string().contains("held by replica-a"), "{report}");
    }

    let err = Migrator::new(db.clone())
        .when_locked(WhenLocked::Wait)
        .lease_wait(Duration::from_millis(300))
        .add(plain())
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::LeaseTimeout { holder, .. } if holder == "replica-a"),
        "{err:?}"
    );

    // A newer deploy's `AddColumns` the holder does not know: the
    // application must not serve without it.
    let err = Migrator::new(db.clone())
        .lease_wait(Duration::from_millis(300))
        .add(plain())
        .add(category())
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseTimeout { .. }), "{err:?}");

    let standby = Migrator::new(db.clone()).add(plain()).start();
    let mut state = standby.subscribe();
    // Not a wait without end: a standby that ended (an error) fails here.
    let seen_holder = state
        .wait_for(|s| s.holder.is_some() || s.finished)
        .await
        .unwrap()
        .clone();
    assert!(
        seen_holder.holder.is_some(),
        "the standby ended: {seen_holder:?}"
    );
    assert!(seen_holder.ready);
    assert_eq!(seen_holder.pending, ["0002_reembed"]);
    standby.ready().await.unwrap();

    seen.open();
    // Liveness bounds far above the work, so that a hang fails the test.
    let bound = Duration::from_secs(120);
    let report = tokio::time::timeout(bound, holding)
        .await
        .expect("the holder finishes")
        .unwrap()
        .unwrap();
    assert_eq!(report.applied().count(), 1);
    tokio::time::timeout(bound, standby.landed("0002_reembed"))
        .await
        .expect("the standby learns it landed")
        .unwrap();
    let report = tokio::time::timeout(bound, standby.wait())
        .await
        .expect("the standby ends")
        .unwrap();
    assert_eq!(report.skipped().count(), 1, "{report}");
    assert!(observer.applied("0002_reembed").await.unwrap());
    assert_eq!(seen.twice(), 0);
}

/// Migrations that block serving run first, unless one that does not
/// comes before them on the same table: then their order is kept, and
/// readiness waits for both.
#[tokio::test(flavor = "multi_thread")]
async fn blocking_migrations_run_first_unless_a_long_one_precedes_them_on_their_table() {
    let (_tmp, db) = documents(200).await;
    testing::documents_table(&db, "other", 10, DIMS)
        .await
        .unwrap();
    let other = AddColumns::new("0004_other_flag", "other")
        .column(NewColumn::new("flag", DataType::Boolean).default_value(true));
    let order = Arc::new(Mutex::new(Vec::new()));
    let record = order.clone();
    let seen = Seen::holding_after(1);
    let handle = Migrator::new(db.clone())
        .on_event(move |e| {
            if let Event::MigrationStarted { migration, .. } = e {
                record.lock().unwrap().push(migration.clone());
            }
        })
        .add(reembed(model(&seen, Duration::ZERO, |_| {})))
        .add(category())
        .add(other)
        .start();
    seen.held().await;
    // `0004` (another table) ran before the re-embed; `0003` blocks
    // serving but comes after the re-embed on its table, so it waits for
    // it, and so does readiness.
    assert!(!handle.state().ready);
    assert_eq!(handle.state().current.as_deref(), Some("0002_reembed"));
    assert!(
        handle
            .state()
            .applied
            .contains(&"0004_other_flag".to_owned())
    );
    seen.open();
    handle.ready().await.unwrap();
    let report = handle.wait().await.unwrap();
    assert_eq!(report.applied().count(), 3);
    assert_eq!(
        *order.lock().unwrap(),
        ["0004_other_flag", "0002_reembed", "0003_category"]
    );
}

/// A background run with only a re-embed pending is ready at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_background_run_is_ready_before_its_reembed_lands() {
    let (_tmp, db) = documents(200).await;
    let seen = Seen::holding_after(1);
    let handle = Migrator::new(db.clone())
        .add(reembed(model(&seen, Duration::ZERO, |_| {})))
        .start();
    handle.ready().await.unwrap();
    seen.held().await;
    let state = handle.state();
    assert_eq!(state.current.as_deref(), Some("0002_reembed"));
    assert!(!state.finished);
    seen.open();
    handle.landed("0002_reembed").await.unwrap();
    assert_eq!(handle.wait().await.unwrap().applied().count(), 1);
}

/// A migration that waits in its transform until told to go on.
#[derive(Debug)]
struct Held {
    entered: Arc<tokio::sync::Notify>,
    go: Arc<tokio::sync::Notify>,
}

#[lancedb_migrate::async_trait]
impl lancedb_migrate::Migration for Held {
    fn id(&self) -> &str {
        "0001_held"
    }

    fn definition(&self) -> String {
        "held until told to go on".to_owned()
    }

    fn table(&self) -> &str {
        "documents"
    }

    async fn transform(
        &self,
        _ctx: &lancedb_migrate::MigrationContext,
    ) -> lancedb_migrate::Result<()> {
        self.entered.notify_one();
        self.go.notified().await;
        Ok(())
    }
}

/// A stop while a migration that cannot be cut short runs (not resumable:
/// an index build, a custom transform) says so, and waits for it: the
/// migration is applied, the next one is left pending, the lease released.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_waits_for_a_step_that_cannot_be_cut_short_and_says_so() {
    let (_tmp, db) = documents(100).await;
    let (entered, go) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let plain = Arc::new(TestEmbedding::new("test-16", NEW_DIMS));
    let handle = Migrator::new(db.clone())
        .add(Held {
            entered: entered.clone(),
            go: go.clone(),
        })
        .add(reembed(plain.clone()))
        .start();
    entered.notified().await;
    let stopping = handle.stop();
    assert_eq!(stopping.migration.as_deref(), Some("0001_held"));
    assert_eq!(stopping.phase, Some(lancedb_migrate::Phase::Transform));
    assert!(!stopping.at_next_batch);
    assert!(stopping.phase_running_for.is_some());
    assert!(
        stopping.to_string().contains("cannot be interrupted"),
        "{stopping}"
    );
    assert!(handle.state().stopping);
    go.notify_one();
    let report = handle.wait().await.unwrap();
    assert_eq!(report.applied().count(), 1, "{report}");
    let pending: Vec<&str> = report.pending().map(|m| m.id.as_str()).collect();
    assert_eq!(pending, ["0002_reembed"]);
    // Released: a run that never waits takes the lease and finishes.
    let next = Migrator::new(db)
        .when_locked(WhenLocked::Return)
        .add(Held {
            entered: Arc::new(tokio::sync::Notify::new()),
            go: Arc::new(tokio::sync::Notify::new()),
        })
        .add(reembed(plain))
        .run()
        .await
        .unwrap();
    assert_eq!(next.applied().count(), 1);
    assert_eq!(next.skipped().count(), 1);
}
