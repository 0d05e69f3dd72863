//! Small helpers shared by the test modules.

use std::collections::HashMap;

use lancedb::Table;
use lancedb_migrate::{Error, Phase, Rollback};

/// The underlying cause of a `MigrationFailed`, with its phase and rollback.
pub(crate) fn failure(err: &Error) -> (&Error, Phase, &Rollback) {
    match (err.phase(), err.rollback()) {
        (Some(phase), Some(rollback)) => (err.cause(), phase, rollback),
        _ => panic!("expected MigrationFailed, got {err:?}"),
    }
}

pub(crate) async fn version(table: &Table) -> u64 {
    table.checkout_latest().await.unwrap();
    table.version().await.unwrap()
}

pub(crate) async fn tags(table: &Table) -> HashMap<String, u64> {
    table
        .tags()
        .await
        .unwrap()
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|(name, contents)| (name, contents.version))
        .collect()
}

pub(crate) fn field_names(table_schema: &arrow_schema::Schema) -> Vec<String> {
    table_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// Adds `word_count = length(text)` (nullable Int32), as the test
/// migrations do.
pub(crate) async fn add_word_count(table: &Table) -> lancedb::Result<()> {
    let sql = vec![(
        "word_count".to_owned(),
        "CAST(length(text) AS INT)".to_owned(),
    )];
    let transform = lancedb::table::NewColumnTransform::SqlExpressions(sql);
    table.add_columns().transform(transform).execute().await?;
    Ok(())
}

/// `before` plus the column [`add_word_count`] adds.
pub(crate) fn with_word_count(before: &arrow_schema::Schema) -> arrow_schema::Schema {
    let mut fields = before.fields().to_vec();
    let field = arrow_schema::Field::new("word_count", arrow_schema::DataType::Int32, true);
    fields.push(std::sync::Arc::new(field));
    arrow_schema::Schema::new(fields)
}

/// Adds the tests' two indexes: IVF_PQ `vec_idx` (built by `ivf_pq`) on
/// `vector`, and BTree `id_idx` on `id`.
pub(crate) async fn add_test_indexes(
    table: &Table,
    ivf_pq: lancedb::index::vector::IvfPqIndexBuilder,
) {
    use lancedb::index::Index;
    table
        .create_index(&["vector"], Index::IvfPq(ivf_pq))
        .name("vec_idx".to_owned())
        .execute()
        .await
        .unwrap();
    let btree = lancedb::index::scalar::BTreeIndexBuilder::default();
    table
        .create_index(&["id"], Index::BTree(btree))
        .name("id_idx".to_owned())
        .execute()
        .await
        .unwrap();
}

/// Every row of `table` at its latest version, `columns` only (all when
/// empty), in LanceDB's scan order.
pub(crate) async fn rows(table: &Table, columns: &[&str]) -> Vec<arrow_array::RecordBatch> {
    use futures::TryStreamExt;
    use lancedb::query::{ExecutableQuery, QueryBase, Select};
    table.checkout_latest().await.unwrap();
    let mut query = table.query();
    if !columns.is_empty() {
        query = query.select(Select::columns(columns));
    }
    query.execute().await.unwrap().try_collect().await.unwrap()
}

/// A fresh database for a test that runs on a local directory and on the
/// S3 server alike, with a local scratch directory for the test's own files
/// (acknowledgement logs, stop files).
#[derive(Debug)]
pub(crate) struct Db {
    uri: String,
    scratch: tempfile::TempDir,
}

/// Where a test's database lives.
#[derive(Debug, Clone)]
pub(crate) enum Place {
    Local,
    /// A server of the pool, and its index there.
    S3(crate::s3::S3, usize),
}

impl Place {
    /// An S3 server of the pool `LANCEDB_MIGRATE_S3` names, or `None`
    /// after printing why `test` is skipped; with the server's slot: one
    /// multi-process test at a time on each server, so that one test's
    /// processes do not slow the server down for another's lease
    /// heartbeats (with two servers, two such tests run at once).
    pub(crate) async fn s3(test: &str) -> Option<(Self, tokio::sync::OwnedMutexGuard<()>)> {
        use std::sync::{Arc, OnceLock};
        static SLOTS: OnceLock<Vec<Arc<tokio::sync::Mutex<()>>>> = OnceLock::new();
        let servers = crate::s3::S3::all_from_env(test)?;
        let slots = SLOTS.get_or_init(|| {
            servers
                .iter()
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect()
        });
        loop {
            for (index, slot) in slots.iter().enumerate() {
                if let Ok(guard) = slot.clone().try_lock_owned() {
                    return Some((Self::S3(servers[index].clone(), index), guard));
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A new empty database here.
    pub(crate) fn fresh(&self) -> Db {
        let scratch = tempfile::tempdir().unwrap();
        let uri = match self {
            Self::Local => scratch.path().join("db").to_string_lossy().into_owned(),
            Self::S3(s3, index) => format!(
                "s3://{}/db",
                s3.fresh_bucket(&crate::s3::pool_prefix(*index))
            ),
        };
        Db { uri, scratch }
    }
}

impl Db {
    /// Its URI (a path for a local one), as child processes get it.
    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// A local directory for the test's own files.
    pub(crate) fn scratch(&self) -> &std::path::Path {
        self.scratch.path()
    }

    /// A new connection.
    pub(crate) async fn connect(&self) -> lancedb::Connection {
        crate::s3::connect(&self.uri).await
    }
}

/// The lease TTL of the multi-process tests: 1 s on a local directory; 5 s
/// on the S3 server, where taking the lease and each heartbeat are several
/// requests to a Python server that the test's processes (and the rest of
/// the suite, on 2 cores) keep busy: heartbeats there took up to 0.7 s
/// under load, and a holder that cannot prove its lease in time stops,
/// which is safe but fails the test.
pub(crate) fn lease_ttl(db: &lancedb::Connection) -> std::time::Duration {
    if db.uri().starts_with("s3://") {
        std::time::Duration::from_secs(5)
    } else {
        std::time::Duration::from_secs(1)
    }
}

/// Taken by the CPU-heavy tests (training every index type, the busy-table
/// run with its appending process): they take turns, so that a liveness
/// test's time limit does not depend on which heavy test the harness runs
/// beside it on a 2-core machine.
pub(crate) async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// Waits until `progress()` reaches `at` (failing the test if `child` ends
/// first or two minutes pass), then kills `child` (SIGKILL) and reaps it.
pub(crate) async fn kill_at(child: &mut std::process::Child, progress: impl Fn() -> u64, at: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while progress() < at {
        assert!(
            std::time::Instant::now() < deadline,
            "the child made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before the kill"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The `id` column of every row of `table`, sorted: compared with the ids
/// written, it shows rows lost or duplicated.
pub(crate) async fn sorted_ids(table: &Table) -> Vec<i64> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let mut ids: Vec<i64> = rows(table, &["id"])
        .await
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    ids.sort_unstable();
    ids
}

/// Where a child process of the multi-process tests stops, chosen by the
/// test instead of a clock: the kill (or SIGSTOP) then lands at a known
/// point of the migration whatever the machine's speed or load.
///
/// The test passes a spec and a directory in the environment
/// ([`Pause::env`]); the child's event observer ([`pause_observer`]) and the
/// test migrations' own points ([`pause_point`]) block at the first match,
/// after writing `paused` into the directory, until the test writes `go`.
///
/// Specs: `started:ID` (a migration starts), `phase:ID:PHASE` (a phase
/// starts, `PHASE` as `Debug` prints it), `finished:ID:PHASE`,
/// `progress:ID:ROWS` (the first progress event with at least `ROWS` rows
/// done), `point:NAME` (a [`pause_point`] of a test migration).
pub(crate) struct Pause {
    spec: String,
    dir: tempfile::TempDir,
}

const PAUSE_AT_ENV: &str = "LANCEDB_MIGRATE_PAUSE_AT";
const PAUSE_DIR_ENV: &str = "LANCEDB_MIGRATE_PAUSE_DIR";

impl Pause {
    pub(crate) fn at(spec: impl Into<String>) -> Self {
        Self {
            spec: spec.into(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn spec(&self) -> &str {
        &self.spec
    }

    /// The environment a child needs to stop there.
    pub(crate) fn env(&self) -> [(&'static str, std::ffi::OsString); 2] {
        [
            (PAUSE_AT_ENV, self.spec.clone().into()),
            (PAUSE_DIR_ENV, self.dir.path().as_os_str().to_owned()),
        ]
    }

    /// Waits until `child` stands at the point (failing the test if it
    /// exits first, or after two minutes without getting there).
    pub(crate) async fn reached(&self, child: &mut std::process::Child) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !self.dir.path().join("paused").exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the child exited ({status}) before reaching {}", self.spec);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the child did not reach {} in two minutes",
                self.spec
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Lets the child go on from the point.
    pub(crate) fn go(&self) {
        std::fs::write(self.dir.path().join("go"), b"").unwrap();
    }
}

/// In a child: an event observer that stops at the [`Pause`] the test asked
/// for (does nothing when it asked for none).
pub(crate) fn pause_observer() -> impl Fn(&lancedb_migrate::Event) + Send + Sync + 'static {
    use lancedb_migrate::Event;
    move |event: &Event| {
        let Ok(spec) = std::env::var(PAUSE_AT_ENV) else {
            return;
        };
        // `kind:ID` or `kind:ID:ARG`; an id may hold colons itself
        // (`documents@schema:…`), the argument never does.
        let Some((kind, rest)) = spec.split_once(':') else {
            return;
        };
        let parts: Vec<&str> = match (kind, rest.rsplit_once(':')) {
            ("started", _) | (_, None) => vec![kind, rest],
            (_, Some((id, arg))) => vec![kind, id, arg],
        };
        let hit = match (parts.as_slice(), event) {
            (["started", id], Event::MigrationStarted { migration, .. }) => migration == id,
            (
                ["phase", id, phase],
                Event::PhaseStarted {
                    migration,
                    phase: p,
                    ..
                },
            )
            | (
                ["finished", id, phase],
                Event::PhaseFinished {
                    migration,
                    phase: p,
                    ..
                },
            ) => migration == id && format!("{p:?}") == *phase,
            (
                ["progress", id, rows],
                Event::Progress {
                    migration, done, ..
                },
            ) => migration == id && *done >= rows.parse::<u64>().unwrap(),
            _ => false,
        };
        if hit {
            stop_here();
        }
    }
}

/// In a child: a point a test migration can stop at (`point:NAME`).
pub(crate) fn pause_point(name: &str) {
    if std::env::var(PAUSE_AT_ENV).is_ok_and(|spec| spec.strip_prefix("point:") == Some(name)) {
        stop_here();
    }
}

/// Stops the calling thread once per process: writes `paused`, then waits
/// for `go` (forever, for a test that kills the process here).
fn stop_here() {
    static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var_os(PAUSE_DIR_ENV).unwrap());
    std::fs::write(dir.join("paused"), b"").unwrap();
    while !dir.join("go").exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A [`TestEmbedding`](lancedb_migrate::testing::TestEmbedding) whose
/// document embedding goes through `hook`, which gets each call's texts and
/// the model: to wait, count, log or fail around the real call. Query
/// embeddings go to the model directly.
pub(crate) struct Hooked {
    inner: lancedb_migrate::testing::TestEmbedding,
    #[allow(clippy::type_complexity)]
    hook: Box<
        dyn Fn(
                arrow_array::ArrayRef,
                &lancedb_migrate::testing::TestEmbedding,
            ) -> lancedb::Result<arrow_array::ArrayRef>
            + Send
            + Sync,
    >,
}

impl Hooked {
    pub(crate) fn new(
        inner: lancedb_migrate::testing::TestEmbedding,
        hook: impl Fn(
            arrow_array::ArrayRef,
            &lancedb_migrate::testing::TestEmbedding,
        ) -> lancedb::Result<arrow_array::ArrayRef>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            inner,
            hook: Box::new(hook),
        }
    }
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish()
    }
}

impl lancedb::embeddings::EmbeddingFunction for Hooked {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn source_type(&self) -> lancedb::Result<std::borrow::Cow<'_, arrow_schema::DataType>> {
        self.inner.source_type()
    }
    fn dest_type(&self) -> lancedb::Result<std::borrow::Cow<'_, arrow_schema::DataType>> {
        self.inner.dest_type()
    }
    fn compute_source_embeddings(
        &self,
        source: arrow_array::ArrayRef,
    ) -> lancedb::Result<arrow_array::ArrayRef> {
        (self.hook)(source, &self.inner)
    }
    fn compute_query_embeddings(
        &self,
        input: arrow_array::ArrayRef,
    ) -> lancedb::Result<arrow_array::ArrayRef> {
        self.inner.compute_query_embeddings(input)
    }
}
