//! Object storage: what only an object store can get wrong. A store that
//! ignores preconditions is refused before anything is written; backup
//! copies are written to and restored from the store with the storage
//! options of the database (or their own).
//!
//! The reliability suite runs on the S3 server too: see the `…_on_s3`
//! tests in `concurrency`, `nothing_lost`, `reembed` and the lease's unit
//! tests.

use std::time::Duration;

use arrow_schema::DataType;
use lancedb_migrate::testing::{self, Snapshot};
use lancedb_migrate::{
    AddColumns, BackupCopy, BackupLocation, Error, Event, LedgerStatus, Migrator, NewColumn,
    WithBackupCopy,
};

use crate::s3::S3;
use crate::support::version;

fn add_category(id: &str) -> AddColumns {
    AddColumns::new(id, "docs")
        .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
}

fn probes(s3: &S3, bucket: &str) -> usize {
    s3.requests(bucket)
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("_lancedb_migrate_probe"))
        .count()
}

/// A store that accepts `If-None-Match: *` but ignores it (the server is
/// told to strip the header for this bucket): the run is refused with
/// `UnsafeStore` before anything is written (the table is untouched, no
/// ledger, no lease tag). With the documented opt-out the same run applies.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_ignores_preconditions_is_refused_before_anything_is_written() {
    let Some(s3) = S3::from_env("a_store_that_ignores_preconditions_is_refused") else {
        return;
    };
    let (bucket, db) = s3.fresh_db("unsafe").await;
    s3.configure(&bucket, true, Duration::ZERO);
    let table = testing::documents_table(&db, "docs", 50, 8).await.unwrap();
    let before = version(&table).await;
    let schema = table.schema().await.unwrap();

    let migrator = Migrator::new(db.clone()).add(add_category("0001_category"));
    let err = migrator.run().await.unwrap_err();
    let Error::UnsafeStore { uri, found } = &err else {
        panic!("expected UnsafeStore, got {err:?}");
    };
    assert!(uri.starts_with(&format!("s3://{bucket}/")), "{uri}");
    assert!(found.contains("accepted"), "{found}");
    let text = err.to_string();
    assert!(
        text.contains("conditional writes") && text.contains("allow_unsafe_store"),
        "the error says how to fix it: {text}"
    );
    assert_eq!(version(&table).await, before, "the table was not written");
    assert_eq!(table.schema().await.unwrap(), schema);
    assert!(migrator.ledger().await.unwrap().is_empty());
    assert_eq!(
        db.table_names().execute().await.unwrap(),
        ["docs"],
        "not even the ledger was created"
    );
    assert!(
        s3.requests(&bucket)
            .iter()
            .all(|r| !r.contains("_refs/tags/lease")),
        "no lease tag was written"
    );

    let report = Migrator::new(db.clone())
        .allow_unsafe_store()
        .add(add_category("0001_category"))
        .run()
        .await
        .unwrap();
    assert_eq!(report.applied().count(), 1);
    let rows = Snapshot::take(&table, "id").await.unwrap();
    assert_eq!(rows.num_rows(), 50);
}

/// On a store that enforces preconditions the check passes, and it is made
/// once per process: a second run (and a second migrator) does not probe
/// again.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_check_passes_on_a_safe_store_once_per_process() {
    let Some(s3) = S3::from_env("the_store_check_passes_on_a_safe_store_once_per_process") else {
        return;
    };
    let (bucket, db) = s3.fresh_db("safe").await;
    testing::documents_table(&db, "docs", 50, 8).await.unwrap();
    let first = Migrator::new(db.clone()).add(add_category("0001_category"));
    first.run().await.unwrap();
    assert_eq!(probes(&s3, &bucket), 2, "one probe: two creates");
    let second = Migrator::new(db.clone())
        .add(add_category("0001_category"))
        .add(add_category("0002_again").column(NewColumn::new("note", DataType::Utf8)));
    let report = second.run().await;
    // `0002_again` adds `category` again: refused, but only after the lease.
    assert!(report.is_err());
    assert_eq!(probes(&s3, &bucket), 2, "not probed again");
    let requests = s3.requests(&bucket);
    let probe = requests
        .iter()
        .position(|r| r.contains("_lancedb_migrate_probe"))
        .unwrap();
    assert_eq!(
        requests[probe + 2],
        "POST ?delete",
        "the probe object is removed right after the probe: {:?}",
        &requests[probe..probe + 3]
    );
}

/// A backup copy written to another bucket of the S3 server with the
/// database's storage options (none given for the copy), found again by
/// listing that bucket with a `BackupLocation`, and restored after the
/// table was dropped: same rows, same content.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_copy_is_written_to_and_restored_from_s3() {
    let Some(s3) = S3::from_env("a_backup_copy_is_written_to_and_restored_from_s3") else {
        return;
    };
    let db = s3
        .connect(&format!("s3://{}/db", s3.fresh_bucket("data")))
        .await;
    let table = testing::documents_table(&db, "docs", 300, 16)
        .await
        .unwrap();
    table
        .add(testing::documents_batch(300..400, 16))
        .execute()
        .await
        .unwrap();
    let before = Snapshot::take(&table, "id").await.unwrap();
    let backups = format!("s3://{}/backups", s3.fresh_bucket("copies"));

    let report = Migrator::new(db.clone())
        .add(WithBackupCopy::new(add_category("0001_category"), &backups))
        .run()
        .await
        .unwrap();
    let copy = report.applied().next().unwrap().backup.clone().unwrap();
    let copy = copy.copy().expect("a copy was made").clone();
    assert!(copy.uri().starts_with(&backups), "{}", copy.uri());
    assert_eq!(copy.rows(), 400);
    let entry = &Migrator::new(db.clone()).ledger().await.unwrap()[0];
    assert_eq!(entry.status, LedgerStatus::Applied);
    assert_eq!(entry.backup_copy.as_deref(), Some(copy.uri()));

    // Without the server's options the bucket cannot be reached (they come
    // from the location, not from the environment).
    let listed =
        BackupCopy::list(BackupLocation::new(&backups).storage_options(s3.storage_options()))
            .await
            .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].checksum(), copy.checksum());

    db.drop_table("docs", &[]).await.unwrap();
    let restored = listed[0].restore(&db).await.unwrap();
    let after = Snapshot::take(&restored, "id").await.unwrap();
    assert_eq!(after.schema(), before.schema(), "the pre-migration schema");
    after.assert_same_columns(&before, &["id", "text", "vector"]);

    let opened =
        BackupCopy::open(BackupLocation::new(copy.uri()).storage_options(s3.storage_options()))
            .await
            .unwrap();
    assert_eq!(opened.checksum(), copy.checksum());
    let printed = format!("{opened:?}");
    assert!(
        printed.contains("aws_region") && !printed.contains("us-east-1"),
        "option keys are printed, their values are not: {printed}"
    );
}

/// The requests of a no-op start and of one `AddColumns`, against the
/// plain LanceDB call that does the same work, printed grouped by where
/// they go (BENCHMARKS.md, "Object storage"), and held to the targets: a
/// no-op start at the minimum of 3, a migration's fixed cost bounded.
#[tokio::test(flavor = "multi_thread")]
async fn requests_of_a_noop_start_and_of_one_migration() {
    let Some(s3) = S3::from_env("requests_of_a_noop_start_and_of_one_migration") else {
        return;
    };
    let (bucket, db) = s3.fresh_db("count").await;
    testing::documents_table(&db, "docs", 100, 8).await.unwrap();
    testing::documents_table(&db, "warm", 10, 8).await.unwrap();
    let raw_table = testing::documents_table(&db, "raw", 100, 8).await.unwrap();
    let migration = || add_category("0001_category");
    // Warm: the store check (once per process) and the ledger's creation
    // (once per database) are not part of a migration's cost.
    Migrator::new(db.clone())
        .add(AddColumns::new("0000_warm", "warm").column(NewColumn::new("warm", DataType::Utf8)))
        .run()
        .await
        .unwrap();

    s3.reset_requests(&bucket);
    let sql = vec![("category".to_owned(), "'general'".to_owned())];
    raw_table
        .add_columns()
        .transform(lancedb::table::NewColumnTransform::SqlExpressions(sql))
        .execute()
        .await
        .unwrap();
    let raw = s3.requests(&bucket);

    // Where each request goes: the log's length at each event.
    let marks = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, usize)>::new()));
    let observer = {
        let (s3, bucket, marks) = (s3.clone(), bucket.clone(), marks.clone());
        move |event: &Event| {
            let label = match event {
                Event::PhaseStarted { phase, .. } => format!("{phase:?}"),
                Event::MigrationApplied { .. } => "record applied, release".to_owned(),
                _ => return,
            };
            marks
                .lock()
                .unwrap()
                .push((label, s3.requests(&bucket).len()));
        }
    };
    s3.reset_requests(&bucket);
    Migrator::new(db.clone())
        .on_event(observer)
        .add(AddColumns::new("0000_warm", "warm").column(NewColumn::new("warm", DataType::Utf8)))
        .add(migration())
        .run()
        .await
        .unwrap();
    let migrated = s3.requests(&bucket);

    let app = s3.connect(&format!("s3://{bucket}/db")).await;
    let noop = Migrator::new(app)
        .add(AddColumns::new("0000_warm", "warm").column(NewColumn::new("warm", DataType::Utf8)))
        .add(migration());
    s3.reset_requests(&bucket);
    assert!(noop.run().await.unwrap().is_noop());
    let noop_requests = s3.requests(&bucket);

    let mut out = format!("raw add_columns: {} requests\n", raw.len());
    for r in &raw {
        out += &format!("    {r}\n");
    }
    out += &format!(
        "one AddColumns through the migrator: {} requests\n",
        migrated.len()
    );
    let marks = marks.lock().unwrap().clone();
    let mut from = 0;
    let mut label = "open the ledger, take the lease".to_owned();
    for (next_label, at) in marks
        .into_iter()
        .chain([("end".to_owned(), migrated.len())])
    {
        out += &format!("  {label}: {}\n", at - from);
        for r in &migrated[from..at] {
            out += &format!("    {r}\n");
        }
        (from, label) = (at, next_label);
    }
    out += &format!("no-op start: {} requests\n", noop_requests.len());
    for r in &noop_requests {
        out += &format!("    {r}\n");
    }
    eprintln!("{out}");
    assert!(
        noop_requests.len() <= 3,
        "a no-op start is 3 requests at best (find the ledger's version, read its manifest, read its rows)\n{out}"
    );
    assert!(
        migrated.len() <= raw.len() + FIXED_COST_BOUND,
        "a migration's fixed cost grew\n{out}"
    );
}

/// The requests one migration adds to the raw LanceDB call's, at most:
/// the target (measured: 20 on 2026-12-07, see BENCHMARKS.md).
const FIXED_COST_BOUND: usize = 20;
