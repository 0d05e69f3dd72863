//! What exactly went wrong, where a variant of [`Error`] needs more than
//! a message: an embedding function's output, a backup copy.

use arrow_schema::DataType;

use super::BoxError;

/// What was wrong with an embedding function's output, in
/// [`Error::Embedding`](super::Error::Embedding).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddingProblem {
    /// The function returned an error (its text is in the error's
    /// [`source`](std::error::Error::source) chain, and in the ledger).
    #[error("returned an error; fix the model or its inputs and run again")]
    Failed(#[source] lancedb::Error),
    /// An embedding service failed: an answer retrying cannot change (400,
    /// 401...), or failures until the retry budget was spent. The
    /// [`ServiceError`](crate::embeddings::ServiceError) names the last
    /// status and body; [`ServiceError::status`](crate::embeddings::ServiceError::status)
    /// gives the status.
    #[error("{0}")]
    Service(#[source] crate::embeddings::ServiceError),
    /// It returned vectors of another dimension than it declared.
    #[error("returned vectors of dimension {actual}, but declares {expected}")]
    WrongDimension {
        /// The dimension its `dest_type` declares.
        expected: usize,
        /// The dimension it returned.
        actual: usize,
    },
    /// It returned another number of vectors than it was given texts.
    #[error("returned {actual} vectors for {expected} inputs")]
    WrongRowCount {
        /// Inputs given.
        expected: usize,
        /// Vectors returned.
        actual: usize,
    },
    /// A vector contains NaN or an infinity.
    #[error("returned a vector with NaN or infinite values (for input {text:?})")]
    NotFinite {
        /// The input whose vector was bad.
        text: String,
    },
    /// A vector is NULL.
    #[error("returned a NULL vector (for input {text:?})")]
    Null {
        /// The input whose vector was NULL.
        text: String,
    },
    /// The model's code panicked.
    #[error("panicked: {message}")]
    Panicked {
        /// The panic's message.
        message: String,
    },
    /// The model returned something other than fixed-size lists of floats.
    #[error("returned {actual}, not fixed-size lists of floats")]
    WrongType {
        /// The Arrow type it returned.
        actual: DataType,
    },
}

/// What went wrong with an independent backup copy, in
/// [`Error::BackupCopy`](super::Error::BackupCopy).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyProblem {
    /// Something that is not this backup's finished copy is already at the
    /// copy's path. Nothing was written; the migration did not start.
    #[error(
        "cannot be made: something else is already at that path; move it away or choose another backup location"
    )]
    Exists,
    /// The copy or the restore could not be written (location not writable,
    /// out of space, ...). What was written is removed; a copy without its
    /// completion record is never used.
    #[error("could not be written; nothing usable was left behind")]
    Write(#[source] BoxError),
    /// The location could not be read.
    #[error("could not be read")]
    Read(#[source] BoxError),
    /// No copy is there.
    #[error("does not exist")]
    Missing,
    /// The dataset there has no completion record: its copying was
    /// interrupted, or it is not a backup copy. It is not used.
    #[error("is not a finished backup copy (it has no completion record) and cannot be restored")]
    Unfinished,
    /// The table to restore into already exists.
    #[error("cannot be restored: the table already exists; drop or rename it first")]
    TableExists,
    /// The restored table differs from the copy's record; it was dropped.
    #[error(
        "was restored, but the table does not match the copy's record ({what}); the restored table was dropped again"
    )]
    Mismatch {
        /// What differs, with the expected and found values.
        what: String,
    },
}
