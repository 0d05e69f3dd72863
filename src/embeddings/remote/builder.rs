//! [`RemoteEmbeddingBuilder`]: a remote embedding function's settings,
//! checked when it is built.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use crate::embeddings::{RetryPolicy, ServiceError};
use crate::error::chain;

use super::function::{OwnRuntime, RemoteEmbedding, Shared, vector_type};

/// Settings of a [`RemoteEmbedding`]; from [`RemoteEmbedding::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RemoteEmbeddingBuilder {
    pub(super) model: String,
    pub(super) name: Option<String>,
    pub(super) base_url: String,
    pub(super) api_key: Option<String>,
    pub(super) api_key_env: Option<String>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) dimension: Option<usize>,
    pub(super) request_dimensions: Option<usize>,
    pub(super) max_batch_texts: usize,
    pub(super) max_batch_chars: usize,
    pub(super) max_in_flight: usize,
    pub(super) timeout: Duration,
    pub(super) policy: RetryPolicy,
}

impl RemoteEmbedding {
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
        if self.max_batch_texts == 0 || self.max_batch_chars == 0 || self.max_in_flight == 0 {
            return Err(invalid(
                "max_batch_texts, max_batch_chars and max_in_flight must be at least 1".into(),
            ));
        }
        if self.dimension == Some(0) {
            return Err(invalid("the dimension must be at least 1".into()));
        }
        let url = self.url()?;
        let client = self.client(self.headers()?)?;
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

    /// The embeddings endpoint under the base URL.
    fn url(&self) -> Result<reqwest::Url, ServiceError> {
        let base = self.base_url.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}/embeddings"))
            .map_err(|e| invalid(format!("base URL {:?}: {e}", self.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "base URL {:?} is not http or https",
                self.base_url
            )));
        }
        Ok(url)
    }

    /// The headers of every request: the API key (marked sensitive, so it
    /// is never logged) and the extra headers.
    fn headers(&self) -> Result<HeaderMap, ServiceError> {
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
        Ok(headers)
    }

    /// The HTTP client, with the timeouts and a connection pool as large
    /// as the requests in flight.
    fn client(&self, headers: HeaderMap) -> Result<reqwest::Client, ServiceError> {
        reqwest::Client::builder()
            .default_headers(headers)
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(self.max_in_flight)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| invalid(format!("the HTTP client: {}", chain(&e))))
    }
}

fn invalid(reason: String) -> ServiceError {
    ServiceError::InvalidConfig { reason }
}
