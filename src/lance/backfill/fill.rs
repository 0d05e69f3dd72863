//! One fragment's column file: a probe of the first batches measures the
//! speed, then the file is written in one go, or in parts of about
//! `checkpoint_every` of work, each saved as a checkpoint.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_array::RecordBatch;
use futures::stream;
use futures::{StreamExt, TryStreamExt};
use lance::Dataset;
use lance::dataset::fragment::FileFragment;
use lance::dataset::transaction::DataReplacementGroup;
use lance::dataset::{DataFilePart, DataFileTarget};
use lance::datatypes::Schema;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::lance::backfill::Backfill;
use crate::lance::backfill::checkpoint::{Checkpoint, Filled};
use crate::lance::backfill::compute::take_failure;

/// One fragment being filled.
struct Job<'f> {
    dataset: &'f Arc<Dataset>,
    fragment: &'f FileFragment,
    /// Rows in its data files, deleted ones included.
    physical: u64,
    /// Rows not deleted.
    live: u64,
    /// The schema of the column being filled.
    field_schema: Schema,
    /// A typed error a compute step stashed (Lance sees only its text).
    failure: Arc<Mutex<Option<Error>>>,
    /// What reading it is called in errors.
    reading: String,
    started: Instant,
}

impl Job<'_> {
    /// The error a compute step stashed, or `e` as a read error.
    fn read_error(&self, e: lance::Error) -> Error {
        take_failure(&self.failure, e, &Error::lance(self.reading.as_str()))
    }
}

/// Where a fragment's work starts: from nothing, or from its checkpoint.
struct Start {
    target: Option<DataFileTarget>,
    parts: Vec<DataFilePart>,
    offset: u64,
}

impl Backfill<'_> {
    /// Computes and writes one fragment's column file (not committed).
    /// `rate` carries the rows per second measured on earlier fragments.
    pub(super) async fn fill(
        &self,
        dataset: &Arc<Dataset>,
        fragment: &FileFragment,
        resume: Option<Checkpoint>,
        rate: &mut Option<f64>,
    ) -> Result<Filled> {
        let job = self.job(dataset, fragment).await?;
        let start = self.start(&job, resume);
        let (head, rows_per_sec) = self.probe(&job, start.offset, *rate).await?;
        let part_rows = self.part_rows(rows_per_sec);
        // A file written in one go cannot be cut short: only a fragment
        // whose rest takes at most STOP_GRACE (or is computed already) is,
        // so that a stop waits at most that long. Computing from nothing
        // (a constant) is never stopped mid-fragment.
        let remaining = job.physical - start.offset;
        let quick = self.source.is_none()
            || remaining <= rows_in(&head).max((rows_per_sec * STOP_GRACE.as_secs_f64()) as u64);
        if start.target.is_none() && remaining <= part_rows && quick {
            let filled = self.write_whole(&job, head).await?;
            *rate = Some(job.physical as f64 / job.started.elapsed().as_secs_f64().max(1e-6));
            return Ok(filled);
        }
        let filled = self.write_in_parts(&job, start, head, part_rows).await?;
        *rate = Some(rows_per_sec);
        Ok(filled)
    }

    async fn job<'f>(
        &self,
        dataset: &'f Arc<Dataset>,
        fragment: &'f FileFragment,
    ) -> Result<Job<'f>> {
        let reading = format!("read fragment {} of `{}`", fragment.id(), self.table.name());
        let physical = fragment
            .physical_rows()
            .await
            .map_err(Error::lance(reading.as_str()))? as u64;
        let live = fragment.metadata().num_rows().unwrap_or(physical as usize) as u64;
        let column = self.column(dataset)?;
        let field_schema = dataset
            .schema()
            .project(&[column.as_str()])
            .map_err(Error::lance(format!("project column `{column}`")))?;
        Ok(Job {
            dataset,
            fragment,
            physical,
            live,
            field_schema,
            failure: Arc::new(Mutex::new(None)),
            reading,
            started: Instant::now(),
        })
    }

    /// The checkpoint to resume from, if it still describes the fragment.
    fn start(&self, job: &Job<'_>, resume: Option<Checkpoint>) -> Start {
        let resume = resume.filter(|c| {
            let ok = c.physical_rows == job.physical;
            if !ok {
                warn!(
                    fragment = c.fragment,
                    "fragment changed since its checkpoint; starting it over"
                );
            }
            ok
        });
        match resume {
            Some(c) => {
                let offset = c.parts.iter().map(DataFilePart::num_rows).sum::<u64>();
                info!(
                    fragment = c.fragment,
                    parts = c.parts.len(),
                    rows = offset,
                    "resuming fragment from its checkpoint"
                );
                self.progress.advance(offset.min(job.live));
                Start {
                    target: Some(c.target),
                    parts: c.parts,
                    offset,
                }
            }
            None => Start {
                target: None,
                parts: Vec::new(),
                offset: 0,
            },
        }
    }

    /// Computes the first `concurrency` batches from `offset` (at once, so
    /// the probe leaves no core idle) and measures the speed, never
    /// trusting it above the earlier `rate` by more than 4×. Returns the
    /// batches and the rows per second.
    async fn probe(
        &self,
        job: &Job<'_>,
        offset: u64,
        rate: Option<f64>,
    ) -> Result<(Vec<RecordBatch>, f64)> {
        let probe = u64::from(self.batch_size) * self.concurrency.max(1) as u64;
        let end = (offset + probe).min(job.physical);
        let head: Vec<RecordBatch> = self
            .counted(
                self.values(job.fragment, offset..end, &job.failure, false)
                    .await?,
            )
            .try_collect()
            .await
            .map_err(|e| job.read_error(e))?;
        let secs = job.started.elapsed().as_secs_f64().max(1e-6);
        let measured = (end - offset) as f64 / secs;
        Ok((
            head,
            rate.map_or(measured, |r| r.min(measured).max(r / 4.0)),
        ))
    }

    /// Writes the whole fragment's file in one go: `head`, then the rest.
    async fn write_whole(&self, job: &Job<'_>, head: Vec<RecordBatch>) -> Result<Filled> {
        let head_rows = rows_in(&head);
        let rest = self
            .values(job.fragment, head_rows..job.physical, &job.failure, false)
            .await?;
        let data = stream::iter(head.into_iter().map(Ok)).chain(self.counted(rest));
        let group = job
            .fragment
            .write_columns(data, &job.field_schema)
            .await
            .map_err(|e| job.read_error(e))?;
        Ok(Filled {
            group,
            rows: job.live,
            target: None,
        })
    }

    /// Writes the fragment's file in parts of `part_rows`, saving a
    /// checkpoint after each but the last, then assembles them.
    async fn write_in_parts(
        &self,
        job: &Job<'_>,
        start: Start,
        head: Vec<RecordBatch>,
        part_rows: u64,
    ) -> Result<Filled> {
        let Start {
            target,
            mut parts,
            mut offset,
        } = start;
        let target = match target {
            Some(t) => t,
            None => DataFileTarget::new(
                None,
                Arc::new(job.field_schema.clone()),
                job.dataset
                    .manifest()
                    .data_storage_format
                    .lance_file_format(),
            )
            .map_err(Error::lance("prepare a data file"))?,
        };
        let mut head = Some(head);
        while offset < job.physical {
            let end = (offset + part_rows).min(job.physical);
            let head_rows = head.as_deref().map_or(0, rows_in);
            if head_rows == 0 && self.stop.is_stopped() {
                return self.stopped(job, &target, &parts).await;
            }
            let rest = self
                .values(job.fragment, offset + head_rows..end, &job.failure, true)
                .await?;
            let data = stream::iter(head.take().unwrap_or_default().into_iter().map(Ok))
                .chain(self.counted(rest));
            let part = job
                .dataset
                .write_data_file_part(&target, None, data)
                .await
                .map_err(|e| job.read_error(e))?;
            // Fewer rows than asked for when a stop cut the part short.
            offset += part.num_rows();
            parts.push(part);
            if offset < job.physical {
                if self.stop.is_stopped() {
                    return self.stopped(job, &target, &parts).await;
                }
                self.save_checkpoint(job.fragment.id() as u64, job.physical, &target, &parts)
                    .await?;
            }
        }
        let file = job
            .dataset
            .concat_data_file_parts(&target, &parts)
            .await
            .map_err(Error::lance(format!(
                "assemble the parts of fragment {}",
                job.fragment.id()
            )))?;
        Ok(Filled {
            group: DataReplacementGroup(job.fragment.id() as u64, file),
            rows: job.live,
            target: Some(target),
        })
    }
}

impl Backfill<'_> {
    /// A stop cut the fragment short after `parts`: saves them as its
    /// checkpoint, for the next process to continue from, and returns
    /// [`Error::Stopped`].
    async fn stopped(
        &self,
        job: &Job<'_>,
        target: &DataFileTarget,
        parts: &[DataFilePart],
    ) -> Result<Filled> {
        if !parts.is_empty() {
            self.save_checkpoint(job.fragment.id() as u64, job.physical, target, parts)
                .await?;
        }
        let rows: u64 = parts.iter().map(DataFilePart::num_rows).sum();
        info!(
            fragment = job.fragment.id(),
            rows, "stopped mid-fragment; its parts are saved for the next run"
        );
        Err(Error::Stopped)
    }
}

/// How long a stop may wait for a fragment written in one go.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn rows_in(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}
