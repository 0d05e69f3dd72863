//! The `Migrator`: composes migrations and applies the pending ones.

mod apply;
mod background;
mod divergence;
mod drift;
mod ops;
mod pending;
mod plan;
mod retention;
mod rollback;
mod run;
mod status;

pub use background::{MigrationHandle, RunState, Stopping};
pub use divergence::Divergence;
pub use ops::LaterWrites;
pub use plan::{Plan, PlanState, PlanStep};
pub use retention::Retention;
pub(crate) use run::by_id;
use run::*;
pub use run::{DEFAULT_LEDGER_TABLE, Migrator, WhenLocked};
pub use status::StatusTable;
