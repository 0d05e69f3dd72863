//! Integration tests: one binary, so LanceDB is linked once.

mod add_columns;
mod bad_input;
mod concurrency;
mod custom;
mod indexes;
mod migrator;
mod reembed;
mod support;
