//! [`Error`]'s variants: one per thing that can go wrong, each naming
//! what it is about.

use std::sync::Arc;

use arrow_schema::DataType;

use super::{BoxError, CopyProblem, EmbeddingProblem, Rollback};
use crate::report::{Phase, Report};

/// Everything that can go wrong while planning or running migrations.
///
/// Each variant names what it is about (`migration`, `table`, `column`,
/// `phase`) in fields, so callers can match on it; the message says what to
/// do about it. Errors from LanceDB and Arrow are wrapped and reachable
/// through [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A migration targets a table that does not exist in the database.
    #[error("table `{table}` does not exist; create it before migrating it")]
    TableNotFound {
        /// The missing table.
        table: String,
    },

    /// A column the migration needs is not in the table.
    #[error("column `{column}` does not exist in table `{table}`")]
    ColumnNotFound {
        /// The table.
        table: String,
        /// The missing column.
        column: String,
    },

    /// A column the migration would add is already in the table.
    #[error(
        "column `{column}` already exists in table `{table}`; choose another name or drop it first"
    )]
    ColumnExists {
        /// The table.
        table: String,
        /// The column that exists already.
        column: String,
    },

    /// A column has a type the migration cannot work with (e.g. a re-embed
    /// source column that is not text, or a target that is not a vector).
    #[error("column `{column}` of table `{table}` has type {found}; expected {expected}")]
    ColumnType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What the migration needs, in words.
        expected: String,
        /// The column's actual type.
        found: DataType,
    },

    /// An existing table does not have the schema a migration declares for
    /// it: a [`CreateTable`](crate::CreateTable) found the table there with
    /// another schema, or a [`TargetSchema`](crate::TargetSchema) found a
    /// difference it cannot plan a step for (a column of another type
    /// family, a nullable column declared NOT NULL). Found before anything
    /// is written.
    #[error(
        "table `{table}` does not match its declared schema: {}; migrate the table to it first (e.g. CastColumn, FillColumn, ReEmbed), or declare the schema it has",
        differences.join("; ")
    )]
    SchemaMismatch {
        /// The table.
        table: String,
        /// Each difference, in words (`column `score` is int32, declared
        /// utf8`).
        differences: Vec<String>,
    },

    /// Reaching a [`TargetSchema`](crate::TargetSchema) would destroy
    /// data (drop a column, narrow a column's type), which it was not
    /// allowed to do. Found before anything is written.
    #[error(
        "reaching the declared schema of table `{table}` would {}; allow it explicitly (TargetSchema::allow_drops, allow_narrowing) or declare those columns",
        changes.join(", ")
    )]
    Destructive {
        /// The table.
        table: String,
        /// Each destructive change, in words (`drop column `tag``).
        changes: Vec<String>,
    },

    /// A column's values do not all convert to the type a
    /// [`CastColumn`](crate::CastColumn) asks for: a value fails to cast,
    /// or would change (an integer out of range, a finite float that would
    /// overflow). Found before anything is written.
    #[error(
        "column `{column}` of table `{table}` cannot be cast to {to}: the value {value} (row id {row}) {reason}; fix or delete such rows first, or cast to a wider type"
    )]
    LossyCast {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The type asked for.
        to: Box<DataType>,
        /// The first value that does not convert, as Arrow displays it.
        value: String,
        /// Its Lance row id (`_rowid`).
        row: u64,
        /// What goes wrong with it.
        reason: String,
    },

    /// An index could not be kept or rebuilt, or does not pass its checks
    /// after the migration (missing, rows not indexed, a search through it
    /// does not find rows).
    #[error("index `{index}` of table `{table}`: {reason}")]
    Index {
        /// The table.
        table: String,
        /// The index's name.
        index: String,
        /// What is wrong.
        reason: String,
        /// The error of the LanceDB call that failed, when one did.
        #[source]
        source: Option<BoxError>,
    },

    /// A migration would have to build an index again (its column is
    /// replaced, or the migration says it rebuilds it) that LanceDB cannot
    /// build: refused before anything is written. Drop the index before
    /// the migration and build it again after, or write a
    /// [`rebuild`](crate::Migration::rebuild) hook that builds it.
    #[error(
        "index `{index}` ({index_type}) of table `{table}` cannot be rebuilt after this migration: {reason}"
    )]
    IndexNotRecreatable {
        /// The table.
        table: String,
        /// The index's name.
        index: String,
        /// Its type, as LanceDB names it.
        index_type: String,
        /// Why it cannot be rebuilt.
        reason: String,
    },

    /// The embedding function failed or returned something unusable. The
    /// table is restored to its version before the migration. `problem`
    /// is the error's [`source`](std::error::Error::source); when the model
    /// itself failed, its error follows in the chain.
    #[error("embedding model `{model}` gave no usable vectors")]
    Embedding {
        /// The model's name.
        model: String,
        /// What went wrong.
        #[source]
        problem: EmbeddingProblem,
    },

    /// A default value does not fit the type declared for its column.
    #[error(
        "the default for column `{column}` does not fit: {found}; give a default of type {expected} or declare the column with the value's type"
    )]
    DefaultTypeMismatch {
        /// The column.
        column: String,
        /// The type declared for the column.
        expected: DataType,
        /// Why the default does not fit, naming the value (e.g. "the
        /// boolean true cannot be stored as Utf8").
        found: String,
    },

    /// A column declared NOT NULL has no default to fill existing rows with.
    #[error(
        "column `{column}` is declared not-null but has no default to fill existing rows; give it a default or leave it nullable"
    )]
    MissingDefault {
        /// The column.
        column: String,
    },

    /// The migration's own configuration is invalid (e.g. an empty id, or no
    /// columns to add).
    #[error("migration `{migration}` is invalid: {reason}")]
    InvalidMigration {
        /// The migration's id (may be empty when the id is what is wrong).
        migration: String,
        /// What is wrong.
        reason: String,
    },

    /// A [`Migrator`](crate::Migrator) setting is invalid.
    #[error("invalid migrator setting: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },

    /// Two migrations given to one [`Migrator`](crate::Migrator) share an id.
    #[error("migration id `{migration}` is used by more than one migration; ids must be unique")]
    DuplicateId {
        /// The repeated id.
        migration: String,
    },

    /// A migration that was already applied has been edited since: its
    /// checksum differs from the one in the ledger. Nothing was run.
    #[error(
        "migration `{migration}` was changed after it was applied (ledger checksum {applied}, now {current}); {advice}"
    )]
    Drift {
        /// The edited migration.
        migration: String,
        /// Checksum recorded when it was applied.
        applied: String,
        /// Checksum of the definition given now.
        current: String,
        /// What to do: restore the original definition and add the change
        /// as a new migration; or, when the definition holds a value that
        /// looks computed at start-up (a time), compute it in the migration
        /// instead.
        advice: String,
    },

    /// Migrations the ledger shows applied are no longer in the list (they
    /// were deleted from the code), and
    /// [`Migrator::on_missing`](crate::Migrator::on_missing) refuses that
    /// (the default). Nothing was run.
    #[error(
        "applied migrations {ids:?} are not in the list any more; a migration stays listed once applied: put them back (or allow this with `Migrator::on_missing(Divergence::Allow)`)"
    )]
    MissingMigrations {
        /// Their ids, in the order they were applied.
        ids: Vec<String>,
    },

    /// Migrations were inserted in the list before one that was applied
    /// when they were not listed yet, and
    /// [`Migrator::on_out_of_order`](crate::Migrator::on_out_of_order)
    /// refuses that (the default). Nothing was run.
    #[error(
        "migrations {ids:?} are listed before `{applied}`, which was applied before they were added; move them after the last applied migration (or apply them out of order with `Migrator::on_out_of_order(Divergence::Allow)`)"
    )]
    OutOfOrder {
        /// The inserted migrations, in list order.
        ids: Vec<String>,
        /// The applied migration now listed after them.
        applied: String,
    },

    /// The ledger shows migrations applied that come after every migration
    /// in the list (a newer release applied them), and
    /// [`Migrator::on_newer`](crate::Migrator::on_newer) refuses that (it
    /// allows it by default, so that an older build can run beside a newer
    /// one during a rolling deploy or a rollback). Nothing was run.
    #[error(
        "the ledger has migrations {ids:?} applied by a newer release of this application; deploy that release (or allow this with `Migrator::on_newer(Divergence::Allow)`)"
    )]
    NewerMigrations {
        /// Their ids, in the order they were applied.
        ids: Vec<String>,
    },

    /// The ledger (or the migration lease on it) was written by a newer
    /// lancedb-migrate, in a format this one does not know. Nothing was
    /// read further or written.
    #[error(
        "the migration ledger `{ledger}` has {what} format {found}, written by a newer lancedb-migrate (this one knows up to {known}); upgrade lancedb-migrate to the version the rest of the fleet runs"
    )]
    NewerFormat {
        /// The ledger table's name.
        ledger: String,
        /// What has the format: `"ledger"` or `"lease"`.
        what: &'static str,
        /// The format found.
        found: u32,
        /// The newest format this build knows.
        known: u32,
    },

    /// The migration list diverges from the application's
    /// [`Lockfile`](crate::Lockfile): a locked migration was edited,
    /// deleted or moved, or one was inserted before locked ones. From
    /// [`Migrator::relock`](crate::Migrator::relock) (and `migrate lock`).
    /// Nothing was written.
    #[error(
        "the migration list diverges from the lockfile: {}",
        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Lockfile {
        /// Each difference.
        problems: Vec<crate::lockfile::LockProblem>,
    },

    /// A lockfile could not be read ([`Lockfile::parse`](crate::Lockfile::parse)).
    #[error("invalid migration lockfile: {reason}")]
    InvalidLockfile {
        /// Why.
        reason: String,
    },

    /// An independent backup copy could not be made or restored
    /// ([`BackupCopy`](crate::BackupCopy)). When making it fails, the
    /// migration does not start.
    #[error("backup copy `{location}` of table `{table}` {problem}")]
    BackupCopy {
        /// The table copied or restored.
        table: String,
        /// The copy's URI.
        location: String,
        /// What went wrong.
        #[source]
        problem: CopyProblem,
    },

    /// An operation on the ledger ([`Migrator::rollback_to`](crate::Migrator::rollback_to),
    /// [`baseline`](crate::Migrator::baseline), [`repair`](crate::Migrator::repair))
    /// was refused because it could do damage; nothing was changed.
    #[error("{operation} of migration `{migration}` refused: {reason}")]
    Refused {
        /// The operation, e.g. "rollback".
        operation: String,
        /// The migration it was asked for.
        migration: String,
        /// Why, and what to do instead.
        reason: String,
        /// The error that made the operation impossible, when one did
        /// (e.g. the table of a baseline could not be opened).
        #[source]
        source: Option<BoxError>,
    },

    /// Another writer changed the table in a way the migration cannot work
    /// around (e.g. it dropped the column being filled). The table is
    /// restored like after any failure; the next run tries again.
    #[error("table `{table}` was changed by another writer during the migration: {what}")]
    ChangedConcurrently {
        /// The table.
        table: String,
        /// What changed.
        what: String,
    },

    /// A verification check failed: the table is not what the migration
    /// promised.
    #[error("verification of table `{table}` failed: {reason}")]
    Verification {
        /// The table.
        table: String,
        /// The check that failed, with expected and actual values.
        reason: String,
    },

    /// The ledger table exists but cannot be read as a ledger (damaged, or
    /// written by a newer version of this crate).
    #[error("the migration ledger `{ledger}` cannot be used: {reason}")]
    Ledger {
        /// The ledger table's name.
        ledger: String,
        /// What is wrong with it.
        reason: String,
        /// The error of the read that failed, when one did.
        #[source]
        source: Option<BoxError>,
    },

    /// Another process held the migration lease for longer than the
    /// configured wait ([`Migrator::lease_wait`](crate::Migrator::lease_wait)).
    #[error(
        "waited {waited:.0?} for the migration lease held by `{holder}`; \
         if that process is gone the lease expires on its own, otherwise raise the wait"
    )]
    LeaseTimeout {
        /// Who holds the lease, as it identified itself.
        holder: String,
        /// How long this run waited.
        waited: std::time::Duration,
    },

    /// This run's lease lapsed or was taken over (e.g. the process was
    /// stopped for longer than the lease TTL, or its heartbeats did not
    /// land); it stopped before writing more. The next holder undoes or
    /// resumes the migration.
    #[error("the migration lease (generation {generation}) was lost; stopped to avoid two writers")]
    LeaseLost {
        /// The generation of the lost lease.
        generation: u64,
    },

    /// The run was asked to stop ([`StopSignal::stop`](crate::StopSignal::stop),
    /// [`MigrationHandle::stop`](crate::MigrationHandle::stop)) while a
    /// resumable hook was working. A hook returns it after saving its
    /// progress; the migrator then leaves the migration `running` with its
    /// backup, releases the lease, and the next process to take it
    /// continues where this one stopped. Not a failure: nothing is rolled
    /// back, and the run reports the migration
    /// [`Outcome::Stopped`](crate::Outcome::Stopped).
    #[error("stopped on request; the next run continues the migration where it stopped")]
    Stopped,

    /// The migrations that must land before the application serves did not
    /// ([`MigrationHandle::ready`](crate::MigrationHandle::ready)): one
    /// failed, or the run stopped before them.
    #[error("not ready to serve: {reason}; pending: {}", pending.join(", "))]
    NotReady {
        /// The migrations that block serving and have not landed.
        pending: Vec<String>,
        /// Why they did not (the run's error, in words).
        reason: String,
    },

    /// The object store under the database does not enforce put-if-absent
    /// (a create of an object that exists must be refused). The migration
    /// lease and Lance's own commits rely on it; on such a store two
    /// processes can both take the lease and concurrent commits silently
    /// overwrite each other. Checked once per process and database, before
    /// the ledger is created or the first lease taken: nothing has been
    /// written.
    #[error(
        "the object store at `{uri}` does not enforce put-if-absent ({found}): two processes \
         could both hold the migration lease and commits could overwrite each other. Use a store \
         with conditional writes (`If-None-Match: *`; S3, or S3-compatible stores that support it), \
         keep `aws_conditional_put` at its default, or, only if a single process ever writes this \
         database, opt out with `Migrator::allow_unsafe_store`"
    )]
    UnsafeStore {
        /// The table whose store was checked (the ledger, or the first
        /// migrated table before the ledger exists).
        uri: String,
        /// What the check saw.
        found: String,
    },

    /// A migration's code panicked in one of its hooks. The panic was
    /// caught: the table is restored like after any other failure, and the
    /// ledger records the migration `failed` with the message.
    #[error("the migration panicked: {message}")]
    Panicked {
        /// The panic's message.
        message: String,
    },

    /// An earlier attempt of the migration was interrupted (its process
    /// died or lost the lease), and undoing it failed or was refused, as
    /// `rollback` says. Nothing else was done.
    #[error("an interrupted earlier attempt could not be undone: {rollback}")]
    Interrupted {
        /// What undoing the attempt did.
        rollback: Box<Rollback>,
        /// Why.
        #[source]
        source: Box<Self>,
    },

    /// A migration failed; the run stopped there.
    ///
    /// The table was rolled back as `rollback` says, the failure is recorded
    /// in the ledger, and `report` lists the migrations that completed (or
    /// were skipped) before this one.
    #[error("migration `{migration}` on table `{table}` failed during {phase}; {rollback}")]
    MigrationFailed {
        /// The migration that failed.
        migration: String,
        /// The table it migrates.
        table: String,
        /// The phase that failed.
        phase: Phase,
        /// What was done to undo it.
        rollback: Box<Rollback>,
        /// What completed before the failure.
        report: Box<Report>,
        /// Why it failed.
        #[source]
        source: Arc<Self>,
    },

    /// The table is not a local Lance dataset (e.g. a LanceDB Cloud table),
    /// and the operation needs direct access to its files.
    #[error(
        "table `{table}` is not a local Lance dataset; {operation} needs direct access to its files"
    )]
    NotLocal {
        /// The table.
        table: String,
        /// What needed the files.
        operation: String,
    },

    /// A file-system operation failed.
    #[error("could not {operation}")]
    Io {
        /// What was being done.
        operation: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A LanceDB operation failed.
    #[error("lancedb could not {operation}")]
    LanceDb {
        /// What was being done, e.g. "open table `documents`".
        operation: String,
        /// The LanceDB error.
        #[source]
        source: lancedb::Error,
    },

    /// An Arrow operation failed (building or reading record batches).
    #[error("arrow could not {operation}")]
    Arrow {
        /// What was being done.
        operation: String,
        /// The Arrow error.
        #[source]
        source: arrow_schema::ArrowError,
    },

    /// An error from code outside this crate, typically a downstream
    /// migration's hook. Build it with [`Error::custom`].
    #[error("{message}")]
    Custom {
        /// A short description of what failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
}
