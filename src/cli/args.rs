//! The command line's flags and commands, as clap parses them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Inspect and apply the application's LanceDB migrations.
#[derive(Debug, Parser)]
#[command(
    name = "migrate",
    about = "Inspect and apply this application's LanceDB migrations",
    after_help = "Exit codes: 0 done, 1 failed, 2 usage, 3 pending, 4 drift \
                  (the list and the ledger or lockfile disagree), 5 nothing to do \
                  (up --detailed-exitcode)."
)]
pub(super) struct Args {
    /// The database URI (a directory, `s3://bucket/path`, `gs://...`,
    /// `az://...`). Not needed by `validate` and `lock`.
    #[arg(long, env = "LANCEDB_URI", global = true, value_name = "URI")]
    pub(super) db: Option<String>,

    /// A storage option for the database (credentials, endpoint, region),
    /// as LanceDB takes them; repeat for several.
    #[arg(
        long = "storage-option",
        env = "LANCEDB_STORAGE_OPTIONS",
        global = true,
        value_name = "KEY=VALUE",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(super) storage_options: Vec<String>,

    /// Print the result as one JSON document on standard output, and the
    /// run's events as JSON lines on standard error.
    #[arg(long, global = true)]
    pub(super) json: bool,

    /// The lockfile `validate` checks and `lock` writes.
    #[arg(
        long,
        env = "LANCEDB_MIGRATE_LOCKFILE",
        global = true,
        value_name = "PATH"
    )]
    pub(super) lockfile: Option<PathBuf>,

    /// How `up` shows progress: a bar when standard error is a terminal and
    /// lines otherwise (auto), lines, or nothing.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto)]
    pub(super) progress: ProgressMode,

    #[command(subcommand)]
    pub(super) command: Command,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum ProgressMode {
    /// A bar when standard error is a terminal, plain lines when not.
    Auto,
    /// One line per phase, and a progress line every few seconds.
    Plain,
    /// Nothing.
    None,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// The ledger: each migration's state, versions, rows, backup and
    /// duration.
    Status,
    /// What `up` would do, without writing anything.
    Plan,
    /// Apply every pending migration, in order.
    Up {
        /// Return at once when another process holds the migration lease,
        /// leaving what it applies pending (exit 3), instead of waiting for
        /// it and applying what is still pending.
        #[arg(long)]
        no_wait: bool,
        /// Make an independent backup copy of each table before it is
        /// migrated, under this URI.
        #[arg(long, value_name = "URI")]
        copy_backups: Option<String>,
        /// Exit with 5 instead of 0 when there was nothing to do.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Undo migration ID and every migration after it, restoring their
    /// tables to the backups taken before ID.
    Rollback {
        /// The first migration to undo.
        id: String,
        /// Restore even when the tables were written since (those writes
        /// are lost).
        #[arg(long)]
        discard_later_writes: bool,
    },
    /// Accept migration ID's changed definition, or clear its failure or
    /// interruption.
    Repair {
        /// The migration.
        id: String,
        /// Restore its backup even when the table was written since.
        #[arg(long)]
        discard_later_writes: bool,
    },
    /// Record migration ID and every migration before it as applied,
    /// without running them (a database migrated before this crate).
    Baseline {
        /// The last migration to record.
        id: String,
    },
    /// Check the migration list against the lockfile, without a database.
    Validate,
    /// Write the lockfile: the list's ids, order and checksums.
    Lock {
        /// Write the list as it is even where it diverges from the
        /// lockfile (only for migrations never deployed anywhere).
        #[arg(long)]
        force: bool,
    },
    /// Every ledger row, in the order they started, with times and errors.
    History,
}
