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
//! - `lease-<g>-by-<holder>` says who holds it (informational).
//! - The holder refreshes `lease-<g>`'s `updated_at` every `ttl / 3`
//!   (heartbeat). A lease not refreshed for `ttl` is expired.
//! - Release creates `lease-<g>-released`.
//! - Generation `g` is free when it is released or expired; then every
//!   waiter races to create `lease-<g+1>` and exactly one wins.
//!
//! Expiry compares the holder's clock (in `updated_at`) with the waiter's:
//! clocks must agree to well within `ttl`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use lancedb::Table;
use lancedb::table::TagContents;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::{Error, Result, is_ref_conflict};
use crate::tables::latest_version;

const PREFIX: &str = "lease-";

/// How the lease is waited for and kept.
#[derive(Debug, Clone)]
pub(crate) struct LeaseConfig {
    pub(crate) ttl: Duration,
    pub(crate) wait: Duration,
    pub(crate) holder: String,
}

impl LeaseConfig {
    pub(crate) fn new() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            wait: Duration::from_secs(600),
            holder: default_holder(),
        }
    }

    fn poll(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }
}

/// A held lease. Dropping it without [`Lease::release`] leaves it to expire.
#[derive(Debug)]
pub(crate) struct Lease {
    table: Table,
    generation: u64,
    lost: Arc<AtomicBool>,
    heartbeat: JoinHandle<()>,
}

impl Lease {
    /// Waits until the lease is free and takes it.
    pub(crate) async fn acquire(ledger: &Table, config: &LeaseConfig) -> Result<Self> {
        let started = Instant::now();
        loop {
            let state = State::read(ledger).await?;
            if state.is_free(config.ttl) {
                let next = state.generation + 1;
                if try_create(ledger, &tag(next)).await? {
                    return Ok(Self::held(ledger, next, config, &state).await);
                }
                debug!(generation = next, "another process took the lease first");
                continue;
            }
            if started.elapsed() >= config.wait {
                return Err(Error::LeaseTimeout {
                    holder: state
                        .holder
                        .unwrap_or_else(|| "an unknown holder".to_owned()),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(config.poll()).await;
        }
    }

    async fn held(ledger: &Table, generation: u64, config: &LeaseConfig, seen: &State) -> Self {
        let holder_tag = format!("{}-by-{}", tag(generation), sanitize(&config.holder));
        let _ = try_create(ledger, &holder_tag).await;
        if seen.generation > 0 && !seen.released {
            warn!(generation = seen.generation, holder = ?seen.holder, "took over an expired lease");
        }
        info!(
            generation,
            holder = config.holder,
            "migration lease acquired"
        );
        clean_up(ledger, generation, seen).await;
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(beat(ledger.clone(), generation, config.ttl, lost.clone()));
        Self {
            table: ledger.clone(),
            generation,
            lost,
            heartbeat,
        }
    }

    /// Fails if the lease was lost (a heartbeat could not be written, or a
    /// newer generation exists): the caller must stop writing.
    pub(crate) fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::LeaseLost {
                generation: self.generation,
            });
        }
        Ok(())
    }

    /// Gives the lease up so the next waiter gets it at once.
    pub(crate) async fn release(self) {
        self.heartbeat.abort();
        let released = format!("{}-released", tag(self.generation));
        if let Err(e) = try_create(&self.table, &released).await {
            warn!(error = %e, "could not release the migration lease; it will expire");
        }
        info!(generation = self.generation, "migration lease released");
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// The newest lease generation, as the tags show it.
#[derive(Debug, Default)]
struct State {
    generation: u64,
    updated: Option<SystemTime>,
    released: bool,
    holder: Option<String>,
    old: Vec<String>,
}

impl State {
    /// Lists the ledger's tags. A listing can race with another process
    /// deleting an old lease tag (the file is listed, then gone when read),
    /// so a failed listing is retried a few times.
    async fn read(ledger: &Table) -> Result<Self> {
        let mut attempt: u64 = 1;
        loop {
            match list_tags(ledger).await {
                Ok(tags) => return Ok(Self::from_tags(&tags)),
                Err(e) if attempt >= 5 => return Err(Error::lance("list the ledger's tags")(e)),
                Err(e) => debug!(error = %e, attempt, "listing the ledger's tags raced; retrying"),
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
        }
    }

    fn from_tags(tags: &HashMap<String, TagContents>) -> Self {
        let generation = tags.keys().filter_map(|t| parse(t)).max().unwrap_or(0);
        let current = tag(generation);
        let by = format!("{current}-by-");
        let old = tags
            .keys()
            .filter(|t| t.starts_with(PREFIX) && parse_prefix(t).is_some_and(|g| g < generation))
            .cloned()
            .collect();
        Self {
            generation,
            updated: tags
                .get(&current)
                .and_then(|c| c.updated_at.or(c.created_at))
                .map(SystemTime::from),
            released: tags.contains_key(&format!("{current}-released")),
            holder: tags
                .keys()
                .find_map(|t| t.strip_prefix(&by).map(str::to_owned)),
            old,
        }
    }

    fn is_free(&self, ttl: Duration) -> bool {
        if self.generation == 0 || self.released {
            return true;
        }
        let age = self
            .updated
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        age > ttl
    }
}

async fn list_tags(ledger: &Table) -> lancedb::Result<HashMap<String, TagContents>> {
    ledger.tags().await?.list().await
}

fn tag(generation: u64) -> String {
    format!("{PREFIX}{generation:020}")
}

/// The generation of a lease tag proper (`lease-<g>`).
fn parse(tag: &str) -> Option<u64> {
    let digits = tag.strip_prefix(PREFIX)?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// The generation of any lease-related tag (`lease-<g>...`).
fn parse_prefix(tag: &str) -> Option<u64> {
    tag.strip_prefix(PREFIX)?.get(..20)?.parse().ok()
}

/// Creates a tag on the ledger's current version; `false` if it exists.
async fn try_create(ledger: &Table, name: &str) -> Result<bool> {
    let version = latest_version(ledger).await?;
    let mut tags = ledger
        .tags()
        .await
        .map_err(Error::lance("open the ledger's tags"))?;
    match tags.create(name, version).await {
        Ok(()) => Ok(true),
        Err(e) if is_ref_conflict(&e) => Ok(false),
        Err(e) => Err(Error::lance(format!("create lease tag `{name}`"))(e)),
    }
}

/// Deletes the tags of generations older than the previous one.
async fn clean_up(ledger: &Table, generation: u64, seen: &State) {
    let Ok(mut tags) = ledger.tags().await else {
        return;
    };
    for old in seen
        .old
        .iter()
        .filter(|t| parse_prefix(t).is_some_and(|g| g + 1 < generation))
    {
        let _ = tags.delete(old).await;
    }
}

async fn beat(ledger: Table, generation: u64, ttl: Duration, lost: Arc<AtomicBool>) {
    let name = tag(generation);
    loop {
        tokio::time::sleep(ttl / 3).await;
        let still_ours = State::read(&ledger)
            .await
            .map(|s| s.generation == generation);
        let refreshed = match still_ours {
            Ok(true) => refresh(&ledger, &name).await,
            _ => false,
        };
        if !refreshed {
            warn!(generation, "migration lease lost");
            lost.store(true, Ordering::SeqCst);
            return;
        }
    }
}

async fn refresh(ledger: &Table, name: &str) -> bool {
    let Ok(mut tags) = ledger.tags().await else {
        return false;
    };
    let Ok(version) = tags.get_version(name).await else {
        return false;
    };
    tags.update(name, version).await.is_ok()
}

fn default_holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    let nonce = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}-pid{}-{nonce:08x}", std::process::id())
}

fn sanitize(holder: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(updated: SystemTime) -> TagContents {
        TagContents {
            branch: None,
            version: 1,
            created_at: Some(updated.into()),
            updated_at: Some(updated.into()),
            manifest_size: 0,
            metadata: HashMap::new(),
        }
    }

    #[test]
    fn newest_generation_and_holder_are_read_from_tags() {
        let now = SystemTime::now();
        let tags: HashMap<_, _> = [
            (tag(1), contents(now)),
            (format!("{}-released", tag(1)), contents(now)),
            (tag(2), contents(now)),
            (format!("{}-by-web-1", tag(2)), contents(now)),
            ("lancedb-migrate_x_v1".to_owned(), contents(now)),
        ]
        .into();
        let state = State::from_tags(&tags);
        assert_eq!(state.generation, 2);
        assert_eq!(state.holder.as_deref(), Some("web-1"));
        assert!(!state.released);
        assert!(!state.is_free(Duration::from_secs(30)));
        assert_eq!(state.old.len(), 2);
    }

    #[test]
    fn a_stale_lease_is_free() {
        let old = SystemTime::now() - Duration::from_secs(60);
        let state = State::from_tags(&[(tag(5), contents(old))].into());
        assert!(state.is_free(Duration::from_secs(30)));
        assert!(!state.is_free(Duration::from_secs(120)));
        assert!(
            State::default().is_free(Duration::from_secs(1)),
            "no lease yet"
        );
    }
}
