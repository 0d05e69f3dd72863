//! The typed error of an embedding service (or of a retried embedder) that
//! could not be made to answer.

use std::time::Duration;

use crate::error::BoxError;

/// Why an embedding service gave no vectors.
///
/// It reaches the application inside
/// [`Error::Embedding`](crate::Error::Embedding) as
/// [`EmbeddingProblem::Service`](crate::EmbeddingProblem::Service) when
/// [`ReEmbed`](crate::ReEmbed) runs the embedder, and inside
/// [`lancedb::Error::External`] when the embedder is called directly.
/// [`status`](Self::status) gives the HTTP status, looking through
/// [`RetriesExhausted`](Self::RetriesExhausted).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The service answered with an error status. 429 and 5xx are retried
    /// first; other statuses (e.g. 400, 401, 404) are not, since asking
    /// again cannot help.
    #[error("the embedding service answered HTTP {status}: {body}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body (the service's message).
        body: String,
    },
    /// No answer within the request timeout.
    #[error("the embedding service did not answer within {timeout:?}")]
    Timeout {
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The connection could not be made, or was dropped before the answer
    /// was complete.
    #[error("the connection to the embedding service failed: {message}")]
    Connection {
        /// What the HTTP client said.
        message: String,
    },
    /// The answer is not an OpenAI embeddings response, or does not fit
    /// the request (another number of vectors, vectors of differing
    /// dimensions).
    #[error("the embedding service's answer is unusable: {message}")]
    Protocol {
        /// What is wrong with it.
        message: String,
    },
    /// The service's vectors have another dimension than the one declared
    /// with [`RemoteEmbeddingBuilder::dimension`](crate::embeddings::RemoteEmbeddingBuilder::dimension)
    /// (or than its first answer).
    #[error(
        "model `{model}` returned vectors of dimension {actual}, but {expected} was declared; declare the model's dimension"
    )]
    Dimension {
        /// The model.
        model: String,
        /// The dimension declared or first seen.
        expected: usize,
        /// The dimension returned.
        actual: usize,
    },
    /// The builder's settings are invalid (e.g. a base URL that is not a
    /// URL, a header that is not valid in HTTP).
    #[error("invalid embedding service settings: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// Every retry the [`RetryPolicy`](crate::embeddings::RetryPolicy)
    /// allows failed; `last` is the last failure (for a service, its
    /// status and body).
    #[error("gave up after {retries} retries over {elapsed:?}; the last failure: {last}")]
    RetriesExhausted {
        /// Retries made (attempts less one).
        retries: u32,
        /// Time from the first attempt to giving up.
        elapsed: Duration,
        /// The last failure.
        #[source]
        last: BoxError,
    },
}

impl ServiceError {
    /// The HTTP status of the failure, looking through
    /// [`RetriesExhausted`](Self::RetriesExhausted); `None` when there was
    /// no answer (timeout, connection) or the failure was not HTTP.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::RetriesExhausted { last, .. } => last
                .downcast_ref::<Self>()
                .or_else(|| {
                    last.downcast_ref::<lancedb::Error>()
                        .and_then(Self::in_lancedb)
                })
                .and_then(Self::status),
            _ => None,
        }
    }

    /// Whether asking again may help: 408, 409, 425, 429 and 5xx answers,
    /// timeouts and connection failures.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                matches!(status, 408 | 409 | 425 | 429) || (500..600).contains(status)
            }
            Self::Timeout { .. } | Self::Connection { .. } => true,
            Self::Protocol { .. }
            | Self::Dimension { .. }
            | Self::InvalidConfig { .. }
            | Self::RetriesExhausted { .. } => false,
        }
    }

    /// This error as the `lancedb::Error` an `EmbeddingFunction` returns.
    #[cfg(feature = "remote")]
    pub(crate) fn into_lancedb(self) -> lancedb::Error {
        lancedb::Error::External {
            source: Box::new(self),
        }
    }

    /// The `ServiceError` inside a LanceDB error, if it is one.
    pub(crate) fn from_lancedb(error: lancedb::Error) -> Result<Self, lancedb::Error> {
        match error {
            lancedb::Error::External { source } => match source.downcast::<Self>() {
                Ok(service) => Ok(*service),
                Err(source) => Err(lancedb::Error::External { source }),
            },
            other => Err(other),
        }
    }

    /// The `ServiceError` a LanceDB error holds, by reference.
    pub(crate) fn in_lancedb(error: &lancedb::Error) -> Option<&Self> {
        match error {
            lancedb::Error::External { source } => source.downcast_ref::<Self>(),
            _ => None,
        }
    }
}
