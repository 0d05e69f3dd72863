//! The migration lease: mutual exclusion between processes (and tasks) that
//! migrate the same database.
//!
//! Built on LanceDB tags on the ledger table, because creating a tag is
//! put-if-absent: of several racers creating the same tag exactly one
//! succeeds, on a local directory and on object stores alike (it is the
//! primitive Lance's own refs rely on).
//!
//! - Generation `g` of the lease is the tag `lease-<g>`; acquiring means
//!   creating `lease-<g+1>` when generation `g` is free. Names are never
//!   reused, so a stale holder can never mistake a newer lease for its own.
//! - `lease-<g>-v<format>-by-<holder>` says who holds it, and in which
//!   lease format ([`FORMAT`]; 0.1 wrote `lease-<g>-by-<holder>`, format
//!   1). A build that finds a newer format refuses
//!   ([`Error::NewerFormat`](crate::Error::NewerFormat)) and writes
//!   nothing; every format creates `lease-<g>` to take the lease, so an
//!   older and a newer release can never both hold it.
//! - The holder refreshes `lease-<g>`'s `updated_at` every `ttl / 3`
//!   (heartbeat). A lease not refreshed for `ttl` is expired.
//! - Release creates `lease-<g>-released`.
//! - Generation `g` is free when it is released or expired; then every
//!   waiter races to create `lease-<g+1>` and exactly one wins.
//!
//! Expiry compares the holder's clock (in `updated_at`) with the waiter's:
//! clocks must agree to within a fifth of `ttl`.
//!
//! **Fencing.** A holder may write only while it can prove the lease is
//! still its own: until `ttl - ttl/5` after it *issued* the last write
//! (create or heartbeat) that a waiter would read, measured on its own
//! monotonic clock. A waiter takes over only when that write's `updated_at`
//! is more than `ttl` old on its clock, which is later, so the two never
//! overlap. A heartbeat that lands after the proof ran out does not revive
//! it: once lapsed, the lease is lost for good ([`Fence::check`]). A holder
//! stopped (SIGSTOP, a long pause) past its proof finds it lapsed when it
//! resumes and writes nothing more. What remains is a stall *inside* one
//! commit, after its check: see DESIGN.md ("The window left").
//!
//! Old generations' tags are deleted, so a racer that read the state,
//! stalled, and then created `lease-<g>` might re-create a name deleted
//! long ago. Every creator therefore reads the tags again after its create
//! and holds the lease only if its generation is the newest; the newest
//! generation's tag is never deleted, so a stale creator always sees it.

mod heartbeat;
mod holder;
mod state;
#[cfg(test)]
mod tests;

pub(crate) use holder::{Acquired, Busy, Lease, LeaseConfig};
