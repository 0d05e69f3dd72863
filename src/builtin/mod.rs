//! Migrations that ship with the crate, one file (or folder) each, and the
//! wrapper that adds a backup copy to any migration.

mod add_columns;
mod cast_column;
mod create_table;
mod default_value;
mod drop_columns;
mod fill_column;
#[cfg(test)]
mod golden;
mod legacy;
mod rebuild_index;
mod reembed;
mod rename_column;
mod target;
mod with_backup_copy;

pub use add_columns::{AddColumns, NewColumn};
pub use cast_column::CastColumn;
pub use create_table::CreateTable;
pub use default_value::DefaultValue;
pub use drop_columns::DropColumns;
pub use fill_column::FillColumn;
pub use rebuild_index::RebuildIndex;
pub use reembed::ReEmbed;
pub use rename_column::RenameColumn;
pub use target::TargetSchema;
pub(crate) use target::declared_table;
pub use with_backup_copy::WithBackupCopy;
