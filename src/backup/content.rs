//! A content checksum of a table version: BLAKE3 over every value of every
//! column, in scan order, independent of how the rows are split into batches.
//!
//! Each column (and each nesting level inside it) feeds two streams: its
//! validity (for each NULL, the number of valid elements since the previous
//! one), and the elements' value bytes. Streams are hashed separately and
//! only combined at the end, so the result depends on the rows and their
//! order, never on batch boundaries.

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, SchemaRef};
use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::lance::files::Snapshot;

/// What a scan of a table version found: its rows, schema and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Content {
    pub(crate) rows: u64,
    pub(crate) schema: String,
    pub(crate) checksum: String,
}

/// Reads every row of `snapshot` and checksums it. Hashing runs on the
/// blocking pool, one batch at a time.
pub(crate) async fn scan(snapshot: &Snapshot, what: &str) -> Result<Content> {
    let schema = snapshot.schema();
    let mut rows = snapshot.rows().await?;
    let mut hasher = ContentHasher::new(&schema);
    while let Some(batch) = rows.try_next().await? {
        hasher = tokio::task::spawn_blocking(move || {
            hasher.update(&batch);
            hasher
        })
        .await
        .map_err(|e| Error::Panicked {
            message: format!("the checksum of {what}: {e}"),
        })?;
    }
    Ok(Content {
        rows: hasher.rows,
        schema: describe_schema(&schema),
        checksum: hasher.finish(),
    })
}

/// The schema in one line: every field's name, type and nullability.
pub(crate) fn describe_schema(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            let null = if f.is_nullable() { "" } else { " not null" };
            format!("{}: {}{null}", f.name(), f.data_type())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checksums record batches of one schema, fed in order.
#[derive(Debug)]
pub(crate) struct ContentHasher {
    schema: SchemaRef,
    columns: Vec<Streams>,
    rows: u64,
}

impl ContentHasher {
    pub(crate) fn new(schema: &SchemaRef) -> Self {
        Self {
            schema: schema.clone(),
            columns: schema.fields().iter().map(|_| Streams::default()).collect(),
            rows: 0,
        }
    }

    /// Feeds the next batch. Columns are matched by position.
    pub(crate) fn update(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows() as u64;
        for (streams, column) in self.columns.iter_mut().zip(batch.columns()) {
            streams.feed(column);
        }
    }

    /// The checksum, hex-encoded.
    pub(crate) fn finish(self) -> String {
        let mut total = blake3::Hasher::new();
        total.update(&self.rows.to_le_bytes());
        for (field, streams) in self.schema.fields().iter().zip(self.columns) {
            total.update(field.name().as_bytes());
            total.update(&[0]);
            total.update(field.data_type().to_string().as_bytes());
            total.update(&[0]);
            streams.finish_into(&mut total);
        }
        total.finalize().to_hex().to_string()
    }
}

/// The two streams of one nesting level of a column, and its children's.
#[derive(Debug, Default)]
struct Streams {
    validity: blake3::Hasher,
    /// Valid elements since the last NULL.
    valid_run: u64,
    values: blake3::Hasher,
    children: Vec<Self>,
}

impl Streams {
    fn child(&mut self, i: usize) -> &mut Self {
        while self.children.len() <= i {
            self.children.push(Self::default());
        }
        &mut self.children[i]
    }

    fn finish_into(mut self, total: &mut blake3::Hasher) {
        self.validity.update(&self.valid_run.to_le_bytes());
        total.update(self.validity.finalize().as_bytes());
        total.update(self.values.finalize().as_bytes());
        total.update(&(self.children.len() as u64).to_le_bytes());
        for child in self.children {
            child.finish_into(total);
        }
    }

    fn feed(&mut self, array: &ArrayRef) {
        let len = array.len();
        if array.null_count() == 0 {
            self.valid_run += len as u64;
        } else {
            for i in 0..len {
                if array.is_valid(i) {
                    self.valid_run += 1;
                } else {
                    self.validity.update(&self.valid_run.to_le_bytes());
                    self.valid_run = 0;
                }
            }
        }
        let data_type = array.data_type();
        if let Some(width) = data_type.primitive_width() {
            self.feed_fixed(array, width);
            return;
        }
        match data_type {
            DataType::Null => {}
            DataType::Boolean => {
                let values = array.as_boolean();
                for i in 0..len {
                    self.values
                        .update(&[u8::from(array.is_valid(i) && values.value(i))]);
                }
            }
            DataType::FixedSizeBinary(width) => self.feed_fixed(array, *width as usize),
            DataType::Utf8 => self.feed_bytes(array, |i| array.as_string::<i32>().value(i)),
            DataType::LargeUtf8 => self.feed_bytes(array, |i| array.as_string::<i64>().value(i)),
            DataType::Utf8View => self.feed_bytes(array, |i| array.as_string_view().value(i)),
            DataType::Binary => self.feed_bytes(array, |i| array.as_binary::<i32>().value(i)),
            DataType::LargeBinary => self.feed_bytes(array, |i| array.as_binary::<i64>().value(i)),
            DataType::BinaryView => self.feed_bytes(array, |i| array.as_binary_view().value(i)),
            DataType::FixedSizeList(_, size) => {
                let list = array.as_fixed_size_list();
                let size = *size as usize;
                if len > 0 {
                    let start = list.value_offset(0) as usize;
                    let child = list.values().slice(start, len * size);
                    self.child(0).feed(&child);
                }
            }
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                let offsets = list.value_offsets();
                self.feed_list(list.values(), offsets.iter().map(|o| *o as usize));
            }
            DataType::LargeList(_) => {
                let list = array.as_list::<i64>();
                let offsets = list.value_offsets();
                self.feed_list(list.values(), offsets.iter().map(|o| *o as usize));
            }
            DataType::Struct(_) => {
                for (i, column) in array.as_struct().columns().iter().enumerate() {
                    self.child(i).feed(column);
                }
            }
            _ => self.feed_formatted(array),
        }
    }

    /// Fixed-width values: the raw bytes, with NULL slots zeroed.
    fn feed_fixed(&mut self, array: &ArrayRef, width: usize) {
        let data = array.to_data();
        let buffer = &data.buffers()[0];
        let start = data.offset() * width;
        let bytes = &buffer.as_slice()[start..start + data.len() * width];
        if array.null_count() == 0 {
            self.values.update(bytes);
            return;
        }
        let zeros = vec![0u8; width];
        for (i, value) in bytes.chunks_exact(width).enumerate() {
            self.values
                .update(if array.is_valid(i) { value } else { &zeros });
        }
    }

    /// Variable-length values: each one's length, then its bytes.
    fn feed_bytes<'a, T: AsRef<[u8]> + ?Sized + 'a>(
        &mut self,
        array: &'a ArrayRef,
        value: impl Fn(usize) -> &'a T,
    ) {
        for i in 0..array.len() {
            let bytes: &[u8] = if array.is_valid(i) {
                value(i).as_ref()
            } else {
                &[]
            };
            self.values.update(&(bytes.len() as u64).to_le_bytes());
            self.values.update(bytes);
        }
    }

    /// Lists: each one's length here, their items one level down.
    fn feed_list(&mut self, values: &ArrayRef, offsets: impl Iterator<Item = usize>) {
        let offsets: Vec<usize> = offsets.collect();
        for pair in offsets.windows(2) {
            self.values
                .update(&((pair[1] - pair[0]) as u64).to_le_bytes());
        }
        if let (Some(first), Some(last)) = (offsets.first(), offsets.last()) {
            self.child(0).feed(&values.slice(*first, last - first));
        }
    }

    /// Any other type: its display form, one value at a time.
    fn feed_formatted(&mut self, array: &ArrayRef) {
        let options = FormatOptions::default();
        match ArrayFormatter::try_new(array.as_ref(), &options) {
            Ok(formatter) => {
                for i in 0..array.len() {
                    let text = formatter.value(i).to_string();
                    self.values.update(&(text.len() as u64).to_le_bytes());
                    self.values.update(text.as_bytes());
                }
            }
            // A type Arrow cannot display: its validity still counts.
            Err(_) => {
                self.values.update(&array.len().to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::{Int64Array, RecordBatch, StringArray};
    use arrow_schema::{Field, Schema};

    use super::*;

    fn batch(
        ids: &[Option<i64>],
        texts: &[Option<&str>],
        vectors: &[Option<[f32; 2]>],
    ) -> RecordBatch {
        let mut builder = FixedSizeListBuilder::new(Float32Builder::new(), 2);
        for v in vectors {
            match v {
                Some(v) => {
                    builder.values().append_slice(v);
                    builder.append(true);
                }
                None => {
                    builder.values().append_slice(&[0.0, 0.0]);
                    builder.append(false);
                }
            }
        }
        let vectors = builder.finish();
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("text", DataType::Utf8, true),
            Field::new("vector", vectors.data_type().clone(), true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(texts.to_vec())),
                Arc::new(vectors),
            ],
        )
        .unwrap()
    }

    fn checksum(batches: &[RecordBatch]) -> String {
        let mut hasher = ContentHasher::new(&batches[0].schema());
        for b in batches {
            hasher.update(b);
        }
        hasher.finish()
    }

    #[test]
    fn same_rows_in_other_batches_give_the_same_checksum() {
        let ids = [Some(1), None, Some(3), Some(4)];
        let texts = [Some("a"), Some("bb"), None, Some("")];
        let vectors = [Some([1.0, 2.0]), None, Some([3.0, 4.0]), Some([5.0, 6.0])];
        let whole = batch(&ids, &texts, &vectors);
        let split = [whole.slice(0, 1), whole.slice(1, 2), whole.slice(3, 1)];
        let reference = checksum(std::slice::from_ref(&whole));
        assert_eq!(reference, checksum(&split));

        // Any changed value, NULL or order changes it.
        let mut other_ids = ids;
        other_ids[3] = Some(5);
        assert_ne!(reference, checksum(&[batch(&other_ids, &texts, &vectors)]));
        let mut other_texts = texts;
        other_texts[2] = Some("");
        assert_ne!(reference, checksum(&[batch(&ids, &other_texts, &vectors)]));
        let mut other_vectors = vectors;
        other_vectors[0] = Some([1.0, 2.5]);
        assert_ne!(reference, checksum(&[batch(&ids, &texts, &other_vectors)]));
        let reordered = arrow_select::concat::concat_batches(
            &whole.schema(),
            &[whole.slice(1, 3), whole.slice(0, 1)],
        )
        .unwrap();
        assert_ne!(reference, checksum(&[reordered]));
    }
}
