//! The `remote` feature: `RemoteEmbedding` against a real HTTP server on
//! 127.0.0.1 (`testing::EmbeddingServer`) that speaks the OpenAI
//! embeddings protocol and fails on command; `Retrying` around any
//! embedding function.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, ArrayRef, StringArray};
use arrow_schema::DataType;
use lancedb::Table;
use lancedb::embeddings::EmbeddingFunction;
use lancedb_migrate::embeddings::{RemoteEmbedding, RetryPolicy, Retrying, ServiceError};
use lancedb_migrate::testing::{
    self, EmbeddingServer, EventLog, Fault, Faults, Snapshot, TempDb, TestEmbedding,
};
use lancedb_migrate::{EmbeddingProblem, Error, Event, Migrator, Phase, ReEmbed, Rollback};

use crate::support::{failure, field_names, kill_at, rows, sorted_ids, version};

const URL_ENV: &str = "LANCEDB_MIGRATE_REMOTE_CHILD_URL";
const DB_ENV: &str = "LANCEDB_MIGRATE_REMOTE_CHILD_DB";

/// A client of `server` with short timeouts and backoffs, so injected
/// faults cost milliseconds.
fn client(
    server: &EmbeddingServer,
    model: &str,
) -> lancedb_migrate::embeddings::RemoteEmbeddingBuilder {
    RemoteEmbedding::builder(model)
        .base_url(server.base_url())
        .no_api_key()
        .max_batch_texts(16)
        .max_in_flight(4)
        .timeout(Duration::from_millis(1500))
        .retry(
            RetryPolicy::default()
                .initial_backoff(Duration::from_millis(10))
                .max_backoff(Duration::from_millis(100)),
        )
}

/// `fragments × per_fragment` documents with 8-d vectors (another model's).
async fn table(db: &lancedb::Connection, fragments: i64, per_fragment: i64) -> Table {
    let table = testing::documents_table(db, "docs", per_fragment as usize, 8)
        .await
        .unwrap();
    for f in 1..fragments {
        table
            .add(testing::documents_batch(
                f * per_fragment..(f + 1) * per_fragment,
                8,
            ))
            .execute()
            .await
            .unwrap();
    }
    table
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Every row's vector against `model`'s own embedding of its text,
/// computed here in-process: the lowest cosine similarity, and the rows.
async fn lowest_similarity_to(table: &Table, model: &dyn EmbeddingFunction) -> (f32, usize) {
    let mut lowest = f32::MAX;
    let mut count = 0;
    for batch in rows(table, &["text", "vector"]).await {
        let expected = model
            .compute_source_embeddings(batch.column(0).clone())
            .unwrap();
        let expected = expected.as_fixed_size_list();
        let got = batch.column(1).as_fixed_size_list();
        assert_eq!(got.null_count(), 0, "every row has a vector");
        assert_eq!(got.value_length(), expected.value_length());
        for i in 0..batch.num_rows() {
            let a = got.value(i);
            let b = expected.value(i);
            let similarity = cosine(
                a.as_primitive::<Float32Type>().values(),
                b.as_primitive::<Float32Type>().values(),
            );
            lowest = lowest.min(similarity);
        }
        count += batch.num_rows();
    }
    (lowest, count)
}

/// The progress events' last embedding figures.
fn last_embedding_progress(events: &EventLog) -> lancedb_migrate::EmbeddingProgress {
    events
        .events()
        .into_iter()
        .rev()
        .find_map(|e| match e {
            Event::Progress {
                embedding: Some(p), ..
            } => Some(p),
            _ => None,
        })
        .expect("progress events with embedding figures")
}

/// The proof: all-MiniLM-L6-v2 behind the server, a fifth of the
/// requests failing (429 with Retry-After, 500, 503, a stall past the
/// client's timeout, a dropped connection). The re-embed completes; every
/// row's vector is the model's embedding of its text; no text is embedded
/// twice except those the verification samples; the limits held; the
/// progress counted the retries and the service's tokens.
#[tokio::test(flavor = "multi_thread")]
async fn a_reembed_through_a_service_failing_a_fifth_of_requests_completes() {
    let Some(dir) = crate::minilm::model_dir() else {
        return;
    };
    let model =
        Arc::new(lancedb_migrate::embeddings::minilm::SentenceTransformer::from_dir(&dir).unwrap());
    let server = EmbeddingServer::start(model.clone()).unwrap();
    server.set_faults(Faults::new(
        0.2,
        [
            Fault::TooManyRequests {
                retry_after: Duration::from_millis(50),
            },
            Fault::Status(500),
            Fault::Status(503),
            Fault::Stall(Duration::from_secs(3)),
            Fault::Drop,
        ],
    ));
    let db = testing::memory_db().await.unwrap();
    let table = table(&db, 3, 100).await;
    let remote = client(&server, "sentence-transformers/all-MiniLM-L6-v2")
        .dimension(384)
        .max_batch_texts(8)
        .build()
        .unwrap();
    let events = EventLog::default();
    let report = Migrator::new(db.clone())
        .on_event(events.observer())
        .add(
            ReEmbed::new("0002_minilm", "docs", Arc::new(remote))
                .batch_size(64)
                .concurrency(2)
                .verify_sample(16),
        )
        .run()
        .await
        .unwrap();
    assert_eq!(report.applied().count(), 1);

    let (lowest, count) = lowest_similarity_to(&table, model.as_ref()).await;
    assert_eq!(count, 300);
    assert!(
        lowest >= ReEmbed::DEFAULT_MIN_SIMILARITY,
        "lowest similarity to the model's own vectors: {lowest}"
    );
    let requests = server.requests();
    let injected = server.faults_injected();
    assert!(
        injected == requests / 5 && injected >= 5,
        "{injected} of {requests} requests failed (each of the 5 kinds at least once)"
    );
    let counts = server.embedded_counts();
    assert_eq!(counts.len(), 300, "every text was embedded");
    let twice = counts.values().filter(|&&n| n > 1).count();
    assert!(
        twice <= 16 && counts.values().all(|&n| n <= 2),
        "{twice} texts embedded more than once (16 are re-embedded by the verification)"
    );
    assert!(server.largest_request() <= 8, "max_batch_texts held");
    assert!(server.peak_in_flight() <= 4, "max_in_flight held");
    let progress = last_embedding_progress(&events);
    assert_eq!(progress.texts, 300);
    // Each fault is one retry; the verification's two requests (16
    // texts) are not part of the phase's progress.
    assert!(
        progress.retries <= injected && progress.retries + 2 >= injected,
        "{progress:?}, {injected} faults"
    );
    assert!(progress.tokens.unwrap() > 300, "{progress:?}");
    assert!(progress.tokens_per_sec.unwrap() > 0.0);
    assert!(progress.texts_per_sec > 0.0);
}

/// The same through `TestEmbedding` (no model files needed): the vectors
/// are bit-exact, so any text embedded by the wrong request or put in the
/// wrong row shows.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_service_puts_every_vector_in_its_row() {
    let model = TestEmbedding::new("test-32", 32);
    let server = EmbeddingServer::start(Arc::new(model.clone())).unwrap();
    server.set_faults(Faults::new(
        0.2,
        [
            Fault::Status(503),
            Fault::Drop,
            Fault::TooManyRequests {
                retry_after: Duration::from_millis(20),
            },
        ],
    ));
    let db = testing::memory_db().await.unwrap();
    let table = table(&db, 4, 150).await;
    Migrator::new(db.clone())
        .add(
            ReEmbed::new(
                "0002",
                "docs",
                Arc::new(client(&server, "test-32").build().unwrap()),
            )
            .batch_size(100)
            .concurrency(3),
        )
        .run()
        .await
        .unwrap();
    for batch in rows(&table, &["text", "vector"]).await {
        let texts = batch.column(0).as_string::<i32>();
        let vectors = batch.column(1).as_fixed_size_list();
        for i in 0..batch.num_rows() {
            let got = vectors.value(i);
            assert_eq!(
                got.as_primitive::<Float32Type>().values(),
                &TestEmbedding::vector(texts.value(i), 32)[..],
                "{}",
                texts.value(i)
            );
        }
    }
    assert!(server.faults_injected() > 3);
}

/// A service that keeps failing mid-run: the retries are spent, the error
/// names the status and the service's message, and the table is restored.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_keeps_failing_ends_in_a_typed_error_and_the_table_is_restored() {
    let server = Arc::new(EmbeddingServer::start(Arc::new(TestEmbedding::new("m", 16))).unwrap());
    let db = testing::memory_db().await.unwrap();
    let table = table(&db, 3, 200).await;
    let before = Snapshot::take(&table, "id").await.unwrap();
    let schema_before = table.schema().await.unwrap();
    let version_before = version(&table).await;
    // Healthy at first, so some vectors are written (and checkpointed)
    // before the service goes down for good.
    let breaker = {
        let server = server.clone();
        tokio::spawn(async move {
            while server.requests() < 6 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            server.set_faults(Faults::always(Fault::Status(503)));
        })
    };
    let remote = client(&server, "m")
        .max_batch_texts(8)
        .max_in_flight(1)
        .retry(
            RetryPolicy::default()
                .max_retries(3)
                .initial_backoff(Duration::from_millis(5)),
        )
        .build()
        .unwrap();
    let err = Migrator::new(db.clone())
        .add(
            ReEmbed::new("0002", "docs", Arc::new(remote))
                .batch_size(16)
                .concurrency(1)
                .checkpoint_every(Duration::ZERO),
        )
        .run()
        .await
        .unwrap_err();
    breaker.await.unwrap();
    let (cause, phase, rollback) = failure(&err);
    assert_eq!(phase, Phase::Transform);
    let Error::Embedding {
        problem: EmbeddingProblem::Service(service),
        ..
    } = cause
    else {
        panic!("expected a service error, got {cause:?}");
    };
    assert_eq!(service.status(), Some(503), "{service}");
    assert!(
        matches!(service, ServiceError::RetriesExhausted { retries: 3, .. }),
        "{service:?}"
    );
    let message = err.to_string() + &format!("{service}");
    assert!(
        message.contains("503") && message.contains("injected failure"),
        "the error names the status and the body: {message}"
    );
    assert!(
        matches!(rollback, Rollback::Restored { .. }),
        "{rollback:?}"
    );
    table.checkout_latest().await.unwrap();
    assert_eq!(table.schema().await.unwrap(), schema_before);
    Snapshot::take(&table, "id")
        .await
        .unwrap()
        .assert_same_columns(&before, &["id", "text", "vector"]);
    // The staging column, at least one checkpoint, then the restore.
    assert!(
        version(&table).await >= version_before + 3,
        "vectors were committed before the service went down"
    );
    assert!(
        server.texts_embedded() >= 40,
        "vectors were written before the failure"
    );
}

/// Statuses that retrying cannot change fail at once; the API key and
/// extra headers are sent; empty texts are embedded, NULL texts get NULL.
#[tokio::test(flavor = "multi_thread")]
async fn keys_headers_and_answers_that_are_not_retried() {
    let model = TestEmbedding::new("m", 8);
    let server = EmbeddingServer::start(Arc::new(model.clone())).unwrap();
    server.require_api_key("sk-right");
    let texts: ArrayRef = Arc::new(StringArray::from(vec![
        Some("a"),
        None,
        Some(""),
        Some("b"),
    ]));

    let wrong = client(&server, "m").api_key("sk-wrong").build().unwrap();
    let err = wrong.compute_source_embeddings(texts.clone()).unwrap_err();
    let lancedb::Error::External { source } = &err else {
        panic!("{err:?}")
    };
    let service = source.downcast_ref::<ServiceError>().unwrap();
    assert!(
        matches!(service, ServiceError::Status { status: 401, body } if body.contains("Incorrect API key")),
        "{service:?}"
    );
    assert_eq!(
        server.requests(),
        0,
        "refused before it counted as a request"
    );

    // The right key, and a header.
    let right = client(&server, "m")
        .api_key("sk-right")
        .header("OpenAI-Organization", "org-1")
        .build()
        .unwrap();
    let out = right.compute_source_embeddings(texts.clone()).unwrap();
    let out = out.as_fixed_size_list();
    assert_eq!(out.len(), 4);
    assert!(out.is_null(1), "a NULL text gets a NULL vector");
    let vector = |i: usize| out.value(i).as_primitive::<Float32Type>().values().to_vec();
    assert_eq!(vector(0), TestEmbedding::vector("a", 8));
    assert_eq!(
        vector(2),
        TestEmbedding::vector(" ", 8),
        "empty is sent as a space"
    );
    assert_eq!(vector(3), TestEmbedding::vector("b", 8));
    assert_eq!(right.dimension(), Some(8), "learnt from the answer");

    // A declared dimension that the service does not return.
    let declared = client(&server, "m")
        .api_key("sk-right")
        .dimension(12)
        .build()
        .unwrap();
    let err = declared.compute_source_embeddings(texts).unwrap_err();
    assert!(err.to_string().contains("dimension 8, but 12"), "{err}");

    // A 400 is not retried.
    server.set_faults(Faults::always(Fault::Status(400)));
    let before = server.requests();
    let err = right
        .compute_source_embeddings(Arc::new(StringArray::from(vec!["c"])))
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 400"), "{err}");
    assert_eq!(server.requests() - before, 1, "one request, no retry");
}

/// The dimension is learnt from a one-text probe when not declared, so
/// `ReEmbed` can plan with it.
#[tokio::test(flavor = "multi_thread")]
async fn an_undeclared_dimension_is_probed() {
    let server = EmbeddingServer::start(Arc::new(TestEmbedding::new("m", 24))).unwrap();
    let remote = client(&server, "m").build().unwrap();
    assert_eq!(
        remote.dest_type().unwrap().into_owned(),
        DataType::new_fixed_size_list(DataType::Float32, 24, true)
    );
    assert_eq!(server.requests(), 1);
    let db = testing::memory_db().await.unwrap();
    let table = table(&db, 1, 50).await;
    Migrator::new(db.clone())
        .add(ReEmbed::new("0002", "docs", Arc::new(remote)))
        .run()
        .await
        .unwrap();
    let (lowest, count) = lowest_similarity_to(&table, &TestEmbedding::new("m", 24)).await;
    assert_eq!((count, lowest >= 0.99999), (50, true));
}

/// Fails every `every`-th call with an out-of-memory error.
#[derive(Debug)]
struct Flaky {
    inner: TestEmbedding,
    calls: AtomicU64,
    every: u64,
}

impl EmbeddingFunction for Flaky {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn source_type(&self) -> lancedb::Result<std::borrow::Cow<'_, DataType>> {
        self.inner.source_type()
    }
    fn dest_type(&self) -> lancedb::Result<std::borrow::Cow<'_, DataType>> {
        self.inner.dest_type()
    }
    fn compute_source_embeddings(&self, source: ArrayRef) -> lancedb::Result<ArrayRef> {
        if self.calls.fetch_add(1, Ordering::Relaxed) % self.every == self.every - 1 {
            return Err(lancedb::Error::Runtime {
                message: "CUDA out of memory".into(),
            });
        }
        self.inner.compute_source_embeddings(source)
    }
    fn compute_query_embeddings(&self, input: ArrayRef) -> lancedb::Result<ArrayRef> {
        self.compute_source_embeddings(input)
    }
}

/// `Retrying` around an in-process model that fails now and then: the
/// re-embed completes with the model's vectors and counts the retries; a
/// model that always fails ends in `RetriesExhausted` holding its error.
#[tokio::test(flavor = "multi_thread")]
async fn retrying_carries_an_in_process_model_over_its_failures() {
    let db = testing::memory_db().await.unwrap();
    let table = table(&db, 2, 100).await;
    let flaky = Flaky {
        inner: TestEmbedding::new("m", 16),
        calls: AtomicU64::new(0),
        every: 3,
    };
    let model = Retrying::new(Arc::new(flaky))
        .policy(RetryPolicy::default().initial_backoff(Duration::from_millis(1)));
    let events = EventLog::default();
    Migrator::new(db.clone())
        .on_event(events.observer())
        .add(ReEmbed::new("0002", "docs", Arc::new(model)).batch_size(20))
        .run()
        .await
        .unwrap();
    let (lowest, count) = lowest_similarity_to(&table, &TestEmbedding::new("m", 16)).await;
    assert_eq!((count, lowest >= 0.99999), (200, true));
    let progress = last_embedding_progress(&events);
    assert!(progress.retries >= 3, "{progress:?}");
    assert_eq!(progress.tokens, None, "this model reports no tokens");

    let hopeless = Retrying::new(Arc::new(Flaky {
        inner: TestEmbedding::new("m", 16),
        calls: AtomicU64::new(0),
        every: 1,
    }))
    .policy(
        RetryPolicy::default()
            .max_retries(2)
            .initial_backoff(Duration::from_millis(1)),
    );
    let err = hopeless
        .compute_source_embeddings(Arc::new(StringArray::from(vec!["x"])))
        .unwrap_err();
    let message = format!("{err}: {:?}", err);
    assert!(
        message.contains("gave up after 2 retries") && message.contains("CUDA out of memory"),
        "{message}"
    );

    // Around a service client that does not retry itself: the status is
    // still found through the layers.
    let server = EmbeddingServer::start(Arc::new(TestEmbedding::new("m", 8))).unwrap();
    server.set_faults(Faults::always(Fault::Status(503)));
    let once = client(&server, "m")
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let wrapped = Retrying::new(Arc::new(once)).policy(
        RetryPolicy::default()
            .max_retries(2)
            .initial_backoff(Duration::from_millis(1)),
    );
    let err = wrapped
        .compute_source_embeddings(Arc::new(StringArray::from(vec!["x"])))
        .unwrap_err();
    let lancedb::Error::External { source } = &err else {
        panic!("{err:?}")
    };
    let service = source.downcast_ref::<ServiceError>().unwrap();
    assert_eq!(service.status(), Some(503), "{service:?}");
    assert_eq!(server.requests(), 3, "the first attempt and 2 retries");
}

/// Entry point of the child process of the kill test; does nothing in a
/// normal test run.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "entry point for the child process of the remote kill test"]
async fn child() {
    let (Ok(url), Ok(path)) = (std::env::var(URL_ENV), std::env::var(DB_ENV)) else {
        return;
    };
    let db = lancedb::connect(&path).execute().await.unwrap();
    Migrator::new(db)
        .add(killed_migration(&url))
        .run()
        .await
        .unwrap();
}

fn killed_migration(url: &str) -> ReEmbed {
    let remote = RemoteEmbedding::builder("test-64")
        .base_url(url)
        .no_api_key()
        .dimension(64)
        .max_batch_texts(25)
        .max_in_flight(2)
        .retry(RetryPolicy::default().initial_backoff(Duration::from_millis(10)))
        .build()
        .unwrap();
    ReEmbed::new("0002_remote", "docs", Arc::new(remote))
        .batch_size(50)
        .concurrency(2)
        .checkpoint_every(Duration::ZERO)
        .verify_sample(16)
}

/// A process killed (SIGKILL) mid-re-embed through the service, with a
/// tenth of the requests failing; the next run resumes through the same
/// service and finishes. Texts embedded twice are bounded by one
/// checkpoint's worth plus the requests in flight at the kill, plus the
/// verification's sample.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_reembed_resumes_through_the_service() {
    let model = TestEmbedding::new("test-64", 64).delay(Duration::from_millis(20));
    let server = EmbeddingServer::start(Arc::new(model)).unwrap();
    server.set_faults(Faults::new(0.1, [Fault::Status(503), Fault::Drop]));
    let tmp = TempDb::new().await.unwrap();
    let table = table(&tmp.connect().await.unwrap(), 2, 1000).await;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["remote::child", "--exact", "--ignored", "--nocapture"])
        .env(URL_ENV, server.base_url())
        .env(DB_ENV, tmp.path())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_at(&mut child, || server.texts_embedded(), 900).await;
    let before_kill = server.texts_embedded();

    let report = Migrator::new(tmp.connect().await.unwrap())
        .add(killed_migration(&server.base_url()))
        // The killed process's lease is still live: wait it out and
        // continue the re-embed here (a re-embed does not block serving, so
        // the default policy would report it pending instead).
        .when_locked(lancedb_migrate::WhenLocked::Wait)
        .run()
        .await
        .unwrap();
    assert_eq!(report.applied().count(), 1);
    let (lowest, count) = lowest_similarity_to(&table, &TestEmbedding::new("test-64", 64)).await;
    assert_eq!((count, lowest >= 0.99999), (2000, true));
    let counts = server.embedded_counts();
    assert_eq!(counts.len(), 2000, "every text embedded");
    let redone: u32 = counts.values().map(|n| n - 1).sum();
    let after = server.texts_embedded() - before_kill;
    eprintln!(
        "killed after {before_kill} texts; the resumed run embedded {after}; {redone} embedded again"
    );
    assert!(
        after < 1300,
        "the second run resumed ({after} texts embedded)"
    );
    // A checkpoint is `batch_size × concurrency` = 100 rows; up to as many
    // more were in flight at the kill; the verification re-embeds 16.
    assert!(redone <= 2 * 100 + 16, "{redone} texts embedded again");
    assert_eq!(
        sorted_ids(&table).await,
        (0..2000).collect::<Vec<_>>(),
        "no row lost or duplicated"
    );
    assert!(
        !field_names(&table.schema().await.unwrap())
            .iter()
            .any(|f| f.contains("0002_remote")),
        "no staging column is left"
    );
}
