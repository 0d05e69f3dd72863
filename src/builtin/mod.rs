//! Migrations that ship with the crate, one file each.

mod add_columns;
mod rebuild_index;
mod reembed;
mod value;

pub use add_columns::{AddColumns, NewColumn};
pub use rebuild_index::RebuildIndex;
pub use reembed::{DIMENSION_KEY, MIGRATION_KEY, MODEL_KEY, ReEmbed};
pub use value::Value;
