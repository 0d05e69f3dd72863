//! The Python LanceDB client (0.40, which embeds Lance 13) as an independent
//! reader and writer of tables this crate migrates: Python creates the
//! seed-shaped table (text, a 384-d vector with a registered embedding
//! function, columns the crate does not know, an IVF_PQ index); the crate
//! migrates it with every built-in; Python reads every value back, appends
//! in the old and the new schema, searches by vector through the rebuilt
//! index and by text through its embedding configuration, and reads the
//! ledger (`tests/interop/client.py`).
//!
//! The client comes from `scripts/python-client.sh`. With
//! `LANCEDB_MIGRATE_PYTHON` set (as `.ci/run` sets it) the tests use that
//! python and fail if it does not work; without it they use the script's
//! default environment when it exists, and otherwise print SKIPPED.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow_schema::DataType;
use lancedb::index::Index;
use lancedb::index::scalar::BTreeIndexBuilder;
use lancedb_migrate::testing::TestEmbedding;
use lancedb_migrate::{
    AddColumns, CastColumn, DefaultValue, DropColumns, FillColumn, Migrator, NewColumn, ReEmbed,
    RebuildIndex, RenameColumn,
};

/// The client configuration the re-embed gives: the Python registry's
/// `hash-embed` function (the Rust `TestEmbedding`, ported) at 768
/// dimensions.
const CLIENT_CONFIG: &str = r#"{"name": "hash-embed", "model": {"dims": 768}}"#;

fn python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("LANCEDB_MIGRATE_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let home = std::env::var_os("HOME")?;
    let default = Path::new(&home).join(".cache/lancedb-migrate/py/lancedb-0.40.0/bin/python");
    default.exists().then_some(default)
}

/// Runs `tests/interop/client.py` with `args`; its output, or a failure with
/// everything it printed.
fn client(python: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/client.py");
    try_run(Command::new(python).arg(&script).args(args))
        .unwrap_or_else(|out| panic!("client.py {args:?} failed:\n{out}"))
}

fn reembed(config: bool) -> ReEmbed {
    let model = ReEmbed::new(
        "0002_reembed",
        "documents",
        Arc::new(TestEmbedding::new("hash-embed-768", 768)),
    );
    if config {
        model.client_embedding_config(CLIENT_CONFIG)
    } else {
        model
    }
}

fn migrator(db: lancedb::Connection, config: bool) -> Migrator {
    Migrator::new(db)
        .add(
            AddColumns::new("0001_columns", "documents")
                .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
                .column(
                    NewColumn::new("created_at", DataType::Utf8)
                        .default_value(DefaultValue::MigrationTime),
                ),
        )
        .add(reembed(config))
        .add(RebuildIndex::new(
            "0003_id_index",
            "documents",
            "id",
            Index::BTree(BTreeIndexBuilder::default()),
        ))
}

/// With the client configuration, Python embeds its text queries with the
/// new model; without it, the entry is removed and Python refuses text
/// queries (never embedding them with the old 384-d model). Either way it
/// reads every value, appends in both schemas and searches by vector.
#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_reads_appends_and_searches_after_every_builtin() {
    let Some(python) = python() else {
        eprintln!(
            "SKIPPED: no Python LanceDB client (run scripts/python-client.sh); the interop test did not run"
        );
        return;
    };
    for config in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        client(&python, &["create", path]);
        let db = lancedb::connect(path).execute().await.unwrap();
        let report = migrator(db.clone(), config).run().await.unwrap();
        assert_eq!(report.applied().count(), 3);
        let note = &report.migrations()[1].details["embedding_functions"];
        if config {
            assert!(note.starts_with("set for `vector`"), "{note}");
        } else {
            assert!(
                note.contains("removed") && note.contains("hash-embed"),
                "{note}"
            );
        }
        let mode = if config { "config" } else { "none" };
        let out = client(&python, &["check", path, mode]);
        assert!(out.contains(&format!("checked ({mode})")), "{out}");
        if !config {
            assert!(out.contains("text query refused"), "{out}");
        }
    }
}

/// After `RenameColumn` (the vector and the text column) and
/// `DropColumns`, the Python client reads every value, finds the index on
/// the renamed column, and embeds text queries and appends from and into
/// the renamed columns (its embedding configuration followed them).
#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_reads_and_embeds_after_renames_and_drops() {
    let Some(python) = python() else {
        eprintln!(
            "SKIPPED: no Python LanceDB client (run scripts/python-client.sh); the interop test did not run"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    client(&python, &["create", path]);
    let db = lancedb::connect(path).execute().await.unwrap();
    let report = Migrator::new(db)
        .add(RenameColumn::new(
            "0001_vector",
            "documents",
            "vector",
            "embedding",
        ))
        .add(RenameColumn::new("0002_text", "documents", "text", "body"))
        .add(DropColumns::new("0003_tag", "documents").column("tag"))
        .run()
        .await
        .unwrap();
    assert_eq!(report.applied().count(), 3);
    let out = client(&python, &["check-verbs", path]);
    assert!(out.contains("checked (verbs)"), "{out}");
}

/// The TypeScript client (`@lancedb/lancedb`, from
/// `scripts/typescript-client.sh`): its directory from
/// `LANCEDB_MIGRATE_TS` (as `.ci/run` sets it), else the script's default
/// when it exists.
fn typescript() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LANCEDB_MIGRATE_TS") {
        return Some(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")?;
    let default = Path::new(&home).join(".cache/lancedb-migrate/ts/lancedb-0.39.0");
    default.join("node_modules").exists().then_some(default)
}

/// The node that runs the client: the one `scripts/typescript-client.sh`
/// installed beside it when the machine had none, else the machine's.
fn node(dir: &Path) -> PathBuf {
    let installed = dir.join("bin/node");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("node")
    }
}

/// Runs `tests/interop/client.mjs` with node and `args`; its output, or a
/// failure with everything it printed.
fn ts_client(dir: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/client.mjs");
    try_run(Command::new(node(dir)).arg(&script).arg(dir).args(args))
        .unwrap_or_else(|out| panic!("client.mjs {args:?} failed:\n{out}"))
}

/// The same as the Python test, with the TypeScript client: it creates the
/// table (its `embedding_functions` entry in its own camelCase form), the
/// crate migrates it with every built-in, and the client reads every value,
/// appends in both schemas, searches by vector through the rebuilt index
/// and by text through the entry the re-embed rewrote (or refuses text
/// queries when the re-embed was given no configuration).
#[tokio::test(flavor = "multi_thread")]
async fn the_typescript_client_reads_appends_and_searches_after_every_builtin() {
    let Some(ts) = typescript() else {
        eprintln!(
            "SKIPPED: no TypeScript LanceDB client (run scripts/typescript-client.sh); the interop test did not run"
        );
        return;
    };
    for config in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let created = ts_client(&ts, &["create", path]);
        assert!(created.contains("created 600 rows"), "{created}");
        let db = lancedb::connect(path).execute().await.unwrap();
        let table = db.open_table("documents").execute().await.unwrap();
        let before = table.schema().await.unwrap().metadata().clone();
        assert!(
            before["embedding_functions"].contains("sourceColumn"),
            "{before:?}"
        );
        let report = migrator(db.clone(), config).run().await.unwrap();
        assert_eq!(report.applied().count(), 3);
        let mode = if config { "config" } else { "none" };
        let out = ts_client(&ts, &["check", path, mode]);
        assert!(out.contains(&format!("checked ({mode})")), "{out}");
        if !config {
            assert!(out.contains("text query refused"), "{out}");
        }
    }
}

/// After `FillColumn` (a new `label` from an expression), `RenameColumn`
/// (the vector and the text column), `CastColumn` (`score` to Float32) and
/// `DropColumns`, the TypeScript client reads every value in its new name
/// and type, finds the index on the renamed column, and embeds text
/// queries and appends from and into the renamed columns (its camelCase
/// embedding configuration followed them).
#[tokio::test(flavor = "multi_thread")]
async fn the_typescript_client_reads_and_embeds_after_every_verb() {
    let Some(ts) = typescript() else {
        eprintln!(
            "SKIPPED: no TypeScript LanceDB client (run scripts/typescript-client.sh); the interop test did not run"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let created = ts_client(&ts, &["create", path]);
    assert!(created.contains("created 600 rows"), "{created}");
    let db = lancedb::connect(path).execute().await.unwrap();
    let report = Migrator::new(db)
        .add(FillColumn::new_column(
            "0000_label",
            "documents",
            "label",
            DataType::Utf8,
            "upper(tag)",
        ))
        .add(RenameColumn::new(
            "0001_vector",
            "documents",
            "vector",
            "embedding",
        ))
        .add(RenameColumn::new("0002_text", "documents", "text", "body"))
        .add(CastColumn::new(
            "0003_score",
            "documents",
            "score",
            DataType::Float32,
        ))
        .add(DropColumns::new("0004_tag", "documents").column("tag"))
        .run()
        .await
        .unwrap();
    assert_eq!(report.applied().count(), 5);
    let out = ts_client(&ts, &["check-verbs", path]);
    assert!(out.contains("checked (verbs)"), "{out}");
}

/// Which Lance file formats each client reads, in tables this crate created
/// and migrated (LanceDB 0.41, Lance 14): a table per format, with a
/// defaulted column added (new data files in that format). Python 0.40
/// (Lance 13) and TypeScript 0.39 read the legacy 0.1 format and 2.0 to
/// 2.2 (2.2 is what LanceDB 0.41 creates by default); neither reads 2.3,
/// Lance 14's unstable "next" format (README, "Other clients").
#[tokio::test(flavor = "multi_thread")]
async fn the_clients_read_the_lance_formats_they_support() {
    let (Some(python), Some(ts)) = (python(), typescript()) else {
        eprintln!("SKIPPED: the Python or TypeScript client is missing");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let mut seen = Vec::new();
    for format in ["0.1", "2.0", "2.1", "2.2", "2.3"] {
        let db = lancedb::connect(path)
            .storage_option("new_table_data_storage_version", format)
            .execute()
            .await
            .unwrap();
        let name = format!("documents_{}", format.replace('.', "_"));
        lancedb_migrate::testing::documents_table(&db, &name, 50, 8)
            .await
            .unwrap();
        let table = db.open_table(&name).execute().await.unwrap();
        let manifest = table.as_native().unwrap().manifest().await.unwrap();
        let stored = manifest.data_storage_format.version;
        Migrator::new(db)
            .ledger_table(format!("ledger_{name}"))
            .add(
                AddColumns::new("0001", &name)
                    .column(NewColumn::new("category", DataType::Utf8).default_value("general")),
            )
            .run()
            .await
            .unwrap();
        let reads = |out: Result<String, String>| match out {
            Ok(out) if out.contains("read 50 rows") => "reads",
            _ => "does not read",
        };
        let py = reads(try_run(
            Command::new(&python).args([
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/interop/client.py")
                    .as_os_str(),
                "read".as_ref(),
                path.as_ref(),
                name.as_ref(),
            ]),
        ));
        let node = reads(try_run(
            Command::new(node(&ts)).args([
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/interop/client.mjs")
                    .as_os_str(),
                ts.as_os_str(),
                "read".as_ref(),
                path.as_ref(),
                name.as_ref(),
            ]),
        ));
        eprintln!("Lance format {format} (stored as {stored}): Python {py}, TypeScript {node}");
        seen.push((format, py, node));
    }
    assert_eq!(
        seen,
        [
            ("0.1", "reads", "reads"),
            ("2.0", "reads", "reads"),
            ("2.1", "reads", "reads"),
            ("2.2", "reads", "reads"),
            ("2.3", "does not read", "does not read"),
        ]
    );
}

/// The output (stdout, then stderr) of a command that succeeded; its
/// output as an error otherwise.
fn try_run(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A re-embed that fails is rolled back with the client configuration: the
/// table's `embedding_functions` names the old model again.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_reembed_gives_the_clients_their_old_configuration_back() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no Python LanceDB client (run scripts/python-client.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    client(&python, &["create", path]);
    let db = lancedb::connect(path).execute().await.unwrap();
    let table = db.open_table("documents").execute().await.unwrap();
    let before = table.schema().await.unwrap().metadata().clone();
    assert!(before["embedding_functions"].contains("384"), "{before:?}");

    let failing = ReEmbed::new(
        "0002_reembed",
        "documents",
        Arc::new(TestEmbedding::new("hash-embed-768", 768).fail_after(300)),
    )
    .client_embedding_config(CLIENT_CONFIG)
    .batch_size(100);
    Migrator::new(db.clone())
        .add(failing)
        .run()
        .await
        .unwrap_err();
    table.checkout_latest().await.unwrap();
    let after = table.schema().await.unwrap().metadata().clone();
    assert_eq!(
        after.get("embedding_functions"),
        before.get("embedding_functions")
    );
}

/// A client configuration that is not `{"name": …, "model": {…}}` is refused
/// before anything is written.
#[tokio::test]
async fn a_malformed_client_configuration_is_refused() {
    let db = lancedb_migrate::testing::memory_db().await.unwrap();
    lancedb_migrate::testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    for bad in [
        r#"{"model": {}}"#,
        r#"{"name": "x", "model": 3}"#,
        "not json",
    ] {
        let err = Migrator::new(db.clone())
            .add(reembed(false).client_embedding_config(bad))
            .run()
            .await
            .unwrap_err();
        assert!(
            matches!(err.cause(), lancedb_migrate::Error::InvalidMigration { reason, .. } if reason.contains("client_embedding_config")),
            "{err:?}"
        );
    }
    assert!(Migrator::new(db).ledger().await.unwrap().is_empty());
}
