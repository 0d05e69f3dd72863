//! Running the pending migrations in the background while the application
//! serves: [`Migrator::start`] and its [`MigrationHandle`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span};

use crate::error::{Error, Result, chain};
use crate::event::Event;
use crate::ledger::lease::Acquired;
use crate::ledger::{LedgerEntry, LedgerStatus};
use crate::migration::Migration;
use crate::report::{LeaseHolder, Phase, PhaseProgress, Report};
use crate::stop::StopSignal;

use super::{Migrator, by_id, pending};

/// Consecutive failed reads of a standing-by run: retried up to
/// [`Failures::MOST`] in a row.
#[derive(Debug, Default)]
struct Failures(u32);

impl Failures {
    const MOST: u32 = 10;

    /// Counts `e`; returns it once there were too many in a row.
    fn note(&mut self, e: Error) -> Result<()> {
        self.0 += 1;
        if self.0 > Self::MOST {
            return Err(e);
        }
        tracing::warn!(error = %chain(&e), attempt = self.0, "standing by: a read failed; trying again");
        Ok(())
    }

    fn reset(&mut self) {
        self.0 = 0;
    }
}

/// What a background run ([`Migrator::start`]) knows now: what has
/// landed, what this process is doing, who else holds the lease.
///
/// Read it with [`MigrationHandle::state`], or watch it change with
/// [`MigrationHandle::subscribe`] (for a readiness probe, a status page, a
/// progress bar).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunState {
    /// Migrations the ledger shows applied (by any process), in the
    /// migrator's order.
    pub applied: Vec<String>,
    /// Migrations not applied yet, in the migrator's order.
    pub pending: Vec<String>,
    /// Whether every migration that blocks serving
    /// ([`Migration::blocks_serving`]) has landed: the application may
    /// serve.
    pub ready: bool,
    /// The migration this process is applying, if any.
    pub current: Option<String>,
    /// Its phase.
    pub phase: Option<Phase>,
    /// When that phase started.
    pub phase_started: Option<SystemTime>,
    /// Its latest progress, in a long phase.
    pub progress: Option<PhaseProgress>,
    /// Who holds the lease, while another process does.
    pub holder: Option<LeaseHolder>,
    /// Whether a stop was asked for.
    pub stopping: bool,
    /// Whether the background run has ended (see [`error`](Self::error)).
    pub finished: bool,
    /// The run's error, in words, when it ended with one.
    pub error: Option<String>,
    blocking: Vec<String>,
    resumable: Vec<String>,
}

impl RunState {
    fn new(migrations: &[Box<dyn Migration>]) -> Self {
        let mut state = Self {
            applied: Vec::new(),
            pending: migrations.iter().map(|m| m.id().to_owned()).collect(),
            ready: false,
            current: None,
            phase: None,
            phase_started: None,
            progress: None,
            holder: None,
            stopping: false,
            finished: false,
            error: None,
            blocking: migrations
                .iter()
                .filter(|m| m.blocks_serving())
                .map(|m| m.id().to_owned())
                .collect(),
            resumable: migrations
                .iter()
                .filter(|m| m.resumable())
                .map(|m| m.id().to_owned())
                .collect(),
        };
        state.update_ready();
        state
    }

    /// The blocking migrations not applied yet.
    fn blocking_pending(&self) -> Vec<String> {
        self.blocking
            .iter()
            .filter(|id| self.pending.contains(id))
            .cloned()
            .collect()
    }

    fn update_ready(&mut self) {
        self.ready = self.blocking_pending().is_empty();
    }

    fn landed(&mut self, id: &str) {
        if let Some(i) = self.pending.iter().position(|p| p == id) {
            let id = self.pending.remove(i);
            self.applied.push(id);
            self.update_ready();
        }
    }

    fn read_ledger(&mut self, entries: &HashMap<String, LedgerEntry>) {
        let applied: Vec<String> = self
            .pending
            .iter()
            .filter(|id| {
                entries
                    .get(*id)
                    .is_some_and(|e| e.status == LedgerStatus::Applied)
            })
            .cloned()
            .collect();
        for id in applied {
            self.landed(&id);
        }
    }

    fn observe(&mut self, event: &Event) {
        match event {
            Event::MigrationStarted { migration, .. } => {
                self.current = Some(migration.clone());
                self.phase = None;
                self.progress = None;
                self.holder = None;
            }
            Event::PhaseStarted { phase, .. } => {
                self.phase = Some(*phase);
                self.phase_started = Some(SystemTime::now());
                self.progress = None;
            }
            Event::Progress {
                done, total, rate, ..
            } => {
                self.progress = Some(PhaseProgress {
                    done: *done,
                    total: *total,
                    rate: *rate,
                    at: SystemTime::now(),
                });
            }
            Event::MigrationApplied { migration, .. } | Event::MigrationSkipped { migration } => {
                self.landed(migration);
                self.current = None;
                self.phase = None;
            }
            Event::MigrationStopped { .. } | Event::MigrationFailed { .. } => {
                self.current = None;
                self.phase = None;
            }
            _ => {}
        }
    }
}

/// A background run of a [`Migrator`], from [`Migrator::start`].
///
/// The application serves once [`ready`](Self::ready) resolves, switches
/// to what a long migration makes when [`landed`](Self::landed) resolves,
/// and on SIGTERM calls [`stop`](Self::stop) and waits for the report
/// ([`wait`](Self::wait)) before it exits.
///
/// Dropping the handle does not stop the run: it goes on until it ends or
/// the runtime shuts down (the next start then continues or undoes it).
#[derive(Debug)]
pub struct MigrationHandle {
    state: watch::Receiver<RunState>,
    tx: Arc<watch::Sender<RunState>>,
    stop: StopSignal,
    task: JoinHandle<Result<Report>>,
}

impl MigrationHandle {
    /// What the run knows now.
    pub fn state(&self) -> RunState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of [`state`](Self::state).
    pub fn subscribe(&self) -> watch::Receiver<RunState> {
        self.state.clone()
    }

    /// Resolves once every migration that blocks serving
    /// ([`Migration::blocks_serving`]) has landed, whoever applied it: the
    /// application may serve. Migrations that run behind serving may still
    /// be running, here or in another process.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] when the run ended (failed or stopped) before
    /// they landed; [`wait`](Self::wait) returns the run's own error.
    pub async fn ready(&self) -> Result<()> {
        self.until(|s| s.ready, RunState::blocking_pending).await
    }

    /// Resolves once migration `id` has landed, whoever applied it: the
    /// moment to switch to what it makes (a new column, a new model's
    /// vectors) without a restart.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] when the run ended before it landed, or `id` is
    /// not one of the migrator's.
    pub async fn landed(&self, id: &str) -> Result<()> {
        self.until(
            |s| s.applied.iter().any(|a| a == id),
            |_| vec![id.to_owned()],
        )
        .await
    }

    async fn until(
        &self,
        done: impl Fn(&RunState) -> bool + Send + Sync,
        pending: impl Fn(&RunState) -> Vec<String> + Send + Sync,
    ) -> Result<()> {
        let mut rx = self.state.clone();
        let state = rx
            .wait_for(|s| done(s) || s.finished)
            .await
            .map(|s| s.clone())
            .unwrap_or_else(|_| self.state());
        if done(&state) {
            return Ok(());
        }
        Err(Error::NotReady {
            pending: pending(&state),
            reason: state
                .error
                .clone()
                .unwrap_or_else(|| "the run stopped before they landed".to_owned()),
        })
    }

    /// Asks the run to stop at its next safe point (see [`StopSignal`]):
    /// a re-embed commits the batches in flight and saves its checkpoint,
    /// the lease is released, and a process standing by takes over at
    /// once. Returns at once, saying what the stop waits for (also logged):
    /// the batches in flight, or a phase that cannot be cut short (an
    /// index build, a quick migration) and how long it has run;
    /// [`wait`](Self::wait) for the report.
    pub fn stop(&self) -> Stopping {
        self.stop.stop();
        self.tx.send_modify(|s| s.stopping = true);
        let state = self.state();
        let stopping = Stopping::of(&state);
        if stopping.migration.is_some() {
            info!(%stopping, "stop requested");
        }
        stopping
    }

    /// Waits for the run to end and returns its report: what it applied,
    /// what it left pending or stopped, or its error.
    ///
    /// # Errors
    ///
    /// What [`Migrator::run`] returns; [`Error::Panicked`] if the run's
    /// task panicked or was cancelled.
    pub async fn wait(self) -> Result<Report> {
        self.task.await.unwrap_or_else(|e| {
            Err(Error::Panicked {
                message: format!("the background migration task ended abnormally: {e}"),
            })
        })
    }

    /// [`stop`](Self::stop), then [`wait`](Self::wait): what an
    /// application calls on SIGTERM.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub async fn stop_and_wait(self) -> Result<Report> {
        self.stop();
        self.wait().await
    }
}

/// What a stop waits for, from [`MigrationHandle::stop`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stopping {
    /// The migration this process is applying; `None` when it applies
    /// none (it stands by, or has finished): the run ends at once.
    pub migration: Option<String>,
    /// Its phase.
    pub phase: Option<Phase>,
    /// `true` when the run stops after the batches in flight (a resumable
    /// migration's transform); `false` when it finishes the phase — and
    /// the migration — first.
    pub at_next_batch: bool,
    /// How long that phase has run.
    pub phase_running_for: Option<Duration>,
    /// The time its progress says is left, when known.
    pub eta: Option<Duration>,
}

impl Stopping {
    fn of(state: &RunState) -> Self {
        let resumable = state
            .current
            .as_ref()
            .is_some_and(|m| state.resumable.contains(m));
        Self {
            migration: state.current.clone(),
            phase: state.phase,
            at_next_batch: resumable && state.phase == Some(Phase::Transform),
            phase_running_for: state
                .phase_started
                .and_then(|t| SystemTime::now().duration_since(t).ok()),
            eta: state.progress.and_then(|p| p.eta()),
        }
    }
}

impl fmt::Display for Stopping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(migration) = &self.migration else {
            return f.write_str("nothing running; stopping at once");
        };
        let phase = self.phase.map_or("start", Phase::as_str);
        if self.at_next_batch {
            return write!(f, "{migration} ({phase}) stops after the batches in flight");
        }
        write!(
            f,
            "waiting for {migration} to finish: its {phase} cannot be interrupted"
        )?;
        if let Some(running) = self.phase_running_for {
            write!(f, " (running for {:.0?}", running)?;
            match self.eta {
                Some(eta) => write!(f, ", about {eta:.0?} left)")?,
                None => f.write_str(")")?,
            }
        }
        Ok(())
    }
}

impl Migrator {
    /// Starts applying the pending migrations in a task on the current
    /// Tokio runtime and returns a handle at once, so the application can
    /// serve while a long migration (a re-embed of hours) runs.
    ///
    /// The task takes the lease if it is free and applies what is pending,
    /// the migrations that block serving first; when another process holds
    /// the lease it stands by, reading the ledger every few seconds (what
    /// landed shows in [`MigrationHandle::state`]) and taking the lease
    /// over the moment it is released (a graceful stop elsewhere) or
    /// expires (a crash elsewhere). It ends when every migration has
    /// landed, on a stop, or on an error.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lancedb_migrate::{Migrator, ReEmbed, testing};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> lancedb_migrate::Result<()> {
    /// let db = testing::memory_db().await?;
    /// testing::documents_table(&db, "documents", 100, 8).await?;
    /// let model = Arc::new(testing::TestEmbedding::new("model-v2", 16));
    ///
    /// let handle = Migrator::new(db)
    ///     .add(ReEmbed::new("0002_model_v2", "documents", model))
    ///     .start();
    /// handle.ready().await?; // nothing blocks serving: resolves at once
    /// // ... serve; on SIGTERM: handle.stop_and_wait().await
    /// handle.landed("0002_model_v2").await?; // switch to the new model
    /// let report = handle.wait().await?;
    /// assert_eq!(report.applied().count(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(mut self) -> MigrationHandle {
        let (tx, rx) = watch::channel(RunState::new(&self.migrations));
        let tx = Arc::new(tx);
        let tap = tx.clone();
        self.events = self
            .events
            .tapped(move |event| tap.send_modify(|s| s.observe(event)));
        let stop = self.stop.clone();
        let watch_stop = stop.clone();
        let stopping = tx.clone();
        let stopping_tx = tx.clone();
        // A stop given through the migrator's signal shows in the state
        // too; the watch ends with the handle.
        tokio::spawn(async move {
            tokio::select! {
                () = watch_stop.stopped() => stopping.send_modify(|s| s.stopping = true),
                () = stopping.closed() => {}
            }
        });
        let span = info_span!("lancedb_migrate::start", ledger = %self.ledger);
        let task = tokio::spawn(
            async move {
                let result = self.run_standing_by(&tx).await;
                tx.send_modify(|s| {
                    s.finished = true;
                    s.current = None;
                    if let Err(e) = &result {
                        s.error = Some(chain(e));
                    }
                });
                result
            }
            .instrument(span),
        );
        MigrationHandle {
            state: rx,
            tx: stopping_tx,
            stop,
            task,
        }
    }

    async fn run_standing_by(&self, state: &watch::Sender<RunState>) -> Result<Report> {
        self.validate()?;
        let ledger = self.open_ledger().await?;
        let mut entries = by_id(ledger.entries_as_opened().await?);
        let mut failures = Failures::default();
        loop {
            let upgrades = self.check_ledger(&entries)?;
            state.send_modify(|s| s.read_ledger(&entries));
            if self.all_applied(&entries) && upgrades.is_empty() {
                return Ok(self.skip_all(&entries));
            }
            if self.stop.is_stopped() {
                return Ok(pending::as_far_as_applied(&self.migrations, &entries));
            }
            let standby = self.lease.standby();
            let acquired = self.acquire(&ledger, standby).await;
            match acquired {
                Ok(Acquired::Held(lease)) => {
                    state.send_modify(|s| s.holder = None);
                    let report = self.run_held(&ledger, lease).await?;
                    info!(
                        applied = report.applied().count(),
                        pending = report.pending().count(),
                        "background run finished"
                    );
                    return Ok(report);
                }
                Ok(Acquired::Busy(busy)) => {
                    let holder = pending::holder(&entries, &busy);
                    state.send_modify(|s| s.holder = Some(holder));
                }
                Err(e) => failures.note(e)?,
            }
            // A standby lives for hours: a failed read of the lease or the
            // ledger (a busy store) is retried, not the end of it.
            match ledger.entries().await {
                Ok(read) => {
                    entries = by_id(read);
                    failures.reset();
                }
                Err(e) => {
                    failures.note(e)?;
                    tokio::time::sleep(standby).await;
                }
            }
        }
    }
}
