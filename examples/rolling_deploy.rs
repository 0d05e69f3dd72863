//! An application replica in a rolling deploy: it starts its migrations in
//! the background, serves as soon as the ones it needs have landed, keeps
//! serving while a slow re-embed runs, switches to the new model when the
//! re-embed lands, and on SIGTERM (or Ctrl-C) hands the re-embed over
//! gracefully: the batch in flight is written, the checkpoint saved, the
//! lease released.
//!
//! The embedding model is a deterministic stand-in that takes 200 ms per
//! call of 200 texts, like a remote service (the re-embed of the 50,000
//! rows takes about 25 s); the data lives under
//! `./rolling-deploy-data` (delete it to start over).
//!
//! ```sh
//! scripts/cargo run --example rolling_deploy
//! # a replica stopped by the orchestrator mid re-embed, then the next one:
//! timeout -s TERM 8 scripts/cargo run --example rolling_deploy; scripts/cargo run --example rolling_deploy
//! ```
//! Start two at once in two terminals to see one re-embed while the other
//! serves and stands by, and take over when the first gets Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use arrow_schema::DataType;
use lancedb_migrate::testing::{self, TestEmbedding};
use lancedb_migrate::{AddColumns, Migrator, NewColumn, ReEmbed};
use tokio::signal::unix::{SignalKind, signal};

const DB_DIR: &str = "rolling-deploy-data";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .init();
    let db = lancedb::connect(DB_DIR).execute().await?;
    if db.open_table("documents").execute().await.is_err() {
        testing::documents_table(&db, "documents", 50_000, 8).await?;
    }
    let model = TestEmbedding::new("model-v2", 16).delay(Duration::from_millis(200));
    let migrator = Migrator::new(db.clone())
        .lease_ttl(Duration::from_secs(10))
        // Quick, and the new code reads `category`: blocks serving.
        .add(
            AddColumns::new("0001_category", "documents")
                .column(NewColumn::new("category", DataType::Utf8).default_value("general")),
        )
        // Hours in production; the application serves meanwhile.
        .add(
            ReEmbed::new("0002_model_v2", "documents", Arc::new(model))
                .batch_size(200)
                .concurrency(2)
                .checkpoint_every(Duration::from_secs(2)),
        );

    let handle = migrator.start();
    handle.ready().await?;
    println!("ready: serving (the re-embed runs behind)");

    let mut term = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let serving_model = {
        let landed = handle.landed("0002_model_v2");
        tokio::pin!(landed);
        loop {
            tokio::select! {
                _ = term.recv() => break None,
                _ = tokio::signal::ctrl_c() => break None,
                result = &mut landed => {
                    result?;
                    break Some("model-v2");
                }
                _ = tick.tick() => {
                    let state = handle.state();
                    let rows = db.open_table("documents").execute().await?.count_rows(None).await?;
                    let doing = match (&state.current, &state.progress, &state.holder) {
                        (Some(m), Some(p), _) => format!("re-embedding {m}: {}/{} rows, eta {:?}", p.done, p.total.unwrap_or(0), p.eta()),
                        (Some(m), None, _) => format!("running {m}"),
                        (None, _, Some(holder)) => format!("standing by: {holder}"),
                        _ => "idle".to_owned(),
                    };
                    println!("serving {rows} rows with the old model; {doing}");
                }
            }
        }
    };
    match serving_model {
        Some(model) => {
            println!("the re-embed landed: switching queries to {model}");
            let report = handle.wait().await?;
            println!("{report}");
        }
        None => {
            println!("SIGTERM: handing the migration over");
            println!("{}", handle.stop());
            let report = handle.wait().await?;
            print!("{report}");
            if let Some(stopped) = report.stopped() {
                println!("{} stopped; the next replica continues it", stopped.id);
            }
        }
    }
    Ok(())
}
