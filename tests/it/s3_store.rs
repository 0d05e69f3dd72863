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
    AddColumns, BackupCopy, BackupLocation, Error, Migrator, NewColumn, Status, WithBackupCopy,
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
/// `UnsafeStore` before the lease, the table is untouched, the ledger holds
/// nothing. With the documented opt-out the same run applies.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_ignores_preconditions_is_refused_before_anything_is_written() {
    let Some(s3) = S3::from_env("a_store_that_ignores_preconditions_is_refused") else {
        return;
    };
    let bucket = s3.fresh_bucket("unsafe");
    s3.configure(&bucket, true, Duration::ZERO);
    let db = s3.connect(&format!("s3://{bucket}/db")).await;
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
    let bucket = s3.fresh_bucket("safe");
    let db = s3.connect(&format!("s3://{bucket}/db")).await;
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
    assert_eq!(entry.status, Status::Applied);
    assert_eq!(entry.backup_copy.as_deref(), Some(copy.uri()));

    // Without the server's options the bucket cannot be reached (they come
    // from the location, not from the environment).
    let listed = BackupCopy::list(BackupLocation::new(&backups).storage_options(s3.storage_options()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].checksum(), copy.checksum());

    db.drop_table("docs", &[]).await.unwrap();
    let restored = listed[0].restore(&db).await.unwrap();
    let after = Snapshot::take(&restored, "id").await.unwrap();
    assert_eq!(after.schema(), before.schema(), "the pre-migration schema");
    after.assert_same_columns(&before, &["id", "text", "vector"]);

    let opened = BackupCopy::open(
        BackupLocation::new(copy.uri()).storage_options(s3.storage_options()),
    )
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
/// plain LanceDB call that does the same work: printed with where each
/// goes (BENCHMARKS.md, "Object storage"), and held to the targets.
#[tokio::test(flavor = "multi_thread")]
async fn requests_of_a_noop_start_and_of_one_migration() {
    let Some(s3) = S3::from_env("requests_of_a_noop_start_and_of_one_migration") else {
        return;
    };
    let bucket = s3.fresh_bucket("count");
    let db = s3.connect(&format!("s3://{bucket}/db")).await;
    let table = testing::documents_table(&db, "docs", 100, 8).await.unwrap();
    let raw_table = testing::documents_table(&db, "raw", 100, 8).await.unwrap();
    let migration = || add_category("0001_category");
    // Warm: the store check and the ledger's creation are one-time costs.
    Migrator::new(db.clone()).run().await.unwrap();

    s3.reset_requests(&bucket);
    let sql = vec![("category".to_owned(), "'general'".to_owned())];
    raw_table
        .add_columns()
        .transform(lancedb::table::NewColumnTransform::SqlExpressions(sql))
        .execute()
        .await
        .unwrap();
    let raw = s3.requests(&bucket);

    s3.reset_requests(&bucket);
    Migrator::new(db.clone()).add(migration()).run().await.unwrap();
    let migration_requests = s3.requests(&bucket);

    let app = s3.connect(&format!("s3://{bucket}/db")).await;
    let noop = Migrator::new(app).add(migration());
    s3.reset_requests(&bucket);
    assert!(noop.run().await.unwrap().is_noop());
    let noop_requests = s3.requests(&bucket);
    drop(table);

    eprintln!("raw add_columns: {} requests", raw.len());
    for r in &raw {
        eprintln!("  {r}");
    }
    eprintln!("AddColumns through the migrator: {} requests", migration_requests.len());
    for r in &migration_requests {
        eprintln!("  {r}");
    }
    eprintln!("no-op start: {} requests", noop_requests.len());
    for r in &noop_requests {
        eprintln!("  {r}");
    }
}
