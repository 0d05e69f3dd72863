//! Embedding functions for production re-embeds: an OpenAI-compatible
//! service client ([`RemoteEmbedding`], feature `remote`), a retry wrapper
//! for any [`EmbeddingFunction`](lancedb::embeddings::EmbeddingFunction)
//! ([`Retrying`]), the policy both retry with ([`RetryPolicy`]), and the
//! typed error a service's failure ends in ([`ServiceError`]).
//!
//! Everything here is an ordinary LanceDB `EmbeddingFunction`: hand it to
//! [`ReEmbed`](crate::ReEmbed) or register it with a LanceDB connection.
//!
//! # Progress
//!
//! While [`ReEmbed`](crate::ReEmbed) runs, its progress events carry the
//! embedder's throughput ([`EmbeddingProgress`](crate::EmbeddingProgress)):
//! texts per second, always; tokens per second when the service reports
//! usage; and the retries so far. The embedders here report tokens and
//! retries themselves; an embedding function of your own can do the same
//! with [`report_tokens`] and [`report_retries`].

mod error;
#[cfg(feature = "minilm")]
pub mod minilm;
#[cfg(feature = "remote")]
mod remote;
mod retry;
pub(crate) mod usage;

pub use error::ServiceError;
#[cfg(feature = "remote")]
pub use remote::{RemoteEmbedding, RemoteEmbeddingBuilder};
pub use retry::{RetryPolicy, Retrying};
pub use usage::{report_retries, report_tokens};
