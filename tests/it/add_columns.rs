//! `AddColumns` on real tables: the seed scenarios, every default type, and
//! the application's writes after the migration.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use lancedb_migrate::testing::{self, Snapshot};
use lancedb_migrate::{AddColumns, DefaultValue, Migrator, NewColumn};

use crate::support::{field_names, version};

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// Asserts every value of a timestamp column is one instant within the run.
fn assert_migration_time(column: &ArrayRef, run_start: SystemTime, run_end: SystemTime) {
    let ts = column.as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.null_count(), 0);
    let first = ts.value(0);
    assert!(
        ts.values().iter().all(|v| *v == first),
        "one instant for every row"
    );
    assert!(
        micros(run_start) <= first && first <= micros(run_end),
        "{first} outside the run [{}, {}]",
        micros(run_start),
        micros(run_end)
    );
}

fn assert_all_str(column: &ArrayRef, expected: &str) {
    let s = column.as_string::<i32>();
    assert_eq!(s.null_count(), 0);
    assert!(
        s.iter().all(|v| v == Some(expected)),
        "every row is {expected:?}"
    );
}

/// Seed (a): `text` + 384-d `vector` gains `created_at` (migration time),
/// `category = "general"` and `is_active = true`.
#[tokio::test]
async fn seed_a_created_at_category_is_active() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 1_000, 384)
        .await
        .unwrap();
    let before = Snapshot::take(&table, "id").await.unwrap();

    let migrator = Migrator::new(db.clone()).add(
        AddColumns::new("0001_seed_a", "documents")
            .column(
                NewColumn::new("created_at", utc_micros())
                    .default_value(DefaultValue::MigrationTime),
            )
            .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
            .column(NewColumn::new("is_active", DataType::Boolean).default_value(true)),
    );
    let start = SystemTime::now();
    let report = migrator.run().await.unwrap();
    let end = SystemTime::now();
    assert_eq!(report.applied().count(), 1);

    let after = Snapshot::take(&table, "id").await.unwrap();
    assert_eq!(after.num_rows(), 1_000);
    after.assert_same_columns(&before, &["id", "text", "vector"]);
    assert_migration_time(after.column("created_at"), start, end);
    assert_all_str(after.column("category"), "general");
    let active = after.column("is_active").as_boolean();
    assert_eq!(active.true_count(), 1_000);
    assert_eq!(
        field_names(&after.schema()),
        [
            "id",
            "text",
            "vector",
            "created_at",
            "category",
            "is_active"
        ]
    );

    let v = version(&table).await;
    let again = migrator.run().await.unwrap();
    assert!(again.is_noop());
    assert_eq!(again.skipped().count(), 1);
    assert_eq!(
        version(&table).await,
        v,
        "a no-op run creates no table version"
    );
    Snapshot::take(&table, "id")
        .await
        .unwrap()
        .assert_same_columns(
            &after,
            &[
                "id",
                "text",
                "vector",
                "created_at",
                "category",
                "is_active",
            ],
        );
}

/// Seed (b): the same table gains a nullable `metadata` (null), `timestamp`
/// (migration time) and `category = "general"`.
#[tokio::test]
async fn seed_b_metadata_timestamp_category() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 500, 384)
        .await
        .unwrap();
    let before = Snapshot::take(&table, "id").await.unwrap();

    let migrator = Migrator::new(db.clone()).add(
        AddColumns::new("0001_seed_b", "documents")
            .column(NewColumn::new("metadata", DataType::Utf8))
            .column(
                NewColumn::new("timestamp", utc_micros())
                    .default_value(DefaultValue::MigrationTime),
            )
            .column(NewColumn::new("category", DataType::Utf8).default_value("general")),
    );
    let start = SystemTime::now();
    migrator.run().await.unwrap();
    let end = SystemTime::now();

    let after = Snapshot::take(&table, "id").await.unwrap();
    after.assert_same_columns(&before, &["id", "text", "vector"]);
    assert_eq!(after.column("metadata").null_count(), 500);
    assert_migration_time(after.column("timestamp"), start, end);
    assert_all_str(after.column("category"), "general");
    for name in ["metadata", "timestamp", "category"] {
        let schema = after.schema();
        assert!(
            schema.field_with_name(name).unwrap().is_nullable(),
            "{name} is nullable"
        );
    }

    let v = version(&table).await;
    assert!(migrator.run().await.unwrap().is_noop());
    assert_eq!(version(&table).await, v);
}

/// Seed (c): columns the migration does not mention are kept intact.
#[tokio::test]
async fn seed_c_unmentioned_columns_are_untouched() {
    let db = testing::memory_db().await.unwrap();
    let base = testing::documents_batch(0..300, 384);
    let source: StringArray = (0..300)
        .map(|i| (i % 3 != 0).then(|| format!("src-{i}")))
        .collect();
    let score: Float64Array = (0..300).map(|i| Some(f64::from(i) * 0.5)).collect();
    let mut fields = base.schema().fields().to_vec();
    fields.push(Arc::new(Field::new("source", DataType::Utf8, true)));
    fields.push(Arc::new(Field::new("score", DataType::Float64, false)));
    let mut columns = base.columns().to_vec();
    columns.push(Arc::new(source));
    columns.push(Arc::new(score));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let table = db.create_table("documents", batch).execute().await.unwrap();
    let before = Snapshot::take(&table, "id").await.unwrap();

    let migrator = Migrator::new(db.clone()).add(
        AddColumns::new("0001_seed_c", "documents")
            .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
            .column(NewColumn::new("is_active", DataType::Boolean).default_value(true)),
    );
    migrator.run().await.unwrap();

    let after = Snapshot::take(&table, "id").await.unwrap();
    after.assert_same_columns(&before, &["id", "text", "vector", "source", "score"]);
    assert_eq!(
        after.column("source").null_count(),
        100,
        "nulls kept as nulls"
    );
    assert_all_str(after.column("category"), "general");
    assert!(migrator.run().await.unwrap().is_noop());
}

/// After the migration, the application keeps appending rows written
/// against the old schema; they get NULL in the new nullable columns.
#[tokio::test]
async fn old_application_writes_keep_working() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 100, 16)
        .await
        .unwrap();
    Migrator::new(db.clone())
        .add(
            AddColumns::new("0001", "documents")
                .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
                .column(NewColumn::new("metadata", DataType::Utf8)),
        )
        .run()
        .await
        .unwrap();

    // A handle opened before the migration must catch up first: an append
    // from the old version conflicts with the schema change.
    table.checkout_latest().await.unwrap();
    table
        .add(testing::documents_batch(100..110, 16))
        .execute()
        .await
        .unwrap();

    let after = Snapshot::take(&table, "id").await.unwrap();
    assert_eq!(after.num_rows(), 110);
    let category = after.column("category").as_string::<i32>();
    assert!((0..100).all(|i| category.value(i) == "general"));
    assert!((100..110).all(|i| category.is_null(i)), "new rows get NULL");
}

/// A `not_null` column is the caller's explicit choice: LanceDB then
/// refuses appends that do not set it.
#[tokio::test]
async fn not_null_column_rejects_old_writes() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    Migrator::new(db.clone())
        .add(
            AddColumns::new("0001", "documents").column(
                NewColumn::new("priority", DataType::Int32)
                    .default_value(1)
                    .not_null(),
            ),
        )
        .run()
        .await
        .unwrap();

    table.checkout_latest().await.unwrap();
    let schema = table.schema().await.unwrap();
    assert!(!schema.field_with_name("priority").unwrap().is_nullable());
    let old_write = table
        .add(testing::documents_batch(10..12, 4))
        .execute()
        .await;
    assert!(
        old_write.is_err(),
        "an append without a NOT NULL column fails"
    );
    assert_eq!(table.count_rows(None).await.unwrap(), 10);
}

/// Every supported default type is stored with its declared type and value.
#[tokio::test]
async fn every_default_type_round_trips() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 20, 4)
        .await
        .unwrap();
    let ts = |unit| DataType::Timestamp(unit, None);
    let columns = [
        NewColumn::new("i8", DataType::Int8).default_value(-7i8),
        NewColumn::new("u16", DataType::UInt16).default_value(65_000u16),
        NewColumn::new("i64", DataType::Int64).default_value(i64::MIN),
        NewColumn::new("u64", DataType::UInt64).default_value(u64::MAX),
        NewColumn::new("f32", DataType::Float32).default_value(0.25f32),
        NewColumn::new("f64_from_int", DataType::Float64).default_value(3),
        NewColumn::new("f64_nan", DataType::Float64).default_value(f64::NAN),
        NewColumn::new("large", DataType::LargeUtf8).default_value("it's large"),
        NewColumn::new("d32", DataType::Date32).default_value(DefaultValue::date(2024, 2, 29)),
        NewColumn::new("d64", DataType::Date64).default_value(DefaultValue::date(1969, 12, 31)),
        NewColumn::new("ts_s", ts(TimeUnit::Second))
            .default_value(DefaultValue::TimestampMicros(1_700_000_000_123_456)),
        NewColumn::new("ts_ms", ts(TimeUnit::Millisecond))
            .default_value(DefaultValue::TimestampMicros(1_700_000_000_123_456)),
        NewColumn::new("ts_ns", ts(TimeUnit::Nanosecond))
            .default_value(DefaultValue::TimestampMicros(1_700_000_000_123_456)),
        NewColumn::new("embedding_768", testing::vector_type(768)),
        NewColumn::new("flag", DataType::Boolean).default_value(false),
    ];
    let migration = columns
        .into_iter()
        .fold(AddColumns::new("types", "documents"), AddColumns::column);
    Migrator::new(db.clone())
        .add(migration)
        .run()
        .await
        .unwrap();

    let s = Snapshot::take(&table, "id").await.unwrap();
    let one = |name: &str| {
        let c = s.column(name);
        assert_eq!(c.null_count(), 0, "{name} has no nulls");
        c.slice(7, 1)
    };
    assert_eq!(one("i8").as_primitive::<Int8Type>().value(0), -7);
    assert_eq!(one("u16").as_primitive::<UInt16Type>().value(0), 65_000);
    assert_eq!(one("i64").as_primitive::<Int64Type>().value(0), i64::MIN);
    assert_eq!(one("u64").as_primitive::<UInt64Type>().value(0), u64::MAX);
    assert_eq!(one("f32").as_primitive::<Float32Type>().value(0), 0.25);
    assert_eq!(
        one("f64_from_int").as_primitive::<Float64Type>().value(0),
        3.0
    );
    assert!(
        one("f64_nan")
            .as_primitive::<Float64Type>()
            .value(0)
            .is_nan()
    );
    assert_eq!(one("large").as_string::<i64>().value(0), "it's large");
    assert_eq!(one("d32").as_primitive::<Date32Type>().value(0), 19_782);
    assert_eq!(
        one("d64").as_primitive::<Date64Type>().value(0),
        -86_400_000
    );
    assert_eq!(
        one("ts_s").as_primitive::<TimestampSecondType>().value(0),
        1_700_000_000
    );
    assert_eq!(
        one("ts_ms")
            .as_primitive::<TimestampMillisecondType>()
            .value(0),
        1_700_000_000_123
    );
    assert_eq!(
        one("ts_ns")
            .as_primitive::<TimestampNanosecondType>()
            .value(0),
        1_700_000_000_123_456_000
    );
    assert!(!one("flag").as_boolean().value(0));
    let vectors = s.column("embedding_768");
    assert_eq!(vectors.null_count(), 20, "all-null vector column");
    assert_eq!(vectors.data_type(), &testing::vector_type(768));
}
