//! Rolling deploys: a replica's time from start to serving while another
//! process re-embeds, the handover from a graceful stop to the successor's
//! first embedder call (against the same successor taking over from a
//! process that vanished, after the lease TTL), and a re-embed's
//! throughput on a busy table (against the same re-embed on a quiet one).
//!
//! ```sh
//! scripts/cargo bench --bench migrate -- rolling_deploy
//! ```

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow_array::ArrayRef;
use arrow_schema::DataType;
use criterion::Criterion;
use futures::TryStreamExt;
use lancedb::Connection;
use lancedb::embeddings::EmbeddingFunction;
use lancedb::query::ExecutableQuery;
use lancedb_migrate::testing::{self, TempDb, TestEmbedding};
use lancedb_migrate::{DEFAULT_LEDGER_TABLE, MigrationHandle, Migrator, ReEmbed};
use tokio::runtime::Runtime;

const TABLE: &str = "documents";
const DIMS: usize = 8;
const NEW_DIMS: usize = 16;

/// The test model behind a hook: `hook` runs before each call with its
/// texts (to hold, time or count calls).
struct Hooked {
    inner: TestEmbedding,
    hook: Box<dyn Fn(&ArrayRef) + Send + Sync>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish()
    }
}

impl EmbeddingFunction for Hooked {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn source_type(&self) -> lancedb::Result<Cow<'_, DataType>> {
        self.inner.source_type()
    }
    fn dest_type(&self) -> lancedb::Result<Cow<'_, DataType>> {
        self.inner.dest_type()
    }
    fn compute_source_embeddings(&self, source: ArrayRef) -> lancedb::Result<ArrayRef> {
        (self.hook)(&source);
        self.inner.compute_source_embeddings(source)
    }
    fn compute_query_embeddings(&self, input: ArrayRef) -> lancedb::Result<ArrayRef> {
        self.inner.compute_query_embeddings(input)
    }
}

fn hooked(delay: Duration, hook: impl Fn(&ArrayRef) + Send + Sync + 'static) -> Arc<Hooked> {
    Arc::new(Hooked {
        inner: TestEmbedding::new("test-16", NEW_DIMS).delay(delay),
        hook: Box::new(hook),
    })
}

fn reembed(model: Arc<dyn EmbeddingFunction>) -> ReEmbed {
    ReEmbed::new("0002_reembed", TABLE, model)
        .batch_size(200)
        .concurrency(2)
        .checkpoint_every(Duration::from_secs(2))
}

async fn documents(rows: usize) -> TempDb {
    let tmp = TempDb::new().await.unwrap();
    testing::documents_table(tmp.db(), TABLE, rows, DIMS)
        .await
        .unwrap();
    tmp
}

/// What a replica's start must do at the least: open its table and read
/// the ledger.
async fn raw_start(db: &Connection) {
    db.open_table(TABLE).execute().await.unwrap();
    let ledger = db.open_table(DEFAULT_LEDGER_TABLE).execute().await.unwrap();
    let rows: Vec<_> = ledger
        .query()
        .execute()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(!rows.is_empty());
}

/// A replica's start with the default policy while another holds the
/// lease: returns with the re-embed pending.
async fn replica_start(db: &Connection) {
    let model = Arc::new(TestEmbedding::new("test-16", NEW_DIMS));
    let report = Migrator::new(db.clone())
        .add(reembed(model))
        .run()
        .await
        .unwrap();
    assert_eq!(report.pending().count(), 1);
}

fn time_to_serve(c: &mut Criterion, rt: &Runtime) {
    let tmp = rt.block_on(documents(20_000));
    let open = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicBool::new(false));
    let (o, h) = (open.clone(), held.clone());
    let calls = AtomicU64::new(0);
    let gated = hooked(Duration::ZERO, move |_| {
        if calls.fetch_add(1, Ordering::SeqCst) > 0 {
            h.store(true, Ordering::SeqCst);
            while !o.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    let holder = Migrator::new(tmp.db().clone()).add(reembed(gated));
    let holding = rt.spawn(async move { holder.run().await });
    while !held.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut group = c.benchmark_group("rolling_deploy");
    group.bench_function("time_to_serve/raw_open_and_read_ledger", |b| {
        b.iter(|| rt.block_on(raw_start(tmp.db())))
    });
    group.bench_function("time_to_serve/migrator_run_while_another_reembeds", |b| {
        b.iter(|| rt.block_on(replica_start(tmp.db())))
    });
    group.finish();
    open.store(true, Ordering::SeqCst);
    rt.block_on(holding).unwrap().unwrap();
}

/// How the holder goes away.
#[derive(Clone, Copy)]
enum Gone {
    /// `MigrationHandle::stop`: the graceful handover.
    Stopped,
    /// Its runtime shut down mid-call, the lease left to expire (as after
    /// SIGKILL).
    Vanished,
}

/// From the holder going away to the standby's first embedder call.
async fn handover(gone: Gone, ttl: Duration) -> Duration {
    let tmp = documents(20_000).await;
    let holder_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let slow: Arc<dyn EmbeddingFunction> =
        Arc::new(TestEmbedding::new("test-16", NEW_DIMS).delay(Duration::from_millis(50)));
    let db = tmp.db().clone();
    let holder: MigrationHandle = {
        let _on = holder_rt.enter();
        Migrator::new(db).lease_ttl(ttl).add(reembed(slow)).start()
    };
    while holder.state().progress.is_none_or(|p| p.done < 2_000) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_call: Arc<OnceLock<Instant>> = Arc::default();
    let seen = first_call.clone();
    let timed = hooked(Duration::from_millis(50), move |_| {
        let _ = seen.set(Instant::now());
    });
    let standby = Migrator::new(tmp.db().clone())
        .lease_ttl(ttl)
        .add(reembed(timed))
        .start();
    // The standby is standing by once it has seen the holder.
    let mut state = standby.subscribe();
    state.wait_for(|s| s.holder.is_some()).await.unwrap();
    let gone_at = Instant::now();
    match gone {
        Gone::Stopped => {
            holder.stop();
            let report = holder.wait().await.unwrap();
            assert!(report.stopped().is_some());
            holder_rt.shutdown_background();
        }
        Gone::Vanished => {
            drop(holder);
            holder_rt.shutdown_background();
        }
    }
    while first_call.get().is_none() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = *first_call.get().unwrap() - gone_at;
    assert_eq!(standby.wait().await.unwrap().applied().count(), 1);
    took
}

fn handovers(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("rolling_deploy");
    group.sample_size(10);
    let ttl = Duration::from_secs(5);
    for (name, gone) in [
        (
            "handover/graceful_stop_to_successor_first_batch",
            Gone::Stopped,
        ),
        (
            "handover/vanished_holder_to_successor_first_batch_ttl_5s",
            Gone::Vanished,
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += handover(gone, ttl).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

/// A re-embed through a latency-bound embedder (20 ms a call) of 8,000
/// rows while the application appends 10 rows every 20 ms (`busy`), or
/// on a quiet table. Prints the rows per second of the first pass and of
/// the whole run.
async fn busy_reembed(busy: bool) -> Duration {
    let tmp = documents(8_000).await;
    let table = tmp.db().open_table(TABLE).execute().await.unwrap();
    let calls: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let log = calls.clone();
    let model = hooked(Duration::from_millis(20), move |texts| {
        use arrow_array::cast::AsArray;
        let original = texts.as_string::<i32>().iter().flatten().all(|t| {
            t.split(':')
                .next()
                .and_then(|d| d.strip_prefix("document "))
                .and_then(|n| n.parse::<i64>().ok())
                .is_some_and(|id| id < 8_000)
        });
        log.lock().unwrap().push((Instant::now(), original));
    });
    let stop = Arc::new(AtomicBool::new(false));
    let appending = busy.then(|| {
        let (table, stop) = (table.clone(), stop.clone());
        tokio::spawn(async move {
            let mut next = 1_000_000;
            while !stop.load(Ordering::SeqCst) {
                let schema = table.schema().await.unwrap();
                let batch = testing::documents_batch(next..next + 10, DIMS);
                // NULL in the columns the application does not know.
                let columns = schema
                    .fields()
                    .iter()
                    .map(|f| match batch.column_by_name(f.name()) {
                        Some(c) if c.data_type() == f.data_type() => c.clone(),
                        _ => arrow_array::new_null_array(f.data_type(), 10),
                    })
                    .collect();
                let batch = arrow_array::RecordBatch::try_new(schema, columns).unwrap();
                if table.add(batch).execute().await.is_ok() {
                    next += 10;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    let started = Instant::now();
    let migration = ReEmbed::new("0002_reembed", TABLE, model)
        .batch_size(256)
        .concurrency(1);
    Migrator::new(tmp.db().clone())
        .add(migration)
        .run()
        .await
        .unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    if let Some(task) = appending {
        task.await.unwrap();
    }
    let rows = table.count_rows(None).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let first_pass_end = calls
        .iter()
        .filter(|(_, original)| *original)
        .map(|(t, _)| *t)
        .max()
        .unwrap();
    let first = 8_000.0 / (first_pass_end - started).as_secs_f64();
    let whole = rows as f64 / took.as_secs_f64();
    eprintln!(
        "busy={busy}: {rows} rows, {} embedder calls; first pass {first:.0} rows/s, whole run {whole:.0} rows/s ({:.2} of the first pass)",
        calls.len(),
        whole / first
    );
    took
}

fn busy_table(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("rolling_deploy");
    group.sample_size(10);
    for (name, busy) in [
        ("reembed_8000_rows/quiet_table", false),
        ("reembed_8000_rows/busy_table", true),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += busy_reembed(busy).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

pub(crate) fn rolling(c: &mut Criterion, rt: &Runtime) {
    time_to_serve(c, rt);
    handovers(c, rt);
    busy_table(c, rt);
}
