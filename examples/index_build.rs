//! Times building an IVF_PQ vector index on a `rows × dims` table: how much
//! a build profile's optimisation of LanceDB matters (see README, "Debug
//! builds of an application").
//!
//! ```sh
//! scripts/cargo run --example index_build -- 5000 768                      # dev profile: LanceDB unoptimised
//! scripts/cargo run --profile dev-opt-deps --example index_build -- 5000 768 # dependencies at opt-level 3
//! ```

use std::time::Instant;

use lancedb::index::Index;
use lancedb::index::vector::IvfPqIndexBuilder;
use lancedb_migrate::testing;

#[tokio::main]
async fn main() -> lancedb_migrate::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let dims: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(768);
    let tmp = testing::TempDb::new().await?;
    let table = testing::documents_table(tmp.db(), "documents", rows, dims).await?;
    let started = Instant::now();
    table
        .create_index(&["vector"], Index::IvfPq(IvfPqIndexBuilder::default()))
        .execute()
        .await?;
    println!(
        "IVF_PQ on {rows} x {dims}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
