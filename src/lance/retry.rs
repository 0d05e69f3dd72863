//! What a lost race with another writer looks like, and the crate's one
//! policy for trying again.
//!
//! Lance commits optimistically: a commit that finds a newer version than it
//! read either rebases (appends and most data changes do) or fails with a
//! conflict. Every write of this crate that can lose such a race goes
//! through [`retry`], with one limit ([`ATTEMPTS`]) and one backoff, so that
//! a busy table is treated the same way everywhere.

use std::future::Future;
use std::time::Duration;

use tracing::warn;

use crate::error::Error;

/// The most attempts [`retry`] makes (the first one included).
pub(crate) const ATTEMPTS: u32 = 10;

/// The pause before attempt `attempt + 1`: 40 ms doubling to at most 1 s.
fn pause(attempt: u32) -> Duration {
    Duration::from_millis(20 << attempt.min(6)).min(Duration::from_secs(1))
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
                warn!(operation, attempt, error = %e, "lost a race with another writer; retrying");
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
    fn the_pause_grows_and_is_capped() {
        assert_eq!(pause(1), Duration::from_millis(40));
        assert_eq!(pause(2), Duration::from_millis(80));
        assert_eq!(pause(9), Duration::from_secs(1));
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
