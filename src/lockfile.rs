//! [`Lockfile`]: the migration list as an application compiles it (ids,
//! order, checksums), committed beside the code, so that CI can catch an
//! edited, deleted or inserted migration before it is deployed, with no
//! database.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::migration::Migration;
use crate::migrator::Migrator;

/// The newest lockfile format this release reads and the one it writes.
const FORMAT: u32 = 1;

/// The migration list as compiled: each migration's id, table and
/// checksum, in order.
///
/// An application writes it once per new migration (`migrate lock` with
/// the `cli` feature, or [`Migrator::relock`]) and commits
/// it. Its CI then checks the compiled list against it
/// ([`Migrator::check_lockfile`], `migrate validate`) without a database:
/// a migration edited, deleted or inserted before others since it was
/// locked is reported before any replica meets it as drift.
///
/// The file is JSON, one migration per line so that a change shows as one
/// line in a diff:
///
/// ```text
/// {
///   "format": 1,
///   "migrations": [
///     {"id": "0001_defaults", "table": "documents", "checksum": "9f2c…"},
///     {"id": "0002_reembed_768", "table": "documents", "checksum": "41d0…"}
///   ]
/// }
/// ```
///
/// The checksums are the ledger's ([`LedgerEntry::checksum`](crate::LedgerEntry::checksum)).
///
/// # Examples
///
/// ```
/// use arrow_schema::DataType;
/// use lancedb_migrate::{AddColumns, Lockfile, Migrator, NewColumn, testing};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lancedb_migrate::Result<()> {
/// let migrations = |db| {
///     Migrator::new(db).add(
///         AddColumns::new("0001_category", "documents")
///             .column(NewColumn::new("category", DataType::Utf8).default_value("general")),
///     )
/// };
/// // No table is read: any connection will do.
/// let locked = migrations(testing::memory_db().await?).lockfile()?;
/// let text = locked.to_string(); // commit this as `migrations.lock`
///
/// // In a unit test of the application, or `migrate validate` in CI:
/// let problems = migrations(testing::memory_db().await?).check_lockfile(&Lockfile::parse(&text)?)?;
/// assert!(problems.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Lockfile {
    format: u32,
    migrations: Vec<LockedMigration>,
}

/// One migration in a [`Lockfile`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LockedMigration {
    /// Its id.
    pub id: String,
    /// The table it migrates.
    pub table: String,
    /// The SHA-256 of its definition, hex-encoded, as the ledger records it.
    pub checksum: String,
}

/// How the compiled list differs from a [`Lockfile`], from
/// [`Migrator::check_lockfile`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "problem", rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum LockProblem {
    /// A locked migration's definition changed: once deployed, every
    /// replica that applied it refuses to start ([`Error::Drift`]).
    Edited {
        /// Its id.
        id: String,
        /// The checksum in the lockfile.
        locked: String,
        /// The checksum of the definition compiled now.
        current: String,
    },
    /// A locked migration is no longer in the list
    /// ([`Error::MissingMigrations`] once deployed).
    Missing {
        /// Its id.
        id: String,
    },
    /// A migration not in the lockfile is listed before a locked one
    /// ([`Error::OutOfOrder`] once deployed).
    Inserted {
        /// The inserted migration.
        id: String,
        /// The first locked migration listed after it.
        before: String,
    },
    /// Two locked migrations changed places.
    Moved {
        /// The migration now listed earlier than a migration it followed.
        id: String,
        /// That migration.
        after: String,
    },
    /// A new migration after every locked one, not yet in the lockfile:
    /// not a danger, but the lockfile is stale (`migrate lock`,
    /// [`Migrator::relock`]).
    Unlocked {
        /// Its id.
        id: String,
    },
}

impl LockProblem {
    /// Whether deploying the list would meet this as drift or divergence
    /// on a database where the locked migrations are applied: every
    /// problem but [`Unlocked`](Self::Unlocked).
    pub fn is_divergence(&self) -> bool {
        !matches!(self, Self::Unlocked { .. })
    }

    /// The migration it is about.
    pub fn id(&self) -> &str {
        match self {
            Self::Edited { id, .. }
            | Self::Missing { id }
            | Self::Inserted { id, .. }
            | Self::Moved { id, .. }
            | Self::Unlocked { id } => id,
        }
    }
}

impl fmt::Display for LockProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Edited {
                id,
                locked,
                current,
            } => write!(
                f,
                "`{id}` was edited after it was locked (checksum {locked}, now {current}): restore it and add the change as a new migration"
            ),
            Self::Missing { id } => write!(
                f,
                "`{id}` is locked but no longer listed: a migration stays listed once it may have been applied"
            ),
            Self::Inserted { id, before } => write!(
                f,
                "`{id}` is listed before `{before}`, which was locked before it: move it after the last locked migration"
            ),
            Self::Moved { id, after } => write!(
                f,
                "`{id}` is now listed before `{after}`, which it followed when locked: restore the order"
            ),
            Self::Unlocked { id } => write!(
                f,
                "`{id}` is not in the lockfile yet: run `migrate lock` (or `Migrator::relock`) and commit the lockfile"
            ),
        }
    }
}

impl Lockfile {
    /// The file name the command line uses by default, in the working
    /// directory: `migrations.lock`.
    pub const DEFAULT_PATH: &'static str = "migrations.lock";

    /// Reads a lockfile's text.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLockfile`] when it is not a lockfile, or when a
    /// newer lancedb-migrate wrote it in a format this one does not know.
    pub fn parse(text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct File {
            format: u32,
            migrations: Vec<LockedMigration>,
        }
        let file: File = serde_json::from_str(text).map_err(|e| Error::InvalidLockfile {
            reason: format!("it is not a lancedb-migrate lockfile: {e}"),
        })?;
        if file.format > FORMAT {
            return Err(Error::InvalidLockfile {
                reason: format!(
                    "it has format {}, written by a newer lancedb-migrate (this one knows up to {FORMAT}); upgrade lancedb-migrate",
                    file.format
                ),
            });
        }
        Ok(Self {
            format: file.format,
            migrations: file.migrations,
        })
    }

    /// The locked migrations, in order.
    pub fn migrations(&self) -> &[LockedMigration] {
        &self.migrations
    }

    fn of(migrations: &[Box<dyn Migration>]) -> Self {
        Self {
            format: FORMAT,
            migrations: migrations
                .iter()
                .map(|m| LockedMigration {
                    id: m.id().to_owned(),
                    table: m.table().to_owned(),
                    checksum: m.checksum(),
                })
                .collect(),
        }
    }
}

impl fmt::Display for Lockfile {
    /// The file's text: JSON, one migration per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        writeln!(f, "{{")?;
        writeln!(f, "  \"format\": {FORMAT},")?;
        if self.migrations.is_empty() {
            writeln!(f, "  \"migrations\": []")?;
        } else {
            writeln!(f, "  \"migrations\": [")?;
            for (i, m) in self.migrations.iter().enumerate() {
                let comma = if i + 1 < self.migrations.len() {
                    ","
                } else {
                    ""
                };
                writeln!(
                    f,
                    "    {{\"id\": {}, \"table\": {}, \"checksum\": {}}}{comma}",
                    json(&m.id),
                    json(&m.table),
                    json(&m.checksum)
                )?;
            }
            writeln!(f, "  ]")?;
        }
        writeln!(f, "}}")
    }
}

impl Migrator {
    /// The list as a [`Lockfile`]: each migration's id, table and
    /// checksum, in order. Reads nothing from the database.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateId`] or [`Error::InvalidMigration`] for the list
    /// itself.
    pub fn lockfile(&self) -> Result<Lockfile> {
        self.validate()?;
        Ok(Lockfile::of(&self.migrations))
    }

    /// How the list differs from `locked`: locked migrations edited,
    /// missing or moved, migrations inserted before locked ones, and new
    /// ones not yet locked. Empty when the list is `locked` (or `locked`
    /// plus nothing). Reads nothing from the database: what an
    /// application's CI runs (`migrate validate`, or a unit test).
    ///
    /// A locked checksum that an earlier release computed for the same
    /// definition ([`Migration::previous_checksums`]) is not an edit.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateId`] or [`Error::InvalidMigration`] for the list
    /// itself.
    pub fn check_lockfile(&self, locked: &Lockfile) -> Result<Vec<LockProblem>> {
        self.validate()?;
        Ok(problems(&self.migrations, locked))
    }

    /// `locked` with the list's new migrations appended and any checksum
    /// of an earlier release's encoding brought up to date: the lockfile
    /// to commit after adding migrations.
    ///
    /// # Errors
    ///
    /// [`Error::Lockfile`] when the list diverges from `locked` (a locked
    /// migration edited, missing or moved, or one inserted before it): fix
    /// the list, or, for migrations that were never deployed anywhere,
    /// write a new lockfile from [`lockfile`](Self::lockfile).
    /// [`Error::DuplicateId`] or [`Error::InvalidMigration`] for the list
    /// itself.
    pub fn relock(&self, locked: &Lockfile) -> Result<Lockfile> {
        let problems = self.check_lockfile(locked)?;
        let divergent: Vec<LockProblem> = problems
            .into_iter()
            .filter(LockProblem::is_divergence)
            .collect();
        if !divergent.is_empty() {
            return Err(Error::Lockfile {
                problems: divergent,
            });
        }
        Ok(Lockfile::of(&self.migrations))
    }
}

/// How `migrations` differ from `locked`.
fn problems(migrations: &[Box<dyn Migration>], locked: &Lockfile) -> Vec<LockProblem> {
    let position: HashMap<&str, usize> = locked
        .migrations
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), i))
        .collect();
    let listed: HashMap<&str, &dyn Migration> =
        migrations.iter().map(|m| (m.id(), m.as_ref())).collect();
    let mut found = Vec::new();
    for l in &locked.migrations {
        match listed.get(l.id.as_str()) {
            None => found.push(LockProblem::Missing { id: l.id.clone() }),
            Some(m) => {
                let current = m.checksum();
                if current != l.checksum && !m.previous_checksums().contains(&l.checksum) {
                    found.push(LockProblem::Edited {
                        id: l.id.clone(),
                        locked: l.checksum.clone(),
                        current,
                    });
                }
            }
        }
    }
    // Walk the list: locked ids must keep their order, and a new id must
    // come after every locked one.
    let mut last_locked: Option<(usize, &str)> = None;
    let mut new_ids: Vec<&str> = Vec::new();
    for m in migrations {
        match position.get(m.id()) {
            Some(&pos) => {
                for id in new_ids.drain(..) {
                    found.push(LockProblem::Inserted {
                        id: id.to_owned(),
                        before: m.id().to_owned(),
                    });
                }
                match last_locked {
                    Some((last, after)) if pos < last => found.push(LockProblem::Moved {
                        id: m.id().to_owned(),
                        after: after.to_owned(),
                    }),
                    _ => last_locked = Some((pos, m.id())),
                }
            }
            None => new_ids.push(m.id()),
        }
    }
    found.extend(
        new_ids
            .into_iter()
            .map(|id| LockProblem::Unlocked { id: id.to_owned() }),
    );
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockfile_reads_back_what_it_wrote() {
        let locked = Lockfile {
            format: FORMAT,
            migrations: vec![
                LockedMigration {
                    id: "0001 \"quoted\"".into(),
                    table: "docs".into(),
                    checksum: "ab".into(),
                },
                LockedMigration {
                    id: "0002".into(),
                    table: "docs".into(),
                    checksum: "cd".into(),
                },
            ],
        };
        let text = locked.to_string();
        assert_eq!(text.lines().count(), 7, "{text}");
        assert_eq!(Lockfile::parse(&text).unwrap(), locked);
        let empty = Lockfile {
            format: FORMAT,
            migrations: vec![],
        };
        assert_eq!(Lockfile::parse(&empty.to_string()).unwrap(), empty);
    }

    #[test]
    fn a_newer_or_foreign_file_is_refused() {
        let newer = "{\"format\": 2, \"migrations\": []}";
        let err = Lockfile::parse(newer).unwrap_err();
        assert!(err.to_string().contains("format 2"), "{err}");
        assert!(matches!(
            Lockfile::parse("[]").unwrap_err(),
            Error::InvalidLockfile { .. }
        ));
    }
}
