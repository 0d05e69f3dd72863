//! What a lost race with another writer looks like, and the crate's one
//! policy for trying again.
//!
//! Lance commits optimistically: a commit that finds a newer version than it
//! read either rebases (appends and most data changes do) or fails with a
//! conflict. Every write of this crate that can lose such a race goes
//! through [`retry`], with one limit ([`ATTEMPTS`]) and one backoff, so that
//! a busy table is treated the same way everywhere.
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
//! One attempt per call, and [`retry`]'s short random pauses, check the
//! lease before every attempt and keep attempting while the appends last.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lance::Dataset;
use lance::dataset::CommitBuilder;
use tracing::{debug, warn};

use crate::error::Error;

/// The most attempts [`retry`] makes (the first one included).
pub(crate) const ATTEMPTS: u32 = 60;

/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// The ceiling of the pause before attempt `attempt + 1`: 40 ms doubling to
/// at most [`MAX_PAUSE`]. The pause itself is a random time up to it.
fn ceiling(attempt: u32) -> Duration {
    Duration::from_millis(20 << attempt.min(6)).min(MAX_PAUSE)
}

/// The pause before attempt `attempt + 1`: random between half the
/// [`ceiling`] and all of it, so that attempts do not fall into step with
/// a writer that commits on a rhythm.
fn pause(attempt: u32) -> Duration {
    let ceiling = ceiling(attempt);
    ceiling / 2 + ceiling.mul_f64(random_fraction() / 2.0)
}

/// A random number in [0, 1), from the standard library's randomly keyed
/// hasher (no random-number crate needed for jitter).
pub(crate) fn random_fraction() -> f64 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A commit of a transaction read from `dataset` that makes a single
/// attempt: on a lost race it fails at once with a conflict, for [`retry`]
/// to check the lease and try again from the latest version (see the
/// module docs for why not Lance's own retries).
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
    E: std::fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    paced(operation, retryable, pause, step).await
}

/// [`retry`] with the pauses given by `pause`.
async fn paced<T, E, F, Fut>(
    operation: &str,
    retryable: impl Fn(&E) -> bool,
    pause: fn(u32) -> Duration,
    mut step: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match step(attempt).await {
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                // On a busy table a lost race is routine: only a run of
                // them is worth a warning.
                if attempt % 10 == 0 {
                    warn!(operation, attempt, error = %e, "lost a race with another writer again; retrying");
                } else {
                    debug!(operation, attempt, error = %e, "lost a race with another writer; retrying");
                }
                tokio::time::sleep(pause(attempt)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Whether `e` is a commit that lost a race with a concurrent writer and
/// is worth retrying from the latest version.
pub(crate) fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Lance { source, .. } if is_lancedb_conflict(source))
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
            Error::Lance {
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
        assert_eq!(ceiling(1), Duration::from_millis(40));
        assert_eq!(ceiling(2), Duration::from_millis(80));
        assert_eq!(ceiling(9), MAX_PAUSE);
        for attempt in [1, 2, 9] {
            let p = pause(attempt);
            assert!(ceiling(attempt) / 2 <= p && p <= ceiling(attempt), "{p:?}");
        }
        let pauses: std::collections::HashSet<Duration> = (0..20).map(|_| pause(9)).collect();
        assert!(pauses.len() > 10, "{} distinct pauses of 20", pauses.len());
    }

    fn no_pause(_: u32) -> Duration {
        Duration::ZERO
    }

    /// How many times `retry` calls a step that always fails with `error`.
    async fn calls_for(error: &str) -> (Result<(), String>, u32) {
        let mut calls = 0;
        let result = paced(
            "test",
            |e: &String| e == "conflict",
            no_pause,
            |_| {
                calls += 1;
                let error = error.to_owned();
                async move { Err(error) }
            },
        )
        .await;
        (result, calls)
    }

    #[tokio::test]
    async fn retries_only_what_it_is_told_to_and_at_most_attempts_times() {
        assert_eq!(
            calls_for("conflict").await,
            (Err("conflict".to_owned()), ATTEMPTS)
        );
        assert_eq!(
            calls_for("disk full").await,
            (Err("disk full".to_owned()), 1)
        );

        let result: Result<u32, String> = paced(
            "test",
            |_: &String| true,
            no_pause,
            |attempt| async move {
                if attempt < 3 {
                    Err("conflict".to_owned())
                } else {
                    Ok(attempt)
                }
            },
        )
        .await;
        assert_eq!(result, Ok(3));
    }
}
