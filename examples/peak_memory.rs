//! Peak memory of a migration, measured from outside with `/usr/bin/time -v`.
//!
//! Table creation and migration are separate invocations so that the
//! measured process only migrates:
//!
//! ```sh
//! scripts/cargo build --profile bench --example peak_memory
//! BIN=$CARGO_TARGET_DIR/release/examples/peak_memory   # ~/.cache/lancedb-migrate/target by default
//! $BIN create /tmp/mem-250k 250000
//! /usr/bin/time -v $BIN add-columns /tmp/mem-250k 2>&1 | grep 'Maximum resident'
//! $BIN create /tmp/mem-1m 1000000
//! /usr/bin/time -v $BIN add-columns /tmp/mem-1m 2>&1 | grep 'Maximum resident'
//! ```
//!
//! `raw-add-columns` does the same work with one plain LanceDB call, for
//! comparison. `reembed` re-embeds the table's 384-d `vector` to 768
//! dimensions with the deterministic test embedder; `raw-reembed` writes the
//! same vectors with one plain `add_columns` call:
//!
//! ```sh
//! /usr/bin/time -v $BIN reembed /tmp/mem-250k 2>&1 | grep 'Maximum resident'
//! ```
//!
//! `backup-copy` runs a metadata-only migration with an independent backup
//! copy to a second directory, so its cost is the copy's; `raw-backup-copy`
//! is Lance's `deep_clone` alone; `restore-copy` drops the table and restores
//! it from the copy:
//!
//! ```sh
//! /usr/bin/time -v $BIN backup-copy /tmp/mem-250k /tmp/copies-250k 2>&1 | grep 'Maximum resident'
//! ```
//!
//! With `HWM=1`, `reembed` also prints the process's peak memory so far
//! after each migration event, which shows which phase needs it.

use std::time::Instant;

use arrow_schema::{DataType, TimeUnit};
use lancedb::table::NewColumnTransform;
use lancedb_migrate::testing::{TestEmbedding, vector_type};
use lancedb_migrate::{AddColumns, DefaultValue, Divergence, Migrator, NewColumn, ReEmbed};

const TABLE: &str = "documents";
const DIMS: usize = 384;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, path) = match args.as_slice() {
        [command, path, ..] => (command.as_str(), path.as_str()),
        _ => return Err(usage()),
    };
    if let Ok(level) = std::env::var("LOG") {
        // Timestamped logs of every step, to see where a run's time goes
        // (`LOG=debug` for the finer steps).
        let level = match level.as_str() {
            "debug" => tracing::Level::DEBUG,
            _ => tracing::Level::INFO,
        };
        tracing_subscriber::fmt()
            .with_timer(tracing_subscriber::fmt::time::Uptime::default())
            .with_max_level(level)
            .init();
    }
    let db = lancedb::connect(path).execute().await?;
    let started = Instant::now();
    match command {
        "create" => {
            let rows: usize = args.get(2).ok_or_else(usage)?.parse()?;
            lancedb_migrate::testing::documents_table(&db, TABLE, rows, DIMS).await?;
        }
        "add-columns" => {
            let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            // MIGRATION_ID=x adds the columns again under names ending in
            // `_x`: a later migration on a database that has a ledger.
            let id = std::env::var("MIGRATION_ID").ok();
            let name = |c: &str| id.as_ref().map_or(c.to_owned(), |id| format!("{c}_{id}"));
            let migration = AddColumns::new(id.clone().unwrap_or_else(|| "0001".to_owned()), TABLE)
                .column(NewColumn::new(name("category"), DataType::Utf8).default_value("general"))
                .column(NewColumn::new(name("is_active"), DataType::Boolean).default_value(true))
                .column(
                    NewColumn::new(name("created_at"), utc)
                        .default_value(DefaultValue::MigrationTime),
                );
            // A later migration's run lists only itself: the earlier ones
            // are applied and not listed.
            let report = Migrator::new(db)
                .on_missing(Divergence::Allow)
                .add(migration)
                .run()
                .await?;
            print!("{report}");
        }
        "raw-add-columns" => {
            let table = db.open_table(TABLE).execute().await?;
            let sql = [
                ("category", "'general'"),
                ("is_active", "true"),
                ("created_at", "now()"),
            ];
            let sql = sql
                .iter()
                .map(|(c, e)| ((*c).to_owned(), (*e).to_owned()))
                .collect();
            table
                .add_columns()
                .transform(NewColumnTransform::SqlExpressions(sql))
                .execute()
                .await?;
        }
        "reembed" => {
            let model = std::sync::Arc::new(TestEmbedding::new("test-768", 768));
            let migration = ReEmbed::new("0002_reembed", TABLE, model);
            let report = Migrator::new(db)
                .on_event(|e| {
                    if std::env::var("HWM").is_ok() {
                        let status =
                            std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                        let hwm = status
                            .lines()
                            .find(|l| l.starts_with("VmHWM"))
                            .unwrap_or("");
                        eprintln!("{e:?} {hwm}");
                    }
                })
                .add(migration)
                .run()
                .await?;
            print!("{report}");
        }
        "raw-reembed" => {
            use lancedb::embeddings::EmbeddingFunction;
            let table = db.open_table(TABLE).execute().await?;
            let model = TestEmbedding::new("test-768", 768);
            let field = arrow_schema::Field::new("vector_new", vector_type(768), true);
            let output_schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![field]));
            let out = output_schema.clone();
            let mapper = move |batch: &arrow_array::RecordBatch| {
                let vectors = model
                    .compute_source_embeddings(batch.column(0).clone())
                    .map_err(|e| lance::Error::invalid_input(e.to_string()))?;
                Ok(arrow_array::RecordBatch::try_new(
                    out.clone(),
                    vec![vectors],
                )?)
            };
            let udf = lance::dataset::BatchUDF {
                mapper: Box::new(mapper),
                output_schema,
                result_checkpoint: None,
            };
            table
                .add_columns()
                .transform(NewColumnTransform::BatchUDF(udf))
                .read_columns(vec!["text".to_owned()])
                .execute()
                .await?;
        }
        "backup-copy" => {
            // A metadata-only migration, so that the run's cost is the copy.
            let backups = args.get(2).ok_or_else(usage)?;
            let migration =
                AddColumns::new("0003_note", TABLE).column(NewColumn::new("note", DataType::Utf8));
            let report = Migrator::new(db)
                .copy_backups_to(backups.as_str())
                .add(migration)
                .run()
                .await?;
            print!("{report}");
        }
        "raw-backup-copy" => {
            let backups = args.get(2).ok_or_else(usage)?;
            let mut dataset = lance::Dataset::open(&format!("{path}/{TABLE}.lance")).await?;
            let version = dataset.version().version;
            dataset
                .deep_clone(&format!("{backups}/raw.lance"), version, None)
                .await?;
        }
        "restore-copy" => {
            let backups = args.get(2).ok_or_else(usage)?;
            let copies = lancedb_migrate::BackupCopy::list(backups).await?;
            let copy = copies.first().ok_or("no backup copy there")?;
            db.drop_table(TABLE, &[]).await?;
            copy.restore(&db).await?;
        }
        _ => return Err(usage()),
    }
    println!("{command} took {:.2?}", started.elapsed());
    Ok(())
}

fn usage() -> Box<dyn std::error::Error> {
    "usage: peak_memory create <dir> <rows> | add-columns <dir> | raw-add-columns <dir> | reembed <dir> | raw-reembed <dir> | backup-copy <dir> <backups> | raw-backup-copy <dir> <backups> | restore-copy <dir> <backups>".into()
}
