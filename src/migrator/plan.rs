//! Dry runs ([`Migrator::plan`](crate::Migrator::plan)): the [`Plan`] of
//! the next run, each migration's state from the ledger, and what a
//! pending one will do, from its [`Migration::plan`] against the table as
//! the earlier pending migrations leave it.

use std::collections::HashMap;
use std::fmt;

use lancedb::Connection;

use crate::error::{Error, Result};
use crate::lance::indexes;
use crate::ledger::{LedgerEntry, LedgerStatus};
use crate::migration::Migration;
use crate::migration::{MigrationPlan, TableInfo};
use crate::migrator::divergence;
use crate::migrator::{Migrator, by_id};

/// Where a migration stands, in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "state", rename_all = "snake_case")
)]
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
    /// The next run would fail on it before writing anything (bad input:
    /// a missing table or column, a wrong type).
    WouldFail {
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
            Self::WouldFail { reason } => write!(f, "WOULD FAIL: {reason}"),
        }
    }
}

/// One migration in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PlanStep {
    /// The migration's id.
    pub id: String,
    /// The table it migrates.
    pub table: String,
    /// Where it stands.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub state: PlanState,
    /// What it will do, for migrations the next run applies.
    pub work: Option<MigrationPlan>,
}

/// The result of [`Migrator::plan`](crate::Migrator::plan): every migration
/// of the migrator, in order, with its state and, for those the next run
/// applies, the work it will do. Displays as a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Plan {
    steps: Vec<PlanStep>,
    unlisted: Vec<String>,
}

impl Plan {
    pub(crate) fn new(steps: Vec<PlanStep>) -> Self {
        Self {
            steps,
            unlisted: Vec::new(),
        }
    }

    /// Migrations the ledger shows applied that the list does not have
    /// (deleted from it, or applied by a newer release), which the
    /// migrator's policies allow ([`Migrator::on_missing`](crate::Migrator::on_missing),
    /// [`on_newer`](crate::Migrator::on_newer)); refused ones fail the plan
    /// instead.
    pub fn unlisted(&self) -> &[String] {
        &self.unlisted
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
                PlanState::Drifted { .. } | PlanState::WouldFail { .. }
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
        for id in &self.unlisted {
            writeln!(f, "{id}: applied, not in this list (ignored)")?;
        }
        Ok(())
    }
}

impl Migrator {
    /// What the next [`run`](Self::run) would do, without changing anything
    /// (not even creating the ledger): every migration's state (applied,
    /// drifted, failed, pending, ...) and, for those it would apply, the
    /// work each will do ([`Migration::plan`](crate::Migration::plan)): rows
    /// written, columns touched, data or metadata only, indexes rebuilt.
    /// Bad input the run would refuse shows as [`PlanState::WouldFail`](crate::PlanState::WouldFail).
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateId`](crate::Error::DuplicateId) or [`Error::InvalidMigration`](crate::Error::InvalidMigration) for the list
    /// itself; [`Error::MissingMigrations`](crate::Error::MissingMigrations),
    /// [`Error::OutOfOrder`](crate::Error::OutOfOrder) or
    /// [`Error::NewerMigrations`](crate::Error::NewerMigrations) when the
    /// ledger and the list disagree in a way the migrator's policies
    /// refuse (as the run would); [`Error::Ledger`](crate::Error::Ledger),
    /// [`Error::NewerFormat`](crate::Error::NewerFormat) or [`Error::LanceDb`](crate::Error::LanceDb) when the ledger or a
    /// table cannot be read.
    pub async fn plan(&self) -> Result<Plan> {
        self.validate()?;
        let entries = by_id(self.ledger().await?);
        let found = divergence::find(&self.migrations, &entries);
        divergence::enforce(&found, self.policies)?;
        let mut plan = plan(&self.db, &self.migrations, &entries).await?;
        plan.unlisted = found.missing.into_iter().chain(found.newer).collect();
        Ok(plan)
    }
}

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
        LedgerStatus::Applied => {
            let (applied, current) = (entry.checksum.clone(), m.checksum());
            if applied == current || m.previous_checksums().contains(&applied) {
                PlanState::Applied
            } else {
                PlanState::Drifted { applied, current }
            }
        }
        LedgerStatus::Failed => PlanState::Failed {
            error: entry.error.clone().unwrap_or_default(),
        },
        LedgerStatus::Running => PlanState::Interrupted,
        LedgerStatus::RolledBack => PlanState::RolledBack,
    }
}

/// The work pending migration `m` will do on `table` (then left as `m`
/// leaves it, for the next migration's plan), or the refusal the run would
/// meet.
fn pending_work(
    m: &dyn Migration,
    table: &mut Option<TableInfo>,
) -> Result<std::result::Result<MigrationPlan, PlanState>> {
    if table.is_none() && m.creates().is_some() {
        // The run creates it empty first.
        *table = Some(TableInfo {
            name: m.table().to_owned(),
            rows: 0,
            schema: arrow_schema::Schema::empty(),
            indexes: Vec::new(),
        });
    }
    let Some(info) = table else {
        let missing = Error::TableNotFound {
            table: m.table().to_owned(),
        };
        return Ok(Err(PlanState::WouldFail {
            reason: missing.to_string(),
        }));
    };
    match m.expected_schema(&info.schema) {
        Err(e) => Ok(Err(PlanState::WouldFail {
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
