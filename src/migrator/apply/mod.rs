//! Applying one pending migration: backup, transform, rebuild, verify, and
//! the rollback when any of them fails.

mod change;
mod driver;
mod finish;
mod start;

pub(crate) use driver::Apply;
use driver::*;
