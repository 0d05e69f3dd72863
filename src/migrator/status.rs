//! What operators read of the ledger: [`StatusTable`], every recorded
//! migration as a text table.

use std::fmt;

use crate::error::Result;
use crate::ledger::LedgerEntry;
use crate::migrator::Migrator;

/// The ledger as a table, from [`Migrator::status`]: one row per migration
/// ever recorded, in order. Displays as a text table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTable {
    entries: Vec<LedgerEntry>,
    known: Vec<String>,
}

impl StatusTable {
    /// The ledger's rows, in migration order.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    /// Ids in the ledger that the migrator does not list (removed from the
    /// application's code, or recorded by another application).
    pub fn unknown(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .map(|e| e.id.as_str())
            .filter(|id| !self.known.iter().any(|k| k == id))
    }
}

/// `{"entries": [LedgerEntry...], "unknown": [id...]}`.
#[cfg(feature = "serde")]
impl serde::Serialize for StatusTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("StatusTable", 2)?;
        st.serialize_field("entries", &self.entries)?;
        st.serialize_field("unknown", &self.unknown().collect::<Vec<_>>())?;
        st.end()
    }
}

impl fmt::Display for StatusTable {
    // Long on purpose: one table's layout (widths, the optional copy column, one row per
    // migration) in one place.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("the ledger is empty: no migration has run\n");
        }
        // The copy column only when some migration made a backup copy.
        let copies = self.entries.iter().any(|e| e.backup_copy.is_some());
        let rows: Vec<Vec<String>> = self
            .entries
            .iter()
            .map(|e| {
                let versions = match e.version_after {
                    Some(after) => format!("{} -> {after}", e.version_before),
                    None => format!("{} -> ?", e.version_before),
                };
                let unknown = if self.known.contains(&e.id) {
                    ""
                } else {
                    " (unknown)"
                };
                let status = format!("{}{unknown}", e.status);
                let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
                let mut row = vec![
                    e.id.clone(),
                    e.table.clone(),
                    status,
                    versions,
                    e.rows_after.unwrap_or(e.rows_before).to_string(),
                    or_dash(&e.backup_tag),
                ];
                if copies {
                    row.push(or_dash(&e.backup_copy));
                }
                row.push(
                    e.duration()
                        .map(|d| format!("{d:.1?}"))
                        .unwrap_or_else(|| "-".to_owned()),
                );
                row
            })
            .collect();
        let mut header = vec!["id", "table", "status", "version", "rows", "backup"];
        if copies {
            header.push("copy");
        }
        header.push("took");
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[&str]| -> fmt::Result {
            for (i, (cell, &w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    writeln!(f, "{cell}")?;
                } else {
                    write!(f, "{cell:<w$}  ")?;
                }
            }
            Ok(())
        };
        line(f, &header)?;
        for row in &rows {
            line(f, &row.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        for e in self.entries.iter().filter(|e| e.error.is_some()) {
            writeln!(f, "{}: {}", e.id, e.error.as_deref().unwrap_or_default())?;
        }
        Ok(())
    }
}

impl Migrator {
    /// The ledger as a table: every recorded migration with its status,
    /// versions, rows, backup and duration.
    ///
    /// # Errors
    ///
    /// [`Error::Ledger`](crate::Error::Ledger) or [`Error::LanceDb`](crate::Error::LanceDb) when the ledger cannot be read.
    pub async fn status(&self) -> Result<StatusTable> {
        Ok(StatusTable {
            entries: self.ledger().await?,
            known: self.migrations.iter().map(|m| m.id().to_owned()).collect(),
        })
    }
}
