//! Filling one column of a table, fragment by fragment, with values computed
//! from another column — resumable, with bounded memory, while the
//! application keeps writing.
//!
//! The column must already exist (added all-null, which is metadata-only).
//! For each fragment, the computed values are written as one new data file
//! holding only that column (Lance's `write_columns`), and committed with a
//! `DataReplacement`, which touches no other column. Commits are grouped so
//! that one lands at least every `checkpoint_every`.
//!
//! A fragment whose work would take longer than `checkpoint_every` is split
//! into parts of about that much work (`write_data_file_part`); after each
//! part, the part's description is saved in the table's config under
//! [`Backfill::checkpoint_key`]. A process that dies mid-fragment resumes from
//! its last part; at the end the parts are concatenated (Lance copies the
//! encoded pages, nothing is recomputed) and committed like any other file.
//!
//! Which fragments still need work is read off the table itself: a fragment
//! that existed when the migration started is done once it has a data file
//! for the column; any other fragment (appended by the application, or
//! rewritten by compaction) is done once none of its rows has the column
//! NULL while the source is set.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::Schema as ArrowSchema;
use futures::future::{self, BoxFuture};
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt, TryStreamExt};
use lance::Dataset;
use lance::dataset::fragment::FileFragment;
use lance::dataset::transaction::{DataReplacementGroup, Operation, Transaction};
use lance::dataset::{CommitBuilder, DataFilePart, DataFileTarget};
use lancedb::Table;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::error::{Error, Result, is_lance_conflict};
use crate::ledger::lease::Fence;
use crate::progress::Progress;

/// Computes the new column's values for a batch of source values (only live,
/// non-null rows are passed). Must return an array of the same length.
pub(crate) type Compute = Arc<dyn Fn(ArrayRef) -> Result<ArrayRef> + Send + Sync>;

/// Settings of one backfill.
pub(crate) struct Backfill<'a> {
    pub(crate) table: &'a Table,
    /// The column computed from; `None` computes a value for every row
    /// from nothing (a constant), and fills only the fragments that existed
    /// when the fill started: rows appended later keep NULL.
    pub(crate) source: Option<String>,
    /// The Lance field id of the column being filled (stable across renames).
    pub(crate) field_id: i32,
    pub(crate) compute: Compute,
    pub(crate) batch_size: u32,
    pub(crate) concurrency: usize,
    pub(crate) checkpoint_every: Duration,
    /// Fragments of the table before the migration started.
    pub(crate) original_fragments: HashSet<u64>,
    /// Table config key holding the in-progress fragment's parts.
    pub(crate) checkpoint_key: String,
    pub(crate) progress: &'a Progress,
    /// Checked before every commit: a process that lost the migration
    /// lease commits nothing more.
    pub(crate) fence: Fence,
}

/// What one fragment's work produced, waiting for a commit.
struct Filled {
    group: DataReplacementGroup,
    rows: u64,
    /// Set when the file was assembled from parts: they are removed after
    /// the commit.
    target: Option<DataFileTarget>,
}

/// A saved, in-progress fragment.
struct Checkpoint {
    fragment: u64,
    physical_rows: u64,
    target: DataFileTarget,
    parts: Vec<DataFilePart>,
}

impl Backfill<'_> {
    /// Fills every fragment that needs it, until a pass finds none.
    pub(crate) async fn run(&self) -> Result<u64> {
        self.fill_passes(None).await
    }

    /// Fills what needs it in at most `passes` passes: the first over the
    /// table, each later one over what other writers appended during the
    /// one before, and a later one only while it converges (see
    /// [`Self::converging`]). On a table the application appends to faster
    /// than the column can be computed, every pass finds new work and takes
    /// longer than the one before; the caller moves on and picks the rest up
    /// later.
    pub(crate) async fn run_passes(&self, passes: usize) -> Result<u64> {
        self.fill_passes(Some(passes)).await
    }

    /// A catch-up pass over `fragments` fragments is worth making before
    /// moving on only if, at the previous pass's cost per fragment, it would
    /// take at most half as long as that pass: then the passes shrink.
    fn converging(previous: (Duration, usize), fragments: usize) -> bool {
        let (took, done) = previous;
        let predicted = took.mul_f64(fragments as f64 / done.max(1) as f64);
        predicted <= took / 2
    }

    async fn fill_passes(&self, limit: Option<usize>) -> Result<u64> {
        let mut done_new = HashSet::new();
        let mut filled_rows = 0;
        let mut rate = None;
        let mut first_pass = true;
        let mut previous: Option<(Duration, usize)> = None;
        for _ in 0..limit.unwrap_or(usize::MAX) {
            let dataset = self.latest().await?;
            let todo = self.todo(&dataset, &mut done_new).await?;
            if todo.is_empty() {
                break;
            }
            if let (Some(_), Some(prev)) = (limit, previous)
                && !Self::converging(prev, todo.len())
            {
                debug!(
                    fragments = todo.len(),
                    "appends outpace the catch-up; leaving them for later"
                );
                break;
            }
            let pass_started = Instant::now();
            let fragments = todo.len();
            let rows: u64 = todo
                .iter()
                .map(|f| f.metadata().num_rows().unwrap_or(0) as u64)
                .sum();
            if first_pass {
                self.progress.start(Some(rows));
                first_pass = false;
            } else {
                debug!(
                    fragments = todo.len(),
                    rows, "catching up with appended rows"
                );
                self.progress.extend_total(rows);
            }
            let mut checkpoint = self.load_checkpoint(&dataset)?;
            let mut pending: Vec<Filled> = Vec::new();
            let mut last_commit = Instant::now();
            for fragment in todo {
                let id = fragment.id() as u64;
                let resume = checkpoint.take_if(|c| c.fragment == id);
                let filled = self.fill(&dataset, &fragment, resume, &mut rate).await?;
                filled_rows += filled.rows;
                let parts = filled.target.is_some();
                pending.push(filled);
                if parts || last_commit.elapsed() >= self.checkpoint_every {
                    self.commit(std::mem::take(&mut pending), parts).await?;
                    last_commit = Instant::now();
                }
                if !self.original_fragments.contains(&id) {
                    done_new.insert(id);
                }
            }
            self.commit(pending, false).await?;
            previous = Some((pass_started.elapsed(), fragments));
        }
        Ok(filled_rows)
    }

    fn gone(&self) -> Error {
        Error::custom(format!(
            "the column being filled in `{}` was dropped by another writer",
            self.table.name()
        ))
    }

    pub(crate) async fn latest(&self) -> Result<Arc<Dataset>> {
        crate::lance::latest_version(self.table).await?;
        crate::lance::local_dataset(self.table).await
    }

    fn column(&self, dataset: &Dataset) -> Result<String> {
        dataset
            .schema()
            .field_by_id(self.field_id)
            .map(|f| f.name.clone())
            .ok_or_else(|| self.gone())
    }

    /// The fragments that still need filling.
    async fn todo(
        &self,
        dataset: &Arc<Dataset>,
        done_new: &mut HashSet<u64>,
    ) -> Result<Vec<FileFragment>> {
        let column = self.column(dataset)?;
        let mut todo = Vec::new();
        for fragment in dataset.get_fragments() {
            let id = fragment.id() as u64;
            let covered = fragment
                .metadata()
                .files
                .iter()
                .any(|f| f.fields.contains(&self.field_id));
            let original = self.original_fragments.contains(&id);
            if !covered {
                if original || self.source.is_some() {
                    todo.push(fragment);
                }
                continue;
            }
            if original || done_new.contains(&id) {
                continue;
            }
            let Some(source) = &self.source else {
                continue;
            };
            let filter = format!(
                "{} IS NULL AND {} IS NOT NULL",
                quote(&column),
                quote(source)
            );
            let missing = fragment
                .count_rows(Some(filter))
                .await
                .map_err(lance_err(format!(
                    "count unfilled rows of `{}`",
                    self.table.name()
                )))?;
            if missing > 0 {
                todo.push(fragment);
            } else {
                done_new.insert(id);
            }
        }
        Ok(todo)
    }

    /// Computes and writes one fragment's column file (not committed).
    async fn fill(
        &self,
        dataset: &Arc<Dataset>,
        fragment: &FileFragment,
        resume: Option<Checkpoint>,
        rate: &mut Option<f64>,
    ) -> Result<Filled> {
        let name = self.table.name();
        let read = lance_err(format!("read fragment {} of `{name}`", fragment.id()));
        let physical = fragment.physical_rows().await.map_err(&read)? as u64;
        let live = fragment.metadata().num_rows().unwrap_or(physical as usize) as u64;
        let column = self.column(dataset)?;
        let field_schema = dataset
            .schema()
            .project(&[column.as_str()])
            .map_err(lance_err(format!("project column `{column}`")))?;
        let failure = Arc::new(Mutex::new(None));
        let started = Instant::now();

        let resume = resume.filter(|c| {
            let ok = c.physical_rows == physical;
            if !ok {
                warn!(
                    fragment = c.fragment,
                    "fragment changed since its checkpoint; starting it over"
                );
            }
            ok
        });
        let (mut target, mut parts, mut offset) = match resume {
            Some(c) => {
                let offset = c.parts.iter().map(DataFilePart::num_rows).sum::<u64>();
                info!(
                    fragment = c.fragment,
                    parts = c.parts.len(),
                    rows = offset,
                    "resuming fragment from its checkpoint"
                );
                self.progress.advance(offset.min(live));
                (Some(c.target), c.parts, offset)
            }
            None => (None, Vec::new(), 0),
        };

        // Probe: the first `concurrency` batches (computed at once, so the
        // probe does not leave cores idle) tell how fast the work goes,
        // which decides whether the fragment is written in one go or in
        // parts.
        let probe = u64::from(self.batch_size) * self.concurrency.max(1) as u64;
        let head_end = (offset + probe).min(physical);
        let head: Vec<RecordBatch> = self
            .counted(self.values(fragment, offset..head_end, &failure).await?)
            .try_collect()
            .await
            .map_err(|e| take_failure(&failure, e, &read))?;
        let probe_secs = started.elapsed().as_secs_f64().max(1e-6);
        let measured = (head_end - offset) as f64 / probe_secs;
        let rows_per_sec = rate.map_or(measured, |r| r.min(measured).max(r / 4.0));
        let part_rows = self.part_rows(rows_per_sec);
        if target.is_none() && physical - offset <= part_rows {
            let rest = self.values(fragment, head_end..physical, &failure).await?;
            let data = stream::iter(head.into_iter().map(Ok)).chain(self.counted(rest));
            let group = fragment
                .write_columns(data, &field_schema)
                .await
                .map_err(|e| take_failure(&failure, e, &read))?;
            *rate = Some(physical as f64 / started.elapsed().as_secs_f64().max(1e-6));
            return Ok(Filled {
                group,
                rows: live,
                target: None,
            });
        }

        // In parts, each saved as a checkpoint.
        let target = match target.take() {
            Some(t) => t,
            None => DataFileTarget::new(
                None,
                Arc::new(field_schema),
                dataset.manifest().data_storage_format.lance_file_format(),
            )
            .map_err(lance_err("prepare a data file"))?,
        };
        let mut head = Some(head);
        while offset < physical {
            let end = (offset + part_rows).min(physical);
            let head_rows = head
                .as_ref()
                .map_or(0, |h| h.iter().map(|b| b.num_rows() as u64).sum::<u64>());
            let rest = self
                .values(fragment, offset + head_rows..end, &failure)
                .await?;
            let data = stream::iter(head.take().unwrap_or_default().into_iter().map(Ok))
                .chain(self.counted(rest));
            let part = dataset
                .write_data_file_part(&target, None, data)
                .await
                .map_err(|e| take_failure(&failure, e, &read))?;
            parts.push(part);
            offset = end;
            if offset < physical {
                self.save_checkpoint(fragment.id() as u64, physical, &target, &parts)
                    .await?;
            }
        }
        let file = dataset
            .concat_data_file_parts(&target, &parts)
            .await
            .map_err(lance_err(format!(
                "assemble the parts of fragment {}",
                fragment.id()
            )))?;
        *rate = Some(rows_per_sec);
        Ok(Filled {
            group: DataReplacementGroup(fragment.id() as u64, file),
            rows: live,
            target: Some(target),
        })
    }

    /// Rows per part: about `checkpoint_every` of work, at least the batches
    /// in flight at once.
    fn part_rows(&self, rows_per_sec: f64) -> u64 {
        let batch = u64::from(self.batch_size);
        let floor = batch * self.concurrency as u64;
        let want = (rows_per_sec * self.checkpoint_every.as_secs_f64()) as u64;
        want.max(floor).div_ceil(batch) * batch
    }

    /// The new column's values for physical rows `rows` of `fragment`, in
    /// batches, computed `concurrency` batches at a time off the async
    /// executor, each with the number of rows computed. Deleted rows and
    /// rows whose source is NULL get NULL.
    async fn values(
        &self,
        fragment: &FileFragment,
        rows: std::ops::Range<u64>,
        failure: &Arc<Mutex<Option<Error>>>,
    ) -> Result<BoxStream<'static, lance::Result<(RecordBatch, u64)>>> {
        if rows.is_empty() {
            return Ok(stream::empty().boxed());
        }
        let name = self.table.name();
        let read = lance_err(format!("read fragment {} of `{name}`", fragment.id()));
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
        let compute = self.compute.clone();
        let failure = failure.clone();
        let batch_size = u64::from(self.batch_size);
        let stream = batches
            .enumerate()
            .map(move |(i, batch)| {
                let first = rows.start + i as u64 * batch_size;
                let compute = compute.clone();
                let deleted = deleted.clone();
                let out_schema = out_schema.clone();
                let failure = failure.clone();
                async move {
                    let batch = batch.await?;
                    let source = batch.column(0).clone();
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
                    out.map_err(|e| {
                        let message = e.to_string();
                        failure
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get_or_insert(e);
                        lance::Error::invalid_input(message)
                    })
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
        let schema = fragment.dataset().schema().project(&[source.as_str()])?;
        let batches = fragment
            .read_physical_slice(rows, &schema, self.batch_size)
            .await?;
        Ok(batches.map(FutureExt::boxed).boxed())
    }

    /// `values` with progress counted as batches are consumed.
    fn counted<'s>(
        &'s self,
        values: BoxStream<'static, lance::Result<(RecordBatch, u64)>>,
    ) -> impl futures::Stream<Item = lance::Result<RecordBatch>> + Send + 's {
        values.map_ok(move |(batch, rows)| {
            self.progress.advance(rows);
            batch
        })
    }

    async fn save_checkpoint(
        &self,
        fragment: u64,
        physical_rows: u64,
        target: &DataFileTarget,
        parts: &[DataFilePart],
    ) -> Result<()> {
        let value = json!({
            "fragment": fragment,
            "physical_rows": physical_rows,
            "target": target,
            "parts": parts,
        })
        .to_string();
        self.set_config(Some(value)).await?;
        debug!(fragment, parts = parts.len(), "checkpoint saved");
        Ok(())
    }

    async fn set_config(&self, value: Option<String>) -> Result<()> {
        let key = self.checkpoint_key.as_str();
        for attempt in 1.. {
            self.fence.check()?;
            let mut dataset = (*self.latest().await?).clone();
            let entry: (&str, Option<&str>) = (key, value.as_deref());
            match dataset.update_config([entry]).await {
                Ok(_) => break,
                Err(e) if is_lance_conflict(&e) && attempt < 10 => continue,
                Err(e) => return Err(lance_err("save a checkpoint in the table config")(e)),
            }
        }
        Ok(())
    }

    fn load_checkpoint(&self, dataset: &Dataset) -> Result<Option<Checkpoint>> {
        let Some(raw) = dataset.config().get(&self.checkpoint_key) else {
            return Ok(None);
        };
        let parsed = (|| {
            let v: serde_json::Value = serde_json::from_str(raw).ok()?;
            Some(Checkpoint {
                fragment: v.get("fragment")?.as_u64()?,
                physical_rows: v.get("physical_rows")?.as_u64()?,
                target: serde_json::from_value(v.get("target")?.clone()).ok()?,
                parts: serde_json::from_value(v.get("parts")?.clone()).ok()?,
            })
        })();
        if parsed.is_none() {
            warn!(
                key = self.checkpoint_key,
                "ignoring an unreadable checkpoint"
            );
        }
        Ok(parsed)
    }

    /// Commits the filled fragments in one `DataReplacement`, rebasing on
    /// concurrent commits. A fragment that another writer removed meanwhile
    /// (compaction, a delete of all its rows) is dropped from the commit: its
    /// rows, where they still exist, live in new fragments that the next
    /// pass fills.
    async fn commit(&self, filled: Vec<Filled>, clear_checkpoint: bool) -> Result<()> {
        if filled.is_empty() {
            return Ok(());
        }
        let name = self.table.name();
        let mut attempt = 1;
        loop {
            self.fence.check()?;
            let dataset = self.latest().await?;
            let present: HashSet<u64> = dataset
                .get_fragments()
                .iter()
                .map(|f| f.id() as u64)
                .collect();
            let groups: Vec<DataReplacementGroup> = filled
                .iter()
                .filter(|f| present.contains(&f.group.0))
                .map(|f| f.group.clone())
                .collect();
            if groups.len() < filled.len() {
                warn!(
                    dropped = filled.len() - groups.len(),
                    "fragments were rewritten by another writer meanwhile; they are filled again"
                );
            }
            if groups.is_empty() {
                break;
            }
            let read_version = dataset.version().version;
            let transaction = Transaction::new(
                read_version,
                Operation::DataReplacement {
                    replacements: groups,
                },
                None,
            );
            match CommitBuilder::new(dataset.clone())
                .execute(transaction)
                .await
            {
                Ok(_) => break,
                Err(e) if is_lance_conflict(&e) && attempt < 10 => {
                    warn!(
                        attempt,
                        "commit conflict while filling the column; retrying"
                    );
                    attempt += 1;
                }
                Err(e) => {
                    return Err(lance_err(format!("commit the filled column of `{name}`"))(
                        e,
                    ));
                }
            }
        }
        crate::lance::latest_version(self.table).await?;
        if clear_checkpoint {
            self.set_config(None).await?;
        }
        let dataset = self.latest().await?;
        for target in filled.iter().filter_map(|f| f.target.as_ref()) {
            if let Err(e) = target.finish(&dataset).await {
                warn!(error = %e, "could not remove the parts of an assembled file");
            }
        }
        let rows: u64 = filled.iter().map(|f| f.rows).sum();
        debug!(fragments = filled.len(), rows, "filled fragments committed");
        Ok(())
    }
}

/// Runs `compute` on the live rows of `source` and scatters the results
/// back, NULL elsewhere. Returns the batch and how many rows were computed.
fn compute_batch(
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
fn take_failure(
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

pub(crate) fn lance_err(what: impl Into<String>) -> impl Fn(lance::Error) -> Error {
    let what = what.into();
    move |e| Error::lance(what.clone())(e.into())
}

/// A column name quoted for a Lance SQL filter.
pub(crate) fn quote(column: &str) -> String {
    format!("`{}`", column.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Catch-up passes continue only while they shrink.
    #[test]
    fn catching_up_stops_when_appends_outpace_it() {
        let pass = (Duration::from_secs(30), 250);
        assert!(
            Backfill::converging(pass, 10),
            "a small backlog is caught up"
        );
        assert!(Backfill::converging(pass, 125));
        assert!(
            !Backfill::converging(pass, 750),
            "a backlog that would take longer than the pass is left for later"
        );
    }
}
