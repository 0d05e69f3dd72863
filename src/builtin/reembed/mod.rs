//! `ReEmbed`: recompute a vector column from a text column with a new
//! embedding model — streaming, resumable, online.

mod embed;
mod migration;
mod schema;

pub(super) use schema::EMBEDDING_FUNCTIONS_KEY;
mod verify;

pub use migration::ReEmbed;
