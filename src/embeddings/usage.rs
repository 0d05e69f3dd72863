//! Counting an embedder's work for progress reports: texts embedded,
//! tokens the service says it processed, and retries.
//!
//! [`ReEmbed`](crate::ReEmbed) makes its counters current on the thread
//! that calls the embedder; the embedder reports into them (from that
//! thread, or from tasks given [`current`]'s handle).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Counters of one migration's embedding work.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    pub(crate) texts: AtomicU64,
    pub(crate) tokens: AtomicU64,
    pub(crate) has_tokens: AtomicBool,
    pub(crate) retries: AtomicU64,
    started: OnceLock<Instant>,
}

impl Usage {
    pub(crate) fn add_tokens(&self, tokens: u64) {
        self.tokens.fetch_add(tokens, Ordering::Relaxed);
        self.has_tokens.store(true, Ordering::Relaxed);
    }

    pub(crate) fn add_retries(&self, retries: u64) {
        self.retries.fetch_add(retries, Ordering::Relaxed);
    }

    /// Marks the start of the work, once: later passes over appended rows
    /// keep counting from the first.
    pub(crate) fn begin(&self) {
        self.started.get_or_init(Instant::now);
    }

    /// Seconds since [`begin`](Self::begin), if it was called.
    pub(crate) fn elapsed_secs(&self) -> Option<f64> {
        self.started.get().map(|t| t.elapsed().as_secs_f64())
    }

    /// Texts, tokens (if ever reported) and retries so far.
    pub(crate) fn read(&self) -> (u64, Option<u64>, u64) {
        let tokens = self
            .has_tokens
            .load(Ordering::Relaxed)
            .then(|| self.tokens.load(Ordering::Relaxed));
        (
            self.texts.load(Ordering::Relaxed),
            tokens,
            self.retries.load(Ordering::Relaxed),
        )
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Usage>>> = const { RefCell::new(None) };
}

/// Runs `f` with `usage` current on this thread.
pub(crate) fn scoped<R>(usage: &Arc<Usage>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<Usage>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CURRENT.with(|c| c.borrow_mut().replace(usage.clone()));
    let _restore = Restore(previous);
    f()
}

/// The counters current on this thread, to hand to work done elsewhere.
pub(crate) fn current() -> Option<Arc<Usage>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Reports that the embedding service processed `tokens` tokens (its
/// `usage.prompt_tokens`), for the running [`ReEmbed`](crate::ReEmbed)'s
/// progress (tokens per second).
///
/// Call it from an embedding function's `compute_source_embeddings`, on
/// the thread it was called on. Outside a re-embed it does nothing.
pub fn report_tokens(tokens: u64) {
    if let Some(usage) = current() {
        usage.add_tokens(tokens);
    }
}

/// Reports `retries` more retried requests, for the running
/// [`ReEmbed`](crate::ReEmbed)'s progress. Call it as
/// [`report_tokens`]; outside a re-embed it does nothing.
pub fn report_retries(retries: u64) {
    if let Some(usage) = current() {
        usage.add_retries(retries);
    }
}
