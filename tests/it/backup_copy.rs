//! Independent backup copies: made before a migration, recorded in the
//! ledger and the report, restorable after the table is gone, and never
//! left half-written as if they were good.

use std::process::Command;

use arrow_schema::DataType;
use lancedb::Table;
use lancedb::index::vector::IvfPqIndexBuilder;
use lancedb::query::{ExecutableQuery, QueryBase};
use lancedb_migrate::testing::{self, Snapshot, TempDb};
use lancedb_migrate::{
    AddColumns, Backup, BackupCopy, CopyProblem, Error, LedgerStatus, Migrator, NewColumn, Phase,
    Rollback, WithBackupCopy,
};

use crate::support::{add_test_indexes, failure, version};

fn add_category(id: &str) -> AddColumns {
    AddColumns::new(id, "docs")
        .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
}

/// 600 documents in 3 fragments, one row deleted, with an IVF_PQ index on
/// `vector` and a BTree index on `id`.
async fn docs(db: &lancedb::Connection) -> Table {
    let table = testing::documents_table(db, "docs", 200, 32).await.unwrap();
    for f in 1..3 {
        let batch = testing::documents_batch(f * 200..(f + 1) * 200, 32);
        table.add(batch).execute().await.unwrap();
    }
    table.delete("id = 7").await.unwrap();
    let ivf_pq = IvfPqIndexBuilder::default()
        .num_partitions(2)
        .num_sub_vectors(4);
    add_test_indexes(&table, ivf_pq).await;
    table
}

async fn index_names(table: &Table) -> Vec<(String, Vec<String>)> {
    let mut names: Vec<_> = table
        .list_indices()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.columns))
        .collect();
    names.sort();
    names
}

/// What a run's backup copy failed with, asserting that the migration
/// failed in its backup phase, before changing anything.
fn copy_failure(err: &Error) -> &CopyProblem {
    let (cause, phase, rollback) = failure(err);
    assert_eq!((phase, rollback), (Phase::Backup, &Rollback::NotNeeded));
    match cause {
        Error::BackupCopy { problem, .. } => problem,
        other => panic!("expected a backup copy error, got {other:?}"),
    }
}

/// The path the copy of `migration`'s backup of `version` gets.
fn copy_path(location: &std::path::Path, migration: &str, version: u64) -> std::path::PathBuf {
    location.join(format!(
        "docs__{}.lance",
        Backup::tag_name(migration, version)
    ))
}

#[tokio::test]
async fn a_copy_survives_dropping_the_table_and_restores_it_exactly() {
    let tmp = TempDb::new().await.unwrap();
    let backups = tempfile::tempdir().unwrap();
    let location = backups.path().to_str().unwrap();
    let table = docs(tmp.db()).await;
    let before = Snapshot::take(&table, "id").await.unwrap();
    let indexes_before = index_names(&table).await;
    let version_before = version(&table).await;

    let report = Migrator::new(tmp.db().clone())
        .copy_backups_to(location)
        .add(add_category("0001_category"))
        .run()
        .await
        .unwrap();

    // The report and the ledger say where the copy went.
    let applied = &report.migrations()[0];
    let copy = applied.backup.as_ref().unwrap().copy().unwrap().clone();
    let expected_path = copy_path(backups.path(), "0001_category", version_before);
    assert_eq!(copy.uri(), expected_path.to_str().unwrap());
    assert_eq!(
        (copy.table(), copy.version(), copy.rows()),
        ("docs", version_before, 599)
    );
    assert_eq!(copy.indexes(), ["id_idx", "vec_idx"]);
    let ledger = Migrator::new(tmp.db().clone()).ledger().await.unwrap();
    assert_eq!(ledger[0].status, LedgerStatus::Applied);
    assert_eq!(ledger[0].backup_copy.as_deref(), Some(copy.uri()));
    // `status` shows the tag under `backup` and the copy in its own column.
    let status = Migrator::new(tmp.db().clone())
        .add(add_category("0001_category"))
        .status()
        .await
        .unwrap()
        .to_string();
    let header: Vec<&str> = status.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "id", "table", "status", "version", "rows", "backup", "copy", "took"
        ]
    );
    let row: Vec<&str> = status.lines().nth(1).unwrap().split_whitespace().collect();
    assert!(
        row.windows(2).any(|w| w == [copy.tag(), copy.uri()]),
        "the tag, then the copy: {status}"
    );
    // The backup location lists it, and it opens from its path alone.
    assert_eq!(
        BackupCopy::list(location).await.unwrap(),
        vec![copy.clone()]
    );
    assert_eq!(BackupCopy::open(copy.uri()).await.unwrap(), copy);

    // Lose the table, then restore it from the copy alone.
    tmp.db().drop_table("docs", &[]).await.unwrap();
    let restored = BackupCopy::open(copy.uri())
        .await
        .unwrap()
        .restore(tmp.db())
        .await
        .unwrap();
    let after = Snapshot::take(&restored, "id").await.unwrap();
    assert_eq!(after.schema(), before.schema());
    assert_eq!(after.num_rows(), 599);
    before.assert_same_columns(&after, &["id", "text", "vector"]);
    assert_eq!(index_names(&restored).await, indexes_before);
    // The indexes are usable: a search through the vector index finds a row
    // by its own vector.
    let probe = testing::document_vector(123, 32);
    let hits = restored
        .vector_search(probe)
        .unwrap()
        .limit(1)
        .select(lancedb::query::Select::columns(&["id"]))
        .execute()
        .await
        .unwrap();
    let hits: Vec<arrow_array::RecordBatch> =
        futures::TryStreamExt::try_collect(hits).await.unwrap();
    let id = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(
        hits[0].column(0),
    )
    .value(0);
    assert_eq!(id, 123);

    // Restoring never overwrites.
    let again = copy.restore(tmp.db()).await.unwrap_err();
    assert!(
        matches!(
            &again,
            Error::BackupCopy {
                problem: CopyProblem::TableExists,
                ..
            }
        ),
        "{again:?}"
    );
}

#[tokio::test]
async fn one_migration_can_copy_and_the_copy_is_independent_of_the_source_files() {
    let tmp = TempDb::new().await.unwrap();
    let backups = tempfile::tempdir().unwrap();
    let table = docs(tmp.db()).await;
    let before = Snapshot::take(&table, "id").await.unwrap();

    let report = Migrator::new(tmp.db().clone())
        .add(add_category("0001_category"))
        .add(WithBackupCopy::new(
            AddColumns::new("0002_flag", "docs").column(NewColumn::new("flag", DataType::Boolean)),
            backups.path().to_str().unwrap(),
        ))
        .run()
        .await
        .unwrap();
    assert!(
        report.migrations()[0]
            .backup
            .as_ref()
            .unwrap()
            .copy()
            .is_none()
    );
    let copy = report.migrations()[1]
        .backup
        .as_ref()
        .unwrap()
        .copy()
        .unwrap()
        .clone();
    let ledger = Migrator::new(tmp.db().clone()).ledger().await.unwrap();
    assert_eq!(ledger[0].backup_copy, None);
    assert_eq!(ledger[1].backup_copy.as_deref(), Some(copy.uri()));

    // Delete the whole database directory: the copy holds its own files.
    drop(table);
    std::fs::remove_dir_all(tmp.path()).unwrap();
    let fresh = TempDb::new().await.unwrap();
    let restored = copy.restore(fresh.db()).await.unwrap();
    let after = Snapshot::take(&restored, "id").await.unwrap();
    before.assert_same_columns(&after, &["id", "text", "vector"]);
    let category = after.column("category");
    assert_eq!(category.len(), 599);
    assert!(
        arrow_array::cast::AsArray::as_string::<i32>(category)
            .iter()
            .all(|v| v == Some("general"))
    );
    assert!(after.batch().column_by_name("flag").is_none());
}

#[tokio::test]
async fn a_destination_that_exists_stops_the_migration_before_it_starts() {
    let tmp = TempDb::new().await.unwrap();
    let backups = tempfile::tempdir().unwrap();
    let table = docs(tmp.db()).await;
    let version_before = version(&table).await;
    let path = copy_path(backups.path(), "0001_category", version_before);
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("keep-me.txt"), b"someone else's file").unwrap();

    let err = Migrator::new(tmp.db().clone())
        .copy_backups_to(backups.path().to_str().unwrap())
        .add(add_category("0001_category"))
        .run()
        .await
        .unwrap_err();
    let problem = copy_failure(&err);
    assert!(matches!(problem, CopyProblem::Exists), "{problem:?}");
    assert!(err.to_string().contains("0001_category"), "{err}");
    assert_eq!(version(&table).await, version_before);
    assert!(
        Migrator::new(tmp.db().clone())
            .ledger()
            .await
            .unwrap()
            .is_empty()
    );
    let schema = table.schema().await.unwrap();
    assert!(schema.field_with_name("category").is_err());
    assert_eq!(
        std::fs::read(path.join("keep-me.txt")).unwrap(),
        b"someone else's file"
    );
}

#[tokio::test]
async fn an_unwritable_destination_stops_the_migration_before_it_starts() {
    let tmp = TempDb::new().await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // A regular file where the backup directory should be: not writable even
    // for root.
    let blocker = scratch.path().join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    let table = docs(tmp.db()).await;
    let version_before = version(&table).await;

    let err = Migrator::new(tmp.db().clone())
        .copy_backups_to(blocker.join("backups").to_str().unwrap())
        .add(add_category("0001_category"))
        .run()
        .await
        .unwrap_err();
    let problem = copy_failure(&err);
    assert!(matches!(problem, CopyProblem::Write(_)), "{problem:?}");
    assert_eq!(version(&table).await, version_before);
    assert!(
        Migrator::new(tmp.db().clone())
            .ledger()
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_unfinished_copy_is_never_restored_and_is_replaced_by_the_next_attempt() {
    let tmp = TempDb::new().await.unwrap();
    let backups = tempfile::tempdir().unwrap();
    let location = backups.path().to_str().unwrap();
    let table = docs(tmp.db()).await;
    let version_before = version(&table).await;
    // What an attempt killed mid-copy leaves: a dataset at the copy's path
    // without the completion record.
    let name = format!(
        "docs__{}",
        Backup::tag_name("0001_category", version_before)
    );
    let leftover_db = lancedb::connect(location).execute().await.unwrap();
    testing::documents_table(&leftover_db, &name, 10, 32)
        .await
        .unwrap();
    let uri = copy_path(backups.path(), "0001_category", version_before);
    let uri = uri.to_str().unwrap();

    let err = BackupCopy::open(uri).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::BackupCopy {
                problem: CopyProblem::Unfinished,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(BackupCopy::list(location).await.unwrap().is_empty());
    // Listing a location that does not exist finds nothing and creates
    // nothing.
    let nowhere = backups.path().join("not-made-yet");
    let listed = BackupCopy::list(nowhere.to_str().unwrap()).await;
    assert!(listed.is_ok_and(|l| l.is_empty()));
    assert!(!nowhere.exists());

    Migrator::new(tmp.db().clone())
        .copy_backups_to(location)
        .add(add_category("0001_category"))
        .run()
        .await
        .unwrap();
    let copy = BackupCopy::open(uri).await.unwrap();
    assert_eq!(copy.rows(), 599);
}

#[tokio::test]
async fn a_restore_that_does_not_match_the_record_is_dropped_again() {
    let tmp = TempDb::new().await.unwrap();
    let backups = tempfile::tempdir().unwrap();
    docs(tmp.db()).await;
    let report = Migrator::new(tmp.db().clone())
        .copy_backups_to(backups.path().to_str().unwrap())
        .add(add_category("0001_category"))
        .run()
        .await
        .unwrap();
    let copy = report.migrations()[0]
        .backup
        .as_ref()
        .unwrap()
        .copy()
        .unwrap()
        .clone();

    // Damage the record: the content no longer matches its checksum.
    let mut dataset = lance::Dataset::open(copy.uri()).await.unwrap();
    let record = dataset.config()["lancedb_migrate.backup_copy"].clone();
    let damaged = record.replace(copy.checksum(), &"0".repeat(64));
    assert_ne!(record, damaged);
    dataset
        .update_config([("lancedb_migrate.backup_copy", damaged.as_str())])
        .await
        .unwrap();

    let damaged = BackupCopy::open(copy.uri()).await.unwrap();
    let err = damaged
        .restore_as(tmp.db(), "docs_restored")
        .await
        .unwrap_err();
    match &err {
        Error::BackupCopy {
            problem: CopyProblem::Mismatch { what },
            ..
        } => assert!(what.starts_with("content checksum"), "{what}"),
        other => panic!("expected a mismatch, got {other:?}"),
    }
    let names = tmp.db().table_names().execute().await.unwrap();
    assert!(!names.contains(&"docs_restored".to_owned()), "{names:?}");
}

const CHILD_DB: &str = "LANCEDB_MIGRATE_COPY_CHILD_DB";
const CHILD_BACKUPS: &str = "LANCEDB_MIGRATE_COPY_CHILD_BACKUPS";

/// Entry point of [`running_out_of_space_midway_leaves_no_copy`]'s child,
/// which runs with a file-size limit; a no-op when run directly.
#[tokio::test]
#[ignore = "entry point of a child process"]
async fn child() {
    let (Ok(db), Ok(backups)) = (std::env::var(CHILD_DB), std::env::var(CHILD_BACKUPS)) else {
        return;
    };
    let db = lancedb::connect(&db).execute().await.unwrap();
    let err = Migrator::new(db)
        .copy_backups_to(backups)
        .add(add_category("0001_category"))
        .run()
        .await
        .unwrap_err();
    let problem = copy_failure(&err);
    assert!(matches!(problem, CopyProblem::Write(_)), "{problem:?}");
    let cause = failure(&err).0;
    let mut chain = cause.to_string();
    let mut source = std::error::Error::source(cause);
    while let Some(e) = source {
        chain.push_str(&format!(": {e}"));
        source = e.source();
    }
    println!("CHILD-SAW: {chain}");
}

#[tokio::test]
async fn running_out_of_space_midway_leaves_no_copy() {
    let tmp = TempDb::new().await.unwrap();
    let backups = tempfile::tempdir().unwrap();
    // One fragment of ~6 MB of vectors: bigger than the child may write.
    let table = testing::documents_table(tmp.db(), "docs", 4000, 384)
        .await
        .unwrap();
    let version_before = version(&table).await;

    // The child may write no file over 2 MiB (`ulimit -f` counts 1 KiB
    // blocks in bash, 512-byte ones in POSIX sh: either way well under the
    // data file), and ignores SIGXFSZ so that the write fails with EFBIG,
    // as on a full disk, instead of killing it.
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 2048; exec "$0" backup_copy::child --exact --ignored --nocapture"#)
        .arg(exe)
        .env(CHILD_DB, tmp.path())
        .env(CHILD_BACKUPS, backups.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("CHILD-SAW"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("could not be written"), "{stdout}");
    assert!(
        stdout.contains("large"),
        "not a file-size failure: {stdout}"
    );

    // Nothing half-written is left as if it were a backup, and the
    // migration never started.
    let path = copy_path(backups.path(), "0001_category", version_before);
    assert!(!path.exists(), "a partial copy was left at {path:?}");
    assert!(
        BackupCopy::list(backups.path().to_str().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(version(&table).await, version_before);
    assert!(
        Migrator::new(tmp.db().clone())
            .ledger()
            .await
            .unwrap()
            .is_empty()
    );

    // With room again, the same migration copies and applies.
    let report = Migrator::new(tmp.db().clone())
        .copy_backups_to(backups.path().to_str().unwrap())
        .add(add_category("0001_category"))
        .run()
        .await
        .unwrap();
    let copy = report.migrations()[0]
        .backup
        .as_ref()
        .unwrap()
        .copy()
        .unwrap();
    assert_eq!(copy.rows(), 4000);
}

/// `WithBackupCopy` is the wrapped migration in everything but its backup
/// and its plan's summary: id, table, definition, checksum (so wrapping is
/// not an edit), resumability and expected schema are the wrapped one's.
#[test]
fn the_wrapper_is_the_wrapped_migration_but_for_its_backup() {
    use std::sync::Arc;

    use lancedb_migrate::testing::TestEmbedding;
    use lancedb_migrate::{Migration, ReEmbed};

    let inner = ReEmbed::new("0002", "docs", Arc::new(TestEmbedding::new("m", 16)));
    let wrapped = WithBackupCopy::new(inner.clone(), "/var/backups/lancedb");
    assert_eq!(wrapped.id(), inner.id());
    assert_eq!(wrapped.table(), inner.table());
    assert_eq!(wrapped.definition(), inner.definition());
    assert_eq!(wrapped.checksum(), inner.checksum());
    assert!(wrapped.resumable() && inner.resumable());
    let before = testing::documents_schema(8);
    assert_eq!(
        wrapped.expected_schema(&before).unwrap(),
        inner.expected_schema(&before).unwrap()
    );
}
