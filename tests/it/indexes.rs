//! Indexes across migrations: kept, recreated on the column they now belong
//! to, covering every row; and the `RebuildIndex` built-in.

use std::sync::Arc;

use arrow_schema::{DataType, Schema};
use lancedb::DistanceType;
use lancedb::Table;
use lancedb::index::vector::IvfPqIndexBuilder;
use lancedb::index::{Index, IndexType};
use lancedb::query::{ExecutableQuery, QueryBase};
use lancedb::table::ColumnAlteration;
use lancedb_migrate::async_trait;
use lancedb_migrate::testing::{self, TestEmbedding};
use lancedb_migrate::{
    AddColumns, Error, Migration, MigrationContext, Migrator, NewColumn, ReEmbed, RebuildIndex,
    Result,
};

use crate::support::{add_test_indexes, failure, version};

/// 1000 documents (4 fragments), an IVF_PQ cosine index `vec_idx` on
/// `vector` and a BTree `id_idx` on `id`.
async fn indexed_table(db: &lancedb::Connection) -> Table {
    let table = testing::documents_table(db, "docs", 250, 384)
        .await
        .unwrap();
    for f in 1..4 {
        table
            .add(testing::documents_batch(f * 250..(f + 1) * 250, 384))
            .execute()
            .await
            .unwrap();
    }
    let ivf_pq = IvfPqIndexBuilder::default()
        .distance_type(DistanceType::Cosine)
        .num_partitions(2)
        .num_sub_vectors(24);
    add_test_indexes(&table, ivf_pq).await;
    table
}

/// Renames a column (metadata-only).
#[derive(Debug)]
struct Rename {
    from: &'static str,
    to: &'static str,
}

#[async_trait]
impl Migration for Rename {
    fn id(&self) -> &str {
        "0003_rename"
    }
    fn table(&self) -> &str {
        "docs"
    }
    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        let fields: Vec<_> = before
            .fields()
            .iter()
            .map(|f| {
                if f.name() == self.from {
                    f.as_ref().clone().with_name(self.to)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        Ok(Schema::new(fields))
    }
    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        let rename = ColumnAlteration::new(self.from.to_owned()).rename(self.to.to_owned());
        ctx.table().alter_columns(&[rename]).await?;
        Ok(())
    }
}

async fn indexes(table: &Table) -> Vec<(String, IndexType, Vec<String>)> {
    table.checkout_latest().await.unwrap();
    let mut list: Vec<_> = table
        .list_indices()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.index_type, c.columns))
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    list
}

async fn unindexed(table: &Table, index: &str) -> usize {
    table
        .index_stats(index)
        .await
        .unwrap()
        .unwrap()
        .num_unindexed_rows
}

#[tokio::test]
async fn indexes_survive_add_columns_rename_and_reembed() {
    let db = testing::memory_db().await.unwrap();
    let table = indexed_table(&db).await;
    let report = Migrator::new(db.clone())
        .add(
            AddColumns::new("0001_category", "docs")
                .column(NewColumn::new("category", DataType::Utf8).default_value("general")),
        )
        .add(ReEmbed::new(
            "0002_reembed",
            "docs",
            Arc::new(TestEmbedding::new("test-768", 768)),
        ))
        .add(Rename {
            from: "id",
            to: "doc_id",
        })
        .run()
        .await
        .unwrap();
    assert_eq!(report.applied().count(), 3);

    // The same two indexes, no duplicates, on the columns they belong to now.
    assert_eq!(
        indexes(&table).await,
        [
            (
                "id_idx".to_owned(),
                IndexType::BTree,
                vec!["doc_id".to_owned()]
            ),
            (
                "vec_idx".to_owned(),
                IndexType::IvfPq,
                vec!["vector".to_owned()]
            ),
        ]
    );
    assert_eq!(unindexed(&table, "vec_idx").await, 0);
    assert_eq!(unindexed(&table, "id_idx").await, 0);
    let stats = table.index_stats("vec_idx").await.unwrap().unwrap();
    assert_eq!(
        stats.distance_type,
        Some(DistanceType::Cosine),
        "same parameters"
    );

    // The re-embed recreated the vector index, and its search finds rows.
    let reembed = &report.migrations()[1];
    assert_eq!(reembed.details.get("indexes_recreated").unwrap(), "vec_idx");
    let recall: f64 = reembed
        .details
        .get("recall.vec_idx")
        .unwrap()
        .parse()
        .unwrap();
    assert!(recall >= 0.9, "recall {recall}");

    // Vector search goes through the index (an ANN plan, not a flat scan).
    let query = TestEmbedding::vector(&testing::document_text(7), 768);
    let plan = table
        .vector_search(query)
        .unwrap()
        .column("vector")
        .limit(5)
        .explain_plan(true)
        .await
        .unwrap();
    assert!(plan.contains("ANN"), "{plan}");
}

#[tokio::test]
async fn rows_appended_before_a_migration_get_indexed() {
    let db = testing::memory_db().await.unwrap();
    let table = indexed_table(&db).await;
    table
        .add(testing::documents_batch(1000..1100, 384))
        .execute()
        .await
        .unwrap();
    assert_eq!(unindexed(&table, "vec_idx").await, 100);
    Migrator::new(db.clone())
        .add(AddColumns::new("0001", "docs").column(NewColumn::new("note", DataType::Utf8)))
        .run()
        .await
        .unwrap();
    table.checkout_latest().await.unwrap();
    assert_eq!(unindexed(&table, "vec_idx").await, 0);
    assert_eq!(unindexed(&table, "id_idx").await, 0);
}

/// A transform that drops an index (as a cast of its column must) gets it
/// back from the default rebuild.
#[tokio::test]
async fn an_index_dropped_by_the_transform_is_recreated() {
    #[derive(Debug)]
    struct DropsIndex;
    #[async_trait]
    impl Migration for DropsIndex {
        fn id(&self) -> &str {
            "0001_drops_index"
        }
        fn table(&self) -> &str {
            "docs"
        }
        async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
            ctx.table().drop_index("id_idx").await?;
            Ok(())
        }
    }
    let db = testing::memory_db().await.unwrap();
    let table = indexed_table(&db).await;
    let before = indexes(&table).await;
    let report = Migrator::new(db.clone())
        .add(DropsIndex)
        .run()
        .await
        .unwrap();
    assert_eq!(indexes(&table).await, before);
    assert_eq!(
        report.migrations()[0]
            .details
            .get("indexes_recreated")
            .unwrap(),
        "id_idx"
    );
}

#[tokio::test]
async fn rebuild_index_creates_a_vector_index_and_reports_recall() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "docs", 1000, 32)
        .await
        .unwrap();
    let ivf_pq = IvfPqIndexBuilder::default()
        .distance_type(DistanceType::L2)
        .num_partitions(4)
        .num_sub_vectors(8);
    let report = Migrator::new(db.clone())
        .add(RebuildIndex::new("0001_index", "docs", "vector", Index::IvfPq(ivf_pq)).name("v"))
        .run()
        .await
        .unwrap();
    assert_eq!(
        indexes(&table).await,
        [("v".to_owned(), IndexType::IvfPq, vec!["vector".to_owned()])]
    );
    assert_eq!(unindexed(&table, "v").await, 0);
    let recall: f64 = report.migrations()[0].details["recall.v"].parse().unwrap();
    assert!(recall >= 0.9, "recall {recall}");
}

#[tokio::test]
async fn rebuild_index_refuses_bad_input_and_leaves_the_table() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "docs", 100, 32)
        .await
        .unwrap();
    let v = version(&table).await;
    let ivf_pq = || Index::IvfPq(IvfPqIndexBuilder::default());
    let run = |m: RebuildIndex| {
        let db = db.clone();
        async move { Migrator::new(db).add(m).run().await.unwrap_err() }
    };

    let err = run(RebuildIndex::new("a", "docs", "embedding", ivf_pq())).await;
    assert!(
        matches!(failure(&err).0, Error::ColumnNotFound { column, .. } if column == "embedding")
    );

    let err = run(RebuildIndex::new("b", "docs", "text", ivf_pq())).await;
    assert!(matches!(failure(&err).0, Error::ColumnType { column, .. } if column == "text"));

    let err = run(RebuildIndex::new("c", "docs", "vector", ivf_pq())).await;
    assert!(
        matches!(failure(&err).0, Error::Index { reason, .. } if reason.contains("too few")),
        "{err:?}"
    );

    assert_eq!(version(&table).await, v, "nothing was written");
    assert!(table.list_indices().await.unwrap().is_empty());
}

/// The default verify catches an index left behind: here a migration whose
/// rebuild does nothing, after a transform that drops one index, or that
/// appends rows no index covers. Both are rolled back.
#[tokio::test]
async fn verify_fails_on_a_missing_or_partial_index() {
    #[derive(Debug)]
    struct NoRebuild(bool);
    #[async_trait]
    impl Migration for NoRebuild {
        fn id(&self) -> &str {
            "0001_no_rebuild"
        }
        fn table(&self) -> &str {
            "docs"
        }
        async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
            if self.0 {
                ctx.table().drop_index("id_idx").await?;
            } else {
                let batch = testing::documents_batch(5000..5100, 384);
                ctx.table().add(batch).execute().await?;
            }
            Ok(())
        }
        async fn rebuild(&self, _ctx: &MigrationContext) -> Result<()> {
            Ok(())
        }
        async fn verify(&self, ctx: &MigrationContext) -> Result<()> {
            ctx.check_indexes().await
        }
    }
    for drop in [true, false] {
        let db = testing::memory_db().await.unwrap();
        let table = indexed_table(&db).await;
        let before = indexes(&table).await;
        let err = Migrator::new(db.clone())
            .add(NoRebuild(drop))
            .run()
            .await
            .unwrap_err();
        let (cause, phase, _) = failure(&err);
        let expected = if drop { "missing" } else { "not indexed" };
        assert!(
            matches!(cause, Error::Index { reason, .. } if reason.contains(expected)),
            "{cause:?}"
        );
        assert_eq!(phase, lancedb_migrate::Phase::Verify);
        assert_eq!(indexes(&table).await, before, "restored");
        // (The rollback keeps appended rows: it cannot tell the migration's
        // own appends from the application's; see DESIGN.md.)
    }
}
