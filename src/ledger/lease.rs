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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use lancedb::Table;
use lancedb::table::TagContents;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::lance::retry::retry;
use crate::lance::tags::{self, refresh, try_create};

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

    /// How long after issuing a lease write the holder may rely on it:
    /// `ttl` less a fifth for clocks that disagree.
    fn proof(&self) -> Duration {
        self.ttl - self.ttl / 5
    }
}

/// Whether this process may still write under its lease. Cloned into every
/// place that commits on the lease's behalf (the migration context, the
/// backfill), so each commit can check it just before it is made.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fence(Option<Arc<FenceState>>);

#[derive(Debug)]
struct FenceState {
    generation: u64,
    proof: Duration,
    /// Until when this process can prove it holds the lease.
    valid_until: Mutex<Instant>,
    lost: AtomicBool,
}

impl Fence {
    fn held(generation: u64, issued: Instant, proof: Duration) -> Self {
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
    fn extend(&self, issued: Instant) -> bool {
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

    fn lose(&self) {
        if let Some(state) = &self.0 {
            state.lost.store(true, Ordering::SeqCst);
        }
    }
}

/// A held lease. Dropping it without [`Lease::release`] leaves it to expire.
#[derive(Debug)]
pub(crate) struct Lease {
    table: Table,
    generation: u64,
    fence: Fence,
    heartbeat: Heartbeat,
}

/// The heartbeat's own thread, with a runtime of its own: a caller whose
/// runtime is busy (a single-threaded runtime running a long CPU-bound step,
/// such as training an index) still keeps its lease. Only stopping the whole
/// process (SIGSTOP, a VM pause) stops it, and then the fence lapses.
#[derive(Debug)]
struct Heartbeat {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Heartbeat {
    fn start(ledger: Table, generation: u64, ttl: Duration, fence: Fence) -> Self {
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

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Lease {
    /// Waits until the lease is free and takes it.
    pub(crate) async fn acquire(ledger: &Table, config: &LeaseConfig) -> Result<Self> {
        let started = Instant::now();
        loop {
            let state = State::read(ledger).await?;
            if state.is_free(config.ttl) {
                if let Some(lease) = Self::try_take(ledger, config, &state).await? {
                    return Ok(lease);
                }
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

    /// Creates the generation after the one `seen` shows free, and holds it
    /// if that generation is then the newest. `None` when another process
    /// won the race, or when `seen` was so old that the name had been used
    /// and cleaned up since (this process stalled between its read and its
    /// create).
    async fn try_take(ledger: &Table, config: &LeaseConfig, seen: &State) -> Result<Option<Self>> {
        let next = seen.generation + 1;
        let issued = Instant::now();
        if !try_create(ledger, &tag(next)).await? {
            debug!(generation = next, "another process took the lease first");
            return Ok(None);
        }
        let now = State::read(ledger).await?;
        if now.generation != next {
            warn!(
                generation = next,
                newest = now.generation,
                "created a lease generation that was used and cleaned up long ago (this process stalled); not holding it"
            );
            return Ok(None);
        }
        Ok(Some(Self::held(ledger, next, issued, config, seen).await))
    }

    async fn held(
        ledger: &Table,
        generation: u64,
        issued: Instant,
        config: &LeaseConfig,
        seen: &State,
    ) -> Self {
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
        let fence = Fence::held(generation, issued, config.proof());
        let heartbeat = Heartbeat::start(ledger.clone(), generation, config.ttl, fence.clone());
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

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.stop();
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
        let operation = "list the ledger's tags";
        retry(
            operation,
            |_| true,
            |_| async { tags::list(ledger).await.map_err(Error::lance(operation)) },
        )
        .await
        .map(|tags| Self::from_tags(&tags))
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

/// Refreshes the lease every `ttl / 4`. A refresh that fails is tried
/// again at the next beat while the proof lasts; a newer generation, or a
/// proof that lapsed, loses the lease for good.
async fn beat(ledger: Table, generation: u64, ttl: Duration, fence: Fence) {
    let name = tag(generation);
    loop {
        tokio::time::sleep(ttl / 4).await;
        if fence.check().is_err() {
            return;
        }
        let issued = Instant::now();
        let state = State::read(&ledger).await;
        if let Ok(state) = &state
            && (state.generation != generation || state.released)
        {
            warn!(
                generation,
                newest = state.generation,
                "migration lease lost to a newer generation"
            );
            fence.lose();
            return;
        }
        if state.is_err() || !refresh(&ledger, &name).await {
            debug!(generation, "a lease heartbeat failed; trying again");
            continue;
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

    async fn ledger_table(dir: &tempfile::TempDir) -> Table {
        let db = lancedb::connect(dir.path().to_str().unwrap())
            .execute()
            .await
            .unwrap();
        let ledger = crate::ledger::Ledger::open_or_create(&db, "ledger")
            .await
            .unwrap();
        ledger.table().clone()
    }

    fn config(ttl: Duration, holder: &str) -> LeaseConfig {
        LeaseConfig {
            ttl,
            wait: Duration::from_secs(10),
            holder: holder.to_owned(),
        }
    }

    /// A racer reads the tags (generation 0 free), stalls while three
    /// generations come and go (the cleanup deletes `lease-1`'s tags), then
    /// creates `lease-1` again: it must not believe it holds the lease while
    /// generation 3's holder does.
    #[tokio::test]
    async fn a_racer_stalled_before_its_create_never_overlaps_a_holder() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_table(&dir).await;
        let cfg = config(Duration::from_secs(30), "racer");
        let stale = State::read(&ledger).await.unwrap();
        assert_eq!(stale.generation, 0);
        for _ in 0..2 {
            Lease::acquire(&ledger, &cfg).await.unwrap().release().await;
        }
        let holder = Lease::acquire(&ledger, &cfg).await.unwrap();
        assert_eq!(holder.generation, 3);
        let names = tags::list(&ledger).await.unwrap();
        assert!(
            !names.contains_key(&tag(1)),
            "the cleanup deleted generation 1's tag, so its name can be created again: {:?}",
            names.keys()
        );

        let taken = Lease::try_take(&ledger, &cfg, &stale).await.unwrap();
        assert!(
            taken.is_none(),
            "the stalled racer re-created `lease-1` and believed it held the lease"
        );
        holder.check().unwrap();
        holder.release().await;
        let next = Lease::acquire(&ledger, &cfg).await.unwrap();
        assert_eq!(next.generation, 4, "generation names keep increasing");
        next.release().await;
    }

    /// A holder whose heartbeat cannot land in time (as under SIGSTOP, or
    /// a store that stops answering) finds the lease lapsed and does not
    /// get it back, even though no one took it over and a later heartbeat
    /// would succeed.
    #[tokio::test]
    async fn a_lapsed_lease_is_never_revived() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_table(&dir).await;
        let ttl = Duration::from_millis(300);
        let mut lease = Lease::acquire(&ledger, &config(ttl, "stalled"))
            .await
            .unwrap();
        lease.check().unwrap();
        // No heartbeat lands (stopped, as when the process is stopped).
        lease.heartbeat.stop();
        tokio::time::sleep(ttl).await;
        let err = lease.check().unwrap_err();
        assert!(matches!(err, Error::LeaseLost { generation: 1 }), "{err:?}");
        // A heartbeat that lands now must not revive it.
        assert!(refresh(&ledger, &tag(1)).await);
        assert!(!lease.fence.extend(Instant::now()));
        assert!(lease.check().is_err(), "a lapsed lease came back");
        // A waiter takes it once it has expired on the tags' clock.
        let waiter = Lease::acquire(&ledger, &config(ttl, "waiter"))
            .await
            .unwrap();
        assert_eq!(waiter.generation, 2);
        waiter.check().unwrap();
        lease.release().await;
        let state = State::read(&ledger).await.unwrap();
        assert!(
            !state.released && state.generation == 2,
            "the lost holder's release touched nothing"
        );
        waiter.release().await;
    }

    /// A heartbeat that failed half-way on a full disk leaves its tag file
    /// empty, which Lance's listing cannot parse: the lease must neither
    /// get stuck nor be taken over before the file is `ttl` old.
    #[tokio::test]
    async fn a_truncated_lease_tag_does_not_block_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_table(&dir).await;
        let ttl = Duration::from_millis(300);
        let mut lease = Lease::acquire(&ledger, &config(ttl, "full-disk"))
            .await
            .unwrap();
        lease.heartbeat.stop();
        let file = dir
            .path()
            .join("ledger.lance/_refs/tags")
            .join(format!("{}.json", tag(1)));
        std::fs::write(&file, b"").unwrap();
        assert!(
            list_tags_strict(&ledger).await.is_err(),
            "Lance's listing fails"
        );
        let state = State::read(&ledger).await.unwrap();
        assert_eq!(state.generation, 1);
        assert!(
            !state.is_free(ttl),
            "taken over before the file was ttl old"
        );
        drop(lease);
        let next = Lease::acquire(&ledger, &config(ttl, "next")).await.unwrap();
        assert_eq!(next.generation, 2);
        next.release().await;
    }

    async fn list_tags_strict(ledger: &Table) -> lancedb::Result<HashMap<String, TagContents>> {
        ledger.tags().await?.list().await
    }

    /// A caller's runtime that is blocked (one thread, busy with CPU work
    /// such as training an index) does not cost it the lease.
    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_runtime_keeps_its_lease() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_table(&dir).await;
        let ttl = Duration::from_millis(400);
        let lease = Lease::acquire(&ledger, &config(ttl, "busy")).await.unwrap();
        std::thread::sleep(ttl * 3);
        lease.check().unwrap();
        lease.release().await;
    }

    /// A holder that keeps beating keeps its lease well past the TTL.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_beating_holder_keeps_its_lease() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_table(&dir).await;
        let ttl = Duration::from_millis(400);
        let lease = Lease::acquire(&ledger, &config(ttl, "a")).await.unwrap();
        for _ in 0..10 {
            tokio::time::sleep(ttl / 4).await;
            lease.check().unwrap();
        }
        lease.release().await;
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
