//! The table's indexes across the migration: what they were, rebuilding
//! them as they were, and checking them after.

use crate::error::Result;
use crate::lance::indexes::{self, IndexSpec};

use super::MigrationContext;

impl MigrationContext {
    /// Rows an index check samples for its recall check.
    pub const RECALL_SAMPLE: usize = 20;
    /// The least share of sampled rows an indexed vector search must find by
    /// their own vector, in [`check_indexes`](Self::check_indexes).
    pub const MIN_RECALL: f64 = 0.9;

    /// The table's indexes before the migration (name, column, type,
    /// distance type, and the parameters Lance keeps in the manifest; see
    /// [`IndexSpec::parameters`] for those read only when an index is
    /// rebuilt).
    pub fn indexes_before(&self) -> &[IndexSpec] {
        &self.indexes_before
    }

    /// Makes every index the table had before the migration exist again on
    /// the column it now belongs to (following renames; a replaced column
    /// keeps its name), covering every row: recreates dropped ones under the
    /// same name, type and parameters, and indexes rows the migration
    /// rewrote. Indexes on columns the migration dropped are not recreated.
    /// The default [`Migration::rebuild`](crate::Migration::rebuild).
    ///
    /// The parameters are read from what Lance recorded of the index before
    /// the migration (see [`IndexSpec::parameters`]). One that cannot carry
    /// over — PQ sub-vectors that do not divide a re-embedded column's new
    /// dimension — is replaced by LanceDB's default for the new column, and
    /// the change is recorded as the detail `index_changed.<index>` (in the
    /// report and the ledger) and logged.
    ///
    /// # Errors
    ///
    /// [`Error::Index`](crate::Error::Index) when an index cannot be recreated (e.g. too few rows
    /// to train it); [`Error::IndexNotRecreatable`](crate::Error::IndexNotRecreatable) for an index type
    /// LanceDB has no builder for.
    pub async fn restore_indexes(&self) -> Result<()> {
        let recreated = indexes::restore(
            &self.table,
            &self.indexes_before,
            self.version_before,
            &self.fence,
        )
        .await?;
        if !recreated.is_empty() {
            let names: Vec<&str> = recreated.iter().map(|r| r.name.as_str()).collect();
            self.record_detail("indexes_recreated", names.join(","));
        }
        for index in recreated.iter().filter(|r| !r.changed.is_empty()) {
            self.record_detail(
                format!("index_changed.{}", index.name),
                index.changed.join("; "),
            );
        }
        Ok(())
    }

    /// Checks the indexes after the migration, with [`RECALL_SAMPLE`](Self::RECALL_SAMPLE)
    /// rows and [`MIN_RECALL`](Self::MIN_RECALL); see
    /// [`check_indexes_with`](Self::check_indexes_with).
    pub async fn check_indexes(&self) -> Result<()> {
        self.check_indexes_with(Self::RECALL_SAMPLE, Self::MIN_RECALL)
            .await
    }

    /// Checks that every index the table had before the migration (on a
    /// column that still exists) exists with the same type on that column;
    /// if it was rebuilt, with the same parameters and distance type as
    /// before (but for those [`restore_indexes`](Self::restore_indexes) had
    /// to change); has no unindexed rows; and, for vector indexes, that an
    /// indexed search for each of `sample` rows' own vector finds the row
    /// in the top 10 for at least `min_recall` of them. The hit rates are
    /// recorded as details (`recall.<index>`), and parameters that changed
    /// where LanceDB cannot set them (say an RQ rotation) as
    /// `index_changed.<index>`.
    ///
    /// # Errors
    ///
    /// [`Error::Index`](crate::Error::Index) naming the index and what is wrong.
    pub async fn check_indexes_with(&self, sample: usize, min_recall: f64) -> Result<()> {
        let checked = indexes::check(
            &self.table,
            &self.indexes_before,
            self.version_before,
            sample,
            min_recall,
        )
        .await?;
        for (index, rate) in checked.recall {
            self.record_detail(format!("recall.{index}"), format!("{rate:.3}"));
        }
        for (index, changed) in checked.changed {
            self.record_detail(format!("index_changed.{index}"), changed.join("; "));
        }
        Ok(())
    }
}
