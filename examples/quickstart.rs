//! What an application does at startup: connect, then apply every pending
//! migration — add defaulted columns, re-embed the vectors with a new
//! 768-dimension model (a deterministic stand-in here, so nothing is
//! downloaded), record the model, and build an index.
//!
//! Creates a LanceDB database under `./quickstart-data` (with a sample
//! `documents` table the first time), runs the migrations and prints the
//! report. Run it twice: the second run finds everything applied and changes
//! nothing.
//!
//! ```sh
//! scripts/cargo run --example quickstart
//! ```

use std::sync::Arc;

use arrow_schema::{DataType, TimeUnit};
use lancedb::index::Index;
use lancedb::index::scalar::BTreeIndexBuilder;
use lancedb_migrate::testing::TestEmbedding;
use lancedb_migrate::{
    AddColumns, DefaultValue, Event, Migrator, NewColumn, ReEmbed, RebuildIndex,
};

const DB_DIR: &str = "quickstart-data";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Warnings and errors from LanceDB and this crate; progress is printed below.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .init();
    let db = lancedb::connect(DB_DIR).execute().await?;
    if !db
        .table_names()
        .execute()
        .await?
        .iter()
        .any(|t| t == "documents")
    {
        // Sample data: 10 000 documents with 384-dimensional vectors.
        lancedb_migrate::testing::documents_table(&db, "documents", 10_000, 384).await?;
        println!("created table `documents` in ./{DB_DIR}");
    }

    let utc_micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    // The new embedding model: any `lancedb::embeddings::EmbeddingFunction`.
    let model = Arc::new(TestEmbedding::new("stand-in-768", 768));
    let migrator = Migrator::new(db.clone())
        .add(
            AddColumns::new("0001_category_and_flags", "documents")
                .column(NewColumn::new("category", DataType::Utf8).default_value("general"))
                .column(NewColumn::new("is_active", DataType::Boolean).default_value(true)),
        )
        .add(
            AddColumns::new("0002_provenance", "documents")
                .column(
                    NewColumn::new("created_at", utc_micros.clone())
                        .default_value(DefaultValue::MigrationTime),
                )
                .column(NewColumn::new("metadata", DataType::Utf8)),
        )
        .add(ReEmbed::new("0003_reembed_768", "documents", model))
        .add(
            AddColumns::new("0004_embedding_model", "documents")
                .column(
                    NewColumn::new("embedding_model", DataType::Utf8).default_value("stand-in-768"),
                )
                .column(
                    NewColumn::new("migrated_at", utc_micros.clone())
                        .default_value(DefaultValue::MigrationTime),
                ),
        )
        // Vector indexes are built the same way (e.g. `Index::IvfPq(..)`);
        // training one takes minutes in an unoptimised debug build, so this
        // example indexes `id`.
        .add(RebuildIndex::new(
            "0005_id_index",
            "documents",
            "id",
            Index::BTree(BTreeIndexBuilder::default()),
        ))
        .on_event(|event| match event {
            Event::MigrationApplied {
                migration,
                duration,
            } => println!("  applied {migration} in {duration:.1?}"),
            Event::Progress {
                migration,
                done,
                total,
                rate,
                ..
            } => println!(
                "  {migration}: {done}/{} rows ({rate:.0} rows/s)",
                total.map_or("?".to_owned(), |t| t.to_string())
            ),
            _ => {}
        });

    let report = migrator.run().await?;
    println!("\nreport:\n{report}");
    if report.is_noop() {
        println!(
            "nothing to do: every migration was already applied (delete ./{DB_DIR} to start over)"
        );
    } else {
        println!("run this example again: the second run is a no-op");
    }
    let table = db.open_table("documents").execute().await?;
    println!(
        "table `documents` is at version {} with schema:",
        table.version().await?
    );
    for field in table.schema().await?.fields() {
        println!(
            "  {}: {}{}",
            field.name(),
            field.data_type(),
            if field.is_nullable() { "" } else { " NOT NULL" }
        );
    }
    Ok(())
}
