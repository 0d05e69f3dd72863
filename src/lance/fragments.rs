//! A small table rewritten whole in one Lance `Update` commit: the ledger's
//! path from `running` to `applied`, with none of `merge_insert`'s query
//! planning (about half its cost, measured), leaving it one fragment.

use arrow_array::RecordBatch;
use lance::Dataset;
use lance::dataset::transaction::{Operation, Transaction};
use lance::dataset::{CommitBuilder, InsertBuilder, WriteMode, WriteParams};
use lancedb::Table;

use crate::error::{Error, Result};
use crate::lance::local_dataset;

/// Replaces every fragment of `table` (as the handle sees it) by one new
/// fragment holding `batch`, in one `Update` commit, and moves the handle
/// to it: a small table rewritten whole (the ledger). Returns the new
/// version; `None` when Lance wrote the batch as something other than new
/// fragments (nothing committed).
pub(crate) async fn replace_all(table: &Table, batch: RecordBatch) -> Result<Option<u64>> {
    let dataset = local_dataset(table).await?;
    let removed = dataset
        .get_fragments()
        .iter()
        .map(|f| f.id() as u64)
        .collect();
    let replace = || Error::lance(format!("replace rows of `{}`", table.name()));
    let params = WriteParams {
        mode: WriteMode::Append,
        ..Default::default()
    };
    let written = InsertBuilder::new(dataset.clone())
        .with_params(&params)
        .execute_uncommitted(vec![batch])
        .await
        .map_err(replace())?;
    let Operation::Append { fragments } = written.operation else {
        return Ok(None);
    };
    let update = Operation::Update {
        removed_fragment_ids: removed,
        updated_fragments: Vec::new(),
        new_fragments: fragments,
        fields_modified: Vec::new(),
        compacted_sstables: Vec::new(),
        fields_for_preserving_frag_bitmap: Vec::new(),
        update_mode: None,
        inserted_rows_filter: None,
        updated_fragment_offsets: None,
    };
    let transaction = Transaction::new(dataset.version().version, update, None);
    let committed = CommitBuilder::new(dataset)
        .execute(transaction)
        .await
        .map_err(replace())?;
    Ok(Some(moved_to(table, committed)))
}

/// Moves `table`'s handle to `committed`, a version this process just
/// committed to it past the handle (as LanceDB does after its own writes;
/// finding the latest version instead is a listing on an object store), and
/// returns that version.
pub(crate) fn moved_to(table: &Table, committed: Dataset) -> u64 {
    let version = committed.version().version;
    if let Some(handle) = table.dataset() {
        handle.update(committed);
    }
    version
}
