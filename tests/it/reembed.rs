//! `ReEmbed` on real LanceDB tables: the seed scenario, bad input, appends
//! while it runs, and a process killed mid-run that the next run resumes.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use lancedb::Table;
use lancedb_migrate::testing::{self, Snapshot, TempDb, TestEmbedding};
use lancedb_migrate::{
    AddColumns, DefaultValue, EmbeddingProblem, Error, Migrator, NewColumn, ReEmbed, Rollback,
};

use crate::support::{Place, failure, field_names, kill_at, rows, sorted_ids, tags, version};

const DB_ENV: &str = "LANCEDB_MIGRATE_REEMBED_CHILD_DB";
const LOG_ENV: &str = "LANCEDB_MIGRATE_REEMBED_CHILD_LOG";

/// A table of `fragments × per_fragment` documents with 384-d vectors, one
/// fragment per append.
async fn table(db: &lancedb::Connection, fragments: i64, per_fragment: i64) -> Table {
    let table = testing::documents_table(db, "docs", per_fragment as usize, 384)
        .await
        .unwrap();
    for f in 1..fragments {
        let ids = f * per_fragment..(f + 1) * per_fragment;
        table
            .add(testing::documents_batch(ids, 384))
            .execute()
            .await
            .unwrap();
    }
    table
}

/// Every row's `vector` must be the 768-d test embedding of its text.
pub(crate) async fn assert_reembedded(table: &Table, dims: usize) -> usize {
    let batches = rows(table, &["text", "vector"]).await;
    let mut rows = 0;
    for batch in &batches {
        let texts = batch.column(0).as_string::<i32>();
        let vectors = batch.column(1).as_fixed_size_list();
        assert_eq!(vectors.value_length() as usize, dims);
        assert_eq!(vectors.null_count(), 0, "no row lacks a vector");
        for i in 0..batch.num_rows() {
            let got = vectors.value(i);
            let got = got.as_primitive::<Float32Type>().values();
            let want = TestEmbedding::vector(texts.value(i), dims);
            assert_eq!(got, &want[..], "vector of {:?}", texts.value(i));
        }
        rows += batch.num_rows();
    }
    rows
}

fn reembed(model: &TestEmbedding) -> ReEmbed {
    ReEmbed::new("0002_reembed", "docs", Arc::new(model.clone()))
        .verify_sample(16)
        .batch_size(64)
        .concurrency(2)
}

#[tokio::test]
async fn seed_scenario_384_to_768_with_model_columns() {
    let db = testing::memory_db().await.unwrap();
    let table = table(&db, 4, 250).await;
    let before = Snapshot::take(&table, "id").await.unwrap();
    let model = TestEmbedding::new("test-768", 768);
    let migrator = || {
        Migrator::new(db.clone()).add(reembed(&model)).add(
            AddColumns::new("0003_model_columns", "docs")
                .column(NewColumn::new("embedding_model", DataType::Utf8).default_value("test-768"))
                .column(
                    NewColumn::new(
                        "migrated_at",
                        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    )
                    .default_value(DefaultValue::MigrationTime),
                ),
        )
    };
    let report = migrator().run().await.unwrap();
    assert_eq!(report.applied().count(), 2);
    table.checkout_latest().await.unwrap();

    // Same columns, same order; the vector column is now 768-d.
    let schema = table.schema().await.unwrap();
    assert_eq!(
        field_names(&schema),
        ["id", "text", "vector", "embedding_model", "migrated_at"]
    );
    let vector = schema.field_with_name("vector").unwrap();
    assert_eq!(vector.data_type(), &testing::vector_type(768));
    assert_eq!(
        vector.metadata().get(ReEmbed::MODEL_KEY).unwrap(),
        "test-768"
    );

    assert_eq!(assert_reembedded(&table, 768).await, 1000);
    // Each row once, plus the 16 rows `verify` re-embeds to compare.
    assert_eq!(
        model.embedded(),
        1000 + 16,
        "each row embedded exactly once"
    );
    let after = Snapshot::take(&table, "id").await.unwrap();
    after.assert_same_columns(&before, &["id", "text"]);
    let models = after.column("embedding_model").as_string::<i32>();
    assert!(models.iter().all(|m| m == Some("test-768")));

    // The model is in the ledger and the report.
    let entry = &report.migrations()[0];
    assert_eq!(entry.details.get("model").unwrap(), "test-768");
    assert_eq!(entry.details.get("dimension").unwrap(), "768");
    let ledger = migrator().ledger().await.unwrap();
    assert_eq!(ledger[0].details.get("model").unwrap(), "test-768");
    assert_eq!(ledger[0].details.get("rows_embedded").unwrap(), "1000");

    // A second start changes nothing and embeds nothing.
    let v = version(&table).await;
    let again = migrator().run().await.unwrap();
    assert_eq!(again.applied().count(), 0);
    assert_eq!(version(&table).await, v);
    assert_eq!(model.embedded(), 1016);
}

#[tokio::test]
async fn same_dimension_model_swap_and_new_column() {
    let db = testing::memory_db().await.unwrap();
    let table = table(&db, 2, 100).await;
    let model = TestEmbedding::new("other-384", 384);
    Migrator::new(db.clone())
        .add(reembed(&model))
        .add(
            ReEmbed::new(
                "0003_second_vector",
                "docs",
                Arc::new(TestEmbedding::new("small", 16)),
            )
            .target_column("vector_small"),
        )
        .run()
        .await
        .unwrap();
    assert_eq!(assert_reembedded(&table, 384).await, 200);
    let schema = table.schema().await.unwrap();
    assert_eq!(
        field_names(&schema),
        ["id", "text", "vector", "vector_small"]
    );
    let batches = rows(&table, &["text", "vector_small"]).await;
    for batch in &batches {
        let texts = batch.column(0).as_string::<i32>();
        let vectors = batch.column(1).as_fixed_size_list();
        for i in 0..batch.num_rows() {
            let got = vectors.value(i);
            assert_eq!(
                got.as_primitive::<Float32Type>().values(),
                &TestEmbedding::vector(texts.value(i), 16)[..]
            );
        }
    }
}

/// Bad embedder output fails with a typed error and leaves the table as it
/// was.
#[tokio::test]
async fn bad_embedder_output_restores_the_table() {
    type Expected = fn(&EmbeddingProblem) -> bool;
    let cases: Vec<(TestEmbedding, Expected)> = vec![
        (TestEmbedding::new("m", 768).wrong_dimension(512), |p| {
            matches!(
                p,
                EmbeddingProblem::WrongDimension {
                    expected: 768,
                    actual: 512
                }
            )
        }),
        (TestEmbedding::new("m", 768).drop_a_row(), |p| {
            matches!(p, EmbeddingProblem::WrongRowCount { .. })
        }),
        (
            TestEmbedding::new("m", 768).nan_for("document 321:"),
            |p| matches!(p, EmbeddingProblem::NotFinite { text } if text.starts_with("document 321:")),
        ),
        (TestEmbedding::new("m", 768).fail_after(300), |p| {
            matches!(p, EmbeddingProblem::Failed(_))
        }),
    ];
    for (model, expected) in cases {
        let db = testing::memory_db().await.unwrap();
        let table = table(&db, 3, 200).await;
        let before = Snapshot::take(&table, "id").await.unwrap();
        let schema_before = table.schema().await.unwrap();
        let err = Migrator::new(db.clone())
            .add(reembed(&model).checkpoint_every(Duration::ZERO))
            .run()
            .await
            .unwrap_err();
        let (cause, _, rollback) = failure(&err);
        match cause {
            Error::Embedding {
                model: name,
                problem,
            } => {
                assert_eq!(name, "m");
                assert!(expected(problem), "{model:?}: unexpected {problem:?}");
            }
            other => panic!("{model:?}: expected Error::Embedding, got {other:?}"),
        }
        assert!(
            matches!(rollback, Rollback::Restored { .. }),
            "{rollback:?}"
        );
        table.checkout_latest().await.unwrap();
        assert_eq!(table.schema().await.unwrap(), schema_before, "{model:?}");
        let after = Snapshot::take(&table, "id").await.unwrap();
        after.assert_same_columns(&before, &["id", "text", "vector"]);
    }
}

#[tokio::test]
async fn bad_columns_are_refused_before_anything_is_written() {
    let db = testing::memory_db().await.unwrap();
    let table = table(&db, 1, 50).await;
    let v = version(&table).await;
    let model = Arc::new(TestEmbedding::new("m", 8));
    let run = |m: ReEmbed| {
        let db = db.clone();
        async move { Migrator::new(db).add(m).run().await.unwrap_err() }
    };

    let err = run(ReEmbed::new("a", "docs", model.clone()).source_column("body")).await;
    assert!(matches!(failure(&err).0, Error::ColumnNotFound { column, .. } if column == "body"));

    let err = run(ReEmbed::new("b", "docs", model.clone()).source_column("id")).await;
    assert!(
        matches!(failure(&err).0, Error::ColumnType { column, found: DataType::Int64, .. } if column == "id")
    );

    let err = run(ReEmbed::new("c", "docs", model.clone()).target_column("id")).await;
    assert!(matches!(failure(&err).0, Error::ColumnType { column, .. } if column == "id"));

    let err = run(ReEmbed::new("d", "nope", model.clone())).await;
    assert!(matches!(failure(&err).0, Error::TableNotFound { .. }));

    assert_eq!(version(&table).await, v, "nothing was written");
    assert!(tags(&table).await.is_empty(), "no backup was taken");
}

/// Rows the application appends while the re-embed runs get new vectors
/// too.
#[tokio::test]
async fn rows_appended_while_running_are_embedded() {
    let tmp = TempDb::new().await.unwrap();
    let table = table(tmp.db(), 4, 100).await;
    // The embedder starts once the application has appended a batch: rows
    // are appended while it runs however fast the machine is.
    let appended_rows = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let first = appended_rows.clone();
    let model = crate::support::Hooked::new(
        TestEmbedding::new("slow", 768).delay(Duration::from_millis(40)),
        move |texts, inner| {
            use lancedb::embeddings::EmbeddingFunction as _;
            let started = std::time::Instant::now();
            while first.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                assert!(started.elapsed() < Duration::from_secs(120), "no append");
                std::thread::sleep(Duration::from_millis(5));
            }
            inner.compute_source_embeddings(texts)
        },
    );
    let db = tmp.db().clone();
    let migration = ReEmbed::new("0002_reembed", "docs", Arc::new(model))
        .verify_sample(16)
        .batch_size(64)
        .concurrency(2)
        .checkpoint_every(Duration::ZERO);
    let events = testing::EventLog::default();
    let observer = events.observer();
    let run = tokio::spawn(async move {
        Migrator::new(db)
            .on_event(observer)
            .add(migration)
            .run()
            .await
    });
    let app = tmp
        .connect()
        .await
        .unwrap()
        .open_table("docs")
        .execute()
        .await
        .unwrap();
    // At most 300 rows: an application appending without pause faster than
    // the embedder can keep up starves the migration (it catches up with
    // each new fragment before it can swap), which this test is not about.
    let mut appended = 0;
    while !run.is_finished() && appended < 300 {
        let start = 10_000 + appended;
        let batch = testing::documents_batch(start..start + 10, 384);
        app.checkout_latest().await.unwrap();
        if app.add(batch).execute().await.is_ok() {
            appended += 10;
            appended_rows.store(appended, std::sync::atomic::Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.await.unwrap().unwrap();
    assert!(appended > 0, "the application appended while it ran");
    let rows = assert_reembedded(&table, 768).await;
    assert_eq!(rows as i64, 400 + appended, "no appended row was lost");
    // The embedder's count runs on through the passes over appended rows
    // (and after the swap), not from zero at each.
    let texts = events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            lancedb_migrate::Event::Progress {
                embedding: Some(p), ..
            } => Some(p.texts),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert!(texts.is_sorted(), "texts embedded never go back: {texts:?}");
    assert_eq!(
        texts.last(),
        Some(&(rows as u64)),
        "every row's text was counted once"
    );
}

/// Entry point of the child process of the kill test; does nothing in a
/// normal test run. Logs each batch it embeds, so the parent can count the
/// work done by a process it killed.
#[tokio::test]
#[ignore = "entry point for the child process of the re-embed kill test"]
async fn child() {
    let Ok(path) = std::env::var(DB_ENV) else {
        return;
    };
    let log = std::env::var(LOG_ENV).unwrap();
    let db = crate::s3::connect(&path).await;
    let model = logging(
        TestEmbedding::new("test-768", 768).delay(Duration::from_millis(30)),
        log.into(),
    );
    Migrator::new(db)
        .add(logged_reembed(model))
        .run()
        .await
        .unwrap();
}

/// The migration the kill test's child and the resuming run both apply:
/// small batches, a checkpoint after every part.
fn logged_reembed(model: crate::support::Hooked) -> ReEmbed {
    ReEmbed::new("0002_reembed", "docs", Arc::new(model))
        .model("test-768")
        .batch_size(50)
        .concurrency(2)
        .checkpoint_every(Duration::ZERO)
}

/// `inner`, appending the number of texts of each call to `log`.
pub(crate) fn logging(inner: TestEmbedding, log: std::path::PathBuf) -> crate::support::Hooked {
    use lancedb::embeddings::EmbeddingFunction as _;
    crate::support::Hooked::new(inner, move |source, inner| {
        use std::io::Write;
        let out = inner.compute_source_embeddings(source.clone())?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // One `write` per line (O_APPEND): lines from the concurrent
        // embedding threads never interleave.
        f.write_all(format!("{}\n", source.len()).as_bytes())
            .unwrap();
        Ok(out)
    })
}

pub(crate) fn logged_rows(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        // A line still being written (no newline yet) is not counted.
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| l.parse::<u64>().unwrap())
        .sum()
}

/// A process killed (SIGKILL) mid-re-embed; the next run resumes and
/// finishes, embedding at most one checkpoint's worth of rows again.
#[tokio::test]
async fn killed_reembed_resumes_where_it_stopped() {
    killed_reembed(&Place::Local).await;
}

/// The same on the S3 server: the checkpoints are commits to the object
/// store, and the resume reads them back from it.
#[tokio::test(flavor = "multi_thread")]
async fn killed_reembed_resumes_where_it_stopped_on_s3() {
    if let Some((s3, _slot)) = Place::s3("killed_reembed_resumes_where_it_stopped_on_s3").await {
        killed_reembed(&s3).await;
    }
}

async fn killed_reembed(place: &Place) {
    let tmp = place.fresh();
    // Two large fragments (parts inside them) and two small ones.
    let table = testing::documents_table(&tmp.connect().await, "docs", 1200, 384)
        .await
        .unwrap();
    table
        .add(testing::documents_batch(1200..2400, 384))
        .execute()
        .await
        .unwrap();
    table
        .add(testing::documents_batch(2400..2500, 384))
        .execute()
        .await
        .unwrap();
    table
        .add(testing::documents_batch(2500..2600, 384))
        .execute()
        .await
        .unwrap();
    let log = tmp.scratch().join("embedded.log");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["reembed::child", "--exact", "--ignored", "--nocapture"])
        .env(DB_ENV, tmp.uri())
        .env(LOG_ENV, &log)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has done about half the table.
    kill_at(&mut child, || logged_rows(&log), 1300).await;
    let before_kill = logged_rows(&log);

    let model = logging(TestEmbedding::new("test-768", 768), log.clone());
    let report = Migrator::new(tmp.connect().await)
        .add(logged_reembed(model))
        // The killed process's lease is still live: wait it out and
        // continue the re-embed here (a re-embed does not block serving, so
        // the default policy would report it pending instead).
        .when_locked(lancedb_migrate::WhenLocked::Wait)
        .run()
        .await
        .unwrap();
    assert_eq!(report.applied().count(), 1);
    assert_eq!(assert_reembedded(&table, 768).await, 2600);
    let total = logged_rows(&log);
    let second = total - before_kill;
    // A checkpoint is at most `batch_size × concurrency` rows here; rows in
    // flight when the kill landed are at most one more.
    let redone = total - 2600;
    eprintln!(
        "killed after {before_kill} rows; the resumed run embedded {second}; {redone} embedded twice"
    );
    assert!(
        second < 2600 - 1000,
        "the second run resumed ({second} rows embedded)"
    );
    // The 16 rows `verify` re-embeds to compare are not redone work.
    assert!(redone - 16 <= 2 * 50, "{redone} rows were embedded twice");
    assert_eq!(
        sorted_ids(&table).await,
        (0..2600).collect::<Vec<_>>(),
        "no row lost or duplicated"
    );
}

/// A table whose `vector` is produced by a registered LanceDB embedding
/// function: after the re-embed, the table's embedding definition names the
/// new model, so the application's later `add`s (without vectors) get
/// new-model vectors.
#[tokio::test]
async fn embedding_definition_points_at_the_new_model() {
    use lancedb::embeddings::EmbeddingDefinition;
    let db = testing::memory_db().await.unwrap();
    let old = Arc::new(TestEmbedding::new("old-384", 384));
    let new = Arc::new(TestEmbedding::new("new-768", 768));
    db.embedding_registry().register("old-384", old).unwrap();
    db.embedding_registry()
        .register("new-768", new.clone())
        .unwrap();
    let texts = |ids: std::ops::Range<i64>| {
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("id", DataType::Int64, false),
            arrow_schema::Field::new("text", DataType::Utf8, false),
        ]));
        let id = arrow_array::Int64Array::from_iter_values(ids.clone());
        let text: arrow_array::StringArray = ids.map(|i| Some(testing::document_text(i))).collect();
        RecordBatch::try_new(schema, vec![Arc::new(id), Arc::new(text)]).unwrap()
    };
    let table = db
        .create_table("docs", texts(0..100))
        .add_embedding(EmbeddingDefinition::new("text", "old-384", Some("vector")))
        .unwrap()
        .execute()
        .await
        .unwrap();
    assert_eq!(
        assert_reembedded(&table, 384).await,
        100,
        "created with the old model"
    );

    let events = testing::EventLog::default();
    Migrator::new(db.clone())
        .on_event(events.observer())
        .add(ReEmbed::new("0002", "docs", new))
        .run()
        .await
        .unwrap();

    // Progress reached the total.
    let last = events
        .events()
        .into_iter()
        .rev()
        .find_map(|e| match e {
            lancedb_migrate::Event::Progress {
                done, total, eta, ..
            } => Some((done, total, eta)),
            _ => None,
        })
        .expect("progress events");
    // Nothing is left to do at the end: the ETA is zero.
    assert_eq!(last, (100, Some(100), Some(std::time::Duration::ZERO)));

    // The application adds rows without vectors: the new model embeds them.
    let app = db.open_table("docs").execute().await.unwrap();
    app.add(texts(100..110)).execute().await.unwrap();
    assert_eq!(assert_reembedded(&app, 768).await, 110);
    let schema = app.schema().await.unwrap();
    let defs = schema
        .metadata()
        .get("lancedb::column_definitions")
        .unwrap();
    assert!(
        defs.contains("new-768") && !defs.contains("old-384"),
        "{defs}"
    );
}

/// The staging column's name is taken by a column of the application's.
#[tokio::test]
async fn staging_column_name_collision_is_refused() {
    let db = testing::memory_db().await.unwrap();
    let table = table(&db, 1, 20).await;
    let model = TestEmbedding::new("m", 8);
    let staging = reembed(&model).staging_column();
    let field = arrow_schema::Field::new(&staging, DataType::Utf8, true);
    let schema = Arc::new(arrow_schema::Schema::new(vec![field]));
    table
        .add_columns()
        .transform(lancedb::table::NewColumnTransform::AllNulls(schema))
        .execute()
        .await
        .unwrap();
    let v = version(&table).await;
    let err = Migrator::new(db.clone())
        .add(reembed(&model))
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(failure(&err).0, Error::ColumnExists { column, .. } if *column == staging),
        "{err:?}"
    );
    assert_eq!(version(&table).await, v);
}

/// An empty table (a fresh deployment) gets the new vector column too.
#[tokio::test]
async fn empty_table_gets_the_new_column_type() {
    let db = testing::memory_db().await.unwrap();
    let table = db
        .create_empty_table("docs", testing::documents_schema(384))
        .execute()
        .await
        .unwrap();
    let model = TestEmbedding::new("test-768", 768);
    Migrator::new(db.clone())
        .add(reembed(&model))
        .run()
        .await
        .unwrap();
    table.checkout_latest().await.unwrap();
    let schema = table.schema().await.unwrap();
    assert_eq!(field_names(&schema), ["id", "text", "vector"]);
    assert_eq!(
        schema.field_with_name("vector").unwrap().data_type(),
        &testing::vector_type(768)
    );
    assert_eq!(model.embedded(), 0);
}

/// A model that fails: its own error text is in the error's `source` chain
/// (and is the root cause), in the ledger's `error` column, and the table is
/// restored.
#[tokio::test]
async fn the_models_own_error_reaches_the_ledger() {
    let db = testing::memory_db().await.unwrap();
    let table = table(&db, 2, 100).await;
    let before = Snapshot::take(&table, "id").await.unwrap();
    let model = TestEmbedding::new("flaky-768", 768).fail_after(150);
    let migrator = Migrator::new(db.clone()).add(reembed(&model));
    let err = migrator.run().await.unwrap_err();

    let cause = err.cause();
    assert!(
        matches!(cause, Error::Embedding { model, problem: EmbeddingProblem::Failed(_) } if model == "flaky-768"),
        "{cause:?}"
    );
    let model_said = "test embedding told to fail after 150 rows";
    assert!(
        err.root_cause().to_string().contains(model_said),
        "root cause: {}",
        err.root_cause()
    );
    let mut chain = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = next {
        chain.push(e.to_string());
        next = e.source();
    }
    assert!(
        chain.iter().any(|m| m.contains("flaky-768"))
            && chain.iter().any(|m| m.contains(model_said)),
        "{chain:#?}"
    );
    let ledger = migrator.ledger().await.unwrap();
    let recorded = ledger[0].error.as_deref().unwrap_or_default();
    assert!(
        recorded.contains("flaky-768") && recorded.contains(model_said),
        "the ledger's error: {recorded}"
    );
    table.checkout_latest().await.unwrap();
    let after = Snapshot::take(&table, "id").await.unwrap();
    after.assert_same_columns(&before, &["id", "text", "vector"]);
}

/// A re-embed passes `testing::conformance`, also when the new model keeps
/// the dimension (the vector column then changes values, not type: its plan
/// declares it).
#[tokio::test]
async fn a_reembed_passes_conformance_with_or_without_a_new_dimension() {
    for dims in [8, 16] {
        let reembed = move || {
            ReEmbed::new(
                "0002_reembed",
                "docs",
                Arc::new(TestEmbedding::new(format!("model-{dims}"), dims)),
            )
        };
        testing::conformance(reembed, "id", async |db| {
            testing::documents_table(db, "docs", 300, 8).await.unwrap();
        })
        .await;
    }
}

/// The Python/TypeScript clients' `embedding_functions` metadata: a
/// re-embed given `client_embedding_config` points the target's entry at
/// the new model (keeping other entries); without it the entry is removed.
/// (`interop.rs` checks what the Python client then does.)
#[tokio::test]
async fn the_clients_embedding_configuration_follows_the_new_model() {
    let entries = serde_json::json!([
        {"name": "hash-embed", "model": {"dims": 8}, "source_column": "text", "vector_column": "vector"},
        {"name": "other", "model": {}, "source_column": "title", "vector_column": "title_vector"},
    ]);
    for config in [true, false] {
        let db = testing::memory_db().await.unwrap();
        let batch = testing::documents_batch(0..300, 8);
        let schema = arrow_schema::Schema::new_with_metadata(
            batch.schema().fields().clone(),
            [("embedding_functions".to_owned(), entries.to_string())].into(),
        );
        let batch = RecordBatch::try_new(Arc::new(schema), batch.columns().to_vec()).unwrap();
        let table = db.create_table("docs", batch).execute().await.unwrap();
        let mut reembed = ReEmbed::new("0002", "docs", Arc::new(TestEmbedding::new("m16", 16)));
        if config {
            reembed =
                reembed.client_embedding_config(r#"{"name": "hash-embed", "model": {"dims": 16}}"#);
        }
        Migrator::new(db.clone()).add(reembed).run().await.unwrap();
        table.checkout_latest().await.unwrap();
        let metadata = table.schema().await.unwrap().metadata().clone();
        let after: serde_json::Value =
            serde_json::from_str(&metadata["embedding_functions"]).unwrap();
        let for_vector: Vec<_> = after
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["vector_column"] == "vector")
            .collect();
        if config {
            assert_eq!(for_vector.len(), 1, "{after}");
            assert_eq!(for_vector[0]["model"]["dims"], 16, "{after}");
            assert_eq!(for_vector[0]["source_column"], "text", "{after}");
        } else {
            assert!(for_vector.is_empty(), "{after}");
        }
        assert!(
            after
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["vector_column"] == "title_vector"),
            "other entries are kept: {after}"
        );
    }
}

/// The least cosine similarity of any row's stored vector with the test
/// embedding of its text.
async fn lowest_similarity(table: &Table, dims: usize) -> f32 {
    let mut lowest = 1.0f32;
    for batch in rows(table, &["text", "vector"]).await {
        let texts = batch.column(0).as_string::<i32>();
        let vectors = batch.column(1).as_fixed_size_list();
        for i in 0..batch.num_rows() {
            let got = vectors.value(i);
            let got = got.as_primitive::<Float32Type>().values();
            let want = TestEmbedding::vector(texts.value(i), dims);
            let dot: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            lowest = lowest.min(dot / (norm(got) * norm(&want)));
        }
    }
    lowest
}

/// A model whose vectors for one text differ between calls by ~1e-4 per
/// element (as GPU services' do) passes the default cosine verification,
/// which records the lowest similarity it saw; the opt-in element-wise
/// tolerance tighter than that jitter fails and restores the table.
#[tokio::test]
async fn verification_accepts_a_services_jitter_and_records_the_lowest_similarity() {
    let db = testing::memory_db().await.unwrap();
    let docs = table(&db, 2, 150).await;
    let model = TestEmbedding::new("jittery-768", 768).jitter(1e-4);
    let report = Migrator::new(db.clone())
        .add(reembed(&model))
        .run()
        .await
        .unwrap();
    let lowest: f32 = report.migrations()[0].details["lowest_similarity"]
        .parse()
        .unwrap();
    assert!(
        (ReEmbed::DEFAULT_MIN_SIMILARITY..1.0).contains(&lowest),
        "{lowest}"
    );
    assert!(lowest_similarity(&docs, 768).await >= 0.999);

    let db = testing::memory_db().await.unwrap();
    let strict = table(&db, 2, 150).await;
    let before = Snapshot::take(&strict, "id").await.unwrap();
    let err = Migrator::new(db.clone())
        .add(reembed(&model).tolerance(1e-5))
        .run()
        .await
        .unwrap_err();
    let (cause, phase, rollback) = failure(&err);
    assert_eq!(phase, lancedb_migrate::Phase::Verify);
    assert!(matches!(cause, Error::Verification { .. }), "{cause:?}");
    assert!(cause.to_string().contains("tolerance 0.00001"), "{cause}");
    assert!(
        matches!(rollback, Rollback::Restored { .. }),
        "{rollback:?}"
    );
    Snapshot::take(&strict, "id")
        .await
        .unwrap()
        .assert_same_columns(&before, &["id", "text", "vector"]);
}

/// Vectors that no longer match a fresh embedding of their text (the
/// model answering verify is not the one that wrote them) fail the cosine
/// verification; the table is restored.
#[tokio::test]
async fn verification_refuses_vectors_of_another_model() {
    let db = testing::memory_db().await.unwrap();
    let table = table(&db, 2, 150).await;
    let before = Snapshot::take(&table, "id").await.unwrap();
    let model = TestEmbedding::new("changing-768", 768).change_after(300);
    let err = Migrator::new(db.clone())
        .add(reembed(&model))
        .run()
        .await
        .unwrap_err();
    let (cause, phase, rollback) = failure(&err);
    assert_eq!(phase, lancedb_migrate::Phase::Verify);
    assert!(cause.to_string().contains("cosine similarity"), "{cause}");
    assert!(
        matches!(rollback, Rollback::Restored { .. }),
        "{rollback:?}"
    );
    let ledger = Migrator::new(db.clone()).ledger().await.unwrap();
    assert!(
        ledger[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("min_similarity"),
        "{:?}",
        ledger[0].error
    );
    Snapshot::take(&table, "id")
        .await
        .unwrap()
        .assert_same_columns(&before, &["id", "text", "vector"]);
}

/// Every row's `vector` must be the `dims`-d test embedding of
/// `concat_ws(' ', title, text)`; returns each row's id and whether it has a
/// title.
async fn assert_embedded_from_title_and_text(table: &Table, dims: usize) -> Vec<(i64, bool)> {
    let mut seen = Vec::new();
    for batch in rows(table, &["id", "title", "text", "vector"]).await {
        let ids = batch
            .column(0)
            .as_primitive::<arrow_array::types::Int64Type>();
        let titles = batch.column(1).as_string::<i32>();
        let texts = batch.column(2).as_string::<i32>();
        let vectors = batch.column(3).as_fixed_size_list();
        for i in 0..batch.num_rows() {
            let input = match titles.is_valid(i) {
                true => format!("{} {}", titles.value(i), texts.value(i)),
                false => texts.value(i).to_owned(),
            };
            let got = vectors.value(i);
            let got = got.as_primitive::<Float32Type>().values();
            assert_eq!(
                got,
                &TestEmbedding::vector(&input, dims)[..],
                "row {}",
                ids.value(i)
            );
            seen.push((ids.value(i), titles.is_valid(i)));
        }
    }
    seen
}

/// A table of `rows` documents with a `title` column besides `text`
/// (every fifth row's title NULL), in `fragments` appends.
async fn titled(db: &lancedb::Connection, fragments: i64, per_fragment: i64) -> Table {
    let table = table(db, fragments, per_fragment).await;
    let title = lancedb::table::NewColumnTransform::SqlExpressions(vec![(
        "title".to_owned(),
        "concat('Title ', CAST(id AS VARCHAR))".to_owned(),
    )]);
    table
        .add_columns()
        .transform(title)
        .execute()
        .await
        .unwrap();
    let nullable = lancedb::table::ColumnAlteration::new("title".to_owned()).set_nullable(true);
    table.alter_columns(&[nullable]).await.unwrap();
    table
        .update()
        .only_if("id % 5 = 0")
        .column("title", "NULL")
        .execute()
        .await
        .unwrap();
    table
}

#[tokio::test]
async fn an_expression_over_several_text_columns_is_embedded() {
    let tmp = TempDb::new().await.unwrap();
    let table = titled(tmp.db(), 3, 70).await;
    let model = TestEmbedding::new("test-768", 768);
    let migration = reembed(&model).source_expression("concat_ws(' ', title, text)");
    let migrator = Migrator::new(tmp.db().clone()).add(migration);
    let plan = migrator.plan().await.unwrap();
    assert!(
        plan.to_string()
            .contains("re-embed `concat_ws(' ', title, text)` into `vector`"),
        "{plan}"
    );
    migrator.run().await.unwrap();
    let rows = assert_embedded_from_title_and_text(&table, 768).await;
    assert_eq!(rows.len(), 210);
    for (id, titled) in rows {
        assert_eq!(titled, id % 5 != 0, "row {id}");
    }
    assert!(migrator.run().await.unwrap().is_noop());
}

#[tokio::test]
async fn rows_where_the_expression_is_null_get_no_vector() {
    let tmp = TempDb::new().await.unwrap();
    let table = titled(tmp.db(), 2, 50).await;
    // `||` is NULL when the title is: those rows get no vector.
    let model = TestEmbedding::new("test-16", 16);
    let migration = reembed(&model)
        .source_expression("title || ': ' || text")
        .target_column("title_vector");
    Migrator::new(tmp.db().clone())
        .add(migration)
        .run()
        .await
        .unwrap();
    let mut nulls = 0;
    for batch in rows(&table, &["id", "title", "text", "title_vector"]).await {
        let ids = batch
            .column(0)
            .as_primitive::<arrow_array::types::Int64Type>();
        let titles = batch.column(1).as_string::<i32>();
        let texts = batch.column(2).as_string::<i32>();
        let vectors = batch.column(3).as_fixed_size_list();
        for i in 0..batch.num_rows() {
            if ids.value(i) % 5 == 0 {
                assert!(vectors.is_null(i), "row {} has no title", ids.value(i));
                nulls += 1;
                continue;
            }
            let input = format!("{}: {}", titles.value(i), texts.value(i));
            let got = vectors.value(i);
            let got = got.as_primitive::<Float32Type>().values();
            assert_eq!(got, &TestEmbedding::vector(&input, 16)[..]);
        }
    }
    assert_eq!(nulls, 20);
}

#[tokio::test]
async fn unusable_expressions_are_refused_before_anything_is_written() {
    let tmp = TempDb::new().await.unwrap();
    let table = titled(tmp.db(), 1, 20).await;
    let before = version(&table).await;
    let model = TestEmbedding::new("m", 8);
    let cases = [
        ("title ||", None),                                       // does not parse
        ("nope || text", None),                                   // unknown column
        ("'constant'", None),                                     // reads no column
        ("id + 1", None),                                         // not text
        ("title || text", Some(r#"{"name": "m", "model": {}}"#)), // with a client config
    ];
    for (sql, client) in cases {
        let mut m = reembed(&model).source_expression(sql);
        if let Some(config) = client {
            m = m.client_embedding_config(config);
        }
        let err = Migrator::new(tmp.db().clone())
            .add(m)
            .run()
            .await
            .unwrap_err();
        let (cause, _, rollback) = failure(&err);
        assert!(
            matches!(cause, Error::InvalidMigration { .. }),
            "{sql}: {cause:?}"
        );
        assert!(matches!(rollback, Rollback::NotNeeded), "{sql}");
    }
    assert_eq!(version(&table).await, before, "nothing written");
    assert_eq!(model.embedded(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_appended_while_an_expression_is_embedded_are_embedded_too() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = TempDb::new().await.unwrap();
    titled(tmp.db(), 2, 60).await;
    // The embedder's first call (the re-embed is in its transform) waits
    // until the application has appended: the rows are appended while the
    // re-embed runs, however fast the machine is.
    let appended = Arc::new(AtomicBool::new(false));
    let embedding = Arc::new(AtomicBool::new(false));
    let (flag, called) = (appended.clone(), embedding.clone());
    let model =
        crate::support::Hooked::new(TestEmbedding::new("test-16", 16), move |texts, inner| {
            use lancedb::embeddings::EmbeddingFunction as _;
            called.store(true, Ordering::SeqCst);
            let started = std::time::Instant::now();
            while !flag.load(Ordering::SeqCst) {
                assert!(started.elapsed() < Duration::from_secs(120), "no append");
                std::thread::sleep(Duration::from_millis(5));
            }
            inner.compute_source_embeddings(texts)
        });
    let migration = ReEmbed::new("0002_reembed", "docs", Arc::new(model))
        .source_expression("concat_ws(' ', title, text)")
        .batch_size(32)
        .verify_sample(16);
    let db = tmp.db().clone();
    let run = tokio::spawn(async move { Migrator::new(db).add(migration).run().await });
    let app = tmp
        .connect()
        .await
        .unwrap()
        .open_table("docs")
        .execute()
        .await
        .unwrap();
    let waiting = std::time::Instant::now();
    while !embedding.load(Ordering::SeqCst) {
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "the re-embed never embedded"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let batch = testing::documents_batch(1000..1030, 384);
    let titles =
        arrow_array::StringArray::from_iter_values((1000..1030).map(|i| format!("New {i}")));
    let mut fields = batch.schema().fields().to_vec();
    fields.push(Arc::new(arrow_schema::Field::new(
        "title",
        DataType::Utf8,
        true,
    )));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(titles));
    let batch = RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap();
    app.add(batch).execute().await.unwrap();
    appended.store(true, Ordering::SeqCst);
    run.await.unwrap().unwrap();

    let table = tmp.db().open_table("docs").execute().await.unwrap();
    let rows = assert_embedded_from_title_and_text(&table, 16).await;
    assert_eq!(rows.len(), 150, "120 rows before, 30 appended");
}

#[tokio::test]
async fn a_reembed_from_an_expression_passes_conformance() {
    let reembed = || {
        ReEmbed::new(
            "0002_reembed",
            "docs",
            Arc::new(TestEmbedding::new("model-16", 16)),
        )
        .source_expression("concat_ws(' ', title, text)")
    };
    testing::conformance(reembed, "id", async |db| {
        titled(db, 3, 100).await;
    })
    .await;
}
