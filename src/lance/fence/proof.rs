//! [`Fence`]: whether this process can still prove it holds the lease.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tracing::warn;

/// Whether this process may still write under its lease. Cloned into every
/// place that commits on the lease's behalf (the migration context, the
/// backfill), so each commit can check it just before it is made.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fence(Option<Arc<FenceState>>);

#[derive(Debug)]
pub(super) struct FenceState {
    pub(super) generation: u64,
    pub(super) proof: Duration,
    /// Until when this process can prove it holds the lease.
    pub(super) valid_until: Mutex<Instant>,
    pub(super) lost: AtomicBool,
}

impl Fence {
    /// A fence whose proof has already run out, for tests of what it
    /// refuses.
    #[cfg(test)]
    pub(crate) fn lapsed() -> Self {
        Self::held(1, Instant::now(), Duration::ZERO)
    }

    pub(crate) fn held(generation: u64, issued: Instant, proof: Duration) -> Self {
        Self(Some(Arc::new(FenceState {
            generation,
            proof,
            valid_until: Mutex::new(issued + proof),
            lost: AtomicBool::new(false),
        })))
    }

    /// Fails with [`Error::LeaseLost`] when the lease was lost or can no
    /// longer be proven (its last heartbeat is too old): the caller must
    /// not commit anything more. Costs no I/O.
    pub(crate) fn check(&self) -> Result<()> {
        let Some(state) = &self.0 else {
            return Ok(());
        };
        let lost = || Error::LeaseLost {
            generation: state.generation,
        };
        if state.lost.load(Ordering::SeqCst) {
            return Err(lost());
        }
        let valid_until = *state
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if Instant::now() >= valid_until {
            if !state.lost.swap(true, Ordering::SeqCst) {
                warn!(
                    generation = state.generation,
                    "migration lease lapsed (no heartbeat landed in time); writing nothing more"
                );
            }
            return Err(lost());
        }
        Ok(())
    }

    /// After a heartbeat issued at `issued` landed: extends the proof, but
    /// only if it had not lapsed meanwhile (a lapsed lease is never revived,
    /// since a waiter may have taken it over). Returns whether it still holds.
    pub(crate) fn extend(&self, issued: Instant) -> bool {
        let Some(state) = &self.0 else {
            return true;
        };
        let mut valid_until = state
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state.lost.load(Ordering::SeqCst) || Instant::now() >= *valid_until {
            state.lost.store(true, Ordering::SeqCst);
            return false;
        }
        *valid_until = (*valid_until).max(issued + state.proof);
        true
    }

    pub(crate) fn lose(&self) {
        if let Some(state) = &self.0 {
            state.lost.store(true, Ordering::SeqCst);
        }
    }
}
