//! Migrations that ship with the crate, one file (or folder) each, and the
//! wrapper that adds a backup copy to any migration.

mod add_columns;
mod rebuild_index;
mod reembed;
mod value;
mod with_backup_copy;

pub use add_columns::{AddColumns, NewColumn};
pub use rebuild_index::RebuildIndex;
pub use reembed::{DIMENSION_KEY, MIGRATION_KEY, MODEL_KEY, ReEmbed};
pub use value::Value;
pub use with_backup_copy::WithBackupCopy;
