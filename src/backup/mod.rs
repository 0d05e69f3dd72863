//! Backups: a LanceDB tag on the table's version before a migration, and the
//! restore that undoes a failed migration.
//!
//! A tag costs one small file whatever the table's size, keeps its version
//! safe from `optimize` pruning, and `restore` from it commits a new version
//! whose manifest copies the tagged one, so rollback is O(1) too. It lives
//! inside the table: dropping the table or deleting its files loses it. An
//! independent [`BackupCopy`] can be added to it for that.

pub(crate) mod content;
pub(crate) mod copy;

use lancedb::Table;
use tracing::info;

use crate::backup::copy::BackupCopy;
use crate::error::{Error, Result};
use crate::lance::latest_version;

/// A restorable snapshot of a table, taken before a migration: a tag on its
/// version, and optionally an independent [`BackupCopy`] of that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    table: String,
    version: u64,
    tag: String,
    copy: Option<BackupCopy>,
}

impl Backup {
    /// Describes an existing tagged version of `table` as a backup.
    pub fn new(table: impl Into<String>, version: u64, tag: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            version,
            tag: tag.into(),
            copy: None,
        }
    }

    /// Adds an independent copy of the backup's version, written to
    /// `location` (a directory path or object-store URI) by
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
    pub async fn copy_to(mut self, table: &Table, location: &str) -> Result<Self> {
        if self.copy.is_none() {
            self.copy = Some(BackupCopy::create(table, &self, location).await?);
        }
        Ok(self)
    }

    /// The independent copy, when one was made.
    pub fn copy(&self) -> Option<&BackupCopy> {
        self.copy.as_ref()
    }

    pub(crate) fn with_copy(mut self, copy: Option<BackupCopy>) -> Self {
        self.copy = copy;
        self
    }

    /// Tags the table's current version for `migration` and returns it as a
    /// backup.
    ///
    /// The tag is named by [`Backup::tag_name`]. If that tag already exists on
    /// the same version (a retried migration), it is reused.
    ///
    /// # Errors
    ///
    /// [`Error::Lance`] when the tag cannot be created, or
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
        match tags.get_version(&tag).await {
            Ok(existing) if existing == version => {}
            Ok(existing) => {
                return Err(Error::InvalidMigration {
                    migration: migration.to_owned(),
                    reason: format!("backup tag `{tag}` already points at version {existing}"),
                });
            }
            Err(_) => tags
                .create(&tag, version)
                .await
                .map_err(Error::lance(format!("create backup tag `{tag}`")))?,
        }
        info!(table = table.name(), version, tag, "backup tagged");
        Ok(Self::new(table.name(), version, tag))
    }

    /// The tag name used for `migration`'s backup of `version`.
    ///
    /// LanceDB allows only letters, digits, `.`, `-` and `_` in tags, so any
    /// other character of the id becomes `_`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lancedb_migrate::Backup;
    ///
    /// assert_eq!(Backup::tag_name("0001 add/category", 3), "lancedb-migrate_0001_add_category_v3");
    /// ```
    pub fn tag_name(migration: &str, version: u64) -> String {
        let id: String = migration
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("lancedb-migrate_{id}_v{version}")
    }

    /// The table this backup belongs to.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The table version the backup preserves.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The LanceDB tag that holds the version.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Restores `table` to this backup by committing a new version whose
    /// contents (schema, rows, indexes) are the backup's.
    ///
    /// Does nothing when the table is already at the backup's version.
    ///
    /// # Errors
    ///
    /// [`Error::Lance`] when the tag cannot be checked out or restored.
    pub async fn restore(&self, table: &Table) -> Result<()> {
        if latest_version(table).await? == self.version {
            return Ok(());
        }
        table
            .checkout_tag(&self.tag)
            .await
            .map_err(Error::lance(format!("check out backup tag `{}`", self.tag)))?;
        let restored = table.restore().await;
        if restored.is_err() {
            // Leave the handle usable for writes whatever happened.
            let _ = table.checkout_latest().await;
        }
        restored.map_err(Error::lance(format!("restore backup tag `{}`", self.tag)))?;
        info!(
            table = table.name(),
            version = self.version,
            tag = self.tag,
            "table restored from backup"
        );
        Ok(())
    }
}
