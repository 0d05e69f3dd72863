//! The one argument every migration hook receives.

mod accessors;
mod checks;
mod index_checks;
mod writes;

pub use accessors::MigrationContext;
