//! [`IndexSpec`]: an index of a table as Lance records it.

use std::collections::BTreeMap;
use std::fmt;

use lancedb::DistanceType;
use lancedb::index::IndexType;

use super::params;

/// An index of a table, as recorded before a migration: its name, column,
/// type and the parameters it was built with.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IndexSpec {
    /// The index's name.
    pub name: String,
    /// The column it is on.
    pub column: String,
    /// The Lance field id of that column (follows renames).
    pub field_id: Option<i32>,
    /// Its type.
    pub index_type: IndexType,
    /// Its distance type, for vector indexes.
    pub distance_type: Option<DistanceType>,
    /// Lance's description of its parameters (JSON), when Lance has one.
    pub details: Option<String>,
    /// The parameters it was built with, under the names of LanceDB's
    /// builder methods (`num_partitions`, `num_sub_vectors`, `m`,
    /// `ef_construction`, `sample_rate`, `language`, `stem`,
    /// `number_of_items`, …); values as text. Those Lance keeps only in
    /// the index files (a vector index's partition count, a bloom filter's
    /// sizes, FTS custom stop words) are read when the index is rebuilt or
    /// planned, and are absent from the cheaper snapshot a migration takes
    /// when it starts.
    pub parameters: BTreeMap<String, String>,
    /// The ids of the index's segments (which change when it is rebuilt).
    pub(crate) segments: Vec<String>,
}

// `DistanceType` has no `Eq` only because nobody derived it: no floats.
impl Eq for IndexSpec {}

impl IndexSpec {
    /// Whether this is a vector index.
    pub fn is_vector(&self) -> bool {
        params::is_vector(&self.index_type)
    }

    /// How this index is built again on a column of `dims` dimensions.
    pub(crate) fn recreate(
        &self,
        dims: Option<usize>,
    ) -> std::result::Result<params::Recreate, String> {
        params::recreate(&self.index_type, &self.parameters, dims)
    }

    /// This index as it will be built again on a column of `dims`
    /// dimensions: its parameters as the rebuild sets them. Itself when it
    /// cannot be rebuilt.
    pub(crate) fn rebuilt(&self, dims: Option<usize>) -> Self {
        let mut spec = self.clone();
        if let Ok(rebuild) = self.recreate(dims) {
            spec.parameters.extend(rebuild.expected);
        }
        spec
    }
}

impl fmt::Display for IndexSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} on `{}`", self.name, self.index_type, self.column)?;
        if let Some(d) = self.distance_type {
            write!(f, ", {d}")?;
        }
        let mut first = true;
        for (key, value) in &self.parameters {
            if key == "distance_type" {
                continue;
            }
            f.write_str(if first { "; " } else { ", " })?;
            first = false;
            write!(f, "{key}={value}")?;
        }
        f.write_str(")")
    }
}

/// `{"name", "column", "index_type", "distance_type", "parameters"}`: the
/// index and distance types as LanceDB names them (`IVF_PQ`, `cosine`).
#[cfg(feature = "serde")]
impl serde::Serialize for IndexSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("IndexSpec", 5)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("column", &self.column)?;
        st.serialize_field("index_type", &self.index_type.to_string())?;
        st.serialize_field("distance_type", &self.distance_type.map(|d| d.to_string()))?;
        st.serialize_field("parameters", &self.parameters)?;
        st.end()
    }
}
