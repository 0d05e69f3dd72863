//! What `ReEmbed::verify` checks beyond every migration's checks: no row
//! with text lacks a vector, and a sample of stored vectors matches a fresh
//! embedding of its text (cosine similarity).

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::DataType;
use futures::TryStreamExt;
use lancedb::query::{ExecutableQuery, Select};

use crate::builtin::reembed::ReEmbed;
use crate::error::{Error, Result, panic_message};
use crate::lance::backfill::Compute;
use crate::lance::source::Source;
use crate::migration::MigrationContext;

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
        let compute = self.compute(None)?;
        let source = self.source_spec(ctx.schema_before())?;
        let mut lowest: Option<f32> = None;
        for batch in self.sample(ctx, &source).await? {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .cloned()
                    .ok_or_else(|| Error::ColumnNotFound {
                        table: ctx.table_name().to_owned(),
                        column: name.to_owned(),
                    })
            };
            let seen = self
                .compare(
                    ctx,
                    &compute,
                    &source.values(&batch)?,
                    &column(&self.target)?,
                )
                .await?;
            lowest = Some(lowest.map_or(seen, |l| l.min(seen)));
        }
        if let Some(lowest) = lowest {
            ctx.record_detail("lowest_similarity", format!("{lowest:.6}"));
        }
        Ok(())
    }

    /// Up to `sample` rows' texts and vectors, at evenly spread offsets.
    async fn sample(&self, ctx: &MigrationContext, source: &Source) -> Result<Vec<RecordBatch>> {
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
            .select(Select::columns(
                &[source.columns(), vec![self.target.as_str()]].concat(),
            ))
            .execute()
            .await
            .map_err(&read)?
            .try_collect()
            .await
            .map_err(&read)
    }

    /// Embeds the non-NULL `texts` again and compares each with its stored
    /// vector: cosine similarity at least `min_similarity` (and, when asked,
    /// element by element within `tolerance`). Returns the lowest
    /// similarity seen (1.0 when nothing was compared).
    // Long on purpose: one pass over the sample with each check in place; every check needs the
    // same row's text, stored vector and tolerance.
    async fn compare(
        &self,
        ctx: &MigrationContext,
        compute: &Compute,
        texts: &ArrayRef,
        stored: &ArrayRef,
    ) -> Result<f32> {
        let stored = stored.as_fixed_size_list();
        let live: Vec<usize> = (0..texts.len()).filter(|&i| texts.is_valid(i)).collect();
        if live.is_empty() {
            return Ok(1.0);
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
        let mut lowest = 1.0f32;
        for (k, &i) in live.iter().enumerate() {
            let want = floats(&fresh.value(k))?;
            let got = floats(&stored.value(i))?;
            let text = || arrow_cast::display::array_value_to_string(texts, i).unwrap_or_default();
            let differs = |what: String| {
                Error::verification(
                    ctx.table_name(),
                    format!("the stored vector of sampled row {} {what}", text()),
                )
            };
            if got.len() != want.len() {
                return Err(differs(format!(
                    "has {} dimensions, a fresh embedding of its text {}",
                    got.len(),
                    want.len()
                )));
            }
            let similarity = cosine(&want, &got);
            lowest = lowest.min(similarity);
            if similarity.is_nan() || similarity < self.min_similarity {
                return Err(differs(format!(
                    "has cosine similarity {similarity:.6} with a fresh embedding of its text (at least {} required; lower it with ReEmbed::min_similarity if the model's outputs vary more between calls)",
                    self.min_similarity
                )));
            }
            if let Some(tolerance) = self.tolerance {
                let worst = want
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                if worst > tolerance {
                    return Err(differs(format!(
                        "differs from a fresh embedding of its text by {worst} (tolerance {tolerance})"
                    )));
                }
            }
        }
        Ok(lowest)
    }
}

/// The cosine similarity of `a` and `b` (same length): 1 for two zero
/// vectors, 0 for a zero vector and another.
pub(super) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 && bb == 0.0 {
        return 1.0;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (dot / (aa.sqrt() * bb.sqrt())) as f32
}

fn floats(values: &ArrayRef) -> Result<Vec<f32>> {
    let as_f32 =
        arrow_cast::cast(values, &DataType::Float32).map_err(Error::arrow("read a vector"))?;
    Ok(as_f32.as_primitive::<Float32Type>().values().to_vec())
}

#[cfg(test)]
mod tests {
    use super::cosine;

    #[test]
    fn cosine_similarity_is_one_for_the_same_direction_and_handles_zeros() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[-1.0, 0.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        // A perturbation of 1e-4 per element of a unit 384-d vector.
        let a: Vec<f32> = (0..384).map(|i| ((i as f32) * 0.37).sin()).collect();
        let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let a: Vec<f32> = a.iter().map(|x| x / norm).collect();
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x + if i % 2 == 0 { 1e-4 } else { -1e-4 })
            .collect();
        assert!(cosine(&a, &b) > 0.9999, "{}", cosine(&a, &b));
    }
}
