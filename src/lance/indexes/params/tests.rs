//! Reading and rebuilding an index's parameters.

use lancedb::index::IndexType;

use super::read::*;
use super::*;

#[test]
pub(super) fn vector_details_are_read_under_builder_names() {
    let details = r#"{"metric_type":"COSINE","hnsw":{"max_connections":12,"construction_ef":150},
        "compression":{"type":"pq","num_bits":8,"num_sub_vectors":4},
        "runtime_hints":{"lance.ivf.sample_rate":"128","lance.ivf.max_iters":"20","lance.skip_transpose":"false"}}"#;
    let params = from_details(&IndexType::IvfHnswPq, details);
    let want: Params = [
        ("distance_type", "cosine"),
        ("m", "12"),
        ("ef_construction", "150"),
        ("num_bits", "8"),
        ("num_sub_vectors", "4"),
        ("sample_rate", "128"),
        ("max_iterations", "20"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(params, want);
    let rebuilt = recreate(&IndexType::IvfHnswPq, &params, Some(32)).unwrap();
    assert!(rebuilt.changed.is_empty());
    assert_eq!(requested(&rebuilt.index), rebuilt.expected);
}

#[test]
pub(super) fn sub_vectors_that_do_not_divide_the_new_dimension_are_replaced_and_said() {
    let params: Params = [("num_sub_vectors", "6"), ("num_bits", "8")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let rebuilt = recreate(&IndexType::IvfPq, &params, Some(64)).unwrap();
    assert_eq!(rebuilt.expected["num_sub_vectors"], "4");
    assert_eq!(rebuilt.changed.len(), 1, "{:?}", rebuilt.changed);
    assert!(
        rebuilt.changed[0].contains("6 → 4"),
        "{:?}",
        rebuilt.changed
    );
    let kept = recreate(&IndexType::IvfPq, &params, Some(48)).unwrap();
    assert_eq!(kept.expected["num_sub_vectors"], "6");
    assert!(kept.changed.is_empty());
}

#[test]
pub(super) fn unknown_index_types_are_refused_with_a_reason() {
    let err = recreate(&IndexType::Custom("minhash".into()), &Params::new(), None)
        .expect_err("no builder");
    assert!(err.contains("no builder"), "{err}");
}

#[test]
pub(super) fn differences_compare_numbers_by_value() {
    let want: Params = [("probability".to_owned(), "0.010".to_owned())].into();
    let same: Params = [("probability".to_owned(), "0.01".to_owned())].into();
    let other: Params = [("probability".to_owned(), "0.02".to_owned())].into();
    assert!(differences(&want, &same).is_empty());
    assert_eq!(differences(&want, &other).len(), 1);
    assert_eq!(differences(&want, &Params::new()).len(), 1);
    let four: Params = [("num_partitions".to_owned(), "4".to_owned())].into();
    let two: Params = [("num_partitions".to_owned(), "2".to_owned())].into();
    assert!(differences(&four, &two).is_empty());
    assert!(partition_change(&four, &two).unwrap().contains("4 → 2"));
    assert_eq!(partition_change(&four, &four), None);
}
