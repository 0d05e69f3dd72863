//! The LanceDB builder that builds an index again with the parameters it
//! was built with, adjusted where the new column makes them impossible.

use lancedb::DistanceType;
use lancedb::index::scalar::{
    BTreeIndexBuilder, BitmapIndexBuilder, BloomFilterIndexBuilder, FmIndexBuilder,
    FtsIndexBuilder, LabelListIndexBuilder, NGramIndexBuilder, RTreeIndexBuilder,
    ZoneMapIndexBuilder,
};
use lancedb::index::vector::{
    IvfFlatIndexBuilder, IvfHnswFlatIndexBuilder, IvfHnswPqIndexBuilder, IvfHnswSqIndexBuilder,
    IvfPqIndexBuilder, IvfRqIndexBuilder, IvfSqIndexBuilder,
};
use lancedb::index::{Index, IndexType};
use serde_json::{Map, Value};

use super::{Params, has_pq, is_vector, parse, settable};

/// An index to build again: LanceDB's builder, the parameters the new
/// index must have, and what had to change, said in words.
#[derive(Debug, Clone)]
pub(crate) struct Recreate {
    pub(crate) index: Index,
    pub(crate) expected: Params,
    pub(crate) changed: Vec<String>,
}

/// The builder that recreates an index of `index_type` with `params` on a
/// column of `dims` dimensions (vector indexes). `Err` says why an index
/// of that type cannot be recreated.
pub(crate) fn recreate(
    index_type: &IndexType,
    params: &Params,
    dims: Option<usize>,
) -> Result<Recreate, String> {
    let (expected, changed) = expected(index_type, params, dims);
    let index = match vector_builder(index_type, &expected) {
        Some(index) => index,
        None => scalar_builder(index_type, &expected)?,
    };
    Ok(Recreate {
        index,
        expected,
        changed,
    })
}

/// The parameters LanceDB can set of `params`, adjusted to a column of
/// `dims` dimensions, and each adjustment said in words.
fn expected(index_type: &IndexType, params: &Params, dims: Option<usize>) -> (Params, Vec<String>) {
    let mut expected: Params = params
        .iter()
        .filter(|(k, _)| settable(index_type, k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut changed = Vec::new();
    if !is_vector(index_type) {
        return (expected, changed);
    }
    if expected.contains_key("target_partition_size") {
        // The partition count follows from the row count.
        expected.remove("num_partitions");
    }
    if has_pq(index_type)
        && let (Some(n), Some(dims)) = (
            expected
                .get("num_sub_vectors")
                .and_then(|n| n.parse::<u32>().ok()),
            dims,
        )
        && (n == 0 || dims % n as usize != 0)
    {
        let bits = expected.get("num_bits").and_then(|b| b.parse().ok());
        let m = default_sub_vectors(dims, bits);
        changed.push(format!(
            "num_sub_vectors {n} → {m}: {n} does not divide the new {dims} dimensions; {m} is LanceDB's default for {dims}"
        ));
        expected.insert("num_sub_vectors".into(), m.to_string());
    }
    (expected, changed)
}

/// The number of PQ sub-vectors LanceDB chooses for `dims` dimensions
/// (`lancedb::table::create_index::get_num_sub_vectors`).
fn default_sub_vectors(dims: usize, num_bits: Option<u32>) -> u32 {
    let dims = u32::try_from(dims).unwrap_or(u32::MAX);
    let n = if dims % 16 == 0 {
        dims / 16
    } else if dims % 8 == 0 {
        dims / 8
    } else {
        1
    };
    if num_bits == Some(4) && n % 2 == 1 {
        n + 1
    } else {
        n
    }
}

/// The builder of a vector index with `expected`; `None` for any other
/// type.
// Long on purpose: one arm per LanceDB builder type, each one line thanks to the macros; the
// macros are the length.
fn vector_builder(index_type: &IndexType, expected: &Params) -> Option<Index> {
    let u32_of = |key: &str| expected.get(key).and_then(|v| v.parse::<u32>().ok());
    let distance = expected
        .get("distance_type")
        .and_then(|d| serde_json::from_value::<DistanceType>(Value::String(d.clone())).ok())
        .unwrap_or_default();
    // Each builder type has its own setters of the same names: a macro
    // per family of parameters, applied to the builders that take them.
    macro_rules! ivf {
        ($builder:expr) => {{
            let mut b = $builder.distance_type(distance);
            if let Some(n) = u32_of("num_partitions") {
                b = b.num_partitions(n);
            }
            if let Some(n) = u32_of("target_partition_size") {
                b = b.target_partition_size(n);
            }
            if let Some(n) = u32_of("sample_rate") {
                b = b.sample_rate(n);
            }
            if let Some(n) = u32_of("max_iterations") {
                b = b.max_iterations(n);
            }
            b
        }};
    }
    macro_rules! pq {
        ($builder:expr) => {{
            let mut b = $builder;
            if let Some(n) = u32_of("num_sub_vectors") {
                b = b.num_sub_vectors(n);
            }
            if let Some(n) = u32_of("num_bits") {
                b = b.num_bits(n);
            }
            b
        }};
    }
    macro_rules! hnsw {
        ($builder:expr) => {{
            let mut b = $builder;
            if let Some(n) = u32_of("m") {
                b = b.num_edges(n);
            }
            if let Some(n) = u32_of("ef_construction") {
                b = b.ef_construction(n);
            }
            b
        }};
    }
    Some(match index_type {
        IndexType::IvfFlat => Index::IvfFlat(ivf!(IvfFlatIndexBuilder::default())),
        IndexType::IvfSq => Index::IvfSq(ivf!(IvfSqIndexBuilder::default())),
        IndexType::IvfPq => Index::IvfPq(pq!(ivf!(IvfPqIndexBuilder::default()))),
        IndexType::IvfRq => {
            let mut b = ivf!(IvfRqIndexBuilder::default());
            if let Some(n) = u32_of("num_bits") {
                b = b.num_bits(n);
            }
            Index::IvfRq(b)
        }
        IndexType::IvfHnswPq => {
            Index::IvfHnswPq(pq!(hnsw!(ivf!(IvfHnswPqIndexBuilder::default()))))
        }
        IndexType::IvfHnswSq => Index::IvfHnswSq(hnsw!(ivf!(IvfHnswSqIndexBuilder::default()))),
        IndexType::IvfHnswFlat => {
            Index::IvfHnswFlat(hnsw!(ivf!(IvfHnswFlatIndexBuilder::default())))
        }
        _ => return None,
    })
}

/// The builder of a scalar or full-text index with `expected`; `Err` says
/// why an index of `index_type` cannot be built again.
fn scalar_builder(index_type: &IndexType, expected: &Params) -> Result<Index, String> {
    let number = |key: &str| expected.get(key).and_then(|v| v.parse::<f64>().ok());
    Ok(match index_type {
        IndexType::BTree => Index::BTree(BTreeIndexBuilder::default()),
        IndexType::Bitmap => Index::Bitmap(BitmapIndexBuilder::default()),
        IndexType::LabelList => Index::LabelList(LabelListIndexBuilder::default()),
        IndexType::NGram => Index::NGram(NGramIndexBuilder::default()),
        IndexType::ZoneMap => Index::ZoneMap(ZoneMapIndexBuilder::default()),
        IndexType::Fm => Index::Fm(FmIndexBuilder::default()),
        IndexType::BloomFilter => {
            let mut b = BloomFilterIndexBuilder::default();
            if let Some(n) = expected
                .get("number_of_items")
                .and_then(|v| v.parse::<u64>().ok())
            {
                b = b.number_of_items(n).map_err(|e| e.to_string())?;
            }
            if let Some(p) = number("probability") {
                b = b.probability(p).map_err(|e| e.to_string())?;
            }
            Index::BloomFilter(b)
        }
        IndexType::RTree => {
            let mut b = RTreeIndexBuilder::default();
            if let Some(n) = expected
                .get("page_size")
                .and_then(|v| v.parse::<u32>().ok())
            {
                b = b.page_size(n).map_err(|e| e.to_string())?;
            }
            Index::RTree(b)
        }
        IndexType::FTS => {
            let object: Map<String, Value> = expected
                .iter()
                .map(|(k, v)| (k.clone(), parse(v)))
                .collect();
            Index::FTS(
                serde_json::from_value::<FtsIndexBuilder>(Value::Object(object)).map_err(|e| {
                    format!("its tokenizer settings cannot be read back by LanceDB: {e}")
                })?,
            )
        }
        other => {
            return Err(format!(
                "LanceDB 0.41 has no builder for an index of type {other} (only Lance's own API or a plugin can build it); drop it before the migration and build it again after"
            ));
        }
    })
}
