//! What `ReEmbed::verify` checks beyond every migration's checks: no row
//! with text lacks a vector, and a sample of stored vectors matches a fresh
//! embedding of its text.

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::DataType;
use futures::TryStreamExt;
use lancedb::query::{ExecutableQuery, Select};

use crate::builtin::reembed::ReEmbed;
use crate::context::MigrationContext;
use crate::error::{Error, Result, panic_message};
use crate::lance::backfill::Compute;

impl ReEmbed {
    /// Rows with text but no vector. Every vector this migration wrote was
    /// checked as it was computed (not NULL, finite, right dimension), so
    /// only rows it may not have written are counted (see
    /// `Backfill::missing_rows`): verification does not read every vector
    /// again.
    pub(super) async fn rows_without_vector(&self, ctx: &MigrationContext) -> Result<u64> {
        self.backfill(ctx, &self.target).await?.missing_rows().await
    }

    /// Re-embeds a sample of rows, spread evenly over the table, and
    /// compares.
    ///
    /// No nearest-neighbour search here: with a vector index the index check
    /// searches through it; without one a search would only scan the very
    /// vectors just compared, at the cost of reading the whole column.
    pub(super) async fn check_sample(&self, ctx: &MigrationContext) -> Result<()> {
        let compute = self.compute()?;
        for batch in self.sample(ctx).await? {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .cloned()
                    .ok_or_else(|| Error::ColumnNotFound {
                        table: ctx.table_name().to_owned(),
                        column: name.to_owned(),
                    })
            };
            self.compare(
                ctx,
                &compute,
                &column(&self.source)?,
                &column(&self.target)?,
            )
            .await?;
        }
        Ok(())
    }

    /// Up to `sample` rows' texts and vectors, at evenly spread offsets.
    async fn sample(&self, ctx: &MigrationContext) -> Result<Vec<RecordBatch>> {
        let name = ctx.table_name();
        let rows =
            ctx.table()
                .count_rows(None)
                .await
                .map_err(Error::lance(format!("count the rows of `{name}`")))? as u64;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let n = (self.sample as u64).min(rows);
        let offsets: Vec<u64> = (0..n).map(|i| i * rows / n).collect();
        let read = Error::lance(format!("read sample rows of `{name}`"));
        ctx.table()
            .take_offsets(offsets)
            .select(Select::columns(&[
                self.source.as_str(),
                self.target.as_str(),
            ]))
            .execute()
            .await
            .map_err(&read)?
            .try_collect()
            .await
            .map_err(&read)
    }

    /// Embeds the non-NULL `texts` again and compares each with its stored
    /// vector, element by element, within `tolerance`.
    async fn compare(
        &self,
        ctx: &MigrationContext,
        compute: &Compute,
        texts: &ArrayRef,
        stored: &ArrayRef,
    ) -> Result<()> {
        let stored = stored.as_fixed_size_list();
        let live: Vec<usize> = (0..texts.len()).filter(|&i| texts.is_valid(i)).collect();
        if live.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from_iter_values(live.iter().map(|&i| i as u32));
        let input = arrow_select::take::take(texts, &indices, None)
            .map_err(Error::arrow("select sample texts"))?;
        let fresh = tokio::task::spawn_blocking({
            let compute = compute.clone();
            move || compute(input)
        })
        .await
        .map_err(|e| Error::Panicked {
            message: match e.try_into_panic() {
                Ok(payload) => panic_message(payload.as_ref()),
                Err(e) => e.to_string(),
            },
        })??;
        let fresh = fresh.as_fixed_size_list();
        for (k, &i) in live.iter().enumerate() {
            let want = floats(&fresh.value(k))?;
            let got = floats(&stored.value(i))?;
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            if got.len() != want.len() || worst > self.tolerance {
                return Err(Error::verification(
                    ctx.table_name(),
                    format!(
                        "the stored vector of sampled row {} differs from a fresh embedding of its text by {worst} (tolerance {})",
                        arrow_cast::display::array_value_to_string(texts, i).unwrap_or_default(),
                        self.tolerance
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn floats(values: &ArrayRef) -> Result<Vec<f32>> {
    let as_f32 =
        arrow_cast::cast(values, &DataType::Float32).map_err(Error::arrow("read a vector"))?;
    Ok(as_f32.as_primitive::<Float32Type>().values().to_vec())
}
