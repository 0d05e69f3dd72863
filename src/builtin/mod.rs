//! Migrations that ship with the crate, one file each.

mod add_columns;
mod value;

pub use add_columns::{AddColumns, NewColumn};
pub use value::Value;
