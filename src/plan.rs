//! Dry runs: what each migration will do, estimated without changing
//! anything, and where each stands in the ledger.

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
    /// LanceDB's default for it). For [`Work::rebuilds`].
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
#[non_exhaustive]
pub struct Work {
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

impl Work {
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

/// Where a migration stands, in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanState {
    /// Not applied: the next run applies it.
    Pending,
    /// Applied, and unchanged since.
    Applied,
    /// Applied, but its definition changed since: the next run fails with
    /// [`Error::Drift`](crate::Error::Drift).
    Drifted {
        /// The checksum recorded when it was applied.
        applied: String,
        /// The checksum of the definition given now.
        current: String,
    },
    /// Its last attempt failed (and was rolled back): the next run tries it
    /// again.
    Failed {
        /// The recorded error.
        error: String,
    },
    /// Its last attempt was interrupted: the next run recovers it.
    Interrupted,
    /// Rolled back by [`Migrator::rollback_to`](crate::Migrator::rollback_to):
    /// the next run applies it again.
    RolledBack,
    /// The next run would refuse it before writing anything.
    Refused {
        /// Why, as the run's error would say.
        reason: String,
    },
}

impl PlanState {
    /// Whether the next run would apply it (pending, failed, interrupted or
    /// rolled back).
    pub fn will_run(&self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Failed { .. } | Self::Interrupted | Self::RolledBack
        )
    }
}

impl fmt::Display for PlanState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pending => f.write_str("pending"),
            Self::Applied => f.write_str("applied"),
            Self::Drifted { .. } => f.write_str("DRIFTED (edited after it was applied)"),
            Self::Failed { .. } => f.write_str("failed, will retry"),
            Self::Interrupted => f.write_str("interrupted, will recover"),
            Self::RolledBack => f.write_str("rolled back, will re-apply"),
            Self::Refused { reason } => write!(f, "WOULD FAIL: {reason}"),
        }
    }
}

/// One migration in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanStep {
    /// The migration's id.
    pub id: String,
    /// The table it migrates.
    pub table: String,
    /// Where it stands.
    pub state: PlanState,
    /// What it will do, for migrations the next run applies.
    pub work: Option<Work>,
}

/// The result of [`Migrator::plan`](crate::Migrator::plan): every migration
/// of the migrator, in order, with its state and, for those the next run
/// applies, the work it will do. Displays as a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    steps: Vec<PlanStep>,
}

impl Plan {
    pub(crate) fn new(steps: Vec<PlanStep>) -> Self {
        Self { steps }
    }

    /// Every migration, in order.
    pub fn steps(&self) -> &[PlanStep] {
        &self.steps
    }

    /// The migrations the next run applies.
    pub fn pending(&self) -> impl Iterator<Item = &PlanStep> {
        self.steps.iter().filter(|s| s.state.will_run())
    }

    /// Whether the next run would fail before applying anything new: some
    /// migration is drifted or would be refused.
    pub fn has_problems(&self) -> bool {
        self.steps.iter().any(|s| {
            matches!(
                s.state,
                PlanState::Drifted { .. } | PlanState::Refused { .. }
            )
        })
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            return f.write_str("no migrations");
        }
        for step in &self.steps {
            write!(f, "{} on `{}`: {}", step.id, step.table, step.state)?;
            if let Some(work) = &step.work {
                write!(f, "\n    {} ({})", work.summary, work.writes)?;
                if !work.columns.is_empty() {
                    write!(f, "; columns: {}", work.columns.join(", "))?;
                }
                let built: Vec<&String> = work
                    .indexes
                    .iter()
                    .filter(|name| !work.rebuilds.iter().any(|r| &r.name == *name))
                    .collect();
                if !built.is_empty() {
                    let names: Vec<&str> = built.iter().map(|n| n.as_str()).collect();
                    write!(f, "; indexes: {}", names.join(", "))?;
                }
                for spec in &work.rebuilds {
                    write!(f, "\n    rebuilds index {spec}")?;
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
