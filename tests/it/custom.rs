//! Migrations implemented here as a downstream crate would, run through
//! `Box<dyn Migration>`: success, failure in each phase with rollback, and a
//! crash mid-transform.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_schema::{DataType, Schema};
use lancedb::table::NewColumnTransform;
use lancedb_migrate::async_trait;
use lancedb_migrate::testing::{self, Snapshot};
use lancedb_migrate::{
    AddColumns, Error, LedgerStatus, Migration, MigrationContext, Migrator, NewColumn, Phase,
    Result, Rollback,
};

use crate::support::{add_word_count, failure, tags, version, with_word_count};

/// Adds `word_count` computed from `text` by SQL, optionally failing in a
/// chosen phase (after the transform has committed).
#[derive(Debug)]
struct WordCount {
    fail_in: Option<Phase>,
    hang_in_transform: bool,
}

impl WordCount {
    fn ok() -> Self {
        Self {
            fail_in: None,
            hang_in_transform: false,
        }
    }

    fn failing_in(phase: Phase) -> Self {
        Self {
            fail_in: Some(phase),
            hang_in_transform: false,
        }
    }

    fn fail(&self, phase: Phase) -> Result<()> {
        if self.fail_in == Some(phase) {
            return Err(Error::custom(format!("injected failure in {phase}")));
        }
        Ok(())
    }
}

#[async_trait]
impl Migration for WordCount {
    fn id(&self) -> &str {
        "0002_word_count"
    }

    fn table(&self) -> &str {
        "documents"
    }

    fn definition(&self) -> String {
        "word_count = length(text)".to_owned()
    }

    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        Ok(with_word_count(before))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        add_word_count(ctx.table()).await?;
        ctx.progress().start(Some(ctx.rows_before()));
        ctx.progress().advance(ctx.rows_before());
        if self.hang_in_transform {
            // The process "dies" here: the test drops the run.
            std::future::pending::<()>().await;
        }
        self.fail(Phase::Transform)
    }

    async fn rebuild(&self, _ctx: &MigrationContext) -> Result<()> {
        self.fail(Phase::Rebuild)
    }

    async fn verify(&self, ctx: &MigrationContext) -> Result<()> {
        ctx.check_row_count().await?;
        ctx.check_schema(&self.expected_schema(ctx.schema_before())?)
            .await?;
        self.fail(Phase::Verify)
    }
}

fn first() -> AddColumns {
    AddColumns::new("0001_category", "documents")
        .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
}

#[tokio::test]
async fn boxed_custom_migration_applies() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 40, 4)
        .await
        .unwrap();
    let boxed: Box<dyn Migration> = Box::new(WordCount::ok());
    let migrator = Migrator::new(db).add(first()).add(boxed);
    let report = migrator.run().await.unwrap();

    let ids: Vec<_> = report.applied().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["0001_category", "0002_word_count"]);
    let s = Snapshot::take(&table, "id").await.unwrap();
    let counts = s.column("word_count");
    let texts = s.column("text");
    use arrow_array::cast::AsArray;
    for i in 0..40 {
        let text = texts.as_string::<i32>().value(i);
        let n = counts
            .as_primitive::<arrow_array::types::Int32Type>()
            .value(i);
        assert_eq!(n as usize, text.chars().count());
    }
    let second = &report.migrations()[1];
    for phase in [
        Phase::Prepare,
        Phase::Backup,
        Phase::Transform,
        Phase::Rebuild,
        Phase::Verify,
    ] {
        assert!(second.phase(phase).is_some(), "{phase} timed");
    }
    assert!(migrator.run().await.unwrap().is_noop());
}

/// A failure in transform, rebuild or verify restores the table to its
/// version before the migration and records the failure.
#[tokio::test]
async fn failure_in_each_phase_rolls_back() {
    for phase in [Phase::Transform, Phase::Rebuild, Phase::Verify] {
        let db = testing::memory_db().await.unwrap();
        let table = testing::documents_table(&db, "documents", 30, 4)
            .await
            .unwrap();
        let migrator = Migrator::new(db.clone())
            .add(first())
            .add(WordCount::failing_in(phase));
        let err = migrator.run().await.unwrap_err();

        let (cause, failed_in, rollback) = failure(&err);
        assert_eq!(failed_in, phase);
        assert!(cause.to_string().contains("injected failure"), "{cause}");
        let after_first = err.report().unwrap().migrations()[0].version_after.unwrap();
        assert_eq!(
            rollback,
            &Rollback::Restored {
                version: after_first,
                reappended: 0
            }
        );
        assert!(
            err.to_string().contains("0002_word_count") && err.to_string().contains(phase.as_str())
        );

        // The report carries what completed: the first migration.
        let report = err.report().unwrap();
        assert_eq!(
            report.applied().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["0001_category"]
        );

        // The table is back to its state after the first migration.
        let s = Snapshot::take(&table, "id").await.unwrap();
        assert_eq!(s.num_rows(), 30);
        assert!(
            s.schema().field_with_name("word_count").is_err(),
            "{phase}: column rolled back"
        );
        assert!(s.schema().field_with_name("category").is_ok());

        let ledger = migrator.ledger().await.unwrap();
        assert_eq!(ledger.len(), 2);
        assert_eq!(ledger[0].status, LedgerStatus::Applied);
        assert_eq!(ledger[1].status, LedgerStatus::Failed);
        let error = ledger[1].error.as_deref().unwrap();
        assert!(
            error.starts_with(phase.as_str()) && error.contains("injected failure"),
            "{error}"
        );
        assert!(
            tags(&table).await.values().any(|v| *v == after_first),
            "backup tag kept"
        );

        // A fixed migration with the same id runs on the next start.
        let fixed = Migrator::new(db.clone()).add(first()).add(WordCount::ok());
        let report = fixed.run().await.unwrap();
        assert_eq!(
            report.applied().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["0002_word_count"]
        );
        assert_eq!(
            fixed.ledger().await.unwrap()[1].status,
            LedgerStatus::Applied
        );
    }
}

/// The process dies after the transform committed: the ledger says
/// `running`. The next run restores the backup and applies it cleanly.
#[tokio::test]
async fn crash_mid_migration_is_recovered_on_next_run() {
    let tmp = testing::TempDb::new().await.unwrap();
    let table = testing::documents_table(tmp.db(), "documents", 25, 4)
        .await
        .unwrap();
    let before = Snapshot::take(&table, "id").await.unwrap();
    let v0 = version(&table).await;

    let db = tmp.connect().await.unwrap();
    let crashing = WordCount {
        fail_in: None,
        hang_in_transform: true,
    };
    // A process that dies mid-transform: its run is dropped there (a panic
    // would be caught and rolled back, which is not a crash).
    let run = Migrator::new(db)
        .lease_ttl(std::time::Duration::from_millis(500))
        .add(crashing);
    let crashed = tokio::time::timeout(std::time::Duration::from_secs(3), run.run()).await;
    assert!(crashed.is_err(), "the run should still be in its transform");

    let half_done = Snapshot::take(&table, "id").await.unwrap();
    assert!(
        half_done.schema().field_with_name("word_count").is_ok(),
        "the crash left a half-migrated table"
    );
    let migrator = Migrator::new(tmp.connect().await.unwrap())
        .lease_ttl(std::time::Duration::from_millis(500))
        .add(WordCount::ok());
    assert_eq!(
        migrator.ledger().await.unwrap()[0].status,
        LedgerStatus::Running
    );

    let report = migrator.run().await.unwrap();
    assert_eq!(report.applied().count(), 1);
    let entry = &migrator.ledger().await.unwrap()[0];
    assert_eq!(entry.status, LedgerStatus::Applied);
    assert!(
        entry.version_before > v0,
        "re-run started from the restored version"
    );
    let after = Snapshot::take(&table, "id").await.unwrap();
    after.assert_same_columns(&before, &["id", "text", "vector"]);
    assert_eq!(
        after.schema().fields().len(),
        4,
        "one word_count column, not two"
    );
}

/// Panicking hooks aside, hooks observe their context.
#[tokio::test]
async fn context_reports_state_before() {
    #[derive(Debug)]
    struct Inspect(AtomicBool);

    #[async_trait]
    impl Migration for Inspect {
        fn id(&self) -> &str {
            "inspect"
        }
        fn table(&self) -> &str {
            "documents"
        }
        async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
            assert_eq!(ctx.rows_before(), 12);
            assert_eq!(ctx.migration_id(), "inspect");
            assert_eq!(ctx.table_name(), "documents");
            let backup = ctx.backup().expect("backup taken before transform");
            assert_eq!(backup.version(), ctx.version_before());
            assert_eq!(ctx.schema_before().fields().len(), 3);
            self.0.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    let db = testing::memory_db().await.unwrap();
    testing::documents_table(&db, "documents", 12, 4)
        .await
        .unwrap();
    let inspect = Arc::new(Inspect(AtomicBool::new(false)));
    Migrator::new(db)
        .add(Arc::clone(&inspect))
        .run()
        .await
        .unwrap();
    assert!(inspect.0.load(Ordering::SeqCst), "transform ran");
}

/// The default verify catches a migration that loses rows.
#[tokio::test]
async fn default_verify_catches_lost_rows() {
    #[derive(Debug)]
    struct DeletesRows;

    #[async_trait]
    impl Migration for DeletesRows {
        fn id(&self) -> &str {
            "0009_oops"
        }
        fn table(&self) -> &str {
            "documents"
        }
        async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
            ctx.table().delete("id < 5").await?;
            Ok(())
        }
    }

    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 20, 4)
        .await
        .unwrap();
    let err = Migrator::new(db).add(DeletesRows).run().await.unwrap_err();
    let (cause, phase, rollback) = failure(&err);
    assert_eq!(phase, Phase::Verify);
    assert!(matches!(rollback, Rollback::Restored { .. }));
    assert!(
        cause
            .to_string()
            .contains("row count changed from 20 to 15"),
        "{cause}"
    );
    assert_eq!(Snapshot::take(&table, "id").await.unwrap().num_rows(), 20);
}

/// The conformance check passes for the built-in and for a downstream
/// migration.
#[tokio::test]
async fn conformance_of_add_columns_and_a_custom_migration() {
    let setup = async |db: &lancedb::Connection| {
        testing::documents_table(db, "documents", 64, 8)
            .await
            .unwrap();
    };
    testing::conformance(first, "id", setup).await;
    testing::conformance(WordCount::ok, "id", setup).await;
}

/// The conformance check fails for a migration whose rerun is not a no-op.
#[tokio::test]
#[should_panic(expected = "the migration fails")]
async fn conformance_catches_a_broken_migration() {
    #[derive(Debug)]
    struct Broken;

    #[async_trait]
    impl Migration for Broken {
        fn id(&self) -> &str {
            "broken"
        }
        fn table(&self) -> &str {
            "documents"
        }
        async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
            // Adds a column without declaring it in expected_schema.
            let sql = vec![("oops".to_owned(), "1".to_owned())];
            ctx.table()
                .add_columns()
                .transform(NewColumnTransform::SqlExpressions(sql))
                .execute()
                .await?;
            Ok(())
        }
    }
    testing::conformance(
        || Broken,
        "id",
        async |db: &lancedb::Connection| {
            testing::documents_table(db, "documents", 8, 4)
                .await
                .unwrap();
        },
    )
    .await;
}

/// `text_length = length(text)` computed in Rust, with the context's own
/// tools: an all-NULL column added without a data write, then filled
/// fragment by fragment — what the built-ins use, open to a downstream
/// migration.
#[derive(Debug)]
struct TextLength;

#[async_trait]
impl Migration for TextLength {
    fn id(&self) -> &str {
        "0002_text_length"
    }

    fn table(&self) -> &str {
        "documents"
    }

    fn resumable(&self) -> bool {
        true
    }

    fn expected_schema(&self, before: &Schema) -> Result<Schema> {
        let mut fields = before.fields().to_vec();
        fields.push(Arc::new(arrow_schema::Field::new(
            "text_length",
            DataType::Int32,
            true,
        )));
        Ok(Schema::new_with_metadata(fields, before.metadata().clone()))
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        if ctx
            .current_schema()
            .await?
            .field_with_name("text_length")
            .is_err()
        {
            let column = arrow_schema::Field::new("text_length", DataType::Int32, true);
            ctx.add_null_columns(&Schema::new(vec![column])).await?;
        }
        let filled = ctx
            .fill_column("text_length", "text", 64, |texts| {
                use arrow_array::cast::AsArray;
                let lengths: arrow_array::Int32Array = texts
                    .as_string::<i32>()
                    .iter()
                    .map(|t| t.map(|t| t.len() as i32))
                    .collect();
                Ok(Arc::new(lengths))
            })
            .await?;
        ctx.record_detail("filled", filled.to_string());
        Ok(())
    }
}

#[tokio::test]
async fn a_downstream_migration_adds_and_fills_a_column_with_the_contexts_tools() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int32Type;
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 150, 8)
        .await
        .unwrap();
    // Rows the application appended a few at a time.
    for i in 0..10 {
        let from = 150 + i * 3;
        table
            .add(testing::documents_batch(from..from + 3, 8))
            .execute()
            .await
            .unwrap();
    }
    let report = Migrator::new(db.clone())
        .add(TextLength)
        .run()
        .await
        .unwrap();
    let applied = report.applied().next().expect("applied");
    assert_eq!(applied.details["filled"], "180");
    let batches = crate::support::rows(&table, &["text", "text_length"]).await;
    let mut rows = 0;
    for batch in &batches {
        let texts = batch.column(0).as_string::<i32>();
        let lengths = batch.column(1).as_primitive::<Int32Type>();
        for i in 0..batch.num_rows() {
            assert_eq!(lengths.value(i) as usize, texts.value(i).len());
            rows += 1;
        }
    }
    assert_eq!(rows, 180);
}
