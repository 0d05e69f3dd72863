//! Retries with exponential backoff and jitter, within a bounded budget:
//! the policy, and a wrapper that applies it to any embedding function.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::ArrayRef;
use arrow_schema::DataType;
use lancedb::embeddings::EmbeddingFunction;
use tracing::warn;

use crate::embeddings::ServiceError;
use crate::embeddings::usage;
use crate::jitter::random_fraction;

/// How often and how long a failed embedding call is retried.
///
/// The wait before retry *n* (from 0) is drawn at random between half and
/// all of `initial_backoff × 2ⁿ`, capped at `max_backoff` ("equal jitter",
/// so that many clients failed at once do not come back at once), or the
/// service's `Retry-After` when that is longer. A call gives up after
/// `max_retries` retries, or when the next wait would end more than
/// `max_elapsed` after its first attempt, whichever comes first; its error
/// is then [`ServiceError::RetriesExhausted`], holding the last failure.
///
/// The defaults (8 retries, 0.5 s doubling to at most 30 s, 5 minutes in
/// all) ride out a service's restart or a burst of rate limiting without
/// hiding one that is down.
///
/// ```
/// use std::time::Duration;
/// use lancedb_migrate::embeddings::RetryPolicy;
///
/// let patient = RetryPolicy::default()
///     .max_retries(20)
///     .max_elapsed(Duration::from_secs(30 * 60));
/// assert_eq!(patient.get_max_retries(), 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct RetryPolicy {
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(5 * 60),
        }
    }
}

impl RetryPolicy {
    /// No retries: the first failure is final.
    pub fn none() -> Self {
        Self::default().max_retries(0)
    }

    /// Retries of one call at most (default 8).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The wait before the first retry, doubled for each further one
    /// (default 0.5 s).
    pub fn initial_backoff(mut self, wait: Duration) -> Self {
        self.initial_backoff = wait;
        self
    }

    /// The longest wait between two attempts, unless the service's
    /// `Retry-After` asks for more (default 30 s).
    pub fn max_backoff(mut self, wait: Duration) -> Self {
        self.max_backoff = wait;
        self
    }

    /// The longest time from a call's first attempt to its last retry
    /// (default 5 minutes).
    pub fn max_elapsed(mut self, time: Duration) -> Self {
        self.max_elapsed = time;
        self
    }

    /// Retries of one call at most.
    pub fn get_max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The budget of one call, started now.
    pub(crate) fn start(&self) -> Attempts {
        Attempts {
            policy: self.clone(),
            started: Instant::now(),
            retries: 0,
        }
    }
}

/// One call's retries so far, against its policy.
#[derive(Debug)]
pub(crate) struct Attempts {
    policy: RetryPolicy,
    started: Instant,
    retries: u32,
}

impl Attempts {
    /// The wait before the next retry, or `None` when the budget is spent.
    /// `retry_after` is the service's request, if it made one.
    pub(crate) fn next_wait(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.retries >= self.policy.max_retries {
            return None;
        }
        let base = self
            .policy
            .initial_backoff
            .saturating_mul(1u32 << self.retries.min(20))
            .min(self.policy.max_backoff);
        let jittered = base / 2 + base.mul_f64(random_fraction() / 2.0);
        let wait = retry_after.map_or(jittered, |asked| asked.max(jittered));
        if self.started.elapsed() + wait > self.policy.max_elapsed {
            return None;
        }
        self.retries += 1;
        Some(wait)
    }

    /// Retries made so far.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    /// The error that ends the call: `last` itself when no retry was made,
    /// else [`ServiceError::RetriesExhausted`] around it.
    pub(crate) fn give_up(&self, last: crate::error::BoxError) -> crate::error::BoxError {
        if self.retries == 0 {
            last
        } else {
            Box::new(ServiceError::RetriesExhausted {
                retries: self.retries,
                elapsed: self.started.elapsed(),
                last,
            })
        }
    }
}

type RetryIf = Arc<dyn Fn(&lancedb::Error) -> bool + Send + Sync>;

/// Retries any [`EmbeddingFunction`] that fails, with a [`RetryPolicy`]:
/// for in-process models that can fail and succeed on a second try
/// (out of memory while other work runs, a GPU reset), or a client of a
/// service that does not retry itself.
///
/// Every error is retried except a [`ServiceError`] that is not
/// [transient](ServiceError::is_transient) (a 400 or 401 will not go away);
/// [`retry_if`](Self::retry_if) chooses otherwise. The wait happens on the
/// calling thread ([`ReEmbed`](crate::ReEmbed) calls embedders on Tokio's
/// blocking pool). A panic is not retried. The name, input and output types
/// are the wrapped function's, so the vectors are the same.
///
/// ```
/// use std::sync::Arc;
/// use lancedb_migrate::embeddings::{RetryPolicy, Retrying};
/// use lancedb_migrate::testing::TestEmbedding;
/// use lancedb_migrate::ReEmbed;
///
/// let model = Retrying::new(Arc::new(TestEmbedding::new("model-768", 768)))
///     .policy(RetryPolicy::default().max_retries(3));
/// let migration = ReEmbed::new("0002_reembed", "docs", Arc::new(model));
/// # let _ = migration;
/// ```
#[derive(Clone)]
#[must_use]
pub struct Retrying {
    inner: Arc<dyn EmbeddingFunction>,
    policy: RetryPolicy,
    retry_if: RetryIf,
}

impl fmt::Debug for Retrying {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retrying")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Retrying {
    /// Wraps `inner`, with the default [`RetryPolicy`].
    pub fn new(inner: Arc<dyn EmbeddingFunction>) -> Self {
        Self {
            inner,
            policy: RetryPolicy::default(),
            retry_if: Arc::new(|e| {
                ServiceError::in_lancedb(e).is_none_or(ServiceError::is_transient)
            }),
        }
    }

    /// The retry policy.
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Which errors are retried (by default all but a [`ServiceError`]
    /// that is not transient).
    pub fn retry_if(
        mut self,
        retry: impl Fn(&lancedb::Error) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_if = Arc::new(retry);
        self
    }

    fn retried(
        &self,
        what: &str,
        call: impl Fn() -> lancedb::Result<ArrayRef>,
    ) -> lancedb::Result<ArrayRef> {
        let mut attempts = self.policy.start();
        loop {
            let error = match call() {
                Ok(out) => return Ok(out),
                Err(e) => e,
            };
            let wait = if (self.retry_if)(&error) {
                attempts.next_wait(None)
            } else {
                None
            };
            let Some(wait) = wait else {
                if attempts.retries() == 0 {
                    return Err(error);
                }
                return Err(lancedb::Error::External {
                    source: attempts.give_up(Box::new(error)),
                });
            };
            warn!(
                model = self.inner.name(),
                error = %error,
                retry = attempts.retries(),
                wait_ms = wait.as_millis() as u64,
                "{what} failed; retrying"
            );
            usage::report_retries(1);
            std::thread::sleep(wait);
        }
    }
}

impl EmbeddingFunction for Retrying {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn source_type(&self) -> lancedb::Result<Cow<'_, DataType>> {
        self.inner.source_type()
    }

    fn dest_type(&self) -> lancedb::Result<Cow<'_, DataType>> {
        self.inner.dest_type()
    }

    fn compute_source_embeddings(&self, source: ArrayRef) -> lancedb::Result<ArrayRef> {
        self.retried("embedding", || {
            self.inner.compute_source_embeddings(source.clone())
        })
    }

    fn compute_query_embeddings(&self, input: ArrayRef) -> lancedb::Result<ArrayRef> {
        self.retried("embedding a query", || {
            self.inner.compute_query_embeddings(input.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_up_to_the_cap() {
        let policy = RetryPolicy::default()
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(700))
            .max_retries(5);
        let mut attempts = policy.start();
        let waits: Vec<Duration> = std::iter::from_fn(|| attempts.next_wait(None)).collect();
        assert_eq!(waits.len(), 5, "max_retries bounds the retries");
        let bases = [100, 200, 400, 700, 700];
        for (wait, base) in waits.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *wait >= base / 2 && *wait <= base,
                "{wait:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_and_the_elapsed_budget_ends_retries() {
        let policy = RetryPolicy::default()
            .initial_backoff(Duration::from_millis(10))
            .max_elapsed(Duration::from_secs(3));
        let mut attempts = policy.start();
        assert_eq!(
            attempts.next_wait(Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            attempts.next_wait(Some(Duration::from_secs(4))),
            None,
            "a wait past max_elapsed gives up"
        );
        assert_eq!(attempts.retries(), 1);
    }

    #[test]
    fn jitter_spreads_waits() {
        let waits: std::collections::HashSet<Duration> = (0..20)
            .map(|_| RetryPolicy::default().start().next_wait(None).unwrap())
            .collect();
        assert!(waits.len() > 10, "{} distinct waits of 20", waits.len());
    }
}
