//! The holder's heartbeat: the lease tag refreshed every `ttl / 4` from a
//! thread of its own, extending the fence each time a refresh lands.

use std::time::{Duration, Instant};

use lancedb::Table;
use tracing::{debug, warn};

use crate::lance::fence::Fence;
use crate::lance::tags::{exists, refresh};
use crate::ledger::lease::state::tag;

/// The heartbeat's own thread, with a runtime of its own: a caller whose
/// runtime is busy (a single-threaded runtime running a long CPU-bound step,
/// such as training an index) still keeps its lease. Only stopping the whole
/// process (SIGSTOP, a VM pause) stops it, and then the fence lapses.
#[derive(Debug)]
pub(super) struct Heartbeat {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Heartbeat {
    /// Starts beating for `lease`: its generation, and the ledger version
    /// its tag points at.
    pub(super) fn start(ledger: Table, lease: (u64, u64), ttl: Duration, fence: Fence) -> Self {
        let (generation, version) = lease;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let run = move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    warn!(error = %e, "could not start the lease heartbeat; the lease will lapse");
                    return;
                }
            };
            runtime.block_on(async move {
                tokio::select! {
                    () = beat(ledger, generation, version, ttl, fence) => {}
                    _ = stopped => {}
                }
            });
        };
        let spawned = std::thread::Builder::new()
            .name(format!("lease-heartbeat-{generation}"))
            .spawn(run);
        if let Err(e) = spawned {
            warn!(error = %e, "could not start the lease heartbeat; the lease will lapse");
        }
        Self { stop: Some(stop) }
    }

    pub(super) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Refreshes the lease every `ttl / 4`. A refresh that fails is tried
/// again at the next beat while the proof lasts; a newer generation, or a
/// proof that lapsed, loses the lease for good.
///
/// A beat is seven small requests on an object store: whether the next
/// generation's tag exists (a takeover creates it), then Lance's rewrite of
/// this generation's tag (it checks that the tag exists, reads it, checks
/// the version's manifest, writes it).
async fn beat(ledger: Table, generation: u64, version: u64, ttl: Duration, fence: Fence) {
    let name = tag(generation);
    let next = tag(generation + 1);
    loop {
        tokio::time::sleep(ttl / 4).await;
        if fence.check().is_err() {
            return;
        }
        let issued = Instant::now();
        match exists(&ledger, &next).await {
            Ok(true) => {
                warn!(generation, "migration lease lost to a newer generation");
                fence.lose();
                return;
            }
            Ok(false) => {}
            Err(e) => {
                debug!(generation, error = %e, took = ?issued.elapsed(), "a lease heartbeat failed; trying again");
                continue;
            }
        }
        if !refresh(&ledger, &name, version).await {
            debug!(generation, took = ?issued.elapsed(), "a lease heartbeat failed; trying again");
            continue;
        }
        let took = issued.elapsed();
        if took > ttl / 10 {
            // On an object store under load: a sign to raise the TTL.
            debug!(generation, ?took, "a slow lease heartbeat");
        }
        if !fence.extend(issued) {
            warn!(
                generation,
                "a lease heartbeat landed after the lease lapsed; not reviving it"
            );
            return;
        }
    }
}
