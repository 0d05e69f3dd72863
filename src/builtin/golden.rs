//! Golden tests: the definition and checksum of every built-in migration,
//! across a table of column types and defaults, and the text
//! lancedb-migrate 0.1 recorded for them, pinned in
//! `src/builtin/golden.txt`. Any change to either fails here: a
//! changed definition makes every applied migration look edited.
//!
//! After a change that is meant (a new type or case added), write the file
//! again with `LANCEDB_MIGRATE_BLESS=1 scripts/cargo test --lib golden`
//! and review its diff: lines may be added, never changed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, IntervalUnit, TimeUnit, UnionFields, UnionMode};
use lancedb::DistanceType;
use lancedb::index::Index;
use lancedb::index::scalar::{BTreeIndexBuilder, BloomFilterIndexBuilder, FtsIndexBuilder};
use lancedb::index::vector::{
    IvfFlatIndexBuilder, IvfHnswSqIndexBuilder, IvfPqIndexBuilder, IvfRqIndexBuilder,
};

use super::legacy;
use super::{
    AddColumns, CastColumn, CreateTable, DefaultValue, DropColumns, FillColumn, NewColumn, ReEmbed,
    RebuildIndex, RenameColumn, TargetSchema,
};
use crate::migration::{Definition, Migration};

/// An embedder as definitions see it: a name and an output type (it is
/// never called).
#[derive(Debug)]
struct Model(&'static str, i32);

impl lancedb::embeddings::EmbeddingFunction for Model {
    fn name(&self) -> &str {
        self.0
    }
    fn source_type(&self) -> lancedb::Result<std::borrow::Cow<'_, DataType>> {
        Ok(std::borrow::Cow::Owned(DataType::Utf8))
    }
    fn dest_type(&self) -> lancedb::Result<std::borrow::Cow<'_, DataType>> {
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        Ok(std::borrow::Cow::Owned(DataType::FixedSizeList(
            item, self.1,
        )))
    }
    fn compute_source_embeddings(
        &self,
        _: arrow_array::ArrayRef,
    ) -> lancedb::Result<arrow_array::ArrayRef> {
        unreachable!("definitions never embed")
    }
    fn compute_query_embeddings(
        &self,
        _: arrow_array::ArrayRef,
    ) -> lancedb::Result<arrow_array::ArrayRef> {
        unreachable!("definitions never embed")
    }
}

const GOLDEN: &str = "src/builtin/golden.txt";

fn item(t: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", t, true))
}

/// Every kind of Arrow type, nested ones with non-default names,
/// nullability and metadata.
fn types() -> Vec<DataType> {
    let meta: HashMap<String, String> = [("unit".to_owned(), "cm \"metric\"".to_owned())].into();
    let entries = Fields::from(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("values", DataType::Int64, true),
    ]);
    vec![
        DataType::Null,
        DataType::Boolean,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
        DataType::Float16,
        DataType::Float32,
        DataType::Float64,
        DataType::Utf8,
        DataType::LargeUtf8,
        DataType::Utf8View,
        DataType::Binary,
        DataType::LargeBinary,
        DataType::BinaryView,
        DataType::FixedSizeBinary(16),
        DataType::Date32,
        DataType::Date64,
        DataType::Time32(TimeUnit::Second),
        DataType::Time32(TimeUnit::Millisecond),
        DataType::Time64(TimeUnit::Microsecond),
        DataType::Time64(TimeUnit::Nanosecond),
        DataType::Duration(TimeUnit::Millisecond),
        DataType::Interval(IntervalUnit::YearMonth),
        DataType::Interval(IntervalUnit::DayTime),
        DataType::Interval(IntervalUnit::MonthDayNano),
        DataType::Timestamp(TimeUnit::Second, None),
        DataType::Timestamp(TimeUnit::Millisecond, None),
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Timestamp(TimeUnit::Nanosecond, Some("+02:00".into())),
        DataType::Decimal32(9, 2),
        DataType::Decimal64(18, 3),
        DataType::Decimal128(38, 10),
        DataType::Decimal256(76, 0),
        DataType::List(item(DataType::Utf8)),
        DataType::List(Arc::new(Field::new("tag", DataType::Int32, false))),
        DataType::LargeList(item(DataType::Float64)),
        DataType::ListView(item(DataType::Int8)),
        DataType::LargeListView(item(DataType::Int8)),
        DataType::FixedSizeList(item(DataType::Float32), 768),
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float16, false)), 384),
        DataType::Struct(Fields::empty()),
        DataType::Struct(Fields::from(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b c", DataType::Utf8, false).with_metadata(meta),
        ])),
        DataType::Map(
            Arc::new(Field::new("entries", DataType::Struct(entries), false)),
            false,
        ),
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        DataType::Union(
            UnionFields::try_new(
                [0, 3],
                [
                    Field::new("i", DataType::Int32, true),
                    Field::new("s", DataType::Utf8, true),
                ],
            )
            .unwrap(),
            UnionMode::Sparse,
        ),
        DataType::Union(UnionFields::empty(), UnionMode::Dense),
        DataType::RunEndEncoded(
            Arc::new(Field::new("run_ends", DataType::Int32, false)),
            Arc::new(Field::new("values", DataType::Utf8, true)),
        ),
    ]
}

/// Defaults of every kind, each on a column type it fits.
fn defaults() -> Vec<(DataType, Option<DefaultValue>, bool)> {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    vec![
        (DataType::Utf8, Some("general".into()), true),
        (
            DataType::Utf8,
            Some("it's \"quoted\"\n\u{e9}".into()),
            false,
        ),
        (DataType::Utf8, Some(DefaultValue::MigrationTime), true),
        (DataType::Utf8, None, true),
        (DataType::Boolean, Some(true.into()), true),
        (DataType::Boolean, Some(false.into()), false),
        (DataType::Int32, Some(3.into()), true),
        (DataType::Int64, Some((-7i64).into()), false),
        (DataType::UInt64, Some(u64::MAX.into()), true),
        (DataType::Float64, Some(0.5.into()), false),
        (DataType::Float32, Some(0.1f32.into()), true),
        (DataType::Float64, Some((-0.0).into()), true),
        (utc.clone(), Some(DefaultValue::MigrationTime), true),
        (
            utc,
            Some(DefaultValue::TimestampMicros(1_700_000_000_000_000)),
            true,
        ),
        (
            DataType::Date32,
            Some(DefaultValue::date(2024, 1, 31)),
            true,
        ),
        (DataType::List(item(DataType::Utf8)), None, true),
    ]
}

fn indexes() -> Vec<Index> {
    vec![
        Index::Auto,
        Index::BTree(BTreeIndexBuilder::default()),
        Index::BloomFilter(BloomFilterIndexBuilder::default()),
        Index::FTS(FtsIndexBuilder::default()),
        Index::FTS(FtsIndexBuilder::default().with_position(true)),
        Index::IvfFlat(IvfFlatIndexBuilder::default()),
        Index::IvfFlat(IvfFlatIndexBuilder::default().num_partitions(2)),
        Index::IvfPq(IvfPqIndexBuilder::default()),
        Index::IvfPq(
            IvfPqIndexBuilder::default()
                .distance_type(DistanceType::Cosine)
                .num_partitions(16)
                .num_sub_vectors(8),
        ),
        Index::IvfRq(IvfRqIndexBuilder::default()),
        Index::IvfHnswSq(IvfHnswSqIndexBuilder::default().num_edges(24)),
    ]
}

/// `m`'s definition and checksum, then (indented) the old text given, then
/// its previous checksums.
fn pin(out: &mut String, m: &dyn Migration, old_text: Option<&str>) {
    let _ = writeln!(out, "{}\n  {}", m.definition(), m.checksum());
    if let Some(old) = old_text {
        let _ = writeln!(out, "  {old}");
    }
    let _ = writeln!(out, "  {}", m.previous_checksums().join(","));
}

/// The golden file's text, from this build.
fn golden() -> String {
    let mut out = String::from(
        "# Definitions and checksums of the built-in migrations (src/builtin/golden.rs).\n\
         # Lines may be added; a changed line makes applied migrations look edited.\n",
    );
    out.push_str("\n## Data types (golden.rs, `types()`): the crate's encoding | 0.1's (arrow 58's Display)\n");
    for (i, t) in types().into_iter().enumerate() {
        let canonical = Definition::new("t").data_type("t", &t).finish();
        let _ = writeln!(
            out,
            "type {i}\n  {canonical}\n  {}",
            legacy::arrow58_type(&t)
        );
    }
    out.push_str("\n## AddColumns, one column each: definition, checksum, 0.1 checksum\n");
    for (i, (t, default, nullable)) in defaults().into_iter().enumerate() {
        let mut column = NewColumn::new(format!("c{i}"), t);
        if let Some(d) = default {
            column = column.default_value(d);
        }
        if !nullable {
            column = column.not_null();
        }
        pin(
            &mut out,
            &AddColumns::new("0001", "documents").column(column),
            None,
        );
    }
    let every = types()
        .into_iter()
        .enumerate()
        .fold(AddColumns::new("0002", "docs"), |m, (i, t)| {
            m.column(NewColumn::new(format!("t{i}"), t))
        });
    let _ = writeln!(
        out,
        "every type, all-null: {}\n  {}",
        every.checksum(),
        every.previous_checksums().join(",")
    );
    out.push_str("\n## ReEmbed: definition, checksum, 0.1 checksum\n");
    let embedder = Arc::new(Model("test-v2", 16));
    let reembeds = [
        ReEmbed::new("0003", "documents", embedder.clone()),
        ReEmbed::new("0003", "documents", embedder.clone())
            .source_column("body")
            .target_column("embedding")
            .model("all-mpnet-base-v2")
            .batch_size(7)
            .concurrency(3),
        ReEmbed::new("0003", "documents", embedder).client_embedding_config(
            r#"{"name": "test-v2", "model": {"dims": 16, "a": [1.5, null]}}"#,
        ),
    ];
    let reembeds = reembeds.into_iter().chain([ReEmbed::new(
        "0003",
        "documents",
        Arc::new(Model("test-v2", 16)),
    )
    .source_expression("concat_ws(' ', title, body)")]);
    for m in reembeds {
        pin(&mut out, &m, None);
    }
    out.push_str("\n## RebuildIndex: definition, checksum, 0.1 definition (LanceDB 0.41's Debug), 0.1 checksum\n");
    for index in indexes() {
        let legacy = format!("{index:?}");
        let m = RebuildIndex::new("0004", "documents", "vector", index).min_recall(0.5);
        pin(&mut out, &m, Some(&legacy));
    }
    out.push_str("\n## DropColumns, RenameColumn: definition, checksum, (no 0.1 checksum)\n");
    pin(
        &mut out,
        &DropColumns::new("0005", "documents")
            .column("a")
            .column("b \"c\""),
        None,
    );
    pin(
        &mut out,
        &RenameColumn::new("0006", "documents", "vector", "embedding"),
        None,
    );
    out.push_str("\n## FillColumn: definition, checksum, (no 0.1 checksum)\n");
    pin(
        &mut out,
        &FillColumn::new("0008", "documents", "category", "lower(category)"),
        None,
    );
    pin(
        &mut out,
        &FillColumn::new_column(
            "0009",
            "documents",
            "n",
            DataType::Int64,
            "character_length(text)",
        ),
        None,
    );
    out.push_str("\n## CastColumn: definition, checksum, (no 0.1 checksum)\n");
    for to in [DataType::Int32, DataType::Float16, DataType::LargeUtf8] {
        pin(
            &mut out,
            &CastColumn::new("0007", "documents", "score", to),
            None,
        );
    }
    out.push_str("\n## CreateTable: definition, checksum, (no 0.1 checksum)\n");
    let schema = arrow_schema::Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
        Field::new(
            "vector",
            DataType::FixedSizeList(item(DataType::Float32), 384),
            true,
        ),
    ]);
    pin(
        &mut out,
        &CreateTable::new("0010", "documents", schema.clone()),
        None,
    );
    pin(
        &mut out,
        &CreateTable::new("0010", "documents", schema.clone())
            .index("id", Index::BTree(BTreeIndexBuilder::default()))
            .named_index("vector", "v", Index::IvfPq(IvfPqIndexBuilder::default())),
        None,
    );
    out.push_str("\n## TargetSchema: definition, checksum, id, (no 0.1 checksum)\n");
    let targets = [
        TargetSchema::new("documents", schema.clone()),
        TargetSchema::new("documents", schema)
            .default("text", "none")
            .default("id", 7)
            .allow_drops()
            .allow_narrowing(),
    ];
    for m in targets {
        pin(&mut out, &m, Some(m.id()));
    }
    out
}

#[test]
fn definitions_and_checksums_are_pinned() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    let now = golden();
    if std::env::var_os("LANCEDB_MIGRATE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &now).unwrap();
        return;
    }
    let pinned = std::fs::read_to_string(&path).unwrap_or_default();
    for (i, (was, is)) in pinned.lines().zip(now.lines()).enumerate() {
        assert_eq!(
            was,
            is,
            "{GOLDEN}:{} changed: applied migrations would drift",
            i + 1
        );
    }
    assert!(
        now.lines().count() >= pinned.lines().count() && !pinned.is_empty(),
        "{GOLDEN} lost lines (or is missing): definitions may only be added"
    );
    assert_eq!(
        now, pinned,
        "{GOLDEN} gained lines: bless it and review the diff"
    );
}

/// The frozen copy of 0.1's type text is what arrow 58, the version 0.1
/// was built with, writes. When a newer arrow changes its `Display`, this
/// comparison stops holding and must go; the golden file keeps 0.1's text.
#[test]
fn the_frozen_type_text_is_arrow_58s_display() {
    for t in types() {
        assert_eq!(legacy::arrow58_type(&t), t.to_string(), "{t:?}");
    }
}

/// The encoding keeps values apart that text alone would mix up.
#[test]
fn the_encoding_is_unambiguous() {
    let a = Definition::new("k").text("a", "x;b=y").finish();
    let b = Definition::new("k").text("a", "x").text("b", "y").finish();
    assert_ne!(a, b);
    assert_eq!(a, r#"k{a="x;b=y"}"#);
    let float = Definition::new("k").float("f", 0.1).finish();
    assert_eq!(float, "k{f=f64:3fb999999999999a}");
    let quoted = Definition::new("my kind")
        .text("key with space", "\"\\\n")
        .finish();
    assert_eq!(quoted, r#""my kind"{"key with space"="\"\\\u{a}"}"#);
}
