//! The backfill's commits and its checkpoint store: finished fragments
//! committed in one `DataReplacement` each time, and the parts of a
//! fragment in progress saved in the table's config, so that a process that
//! dies mid-fragment resumes from its last part.

use std::collections::{HashMap, HashSet};

use lance::Dataset;
use lance::dataset::transaction::{
    DataReplacementGroup, Operation, Transaction, UpdateMap, UpdateMapEntry,
};
use lance::dataset::{DataFilePart, DataFileTarget};
use serde_json::json;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::lance::backfill::Backfill;
use crate::lance::retry::{retry_commit, single_attempt};

/// What one fragment's work produced, waiting for a commit.
pub(super) struct Filled {
    pub(super) group: DataReplacementGroup,
    pub(super) rows: u64,
    /// Set when the file was assembled from parts: they are removed after
    /// the commit.
    pub(super) target: Option<DataFileTarget>,
}

/// A saved, in-progress fragment.
pub(super) struct Checkpoint {
    pub(super) fragment: u64,
    pub(super) physical_rows: u64,
    pub(super) target: DataFileTarget,
    pub(super) parts: Vec<DataFilePart>,
}

impl Backfill<'_> {
    pub(super) async fn save_checkpoint(
        &self,
        fragment: u64,
        physical_rows: u64,
        target: &DataFileTarget,
        parts: &[DataFilePart],
    ) -> Result<()> {
        let value = json!({
            "fragment": fragment,
            "physical_rows": physical_rows,
            "target": target,
            "parts": parts,
        })
        .to_string();
        self.set_config(Some(value)).await?;
        debug!(fragment, parts = parts.len(), "checkpoint saved");
        Ok(())
    }

    async fn set_config(&self, value: Option<String>) -> Result<()> {
        let key = self.checkpoint_key.as_str();
        let operation = "save a checkpoint in the table config";
        retry_commit(operation, |_| async {
            self.fence.check()?;
            let dataset = self.latest().await?;
            let update = Operation::UpdateConfig {
                config_updates: Some(UpdateMap {
                    update_entries: vec![UpdateMapEntry {
                        key: key.to_owned(),
                        value: value.clone(),
                    }],
                    replace: false,
                }),
                table_metadata_updates: None,
                schema_metadata_updates: None,
                field_metadata_updates: HashMap::new(),
            };
            let transaction = Transaction::new(dataset.version().version, update, None);
            single_attempt(dataset)
                .execute(transaction)
                .await
                .map_err(Error::lance(operation))?;
            Ok(())
        })
        .await
    }

    pub(super) fn load_checkpoint(&self, dataset: &Dataset) -> Result<Option<Checkpoint>> {
        let Some(raw) = dataset.config().get(&self.checkpoint_key) else {
            return Ok(None);
        };
        let parsed = (|| {
            let v: serde_json::Value = serde_json::from_str(raw).ok()?;
            Some(Checkpoint {
                fragment: v.get("fragment")?.as_u64()?,
                physical_rows: v.get("physical_rows")?.as_u64()?,
                target: serde_json::from_value(v.get("target")?.clone()).ok()?,
                parts: serde_json::from_value(v.get("parts")?.clone()).ok()?,
            })
        })();
        if parsed.is_none() {
            warn!(
                key = self.checkpoint_key,
                "ignoring an unreadable checkpoint"
            );
        }
        Ok(parsed)
    }

    /// Commits the filled fragments in one `DataReplacement`, rebasing on
    /// concurrent commits. A fragment that another writer removed meanwhile
    /// (compaction, a delete of all its rows) is dropped from the commit: its
    /// rows, where they still exist, live in new fragments that the next
    /// pass fills.
    pub(super) async fn commit(&self, filled: Vec<Filled>, clear_checkpoint: bool) -> Result<()> {
        if filled.is_empty() {
            return Ok(());
        }
        let operation = format!("commit the filled column of `{}`", self.table.name());
        retry_commit(&operation, |_| async {
            self.fence.check()?;
            let dataset = self.latest().await?;
            let present: HashSet<u64> = dataset
                .get_fragments()
                .iter()
                .map(|f| f.id() as u64)
                .collect();
            let groups: Vec<DataReplacementGroup> = filled
                .iter()
                .filter(|f| present.contains(&f.group.0))
                .map(|f| f.group.clone())
                .collect();
            if groups.len() < filled.len() {
                warn!(
                    dropped = filled.len() - groups.len(),
                    "fragments were rewritten by another writer meanwhile; they are filled again"
                );
            }
            if groups.is_empty() {
                return Ok(());
            }
            let transaction = Transaction::new(
                dataset.version().version,
                Operation::DataReplacement {
                    replacements: groups,
                },
                None,
            );
            single_attempt(dataset)
                .execute(transaction)
                .await
                .map_err(Error::lance(operation.as_str()))?;
            Ok(())
        })
        .await?;
        crate::lance::latest_version(self.table).await?;
        if clear_checkpoint {
            self.set_config(None).await?;
        }
        let dataset = self.latest().await?;
        for target in filled.iter().filter_map(|f| f.target.as_ref()) {
            if let Err(e) = target.finish(&dataset).await {
                warn!(error = %e, "could not remove the parts of an assembled file");
            }
        }
        let rows: u64 = filled.iter().map(|f| f.rows).sum();
        debug!(fragments = filled.len(), rows, "filled fragments committed");
        Ok(())
    }
}
