//! What a caller asks of an [`Error`]: the report, phase, rollback and
//! cause of a failed migration; and the constructors hooks use.

use super::{BoxError, Error, Rollback};
use crate::report::{Phase, Report};

impl Error {
    /// An error for a downstream migration to return from a hook.
    ///
    /// # Examples
    ///
    /// ```
    /// use lancedb_migrate::Error;
    ///
    /// let err = Error::custom("no rows match the expected format");
    /// assert_eq!(err.to_string(), "no rows match the expected format");
    /// ```
    pub fn custom(message: impl Into<String>) -> Self {
        Self::Custom {
            message: message.into(),
            source: None,
        }
    }

    /// Wraps an error from outside this crate with a short description.
    ///
    /// # Examples
    ///
    /// ```
    /// use lancedb_migrate::Error;
    ///
    /// let io = std::io::Error::other("disk on fire");
    /// let err = Error::wrap("could not read the mapping file", io);
    /// assert!(std::error::Error::source(&err).is_some());
    /// ```
    pub fn wrap(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Custom {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The report of what completed before a [`Error::MigrationFailed`].
    pub fn report(&self) -> Option<&Report> {
        match self {
            Self::MigrationFailed { report, .. } => Some(report),
            _ => None,
        }
    }

    /// The phase a migration failed in, for a [`Error::MigrationFailed`].
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Self::MigrationFailed { phase, .. } => Some(*phase),
            _ => None,
        }
    }

    /// What was done to the table after the failure, for a
    /// [`Error::MigrationFailed`] or an [`Error::Interrupted`].
    pub fn rollback(&self) -> Option<&Rollback> {
        match self {
            Self::MigrationFailed { rollback, .. } | Self::Interrupted { rollback, .. } => {
                Some(rollback)
            }
            _ => None,
        }
    }

    /// The error the migration failed on: the `source` of a
    /// [`Error::MigrationFailed`]; the error itself otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use lancedb_migrate::Error;
    ///
    /// let err = Error::TableNotFound { table: "docs".into() };
    /// assert!(matches!(err.cause(), Error::TableNotFound { .. }));
    /// ```
    pub fn cause(&self) -> &Self {
        match self {
            Self::MigrationFailed { source, .. } => source,
            other => other,
        }
    }

    /// The variant's name in `snake_case` (`"table_not_found"`,
    /// `"drift"`, `"migration_failed"`, ...): what the `serde` feature and
    /// the command line's `--json` write as an error's `kind`. Stable: a
    /// variant's kind does not change between releases.
    ///
    /// # Examples
    ///
    /// ```
    /// use lancedb_migrate::Error;
    ///
    /// let err = Error::TableNotFound { table: "docs".into() };
    /// assert_eq!(err.kind(), "table_not_found");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TableNotFound { .. } => "table_not_found",
            Self::ColumnNotFound { .. } => "column_not_found",
            Self::ColumnExists { .. } => "column_exists",
            Self::ColumnType { .. } => "column_type",
            Self::SchemaMismatch { .. } => "schema_mismatch",
            Self::Destructive { .. } => "destructive",
            Self::LossyCast { .. } => "lossy_cast",
            Self::Index { .. } => "index",
            Self::IndexNotRecreatable { .. } => "index_not_recreatable",
            Self::Embedding { .. } => "embedding",
            Self::DefaultTypeMismatch { .. } => "default_type_mismatch",
            Self::MissingDefault { .. } => "missing_default",
            Self::InvalidMigration { .. } => "invalid_migration",
            Self::InvalidConfig { .. } => "invalid_config",
            Self::DuplicateId { .. } => "duplicate_id",
            Self::Drift { .. } => "drift",
            Self::MissingMigrations { .. } => "missing_migrations",
            Self::OutOfOrder { .. } => "out_of_order",
            Self::NewerMigrations { .. } => "newer_migrations",
            Self::NewerFormat { .. } => "newer_format",
            Self::Lockfile { .. } => "lockfile",
            Self::InvalidLockfile { .. } => "invalid_lockfile",
            Self::BackupCopy { .. } => "backup_copy",
            Self::Refused { .. } => "refused",
            Self::ChangedConcurrently { .. } => "changed_concurrently",
            Self::Verification { .. } => "verification",
            Self::Ledger { .. } => "ledger",
            Self::LeaseTimeout { .. } => "lease_timeout",
            Self::LeaseLost { .. } => "lease_lost",
            Self::Stopped { .. } => "stopped",
            Self::NotReady { .. } => "not_ready",
            Self::UnsafeStore { .. } => "unsafe_store",
            Self::Panicked { .. } => "panicked",
            Self::Interrupted { .. } => "interrupted",
            Self::MigrationFailed { .. } => "migration_failed",
            Self::NotLocal { .. } => "not_local",
            Self::Io { .. } => "io",
            Self::LanceDb { .. } => "lancedb",
            Self::Arrow { .. } => "arrow",
            Self::Custom { .. } => "custom",
        }
    }

    /// The last error of the [`source`](std::error::Error::source) chain:
    /// where the failure started (e.g. the I/O error under a LanceDB
    /// error, or an embedding model's own error); the error itself when it
    /// has no source.
    pub fn root_cause(&self) -> &(dyn std::error::Error + 'static) {
        let mut current: &(dyn std::error::Error + 'static) = self;
        while let Some(next) = current.source() {
            current = next;
        }
        current
    }

    /// The crate's one mapping of LanceDB and Lance errors: `operation`
    /// says what was being done, in words that complete "lancedb could not".
    pub(crate) fn lance<E: Into<lancedb::Error>>(
        operation: impl Into<String>,
    ) -> impl Fn(E) -> Self {
        let operation = operation.into();
        move |source| Self::LanceDb {
            operation: operation.clone(),
            source: source.into(),
        }
    }

    pub(crate) fn arrow(
        operation: impl Into<String>,
    ) -> impl FnOnce(arrow_schema::ArrowError) -> Self {
        let operation = operation.into();
        move |source| Self::Arrow { operation, source }
    }

    pub(crate) fn verification(table: &str, reason: impl Into<String>) -> Self {
        Self::Verification {
            table: table.to_owned(),
            reason: reason.into(),
        }
    }
}
