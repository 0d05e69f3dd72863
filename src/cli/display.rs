//! How `up` shows a run's events on standard error: a progress bar on a
//! terminal, plain lines otherwise, JSON lines with `--json`.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::args::ProgressMode;
use crate::event::Event;
use crate::report::Phase;

/// How often plain mode prints a progress line for a long phase.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// The observer that shows events as `mode` and `json` say; `None` to
/// show nothing.
pub(super) fn observer(mode: ProgressMode, json: bool) -> Option<impl Fn(&Event) + Send + Sync> {
    let style = match (json, mode) {
        (_, ProgressMode::None) => return None,
        (true, _) => Style::Json,
        (false, ProgressMode::Plain) => Style::Plain,
        (false, ProgressMode::Auto) if std::io::stderr().is_terminal() => Style::Bar,
        (false, ProgressMode::Auto) => Style::Plain,
    };
    let state = Mutex::new(State {
        style,
        bar: None,
        phase: None,
        last_line: None,
    });
    Some(move |event: &Event| {
        if let Ok(mut state) = state.lock() {
            state.show(event);
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Bar,
    Plain,
    Json,
}

struct State {
    style: Style,
    bar: Option<ProgressBar>,
    phase: Option<Phase>,
    last_line: Option<Instant>,
}

impl State {
    fn show(&mut self, event: &Event) {
        if self.style == Style::Json {
            if let Ok(line) = serde_json::to_string(event) {
                eprintln!("{line}");
            }
            return;
        }
        match event {
            Event::MigrationStarted { migration, table } => {
                self.line(format!("{migration} on `{table}`"));
            }
            Event::PhaseStarted { phase, .. } => self.phase = Some(*phase),
            Event::PhaseFinished {
                phase, duration, ..
            } => {
                self.clear_bar();
                self.line(format!("  {phase} done in {duration:.1?}"));
            }
            Event::Progress {
                done,
                total,
                rate,
                eta,
                embedding,
                ..
            } => {
                let mut rate = format!("{rate:.0} rows/s");
                if let Some(e) = embedding {
                    rate.push_str(&format!(", {:.0} texts/s", e.texts_per_sec));
                }
                let eta = eta.map_or_else(|| "?".to_owned(), |e| format!("{:.0?}", round(e)));
                self.progress(*done, *total, &rate, &eta);
            }
            Event::MigrationApplied {
                migration,
                duration,
            } => {
                self.clear_bar();
                self.line(format!("{migration} applied in {duration:.1?}"));
            }
            Event::MigrationStopped { migration, phase } => {
                self.clear_bar();
                self.line(format!(
                    "{migration} stopped during {phase}; its progress is saved and the next run continues it"
                ));
            }
            Event::MigrationFailed {
                migration,
                phase,
                error,
            } => {
                self.clear_bar();
                self.line(format!(
                    "{migration} FAILED during {phase}, rolled back: {}",
                    crate::error::chain(error.as_ref())
                ));
            }
            Event::LeaseWaiting { holder, .. } => {
                let holder = holder.as_deref().unwrap_or("another process");
                self.line(format!("waiting for the migration lease, held by {holder}"));
            }
            Event::LeaseLost { .. } => {
                self.clear_bar();
                self.line(
                    "lost the migration lease (this process stalled); it wrote nothing more"
                        .to_owned(),
                );
            }
            _ => {}
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn clear_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.last_line = None;
    }

    fn progress(&mut self, done: u64, total: Option<u64>, rate: &str, eta: &str) {
        let phase = self.phase.map_or("working", Phase::as_str);
        match self.style {
            Style::Bar => {
                let bar = self.bar.get_or_insert_with(|| new_bar(total));
                if let Some(total) = total {
                    bar.set_length(total);
                }
                bar.set_prefix(phase);
                bar.set_position(done);
                bar.set_message(format!("{rate}, ETA {eta}"));
            }
            Style::Plain => {
                let finished = total.is_some_and(|t| done >= t);
                if self.last_line.is_some_and(|at| at.elapsed() < PLAIN_EVERY) && !finished {
                    return;
                }
                self.last_line = Some(Instant::now());
                let of = match total {
                    Some(total) if total > 0 => {
                        format!("{done}/{total} rows ({}%)", done.min(total) * 100 / total)
                    }
                    _ => format!("{done} rows"),
                };
                eprintln!("  {phase}: {of}, {rate}, ETA {eta}");
            }
            Style::Json => {}
        }
    }
}

/// A bar for a phase of `total` rows (a spinner when unknown), redrawn ten
/// times a second.
fn new_bar(total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "  {prefix} [{bar:30.cyan/blue}] {pos}/{len} rows, {percent}%, {msg} ({elapsed})",
        ),
        None => (
            ProgressBar::new_spinner(),
            "  {prefix} {spinner} {pos} rows, {msg} ({elapsed})",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// `d` to whole seconds (to the tenth under ten seconds), for an ETA.
fn round(d: Duration) -> Duration {
    if d < Duration::from_secs(10) {
        Duration::from_millis(d.as_millis() as u64 / 100 * 100)
    } else {
        Duration::from_secs(d.as_secs())
    }
}
