//! The operator's command line, for an application's own binary (feature
//! `cli`).
//!
//! One call gives the application's binary the commands every team
//! otherwise writes itself, over the application's own migration list:
//!
//! | command | what it does | exit code |
//! |---|---|---|
//! | `status` | the ledger as a table: each migration's state, versions, rows, backup, duration | 0 all applied, 3 pending, 4 drift |
//! | `plan` | what `up` would do, without writing anything ([`Migrator::plan`]) | 0 nothing to do, 3 pending, 4 drift, 1 would fail |
//! | `up` | applies what is pending ([`Migrator::run`]), with a progress bar | 0 applied (or nothing to do), 3 left pending, 4 drift, 1 failed |
//! | `rollback ID` | undoes `ID` and every migration after it ([`Migrator::rollback_to`]) | 0 done, 1 refused |
//! | `repair ID` | accepts `ID`'s new definition or clears its failure ([`Migrator::repair`]) | 0 done, 1 refused |
//! | `baseline ID` | records `ID` and those before it as applied ([`Migrator::baseline`]) | 0 done, 1 refused |
//! | `validate` | checks the list against the lockfile, **without a database** | 0 matches, 4 diverges, 3 lockfile stale |
//! | `lock` | writes the lockfile (appends new migrations; refuses divergence) | 0 written, 4 diverges |
//! | `history` | every ledger row in the order they started, with times and errors | 0 |
//!
//! Every command takes `--json`: the result (or the error, as `{"error":
//! {"kind", "message"}}`) is one JSON document on standard output, and the
//! run's [`Event`](crate::Event)s are JSON lines on standard error. The
//! names and units are the `serde` feature's (README, "Machine-readable
//! output"). Without `--json`, results are text, and a long migration
//! shows a progress bar with its rate and time left when standard error
//! is a terminal, plain lines when it is not (`--progress bar|plain|none`
//! to choose).
//!
//! The exit codes are [`Exit`]'s: `0` done, `1` failed, `2` usage or
//! configuration, `3` pending, `4` drift (the list and the ledger or
//! lockfile disagree), and `5` for `up --detailed-exitcode` when there
//! was nothing to do.
//!
//! The database is `--db URI` or `LANCEDB_URI`; storage options are
//! `--storage-option KEY=VALUE` (repeated) or `LANCEDB_STORAGE_OPTIONS`
//! (`KEY=VALUE,KEY=VALUE`). The lockfile is `--lockfile PATH`,
//! `LANCEDB_MIGRATE_LOCKFILE`, or the path given to [`Cli::lockfile`]
//! (default [`Lockfile::DEFAULT_PATH`](crate::Lockfile::DEFAULT_PATH)).
//!
//! `up` stops gracefully on Ctrl-C or SIGTERM ([`StopSignal`](crate::StopSignal)):
//! a re-embed commits the batches it has, saves its checkpoint and
//! releases the lease, and the next `up` (or application start) continues
//! it; `up` then exits with `3`. A second Ctrl-C exits at once (the
//! migration is then recovered by the next run, as after a crash).
//!
//! # Examples
//!
//! An application's `main`, giving its binary a `migrate` command beside
//! its own:
//!
//! ```no_run
//! use std::process::ExitCode;
//! use arrow_schema::DataType;
//! use lancedb_migrate::{AddColumns, Migrator, NewColumn, cli::Cli};
//!
//! /// The application's migrations, oldest first: the same list its
//! /// start-up runs.
//! fn migrations(migrator: Migrator) -> Migrator {
//!     migrator.add(
//!         AddColumns::new("0001_category", "documents")
//!             .column(NewColumn::new("category", DataType::Utf8).default_value("general")),
//!     )
//! }
//!
//! #[tokio::main]
//! async fn main() -> ExitCode {
//!     let mut args = std::env::args();
//!     if args.nth(1).as_deref() == Some("migrate") {
//!         // `app migrate status`, `app migrate up --json`, ...
//!         return Cli::new(migrations)
//!             .name("app migrate")
//!             .lockfile(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations.lock"))
//!             .run_from(std::env::args().skip(1))
//!             .await;
//!     }
//!     // ... serve
//!     ExitCode::SUCCESS
//! }
//! ```
//!
//! In the application's CI, with no database: `app migrate validate`.
//!
//! An application whose own command line is clap's forwards the words
//! after its `migrate` subcommand, the subcommand's name first:
//! `#[arg(trailing_var_arg = true, allow_hyphen_values = true)] args:
//! Vec<String>`, then `Cli::new(migrations).name("app
//! migrate").run_from(std::iter::once("app migrate".to_owned()).chain(args))`.

mod args;
mod commands;
mod display;

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory as _, FromArgMatches as _};

use crate::lockfile::Lockfile;
use crate::migrator::Migrator;

/// How a command ended, as its exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// `0`: done. `up` applied what was pending (or there was nothing to
    /// do); `status` and `plan` found nothing pending; `validate` found
    /// the list as locked; an operation was carried out.
    Done,
    /// `1`: a migration failed (and was rolled back), an operation was
    /// refused, the database could not be read, or `plan` found a
    /// migration the next run would refuse.
    Failed,
    /// `2`: the command line or the configuration is wrong (no database
    /// given, an unreadable lockfile, an unknown flag).
    Usage,
    /// `3`: migrations are pending. `status`/`plan` found some; `up` left
    /// some for later (another process holds the lease, or it was
    /// stopped with Ctrl-C or SIGTERM: the next `up` continues);
    /// `validate` found migrations not yet in the lockfile.
    Pending,
    /// `4`: the list and the ledger or the lockfile disagree: a migration
    /// was edited after it was applied or locked, deleted, inserted
    /// before others, or the ledger is of a newer format.
    Drift,
    /// `5`: `up --detailed-exitcode` found nothing to do (without the
    /// flag that is `0`).
    NothingToDo,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Done => 0,
            Self::Failed => 1,
            Self::Usage => 2,
            Self::Pending => 3,
            Self::Drift => 4,
            Self::NothingToDo => 5,
        }
    }

    /// Its name in `snake_case`, as `--json` writes it (`"done"`,
    /// `"pending"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Usage => "usage",
            Self::Pending => "pending",
            Self::Drift => "drift",
            Self::NothingToDo => "nothing_to_do",
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit.code())
    }
}

/// The migration list, as the application builds it onto a [`Migrator`].
type Build = Arc<dyn Fn(Migrator) -> Migrator + Send + Sync>;

/// The operator's command line over an application's migration list. See
/// the [module documentation](self) for the commands, flags and exit
/// codes.
#[must_use = "a Cli does nothing until `run` is called"]
pub struct Cli {
    build: Build,
    name: String,
    lockfile: PathBuf,
}

impl fmt::Debug for Cli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cli")
            .field("name", &self.name)
            .field("lockfile", &self.lockfile)
            .finish_non_exhaustive()
    }
}

impl Cli {
    /// A command line over the migrations `migrations` adds to a
    /// [`Migrator`]: the application's own list, with its settings
    /// (ledger table, lease, retention, observers), as its start-up builds
    /// it.
    ///
    /// It is called once per command, with a migrator over the database
    /// the command names; for `validate` and `lock`, which read no
    /// database, with one over an empty in-memory database (nothing is read
    /// from it). So it should only build the list: no I/O.
    pub fn new(migrations: impl Fn(Migrator) -> Migrator + Send + Sync + 'static) -> Self {
        Self {
            build: Arc::new(migrations),
            name: "migrate".to_owned(),
            lockfile: PathBuf::from(Lockfile::DEFAULT_PATH),
        }
    }

    /// The command's name in help and usage lines (default `migrate`), e.g.
    /// `"app migrate"` for a subcommand of the application's binary.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The lockfile `validate` and `lock` use unless `--lockfile` or
    /// `LANCEDB_MIGRATE_LOCKFILE` says otherwise; default
    /// [`Lockfile::DEFAULT_PATH`] in the working directory. An application
    /// usually passes a path in its source tree,
    /// `concat!(env!("CARGO_MANIFEST_DIR"), "/migrations.lock")`.
    pub fn lockfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.lockfile = path.into();
        self
    }

    /// Runs the command the process's arguments give (`std::env::args_os`,
    /// the first being the program), printing to standard output and
    /// error, and returns the exit code for `main` to return.
    pub async fn run(self) -> ExitCode {
        let args: Vec<OsString> = std::env::args_os().collect();
        self.run_from(args).await
    }

    /// Runs the command `args` give, the first being the program's name as
    /// clap expects (for a subcommand of the application's binary: its
    /// arguments from the subcommand's name on).
    pub async fn run_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut stdout = std::io::stdout();
        self.execute(args, &mut stdout).await.into()
    }

    /// Runs the command `args` give, writing its result to `out` instead of
    /// standard output (events, progress and text-mode errors still go to
    /// standard error), and returns how it ended. For tests and for
    /// applications that route the output themselves.
    pub async fn execute<I, T>(self, args: I, out: &mut (dyn Write + Send)) -> Exit
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let json = args.iter().skip(1).any(|a| a == "--json");
        let command = args::Args::command().bin_name(self.name.clone());
        let parsed = command
            .try_get_matches_from(args)
            .and_then(|matches| args::Args::from_arg_matches(&matches));
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(e) => return clap_exit(&e, json.then_some(out)),
        };
        commands::execute(&self, parsed, out).await
    }
}

/// Prints clap's help, version or usage error and says how to exit; with
/// `--json` (`json` is then the output), a usage error is also a JSON
/// document there, as every other error.
fn clap_exit(e: &clap::Error, json: Option<&mut (dyn Write + Send)>) -> Exit {
    use clap::error::ErrorKind;
    let text = e.render().to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            print!("{text}");
            Exit::Done
        }
        _ => {
            eprint!("{text}");
            if let Some(out) = json {
                let message = text
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                let value = serde_json::json!({
                    "command": null,
                    "exit": Exit::Usage.as_str(),
                    "error": {"kind": "usage", "message": message},
                });
                let _ = writeln!(out, "{value:#}").and_then(|()| out.flush());
            }
            Exit::Usage
        }
    }
}
