//! What an index was built with, read from what Lance records of it.

use lancedb::index::{Index, IndexType};
use serde_json::Value;
use std::collections::BTreeMap;

/// An index's parameters by LanceDB's builder names, values as text
/// (strings bare, other values as JSON).
pub(crate) type Params = BTreeMap<String, String>;

/// Whether an index of this type has parameters only its index files hold
/// (read through Lance's index statistics, which opens the index).
pub(crate) fn needs_statistics(index_type: &IndexType) -> bool {
    is_vector(index_type)
        || matches!(
            index_type,
            IndexType::FTS | IndexType::BloomFilter | IndexType::RTree | IndexType::ZoneMap
        )
}

pub(crate) fn is_vector(index_type: &IndexType) -> bool {
    matches!(
        index_type,
        IndexType::IvfFlat
            | IndexType::IvfSq
            | IndexType::IvfPq
            | IndexType::IvfRq
            | IndexType::IvfHnswPq
            | IndexType::IvfHnswSq
            | IndexType::IvfHnswFlat
    )
}

pub(super) fn has_pq(index_type: &IndexType) -> bool {
    matches!(index_type, IndexType::IvfPq | IndexType::IvfHnswPq)
}

pub(super) fn has_hnsw(index_type: &IndexType) -> bool {
    matches!(
        index_type,
        IndexType::IvfHnswPq | IndexType::IvfHnswSq | IndexType::IvfHnswFlat
    )
}

pub(super) fn render(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// The first value under `key` anywhere in `value`.
pub(crate) fn find<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    match value {
        Value::Object(map) => map
            .get(key)
            .filter(|v| !v.is_null())
            .or_else(|| map.values().find_map(|v| find(v, key))),
        Value::Array(items) => items.iter().find_map(|v| find(v, key)),
        _ => None,
    }
}

/// The parameters Lance's description of an index (`describe_indices`
/// details, JSON) holds.
pub(crate) fn from_details(index_type: &IndexType, details: &str) -> Params {
    let mut params = Params::new();
    let Ok(Value::Object(details)) = serde_json::from_str::<Value>(details) else {
        return params;
    };
    if is_vector(index_type) {
        if let Some(Value::String(metric)) = details.get("metric_type") {
            params.insert("distance_type".into(), metric.to_lowercase());
        }
        if let Some(n) = details.get("target_partition_size") {
            params.insert("target_partition_size".into(), render(n));
        }
        if let Some(Value::Object(hnsw)) = details.get("hnsw") {
            for (from, to) in [
                ("max_connections", "m"),
                ("construction_ef", "ef_construction"),
                ("max_level", "max_level"),
            ] {
                if let Some(v) = hnsw.get(from) {
                    params.insert(to.into(), render(v));
                }
            }
        }
        if let Some(Value::Object(compression)) = details.get("compression") {
            for key in ["num_sub_vectors", "num_bits", "rotation_type"] {
                if let Some(v) = compression.get(key) {
                    params.insert(key.into(), render(v));
                }
            }
        }
        if let Some(Value::Object(hints)) = details.get("runtime_hints") {
            for (from, to) in [
                ("lance.ivf.sample_rate", "sample_rate"),
                ("lance.ivf.max_iters", "max_iterations"),
            ] {
                if let Some(v) = hints.get(from) {
                    params.insert(to.into(), render(v));
                }
            }
        }
    } else if *index_type == IndexType::FTS {
        for (key, value) in &details {
            params.insert(key.clone(), render(value));
        }
    }
    params
}

/// Adds the parameters Lance's index statistics (JSON) hold to `params`.
pub(crate) fn add_statistics(index_type: &IndexType, statistics: &Value, params: &mut Params) {
    let keys: &[&str] = match index_type {
        t if is_vector(t) => &["num_partitions"],
        IndexType::BloomFilter => &["number_of_items", "probability"],
        IndexType::RTree => &["page_size"],
        IndexType::ZoneMap => &["rows_per_zone"],
        IndexType::FTS => {
            // The index's own tokenizer parameters: the details lack custom
            // stop words.
            if let Some(Value::Object(own)) = find(statistics, "params") {
                for (key, value) in own {
                    params.insert(key.clone(), render(value));
                }
            }
            &[]
        }
        _ => &[],
    };
    for key in keys {
        if let Some(v) = find(statistics, key) {
            params.insert((*key).into(), render(v));
        }
    }
}

/// The parameters of `index_type` a LanceDB 0.41 builder can set; the
/// others are recorded, and a change in them is reported, not refused.
pub(super) fn settable(index_type: &IndexType, key: &str) -> bool {
    match index_type {
        t if is_vector(t) => {
            matches!(
                key,
                "distance_type"
                    | "num_partitions"
                    | "target_partition_size"
                    | "sample_rate"
                    | "max_iterations"
            ) || (has_pq(t) && matches!(key, "num_sub_vectors" | "num_bits"))
                || (*t == IndexType::IvfRq && key == "num_bits")
                || (has_hnsw(t) && matches!(key, "m" | "ef_construction"))
        }
        IndexType::FTS => true,
        IndexType::BloomFilter => matches!(key, "number_of_items" | "probability"),
        IndexType::RTree => key == "page_size",
        _ => false,
    }
}

/// The parameters a LanceDB builder asks for: the ones set on it, by the
/// names [`from_details`] and [`add_statistics`] use.
pub(crate) fn requested(index: &Index) -> Params {
    let value = match index {
        Index::IvfFlat(b) => serde_json::to_value(b),
        Index::IvfSq(b) => serde_json::to_value(b),
        Index::IvfPq(b) => serde_json::to_value(b),
        Index::IvfRq(b) => serde_json::to_value(b),
        Index::IvfHnswPq(b) => serde_json::to_value(b),
        Index::IvfHnswSq(b) => serde_json::to_value(b),
        Index::IvfHnswFlat(b) => serde_json::to_value(b),
        Index::BloomFilter(b) => serde_json::to_value(b),
        Index::RTree(b) => serde_json::to_value(b),
        Index::FTS(b) => serde_json::to_value(b),
        _ => Ok(Value::Null),
    };
    let mut params = Params::new();
    if let Ok(Value::Object(map)) = value {
        for (key, value) in map {
            if key == "metric_type" {
                params.insert("distance_type".into(), render(&value).to_lowercase());
            } else if !value.is_null() {
                params.insert(key, render(&value));
            }
        }
    }
    if params.contains_key("num_partitions") {
        // LanceDB uses the partition count and ignores the target size.
        params.remove("target_partition_size");
    }
    params
}

/// Where `actual` differs from `expected`, on `expected`'s keys, but for
/// the partition count of an IVF index: Lance itself changes it, when it
/// trains (fewer partitions than asked for on too few rows) and when it
/// optimizes (it splits and joins partitions to keep them near their
/// target size), so a different count is said ([`partition_change`]),
/// not refused.
pub(crate) fn differences(expected: &Params, actual: &Params) -> Vec<String> {
    expected
        .iter()
        .filter(|(key, _)| key.as_str() != "num_partitions")
        .filter_map(|(key, want)| {
            let found = actual.get(key);
            let same = found.is_some_and(|f| f == want || same_number(f, want));
            (!same).then(|| {
                format!(
                    "{key} is {}, was {want}",
                    found.map_or("not recorded", String::as_str)
                )
            })
        })
        .collect()
}

/// Says so when an IVF index's partition count is not the expected one.
pub(crate) fn partition_change(expected: &Params, actual: &Params) -> Option<String> {
    let (want, found) = (
        expected.get("num_partitions")?,
        actual.get("num_partitions")?,
    );
    (want != found).then(|| {
        format!(
            "num_partitions {want} → {found}: Lance adjusts the partition count when it trains an index (fewer on few rows) and when it optimizes one (it splits and joins partitions)"
        )
    })
}

pub(super) fn same_number(a: &str, b: &str) -> bool {
    matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

/// Parameters that changed from `before` to `after` outside `expected`
/// (those LanceDB cannot set), said in words.
pub(crate) fn unsettable_changes(
    before: &Params,
    after: &Params,
    expected: &Params,
) -> Vec<String> {
    before
        .iter()
        .filter(|(key, _)| !expected.contains_key(*key))
        .filter_map(|(key, was)| {
            let now = after.get(key)?;
            (now != was && !same_number(now, was)).then(|| {
                format!("{key} {was} → {now} (LanceDB 0.41 cannot set it; its default was used)")
            })
        })
        .collect()
}
