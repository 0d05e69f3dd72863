//! `ReEmbed`: recompute a vector column from a text column with a new
//! embedding model — streaming, resumable, online.

mod embed;
mod migration;
mod schema;
mod verify;

pub use migration::ReEmbed;
