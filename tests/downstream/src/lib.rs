//! A downstream application's migrations, as a separate crate would write
//! them against `lancedb-migrate`'s public API, and their unit tests on real
//! in-memory tables (`lancedb_migrate::testing`). Built and tested by the
//! repository's test command (`scripts/cargo test --workspace`), so that
//! what a downstream crate needs (the `async_trait` re-export, `?` on
//! LanceDB errors, `testing::conformance`) keeps working.
//!
//! `migrations.lock` beside this crate's manifest locks [`migrations`]: the
//! unit test `migrations_match_the_lockfile` is the application's CI check
//! of an edited, deleted, moved or inserted migration (written by `migrate
//! lock`, or from [`Migrator::lockfile`]).

use arrow_schema::DataType;
use lancedb_migrate::{
    AddColumns, DefaultValue, Definition, Migration, MigrationContext, Migrator, NewColumn, Result,
    ResultExt, SchemaChange, async_trait,
};

/// The application's migrations, oldest first: the one list that its
/// start-up (`migrations(Migrator::new(db)).run()`) and its `migrate`
/// command (`cli::Cli::new(migrations)`) both run, and that
/// `migrations.lock` locks.
pub fn migrations(migrator: Migrator) -> Migrator {
    migrator
        .add(LowercaseCategory)
        .add(TextLength {
            column: "text".to_owned(),
        })
        .add(created_at())
}

/// Lower-cases `category` in place: a migration that changes existing data.
#[derive(Debug)]
pub struct LowercaseCategory;

#[async_trait]
impl Migration for LowercaseCategory {
    fn id(&self) -> &str {
        "0002_lowercase_category"
    }

    fn table(&self) -> &str {
        "documents"
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        ctx.check_lease()?;
        ctx.table()
            .update()
            .column("category", "lower(category)")
            .execute()
            .await
            .could_not("lower-case the categories")?;
        Ok(())
    }
}

/// Stores the length of a text column in a new `text_length` column, with a
/// plain `?` on the LanceDB call.
#[derive(Debug)]
pub struct TextLength {
    /// The text column.
    pub column: String,
}

impl TextLength {
    fn length_sql(&self) -> String {
        format!("CAST(character_length({}) AS BIGINT)", self.column)
    }
}

#[async_trait]
impl Migration for TextLength {
    fn id(&self) -> &str {
        "0003_text_length"
    }

    fn table(&self) -> &str {
        "documents"
    }

    /// What it writes, in the crate's stable encoding: the SQL and the
    /// column's type.
    fn definition(&self) -> String {
        Definition::new("text_length")
            .text("table", self.table())
            .text("expression", &self.length_sql())
            .data_type("type", &DataType::Int64)
            .finish()
    }

    /// Its first releases had the default definition, its `Debug`: the
    /// ledgers they wrote are upgraded, not reported as drift.
    fn previous_checksums(&self) -> Vec<String> {
        vec![Definition::checksum_of(&format!(
            "TextLength {{ column: {:?} }}",
            self.column
        ))]
    }

    fn expected_schema(&self, before: &arrow_schema::Schema) -> Result<arrow_schema::Schema> {
        SchemaChange::new(self.table(), before)
            .add_column(arrow_schema::Field::new(
                "text_length",
                DataType::Int64,
                true,
            ))
            .finish()
    }

    async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
        let length = self.length_sql();
        ctx.table()
            .add_columns()
            .transform(lancedb::table::NewColumnTransform::SqlExpressions(vec![(
                "text_length".to_owned(),
                length,
            )]))
            .execute()
            .await?;
        Ok(())
    }
}

/// The seed schema's `created_at`, an ISO 8601 string column, set to the
/// time of migration.
pub fn created_at() -> AddColumns {
    AddColumns::new("0004_created_at", "documents").column(
        NewColumn::new("created_at", DataType::Utf8).default_value(DefaultValue::MigrationTime),
    )
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::{Array, RecordBatch};
    use lancedb::table::NewColumnTransform;
    use lancedb_migrate::testing::{self, Snapshot};
    use lancedb_migrate::{Error, LockProblem, Lockfile};

    use super::*;

    /// The fixture table plus a mixed-case `category`.
    async fn documents(db: &lancedb::Connection) {
        let table = testing::documents_table(db, "documents", 30, 4)
            .await
            .unwrap();
        table
            .add_columns()
            .transform(NewColumnTransform::SqlExpressions(vec![(
                "category".to_owned(),
                "'SPORT'".to_owned(),
            )]))
            .execute()
            .await
            .unwrap();
        table
            .update()
            .only_if("id % 3 = 0")
            .column("category", "'News'")
            .execute()
            .await
            .unwrap();
    }

    fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
        let column = batch.column_by_name(column).unwrap().as_string::<i32>();
        (0..column.len())
            .map(|i| column.value(i).to_owned())
            .collect()
    }

    /// `TextLength` as its first release wrote it: the default definition.
    mod first_release {
        use super::super::*;

        #[derive(Debug)]
        pub struct TextLength {
            pub column: String,
        }

        #[async_trait]
        impl Migration for TextLength {
            fn id(&self) -> &str {
                "0003_text_length"
            }
            fn table(&self) -> &str {
                "documents"
            }
            fn expected_schema(
                &self,
                before: &arrow_schema::Schema,
            ) -> Result<arrow_schema::Schema> {
                super::super::TextLength {
                    column: self.column.clone(),
                }
                .expected_schema(before)
            }
            async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
                super::super::TextLength {
                    column: self.column.clone(),
                }
                .transform(ctx)
                .await
            }
        }
    }

    /// A ledger written when the migration had its `Debug` as definition is
    /// read by the release that writes it with `Definition`: no drift,
    /// nothing run again, the row's checksum upgraded in place.
    #[tokio::test]
    async fn a_definition_rewritten_with_its_old_checksum_is_not_drift() {
        use lancedb_migrate::LedgerEntry;

        let db = testing::memory_db().await.unwrap();
        documents(&db).await;
        let old = first_release::TextLength {
            column: "text".to_owned(),
        };
        let old_checksum = old.checksum();
        Migrator::new(db.clone()).add(old).run().await.unwrap();
        let new = || TextLength {
            column: "text".to_owned(),
        };
        assert_ne!(new().checksum(), old_checksum, "a new encoding");
        let report = Migrator::new(db.clone()).add(new()).run().await.unwrap();
        assert_eq!(report.skipped().count(), 1);
        let row = &Migrator::new(db.clone()).ledger().await.unwrap()[0];
        assert_eq!(row.checksum, new().checksum());
        assert_eq!(row.details[LedgerEntry::CHECKSUM_PREVIOUS], old_checksum);

        // Without the old checksum among its previous ones, the same edit
        // is drift.
        let db = testing::memory_db().await.unwrap();
        documents(&db).await;
        let old = first_release::TextLength {
            column: "text".to_owned(),
        };
        Migrator::new(db.clone()).add(old).run().await.unwrap();
        let edited = TextLength {
            column: "title".to_owned(),
        };
        let err = Migrator::new(db).add(edited).run().await.unwrap_err();
        assert!(matches!(err, Error::Drift { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn every_migration_passes_conformance() {
        testing::conformance(|| LowercaseCategory, "id", async |db| documents(db).await).await;
        let count = || TextLength {
            column: "text".to_owned(),
        };
        testing::conformance(count, "id", async |db| documents(db).await).await;
        testing::conformance(created_at, "id", async |db| documents(db).await).await;
    }

    /// The list is the one `migrations.lock` (committed, written by
    /// `migrate lock`) locks: the application's CI catches an edited,
    /// deleted, moved or inserted migration here, before a replica meets
    /// it as drift.
    #[tokio::test]
    async fn migrations_match_the_lockfile() {
        let db = testing::memory_db().await.unwrap();
        let locked = Lockfile::parse(include_str!("../migrations.lock")).unwrap();
        let problems = migrations(Migrator::new(db))
            .check_lockfile(&locked)
            .unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            locked.migrations().len(),
            3,
            "every migration of the list is locked"
        );
    }

    /// What that test reports when the list changes under the lockfile.
    #[tokio::test]
    async fn an_edited_or_reordered_list_fails_the_lockfile_check() {
        let db = testing::memory_db().await.unwrap();
        let locked = Lockfile::parse(include_str!("../migrations.lock")).unwrap();
        let edited = Migrator::new(db.clone())
            .add(LowercaseCategory)
            .add(TextLength {
                column: "title".to_owned(),
            })
            .add(created_at());
        let problems = edited.check_lockfile(&locked).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            matches!(&problems[0], LockProblem::Edited { id, .. } if id == "0003_text_length"),
            "{problems:?}"
        );
        let moved = Migrator::new(db.clone())
            .add(created_at())
            .add(LowercaseCategory)
            .add(TextLength {
                column: "text".to_owned(),
            });
        let problems = moved.check_lockfile(&locked).unwrap();
        assert!(
            !problems.is_empty() && problems.iter().all(LockProblem::is_divergence),
            "{problems:?}"
        );
        // A new migration at the end is not locked yet: not a divergence,
        // and `relock` appends it.
        let grown = migrations(Migrator::new(db.clone())).add(
            AddColumns::new("0005_is_active", "documents")
                .column(NewColumn::new("is_active", DataType::Boolean).default_value(true)),
        );
        let problems = grown.check_lockfile(&locked).unwrap();
        assert!(
            matches!(&problems[..], [p] if !p.is_divergence() && p.to_string().contains("0005_is_active")),
            "{problems:?}"
        );
        assert_eq!(grown.relock(&locked).unwrap().migrations().len(), 4);
    }

    #[tokio::test]
    async fn the_migrations_do_what_they_say() {
        let db = testing::memory_db().await.unwrap();
        documents(&db).await;
        let migrator = || migrations(Migrator::new(db.clone()));
        let report = migrator().run().await.unwrap();
        assert_eq!(report.applied().count(), 3);
        let table = db.open_table("documents").execute().await.unwrap();
        let after = Snapshot::take(&table, "id").await.unwrap();
        let categories = strings(after.batch(), "category");
        assert!(categories.iter().all(|c| c == "news" || c == "sport"));
        assert_eq!(categories.iter().filter(|c| *c == "news").count(), 10);
        let lengths = after
            .column("text_length")
            .as_primitive::<arrow_array::types::Int64Type>();
        let texts = strings(after.batch(), "text");
        assert_eq!(lengths.null_count(), 0);
        for (text, &length) in texts.iter().zip(lengths.values()) {
            assert_eq!(text.chars().count() as i64, length, "{text}");
        }
        // One ISO 8601 UTC time for every row, and the next start is a no-op
        // (no drift: the definition says `migration_time`, not the time).
        let created = strings(after.batch(), "created_at");
        assert!(created.iter().all(|t| t == &created[0]));
        assert!(
            created[0].len() == "2026-12-02T06:30:00.123456Z".len() && created[0].ends_with('Z'),
            "{}",
            created[0]
        );
        assert!(migrator().run().await.unwrap().is_noop());
    }

    /// `?` on a LanceDB error in a hook keeps what was being done and
    /// LanceDB's own error, in the error and in the ledger.
    #[tokio::test]
    async fn a_failing_lancedb_call_keeps_its_operation_and_cause() {
        let db = testing::memory_db().await.unwrap();
        testing::documents_table(&db, "documents", 10, 4)
            .await
            .unwrap();
        // No `category` column: the update fails.
        let migrator = Migrator::new(db.clone()).add(LowercaseCategory);
        let err = migrator.run().await.unwrap_err();
        let cause = err.cause();
        assert!(
            matches!(cause, Error::LanceDb { operation, .. } if operation == "lower-case the categories"),
            "{cause:?}"
        );
        assert_eq!(
            cause.to_string(),
            "lancedb could not lower-case the categories"
        );
        let root = err.root_cause().to_string();
        assert!(
            root.contains("category"),
            "the root cause names the column: {root}"
        );
        let recorded = migrator.ledger().await.unwrap()[0].error.clone().unwrap();
        assert!(
            recorded.contains("lower-case the categories") && recorded.contains(&root),
            "{recorded}"
        );

        let err = Migrator::new(db.clone())
            .add(TextLength {
                column: "no_such_column".to_owned(),
            })
            .run()
            .await
            .unwrap_err();
        let cause = err.cause();
        assert!(
            matches!(cause, Error::LanceDb { .. }) && std::error::Error::source(cause).is_some(),
            "a plain `?` keeps LanceDB's error as the source: {cause:?}"
        );
    }
}
