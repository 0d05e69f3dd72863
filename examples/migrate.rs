//! A command-line front end over a database path: inspect and operate on
//! migrations without writing code against LanceDB.
//!
//! ```sh
//! cargo run --example migrate -- /tmp/demo seed 20000   # a demo `documents` table
//! cargo run --example migrate -- /tmp/demo plan         # what `run` would do
//! cargo run --example migrate -- /tmp/demo run          # apply, with a progress bar
//! cargo run --example migrate -- /tmp/demo status       # the ledger as a table
//! cargo run --example migrate -- /tmp/demo rollback 0002_reembed_768
//! ```
//!
//! More: `run --copy-backups DIR` (independent backup copies), `rollback ID
//! --discard-later-writes`, `baseline ID`, `repair ID`. An application
//! builds the same [`Migrator`] with its own migration list; this example
//! uses a demo list (the 768-d "model" is the crate's deterministic test
//! embedder).

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{DataType, TimeUnit};
use lancedb_migrate::testing::{self, TestEmbedding};
use lancedb_migrate::{
    AddColumns, DefaultValue, Event, LaterWrites, Migrator, NewColumn, ReEmbed, Retention,
};

const TABLE: &str = "documents";

/// The application's migrations, oldest first.
fn migrator(db: lancedb::Connection) -> Migrator {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let model = Arc::new(TestEmbedding::new("demo-768", 768));
    Migrator::new(db)
        .add(
            AddColumns::new("0001_defaults", TABLE)
                .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
                .column(NewColumn::new("is_active", DataType::Boolean).default_value(true))
                .column(
                    NewColumn::new("created_at", utc).default_value(DefaultValue::MigrationTime),
                ),
        )
        .add(ReEmbed::new("0002_reembed_768", TABLE, model).batch_size(512))
        .add(
            AddColumns::new("0003_metadata", TABLE)
                .column(NewColumn::new("metadata", DataType::Utf8)),
        )
        .keep_backups(Retention::Last(2))
        .on_event(show)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, command, rest) = match args.as_slice() {
        [path, command, rest @ ..] => (path.as_str(), command.as_str(), rest),
        _ => return Err(usage()),
    };
    let db = lancedb::connect(path).execute().await?;
    let flag = |name: &str| rest.iter().any(|a| a == name);
    let id = || rest.first().map(String::as_str).ok_or_else(usage);
    match command {
        "seed" => {
            let rows = rest.first().map_or(Ok(20_000), |r| r.parse())?;
            testing::documents_table(&db, TABLE, rows, 384).await?;
            println!("created `{TABLE}` with {rows} rows of 384-d vectors in {path}");
        }
        "plan" => print!("{}", migrator(db).plan().await?),
        "status" => print!("{}", migrator(db).status().await?),
        "run" => {
            let mut m = migrator(db);
            if let Some(i) = rest.iter().position(|a| a == "--copy-backups") {
                let dir = rest.get(i + 1).ok_or_else(usage)?;
                m = m.copy_backups_to(dir.as_str());
            }
            let report = m.run().await?;
            print!("{report}");
        }
        "rollback" => {
            let later = if flag("--discard-later-writes") {
                LaterWrites::Discard
            } else {
                LaterWrites::Refuse
            };
            for entry in migrator(db).rollback_to(id()?, later).await? {
                println!("rolled back {} (table `{}`)", entry.id, entry.table);
            }
        }
        "baseline" => {
            for entry in migrator(db).baseline(id()?).await? {
                println!("recorded {} as applied", entry.id);
            }
        }
        "repair" => {
            let entry = migrator(db).repair(id()?, LaterWrites::Refuse).await?;
            println!("repaired {}: {:?}", entry.id, entry.details);
        }
        _ => return Err(usage()),
    }
    Ok(())
}

/// Prints phases as lines and progress as a bar redrawn in place.
fn show(event: &Event) {
    let mut err = std::io::stderr();
    match event {
        Event::MigrationStarted { migration, table } => {
            let _ = writeln!(err, "{migration} on `{table}`");
        }
        Event::PhaseFinished {
            phase, duration, ..
        } => {
            let _ = writeln!(err, "\r\x1b[K  {phase} done in {duration:.1?}");
        }
        Event::Progress {
            done,
            total,
            rate,
            eta,
            ..
        } => {
            let _ = write!(err, "\r\x1b[K  {}", bar(*done, *total, *rate, *eta));
            let _ = err.flush();
        }
        Event::MigrationFailed {
            migration, error, ..
        } => {
            let _ = writeln!(err, "\r\x1b[K{migration} FAILED: {error}");
        }
        _ => {}
    }
}

fn bar(done: u64, total: Option<u64>, rate: f64, eta: Option<Duration>) -> String {
    const WIDTH: usize = 30;
    let eta = eta.map_or("?".to_owned(), |e| format!("{:.1}s", e.as_secs_f64()));
    match total.filter(|t| *t > 0) {
        Some(total) => {
            let filled = (done.min(total) as usize * WIDTH) / total as usize;
            format!(
                "[{}{}] {:>3}% {done}/{total} rows, {rate:.0} rows/s, ETA {eta}",
                "#".repeat(filled),
                "-".repeat(WIDTH - filled),
                done * 100 / total
            )
        }
        None => format!("{done} rows, {rate:.0} rows/s"),
    }
}

fn usage() -> Box<dyn std::error::Error> {
    "usage: migrate <db> seed [rows] | plan | status | run [--copy-backups DIR] | \
     rollback ID [--discard-later-writes] | baseline ID | repair ID"
        .into()
}
