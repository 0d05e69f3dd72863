//! The fence: whether this process can still prove it holds the
//! migration lease, checked (without I/O) before every write made under
//! it; and the commit handler that makes every commit of a migrated
//! table's handle check it ([`commit_handler`]). The lease (in the ledger)
//! issues and renews a fence; this layer only checks it.

mod commit_handler;
mod proof;

pub(crate) use commit_handler::open;
pub(crate) use proof::Fence;
