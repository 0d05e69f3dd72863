//! What a lost race with another writer looks like, and the crate's one
//! policy for trying again.
//!
//! Lance commits optimistically: a commit that finds a newer version than it
//! read either rebases (appends and most data changes do) or fails with a
//! conflict. Every write of this crate that can lose such a race goes
//! through [`retry`] (a few attempts) or, for the crate's own commits to the
//! migrated table, [`retry_commit`] (many), so that a busy table is treated
//! the same way everywhere.
//!
//! The crate's own commits make one attempt each ([`single_attempt`]):
//! Lance's loop would retry a lost commit for up to 30 s with an
//! exponentially growing backoff, and both of those hurt here.
//! - Against an application that appends on a steady rhythm, a longer wait
//!   does not make the next attempt likelier to win; it only makes attempts
//!   rarer. On a busy table under CPU load, one commit in twenty lost its
//!   whole 30 s that way (measured), and a migration of 20,000 rows did not
//!   finish in 5 minutes.
//! - The lease is checked before a commit, not inside Lance's loop: a
//!   commit that lands 30 s after its check can land after a takeover.
//!
//! One attempt per call, and [`retry_commit`]'s short random pauses, check the
//! lease before every attempt and keep attempting while the appends last.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lance::Dataset;
use lance::dataset::CommitBuilder;
use tracing::{debug, warn};

use crate::error::Error;
use crate::jitter::random_fraction;

/// The most attempts [`retry`] makes (the first one included).
pub(crate) const ATTEMPTS: u32 = 10;

/// The most attempts [`retry_commit`] makes (the first one included).
pub(crate) const COMMIT_ATTEMPTS: u32 = 60;

/// How many attempts, and how long the pauses between them may grow.
#[derive(Debug, Clone, Copy)]
struct Policy {
    attempts: u32,
    max_pause: Duration,
}

/// [`retry`]'s: a few attempts, for races that end (a read racing a
/// deletion, a ledger write racing another process's).
const FEW: Policy = Policy {
    attempts: ATTEMPTS,
    max_pause: Duration::from_secs(1),
};

/// [`retry_commit`]'s: many short-spaced attempts, for a commit racing an
/// application that keeps writing.
const MANY: Policy = Policy {
    attempts: COMMIT_ATTEMPTS,
    max_pause: Duration::from_millis(500),
};

impl Policy {
    /// The ceiling of the pause before attempt `attempt + 1`: 40 ms
    /// doubling to at most `max_pause`.
    fn ceiling(self, attempt: u32) -> Duration {
        Duration::from_millis(20 << attempt.min(6)).min(self.max_pause)
    }

    /// The pause before attempt `attempt + 1`: random between half the
    /// [`ceiling`](Self::ceiling) and all of it, so that attempts do not
    /// fall into step with a writer that commits on a rhythm.
    fn pause(self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        ceiling / 2 + ceiling.mul_f64(random_fraction() / 2.0)
    }
}

/// A commit of a transaction read from `dataset` that makes a single
/// attempt: on a lost race it fails at once with a conflict, for
/// [`retry_commit`] to check the lease and try again from the latest
/// version (see the module docs for why not Lance's own retries).
pub(crate) fn single_attempt<'a>(dataset: Arc<Dataset>) -> CommitBuilder<'a> {
    // Lance makes `max(num_retries, 1)` attempts.
    CommitBuilder::new(dataset).with_max_retries(1)
}

/// Runs `step` (given the attempt number, from 1) until it succeeds, fails
/// with an error `retryable` does not accept, or [`ATTEMPTS`] attempts have
/// failed; then returns its last result. Each step must re-read what it
/// depends on (the latest version), since a retry follows another writer's
/// commit; and check the lease first, if it writes.
pub(crate) async fn retry<T, E, F, Fut>(
    operation: &str,
    retryable: impl Fn(&E) -> bool,
    step: F,
) -> Result<T, E>
where
    E: std::error::Error,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    paced(operation, retryable, FEW, step).await
}

/// [`retry`] for a commit to the migrated table, which the application may
/// keep writing to (a [`single_attempt`] commit, or a LanceDB schema change
/// through `MigrationContext::retry_on_conflict`): conflicts are retried, up to
/// [`COMMIT_ATTEMPTS`] times with pauses of at most 0.5 s (about half a
/// minute in all, as long as Lance's own retries would take, with
/// several times the attempts). `step` checks the lease first.
pub(crate) async fn retry_commit<T, F, Fut>(operation: &str, step: F) -> Result<T, Error>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    paced(operation, is_conflict, MANY, step).await
}

async fn paced<T, E, F, Fut>(
    operation: &str,
    retryable: impl Fn(&E) -> bool,
    policy: Policy,
    mut step: F,
) -> Result<T, E>
where
    E: std::error::Error,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match step(attempt).await {
            Err(e) if attempt < policy.attempts && retryable(&e) => {
                // On a busy table a lost race is routine: only a run of
                // them is worth a warning.
                let error = crate::error::chain(&e);
                if attempt % 10 == 0 {
                    warn!(
                        operation,
                        attempt, error, "lost a race with another writer again; retrying"
                    );
                } else {
                    debug!(
                        operation,
                        attempt, error, "lost a race with another writer; retrying"
                    );
                }
                if policy.max_pause > Duration::ZERO {
                    tokio::time::sleep(policy.pause(attempt)).await;
                }
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Whether `e` is a commit that lost a race with a concurrent writer and
/// is worth retrying from the latest version.
pub(crate) fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::LanceDb { source, .. } if is_lancedb_conflict(source))
}

/// [`is_conflict`] for an error straight from LanceDB.
pub(crate) fn is_lancedb_conflict(e: &lancedb::Error) -> bool {
    matches!(
        e,
        lancedb::Error::Lance {
            source: lance::Error::RetryableCommitConflict { .. }
                | lance::Error::CommitConflict { .. }
                | lance::Error::TooMuchWriteContention { .. }
        }
    )
}

/// Whether a LanceDB error says a tag (or other ref) already exists.
pub(crate) fn is_ref_conflict(e: &lancedb::Error) -> bool {
    matches!(
        e,
        lancedb::Error::Lance {
            source: lance::Error::RefConflict { .. }
        }
    )
}

/// [`is_conflict`], or a commit that a concurrent overwrite (a late create
/// of the same table) made incompatible: retried on the latest version too.
pub(crate) fn is_conflict_or_overwritten(e: &Error) -> bool {
    is_conflict(e)
        || matches!(
            e,
            Error::LanceDb {
                source: lancedb::Error::Lance {
                    source: lance::Error::IncompatibleTransaction { .. }
                },
                ..
            }
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_grows_is_capped_and_varies() {
        assert_eq!(FEW.ceiling(1), Duration::from_millis(40));
        assert_eq!(FEW.ceiling(2), Duration::from_millis(80));
        assert_eq!(FEW.ceiling(9), Duration::from_secs(1));
        assert_eq!(MANY.ceiling(9), Duration::from_millis(500));
        for attempt in [1, 2, 9] {
            let p = MANY.pause(attempt);
            let ceiling = MANY.ceiling(attempt);
            assert!(ceiling / 2 <= p && p <= ceiling, "{p:?}");
        }
        let pauses: std::collections::HashSet<Duration> = (0..20).map(|_| MANY.pause(9)).collect();
        assert!(pauses.len() > 10, "{} distinct pauses of 20", pauses.len());
    }

    const NO_PAUSE: Policy = Policy {
        attempts: ATTEMPTS,
        max_pause: Duration::ZERO,
    };

    fn error(text: &str) -> std::io::Error {
        std::io::Error::other(text.to_owned())
    }

    /// How many times `retry` calls a step that always fails with `text`.
    async fn calls_for(text: &str) -> (String, u32) {
        let mut calls = 0;
        let result: Result<(), _> = paced(
            "test",
            |e: &std::io::Error| e.to_string() == "conflict",
            NO_PAUSE,
            |_| {
                calls += 1;
                let e = error(text);
                async move { Err(e) }
            },
        )
        .await;
        (result.unwrap_err().to_string(), calls)
    }

    #[tokio::test]
    async fn retries_only_what_it_is_told_to_and_at_most_attempts_times() {
        assert_eq!(
            calls_for("conflict").await,
            ("conflict".to_owned(), ATTEMPTS)
        );
        assert_eq!(calls_for("disk full").await, ("disk full".to_owned(), 1));

        let result = paced(
            "test",
            |_: &std::io::Error| true,
            NO_PAUSE,
            |attempt| async move {
                if attempt < 3 {
                    Err(error("conflict"))
                } else {
                    Ok(attempt)
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 3);
    }
}
