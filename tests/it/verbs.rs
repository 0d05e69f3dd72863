//! `DropColumns` and `RenameColumn` on real tables: the data after, bad
//! input refused with the table untouched, indexes and the clients'
//! embedding configuration following a rename, the dropped data brought
//! back by a rollback, and the conformance check.

use std::sync::Arc;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_schema::{DataType, Field};
use futures::TryStreamExt;
use lancedb::query::{ExecutableQuery, QueryBase};
use lancedb::table::NewColumnTransform;
use lancedb::{Connection, Table};
use lancedb_migrate::testing;
use lancedb_migrate::{
    CastColumn, DropColumns, Error, FillColumn, LaterWrites, Migrator, RenameColumn,
};

use crate::support::{field_names, version};

/// The table's column names at its latest version.
async fn names(table: &Table) -> Vec<String> {
    table.checkout_latest().await.unwrap();
    field_names(&table.schema().await.unwrap())
}

const DIMS: usize = 8;

/// The documents table with two more columns: `category` (text, nullable,
/// a value per row) and `score` (an integer, nullable, the id times 10).
async fn documents(db: &Connection, rows: usize) -> Table {
    let table = testing::documents_table(db, "documents", rows, DIMS)
        .await
        .unwrap();
    let columns = vec![
        (
            "category".to_owned(),
            "concat('c', CAST(id % 3 AS VARCHAR))".to_owned(),
        ),
        ("score".to_owned(), "id * 10".to_owned()),
    ];
    table
        .add_columns()
        .transform(NewColumnTransform::SqlExpressions(columns))
        .execute()
        .await
        .unwrap();
    table
}

/// The id of the row nearest to row `id`'s vector, searching `column`.
async fn nearest(table: &Table, column: &str, id: i64) -> i64 {
    let hits: Vec<_> = table
        .vector_search(testing::document_vector(id, DIMS))
        .unwrap()
        .column(column)
        .limit(1)
        .execute()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    hits[0]
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(0)
}

/// The conformance check of `migration` on a 40-row documents table.
#[expect(
    clippy::future_not_send,
    reason = "awaited by the test on its own runtime, as `testing::conformance`"
)]
async fn conforms<M: lancedb_migrate::Migration + 'static>(migration: impl Fn() -> M) {
    testing::conformance(migration, "id", async |db| {
        documents(db, 40).await;
    })
    .await;
}

/// An IVF_FLAT index (two partitions) on `vector`.
async fn index_vectors(table: &Table) {
    table
        .create_index(
            &["vector"],
            lancedb::index::Index::IvfFlat(
                lancedb::index::vector::IvfFlatIndexBuilder::default().num_partitions(2),
            ),
        )
        .execute()
        .await
        .unwrap();
}

/// `(id, column)` for every row, ordered by id, with `column` as Arrow
/// displays it.
async fn values(table: &Table, column: &str) -> Vec<(i64, Option<String>)> {
    table.checkout_latest().await.unwrap();
    let batches: Vec<_> = table
        .query()
        .select(lancedb::query::Select::columns(&["id", column]))
        .execute()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for batch in &batches {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let column = batch.column(1);
        let options = arrow_cast::display::FormatOptions::default();
        let texts =
            arrow_cast::display::ArrayFormatter::try_new(column.as_ref(), &options).unwrap();
        for row in 0..batch.num_rows() {
            out.push((
                ids.value(row),
                column.is_valid(row).then(|| texts.value(row).to_string()),
            ));
        }
    }
    out.sort();
    out
}

/// The dropped columns are gone, the others keep their values, nothing
/// was rewritten (one metadata-only commit), and a rerun is a no-op.
#[tokio::test]
async fn dropping_columns_keeps_the_others_and_writes_no_data() {
    let tmp = testing::TempDb::new().await.unwrap();
    let db = tmp.db();
    let table = documents(db, 50).await;
    let category = values(&table, "category").await;
    let text = values(&table, "text").await;
    let before = version(&table).await;
    let data = tmp.path().join("documents.lance").join("data");
    let files = || std::fs::read_dir(&data).unwrap().count();
    let files_before = files();
    let migrator = Migrator::new(db.clone()).add(
        DropColumns::new("0001_drop", "documents")
            .column("score")
            .column("vector"),
    );
    let report = migrator.run().await.unwrap();
    assert_eq!(report.applied().count(), 1);
    assert_eq!(names(&table).await, ["id", "text", "category"]);
    assert_eq!(values(&table, "category").await, category);
    assert_eq!(values(&table, "text").await, text);
    assert_eq!(table.count_rows(None).await.unwrap(), 50);
    // One commit, and no data file written.
    assert_eq!(version(&table).await, before + 1);
    assert_eq!(files(), files_before);
    assert!(migrator.run().await.unwrap().is_noop());
    assert_eq!(version(&table).await, before + 1);
}

/// A rollback to the drop brings the columns back with their values.
#[tokio::test]
async fn a_rollback_brings_dropped_columns_back_with_their_values() {
    let tmp = testing::TempDb::new().await.unwrap();
    let table = documents(tmp.db(), 30).await;
    let score = values(&table, "score").await;
    let migrator = Migrator::new(tmp.db().clone())
        .add(DropColumns::new("0001_drop", "documents").column("score"));
    migrator.run().await.unwrap();
    assert!(!names(&table).await.contains(&"score".to_owned()));
    migrator
        .rollback_to("0001_drop", LaterWrites::Refuse)
        .await
        .unwrap();
    assert_eq!(values(&table, "score").await, score);
    assert_eq!(score[7], (7, Some("70".to_owned())));
}

/// Bad input fails before anything is written, with a typed error.
#[tokio::test]
async fn bad_drops_and_renames_are_refused_and_the_table_is_untouched() {
    let db = testing::memory_db().await.unwrap();
    let table = documents(&db, 10).await;
    let before = version(&table).await;
    let cause = |e: Error| match e {
        Error::MigrationFailed { source, .. } => {
            Arc::try_unwrap(source).unwrap_or_else(|s| panic!("shared cause {s:?}"))
        }
        other => other,
    };
    let run = |m: Box<dyn lancedb_migrate::Migration>| {
        let db = db.clone();
        async move { Migrator::new(db).add(m).run().await.unwrap_err() }
    };

    let e = cause(run(Box::new(DropColumns::new("d1", "documents").column("nope"))).await);
    assert!(
        matches!(&e, Error::ColumnNotFound { column, .. } if column == "nope"),
        "{e:?}"
    );
    let e = cause(run(Box::new(DropColumns::new("d2", "documents"))).await);
    assert!(matches!(e, Error::InvalidMigration { .. }), "{e:?}");
    let every = ["id", "text", "vector", "category", "score"]
        .iter()
        .fold(DropColumns::new("d3", "documents"), |m, c| m.column(*c));
    let e = cause(run(Box::new(every)).await);
    assert!(matches!(e, Error::InvalidMigration { .. }), "{e:?}");
    let twice = DropColumns::new("d4", "documents")
        .column("score")
        .column("score");
    let e = cause(run(Box::new(twice)).await);
    assert!(matches!(e, Error::InvalidMigration { .. }), "{e:?}");

    let e = cause(run(Box::new(RenameColumn::new("r1", "documents", "nope", "x"))).await);
    assert!(
        matches!(&e, Error::ColumnNotFound { column, .. } if column == "nope"),
        "{e:?}"
    );
    let e = cause(
        run(Box::new(RenameColumn::new(
            "r2",
            "documents",
            "score",
            "category",
        )))
        .await,
    );
    assert!(
        matches!(&e, Error::ColumnExists { column, .. } if column == "category"),
        "{e:?}"
    );
    let e = cause(
        run(Box::new(RenameColumn::new(
            "r3",
            "documents",
            "score",
            "score",
        )))
        .await,
    );
    assert!(matches!(e, Error::InvalidMigration { .. }), "{e:?}");

    let e = cause(run(Box::new(DropColumns::new("d5", "missing").column("x"))).await);
    assert!(
        matches!(&e, Error::TableNotFound { table } if table == "missing"),
        "{e:?}"
    );

    assert_eq!(version(&table).await, before, "nothing was written");
    assert_eq!(
        names(&table).await,
        ["id", "text", "vector", "category", "score"]
    );
}

/// A renamed column keeps its values, its position and its vector index
/// (under the index's name), and the clients' embedding configuration
/// names it by its new name.
#[tokio::test]
async fn a_renamed_column_keeps_its_values_index_and_embedding_configuration() {
    let db = testing::memory_db().await.unwrap();
    let table = documents(&db, 300).await;
    let config = r#"[{"name":"test","model":{},"source_column":"text","vector_column":"vector"}]"#;
    let mut metadata = table.schema().await.unwrap().metadata().clone();
    metadata.insert("embedding_functions".to_owned(), config.to_owned());
    table
        .as_native()
        .unwrap()
        .replace_schema_metadata(metadata)
        .await
        .unwrap();
    index_vectors(&table).await;
    let vectors = values(&table, "vector").await;
    let migrator = Migrator::new(db.clone())
        .add(RenameColumn::new(
            "0001_vector",
            "documents",
            "vector",
            "embedding",
        ))
        .add(RenameColumn::new("0002_text", "documents", "text", "body"));
    migrator.run().await.unwrap();

    assert_eq!(
        names(&table).await,
        ["id", "body", "embedding", "category", "score"]
    );
    assert_eq!(values(&table, "embedding").await, vectors);
    let indexes = table.list_indices().await.unwrap();
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    assert_eq!(indexes[0].columns, ["embedding"]);
    assert_eq!(indexes[0].name, "vector_idx");
    let schema = table.schema().await.unwrap();
    let clients: serde_json::Value =
        serde_json::from_str(&schema.metadata()["embedding_functions"]).unwrap();
    assert_eq!(clients[0]["vector_column"], "embedding");
    assert_eq!(clients[0]["source_column"], "body");
    assert_eq!(clients[0]["name"], "test");
    // A vector search through the index finds a row by its own vector.
    assert_eq!(nearest(&table, "embedding", 42).await, 42);
}

#[tokio::test]
async fn drop_columns_conforms() {
    conforms(|| DropColumns::new("0001", "documents").column("score")).await;
}

#[tokio::test]
async fn rename_column_conforms() {
    conforms(|| RenameColumn::new("0001", "documents", "category", "kind")).await;
}

/// A narrowing cast keeps every value, changes the type, keeps the
/// column's place and leaves no staging column; a rerun is a no-op.
#[tokio::test]
async fn a_cast_keeps_every_value() {
    let db = testing::memory_db().await.unwrap();
    let table = documents(&db, 40).await;
    let scores = values(&table, "score").await;
    let before = version(&table).await;
    let migrator = Migrator::new(db.clone()).add(CastColumn::new(
        "0001_cast",
        "documents",
        "score",
        DataType::Int32,
    ));
    migrator.run().await.unwrap();
    table.checkout_latest().await.unwrap();
    let schema = table.schema().await.unwrap();
    assert_eq!(
        schema.field_with_name("score").unwrap().data_type(),
        &DataType::Int32
    );
    assert_eq!(values(&table, "score").await, scores);
    assert_eq!(
        names(&table).await,
        ["id", "text", "vector", "category", "score"]
    );
    let after = version(&table).await;
    assert!(after > before);
    assert!(migrator.run().await.unwrap().is_noop());
    assert_eq!(version(&table).await, after);
}

/// A value that does not fit the new type refuses the cast before
/// anything is written, naming the value; a cast across families is
/// refused too.
#[tokio::test]
async fn a_lossy_or_unsupported_cast_is_refused_naming_a_value() {
    let db = testing::memory_db().await.unwrap();
    let table = documents(&db, 40).await;
    table
        .update()
        .only_if("id = 17")
        .column("score", "5000000000")
        .execute()
        .await
        .unwrap();
    let before = version(&table).await;
    let scores = values(&table, "score").await;
    let migrator = Migrator::new(db.clone()).add(CastColumn::new(
        "0001_cast",
        "documents",
        "score",
        DataType::Int32,
    ));
    let err = migrator.run().await.unwrap_err();
    match err.cause() {
        Error::LossyCast { column, value, .. } => {
            assert_eq!(column, "score");
            assert_eq!(value, "5000000000");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("score") || err.cause().to_string().contains("5000000000"));
    assert_eq!(version(&table).await, before, "nothing was written");
    assert_eq!(values(&table, "score").await, scores);

    let err = Migrator::new(db.clone())
        .add(CastColumn::new(
            "0002_cast",
            "documents",
            "text",
            DataType::Int64,
        ))
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), Error::ColumnType { column, .. } if column == "text"),
        "{err:?}"
    );
    let err = Migrator::new(db.clone())
        .add(CastColumn::new(
            "0003_cast",
            "documents",
            "score",
            DataType::Int64,
        ))
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), Error::InvalidMigration { .. }),
        "{err:?}"
    );
    assert_eq!(version(&table).await, before, "nothing was written");
}

/// Vectors cast from `Float32` to `Float16`: the vector index is dropped
/// for the cast and built again on the new type, and a search through it
/// finds a row by its own vector.
#[tokio::test]
async fn an_indexed_vector_column_is_cast_and_its_index_rebuilt() {
    let db = testing::memory_db().await.unwrap();
    let table = documents(&db, 300).await;
    index_vectors(&table).await;
    let half = DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float16, true)),
        DIMS as i32,
    );
    let report = Migrator::new(db.clone())
        .add(CastColumn::new(
            "0001_half",
            "documents",
            "vector",
            half.clone(),
        ))
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(report.applied().count(), 1);
    table.checkout_latest().await.unwrap();
    let schema = table.schema().await.unwrap();
    assert_eq!(schema.field_with_name("vector").unwrap().data_type(), &half);
    let indexes = table.list_indices().await.unwrap();
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    assert_eq!(indexes[0].columns, ["vector"]);
    let stats = table.index_stats(&indexes[0].name).await.unwrap().unwrap();
    assert_eq!(stats.num_unindexed_rows, 0);
    assert_eq!(nearest(&table, "vector", 42).await, 42);
}

#[tokio::test]
async fn cast_column_conforms() {
    conforms(|| CastColumn::new("0001", "documents", "score", DataType::Int32)).await;
}

/// An existing column set to an expression over the row, and a new column
/// computed from another: every row holds the expression's value, the
/// other columns keep theirs, and the new column is nullable.
#[tokio::test]
async fn columns_are_filled_from_expressions() {
    let db = testing::memory_db().await.unwrap();
    let table = documents(&db, 30).await;
    table
        .update()
        .column("category", "upper(category)")
        .execute()
        .await
        .unwrap();
    let text = values(&table, "text").await;
    let migrator = Migrator::new(db.clone())
        .add(FillColumn::new(
            "0001_lower",
            "documents",
            "category",
            "lower(category)",
        ))
        .add(FillColumn::new_column(
            "0002_length",
            "documents",
            "text_length",
            DataType::Int32,
            "character_length(text)",
        ));
    migrator.run().await.unwrap_or_else(|e| panic!("{e:?}"));
    let category = values(&table, "category").await;
    assert_eq!(category.len(), 30);
    for (id, value) in &category {
        assert_eq!(value.as_deref(), Some(format!("c{}", id % 3).as_str()));
    }
    let lengths = values(&table, "text_length").await;
    for ((id, length), (_, text)) in lengths.iter().zip(&text) {
        let want = text.as_ref().unwrap().chars().count().to_string();
        assert_eq!(length.as_deref(), Some(want.as_str()), "row {id}");
    }
    assert_eq!(values(&table, "text").await, text);
    let schema = table.schema().await.unwrap();
    let field = schema.field_with_name("text_length").unwrap();
    assert_eq!(field.data_type(), &DataType::Int32);
    assert!(field.is_nullable());
    assert!(migrator.run().await.unwrap().is_noop());
}

/// An expression that does not evaluate on the table, or gives a type
/// that does not convert to the column's, is refused before anything is
/// written.
#[tokio::test]
async fn a_bad_expression_is_refused_before_anything_is_written() {
    let db = testing::memory_db().await.unwrap();
    let table = documents(&db, 10).await;
    let before = version(&table).await;
    for (m, what) in [
        (
            FillColumn::new("f1", "documents", "category", "no_such_function(category)"),
            "unknown function",
        ),
        (
            FillColumn::new("f2", "documents", "category", "lower(no_such_column)"),
            "unknown column",
        ),
        (
            FillColumn::new("f3", "documents", "score", "vector"),
            "a vector into an integer",
        ),
        (
            FillColumn::new_column("f4", "documents", "n", DataType::Int64, "text"),
            "text that is not a number",
        ),
        (FillColumn::new("f5", "documents", "category", " "), "empty"),
    ] {
        let err = Migrator::new(db.clone()).add(m).run().await.unwrap_err();
        assert!(
            matches!(err.cause(), Error::InvalidMigration { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(version(&table).await, before, "{what}: nothing was written");
    }
    let err = Migrator::new(db.clone())
        .add(FillColumn::new("f6", "documents", "nope", "1"))
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), Error::ColumnNotFound { .. }),
        "{err:?}"
    );
    let err = Migrator::new(db.clone())
        .add(FillColumn::new_column(
            "f7",
            "documents",
            "score",
            DataType::Int64,
            "1",
        ))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err.cause(), Error::ColumnExists { .. }), "{err:?}");
}

#[tokio::test]
async fn fill_column_conforms() {
    conforms(|| FillColumn::new("0001", "documents", "category", "lower(category)")).await;
    conforms(|| FillColumn::new_column("0001", "documents", "twice", DataType::Int64, "score * 2"))
        .await;
}
