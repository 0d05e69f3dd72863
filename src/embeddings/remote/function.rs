//! The embedding function itself: its settings shared by every clone,
//! and LanceDB's `EmbeddingFunction` on top of the client.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array};
use arrow_schema::{DataType, Field};
use lancedb::embeddings::EmbeddingFunction;
use tokio::sync::Semaphore;

use crate::embeddings::usage::{self};
use crate::embeddings::{RetryPolicy, ServiceError};

/// An [`EmbeddingFunction`] that calls an embedding service speaking the
/// OpenAI `/v1/embeddings` protocol: OpenAI itself,
/// text-embeddings-inference, vLLM, Infinity, Ollama, LiteLLM and others.
/// Feature `remote`.
///
/// - **Any model and dimension.** The model name is sent as is. The
///   dimension is [declared](crate::embeddings::RemoteEmbeddingBuilder::dimension) and checked
///   against every answer, or learnt from a one-text probe the first time
///   it is needed.
/// - **Batching.** A call's texts go out in requests of at most
///   [`max_batch_texts`](crate::embeddings::RemoteEmbeddingBuilder::max_batch_texts) texts
///   and about [`max_batch_chars`](crate::embeddings::RemoteEmbeddingBuilder::max_batch_chars)
///   characters (a token budget, at about four characters a token), at most
///   [`max_in_flight`](crate::embeddings::RemoteEmbeddingBuilder::max_in_flight) requests at
///   once across all calls.
/// - **Retries.** 429, 408 and 5xx answers, timeouts and dropped
///   connections are retried with exponential backoff and jitter, waiting
///   at least what `Retry-After` (seconds or an HTTP date) or
///   `retry-after-ms` asks, within the [`RetryPolicy`]'s budget; then the
///   call fails with
///   [`ServiceError::RetriesExhausted`] naming the last status and body.
///   Other answers (400, 401, 404...) fail at once with
///   [`ServiceError::Status`].
/// - **NULL and empty texts.** A NULL text gets a NULL vector without a
///   request (LanceDB's convention; [`ReEmbed`](crate::ReEmbed) never sends
///   one). An empty text is sent as a single space, since OpenAI refuses
///   empty inputs; for BERT-style models the two are the same input.
/// - **Progress.** Tokens (the answer's `usage.prompt_tokens`) and retries
///   are reported to the running [`ReEmbed`](crate::ReEmbed)'s progress.
///
/// The calls of `EmbeddingFunction` are synchronous: requests run on a
/// small Tokio runtime of the function's own, and the calling thread waits
/// (inside `block_in_place` on a multi-threaded Tokio runtime).
/// `ReEmbed` calls it on Tokio's blocking pool, `concurrency` calls at a
/// time; give `max_in_flight` at least the service's own concurrency.
///
/// # Examples
///
/// ```no_run
/// # fn example() -> Result<(), lancedb_migrate::embeddings::ServiceError> {
/// use std::sync::Arc;
/// use lancedb_migrate::ReEmbed;
/// use lancedb_migrate::embeddings::RemoteEmbedding;
///
/// // A text-embeddings-inference server; the API key from $OPENAI_API_KEY
/// // when set.
/// let model = RemoteEmbedding::builder("BAAI/bge-base-en-v1.5")
///     .base_url("http://tei.internal:8080/v1")
///     .dimension(768)
///     .max_batch_texts(32)
///     .max_in_flight(8)
///     .build()?;
/// let migration = ReEmbed::new("0002_bge_base", "docs", Arc::new(model))
///     .batch_size(256)
///     .concurrency(4);
/// # let _ = migration;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RemoteEmbedding {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) name: String,
    pub(super) model: String,
    pub(super) url: reqwest::Url,
    pub(super) client: reqwest::Client,
    pub(super) request_dimensions: Option<usize>,
    pub(super) dimension: OnceLock<usize>,
    pub(super) dest: OnceLock<DataType>,
    pub(super) max_batch_texts: usize,
    pub(super) max_batch_chars: usize,
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) max_in_flight: usize,
    pub(super) timeout: Duration,
    pub(super) policy: RetryPolicy,
    pub(super) runtime: OwnRuntime,
}

impl fmt::Debug for RemoteEmbedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("RemoteEmbedding")
            .field("name", &s.name)
            .field("model", &s.model)
            .field("url", &s.url.as_str())
            .field("dimension", &s.dimension.get())
            .field("max_batch_texts", &s.max_batch_texts)
            .field("max_batch_chars", &s.max_batch_chars)
            .field("max_in_flight", &s.max_in_flight)
            .field("timeout", &s.timeout)
            .field("policy", &s.policy)
            .finish_non_exhaustive()
    }
}

impl RemoteEmbedding {
    /// The default base URL: OpenAI's.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.openai.com/v1";
    /// The environment variable the API key is read from by default.
    pub const DEFAULT_API_KEY_ENV: &'static str = "OPENAI_API_KEY";
    /// Default texts per request (text-embeddings-inference's default
    /// client batch limit).
    pub const DEFAULT_MAX_BATCH_TEXTS: usize = 32;
    /// Default characters per request: about 16k tokens.
    pub const DEFAULT_MAX_BATCH_CHARS: usize = 64_000;
    /// Default requests in flight at once.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
    /// Default time one request may take.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// The model name sent to the service.
    pub fn model(&self) -> &str {
        &self.shared.model
    }

    /// The vectors' dimension, if declared or already seen.
    pub fn dimension(&self) -> Option<usize> {
        self.shared.dimension.get().copied()
    }

    /// Embeds `texts` (async): one vector per text, in order. Empty texts
    /// are sent as a space. The same requests, batching, limits and
    /// retries as the `EmbeddingFunction` calls, for use outside LanceDB
    /// (e.g. to embed queries from async code).
    ///
    /// # Errors
    ///
    /// [`ServiceError`] once retries are spent, or at once for answers
    /// that retrying cannot change.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ServiceError> {
        let shared = self.shared.clone();
        let usage = usage::current();
        let run = async move { shared.embed_all(texts, usage).await };
        self.shared
            .runtime
            .handle()
            .spawn(run)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Runs `work` on the function's runtime and waits for it on this
    /// thread.
    pub(super) fn block_on<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let task = self.shared.runtime.handle().spawn(work);
        let wait = move || futures::executor::block_on(task);
        let done = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    pub(super) fn compute(&self, source: &ArrayRef) -> Result<ArrayRef, ServiceError> {
        let texts =
            arrow_cast::cast(source, &DataType::Utf8).map_err(|e| ServiceError::InvalidConfig {
                reason: format!("the input is {}, not text: {e}", source.data_type()),
            })?;
        let texts = texts.as_string::<i32>();
        let live: Vec<String> = texts.iter().flatten().map(str::to_owned).collect();
        let shared = self.shared.clone();
        let usage = usage::current();
        let vectors = if live.is_empty() {
            Vec::new()
        } else {
            self.block_on(async move { shared.embed_all(live, usage).await })?
        };
        let dim = match self.shared.dimension.get() {
            Some(d) => *d,
            None => self.probe()?,
        };
        let mut values = Vec::with_capacity(texts.len() * dim);
        let mut vectors = vectors.into_iter();
        for i in 0..texts.len() {
            match texts.is_valid(i).then(|| vectors.next()).flatten() {
                Some(v) => values.extend_from_slice(&v),
                None => values.extend(std::iter::repeat_n(0.0, dim)),
            }
        }
        let list = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            dim as i32,
            Arc::new(Float32Array::from(values)),
            texts.nulls().cloned(),
        )
        .map_err(|e| ServiceError::Protocol {
            message: format!("the vectors do not form a column: {e}"),
        })?;
        Ok(Arc::new(list))
    }

    /// Learns the dimension from a one-text request.
    pub(super) fn probe(&self) -> Result<usize, ServiceError> {
        let shared = self.shared.clone();
        let probe = vec!["dimension probe".to_owned()];
        self.block_on(async move { shared.embed_all(probe, None).await })?;
        Ok(*self
            .shared
            .dimension
            .get()
            .expect("a successful answer sets the dimension"))
    }
}

pub(super) fn vector_type(dimension: usize) -> DataType {
    DataType::new_fixed_size_list(DataType::Float32, dimension as i32, true)
}

impl EmbeddingFunction for RemoteEmbedding {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn source_type(&self) -> lancedb::Result<Cow<'_, DataType>> {
        Ok(Cow::Owned(DataType::Utf8))
    }

    fn dest_type(&self) -> lancedb::Result<Cow<'_, DataType>> {
        if let Some(dest) = self.shared.dest.get() {
            return Ok(Cow::Borrowed(dest));
        }
        let dim = self.probe().map_err(ServiceError::into_lancedb)?;
        Ok(Cow::Borrowed(
            self.shared.dest.get_or_init(|| vector_type(dim)),
        ))
    }

    fn compute_source_embeddings(&self, source: ArrayRef) -> lancedb::Result<ArrayRef> {
        self.compute(&source).map_err(ServiceError::into_lancedb)
    }

    fn compute_query_embeddings(&self, input: ArrayRef) -> lancedb::Result<ArrayRef> {
        self.compute(&input).map_err(ServiceError::into_lancedb)
    }
}

/// The function's own runtime, shut down without waiting when the last
/// clone is dropped (which may happen inside another runtime).
pub(super) struct OwnRuntime(pub(super) Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    pub(super) fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
