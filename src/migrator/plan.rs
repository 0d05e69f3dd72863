//! [`Migrator::plan`](crate::Migrator::plan)'s work: each migration's state
//! from the ledger, and what a pending one will do, from its
//! [`Migration::plan`] against the table as the earlier pending migrations
//! leave it.

use std::collections::HashMap;

use lancedb::Connection;

use crate::error::{Error, Result};
use crate::lance::indexes;
use crate::ledger::{LedgerEntry, Status};
use crate::migration::Migration;
use crate::plan::{Plan, PlanState, PlanStep, TableInfo, Work};

/// Builds the plan of `migrations` against `db`, given the ledger's rows.
pub(crate) async fn plan(
    db: &Connection,
    migrations: &[Box<dyn Migration>],
    entries: &HashMap<String, LedgerEntry>,
) -> Result<Plan> {
    // Per table: its state as the plan's earlier pending migrations leave it.
    let mut tables: HashMap<String, Option<TableInfo>> = HashMap::new();
    let mut steps = Vec::new();
    for m in migrations {
        let mut state = ledger_state(m.as_ref(), entries.get(m.id()));
        let mut work = None;
        if state.will_run() {
            if !tables.contains_key(m.table()) {
                let info = table_info(db, m.table()).await?;
                tables.insert(m.table().to_owned(), info);
            }
            let info = tables.get_mut(m.table()).expect("inserted above");
            match pending_work(m.as_ref(), info)? {
                Ok(planned) => work = Some(planned),
                Err(refused) => state = refused,
            }
        }
        steps.push(PlanStep {
            id: m.id().to_owned(),
            table: m.table().to_owned(),
            state,
            work,
        });
    }
    Ok(Plan::new(steps))
}

/// Where `m` stands according to its ledger row.
fn ledger_state(m: &dyn Migration, entry: Option<&LedgerEntry>) -> PlanState {
    let Some(entry) = entry else {
        return PlanState::Pending;
    };
    match entry.status {
        Status::Applied => {
            let (applied, current) = (entry.checksum.clone(), m.checksum());
            if applied == current {
                PlanState::Applied
            } else {
                PlanState::Drifted { applied, current }
            }
        }
        Status::Failed => PlanState::Failed {
            error: entry.error.clone().unwrap_or_default(),
        },
        Status::Running => PlanState::Interrupted,
        Status::RolledBack => PlanState::RolledBack,
    }
}

/// The work pending migration `m` will do on `table` (then left as `m`
/// leaves it, for the next migration's plan), or the refusal the run would
/// meet.
fn pending_work(
    m: &dyn Migration,
    table: &mut Option<TableInfo>,
) -> Result<std::result::Result<Work, PlanState>> {
    let Some(info) = table else {
        let missing = Error::TableNotFound {
            table: m.table().to_owned(),
        };
        return Ok(Err(PlanState::Refused {
            reason: missing.to_string(),
        }));
    };
    match m.expected_schema(&info.schema) {
        Err(e) => Ok(Err(PlanState::Refused {
            reason: e.to_string(),
        })),
        Ok(after) => {
            let work = m.plan(info)?;
            info.schema = after;
            Ok(Ok(work))
        }
    }
}

/// The table's rows, schema and indexes; `None` when it does not exist.
async fn table_info(db: &Connection, name: &str) -> Result<Option<TableInfo>> {
    let table = match db.open_table(name).execute().await {
        Ok(table) => table,
        Err(lancedb::Error::TableNotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::lance(format!("open table `{name}`"))(e)),
    };
    let read = |what: &str| Error::lance(format!("read the {what} of `{name}`"));
    let schema = table.schema().await.map_err(read("schema"))?;
    let rows = table.count_rows(None).await.map_err(read("row count"))? as u64;
    let indexes = indexes::snapshot_described(&table).await?;
    Ok(Some(TableInfo {
        name: name.to_owned(),
        rows,
        schema: schema.as_ref().clone(),
        indexes,
    }))
}
