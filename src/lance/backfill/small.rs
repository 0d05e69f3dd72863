//! Small fragments, many to a call: a busy application appends rows a few
//! at a time, each append its own fragment. Computing them one fragment
//! per call to `compute` runs a latency-bound embedder at a few rows per
//! call; here their rows are gathered into calls of up to `batch_size`
//! rows, and each fragment still gets its own column file.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::Schema as ArrowSchema;
use futures::{StreamExt, TryStreamExt, stream};
use lance::Dataset;
use lance::dataset::fragment::FileFragment;
use tracing::debug;

use crate::error::{Error, Result};
use crate::lance::backfill::Backfill;
use crate::lance::backfill::checkpoint::Filled;
use crate::lance::backfill::compute::compute_batch;

impl Backfill<'_> {
    /// Physical rows of `fragment` as its metadata records them.
    fn physical(fragment: &FileFragment) -> Option<u64> {
        fragment.metadata().physical_rows.map(|n| n as u64)
    }

    /// `todo` split into fragments smaller than one batch, and the rest
    /// (among them fragment `except`, resuming from a checkpoint). Without
    /// a source column (a constant to fill), every fragment is in the rest.
    pub(super) fn split_small(
        &self,
        todo: Vec<FileFragment>,
        except: Option<u64>,
    ) -> (Vec<FileFragment>, Vec<FileFragment>) {
        if self.source.is_none() {
            return (Vec::new(), todo);
        }
        let batch = u64::from(self.batch_size);
        todo.into_iter().partition(|f| {
            Some(f.id() as u64) != except && Self::physical(f).is_some_and(|n| n < batch)
        })
    }

    /// `small` fragments in groups of at most `batch_size` rows, in order.
    pub(super) fn groups(&self, small: Vec<FileFragment>) -> Vec<Vec<FileFragment>> {
        let batch = u64::from(self.batch_size);
        let mut groups: Vec<Vec<FileFragment>> = Vec::new();
        let mut rows = 0;
        for fragment in small {
            let n = Self::physical(&fragment).unwrap_or(batch);
            match groups.last_mut() {
                Some(group) if rows + n <= batch => {
                    group.push(fragment);
                    rows += n;
                }
                _ => {
                    groups.push(vec![fragment]);
                    rows = n;
                }
            }
        }
        groups
    }

    /// Fills `groups` of small fragments ([`groups`](Self::groups)), a
    /// group per call to `compute`, `concurrency` calls at a time. Once a
    /// stop is asked for, no further group is started; the groups in
    /// flight finish. Returns what was filled (not committed) and whether
    /// it stopped before the end.
    pub(super) async fn fill_small(
        &self,
        dataset: &Arc<Dataset>,
        groups: Vec<Vec<FileFragment>>,
    ) -> Result<(Vec<Filled>, bool)> {
        if groups.is_empty() {
            return Ok((Vec::new(), false));
        }
        let count = groups.len();
        debug!(groups = count, "filling small fragments, many to a call");
        let stop = self.stop.clone();
        let filled: Vec<Vec<Filled>> = stream::iter(groups)
            .take_while(move |_| std::future::ready(!stop.is_stopped()))
            .map(|group| self.fill_group(dataset, group))
            .buffered(self.concurrency.max(1))
            .try_collect()
            .await?;
        let stopped = filled.len() < count;
        Ok((filled.into_iter().flatten().collect(), stopped))
    }

    /// One call to `compute` for the live rows of `group`'s fragments, and
    /// a column file for each fragment.
    // Long on purpose: read the group's fragments, one compute call, a file per fragment: the
    // three share the group's row offsets.
    async fn fill_group(
        &self,
        dataset: &Arc<Dataset>,
        group: Vec<FileFragment>,
    ) -> Result<Vec<Filled>> {
        let name = self.table.name();
        let Some(source) = self.source.as_ref() else {
            return Err(Error::custom("a fill of small fragments needs a source"));
        };
        let read = |id: usize| Error::lance(format!("read fragment {id} of `{name}`"));
        let column = self.column(dataset)?;
        let field_schema = dataset
            .schema()
            .project(&[column.as_str()])
            .map_err(Error::lance(format!("project column `{column}`")))?;
        let source_schema = dataset
            .schema()
            .project(&source.columns())
            .map_err(Error::lance(format!(
                "project the columns {:?}",
                source.columns()
            )))?;
        let mut sources: Vec<ArrayRef> = Vec::new();
        let mut live: Vec<Option<u32>> = Vec::new();
        let mut lengths = Vec::new();
        for fragment in &group {
            let read = read(fragment.id());
            let physical = fragment.physical_rows().await.map_err(&read)? as u64;
            let deleted = fragment.get_deletion_vector().await.map_err(&read)?;
            let batches: Vec<RecordBatch> = fragment
                .read_physical_slice(0..physical, &source_schema, self.batch_size.max(1))
                .await
                .map_err(&read)?
                .buffered(1)
                .try_collect()
                .await
                .map_err(&read)?;
            let base = live.len() as u32;
            for batch in &batches {
                let column = &source.values(batch)?;
                for i in 0..column.len() {
                    let row = (live.len() as u32) - base;
                    let gone = deleted.as_ref().is_some_and(|d| d.contains(row));
                    live.push((!gone && column.is_valid(i)).then_some(live.len() as u32));
                }
                sources.push(column.clone());
            }
            lengths.push(physical as usize);
        }
        let refs: Vec<&dyn Array> = sources.iter().map(AsRef::as_ref).collect();
        let all = arrow_select::concat::concat(&refs)
            .map_err(Error::arrow("gather the small fragments' rows"))?;
        let out_schema = Arc::new(ArrowSchema::from(&field_schema));
        let compute = self.compute.clone();
        let work =
            tokio::task::spawn_blocking(move || compute_batch(&compute, &all, &live, out_schema));
        let (values, computed) = work.await.unwrap_or_else(|e| {
            Err(Error::Panicked {
                message: format!("the task computing the column failed: {e}"),
            })
        })?;
        self.progress.advance(computed);
        let mut filled = Vec::with_capacity(group.len());
        let mut offset = 0;
        for (fragment, len) in group.iter().zip(lengths) {
            let slice = values.slice(offset, len);
            offset += len;
            let group = fragment
                .write_columns(stream::iter([Ok(slice)]), &field_schema)
                .await
                .map_err(Error::lance(format!(
                    "write the filled column of fragment {} of `{name}`",
                    fragment.id()
                )))?;
            filled.push(Filled {
                group,
                rows: fragment.metadata().num_rows().unwrap_or(len) as u64,
                target: None,
            });
        }
        Ok(filled)
    }
}
