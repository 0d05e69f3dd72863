//! [`RemoteEmbedding`]: an embedding function for services that speak the
//! OpenAI `/v1/embeddings` protocol.
//!
//! - `function`: [`RemoteEmbedding`] and LanceDB's `EmbeddingFunction` on it;
//! - `builder`: its settings, checked when built;
//! - `client`: batching, requests with retries, answers;
//! - `retry_after`: the wait a service asks for.

mod builder;
mod client;
mod function;
mod retry_after;
#[cfg(test)]
mod tests;

pub use builder::RemoteEmbeddingBuilder;
pub use function::RemoteEmbedding;
