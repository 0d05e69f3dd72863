//! [`Lease`]: taking, holding, renewing and releasing the migration lease.

use super::heartbeat::Heartbeat;
use super::state::{FORMAT, State, clean_up, holder_tag, tag};
use crate::error::{Error, Result};
use crate::lance::fence::Fence;
use crate::lance::store::require_put_if_absent;
use crate::lance::tags::{exists, try_create};
use lancedb::Table;
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, info, warn};

/// How the lease is waited for and kept.
#[derive(Debug, Clone)]
pub(crate) struct LeaseConfig {
    pub(crate) ttl: Duration,
    pub(crate) wait: Duration,
    pub(crate) holder: String,
    /// Whether to check, before the first lease on an object store, that
    /// the store enforces put-if-absent.
    pub(crate) check_store: bool,
}

impl LeaseConfig {
    pub(crate) fn new() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            wait: Duration::from_secs(600),
            holder: default_holder(),
            check_store: true,
        }
    }

    pub(super) fn poll(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }

    /// How long a process standing by for the lease waits on it before it
    /// reads the ledger again (to learn what landed).
    pub(crate) fn standby(&self) -> Duration {
        self.poll() * 3
    }

    /// How long after issuing a lease write the holder may rely on it:
    /// `ttl` less a fifth for clocks that disagree.
    pub(super) fn proof(&self) -> Duration {
        self.ttl - self.ttl / 5
    }
}

/// What an attempt to take the lease found.
#[derive(Debug)]
pub(crate) enum Acquired {
    /// Taken: this process holds it.
    Held(Lease),
    /// Another process holds it.
    Busy(Busy),
}

/// Who holds the lease another process could not take.
#[derive(Debug, Clone)]
pub(crate) struct Busy {
    /// The holder's name, as it gave it.
    pub(crate) holder: Option<String>,
    /// When its lease was last renewed, on its clock.
    pub(crate) last_heartbeat: Option<SystemTime>,
}

/// A held lease. Dropping it without [`Lease::release`] leaves it to expire.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(super) table: Table,
    pub(super) generation: u64,
    pub(super) fence: Fence,
    pub(super) heartbeat: Heartbeat,
}

impl Lease {
    /// Waits until the lease is free and takes it.
    #[cfg(test)]
    pub(crate) async fn acquire(ledger: &Table, config: &LeaseConfig) -> Result<Self> {
        Self::acquire_observed(ledger, config, &|_| {}).await
    }

    /// [`acquire`](Self::acquire), calling `waiting` each time it starts
    /// waiting on a holder.
    pub(crate) async fn acquire_observed(
        ledger: &Table,
        config: &LeaseConfig,
        waiting: &(dyn Fn(&Busy) + Send + Sync),
    ) -> Result<Self> {
        let started = Instant::now();
        match Self::acquire_within_observed(ledger, config, config.wait, waiting).await? {
            Acquired::Held(lease) => Ok(lease),
            Acquired::Busy(busy) => Err(Error::LeaseTimeout {
                holder: busy
                    .holder
                    .unwrap_or_else(|| "an unknown holder".to_owned()),
                waited: started.elapsed(),
            }),
        }
    }

    /// Takes the lease if it is free or becomes free within `wait` (zero:
    /// one look), calling `waiting` each time it starts waiting on a
    /// holder; otherwise says who holds it.
    pub(crate) async fn acquire_within_observed(
        ledger: &Table,
        config: &LeaseConfig,
        wait: Duration,
        waiting: &(dyn Fn(&Busy) + Send + Sync),
    ) -> Result<Acquired> {
        if config.check_store {
            require_put_if_absent(ledger).await?;
        }
        let started = Instant::now();
        loop {
            let state = State::read(ledger).await?;
            debug!(
                generation = state.generation,
                released = state.released,
                "lease state read"
            );
            if state.format > FORMAT {
                return Err(Error::NewerFormat {
                    ledger: ledger.name().to_owned(),
                    what: "lease",
                    found: state.format,
                    known: FORMAT,
                });
            }
            if state.is_free(config.ttl) {
                if let Some(lease) = Self::try_take(ledger, config, &state).await? {
                    return Ok(Acquired::Held(lease));
                }
                continue;
            }
            let busy = Busy {
                holder: state.holder.clone(),
                last_heartbeat: state.updated,
            };
            if started.elapsed() >= wait {
                return Ok(Acquired::Busy(busy));
            }
            waiting(&busy);
            let deadline = started + wait;
            wait_for_release(ledger, config, &state, deadline).await;
        }
    }

    /// Creates the generation after the one `seen` shows free, and holds it
    /// if that generation is then the newest. `None` when another process
    /// won the race, or when `seen` was so old that the name had been used
    /// and cleaned up since (this process stalled between its read and its
    /// create).
    pub(super) async fn try_take(
        ledger: &Table,
        config: &LeaseConfig,
        seen: &State,
    ) -> Result<Option<Self>> {
        let next = seen.generation + 1;
        let issued = Instant::now();
        let Some(version) = try_create(ledger, &tag(next)).await? else {
            debug!(generation = next, "another process took the lease first");
            return Ok(None);
        };
        debug!(generation = next, "lease generation created");
        let newest = State::newest(ledger).await?;
        if newest != next {
            warn!(
                generation = next,
                newest,
                "created a lease generation that was used and cleaned up long ago (this process stalled); not holding it"
            );
            return Ok(None);
        }
        Ok(Some(
            Self::held(ledger, next, version, issued, config, seen).await,
        ))
    }

    pub(super) async fn held(
        ledger: &Table,
        generation: u64,
        version: u64,
        issued: Instant,
        config: &LeaseConfig,
        seen: &State,
    ) -> Self {
        let holder_tag = holder_tag(generation, &sanitize(&config.holder));
        let _ = try_create(ledger, &holder_tag).await;
        debug!(generation, "lease holder named");
        if seen.generation > 0 && !seen.released {
            warn!(generation = seen.generation, holder = ?seen.holder, "took over an expired lease");
        }
        info!(
            generation,
            holder = config.holder,
            "migration lease acquired"
        );
        clean_up(ledger, generation, seen).await;
        debug!(generation, "older lease generations cleaned up");
        let fence = Fence::held(generation, issued, config.proof());
        let heartbeat = Heartbeat::start(
            ledger.clone(),
            (generation, version),
            config.ttl,
            fence.clone(),
        );
        Self {
            table: ledger.clone(),
            generation,
            fence,
            heartbeat,
        }
    }

    /// Fails if the lease was lost or can no longer be proven: the caller
    /// must stop writing.
    pub(crate) fn check(&self) -> Result<()> {
        self.fence.check()
    }

    /// The fence to check before each commit made under this lease.
    pub(crate) fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Gives the lease up so the next waiter gets it at once. A lease that
    /// was lost is left alone: its generation is no longer the newest.
    pub(crate) async fn release(mut self) {
        self.heartbeat.stop();
        if self.fence.check().is_err() {
            return;
        }
        let released = format!("{}-released", tag(self.generation));
        if let Err(e) = try_create(&self.table, &released).await {
            warn!(error = %e, "could not release the migration lease; it will expire");
        }
        info!(generation = self.generation, "migration lease released");
    }
}

/// Waits, while generation `held.generation` is held, until it is released
/// or could have expired (its holder's last heartbeat, as `held` shows it,
/// is `ttl` old on this clock), or until `deadline`. Reading the lease
/// state is a listing and a read; watching for the release is one `HEAD`
/// per poll, which keeps many waiting replicas cheap on an object store. A
/// poll that fails counts as "not released": the state is read again (with
/// retries) when the wait ends.
pub(super) async fn wait_for_release(
    ledger: &Table,
    config: &LeaseConfig,
    held: &State,
    deadline: Instant,
) {
    let left = held.time_left(config.ttl);
    let until = (Instant::now() + left.max(config.poll())).min(deadline);
    let released = format!("{}-released", tag(held.generation));
    loop {
        tokio::time::sleep(config.poll()).await;
        if Instant::now() >= until {
            return;
        }
        match exists(ledger, &released).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => debug!(error = %e, "could not look for the lease's release; waiting on"),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.stop();
    }
}

pub(super) fn default_holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    let nonce = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}-pid{}-{nonce:08x}", std::process::id())
}

pub(super) fn sanitize(holder: &str) -> String {
    holder
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
