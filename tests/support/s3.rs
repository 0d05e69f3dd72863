//! The local S3 server (`scripts/s3-server.sh`) as the tests and benchmarks
//! use it. Shared by the unit tests, the integration tests and the
//! benchmarks (`#[path]`-included), so it uses only LanceDB and std.
//!
//! `LANCEDB_MIGRATE_S3` names the server's endpoint. Without it an S3 test
//! prints `SKIPPED` and passes, unless `LANCEDB_MIGRATE_REQUIRE_S3=1` (set
//! by `.ci/run`), which makes it fail.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The endpoint variable.
pub const ENDPOINT_ENV: &str = "LANCEDB_MIGRATE_S3";
/// Set to `1` to make a missing server a failure.
pub const REQUIRE_ENV: &str = "LANCEDB_MIGRATE_REQUIRE_S3";

/// The running server.
#[derive(Debug, Clone)]
pub struct S3 {
    endpoint: String,
    host: String,
}

impl S3 {
    /// The server `LANCEDB_MIGRATE_S3` names, or `None` after printing why
    /// `test` is skipped (a panic when `LANCEDB_MIGRATE_REQUIRE_S3=1`).
    pub fn from_env(test: &str) -> Option<Self> {
        Self::all_from_env(test).map(|mut all| all.swap_remove(0))
    }

    /// Every server `LANCEDB_MIGRATE_S3` names (endpoints separated by
    /// commas: `.ci/run` starts two, so that two multi-process tests can
    /// run at once, each on a server of its own), or `None` as
    /// [`from_env`](Self::from_env).
    pub fn all_from_env(test: &str) -> Option<Vec<Self>> {
        match std::env::var(ENDPOINT_ENV) {
            Ok(endpoints) if !endpoints.trim().is_empty() => Some(
                endpoints
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(Self::new)
                    .collect(),
            ),
            _ => {
                let why = format!(
                    "{test}: no S3 server ({ENDPOINT_ENV} is unset; start one with \
                     `export {ENDPOINT_ENV}=\"$(scripts/s3-server.sh start)\"`)"
                );
                assert!(
                    std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
                    "{why}, and {REQUIRE_ENV}=1"
                );
                eprintln!("SKIPPED {why}");
                None
            }
        }
    }

    /// The server at `endpoint` (`http://127.0.0.1:PORT`).
    pub fn new(endpoint: &str) -> Self {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let host = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        Self { endpoint, host }
    }

    /// The storage options that reach it.
    pub fn storage_options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("allow_http", "true"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
            ("aws_region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// A bucket name no other test uses (the server creates buckets on
    /// first use).
    pub fn fresh_bucket(&self, prefix: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        format!(
            "{prefix}-{}-{}-{nanos:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
        .to_lowercase()
    }

    /// Sets how the server treats `bucket`: whether it ignores
    /// preconditions (`If-None-Match` is dropped), and a delay before each
    /// answer.
    pub fn configure(&self, bucket: &str, strip_preconditions: bool, delay: Duration) {
        let path = format!(
            "/_lmt/config/{bucket}?strip_preconditions={}&delay_ms={}",
            u8::from(strip_preconditions),
            delay.as_millis()
        );
        self.control("POST", &path);
    }

    /// The requests made to `bucket` so far, `METHOD key` each.
    pub fn requests(&self, bucket: &str) -> Vec<String> {
        self.control("GET", &format!("/_lmt/requests/{bucket}"))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Forgets the requests made to `bucket` so far.
    pub fn reset_requests(&self, bucket: &str) {
        self.control("POST", &format!("/_lmt/reset/{bucket}"));
    }

    /// Stores `body` at `key` of `bucket`, as a client that has its own
    /// copy of a database would upload it (the server checks no signature).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let mut stream = TcpStream::connect(&self.host)
            .unwrap_or_else(|e| panic!("the S3 server at {} is unreachable: {e}", self.endpoint));
        write!(
            stream,
            "PUT /{bucket}/{key} HTTP/1.0\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let head = answer.split("\r\n\r\n").next().unwrap_or_default();
        assert!(head.contains(" 200 "), "PUT {bucket}/{key}: {head}");
    }

    fn control(&self, method: &str, path: &str) -> String {
        let mut stream = TcpStream::connect(&self.host)
            .unwrap_or_else(|e| panic!("the S3 server at {} is unreachable: {e}", self.endpoint));
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            self.host
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(head.contains(" 200 "), "{method} {path}: {head}");
        body.to_owned()
    }

    /// A new database `s3://<fresh bucket>/db`: the bucket and a connection.
    pub async fn fresh_db(&self, prefix: &str) -> (String, lancedb::Connection) {
        let bucket = self.fresh_bucket(prefix);
        let db = self.connect(&format!("s3://{bucket}/db")).await;
        (bucket, db)
    }

    /// Connects to `uri` with the server's storage options.
    pub async fn connect(&self, uri: &str) -> lancedb::Connection {
        lancedb::connect(uri)
            .storage_options(self.storage_options())
            .execute()
            .await
            .unwrap()
    }
}

/// The prefix of the buckets made on server `index` of the pool
/// ([`S3::all_from_env`]): [`connect`] reads the server back from it.
pub fn pool_prefix(index: usize) -> String {
    format!("lmt{index}")
}

/// Connects to `uri`: a local path, or an `s3://` URI on a server
/// `LANCEDB_MIGRATE_S3` names (child processes of the tests get the same
/// variable): the one whose [`pool_prefix`] the bucket has, else the first.
pub async fn connect(uri: &str) -> lancedb::Connection {
    if let Some(path) = uri.strip_prefix("s3://") {
        let endpoints = std::env::var(ENDPOINT_ENV).expect("an s3:// database needs the S3 server");
        let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).collect();
        let index = path
            .strip_prefix("lmt")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(digits, _)| digits.parse::<usize>().ok())
            .filter(|i| *i < endpoints.len())
            .unwrap_or(0);
        S3::new(endpoints[index]).connect(uri).await
    } else {
        lancedb::connect(uri).execute().await.unwrap()
    }
}
