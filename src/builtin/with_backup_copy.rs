//! [`WithBackupCopy`]: any migration, with an independent backup copy made
//! before it changes anything.

use crate::backup::{Backup, BackupLocation};
use crate::error::Result;
use crate::migration::Migration;
use crate::migration::MigrationContext;
use crate::migration::{MigrationPlan, TableInfo};

/// A migration whose backup also writes an independent [`BackupCopy`](crate::BackupCopy) to a
/// location of your choice, before anything is changed.
///
/// Everything else, its checksum included, is the wrapped migration's: adding
/// or moving the copy is not an edit of the migration. To copy before every
/// migration of a run, use
/// [`Migrator::copy_backups_to`](crate::Migrator::copy_backups_to) instead.
///
/// # Examples
///
/// ```no_run
/// use arrow_schema::DataType;
/// use lancedb_migrate::{AddColumns, Migrator, NewColumn, WithBackupCopy};
///
/// # async fn run(db: lancedb::Connection) -> lancedb_migrate::Result<()> {
/// let add = AddColumns::new("0001_add_category", "documents")
///     .column(NewColumn::new("category", DataType::Utf8).default_value("general"));
/// Migrator::new(db)
///     .add(WithBackupCopy::new(add, "/var/backups/lancedb"))
///     .run()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct WithBackupCopy<M> {
    migration: M,
    location: BackupLocation,
}

impl<M: Migration> WithBackupCopy<M> {
    /// Wraps `migration`, copying its backups to `location`: a directory
    /// path or object-store URI, or a [`BackupLocation`] with its own
    /// storage options.
    pub fn new(migration: M, location: impl Into<BackupLocation>) -> Self {
        Self {
            migration,
            location: location.into(),
        }
    }

    /// Where the copies go.
    pub fn location(&self) -> &str {
        self.location.uri()
    }

    /// The wrapped migration.
    pub fn into_inner(self) -> M {
        self.migration
    }
}

crate::migration::forward_migration! {
    impl[M: Migration] WithBackupCopy<M> => migration;
    forward [id, table, definition, checksum, previous_checksums, creates, expected_schema, resumable, blocks_serving, transform, rebuild, verify];
    {
        fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
            let work = self.migration.plan(table)?;
            let summary = format!("{}, after a backup copy to {}", work.summary, self.location);
            Ok(MigrationPlan { summary, ..work })
        }
        /// The wrapped migration's backup, plus a copy of its version.
        async fn backup(&self, ctx: &MigrationContext) -> Result<Backup> {
            let backup = self.migration.backup(ctx).await?;
            backup.copy_to(ctx.table(), self.location.clone()).await
        }
    }
}
