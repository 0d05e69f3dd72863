//! The `Migration` trait that built-in and downstream migrations implement.

use std::fmt;

use arrow_schema::{Schema, SchemaRef};
use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::backup::Backup;
use crate::error::Result;
use crate::migration::MigrationContext;
use crate::migration::{MigrationPlan, TableInfo};

/// One change to one table, applied at most once per database.
///
/// The [`Migrator`](crate::Migrator) calls the hooks in this order, each with
/// the same [`MigrationContext`]:
///
/// 1. [`backup`](Self::backup) — keep a way back;
/// 2. [`transform`](Self::transform) — change the table (the one hook every
///    migration must write);
/// 3. [`rebuild`](Self::rebuild) — bring derived structures such as indexes
///    up to date;
/// 4. [`verify`](Self::verify) — check the result.
///
/// If transform, rebuild or verify fails, the migrator restores the backup.
///
/// # Identity and drift
///
/// [`id`](Self::id) names the migration in the ledger forever; the
/// [checksum](Self::checksum) of its [`definition`](Self::definition) is
/// recorded when it is applied. Editing an applied migration changes the
/// checksum, and the next run fails with [`Error::Drift`](crate::Error::Drift)
/// instead of silently skipping or re-running it.
///
/// # Examples
///
/// A downstream migration that lower-cases a text column in place, and its
/// unit test with [`testing::conformance`](crate::testing) (feature
/// `testing`) on a real in-memory table:
///
/// ```
/// use lancedb_migrate::{Migration, MigrationContext, Result, ResultExt, async_trait};
///
/// #[derive(Debug)]
/// struct LowercaseCategory;
///
/// #[async_trait]
/// impl Migration for LowercaseCategory {
///     fn id(&self) -> &str {
///         "0003_lowercase_category"
///     }
///
///     fn table(&self) -> &str {
///         "documents"
///     }
///
///     async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
///         ctx.table()
///             .update()
///             .column("category", "lower(category)")
///             .execute()
///             .await
///             .could_not("lower-case the categories")?;
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use lancedb::table::NewColumnTransform;
/// use lancedb_migrate::testing;
///
/// testing::conformance(|| LowercaseCategory, "id", async |db| {
///     let table = testing::documents_table(db, "documents", 20, 4).await.unwrap();
///     let columns = NewColumnTransform::SqlExpressions(vec![("category".into(), "'SPORT'".into())]);
///     table.add_columns().transform(columns).execute().await.unwrap();
///     table.update().only_if("id % 2 = 0").column("category", "'News'").execute().await.unwrap();
/// })
/// .await;
/// # }
/// ```
#[async_trait]
pub trait Migration: fmt::Debug + Send + Sync {
    /// The migration's stable, unique id, e.g. `"0001_add_category"`.
    ///
    /// Never change it once the migration has been applied anywhere: the
    /// ledger knows the migration by this id.
    fn id(&self) -> &str;

    /// The name of the table the migration changes.
    fn table(&self) -> &str;

    /// A canonical text of what the migration does; its checksum detects
    /// edits to an applied migration.
    ///
    /// It must be the same on every start of every build of the
    /// application for as long as the migration means the same thing: put
    /// in it what changes the data (table, columns, types, defaults,
    /// expressions, model), and leave out what only tunes how the work is
    /// done (batch sizes, concurrency, timeouts), which can then change
    /// after the migration was applied. Never let a dependency's `Display`
    /// or `Debug` (an Arrow `DataType`, a client's options) into it: a
    /// routine `cargo update` that changes their formatting would make the
    /// migration look edited everywhere it was applied. Write it with
    /// [`Definition`](crate::Definition), whose encoding this crate keeps
    /// stable, as the built-in migrations do.
    ///
    /// # Default implementation
    ///
    /// The migration's `Debug` output: stable as long as the type's fields
    /// are your own types and plain values (strings, numbers), as in a
    /// unit struct or a struct of column names. Override it when `Debug`
    /// shows a dependency's type, or something that is not part of the
    /// definition (a cache, a client handle).
    ///
    /// When you must change a definition that was already applied, without
    /// changing what the migration does (to drop a dependency's type from
    /// it, say), return the old checksum from
    /// [`previous_checksums`](Self::previous_checksums).
    fn definition(&self) -> String {
        format!("{self:?}")
    }

    /// The SHA-256 of [`definition`](Self::definition), hex-encoded, as
    /// recorded in the ledger.
    ///
    /// # Default implementation
    ///
    /// Hashes the definition; there is rarely a reason to override it.
    fn checksum(&self) -> String {
        hex_sha256(self.definition().as_bytes())
    }

    /// Checksums that earlier releases recorded for this same migration,
    /// from an earlier encoding of the same definition.
    ///
    /// A ledger row applied with one of them is not drift: the next run that
    /// takes the lease rewrites the row's checksum to the current one, in
    /// place, and records the old one in its details
    /// (`checksum.previous`, with `checksum.upgraded_by`, the crate version
    /// that did it). Nothing is run again.
    ///
    /// # Default implementation
    ///
    /// None. The built-in migrations return the checksum of the definition
    /// lancedb-migrate 0.1 recorded for them.
    fn previous_checksums(&self) -> Vec<String> {
        Vec::new()
    }

    /// The schema the table must have after the migration, given the one it
    /// had before. Used by the default [`verify`](Self::verify).
    ///
    /// # Default implementation
    ///
    /// Returns `before` unchanged: right for migrations that change data
    /// only. A migration that changes the schema must override it (or
    /// override `verify`), e.g. with [`SchemaChange`](crate::SchemaChange):
    /// `SchemaChange::new(self.table(), before).add_column(field).finish()`.
    ///
    /// # Errors
    ///
    /// Implementations return an error when `before` cannot be migrated.
    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        Ok(before.clone())
    }

    /// The schema to create the table with when the migration finds it
    /// missing, or `None` (the default): a missing table is then an
    /// [`Error::TableNotFound`](crate::Error::TableNotFound) before anything
    /// runs.
    ///
    /// With `Some`, a run that finds no table creates it empty with this
    /// schema (under the lease, as the first thing it writes), then runs the
    /// hooks as usual: [`expected_schema`](Self::expected_schema) sees the
    /// new table's schema, the backup tags its first version, and
    /// [`transform`](Self::transform) fills it. If the attempt fails and the
    /// table is still empty, it is dropped again: the database is left as it
    /// was. [`plan`](Self::plan) and `expected_schema` see an empty schema
    /// (no fields) for a table that is still to be created.
    /// [`CreateTable`](crate::CreateTable) and
    /// [`TargetSchema`](crate::TargetSchema) use it.
    fn creates(&self) -> Option<SchemaRef> {
        None
    }

    /// What the migration will do to its table, for
    /// [`Migrator::plan`](crate::Migrator::plan). Must not change anything.
    ///
    /// `table` describes the table as the migration will find it: its rows
    /// and indexes now, and its schema after the earlier pending migrations
    /// of the plan. It is only called after
    /// [`expected_schema`](Self::expected_schema) accepted that schema.
    ///
    /// A run also calls it, before anything is written, when the table has
    /// indexes: an index the plan names in [`MigrationPlan::rebuilds`] (because the
    /// migration replaces its column, keeping the column's type) must be
    /// one LanceDB can build again, or the run is refused with
    /// [`Error::IndexNotRecreatable`](crate::Error::IndexNotRecreatable). A
    /// column whose type the migration changes
    /// ([`expected_schema`](Self::expected_schema)) is checked without it.
    ///
    /// # Default implementation
    ///
    /// "custom migration", writing an unknown amount of data. Override it to
    /// tell operators what to expect.
    ///
    /// # Errors
    ///
    /// An error fails the whole plan; report bad input through
    /// `expected_schema` instead.
    fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
        let _ = table;
        Ok(MigrationPlan::new("custom migration (runs its transform)"))
    }

    /// Whether the application must wait for this migration before it
    /// serves: its new code reads what the migration makes (a column it
    /// adds, say).
    ///
    /// `true` (the default, and [`AddColumns`](crate::AddColumns)'): a
    /// start-up [`run`](crate::Migrator::run) that finds another process
    /// holding the lease waits until this migration has landed, and
    /// [`MigrationHandle::ready`](crate::MigrationHandle::ready) resolves
    /// only after it. `false` ([`ReEmbed`](crate::ReEmbed),
    /// [`RebuildIndex`](crate::RebuildIndex)): the application serves
    /// while it runs, on what the table had before, and switches when it
    /// lands ([`Migrator::applied`](crate::Migrator::applied),
    /// [`MigrationHandle::landed`](crate::MigrationHandle::landed)).
    ///
    /// Migrations that block serving run before those that do not, unless
    /// one that does not comes first on the same table: then their order
    /// is kept, and the application waits for both.
    fn blocks_serving(&self) -> bool {
        true
    }

    /// Whether an attempt that was interrupted (the process died
    /// mid-migration) is continued rather than started over.
    ///
    /// `false` (the default): the next run restores the interrupted
    /// attempt's backup, then runs every hook again. `true`: the next run
    /// keeps the table as the crash left it and the first attempt's backup
    /// (still the rollback point), and calls [`transform`](Self::transform)
    /// again, which must then pick up where it stopped.
    /// [`MigrationContext::version_before`] and
    /// [`schema_before`](MigrationContext::schema_before) still describe the
    /// table before the first attempt.
    fn resumable(&self) -> bool {
        false
    }

    /// Keeps a way back to the table as it is now.
    ///
    /// # Default implementation
    ///
    /// Tags the table's current version ([`Backup::tag_current`]): O(1) in
    /// table size, and protected from version pruning.
    ///
    /// # Errors
    ///
    /// An error stops the migration before anything was changed.
    async fn backup(&self, ctx: &MigrationContext) -> Result<Backup> {
        Backup::tag_current(ctx.table(), self.id()).await
    }

    /// Changes the table. Required.
    ///
    /// Write through [`MigrationContext::table`]. Report long work through
    /// [`MigrationContext::progress`]. Before each commit, call
    /// [`MigrationContext::check_lease`] (or commit through
    /// [`MigrationContext::retry_on_conflict`], which does): a process that
    /// was stalled past the lease TTL must not write after another took over.
    ///
    /// # Errors
    ///
    /// Any error makes the migrator restore the backup. A panic is caught
    /// and handled the same way ([`Error::Panicked`](crate::Error::Panicked)).
    async fn transform(&self, ctx: &MigrationContext) -> Result<()>;

    /// Rebuilds what depends on the changed data, such as indexes.
    ///
    /// # Default implementation
    ///
    /// [`MigrationContext::restore_indexes`]: every index the table had
    /// before exists again on the column it now belongs to, with its type
    /// and parameters, covering every row. A transform that must drop an
    /// index first (e.g. to cast its column) can just drop it; this
    /// recreates it. An override that rebuilds an index with other
    /// parameters on purpose also overrides [`verify`](Self::verify): the
    /// default one compares them with the index before.
    ///
    /// # Errors
    ///
    /// Any error makes the migrator restore the backup.
    async fn rebuild(&self, ctx: &MigrationContext) -> Result<()> {
        ctx.restore_indexes().await
    }

    /// Checks the migrated table.
    ///
    /// # Default implementation
    ///
    /// Checks that the row count is unchanged
    /// ([`MigrationContext::check_row_count`]) and that the schema equals
    /// [`expected_schema`](Self::expected_schema) of the schema before
    /// ([`MigrationContext::check_schema`]), and that the indexes are all
    /// there, cover every row and find rows by vector
    /// ([`MigrationContext::check_indexes`]). Overrides usually call these and
    /// add their own checks.
    ///
    /// # Errors
    ///
    /// [`Error::Verification`](crate::Error::Verification) (or any error)
    /// makes the migrator restore the backup.
    async fn verify(&self, ctx: &MigrationContext) -> Result<()> {
        ctx.check_row_count().await?;
        let expected = self.expected_schema(ctx.schema_before())?;
        ctx.check_schema(&expected).await?;
        ctx.check_indexes().await
    }
}

/// Hex-encoded SHA-256 of `bytes`.
pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
