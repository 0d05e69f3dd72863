//! The conformance check every migration should pass: applies once, reruns
//! are no-ops, and a failure rolls the table back exactly.

use lancedb::{Connection, Table};

use crate::error::{Error, Result};
use crate::testing::{Snapshot, memory_db};

/// Checks that a downstream migration behaves as the migrator expects, on a
/// real table: it applies, verifies, and leaves intact the columns it does
/// not declare; a second run is a no-op that creates no version; and when
/// verification fails after it ran, the rollback leaves the table exactly
/// as it was.
///
/// Which columns a migration may change is what its
/// [`plan`](crate::Migration::plan) declares ([`MigrationPlan::columns`](crate::MigrationPlan::columns)):
/// every other column must keep its values. A migration whose plan declares
/// no columns (a custom migration with the default `plan`) may change any;
/// then every column must come out of the migration the same on a second
/// fresh table, so a data-changing migration such as an update of one
/// column passes, and one that depends on anything but its input does not.
///
/// `setup` creates the table the migration expects in a fresh database; it
/// is called twice (once per check). `key` is a column that orders rows.
///
/// # Panics
///
/// With a message naming the property that does not hold.
///
/// # Examples
///
/// ```
/// use arrow_schema::DataType;
/// use lancedb_migrate::testing;
/// use lancedb_migrate::{AddColumns, NewColumn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let migration = || {
///     AddColumns::new("0001", "documents")
///         .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
/// };
/// testing::conformance(migration, "id", async |db| {
///     testing::documents_table(db, "documents", 100, 8).await.unwrap();
/// })
/// .await;
/// # }
/// ```
#[expect(
    clippy::future_not_send,
    reason = "a test awaits it on its own runtime; the setup closure need not be Sync"
)]
// Long on purpose: one scenario told in order (set up, run, check, run again, check again);
// split, the order a reader follows would be lost.
pub async fn conformance<M, F>(migration: impl Fn() -> M, key: &str, setup: F)
where
    M: crate::Migration + 'static,
    F: AsyncFn(&Connection),
{
    let (db, m, table) = fresh(&migration, &setup).await;
    let before = Snapshot::take(&table, key).await.expect("snapshot before");
    let migrator = crate::Migrator::new(db.clone()).add(m);
    let declared = declared_columns(&migrator).await;
    let report = migrator
        .run()
        .await
        .unwrap_or_else(|e| panic!("the migration fails: {e:?}"));
    assert_eq!(report.applied().count(), 1, "the migration is applied");
    let after = Snapshot::take(&table, key).await.expect("snapshot after");
    if declared.is_empty() {
        let again = applied_on_a_fresh_table(&migration, key, &setup).await;
        let all = column_names(&after);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        after.assert_same_columns(&again, &all);
    } else {
        let untouched: Vec<&str> = unchanged_columns(&before, &after)
            .into_iter()
            .filter(|c| !declared.iter().any(|d| d == c))
            .collect();
        after.assert_same_columns(&before, &untouched);
    }
    let version = crate::lance::latest_version(&table).await.expect("version");
    let again = migrator
        .run()
        .await
        .unwrap_or_else(|e| panic!("the second run fails: {e:?}"));
    assert!(again.is_noop(), "a second run applies nothing");
    let version_again = crate::lance::latest_version(&table).await.expect("version");
    assert_eq!(
        version_again, version,
        "a second run creates no table version"
    );

    let (db, m, table) = fresh(&migration, &setup).await;
    let before = Snapshot::take(&table, key).await.expect("snapshot before");
    let failing = crate::Migrator::new(db.clone()).add(FailVerify { inner: m });
    let err = failing
        .run()
        .await
        .expect_err("verification was made to fail");
    assert!(
        matches!(
            &err,
            crate::Error::MigrationFailed {
                phase: crate::Phase::Verify,
                ..
            }
        ),
        "the run fails in verify: {err:?}"
    );
    let restored = Snapshot::take(&table, key)
        .await
        .expect("snapshot after rollback");
    assert_eq!(
        restored.schema(),
        before.schema(),
        "rollback restores the schema"
    );
    let all = column_names(&before);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    restored.assert_same_columns(&before, &all);
}

/// The columns the migration's plan says it touches.
async fn declared_columns(migrator: &crate::Migrator) -> Vec<String> {
    let plan = migrator
        .plan()
        .await
        .unwrap_or_else(|e| panic!("the migration cannot be planned: {e:?}"));
    plan.steps()
        .iter()
        .filter_map(|s| s.work.as_ref())
        .flat_map(|w| w.columns.clone())
        .collect()
}

/// The table as the migration leaves it on a second, fresh database.
#[expect(
    clippy::future_not_send,
    reason = "awaited by `conformance` only; the setup closure need not be Sync"
)]
async fn applied_on_a_fresh_table<M, F>(
    migration: &impl Fn() -> M,
    key: &str,
    setup: &F,
) -> Snapshot
where
    M: crate::Migration + 'static,
    F: AsyncFn(&Connection),
{
    let (db, m, table) = fresh(migration, setup).await;
    crate::Migrator::new(db)
        .add(m)
        .run()
        .await
        .unwrap_or_else(|e| panic!("the migration fails on a second fresh table: {e:?}"));
    Snapshot::take(&table, key)
        .await
        .expect("snapshot after the second run")
}

fn column_names(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// A fresh in-memory database set up by `setup`, a new migration, and the
/// table it migrates.
#[expect(
    clippy::future_not_send,
    reason = "awaited by `conformance` only; the setup closure need not be Sync"
)]
async fn fresh<M, F>(migration: &impl Fn() -> M, setup: &F) -> (Connection, M, Table)
where
    M: crate::Migration + 'static,
    F: AsyncFn(&Connection),
{
    let db = memory_db().await.expect("in-memory database");
    setup(&db).await;
    let m = migration();
    let name = m.table().to_owned();
    let table = db
        .open_table(&name)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("setup must create table `{name}`: {e}"));
    (db, m, table)
}

/// Columns present with the same type in both snapshots.
fn unchanged_columns<'a>(before: &'a Snapshot, after: &Snapshot) -> Vec<&'a str> {
    before
        .batch()
        .schema_ref()
        .fields()
        .iter()
        .filter(|f| {
            after
                .schema()
                .field_with_name(f.name())
                .is_ok_and(|g| g.data_type() == f.data_type())
        })
        .map(|f| f.name().as_str())
        .collect()
}

/// Runs a migration and then fails its verification, to exercise rollback.
#[derive(Debug)]
struct FailVerify<M> {
    inner: M,
}

crate::migration::forward_migration! {
    impl[M: crate::Migration] FailVerify<M> => inner;
    forward [id, table, definition, checksum, previous_checksums, creates, expected_schema, plan, resumable, blocks_serving, backup, transform, rebuild];
    {
        async fn verify(&self, ctx: &crate::MigrationContext) -> Result<()> {
            self.inner.verify(ctx).await?;
            Err(Error::Verification {
                table: ctx.table_name().to_owned(),
                reason: "failed on purpose by `testing::conformance`, to check the rollback".to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::{TestEmbedding, documents_schema};
    use crate::{Migration, ReEmbed, TableInfo};

    /// The failing wrapper is the wrapped migration in everything but its
    /// verify: a resumable migration stays resumable, its checksum and plan
    /// are its own.
    #[test]
    fn the_failing_wrapper_forwards_every_method_but_verify() {
        let inner = ReEmbed::new("0002", "docs", Arc::new(TestEmbedding::new("m", 16)));
        let wrapped = FailVerify {
            inner: inner.clone(),
        };
        assert_eq!(wrapped.id(), inner.id());
        assert_eq!(wrapped.table(), inner.table());
        assert_eq!(wrapped.definition(), inner.definition());
        assert_eq!(wrapped.checksum(), inner.checksum());
        assert!(inner.resumable());
        assert_eq!(wrapped.resumable(), inner.resumable());
        let before = documents_schema(8);
        assert_eq!(
            wrapped.expected_schema(&before).unwrap(),
            inner.expected_schema(&before).unwrap()
        );
        let info = TableInfo {
            name: "docs".to_owned(),
            rows: 10,
            schema: before.as_ref().clone(),
            indexes: Vec::new(),
        };
        assert_eq!(wrapped.plan(&info).unwrap(), inner.plan(&info).unwrap());
    }
}
