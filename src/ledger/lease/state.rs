//! The lease as its tags show it: the newest generation, whether it is
//! released or expired, and who holds it; tag names; old tags cleaned up.

use std::time::{Duration, SystemTime};

use lancedb::Table;
#[cfg(test)]
use lancedb::table::TagContents;

use crate::error::Result;
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
    /// Reads the lease state: the tag names (one listing), then the time of
    /// the newest generation's tag when it is held (one read). A read can
    /// race with another process deleting an old lease tag, so a failed one
    /// is retried a few times.
    pub(super) async fn read(ledger: &Table) -> Result<Self> {
        let operation = "read the migration lease";
        retry(
            operation,
            |_| true,
            |_| async {
                let names = tags::names(ledger).await?;
                let mut state = Self::from_names(&names);
                if state.generation > 0 && !state.released {
                    state.updated = tags::updated_at(ledger, &tag(state.generation)).await?;
                }
                Ok(state)
            },
        )
        .await
    }

    /// The newest generation of the lease tags `names`: one listing, no
    /// tag read. What a creator checks after its create.
    pub(super) async fn newest(ledger: &Table) -> Result<u64> {
        let names = retry("list the lease tags", |_| true, |_| tags::names(ledger)).await?;
        Ok(Self::from_names(&names).generation)
    }

    /// The state `names` show, without the holder's heartbeat time.
    pub(super) fn from_names(names: &[String]) -> Self {
        let generation = names.iter().filter_map(|t| parse(t)).max().unwrap_or(0);
        let current = tag(generation);
        let by = format!("{current}-by-");
        Self {
            generation,
            updated: None,
            released: names.iter().any(|t| *t == format!("{current}-released")),
            holder: names
                .iter()
                .find_map(|t| t.strip_prefix(&by).map(str::to_owned)),
            old: names
                .iter()
                .filter(|t| {
                    t.starts_with(PREFIX) && parse_prefix(t).is_some_and(|g| g < generation)
                })
                .cloned()
                .collect(),
        }
    }

    #[cfg(test)]
    pub(super) fn from_tags(tags: &std::collections::HashMap<String, TagContents>) -> Self {
        let names: Vec<String> = tags.keys().cloned().collect();
        let mut state = Self::from_names(&names);
        state.updated = tags
            .get(&tag(state.generation))
            .and_then(|c| c.updated_at.or(c.created_at))
            .map(SystemTime::from);
        state
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
