//! [`RemoteEmbedding`]: an embedding function for services that speak the
//! OpenAI `/v1/embeddings` protocol.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array};
use arrow_schema::{DataType, Field};
use lancedb::embeddings::EmbeddingFunction;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::embeddings::usage::{self, Usage};
use crate::embeddings::{RetryPolicy, ServiceError};
use crate::error::chain;

/// The text sent for an empty one: OpenAI refuses empty inputs, and BERT
/// tokenizers read a space as nothing.
const EMPTY_TEXT: &str = " ";
/// How much of an error body an error keeps.
const BODY_LIMIT: usize = 2000;

/// An [`EmbeddingFunction`] that calls an embedding service speaking the
/// OpenAI `/v1/embeddings` protocol: OpenAI itself,
/// text-embeddings-inference, vLLM, Infinity, Ollama, LiteLLM and others.
/// Feature `remote`.
///
/// - **Any model and dimension.** The model name is sent as is. The
///   dimension is [declared](RemoteEmbeddingBuilder::dimension) and checked
///   against every answer, or learnt from a one-text probe the first time
///   it is needed.
/// - **Batching.** A call's texts go out in requests of at most
///   [`max_batch_texts`](RemoteEmbeddingBuilder::max_batch_texts) texts
///   and about [`max_batch_chars`](RemoteEmbeddingBuilder::max_batch_chars)
///   characters (a token budget, at about four characters a token), at most
///   [`max_in_flight`](RemoteEmbeddingBuilder::max_in_flight) requests at
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
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    model: String,
    url: reqwest::Url,
    client: reqwest::Client,
    request_dimensions: Option<usize>,
    dimension: OnceLock<usize>,
    dest: OnceLock<DataType>,
    max_batch_texts: usize,
    max_batch_chars: usize,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    policy: RetryPolicy,
    runtime: OwnRuntime,
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

/// Settings of a [`RemoteEmbedding`]; from [`RemoteEmbedding::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RemoteEmbeddingBuilder {
    model: String,
    name: Option<String>,
    base_url: String,
    api_key: Option<String>,
    api_key_env: Option<String>,
    headers: Vec<(String, String)>,
    dimension: Option<usize>,
    request_dimensions: Option<usize>,
    max_batch_texts: usize,
    max_batch_chars: usize,
    max_in_flight: usize,
    timeout: Duration,
    policy: RetryPolicy,
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

    /// Settings for `model` (sent as the request's `model`), with the
    /// defaults: OpenAI's URL, the key from `$OPENAI_API_KEY` if set, and
    /// the `DEFAULT_*` limits.
    pub fn builder(model: impl Into<String>) -> RemoteEmbeddingBuilder {
        RemoteEmbeddingBuilder {
            model: model.into(),
            name: None,
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            api_key: None,
            api_key_env: Some(Self::DEFAULT_API_KEY_ENV.to_owned()),
            headers: Vec::new(),
            dimension: None,
            request_dimensions: None,
            max_batch_texts: Self::DEFAULT_MAX_BATCH_TEXTS,
            max_batch_chars: Self::DEFAULT_MAX_BATCH_CHARS,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            timeout: Self::DEFAULT_TIMEOUT,
            policy: RetryPolicy::default(),
        }
    }

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
    fn block_on<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
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

    fn compute(&self, source: &ArrayRef) -> Result<ArrayRef, ServiceError> {
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
    fn probe(&self) -> Result<usize, ServiceError> {
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

impl Shared {
    /// Embeds every text, in requests within the limits, at most
    /// `max_in_flight` at once.
    async fn embed_all(
        self: Arc<Self>,
        mut texts: Vec<String>,
        usage: Option<Arc<Usage>>,
    ) -> Result<Vec<Vec<f32>>, ServiceError> {
        for text in &mut texts {
            if text.is_empty() {
                EMPTY_TEXT.clone_into(text);
            }
        }
        let batches = self.batches(texts);
        let requests = batches
            .into_iter()
            .map(|batch| self.clone().embed_batch(batch, usage.clone()));
        let answers = futures::future::try_join_all(requests).await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// Splits `texts` into requests of at most `max_batch_texts` texts and
    /// about `max_batch_chars` characters (a longer text goes alone).
    fn batches(&self, texts: Vec<String>) -> Vec<Vec<String>> {
        let mut batches = Vec::new();
        let mut batch: Vec<String> = Vec::new();
        let mut chars = 0;
        for text in texts {
            let len = text.len();
            if !batch.is_empty()
                && (batch.len() >= self.max_batch_texts || chars + len > self.max_batch_chars)
            {
                batches.push(std::mem::take(&mut batch));
                chars = 0;
            }
            chars += len;
            batch.push(text);
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        batches
    }

    /// One request, retried within the policy.
    async fn embed_batch(
        self: Arc<Self>,
        texts: Vec<String>,
        usage: Option<Arc<Usage>>,
    ) -> Result<Vec<Vec<f32>>, ServiceError> {
        let body = self.request_body(&texts);
        let mut attempts = self.policy.start();
        loop {
            let answer = {
                let _permit =
                    self.in_flight
                        .acquire()
                        .await
                        .map_err(|_| ServiceError::Connection {
                            message: "the embedding function was dropped".into(),
                        })?;
                self.send(&body, texts.len()).await
            };
            let (error, retry_after) = match answer {
                Ok((vectors, tokens)) => {
                    if let (Some(usage), Some(tokens)) = (&usage, tokens) {
                        usage.add_tokens(tokens);
                    }
                    return Ok(vectors);
                }
                Err(failed) => failed,
            };
            let wait = if error.is_transient() {
                attempts.next_wait(retry_after)
            } else {
                None
            };
            let Some(wait) = wait else {
                if attempts.retries() > 0 {
                    warn!(model = self.model, error = %error, retries = attempts.retries(), "embedding request failed; retries spent");
                }
                return Err(
                    match attempts.give_up(Box::new(error)).downcast::<ServiceError>() {
                        Ok(e) => *e,
                        Err(other) => ServiceError::Connection {
                            message: other.to_string(),
                        },
                    },
                );
            };
            debug!(
                model = self.model,
                error = %error,
                retry = attempts.retries(),
                wait_ms = wait.as_millis() as u64,
                "embedding request failed; retrying"
            );
            if let Some(usage) = &usage {
                usage.add_retries(1);
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn request_body(&self, texts: &[String]) -> Vec<u8> {
        let mut body = serde_json::json!({
            "model": self.model,
            "input": texts,
            "encoding_format": "float",
        });
        if let Some(d) = self.request_dimensions {
            body["dimensions"] = d.into();
        }
        serde_json::to_vec(&body).expect("a JSON value serialises")
    }

    /// Sends one request. On failure, the error and the wait the service
    /// asked for.
    async fn send(
        &self,
        body: &[u8],
        count: usize,
    ) -> Result<(Vec<Vec<f32>>, Option<u64>), (ServiceError, Option<Duration>)> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ServiceError::Timeout {
                    timeout: self.timeout,
                }
            } else {
                ServiceError::Connection { message: chain(&e) }
            }
        };
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| (transport(e), None))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| (transport(e), retry_after))?;
        if !status.is_success() {
            let mut body = String::from_utf8_lossy(&bytes).into_owned();
            if body.len() > BODY_LIMIT {
                let mut end = BODY_LIMIT;
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
                body.truncate(end);
                body.push('…');
            }
            return Err((
                ServiceError::Status {
                    status: status.as_u16(),
                    body,
                },
                retry_after,
            ));
        }
        self.parse(&bytes, count).map_err(|e| (e, None))
    }

    fn parse(
        &self,
        bytes: &[u8],
        count: usize,
    ) -> Result<(Vec<Vec<f32>>, Option<u64>), ServiceError> {
        let protocol = |message: String| ServiceError::Protocol { message };
        let answer: Answer = serde_json::from_slice(bytes)
            .map_err(|e| protocol(format!("not an embeddings response ({e})")))?;
        if answer.data.len() != count {
            return Err(protocol(format!(
                "{} vectors for {count} texts",
                answer.data.len()
            )));
        }
        let mut data = answer.data;
        if data.iter().all(|d| d.index.is_some()) {
            data.sort_by_key(|d| d.index);
            if data.iter().enumerate().any(|(i, d)| d.index != Some(i)) {
                return Err(protocol("the answer's indexes are not 0..n".into()));
            }
        }
        let expected = *self.dimension.get_or_init(|| data[0].embedding.len());
        if let Some(bad) = data.iter().find(|d| d.embedding.len() != expected) {
            return Err(ServiceError::Dimension {
                model: self.model.clone(),
                expected,
                actual: bad.embedding.len(),
            });
        }
        let tokens = answer
            .usage
            .and_then(|u| u.prompt_tokens.or(u.total_tokens));
        Ok((data.into_iter().map(|d| d.embedding).collect(), tokens))
    }
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Datum>,
    #[serde(default)]
    usage: Option<AnswerUsage>,
}

#[derive(Deserialize)]
struct Datum {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

#[derive(Deserialize)]
struct AnswerUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

/// The wait a `retry-after-ms` or `Retry-After` (seconds, or an HTTP date)
/// header asks for.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

/// [`retry_after`] with the clock given: a date in the past asks for no wait.
fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let number = |name: &str| {
        header(name)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
        .or_else(|| {
            let date = http_date(header("retry-after")?)?;
            Some(date.duration_since(now).unwrap_or(Duration::ZERO))
        })
}

/// An HTTP date in its one current form (IMF-fixdate, RFC 9110 §5.6.7:
/// `Sun, 06 Nov 1994 08:49:37 GMT`); `None` for anything else.
fn http_date(value: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_weekday, rest) = value.trim().split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let year: i64 = year.parse().ok().filter(|y| *y >= 1970)?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms[..] else {
        return None;
    };
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * i64::from(mo) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec))
}

impl RemoteEmbeddingBuilder {
    /// The service's base URL, up to and including `/v1` (default
    /// OpenAI's); requests go to `<base_url>/embeddings`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The API key, sent as `Authorization: Bearer <key>` (default: from
    /// `$OPENAI_API_KEY`, if set).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The environment variable to read the API key from when none is
    /// given (default `OPENAI_API_KEY`). A variable that is not set means
    /// no key, as self-hosted services need none.
    pub fn api_key_env(mut self, variable: impl Into<String>) -> Self {
        self.api_key_env = Some(variable.into());
        self
    }

    /// Sends no API key, even if `$OPENAI_API_KEY` is set.
    pub fn no_api_key(mut self) -> Self {
        self.api_key = None;
        self.api_key_env = None;
        self
    }

    /// A header sent with every request (e.g. `OpenAI-Organization`, or a
    /// gateway's routing header).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The model's vector dimension. Every answer is checked against it;
    /// without it, the first time the dimension is needed one text is
    /// embedded to learn it.
    pub fn dimension(mut self, dimension: usize) -> Self {
        self.dimension = Some(dimension);
        self
    }

    /// Asks the service for vectors of `dimension` (the request's
    /// `dimensions`, for models that can shorten their vectors, such as
    /// OpenAI's `text-embedding-3-*`). Also declares it, as
    /// [`dimension`](Self::dimension).
    pub fn request_dimensions(mut self, dimension: usize) -> Self {
        self.request_dimensions = Some(dimension);
        self.dimension = Some(dimension);
        self
    }

    /// The name of the function (its `EmbeddingFunction::name`, which
    /// `ReEmbed` records as the model); default the model name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Texts per request at most (default 32).
    pub fn max_batch_texts(mut self, texts: usize) -> Self {
        self.max_batch_texts = texts;
        self
    }

    /// Characters per request at most, about four per token (default
    /// 64,000); a longer text goes in a request alone.
    pub fn max_batch_chars(mut self, chars: usize) -> Self {
        self.max_batch_chars = chars;
        self
    }

    /// Requests in flight at once, across all calls (default 4).
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// The time one request may take, from sending to the end of the
    /// answer (default 60 s); a request past it is retried.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The retry policy (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Builds the function. Nothing is sent yet.
    ///
    /// # Errors
    ///
    /// [`ServiceError::InvalidConfig`] for a base URL that is not an
    /// http(s) URL, a header or key not valid in HTTP, or a zero limit.
    pub fn build(self) -> Result<RemoteEmbedding, ServiceError> {
        let invalid = |reason: String| ServiceError::InvalidConfig { reason };
        if self.max_batch_texts == 0 || self.max_batch_chars == 0 || self.max_in_flight == 0 {
            return Err(invalid(
                "max_batch_texts, max_batch_chars and max_in_flight must be at least 1".into(),
            ));
        }
        if self.dimension == Some(0) {
            return Err(invalid("the dimension must be at least 1".into()));
        }
        let base = self.base_url.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}/embeddings"))
            .map_err(|e| invalid(format!("base URL {:?}: {e}", self.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "base URL {:?} is not http or https",
                self.base_url
            )));
        }
        let key = self.api_key.clone().or_else(|| {
            self.api_key_env
                .as_deref()
                .and_then(|v| std::env::var(v).ok())
                .filter(|k| !k.is_empty())
        });
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| invalid("the API key is not valid in an HTTP header".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("{name:?} is not an HTTP header name")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("the value of header {name} is not valid in HTTP")))?;
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(self.max_in_flight)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| invalid(format!("the HTTP client: {}", chain(&e))))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lancedb-migrate-embed")
            .enable_all()
            .build()
            .map_err(|e| invalid(format!("cannot start the client's threads: {e}")))?;
        let dimension = OnceLock::new();
        let dest = OnceLock::new();
        if let Some(d) = self.dimension {
            let _ = dimension.set(d);
            let _ = dest.set(vector_type(d));
        }
        Ok(RemoteEmbedding {
            shared: Arc::new(Shared {
                name: self.name.unwrap_or_else(|| self.model.clone()),
                model: self.model,
                url,
                client,
                request_dimensions: self.request_dimensions,
                dimension,
                dest,
                max_batch_texts: self.max_batch_texts,
                max_batch_chars: self.max_batch_chars,
                in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
                max_in_flight: self.max_in_flight,
                timeout: self.timeout,
                policy: self.policy,
                runtime: OwnRuntime(Some(runtime)),
            }),
        })
    }
}

fn vector_type(dimension: usize) -> DataType {
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
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn function(texts: usize, chars: usize) -> RemoteEmbedding {
        RemoteEmbedding::builder("m")
            .base_url("http://127.0.0.1:1/v1")
            .no_api_key()
            .max_batch_texts(texts)
            .max_batch_chars(chars)
            .build()
            .unwrap()
    }

    #[test]
    fn batches_are_bounded_by_count_and_characters() {
        let f = function(3, 10);
        let texts = [
            "aaaa",
            "bbbb",
            "cc",
            "d",
            "eeeeeeeeeeeeeeee",
            "f",
            "g",
            "h",
            "i",
        ];
        let batches = f
            .shared
            .batches(texts.iter().map(|t| (*t).to_owned()).collect());
        let sizes: Vec<Vec<&str>> = batches
            .iter()
            .map(|b| b.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            sizes,
            vec![
                vec!["aaaa", "bbbb", "cc"],
                vec!["d"],
                vec!["eeeeeeeeeeeeeeee"],
                vec!["f", "g", "h"],
                vec!["i"],
            ]
        );
    }

    #[test]
    fn retry_after_headers_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        let mut date = HeaderMap::new();
        date.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        // 1445412480 is 2015-10-21T07:28:00Z.
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(
            retry_after_at(&date, at(1_445_412_480 - 90)),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after_at(&date, at(1_445_412_480 + 5)),
            Some(Duration::ZERO),
            "a date passed asks for no wait"
        );
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
        assert_eq!(
            http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(at(1_835_481_599))
        );
        for bad in [
            "Wed, 21 Oct 2015 07:28:00 UTC",
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "Wed, 21 Okt 2015 07:28:00 GMT",
            "soon",
        ] {
            assert_eq!(http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        for builder in [
            RemoteEmbedding::builder("m").base_url("not a url"),
            RemoteEmbedding::builder("m").base_url("ftp://host/v1"),
            RemoteEmbedding::builder("m").max_in_flight(0),
            RemoteEmbedding::builder("m").header("bad header", "x"),
            RemoteEmbedding::builder("m").api_key("line\nbreak"),
        ] {
            let err = builder.build().unwrap_err();
            assert!(matches!(err, ServiceError::InvalidConfig { .. }), "{err}");
        }
    }
}
