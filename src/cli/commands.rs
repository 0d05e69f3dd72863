//! What each command does, and how its result and errors are printed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use super::args::{Args, Command};
use super::display;
use super::{Cli, Exit};
use crate::error::{Error, chain};
use crate::ledger::{LedgerEntry, LedgerStatus};
use crate::lockfile::{LockProblem, Lockfile};
use crate::migrator::{LaterWrites, Migrator, PlanState, WhenLocked};
use crate::serde_fmt::rfc3339;
use crate::stop::StopSignal;

/// A command's result: how it ended, and what it prints as text and as
/// JSON.
struct Done {
    exit: Exit,
    text: String,
    json: Value,
}

/// A command's failure: the error, and a partial result to print beside
/// it (the report of a failed run).
struct Failed {
    error: Box<Error>,
    exit: Option<Exit>,
    json: Option<(&'static str, Value)>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Self {
            error: Box::new(error),
            exit: None,
            json: None,
        }
    }
}

pub(super) async fn execute(cli: &Cli, args: Args, out: &mut (dyn Write + Send)) -> Exit {
    let json = args.json;
    let name = command_name(&args.command);
    let (exit, printed) = match run(cli, args).await {
        Ok(done) => {
            let printed = if json {
                // `command` and `exit` first, then the result.
                let mut value = serde_json::Map::new();
                value.insert("command".into(), name.into());
                value.insert("exit".into(), done.exit.as_str().into());
                if let Value::Object(result) = done.json {
                    value.extend(result);
                }
                writeln!(out, "{:#}", Value::Object(value))
            } else {
                write!(out, "{}", done.text)
            };
            (done.exit, printed)
        }
        Err(failed) => {
            let exit = failed.exit.unwrap_or_else(|| exit_of(&failed.error));
            let printed = if json {
                let mut value = json!({
                    "command": name,
                    "exit": exit.as_str(),
                    "error": {"kind": failed.error.kind(), "message": chain(&failed.error)},
                });
                if let (Some((key, partial)), Value::Object(map)) = (failed.json, &mut value) {
                    map.insert(key.into(), partial);
                }
                writeln!(out, "{value:#}")
            } else {
                eprintln!("error: {}", chain(&failed.error));
                Ok(())
            };
            (exit, printed)
        }
    };
    match printed.and_then(|()| out.flush()) {
        Ok(()) => exit,
        Err(e) => {
            eprintln!("error: could not write the output: {e}");
            Exit::Failed
        }
    }
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Status => "status",
        Command::Plan => "plan",
        Command::Up { .. } => "up",
        Command::Rollback { .. } => "rollback",
        Command::Repair { .. } => "repair",
        Command::Baseline { .. } => "baseline",
        Command::Validate => "validate",
        Command::Lock { .. } => "lock",
        Command::History => "history",
    }
}

/// How an error ends the command.
fn exit_of(error: &Error) -> Exit {
    match error.cause() {
        Error::Drift { .. }
        | Error::MissingMigrations { .. }
        | Error::OutOfOrder { .. }
        | Error::NewerMigrations { .. }
        | Error::NewerFormat { .. }
        | Error::Lockfile { .. } => Exit::Drift,
        Error::LeaseTimeout { .. } => Exit::Pending,
        Error::InvalidConfig { .. } | Error::InvalidLockfile { .. } => Exit::Usage,
        _ => Exit::Failed,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    // The crate's own types always serialize (string keys, no maps of
    // other keys); a failure here is a bug worth seeing in the output.
    serde_json::to_value(value).unwrap_or_else(|e| json!({"serialize_error": e.to_string()}))
}

async fn run(cli: &Cli, args: Args) -> Result<Done, Failed> {
    let lockfile = args
        .lockfile
        .clone()
        .unwrap_or_else(|| cli.lockfile.clone());
    match &args.command {
        Command::Validate => return validate(&offline(cli).await?, &lockfile),
        Command::Lock { force } => return lock(&offline(cli).await?, &lockfile, *force),
        _ => {}
    }
    let migrator = connect(cli, &args).await?;
    match args.command {
        Command::Status => status(&migrator).await,
        Command::Plan => plan(&migrator).await,
        Command::Up {
            no_wait,
            copy_backups,
            detailed_exitcode,
        } => {
            let mut migrator = migrator.when_locked(if no_wait {
                WhenLocked::Return
            } else {
                WhenLocked::Wait
            });
            if let Some(uri) = copy_backups {
                migrator = migrator.copy_backups_to(uri.as_str());
            }
            if let Some(show) = display::observer(args.progress, args.json) {
                migrator = migrator.on_event(show);
            }
            up(&migrator, detailed_exitcode).await
        }
        Command::Rollback {
            id,
            discard_later_writes,
        } => {
            let entries = migrator
                .rollback_to(&id, later(discard_later_writes))
                .await?;
            let mut text = String::new();
            for e in &entries {
                let _ = writeln!(text, "rolled back {} (table `{}`)", e.id, e.table);
            }
            Ok(Done {
                exit: Exit::Done,
                text,
                json: json!({"rolled_back": to_json(&entries)}),
            })
        }
        Command::Repair {
            id,
            discard_later_writes,
        } => {
            let entry = migrator.repair(&id, later(discard_later_writes)).await?;
            Ok(Done {
                exit: Exit::Done,
                text: format!("repaired {}: now {}\n", entry.id, entry.status),
                json: json!({"repaired": to_json(&entry)}),
            })
        }
        Command::Baseline { id } => {
            let entries = migrator.baseline(&id).await?;
            let mut text = String::new();
            for e in &entries {
                let _ = writeln!(text, "recorded {} as applied", e.id);
            }
            Ok(Done {
                exit: Exit::Done,
                text,
                json: json!({"recorded": to_json(&entries)}),
            })
        }
        Command::History => history(&migrator).await,
        Command::Validate | Command::Lock { .. } => unreachable!("handled above"),
    }
}

fn later(discard: bool) -> LaterWrites {
    if discard {
        LaterWrites::Discard
    } else {
        LaterWrites::Refuse
    }
}

/// The application's migrator over the database the flags name.
async fn connect(cli: &Cli, args: &Args) -> Result<Migrator, Error> {
    let uri = args.db.as_deref().ok_or_else(|| Error::InvalidConfig {
        reason: "no database given: pass `--db URI` or set LANCEDB_URI".to_owned(),
    })?;
    let mut options = Vec::new();
    for option in &args.storage_options {
        let (key, value) = option.split_once('=').ok_or_else(|| Error::InvalidConfig {
            reason: format!(
                "storage option `{}` is not KEY=VALUE",
                option.split('=').next().unwrap_or_default()
            ),
        })?;
        options.push((key.trim().to_owned(), value.to_owned()));
    }
    let db = lancedb::connect(uri)
        .storage_options(options)
        .execute()
        .await
        .map_err(Error::lance(format!("connect to `{uri}`")))?;
    Ok((cli.build)(Migrator::new(db)))
}

/// The application's migrator over an empty in-memory database: for the
/// commands that read no database.
async fn offline(cli: &Cli) -> Result<Migrator, Error> {
    let db = lancedb::connect("memory://")
        .execute()
        .await
        .map_err(Error::lance("open an in-memory database"))?;
    Ok((cli.build)(Migrator::new(db)))
}

/// The listed migrations not applied, and the applied ones whose
/// definition changed, by the ledger's rows.
fn pending_and_drifted(migrator: &Migrator, entries: &[LedgerEntry]) -> (Vec<String>, Vec<String>) {
    let by_id: HashMap<&str, &LedgerEntry> = entries.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut pending = Vec::new();
    let mut drifted = Vec::new();
    for m in &migrator.migrations {
        match by_id.get(m.id()) {
            Some(e) if e.status == LedgerStatus::Applied => {
                if e.checksum != m.checksum() && !m.previous_checksums().contains(&e.checksum) {
                    drifted.push(m.id().to_owned());
                }
            }
            _ => pending.push(m.id().to_owned()),
        }
    }
    (pending, drifted)
}

async fn status(migrator: &Migrator) -> Result<Done, Failed> {
    migrator.validate()?;
    let table = migrator.status().await?;
    let (pending, drifted) = pending_and_drifted(migrator, table.entries());
    let mut text = table.to_string();
    if !pending.is_empty() {
        let _ = writeln!(text, "pending: {}", pending.join(", "));
    }
    if !drifted.is_empty() {
        let _ = writeln!(
            text,
            "DRIFTED (edited after they were applied): {}",
            drifted.join(", ")
        );
    }
    let exit = if !drifted.is_empty() {
        Exit::Drift
    } else if !pending.is_empty() {
        Exit::Pending
    } else {
        Exit::Done
    };
    let mut json = to_json(&table);
    if let Value::Object(map) = &mut json {
        map.insert("pending".into(), to_json(&pending));
        map.insert("drifted".into(), to_json(&drifted));
    }
    Ok(Done { exit, text, json })
}

async fn plan(migrator: &Migrator) -> Result<Done, Failed> {
    let plan = migrator.plan().await?;
    let states = || plan.steps().iter().map(|s| &s.state);
    let exit = if states().any(|s| matches!(s, PlanState::WouldFail { .. })) {
        Exit::Failed
    } else if states().any(|s| matches!(s, PlanState::Drifted { .. })) {
        Exit::Drift
    } else if plan.pending().next().is_some() {
        Exit::Pending
    } else {
        Exit::Done
    };
    let mut json = to_json(&plan);
    if let Value::Object(map) = &mut json {
        let pending: Vec<&str> = plan.pending().map(|s| s.id.as_str()).collect();
        map.insert("pending".into(), to_json(&pending));
    }
    Ok(Done {
        exit,
        text: plan.to_string(),
        json,
    })
}

async fn up(migrator: &Migrator, detailed: bool) -> Result<Done, Failed> {
    let signals = tokio::spawn(stop_on_signals(migrator.stop_signal()));
    let result = migrator.run().await;
    signals.abort();
    match result {
        Ok(report) => {
            let left = report.pending().count() + usize::from(report.stopped().is_some());
            let exit = if left > 0 {
                Exit::Pending
            } else if report.is_noop() && detailed {
                Exit::NothingToDo
            } else {
                Exit::Done
            };
            let mut text = report.to_string();
            if report.stopped().is_some() {
                text.push_str("stopped: the next `up` (or application start) continues it\n");
            } else if report.is_noop() && left == 0 {
                text = format!(
                    "nothing to do: {} migrations applied\n",
                    report.migrations().len()
                );
            }
            Ok(Done {
                exit,
                text,
                json: json!({"report": to_json(&report)}),
            })
        }
        Err(error) => {
            let partial = error.report().map(|r| ("report", to_json(r)));
            Err(Failed {
                error: Box::new(error),
                exit: None,
                json: partial,
            })
        }
    }
}

/// Asks the run to stop at its next safe point on the first Ctrl-C or
/// SIGTERM; exits at once on the second.
async fn stop_on_signals(stop: StopSignal) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        #[cfg(unix)]
        let terminated = async {
            match term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let terminated = std::future::pending::<()>();
        tokio::select! {
            r = tokio::signal::ctrl_c() => if r.is_err() { return },
            () = terminated => {}
        }
        if stop.is_stopped() {
            eprintln!("\nstopping now; the next run recovers the migration under way");
            std::process::exit(130);
        }
        eprintln!(
            "\nstopping at the next safe point: work under way is committed and the next `up` continues it (press Ctrl-C again to quit at once)"
        );
        stop.stop();
    }
}

async fn history(migrator: &Migrator) -> Result<Done, Failed> {
    let mut entries = migrator.ledger().await?;
    entries.sort_by_key(|e| (e.started_at, e.seq));
    let mut text = String::new();
    if entries.is_empty() {
        text.push_str("the ledger is empty: no migration has run\n");
    }
    for e in &entries {
        let took = e
            .duration()
            .map_or_else(|| "-".to_owned(), |d| format!("{d:.1?}"));
        let _ = writeln!(
            text,
            "{}  {}  on `{}`  {}  took {took}  by lancedb-migrate {}",
            rfc3339(e.started_at),
            e.id,
            e.table,
            e.status,
            e.crate_version
        );
        if let Some(error) = &e.error {
            let _ = writeln!(text, "    error: {error}");
        }
    }
    Ok(Done {
        exit: Exit::Done,
        text,
        json: json!({"entries": to_json(&entries)}),
    })
}

fn read_lockfile(path: &Path) -> Result<Option<Lockfile>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Lockfile::parse(&text)
            .map(Some)
            .map_err(|e| Error::InvalidLockfile {
                reason: format!("`{}`: {}", path.display(), chain(&e)),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::InvalidLockfile {
            reason: format!("`{}` could not be read: {e}", path.display()),
        }),
    }
}

fn validate(migrator: &Migrator, path: &Path) -> Result<Done, Failed> {
    let locked = read_lockfile(path)?.ok_or_else(|| Error::InvalidLockfile {
        reason: format!(
            "there is no lockfile at `{}`: run `migrate lock` and commit it",
            path.display()
        ),
    })?;
    let problems = migrator.check_lockfile(&locked)?;
    let exit = if problems.iter().any(LockProblem::is_divergence) {
        Exit::Drift
    } else if problems.is_empty() {
        Exit::Done
    } else {
        Exit::Pending
    };
    let mut text = String::new();
    if problems.is_empty() {
        let _ = writeln!(
            text,
            "{} migrations match the lockfile `{}`",
            locked.migrations().len(),
            path.display()
        );
    }
    for p in &problems {
        let _ = writeln!(text, "{p}");
    }
    Ok(Done {
        exit,
        text,
        json: json!({
            "lockfile": path.display().to_string(),
            "locked": locked.migrations().len(),
            "problems": to_json(&problems),
        }),
    })
}

fn lock(migrator: &Migrator, path: &Path, force: bool) -> Result<Done, Failed> {
    let before = read_lockfile(path)?;
    let after = match (&before, force) {
        (Some(locked), false) => migrator.relock(locked)?,
        _ => migrator.lockfile()?,
    };
    let written = before.as_ref() != Some(&after);
    if written {
        std::fs::write(path, after.to_string()).map_err(|e| Error::Io {
            operation: format!("write the lockfile `{}`", path.display()),
            source: e,
        })?;
    }
    let added = after.migrations().len()
        - before
            .as_ref()
            .map_or(0, |b| b.migrations().len())
            .min(after.migrations().len());
    let text = if written {
        format!(
            "wrote `{}`: {} migrations ({added} new); commit it\n",
            path.display(),
            after.migrations().len()
        )
    } else {
        format!("`{}` is up to date\n", path.display())
    };
    Ok(Done {
        exit: Exit::Done,
        text,
        json: json!({
            "lockfile": path.display().to_string(),
            "written": written,
            "migrations": to_json(&after.migrations()),
        }),
    })
}
