//! "Nothing lost" as a busy deployment runs it: a separate process appends
//! 10-row batches to the table while migrating processes are killed
//! (SIGKILL), stopped past the lease TTL (SIGSTOP / SIGCONT), or panic; the
//! application's acknowledged rows must all be there afterwards, exactly
//! once, and the ledger must tell the truth.
//!
//! Children are copies of this test binary running the ignored tests
//! `nothing_lost::child_migrate` and `nothing_lost::child_append`.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type};
use arrow_array::{
    ArrayRef, FixedSizeListArray, Int64Array, RecordBatch, StringArray, new_null_array,
};
use arrow_schema::{DataType, Schema};
use lancedb::Connection;
use lancedb::table::NewColumnTransform;
use lancedb_migrate::async_trait;
use lancedb_migrate::testing::{self, TempDb, TestEmbedding};
use lancedb_migrate::{
    AddColumns, CastColumn, DropColumns, EmbeddingProblem, Error, FillColumn, LedgerStatus,
    Migration, MigrationContext, Migrator, NewColumn, Phase, ReEmbed, RenameColumn, Result,
    Rollback, TargetSchema, WhenLocked,
};

use crate::support::{
    Db, Hooked, Pause, Place, failure, lease_ttl, pause_observer, pause_point, rows,
};

const DB_ENV: &str = "LANCEDB_MIGRATE_NL_DB";
const SCENARIO_ENV: &str = "LANCEDB_MIGRATE_NL_SCENARIO";
const ACK_ENV: &str = "LANCEDB_MIGRATE_NL_ACK";
const STOP_ENV: &str = "LANCEDB_MIGRATE_NL_STOP";
const START_ENV: &str = "LANCEDB_MIGRATE_NL_START";
const EVERY_ENV: &str = "LANCEDB_MIGRATE_NL_EVERY_MS";
/// How a migrating child runs: `run` (the default: `run()` waiting for the
/// lease, as a migration job does), `start` (a replica's background run,
/// stopped gracefully on SIGTERM), or `replica` (a replica's start-up
/// `run()` with the default policy, then waiting for the re-embed to land).
const MODE_ENV: &str = "LANCEDB_MIGRATE_NL_MODE";
/// The lease TTL of a migrating child, in ms, when not the default.
const TTL_ENV: &str = "LANCEDB_MIGRATE_NL_TTL_MS";
/// A file a migrating child appends every text it embeds to.
const EMBED_LOG_ENV: &str = "LANCEDB_MIGRATE_NL_EMBED_LOG";
/// A file a migrating child writes what it saw to, line by line.
const OUT_ENV: &str = "LANCEDB_MIGRATE_NL_OUT";

/// Rows in the table before the migration.
const ROWS: usize = 4_000;
/// The same on the S3 server.
const S3_ROWS: usize = 1_000;
const DIMS: usize = 8;
const NEW_DIMS: usize = 16;
/// First id the appender uses.
const APPENDED_FROM: i64 = 1_000_000;

// ---------------------------------------------------------------- scenarios

/// Four commits with pauses between them: a custom migration that is slow
/// enough to be interrupted between any two of its writes.
///
/// `raw`: its commits are plain LanceDB calls on `ctx.table()`, with no
/// `check_lease` or `retry_on_conflict` — as a downstream hook that forgot
/// both would make them. The context's table is fenced all the same.
#[derive(Debug)]
struct FourCommits {
    raw: bool,
}

impl FourCommits {
    /// One of its commits: through `retry_on_conflict`, or raw.
    async fn commit<T, F, Fut>(&self, ctx: &MigrationContext, what: &str, step: F) -> Result<()>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = lancedb::Result<T>> + Send,
        T: Send,
    {
        if self.raw {
            // Retries whatever fails (an append won the race), as a naive
            // hook does; a commit the fence refuses fails every time.
            let mut step = step;
            let mut attempt = 0;
            loop {
                match step().await {
                    Ok(_) => return Ok(()),
                    Err(_) if attempt < 50 => {
                        attempt += 1;
                        let _ = ctx.table().checkout_latest().await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(Error::wrap(what.to_owned(), e)),
                }
            }
        }
        ctx.retry_on_conflict(what, step).await.map(drop)
    }
}

#[async_trait]
impl Migration for FourCommits {
    fn id(&self) -> &str {
        "0002_four_commits"
    }

    fn table(&self) -> &str {
        "documents"
    }

    fn definition(&self) -> String {
        "four commits: word_count, shout, drop shout, note".to_owned()
    }

    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        let mut fields = before.fields().to_vec();
        for name in ["word_count", "note"] {
            if before.field_with_name(name).is_ok() {
                return Err(Error::ColumnExists {
                    table: "documents".into(),
                    column: name.into(),
                });
            }
        }
        fields.push(Arc::new(arrow_schema::Field::new(
            "word_count",
            DataType::Int32,
            true,
        )));
        fields.push(Arc::new(arrow_schema::Field::new(
            "note",
            DataType::Utf8,
            true,
        )));
        Ok(Schema::new_with_metadata(fields, before.metadata().clone()))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        // Metadata-only commits, so that they win against the appends
        // (a commit that writes data can be starved by them; see the
        // busy-table tests for the built-ins).
        let pause = Duration::from_millis(150);
        let column = |name: &str, data_type: DataType| {
            let field = arrow_schema::Field::new(name, data_type, true);
            NewColumnTransform::AllNulls(Arc::new(Schema::new(vec![field])))
        };
        let table = ctx.table();
        self.commit(ctx, "add word_count", || {
            table
                .add_columns()
                .transform(column("word_count", DataType::Int32))
                .execute()
        })
        .await?;
        pause_point("commit1");
        tokio::time::sleep(pause).await;
        self.commit(ctx, "add shout", || {
            table
                .add_columns()
                .transform(column("shout", DataType::Utf8))
                .execute()
        })
        .await?;
        pause_point("commit2");
        tokio::time::sleep(pause).await;
        self.commit(ctx, "drop shout", || table.drop_columns(&["shout"]))
            .await?;
        pause_point("commit3");
        tokio::time::sleep(pause).await;
        self.commit(ctx, "add note", || {
            table
                .add_columns()
                .transform(column("note", DataType::Utf8))
                .execute()
        })
        .await?;
        pause_point("commit4");
        tokio::time::sleep(pause).await;
        Ok(())
    }
}

fn add_columns() -> AddColumns {
    AddColumns::new("0001_category", "documents")
        .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
        .column(NewColumn::new("is_active", DataType::Boolean).default_value(true))
}

fn reembed(delay: Duration) -> ReEmbed {
    let model = TestEmbedding::new("test-16", NEW_DIMS).delay(delay);
    // In a child asked to: every text embedded, logged.
    let model: Arc<dyn lancedb::embeddings::EmbeddingFunction> =
        match std::env::var_os(EMBED_LOG_ENV) {
            Some(log) => Arc::new(Hooked::new(model, move |texts, inner| {
                let out = lancedb::embeddings::EmbeddingFunction::compute_source_embeddings(
                    inner,
                    texts.clone(),
                )?;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                let lines: String = texts
                    .as_string::<i32>()
                    .iter()
                    .map(|t| format!("{}\n", t.unwrap_or_default()))
                    .collect();
                file.write_all(lines.as_bytes()).unwrap();
                Ok(out)
            })),
            None => Arc::new(model),
        };
    ReEmbed::new("0003_reembed", "documents", model)
        .batch_size(200)
        .concurrency(1)
        .checkpoint_every(Duration::from_millis(200))
}

/// The documents table declared with `text` nullable and two defaulted
/// columns: a relax commit, then an add commit, as one migration.
fn declared() -> TargetSchema {
    let mut fields: Vec<arrow_schema::Field> = testing::documents_schema(DIMS)
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "text" => f.as_ref().clone().with_nullable(true),
            _ => f.as_ref().clone(),
        })
        .collect();
    fields.push(arrow_schema::Field::new("category", DataType::Utf8, true));
    fields.push(arrow_schema::Field::new(
        "is_active",
        DataType::Boolean,
        true,
    ));
    TargetSchema::new("documents", arrow_schema::Schema::new(fields))
        .default("category", "general")
        .default("is_active", true)
}

/// The migrations a scenario runs (the same in every process).
fn migrator(db: Connection, scenario: &str) -> Migrator {
    let ttl = match std::env::var(TTL_ENV) {
        Ok(ms) => Duration::from_millis(ms.parse().unwrap()),
        Err(_) => lease_ttl(&db),
    };
    let m = Migrator::new(db)
        .lease_ttl(ttl)
        .lease_wait(Duration::from_secs(120))
        // A process that takes over finishes the migration itself.
        .when_locked(WhenLocked::Wait)
        // In a child: stops where the test asked (see `support::Pause`).
        .on_event(pause_observer())
        // The lease events, as JSON lines on standard error, for the
        // tests to read from the child's output.
        .on_event(|event| {
            if matches!(
                event,
                lancedb_migrate::Event::LeaseWaiting { .. }
                    | lancedb_migrate::Event::LeaseAcquired { .. }
                    | lancedb_migrate::Event::LeaseLost { .. }
                    | lancedb_migrate::Event::LeaseReleased { .. }
            ) {
                eprintln!("lease event: {}", serde_json::to_string(event).unwrap());
            }
        });
    match scenario {
        "add_columns" => m.add(add_columns()),
        "declared" => m.add(declared()),
        "custom" => m.add(add_columns()).add(FourCommits { raw: false }),
        "custom_raw" => m.add(add_columns()).add(FourCommits { raw: true }),
        "reembed" => m
            .add(add_columns())
            .add(reembed(Duration::from_millis(100))),
        other => panic!("unknown scenario {other}"),
    }
}

// ------------------------------------------------------------ the children

/// Entry point of a migrating child; does nothing in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point for the child processes of the nothing-lost tests"]
async fn child_migrate() {
    let (Ok(path), Ok(scenario)) = (std::env::var(DB_ENV), std::env::var(SCENARIO_ENV)) else {
        return;
    };
    let db = crate::s3::connect(&path).await;
    let migrator = migrator(db, &scenario);
    let out = |line: String| {
        if let Some(path) = std::env::var_os(OUT_ENV) {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            writeln!(file, "{line}").unwrap();
        }
    };
    let result = match std::env::var(MODE_ENV).as_deref() {
        Ok("start") => {
            // A replica's graceful stop: SIGTERM asks the run to stop.
            let stop = migrator.stop_signal();
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::spawn(async move {
                term.recv().await;
                stop.stop();
            });
            migrator.start().wait().await
        }
        Ok("replica") => {
            let replica = migrator.when_locked(WhenLocked::UntilReady);
            let report = replica.run().await;
            if let Ok(report) = &report {
                let pending: Vec<&str> = report.pending().map(|m| m.id.as_str()).collect();
                let holder = report.holder();
                out(format!(
                    "pending={} ready={} holder={} running={}",
                    pending.join(","),
                    report.is_ready(),
                    holder.and_then(|h| h.name.clone()).unwrap_or_default(),
                    holder.and_then(|h| h.migration.clone()).unwrap_or_default(),
                ));
                replica
                    .wait_until_applied("0003_reembed", Duration::from_millis(100))
                    .await
                    .unwrap();
                out("landed".to_owned());
            }
            report
        }
        _ => migrator.run().await,
    };
    match result {
        Ok(report) => {
            out(format!(
                "applied={} stopped={}",
                report.applied().count(),
                report.stopped().is_some()
            ));
            println!("applied {}", report.applied().count());
        }
        Err(e) => {
            eprintln!("migration error: {e}");
            std::process::exit(3);
        }
    }
}

/// Entry point of the application child: appends 10-row batches in the
/// table's current schema until the stop file exists, writing each batch's
/// first id to the acknowledgement file once LanceDB has committed it.
#[tokio::test]
#[ignore = "entry point for the child processes of the nothing-lost tests"]
async fn child_append() {
    let Ok(path) = std::env::var(DB_ENV) else {
        return;
    };
    let ack = PathBuf::from(std::env::var(ACK_ENV).unwrap());
    let stop = PathBuf::from(std::env::var(STOP_ENV).unwrap());
    let start: i64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let every = Duration::from_millis(std::env::var(EVERY_ENV).unwrap().parse().unwrap());
    let db = crate::s3::connect(&path).await;
    append_until(&db, start, every, &ack, &stop).await;
}

async fn append_until(db: &Connection, start: i64, every: Duration, ack: &Path, stop: &Path) {
    let table = db.open_table("documents").execute().await.unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ack)
        .unwrap();
    let mut next = start;
    while !stop.exists() {
        let ids = next..next + 10;
        let started = Instant::now();
        loop {
            let _ = table.checkout_latest().await;
            let Ok(schema) = table.schema().await else {
                continue;
            };
            // A NOT NULL column it cannot fill (mid-migration) fails the
            // batch, like a failed append: the application retries.
            let added = match rows_in(&schema, ids.clone()) {
                Ok(batch) => table.add(batch).execute().await.map(drop),
                Err(e) => Err(lancedb::Error::Arrow { source: e }),
            };
            match added {
                Ok(()) => break,
                Err(_) if started.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("an append kept failing for a minute: {e}"),
            }
        }
        writeln!(log, "{}", ids.start).unwrap();
        log.sync_data().unwrap();
        next += 10;
        tokio::time::sleep(every).await;
    }
}

/// Rows `ids` in `schema`, as an application that knows the current schema
/// writes them: a vector of the column's dimension (the new model's when it
/// changed), NULL in the columns it does not know.
fn rows_in(
    schema: &Arc<Schema>,
    ids: std::ops::Range<i64>,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match (f.name().as_str(), f.data_type()) {
                ("id", _) => Arc::new(Int64Array::from_iter_values(ids.clone())),
                ("text", _) => Arc::new(StringArray::from_iter_values(
                    ids.clone().map(testing::document_text),
                )),
                ("vector", DataType::FixedSizeList(_, dims)) => {
                    let dims = *dims as usize;
                    let vectors = ids.clone().map(|id| {
                        let v = if dims == DIMS {
                            testing::document_vector(id, dims)
                        } else {
                            TestEmbedding::vector(&testing::document_text(id), dims)
                        };
                        Some(v.into_iter().map(Some))
                    });
                    Arc::new(
                        FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
                            vectors,
                            dims as i32,
                        ),
                    )
                }
                (_, t) => new_null_array(t, ids.clone().count()),
            }
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns)
}

// ------------------------------------------------------------- the harness

/// A database with the documents table and a running application process.
struct Busy {
    tmp: Db,
    app: Option<Child>,
    ack: PathBuf,
    stop: PathBuf,
}

impl Busy {
    /// `rows` rows in `fragments` fragments, as a table that has taken many
    /// small appends looks.
    async fn with_fragments(rows: usize, fragments: usize, every_ms: u64) -> Self {
        Self::on(&Place::Local, rows, fragments, every_ms).await
    }

    /// As [`with_fragments`](Self::with_fragments), on `place`.
    async fn on(place: &Place, rows: usize, fragments: usize, every_ms: u64) -> Self {
        let tmp = place.fresh();
        let per = rows.div_ceil(fragments) as i64;
        let table = testing::documents_table(&tmp.connect().await, "documents", per as usize, DIMS)
            .await
            .unwrap();
        let mut start = per;
        while start < rows as i64 {
            let end = (start + per).min(rows as i64);
            table
                .add(testing::documents_batch(start..end, DIMS))
                .execute()
                .await
                .unwrap();
            start = end;
        }
        let ack = tmp.scratch().join("acked.txt");
        let stop = tmp.scratch().join("stop");
        let app = Command::new(std::env::current_exe().unwrap())
            .args([
                "nothing_lost::child_append",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(DB_ENV, tmp.uri())
            .env(ACK_ENV, &ack)
            .env(STOP_ENV, &stop)
            .env(START_ENV, APPENDED_FROM.to_string())
            .env(EVERY_ENV, every_ms.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            tmp,
            app: Some(app),
            ack,
            stop,
        }
    }

    fn migrate(&self, scenario: &str) -> Child {
        self.migrate_to(scenario, None)
    }

    /// A migrating process that stops at `pause`.
    fn migrate_to(&self, scenario: &str, pause: Option<&Pause>) -> Child {
        self.migrate_with(scenario, pause, &[])
    }

    /// A migrating process that stops at `pause`, with more environment
    /// (`MODE_ENV`, `TTL_ENV`, `EMBED_LOG_ENV`, `OUT_ENV`).
    fn migrate_with(
        &self,
        scenario: &str,
        pause: Option<&Pause>,
        env: &[(&str, std::ffi::OsString)],
    ) -> Child {
        Command::new(std::env::current_exe().unwrap())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args([
                "nothing_lost::child_migrate",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(DB_ENV, self.tmp.uri())
            .env(SCENARIO_ENV, scenario)
            .envs(pause.map(Pause::env).into_iter().flatten())
            .env("RUST_BACKTRACE", "0")
            // Its own process group: stopping it must not look to a shell's
            // job control like the whole test run stopped.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A replica running the re-embed scenario in the background
    /// (`start()`, stopped gracefully on SIGTERM) with lease TTL `ttl_ms`,
    /// logging the texts it embeds to `log` and what it saw to `out`.
    fn start_reembed(&self, pause: Option<&Pause>, ttl_ms: &str, log: &Path, out: &Path) -> Child {
        let env = env(&[
            (MODE_ENV, &"start"),
            (TTL_ENV, &ttl_ms),
            (EMBED_LOG_ENV, &log),
            (OUT_ENV, &out),
        ]);
        self.migrate_with("reembed", pause, &env)
    }

    /// Waits until the application has had `n` batches acknowledged.
    fn wait_for_acks(&self, n: usize) {
        let started = Instant::now();
        while self.acked().len() < n {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the application did not append"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the application and returns the ids it was told were written.
    fn stop_app(&mut self) -> Vec<i64> {
        std::fs::write(&self.stop, b"").unwrap();
        if let Some(mut app) = self.app.take() {
            let status = app.wait().unwrap();
            assert!(status.success(), "the application failed");
        }
        self.acked()
            .into_iter()
            .flat_map(|first| first..first + 10)
            .collect()
    }

    fn acked(&self) -> Vec<i64> {
        std::fs::read_to_string(&self.ack)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    async fn db(&self) -> Connection {
        self.tmp.connect().await
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, b"");
        if let Some(mut app) = self.app.take() {
            let _ = app.kill();
            let _ = app.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} failed");
}

/// The commits to `documents` after `version` that are not the
/// application's appends, with their operation.
async fn commits_but_appends(db: &Connection, version: u64) -> Vec<(u64, String)> {
    let table = db.open_table("documents").execute().await.unwrap();
    let dataset = table.dataset().unwrap().get().await.unwrap();
    let mut other = Vec::new();
    for v in version + 1..=dataset.version().version {
        let Some(transaction) = dataset.read_transaction_by_version(v).await.unwrap() else {
            continue;
        };
        let name = transaction.operation.name();
        if name != "Append" {
            other.push((v, name.to_owned()));
        }
    }
    other
}

/// Every id of the table with how often it occurs.
async fn id_counts(db: &Connection) -> HashMap<i64, usize> {
    let table = db.open_table("documents").execute().await.unwrap();
    let batches = rows(&table, &["id"]).await;
    let mut counts = HashMap::new();
    for batch in &batches {
        for id in batch.column(0).as_primitive::<Int64Type>().values() {
            *counts.entry(*id).or_default() += 1;
        }
    }
    counts
}

/// No original or acknowledged row is missing or duplicated.
async fn assert_nothing_lost(db: &Connection, acked: &[i64], rows: usize, what: &str) {
    let counts = id_counts(db).await;
    let original = (0..rows as i64)
        .filter(|id| counts.get(id) != Some(&1))
        .count();
    assert_eq!(original, 0, "{what}: original rows missing or doubled");
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|id| !counts.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{what}: {} of {} acknowledged rows lost (e.g. {:?})",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let doubled = counts.values().filter(|n| **n > 1).count();
    assert_eq!(doubled, 0, "{what}: {doubled} ids appear more than once");
}

async fn ledger_states(db: &Connection, scenario: &str) -> String {
    migrator(db.clone(), scenario)
        .ledger()
        .await
        .unwrap()
        .iter()
        .map(|e| format!("{}={:?}", e.id, e.status))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------- the tests

/// A migrating process is SIGKILLed at varied points of an `AddColumns` or
/// a four-commit custom migration while the application appends every
/// 200 ms; the next run recovers while the application keeps appending.
/// Every acknowledged row is there once, and the migration is applied.
///
/// Each kill lands at a point the test names (the child stops there and
/// waits to be killed), not at a time: the same points on any machine.
#[tokio::test(flavor = "multi_thread")]
async fn recovery_keeps_rows_the_application_appended() {
    let trials = [
        ("custom", "point:commit1"),
        ("custom", "point:commit3"),
        ("add_columns", "phase:0001_category:Transform"),
        ("custom", "phase:0002_four_commits:Verify"),
        ("add_columns", "finished:0001_category:Transform"),
        ("custom", "point:commit2"),
    ];
    recovery(&Place::Local, ROWS, &trials).await;
}

/// The same on the S3 server, across the three built-in scenarios
/// (`AddColumns`, a custom migration, `ReEmbed`).
#[tokio::test(flavor = "multi_thread")]
async fn recovery_keeps_rows_the_application_appended_on_s3() {
    if let Some((s3, _slot)) = Place::s3("recovery_keeps_rows_the_application_appended_on_s3").await
    {
        let trials = [
            ("custom", "point:commit2"),
            ("add_columns", "phase:0001_category:Transform"),
            ("reembed", "progress:0003_reembed:1"),
            ("custom", "point:commit4"),
            ("reembed", "progress:0003_reembed:600"),
            ("add_columns", "phase:0001_category:Verify"),
        ];
        recovery(&s3, S3_ROWS, &trials).await;
    }
}

/// A declaration (`TargetSchema`: a relax and an add, as one migration)
/// killed at the start of its transform, after it, and in verify, while the
/// application appends: the next start undoes the attempt and applies it
/// whole, with every acknowledged row kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_declaration_is_recovered_keeping_every_row() {
    let id = declared().id().to_owned();
    let points = [
        format!("phase:{id}:Transform"),
        format!("finished:{id}:Transform"),
        format!("phase:{id}:Verify"),
    ];
    let trials: Vec<(&str, &str)> = points.iter().map(|p| ("declared", p.as_str())).collect();
    recovery(&Place::Local, ROWS, &trials).await;
}

/// The migration of `scenario` that a pause point is in.
fn last_migration(scenario: &str) -> &'static str {
    match scenario {
        "custom" | "custom_raw" => "0002_four_commits",
        "reembed" => "0003_reembed",
        "declared" => Box::leak(declared().id().to_owned().into_boxed_str()),
        _ => "0001_category",
    }
}

async fn recovery(place: &Place, rows: usize, trials: &[(&str, &str)]) {
    for (trial, &(scenario, point)) in trials.iter().enumerate() {
        let mut busy = Busy::on(place, rows, 1, 200).await;
        busy.wait_for_acks(2);
        let db = busy.db().await;
        let pause = Pause::at(point);
        let mut child = busy.migrate_to(scenario, Some(&pause));
        pause.reached(&mut child).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let state = ledger_states(&db, scenario).await;
        let last = last_migration(scenario);
        assert!(
            state.contains(&format!("{last}=Running")),
            "trial {trial}: killed at {point}, the ledger must show `{last}` running: {state}"
        );

        // The application keeps going (its appends may fail until the
        // recovery: a column can be left NOT NULL mid-`AddColumns`).
        busy.wait_for_acks(busy.acked().len() + 1);
        let report = migrator(db.clone(), scenario).run().await;
        report.unwrap_or_else(|e| {
            panic!("trial {trial} (killed at {point}, {state}): recovery failed: {e:?}")
        });
        busy.wait_for_acks(busy.acked().len() + 2);
        let acked = busy.stop_app();

        let what = format!("trial {trial}, {scenario} killed at {point}, {state}");
        assert_nothing_lost(&db, &acked, rows, &what).await;
        let ledger = migrator(db.clone(), scenario).ledger().await.unwrap();
        assert!(
            ledger.iter().all(|e| e.status == LedgerStatus::Applied),
            "{what}: {ledger:?}"
        );
        let table = db.open_table("documents").execute().await.unwrap();
        let schema = table.schema().await.unwrap();
        assert!(schema.field_with_name("category").is_ok());
        assert!(
            schema.field_with_name("shout").is_err(),
            "{what}: no leftover column"
        );
        assert!(
            migrator(db.clone(), scenario)
                .run()
                .await
                .unwrap()
                .is_noop()
        );
    }
}

/// A holder is stopped (SIGSTOP) mid-migration for longer than the lease
/// TTL while the application appends; another process takes over and
/// finishes; then the stopped one resumes (SIGCONT). It must write nothing
/// more: the table equals a clean run (every row embedded by the new model,
/// defaults in place), the ledger says `applied`, no row is lost or doubled.
///
/// The holder is stopped at a point the test names (see `support::Pause`),
/// so it is inside the migration on any machine.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_holder_writes_nothing_after_a_takeover() {
    // (scenario, where it is stopped, rows, fragments, ms between appends)
    let cases = [
        ("reembed", "progress:0003_reembed:1", ROWS, 1, 100),
        ("reembed", "progress:0003_reembed:2000", ROWS, 1, 100),
        ("custom", "point:commit2", ROWS, 1, 100),
        // A downstream hook that never checks the lease: its commits are
        // fenced by the context's table all the same.
        ("custom_raw", "point:commit1", ROWS, 1, 100),
        // A table of many small appended fragments, stopped as the
        // transform starts: its first write after the wake-up is fenced.
        ("add_columns", "phase:0001_category:Transform", ROWS, 40, 40),
        ("reembed", "finished:0003_reembed:Transform", ROWS, 1, 100),
    ];
    stalled_holders(&Place::Local, &cases).await;
}

/// The same on the S3 server, where every request adds latency to the
/// windows the fence closes.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_holder_writes_nothing_after_a_takeover_on_s3() {
    if let Some((s3, _slot)) =
        Place::s3("a_stalled_holder_writes_nothing_after_a_takeover_on_s3").await
    {
        // Smaller tables than locally: every request goes through the
        // Python server, and the process that takes over migrates it all.
        let cases = [
            ("reembed", "progress:0003_reembed:1", S3_ROWS, 1, 100),
            ("custom", "point:commit3", S3_ROWS, 1, 100),
            (
                "add_columns",
                "phase:0001_category:Transform",
                S3_ROWS,
                20,
                100,
            ),
            ("reembed", "phase:0003_reembed:Verify", S3_ROWS, 1, 100),
        ];
        stalled_holders(&s3, &cases).await;
    }
}

type StallCase = (&'static str, &'static str, usize, usize, u64);

/// The lease events a child printed (`lease event: {json}` lines), by name.
fn lease_events(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("lease event: "))
        .map(|json| {
            let event: serde_json::Value = serde_json::from_str(json).unwrap();
            event["event"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn stalled_holders(place: &Place, cases: &[StallCase]) {
    for (trial, &(scenario, point, rows, fragments, every)) in cases.iter().enumerate() {
        let mut busy = Busy::on(place, rows, fragments, every).await;
        busy.wait_for_acks(2);
        let db = busy.db().await;
        let pause = Pause::at(point);
        let mut first = busy.migrate_to(scenario, Some(&pause));
        pause.reached(&mut first).await;
        signal(&first, "-STOP");
        // It goes on from the point once it runs again.
        pause.go();
        let what = format!("trial {trial} ({scenario}, stopped at {point})");

        // Past the TTL, a second process takes over and finishes.
        tokio::time::sleep(lease_ttl(&db) * 2).await;
        let second = busy.migrate(scenario);
        let out = second.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{what}: the process that took over failed: {stderr}"
        );
        let events = lease_events(&stderr);
        assert_eq!(
            (
                events.first().map(String::as_str),
                events.last().map(String::as_str)
            ),
            (Some("lease_acquired"), Some("lease_released")),
            "{what}: the lease events of the process that took over: {events:?}"
        );
        let after_takeover = ledger_states(&db, scenario).await;
        assert!(
            !after_takeover.contains("Running"),
            "{what}: {after_takeover}"
        );

        // The stalled holder wakes up: it must stop without writing.
        let taken_over = db
            .open_table("documents")
            .execute()
            .await
            .unwrap()
            .version()
            .await
            .unwrap();
        signal(&first, "-CONT");
        let out = first.wait_with_output().unwrap();
        let stale = commits_but_appends(&db, taken_over).await;
        assert!(
            stale.is_empty(),
            "{what}: the stalled holder committed after the takeover: {stale:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("lease"),
            "{what}: the stalled holder should stop on its lost lease: {stderr}"
        );
        assert_eq!(
            lease_events(&stderr),
            ["lease_acquired", "lease_lost"],
            "{what}: the stalled holder reports its lease lost: {stderr}"
        );
        busy.wait_for_acks(busy.acked().len() + 2);
        let acked = busy.stop_app();

        let ledger = migrator(db.clone(), scenario).ledger().await.unwrap();
        assert!(
            ledger.iter().all(|e| e.status == LedgerStatus::Applied),
            "{what}: the ledger must say applied: {ledger:?}"
        );
        assert_nothing_lost(&db, &acked, rows, &what).await;
        assert_like_a_clean_run(&db, scenario, &what).await;
        assert!(
            migrator(db.clone(), scenario)
                .run()
                .await
                .unwrap()
                .is_noop(),
            "{what}"
        );
    }
}

/// The application appends a 10-row batch every 10 ms from another
/// process while `AddColumns` and then `ReEmbed` run: both complete (a
/// single `add_columns` commit would lose every race against the appends),
/// no acknowledged row is lost, original rows have their defaults and every
/// row the new model's vector.
///
/// With Lance's own commit retries (30 s of exponentially growing pauses
/// per commit) the backfill's commits starved behind this appender on 2
/// cores and the run failed; the crate's single-attempt commits win.
#[tokio::test(flavor = "multi_thread")]
async fn migrations_finish_on_a_busy_table() {
    let _turn = crate::support::heavy().await;
    const BIG: usize = 8_000;
    let mut busy = Busy::with_fragments(BIG, 100, 10).await;
    busy.wait_for_acks(3);
    let db = busy.db().await;
    // The embedder waits for two more acknowledged appends: the
    // application appends during the migration on any machine.
    let before = busy.acked().len();
    let model = after_acks(
        TestEmbedding::new("test-16", NEW_DIMS).delay(Duration::from_millis(20)),
        &busy.ack,
    );
    let migrator = Migrator::new(db.clone()).add(add_columns()).add(
        ReEmbed::new("0003_reembed", "documents", Arc::new(model))
            .batch_size(200)
            .concurrency(1)
            .checkpoint_every(Duration::from_millis(200)),
    );
    let report = migrator.run().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(report.applied().count(), 2);
    let appended_during = busy.acked().len();
    assert!(
        appended_during >= before + 2,
        "the application kept appending"
    );
    busy.wait_for_acks(appended_during + 3);
    let acked = busy.stop_app();
    assert_nothing_lost(&db, &acked, BIG, "busy table").await;
    assert_like_a_clean_run(&db, "reembed", "busy table").await;
}

/// A migration that changes nothing and ends once the application has
/// acknowledged two more appends: the commits before it and after it each
/// have appends landing beside them, on any machine.
#[derive(Debug)]
struct AppendsLand {
    id: &'static str,
    ack: PathBuf,
}

#[async_trait]
impl Migration for AppendsLand {
    fn id(&self) -> &str {
        self.id
    }

    fn table(&self) -> &str {
        "documents"
    }

    fn definition(&self) -> String {
        self.id.to_owned()
    }

    async fn transform(&self, _: &MigrationContext) -> Result<()> {
        let ack = self.ack.clone();
        tokio::task::spawn_blocking(move || wait_for_more_lines(&ack, 2))
            .await
            .unwrap();
        Ok(())
    }

    async fn verify(&self, ctx: &MigrationContext) -> Result<()> {
        ctx.check_row_count().await
    }
}

/// `RenameColumn`, `DropColumns`, `CastColumn` and `FillColumn` between
/// appends of an application that appends every 10 ms in whatever schema
/// the table has: all land, no acknowledged row is lost, the original rows
/// keep the renamed (and cast) column's values, the dropped column is gone,
/// and the rows appended before the fill have its value.
#[tokio::test(flavor = "multi_thread")]
async fn renames_and_drops_finish_on_a_busy_table() {
    let _turn = crate::support::heavy().await;
    const BIG: usize = 2_000;
    let mut busy = Busy::with_fragments(BIG, 20, 10).await;
    busy.wait_for_acks(3);
    let db = busy.db().await;
    let ack = busy.ack.clone();
    let land = |id| AppendsLand {
        id,
        ack: ack.clone(),
    };
    let migrator = Migrator::new(db.clone())
        .add(add_columns())
        .add(land("0002_appends"))
        .add(RenameColumn::new(
            "0003_rename",
            "documents",
            "category",
            "kind",
        ))
        .add(land("0004_appends"))
        .add(DropColumns::new("0005_drop", "documents").column("is_active"))
        .add(land("0006_appends"))
        .add(CastColumn::new(
            "0007_cast",
            "documents",
            "kind",
            DataType::LargeUtf8,
        ))
        .add(land("0008_appends"))
        .add(FillColumn::new(
            "0009_fill",
            "documents",
            "kind",
            "coalesce(kind, 'appended')",
        ))
        .add(land("0010_appends"));
    let report = migrator.run().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(report.applied().count(), 10);
    busy.wait_for_acks(busy.acked().len() + 3);
    let acked = busy.stop_app();
    assert_nothing_lost(&db, &acked, BIG, "renames and drops on a busy table").await;
    let table = db.open_table("documents").execute().await.unwrap();
    let schema = table.schema().await.unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "text", "vector", "kind"]);
    assert_eq!(
        schema.field_with_name("kind").unwrap().data_type(),
        &DataType::LargeUtf8
    );
    let general = table
        .count_rows(Some(format!("kind = 'general' AND id < {BIG}")))
        .await
        .unwrap();
    assert_eq!(
        general, BIG,
        "the original rows keep the renamed column's values"
    );
    let filled = table
        .count_rows(Some(format!("kind = 'appended' AND id >= {BIG}")))
        .await
        .unwrap();
    assert!(filled > 0, "rows appended before the fill got its value");
}

/// A re-embed that fails late on a table the application appends to every
/// 10 ms: the rollback's restore lands between the appends (Lance's own
/// retries gave up on it after 30 s: "too many concurrent writers"), and
/// the rows appended meanwhile are appended again, each exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_migration_on_a_busy_table_is_restored() {
    let _turn = crate::support::heavy().await;
    const BIG: usize = 8_000;
    let mut busy = Busy::with_fragments(BIG, 100, 10).await;
    busy.wait_for_acks(3);
    let db = busy.db().await;
    let table = db.open_table("documents").execute().await.unwrap();
    let before = table.schema().await.unwrap();
    // Rows are appended after the backup (the embedder waits for them), so
    // the rollback has rows to append again on any machine.
    let model = after_acks(
        TestEmbedding::new("test-16", NEW_DIMS)
            .delay(Duration::from_millis(20))
            .fail_after(6_000),
        &busy.ack,
    );
    let migrator = Migrator::new(db.clone()).add(
        ReEmbed::new("0003_reembed", "documents", Arc::new(model))
            .batch_size(200)
            .checkpoint_every(Duration::from_millis(200)),
    );
    let err = migrator.run().await.unwrap_err();
    let (cause, phase, rollback) = failure(&err);
    assert_eq!(phase, Phase::Transform, "{cause:?}");
    assert!(matches!(cause, Error::Embedding { .. }), "{cause:?}");
    let Rollback::Restored { reappended, .. } = rollback else {
        panic!("the rollback did not restore the table: {rollback:?}");
    };
    assert!(*reappended >= 10, "rows were appended during the migration");
    let appended_during = busy.acked().len();
    busy.wait_for_acks(appended_during + 3);
    let acked = busy.stop_app();
    table.checkout_latest().await.unwrap();
    assert_eq!(*table.schema().await.unwrap(), *before, "schema restored");
    assert_nothing_lost(&db, &acked, BIG, "failed re-embed on a busy table").await;
    let ledger = migrator.ledger().await.unwrap();
    assert_eq!(ledger[0].status, LedgerStatus::Failed);
}

/// `inner`, which at its first call (after the backup) waits until the
/// application's acknowledgement file `ack` lists two more batches than
/// then: at least one whole batch is appended during the migration however
/// fast or slow the machine is.
fn after_acks(inner: TestEmbedding, ack: &Path) -> Hooked {
    use lancedb::embeddings::EmbeddingFunction as _;
    let (ack, waited) = (ack.to_owned(), std::sync::atomic::AtomicBool::new(false));
    Hooked::new(inner, move |source, inner| {
        if !waited.swap(true, std::sync::atomic::Ordering::SeqCst) {
            wait_for_more_lines(&ack, 2);
        }
        inner.compute_source_embeddings(source)
    })
}

/// Blocks until `file` has `more` lines more than now (two minutes at
/// most).
fn wait_for_more_lines(file: &Path, more: usize) {
    let lines = std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .count()
        + more;
    let started = Instant::now();
    while std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .count()
        < lines
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the application did not append"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The table's columns hold what a clean run of `scenario` leaves.
async fn assert_like_a_clean_run(db: &Connection, scenario: &str, what: &str) {
    let table = db.open_table("documents").execute().await.unwrap();
    let schema = table.schema().await.unwrap();
    let mut expected = vec!["id", "text", "vector", "category", "is_active"];
    if scenario.starts_with("custom") {
        expected.extend(["word_count", "note"]);
    }
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, expected, "{what}: columns");
    let batches = rows(&table, &[]).await;
    for batch in &batches {
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let texts = batch.column_by_name("text").unwrap().as_string::<i32>();
        let category = batch.column_by_name("category").unwrap().as_string::<i32>();
        let vectors = batch.column_by_name("vector").unwrap().as_fixed_size_list();
        for row in 0..batch.num_rows() {
            let id = ids.value(row);
            if id < APPENDED_FROM {
                assert_eq!(
                    category.value(row),
                    "general",
                    "{what}: default of row {id}"
                );
            }
            let v = vectors.value(row);
            let v = v.as_primitive::<Float32Type>().values();
            let want = if scenario == "reembed" {
                TestEmbedding::vector(texts.value(row), NEW_DIMS)
            } else {
                testing::document_vector(id, DIMS)
            };
            assert_eq!(v.len(), want.len(), "{what}: dimension of row {id}");
            let off = v
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(off < 1e-5, "{what}: row {id}'s vector is off by {off}");
        }
    }
    if scenario == "reembed" {
        let field = schema.field_with_name("vector").unwrap();
        assert_eq!(
            field.metadata().get(ReEmbed::MODEL_KEY).map(String::as_str),
            Some("test-16")
        );
    }
}

/// Verification fails after a `ReEmbed` swapped its vectors in, while the
/// application appends rows with new-model (16-d) vectors: they cannot go
/// back into the 8-d column, so the rollback is refused rather than
/// dropping them, every acknowledged row stays, and the next run completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_that_would_drop_rows_is_refused() {
    /// Fails verification once the application has appended rows in the
    /// new schema (two more acknowledged batches than at its start).
    #[derive(Debug)]
    struct SlowFailingVerify(ReEmbed, PathBuf);

    #[async_trait]
    impl Migration for SlowFailingVerify {
        fn id(&self) -> &str {
            self.0.id()
        }
        fn table(&self) -> &str {
            self.0.table()
        }
        fn definition(&self) -> String {
            self.0.definition()
        }
        fn expected_schema(&self, before: &Schema) -> Result<Schema> {
            self.0.expected_schema(before)
        }
        async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
            self.0.transform(ctx).await
        }
        async fn verify(&self, _ctx: &MigrationContext) -> Result<()> {
            let ack = self.1.clone();
            tokio::task::spawn_blocking(move || wait_for_more_lines(&ack, 2))
                .await
                .unwrap();
            Err(Error::custom("injected verify failure"))
        }
    }

    let tmp = TempDb::new().await.unwrap();
    testing::documents_table(tmp.db(), "documents", 500, DIMS)
        .await
        .unwrap();
    let ack = tmp.path().join("acked.txt");
    let stop = tmp.path().join("stop");
    let app_db = tmp.connect().await.unwrap();
    let (ack2, stop2) = (ack.clone(), stop.clone());
    let app = tokio::spawn(async move {
        append_until(
            &app_db,
            APPENDED_FROM,
            Duration::from_millis(20),
            &ack2,
            &stop2,
        )
        .await;
    });
    let failing = Migrator::new(tmp.connect().await.unwrap())
        .add(SlowFailingVerify(reembed(Duration::ZERO), ack.clone()));
    let err = failing.run().await.unwrap_err();
    std::fs::write(&stop, b"").unwrap();
    app.await.unwrap();
    let acked: Vec<i64> = std::fs::read_to_string(&ack)
        .unwrap()
        .lines()
        .flat_map(|l| {
            let first: i64 = l.parse().unwrap();
            first..first + 10
        })
        .collect();

    let (_, phase, rollback) = failure(&err);
    assert_eq!(phase, Phase::Verify);
    let Rollback::KeptNewRows { reason, .. } = rollback else {
        panic!("expected a refused rollback, got {rollback:?}: {err}");
    };
    assert!(reason.contains("vector"), "{reason}");
    assert!(
        err.to_string().contains("left as the migration left it"),
        "{err}"
    );
    let db = tmp.connect().await.unwrap();
    let counts = id_counts(&db).await;
    let lost = acked.iter().filter(|id| !counts.contains_key(id)).count();
    assert_eq!(lost, 0, "{lost} of {} acknowledged rows lost", acked.len());
    assert_eq!(counts.len(), 500 + acked.len());
    let ledger = failing.ledger().await.unwrap();
    assert_eq!(ledger[0].status, LedgerStatus::Failed);
    assert!(
        ledger[0]
            .error
            .as_deref()
            .unwrap()
            .contains("injected verify failure")
    );

    // The next start applies the migration from the table as it was left.
    let report = Migrator::new(db.clone())
        .add(reembed(Duration::ZERO))
        .run()
        .await
        .unwrap();
    assert_eq!(report.applied().count(), 1);
    let counts = id_counts(&db).await;
    assert_eq!(
        counts.len(),
        500 + acked.len(),
        "nothing lost on the re-run"
    );
}

/// A transform that panics after a commit: a typed error for its phase,
/// the table restored, the ledger `failed` with the panic's message, and
/// the lease given back (the next run starts at once).
#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_transform_is_rolled_back_and_recorded() {
    #[derive(Debug)]
    struct Panics;

    #[async_trait]
    impl Migration for Panics {
        fn id(&self) -> &str {
            "0001_panics"
        }
        fn table(&self) -> &str {
            "documents"
        }
        async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
            crate::support::add_word_count(ctx.table()).await?;
            panic!("downstream bug: index out of range");
        }
    }

    let tmp = TempDb::new().await.unwrap();
    let table = testing::documents_table(tmp.db(), "documents", 100, DIMS)
        .await
        .unwrap();
    let before = table.schema().await.unwrap();
    let migrator = Migrator::new(tmp.connect().await.unwrap())
        .lease_wait(Duration::from_secs(2))
        .add(Panics);
    let err = migrator.run().await.unwrap_err();
    let (cause, phase, rollback) = failure(&err);
    assert_eq!(phase, Phase::Transform);
    assert!(
        matches!(cause, Error::Panicked { message } if message.contains("index out of range")),
        "{cause:?}"
    );
    assert_restored_and_recorded(&table, &before, rollback, &migrator, "index out of range").await;

    // The lease was released: a fixed migration takes it at the first try
    // (waiting not at all), not after a TTL.
    Migrator::new(tmp.connect().await.unwrap())
        .lease_wait(Duration::ZERO)
        .add(
            AddColumns::new("0001_panics", "documents")
                .column(NewColumn::new("note", DataType::Utf8)),
        )
        .run()
        .await
        .unwrap();
}

/// An embedder that panics: `Error::Embedding` naming the model, restored
/// table, `failed` ledger row.
#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_embedder_is_an_embedding_error() {
    #[derive(Debug)]
    struct PanickingModel;

    impl lancedb::embeddings::EmbeddingFunction for PanickingModel {
        fn name(&self) -> &str {
            "panicky"
        }
        fn source_type(&self) -> lancedb::Result<std::borrow::Cow<'_, DataType>> {
            Ok(std::borrow::Cow::Owned(DataType::Utf8))
        }
        fn dest_type(&self) -> lancedb::Result<std::borrow::Cow<'_, DataType>> {
            Ok(std::borrow::Cow::Owned(testing::vector_type(NEW_DIMS)))
        }
        fn compute_source_embeddings(&self, _: ArrayRef) -> lancedb::Result<ArrayRef> {
            panic!("CUDA device lost");
        }
        fn compute_query_embeddings(&self, _: ArrayRef) -> lancedb::Result<ArrayRef> {
            panic!("CUDA device lost");
        }
    }

    let tmp = TempDb::new().await.unwrap();
    let table = testing::documents_table(tmp.db(), "documents", 100, DIMS)
        .await
        .unwrap();
    let before = table.schema().await.unwrap();
    let migrator = Migrator::new(tmp.connect().await.unwrap()).add(ReEmbed::new(
        "0001_reembed",
        "documents",
        Arc::new(PanickingModel),
    ));
    let err = migrator.run().await.unwrap_err();
    let (cause, phase, rollback) = failure(&err);
    assert_eq!(phase, Phase::Transform);
    let Error::Embedding { model, problem } = cause else {
        panic!("expected an embedding error, got {cause:?}");
    };
    assert_eq!(model, "panicky");
    assert!(
        matches!(problem, EmbeddingProblem::Panicked { message } if message.contains("CUDA device lost")),
        "{problem:?}"
    );
    assert_restored_and_recorded(&table, &before, rollback, &migrator, "CUDA device lost").await;
}

/// The table has its schema from before, and the ledger says `failed`
/// with `message` in its error.
async fn assert_restored_and_recorded(
    table: &lancedb::Table,
    before: &Schema,
    rollback: &Rollback,
    migrator: &Migrator,
    message: &str,
) {
    assert!(
        matches!(rollback, Rollback::Restored { .. }),
        "{rollback:?}"
    );
    table.checkout_latest().await.unwrap();
    assert_eq!(*table.schema().await.unwrap(), *before, "table restored");
    let ledger = migrator.ledger().await.unwrap();
    assert_eq!(ledger[0].status, LedgerStatus::Failed);
    let error = ledger[0].error.as_deref().unwrap_or_default();
    assert!(error.contains(message), "the ledger's error: {error}");
}

/// A real full disk (a small tmpfs) that stays full through the rollback:
/// the transform's second write fails for want of space, and so do the
/// restore and the ledger write (every block and inode is taken before the
/// transform returns). The error says what happened and that the next run
/// restores the table first; once space is freed, the next run does exactly
/// that and applies the migration, with every row intact. Skipped (with a
/// message) where tmpfs cannot be mounted.
#[tokio::test(flavor = "multi_thread")]
async fn a_disk_full_through_the_rollback_is_recovered_by_the_next_run() {
    let Some(disk) = SmallDisk::mount() else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
        return;
    };
    let db = disk.db().await;
    let migration = || WordCount {
        then: Then::FillTheDisk {
            disk: disk.clone(),
            room_for_the_restore: false,
        },
    };
    let err = Migrator::new(db.clone())
        .lease_ttl(Duration::from_millis(500))
        .add(migration())
        .run()
        .await
        .unwrap_err();
    let text = err.to_string();
    let (_, phase, rollback) = failure(&err);
    assert_eq!(phase, Phase::Transform, "{err:?}");
    let Rollback::RestoreFailed { step, source, .. } = rollback else {
        panic!("{rollback:?}")
    };
    // The restore's own error is kept, typed, not flattened into text.
    assert!(!step.is_empty());
    assert!(
        matches!(**source, lancedb_migrate::Error::LanceDb { .. }),
        "the failed restore keeps LanceDB's error: {source:?}"
    );
    assert!(
        text.contains("the next run restores the backup first"),
        "the error must say what the next run does: {text}"
    );
    assert!(!text.contains("by hand"), "{text}");

    // Space comes back; the next start recovers on its own.
    disk.free();
    let migrator = Migrator::new(db.clone())
        .lease_ttl(Duration::from_millis(500))
        .add(migration());
    let ledger = migrator.ledger().await.unwrap();
    assert_eq!(ledger[0].status, LedgerStatus::Running, "{ledger:?}");
    let report = migrator.run().await.unwrap();
    assert_eq!(report.applied().count(), 1);
    assert_all_rows_once(&db, 2_000).await;
    let table = db.open_table("documents").execute().await.unwrap();
    let names = crate::support::field_names(&table.schema().await.unwrap());
    assert_eq!(names, ["id", "text", "vector", "word_count"]);
}

/// A full disk where the restore fits: the transform's write fails for want
/// of space, then a little space comes back before the rollback (another
/// program deleted a file). The table is restored, the ledger says `failed`
/// with the cause, every row is there; the next run applies the migration.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_with_room_for_the_restore_is_rolled_back() {
    let Some(disk) = SmallDisk::mount() else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
        return;
    };
    let db = disk.db().await;
    let table = db.open_table("documents").execute().await.unwrap();
    let before = table.schema().await.unwrap();
    let migration = || WordCount {
        then: Then::FillTheDisk {
            disk: disk.clone(),
            room_for_the_restore: true,
        },
    };
    let migrator = Migrator::new(db.clone())
        .lease_ttl(Duration::from_millis(500))
        .add(migration());
    let err = migrator.run().await.unwrap_err();
    let (cause, phase, rollback) = failure(&err);
    assert_eq!(phase, Phase::Transform, "{err:?}");
    let mut chain = cause.to_string();
    let mut source = std::error::Error::source(cause);
    while let Some(e) = source {
        chain.push_str(&format!(": {e}"));
        source = e.source();
    }
    assert!(
        chain.contains("No space left on device"),
        "the cause names the full disk: {chain}"
    );
    assert_restored_and_recorded(&table, &before, rollback, &migrator, "space").await;
    assert_all_rows_once(&db, 2_000).await;

    // With space back, the next start applies it.
    disk.free();
    let report = migrator.run().await.unwrap();
    assert_eq!(report.applied().count(), 1);
    assert_all_rows_once(&db, 2_000).await;
}

/// The documents table holds ids `0..rows`, each once.
async fn assert_all_rows_once(db: &Connection, rows: usize) {
    let counts = id_counts(db).await;
    assert_eq!(counts.len(), rows);
    assert!((0..rows as i64).all(|id| counts.get(&id) == Some(&1)));
}

/// A small tmpfs (unmounted on drop) holding a database with a 2,000-row
/// documents table, that a test fills to the last block and inode.
#[derive(Debug, Clone)]
struct SmallDisk(Arc<Mount>);

#[derive(Debug)]
struct Mount {
    dir: tempfile::TempDir,
    files: std::sync::atomic::AtomicUsize,
}

/// Size and inodes of the tmpfs: room for the table, its versions, the
/// ledger and the lease, and few enough inodes to take them all quickly.
const DISK: &str = "size=32m,nr_inodes=4096";
/// Freed by [`SmallDisk::free_reserve`]: far more than a restore, a ledger
/// write and a lease release take.
const RESERVE_BYTES: usize = 4 << 20;
const RESERVE_INODES: usize = 64;

impl SmallDisk {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", DISK, "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
        let disk = Self(Arc::new(Mount {
            dir,
            files: 0.into(),
        }));
        std::fs::create_dir(disk.balloon()).unwrap();
        std::fs::write(disk.balloon().join("blocks"), b"").unwrap();
        std::fs::create_dir(disk.reserve()).unwrap();
        std::fs::write(disk.reserve().join("bytes"), vec![1u8; RESERVE_BYTES]).unwrap();
        for i in 0..RESERVE_INODES {
            std::fs::write(disk.reserve().join(format!("inode-{i}")), b"").unwrap();
        }
        Some(disk)
    }

    /// The database on it, with the 2,000-row documents table.
    async fn db(&self) -> Connection {
        let uri = self.0.dir.path().join("db");
        let db = lancedb::connect(uri.to_str().unwrap())
            .execute()
            .await
            .unwrap();
        testing::documents_table(&db, "documents", 2_000, DIMS)
            .await
            .unwrap();
        db
    }

    fn balloon(&self) -> PathBuf {
        self.0.dir.path().join("balloon")
    }

    fn reserve(&self) -> PathBuf {
        self.0.dir.path().join("reserve")
    }

    /// Takes every free block (a file written until ENOSPC) and then every
    /// free inode (empty files created until ENOSPC). Called again, it takes
    /// what was freed since.
    fn fill(&self) {
        let mut blocks = std::fs::OpenOptions::new()
            .append(true)
            .open(self.balloon().join("blocks"))
            .unwrap();
        for chunk in [1 << 20, 4 << 10, 1] {
            let bytes = vec![0u8; chunk];
            while blocks.write_all(&bytes).is_ok() {}
        }
        let _ = blocks.sync_all();
        let next = || {
            let n = self
                .0
                .files
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.balloon().join(format!("inode-{n}"))
        };
        while std::fs::File::create(next()).is_ok() {}
        let probe = self.0.dir.path().join("probe");
        assert!(
            std::fs::write(&probe, b"x").is_err(),
            "the disk should be full"
        );
    }

    /// Gives back the reserve: room for a small commit or two.
    fn free_reserve(&self) {
        std::fs::remove_dir_all(self.reserve()).unwrap();
    }

    /// Gives back all the space the test took.
    fn free(&self) {
        std::fs::remove_dir_all(self.balloon()).unwrap();
        let _ = std::fs::remove_dir_all(self.reserve());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// An interrupted attempt leaves a backup tag that the ledger stops naming
/// once the retry records its own; with a retention policy it is pruned
/// after the migration applies, and the applied migration's tag is kept.
#[tokio::test(flavor = "multi_thread")]
async fn backup_tags_of_interrupted_attempts_are_pruned() {
    let tmp = TempDb::new().await.unwrap();
    let table = testing::documents_table(tmp.db(), "documents", 100, DIMS)
        .await
        .unwrap();
    let migrator = |hangs| {
        Migrator::new(tmp.db().clone())
            .lease_ttl(Duration::from_millis(300))
            .keep_backups(lancedb_migrate::Retention::Last(5))
            .add(WordCount {
                then: if hangs { Then::Hang } else { Then::Finish },
            })
    };
    // The process "dies" mid-transform: the run is dropped there.
    let died = tokio::time::timeout(Duration::from_secs(2), migrator(true).run()).await;
    assert!(died.is_err());
    let orphan = crate::support::tags(&table).await;
    assert_eq!(orphan.len(), 1, "{orphan:?}");

    let fixed = migrator(false);
    fixed.run().await.unwrap();
    let entry = &fixed.ledger().await.unwrap()[0];
    let kept = entry.backup_tag.clone().unwrap();
    let tags = crate::support::tags(&table).await;
    assert_eq!(
        tags.keys().collect::<Vec<_>>(),
        [&kept],
        "only the applied migration's own backup tag is left"
    );
}

/// Adds `word_count`, then does what `then` says.
#[derive(Debug)]
struct WordCount {
    then: Then,
}

#[derive(Debug)]
enum Then {
    Finish,
    /// The process "dies" here: the test drops the run.
    Hang,
    /// Another program fills the disk (while there is a balloon on it),
    /// then the migration's next write fails for want of space; the disk
    /// is filled again (what the failed write freed is taken back), and
    /// with `room_for_the_restore` a little space given back, before the
    /// transform returns that error.
    FillTheDisk {
        disk: SmallDisk,
        room_for_the_restore: bool,
    },
}

#[async_trait]
impl Migration for WordCount {
    fn id(&self) -> &str {
        "0001_word_count"
    }
    fn table(&self) -> &str {
        "documents"
    }
    fn definition(&self) -> String {
        "word_count = length(text)".to_owned()
    }
    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        Ok(crate::support::with_word_count(before))
    }
    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        crate::support::add_word_count(ctx.table()).await?;
        match &self.then {
            Then::Finish => {}
            Then::Hang => std::future::pending::<()>().await,
            Then::FillTheDisk {
                disk,
                room_for_the_restore,
            } => {
                if disk.balloon().exists() {
                    disk.fill();
                    let sql = vec![("shout".to_owned(), "upper(text)".to_owned())];
                    let failed = ctx
                        .table()
                        .add_columns()
                        .transform(NewColumnTransform::SqlExpressions(sql))
                        .execute()
                        .await
                        .expect_err("a write to a full disk must fail");
                    disk.fill();
                    if *room_for_the_restore {
                        disk.free_reserve();
                    }
                    return Err(failed.into());
                }
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------- rolling deploys

/// Texts in the embedding log of a child (`EMBED_LOG_ENV`), and how many
/// of them were embedded more than once (each extra time counted).
fn embedded_twice(log: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        *seen.entry(line).or_default() += 1;
    }
    let total: usize = seen.values().sum();
    (total, total - seen.len())
}

/// Waits for `child` to exit, failing the test after `limit` (a bound far
/// above the work, not a measurement).
fn exit_within(child: Child, limit: Duration, what: &str) -> std::process::Output {
    let started = Instant::now();
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Waits until `file` has a line starting with `prefix` and returns it
/// (failing the test if `child` exits first, or after two minutes).
fn line_in(file: &Path, prefix: &str, child: &mut Child) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with(prefix)) {
            return line.to_owned();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child exited ({status}) before writing `{prefix}`: {text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no `{prefix}` in {file:?}: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn env(
    pairs: &[(&'static str, &dyn AsRef<std::ffi::OsStr>)],
) -> Vec<(&'static str, std::ffi::OsString)> {
    pairs
        .iter()
        .map(|(k, v)| (*k, v.as_ref().to_owned()))
        .collect()
}

/// A rolling deploy while a re-embed runs: the replica holding the lease
/// is held mid re-embed (at a point the test names) while four more
/// replicas start, 1 s apart, with the default policy. Each returns from
/// its start-up `run()` while the holder is still held — so without
/// waiting for it — reporting the re-embed pending, who holds it and what
/// it runs, and ready to serve (the `AddColumns` that blocks serving
/// landed first). Once the holder goes on, every replica learns the
/// re-embed landed, and it was applied once: no text embedded twice.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_serve_at_once_while_another_reembeds() {
    let mut busy = Busy::on(&Place::Local, ROWS, 1, 100).await;
    busy.wait_for_acks(2);
    let db = busy.db().await;
    let scratch = busy.tmp.scratch().to_owned();
    let log = scratch.join("embedded.log");
    let pause = Pause::at("progress:0003_reembed:1000");
    let first_out = scratch.join("first.txt");
    // A TTL no heartbeat can miss on a loaded machine: the replicas must
    // find the lease held, not expired.
    let ttl = "30000";
    let mut first = busy.start_reembed(Some(&pause), ttl, &log, &first_out);
    pause.reached(&mut first).await;

    let mut replicas = Vec::new();
    for i in 0..4 {
        let out = scratch.join(format!("replica-{i}.txt"));
        let child = busy.migrate_with(
            "reembed",
            None,
            &env(&[(MODE_ENV, &"replica"), (TTL_ENV, &ttl), (OUT_ENV, &out)]),
        );
        replicas.push((child, out));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let holder = format!("pid{}", first.id());
    for (child, out) in &mut replicas {
        // The holder is still held here: a replica that waited for it
        // would never write this line.
        let line = line_in(out, "pending=", child);
        assert!(
            line.starts_with("pending=0003_reembed ready=true holder=")
                && line.contains(&holder)
                && line.ends_with("running=0003_reembed"),
            "{line}"
        );
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the holder is still held"
    );

    pause.go();
    let out = exit_within(first, Duration::from_secs(240), "the holder");
    assert!(out.status.success());
    let said = std::fs::read_to_string(&first_out).unwrap();
    assert!(said.contains("applied=2 stopped=false"), "{said}");
    for (i, (child, out)) in replicas.into_iter().enumerate() {
        let done = exit_within(child, Duration::from_secs(60), "a replica");
        assert!(
            done.status.success(),
            "replica {i}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        let said = std::fs::read_to_string(&out).unwrap();
        assert!(said.contains("landed"), "replica {i}: {said}");
    }
    busy.wait_for_acks(busy.acked().len() + 2);
    let acked = busy.stop_app();
    let ledger = migrator(db.clone(), "reembed").ledger().await.unwrap();
    assert_eq!(ledger.len(), 2);
    assert!(ledger.iter().all(|e| e.status == LedgerStatus::Applied));
    assert_nothing_lost(&db, &acked, ROWS, "replicas").await;
    assert_like_a_clean_run(&db, "reembed", "replicas").await;
    let (embedded, twice) = embedded_twice(&log);
    assert!(embedded >= ROWS, "{embedded}");
    // The re-embed ran once: the only texts embedded again are the 16 its
    // verification samples.
    assert_eq!(twice, ReEmbed::DEFAULT_SAMPLE, "the re-embed ran once");
}

/// A rolling deploy's SIGTERM to the replica that re-embeds, while the
/// application appends and another replica stands by. The holder commits
/// the batch in flight, saves its checkpoint, releases the lease and
/// exits; the replica standing by takes over at once — the lease TTL is
/// ten minutes here, so only the release lets it in — and finishes. No
/// acknowledged row lost or doubled, every vector the new model's, and at
/// most one batch (200 texts) embedded twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_sigterm_hands_the_reembed_over_at_once() {
    handover(&Place::Local, ROWS, "-TERM", 600_000).await;
}

/// The same on the S3 server: the checkpoint, the release and the
/// successor's resume go through the object store.
#[tokio::test(flavor = "multi_thread")]
async fn a_sigterm_hands_the_reembed_over_at_once_on_s3() {
    if let Some((s3, _slot)) = Place::s3("a_sigterm_hands_the_reembed_over_at_once_on_s3").await {
        handover(&s3, S3_ROWS, "-TERM", 600_000).await;
    }
}

/// The same with SIGKILL: nothing is handed over; the replica standing by
/// takes over when the lease expires (1 s here) and resumes from the last
/// checkpoint.
#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_leaves_the_reembed_to_the_lease_ttl() {
    handover(&Place::Local, ROWS, "-KILL", 1_000).await;
}

async fn handover(place: &Place, rows: usize, sig: &str, ttl_ms: u64) {
    let mut busy = Busy::on(place, rows, 1, 100).await;
    busy.wait_for_acks(2);
    let db = busy.db().await;
    let scratch = busy.tmp.scratch().to_owned();
    let log = scratch.join("embedded.log");
    let ttl = ttl_ms.to_string();
    let (first_out, second_out) = (scratch.join("first.txt"), scratch.join("second.txt"));
    // A quarter of the way through the table's own rows.
    let pause = Pause::at(format!("progress:0003_reembed:{}", rows / 4));
    let mut first = busy.start_reembed(Some(&pause), &ttl, &log, &first_out);
    pause.reached(&mut first).await;
    let second = busy.start_reembed(None, &ttl, &log, &second_out);
    signal(&first, sig);
    pause.go();
    let out = exit_within(first, Duration::from_secs(120), "the stopped holder");
    if sig == "-TERM" {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = std::fs::read_to_string(&first_out).unwrap();
        // `0001_category` applied, the re-embed stopped.
        assert!(said.contains("applied=1 stopped=true"), "{said}");
    }
    // Far below the TTL of the SIGTERM case.
    let out = exit_within(second, Duration::from_secs(240), "the replica taking over");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = std::fs::read_to_string(&second_out).unwrap();
    assert!(said.contains("applied=1 stopped=false"), "{said}");

    busy.wait_for_acks(busy.acked().len() + 2);
    let acked = busy.stop_app();
    let what = format!("handover after {sig}");
    let ledger = migrator(db.clone(), "reembed").ledger().await.unwrap();
    assert!(
        ledger.iter().all(|e| e.status == LedgerStatus::Applied),
        "{what}: {ledger:?}"
    );
    assert_nothing_lost(&db, &acked, rows, &what).await;
    assert_like_a_clean_run(&db, "reembed", &what).await;
    let (embedded, twice) = embedded_twice(&log);
    assert!(embedded >= rows, "{what}: {embedded}");
    // Beyond the 16 the verification samples, at most one batch (200) per
    // handover.
    let redone = twice.saturating_sub(ReEmbed::DEFAULT_SAMPLE);
    eprintln!("{what}: {redone} texts embedded twice");
    if sig == "-TERM" {
        assert!(redone <= 200, "{what}: {redone} texts embedded twice");
    }
}
