//! The backup every migration gets by default: a LanceDB tag on the table's
//! version before it, and the restore from that tag.

use lancedb::Table;
use tracing::info;

use crate::backup::{Backup, BackupCopy};
use crate::error::{Error, Result};
use crate::lance::fence::Fence;
use crate::lance::retry::is_ref_conflict;

impl Backup {
    /// Tags the table's current version for `migration` and returns it as a
    /// backup.
    ///
    /// The tag is named by [`Backup::tag_name`]. If that tag already exists on
    /// the same version (a retried migration), it is reused.
    ///
    /// # Errors
    ///
    /// [`Error::LanceDb`] when the tag cannot be created, or
    /// [`Error::InvalidMigration`] when a tag of that name points at another
    /// version.
    pub async fn tag_current(table: &Table, migration: &str) -> Result<Self> {
        let version = table
            .version()
            .await
            .map_err(Error::lance("read the table version"))?;
        let tag = Self::tag_name(migration, version);
        let mut tags = table
            .tags()
            .await
            .map_err(Error::lance("open the table's tags"))?;
        // Create first: the usual case, and one request fewer on an object
        // store than looking first. Written directly from what the handle
        // holds when it can (one conditional `PUT`), through Lance otherwise.
        let created = match crate::lance::tags::create_at_handle(table, &tag).await {
            Ok(Some(at)) if at == version => true,
            Ok(None) => false,
            _ => match tags.create(&tag, version).await {
                Ok(()) => true,
                Err(e) if is_ref_conflict(&e) => false,
                Err(e) => return Err(Error::lance(format!("create backup tag `{tag}`"))(e)),
            },
        };
        if !created {
            let existing = tags
                .get_version(&tag)
                .await
                .map_err(Error::lance(format!("read backup tag `{tag}`")))?;
            if existing != version {
                return Err(Error::InvalidMigration {
                    migration: migration.to_owned(),
                    reason: format!("backup tag `{tag}` already points at version {existing}"),
                });
            }
        }
        info!(table = table.name(), version, tag, "backup tagged");
        Ok(Self::new(table.name(), version, tag))
    }

    /// Adds an independent copy of the backup's version, written to
    /// `location` (a directory path or object-store URI, or a
    /// [`BackupLocation`](crate::BackupLocation)) by
    /// [`BackupCopy::create`]. Does nothing when the backup has a copy.
    ///
    /// # Errors
    ///
    /// As [`BackupCopy::create`].
    ///
    /// # Examples
    ///
    /// A [`Migration::backup`](crate::Migration::backup) hook that keeps a
    /// copy besides the tag:
    ///
    /// ```no_run
    /// # use lancedb_migrate::{Backup, MigrationContext, Result};
    /// # async fn backup(ctx: &MigrationContext) -> Result<Backup> {
    /// Backup::tag_current(ctx.table(), ctx.migration_id())
    ///     .await?
    ///     .copy_to(ctx.table(), "/var/backups/lancedb")
    ///     .await
    /// # }
    /// ```
    pub async fn copy_to(
        mut self,
        table: &Table,
        location: impl Into<crate::backup::BackupLocation>,
    ) -> Result<Self> {
        if self.copy.is_none() {
            self.copy = Some(BackupCopy::create(table, &self, location).await?);
        }
        Ok(self)
    }

    /// Restores `table` to this backup by committing a new version whose
    /// contents (schema, rows, indexes) are the backup's.
    ///
    /// Does nothing when the table is already at the backup's version. On a
    /// table that other writers keep committing to, the restore is tried
    /// again (one Lance attempt at a time, with short random pauses) until
    /// it lands between their commits.
    ///
    /// # Errors
    ///
    /// [`Error::LanceDb`] when the tag cannot be checked out or restored.
    pub async fn restore(&self, table: &Table) -> Result<()> {
        self.restore_fenced(table, &Fence::default()).await
    }

    /// [`restore`](Self::restore), committing only while `fence` holds
    /// (checked before each attempt).
    pub(crate) async fn restore_fenced(&self, table: &Table, fence: &Fence) -> Result<()> {
        if crate::lance::restore::to_tag(table, &self.tag, self.version, fence).await? {
            info!(
                table = table.name(),
                version = self.version,
                tag = self.tag,
                "table restored from backup"
            );
        }
        Ok(())
    }
}
