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

/// The lease format this build writes, named in the holder's tag
/// (`lease-<g>-v<format>-by-<holder>`; lancedb-migrate 0.1 wrote
/// `lease-<g>-by-<holder>`, format 1). Every format takes the lease by
/// creating the tag `lease-<g>`, so releases of different formats exclude
/// each other; one that meets a newer format refuses it
/// ([`Error::NewerFormat`](crate::Error::NewerFormat)).
pub(crate) const FORMAT: u32 = 2;

/// The newest lease generation, as the tags show it.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) generation: u64,
    pub(super) updated: Option<SystemTime>,
    pub(super) released: bool,
    pub(super) holder: Option<String>,
    /// The lease format of the newest generation's holder, as its tag
    /// names it (1 for 0.1's tag, or when there is no holder tag yet).
    pub(super) format: u32,
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
        let holder = names.iter().find_map(|t| holder_of(t, &current));
        Self {
            generation,
            updated: None,
            released: names.iter().any(|t| *t == format!("{current}-released")),
            format: holder.as_ref().map_or(1, |(format, _)| *format),
            holder: holder.map(|(_, name)| name),
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

/// The holder's tag of generation `generation`, in this build's format.
pub(super) fn holder_tag(generation: u64, holder: &str) -> String {
    format!("{}-v{FORMAT}-by-{holder}", tag(generation))
}

/// The format and holder named by `name` if it is the holder's tag of the
/// generation tagged `current`: `<current>-v<format>-by-<holder>`, or 0.1's
/// `<current>-by-<holder>` (format 1).
fn holder_of(name: &str, current: &str) -> Option<(u32, String)> {
    let rest = name.strip_prefix(current)?.strip_prefix('-')?;
    if let Some(holder) = rest.strip_prefix("by-") {
        return Some((1, holder.to_owned()));
    }
    let (format, holder) = rest.strip_prefix('v')?.split_once("-by-")?;
    Some((format.parse().ok()?, holder.to_owned()))
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

/// Old generations' tags left before [`clean_up`] deletes them: each take
/// of the lease leaves three (taken, holder, released), which cost nothing
/// but a longer listing, and deleting them is a millisecond or more of a
/// migrating run's fixed cost; so they go once every eight generations.
pub(super) const OLD_TAGS_KEPT: usize = 24;

/// Deletes the tags of generations older than the previous one, once there
/// are more than [`OLD_TAGS_KEPT`] of them.
pub(super) async fn clean_up(ledger: &Table, generation: u64, seen: &State) {
    if seen.old.len() <= OLD_TAGS_KEPT {
        return;
    }
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
