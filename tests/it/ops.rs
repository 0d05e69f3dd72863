//! Operations: plan (dry run), status, rollback_to, baseline, repair, and
//! backup retention — each with the guard that keeps it from doing damage.

use std::sync::Arc;

use arrow_schema::DataType;
use lancedb::Table;
use lancedb::index::Index;
use lancedb::index::scalar::BTreeIndexBuilder;
use lancedb::index::vector::IvfPqIndexBuilder;
use lancedb_migrate::testing::{self, Snapshot, TempDb, TestEmbedding};
use lancedb_migrate::{
    AddColumns, Error, LaterWrites, LedgerStatus, Migration, MigrationContext, Migrator, NewColumn,
    PlanState, ReEmbed, RebuildIndex, Retention, Writes,
};

use crate::support::{field_names, tags, version};

fn category(id: &str) -> AddColumns {
    AddColumns::new(id, "docs")
        .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
}

fn flag(id: &str) -> AddColumns {
    AddColumns::new(id, "docs").column(NewColumn::new("flag", DataType::Boolean))
}

fn note(id: &str) -> AddColumns {
    AddColumns::new(id, "docs").column(NewColumn::new("note", DataType::Utf8).default_value("-"))
}

async fn docs(db: &lancedb::Connection, rows: usize) -> Table {
    testing::documents_table(db, "docs", rows, 16)
        .await
        .unwrap()
}

fn refused(err: &Error) -> &str {
    match err {
        Error::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn plan_shows_the_work_and_the_problems_without_changing_anything() {
    let tmp = TempDb::new().await.unwrap();
    let table = docs(tmp.db(), 300).await;
    let ivf = IvfPqIndexBuilder::default()
        .num_partitions(2)
        .num_sub_vectors(4);
    table
        .create_index(&["vector"], Index::IvfPq(ivf))
        .name("vec_idx".to_owned())
        .execute()
        .await
        .unwrap();
    let version_before = version(&table).await;
    let model = Arc::new(TestEmbedding::new("new-32", 32));
    let migrator = || {
        Migrator::new(tmp.db().clone())
            .add(category("0001_category"))
            .add(flag("0002_flag"))
            .add(ReEmbed::new("0003_reembed", "docs", model.clone()))
            .add(RebuildIndex::new(
                "0004_id_index",
                "docs",
                "id",
                Index::BTree(BTreeIndexBuilder::default()),
            ))
            // Adds `category` again: the run would refuse it.
            .add(category("0005_category_again"))
            .add(
                AddColumns::new("0006_other", "missing_table")
                    .column(NewColumn::new("x", DataType::Utf8)),
            )
    };

    let plan = migrator().plan().await.unwrap();
    let states: Vec<_> = plan.steps().iter().map(|s| s.state.clone()).collect();
    assert_eq!(&states[..4], &[const { PlanState::Pending }; 4]);
    match &states[4] {
        PlanState::WouldFail { reason } => {
            assert!(reason.contains("`category` already exists"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    match &states[5] {
        PlanState::WouldFail { reason } => assert!(reason.contains("missing_table"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(plan.has_problems());
    let work = |i: usize| plan.steps()[i].work.clone().unwrap();
    assert_eq!(work(0).writes, Writes::Columns { rows: 300 });
    assert_eq!(work(0).columns, ["category"]);
    assert_eq!(work(1).writes, Writes::MetadataOnly);
    assert_eq!(work(2).writes, Writes::Columns { rows: 300 });
    assert_eq!(work(2).columns, ["vector"]);
    assert_eq!(
        work(2).indexes,
        ["vec_idx"],
        "re-embedding rebuilds the vector index"
    );
    assert!(work(2).summary.contains("new-32"), "{}", work(2).summary);
    assert_eq!(work(3).writes, Writes::Index { rows: 300 });
    assert_eq!(work(3).indexes, ["id_idx"]);
    assert!(plan.steps()[4].work.is_none());
    let text = plan.to_string();
    assert!(text.contains("0002_flag on `docs`: pending"), "{text}");
    assert!(text.contains("metadata only"), "{text}");

    // Nothing changed: no ledger, same table version.
    let names = tmp.db().table_names().execute().await.unwrap();
    assert_eq!(names, ["docs"]);
    assert_eq!(version(&table).await, version_before);

    // After the first two ran, the plan says so; an edit shows as drift.
    Migrator::new(tmp.db().clone())
        .add(category("0001_category"))
        .add(flag("0002_flag"))
        .run()
        .await
        .unwrap();
    let edited = Migrator::new(tmp.db().clone())
        .add(category("0001_category"))
        .add(AddColumns::new("0002_flag", "docs").column(NewColumn::new("flag", DataType::Int32)));
    let plan = edited.plan().await.unwrap();
    assert_eq!(plan.steps()[0].state, PlanState::Applied);
    assert!(matches!(plan.steps()[1].state, PlanState::Drifted { .. }));
    assert_eq!(plan.pending().count(), 0);
}

#[tokio::test]
async fn status_lists_the_ledger_and_flags_unknown_migrations() {
    let db = testing::memory_db().await.unwrap();
    docs(&db, 20).await;
    let empty = Migrator::new(db.clone()).status().await.unwrap();
    assert!(empty.to_string().contains("ledger is empty"));
    Migrator::new(db.clone())
        .add(category("0001_category"))
        .add(flag("0002_flag"))
        .run()
        .await
        .unwrap();

    let status = Migrator::new(db.clone())
        .add(category("0001_category"))
        .status()
        .await
        .unwrap();
    assert_eq!(status.entries().len(), 2);
    assert_eq!(status.unknown().collect::<Vec<_>>(), ["0002_flag"]);
    let text = status.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("id "), "{text}");
    assert!(
        lines[1].starts_with("0001_category") && lines[1].contains("applied"),
        "{text}"
    );
    assert!(lines[2].contains("applied (unknown)"), "{text}");
    assert!(
        lines[1].contains("lancedb-migrate_0001_category_v"),
        "{text}"
    );
}

#[tokio::test]
async fn rollback_to_undoes_a_migration_and_the_later_ones_on_its_table() {
    let db = testing::memory_db().await.unwrap();
    let table = docs(&db, 50).await;
    testing::documents_table(&db, "other", 10, 16)
        .await
        .unwrap();
    let before = Snapshot::take(&table, "id").await.unwrap();
    let on_other =
        AddColumns::new("0003_other", "other").column(NewColumn::new("x", DataType::Utf8));
    let migrator = || {
        Migrator::new(db.clone())
            .add(category("0001_category"))
            .add(flag("0002_flag"))
            .add(AddColumns::new("0003_other", "other").column(NewColumn::new("x", DataType::Utf8)))
            .add(note("0004_note"))
    };
    migrator().run().await.unwrap();
    let _ = on_other;

    let undone = migrator()
        .rollback_to("0002_flag", LaterWrites::Refuse)
        .await
        .unwrap();
    let ids: Vec<_> = undone.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["0002_flag", "0004_note"]);
    let table = db.open_table("docs").execute().await.unwrap();
    let schema = table.schema().await.unwrap();
    assert_eq!(field_names(&schema), ["id", "text", "vector", "category"]);
    let after = Snapshot::take(&table, "id").await.unwrap();
    before.assert_same_columns(&after, &["id", "text", "vector"]);
    let ledger = migrator().ledger().await.unwrap();
    let status = |id: &str| ledger.iter().find(|e| e.id == id).unwrap().status;
    assert_eq!(status("0001_category"), LedgerStatus::Applied);
    assert_eq!(status("0002_flag"), LedgerStatus::RolledBack);
    assert_eq!(
        status("0003_other"),
        LedgerStatus::Applied,
        "other tables are untouched"
    );
    assert_eq!(status("0004_note"), LedgerStatus::RolledBack);
    let other = db.open_table("other").execute().await.unwrap();
    assert!(other.schema().await.unwrap().field_with_name("x").is_ok());

    // The plan and the next run apply them again.
    let plan = migrator().plan().await.unwrap();
    assert_eq!(plan.pending().count(), 2);
    let report = migrator().run().await.unwrap();
    let applied: Vec<_> = report.applied().map(|m| m.id.as_str()).collect();
    assert_eq!(applied, ["0002_flag", "0004_note"]);
    version(&table).await;
    let schema = table.schema().await.unwrap();
    assert_eq!(
        field_names(&schema),
        ["id", "text", "vector", "category", "flag", "note"]
    );

    // Refused: not applied, unknown.
    let err = migrator()
        .rollback_to("9999", LaterWrites::Refuse)
        .await
        .unwrap_err();
    assert!(refused(&err).contains("not in the ledger"));
}

#[tokio::test]
async fn rollback_to_refuses_to_lose_later_writes_unless_told() {
    let db = testing::memory_db().await.unwrap();
    let table = docs(&db, 50).await;
    let migrator = || Migrator::new(db.clone()).add(category("0001_category"));
    migrator().run().await.unwrap();
    // The application writes after the migration (with the new column).
    version(&table).await;
    let mut batch = testing::documents_batch(50..60, 16);
    let category: arrow_array::ArrayRef =
        Arc::new(arrow_array::StringArray::from(vec!["news"; 10]));
    batch = arrow_array::RecordBatch::try_new(
        Arc::new(arrow_schema::Schema::new(
            table.schema().await.unwrap().fields().to_vec(),
        )),
        [batch.columns().to_vec(), vec![category]].concat(),
    )
    .unwrap();
    table.add(batch).execute().await.unwrap();
    let version_now = version(&table).await;

    let err = migrator()
        .rollback_to("0001_category", LaterWrites::Refuse)
        .await
        .unwrap_err();
    assert!(refused(&err).contains("would be lost"), "{err}");
    assert_eq!(version(&table).await, version_now, "nothing changed");
    assert_eq!(table.count_rows(None).await.unwrap(), 60);
    let ledger = migrator().ledger().await.unwrap();
    assert_eq!(ledger[0].status, LedgerStatus::Applied);

    migrator()
        .rollback_to("0001_category", LaterWrites::Discard)
        .await
        .unwrap();
    version(&table).await;
    assert_eq!(table.count_rows(None).await.unwrap(), 50);
    assert!(
        table
            .schema()
            .await
            .unwrap()
            .field_with_name("category")
            .is_err()
    );
}

#[tokio::test]
async fn retention_prunes_old_backup_tags_and_rollback_then_refuses() {
    let db = testing::memory_db().await.unwrap();
    let table = docs(&db, 20).await;
    let migrator = || {
        Migrator::new(db.clone())
            .keep_backups(Retention::Last(1))
            .add(category("0001_category"))
            .add(flag("0002_flag"))
            .add(note("0003_note"))
    };
    migrator().run().await.unwrap();
    let kept: Vec<String> = tags(&table).await.into_keys().collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].contains("0003_note"), "{kept:?}");
    let ledger = migrator().ledger().await.unwrap();
    assert_eq!(ledger[0].backup_tag, None);
    assert!(ledger[0].details["backup_pruned"].contains("0001_category"));
    assert!(ledger[2].backup_tag.is_some());

    let err = migrator()
        .rollback_to("0001_category", LaterWrites::Refuse)
        .await
        .unwrap_err();
    assert!(refused(&err).contains("pruned"), "{err}");
    // The kept one still rolls back.
    migrator()
        .rollback_to("0003_note", LaterWrites::Refuse)
        .await
        .unwrap();
    assert!(
        table
            .schema()
            .await
            .unwrap()
            .field_with_name("note")
            .is_err()
    );

    // Last(0): no tag survives a verified migration.
    let db = testing::memory_db().await.unwrap();
    let table = docs(&db, 20).await;
    Migrator::new(db.clone())
        .keep_backups(Retention::Last(0))
        .add(category("0001_category"))
        .run()
        .await
        .unwrap();
    assert!(tags(&table).await.is_empty());
}

#[tokio::test]
async fn baseline_records_migrations_already_in_the_schema() {
    let db = testing::memory_db().await.unwrap();
    let table = docs(&db, 20).await;
    // Made by hand before the crate was adopted.
    crate::support::add_word_count(&table).await.unwrap();
    let by_hand = AddColumns::new("0001_word_count", "docs")
        .column(NewColumn::new("word_count", DataType::Int32));
    let migrator = || {
        Migrator::new(db.clone())
            .add(by_hand.clone())
            .add(flag("0002_flag"))
    };
    // Without a baseline, the run refuses the first migration.
    assert!(matches!(
        migrator().plan().await.unwrap().steps()[0].state,
        PlanState::WouldFail { .. }
    ));
    let err = migrator().baseline("nope").await.unwrap_err();
    assert!(refused(&err).contains("no migration with this id"));

    let rows = migrator().baseline("0001_word_count").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].details["baseline"], "true");
    let report = migrator().run().await.unwrap();
    let applied: Vec<_> = report.applied().map(|m| m.id.as_str()).collect();
    assert_eq!(applied, ["0002_flag"]);

    let err = migrator().baseline("0001_word_count").await.unwrap_err();
    assert!(refused(&err).contains("already in the ledger"), "{err}");
    let err = Migrator::new(db.clone())
        .add(AddColumns::new("0001", "missing").column(NewColumn::new("x", DataType::Utf8)))
        .baseline("0001")
        .await
        .unwrap_err();
    assert!(refused(&err).contains("missing"), "{err}");
    let cause = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<Error>());
    assert!(
        matches!(cause, Some(Error::TableNotFound { table }) if table == "missing"),
        "the refusal keeps why the table could not be opened: {err:?}"
    );
}

#[tokio::test]
async fn repair_accepts_a_drifted_definition_and_refuses_what_it_cannot_fix() {
    let db = testing::memory_db().await.unwrap();
    docs(&db, 20).await;
    Migrator::new(db.clone())
        .add(category("0001_category"))
        .run()
        .await
        .unwrap();
    // An edit after the fact. Repair accepts the new definition without
    // applying it: the extra column is never added (the documented risk of
    // repairing drift).
    let edited = || {
        Migrator::new(db.clone()).add(
            AddColumns::new("0001_category", "docs")
                .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
                .column(NewColumn::new("unused", DataType::Utf8)),
        )
    };
    let err = edited().run().await.unwrap_err();
    assert!(matches!(err, Error::Drift { .. }), "{err:?}");

    let entry = edited()
        .repair("0001_category", LaterWrites::Refuse)
        .await
        .unwrap();
    assert_eq!(entry.status, LedgerStatus::Applied);
    assert!(entry.details.contains_key("repaired_checksum"));
    assert!(edited().run().await.unwrap().is_noop());
    let table = db.open_table("docs").execute().await.unwrap();
    assert!(
        table
            .schema()
            .await
            .unwrap()
            .field_with_name("unused")
            .is_err()
    );

    let err = edited()
        .repair("0001_category", LaterWrites::Refuse)
        .await
        .unwrap_err();
    assert!(refused(&err).contains("nothing to repair"), "{err}");
}

/// Adds `word_count`, then fails its verification.
#[derive(Debug)]
struct FailsVerify;

#[lancedb_migrate::async_trait]
impl Migration for FailsVerify {
    fn id(&self) -> &str {
        "0001_fails"
    }
    fn table(&self) -> &str {
        "docs"
    }
    fn expected_schema(
        &self,
        before: &arrow_schema::Schema,
    ) -> lancedb_migrate::Result<arrow_schema::Schema> {
        Ok(crate::support::with_word_count(before))
    }
    async fn transform(&self, ctx: &MigrationContext) -> lancedb_migrate::Result<()> {
        crate::support::add_word_count(ctx.table()).await?;
        Ok(())
    }
    async fn verify(&self, _ctx: &MigrationContext) -> lancedb_migrate::Result<()> {
        Err(Error::custom("injected verification failure"))
    }
}

#[tokio::test]
async fn repair_restores_a_failed_attempt_only_when_nothing_was_written_since() {
    let db = testing::memory_db().await.unwrap();
    let table = docs(&db, 20).await;
    let migrator = || Migrator::new(db.clone()).add(FailsVerify);
    migrator().run().await.unwrap_err();
    let failed = migrator().ledger().await.unwrap().remove(0);
    assert_eq!(failed.status, LedgerStatus::Failed);
    let version_after_failure = version(&table).await;

    // Restores the backup again (what an operator does after a rollback
    // that itself failed); the migration stays failed, so the next run
    // retries it from the original table.
    let entry = migrator()
        .repair("0001_fails", LaterWrites::Refuse)
        .await
        .unwrap();
    assert_eq!(entry.status, LedgerStatus::Failed);
    assert!(version(&table).await > version_after_failure);
    assert!(
        table
            .schema()
            .await
            .unwrap()
            .field_with_name("word_count")
            .is_err()
    );
    assert_eq!(table.count_rows(None).await.unwrap(), 20);

    // The application writes; a repair would lose it, so it is refused.
    table
        .add(testing::documents_batch(20..25, 16))
        .execute()
        .await
        .unwrap();
    let err = migrator()
        .repair("0001_fails", LaterWrites::Refuse)
        .await
        .unwrap_err();
    assert!(refused(&err).contains("would be lost"), "{err}");
    assert_eq!(table.count_rows(None).await.unwrap(), 25);
}
