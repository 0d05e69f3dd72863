//! The end of a backfill into a staging column: one metadata-only commit
//! that gives the staging column the target's name and position and drops
//! the column it replaces.

use std::collections::HashMap;

use lance::dataset::transaction::{Operation, Transaction};
use lance::datatypes::Schema;
use tracing::info;

use crate::error::{Error, Result};
use crate::lance::backfill::Backfill;
use crate::lance::retry::{retry_commit, single_attempt};

/// Rewrites a table's schema metadata for a new field order: given the
/// column names before and after the swap, in order, and the metadata.
pub(crate) type RewriteMetadata<'m> =
    &'m (dyn Fn(&[&str], &[&str], &HashMap<String, String>) -> HashMap<String, String> + Sync);

impl Backfill<'_> {
    /// Swaps the filled (staging) column in as `target`: it takes `target`'s
    /// name and position (or keeps its own position when there is no
    /// `target` yet), gains `field_metadata`, and the schema metadata is
    /// rewritten by `rewrite`. Retried on conflicts with concurrent commits.
    ///
    /// The commit conflicts with appends committed concurrently
    /// (`preserves_nullability: false`): an application instance still
    /// writing rows in the old column cannot have them rebased past the
    /// swap (they would read as NULL); it gets an error instead. Does
    /// nothing when the swap is already done (an earlier attempt).
    pub(crate) async fn swap_into(
        &self,
        target: &str,
        field_metadata: &HashMap<String, String>,
        rewrite: RewriteMetadata<'_>,
    ) -> Result<()> {
        self.swap_keeping(target, None, field_metadata, rewrite)
            .await
    }

    /// [`swap_into`](Self::swap_into), keeping the column it replaces under
    /// the name `kept` (in the staging column's place) when given: rows
    /// appended with a value in it after the last pass can then still be
    /// filled from it.
    pub(crate) async fn swap_keeping(
        &self,
        target: &str,
        kept: Option<&str>,
        field_metadata: &HashMap<String, String>,
        rewrite: RewriteMetadata<'_>,
    ) -> Result<()> {
        let operation = format!("swap the filled column in as `{target}`");
        retry_commit(&operation, |_| async {
            let dataset = self.latest().await?;
            let swapped = self.swapped(dataset.schema(), target, kept, field_metadata, rewrite)?;
            let Some(schema) = swapped else {
                // Already swapped: swapping again would drop the column.
                return Ok(());
            };
            self.fence.check()?;
            let transaction = Transaction::new(
                dataset.version().version,
                Operation::Project {
                    schema,
                    preserves_nullability: false,
                },
                None,
            );
            single_attempt(dataset.clone())
                .execute(transaction)
                .await
                .map_err(Error::lance(operation.as_str()))?;
            info!(
                table = self.table.name(),
                column = target,
                "filled column swapped in"
            );
            Ok(())
        })
        .await?;
        crate::lance::latest_version(self.table).await?;
        Ok(())
    }

    /// The schema after the swap; `None` when `old` has it done already.
    fn swapped(
        &self,
        old: &Schema,
        target: &str,
        kept: Option<&str>,
        field_metadata: &HashMap<String, String>,
        rewrite: RewriteMetadata<'_>,
    ) -> Result<Option<Schema>> {
        let mut staged =
            old.field_by_id(self.field_id)
                .cloned()
                .ok_or_else(|| Error::ChangedConcurrently {
                    table: self.table.name().to_owned(),
                    what: format!("the staging column for `{target}` was dropped"),
                })?;
        if staged.name == target {
            return Ok(None);
        }
        staged.name = target.to_owned();
        staged
            .metadata
            .extend(field_metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut schema = old.clone();
        let replaced = old.fields.iter().find(|f| f.name == target);
        schema.fields = old
            .fields
            .iter()
            .filter_map(|f| match (f.id == self.field_id, replaced, kept) {
                // The staging column's place: the replaced column, kept.
                (true, Some(replaced), Some(kept)) => {
                    let mut kept_field = replaced.clone();
                    kept_field.name = kept.to_owned();
                    Some(kept_field)
                }
                (true, Some(_), None) => None,
                (true, None, _) => Some(staged.clone()),
                (false, ..) if f.name == target => Some(staged.clone()),
                (false, ..) => Some(f.clone()),
            })
            .collect();
        let names =
            |s: &Schema| -> Vec<String> { s.fields.iter().map(|f| f.name.clone()).collect() };
        let (before, after) = (names(old), names(&schema));
        let before: Vec<&str> = before.iter().map(String::as_str).collect();
        let after: Vec<&str> = after.iter().map(String::as_str).collect();
        schema.metadata = rewrite(&before, &after, &old.metadata);
        schema
            .validate()
            .map_err(Error::lance("build the swapped schema"))?;
        Ok(Some(schema))
    }
}
