//! Events a run emits while it works, for progress bars and monitoring.
//!
//! Pass a callback to [`Migrator::on_event`](crate::Migrator::on_event). The
//! same information is logged through `tracing`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::report::Phase;

/// An embedder's work in a migration so far, in [`Event::Progress`]:
/// counted from the first pass over the table, through the passes over
/// rows appended meanwhile.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct EmbeddingProgress {
    /// Texts embedded (only rows with text are sent).
    pub texts: u64,
    /// Texts per second since the first pass began.
    pub texts_per_sec: f64,
    /// Tokens the embedding service says it processed, when it reports
    /// usage (see [`embeddings::report_tokens`](crate::embeddings::report_tokens)).
    pub tokens: Option<u64>,
    /// Tokens per second since the first pass began, when reported.
    pub tokens_per_sec: Option<f64>,
    /// Failed requests or calls retried so far.
    pub retries: u64,
}

/// Something that happened during a run.
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "event", rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Event {
    /// A pending migration is about to run.
    MigrationStarted {
        /// Its id.
        migration: String,
        /// The table it migrates.
        table: String,
    },
    /// A migration was skipped because the ledger shows it applied.
    MigrationSkipped {
        /// Its id.
        migration: String,
    },
    /// A phase started.
    PhaseStarted {
        /// The migration.
        migration: String,
        /// The phase.
        phase: Phase,
    },
    /// A phase finished successfully.
    PhaseFinished {
        /// The migration.
        migration: String,
        /// The phase.
        phase: Phase,
        /// How long it took.
        #[cfg_attr(
            feature = "serde",
            serde(rename = "duration_secs", serialize_with = "crate::serde_fmt::secs")
        )]
        duration: Duration,
    },
    /// Rows processed so far in a long phase. Sent at most about once per
    /// [`Progress::INTERVAL`](crate::Progress::INTERVAL), and once at the end.
    Progress {
        /// The migration.
        migration: String,
        /// Rows done.
        done: u64,
        /// Rows to do in all, when known.
        total: Option<u64>,
        /// Rows per second since the phase began.
        rate: f64,
        /// Time left at that rate, when the total is known and rows are
        /// moving.
        #[cfg_attr(
            feature = "serde",
            serde(rename = "eta_secs", serialize_with = "crate::serde_fmt::opt_secs")
        )]
        eta: Option<Duration>,
        /// The embedder's throughput, for a phase that embeds text
        /// ([`ReEmbed`](crate::ReEmbed)); `None` for other work.
        embedding: Option<EmbeddingProgress>,
    },
    /// A migration was applied and verified.
    MigrationApplied {
        /// Its id.
        migration: String,
        /// How long it took in all.
        #[cfg_attr(
            feature = "serde",
            serde(rename = "duration_secs", serialize_with = "crate::serde_fmt::secs")
        )]
        duration: Duration,
    },
    /// A migration was stopped on request ([`StopSignal`](crate::StopSignal))
    /// during `phase`; its progress is saved and the next run continues it.
    MigrationStopped {
        /// The migration's id.
        migration: String,
        /// The phase it stopped in.
        phase: Phase,
    },
    /// Another process holds the migration lease and this run waits for
    /// it (sent once each time the run starts waiting on a holder).
    LeaseWaiting {
        /// The holder's name, as it gave it
        /// ([`Migrator::lease_holder`](crate::Migrator::lease_holder)).
        holder: Option<String>,
        /// When it last renewed the lease, on its clock.
        #[cfg_attr(
            feature = "serde",
            serde(serialize_with = "crate::serde_fmt::opt_time")
        )]
        last_heartbeat: Option<SystemTime>,
    },
    /// This process took the migration lease.
    LeaseAcquired {
        /// This process's name in the lease.
        holder: String,
    },
    /// This process could no longer prove it held the lease (it was
    /// stalled past the TTL, or could not renew it); it wrote nothing
    /// more, and the run fails with [`Error::LeaseLost`].
    LeaseLost {
        /// This process's name in the lease.
        holder: String,
    },
    /// This process released the migration lease: a process waiting for it
    /// takes it at once.
    LeaseReleased {
        /// This process's name in the lease.
        holder: String,
    },
    /// A migration failed and was rolled back.
    MigrationFailed {
        /// Its id.
        migration: String,
        /// The phase that failed.
        phase: Phase,
        /// Why it failed: the same error the run returns as the
        /// [`source`](std::error::Error::source) of
        /// [`Error::MigrationFailed`], its own sources chained on.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serde_fmt::error"))]
        error: Arc<Error>,
    },
}

/// A caller-supplied event callback.
#[derive(Clone)]
pub(crate) struct Observer(Arc<dyn Fn(&Event) + Send + Sync>);

impl Observer {
    pub(crate) fn new(f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn emit(&self, event: &Event) {
        (self.0)(event);
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Observer(..)")
    }
}

/// Sends events to an optional observer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Events(Option<Observer>);

impl Events {
    pub(crate) fn emit(&self, event: Event) {
        if let Some(observer) = &self.0 {
            observer.emit(&event);
        }
    }

    /// These events, each also passed to `then` after the observers
    /// already set.
    pub(crate) fn and_then(&self, then: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        let inner = self.0.clone();
        Self(Some(Observer::new(move |event| {
            if let Some(observer) = &inner {
                observer.emit(event);
            }
            then(event);
        })))
    }

    /// These events, each also passed to `tap` (first).
    pub(crate) fn tapped(&self, tap: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        let inner = self.0.clone();
        Self(Some(Observer::new(move |event| {
            tap(event);
            if let Some(observer) = &inner {
                observer.emit(event);
            }
        })))
    }
}
