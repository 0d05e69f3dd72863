//! Progress of a long phase, reported by the migration doing the work.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::info;

use crate::embeddings::usage::Usage;
use crate::event::{EmbeddingProgress, Event, Events};

/// A handle a migration uses to report rows processed during a long phase.
///
/// Reports are forwarded to the run's observer and to `tracing` at a bounded
/// rate (about once per [`Progress::INTERVAL`]), so calling
/// [`advance`](Self::advance) for every batch is cheap.
#[derive(Debug)]
pub struct Progress {
    migration: String,
    events: Events,
    state: Mutex<State>,
    embedding: Arc<Usage>,
}

#[derive(Debug)]
struct State {
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_sent: Option<Instant>,
}

impl Progress {
    /// The least time between two progress events.
    pub const INTERVAL: Duration = Duration::from_millis(500);

    pub(crate) fn new(migration: &str, events: Events) -> Self {
        Self {
            migration: migration.to_owned(),
            events,
            state: Mutex::new(State {
                total: None,
                done: 0,
                started: Instant::now(),
                last_sent: None,
            }),
            embedding: Arc::default(),
        }
    }

    /// Sets the number of rows the phase will process, and starts counting
    /// from zero.
    pub fn start(&self, total: Option<u64>) {
        let mut state = self.lock();
        *state = State {
            total,
            done: 0,
            started: Instant::now(),
            last_sent: None,
        };
        self.embedding.begin();
    }

    /// Records `rows` more rows done.
    pub fn advance(&self, rows: u64) {
        let event = {
            let mut state = self.lock();
            state.done += rows;
            let due = state
                .last_sent
                .is_none_or(|t| t.elapsed() >= Self::INTERVAL);
            let finished = state.total.is_some_and(|t| state.done >= t);
            (due || finished).then(|| {
                state.last_sent = Some(Instant::now());
                self.event(&state)
            })
        };
        if let Some(event) = event {
            self.send(event);
        }
    }

    /// Adds `rows` to the total, for work found while running (e.g. rows
    /// the application appended meanwhile). Starts a total if none was set.
    pub fn extend_total(&self, rows: u64) {
        let mut state = self.lock();
        state.total = Some(state.total.unwrap_or(state.done) + rows);
    }

    /// Rows done so far.
    pub fn done(&self) -> u64 {
        self.lock().done
    }

    /// The counters an embedder's work in this phase is counted into.
    /// Rows done, rows to do (when known), rows per second since the
    /// start.
    pub(crate) fn snapshot(&self) -> (u64, Option<u64>, f64) {
        let state = self.lock();
        let secs = state.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            state.done as f64 / secs
        } else {
            0.0
        };
        (state.done, state.total, rate)
    }

    pub(crate) fn embedding_usage(&self) -> Arc<Usage> {
        self.embedding.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn event(&self, state: &State) -> Event {
        let secs = state.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            state.done as f64 / secs
        } else {
            0.0
        };
        let eta = state
            .total
            .filter(|_| rate > 0.0)
            .map(|total| Duration::from_secs_f64(total.saturating_sub(state.done) as f64 / rate));
        let (texts, tokens, retries) = self.embedding_usage().read();
        let embedding_secs = self.embedding.elapsed_secs().unwrap_or(secs);
        let per_sec = |n: u64| {
            if embedding_secs > 0.0 {
                n as f64 / embedding_secs
            } else {
                0.0
            }
        };
        let embedding = (texts > 0 || retries > 0).then(|| EmbeddingProgress {
            texts,
            texts_per_sec: per_sec(texts),
            tokens,
            tokens_per_sec: tokens.map(per_sec),
            retries,
        });
        Event::Progress {
            migration: self.migration.clone(),
            done: state.done,
            total: state.total,
            rate,
            eta,
            embedding,
        }
    }

    fn send(&self, event: Event) {
        if let Event::Progress {
            done,
            total,
            rate,
            eta,
            embedding,
            ..
        } = &event
        {
            match embedding {
                Some(e) => info!(
                    migration = self.migration,
                    done,
                    total,
                    rate = *rate as u64,
                    eta_secs = eta.map(|e| e.as_secs()),
                    texts_per_sec = e.texts_per_sec as u64,
                    tokens_per_sec = e.tokens_per_sec.map(|t| t as u64),
                    retries = e.retries,
                    "progress"
                ),
                None => info!(
                    migration = self.migration,
                    done,
                    total,
                    rate = *rate as u64,
                    eta_secs = eta.map(|e| e.as_secs()),
                    "progress"
                ),
            }
        }
        self.events.emit(event);
    }
}

impl crate::lance::backfill::RowProgress for Progress {
    fn start(&self, total: Option<u64>) {
        Self::start(self, total);
    }

    fn extend_total(&self, rows: u64) {
        Self::extend_total(self, rows);
    }

    fn advance(&self, rows: u64) {
        Self::advance(self, rows);
    }
}
