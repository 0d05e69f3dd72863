//! Integration tests: one binary, so LanceDB is linked once.

mod add_columns;
mod backup_copy;
mod bad_input;
mod cli;
mod concurrency;
mod custom;
mod declare;
mod index_fidelity;
mod indexes;
mod interop;
mod migrator;
mod minilm;
mod nothing_lost;
mod ops;
mod reembed;
mod remote;
mod rolling;
#[path = "../support/s3.rs"]
mod s3;
mod s3_store;
mod support;
mod upgrade;
mod verbs;
