//! The operator's command line (feature `cli`), used as a person and a
//! deploy pipeline use it: every command's JSON parsed and its exit code
//! checked against the database it ran on; `validate` and `lock` with no
//! database; and `up` in a real terminal (tmux): the progress bar drawn, a
//! Ctrl-C in the middle of a re-embed stopping it gracefully, and the next
//! `up` continuing it.
//!
//! The application binary is this test binary itself, run as the ignored
//! test `cli::app` (the crate's `Cli` over the list below).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_schema::DataType;
use lancedb_migrate::cli::{Cli, Exit};
use lancedb_migrate::testing::{self, TestEmbedding};
use lancedb_migrate::{AddColumns, Lockfile, Migrator, NewColumn, ReEmbed};
use serde_json::Value;

use crate::reembed::{assert_reembedded, logged_rows, logging};
use crate::support::rows;

/// The child's command-line arguments, as a JSON array.
const ARGS_ENV: &str = "LANCEDB_MIGRATE_CLI_ARGS";
/// Where the child's embedder logs the texts it embedded.
const LOG_ENV: &str = "LANCEDB_MIGRATE_CLI_LOG";
/// The child's embedder's delay per call, in milliseconds.
const DELAY_ENV: &str = "LANCEDB_MIGRATE_CLI_DELAY_MS";
/// Set to 1 to make the child log through `tracing` to standard error.
const TRACE_ENV: &str = "LANCEDB_MIGRATE_CLI_TRACE";
/// Set to 1 (as `.ci/run` does) to fail instead of skipping without tmux.
const REQUIRE_TMUX_ENV: &str = "LANCEDB_MIGRATE_REQUIRE_TMUX";

const TABLE: &str = "documents";

/// Versions of the application's migration list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    /// `0001_defaults`, `0002_reembed`.
    Base,
    /// `0001_defaults` with another default value.
    Edited,
    /// `0001_defaults` deleted.
    Deleted,
    /// `0000_first` inserted before them.
    Inserted,
    /// The two swapped.
    Moved,
    /// `0003_flag` added after them.
    Appended,
}

fn defaults(value: &str) -> AddColumns {
    AddColumns::new("0001_defaults", TABLE)
        .column(NewColumn::new("category", DataType::Utf8).default_value(value))
}

fn reembed(model: Arc<dyn lancedb::embeddings::EmbeddingFunction>) -> ReEmbed {
    ReEmbed::new("0002_reembed", TABLE, model)
        .model("test-32")
        .batch_size(50)
        .concurrency(1)
        .checkpoint_every(Duration::ZERO)
        .verify_sample(16)
}

/// The list `list`, re-embedding with the test model.
fn migrations(list: List) -> impl Fn(Migrator) -> Migrator + Send + Sync + 'static {
    move |m| {
        let model = Arc::new(TestEmbedding::new("test-32", 32));
        let flag = AddColumns::new("0003_flag", TABLE)
            .column(NewColumn::new("is_active", DataType::Boolean).default_value(true));
        let first = AddColumns::new("0000_first", TABLE)
            .column(NewColumn::new("source", DataType::Utf8).default_value("web"));
        match list {
            List::Base => m.add(defaults("general")).add(reembed(model)),
            List::Edited => m.add(defaults("misc")).add(reembed(model)),
            List::Deleted => m.add(reembed(model)),
            List::Inserted => m.add(first).add(defaults("general")).add(reembed(model)),
            List::Moved => m.add(reembed(model)).add(defaults("general")),
            List::Appended => m.add(defaults("general")).add(reembed(model)).add(flag),
        }
    }
}

/// Runs `migrate ARGS` in this process over `list`, with the lockfile
/// `lockfile`: how it ended, and its output parsed as JSON (`Null` when it
/// printed none).
async fn cli(list: List, lockfile: &Path, args: &[&str]) -> (Exit, Value) {
    let mut out = Vec::new();
    let exit = Cli::new(migrations(list))
        .lockfile(lockfile)
        .execute(
            std::iter::once("migrate").chain(args.iter().copied()),
            &mut out,
        )
        .await;
    let json = if out.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "`{}` printed no JSON ({e}):\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out)
            )
        })
    };
    (exit, json)
}

fn ids(values: &Value) -> Vec<&str> {
    values
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {values}"))
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect()
}

/// A fresh local database with a 600-row, 8-d `documents` table.
async fn database() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("db").to_string_lossy().into_owned();
    let db = lancedb::connect(&uri).execute().await.unwrap();
    testing::documents_table(&db, TABLE, 600, 8).await.unwrap();
    (dir, uri)
}

/// Every row's `category` is `value`.
async fn assert_categories(table: &lancedb::Table, value: &str) {
    for batch in rows(table, &["category"]).await {
        let categories = batch.column(0).as_string::<i32>();
        assert!(
            categories.iter().all(|c| c == Some(value)),
            "{categories:?}"
        );
    }
}

/// Each command's JSON says what the database shows, and its exit code
/// says how it ended: pending, applied, nothing to do, drift, failure.
#[tokio::test]
async fn every_command_prints_json_and_exits_by_its_outcome() {
    let (dir, uri) = database().await;
    let lock = dir.path().join("migrations.lock");
    let db = ["--db", uri.as_str(), "--json"];
    let with = |rest: &[&'static str]| -> Vec<&str> {
        db.iter().copied().chain(rest.iter().copied()).collect()
    };

    let (exit, plan) = cli(List::Base, &lock, &with(&["plan"])).await;
    assert_eq!(exit, Exit::Pending, "{plan:#}");
    assert_eq!(
        (plan["command"].as_str(), plan["exit"].as_str()),
        (Some("plan"), Some("pending"))
    );
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(ids(&plan["steps"]), ["0001_defaults", "0002_reembed"]);
    assert_eq!(
        plan["pending"],
        serde_json::json!(["0001_defaults", "0002_reembed"])
    );
    assert!(steps.iter().all(|s| s["state"] == "pending"), "{plan:#}");
    assert_eq!(steps[0]["work"]["writes"]["kind"], "columns");
    assert_eq!(steps[0]["work"]["writes"]["rows"], 600);
    assert_eq!(steps[1]["work"]["columns"][0], "vector");

    let (exit, status) = cli(List::Base, &lock, &with(&["status"])).await;
    assert_eq!(exit, Exit::Pending, "{status:#}");
    assert_eq!(status["entries"], Value::Array(vec![]));
    assert_eq!(
        status["pending"],
        serde_json::json!(["0001_defaults", "0002_reembed"])
    );

    let (exit, up) = cli(List::Base, &lock, &with(&["up", "--progress", "none"])).await;
    assert_eq!(exit, Exit::Done, "{up:#}");
    let report = &up["report"]["migrations"];
    assert_eq!(ids(report), ["0001_defaults", "0002_reembed"]);
    for m in report.as_array().unwrap() {
        assert_eq!(m["outcome"], "applied", "{m:#}");
        assert_eq!(
            (m["rows_before"].as_u64(), m["rows_after"].as_u64()),
            (Some(600), Some(600))
        );
        assert!(m["duration_secs"].as_f64().unwrap() > 0.0, "{m:#}");
        let phases: Vec<&str> = m["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["phase"].as_str().unwrap())
            .collect();
        assert_eq!(
            phases,
            ["prepare", "backup", "transform", "rebuild", "verify"]
        );
    }
    assert_eq!(report[1]["details"]["model"], "test-32", "{:#}", report[1]);
    // What the JSON says happened did happen.
    let conn = lancedb::connect(&uri).execute().await.unwrap();
    let table = conn.open_table(TABLE).execute().await.unwrap();
    assert_eq!(assert_reembedded(&table, 32).await, 600);
    assert_categories(&table, "general").await;

    // The ledger as JSON: the checksums are the lockfile's.
    let (exit, status) = cli(List::Base, &lock, &with(&["status"])).await;
    assert_eq!(exit, Exit::Done, "{status:#}");
    let entries = status["entries"].as_array().unwrap();
    let locked = migrations(List::Base)(Migrator::new(conn.clone()))
        .lockfile()
        .unwrap();
    for (entry, locked) in entries.iter().zip(locked.migrations()) {
        assert_eq!(entry["id"].as_str(), Some(locked.id.as_str()));
        assert_eq!(entry["status"], "applied");
        assert_eq!(entry["checksum"].as_str(), Some(locked.checksum.as_str()));
        assert!(
            entry["started_at"].as_str().unwrap().ends_with('Z'),
            "{entry:#}"
        );
    }
    assert_eq!(status["pending"], serde_json::json!([]));

    let (exit, again) = cli(List::Base, &lock, &with(&["up", "--detailed-exitcode"])).await;
    assert_eq!(exit, Exit::NothingToDo, "{again:#}");
    assert!(
        again["report"]["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["outcome"] == "skipped")
    );
    let (exit, _) = cli(List::Base, &lock, &with(&["up"])).await;
    assert_eq!(
        exit,
        Exit::Done,
        "nothing to do is a success without --detailed-exitcode"
    );

    let (exit, history) = cli(List::Base, &lock, &with(&["history"])).await;
    assert_eq!(exit, Exit::Done);
    assert_eq!(ids(&history["entries"]), ["0001_defaults", "0002_reembed"]);

    // An applied migration edited: drift, in the plan, the status and the run.
    let (exit, plan) = cli(List::Edited, &lock, &with(&["plan"])).await;
    assert_eq!(exit, Exit::Drift, "{plan:#}");
    assert_eq!(plan["steps"][0]["state"], "drifted");
    assert_eq!(plan["steps"][0]["applied"], entries[0]["checksum"]);
    let (exit, status) = cli(List::Edited, &lock, &with(&["status"])).await;
    assert_eq!(
        (exit, &status["drifted"]),
        (Exit::Drift, &serde_json::json!(["0001_defaults"]))
    );
    let (exit, up) = cli(List::Edited, &lock, &with(&["up"])).await;
    assert_eq!(exit, Exit::Drift, "{up:#}");
    assert_eq!(up["error"]["kind"], "drift", "{up:#}");
    assert!(
        up["error"]["message"]
            .as_str()
            .unwrap()
            .contains("0001_defaults")
    );
    // ... and nothing was written.
    assert_categories(&table, "general").await;

    // Rolled back: the vectors are the 8-d ones again, and it is pending.
    let (exit, rolled) = cli(List::Base, &lock, &with(&["rollback", "0002_reembed"])).await;
    assert_eq!(exit, Exit::Done, "{rolled:#}");
    assert_eq!(ids(&rolled["rolled_back"]), ["0002_reembed"]);
    assert_eq!(rolled["rolled_back"][0]["status"], "rolled_back");
    let table = conn.open_table(TABLE).execute().await.unwrap();
    let vectors = rows(&table, &["vector"]).await;
    assert_eq!(vectors[0].column(0).as_fixed_size_list().value_length(), 8);
    let (exit, status) = cli(List::Base, &lock, &with(&["status"])).await;
    assert_eq!(
        (exit, &status["pending"]),
        (Exit::Pending, &serde_json::json!(["0002_reembed"]))
    );

    // A refused operation and bad input: typed errors, their exit codes.
    let (exit, repair) = cli(List::Base, &lock, &with(&["repair", "0009_unknown"])).await;
    assert_eq!(exit, Exit::Failed, "{repair:#}");
    assert!(repair["error"]["kind"].is_string(), "{repair:#}");
    let (exit, bad) = cli(
        List::Base,
        &lock,
        &with(&["--storage-option", "region", "status"]),
    )
    .await;
    assert_eq!(exit, Exit::Usage, "{bad:#}");
    assert_eq!(bad["error"]["kind"], "invalid_config");
    let (exit, out) = cli(List::Base, &lock, &with(&["frobnicate"])).await;
    assert_eq!(exit, Exit::Usage, "{out:#}");
    assert_eq!(
        (&out["exit"], &out["error"]["kind"]),
        (&Value::from("usage"), &Value::from("usage"))
    );
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("frobnicate"),
        "{out:#}"
    );
    let (exit, out) = cli(List::Base, &lock, &["--db", &uri, "frobnicate"]).await;
    assert_eq!(
        (exit, out),
        (Exit::Usage, Value::Null),
        "without --json, clap's text alone"
    );
    if std::env::var_os("LANCEDB_URI").is_none() {
        let (exit, no_db) = cli(List::Base, &lock, &["status", "--json"]).await;
        assert_eq!(exit, Exit::Usage, "{no_db:#}");
        assert!(no_db["error"]["message"].as_str().unwrap().contains("--db"));
    }
}

/// `validate` and `lock` need no database: they compare the compiled list
/// with the committed lockfile, and catch each way a list can diverge.
#[tokio::test]
async fn validate_catches_divergence_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("migrations.lock");
    // No `--db`, and a URI that could not be opened: neither is used.
    let offline = |rest: &[&'static str]| -> Vec<&'static str> {
        ["--db", "/nonexistent/never-opened", "--json"]
            .iter()
            .copied()
            .chain(rest.iter().copied())
            .collect()
    };

    let (exit, missing) = cli(List::Base, &lock, &offline(&["validate"])).await;
    assert_eq!(exit, Exit::Usage, "{missing:#}");
    assert_eq!(missing["error"]["kind"], "invalid_lockfile");

    let (exit, locked) = cli(List::Base, &lock, &offline(&["lock"])).await;
    assert_eq!(exit, Exit::Done, "{locked:#}");
    assert_eq!(locked["written"], true);
    let text = std::fs::read_to_string(&lock).unwrap();
    let file = Lockfile::parse(&text).unwrap();
    let ids_locked: Vec<&str> = file.migrations().iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids_locked, ["0001_defaults", "0002_reembed"]);
    assert!(!Path::new("/nonexistent/never-opened").exists());

    let (exit, ok) = cli(List::Base, &lock, &offline(&["validate"])).await;
    assert_eq!(
        (exit, &ok["problems"]),
        (Exit::Done, &serde_json::json!([])),
        "{ok:#}"
    );

    let problem = async |list| {
        let (exit, out) = cli(list, &lock, &offline(&["validate"])).await;
        let p = &out["problems"];
        assert_eq!(p.as_array().map(Vec::len), Some(1), "{list:?}: {out:#}");
        (
            exit,
            p[0]["problem"].as_str().unwrap().to_owned(),
            p[0]["id"].as_str().unwrap().to_owned(),
            p[0].clone(),
        )
    };
    let (exit, kind, id, edited) = problem(List::Edited).await;
    assert_eq!(
        (exit, kind.as_str(), id.as_str()),
        (Exit::Drift, "edited", "0001_defaults")
    );
    assert_eq!(
        edited["locked"].as_str(),
        Some(file.migrations()[0].checksum.as_str())
    );
    let (exit, kind, id, _) = problem(List::Deleted).await;
    assert_eq!(
        (exit, kind.as_str(), id.as_str()),
        (Exit::Drift, "missing", "0001_defaults")
    );
    let (exit, kind, id, inserted) = problem(List::Inserted).await;
    assert_eq!(
        (exit, kind.as_str(), id.as_str()),
        (Exit::Drift, "inserted", "0000_first")
    );
    assert_eq!(inserted["before"], "0001_defaults");
    let (exit, kind, id, moved) = problem(List::Moved).await;
    assert_eq!(
        (exit, kind.as_str(), id.as_str()),
        (Exit::Drift, "moved", "0001_defaults")
    );
    assert_eq!(moved["after"], "0002_reembed");
    let (exit, kind, id, _) = problem(List::Appended).await;
    assert_eq!(
        (exit, kind.as_str(), id.as_str()),
        (Exit::Pending, "unlocked", "0003_flag")
    );

    // `lock` refuses to paper over divergence, and leaves the file alone.
    let (exit, refused) = cli(List::Edited, &lock, &offline(&["lock"])).await;
    assert_eq!(exit, Exit::Drift, "{refused:#}");
    assert_eq!(refused["error"]["kind"], "lockfile");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), text);
    // It appends new migrations.
    let (exit, appended) = cli(List::Appended, &lock, &offline(&["lock"])).await;
    assert_eq!(
        (exit, &appended["written"]),
        (Exit::Done, &Value::Bool(true))
    );
    assert_eq!(
        ids(&appended["migrations"]),
        ["0001_defaults", "0002_reembed", "0003_flag"]
    );
    // The locked lines are kept as they were: a diff shows one line added.
    let relocked = std::fs::read_to_string(&lock).unwrap();
    for line in text.lines().filter(|l| l.contains("\"id\"")) {
        assert!(
            relocked.contains(line.trim_end_matches(',')),
            "{line} kept in:\n{relocked}"
        );
    }
    let (exit, _) = cli(List::Appended, &lock, &offline(&["validate"])).await;
    assert_eq!(exit, Exit::Done);
    let (exit, same) = cli(List::Appended, &lock, &offline(&["lock"])).await;
    assert_eq!((exit, &same["written"]), (Exit::Done, &Value::Bool(false)));
    // `--force` writes the list as it is.
    let (exit, _) = cli(List::Edited, &lock, &offline(&["lock", "--force"])).await;
    assert_eq!(exit, Exit::Done);
    let (exit, _) = cli(List::Edited, &lock, &offline(&["validate"])).await;
    assert_eq!(exit, Exit::Done);

    std::fs::write(&lock, "{\"format\": 1, \"migrations\": [{\"id\": 3}]}").unwrap();
    let (exit, corrupt) = cli(List::Base, &lock, &offline(&["validate"])).await;
    assert_eq!(
        (exit, &corrupt["error"]["kind"]),
        (Exit::Usage, &Value::from("invalid_lockfile"))
    );
}

/// The same check as a unit test of the application would make it, with
/// no command line: the lockfile's text, the list, no database.
#[tokio::test]
async fn an_application_test_checks_its_lockfile() {
    let db = testing::memory_db().await.unwrap();
    let text = migrations(List::Base)(Migrator::new(db.clone()))
        .lockfile()
        .unwrap()
        .to_string();
    let locked = Lockfile::parse(&text).unwrap();
    assert!(
        migrations(List::Base)(Migrator::new(db.clone()))
            .check_lockfile(&locked)
            .unwrap()
            .is_empty()
    );
    let problems = migrations(List::Edited)(Migrator::new(db.clone()))
        .check_lockfile(&locked)
        .unwrap();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].is_divergence());
    assert!(
        problems[0].to_string().contains("0001_defaults"),
        "{}",
        problems[0]
    );
    let err = migrations(List::Inserted)(Migrator::new(db))
        .relock(&locked)
        .unwrap_err();
    assert!(
        matches!(err, lancedb_migrate::Error::Lockfile { .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------- processes

/// The application binary: `Cli` over the list with a slow, logging
/// embedder, taking its arguments from the environment.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a child process of the command-line tests"]
async fn app() {
    let Ok(args) = std::env::var(ARGS_ENV) else {
        return;
    };
    if std::env::var_os(TRACE_ENV).is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
    }
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let log = PathBuf::from(std::env::var(LOG_ENV).unwrap());
    let delay = Duration::from_millis(std::env::var(DELAY_ENV).unwrap().parse().unwrap());
    let cli = Cli::new(move |m| {
        let model = logging(TestEmbedding::new("test-32", 32).delay(delay), log.clone());
        m.add(defaults("general")).add(reembed(Arc::new(model)))
    });
    let mut stdout = std::io::stdout();
    let exit = cli
        .execute(
            std::iter::once("migrate".to_owned()).chain(args),
            &mut stdout,
        )
        .await;
    std::process::exit(exit.code().into());
}

/// The child's environment for `args`.
fn app_env(args: &[&str], log: &Path, delay_ms: u64) -> [(&'static str, String); 4] {
    [
        (ARGS_ENV, serde_json::to_string(args).unwrap()),
        (LOG_ENV, log.to_string_lossy().into_owned()),
        (DELAY_ENV, delay_ms.to_string()),
        ("RUST_BACKTRACE", "0".to_owned()),
    ]
}

const APP: [&str; 4] = ["cli::app", "--exact", "--ignored", "--nocapture"];

/// Runs the application binary with `args` to the end: exit code,
/// standard output from its first `{` (after the test harness's lines),
/// standard error.
fn run_app(args: &[&str], log: &Path) -> (i32, String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(APP)
        .envs(app_env(args, log, 0))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.find('{').map_or("", |i| &stdout[i..]).to_owned();
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tmux server of this test's own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `None` (after saying why) when tmux is not installed, unless
    /// [`REQUIRE_TMUX_ENV`] is set.
    fn start(script: &Path) -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var(REQUIRE_TMUX_ENV).as_deref() != Ok("1"),
                "tmux is not installed, and {REQUIRE_TMUX_ENV}=1"
            );
            eprintln!("SKIPPED: tmux is not installed (scripts/tmux.sh installs it)");
            return None;
        }
        let socket = format!("lancedb-migrate-{}", std::process::id());
        let tmux = Self { socket };
        let status = tmux
            .command()
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "cli",
                "-x",
                "150",
                "-y",
                "40",
            ])
            .arg(format!("sh {}", script.display()))
            .status()
            .unwrap();
        assert!(status.success());
        Some(tmux)
    }

    fn command(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "cli"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the pane shows what `ready` accepts (two minutes at
    /// most); that screen.
    async fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {what}:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn keys(&self, keys: &str) {
        let status = self
            .command()
            .args(["send-keys", "-t", "cli", keys])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The rows done that a progress bar on `screen` shows, as `N/3000 rows`.
fn bar_position(screen: &str, total: u64) -> Option<u64> {
    let marker = format!("/{total} rows");
    screen.lines().rev().find_map(|line| {
        let end = line.find(&marker)?;
        let start = line[..end]
            .rfind(|c: char| !c.is_ascii_digit())
            .map_or(0, |i| i + 1);
        line[start..end].parse().ok()
    })
}

/// In a real terminal: `up` draws a progress bar with its rate and time
/// left; Ctrl-C in the middle of the re-embed stops it at a safe point
/// (exit 3, the work done kept, the lease released); the next `up`
/// continues from there instead of starting again, and the table ends
/// fully re-embedded. The exit codes are the shell's.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_in_a_terminal_stops_a_reembed_and_the_next_up_continues_it() {
    const ROWS: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("db").to_string_lossy().into_owned();
    let db = lancedb::connect(&uri).execute().await.unwrap();
    testing::documents_table(&db, TABLE, ROWS as usize, 8)
        .await
        .unwrap();
    let log = dir.path().join("embedded.log");

    // Exit codes as the shell sees them: pending before.
    let (code, plan, _) = run_app(&["--db", &uri, "--json", "plan"], &log);
    assert_eq!(code, 3, "{plan}");
    let plan: Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["exit"], "pending");

    // `up` in a terminal, its embedder slowed to 150 ms per 50 texts.
    let script = dir.path().join("up.sh");
    let env: String = app_env(&["--db", &uri, "up"], &log, 150)
        .iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect();
    let exe = std::env::current_exe().unwrap();
    std::fs::write(
        &script,
        // The shell survives the Ctrl-C (a trap of its own; the child gets
        // the default handling, and installs its own) to print the code.
        format!(
            "{env}trap : INT\n'{}' {}\necho \"EXIT=$?\"\nsleep 600\n",
            exe.display(),
            APP.join(" ")
        ),
    )
    .unwrap();
    let Some(tmux) = Tmux::start(&script) else {
        return;
    };
    let drawn = tmux
        .wait_for("a progress bar past 300 rows", |s| {
            bar_position(s, ROWS).is_some_and(|n| n >= 300)
        })
        .await;
    let bar = drawn
        .lines()
        .find(|l| l.contains(&format!("/{ROWS} rows")))
        .unwrap();
    assert!(bar.contains("transform ["), "the bar: {bar}");
    assert!(
        bar.contains("rows/s") && bar.contains("ETA"),
        "rate and ETA: {bar}"
    );
    assert!(drawn.contains("0001_defaults applied"), "{drawn}");
    tmux.keys("C-c");
    let end = tmux
        .wait_for("the exit code", |s| s.contains("EXIT="))
        .await;
    eprintln!("the terminal at the Ctrl-C:\n{drawn}\nand at the end:\n{end}");
    assert!(end.contains("EXIT=3"), "a stopped `up` exits 3:\n{end}");
    assert!(end.contains("stopping at the next safe point"), "{end}");
    assert!(
        end.contains("0002_reembed stopped during transform"),
        "{end}"
    );
    drop(tmux);
    let first = logged_rows(&log);
    assert!(
        (300..ROWS).contains(&first),
        "embedded before the stop: {first}"
    );

    // The ledger shows it running, for the next process to continue.
    let lock = dir.path().join("migrations.lock");
    let (_, history) = cli(List::Base, &lock, &["--db", &uri, "--json", "history"]).await;
    let states: Vec<(&str, &str)> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("0001_defaults", "applied"), ("0002_reembed", "running")]
    );

    // The next `up` continues it, and says so in JSON lines.
    let (code, report, events) = run_app(&["--db", &uri, "--json", "up"], &log);
    assert_eq!(code, 0, "{report}\n{events}");
    let report: Value = serde_json::from_str(&report).unwrap();
    let outcomes: Vec<&str> = report["report"]["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["skipped", "applied"]);
    let events: Vec<Value> = events
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"lease_acquired"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"lease_released"), "{kinds:?}");
    assert!(
        kinds.contains(&"progress") && kinds.contains(&"migration_applied"),
        "{kinds:?}"
    );
    let second = logged_rows(&log) - first;
    // Continued: at most the batch in flight at the stop is embedded again.
    assert!(
        second <= ROWS - first + 50,
        "embedded {first} then {second} of {ROWS}"
    );
    let table = db.open_table(TABLE).execute().await.unwrap();
    assert_eq!(assert_reembedded(&table, 32).await as u64, ROWS);
    let (code, _, _) = run_app(&["--db", &uri, "status"], &log);
    assert_eq!(code, 0);

    // Without a terminal and without `--json`: plain lines.
    let (code, _, _) = run_app(&["--db", &uri, "rollback", "0002_reembed"], &log);
    assert_eq!(code, 0);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(APP)
        .envs(app_env(&["--db", &uri, "up"], &log, 0))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("0002_reembed on `documents`: applied"),
        "{stdout}"
    );
    for line in [
        "0002_reembed on `documents`",
        "  transform: 3000/3000 rows (100%)",
        "0002_reembed applied in",
    ] {
        assert!(stderr.contains(line), "no `{line}` in:\n{stderr}");
    }
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "no terminal codes: {stderr:?}"
    );
}

// ------------------------------------------------------------ observability

/// Every log line of a migration is in its span, which names it, its
/// table and its rows, and a phase's lines in the phase's span. (In a
/// child process with a global subscriber: a thread's own subscriber in a
/// test binary running many tests misses events whose callsites another
/// thread registered first.)
#[tokio::test(flavor = "multi_thread")]
async fn logs_carry_the_migration_and_its_phase() {
    let (dir, uri) = database().await;
    let log = dir.path().join("embedded.log");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(APP)
        .envs(app_env(
            &["--db", &uri, "--progress", "none", "up"],
            &log,
            0,
        ))
        .env(TRACE_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{logs}");
    for (id, rows) in [("0001_defaults", 600), ("0002_reembed", 600)] {
        for phase in ["backup", "transform", "rebuild", "verify"] {
            let span = format!("phase{{phase=\"{phase}\"}}");
            let line = logs
                .lines()
                .find(|l| l.contains("phase finished") && l.contains(&span) && l.contains(id))
                .unwrap_or_else(|| {
                    panic!("no `phase finished` line of {id} in the {phase} span:\n{logs}")
                });
            assert!(
                line.contains(&format!(
                    "migration{{id=\"{id}\" table=\"documents\" rows={rows}}}"
                )),
                "{line}"
            );
        }
    }
}

/// A run that finds the lease held says whom it waits for, then takes the
/// lease once the holder releases it; the holder's own events bracket its
/// work with the lease taken and released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_run_says_whom_it_waits_for() {
    use lancedb::embeddings::EmbeddingFunction as _;
    use lancedb_migrate::testing::EventLog;
    use lancedb_migrate::{Event, WhenLocked};
    use std::sync::atomic::{AtomicBool, Ordering};

    let (_dir, uri) = database().await;
    let db = lancedb::connect(&uri).execute().await.unwrap();
    // The holder's embedder holds on until the other run waits for the
    // lease: on any machine, the wait happens while the lease is held.
    let waiting = Arc::new(AtomicBool::new(false));
    let seen = waiting.clone();
    let model =
        crate::support::Hooked::new(TestEmbedding::new("test-32", 32), move |texts, inner| {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !seen.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            inner.compute_source_embeddings(texts)
        });
    let holder_log = EventLog::default();
    let holder = Migrator::new(db.clone())
        .lease_holder("replica-a")
        .add(defaults("general"))
        .add(reembed(Arc::new(model)))
        .on_event(holder_log.observer());
    let first = tokio::spawn(async move { holder.run().await });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !holder_log
        .events()
        .iter()
        .any(|e| matches!(e, Event::LeaseAcquired { .. }))
    {
        assert!(Instant::now() < deadline, "the holder never took the lease");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let waiter_log = EventLog::default();
    let report = migrations(List::Base)(Migrator::new(db.clone()))
        .lease_holder("replica-b")
        .when_locked(WhenLocked::Wait)
        .on_event(waiter_log.observer())
        .on_event(move |e| {
            if matches!(e, Event::LeaseWaiting { .. }) {
                waiting.store(true, Ordering::SeqCst);
            }
        })
        .run()
        .await
        .unwrap();
    let applied = first.await.unwrap().unwrap();
    assert_eq!(applied.applied().count(), 2);
    assert_eq!(report.skipped().count(), 2, "the holder applied both");

    let lease = |log: &EventLog| -> Vec<(String, Option<String>)> {
        log.events()
            .iter()
            .filter_map(|e| match e {
                Event::LeaseWaiting { holder, .. } => Some(("waiting".into(), holder.clone())),
                Event::LeaseAcquired { holder } => Some(("acquired".into(), Some(holder.clone()))),
                Event::LeaseReleased { holder } => Some(("released".into(), Some(holder.clone()))),
                Event::LeaseLost { holder } => Some(("lost".into(), Some(holder.clone()))),
                _ => None,
            })
            .collect()
    };
    let mut waiter = lease(&waiter_log);
    waiter.dedup();
    let name = |n: &str| Some(n.to_owned());
    assert_eq!(
        waiter,
        [
            ("waiting".to_owned(), name("replica-a")),
            ("acquired".to_owned(), name("replica-b")),
            ("released".to_owned(), name("replica-b")),
        ]
    );
    assert_eq!(
        lease(&holder_log),
        [
            ("acquired".to_owned(), name("replica-a")),
            ("released".to_owned(), name("replica-a")),
        ]
    );
}

/// The database's storage options reach the store from the flags and from
/// the environment: the same commands on the S3 server.
#[tokio::test(flavor = "multi_thread")]
async fn storage_options_come_from_flags_or_the_environment() {
    let Some(s3) = crate::s3::S3::from_env("storage_options_come_from_flags_or_the_environment")
    else {
        return;
    };
    let (bucket, db) = s3.fresh_db("cli").await;
    testing::documents_table(&db, TABLE, 600, 8).await.unwrap();
    let uri = format!("s3://{bucket}/db");
    let options: Vec<String> = s3
        .storage_options()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("migrations.lock");

    let mut args = vec!["--db", uri.as_str(), "--json", "--progress", "none"];
    for option in &options {
        args.extend(["--storage-option", option.as_str()]);
    }
    args.push("up");
    let (exit, up) = cli(List::Base, &lock, &args).await;
    assert_eq!(exit, Exit::Done, "{up:#}");
    let table = db.open_table(TABLE).execute().await.unwrap();
    assert_eq!(assert_reembedded(&table, 32).await, 600);

    // The environment's form, in a process of its own.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(APP)
        .envs(app_env(&["--json", "status"], &dir.path().join("log"), 0))
        .env("LANCEDB_URI", &uri)
        .env("LANCEDB_STORAGE_OPTIONS", options.join(","))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_str(&stdout[stdout.find('{').unwrap()..]).unwrap();
    let states: Vec<&str> = status["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["applied", "applied"]);
}
