//! What a migration says it will do, for dry runs
//! ([`Migration::plan`](crate::Migration::plan)): the work, and what the
//! plan knows of the table before it.

use std::fmt;

use arrow_schema::Schema;

use crate::lance::indexes::IndexSpec;

/// What a plan knows of a table before a pending migration: its row count
/// and indexes now, and its schema as the earlier pending migrations of the
/// plan will leave it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TableInfo {
    /// The table's name.
    pub name: String,
    /// Rows in the table now.
    pub rows: u64,
    /// The schema the migration will find.
    pub schema: Schema,
    /// The table's indexes now.
    pub indexes: Vec<IndexSpec>,
}

impl TableInfo {
    /// Names of the indexes on `column`.
    pub fn indexes_on(&self, column: &str) -> Vec<String> {
        self.indexes
            .iter()
            .filter(|i| i.column == column)
            .map(|i| i.name.clone())
            .collect()
    }

    /// The indexes on `column`, as a migration that replaces the column
    /// with one of `dimension` dimensions (vectors; `None` otherwise) will
    /// build them again: same type, their parameters as the rebuild sets
    /// them (PQ sub-vectors that do not divide the new dimension become
    /// LanceDB's default for it). For [`MigrationPlan::rebuilds`].
    pub fn rebuilt_on(&self, column: &str, dimension: Option<usize>) -> Vec<IndexSpec> {
        self.indexes
            .iter()
            .filter(|i| i.column == column)
            .map(|i| i.rebuilt(dimension))
            .collect()
    }
}

/// How much data a migration writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Writes {
    /// A metadata-only commit; no data files are written.
    MetadataOnly,
    /// New column data for this many rows; existing columns are not
    /// rewritten.
    Columns {
        /// Rows written.
        rows: u64,
    },
    /// An index over this many rows.
    Index {
        /// Rows indexed.
        rows: u64,
    },
    /// The migration does not say (a custom migration's transform).
    Unknown,
}

impl fmt::Display for Writes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MetadataOnly => f.write_str("metadata only"),
            Self::Columns { rows } => write!(f, "writes columns for {rows} rows"),
            Self::Index { rows } => write!(f, "indexes {rows} rows"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// What one pending migration will do, from
/// [`Migration::plan`](crate::Migration::plan).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct MigrationPlan {
    /// One line saying what it does.
    pub summary: String,
    /// How much data it writes.
    pub writes: Writes,
    /// Columns it adds or changes.
    pub columns: Vec<String>,
    /// Indexes it builds or rebuilds.
    pub indexes: Vec<String>,
    /// Indexes the table has that it builds again as they were (same type
    /// and parameters), because it replaces their column: with the
    /// parameters they will have.
    pub rebuilds: Vec<IndexSpec>,
}

impl MigrationPlan {
    /// Work described by `summary`, writing an unknown amount of data.
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            writes: Writes::Unknown,
            columns: Vec::new(),
            indexes: Vec::new(),
            rebuilds: Vec::new(),
        }
    }

    /// Sets how much data it writes.
    #[must_use]
    pub fn writes(mut self, writes: Writes) -> Self {
        self.writes = writes;
        self
    }

    /// Sets the columns it adds or changes.
    #[must_use]
    pub fn columns(mut self, columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.columns = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the indexes it builds or rebuilds.
    #[must_use]
    pub fn indexes(mut self, indexes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.indexes = indexes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the existing indexes it builds again as they were (e.g. from
    /// [`TableInfo::rebuilt_on`]); adds their names to
    /// [`indexes`](Self::indexes). Before anything is written, a run
    /// refuses a migration naming an index LanceDB cannot build
    /// ([`Error::IndexNotRecreatable`](crate::Error::IndexNotRecreatable)).
    #[must_use]
    pub fn rebuilds(mut self, indexes: impl IntoIterator<Item = IndexSpec>) -> Self {
        self.rebuilds = indexes.into_iter().collect();
        for spec in &self.rebuilds {
            if !self.indexes.contains(&spec.name) {
                self.indexes.push(spec.name.clone());
            }
        }
        self
    }
}
