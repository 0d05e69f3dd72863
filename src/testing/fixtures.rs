//! Fixture tables shaped like an application's documents: `id`, `text`
//! and a `vector`, with deterministic contents.

use std::sync::Arc;

use arrow_array::types::Float32Type;
use arrow_array::{
    ArrayRef, FixedSizeListArray, Int64Array, RecordBatch, RecordBatchIterator, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lancedb::{Connection, Table};

use crate::error::{Error, Result};

/// The text of fixture row `id`: deterministic and distinct per row.
pub fn document_text(id: i64) -> String {
    format!(
        "document {id}: the quick brown fox number {id} jumps over lazy dog {}",
        id % 7
    )
}

/// The vector of fixture row `id`: `dims` deterministic floats in [-1, 1).
pub fn document_vector(id: i64, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|j| {
            let x = (id as u64)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(j as u64 * 40_503);
            ((x % 20_000) as f32 / 10_000.0) - 1.0
        })
        .collect()
}

/// The schema of [`documents_table`]: `id` Int64, `text` Utf8, `vector`
/// FixedSizeList(Float32, `dims`), all NOT NULL.
pub fn documents_schema(dims: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("vector", vector_type(dims), false),
    ]))
}

/// `FixedSizeList(Float32, dims)` with nullable items, as LanceDB writes it.
pub fn vector_type(dims: usize) -> DataType {
    let dims = i32::try_from(dims).expect("vector dimension fits in i32");
    DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), dims)
}

/// One batch of fixture rows with ids `ids`.
///
/// # Panics
///
/// If `dims` does not fit in an `i32`.
pub fn documents_batch(ids: std::ops::Range<i64>, dims: usize) -> RecordBatch {
    let id = Int64Array::from_iter_values(ids.clone());
    let text: StringArray = ids.clone().map(|i| Some(document_text(i))).collect();
    let vectors = ids.map(|i| Some(document_vector(i, dims).into_iter().map(Some)));
    let vector = FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(vectors, dims as i32);
    let columns: Vec<ArrayRef> = vec![Arc::new(id), Arc::new(text), Arc::new(vector)];
    RecordBatch::try_new(documents_schema(dims), columns).expect("fixture batch matches its schema")
}

/// Creates table `name` with `rows` fixture documents of `dims`-dimensional
/// vectors, written in batches of up to 10 000 rows.
///
/// The returned handle stays at the version it last saw: after a
/// [`Migrator::run`](crate::Migrator::run) (which commits through handles of
/// its own) call [`checkout_latest`](lancedb::Table::checkout_latest) before
/// reading its version, schema or rows directly, or read it with
/// [`Snapshot::take`](crate::testing::Snapshot::take), which does.
///
/// # Errors
///
/// [`Error::LanceDb`] if the table cannot be created (e.g. it exists).
pub async fn documents_table(
    db: &Connection,
    name: &str,
    rows: usize,
    dims: usize,
) -> Result<Table> {
    let rows = rows as i64;
    let batches: Vec<_> = (0..rows)
        .step_by(10_000)
        .map(|start| Ok(documents_batch(start..(start + 10_000).min(rows), dims)))
        .collect();
    let reader = RecordBatchIterator::new(batches, documents_schema(dims));
    db.create_table(
        name,
        Box::new(reader) as Box<dyn arrow_array::RecordBatchReader + Send>,
    )
    .execute()
    .await
    .map_err(Error::lance(format!("create fixture table `{name}`")))
}
