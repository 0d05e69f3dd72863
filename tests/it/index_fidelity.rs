//! Index fidelity: every index type LanceDB 0.41 builds on a local table,
//! with non-default parameters, comes back after a migration that
//! replaces its column with the same type and the same parameters,
//! covering every row, finding rows as well as before.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::types::Float32Type;
use arrow_array::{
    ArrayRef, FixedSizeListArray, Int64Array, RecordBatch, RecordBatchIterator, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use futures::TryStreamExt;
use lancedb::DistanceType;
use lancedb::Table;
use lancedb::index::scalar::{
    BTreeIndexBuilder, BitmapIndexBuilder, BloomFilterIndexBuilder, FmIndexBuilder,
    FtsIndexBuilder, FtsQuery, FullTextSearchQuery, LabelListIndexBuilder, NGramIndexBuilder,
    PhraseQuery, ZoneMapIndexBuilder,
};
use lancedb::index::vector::{
    IvfFlatIndexBuilder, IvfHnswFlatIndexBuilder, IvfHnswPqIndexBuilder, IvfHnswSqIndexBuilder,
    IvfPqIndexBuilder, IvfRqIndexBuilder, IvfSqIndexBuilder,
};
use lancedb::index::{Index, IndexType};
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::{ColumnAlteration, NewColumnTransform};
use lancedb_migrate::testing::{self, TestEmbedding};
use lancedb_migrate::{
    Error, IndexSpec, Migration, MigrationContext, MigrationPlan, Migrator, ReEmbed, RebuildIndex,
    Result, TableInfo, async_trait,
};

const ROWS: i64 = 512;
const DIMS: usize = 16;

/// French texts: two rows in three speak of eating, in forms a French
/// stemmer reduces to one stem (`mang`) and an English one does not.
fn text(id: i64) -> String {
    match id % 3 {
        0 => format!("vous mangez ensemble le repas {id}"),
        1 => format!("ils aiment manger une pomme verte {id}"),
        _ => format!("le chat dort sur le canapé {id}"),
    }
}

fn vector(id: i64, seed: i64) -> Vec<f32> {
    testing::document_vector(id * 7 + seed * 1_000_003, DIMS)
}

/// The vector columns and the index each gets.
fn vector_indexes() -> Vec<(&'static str, Index)> {
    vec![
        (
            "v_flat",
            Index::IvfFlat(
                IvfFlatIndexBuilder::default()
                    .distance_type(DistanceType::Cosine)
                    .num_partitions(3)
                    .sample_rate(64)
                    .max_iterations(20),
            ),
        ),
        (
            "v_sq",
            Index::IvfSq(
                IvfSqIndexBuilder::default()
                    .distance_type(DistanceType::Dot)
                    .num_partitions(2)
                    .max_iterations(30),
            ),
        ),
        (
            "v_pq",
            Index::IvfPq(
                IvfPqIndexBuilder::default()
                    .distance_type(DistanceType::L2)
                    .num_partitions(2)
                    .num_sub_vectors(4)
                    .num_bits(8)
                    .sample_rate(128),
            ),
        ),
        (
            "v_rq",
            Index::IvfRq(
                IvfRqIndexBuilder::default()
                    .distance_type(DistanceType::L2)
                    .num_partitions(2)
                    .num_bits(1),
            ),
        ),
        (
            "v_hnsw_pq",
            Index::IvfHnswPq(
                IvfHnswPqIndexBuilder::default()
                    .distance_type(DistanceType::L2)
                    .num_partitions(2)
                    .num_edges(10)
                    .ef_construction(120)
                    .num_sub_vectors(8),
            ),
        ),
        (
            "v_hnsw_sq",
            Index::IvfHnswSq(
                IvfHnswSqIndexBuilder::default()
                    .distance_type(DistanceType::Cosine)
                    .num_partitions(2)
                    .num_edges(12)
                    .ef_construction(100),
            ),
        ),
        (
            "v_hnsw_flat",
            Index::IvfHnswFlat(
                IvfHnswFlatIndexBuilder::default()
                    .distance_type(DistanceType::L2)
                    .num_partitions(2)
                    .num_edges(8)
                    .ef_construction(80),
            ),
        ),
    ]
}

/// The FTS index: French stemming, positions, custom stop words, a
/// shorter token limit — none of them LanceDB's default.
fn fts() -> FtsIndexBuilder {
    FtsIndexBuilder::default()
        .language("French")
        .unwrap()
        .with_position(true)
        .custom_stop_words(Some(vec!["ensemble".to_owned(), "une".to_owned()]))
        .max_token_length(Some(30))
        .ascii_folding(false)
}

/// The scalar and full-text columns and their indexes.
fn scalar_indexes() -> Vec<(&'static str, Index)> {
    vec![
        ("id", Index::BTree(BTreeIndexBuilder::default())),
        ("category", Index::Bitmap(BitmapIndexBuilder::default())),
        ("tags", Index::LabelList(LabelListIndexBuilder::default())),
        ("text", Index::FTS(fts())),
        ("code", Index::NGram(NGramIndexBuilder::default())),
        ("title", Index::Fm(FmIndexBuilder::default())),
        ("n", Index::ZoneMap(ZoneMapIndexBuilder::default())),
        (
            "k",
            Index::BloomFilter(
                BloomFilterIndexBuilder::default()
                    .number_of_items(128)
                    .unwrap()
                    .probability(0.01)
                    .unwrap(),
            ),
        ),
    ]
}

fn every_index() -> Vec<(&'static str, Index)> {
    let mut all = scalar_indexes();
    all.extend(vector_indexes());
    all
}

fn index_name(column: &str) -> String {
    format!("{column}_ix")
}

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let vector_type = testing::vector_type(DIMS);
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("category", DataType::Utf8, false),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        Field::new("text", DataType::Utf8, false),
        Field::new("code", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("n", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
    ];
    let mut tags = ListBuilder::new(StringBuilder::new());
    for id in ids.clone() {
        tags.values().append_value(format!("t{}", id % 5));
        tags.values().append_value(format!("u{}", id % 3));
        tags.append(true);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.clone())),
        Arc::new(StringArray::from_iter_values(
            ids.clone()
                .map(|i| ["news", "blog", "wiki"][(i % 3) as usize]),
        )),
        Arc::new(tags.finish()),
        Arc::new(StringArray::from_iter_values(ids.clone().map(text))),
        Arc::new(StringArray::from_iter_values(
            ids.clone()
                .map(|i| format!("SKU-{:05}-X", i * 37 % 100_000)),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.clone().map(|i| format!("title number {i}")),
        )),
        Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| i * 3))),
        Arc::new(Int64Array::from_iter_values(
            ids.clone().map(|i| i * 11 % 997),
        )),
    ];
    for (seed, (column, _)) in vector_indexes().into_iter().enumerate() {
        fields.push(Field::new(column, vector_type.clone(), false));
        let vectors = ids
            .clone()
            .map(|i| Some(vector(i, seed as i64).into_iter().map(Some)));
        columns.push(Arc::new(FixedSizeListArray::from_iter_primitive::<
            Float32Type,
            _,
            _,
        >(vectors, DIMS as i32)));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// Table `all` with rows `ids` of [`batch`], no index.
async fn unindexed_table(db: &lancedb::Connection, ids: std::ops::Range<i64>) -> Table {
    let first = batch(ids);
    let schema = first.schema();
    let reader = RecordBatchIterator::new(vec![Ok(first)], schema);
    db.create_table(
        "all",
        Box::new(reader) as Box<dyn arrow_array::RecordBatchReader + Send>,
    )
    .execute()
    .await
    .unwrap()
}

/// A table with every index type LanceDB 0.41 builds without extra
/// features, on two fragments.
async fn every_index_table(db: &lancedb::Connection) -> Table {
    let table = unindexed_table(db, 0..ROWS / 2).await;
    table.add(batch(ROWS / 2..ROWS)).execute().await.unwrap();
    for (column, index) in every_index() {
        table
            .create_index(&[column], index)
            .name(index_name(column))
            .execute()
            .await
            .unwrap_or_else(|e| panic!("create the index on {column}: {e}"));
    }
    table
}

/// Replaces each of `columns` by a copy of itself (a new field: add a
/// copy, drop the original, which drops its index, rename the copy): the
/// default `rebuild` must build every index again.
#[derive(Debug)]
struct ReplaceColumns {
    columns: Vec<&'static str>,
}

#[async_trait]
impl Migration for ReplaceColumns {
    fn id(&self) -> &str {
        "0001_replace_columns"
    }
    fn table(&self) -> &str {
        "all"
    }
    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        Ok(before.clone())
    }
    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        let rebuilds = self
            .columns
            .iter()
            .flat_map(|c| table.rebuilt_on(c, Some(DIMS)));
        Ok(MigrationPlan::new("replace every indexed column").rebuilds(rebuilds))
    }
    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        replace_columns(ctx.table(), &self.columns).await
    }
    // Only the indexes are checked: SQL copies may relax nullability.
    async fn verify(&self, ctx: &MigrationContext) -> Result<()> {
        ctx.check_row_count().await?;
        ctx.check_indexes().await
    }
}

/// Replaces each of `columns` of `table` by a copy of itself: add a copy,
/// drop the original (which drops its index), rename the copy.
async fn replace_columns(table: &Table, columns: &[&str]) -> Result<()> {
    let copies = columns
        .iter()
        .map(|c| (format!("{c}__copy"), (*c).to_owned()))
        .collect();
    table
        .add_columns()
        .transform(NewColumnTransform::SqlExpressions(copies))
        .execute()
        .await?;
    table.drop_columns(columns).await?;
    let renames: Vec<ColumnAlteration> = columns
        .iter()
        .map(|c| ColumnAlteration::new(format!("{c}__copy")).rename((*c).to_owned()))
        .collect();
    table.alter_columns(&renames).await?;
    Ok(())
}

fn by_name(specs: Vec<IndexSpec>) -> BTreeMap<String, IndexSpec> {
    specs.into_iter().map(|s| (s.name.clone(), s)).collect()
}

/// The share of 32 rows spread over the table that a search through the
/// index on `column` for the row's own vector finds in its top 10
/// (probing every partition, re-ranking 10× the candidates).
async fn recall(table: &Table, column: &str) -> f64 {
    table.checkout_latest().await.unwrap();
    let batches: Vec<RecordBatch> = table
        .query()
        .select(Select::columns(&["id", column]))
        .execute()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let vectors = b
            .column(1)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .unwrap();
        for i in 0..b.num_rows() {
            let v = vectors.value(i);
            let v = v
                .as_any()
                .downcast_ref::<arrow_array::Float32Array>()
                .unwrap();
            rows.push((ids.value(i), v.values().to_vec()));
        }
    }
    rows.sort_by_key(|r| r.0);
    let sample: Vec<_> = rows.iter().step_by(rows.len() / 32).take(32).collect();
    let mut hits = 0;
    for (id, v) in &sample {
        let found: Vec<RecordBatch> = table
            .vector_search(v.clone())
            .unwrap()
            .column(column)
            .nprobes(8)
            .unwrap()
            .refine_factor(10)
            .limit(10)
            .select(Select::columns(&["id"]))
            .execute()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        hits += usize::from(ids_of(&found).contains(id));
    }
    hits as f64 / sample.len() as f64
}

async fn unindexed(table: &Table, index: &str) -> usize {
    table
        .index_stats(index)
        .await
        .unwrap()
        .unwrap()
        .num_unindexed_rows
}

async fn ids_matching(table: &Table, query: FullTextSearchQuery) -> Vec<i64> {
    table.checkout_latest().await.unwrap();
    let batches: Vec<RecordBatch> = table
        .query()
        .full_text_search(query)
        .select(Select::columns(&["id"]))
        .limit(ROWS as usize)
        .execute()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut ids = ids_of(&batches);
    ids.sort_unstable();
    ids
}

/// The `id` column of `batches`.
fn ids_of(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn param<'s>(spec: &'s IndexSpec, key: &str) -> &'s str {
    spec.parameters
        .get(key)
        .unwrap_or_else(|| panic!("{} records no {key}: {:?}", spec.name, spec.parameters))
}

/// The parameters each index was created with, as `IndexSpec::list`
/// reads them back: the reader itself is checked against what was asked.
fn assert_reads_what_was_built(specs: &BTreeMap<String, IndexSpec>) {
    let s = |column: &str| &specs[&index_name(column)];
    assert_eq!(param(s("v_flat"), "distance_type"), "cosine");
    assert_eq!(param(s("v_flat"), "num_partitions"), "3");
    assert_eq!(param(s("v_flat"), "sample_rate"), "64");
    assert_eq!(param(s("v_flat"), "max_iterations"), "20");
    assert_eq!(param(s("v_sq"), "distance_type"), "dot");
    assert_eq!(param(s("v_sq"), "max_iterations"), "30");
    assert_eq!(param(s("v_pq"), "num_sub_vectors"), "4");
    assert_eq!(param(s("v_pq"), "num_bits"), "8");
    assert_eq!(param(s("v_pq"), "sample_rate"), "128");
    assert_eq!(param(s("v_rq"), "num_bits"), "1");
    assert_eq!(param(s("v_hnsw_pq"), "m"), "10");
    assert_eq!(param(s("v_hnsw_pq"), "ef_construction"), "120");
    assert_eq!(param(s("v_hnsw_pq"), "num_sub_vectors"), "8");
    assert_eq!(param(s("v_hnsw_sq"), "m"), "12");
    assert_eq!(param(s("v_hnsw_sq"), "ef_construction"), "100");
    assert_eq!(param(s("v_hnsw_sq"), "distance_type"), "cosine");
    assert_eq!(param(s("v_hnsw_flat"), "m"), "8");
    assert_eq!(param(s("v_hnsw_flat"), "ef_construction"), "80");
    assert_eq!(param(s("text"), "language"), "French");
    assert_eq!(param(s("text"), "with_position"), "true");
    assert_eq!(param(s("text"), "max_token_length"), "30");
    assert_eq!(param(s("text"), "ascii_folding"), "false");
    assert_eq!(
        param(s("text"), "custom_stop_words"),
        r#"["ensemble","une"]"#
    );
    assert_eq!(param(s("k"), "number_of_items"), "128");
    assert_eq!(param(s("k"), "probability"), "0.01");
}

#[tokio::test]
async fn every_index_type_comes_back_with_its_parameters() {
    let _turn = crate::support::heavy().await;
    let dir = testing::TempDb::new().await.unwrap();
    let db = dir.db().clone();
    let table = every_index_table(&db).await;
    let before = by_name(IndexSpec::list(&table).await.unwrap());
    assert_eq!(before.len(), every_index().len(), "{before:?}");
    assert_reads_what_was_built(&before);
    let expected_types = [
        ("id", IndexType::BTree),
        ("category", IndexType::Bitmap),
        ("tags", IndexType::LabelList),
        ("text", IndexType::FTS),
        ("code", IndexType::NGram),
        ("title", IndexType::Fm),
        ("n", IndexType::ZoneMap),
        ("k", IndexType::BloomFilter),
        ("v_flat", IndexType::IvfFlat),
        ("v_sq", IndexType::IvfSq),
        ("v_pq", IndexType::IvfPq),
        ("v_rq", IndexType::IvfRq),
        ("v_hnsw_pq", IndexType::IvfHnswPq),
        ("v_hnsw_sq", IndexType::IvfHnswSq),
        ("v_hnsw_flat", IndexType::IvfHnswFlat),
    ];
    for (column, index_type) in &expected_types {
        assert_eq!(&before[&index_name(column)].index_type, index_type);
    }
    let mut recall_before = BTreeMap::new();
    for (column, _) in vector_indexes() {
        recall_before.insert(column, recall(&table, column).await);
    }
    let stemmed = || FullTextSearchQuery::new("mange".to_owned());
    let phrase = || {
        FullTextSearchQuery::new_query(FtsQuery::Phrase(PhraseQuery::new("pomme verte".to_owned())))
    };
    let eating: Vec<i64> = (0..ROWS).filter(|i| i % 3 != 2).collect();
    let apples: Vec<i64> = (0..ROWS).filter(|i| i % 3 == 1).collect();
    assert_eq!(ids_matching(&table, stemmed()).await, eating);
    assert_eq!(ids_matching(&table, phrase()).await, apples);

    let columns: Vec<&'static str> = every_index().into_iter().map(|(c, _)| c).collect();
    let migrator = || {
        Migrator::new(db.clone()).add(ReplaceColumns {
            columns: columns.clone(),
        })
    };
    // The plan names every index it rebuilds, with its parameters.
    let plan = migrator().plan().await.unwrap().to_string();
    for (column, _) in every_index() {
        assert!(
            plan.contains(&format!("rebuilds index {}", index_name(column))),
            "{plan}"
        );
    }
    assert!(plan.contains("num_partitions=3"), "{plan}");
    assert!(plan.contains("language=French"), "{plan}");
    assert!(plan.contains("number_of_items=128"), "{plan}");

    let report = migrator().run().await.unwrap();
    let details = &report.migrations()[0].details;
    let recreated: Vec<&str> = details["indexes_recreated"].split(',').collect();
    assert_eq!(recreated.len(), every_index().len(), "{details:?}");

    let after = by_name(IndexSpec::list(&table).await.unwrap());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (name, was) in &before {
        let now = &after[name];
        assert_eq!(now.index_type, was.index_type, "{name}");
        assert_eq!(now.column, was.column, "{name}");
        assert_eq!(now.distance_type, was.distance_type, "{name}");
        // Lance may train another partition count; the report says so.
        let (mut now_params, mut was_params) = (now.parameters.clone(), was.parameters.clone());
        if now_params.get("num_partitions") != was_params.get("num_partitions") {
            let said = &details[&format!("index_changed.{name}")];
            assert!(said.contains("num_partitions"), "{said}");
            now_params.remove("num_partitions");
            was_params.remove("num_partitions");
        }
        assert_eq!(now_params, was_params, "{name}");
        assert_eq!(unindexed(&table, name).await, 0, "{name}");
    }
    for (column, was) in recall_before {
        let now = recall(&table, column).await;
        assert!(now >= was, "{column}: recall {now} after, {was} before");
    }
    // The French tokenizer with positions still answers a stemmed query
    // and a phrase query.
    assert_eq!(ids_matching(&table, stemmed()).await, eating);
    assert_eq!(ids_matching(&table, phrase()).await, apples);
}

async fn vector_table(db: &lancedb::Connection, name: &str, index: Index) -> Table {
    let table = testing::documents_table(db, name, 300, 32).await.unwrap();
    table
        .create_index(&["vector"], index)
        .name("vec_idx".to_owned())
        .execute()
        .await
        .unwrap();
    table
}

/// The recorded detail and the ledger both say why a parameter changed.
#[tokio::test]
async fn reembedding_keeps_hnsw_sq_and_says_which_pq_parameter_changed() {
    let db = testing::memory_db().await.unwrap();
    let hnsw_sq = IvfHnswSqIndexBuilder::default()
        .distance_type(DistanceType::Cosine)
        .num_partitions(3)
        .num_edges(12)
        .ef_construction(90);
    let sq = vector_table(&db, "sq", Index::IvfHnswSq(hnsw_sq)).await;
    // 16 sub-vectors do not divide 40 dimensions.
    let ivf_pq = IvfPqIndexBuilder::default()
        .num_partitions(2)
        .num_sub_vectors(16);
    let pq = vector_table(&db, "pq", Index::IvfPq(ivf_pq)).await;
    let pq_before = IndexSpec::list(&pq).await.unwrap().remove(0);
    let migrator = || {
        Migrator::new(db.clone())
            .add(ReEmbed::new(
                "0001_sq",
                "sq",
                Arc::new(TestEmbedding::new("test-48", 48)),
            ))
            .add(ReEmbed::new(
                "0002_pq",
                "pq",
                Arc::new(TestEmbedding::new("test-40", 40)),
            ))
    };
    let plan = migrator().plan().await.unwrap().to_string();
    assert!(
        plan.contains("rebuilds index vec_idx (IVF_HNSW_SQ"),
        "{plan}"
    );
    assert!(plan.contains("m=12"), "{plan}");
    assert!(plan.contains("num_sub_vectors=5"), "{plan}");

    let report = migrator().run().await.unwrap();
    let sq_spec = &IndexSpec::list(&sq).await.unwrap()[0];
    assert_eq!(sq_spec.index_type, IndexType::IvfHnswSq);
    assert_eq!(param(sq_spec, "m"), "12");
    assert_eq!(param(sq_spec, "ef_construction"), "90");
    assert_eq!(param(sq_spec, "num_partitions"), "3");
    assert_eq!(param(sq_spec, "distance_type"), "cosine");
    assert!(
        !report.migrations()[0]
            .details
            .contains_key("index_changed.vec_idx")
    );

    let pq_spec = &IndexSpec::list(&pq).await.unwrap()[0];
    assert_eq!(param(pq_spec, "num_sub_vectors"), "5");
    assert_eq!(
        param(pq_spec, "num_partitions"),
        param(&pq_before, "num_partitions")
    );
    let said = &report.migrations()[1].details["index_changed.vec_idx"];
    assert!(said.contains("num_sub_vectors 16 → 5"), "{said}");
    let ledger = migrator().ledger().await.unwrap();
    assert_eq!(&ledger[1].details["index_changed.vec_idx"], said);
    for t in [&sq, &pq] {
        assert_eq!(unindexed(t, "vec_idx").await, 0);
    }
}

/// A MinHash LSH index (Lance builds it; LanceDB 0.41 has no builder for
/// it) on a column a migration replaces: refused before anything is
/// written.
#[tokio::test]
async fn an_index_lancedb_cannot_build_is_refused_before_anything_is_written() {
    let dir = testing::TempDb::new().await.unwrap();
    let db = dir.db().clone();
    let table = testing::documents_table(&db, "docs", 300, 8).await.unwrap();
    let uri = dir.path().join("docs.lance");
    let mut dataset = lance::Dataset::open(uri.to_str().unwrap()).await.unwrap();
    let params = lance_index::scalar::ScalarIndexParams::for_builtin(
        lance_index::scalar::BuiltinIndexType::MinHashLsh,
    );
    lance::index::DatasetIndexExt::create_index(
        &mut dataset,
        &["text"],
        lance_index::IndexType::MinHashLsh,
        Some("text_lsh".to_owned()),
        &params,
        false,
    )
    .await
    .unwrap();
    table.checkout_latest().await.unwrap();
    let version = table.version().await.unwrap();
    let listed = IndexSpec::list(&table).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");

    let err = Migrator::new(db.clone())
        .add(ReplaceText)
        .run()
        .await
        .expect_err("LanceDB cannot rebuild a MinHash LSH index");
    match err.cause() {
        Error::IndexNotRecreatable { index, reason, .. } => {
            assert_eq!(index, "text_lsh");
            assert!(reason.contains("no builder"), "{reason}");
        }
        other => panic!("expected IndexNotRecreatable, got {other:?}"),
    }
    assert!(err.cause().to_string().contains("drop it before"), "{err}");
    table.checkout_latest().await.unwrap();
    // Nothing written: no backup tag, no new version of the table.
    assert_eq!(table.version().await.unwrap(), version);
    assert!(table.tags().await.unwrap().list().await.unwrap().is_empty());
    assert_eq!(IndexSpec::list(&table).await.unwrap(), listed);
}

/// Says it rebuilds the indexes on `text` (replaces the column).
#[derive(Debug)]
struct ReplaceText;

#[async_trait]
impl Migration for ReplaceText {
    fn id(&self) -> &str {
        "0001_replace_text"
    }
    fn table(&self) -> &str {
        "docs"
    }
    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        Ok(MigrationPlan::new("rewrite text").rebuilds(table.rebuilt_on("text", None)))
    }
    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        ctx.table()
            .update()
            .column("text", "upper(text)")
            .execute()
            .await?;
        Ok(())
    }
}

/// `RebuildIndex` builds every type, and its verify compares what was
/// built with what was asked.
#[tokio::test]
async fn rebuild_index_builds_every_type_with_the_parameters_asked_for() {
    let _turn = crate::support::heavy().await;
    let db = testing::memory_db().await.unwrap();
    let table = unindexed_table(&db, 0..ROWS).await;
    let mut migrator = Migrator::new(db.clone());
    for (i, (column, index)) in every_index().into_iter().enumerate() {
        migrator = migrator.add(
            RebuildIndex::new(format!("{i:04}_{column}"), "all", column, index)
                .name(index_name(column)),
        );
    }
    let report = migrator.run().await.unwrap();
    assert_eq!(report.applied().count(), every_index().len());
    let specs = by_name(IndexSpec::list(&table).await.unwrap());
    assert_reads_what_was_built(&specs);
    for (column, _) in every_index() {
        assert_eq!(unindexed(&table, &index_name(column)).await, 0, "{column}");
    }
}

/// Replaces `vector` and builds its index again itself, with other
/// parameters than the index had (LanceDB's default iterations).
#[derive(Debug)]
struct RebuildDifferently;

#[async_trait]
impl Migration for RebuildDifferently {
    fn id(&self) -> &str {
        "0001_rebuild_differently"
    }
    fn table(&self) -> &str {
        "docs"
    }
    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        replace_columns(ctx.table(), &["vector"]).await
    }
    async fn rebuild(&self, ctx: &MigrationContext) -> Result<()> {
        let other = IvfFlatIndexBuilder::default()
            .distance_type(DistanceType::Cosine)
            .num_partitions(2);
        ctx.table()
            .create_index(&["vector"], Index::IvfFlat(other))
            .name("vec_idx".to_owned())
            .execute()
            .await?;
        Ok(())
    }
    async fn verify(&self, ctx: &MigrationContext) -> Result<()> {
        ctx.check_row_count().await?;
        ctx.check_indexes().await
    }
}

/// The default verify compares a rebuilt index with the one before: other
/// parameters fail the migration, and the table is restored with its
/// index as it was.
#[tokio::test]
async fn an_index_rebuilt_with_other_parameters_fails_verify_and_is_restored() {
    let db = testing::memory_db().await.unwrap();
    let ivf = IvfFlatIndexBuilder::default()
        .distance_type(DistanceType::Cosine)
        .num_partitions(4)
        .max_iterations(25);
    let table = vector_table(&db, "docs", Index::IvfFlat(ivf)).await;
    let before = IndexSpec::list(&table).await.unwrap();
    assert_eq!(param(&before[0], "num_partitions"), "4");
    let version = table.version().await.unwrap();

    let err = Migrator::new(db.clone())
        .add(RebuildDifferently)
        .run()
        .await
        .expect_err("the index was rebuilt with other parameters");
    assert_eq!(err.phase(), Some(lancedb_migrate::Phase::Verify), "{err}");
    match err.cause() {
        Error::Index { index, reason, .. } => {
            assert_eq!(index, "vec_idx");
            assert!(reason.contains("max_iterations is 50, was 25"), "{reason}");
        }
        other => panic!("expected Index, got {other:?}"),
    }
    let after = IndexSpec::list(&table).await.unwrap();
    assert_eq!(after[0].parameters, before[0].parameters);
    assert!(
        table.version().await.unwrap() > version,
        "restored as a new version"
    );
    assert_eq!(table.count_rows(None).await.unwrap(), 300);
}
