//! Errors of the calls a hook makes: LanceDB's and Arrow's turned into
//! [`Error`] (named with [`ResultExt::could_not`], or by `?`); and the
//! text of an error chain or a panic, for logs and the ledger.

use super::{Error, Result};

/// An error and its sources, joined with ": ".
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// What `?` on a LanceDB or Arrow error calls the operation, when the hook
/// did not name it with [`ResultExt::could_not`].
const UNNAMED_OPERATION: &str = "complete a call made by a migration hook";

impl From<lancedb::Error> for Error {
    /// Lets a downstream hook use `?` on LanceDB calls: an [`Error::LanceDb`]
    /// with the LanceDB error as its source. Name the call with
    /// [`ResultExt::could_not`] for a message that says what failed.
    fn from(source: lancedb::Error) -> Self {
        Self::LanceDb {
            operation: UNNAMED_OPERATION.to_owned(),
            source,
        }
    }
}

impl From<arrow_schema::ArrowError> for Error {
    /// Lets a downstream hook use `?` on Arrow calls: an [`Error::Arrow`]
    /// with the Arrow error as its source. Name the call with
    /// [`ResultExt::could_not`] for a message that says what failed.
    fn from(source: arrow_schema::ArrowError) -> Self {
        Self::Arrow {
            operation: UNNAMED_OPERATION.to_owned(),
            source,
        }
    }
}

/// Names what a LanceDB or Arrow call in a migration hook was doing, so that
/// its error says so and keeps the call's own error as its source.
///
/// # Examples
///
/// ```no_run
/// use lancedb_migrate::{MigrationContext, Result, ResultExt};
///
/// async fn transform(ctx: &MigrationContext) -> Result<()> {
///     ctx.table()
///         .update()
///         .column("category", "lower(category)")
///         .execute()
///         .await
///         .could_not("lowercase the categories")?;
///     Ok(())
/// }
/// ```
///
/// A failure then reads "lancedb could not lowercase the categories",
/// followed in its [`source`](std::error::Error::source) chain (and in the
/// ledger) by LanceDB's own error.
pub trait ResultExt<T> {
    /// The error as [`Error::LanceDb`] or [`Error::Arrow`] with `operation`,
    /// words that complete "could not …".
    fn could_not(self, operation: impl Into<String>) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, lancedb::Error> {
    fn could_not(self, operation: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::LanceDb {
            operation: operation.into(),
            source,
        })
    }
}

impl<T> ResultExt<T> for std::result::Result<T, arrow_schema::ArrowError> {
    fn could_not(self, operation: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Arrow {
            operation: operation.into(),
            source,
        })
    }
}
