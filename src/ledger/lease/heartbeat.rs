//! The holder's heartbeat: the lease tag refreshed every `ttl / 4` from a
//! thread of its own, extending the fence each time a refresh lands.

use std::time::{Duration, Instant};

use lancedb::Table;
use tracing::{debug, warn};

use crate::lance::tags::{exists, refresh, version_of};
use crate::ledger::lease::fence::Fence;
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
    pub(super) fn start(ledger: Table, generation: u64, ttl: Duration, fence: Fence) -> Self {
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
                    () = beat(ledger, generation, ttl, fence) => {}
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
/// A beat is three small requests on an object store: whether the next
/// generation's tag exists (a takeover creates it), then Lance's rewrite of
/// this generation's tag (it checks that the tag exists, then writes it).
async fn beat(ledger: Table, generation: u64, ttl: Duration, fence: Fence) {
    let name = tag(generation);
    let next = tag(generation + 1);
    let mut version = None;
    loop {
        tokio::time::sleep(ttl / 4).await;
        if fence.check().is_err() {
            return;
        }
        let issued = Instant::now();
        if version.is_none() {
            version = version_of(&ledger, &name).await;
        }
        match exists(&ledger, &next).await {
            Ok(true) => {
                warn!(generation, "migration lease lost to a newer generation");
                fence.lose();
                return;
            }
            Ok(false) => {}
            Err(e) => {
                if std::env::var("LMT_DEBUG_BEAT").is_ok() {
                    eprintln!("beat {generation} failed after {:?}: {e}", issued.elapsed());
                }
                debug!(generation, error = %e, "a lease heartbeat failed; trying again");
                continue;
            }
        }
        let refreshed = match version {
            Some(version) => refresh(&ledger, &name, version).await,
            None => false,
        };
        if !refreshed {
            if std::env::var("LMT_DEBUG_BEAT").is_ok() {
                eprintln!("refresh {generation} failed after {:?}", issued.elapsed());
            }
            debug!(generation, "a lease heartbeat failed; trying again");
            continue;
        }
        if std::env::var("LMT_DEBUG_BEAT").is_ok() && issued.elapsed() > Duration::from_millis(300)
        {
            eprintln!("slow beat {generation} took {:?}", issued.elapsed());
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
