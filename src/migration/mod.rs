//! What a migration author uses: the [`Migration`] trait and its hooks,
//! the [`MigrationContext`] each hook receives, and the plan types a hook
//! describes its work with for dry runs.

mod context;
mod forward;
mod hooks;
mod plan;

pub use context::MigrationContext;
pub(crate) use forward::forward_migration;
pub use hooks::Migration;
pub use plan::{MigrationPlan, TableInfo, Writes};
