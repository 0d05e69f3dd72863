//! What a migration author uses: the [`Migration`] trait and its hooks,
//! the [`MigrationContext`] each hook receives, and the plan types a hook
//! describes its work with for dry runs.

mod context;
mod definition;
mod forward;
mod hooks;
mod plan;
mod schema_change;

pub use context::MigrationContext;
pub use definition::Definition;
pub(crate) use definition::push_quoted;
pub(crate) use forward::forward_migration;
pub use hooks::Migration;
pub(crate) use hooks::hex_sha256;
pub use plan::{MigrationPlan, TableInfo, Writes};
pub use schema_change::SchemaChange;
