//! Computing a fragment's new values: its source rows read in batches,
//! `compute` run on the live ones off the async executor, `concurrency`
//! batches at a time, NULL for deleted rows and NULL sources.

use std::sync::{Arc, Mutex};

use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::Schema as ArrowSchema;
use futures::future::{self, BoxFuture};
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt, TryStreamExt};
use lance::dataset::fragment::FileFragment;

use crate::error::{Error, Result};
use crate::lance::backfill::{Backfill, Compute};

impl Backfill<'_> {
    /// Rows per part: about `checkpoint_every` of work, at least the batches
    /// in flight at once.
    pub(super) fn part_rows(&self, rows_per_sec: f64) -> u64 {
        let batch = u64::from(self.batch_size);
        let floor = batch * self.concurrency as u64;
        let want = (rows_per_sec * self.checkpoint_every.as_secs_f64()) as u64;
        want.max(floor).div_ceil(batch) * batch
    }

    /// The new column's values for physical rows `rows` of `fragment`, in
    /// batches, computed `concurrency` batches at a time off the async
    /// executor, each with the number of rows computed. Deleted rows and
    /// rows whose source is NULL get NULL. When `stoppable`, the stream
    /// ends early (at a batch boundary) once a stop is asked for.
    // Long on purpose: one stream pipeline (read, drop deleted and NULL rows, compute off the
    // executor, stop at a batch boundary) whose stages close over the same state.
    pub(super) async fn values(
        &self,
        fragment: &FileFragment,
        rows: std::ops::Range<u64>,
        failure: &Arc<Mutex<Option<Error>>>,
        stoppable: bool,
    ) -> Result<BoxStream<'static, lance::Result<(RecordBatch, u64)>>> {
        if rows.is_empty() {
            return Ok(stream::empty().boxed());
        }
        let name = self.table.name();
        let read = Error::lance(format!("read fragment {} of `{name}`", fragment.id()));
        let dataset = fragment.dataset();
        let column = self.column(dataset)?;
        let out_schema = Arc::new(ArrowSchema::from(
            &dataset
                .schema()
                .project(&[column.as_str()])
                .map_err(&read)?,
        ));
        let deleted = fragment.get_deletion_vector().await.map_err(&read)?;
        let batches = self.inputs(fragment, rows.clone()).await.map_err(&read)?;
        let every_row = self.source.is_none();
        let source_spec = self.source.clone();
        let compute = self.compute.clone();
        let failure = failure.clone();
        let batch_size = u64::from(self.batch_size);
        // Once a stop is asked for, no further batch is read or sent to
        // `compute` (but the first, so that a part is never empty); the
        // ones in flight finish and are written.
        let stop = self.stop.clone();
        let stream = batches
            .enumerate()
            .take_while(move |(i, _)| {
                std::future::ready(*i == 0 || !(stoppable && stop.is_stopped()))
            })
            .map(move |(i, batch)| {
                let first = rows.start + i as u64 * batch_size;
                let compute = compute.clone();
                let deleted = deleted.clone();
                let out_schema = out_schema.clone();
                let failure = failure.clone();
                let source_spec = source_spec.clone();
                async move {
                    let batch = batch.await?;
                    let source = match &source_spec {
                        Some(spec) => spec.values(&batch).map_err(|e| keep_first(&failure, e))?,
                        None => batch.column(0).clone(),
                    };
                    let live: Vec<Option<u32>> = (0..batch.num_rows())
                        .map(|i| {
                            let row = (first + i as u64) as u32;
                            let deleted = deleted.as_ref().is_some_and(|d| d.contains(row));
                            (!deleted && (every_row || source.is_valid(i))).then_some(i as u32)
                        })
                        .collect();
                    let work = tokio::task::spawn_blocking(move || {
                        compute_batch(&compute, &source, &live, out_schema)
                    });
                    let out = work.await.unwrap_or_else(|e| {
                        Err(Error::Panicked {
                            message: format!("the task computing the column failed: {e}"),
                        })
                    });
                    out.map_err(|e| keep_first(&failure, e))
                }
            })
            .buffered(self.concurrency.max(1));
        Ok(stream.boxed())
    }

    /// The input batches for physical rows `rows` of `fragment`: the
    /// source column, or (without one) a column of NULLs that only gives
    /// each batch its length.
    async fn inputs(
        &self,
        fragment: &FileFragment,
        rows: std::ops::Range<u64>,
    ) -> lance::Result<BoxStream<'static, BoxFuture<'static, lance::Result<RecordBatch>>>> {
        let Some(source) = &self.source else {
            let schema = Arc::new(ArrowSchema::new(vec![arrow_schema::Field::new(
                "rows",
                arrow_schema::DataType::Null,
                true,
            )]));
            let size = u64::from(self.batch_size);
            let batches = (rows.start..rows.end)
                .step_by(size as usize)
                .map(move |start| {
                    let n = ((start + size).min(rows.end) - start) as usize;
                    let column = arrow_array::new_null_array(&arrow_schema::DataType::Null, n);
                    let batch = RecordBatch::try_new(schema.clone(), vec![column]);
                    future::ready(batch.map_err(lance::Error::from)).boxed()
                });
            return Ok(stream::iter(batches).boxed());
        };
        let schema = fragment.dataset().schema().project(&source.columns())?;
        let batches = fragment
            .read_physical_slice(rows, &schema, self.batch_size)
            .await?;
        Ok(batches.map(FutureExt::boxed).boxed())
    }

    /// `values` with progress counted as batches are consumed.
    pub(super) fn counted<'s>(
        &'s self,
        values: BoxStream<'static, lance::Result<(RecordBatch, u64)>>,
    ) -> impl futures::Stream<Item = lance::Result<RecordBatch>> + Send + 's {
        values.map_ok(move |(batch, rows)| {
            self.progress.advance(rows);
            batch
        })
    }
}

/// Runs `compute` on the live rows of `source` and scatters the results
/// back, NULL elsewhere. Returns the batch and how many rows were computed.
pub(super) fn compute_batch(
    compute: &Compute,
    source: &ArrayRef,
    live: &[Option<u32>],
    schema: Arc<ArrowSchema>,
) -> Result<(RecordBatch, u64)> {
    let indices: UInt32Array = live.iter().flatten().copied().collect();
    let computed = indices.len();
    let input = arrow_select::take::take(source.as_ref(), &indices, None)
        .map_err(Error::arrow("select the rows to compute"))?;
    let values = if computed == 0 {
        arrow_array::new_null_array(schema.field(0).data_type(), 0)
    } else {
        compute(input)?
    };
    // Position of each row's value in `values`, or NULL.
    let mut next = 0u32;
    let positions: UInt32Array = live
        .iter()
        .map(|row| {
            row.map(|_| {
                next += 1;
                next - 1
            })
        })
        .collect();
    let column = arrow_select::take::take(values.as_ref(), &positions, None)
        .map_err(Error::arrow("place the computed values"))?;
    let batch = RecordBatch::try_new(schema, vec![column])
        .map_err(Error::arrow("build a batch of computed values"))?;
    Ok((batch, computed as u64))
}

/// The typed error a compute step stashed, or `e` mapped by `read`.
pub(super) fn take_failure(
    failure: &Mutex<Option<Error>>,
    e: lance::Error,
    read: &impl Fn(lance::Error) -> Error,
) -> Error {
    failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .unwrap_or_else(|| read(e))
}

/// Keeps `e` as the fill's first failure (the error the fill returns, with
/// its type) and gives Lance's stream its message.
fn keep_first(failure: &Mutex<Option<Error>>, e: Error) -> lance::Error {
    let message = e.to_string();
    failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert(e);
    lance::Error::invalid_input(message)
}
