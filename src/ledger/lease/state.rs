//! The lease as its tags show it: the newest generation, whether it is
//! released or expired, and who holds it; tag names; old tags cleaned up.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use lancedb::Table;
use lancedb::table::TagContents;

use crate::error::{Error, Result};
use crate::lance::retry::retry;
use crate::lance::tags;

const PREFIX: &str = "lease-";

/// The newest lease generation, as the tags show it.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) generation: u64,
    pub(super) updated: Option<SystemTime>,
    pub(super) released: bool,
    pub(super) holder: Option<String>,
    pub(super) old: Vec<String>,
}

impl State {
    /// Lists the ledger's tags. A listing can race with another process
    /// deleting an old lease tag (the file is listed, then gone when read),
    /// so a failed listing is retried a few times.
    pub(super) async fn read(ledger: &Table) -> Result<Self> {
        let operation = "list the ledger's tags";
        retry(
            operation,
            |_| true,
            |_| async { tags::list(ledger).await.map_err(Error::lance(operation)) },
        )
        .await
        .map(|tags| Self::from_tags(&tags))
    }

    pub(super) fn from_tags(tags: &HashMap<String, TagContents>) -> Self {
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

    pub(super) fn is_free(&self, ttl: Duration) -> bool {
        if self.generation == 0 || self.released {
            return true;
        }
        self.age() > ttl
    }

    /// How long until the lease expires on this clock, if its holder does
    /// not beat again.
    pub(super) fn time_left(&self, ttl: Duration) -> Duration {
        ttl.saturating_sub(self.age())
    }

    /// How old the holder's last heartbeat is on this clock.
    fn age(&self) -> Duration {
        self.updated
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default()
    }
}

pub(super) fn tag(generation: u64) -> String {
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
pub(super) async fn clean_up(ledger: &Table, generation: u64, seen: &State) {
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
