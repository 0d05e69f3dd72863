//! An application's migration command line: the crate's [`Cli`] over the
//! application's own migration list (feature `cli`).
//!
//! ```sh
//! export LANCEDB_URI=/tmp/demo
//! cargo run --example migrate -- seed 20000   # a demo `documents` table
//! cargo run --example migrate -- plan         # what `up` would do
//! cargo run --example migrate -- up           # apply, with a progress bar
//! cargo run --example migrate -- status       # the ledger as a table
//! cargo run --example migrate -- history --json
//! cargo run --example migrate -- rollback 0002_reembed_768
//! cargo run --example migrate -- lock         # write migrations.lock
//! cargo run --example migrate -- validate     # no database needed
//! cargo run --example migrate -- --help
//! ```
//!
//! Everything but `seed` is the crate's [`Cli`]; an application gives it
//! its own list (here a demo one: the 768-d "model" is the crate's
//! deterministic test embedder, slowed by `DEMO_EMBED_DELAY_MS` per batch
//! to watch the progress bar and try Ctrl-C).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{DataType, TimeUnit};
use lancedb_migrate::cli::Cli;
use lancedb_migrate::testing::{self, TestEmbedding};
use lancedb_migrate::{AddColumns, DefaultValue, Migrator, NewColumn, ReEmbed, Retention};

const TABLE: &str = "documents";

/// The application's migrations, oldest first: the same list its start-up
/// runs.
fn migrations(migrator: Migrator) -> Migrator {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let delay = std::env::var("DEMO_EMBED_DELAY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    let model = Arc::new(TestEmbedding::new("demo-768", 768).delay(delay));
    migrator
        .add(
            AddColumns::new("0001_defaults", TABLE)
                .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
                .column(NewColumn::new("is_active", DataType::Boolean).default_value(true))
                .column(
                    NewColumn::new("created_at", utc).default_value(DefaultValue::MigrationTime),
                ),
        )
        .add(ReEmbed::new("0002_reembed_768", TABLE, model).batch_size(256))
        .add(
            AddColumns::new("0003_metadata", TABLE)
                .column(NewColumn::new("metadata", DataType::Utf8)),
        )
        .keep_backups(Retention::Last(2))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("seed") {
        return seed(args.get(2).map(String::as_str)).await;
    }
    Cli::new(migrations).run().await
}

/// `seed [ROWS]`: a demo table of 384-d documents in `$LANCEDB_URI`.
async fn seed(rows: Option<&str>) -> ExitCode {
    let result = async {
        let uri = std::env::var("LANCEDB_URI").map_err(|_| "set LANCEDB_URI")?;
        let rows = rows.map_or(Ok(20_000), str::parse)?;
        let db = lancedb::connect(&uri).execute().await?;
        testing::documents_table(&db, TABLE, rows, 384).await?;
        println!("created `{TABLE}` with {rows} rows of 384-d vectors in {uri}");
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    match result.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
