//! Independent backup copies: a deep copy of a table's pre-migration version
//! at another location, and the restore from it.
//!
//! A copy is Lance's `deep_clone` of the tagged version (data, deletion and
//! index files, copied file by file with bounded memory). While the files
//! are copied, the source version is scanned once for its content checksum.
//! Only when both succeed is a completion record written into the copy's
//! config; a copy without it is never used, and a failed copy is removed.

use std::time::Instant;

use lancedb::{Connection, Table};
use serde_json::{Value as Json, json};
use tracing::{info, warn};

use crate::backup::content::{self, Content};
use crate::backup::{Backup, BackupCopy, BackupLocation, Options};
use crate::error::{BoxError, CopyProblem, Error, Result};
use crate::lance::files::{self, Snapshot};

/// The config key of a copy's completion record.
const RECORD_KEY: &str = "lancedb_migrate.backup_copy";
/// The format of the completion record.
const FORMAT: u64 = 1;

impl BackupCopy {
    /// Copies `backup`'s version of `table` to `location` (a directory path
    /// or object-store URI, see [`BackupLocation`]) and returns the finished
    /// copy. The copy is written with the table's storage options, with the
    /// location's own on top.
    ///
    /// A finished copy of the same version already there (a retried
    /// migration) is reused; an unfinished one left by an interrupted
    /// attempt is replaced.
    ///
    /// # Errors
    ///
    /// [`Error::BackupCopy`] when something else is already at the copy's
    /// path ([`CopyProblem::Exists`]) or the copy cannot be written
    /// ([`CopyProblem::Write`]: not writable, out of space); whatever was
    /// written is removed.
    // Long on purpose: the copy's steps in their order (refuse an occupied path, write,
    // checksum, remove on failure); the cleanup must see every step.
    pub async fn create(
        table: &Table,
        backup: &Backup,
        location: impl Into<BackupLocation>,
    ) -> Result<Self> {
        let location = location.into();
        let name = format!("{}__{}", backup.table(), backup.tag());
        let uri = join(location.uri(), &format!("{name}.lance"));
        let error = |problem| Error::BackupCopy {
            table: backup.table().to_owned(),
            location: uri.clone(),
            problem,
        };
        let source = Snapshot::current(table)
            .await
            .map_err(|e| error(CopyProblem::Read(e.into())))?;
        let options = Options::merged(source.storage_options(), location.options());
        match found(&uri, &options)
            .await
            .map_err(|e| error(CopyProblem::Write(e)))?
        {
            Found::Nothing => {}
            Found::Copy(copy)
                if copy.table == backup.table() && copy.version == backup.version() =>
            {
                info!(
                    uri,
                    "backup copy already made by an earlier attempt; reused"
                );
                return Ok(*copy);
            }
            Found::Unfinished => {
                warn!(
                    uri,
                    "removing an unfinished backup copy left by an interrupted attempt"
                );
                remove(&uri, &options).await;
            }
            Found::Copy(_) | Found::Other => return Err(error(CopyProblem::Exists)),
        }
        let started = Instant::now();
        let copied = copy_version(table, backup, &uri, &options).await;
        let (mut copy, content, indexes) = match copied {
            Ok(done) => done,
            Err(e) => {
                remove(&uri, &options).await;
                return Err(error(CopyProblem::Write(e)));
            }
        };
        let record = Self {
            uri: uri.clone(),
            options: options.clone(),
            table: backup.table().to_owned(),
            tag: backup.tag().to_owned(),
            version: backup.version(),
            data_version: copy.version(),
            rows: content.rows,
            schema: content.schema,
            checksum: content.checksum,
            indexes,
        };
        let finished = copy
            .set_config(RECORD_KEY, &record.to_json().to_string())
            .await;
        if let Err(e) = finished {
            remove(&uri, &options).await;
            return Err(error(CopyProblem::Write(e)));
        }
        info!(
            uri,
            rows = record.rows,
            duration = ?started.elapsed(),
            "backup copy written"
        );
        Ok(record)
    }

    /// Opens the copy at `uri` (a `….lance` dataset path or URI, with the
    /// storage options to read it: see [`BackupLocation`]).
    ///
    /// # Errors
    ///
    /// [`Error::BackupCopy`] with [`CopyProblem::Missing`] when nothing is
    /// there, or [`CopyProblem::Unfinished`] when the dataset there is not a
    /// finished copy (its copying was interrupted, or another program wrote
    /// it).
    pub async fn open(uri: impl Into<BackupLocation>) -> Result<Self> {
        let location = uri.into();
        Self::open_with(location.uri(), location.options()).await
    }

    /// Opens the copy at `uri` that an interrupted attempt on `table` made:
    /// with the table's storage options.
    pub(crate) async fn reopen(table: &Table, uri: &str) -> Result<Self> {
        let options = Snapshot::current(table).await?.storage_options();
        Self::open_with(uri, &Options(options)).await
    }

    async fn open_with(uri: &str, options: &Options) -> Result<Self> {
        let error = |problem| Error::BackupCopy {
            table: String::new(),
            location: uri.to_owned(),
            problem,
        };
        match found(uri, options)
            .await
            .map_err(|e| error(CopyProblem::Read(e)))?
        {
            Found::Nothing => Err(error(CopyProblem::Missing)),
            Found::Copy(copy) => Ok(*copy),
            Found::Unfinished | Found::Other => Err(error(CopyProblem::Unfinished)),
        }
    }

    /// Every finished copy in `location` (opened with its storage options,
    /// see [`BackupLocation`]), ordered by path; unfinished ones are
    /// skipped.
    ///
    /// # Errors
    ///
    /// [`Error::BackupCopy`] with [`CopyProblem::Read`] when the location
    /// cannot be listed.
    pub async fn list(location: impl Into<BackupLocation>) -> Result<Vec<Self>> {
        let location = location.into();
        let options = location.options();
        let names =
            files::list(location.uri(), &options.0)
                .await
                .map_err(|e| Error::BackupCopy {
                    table: String::new(),
                    location: location.uri().to_owned(),
                    problem: CopyProblem::Read(e),
                })?;
        let mut copies = Vec::new();
        for name in names.iter().filter(|n| n.ends_with(".lance")) {
            let uri = join(location.uri(), name);
            if let Ok(Found::Copy(copy)) = found(&uri, options).await {
                copies.push(*copy);
            }
        }
        copies.sort_by(|a, b| a.uri.cmp(&b.uri));
        Ok(copies)
    }

    /// Restores the copy into `db` as the table it was taken from.
    /// See [`restore_as`](Self::restore_as).
    ///
    /// # Errors
    ///
    /// As [`restore_as`](Self::restore_as).
    pub async fn restore(&self, db: &Connection) -> Result<Table> {
        self.restore_as(db, &self.table).await
    }

    /// Restores the copy into `db` as a new table `name`, then checks that
    /// the restored table has the copy's row count, schema, content checksum
    /// and indexes.
    ///
    /// The new table is written with the copy's storage options (those it
    /// was made or opened with): on object storage, the database and the
    /// copy must be reachable with the same ones.
    ///
    /// It never overwrites: the table must not exist (drop or rename the
    /// damaged one first). It does not touch the migration ledger: the
    /// migrations applied after this copy was taken are still recorded as
    /// applied.
    ///
    /// # Errors
    ///
    /// [`Error::BackupCopy`] with [`CopyProblem::TableExists`] when `name`
    /// exists, [`CopyProblem::Write`] when it cannot be written, or
    /// [`CopyProblem::Mismatch`] when the restored table differs from the
    /// record (it is then dropped again).
    pub async fn restore_as(&self, db: &Connection, name: &str) -> Result<Table> {
        let error = |problem| Error::BackupCopy {
            table: name.to_owned(),
            location: self.uri.clone(),
            problem,
        };
        match db.open_table(name).execute().await {
            Ok(_) => return Err(error(CopyProblem::TableExists)),
            Err(lancedb::Error::TableNotFound { .. }) => {}
            Err(e) => return Err(error(CopyProblem::Write(e.into()))),
        }
        let target = join(db.uri(), &format!("{name}.lance"));
        let started = Instant::now();
        let options = &self.options.0;
        let cloned = async {
            Snapshot::open_at(&self.uri, self.data_version, options)
                .await?
                .deep_clone(&target, options)
                .await
        }
        .await;
        if let Err(e) = cloned {
            remove(&target, &self.options).await;
            return Err(error(CopyProblem::Write(e)));
        }
        let table = db
            .open_table(name)
            .execute()
            .await
            .map_err(|e| error(CopyProblem::Write(e.into())))?;
        if let Err(problem) = self.check(&table).await {
            if let Err(e) = db.drop_table(name, &[]).await {
                warn!(table = name, error = %e, "could not drop a restored table that failed its check");
            }
            return Err(error(problem));
        }
        info!(
            table = name,
            uri = self.uri,
            rows = self.rows,
            duration = ?started.elapsed(),
            "table restored from backup copy"
        );
        Ok(table)
    }

    /// Compares a restored table with the record.
    async fn check(&self, table: &Table) -> Result<(), CopyProblem> {
        let read = |e: Error| CopyProblem::Mismatch {
            what: format!("the restored table cannot be read ({e})"),
        };
        let restored = Snapshot::current(table).await.map_err(read)?;
        let found = content::scan(&restored, "the restored table")
            .await
            .map_err(read)?;
        let expected = Content {
            rows: self.rows,
            schema: self.schema.clone(),
            checksum: self.checksum.clone(),
        };
        for (what, want, got) in [
            (
                "row count",
                expected.rows.to_string(),
                found.rows.to_string(),
            ),
            ("schema", expected.schema, found.schema),
            ("content checksum", expected.checksum, found.checksum),
        ] {
            if want != got {
                return Err(CopyProblem::Mismatch {
                    what: format!("{what}: expected {want}, found {got}"),
                });
            }
        }
        let indexes = restored
            .index_names()
            .await
            .map_err(|e| CopyProblem::Mismatch {
                what: format!("the restored table's indexes cannot be read ({e})"),
            })?;
        if indexes != self.indexes {
            return Err(CopyProblem::Mismatch {
                what: format!("indexes: expected {:?}, found {indexes:?}", self.indexes),
            });
        }
        Ok(())
    }

    fn to_json(&self) -> Json {
        json!({
            "format": FORMAT,
            "table": self.table,
            "tag": self.tag,
            "version": self.version,
            "data_version": self.data_version,
            "rows": self.rows,
            "schema": self.schema,
            "checksum": self.checksum,
            "indexes": self.indexes,
            "crate_version": env!("CARGO_PKG_VERSION"),
        })
    }

    fn from_json(uri: &str, options: &Options, record: &str) -> Option<Self> {
        let json: Json = serde_json::from_str(record).ok()?;
        let text = |key: &str| json.get(key)?.as_str().map(str::to_owned);
        let number = |key: &str| json.get(key)?.as_u64();
        if number("format")? > FORMAT {
            return None;
        }
        let indexes = json
            .get("indexes")?
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            uri: uri.to_owned(),
            options: options.clone(),
            table: text("table")?,
            tag: text("tag")?,
            version: number("version")?,
            data_version: number("data_version")?,
            rows: number("rows")?,
            schema: text("schema")?,
            checksum: text("checksum")?,
            indexes,
        })
    }
}

/// What is at a copy's path.
enum Found {
    /// Nothing.
    Nothing,
    /// A finished copy.
    Copy(Box<BackupCopy>),
    /// A Lance dataset without a completion record.
    Unfinished,
    /// Anything else.
    Other,
}

/// What is at `uri`.
async fn found(uri: &str, options: &Options) -> Result<Found, BoxError> {
    if files::is_empty(uri, &options.0).await? {
        return Ok(Found::Nothing);
    }
    let Ok(dataset) = Snapshot::open(uri, &options.0).await else {
        return Ok(Found::Other);
    };
    Ok(match dataset.config(RECORD_KEY) {
        Some(record) => BackupCopy::from_json(uri, options, record)
            .map_or(Found::Other, |copy| Found::Copy(Box::new(copy))),
        None => Found::Unfinished,
    })
}

/// Deep-clones the backup's version of `table` to `uri` while checksumming
/// it; also returns the version's index names.
async fn copy_version(
    table: &Table,
    backup: &Backup,
    uri: &str,
    options: &Options,
) -> Result<(Snapshot, Content, Vec<String>), BoxError> {
    let version = Snapshot::of(table, backup.version()).await?;
    let what = format!("version {} of `{}`", backup.version(), backup.table());
    let clone = version.deep_clone(uri, &options.0);
    let checksum = async { content::scan(&version, &what).await.map_err(BoxError::from) };
    let (copy, content) = futures::try_join!(clone, checksum)?;
    let indexes = version.index_names().await?;
    Ok((copy, content, indexes))
}

/// Removes whatever a failed copy or restore left at `uri`.
async fn remove(uri: &str, options: &Options) {
    if let Err(e) = files::remove_all(uri, &options.0).await {
        warn!(uri, error = %e, "could not remove a partial copy; it has no completion record and is never used");
    }
}

/// `location` and `name` joined with one `/`.
fn join(location: &str, name: &str) -> String {
    format!("{}/{name}", location.trim_end_matches('/'))
}
