//! Bad input gets a typed error, and the table is left exactly as it was:
//! same version, same data, no backup tag, no ledger row.

use arrow_schema::DataType;
use lancedb::Connection;
use lancedb_migrate::testing::{self, Snapshot};
use lancedb_migrate::{AddColumns, DefaultValue, Error, Migrator, NewColumn, Phase, Rollback};

use crate::support::{failure, tags, version};

/// Runs `migration` on a fresh 50-row table, checks nothing changed, and
/// returns the cause of the failure.
async fn refused(migration: AddColumns) -> Error {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 50, 8)
        .await
        .unwrap();
    let before = Snapshot::take(&table, "id").await.unwrap();
    let v = version(&table).await;

    let migrator = Migrator::new(db.clone()).add(migration);
    let err = migrator.run().await.unwrap_err();
    let (_, phase, rollback) = failure(&err);
    assert_eq!(phase, Phase::Prepare);
    assert_eq!(rollback, &Rollback::NotNeeded);

    assert_eq!(version(&table).await, v, "no new table version");
    assert!(tags(&table).await.is_empty(), "no backup tag left behind");
    assert!(
        migrator.ledger().await.unwrap().is_empty(),
        "nothing recorded as run"
    );
    let after = Snapshot::take(&table, "id").await.unwrap();
    assert_eq!(after.schema(), before.schema());
    after.assert_same_columns(&before, &["id", "text", "vector"]);
    match err {
        Error::MigrationFailed { source, .. } => {
            std::sync::Arc::try_unwrap(source).expect("no observer keeps the error")
        }
        _ => unreachable!("checked by failure()"),
    }
}

#[tokio::test]
async fn existing_column() {
    let err =
        refused(AddColumns::new("m", "documents").column(NewColumn::new("text", DataType::Utf8)))
            .await;
    assert!(
        matches!(&err, Error::ColumnExists { table, column } if table == "documents" && column == "text"),
        "{err:?}"
    );
}

#[tokio::test]
async fn default_of_the_wrong_type() {
    let err = refused(
        AddColumns::new("m", "documents")
            .column(NewColumn::new("is_active", DataType::Boolean).default_value("yes")),
    )
    .await;
    let Error::DefaultTypeMismatch {
        column,
        expected,
        found,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(column, "is_active");
    assert_eq!(expected, &DataType::Boolean);
    assert!(found.contains("\"yes\""), "{found}");
}

#[tokio::test]
async fn default_out_of_range() {
    let err = refused(
        AddColumns::new("m", "documents")
            .column(NewColumn::new("n", DataType::Int8).default_value(1000)),
    )
    .await;
    assert!(matches!(err, Error::DefaultTypeMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn impossible_date() {
    let column =
        NewColumn::new("d", DataType::Date32).default_value(DefaultValue::date(2023, 2, 29));
    let err = refused(AddColumns::new("m", "documents").column(column)).await;
    assert!(matches!(err, Error::DefaultTypeMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn not_null_without_default() {
    let err = refused(
        AddColumns::new("m", "documents").column(NewColumn::new("c", DataType::Utf8).not_null()),
    )
    .await;
    assert!(
        matches!(&err, Error::MissingDefault { column } if column == "c"),
        "{err:?}"
    );
}

#[tokio::test]
async fn no_columns_and_repeated_columns() {
    let err = refused(AddColumns::new("m", "documents")).await;
    assert!(matches!(err, Error::InvalidMigration { .. }), "{err:?}");
    let twice = NewColumn::new("c", DataType::Utf8);
    let err = refused(
        AddColumns::new("m", "documents")
            .column(twice.clone())
            .column(twice),
    )
    .await;
    assert!(matches!(err, Error::InvalidMigration { .. }), "{err:?}");
}

#[tokio::test]
async fn missing_table() {
    let db: Connection = testing::memory_db().await.unwrap();
    let migrator = Migrator::new(db.clone())
        .add(AddColumns::new("m", "nope").column(NewColumn::new("c", DataType::Utf8)));
    let err = migrator.run().await.unwrap_err();
    let (cause, phase, _) = failure(&err);
    assert_eq!(phase, Phase::Prepare);
    assert!(
        matches!(cause, Error::TableNotFound { table } if table == "nope"),
        "{cause:?}"
    );
    let names = db.table_names().execute().await.unwrap();
    assert!(
        !names.contains(&"nope".to_owned()),
        "the table is not created"
    );
    assert!(
        err.to_string().contains("`m`"),
        "the message names the migration: {err}"
    );
}

/// The message reads as one sentence: the value, the type, what to do.
#[tokio::test]
async fn default_type_mismatch_reads_plainly() {
    let err = refused(
        AddColumns::new("m", "documents")
            .column(NewColumn::new("category", DataType::Utf8).default_value(true)),
    )
    .await;
    assert_eq!(
        err.to_string(),
        "the default for column `category` does not fit: the boolean true cannot be stored as Utf8; \
         give a default of type Utf8 or declare the column with the value's type"
    );
}
