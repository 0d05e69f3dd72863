//! The fill: its settings, the passes over the table until no fragment
//! is left, and what is left to cover.

use super::checkpoint::{Checkpoint, Filled};
use crate::error::{Error, Result};
use crate::lance::fence::Fence;
use crate::lance::source::Source;
use crate::lance::{latest_version, local_dataset};
use crate::stop::StopSignal;
use arrow_array::ArrayRef;
use lance::Dataset;
use lance::dataset::fragment::FileFragment;
use lancedb::Table;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// Computes the new column's values for a batch of source values (only live,
/// non-null rows are passed). Must return an array of the same length.
pub(crate) type Compute = Arc<dyn Fn(ArrayRef) -> Result<ArrayRef> + Send + Sync>;

/// Where a fill reports the rows it covered: the migration's
/// [`Progress`](crate::Progress), which turns them into events, logs and
/// ETAs.
pub(crate) trait RowProgress: Send + Sync {
    /// The fill will cover `total` rows; counting starts from zero.
    fn start(&self, total: Option<u64>);
    /// `rows` more rows were found to cover (rows appended meanwhile).
    fn extend_total(&self, rows: u64);
    /// `rows` more rows were covered.
    fn advance(&self, rows: u64);
}

/// Settings of one backfill.
pub(crate) struct Backfill<'a> {
    pub(crate) table: &'a Table,
    /// What the values are computed from (a column, or an expression over
    /// columns); `None` computes a value for every row from nothing (a
    /// constant), and fills only the fragments that existed when the fill
    /// started: rows appended later keep NULL.
    pub(crate) source: Option<Source>,
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
    pub(crate) progress: &'a dyn RowProgress,
    /// Checked before every commit: a process that lost the migration
    /// lease commits nothing more.
    pub(crate) fence: Fence,
    /// When given, the fill sends no more batches to `compute`, writes and
    /// commits what it computed, saves its checkpoint, and returns
    /// [`Error::Stopped`]. Default: never given.
    pub(crate) stop: StopSignal,
}

impl<'a> Backfill<'a> {
    /// Default rows per `compute` call.
    pub(crate) const DEFAULT_BATCH: u32 = 256;
    /// Default time between commits (and checkpoints).
    pub(crate) const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

    /// A backfill of `column` (which must exist) in `table`, counting the
    /// fragments of version `original` as the table's own (every other
    /// fragment is an append). It computes from nothing (see
    /// [`source`](Self::source)) one batch at a time, committing every 30 s,
    /// under `key` in the table's config; change the public fields to tune
    /// it.
    pub(crate) async fn new(
        table: &'a Table,
        column: &str,
        original: u64,
        compute: Compute,
        key: String,
        progress: &'a dyn RowProgress,
        fence: Fence,
    ) -> Result<Self> {
        latest_version(table).await?;
        let dataset = local_dataset(table).await?;
        let field_id = dataset
            .schema()
            .field_id(column)
            .map_err(Error::lance(format!(
                "find column `{column}` of `{}`",
                table.name()
            )))?;
        let original_fragments = dataset
            .checkout_version(original)
            .await
            .map_err(Error::lance(format!(
                "read version {original} of `{}`",
                table.name()
            )))?
            .get_fragments()
            .iter()
            .map(|f| f.id() as u64)
            .collect();
        Ok(Self {
            table,
            source: None,
            field_id,
            compute,
            batch_size: Self::DEFAULT_BATCH,
            concurrency: 1,
            checkpoint_every: Self::DEFAULT_CHECKPOINT_EVERY,
            original_fragments,
            checkpoint_key: key,
            progress,
            fence,
            stop: StopSignal::new(),
        })
    }

    /// Rows the fill has not covered: in a fragment of the table's own
    /// without a data file for the column (a metadata check), or, in any
    /// other fragment, rows with the column NULL and the source set. Every
    /// value the fill wrote was checked as it was computed, so this does
    /// not read the column's values again. Needs a source.
    pub(crate) async fn missing_rows(&self) -> Result<u64> {
        let dataset = self.latest().await?;
        let Some(filter) = self.unfilled(&self.column(&dataset)?) else {
            return Ok(0);
        };
        let count = self.count_error();
        // One scan over every fragment that needs looking at, not a count
        // per fragment: on a busy table there are hundreds of small
        // appended fragments.
        let unchecked: Vec<_> = dataset
            .get_fragments()
            .into_iter()
            .filter(|f| !(self.original_fragments.contains(&(f.id() as u64)) && self.covers(f)))
            .map(|f| f.metadata().clone())
            .collect();
        if unchecked.is_empty() {
            return Ok(0);
        }
        let mut scan = dataset.scan();
        scan.with_fragments(unchecked)
            .filter(&filter)
            .map_err(&count)?;
        scan.count_rows().await.map_err(&count)
    }

    /// The filter for rows the fill has yet to cover in `column`: the
    /// column NULL and the source set; `None` without a source.
    pub(super) fn unfilled(&self, column: &str) -> Option<String> {
        let source = self.source.as_ref()?;
        Some(format!("{} IS NULL AND {}", quote(column), source.is_set()))
    }

    pub(super) fn count_error(&self) -> impl Fn(lance::Error) -> Error {
        Error::lance(format!("count unfilled rows of `{}`", self.table.name()))
    }

    /// Whether `fragment` has a data file for the column.
    pub(super) fn covers(&self, fragment: &FileFragment) -> bool {
        fragment
            .metadata()
            .files
            .iter()
            .any(|f| f.fields.contains(&self.field_id))
    }

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

    /// A catch-up pass of `calls` calls to `compute` is worth making before
    /// moving on only if, at the previous pass's time per call, it would
    /// take at most half as long as that pass: then the passes shrink.
    /// Calls, not rows or fragments: an embedder's time goes by the call,
    /// and small appended fragments share calls ([`Self::groups`]).
    pub(super) fn converging(previous: (Duration, u64), calls: u64) -> bool {
        let (took, done) = previous;
        let predicted = took.mul_f64(calls as f64 / done.max(1) as f64);
        predicted <= took / 2
    }

    /// The calls to `compute` filling `groups` of small fragments and the
    /// `large` ones takes: one per group, one per batch of the others.
    pub(super) fn calls(&self, groups: &[Vec<FileFragment>], large: &[FileFragment]) -> u64 {
        let batch = u64::from(self.batch_size.max(1));
        let large: u64 = large
            .iter()
            .map(|f| (f.metadata().num_rows().unwrap_or(0) as u64).div_ceil(batch))
            .sum();
        groups.len() as u64 + large
    }

    /// Fills pass after pass, each over what is still to do (rows appended
    /// meanwhile included), until nothing is left or, with `limit`, after
    /// `limit` passes or once a pass stops converging on the appends.
    /// Returns the rows filled.
    // Long on purpose: the passes share their state (rate, convergence, stop, first-pass
    // progress); the small and large fills are methods of their own.
    pub(super) async fn fill_passes(&self, limit: Option<usize>) -> Result<u64> {
        let mut done_new = HashSet::new();
        let mut filled_rows = 0;
        let mut rate = None;
        let mut first_pass = true;
        let mut previous: Option<(Duration, u64)> = None;
        for _ in 0..limit.unwrap_or(usize::MAX) {
            let dataset = self.latest().await?;
            let todo = self.todo(&dataset, &mut done_new).await?;
            if todo.is_empty() {
                break;
            }
            let fragments = todo.len();
            let rows: u64 = todo
                .iter()
                .map(|f| f.metadata().num_rows().unwrap_or(0) as u64)
                .sum();
            let checkpoint = self.load_checkpoint(&dataset)?;
            let (small, large) = self.split_small(todo, checkpoint.as_ref().map(|c| c.fragment));
            let groups = self.groups(small);
            let calls = self.calls(&groups, &large);
            if let (Some(_), Some(prev)) = (limit, previous)
                && !Self::converging(prev, calls)
            {
                debug!(
                    fragments,
                    calls, "appends outpace the catch-up; leaving them for later"
                );
                break;
            }
            if self.stop.is_stopped() {
                return Err(Error::Stopped);
            }
            let pass_started = Instant::now();
            if first_pass {
                self.progress.start(Some(rows));
                first_pass = false;
            } else {
                debug!(fragments, rows, calls, "catching up with appended rows");
                self.progress.extend_total(rows);
            }
            let mut pending: Vec<Filled> = Vec::new();
            // Small fragments first, many to a call.
            let (filled, stopped) = self.fill_small(&dataset, groups).await?;
            for id in filled.iter().map(|f| f.group.0) {
                if !self.original_fragments.contains(&id) {
                    done_new.insert(id);
                }
            }
            filled_rows += filled.iter().map(|f| f.rows).sum::<u64>();
            pending.extend(filled);
            if stopped {
                self.commit(pending, false).await?;
                return Err(Error::Stopped);
            }
            filled_rows += self
                .fill_large(
                    &dataset,
                    large,
                    checkpoint,
                    &mut rate,
                    &mut done_new,
                    pending,
                )
                .await?;
            previous = Some((pass_started.elapsed(), calls));
        }
        Ok(filled_rows)
    }

    /// Fills the `large` fragments one at a time (the checkpointed one
    /// from its checkpoint), committing at least every `checkpoint_every`
    /// and after each fragment written in parts; `pending` (files written
    /// but not committed) goes with the first commit. Returns the rows
    /// filled.
    async fn fill_large(
        &self,
        dataset: &Arc<Dataset>,
        large: Vec<FileFragment>,
        mut checkpoint: Option<Checkpoint>,
        rate: &mut Option<f64>,
        done_new: &mut HashSet<u64>,
        mut pending: Vec<Filled>,
    ) -> Result<u64> {
        let mut filled_rows = 0;
        let mut last_commit = Instant::now();
        for fragment in large {
            let id = fragment.id() as u64;
            if self.stop.is_stopped() {
                self.commit(pending, false).await?;
                return Err(Error::Stopped);
            }
            let resume = checkpoint.take_if(|c| c.fragment == id);
            let filled = match self.fill(dataset, &fragment, resume, rate).await {
                Err(Error::Stopped) => {
                    self.commit(pending, false).await?;
                    return Err(Error::Stopped);
                }
                filled => filled?,
            };
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
        Ok(filled_rows)
    }

    pub(super) fn gone(&self) -> Error {
        Error::ChangedConcurrently {
            table: self.table.name().to_owned(),
            what: "the column being filled was dropped".to_owned(),
        }
    }

    pub(crate) async fn latest(&self) -> Result<Arc<Dataset>> {
        latest_version(self.table).await?;
        local_dataset(self.table).await
    }

    pub(super) fn column(&self, dataset: &Dataset) -> Result<String> {
        dataset
            .schema()
            .field_by_id(self.field_id)
            .map(|f| f.name.clone())
            .ok_or_else(|| self.gone())
    }

    /// The fragments that still need filling.
    pub(super) async fn todo(
        &self,
        dataset: &Arc<Dataset>,
        done_new: &mut HashSet<u64>,
    ) -> Result<Vec<FileFragment>> {
        let column = self.column(dataset)?;
        let mut todo = Vec::new();
        for fragment in dataset.get_fragments() {
            let id = fragment.id() as u64;
            let covered = self.covers(&fragment);
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
            let Some(filter) = self.unfilled(&column) else {
                continue;
            };
            let missing = fragment
                .count_rows(Some(filter))
                .await
                .map_err(self.count_error())?;
            if missing > 0 {
                todo.push(fragment);
            } else {
                done_new.insert(id);
            }
        }
        Ok(todo)
    }
}

/// A column name quoted for a Lance SQL filter.
pub(crate) fn quote(column: &str) -> String {
    format!("`{}`", column.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow_array::{Int32Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use lancedb::table::NewColumnTransform;

    use crate::event::Events;
    use crate::progress::Progress;

    pub(super) fn rows(texts: &[Option<&str>], values: &[Option<i32>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("text", DataType::Utf8, true),
            Field::new("value", DataType::Int32, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(texts.to_vec())),
                Arc::new(Int32Array::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    /// `missing_rows` counts, in one scan, the rows with the source set and
    /// the column NULL in every fragment it cannot vouch for: appended ones,
    /// and the table's own without a data file for the column. It skips
    /// the table's own fragments that have one.
    #[tokio::test]
    pub(super) async fn missing_rows_counts_unfilled_rows_in_fragments_it_cannot_vouch_for() {
        let db = lancedb::connect("memory://").execute().await.unwrap();
        // The table's own fragment: its NULL is the application's business.
        let table = db
            .create_table("t", rows(&[Some("a"), Some("b")], &[Some(1), None]))
            .execute()
            .await
            .unwrap();
        let original = latest_version(&table).await.unwrap();
        let progress = Progress::new("m", Events::default());
        let compute: Compute = Arc::new(|a: ArrayRef| Ok(a));
        let missing = |column: &'static str, original: u64| {
            let table = &table;
            let progress = &progress;
            let compute = compute.clone();
            async move {
                let mut b = Backfill::new(
                    table,
                    column,
                    original,
                    compute,
                    "k".to_owned(),
                    progress,
                    Fence::default(),
                )
                .await
                .unwrap();
                b.source = Some(Source::Column("text".to_owned()));
                b.missing_rows().await.unwrap()
            }
        };
        assert_eq!(missing("value", original).await, 0);

        // Appended fragments: one unfilled row with text, one without text,
        // and a filled fragment.
        for batch in [
            rows(&[Some("c"), None], &[None, None]),
            rows(&[Some("d"), Some("e")], &[Some(4), Some(5)]),
            rows(&[Some("f")], &[None]),
        ] {
            table.add(batch).execute().await.unwrap();
        }
        assert_eq!(missing("value", original).await, 2);

        // A column added without data: the table's own fragments count too.
        table
            .add_columns()
            .transform(NewColumnTransform::AllNulls(Arc::new(Schema::new(vec![
                Field::new("new", DataType::Int32, true),
            ]))))
            .execute()
            .await
            .unwrap();
        let after = latest_version(&table).await.unwrap();
        assert_eq!(
            missing("new", after).await,
            6,
            "every row with text, the original fragment's included"
        );
    }

    /// Catch-up passes continue only while they shrink.
    #[test]
    pub(super) fn catching_up_stops_when_appends_outpace_it() {
        let pass = (Duration::from_secs(30), 250u64);
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
