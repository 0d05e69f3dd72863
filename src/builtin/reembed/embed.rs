//! The embedder's side of a re-embed: the vector type it declares, the
//! column it fills, and each batch computed and checked (one vector per
//! text, the declared dimension, no NULL, NaN or infinity).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, Field};

use crate::builtin::reembed::ReEmbed;
use crate::embeddings::ServiceError;
use crate::embeddings::usage::{self, Usage};
use crate::error::{EmbeddingProblem, Error, Result, panic_message};
use crate::lance::backfill::Compute;

impl ReEmbed {
    pub(super) fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidMigration {
            migration: self.id.clone(),
            reason: reason.into(),
        }
    }

    /// The vector type the embedder declares, and its dimension.
    pub(super) fn dest(&self) -> Result<(DataType, usize)> {
        let dest = self
            .embedder
            .dest_type()
            .map_err(|e| self.invalid(format!("the embedding function has no output type: {e}")))?
            .into_owned();
        match &dest {
            DataType::FixedSizeList(item, n) if item.data_type().is_floating() && *n > 0 => {
                let n = *n as usize;
                Ok((dest, n))
            }
            other => Err(self.invalid(format!(
                "the embedding function outputs {other}; re-embedding needs fixed-size lists of floats"
            ))),
        }
    }

    pub(super) fn target_field(&self) -> Result<Field> {
        let (dest, dim) = self.dest()?;
        let metadata = [
            (Self::MODEL_KEY.to_owned(), self.model.clone()),
            (Self::DIMENSION_KEY.to_owned(), dim.to_string()),
            (Self::MIGRATION_KEY.to_owned(), self.id.clone()),
        ];
        Ok(Field::new(&self.target, dest, true).with_metadata(metadata.into()))
    }

    /// Builds the embedding step: embed, then check what came back. The
    /// texts embedded, and what the embedder reports (tokens, retries),
    /// are counted into `usage` when given.
    pub(super) fn compute(&self, usage: Option<Arc<Usage>>) -> Result<Compute> {
        let (dest, dim) = self.dest()?;
        let embedder = self.embedder.clone();
        let model = self.model.clone();
        Ok(Arc::new(move |texts: ArrayRef| {
            let fail = |problem| Error::Embedding {
                model: model.clone(),
                problem,
            };
            let call = || match &usage {
                Some(usage) => {
                    usage::scoped(usage, || embedder.compute_source_embeddings(texts.clone()))
                }
                None => embedder.compute_source_embeddings(texts.clone()),
            };
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
                .map_err(|payload| {
                    fail(EmbeddingProblem::Panicked {
                        message: panic_message(payload.as_ref()),
                    })
                })?
                .map_err(|e| {
                    fail(match ServiceError::from_lancedb(e) {
                        Ok(service) => EmbeddingProblem::Service(service),
                        Err(other) => EmbeddingProblem::Failed(other),
                    })
                })?;
            check_vectors(&out, &texts, dim).map_err(fail)?;
            if let Some(usage) = &usage {
                usage
                    .texts
                    .fetch_add(texts.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            if out.data_type() == &dest {
                Ok(out)
            } else {
                arrow_cast::cast(&out, &dest).map_err(Error::arrow("convert the vectors"))
            }
        }))
    }

    /// Whether `field` is the column this migration produced (the swap is
    /// done).
    pub(super) fn is_ours(&self, field: &Field) -> bool {
        field.metadata().get(Self::MIGRATION_KEY) == Some(&self.id)
    }
}

/// Checks an embedder's output for `texts`: one vector each, of dimension
/// `dim`, none NULL, all finite.
fn check_vectors(
    out: &ArrayRef,
    texts: &ArrayRef,
    dim: usize,
) -> std::result::Result<(), EmbeddingProblem> {
    let text = |i: usize| arrow_cast::display::array_value_to_string(texts, i).unwrap_or_default();
    let Some(list) = out.as_fixed_size_list_opt() else {
        return Err(EmbeddingProblem::WrongType {
            actual: out.data_type().clone(),
        });
    };
    if list.len() != texts.len() {
        return Err(EmbeddingProblem::WrongRowCount {
            expected: texts.len(),
            actual: list.len(),
        });
    }
    if list.value_length() as usize != dim {
        return Err(EmbeddingProblem::WrongDimension {
            expected: dim,
            actual: list.value_length() as usize,
        });
    }
    if let Some(i) = (0..list.len()).find(|&i| list.is_null(i)) {
        return Err(EmbeddingProblem::Null { text: text(i) });
    }
    let values = list.values();
    let bad = match values.data_type() {
        DataType::Float32 => first_bad(values.as_primitive::<Float32Type>().values(), |v| {
            v.is_finite()
        }),
        DataType::Float64 => first_bad(values.as_primitive::<Float64Type>().values(), |v| {
            v.is_finite()
        }),
        DataType::Float16 => first_bad(values.as_primitive::<Float16Type>().values(), |v| {
            v.is_finite()
        }),
        other => {
            return Err(EmbeddingProblem::WrongType {
                actual: DataType::FixedSizeList(
                    Arc::new(Field::new("item", other.clone(), true)),
                    dim as i32,
                ),
            });
        }
    };
    match bad {
        Some(at) => Err(EmbeddingProblem::NotFinite {
            text: text(at / dim),
        }),
        None => Ok(()),
    }
}

fn first_bad<T: Copy>(values: &[T], ok: impl Fn(T) -> bool) -> Option<usize> {
    values.iter().position(|&v| !ok(v))
}
