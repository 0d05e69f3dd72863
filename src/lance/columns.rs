//! Adding all-NULL columns to a table the application keeps appending to.
//!
//! LanceDB's `add_columns` with `AllNulls` writes no data, but Lance commits
//! it as a `Merge`, which carries the whole fragment list and so conflicts
//! with every `Append` committed while it runs: beside an application that
//! appends every few milliseconds it must land in a gap between two appends,
//! and on a loaded machine it lost ten attempts in a row. The same schema
//! change committed as a `Project` (the new schema, fragments untouched,
//! `preserves_nullability` since every added column is nullable) rebases over
//! appends instead: their fragments have no data for the new columns and
//! read them as NULL, exactly as after the `Merge`. Only another schema
//! change conflicts with it.

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Schema as ArrowSchema, SchemaRef};
use lance::Dataset;
use lance::dataset::BatchUDF;
use lance::dataset::transaction::{Operation, Transaction};
use lancedb::Table;
use lancedb::table::NewColumnTransform;

use crate::error::{Error, Result};
use crate::lance::fence::Fence;
use crate::lance::retry::{retry_commit, single_attempt};
use crate::lance::{dataset, latest_version};

/// Adds `columns` (all nullable) to `table`, all NULL, in one commit that
/// does not conflict with appends; returns the version it committed.
/// Retried on conflicts with other schema changes, each attempt after
/// checking `fence`. Remote tables go through LanceDB's `add_columns`.
pub(crate) async fn add_null_columns(
    table: &Table,
    columns: &ArrowSchema,
    fence: &Fence,
) -> Result<u64> {
    let operation = format!("add columns to `{}`", table.name());
    if let Some(field) = columns.fields().iter().find(|f| !f.is_nullable()) {
        return Err(Error::lance(operation.as_str())(
            lance::Error::invalid_input(format!(
                "column `{}` must be nullable to be added all-NULL",
                field.name()
            )),
        ));
    }
    let columns_arc = std::sync::Arc::new(columns.clone());
    let version = retry_commit(&operation, |_| async {
        fence.check()?;
        latest_version(table).await?;
        match dataset(table).await? {
            Some(dataset) if !legacy_format(&dataset) => {
                let lance = Error::lance(operation.as_str());
                let transaction = widened(&dataset, columns).map_err(&lance)?;
                let committed = single_attempt(dataset)
                    .execute(transaction)
                    .await
                    .map_err(&lance)?;
                // The handle moves on, so that the caller's next LanceDB
                // write reads the new schema.
                Ok(crate::lance::fragments::moved_to(table, committed))
            }
            // A remote table, or one in Lance's legacy file format (which
            // cannot read a column it has no data for: LanceDB refuses the
            // add too). LanceDB moves the handle on.
            _ => {
                let added = table
                    .add_columns()
                    .transform(NewColumnTransform::AllNulls(columns_arc.clone()))
                    .execute()
                    .await
                    .map_err(Error::lance(operation.as_str()))?;
                Ok(added.version)
            }
        }
    })
    .await?;
    Ok(version)
}

/// Whether LanceDB writes `table`'s data in this process (a local or
/// object-store table), so that [`constant_columns`] can add to it; `false`
/// for a remote (LanceDB Cloud) table.
pub(crate) fn writes_here(table: &Table) -> bool {
    table.dataset().is_some()
}

/// A transform for LanceDB's `add_columns` (with `read_columns` empty: it
/// reads none of the table's columns) that writes `columns`, each row's
/// values a copy of `values` (one value per column, in order): one commit,
/// with the nullability `columns` declares. An SQL literal comes out NOT
/// NULL, and a nullable column added from one needs a second commit to
/// say so. Not for remote tables ([`writes_here`]).
pub(crate) fn constant_columns(columns: SchemaRef, values: Vec<ArrayRef>) -> NewColumnTransform {
    let schema = columns.clone();
    let mapper = move |batch: &RecordBatch| {
        let repeat = arrow_array::UInt32Array::from(vec![0; batch.num_rows()]);
        let arrays = values
            .iter()
            .map(|one| arrow_select::take::take(one.as_ref(), &repeat, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(schema.clone(), arrays)?)
    };
    NewColumnTransform::BatchUDF(BatchUDF {
        mapper: Box::new(mapper),
        output_schema: columns,
        result_checkpoint: None,
    })
}

/// The transaction that adds `columns` (nullable, without data) to
/// `dataset`'s schema, read at its version.
fn widened(dataset: &Dataset, columns: &ArrowSchema) -> lance::Result<Transaction> {
    let mut schema = dataset.schema().merge(columns)?;
    schema.try_set_field_id(Some(dataset.manifest.max_field_id()))?;
    Ok(Transaction::new(
        dataset.version().version,
        Operation::Project {
            schema,
            preserves_nullability: true,
        },
        None,
    ))
}

/// Whether `dataset` is in Lance's legacy (v1) file format.
fn legacy_format(dataset: &Dataset) -> bool {
    dataset
        .manifest
        .data_storage_format
        .lance_file_format()
        .to_manifest_string()
        .starts_with("0.")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int32Array, RecordBatch};
    use arrow_schema::{DataType, Field};
    use lance::dataset::CommitBuilder;

    use super::*;
    use crate::lance::local_dataset;

    fn ids(range: std::ops::Range<i32>) -> RecordBatch {
        let schema = Arc::new(ArrowSchema::new(vec![Field::new(
            "id",
            DataType::Int32,
            false,
        )]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from_iter_values(range))]).unwrap()
    }

    /// The add commits after an append that landed since it read the table
    /// (as the application's do while the migration commits), and the
    /// appended rows read the new column as NULL. LanceDB's own all-null add
    /// (a `Merge`) conflicts with that append instead.
    #[tokio::test]
    async fn the_add_commits_past_an_append_that_landed_since_it_read() {
        let db = lancedb::connect("memory://").execute().await.unwrap();
        let table = db.create_table("t", ids(0..10)).execute().await.unwrap();
        let column = |name: &str| ArrowSchema::new(vec![Field::new(name, DataType::Utf8, true)]);

        let read = local_dataset(&table).await.unwrap();
        let add = widened(&read, &column("note")).unwrap();
        table.add(ids(10..15)).execute().await.unwrap();
        CommitBuilder::new(read)
            .with_max_retries(1)
            .execute(add)
            .await
            .expect("the add rebases over the append");
        latest_version(&table).await.unwrap();
        let dataset = local_dataset(&table).await.unwrap();
        assert_eq!(dataset.count_rows(None).await.unwrap(), 15);
        assert_eq!(
            dataset
                .count_rows(Some("note IS NULL".to_owned()))
                .await
                .unwrap(),
            15
        );
        assert!(dataset.schema().field("note").unwrap().nullable);

        // LanceDB's (Lance's) all-null add, the same way: it conflicts.
        let mut read = (*local_dataset(&table).await.unwrap()).clone();
        table.add(ids(15..20)).execute().await.unwrap();
        let merged = read
            .add_columns(
                lance::dataset::NewColumnTransform::AllNulls(Arc::new(column("other"))),
                None,
                None,
            )
            .await;
        assert!(merged.is_err(), "a Merge conflicts with the append");

        // The helper itself, on the table as it is now.
        let version = add_null_columns(&table, &column("other"), &Fence::default())
            .await
            .unwrap();
        assert_eq!(latest_version(&table).await.unwrap(), version);
        let dataset = local_dataset(&table).await.unwrap();
        assert_eq!(
            dataset
                .count_rows(Some("other IS NULL".to_owned()))
                .await
                .unwrap(),
            20
        );
    }

    /// Constants added in one commit keep the nullability their schema
    /// declares (SQL literals come out NOT NULL), and every row, in every
    /// fragment, holds them.
    #[tokio::test]
    async fn constants_are_added_in_one_commit_with_their_nullability() {
        let db = lancedb::connect("memory://").execute().await.unwrap();
        let table = db.create_table("t", ids(0..10)).execute().await.unwrap();
        table.add(ids(10..25)).execute().await.unwrap();
        let columns = Arc::new(ArrowSchema::new(vec![
            Field::new("note", DataType::Utf8, true),
            Field::new("flag", DataType::Int32, false),
        ]));
        let values: Vec<ArrayRef> = vec![
            Arc::new(arrow_array::StringArray::from(vec!["x"])),
            Arc::new(Int32Array::from(vec![7])),
        ];
        let before = table.version().await.unwrap();
        table
            .add_columns()
            .transform(constant_columns(columns, values))
            .read_columns(Vec::<String>::new())
            .execute()
            .await
            .unwrap();
        assert_eq!(table.version().await.unwrap(), before + 1);
        let schema = table.schema().await.unwrap();
        assert!(schema.field_with_name("note").unwrap().is_nullable());
        assert!(!schema.field_with_name("flag").unwrap().is_nullable());
        let dataset = local_dataset(&table).await.unwrap();
        assert_eq!(dataset.get_fragments().len(), 2);
        let matching = dataset
            .count_rows(Some("note = 'x' AND flag = 7".to_owned()))
            .await
            .unwrap();
        assert_eq!(matching, 25);
        // An append without the nullable column is accepted.
        let append = RecordBatch::try_new(
            Arc::new(ArrowSchema::new(vec![
                Field::new("id", DataType::Int32, false),
                Field::new("flag", DataType::Int32, false),
            ])),
            vec![
                Arc::new(Int32Array::from(vec![99])),
                Arc::new(Int32Array::from(vec![1])),
            ],
        )
        .unwrap();
        table.add(append).execute().await.unwrap();
        assert_eq!(
            table
                .count_rows(Some("note IS NULL".to_owned()))
                .await
                .unwrap(),
            1
        );
    }

    /// A column must be nullable to be added without data.
    #[tokio::test]
    async fn a_not_null_column_is_refused() {
        let db = lancedb::connect("memory://").execute().await.unwrap();
        let table = db.create_table("t", ids(0..3)).execute().await.unwrap();
        let column = ArrowSchema::new(vec![Field::new("n", DataType::Int32, false)]);
        let err = add_null_columns(&table, &column, &Fence::default())
            .await
            .unwrap_err();
        let message = crate::error::chain(&err);
        assert!(message.contains("must be nullable"), "{message}");
        assert_eq!(latest_version(&table).await.unwrap(), 1);
    }
}
