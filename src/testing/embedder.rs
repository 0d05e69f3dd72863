//! A deterministic embedding function for tests: no model, no download.

use std::sync::Arc;

use arrow_array::types::Float32Type;
use arrow_array::{ArrayRef, FixedSizeListArray};
use arrow_schema::DataType;

use crate::testing::vector_type;

/// A deterministic embedding function for tests: no model, no download.
///
/// Each text's vector is derived from a hash of the text (normalised to unit
/// length), so equal texts get equal vectors, and [`TestEmbedding::vector`]
/// gives the vector a row should have. It counts the texts it embeds, and
/// can be told to misbehave ([`fail_after`](Self::fail_after),
/// [`wrong_dimension`](Self::wrong_dimension), [`nan_for`](Self::nan_for),
/// [`drop_a_row`](Self::drop_a_row), [`change_after`](Self::change_after))
/// or to vary between calls as a model served by GPUs does
/// ([`jitter`](Self::jitter)) to test how a migration copes.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Array, StringArray};
/// use lancedb::embeddings::EmbeddingFunction;
/// use lancedb_migrate::testing::TestEmbedding;
///
/// let model = TestEmbedding::new("test-768", 768);
/// let texts = Arc::new(StringArray::from(vec!["a", "b"]));
/// let vectors = model.compute_source_embeddings(texts).unwrap();
/// assert_eq!(vectors.len(), 2);
/// assert_eq!(model.embedded(), 2);
/// assert_eq!(TestEmbedding::vector("a", 768).len(), 768);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct TestEmbedding {
    name: String,
    dims: usize,
    embedded: Arc<std::sync::atomic::AtomicU64>,
    fault: Option<Fault>,
    delay: std::time::Duration,
    jitter: f32,
    calls: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug, Clone)]
enum Fault {
    FailAfter(u64),
    WrongDimension(usize),
    NanFor(String),
    DropARow,
    ChangeAfter(u64),
}

impl TestEmbedding {
    /// A well-behaved function named `name` giving `dims`-dimensional
    /// vectors.
    pub fn new(name: impl Into<String>, dims: usize) -> Self {
        Self {
            name: name.into(),
            dims,
            embedded: Arc::default(),
            fault: None,
            delay: std::time::Duration::ZERO,
            jitter: 0.0,
            calls: Arc::default(),
        }
    }

    /// The vector this function gives `text`.
    pub fn vector(text: &str, dims: usize) -> Vec<f32> {
        // FNV-1a of the text seeds a xorshift sequence.
        let mut seed = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        let norm = v
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(f32::EPSILON);
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    /// Texts embedded so far (by this value and its clones).
    pub fn embedded(&self) -> u64 {
        self.embedded.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Fails every call once `rows` texts have been embedded.
    pub fn fail_after(mut self, rows: u64) -> Self {
        self.fault = Some(Fault::FailAfter(rows));
        self
    }

    /// Returns vectors of `dims` dimensions while declaring its own.
    pub fn wrong_dimension(mut self, dims: usize) -> Self {
        self.fault = Some(Fault::WrongDimension(dims));
        self
    }

    /// Returns a vector of NaN for texts containing `needle`.
    pub fn nan_for(mut self, needle: impl Into<String>) -> Self {
        self.fault = Some(Fault::NanFor(needle.into()));
        self
    }

    /// Returns one vector fewer than it was given texts.
    pub fn drop_a_row(mut self) -> Self {
        self.fault = Some(Fault::DropARow);
        self
    }

    /// Once `rows` texts have been embedded, gives every text another
    /// vector (as if another model answered): a later re-embedding of a
    /// sample no longer matches what was stored.
    pub fn change_after(mut self, rows: u64) -> Self {
        self.fault = Some(Fault::ChangeAfter(rows));
        self
    }

    /// Adds to every element a perturbation of up to `amplitude` that
    /// differs from call to call, as an embedding service's GPU kernels
    /// and batch composition do (around 1e-4 per element for real
    /// services): the same text gets slightly different vectors each time.
    pub fn jitter(mut self, amplitude: f32) -> Self {
        self.jitter = amplitude;
        self
    }

    /// Sleeps this long per call, to make a run slow enough to interrupt.
    pub fn delay(mut self, per_call: std::time::Duration) -> Self {
        self.delay = per_call;
        self
    }
}

impl lancedb::embeddings::EmbeddingFunction for TestEmbedding {
    fn name(&self) -> &str {
        &self.name
    }

    fn source_type(&self) -> lancedb::Result<std::borrow::Cow<'_, DataType>> {
        Ok(std::borrow::Cow::Owned(DataType::Utf8))
    }

    fn dest_type(&self) -> lancedb::Result<std::borrow::Cow<'_, DataType>> {
        Ok(std::borrow::Cow::Owned(vector_type(self.dims)))
    }

    fn compute_source_embeddings(&self, source: ArrayRef) -> lancedb::Result<ArrayRef> {
        use arrow_array::Array;
        use std::sync::atomic::Ordering;
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let texts = arrow_cast::cast(&source, &DataType::Utf8)?;
        let texts = arrow_array::cast::AsArray::as_string::<i32>(&texts);
        let before = self
            .embedded
            .fetch_add(texts.len() as u64, Ordering::SeqCst);
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let changed = matches!(&self.fault, Some(Fault::ChangeAfter(n)) if before >= *n);
        let jitter = self.jitter;
        let mut dims = self.dims;
        let mut rows = texts.len();
        match &self.fault {
            Some(Fault::FailAfter(limit)) if before + texts.len() as u64 > *limit => {
                return Err(lancedb::Error::Runtime {
                    message: format!("test embedding told to fail after {limit} rows"),
                });
            }
            Some(Fault::WrongDimension(d)) => dims = *d,
            Some(Fault::DropARow) => rows = rows.saturating_sub(1),
            _ => {}
        }
        let vectors = (0..rows).map(|i| {
            let text = if texts.is_valid(i) {
                texts.value(i)
            } else {
                ""
            };
            let nan = matches!(&self.fault, Some(Fault::NanFor(n)) if text.contains(n.as_str()));
            let vector = if changed {
                Self::vector(&format!("{text} (another model)"), dims)
            } else {
                Self::vector(text, dims)
            };
            Some(vector.into_iter().enumerate().map(move |(j, x)| {
                // A sign pattern that depends on the call and the element.
                let sign = if (call.wrapping_mul(31) + j as u64).is_multiple_of(2) {
                    1.0
                } else {
                    -1.0
                };
                Some(if nan { f32::NAN } else { x + sign * jitter })
            }))
        });
        let dims = i32::try_from(dims).unwrap_or(i32::MAX);
        Ok(Arc::new(FixedSizeListArray::from_iter_primitive::<
            Float32Type,
            _,
            _,
        >(vectors, dims)))
    }

    fn compute_query_embeddings(&self, input: ArrayRef) -> lancedb::Result<ArrayRef> {
        self.compute_source_embeddings(input)
    }
}
