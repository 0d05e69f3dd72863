//! A migration on an S3-compatible store, with its backup copy in a second
//! bucket (README, "Object storage").
//!
//! ```sh
//! export LANCEDB_MIGRATE_S3="$(scripts/s3-server.sh start)"   # a local S3 server
//! scripts/cargo run --example object_storage
//! ```
//!
//! Against a real store, set the endpoint (or leave it out for AWS), the
//! region and the credentials the same way.

use arrow_schema::DataType;
use lancedb_migrate::{
    AddColumns, BackupCopy, BackupLocation, Migrator, NewColumn, WithBackupCopy, testing,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("LANCEDB_MIGRATE_S3")
        .map_err(|_| "set LANCEDB_MIGRATE_S3 to an S3 endpoint (scripts/s3-server.sh start)")?;
    let run = std::process::id();
    let db = lancedb::connect(&format!("s3://example-data-{run}/lancedb"))
        .storage_option("aws_endpoint", &endpoint)
        .storage_option("allow_http", "true") // plain HTTP: local stores only
        .storage_option("aws_region", "us-east-1")
        .storage_option("aws_access_key_id", "test")
        .storage_option("aws_secret_access_key", "test")
        .execute()
        .await?;
    testing::documents_table(&db, "documents", 1_000, 384).await?;

    let add = AddColumns::new("0001_category", "documents")
        .column(NewColumn::new("category", DataType::Utf8).default_value("general"));
    // The copy is written with the table's storage options; a location in
    // another store would add its own with `.storage_option(…)`.
    let backups = BackupLocation::new(format!("s3://example-backups-{run}/lancedb"));
    let report = Migrator::new(db)
        .add(WithBackupCopy::new(add, backups))
        .run()
        .await?;
    println!("{report}");

    let found = BackupCopy::list(
        BackupLocation::new(format!("s3://example-backups-{run}/lancedb"))
            .storage_option("aws_endpoint", &endpoint)
            .storage_option("allow_http", "true")
            .storage_option("aws_region", "us-east-1")
            .storage_option("aws_access_key_id", "test")
            .storage_option("aws_secret_access_key", "test"),
    )
    .await?;
    for copy in found {
        println!("backup copy {} ({} rows)", copy.uri(), copy.rows());
    }
    Ok(())
}
