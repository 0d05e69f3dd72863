//! Asking a run to stop: the graceful handover on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Asks a run to stop at its next safe point, and tells long work that it
/// was asked.
///
/// What an application calls on SIGTERM, through
/// [`MigrationHandle::stop`](crate::MigrationHandle::stop) or a signal
/// taken from [`Migrator::stop_signal`](crate::Migrator::stop_signal)
/// before [`run`](crate::Migrator::run). The run then:
///
/// - in a re-embed or other column fill, finishes the batches already sent
///   to the embedder, writes and commits them, saves its checkpoint, and
///   leaves the migration `running` for the next process to continue;
/// - in a step that cannot be cut short (an index build, a quick
///   migration), finishes that migration first;
/// - starts no further migration, releases the lease, and returns the
///   report, with the stopped migration [`Outcome::Stopped`](crate::Outcome::Stopped)
///   and the rest [`Outcome::Pending`](crate::Outcome::Pending).
///
/// A process waiting for the lease takes it over at its next look for the
/// release (within a second with the default TTL), not after the TTL.
///
/// Clones share one signal. A stopped signal stays stopped.
///
/// # Examples
///
/// ```
/// use lancedb_migrate::StopSignal;
///
/// let stop = StopSignal::new();
/// let for_sigterm = stop.clone();
/// assert!(!stop.is_stopped());
/// for_sigterm.stop();
/// assert!(stop.is_stopped());
/// ```
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    stopped: AtomicBool,
    notify: Notify,
}

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every run sharing this signal to stop at its next safe point.
    /// Returns at once; wait for the run's report to know it stopped.
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether [`stop`](Self::stop) was called. Long-running hooks check it
    /// between units of work, save their progress and return
    /// [`Error::Stopped`](crate::Error::Stopped).
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    /// Resolves once [`stop`](Self::stop) is called.
    pub async fn stopped(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}
