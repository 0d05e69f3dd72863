//! What an index was built with, read from what Lance records of it, and
//! the LanceDB builder that builds it again with the same parameters.
//!
//! Where each parameter lives in Lance 14 (`lance-14.0.2`,
//! `lance-index-14.0.2`):
//!
//! | index | parameter | recorded in |
//! |---|---|---|
//! | every IVF index | distance, `target_partition_size` | `VectorIndexDetails` (manifest) |
//! | every IVF index | `sample_rate`, `max_iterations` | its runtime hints `lance.ivf.*` (manifest) |
//! | every IVF index | `num_partitions` | the IVF model (index statistics) |
//! | PQ | `num_sub_vectors`, `num_bits` | `VectorIndexDetails.compression.pq` |
//! | RQ | `num_bits`, `rotation_type` | `VectorIndexDetails.compression.rq` |
//! | SQ | `num_bits` | `VectorIndexDetails.compression.sq` |
//! | HNSW | `m`, `ef_construction`, `max_level` | `VectorIndexDetails.hnsw_index_config` |
//! | FTS | tokenizer settings | `InvertedIndexDetails` (manifest); custom stop words only in the index's own parameters (index statistics) |
//! | BloomFilter | `number_of_items`, `probability` | the index file's metadata (index statistics) |
//! | RTree | `page_size` | the index file's metadata (index statistics) |
//! | ZoneMap | `rows_per_zone` | `ZoneMapIndexDetails` (index statistics) |
//!
//! BTree, Bitmap, LabelList, NGram and FM indexes have no parameters that
//! LanceDB 0.41 lets a caller choose.

mod read;
mod recreate;
#[cfg(test)]
mod tests;

use read::*;
pub(crate) use read::{
    Params, add_statistics, differences, from_details, is_vector, needs_statistics,
    partition_change, requested, unsettable_changes,
};
pub(crate) use recreate::{Recreate, recreate};
