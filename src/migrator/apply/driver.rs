//! [`Apply`]: one pending migration's stages run in order, each phase's
//! failure turned into the rollback and the error the run returns.

use crate::backup::BackupLocation;
use crate::error::{Error, Result, Rollback};
use crate::event::{Event, Events};
use crate::ledger::lease::Lease;
use crate::ledger::{Ledger, LedgerEntry};
use crate::migration::Migration;
use crate::report::{MigrationReport, Phase, PhaseTiming, Report};
use crate::stop::StopSignal;
use lancedb::Connection;
use std::future::Future;
use std::time::Instant;
use tracing::{Instrument, info_span};

/// How often a long phase's progress is published in the ledger.
pub(super) const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// An error, with the phase it happened in.
pub(super) struct PhaseError {
    pub(super) phase: Phase,
    pub(super) error: Error,
}

/// Tags an error with the phase it happened in.
pub(super) fn during(phase: Phase) -> impl FnOnce(Error) -> PhaseError {
    move |error| PhaseError { phase, error }
}

/// One migration being applied.
pub(crate) struct Apply<'a> {
    pub(super) db: &'a Connection,
    pub(super) ledger: &'a Ledger,
    pub(super) lease: &'a Lease,
    pub(super) events: &'a Events,
    pub(super) migration: &'a dyn Migration,
    pub(super) seq: u64,
    pub(super) copy_to: Option<&'a BackupLocation>,
    pub(super) stop: &'a StopSignal,
    pub(super) phases: Vec<PhaseTiming>,
    /// Whether this attempt created the table
    /// ([`Migration::creates`]): a failed attempt drops it again while
    /// it is empty.
    pub(super) created: bool,
}

impl<'a> Apply<'a> {
    pub(crate) fn new(
        migrator: &'a crate::migrator::Migrator,
        ledger: &'a Ledger,
        lease: &'a Lease,
        migration: &'a dyn Migration,
        seq: u64,
    ) -> Self {
        Self {
            db: &migrator.db,
            ledger,
            lease,
            events: &migrator.events,
            migration,
            seq,
            copy_to: migrator.copy_to.as_ref(),
            stop: &migrator.stop,
            phases: Vec::new(),
            created: false,
        }
    }

    /// Runs the migration; `previous` is its ledger row from an earlier,
    /// unfinished or failed attempt.
    pub(crate) async fn run(
        mut self,
        previous: Option<&LedgerEntry>,
        report: &Report,
    ) -> Result<MigrationReport> {
        let span = info_span!(
            "migration",
            id = self.migration.id(),
            table = self.migration.table(),
            rows = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            self.emit(Event::MigrationStarted {
                migration: self.id().to_owned(),
                table: self.migration.table().to_owned(),
            });
            let ctx = match self.prepare(previous).await {
                Ok(ctx) => ctx,
                Err(PhaseError {
                    phase,
                    error: Error::Interrupted { rollback, source },
                }) => return Err(self.failed(phase, *rollback, *source, report)),
                Err(PhaseError { phase, error }) => {
                    self.drop_created().await;
                    return Err(self.failed(phase, Rollback::NotNeeded, error, report));
                }
            };
            let entry = self.running_entry(&ctx);
            let first = match previous {
                None => self.write(|l| l.insert(&entry)).await,
                Some(_) => self.write(|l| l.record(&entry)).await,
            };
            if let Err(e) = first {
                return Err(self.failed(Phase::Record, Rollback::NotNeeded, e, report));
            }
            let changed = self.change_publishing(&ctx, &entry).await;
            match changed {
                Ok(verified) => self.finish(ctx, entry, verified, started, report).await,
                Err(PhaseError {
                    phase,
                    error: Error::Stopped,
                }) if self.migration.resumable() => Ok(self.stopped(&ctx, phase, started)),
                Err(PhaseError { phase, error }) => {
                    Err(self.roll_back(&ctx, entry, phase, error, report).await)
                }
            }
        }
        .instrument(span)
        .await
    }

    pub(super) fn id(&self) -> &str {
        self.migration.id()
    }

    /// A ledger write, made only while the lease is provably held.
    pub(super) async fn write<'l, F, Fut>(&'l self, write: F) -> Result<()>
    where
        F: FnOnce(&'l Ledger) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        self.lease.check()?;
        write(self.ledger).await
    }

    pub(super) fn emit(&self, event: Event) {
        self.events.emit(event);
    }
}
