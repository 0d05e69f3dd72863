//! [`Backup`] and [`BackupCopy`]: what a migration's backup is, as the
//! ledger and the report name it.

use super::Options;

/// A restorable snapshot of a table, taken before a migration: a tag on its
/// version, and optionally an independent [`BackupCopy`] of that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub(super) table: String,
    pub(super) version: u64,
    pub(super) tag: String,
    pub(super) copy: Option<BackupCopy>,
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

    /// The independent copy, when one was made.
    pub fn copy(&self) -> Option<&BackupCopy> {
        self.copy.as_ref()
    }

    pub(crate) fn with_copy(mut self, copy: Option<BackupCopy>) -> Self {
        self.copy = copy;
        self
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
}

/// An independent copy of a table version, made before a migration, that
/// survives the table: dropping the table, pruning its versions or losing
/// its volume does not touch it.
///
/// Made by [`Migrator::copy_backups_to`](crate::Migrator::copy_backups_to)
/// or [`WithBackupCopy`](crate::WithBackupCopy) (found in
/// [`Backup::copy`]), or found again with [`BackupCopy::open`] and
/// [`BackupCopy::list`]. Each copy is a Lance dataset named
/// `<table>__<backup tag>.lance` in the chosen location, so that location
/// also opens as a LanceDB database listing the copies as tables.
///
/// Every copy carries a record of what it holds (table, version, row count,
/// schema, a BLAKE3 checksum of its content, index names), written only
/// once the copy is complete; [`restore`](Self::restore) checks the restored
/// table against it.
///
/// A copy remembers the storage options it was made or opened with (see
/// [`BackupLocation`](super::BackupLocation)) and uses them to read itself and to write a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupCopy {
    pub(super) uri: String,
    pub(super) options: Options,
    pub(super) table: String,
    pub(super) tag: String,
    pub(super) version: u64,
    pub(super) data_version: u64,
    pub(super) rows: u64,
    pub(super) schema: String,
    pub(super) checksum: String,
    pub(super) indexes: Vec<String>,
}

impl BackupCopy {
    /// Where the copy is: the URI of its Lance dataset.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The table it was taken from.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The backup tag of the version it copies.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The table version it copies.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Rows in the copied version.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// BLAKE3 (hex) of the copied version's content: every value of every
    /// column in scan order, independent of how it is stored.
    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    /// Names of the indexes the copy holds.
    pub fn indexes(&self) -> &[String] {
        &self.indexes
    }
}

/// `{"table", "version", "tag", "copy"}`: the copy as its URI (its storage
/// options, which may hold credentials, are never written).
#[cfg(feature = "serde")]
impl serde::Serialize for Backup {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Backup", 4)?;
        st.serialize_field("table", &self.table)?;
        st.serialize_field("version", &self.version)?;
        st.serialize_field("tag", &self.tag)?;
        st.serialize_field("copy", &self.copy.as_ref().map(BackupCopy::uri))?;
        st.end()
    }
}
