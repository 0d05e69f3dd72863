//! The migrator's bookkeeping: ledger rows, drift, duplicate ids, events,
//! and the ledger's own guards.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema};
use lancedb_migrate::testing::{self, EventLog};
use lancedb_migrate::{
    AddColumns, DEFAULT_LEDGER_TABLE, Error, Event, LedgerStatus, Migrator, NewColumn, Phase,
};

use crate::support::{tags, version};

fn category(default: &str) -> AddColumns {
    AddColumns::new("0001_category", "documents")
        .column(NewColumn::new("category", DataType::Utf8).default_value(default))
}

fn active() -> AddColumns {
    AddColumns::new("0002_active", "documents")
        .column(NewColumn::new("is_active", DataType::Boolean).default_value(true))
}

#[tokio::test]
async fn ledger_records_each_migration() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 64, 8)
        .await
        .unwrap();
    let v0 = version(&table).await;
    let migrator = Migrator::new(db.clone())
        .add(category("general"))
        .add(active());
    let report = migrator.run().await.unwrap();

    let ledger = migrator.ledger().await.unwrap();
    assert_eq!(ledger.len(), 2);
    let (a, b) = (&ledger[0], &ledger[1]);
    assert_eq!(
        (a.id.as_str(), a.seq, a.table.as_str()),
        ("0001_category", 0, "documents")
    );
    assert_eq!((b.id.as_str(), b.seq), ("0002_active", 1));
    assert!(
        ledger
            .iter()
            .all(|e| e.status == LedgerStatus::Applied && e.error.is_none())
    );
    assert_eq!(a.version_before, v0);
    assert_eq!(
        b.version_before,
        a.version_after.unwrap(),
        "second starts where first ended"
    );
    assert_eq!(b.version_after, Some(version(&table).await));
    assert!(
        ledger
            .iter()
            .all(|e| e.rows_before == 64 && e.rows_after == Some(64))
    );
    assert_eq!(a.checksum.len(), 64, "hex sha-256");
    assert_ne!(a.checksum, b.checksum);
    assert!(a.duration().is_some() && a.finished_at.unwrap() >= a.started_at);

    // The backup tags point at each migration's starting version.
    let tags = tags(&table).await;
    assert_eq!(
        tags.get(a.backup_tag.as_deref().unwrap()),
        Some(&a.version_before)
    );
    assert_eq!(
        tags.get(b.backup_tag.as_deref().unwrap()),
        Some(&b.version_before)
    );

    // The report agrees with the ledger.
    let applied: Vec<_> = report.applied().collect();
    assert_eq!(applied[1].version_after, b.version_after);
    assert_eq!(
        applied[0].backup.as_ref().unwrap().tag(),
        a.backup_tag.as_deref().unwrap()
    );
    let text = report.to_string();
    assert!(
        text.contains("0001_category on `documents`: applied"),
        "{text}"
    );
}

#[tokio::test]
async fn noop_run_writes_nothing() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    let migrator = Migrator::new(db.clone())
        .add(category("general"))
        .add(active());
    migrator.run().await.unwrap();
    let ledger_table = db.open_table(DEFAULT_LEDGER_TABLE).execute().await.unwrap();
    let (table_v, ledger_v) = (version(&table).await, version(&ledger_table).await);

    for _ in 0..3 {
        let report = migrator.run().await.unwrap();
        assert!(report.is_noop());
        assert_eq!(report.skipped().count(), 2);
    }
    assert_eq!(version(&table).await, table_v);
    assert_eq!(
        version(&ledger_table).await,
        ledger_v,
        "the ledger is only read"
    );
}

#[tokio::test]
async fn adding_a_migration_later_runs_only_the_new_one() {
    let db = testing::memory_db().await.unwrap();
    testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    Migrator::new(db.clone())
        .add(category("general"))
        .run()
        .await
        .unwrap();
    let report = Migrator::new(db)
        .add(category("general"))
        .add(active())
        .run()
        .await
        .unwrap();
    assert_eq!(
        report.skipped().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["0001_category"]
    );
    assert_eq!(
        report.applied().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["0002_active"]
    );
}

#[tokio::test]
async fn edited_migration_is_drift() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    Migrator::new(db.clone())
        .add(category("general"))
        .run()
        .await
        .unwrap();
    let v = version(&table).await;

    let edited = Migrator::new(db.clone())
        .add(category("misc"))
        .add(active());
    let err = edited.run().await.unwrap_err();
    let Error::Drift {
        migration,
        applied,
        current,
        ..
    } = &err
    else {
        panic!("expected drift, got {err:?}");
    };
    assert_eq!(migration, "0001_category");
    assert_ne!(applied, current);
    assert_eq!(
        version(&table).await,
        v,
        "nothing ran, not even the new migration"
    );
    assert_eq!(edited.ledger().await.unwrap().len(), 1);
}

#[tokio::test]
async fn duplicate_ids_are_refused_before_anything_runs() {
    let db = testing::memory_db().await.unwrap();
    let table = testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    let v = version(&table).await;
    let dup = AddColumns::new("0001_category", "documents")
        .column(NewColumn::new("other", DataType::Utf8));
    let err = Migrator::new(db.clone())
        .add(category("general"))
        .add(dup)
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateId { migration } if migration == "0001_category"),
        "{err:?}"
    );
    assert_eq!(version(&table).await, v);
    let names = db.table_names().execute().await.unwrap();
    assert!(
        !names.contains(&DEFAULT_LEDGER_TABLE.to_owned()),
        "no ledger created"
    );
}

#[tokio::test]
async fn empty_id_is_invalid() {
    let db = testing::memory_db().await.unwrap();
    let err = Migrator::new(db)
        .add(AddColumns::new(" ", "documents").column(NewColumn::new("c", DataType::Utf8)))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMigration { .. }), "{err:?}");
}

/// A failure's event carries the run's own typed error (the same value as
/// the returned error's source), not its text.
#[tokio::test]
async fn a_failure_event_carries_the_typed_error() {
    let db = testing::memory_db().await.unwrap();
    testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    let log = EventLog::default();
    let err = Migrator::new(db)
        .add(
            AddColumns::new("0001_bad", "documents").column(NewColumn::new("text", DataType::Utf8)),
        )
        .on_event(log.observer())
        .run()
        .await
        .unwrap_err();
    let Error::MigrationFailed { source, .. } = &err else {
        panic!("{err:?}")
    };
    let failed: Vec<_> = log
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::MigrationFailed {
                migration, error, ..
            } => Some((migration, error)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "one failure event");
    let (migration, error) = &failed[0];
    assert_eq!(migration, "0001_bad");
    assert!(
        matches!(**error, Error::ColumnExists { ref column, .. } if column == "text"),
        "{error:?}"
    );
    assert!(Arc::ptr_eq(error, source), "the same error, shared");
}

#[tokio::test]
async fn events_trace_the_run() {
    let db = testing::memory_db().await.unwrap();
    testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    let log = EventLog::default();
    let migrator = Migrator::new(db)
        .add(category("general"))
        .on_event(log.observer());
    migrator.run().await.unwrap();
    migrator.run().await.unwrap();

    let events = log.events();
    let phases: Vec<Phase> = events
        .iter()
        .filter_map(|e| match e {
            Event::PhaseFinished { phase, .. } => Some(*phase),
            _ => None,
        })
        .collect();
    assert_eq!(
        phases,
        [
            Phase::Prepare,
            Phase::Backup,
            Phase::Transform,
            Phase::Rebuild,
            Phase::Verify
        ]
    );
    // The first run takes the lease, migrates, releases it; the second
    // finds everything applied and takes no lease.
    assert!(matches!(events.first(), Some(Event::LeaseAcquired { .. })));
    assert!(
        matches!(&events[1], Event::MigrationStarted { migration, .. } if migration == "0001_category")
    );
    let applied = events
        .iter()
        .position(|e| matches!(e, Event::MigrationApplied { .. }))
        .unwrap();
    assert!(matches!(events[applied + 1], Event::LeaseReleased { .. }));
    assert!(
        matches!(events[applied + 2..], [Event::MigrationSkipped { .. }]),
        "second run skips, with no lease: {:?}",
        &events[applied + 2..]
    );
}

#[tokio::test]
async fn separate_ledgers_are_independent() {
    let db = testing::memory_db().await.unwrap();
    testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    Migrator::new(db.clone())
        .ledger_table("ledger_a")
        .add(category("general"))
        .run()
        .await
        .unwrap();
    let err = Migrator::new(db.clone())
        .ledger_table("ledger_b")
        .add(category("general"))
        .run()
        .await;
    // Ledger b does not know the column was added: the migration is refused
    // as bad input rather than applied twice.
    let err = err.unwrap_err();
    assert!(
        matches!(
            err,
            Error::MigrationFailed {
                phase: Phase::Prepare,
                ..
            }
        ),
        "{err:?}"
    );
}

async fn ledger_with(db: &lancedb::Connection, metadata: HashMap<String, String>) {
    let schema = Arc::new(Schema::new_with_metadata(
        vec![Field::new("id", DataType::Utf8, false)],
        metadata,
    ));
    db.create_table(DEFAULT_LEDGER_TABLE, RecordBatch::new_empty(schema))
        .execute()
        .await
        .unwrap();
}

#[tokio::test]
async fn ledger_from_a_newer_version_is_refused() {
    let db = testing::memory_db().await.unwrap();
    testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    ledger_with(
        &db,
        [("lancedb_migrate.ledger_format".to_owned(), "99".to_owned())].into(),
    )
    .await;
    let err = Migrator::new(db)
        .add(category("general"))
        .run()
        .await
        .unwrap_err();
    let Error::NewerFormat {
        ledger,
        what: "ledger",
        found: 99,
        known: 2,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(ledger, DEFAULT_LEDGER_TABLE);
    assert!(err.to_string().contains("newer lancedb-migrate"), "{err}");
}

#[tokio::test]
async fn table_that_is_not_a_ledger_is_refused() {
    let db = testing::memory_db().await.unwrap();
    ledger_with(&db, HashMap::new()).await;
    let err = Migrator::new(db).run().await.unwrap_err();
    assert!(matches!(err, Error::Ledger { .. }), "{err:?}");
}

#[test]
fn futures_and_errors_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Error>();
    assert_send_sync::<Migrator>();
    assert_send_sync::<lancedb_migrate::MigrationHandle>();
    assert_send_sync::<lancedb_migrate::StopSignal>();
    assert_send_sync::<lancedb_migrate::RunState>();
    assert_send_sync::<lancedb_migrate::Report>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = testing::memory_db().await.unwrap();
        let migrator = Migrator::new(db);
        let run = migrator.run();
        assert_send(&run);
        run.await.unwrap();
        let handle = migrator.start();
        let ready = handle.ready();
        assert_send(&ready);
        ready.await.unwrap();
        let waited = handle.stop_and_wait();
        assert_send(&waited);
        waited.await.unwrap();
    });
}

/// Every ledger write adds a fragment; runs compact the ledger so that it
/// stays small however many migrations an application accumulates.
#[tokio::test]
async fn ledger_stays_compact_over_many_runs() {
    #[derive(Debug)]
    struct Nothing(String);

    #[lancedb_migrate::async_trait]
    impl lancedb_migrate::Migration for Nothing {
        fn id(&self) -> &str {
            &self.0
        }
        fn table(&self) -> &str {
            "documents"
        }
        async fn transform(
            &self,
            _: &lancedb_migrate::MigrationContext,
        ) -> lancedb_migrate::Result<()> {
            Ok(())
        }
    }

    let db = testing::memory_db().await.unwrap();
    testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    let mut migrator = Migrator::new(db.clone());
    for i in 0..30 {
        migrator = migrator.add(Nothing(format!("{i:03}")));
        assert_eq!(migrator.run().await.unwrap().applied().count(), 1);
    }
    let ledger = db.open_table(DEFAULT_LEDGER_TABLE).execute().await.unwrap();
    let fragments = ledger.stats().await.unwrap().fragment_stats.num_fragments;
    assert!(
        fragments <= 18,
        "the ledger has {fragments} fragments after 60 writes"
    );
    let entries = migrator.ledger().await.unwrap();
    assert_eq!(entries.len(), 30);
    assert!(entries.iter().all(|e| e.status == LedgerStatus::Applied));
    assert!(migrator.run().await.unwrap().is_noop());
}

/// A migration's `applied` row is written by rewriting the ledger whole as
/// one fragment (the ledger's cheap path): one row per migration, one
/// fragment in all, nothing left behind.
#[tokio::test]
async fn finished_migrations_leave_the_ledger_one_fragment() {
    let db = testing::memory_db().await.unwrap();
    testing::documents_table(&db, "documents", 10, 4)
        .await
        .unwrap();
    let add = |id: &str, column: &str| {
        AddColumns::new(id, "documents").column(NewColumn::new(column, DataType::Utf8))
    };
    let migrator = Migrator::new(db.clone())
        .add(add("0001", "a"))
        .add(add("0002", "b"));
    migrator.run().await.unwrap();
    let ledger = db.open_table(DEFAULT_LEDGER_TABLE).execute().await.unwrap();
    let stats = ledger.stats().await.unwrap();
    assert_eq!(stats.fragment_stats.num_fragments, 1, "{stats:?}");
    assert_eq!(stats.num_rows, 2, "{stats:?}");
    let entries = migrator.ledger().await.unwrap();
    assert!(entries.iter().all(|e| e.status == LedgerStatus::Applied));
    assert!(entries.iter().all(|e| e.version_after.is_some()));
}
