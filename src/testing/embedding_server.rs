//! [`EmbeddingServer`]: a real HTTP server on 127.0.0.1 that speaks the
//! OpenAI `/v1/embeddings` protocol, computes embeddings with any
//! embedding function, and fails on command.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, ArrayRef, StringArray};
use lancedb::embeddings::EmbeddingFunction;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A failure [`EmbeddingServer`] injects, in place of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// `429 Too Many Requests` with `Retry-After: <seconds>` (rounded up
    /// to whole seconds) and `retry-after-ms`.
    TooManyRequests {
        /// The wait asked for.
        retry_after: Duration,
    },
    /// An error status (500, 503, 400...) with an OpenAI-style error body.
    Status(u16),
    /// No answer for this long, then the connection is closed (a request
    /// past the client's timeout).
    Stall(Duration),
    /// The connection is closed once the request is read, with no answer.
    Drop,
}

/// Which requests fail, and how: `rate` of the embedding requests,
/// spread evenly (request *n* fails when `⌊(n+1)·rate⌋ > ⌊n·rate⌋`), each
/// with the next of `kinds` in turn.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    rate: f64,
    kinds: Vec<Fault>,
}

impl Faults {
    /// No failures.
    pub fn none() -> Self {
        Self::default()
    }

    /// `rate` (0 to 1) of requests fail, cycling through `kinds`.
    pub fn new(rate: f64, kinds: impl IntoIterator<Item = Fault>) -> Self {
        Self {
            rate: rate.clamp(0.0, 1.0),
            kinds: kinds.into_iter().collect(),
        }
    }

    /// Every request fails with `fault`.
    pub fn always(fault: Fault) -> Self {
        Self::new(1.0, [fault])
    }

    fn pick(&self, request: u64, injected: u64) -> Option<Fault> {
        if self.kinds.is_empty() || self.rate <= 0.0 {
            return None;
        }
        let n = request as f64;
        let fails = ((n + 1.0) * self.rate).floor() > (n * self.rate).floor();
        fails.then(|| self.kinds[injected as usize % self.kinds.len()].clone())
    }
}

/// An embedding service for tests: a real HTTP/1.1 server on 127.0.0.1
/// (a random port) that answers OpenAI `POST /v1/embeddings` requests with
/// the vectors of any [`EmbeddingFunction`] (e.g. the `minilm` model, or
/// [`TestEmbedding`](crate::testing::TestEmbedding)), and injects
/// [`Faults`] on command. It runs on threads of its own, so it keeps
/// answering whatever the test's runtime does, and stops when dropped.
///
/// It refuses what OpenAI refuses: an empty input text (400), a wrong API
/// key when one is [required](Self::require_api_key) (401). It counts
/// what it did: requests, faults injected, texts embedded (each text's
/// count too, to find work done twice), the largest request and the most
/// requests in flight at once. `usage.prompt_tokens` is the texts'
/// characters divided by four, rounded up.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use lancedb_migrate::testing::{EmbeddingServer, Fault, Faults, TestEmbedding};
///
/// let server = EmbeddingServer::start(Arc::new(TestEmbedding::new("m", 8))).unwrap();
/// server.set_faults(Faults::new(0.2, [Fault::Status(503)]));
/// assert!(server.base_url().starts_with("http://127.0.0.1:"));
/// # }
/// ```
pub struct EmbeddingServer {
    addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for EmbeddingServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingServer")
            .field("addr", &self.addr)
            .field("model", &self.state.model.name())
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

struct State {
    model: Arc<dyn EmbeddingFunction>,
    faults: Mutex<Faults>,
    api_key: Mutex<Option<String>>,
    requests: AtomicU64,
    injected: AtomicU64,
    texts: AtomicU64,
    largest: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    counts: Mutex<HashMap<String, u32>>,
}

impl EmbeddingServer {
    /// Starts a server embedding with `model` on 127.0.0.1, on a port the
    /// system chooses.
    ///
    /// # Errors
    ///
    /// When no port can be bound or no threads started.
    pub fn start(model: Arc<dyn EmbeddingFunction>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("embedding-server")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _runtime = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let state = Arc::new(State {
            model,
            faults: Mutex::default(),
            api_key: Mutex::default(),
            requests: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            texts: AtomicU64::new(0),
            largest: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            counts: Mutex::default(),
        });
        let accepting = state.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, accepting.clone()));
            }
        });
        Ok(Self {
            addr,
            state,
            runtime: Some(runtime),
        })
    }

    /// The base URL to give a client: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The failures to inject from now on.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.state.faults) = faults;
    }

    /// Requires `Authorization: Bearer <key>` from now on (401 otherwise).
    pub fn require_api_key(&self, key: impl Into<String>) {
        *lock(&self.state.api_key) = Some(key.into());
    }

    /// Embedding requests received.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Requests answered with an injected fault.
    pub fn faults_injected(&self) -> u64 {
        self.state.injected.load(Ordering::Relaxed)
    }

    /// Texts embedded and answered.
    pub fn texts_embedded(&self) -> u64 {
        self.state.texts.load(Ordering::Relaxed)
    }

    /// How many times each text was embedded.
    pub fn embedded_counts(&self) -> HashMap<String, u32> {
        lock(&self.state.counts).clone()
    }

    /// The most texts one request held.
    pub fn largest_request(&self) -> u64 {
        self.state.largest.load(Ordering::Relaxed)
    }

    /// The most requests being answered at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.state.peak_in_flight.load(Ordering::Relaxed)
    }
}

impl Drop for EmbeddingServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What to do with a request.
enum Reply {
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    Stall(Duration),
    Drop,
}

impl Reply {
    fn json(status: u16, body: &Json) -> Self {
        Self::Answer {
            status,
            headers: Vec::new(),
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Self::json(
            status,
            &json!({"error": {"message": message, "type": "invalid_request_error", "code": status}}),
        )
    }
}

/// Serves one connection: HTTP/1.1 requests with a `Content-Length` body,
/// kept alive until the client closes it.
async fn serve(stream: TcpStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if read.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length = headers
            .get("content-length")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        let reply = state.handle(&path, &headers, &body).await;
        let (status, extra, body) = match reply {
            Reply::Answer {
                status,
                headers,
                body,
            } => (status, headers, body),
            Reply::Stall(time) => {
                tokio::time::sleep(time).await;
                return;
            }
            Reply::Drop => return,
        };
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            reason(status),
            body.len()
        );
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if write.write_all(head.as_bytes()).await.is_err() || write.write_all(&body).await.is_err()
        {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

impl State {
    async fn handle(
        self: &Arc<Self>,
        path: &str,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) -> Reply {
        if !path.ends_with("/embeddings") {
            return Reply::error(404, &format!("no route {path}"));
        }
        let required = lock(&self.api_key).clone();
        if let Some(key) = required
            && headers.get("authorization") != Some(&format!("Bearer {key}"))
        {
            return Reply::error(401, "Incorrect API key provided");
        }
        if let Some(reply) = self.injected_fault() {
            return reply;
        }
        let (request, texts) = match parse_request(body) {
            Ok(parsed) => parsed,
            Err(reply) => return reply,
        };
        let data = match self.embed(&texts).await {
            Ok(data) => data,
            Err(reply) => return reply,
        };
        let chars: usize = texts.iter().map(String::len).sum();
        let tokens = chars.div_ceil(4);
        self.count(texts);
        Reply::json(
            200,
            &json!({
                "object": "list",
                "data": data,
                "model": request["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }),
        )
    }

    /// The reply of the fault the plan injects into this request, if any.
    fn injected_fault(&self) -> Option<Reply> {
        let request = self.requests.fetch_add(1, Ordering::Relaxed);
        let fault = lock(&self.faults).pick(request, self.injected.load(Ordering::Relaxed))?;
        self.injected.fetch_add(1, Ordering::Relaxed);
        Some(match fault {
            Fault::TooManyRequests { retry_after } => Reply::Answer {
                status: 429,
                headers: vec![
                    ("retry-after", retry_after.as_secs_f64().ceil().to_string()),
                    ("retry-after-ms", retry_after.as_millis().to_string()),
                ],
                body: serde_json::to_vec(&json!({"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}))
                    .unwrap_or_default(),
            },
            Fault::Status(status) => Reply::error(status, "injected failure"),
            Fault::Stall(time) => Reply::Stall(time),
            Fault::Drop => Reply::Drop,
        })
    }

    /// The model's vectors for `texts`, as the `data` of an answer.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Json>, Reply> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        let model = self.model.clone();
        let input: ArrayRef = Arc::new(StringArray::from(texts.to_vec()));
        let computed =
            tokio::task::spawn_blocking(move || model.compute_source_embeddings(input)).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let vectors = match computed {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(Reply::error(500, &format!("the model failed: {e}"))),
            Err(e) => return Err(Reply::error(500, &format!("the model panicked: {e}"))),
        };
        let Some(list) = vectors.as_fixed_size_list_opt() else {
            return Err(Reply::error(500, "the model returned no fixed-size lists"));
        };
        let Ok(values) = arrow_cast::cast(list.values(), &arrow_schema::DataType::Float32) else {
            return Err(Reply::error(500, "the model's values are not floats"));
        };
        let values = values.as_primitive::<Float32Type>().values();
        let dim = list.value_length() as usize;
        Ok((0..list.len())
            .map(|i| {
                json!({
                    "object": "embedding",
                    "index": i,
                    "embedding": &values[i * dim..(i + 1) * dim],
                })
            })
            .collect())
    }

    /// Counts `texts` as embedded: in all, the largest request, per text.
    fn count(&self, texts: Vec<String>) {
        self.texts.fetch_add(texts.len() as u64, Ordering::Relaxed);
        self.largest
            .fetch_max(texts.len() as u64, Ordering::Relaxed);
        let mut counts = lock(&self.counts);
        for text in texts {
            *counts.entry(text).or_default() += 1;
        }
    }
}

/// The request's JSON and its texts, or the reply refusing it as an
/// OpenAI-compatible service would.
fn parse_request(body: &[u8]) -> Result<(Json, Vec<String>), Reply> {
    let Ok(request) = serde_json::from_slice::<Json>(body) else {
        return Err(Reply::error(400, "the body is not JSON"));
    };
    let texts: Vec<String> = match &request["input"] {
        Json::String(s) => vec![s.clone()],
        Json::Array(items) if items.iter().all(Json::is_string) => items
            .iter()
            .map(|s| s.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => {
            return Err(Reply::error(
                400,
                "'input' must be a string or an array of strings",
            ));
        }
    };
    if texts.is_empty() || texts.iter().any(String::is_empty) {
        return Err(Reply::error(
            400,
            "'$.input' is invalid: empty strings are not accepted",
        ));
    }
    Ok((request, texts))
}
