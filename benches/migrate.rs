//! Migrations against the plain LanceDB calls that do the same work, on the
//! same data, in the same run.
//!
//! ```sh
//! scripts/cargo bench --bench migrate
//! # smaller tables, e.g. for a quick look:
//! LANCEDB_MIGRATE_BENCH_ROWS=10000,100000 scripts/cargo bench --bench migrate
//! # the real-model group (opt-in, ~5 minutes; needs scripts/fetch-minilm.sh):
//! scripts/cargo bench --bench migrate -- minilm
//! # re-embedding through an OpenAI-compatible service (opt-in; MiniLM
//! # behind the crate's test server):
//! scripts/cargo bench --bench migrate -- remote
//! # recreating tuned indexes after their column is replaced (20 000 rows;
//! # LANCEDB_MIGRATE_BENCH_INDEX_ROWS=N for another size):
//! scripts/cargo bench --bench migrate -- index_recreate
//! # object storage, without and with 20 ms per request (the S3 server of
//! # scripts/s3-server.sh; skipped without it):
//! LANCEDB_MIGRATE_S3="$(scripts/s3-server.sh start)" scripts/cargo bench --bench migrate -- s3_
//! # declarative against hand-written: the same three columns, and plan
//! # time for a 50-column declaration:
//! LANCEDB_MIGRATE_BENCH_ROWS=100000 scripts/cargo bench --bench migrate -- 'declare_|plan_50'
//! # rolling deploys: time to serve, handover, a busy table's re-embed:
//! scripts/cargo bench --bench migrate -- rolling_deploy
//! ```
//!
//! Each table is created once per size (deterministic data, 384-d vectors)
//! in a temporary directory. Before every timed iteration the table is
//! restored to its original version (untimed), so each iteration migrates
//! the same table.

use std::time::{Duration, Instant};

use arrow_schema::{DataType, TimeUnit};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use lancedb::table::NewColumnTransform;
use lancedb::{Connection, Table};
use std::sync::Arc;

use lancedb_migrate::testing::{self, TempDb, TestEmbedding};
use lancedb_migrate::{
    AddColumns, Backup, DefaultValue, Migrator, NewColumn, ReEmbed, RebuildIndex,
};
use tokio::runtime::Runtime;

#[path = "migrate/declare.rs"]
mod declare;
#[path = "migrate/rolling.rs"]
mod rolling;
#[path = "../tests/support/s3.rs"]
mod s3;

const DIMS: usize = 384;
const TABLE: &str = "documents";
const BASE_TAG: &str = "bench_base";

fn sizes() -> Vec<usize> {
    std::env::var("LANCEDB_MIGRATE_BENCH_ROWS")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().parse().expect("row count"))
                .collect()
        })
        .unwrap_or_else(|| vec![100_000, 1_000_000])
}

/// A database holding `rows` fixture documents, tagged at its first version.
struct Fixture {
    tmp: TempDb,
    table: Table,
    base: Backup,
}

impl Fixture {
    async fn new(rows: usize) -> Self {
        let tmp = TempDb::new().await.unwrap();
        let table = testing::documents_table(tmp.db(), TABLE, rows, DIMS)
            .await
            .unwrap();
        Self::tagged(tmp, table).await
    }

    async fn tagged(tmp: TempDb, table: Table) -> Self {
        let base = tag_base(&table).await;
        Self { tmp, table, base }
    }

    fn db(&self) -> &Connection {
        self.tmp.db()
    }

    /// Puts the table back to its original contents (untimed setup).
    async fn reset(&self) {
        self.base.restore(&self.table).await.unwrap();
    }
}

fn three_columns(id: &str) -> AddColumns {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    AddColumns::new(id, TABLE)
        .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
        .column(NewColumn::new("is_active", DataType::Boolean).default_value(true))
        .column(NewColumn::new("created_at", utc).default_value(DefaultValue::MigrationTime))
}

/// What a hand-written script does: one `add_columns` with SQL constants.
async fn raw_add_three_columns(table: &Table) {
    let sql = [
        ("category", "'general'"),
        ("is_active", "true"),
        ("created_at", "now()"),
    ];
    let sql = sql
        .iter()
        .map(|(c, e)| ((*c).to_owned(), (*e).to_owned()))
        .collect();
    table
        .add_columns()
        .transform(NewColumnTransform::SqlExpressions(sql))
        .execute()
        .await
        .unwrap();
}

async fn drop_ledger(db: &Connection, name: &str) {
    let _ = db.drop_table(name, &[]).await;
}

/// Times `iters` runs of `work`, each after an untimed `reset`.
async fn timed<F: AsyncFn()>(fixture: &Fixture, iters: u64, ledger: &str, work: F) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        fixture.reset().await;
        drop_ledger(fixture.db(), ledger).await;
        let start = Instant::now();
        work().await;
        total += start.elapsed();
    }
    total
}

fn add_columns(c: &mut Criterion, rt: &Runtime, fixtures: &[(usize, Fixture)]) {
    let mut group = c.benchmark_group("add_3_columns");
    // Seconds per iteration at 1M rows: ten flat samples of one iteration.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    for (rows, fixture) in fixtures {
        group.bench_with_input(
            BenchmarkId::new("raw_add_columns", rows),
            fixture,
            |b, f| {
                b.to_async(rt).iter_custom(|iters| {
                    timed(f, iters, "unused", || raw_add_three_columns(&f.table))
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("migrator", rows), fixture, |b, f| {
            b.to_async(rt).iter_custom(|iters| {
                timed(f, iters, "bench_ledger", async || {
                    let m = Migrator::new(f.db().clone()).ledger_table("bench_ledger");
                    let report = m.add(three_columns("0001")).run().await.unwrap();
                    assert_eq!(report.applied().count(), 1);
                })
            });
        });
        // The usual case in an application's life: the database already
        // has a ledger (here holding one earlier migration of another
        // table), so the run opens it instead of creating it.
        let earlier = rt.block_on(LaterLedger::new(fixture));
        group.bench_with_input(
            BenchmarkId::new("migrator_existing_ledger", rows),
            fixture,
            |b, f| {
                let earlier = &earlier;
                b.to_async(rt).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        f.reset().await;
                        earlier.reset().await;
                        let start = Instant::now();
                        let m = Migrator::new(f.db().clone())
                            .ledger_table(LaterLedger::NAME)
                            .add(LaterLedger::migration())
                            .add(three_columns("0001"));
                        let report = m.run().await.unwrap();
                        assert_eq!(report.applied().count(), 1);
                        total += start.elapsed();
                    }
                    total
                });
            },
        );
    }
    group.finish();
}

/// A ledger holding one applied migration (of a small side table),
/// created afresh before each iteration (untimed), so it has the few
/// versions a real ledger has rather than piling up one per iteration.
struct LaterLedger {
    db: Connection,
    side: Table,
    side_base: Backup,
}

impl LaterLedger {
    const NAME: &str = "later_ledger";

    fn migration() -> AddColumns {
        AddColumns::new("0000_side", "side").column(NewColumn::new("note", DataType::Utf8))
    }

    async fn new(fixture: &Fixture) -> Self {
        let db = fixture.db().clone();
        let _ = db.drop_table("side", &[]).await;
        let side = testing::documents_table(&db, "side", 10, DIMS)
            .await
            .unwrap();
        let version = side.version().await.unwrap();
        side.tags()
            .await
            .unwrap()
            .create("side_base", version)
            .await
            .unwrap();
        let side_base = Backup::new("side", version, "side_base");
        Self {
            db,
            side,
            side_base,
        }
    }

    async fn reset(&self) {
        drop_ledger(&self.db, Self::NAME).await;
        self.side_base.restore(&self.side).await.unwrap();
        let m = Migrator::new(self.db.clone()).ledger_table(Self::NAME);
        m.add(Self::migration()).run().await.unwrap();
    }
}

fn noop_startup(c: &mut Criterion, rt: &Runtime, fixtures: &[(usize, Fixture)]) {
    let mut group = c.benchmark_group("noop_startup");
    for (rows, fixture) in fixtures {
        let migrator = Migrator::new(fixture.db().clone())
            .ledger_table("noop_ledger")
            .add(three_columns("0001"))
            .add(AddColumns::new("0002", TABLE).column(NewColumn::new("note", DataType::Utf8)))
            .add(AddColumns::new("0003", TABLE).column(NewColumn::new("score", DataType::Float32)));
        rt.block_on(async {
            fixture.reset().await;
            drop_ledger(fixture.db(), "noop_ledger").await;
            migrator.run().await.unwrap();
        });
        group.bench_with_input(
            BenchmarkId::new("raw_open_and_schema", rows),
            fixture,
            |b, f| {
                b.to_async(rt).iter(|| async {
                    let table = f.db().open_table(TABLE).execute().await.unwrap();
                    table.schema().await.unwrap();
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("migrator_run", rows), &migrator, |b, m| {
            b.to_async(rt)
                .iter(|| async { assert!(m.run().await.unwrap().is_noop()) });
        });
    }
    group.finish();
}

fn rollback(c: &mut Criterion, rt: &Runtime, fixtures: &[(usize, Fixture)]) {
    let mut group = c.benchmark_group("rollback_restore");
    for (rows, fixture) in fixtures {
        // The change to undo is a metadata-only column add, so that the
        // untimed setup stays cheap however many iterations criterion runs;
        // restore costs the same whatever the change was.
        let change = async |f: &Fixture| {
            f.reset().await;
            let field = arrow_schema::Field::new("scratch", DataType::Utf8, true);
            let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![field]));
            let all_nulls = NewColumnTransform::AllNulls(schema);
            f.table
                .add_columns()
                .transform(all_nulls)
                .execute()
                .await
                .unwrap();
        };
        group.bench_with_input(
            BenchmarkId::new("raw_checkout_restore", rows),
            fixture,
            |b, f| {
                b.to_async(rt).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        change(f).await;
                        let start = Instant::now();
                        f.table.checkout_tag(BASE_TAG).await.unwrap();
                        f.table.restore().await.unwrap();
                        total += start.elapsed();
                    }
                    total
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("backup_restore", rows), fixture, |b, f| {
            b.to_async(rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    change(f).await;
                    let start = Instant::now();
                    f.base.restore(&f.table).await.unwrap();
                    total += start.elapsed();
                }
                total
            });
        });
    }
    group.finish();
}

/// What a hand-written script does to re-embed: one `add_columns` that runs
/// the embedder over `text` in batches and writes a new column.
async fn raw_reembed(table: &Table, model: &TestEmbedding) {
    use lancedb::embeddings::EmbeddingFunction;
    let model = model.clone();
    let field = arrow_schema::Field::new("vector_new", testing::vector_type(768), true);
    let output_schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![field]));
    let out = output_schema.clone();
    let mapper = move |batch: &arrow_array::RecordBatch| {
        let vectors = model
            .compute_source_embeddings(batch.column(0).clone())
            .map_err(|e| lance::Error::invalid_input(e.to_string()))?;
        Ok(arrow_array::RecordBatch::try_new(
            out.clone(),
            vec![vectors],
        )?)
    };
    let udf = lance::dataset::BatchUDF {
        mapper: Box::new(mapper),
        output_schema,
        result_checkpoint: None,
    };
    table
        .add_columns()
        .transform(NewColumnTransform::BatchUDF(udf))
        .read_columns(vec!["text".to_owned()])
        .execute()
        .await
        .unwrap();
}

fn reembed(c: &mut Criterion, rt: &Runtime, fixtures: &[(usize, Fixture)]) {
    let mut group = c.benchmark_group("reembed_384_to_768");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    // The smallest size only: re-embedding writes 3 KB a row.
    for (rows, fixture) in fixtures.iter().take(1) {
        let model = TestEmbedding::new("test-768", 768);
        group.throughput(criterion::Throughput::Elements(*rows as u64));
        group.bench_with_input(
            BenchmarkId::new("raw_add_columns_udf", rows),
            fixture,
            |b, f| {
                b.to_async(rt).iter_custom(|iters| {
                    timed(f, iters, "unused", || raw_reembed(&f.table, &model))
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("migrator", rows), fixture, |b, f| {
            b.to_async(rt).iter_custom(|iters| {
                timed(f, iters, "bench_ledger", async || {
                    let m = ReEmbed::new("0002", TABLE, Arc::new(model.clone()));
                    let migrator = Migrator::new(f.db().clone()).ledger_table("bench_ledger");
                    let report = migrator.add(m).run().await.unwrap();
                    assert_eq!(report.applied().count(), 1);
                })
            });
        });
    }
    group.finish();
}

fn ivf_pq() -> lancedb::index::Index {
    let builder = lancedb::index::vector::IvfPqIndexBuilder::default()
        .num_partitions(128)
        .num_sub_vectors(48);
    lancedb::index::Index::IvfPq(builder)
}

fn index_rebuild(c: &mut Criterion, rt: &Runtime, fixtures: &[(usize, Fixture)]) {
    let mut group = c.benchmark_group("index_rebuild_ivf_pq");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    for (rows, fixture) in fixtures.iter().take(1) {
        group.bench_with_input(
            BenchmarkId::new("raw_create_index", rows),
            fixture,
            |b, f| {
                b.to_async(rt).iter_custom(|iters| {
                    timed(f, iters, "unused", async || {
                        f.table
                            .create_index(&["vector"], ivf_pq())
                            .replace(true)
                            .execute()
                            .await
                            .unwrap();
                    })
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("migrator", rows), fixture, |b, f| {
            b.to_async(rt).iter_custom(|iters| {
                timed(f, iters, "bench_ledger", async || {
                    // The fixture's vectors are uniform noise, on which PQ
                    // recall is low; the recall check's cost is the same
                    // whatever the threshold.
                    let m = RebuildIndex::new("0004", TABLE, "vector", ivf_pq()).min_recall(0.0);
                    let migrator = Migrator::new(f.db().clone()).ledger_table("bench_ledger");
                    let report = migrator.add(m).run().await.unwrap();
                    assert_eq!(report.applied().count(), 1);
                })
            });
        });
    }
    group.finish();
}

/// Rows of the index-recreation fixture (`LANCEDB_MIGRATE_BENCH_INDEX_ROWS`,
/// default 20 000): every timed iteration trains an index.
fn index_rows() -> usize {
    std::env::var("LANCEDB_MIGRATE_BENCH_INDEX_ROWS")
        .ok()
        .map(|n| n.trim().parse().expect("row count"))
        .unwrap_or(20_000)
}

/// Indexes with non-default parameters, each on its column: what the
/// default `rebuild` recreates after the column is replaced.
fn tuned_indexes() -> Vec<(&'static str, &'static str, lancedb::index::Index)> {
    use lancedb::DistanceType;
    use lancedb::index::Index;
    use lancedb::index::scalar::FtsIndexBuilder;
    use lancedb::index::vector::{IvfHnswSqIndexBuilder, IvfPqIndexBuilder};
    vec![
        (
            "ivf_pq",
            "vector",
            Index::IvfPq(
                IvfPqIndexBuilder::default()
                    .distance_type(DistanceType::Cosine)
                    .num_partitions(64)
                    .num_sub_vectors(48)
                    .max_iterations(30),
            ),
        ),
        (
            "ivf_hnsw_sq",
            "vector",
            Index::IvfHnswSq(
                IvfHnswSqIndexBuilder::default()
                    .num_partitions(16)
                    .num_edges(16)
                    .ef_construction(150),
            ),
        ),
        (
            "fts_french_positions",
            "text",
            Index::FTS(
                FtsIndexBuilder::default()
                    .language("French")
                    .unwrap()
                    .with_position(true),
            ),
        ),
    ]
}

/// Replaces `column` by a copy of itself (add a copy, drop the original
/// with its index, rename the copy): the default `rebuild` recreates the
/// index from what Lance recorded of it.
#[derive(Debug)]
struct ReplaceColumn(&'static str);

#[lancedb_migrate::async_trait]
impl lancedb_migrate::Migration for ReplaceColumn {
    fn id(&self) -> &str {
        "0005_replace"
    }
    fn table(&self) -> &str {
        TABLE
    }
    async fn transform(
        &self,
        ctx: &lancedb_migrate::MigrationContext,
    ) -> lancedb_migrate::Result<()> {
        let copy = format!("{}__copy", self.0);
        let table = ctx.table();
        let sql = vec![(copy.clone(), self.0.to_owned())];
        table
            .add_columns()
            .transform(NewColumnTransform::SqlExpressions(sql))
            .execute()
            .await?;
        table.drop_columns(&[self.0]).await?;
        let rename = lancedb::table::ColumnAlteration::new(copy).rename(self.0.to_owned());
        table.alter_columns(&[rename]).await?;
        Ok(())
    }
    async fn verify(&self, ctx: &lancedb_migrate::MigrationContext) -> lancedb_migrate::Result<()> {
        ctx.check_row_count().await?;
        // Coverage and parameters; the fixture's uniform-noise vectors
        // give low recall whatever the index, so recall is not required.
        ctx.check_indexes_with(lancedb_migrate::MigrationContext::RECALL_SAMPLE, 0.0)
            .await
    }
}

/// The default `rebuild` recreating a tuned index after its column was
/// replaced (the rebuild phase of the report: reading the index's
/// parameters at the version before, building it), against one direct
/// `create_index` with the same parameters on the same rows.
fn index_recreate(c: &mut Criterion, rt: &Runtime) {
    let rows = index_rows();
    let mut group = c.benchmark_group("index_recreate");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    for (label, column, index) in tuned_indexes() {
        let fixture = rt.block_on(async {
            let tmp = TempDb::new().await.unwrap();
            let table = testing::documents_table(tmp.db(), TABLE, rows, DIMS)
                .await
                .unwrap();
            table
                .create_index(&[column], index.clone())
                .name("tuned_idx".to_owned())
                .execute()
                .await
                .unwrap();
            Fixture::tagged(tmp, table).await
        });
        let raw = index.clone();
        group.bench_function(
            BenchmarkId::new(format!("{label}/raw_create_index"), rows),
            |b| {
                b.to_async(rt).iter_custom(|iters| {
                    timed(&fixture, iters, "unused", async || {
                        fixture
                            .table
                            .create_index(&[column], raw.clone())
                            .name("tuned_idx".to_owned())
                            .replace(true)
                            .execute()
                            .await
                            .unwrap();
                    })
                });
            },
        );
        group.bench_function(
            BenchmarkId::new(format!("{label}/migrator_rebuild"), rows),
            |b| {
                let fixture = &fixture;
                b.to_async(rt).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        fixture.reset().await;
                        drop_ledger(fixture.db(), "bench_ledger").await;
                        let report = Migrator::new(fixture.db().clone())
                            .ledger_table("bench_ledger")
                            .add(ReplaceColumn(column))
                            .run()
                            .await
                            .unwrap();
                        let migration = &report.migrations()[0];
                        assert_eq!(migration.details["indexes_recreated"], "tuned_idx");
                        total += migration
                            .phases
                            .iter()
                            .find(|p| p.phase == lancedb_migrate::Phase::Rebuild)
                            .expect("a rebuild phase")
                            .duration;
                    }
                    total
                });
            },
        );
    }
    group.finish();
}

/// Real sentences, deterministic: `i` picks one of 10 000 combinations.
fn sentence(i: usize) -> String {
    const WHO: [&str; 10] = [
        "The old fisherman",
        "A young engineer",
        "My neighbour",
        "The city council",
        "Our teacher",
        "A tired nurse",
        "The small startup",
        "The museum guide",
        "A famous chef",
        "The night watchman",
    ];
    const DID: [&str; 10] = [
        "repaired",
        "described",
        "photographed",
        "sold",
        "painted",
        "explained",
        "ignored",
        "celebrated",
        "measured",
        "rebuilt",
    ];
    const WHAT: [&str; 10] = [
        "the wooden bridge",
        "a broken radio",
        "the harbour lights",
        "an ancient map",
        "the school garden",
        "a red bicycle",
        "the public library",
        "a stone fountain",
        "the mountain trail",
        "a vintage camera",
    ];
    const WHEN: [&str; 10] = [
        "before the storm arrived.",
        "during the summer festival.",
        "with remarkable patience.",
        "for the local newspaper.",
        "after a long winter.",
        "in front of a small crowd.",
        "without asking for help.",
        "on a quiet Sunday morning.",
        "to everyone's surprise.",
        "despite the heavy rain.",
    ];
    let i = i % 10_000;
    format!(
        "{} {} {} {}",
        WHO[i % 10],
        DID[i / 10 % 10],
        WHAT[i / 100 % 10],
        WHEN[i / 1000]
    )
}

/// A table of `texts` (ids from 0) with placeholder 384-d vectors, tagged.
async fn sentences_fixture(texts: &[String]) -> Fixture {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use lancedb::embeddings::EmbeddingFunction;

    let tmp = TempDb::new().await.unwrap();
    let text: ArrayRef = Arc::new(StringArray::from(texts.to_vec()));
    let placeholder = TestEmbedding::new("placeholder", DIMS);
    let batch = RecordBatch::try_new(
        testing::documents_schema(DIMS),
        vec![
            Arc::new(Int64Array::from_iter_values(0..texts.len() as i64)),
            text.clone(),
            placeholder.compute_source_embeddings(text).unwrap(),
        ],
    )
    .unwrap();
    let table = tmp.db().create_table(TABLE, batch).execute().await.unwrap();
    Fixture::tagged(tmp, table).await
}

/// Re-embedding with the real model: the model alone over the same texts
/// (sequential calls of the migration's batch size) against the `ReEmbed`
/// migration (read, embed, write, verify, ledger), on a table of
/// `LANCEDB_MIGRATE_MINILM_ROWS` (default 2000) sentences.
///
/// Opt-in, since it takes ~5 minutes here on its own: it runs when the
/// benchmark filter names it (`-- minilm`) or `LANCEDB_MIGRATE_BENCH_MINILM`
/// is set, so that the default suite stays under 15 minutes.
fn minilm(c: &mut Criterion, rt: &Runtime) {
    use arrow_array::{Array as _, ArrayRef, StringArray};
    use lancedb::embeddings::EmbeddingFunction;
    use lancedb_migrate::embeddings::minilm::SentenceTransformer;

    let asked = std::env::var_os("LANCEDB_MIGRATE_BENCH_MINILM").is_some()
        || std::env::args().skip(1).any(|a| a.contains("minilm"));
    if !asked {
        eprintln!(
            "minilm_reembed: not run by default (~5 min); `-- minilm` or LANCEDB_MIGRATE_BENCH_MINILM=1 runs it"
        );
        return;
    }
    let dir = lancedb_migrate::embeddings::minilm::default_model_dir();
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "minilm_reembed: SKIPPED, all-MiniLM-L6-v2 not fetched (scripts/fetch-minilm.sh)"
        );
        return;
    }
    let rows: usize = std::env::var("LANCEDB_MIGRATE_MINILM_ROWS")
        .map_or(2000, |n| n.trim().parse().expect("row count"));
    let model = Arc::new(
        SentenceTransformer::from_dir(dir)
            .unwrap()
            .named("all-MiniLM-L6-v2"),
    );
    let texts: Vec<String> = (0..rows).map(sentence).collect();
    let fixture = rt.block_on(sentences_fixture(&texts));

    let mut group = c.benchmark_group("minilm_reembed");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    group.throughput(criterion::Throughput::Elements(rows as u64));
    let batch_size = ReEmbed::DEFAULT_BATCH_SIZE as usize;
    group.bench_function(BenchmarkId::new("model_only", rows), |b| {
        b.iter(|| {
            for chunk in texts.chunks(batch_size) {
                let array: ArrayRef = Arc::new(StringArray::from(chunk.to_vec()));
                let vectors = model.compute_source_embeddings(array).unwrap();
                assert_eq!(vectors.len(), chunk.len());
            }
        });
    });
    // The same calls on as many threads as `ReEmbed` runs at once (its
    // default `concurrency`, the CPU count): one call does not keep every
    // core busy, so this is the model-only time the migration is held to.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    group.bench_function(
        BenchmarkId::new(format!("model_only_{threads}_threads"), rows),
        |b| {
            b.iter(|| {
                let next = std::sync::atomic::AtomicUsize::new(0);
                let chunks: Vec<&[String]> = texts.chunks(batch_size).collect();
                std::thread::scope(|scope| {
                    for _ in 0..threads {
                        scope.spawn(|| {
                            loop {
                                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let Some(chunk) = chunks.get(i) else { break };
                                let array: ArrayRef = Arc::new(StringArray::from(chunk.to_vec()));
                                let vectors = model.compute_source_embeddings(array).unwrap();
                                assert_eq!(vectors.len(), chunk.len());
                            }
                        });
                    }
                });
            });
        },
    );
    group.bench_function(BenchmarkId::new("migrator", rows), |b| {
        b.to_async(rt).iter_custom(|iters| {
            timed(&fixture, iters, "bench_ledger", async || {
                let m = ReEmbed::new("0002", TABLE, model.clone());
                let migrator = Migrator::new(fixture.db().clone()).ledger_table("bench_ledger");
                let report = migrator.add(m).run().await.unwrap();
                assert_eq!(report.applied().count(), 1);
            })
        });
    });
    group.finish();
}

/// Re-embedding through an embedding service: the crate's test server
/// ([`testing::EmbeddingServer`], speaking OpenAI `/v1/embeddings`) on
/// `LANCEDB_MIGRATE_REMOTE_ROWS` (default 2000) sentences, with two models
/// behind it:
///
/// - `remote_reembed_minilm`: all-MiniLM-L6-v2, computed on the same CPU
///   as the migration (skipped without the model files);
/// - `remote_reembed_latency`: a service bound by latency, not by this
///   machine's CPU, as a GPU service elsewhere is: every request takes
///   50 ms (`TestEmbedding::delay`), so what the client does is what is
///   measured.
///
/// A plain load generator (reqwest, the same requests of 32 texts, the same
/// number in flight) measures what the server can do; `ReEmbed` with
/// `RemoteEmbedding` does the whole migration (read, embed, write, verify,
/// ledger) against it. Target: ≥ 90% of the load generator's throughput.
///
/// Opt-in like `minilm` (`-- remote`, or `LANCEDB_MIGRATE_BENCH_REMOTE`).
fn remote(c: &mut Criterion, rt: &Runtime) {
    use lancedb::embeddings::EmbeddingFunction;
    use lancedb_migrate::embeddings::minilm::SentenceTransformer;

    let asked = std::env::var_os("LANCEDB_MIGRATE_BENCH_REMOTE").is_some()
        || std::env::args().skip(1).any(|a| a.contains("remote"));
    if !asked {
        eprintln!(
            "remote_reembed: not run by default; `-- remote` or LANCEDB_MIGRATE_BENCH_REMOTE=1 runs it"
        );
        return;
    }
    let rows: usize = std::env::var("LANCEDB_MIGRATE_REMOTE_ROWS")
        .map_or(2000, |n| n.trim().parse().expect("row count"));
    let in_flight: usize = std::env::var("LANCEDB_MIGRATE_REMOTE_IN_FLIGHT")
        .map_or(2, |n| n.trim().parse().expect("requests in flight"));
    let texts: Vec<String> = (0..rows).map(sentence).collect();
    let fixture = rt.block_on(sentences_fixture(&texts));
    let latency = TestEmbedding::new("latency-bound", DIMS).delay(Duration::from_millis(50));
    let mut models: Vec<(&str, Arc<dyn EmbeddingFunction>)> =
        vec![("remote_reembed_latency", Arc::new(latency))];
    let dir = lancedb_migrate::embeddings::minilm::default_model_dir();
    if dir.join("model.safetensors").is_file() {
        let minilm = SentenceTransformer::from_dir(dir).unwrap();
        models.insert(0, ("remote_reembed_minilm", Arc::new(minilm)));
    } else {
        eprintln!(
            "remote_reembed_minilm: SKIPPED, all-MiniLM-L6-v2 not fetched (scripts/fetch-minilm.sh)"
        );
    }
    for (name, model) in models {
        remote_pair(c, rt, name, model, &texts, &fixture, in_flight);
    }
}

/// The load generator and the migration against one server.
fn remote_pair(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    model: Arc<dyn lancedb::embeddings::EmbeddingFunction>,
    texts: &[String],
    fixture: &Fixture,
    in_flight: usize,
) {
    use futures::StreamExt;
    use lancedb_migrate::embeddings::RemoteEmbedding;
    use lancedb_migrate::testing::EmbeddingServer;

    const PER_REQUEST: usize = 32;
    let rows = texts.len();
    let server = EmbeddingServer::start(model).unwrap();
    let url = format!("{}/embeddings", server.base_url());
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    group.throughput(criterion::Throughput::Elements(rows as u64));
    let client = reqwest::Client::new();
    group.bench_function(
        BenchmarkId::new(format!("load_generator_{in_flight}_in_flight"), rows),
        |b| {
            b.to_async(rt).iter(|| async {
                let requests = texts.chunks(PER_REQUEST).map(|chunk| {
                    let body = serde_json::json!({"model": "m", "input": chunk});
                    let request = client.post(&url).json(&body);
                    async move {
                        let answer: serde_json::Value =
                            request.send().await.unwrap().json().await.unwrap();
                        assert_eq!(answer["data"].as_array().unwrap().len(), chunk.len());
                    }
                });
                futures::stream::iter(requests)
                    .buffer_unordered(in_flight)
                    .collect::<Vec<()>>()
                    .await;
            });
        },
    );
    let remote = Arc::new(
        RemoteEmbedding::builder("m")
            .base_url(server.base_url())
            .no_api_key()
            .dimension(DIMS)
            .max_batch_texts(PER_REQUEST)
            .max_in_flight(in_flight)
            .build()
            .unwrap(),
    );
    group.bench_function(BenchmarkId::new("migrator", rows), |b| {
        b.to_async(rt).iter_custom(|iters| {
            timed(fixture, iters, "bench_ledger", async || {
                let m = ReEmbed::new("0002", TABLE, remote.clone()).concurrency(in_flight);
                let migrator = Migrator::new(fixture.db().clone()).ledger_table("bench_ledger");
                let report = migrator.add(m).run().await.unwrap();
                assert_eq!(report.applied().count(), 1);
            })
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    // First: its fixtures are small, and the later groups build theirs
    // (up to a million rows, trained indexes) even when filtered out.
    rolling::rolling(c, &rt);
    let fixtures: Vec<_> = sizes()
        .into_iter()
        .map(|rows| (rows, rt.block_on(Fixture::new(rows))))
        .collect();
    add_columns(c, &rt, &fixtures);
    declare::declare(c, &rt, &fixtures);
    declare::plan_50_columns(c, &rt);
    noop_startup(c, &rt, &fixtures);
    rollback(c, &rt, &fixtures);
    reembed(c, &rt, &fixtures);
    index_rebuild(c, &rt, &fixtures);
    index_recreate(c, &rt);
    minilm(c, &rt);
    remote(c, &rt);
    object_storage(c, &rt);
}

/// A table of 10,000 rows in a bucket of the S3 server, answering each
/// request after `delay`.
async fn s3_fixture(s3: &s3::S3, delay: Duration) -> (Connection, Table, Backup) {
    let bucket = s3.fresh_bucket("bench");
    let db = s3.connect(&format!("s3://{bucket}/db")).await;
    let table = testing::documents_table(&db, TABLE, 10_000, DIMS)
        .await
        .unwrap();
    let base = tag_base(&table).await;
    s3.configure(&bucket, false, delay);
    (db, table, base)
}

/// Tags `table`'s current version as the state each iteration starts from.
async fn tag_base(table: &Table) -> Backup {
    let version = table.version().await.unwrap();
    table
        .tags()
        .await
        .unwrap()
        .create(BASE_TAG, version)
        .await
        .unwrap();
    Backup::new(TABLE, version, BASE_TAG)
}

/// No-op start and one `AddColumns` on the S3 server against the plain
/// LanceDB calls, without and with a fixed delay per request: what the
/// crate's requests cost where each one is a network round trip. Request
/// counts are in the test `s3_store::requests_of_a_noop_start_and_of_one_migration`.
fn object_storage(c: &mut Criterion, rt: &Runtime) {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Some(s3) = s3::S3::from_env("the s3_ benchmarks") else {
        return;
    };
    for delay_ms in [0u64, 20] {
        let delay = Duration::from_millis(delay_ms);
        let (db, table, base) = rt.block_on(s3_fixture(&s3, delay));
        let mut group = c.benchmark_group(format!("s3_{delay_ms}ms_per_request"));
        group.sample_size(10);
        group.sampling_mode(SamplingMode::Flat);
        let migrator = Migrator::new(db.clone()).add(three_columns("0001"));
        rt.block_on(async { migrator.run().await.unwrap() });
        group.bench_function("noop_startup/raw_open_and_schema", |b| {
            b.to_async(rt).iter(|| async {
                let table = db.open_table(TABLE).execute().await.unwrap();
                table.schema().await.unwrap();
            });
        });
        group.bench_function("noop_startup/migrator_run", |b| {
            b.to_async(rt)
                .iter(|| async { assert!(migrator.run().await.unwrap().is_noop()) });
        });
        group.bench_function("add_3_columns/raw_add_columns", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (table, base) = (table.clone(), base.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        base.restore(&table).await.unwrap();
                        let start = Instant::now();
                        raw_add_three_columns(&table).await;
                        total += start.elapsed();
                    }
                    total
                }
            });
        });
        group.bench_function("add_3_columns/migrator", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (db, table, base) = (db.clone(), table.clone(), base.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        base.restore(&table).await.unwrap();
                        // A steady deployment: the ledger stays (and is
                        // compacted by each run); each iteration is a new
                        // migration.
                        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let m = Migrator::new(db.clone())
                            .ledger_table("s3_ledger")
                            .add(three_columns(&format!("{id:06}_category")));
                        let start = Instant::now();
                        m.run().await.unwrap();
                        total += start.elapsed();
                    }
                    total
                }
            });
        });
        group.finish();
    }
}

criterion_group!(migrate, benches);
criterion_main!(migrate);
