//! [`BackupLocation`]: where backup copies go, with the storage options
//! that open it.

use std::collections::HashMap;
use std::fmt;

/// Where backup copies are written or found: a directory path or an
/// object-store URI (`s3://bucket/backups`, `gs://…`, `az://…`), with the
/// storage options that open it.
///
/// A plain `&str` or `String` converts into a location without options.
/// When a copy is made, the migrated table's own storage options (those of
/// its LanceDB connection) are used first and the location's override them:
/// a location in the same store needs none. Reading a copy
/// ([`BackupCopy::open`](crate::BackupCopy::open),
/// [`list`](crate::BackupCopy::list)) uses the location's alone, and a
/// restore writes with the options of the copy it restores. Options not
/// given are taken, as LanceDB does, from the environment (`AWS_*`, …).
///
/// Values are never printed: `Debug` shows the option keys only.
///
/// # Examples
///
/// Copies to a second bucket, on the same S3-compatible endpoint as the
/// database but with its own credentials:
///
/// ```
/// use lancedb_migrate::BackupLocation;
///
/// let backups = BackupLocation::new("s3://acme-backups/lancedb")
///     .storage_option("aws_access_key_id", "AKIA…")
///     .storage_option("aws_secret_access_key", "…");
/// assert_eq!(backups.uri(), "s3://acme-backups/lancedb");
/// assert!(!format!("{backups:?}").contains("AKIA"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BackupLocation {
    uri: String,
    options: Options,
}

impl BackupLocation {
    /// `uri`: a directory path or an object-store URI.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            options: Options::default(),
        }
    }

    /// Sets one storage option, with LanceDB's keys (`aws_region`,
    /// `aws_endpoint`, `allow_http`, `google_service_account`,
    /// `azure_storage_account_name`, …).
    #[must_use]
    pub fn storage_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.0.insert(key.into(), value.into());
        self
    }

    /// Sets several storage options.
    #[must_use]
    pub fn storage_options(
        mut self,
        options: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Self {
        self.options
            .0
            .extend(options.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The directory path or URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub(crate) fn options(&self) -> &Options {
        &self.options
    }
}

impl fmt::Debug for BackupLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupLocation")
            .field("uri", &self.uri)
            .field("options", &self.options)
            .finish()
    }
}

impl fmt::Display for BackupLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl From<&str> for BackupLocation {
    fn from(uri: &str) -> Self {
        Self::new(uri)
    }
}

impl From<String> for BackupLocation {
    fn from(uri: String) -> Self {
        Self::new(uri)
    }
}

impl From<&String> for BackupLocation {
    fn from(uri: &String) -> Self {
        Self::new(uri.as_str())
    }
}

/// Storage options, whose values (credentials) are never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Options(pub(crate) HashMap<String, String>);

impl Options {
    /// `base` with `overrides` on top.
    pub(crate) fn merged(base: HashMap<String, String>, overrides: &Self) -> Self {
        let mut options = base;
        options.extend(overrides.0.clone());
        Self(options)
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_set().entries(keys).finish()
    }
}
