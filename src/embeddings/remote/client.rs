//! The protocol: texts into requests within the limits, requests sent
//! with retries, answers read back in order.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tracing::{debug, warn};

use crate::embeddings::ServiceError;
use crate::embeddings::usage::Usage;
use crate::error::chain;

use super::function::Shared;
use super::retry_after::retry_after;

/// The text sent for an empty one: OpenAI refuses empty inputs, and BERT
/// tokenizers read a space as nothing.
pub(super) const EMPTY_TEXT: &str = " ";
/// How much of an error body an error keeps.
pub(super) const BODY_LIMIT: usize = 2000;

impl Shared {
    /// Embeds every text, in requests within the limits, at most
    /// `max_in_flight` at once.
    pub(super) async fn embed_all(
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
    pub(super) fn batches(&self, texts: Vec<String>) -> Vec<Vec<String>> {
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
    pub(super) async fn embed_batch(
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

    pub(super) fn request_body(&self, texts: &[String]) -> Vec<u8> {
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
    pub(super) async fn send(
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

    pub(super) fn parse(
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
pub(super) struct Answer {
    pub(super) data: Vec<Datum>,
    #[serde(default)]
    pub(super) usage: Option<AnswerUsage>,
}

#[derive(Deserialize)]
pub(super) struct Datum {
    pub(super) embedding: Vec<f32>,
    #[serde(default)]
    pub(super) index: Option<usize>,
}

#[derive(Deserialize)]
pub(super) struct AnswerUsage {
    #[serde(default)]
    pub(super) prompt_tokens: Option<u64>,
    #[serde(default)]
    pub(super) total_tokens: Option<u64>,
}
