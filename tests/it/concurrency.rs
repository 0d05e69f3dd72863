//! Several processes, crashes, and the application writing during a
//! migration.
//!
//! The multi-process tests start copies of this test binary running the
//! ignored test `concurrency::child`, which migrates the database named in
//! `LANCEDB_MIGRATE_CHILD_DB` and exits.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::{Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use lancedb::Connection;
use lancedb::table::NewColumnTransform;
use lancedb_migrate::async_trait;
use lancedb_migrate::testing::{self, Snapshot};
use lancedb_migrate::{
    AddColumns, Error, Event, LedgerStatus, Migration, MigrationContext, Migrator, NewColumn,
    Phase, Result,
};

use crate::support::{
    Db, Pause, Place, add_word_count, lease_ttl, pause_observer, pause_point, tags, with_word_count,
};

const DB_ENV: &str = "LANCEDB_MIGRATE_CHILD_DB";
const ROWS: usize = 200;

/// Appends a marker row to `markers` (to count how often its transform
/// ran), waits, then adds `word_count`: a slow migration with a commit.
#[derive(Debug)]
struct Marker {
    delay: Duration,
    /// When set, the transform waits for it after its marker row.
    hold: Option<Arc<tokio::sync::Notify>>,
}

impl Marker {
    fn slow(delay: Duration) -> Self {
        Self { delay, hold: None }
    }
}

#[async_trait]
impl Migration for Marker {
    fn id(&self) -> &str {
        "0002_marker"
    }

    fn table(&self) -> &str {
        "documents"
    }

    fn definition(&self) -> String {
        "marker; word_count = length(text)".to_owned()
    }

    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        Ok(with_word_count(before))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        let markers = ctx.db().open_table("markers").execute().await?;
        markers
            .add(marker_batch(std::process::id().into()))
            .execute()
            .await?;
        pause_point("marker_added");
        if let Some(hold) = &self.hold {
            hold.notified().await;
        }
        tokio::time::sleep(self.delay).await;
        add_word_count(ctx.table()).await?;
        pause_point("word_count_added");
        tokio::time::sleep(self.delay).await;
        Ok(())
    }
}

fn marker_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new("pid", DataType::Int64, false)]))
}

fn marker_batch(pid: i64) -> RecordBatch {
    RecordBatch::try_new(marker_schema(), vec![Arc::new(Int64Array::from(vec![pid]))]).unwrap()
}

const DELAY_ENV: &str = "LANCEDB_MIGRATE_CHILD_DELAY_MS";

fn migrator(db: Connection) -> Migrator {
    migrator_with_delay(db, Duration::from_millis(150))
}

fn migrator_with_delay(db: Connection, delay: Duration) -> Migrator {
    let ttl = lease_ttl(&db);
    Migrator::new(db)
        .lease_ttl(ttl)
        .lease_wait(Duration::from_secs(60))
        // In a child: stops where the test asked (see `support::Pause`).
        .on_event(pause_observer())
        .add(
            AddColumns::new("0001_category", "documents")
                .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
                .column(NewColumn::new("is_active", DataType::Boolean).default_value(true)),
        )
        .add(Marker::slow(delay))
        .add(
            AddColumns::new("0003_metadata", "documents")
                .column(NewColumn::new("metadata", DataType::Utf8)),
        )
}

async fn fixture() -> Db {
    fixture_on(&Place::Local).await
}

async fn fixture_on(place: &Place) -> Db {
    let tmp = place.fresh();
    let db = tmp.connect().await;
    testing::documents_table(&db, "documents", ROWS, 8)
        .await
        .unwrap();
    db.create_table("markers", RecordBatch::new_empty(marker_schema()))
        .execute()
        .await
        .unwrap();
    tmp
}

/// Entry point of the child processes; does nothing in a normal test run.
#[tokio::test]
#[ignore = "entry point for the child processes of the concurrency tests"]
async fn child() {
    let Ok(path) = std::env::var(DB_ENV) else {
        return;
    };
    let db = crate::s3::connect(&path).await;
    let delay = std::env::var(DELAY_ENV).map_or(150, |ms| ms.parse().unwrap());
    let report = migrator_with_delay(db, Duration::from_millis(delay))
        .run()
        .await
        .unwrap();
    println!(
        "child {} applied {}",
        std::process::id(),
        report.applied().count()
    );
}

fn spawn_child(tmp: &Db) -> Child {
    spawn_child_with_delay(tmp, 150)
}

fn spawn_child_with_delay(tmp: &Db, delay_ms: u64) -> Child {
    spawn_child_to(tmp, delay_ms, None)
}

/// A child that stops at `pause`.
fn spawn_child_to(tmp: &Db, delay_ms: u64, pause: Option<&Pause>) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(DELAY_ENV, delay_ms.to_string())
        .envs(pause.map(Pause::env).into_iter().flatten())
        .args(["concurrency::child", "--exact", "--ignored", "--nocapture"])
        .env(DB_ENV, tmp.uri())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn markers(db: &Connection) -> usize {
    let table = db.open_table("markers").execute().await.unwrap();
    table.count_rows(None).await.unwrap()
}

/// What a clean, single run produces, to compare recovered runs with.
async fn reference() -> Snapshot {
    let tmp = fixture().await;
    let db = tmp.connect().await;
    migrator(db.clone()).run().await.unwrap();
    let table = db.open_table("documents").execute().await.unwrap();
    Snapshot::take(&table, "id").await.unwrap()
}

const COLUMNS: [&str; 7] = [
    "id",
    "text",
    "vector",
    "category",
    "is_active",
    "word_count",
    "metadata",
];

/// Four processes start the same migrator at once: each migration runs
/// exactly once, and every process succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_processes_apply_each_migration_once() {
    concurrent_starts(&Place::Local, 4).await;
}

/// The same with eight processes on the S3 server.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_processes_apply_each_migration_once_on_s3() {
    if let Some((s3, _slot)) =
        Place::s3("concurrent_processes_apply_each_migration_once_on_s3").await
    {
        concurrent_starts(&s3, 8).await;
    }
}

async fn concurrent_starts(place: &Place, processes: usize) {
    let tmp = fixture_on(place).await;
    let children: Vec<Child> = (0..processes).map(|_| spawn_child(&tmp)).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a process failed: {stderr}");
    }

    let db = tmp.connect().await;
    let ledger = migrator(db.clone()).ledger().await.unwrap();
    assert_eq!(ledger.len(), 3, "one ledger row per migration");
    assert!(ledger.iter().all(|e| e.status == LedgerStatus::Applied));
    assert_eq!(
        markers(&db).await,
        1,
        "the slow migration's transform ran once"
    );
    let table = db.open_table("documents").execute().await.unwrap();
    let backups = tags(&table).await;
    assert_eq!(backups.len(), 3, "one backup per migration: {backups:?}");
    let s = Snapshot::take(&table, "id").await.unwrap();
    s.assert_same_columns(&reference().await, &COLUMNS);
}

/// A child is killed with SIGKILL at 20 points of its run; each time a
/// fresh run completes, the table equals a clean run's, and the killed
/// holder's lease blocks it no longer than the lease TTL.
///
/// Every other kill lands at a point the test names (the child stops there
/// until it is killed), in each of the three migrations and their phases;
/// the rest at times spread over the run, wherever they fall.
#[tokio::test(flavor = "multi_thread")]
async fn killed_runs_are_recovered() {
    killed_runs(&Place::Local, 20).await;
}

/// The same on the S3 server, 10 kills.
#[tokio::test(flavor = "multi_thread")]
async fn killed_runs_are_recovered_on_s3() {
    if let Some((s3, _slot)) = Place::s3("killed_runs_are_recovered_on_s3").await {
        killed_runs(&s3, 10).await;
    }
}

/// The points of the kills that are not timed, with the migration each is
/// inside of and the ledger row it has there (none while it backs up: the
/// row is written once the backup is taken).
const KILL_POINTS: [(&str, &str, Option<LedgerStatus>); 10] = [
    ("phase:0001_category:Backup", "0001_category", None),
    (
        "phase:0001_category:Transform",
        "0001_category",
        Some(LedgerStatus::Running),
    ),
    (
        "phase:0001_category:Verify",
        "0001_category",
        Some(LedgerStatus::Running),
    ),
    (
        "phase:0002_marker:Transform",
        "0002_marker",
        Some(LedgerStatus::Running),
    ),
    (
        "point:marker_added",
        "0002_marker",
        Some(LedgerStatus::Running),
    ),
    (
        "point:word_count_added",
        "0002_marker",
        Some(LedgerStatus::Running),
    ),
    (
        "finished:0002_marker:Transform",
        "0002_marker",
        Some(LedgerStatus::Running),
    ),
    ("phase:0003_metadata:Backup", "0003_metadata", None),
    (
        "phase:0003_metadata:Transform",
        "0003_metadata",
        Some(LedgerStatus::Running),
    ),
    (
        "phase:0003_metadata:Verify",
        "0003_metadata",
        Some(LedgerStatus::Running),
    ),
];

async fn killed_runs(place: &Place, runs: u64) {
    let expected = reference().await;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for run in 0..runs {
        let tmp = fixture_on(place).await;
        let point = (run % 2 == 0).then(|| KILL_POINTS[(run as usize / 2 * 3) % KILL_POINTS.len()]);
        let pause = point.map(|(spec, _, _)| Pause::at(spec));
        let mut child = spawn_child_to(&tmp, 400, pause.as_ref());
        let at = if let Some(pause) = &pause {
            pause.reached(&mut child).await;
            pause.spec().to_owned()
        } else {
            // The slow migration sleeps 2 × 400 ms; these kills are spread
            // over the first 1.3 s, wherever the run is by then.
            let delay = 100 + (run * 7919) % 1_200;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            format!("{delay} ms")
        };
        child.kill().unwrap();
        child.wait().unwrap();

        let db = tmp.connect().await;
        let seen: Vec<_> = migrator(db.clone()).ledger().await.unwrap();
        if let Some((_, inside, row)) = point {
            let found = seen.iter().find(|e| e.id == inside).map(|e| e.status);
            assert_eq!(
                found, row,
                "run {run}: killed at {at}, the ledger's row for `{inside}`: {seen:?}"
            );
        }
        let state = seen
            .iter()
            .map(|e| format!("{:?}", e.status))
            .collect::<Vec<_>>()
            .join("+");
        *outcomes
            .entry(if state.is_empty() {
                "nothing".into()
            } else {
                state
            })
            .or_default() += 1;

        let started = Instant::now();
        migrator(db.clone()).run().await.unwrap();
        // A liveness bound, far above the TTL plus a small run's time.
        assert!(
            started.elapsed() < lease_ttl(&db) + Duration::from_secs(60),
            "run {run} (killed at {at}) waited too long"
        );
        let ledger = migrator(db.clone()).ledger().await.unwrap();
        assert!(
            ledger.iter().all(|e| e.status == LedgerStatus::Applied),
            "run {run} (killed at {at}): {ledger:?}"
        );
        assert_eq!(ledger.len(), 3);
        let table = db.open_table("documents").execute().await.unwrap();
        let s = Snapshot::take(&table, "id").await.unwrap();
        s.assert_same_columns(&expected, &COLUMNS);
        assert_eq!(
            s.schema().fields().len(),
            COLUMNS.len(),
            "run {run} (killed at {at}): no leftover column"
        );
    }
    eprintln!("ledger state found after each kill: {outcomes:?}");
}

/// A waiting run gives up after `lease_wait` and names the holder.
#[tokio::test(flavor = "multi_thread")]
async fn waiting_run_times_out_naming_the_holder() {
    let tmp = fixture().await;
    let (started, holding) = signal_on(|e| matches!(e, Event::MigrationStarted { .. }));
    // The holder stays inside its migration until the waiter has given up.
    let hold = Arc::new(tokio::sync::Notify::new());
    let slow = Migrator::new(tmp.connect().await)
        .lease_holder("replica-a")
        .on_event(started)
        .add(Marker {
            delay: Duration::ZERO,
            hold: Some(hold.clone()),
        });
    let holder = tokio::spawn(async move { slow.run().await });
    holding.await.unwrap(); // a migration starts only under the lease

    let started = Instant::now();
    let waiter = Migrator::new(tmp.connect().await)
        .lease_wait(Duration::from_millis(300))
        .add(Marker::slow(Duration::ZERO));
    let err = waiter.run().await.unwrap_err();
    let Error::LeaseTimeout {
        holder: name,
        waited,
    } = &err
    else {
        panic!("expected a lease timeout, got {err:?}");
    };
    assert_eq!(name, "replica-a");
    assert!(*waited >= Duration::from_millis(300), "{waited:?}");
    // A liveness bound: it gave up, far sooner than the holder would end.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(err.to_string().contains("replica-a"), "{err}");

    hold.notify_one();
    holder.await.unwrap().unwrap();
    assert!(
        waiter.run().await.unwrap().is_noop(),
        "the waiter finds it applied later"
    );
}

/// The application keeps appending while a column is added: no row is
/// lost, rows present at the migration get the default, later ones NULL.
#[tokio::test(flavor = "multi_thread")]
async fn application_appends_during_migration_are_kept() {
    let tmp = fixture().await;
    let app = tokio::spawn(append_while_migrating(tmp.connect().await, 30));
    let migrator = Migrator::new(tmp.connect().await).add(
        AddColumns::new("0001", "documents")
            .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
            .column(NewColumn::new("note", DataType::Utf8)),
    );
    migrator.run().await.unwrap();
    let written = app.await.unwrap();

    let db = tmp.connect().await;
    let table = db.open_table("documents").execute().await.unwrap();
    let s = Snapshot::take(&table, "id").await.unwrap();
    assert_eq!(s.num_rows(), ROWS + written.len(), "no appended row lost");
    let ids = s
        .column("id")
        .as_primitive::<arrow_array::types::Int64Type>();
    let category = s.column("category").as_string::<i32>();
    for row in 0..s.num_rows() {
        if ids.value(row) < ROWS as i64 {
            assert_eq!(category.value(row), "general");
        } else {
            assert!(category.is_null(row) || category.value(row) == "general");
        }
    }
}

/// The application: appends `batches` batches of two new documents, each
/// retried as an application would when it conflicts with the schema change
/// (or misses a column not yet nullable). Returns the ids written.
async fn append_while_migrating(db: Connection, batches: i64) -> Vec<i64> {
    append_counting(db, batches, &std::sync::atomic::AtomicUsize::new(0)).await
}

/// [`append_while_migrating`], counting the batches written in `written`.
async fn append_counting(
    db: Connection,
    batches: i64,
    count: &std::sync::atomic::AtomicUsize,
) -> Vec<i64> {
    let table = db.open_table("documents").execute().await.unwrap();
    let mut written = Vec::new();
    for i in 0..batches {
        let ids = (ROWS as i64 + i * 2)..(ROWS as i64 + i * 2 + 2);
        let started = Instant::now();
        loop {
            table.checkout_latest().await.unwrap();
            // A column added with a default is NOT NULL for a moment (until
            // the migration makes it nullable): the application cannot
            // leave it out then, and tries again, as with a conflict.
            let appended = match pad_to(&table, testing::documents_batch(ids.clone(), 8)).await {
                Ok(batch) => table
                    .add(batch)
                    .execute()
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match appended {
                Ok(()) => break,
                Err(_) if started.elapsed() < Duration::from_secs(60) => {}
                Err(e) => panic!("an append kept failing for a minute: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        written.extend(ids);
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    written
}

/// A migration that fails while the application appends: the rollback
/// restores the table and keeps every appended row.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_keeps_rows_appended_during_the_migration() {
    rollback_with_appends(&Place::Local).await;
}

/// The same on the S3 server.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_keeps_rows_appended_during_the_migration_on_s3() {
    if let Some((s3, _slot)) =
        Place::s3("rollback_keeps_rows_appended_during_the_migration_on_s3").await
    {
        rollback_with_appends(&s3).await;
    }
}

async fn rollback_with_appends(place: &Place) {
    /// Adds a column, then waits until the application has appended three
    /// batches (so they land during the migration on any machine).
    #[derive(Debug)]
    struct SlowFailing(Arc<std::sync::atomic::AtomicUsize>);

    #[async_trait]
    impl Migration for SlowFailing {
        fn id(&self) -> &str {
            "0001_slow_failing"
        }
        fn table(&self) -> &str {
            "documents"
        }
        async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
            let sql = vec![("flag".to_owned(), "CAST(NULL AS BOOLEAN)".to_owned())];
            ctx.table()
                .add_columns()
                .transform(NewColumnTransform::SqlExpressions(sql))
                .execute()
                .await?;
            let started = Instant::now();
            while self.0.load(std::sync::atomic::Ordering::SeqCst) < 3 {
                assert!(started.elapsed() < Duration::from_secs(120), "no appends");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        }
        async fn verify(&self, _ctx: &MigrationContext) -> Result<()> {
            Err(Error::custom("injected verify failure"))
        }
    }

    let tmp = fixture_on(place).await;
    let table = tmp
        .connect()
        .await
        .open_table("documents")
        .execute()
        .await
        .unwrap();
    let before = Snapshot::take(&table, "id").await.unwrap();
    let in_transform = |e: &Event| {
        matches!(
            e,
            Event::PhaseStarted {
                phase: Phase::Transform,
                ..
            }
        )
    };
    let (observer, transforming) = signal_on(in_transform);
    let appended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let migrator = Migrator::new(tmp.connect().await)
        .on_event(observer)
        .add(SlowFailing(appended.clone()));
    let run = tokio::spawn(async move { migrator.run().await });
    transforming.await.unwrap();
    let written = append_counting(tmp.connect().await, 10, &appended).await;
    let err = run.await.unwrap().unwrap_err();

    let Error::MigrationFailed { rollback, .. } = &err else {
        panic!("{err:?}")
    };
    let lancedb_migrate::Rollback::Restored { reappended, .. } = &**rollback else {
        panic!("{rollback:?}")
    };
    let s = Snapshot::take(&table, "id").await.unwrap();
    assert_eq!(s.schema(), before.schema(), "schema restored");
    assert_eq!(
        s.num_rows(),
        ROWS + written.len(),
        "no appended row lost: {err}"
    );
    assert!(*reappended > 0, "the appends landed during the migration");
    let ids = s
        .column("id")
        .as_primitive::<arrow_array::types::Int64Type>();
    let present: std::collections::HashSet<i64> = ids.values().iter().copied().collect();
    assert!(written.iter().all(|id| present.contains(id)));
    let head = arrow_select::take::take_record_batch(
        s.batch(),
        &arrow_array::UInt32Array::from_iter_values(0..ROWS as u32),
    )
    .unwrap();
    assert_eq!(head.num_rows(), ROWS);
    assert!(
        head.column(2).to_data() == before.column("vector").to_data(),
        "old rows intact"
    );
}

/// An event observer that completes the returned receiver at the first
/// event matching `wanted`.
fn signal_on(
    wanted: impl Fn(&Event) -> bool + Send + Sync + 'static,
) -> (
    impl Fn(&Event) + Send + Sync + 'static,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let observer = move |event: &Event| {
        if wanted(event)
            && let Some(tx) = tx.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    };
    (observer, rx)
}

/// Fills the columns the table has gained since `batch`'s schema with
/// NULLs, as an application built against the new schema would; `Err` when
/// a column it lacks cannot be NULL (or the schema cannot be read).
async fn pad_to(table: &lancedb::Table, batch: RecordBatch) -> Result<RecordBatch, String> {
    let schema = table.schema().await.map_err(|e| e.to_string())?;
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => arrow_array::new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}
