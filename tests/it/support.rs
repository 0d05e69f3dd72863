//! Small helpers shared by the test modules.

use std::collections::HashMap;

use lancedb::Table;
use lancedb_migrate::{Error, Phase, Rollback};

/// The underlying cause of a `MigrationFailed`, with its phase and rollback.
pub(crate) fn failure(err: &Error) -> (&Error, Phase, &Rollback) {
    match err {
        Error::MigrationFailed {
            source,
            phase,
            rollback,
            ..
        } => (source.as_ref(), *phase, rollback),
        other => panic!("expected MigrationFailed, got {other:?}"),
    }
}

pub(crate) async fn version(table: &Table) -> u64 {
    table.checkout_latest().await.unwrap();
    table.version().await.unwrap()
}

pub(crate) async fn tags(table: &Table) -> HashMap<String, u64> {
    table
        .tags()
        .await
        .unwrap()
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|(name, contents)| (name, contents.version))
        .collect()
}

pub(crate) fn field_names(table_schema: &arrow_schema::Schema) -> Vec<String> {
    table_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}
