//! `CreateTable` and `TargetSchema` on real tables: a fresh database
//! brought up by the list that migrates it later, tables adopted or
//! refused with their differences named, declarations planned into steps,
//! destructive steps refused unless allowed, a failed attempt undone, and
//! replicas racing on a fresh database.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, Int32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use lancedb::index::Index;
use lancedb::index::scalar::BTreeIndexBuilder;
use lancedb::table::{ColumnAlteration, NewColumnTransform};
use lancedb::{Connection, Table};
use lancedb_migrate::testing;
use lancedb_migrate::{
    AddColumns, CreateTable, DefaultValue, Error, LedgerStatus, Migrator, NewColumn, PlanState,
    TargetSchema,
};

use crate::support::{failure, field_names, rows, sorted_ids, version};

const DIMS: usize = 8;

fn documents_fields() -> Vec<Field> {
    testing::documents_schema(DIMS)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect()
}

fn with(extra: impl IntoIterator<Item = Field>) -> Schema {
    let mut fields = documents_fields();
    fields.extend(extra);
    Schema::new(fields)
}

async fn open(db: &Connection, name: &str) -> Option<Table> {
    db.open_table(name).execute().await.ok()
}

/// Every value of a text column, in id order.
async fn texts(table: &Table, column: &str) -> Vec<Option<String>> {
    let mut out: Vec<(i64, Option<String>)> = Vec::new();
    for batch in rows(table, &["id", column]).await {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let values = batch.column(1).as_string::<i32>();
        for i in 0..batch.num_rows() {
            let value = values.is_valid(i).then(|| values.value(i).to_owned());
            out.push((ids.value(i), value));
        }
    }
    out.sort();
    out.into_iter().map(|(_, v)| v).collect()
}

#[tokio::test]
async fn a_fresh_database_is_created_and_migrated_by_one_list() {
    let db = testing::memory_db().await.unwrap();
    let list = || {
        Migrator::new(db.clone())
            .add(
                CreateTable::new("0000_create", "documents", testing::documents_schema(DIMS))
                    .rows(testing::documents_batch(0..300, DIMS))
                    .index("id", Index::BTree(BTreeIndexBuilder::default())),
            )
            .add(
                AddColumns::new("0001_category", "documents")
                    .column(NewColumn::new("category", DataType::Utf8).default_value("general")),
            )
    };
    let plan = list().plan().await.unwrap();
    let states: Vec<&PlanState> = plan.steps().iter().map(|s| &s.state).collect();
    assert_eq!(states, [&PlanState::Pending, &PlanState::Pending], "{plan}");
    assert!(
        plan.to_string().contains("create table `documents`"),
        "{plan}"
    );
    assert!(open(&db, "documents").await.is_none(), "plan wrote nothing");

    let report = list().run().await.unwrap();
    assert_eq!(report.applied().count(), 2);
    let table = open(&db, "documents").await.unwrap();
    assert_eq!(sorted_ids(&table).await, (0..300).collect::<Vec<_>>());
    assert_eq!(
        texts(&table, "category").await,
        vec![Some("general".to_owned()); 300]
    );
    let texts_now = texts(&table, "text").await;
    assert_eq!(
        texts_now[7].as_deref(),
        Some(testing::document_text(7).as_str())
    );
    let indexes = table.list_indices().await.unwrap();
    assert_eq!(indexes.len(), 1);
    assert_eq!(
        (indexes[0].name.as_str(), indexes[0].columns.as_slice()),
        ("id_idx", ["id".to_owned()].as_slice())
    );

    let v = version(&table).await;
    assert!(list().run().await.unwrap().is_noop());
    assert_eq!(version(&table).await, v);
    assert_eq!(
        table.count_rows(None).await.unwrap(),
        300,
        "the first rows are written once"
    );
}

#[tokio::test]
async fn a_table_with_the_declared_schema_is_adopted_without_writing_its_rows() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 50, DIMS)
        .await
        .unwrap();
    let before = version(&table).await;
    let migrator = Migrator::new(db.clone()).add(
        CreateTable::new("0000_create", "documents", testing::documents_schema(DIMS))
            .rows(testing::documents_batch(1000..1010, DIMS)),
    );
    assert!(
        migrator
            .plan()
            .await
            .unwrap()
            .to_string()
            .contains("adopt the existing table")
    );
    assert_eq!(migrator.run().await.unwrap().applied().count(), 1);
    assert_eq!(sorted_ids(&table).await, (0..50).collect::<Vec<_>>());
    assert_eq!(version(&table).await, before, "adopting writes no version");
    assert!(migrator.applied("0000_create").await.unwrap());
}

#[tokio::test]
async fn a_table_with_another_schema_is_refused_naming_each_difference() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 20, DIMS)
        .await
        .unwrap();
    let before = version(&table).await;
    let mut fields = documents_fields();
    fields[1] = Field::new("text", DataType::LargeUtf8, false);
    fields.push(Field::new("category", DataType::Utf8, true));
    let migrator = Migrator::new(db.clone()).add(CreateTable::new(
        "0000_create",
        "documents",
        Schema::new(fields),
    ));

    let plan = migrator.plan().await.unwrap();
    assert!(
        matches!(&plan.steps()[0].state, PlanState::WouldFail { reason } if reason.contains("`text` is Utf8, declared LargeUtf8")),
        "{plan}"
    );
    let err = migrator.run().await.unwrap_err();
    let (cause, _, _) = failure(&err);
    let Error::SchemaMismatch {
        table: t,
        differences,
    } = cause
    else {
        panic!("expected SchemaMismatch, got {cause:?}");
    };
    assert_eq!(t, "documents");
    assert_eq!(
        differences,
        &[
            "column `text` is Utf8, declared LargeUtf8".to_owned(),
            "column `category` is missing".to_owned()
        ]
    );
    assert_eq!(version(&table).await, before, "nothing written");
}

#[tokio::test]
async fn a_failed_creation_drops_the_table_again_and_the_next_run_creates_it() {
    let db = testing::memory_db().await.unwrap();
    // A BTree cannot index vectors: the index fails after the table was
    // created and its rows written.
    let failing = CreateTable::new("0000_create", "documents", testing::documents_schema(DIMS))
        .rows(testing::documents_batch(0..3, DIMS))
        .index("vector", Index::BTree(BTreeIndexBuilder::default()));
    let err = Migrator::new(db.clone())
        .add(failing)
        .run()
        .await
        .unwrap_err();
    let (cause, _, _) = failure(&err);
    assert!(matches!(cause, Error::Index { .. }), "{cause:?}");
    assert!(
        open(&db, "documents").await.is_none(),
        "the created table is dropped again"
    );

    let fixed = Migrator::new(db.clone()).add(
        CreateTable::new("0000_create", "documents", testing::documents_schema(DIMS))
            .rows(testing::documents_batch(0..3, DIMS)),
    );
    let ledger = fixed.ledger().await.unwrap();
    assert_eq!(ledger[0].status, LedgerStatus::Failed);
    // An edited failed migration is not drift: it never applied.
    assert_eq!(fixed.run().await.unwrap().applied().count(), 1);
    let table = open(&db, "documents").await.unwrap();
    assert_eq!(sorted_ids(&table).await, vec![0, 1, 2]);
}

#[tokio::test]
async fn replicas_starting_at_once_on_a_fresh_database_create_the_table_once() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().to_str().unwrap().to_owned();
    let mut replicas = Vec::new();
    for _ in 0..4 {
        let uri = uri.clone();
        replicas.push(tokio::spawn(async move {
            let db = lancedb::connect(&uri).execute().await.unwrap();
            Migrator::new(db)
                .when_locked(lancedb_migrate::WhenLocked::Wait)
                // As a `Box<dyn Migration>`: the table is still created.
                .add(Box::new(
                    CreateTable::new("0000_create", "documents", testing::documents_schema(DIMS))
                        .rows(testing::documents_batch(0..40, DIMS)),
                ) as Box<dyn lancedb_migrate::Migration>)
                .add(
                    TargetSchema::new(
                        "documents",
                        with([Field::new("category", DataType::Utf8, false)]),
                    )
                    .default("category", "general"),
                )
                .run()
                .await
                .unwrap()
                .applied()
                .count()
        }));
    }
    let mut applied = 0;
    for r in replicas {
        applied += r.await.unwrap();
    }
    assert_eq!(applied, 2, "each migration applied by one replica");
    let db = lancedb::connect(&uri).execute().await.unwrap();
    let table = open(&db, "documents").await.unwrap();
    assert_eq!(sorted_ids(&table).await, (0..40).collect::<Vec<_>>());
    assert_eq!(
        texts(&table, "category").await,
        vec![Some("general".to_owned()); 40]
    );
}

fn metadata_target() -> TargetSchema {
    let utc = Some(Arc::from("UTC"));
    TargetSchema::new(
        "documents",
        with([
            Field::new("category", DataType::Utf8, false),
            Field::new("is_active", DataType::Boolean, false),
            Field::new(
                "created_at",
                DataType::Timestamp(TimeUnit::Microsecond, utc),
                false,
            ),
            Field::new("metadata", DataType::Utf8, true),
        ]),
    )
    .default("category", "general")
    .default("is_active", true)
    .default("created_at", DefaultValue::MigrationTime)
}

#[tokio::test]
async fn a_declaration_adds_the_missing_columns_with_their_defaults() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 60, DIMS)
        .await
        .unwrap();
    let target = metadata_target();
    assert!(lancedb_migrate::Migration::id(&target).starts_with("documents@schema:"));
    let migrator = Migrator::new(db.clone()).add(target);
    let plan = migrator.plan().await.unwrap();
    assert!(
        plan.to_string()
            .contains("add 4 column(s): category, is_active, created_at, metadata"),
        "{plan}"
    );
    let report = migrator.run().await.unwrap();
    assert_eq!(report.applied().count(), 1);

    table.checkout_latest().await.unwrap();
    let schema = table.schema().await.unwrap();
    assert_eq!(
        field_names(&schema),
        // All-NULL columns are added first (metadata only), then the
        // defaulted ones in one commit.
        [
            "id",
            "text",
            "vector",
            "metadata",
            "category",
            "is_active",
            "created_at"
        ]
    );
    assert!(!schema.field_with_name("category").unwrap().is_nullable());
    assert!(schema.field_with_name("metadata").unwrap().is_nullable());
    assert_eq!(
        texts(&table, "category").await,
        vec![Some("general".to_owned()); 60]
    );
    assert_eq!(texts(&table, "metadata").await, vec![None; 60]);
    let mut times = Vec::new();
    for batch in rows(&table, &["is_active", "created_at"]).await {
        let active = batch.column(0).as_boolean();
        assert_eq!(active.true_count(), batch.num_rows());
        let at = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        times.extend(at.values().iter().copied());
    }
    times.dedup();
    assert_eq!(times.len(), 1, "one migration time for every row");
    assert!(
        times[0] > 1_700_000_000_000_000,
        "a real time: {}",
        times[0]
    );
    assert_eq!(sorted_ids(&table).await, (0..60).collect::<Vec<_>>());

    assert!(migrator.run().await.unwrap().is_noop());
}

#[tokio::test]
async fn a_changed_declaration_applies_the_difference_and_keeps_the_earlier_as_history() {
    let db = testing::memory_db().await.unwrap();
    let first = TargetSchema::new("documents", with([]));
    let first_id = lancedb_migrate::Migration::id(&first).to_owned();
    let report = Migrator::new(db.clone()).add(first).run().await.unwrap();
    assert_eq!(report.applied().count(), 1);
    let table = open(&db, "documents").await.unwrap();
    assert_eq!(table.count_rows(None).await.unwrap(), 0, "created empty");
    table
        .add(testing::documents_batch(0..25, DIMS))
        .execute()
        .await
        .unwrap();

    let second = TargetSchema::new(
        "documents",
        with([Field::new("category", DataType::Utf8, false)]),
    )
    .default("category", "general");
    let second_id = lancedb_migrate::Migration::id(&second).to_owned();
    assert_ne!(first_id, second_id);
    // The earlier declaration is not reported missing: the default policy
    // (Refuse) would fail the run.
    let migrator = Migrator::new(db.clone()).add(second);
    let plan = migrator.plan().await.unwrap();
    assert!(plan.unlisted().is_empty(), "{plan}");
    assert_eq!(migrator.run().await.unwrap().applied().count(), 1);
    assert_eq!(
        texts(&table, "category").await,
        vec![Some("general".to_owned()); 25]
    );
    let ledger = migrator.ledger().await.unwrap();
    let mut ids: Vec<&str> = ledger.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = [first_id.as_str(), second_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(migrator.run().await.unwrap().is_noop());
}

/// The documents table with a `tag` (text) and a `score` (Float64) and a
/// `count` (Int32) column.
async fn tagged(db: &Connection) -> Table {
    let table = testing::documents_table(db, "documents", 30, DIMS)
        .await
        .unwrap();
    let columns = vec![
        (
            "tag".to_owned(),
            "concat('t', CAST(id AS VARCHAR))".to_owned(),
        ),
        ("score".to_owned(), "CAST(id AS DOUBLE) * 1.5".to_owned()),
        ("count".to_owned(), "CAST(id * 1000 AS INT)".to_owned()),
    ];
    table
        .add_columns()
        .transform(NewColumnTransform::SqlExpressions(columns))
        .execute()
        .await
        .unwrap();
    let relax: Vec<ColumnAlteration> = ["tag", "score", "count"]
        .into_iter()
        .map(|c| ColumnAlteration::new(c.to_owned()).set_nullable(true))
        .collect();
    table.alter_columns(&relax).await.unwrap();
    table
}

#[tokio::test]
async fn destructive_differences_are_refused_until_allowed() {
    let db = testing::memory_db().await.unwrap();
    let table = tagged(&db).await;
    let before = version(&table).await;
    // `tag` is not declared, `score` is narrowed: refused, both named.
    let target = || {
        TargetSchema::new(
            "documents",
            with([
                Field::new("score", DataType::Float32, true),
                Field::new("count", DataType::Int32, true),
            ]),
        )
    };
    let err = Migrator::new(db.clone())
        .add(target())
        .run()
        .await
        .unwrap_err();
    let (cause, _, _) = failure(&err);
    let Error::Destructive { changes, .. } = cause else {
        panic!("expected Destructive, got {cause:?}");
    };
    assert_eq!(
        changes,
        &[
            "drop column `tag`".to_owned(),
            "narrow column `score` from Float64 to Float32".to_owned()
        ]
    );
    assert_eq!(version(&table).await, before, "nothing written");

    let allowed = target().allow_drops().allow_narrowing();
    let report = Migrator::new(db.clone())
        .on_missing(lancedb_migrate::Divergence::Allow)
        .add(allowed)
        .run()
        .await
        .unwrap();
    assert_eq!(report.applied().count(), 1);
    table.checkout_latest().await.unwrap();
    let schema = table.schema().await.unwrap();
    assert!(schema.field_with_name("tag").is_err());
    assert_eq!(
        schema.field_with_name("score").unwrap().data_type(),
        &DataType::Float32
    );
    let mut scores: Vec<(i64, f32)> = Vec::new();
    for batch in rows(&table, &["id", "score"]).await {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let s = batch
            .column(1)
            .as_primitive::<arrow_array::types::Float32Type>();
        scores.extend((0..batch.num_rows()).map(|i| (ids.value(i), s.value(i))));
    }
    scores.sort_by_key(|(id, _)| *id);
    let expected: Vec<(i64, f32)> = (0..30).map(|i| (i, i as f32 * 1.5)).collect();
    assert_eq!(scores, expected);
}

#[tokio::test]
async fn a_widened_type_and_a_relaxed_column_are_planned_and_applied() {
    let db = testing::memory_db().await.unwrap();
    let table = tagged(&db).await;
    let mut fields = documents_fields();
    fields[1] = Field::new("text", DataType::Utf8, true); // relaxed
    fields.extend([
        Field::new("tag", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("count", DataType::Int64, true), // widened
    ]);
    let migrator =
        Migrator::new(db.clone()).add(TargetSchema::new("documents", Schema::new(fields)));
    let plan = migrator.plan().await.unwrap();
    assert!(
        plan.to_string()
            .contains("cast `count` to Int64; make text nullable"),
        "{plan}"
    );
    migrator.run().await.unwrap();
    table.checkout_latest().await.unwrap();
    let schema = table.schema().await.unwrap();
    assert!(schema.field_with_name("text").unwrap().is_nullable());
    assert_eq!(
        schema.field_with_name("count").unwrap().data_type(),
        &DataType::Int64
    );
    let mut counts: Vec<(i64, i64)> = Vec::new();
    for batch in rows(&table, &["id", "count"]).await {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let c = batch.column(1).as_primitive::<Int64Type>();
        counts.extend((0..batch.num_rows()).map(|i| (ids.value(i), c.value(i))));
    }
    counts.sort_unstable();
    assert_eq!(counts, (0..30).map(|i| (i, i * 1000)).collect::<Vec<_>>());
    let texts_now = texts(&table, "text").await;
    assert_eq!(
        texts_now[3].as_deref(),
        Some(testing::document_text(3).as_str())
    );
}

#[tokio::test]
async fn differences_no_step_reaches_are_refused_as_mismatches() {
    let db = testing::memory_db().await.unwrap();
    let table = tagged(&db).await;
    let before = version(&table).await;
    let mut fields = documents_fields();
    fields[2] = Field::new("vector", testing::vector_type(16), false);
    fields.extend([
        Field::new("tag", DataType::Int64, true),
        Field::new("score", DataType::Float64, false),
        Field::new("count", DataType::Int32, true),
    ]);
    let err = Migrator::new(db.clone())
        .add(TargetSchema::new("documents", Schema::new(fields)))
        .run()
        .await
        .unwrap_err();
    let (cause, _, _) = failure(&err);
    let Error::SchemaMismatch { differences, .. } = cause else {
        panic!("expected SchemaMismatch, got {cause:?}");
    };
    assert_eq!(differences.len(), 3, "{differences:?}");
    assert!(differences[0].contains("`vector`") && differences[0].contains("ReEmbed"));
    assert!(differences[1].starts_with("column `tag` is Utf8, declared Int64"));
    assert!(differences[2].contains("`score` is nullable, declared NOT NULL"));
    assert!(
        cause
            .to_string()
            .contains("does not match its declared schema"),
        "{cause}"
    );
    assert_eq!(version(&table).await, before);
}

#[tokio::test]
async fn a_failing_step_rolls_every_step_back() {
    let db = testing::memory_db().await.unwrap();
    let table = tagged(&db).await;
    let before = version(&table).await;
    // `tag` is dropped first; then `count` (up to 29 000) is narrowed to
    // Int8, which its values do not fit: the cast refuses, and the drop is
    // undone.
    let target = TargetSchema::new(
        "documents",
        with([
            Field::new("score", DataType::Float64, true),
            Field::new("count", DataType::Int8, true),
        ]),
    )
    .allow_drops()
    .allow_narrowing();
    let err = Migrator::new(db.clone())
        .add(target)
        .run()
        .await
        .unwrap_err();
    let (cause, _, rollback) = failure(&err);
    assert!(matches!(cause, Error::LossyCast { .. }), "{cause:?}");
    assert!(
        matches!(rollback, lancedb_migrate::Rollback::Restored { .. }),
        "{rollback:?}"
    );
    assert!(
        version(&table).await > before,
        "the drop was committed, then undone"
    );
    let schema = table.schema().await.unwrap();
    assert_eq!(
        field_names(&schema),
        ["id", "text", "vector", "tag", "score", "count"]
    );
    assert_eq!(
        texts(&table, "tag").await,
        (0..30).map(|i| Some(format!("t{i}"))).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_declaration_lands_beside_an_application_appending() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().to_str().unwrap().to_owned();
    let db = lancedb::connect(&uri).execute().await.unwrap();
    testing::documents_table(&db, "documents", 200, DIMS)
        .await
        .unwrap();
    let app = lancedb::connect(&uri).execute().await.unwrap();
    let appender = tokio::spawn(async move {
        let table = app.open_table("documents").execute().await.unwrap();
        let mut next = 1000;
        for _ in 0..20 {
            let schema = table.schema().await.unwrap();
            let mut batch = testing::documents_batch(next..next + 5, DIMS);
            // Once the columns are there, the application writes them too.
            if schema.field_with_name("category").is_ok() {
                break;
            }
            batch = RecordBatch::try_new(batch.schema(), batch.columns().to_vec()).unwrap();
            match table.add(batch).execute().await {
                Ok(_) => next += 5,
                Err(_) => tokio::task::yield_now().await,
            }
        }
        next
    });
    let target = TargetSchema::new(
        "documents",
        with([Field::new("category", DataType::Utf8, true)]),
    )
    .default("category", "general");
    Migrator::new(db.clone()).add(target).run().await.unwrap();
    let next = appender.await.unwrap();
    let table = open(&db, "documents").await.unwrap();
    let mut expected: Vec<i64> = (0..200).collect();
    expected.extend(1000..next);
    assert_eq!(sorted_ids(&table).await, expected, "no row lost");
    let categories = texts(&table, "category").await;
    assert!(
        categories[..200]
            .iter()
            .all(|c| c.as_deref() == Some("general"))
    );
}

#[tokio::test]
async fn invalid_declarations_are_refused_before_anything_is_written() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 10, DIMS)
        .await
        .unwrap();
    let before = version(&table).await;
    let cases = [
        // A default on a column it does not declare.
        TargetSchema::new("documents", with([])).default("nope", 1),
        // A NOT NULL column without a default, on a table with rows.
        TargetSchema::new("documents", with([Field::new("n", DataType::Int32, false)])),
        // A default of the wrong type.
        TargetSchema::new("documents", with([Field::new("n", DataType::Int32, true)]))
            .default("n", "text"),
    ];
    let mut kinds = Vec::new();
    for target in cases {
        let err = Migrator::new(db.clone())
            .add(target)
            .run()
            .await
            .unwrap_err();
        let (cause, _, _) = failure(&err);
        kinds.push(match cause {
            Error::InvalidMigration { .. } => "invalid",
            Error::MissingDefault { .. } => "missing default",
            Error::DefaultTypeMismatch { .. } => "default type",
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(kinds, ["invalid", "missing default", "default type"]);
    assert_eq!(version(&table).await, before);
    // And a CreateTable whose first rows are of other columns.
    let rows = RecordBatch::try_from_iter([(
        "id",
        Arc::new(Int32Array::from(vec![1])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    let err = Migrator::new(db.clone())
        .add(CreateTable::new("c", "other", testing::documents_schema(DIMS)).rows(rows))
        .run()
        .await
        .unwrap_err();
    let (cause, _, _) = failure(&err);
    assert!(matches!(cause, Error::InvalidMigration { .. }), "{cause:?}");
    assert!(open(&db, "other").await.is_none(), "nothing created");
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Document {
    id: i64,
    text: String,
    vector: Vec<f32>,
    category: String,
    is_active: bool,
    priority: i32,
    metadata: Option<String>,
}

impl Default for Document {
    fn default() -> Self {
        Self {
            id: 0,
            text: String::new(),
            vector: Vec::new(),
            category: "general".to_owned(),
            is_active: true,
            priority: 3,
            metadata: None,
        }
    }
}

#[tokio::test]
async fn a_row_type_declares_the_table_and_its_defaults() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 40, DIMS)
        .await
        .unwrap();
    let target = TargetSchema::from_row::<Document>("documents")
        .unwrap()
        .vector("vector", DIMS as i32);
    let report = Migrator::new(db.clone()).add(target).run().await.unwrap();
    assert_eq!(report.applied().count(), 1);
    assert_eq!(
        texts(&table, "category").await,
        vec![Some("general".to_owned()); 40]
    );
    assert_eq!(texts(&table, "metadata").await, vec![None; 40]);
    for batch in rows(&table, &["is_active", "priority"]).await {
        assert_eq!(batch.column(0).as_boolean().true_count(), batch.num_rows());
        let p = batch
            .column(1)
            .as_primitive::<arrow_array::types::Int32Type>();
        assert!(p.values().iter().all(|v| *v == 3));
    }
    // The rows read back as the row type.
    let batches = rows(
        &table,
        &[
            "id",
            "text",
            "vector",
            "category",
            "is_active",
            "priority",
            "metadata",
        ],
    )
    .await;
    let batch = &batches[0];
    let docs: Vec<Document> = serde_arrow::from_record_batch(batch).unwrap();
    assert_eq!(docs.len(), batch.num_rows());
    assert!(
        docs.iter()
            .all(|d| d.category == "general" && d.priority == 3)
    );
    assert_eq!(docs[0].vector.len(), DIMS);
}
