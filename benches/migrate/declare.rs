//! Declarative against hand-written: a `TargetSchema` that adds the three
//! columns of `add_3_columns` against the `AddColumns` that adds them, on
//! the same table (with the bytes each writes), and the time to plan a
//! 50-column declaration against the equivalent hand-written list.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use lancedb::Connection;
use lancedb_migrate::testing::{self, TempDb};
use lancedb_migrate::{AddColumns, DefaultValue, Migrator, NewColumn, TargetSchema};
use tokio::runtime::Runtime;

use super::{DIMS, Fixture, TABLE, drop_ledger, three_columns};

/// The documents table with the three columns of [`three_columns`],
/// declared: the same types, nullability and defaults.
fn three_columns_declared() -> TargetSchema {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields: Vec<Field> = testing::documents_schema(DIMS)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend([
        Field::new("category", DataType::Utf8, true),
        Field::new("is_active", DataType::Boolean, true),
        Field::new("created_at", utc, true),
    ]);
    TargetSchema::new(TABLE, Schema::new(fields))
        .default("category", "general")
        .default("is_active", true)
        .default("created_at", DefaultValue::MigrationTime)
}

/// Bytes under the table's directory.
fn table_bytes(fixture: &Fixture) -> u64 {
    fn walk(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
    }
    walk(
        &fixture
            .tmp
            .path()
            .join(format!("{TABLE}.lance"))
            .join("data"),
    )
}

/// Data bytes one run of `migrator` writes into the table (untimed).
async fn bytes_written(fixture: &Fixture, migrator: Migrator) -> u64 {
    fixture.reset().await;
    drop_ledger(fixture.db(), "bench_ledger").await;
    let before = table_bytes(fixture);
    migrator.run().await.unwrap();
    table_bytes(fixture) - before
}

pub(super) fn declare(c: &mut Criterion, rt: &Runtime, fixtures: &[(usize, Fixture)]) {
    let mut group = c.benchmark_group("declare_3_columns");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    for (rows, fixture) in fixtures {
        let ledger = || Migrator::new(fixture.db().clone()).ledger_table("bench_ledger");
        let hand = rt.block_on(bytes_written(fixture, ledger().add(three_columns("0001"))));
        let declared = rt.block_on(bytes_written(
            fixture,
            ledger().add(three_columns_declared()),
        ));
        eprintln!(
            "declare_3_columns/{rows}: data written: hand-written {hand} bytes, declared {declared} bytes"
        );
        for (name, declarative) in [("hand_written", false), ("declared", true)] {
            group.bench_with_input(BenchmarkId::new(name, rows), fixture, |b, f| {
                b.to_async(rt).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        f.reset().await;
                        drop_ledger(f.db(), "bench_ledger").await;
                        let m = Migrator::new(f.db().clone()).ledger_table("bench_ledger");
                        let m = match declarative {
                            true => m.add(three_columns_declared()),
                            false => m.add(three_columns("0001")),
                        };
                        let start = Instant::now();
                        assert_eq!(m.run().await.unwrap().applied().count(), 1);
                        total += start.elapsed();
                    }
                    total
                });
            });
        }
    }
    group.finish();
}

/// 47 columns of assorted types beyond the documents table's 3.
fn extra_columns() -> Vec<(Field, DefaultValue)> {
    (0..47_i32)
        .map(|i| match i % 4 {
            0 => (
                Field::new(format!("s{i}"), DataType::Utf8, true),
                DefaultValue::from("x"),
            ),
            1 => (
                Field::new(format!("b{i}"), DataType::Boolean, false),
                DefaultValue::from(true),
            ),
            2 => (
                Field::new(format!("i{i}"), DataType::Int64, false),
                DefaultValue::Int(i64::from(i)),
            ),
            _ => (
                Field::new(format!("f{i}"), DataType::Float64, true),
                DefaultValue::from(0.5),
            ),
        })
        .collect()
}

async fn plan_db() -> (TempDb, Connection) {
    let tmp = TempDb::new().await.unwrap();
    testing::documents_table(tmp.db(), TABLE, 1000, DIMS)
        .await
        .unwrap();
    let db = tmp.db().clone();
    (tmp, db)
}

pub(super) fn plan_50_columns(c: &mut Criterion, rt: &Runtime) {
    let (_tmp, db) = rt.block_on(plan_db());
    let extra = extra_columns();
    let mut fields: Vec<Field> = testing::documents_schema(DIMS)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(extra.iter().map(|(f, _)| f.clone()));
    let declared = extra.iter().fold(
        TargetSchema::new(TABLE, Arc::new(Schema::new(fields))),
        |t, (f, v)| t.default(f.name().clone(), v.clone()),
    );
    let hand = extra
        .iter()
        .fold(AddColumns::new("0001", TABLE), |m, (f, v)| {
            let mut column =
                NewColumn::new(f.name().clone(), f.data_type().clone()).default_value(v.clone());
            if !f.is_nullable() {
                column = column.not_null();
            }
            m.column(column)
        });
    let mut group = c.benchmark_group("plan_50_columns");
    let hand_list = Migrator::new(db.clone()).add(hand);
    let declared_list = Migrator::new(db).add(declared);
    group.bench_function("hand_written", |b| {
        b.to_async(rt)
            .iter(|| async { hand_list.plan().await.unwrap() });
    });
    group.bench_function("declared", |b| {
        b.to_async(rt)
            .iter(|| async { declared_list.plan().await.unwrap() });
    });
    group.finish();
}
