//! Filling one column of a table, fragment by fragment, with values computed
//! from another column — resumable, with bounded memory, while the
//! application keeps writing.
//!
//! The column must already exist (added all-null, which is metadata-only).
//! For each fragment, the computed values are written as one new data file
//! holding only that column (Lance's `write_columns`), and committed with a
//! `DataReplacement`, which touches no other column. Commits are grouped so
//! that one lands at least every `checkpoint_every`.
//!
//! A fragment whose work would take longer than `checkpoint_every` is split
//! into parts of about that much work (`write_data_file_part`); after each
//! part, the part's description is saved in the table's config under
//! [`Backfill::checkpoint_key`]. A process that dies mid-fragment resumes from
//! its last part; at the end the parts are concatenated (Lance copies the
//! encoded pages, nothing is recomputed) and committed like any other file.
//!
//! Which fragments still need work is read off the table itself: a fragment
//! that existed when the migration started is done once it has a data file
//! for the column; any other fragment (appended by the application, or
//! rewritten by compaction) is done once none of its rows has the column
//! NULL while the source is set.

mod checkpoint;
mod compute;
mod engine;
mod fill;
mod small;
mod swap;

pub(crate) use engine::{Backfill, Compute, RowProgress, quote};
