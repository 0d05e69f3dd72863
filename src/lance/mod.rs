//! The bottom layer over Lance and LanceDB: everything that names the
//! `lance` crate, and imports nothing of the crate above it but its errors
//! (and the leaf modules `jitter` and `stop`).
//!
//! - `dataset`: the Lance dataset behind a table handle, its latest
//!   version and row count;
//! - `fence`: the migration lease's fence, and the commit handler that
//!   checks it before every commit of a migrated table;
//! - `backfill`: the column-fill engine (fragment by fragment, resumable,
//!   beside the application's writes);
//! - `indexes`: index fidelity (what indexes a table has, with their
//!   parameters, and rebuilding them as they were);
//! - `commits`, `columns`, `files`, `fragments`, `restore`,
//!   `retry`, `store`, `tags`: a table's history, schema changes,
//!   data files, fragments, restores, commit retries, object-store probes
//!   and tags, as this crate uses them.

pub(crate) mod backfill;
pub(crate) mod columns;
pub(crate) mod commits;
mod dataset;
pub(crate) mod fence;
pub(crate) mod files;
pub(crate) mod fragments;
pub(crate) mod indexes;
pub(crate) mod restore;
pub(crate) mod retry;
pub(crate) mod source;
pub(crate) mod store;
pub(crate) mod tags;

pub(crate) use dataset::{
    dataset, latest_row_count, latest_version, local_dataset, on_object_store, row_count,
};
