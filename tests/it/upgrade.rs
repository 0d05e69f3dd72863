//! Upgrades: ledgers written by earlier releases, committed under
//! `tests/fixtures/`, opened by this one.
//!
//! `tests/fixtures/ledger-0.1.0/` is a database that lancedb-migrate 0.1.0
//! (commit `d45fd13`) migrated with [`migrations_of_0_1`], written by
//! [`write_the_fixture`]. Every later release must open it, find no drift
//! for the same migrations, and apply new ones after them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{DataType, Field, TimeUnit};
use lancedb::index::Index;
use lancedb::index::vector::IvfFlatIndexBuilder;
use lancedb_migrate::testing::{self, TestEmbedding};
use lancedb_migrate::{
    AddColumns, DefaultValue, Migration, MigrationContext, Migrator, NewColumn, ReEmbed,
    RebuildIndex, Result, async_trait,
};

/// Rows of the fixture's `documents` table.
const ROWS: usize = 300;

/// A downstream migration as 0.1's docs showed it: a unit struct, its
/// definition the trait's default (its `Debug`).
#[derive(Debug)]
struct LowercaseCategory;

#[async_trait]
impl Migration for LowercaseCategory {
    fn id(&self) -> &str {
        "0004_lowercase_category"
    }

    fn table(&self) -> &str {
        "documents"
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        use lancedb_migrate::ResultExt;
        ctx.table()
            .update()
            .column("category", "lower(category)")
            .execute()
            .await
            .could_not("lower-case the categories")?;
        Ok(())
    }
}

/// The migrations the fixture was migrated with, as an application of 0.1
/// listed them: defaulted columns of many types, a re-embed 8 → 16
/// dimensions with a client configuration, an index rebuild and a custom
/// migration.
pub(crate) fn migrations_of_0_1() -> Vec<Box<dyn Migration>> {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let tags = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    vec![
        Box::new(
            AddColumns::new("0001_defaults", "documents")
                .column(NewColumn::new("category", DataType::Utf8).default_value("GENERAL"))
                .column(NewColumn::new("is_active", DataType::Boolean).default_value(true))
                .column(
                    NewColumn::new("created_at", utc).default_value(DefaultValue::MigrationTime),
                )
                .column(NewColumn::new("metadata", DataType::Utf8))
                .column(
                    NewColumn::new("score", DataType::Float64)
                        .default_value(0.5)
                        .not_null(),
                )
                .column(NewColumn::new("priority", DataType::Int32).default_value(3))
                .column(NewColumn::new("tags", tags))
                .column(
                    NewColumn::new("launch", DataType::Date32)
                        .default_value(DefaultValue::date(2024, 1, 31)),
                ),
        ),
        Box::new(
            ReEmbed::new(
                "0002_reembed",
                "documents",
                Arc::new(TestEmbedding::new("test-v2", 16)),
            )
            .client_embedding_config(r#"{"name": "test-v2", "model": {"dims": 16}}"#),
        ),
        Box::new(RebuildIndex::new(
            "0003_index",
            "documents",
            "vector",
            Index::IvfFlat(IvfFlatIndexBuilder::default().num_partitions(2)),
        )),
        Box::new(LowercaseCategory),
    ]
}

fn fixture_dir(release: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("ledger-{release}"))
}

/// Writes `tests/fixtures/ledger-<version>/`: the documents table, migrated
/// with [`migrations_of_0_1`] by this build. Run by hand, once per release
/// whose ledger later releases must read:
/// `scripts/cargo test --test it -- --ignored upgrade::write_the_fixture`.
#[tokio::test]
#[ignore = "writes a fixture; run by hand for a release"]
async fn write_the_fixture() {
    let dir = fixture_dir(env!("CARGO_PKG_VERSION"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = lancedb::connect(dir.to_str().unwrap())
        .execute()
        .await
        .unwrap();
    testing::documents_table(&db, "documents", ROWS, 8)
        .await
        .unwrap();
    let mut migrator = Migrator::new(db).lease_holder("replica-of-0.1");
    for m in migrations_of_0_1() {
        migrator = migrator.add(m);
    }
    let report = migrator.run().await.unwrap();
    assert_eq!(report.applied().count(), 4);
}

// ------------------------------------------------------------------ reading

use std::collections::HashMap;
use std::time::Duration;

use arrow_array::cast::AsArray;
use lancedb_migrate::{
    DEFAULT_LEDGER_TABLE, Divergence, Error, LedgerEntry, LedgerStatus, WhenLocked,
};

use crate::support::{Db, Place, version};

/// A copy of the 0.1 fixture in a fresh directory (the committed one is
/// never written).
fn copy_of_0_1() -> Db {
    let db = Place::Local.fresh();
    copy_dir(&fixture_dir("0.1.0"), Path::new(db.uri()));
    db
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn migrator(db: lancedb::Connection, migrations: Vec<Box<dyn Migration>>) -> Migrator {
    migrations
        .into_iter()
        .fold(Migrator::new(db), |m, migration| m.add(migration))
}

fn by_id(entries: Vec<LedgerEntry>) -> HashMap<String, LedgerEntry> {
    entries.into_iter().map(|e| (e.id.clone(), e)).collect()
}

async fn ledger_format(db: &lancedb::Connection) -> String {
    let ledger = db.open_table(DEFAULT_LEDGER_TABLE).execute().await.unwrap();
    ledger.schema().await.unwrap().metadata()["lancedb_migrate.ledger_format"].clone()
}

/// A migration the application adds in the release after 0.1.
fn new_migration() -> Box<dyn Migration> {
    Box::new(
        AddColumns::new("0005_note", "documents")
            .column(NewColumn::new("note", DataType::Utf8).default_value("none")),
    )
}

/// The ledger 0.1 wrote opens with no drift: the built-ins' rows are
/// upgraded to this release's checksums in place (old checksum and
/// version recorded), nothing is run again, and a new migration is applied
/// after them.
#[tokio::test]
async fn a_ledger_of_0_1_is_read_without_drift_and_upgraded_in_place() {
    let tmp = copy_of_0_1();
    read_and_upgrade_0_1(tmp.connect().await).await;
}

/// The same on the S3 server: 0.1's files uploaded as they are.
#[tokio::test]
async fn a_ledger_of_0_1_is_read_without_drift_and_upgraded_in_place_on_s3() {
    let Some(s3) = crate::s3::S3::from_env(
        "a_ledger_of_0_1_is_read_without_drift_and_upgraded_in_place_on_s3",
    ) else {
        return;
    };
    let bucket = s3.fresh_bucket("fixture");
    upload_dir(&s3, &bucket, "db", &fixture_dir("0.1.0"));
    read_and_upgrade_0_1(s3.connect(&format!("s3://{bucket}/db")).await).await;
}

fn upload_dir(s3: &crate::s3::S3, bucket: &str, prefix: &str, dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let key = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            upload_dir(s3, bucket, &key, &entry.path());
        } else {
            s3.put(bucket, &key, &std::fs::read(entry.path()).unwrap());
        }
    }
}

async fn read_and_upgrade_0_1(db: lancedb::Connection) {
    let documents = db.open_table("documents").execute().await.unwrap();
    let documents_before = version(&documents).await;
    let before = by_id(migrator(db.clone(), vec![]).ledger().await.unwrap());
    assert_eq!(before.len(), 4, "the fixture's ledger");
    assert_eq!(ledger_format(&db).await, "1");

    // Its checksums are 0.1's, which this release no longer computes for
    // the built-ins, but offers as previous checksums.
    let old = migrations_of_0_1();
    for m in &old {
        let row = &before[m.id()];
        assert_eq!(row.status, LedgerStatus::Applied);
        if m.id() == "0004_lowercase_category" {
            assert_eq!(
                row.checksum,
                m.checksum(),
                "a Debug definition is unchanged"
            );
        } else {
            assert_ne!(row.checksum, m.checksum(), "{}: a new encoding", m.id());
            assert_eq!(
                m.previous_checksums(),
                std::slice::from_ref(&row.checksum),
                "{}",
                m.id()
            );
        }
    }
    let plan = migrator(db.clone(), migrations_of_0_1())
        .plan()
        .await
        .unwrap();
    assert!(!plan.has_problems(), "{plan}");
    assert_eq!(plan.pending().count(), 0, "{plan}");

    let mut list = migrations_of_0_1();
    list.push(new_migration());
    let report = migrator(db.clone(), list).run().await.unwrap();
    assert_eq!(report.skipped().count(), 4, "{report:?}");
    let applied: Vec<_> = report.applied().map(|m| m.id.as_str()).collect();
    assert_eq!(applied, ["0005_note"]);

    let after = by_id(migrator(db.clone(), vec![]).ledger().await.unwrap());
    for m in &old {
        let (was, is) = (&before[m.id()], &after[m.id()]);
        assert_eq!(is.checksum, m.checksum(), "{}", m.id());
        assert_eq!(
            (
                is.version_before,
                is.version_after,
                is.started_at,
                is.finished_at
            ),
            (
                was.version_before,
                was.version_after,
                was.started_at,
                was.finished_at
            ),
            "{}: not run again",
            m.id()
        );
        if was.checksum != is.checksum {
            assert_eq!(is.details[LedgerEntry::CHECKSUM_PREVIOUS], was.checksum);
            assert_eq!(
                is.details[LedgerEntry::CHECKSUM_UPGRADED_BY],
                env!("CARGO_PKG_VERSION")
            );
            for (key, value) in &was.details {
                assert_eq!(&is.details[key], value, "{}: details kept", m.id());
            }
        } else {
            assert_eq!(is, was, "{}: untouched", m.id());
        }
    }
    assert_eq!(
        after["0005_note"].version_before, documents_before,
        "nothing ran before it"
    );
    assert_eq!(
        ledger_format(&db).await,
        "2",
        "this release's format, recorded on write"
    );

    // The table is as 0.1 left it, with the new column.
    let rows = crate::support::rows(&documents, &["category", "note", "vector"]).await;
    let n: usize = rows.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, ROWS);
    for batch in &rows {
        let category = batch.column(0).as_string::<i32>();
        let note = batch.column(1).as_string::<i32>();
        assert!(category.iter().all(|c| c == Some("general")));
        assert!(note.iter().all(|c| c == Some("none")));
        assert_eq!(batch.column(2).as_fixed_size_list().value_length(), 16);
    }

    // The next start reads, writes nothing.
    let ledger = db.open_table(DEFAULT_LEDGER_TABLE).execute().await.unwrap();
    let ledger_version = version(&ledger).await;
    let mut list = migrations_of_0_1();
    list.push(new_migration());
    assert!(migrator(db.clone(), list).run().await.unwrap().is_noop());
    assert_eq!(version(&ledger).await, ledger_version);
}

/// A 0.1 migration edited since is still drift: previous checksums accept
/// only the same definition in its old encoding.
#[tokio::test]
async fn an_edited_migration_of_0_1_is_still_drift() {
    let tmp = copy_of_0_1();
    let db = tmp.connect().await;
    let mut list = migrations_of_0_1();
    list[0] = Box::new(
        AddColumns::new("0001_defaults", "documents")
            .column(NewColumn::new("category", DataType::Utf8).default_value("OTHER")),
    );
    let err = migrator(db, list).run().await.unwrap_err();
    assert!(
        matches!(&err, Error::Drift { migration, .. } if migration == "0001_defaults"),
        "{err:?}"
    );
}

/// A ledger whose format is newer than this build knows is refused by
/// `run` and `plan`, and nothing is written.
#[tokio::test]
async fn a_newer_ledger_format_is_refused_and_nothing_written() {
    let tmp = copy_of_0_1();
    let db = tmp.connect().await;
    let ledger = db.open_table(DEFAULT_LEDGER_TABLE).execute().await.unwrap();
    let mut metadata = ledger.schema().await.unwrap().metadata().clone();
    metadata.insert("lancedb_migrate.ledger_format".into(), "3".into());
    ledger
        .as_native()
        .unwrap()
        .replace_schema_metadata(metadata)
        .await
        .unwrap();
    let documents = db.open_table("documents").execute().await.unwrap();
    let (ledger_version, documents_version) = (version(&ledger).await, version(&documents).await);

    let mut list = migrations_of_0_1();
    list.push(new_migration());
    let migrator = migrator(db.clone(), list);
    for err in [
        migrator.run().await.unwrap_err(),
        migrator.plan().await.unwrap_err(),
    ] {
        assert!(
            matches!(
                &err,
                Error::NewerFormat {
                    what: "ledger",
                    found: 3,
                    known: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("upgrade lancedb-migrate"), "{err}");
    }
    assert_eq!(version(&ledger).await, ledger_version);
    assert_eq!(version(&documents).await, documents_version);
}

/// The lease tags of a newer lease format are refused before anything is
/// written.
#[tokio::test]
async fn a_newer_lease_format_is_refused_and_nothing_written() {
    let tmp = copy_of_0_1();
    let db = tmp.connect().await;
    let ledger = db.open_table(DEFAULT_LEDGER_TABLE).execute().await.unwrap();
    let (generation, _) = newest_lease(&ledger).await;
    let at = version(&ledger).await;
    let mut tags = ledger.tags().await.unwrap();
    let next = lease_tag(generation + 1);
    tags.create(&next, at).await.unwrap();
    tags.create(&format!("{next}-v9-by-future"), at)
        .await
        .unwrap();
    tags.create(&format!("{next}-released"), at).await.unwrap();
    let documents = db.open_table("documents").execute().await.unwrap();
    let documents_version = version(&documents).await;

    let mut list = migrations_of_0_1();
    list.push(new_migration());
    let err = migrator(db.clone(), list).run().await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::NewerFormat {
                what: "lease",
                found: 9,
                known: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(version(&documents).await, documents_version);
    assert_eq!(version(&ledger).await, at, "no ledger write");
}

fn lease_tag(generation: u64) -> String {
    format!("lease-{generation:020}")
}

/// The newest lease generation on `ledger`, and its tags.
async fn newest_lease(ledger: &lancedb::Table) -> (u64, Vec<String>) {
    let names: Vec<String> = crate::support::tags(ledger).await.into_keys().collect();
    let generation = names
        .iter()
        .filter_map(|t| t.strip_prefix("lease-"))
        .filter(|d| d.len() == 20)
        .filter_map(|d| d.parse().ok())
        .max()
        .unwrap_or(0);
    let prefix = lease_tag(generation);
    let mine = names
        .into_iter()
        .filter(|t| t.starts_with(&prefix))
        .collect();
    (generation, mine)
}

/// A replica of 0.1 holds the lease, in 0.1's layout (`lease-<g>` and
/// `lease-<g>-by-<holder>`, refreshed): this release sees it held, names
/// the holder, and takes the lease only once 0.1 releases it. While this
/// release holds it, the tags 0.1 reads show it held.
#[tokio::test]
async fn a_replica_of_0_1_and_this_release_exclude_each_other() {
    let tmp = copy_of_0_1();
    let db = tmp.connect().await;
    let ledger = db.open_table(DEFAULT_LEDGER_TABLE).execute().await.unwrap();
    let (generation, old_tags) = newest_lease(&ledger).await;
    assert!(
        old_tags
            .iter()
            .any(|t| t.ends_with("-by-replica-of-0.1") || t.ends_with("-by-replica-of-0_1")),
        "the fixture has 0.1's holder tag: {old_tags:?}"
    );
    // 0.1 takes generation g+1 as it does: the generation tag, then its
    // holder tag.
    let at = version(&ledger).await;
    let held = lease_tag(generation + 1);
    let mut tags = ledger.tags().await.unwrap();
    tags.create(&held, at).await.unwrap();
    tags.create(&format!("{held}-by-old-replica"), at)
        .await
        .unwrap();

    let mut list = migrations_of_0_1();
    list.push(new_migration());
    // A TTL far longer than the test, so that 0.1's hand-made lease does
    // not expire under a slow machine.
    let ttl = Duration::from_secs(3600);
    let returning = migrator(db.clone(), list)
        .when_locked(WhenLocked::Return)
        .lease_ttl(ttl);
    let report = returning.run().await.unwrap();
    assert_eq!(report.pending().count(), 1, "{report:?}");
    assert_eq!(
        report.holder().unwrap().name.as_deref(),
        Some("old-replica")
    );
    let mut list = migrations_of_0_1();
    list.push(new_migration());
    let waiting = migrator(db.clone(), list)
        .when_locked(WhenLocked::Wait)
        .lease_ttl(ttl)
        .lease_wait(Duration::from_millis(300));
    let err = waiting.run().await.unwrap_err();
    assert!(
        matches!(&err, Error::LeaseTimeout { holder, .. } if holder == "old-replica"),
        "{err:?}"
    );
    assert!(
        !migrator(db.clone(), vec![])
            .applied("0005_note")
            .await
            .unwrap()
    );

    // 0.1 releases; this release takes generation g+2, in its own layout,
    // which 0.1 reads as held: the newest 20-digit generation, not
    // released. 0.1 could only create g+2 again, which exists.
    tags.create(&format!("{held}-released"), at).await.unwrap();
    let blocking = Blocking::default();
    let (go, started) = (blocking.go.clone(), blocking.started.clone());
    let mut list = migrations_of_0_1();
    list.push(new_migration());
    list.push(Box::new(blocking));
    let holder = migrator(db.clone(), list);
    let run = tokio::spawn(async move { holder.run().await });
    started.notified().await;
    let (newest, mine) = newest_lease(&ledger).await;
    assert_eq!(newest, generation + 2);
    assert!(mine.iter().any(|t| t.contains("-v2-by-")), "{mine:?}");
    assert!(!mine.iter().any(|t| t.ends_with("-released")), "{mine:?}");
    let taken = tags.create(&lease_tag(newest), at).await;
    assert!(taken.is_err(), "the generation tag is put-if-absent");
    go.notify_one();
    let report = run.await.unwrap().unwrap();
    assert!(report.applied().any(|m| m.id == "0005_note"));
    assert!(report.applied().any(|m| m.id == "0006_blocking"));
}

/// A migration that says it started and waits until told to go on.
#[derive(Debug, Default)]
struct Blocking {
    go: Arc<tokio::sync::Notify>,
    started: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Migration for Blocking {
    fn id(&self) -> &str {
        "0006_blocking"
    }

    fn table(&self) -> &str {
        "documents"
    }

    async fn transform(&self, _: &MigrationContext) -> Result<()> {
        self.started.notify_one();
        self.go.notified().await;
        Ok(())
    }
}

/// Applied migrations deleted from the list, applied by a newer release,
/// or new ones inserted before applied ones: `run` and `plan` report them
/// as the builder's policies say.
#[tokio::test]
async fn the_list_and_the_ledger_disagreeing_is_reported() {
    let db = testing::memory_db().await.unwrap();
    testing::documents_table(&db, "documents", 20, 4)
        .await
        .unwrap();
    let column = |id: &str| -> Box<dyn Migration> {
        Box::new(
            AddColumns::new(id, "documents")
                .column(NewColumn::new(format!("c_{id}"), DataType::Utf8)),
        )
    };
    let list = |ids: &[&str]| ids.iter().map(|id| column(id)).collect::<Vec<_>>();
    migrator(db.clone(), list(&["a", "b", "c"]))
        .run()
        .await
        .unwrap();
    let ledger = db.open_table(DEFAULT_LEDGER_TABLE).execute().await.unwrap();
    let documents = db.open_table("documents").execute().await.unwrap();
    let versions = async || (version(&ledger).await, version(&documents).await);
    let untouched = versions().await;

    // `b` deleted from the list.
    let deleted = migrator(db.clone(), list(&["a", "c"]));
    for err in [
        deleted.run().await.unwrap_err(),
        deleted.plan().await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::MissingMigrations { ids } if ids == &["b"]),
            "{err:?}"
        );
        assert!(err.to_string().contains("on_missing"), "{err}");
    }
    let allowed = migrator(db.clone(), list(&["a", "c"])).on_missing(Divergence::Allow);
    assert!(allowed.run().await.unwrap().is_noop());
    assert_eq!(allowed.plan().await.unwrap().unlisted(), ["b"]);

    // An older build, which knows only `a`: allowed by default.
    let older = migrator(db.clone(), list(&["a"]));
    assert!(older.run().await.unwrap().is_noop());
    assert_eq!(older.plan().await.unwrap().unlisted(), ["b", "c"]);
    let strict = migrator(db.clone(), list(&["a"])).on_newer(Divergence::Refuse);
    let err = strict.run().await.unwrap_err();
    assert!(
        matches!(&err, Error::NewerMigrations { ids } if ids == &["b", "c"]),
        "{err:?}"
    );

    // `x` inserted before applied ones.
    let inserted = migrator(db.clone(), list(&["a", "x", "b", "c", "d"]));
    for err in [
        inserted.run().await.unwrap_err(),
        inserted.plan().await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::OutOfOrder { ids, applied } if ids == &["x"] && applied == "b"),
            "{err:?}"
        );
    }
    assert_eq!(
        versions().await,
        untouched,
        "nothing written by a refused run"
    );
    let allowed =
        migrator(db.clone(), list(&["a", "x", "b", "c", "d"])).on_out_of_order(Divergence::Allow);
    let report = allowed.run().await.unwrap();
    let applied: Vec<_> = report.applied().map(|m| m.id.as_str()).collect();
    assert_eq!(applied, ["x", "d"]);
    documents.checkout_latest().await.unwrap();
    assert!(
        documents
            .schema()
            .await
            .unwrap()
            .field_with_name("c_x")
            .is_ok()
    );
    // Applied now, it is no longer out of order, even under the default.
    let again = migrator(db.clone(), list(&["a", "x", "b", "c", "d"]));
    assert!(again.run().await.unwrap().is_noop());
}

/// Two replicas of this release start at once on 0.1's ledger: the rows
/// are upgraded once, the new migration applied once, and neither start
/// fails.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_starting_at_once_upgrade_the_ledger_once() {
    let tmp = copy_of_0_1();
    let before = by_id(
        migrator(tmp.connect().await, vec![])
            .ledger()
            .await
            .unwrap(),
    );
    let start = |name: &'static str| {
        let uri = tmp.uri().to_owned();
        tokio::spawn(async move {
            let db = crate::s3::connect(&uri).await;
            let mut list = migrations_of_0_1();
            list.push(new_migration());
            migrator(db, list)
                .lease_holder(name)
                .when_locked(WhenLocked::Wait)
                .run()
                .await
        })
    };
    let (a, b) = (start("replica-a"), start("replica-b"));
    let reports = [a.await.unwrap().unwrap(), b.await.unwrap().unwrap()];
    let applied: usize = reports.iter().map(|r| r.applied().count()).sum();
    assert_eq!(applied, 1, "the new migration applied once: {reports:?}");
    let after = by_id(
        migrator(tmp.connect().await, vec![])
            .ledger()
            .await
            .unwrap(),
    );
    for m in migrations_of_0_1() {
        let (was, is) = (&before[m.id()], &after[m.id()]);
        assert_eq!(is.checksum, m.checksum());
        if was.checksum != is.checksum {
            assert_eq!(
                is.details[LedgerEntry::CHECKSUM_PREVIOUS],
                was.checksum,
                "{}",
                m.id()
            );
        }
        assert_eq!(
            is.version_after,
            was.version_after,
            "{}: not run again",
            m.id()
        );
    }
    let documents = tmp
        .connect()
        .await
        .open_table("documents")
        .execute()
        .await
        .unwrap();
    assert_eq!(documents.count_rows(None).await.unwrap(), ROWS);
}
