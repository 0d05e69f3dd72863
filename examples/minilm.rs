//! Re-embeds a table of real sentences with all-MiniLM-L6-v2, running
//! in-process from local files, then asks a question the old vectors could
//! not answer.
//!
//! The table starts with placeholder vectors (a hash of each text, standing
//! in for an outdated model), so a nearest-neighbour query finds noise. The
//! `ReEmbed` migration recomputes every vector with the real model, with
//! progress, backup, verification and rollback; afterwards the same
//! question finds the sentence that answers it.
//!
//! ```sh
//! scripts/fetch-minilm.sh                 # once: fetches the model files
//! scripts/cargo run --example minilm [MODEL_DIR]
//! ```
//!
//! `MODEL_DIR` defaults to `$LANCEDB_MIGRATE_MINILM`, else
//! `~/.cache/lancedb-migrate/models/all-MiniLM-L6-v2` (where the script puts
//! it). The database goes to `./minilm-data`, recreated on every run.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use lancedb::embeddings::EmbeddingFunction;
use lancedb::query::{ExecutableQuery, QueryBase};
use lancedb_migrate::embeddings::minilm::{self, SentenceTransformer};
use lancedb_migrate::testing::{TestEmbedding, documents_schema};
use lancedb_migrate::{Event, Migrator, ReEmbed};

const DB_DIR: &str = "minilm-data";

const ARTICLES: &[&str] = &[
    "Fresh bread stays soft longer when kept in a paper bag at room temperature.",
    "The central bank raised interest rates by a quarter point to curb inflation.",
    "Penguins huddle together to survive the long Antarctic winter.",
    "Our team released version 2.0 of the database engine with faster indexes.",
    "The football match was postponed because of heavy rain.",
    "Tomatoes and basil grow well together in a sunny garden bed.",
    "Regular exercise lowers the risk of heart disease and stroke.",
    "The night train to Edinburgh leaves from platform four at 11 pm.",
    "A strong cup of coffee helps many people wake up in the morning.",
    "The museum opened an exhibition of ancient Egyptian jewellery.",
    "Solar panels produce less electricity on cloudy winter days.",
    "Practising scales every day is the fastest way to improve on the violin.",
    "The new phone has a larger battery and a brighter screen.",
    "Volcanic eruptions can cool the planet by blocking sunlight.",
    "Children learn languages faster than adults do.",
    "The recipe calls for two eggs, flour, sugar and a pinch of salt.",
    "Remote work has changed how cities plan public transport.",
    "Whales communicate over long distances with low-frequency songs.",
    "The court ruled that the contract was not legally binding.",
    "Hikers should carry water and a map when crossing the desert.",
    "Electric cars need fewer repairs because they have fewer moving parts.",
    "The orchestra performed Beethoven's ninth symphony to a full hall.",
    "Honey never spoils if it is stored in a sealed jar.",
    "The startup raised ten million dollars to build delivery drones.",
];

const QUESTION: &str = "How do I stop my loaf from going stale?";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .init();
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(minilm::default_model_dir, PathBuf::from);
    // A missing model says which file is missing and how to fetch it.
    let model = Arc::new(SentenceTransformer::from_dir(&dir)?.named("all-MiniLM-L6-v2"));
    println!("loaded {model:?}");

    let _ = std::fs::remove_dir_all(DB_DIR);
    let db = lancedb::connect(DB_DIR).execute().await?;
    let placeholder = TestEmbedding::new("placeholder-384", 384);
    let texts: ArrayRef = Arc::new(StringArray::from(ARTICLES.to_vec()));
    let batch = RecordBatch::try_new(
        documents_schema(384),
        vec![
            Arc::new(Int64Array::from_iter_values(0..ARTICLES.len() as i64)),
            texts.clone(),
            placeholder.compute_source_embeddings(texts)?,
        ],
    )?;
    let table = db.create_table("articles", batch).execute().await?;
    println!(
        "created `articles` ({} rows) in ./{DB_DIR} with placeholder vectors\n",
        ARTICLES.len()
    );

    let before = nearest(&table, &placeholder, QUESTION).await?;
    println!("Q: {QUESTION}\n   placeholder vectors find: {before:?}\n");

    let report = Migrator::new(db.clone())
        .add(ReEmbed::new("0002_minilm", "articles", model.clone()).batch_size(8))
        .on_event(|event| match event {
            Event::Progress {
                migration,
                done,
                total,
                rate,
                ..
            } => println!(
                "  {migration}: {done}/{} sentences ({rate:.0}/s)",
                total.map_or("?".to_owned(), |t| t.to_string())
            ),
            Event::MigrationApplied {
                migration,
                duration,
            } => println!("  applied {migration} in {duration:.2?}"),
            _ => {}
        })
        .run()
        .await?;
    println!("\nreport:\n{report}");

    // This handle was opened before the migration: move it to the latest
    // version (a fresh `open_table` would be there already).
    table.checkout_latest().await?;
    let after = nearest(&table, model.as_ref(), QUESTION).await?;
    println!("Q: {QUESTION}\n   all-MiniLM-L6-v2 vectors find: {after:?}");
    Ok(())
}

/// The text nearest to `question` embedded with `embedder`.
async fn nearest(
    table: &lancedb::Table,
    embedder: &dyn EmbeddingFunction,
    question: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let query = embedder.compute_query_embeddings(Arc::new(StringArray::from(vec![question])))?;
    let query = query.as_fixed_size_list().value(0);
    let batches: Vec<RecordBatch> = table
        .query()
        .nearest_to(query)?
        .limit(1)
        .execute()
        .await?
        .try_collect()
        .await?;
    let hit = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or("the table is empty")?;
    let text = hit.column_by_name("text").ok_or("no text column")?;
    Ok(text.as_string::<i32>().value(0).to_owned())
}
