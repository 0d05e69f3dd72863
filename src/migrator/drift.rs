//! Drift: an applied migration whose definition changed since, and advice
//! that fits the likely cause.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::ledger::{LedgerEntry, LedgerStatus};
use crate::migration::Migration;

/// An applied migration whose ledger row holds a checksum of an earlier
/// encoding of its definition ([`Migration::previous_checksums`]): not
/// drift; the row is rewritten with the current checksum under the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChecksumUpgrade {
    /// The migration's id.
    pub(crate) id: String,
    /// The checksum in its ledger row.
    pub(crate) from: String,
    /// Its current checksum.
    pub(crate) to: String,
}

/// Fails with [`Error::Drift`] for the first applied migration whose
/// checksum differs from its ledger row's and is not one of its
/// [previous checksums](Migration::previous_checksums); returns those that
/// are, to be upgraded.
pub(super) fn check(
    migrations: &[Box<dyn Migration>],
    entries: &HashMap<String, LedgerEntry>,
) -> Result<Vec<ChecksumUpgrade>> {
    let mut upgrades = Vec::new();
    for m in migrations {
        let Some(entry) = entries.get(m.id()) else {
            continue;
        };
        if entry.status != LedgerStatus::Applied {
            continue;
        }
        let current = m.checksum();
        if entry.checksum == current {
            continue;
        }
        if m.previous_checksums().contains(&entry.checksum) {
            upgrades.push(ChecksumUpgrade {
                id: m.id().to_owned(),
                from: entry.checksum.clone(),
                to: current,
            });
            continue;
        }
        return Err(Error::Drift {
            migration: m.id().to_owned(),
            applied: entry.checksum.clone(),
            current,
            advice: advice(&m.definition(), SystemTime::now()),
        });
    }
    Ok(upgrades)
}

/// What to do about a drifted definition: the usual advice, or, when the
/// definition holds a value that looks computed at start-up (a date-time,
/// or a Unix time near `now`), to compute it in the migration instead.
fn advice(definition: &str, now: SystemTime) -> String {
    match computed_looking(definition, now) {
        Some(value) => format!(
            "its definition holds `{value}`, which looks computed when the application starts and so \
             changes on every start; compute it in the migration instead (`DefaultValue::MigrationTime` \
             stores the time of migration, in string columns too), then accept the new definition \
             once with `Migrator::repair`"
        ),
        None => "restore its original definition and add the change as a new migration".to_owned(),
    }
}

/// The first token of `definition` that looks like a time taken at run
/// time: an ISO 8601 date-time (`2026-12-02T06:30:00…`, `2026-12-02 06:30…`),
/// or a Unix time in seconds, milliseconds or microseconds within a year of
/// `now`.
fn computed_looking(definition: &str, now: SystemTime) -> Option<&str> {
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as f64;
    let near_now = |digits: &str| {
        let year = 365.0 * 24.0 * 3600.0;
        digits.parse::<f64>().is_ok_and(|n| {
            [1.0, 1e3, 1e6]
                .iter()
                .any(|scale| (n / scale - now_secs).abs() < year)
        })
    };
    let bytes = definition.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Only digits that start a token: not inside a name or a number.
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let rest = &definition[i..];
        if looks_like_date_time(rest) {
            let end = rest
                .char_indices()
                .skip(16)
                .find(|&(_, c)| !(c.is_ascii_alphanumeric() || ":.+-".contains(c)))
                .map_or(rest.len(), |(j, _)| j);
            return Some(&rest[..end]);
        }
        let digits = &rest[..rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len())];
        if matches!(digits.len(), 10 | 13 | 16) && near_now(digits) {
            return Some(digits);
        }
        i += digits.len();
    }
    None
}

/// `dddd-dd-ddTdd:dd` or `dddd-dd-dd dd:dd` at the start of `s`.
fn looks_like_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    b.len() >= 16
        && (0..4).all(digit)
        && b[4] == b'-'
        && digit(5)
        && digit(6)
        && b[7] == b'-'
        && digit(8)
        && digit(9)
        && (b[10] == b'T' || b[10] == b' ')
        && digit(11)
        && digit(12)
        && b[13] == b':'
        && digit(14)
        && digit(15)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn values_computed_at_start_up_are_named() {
        let now = UNIX_EPOCH + Duration::from_secs(1_764_657_000);
        let iso = "add_columns table=docs;created:Utf8 default=Utf8(\"2025-12-02T06:29:59.5+00:00\") not_null;";
        assert_eq!(
            computed_looking(iso, now),
            Some("2025-12-02T06:29:59.5+00:00")
        );
        let spaced = "x default=Utf8(\"2025-12-02 06:29:59\")";
        assert_eq!(computed_looking(spaced, now), Some("2025-12-02 06:29:59"));
        let epoch = "batch:Int64 default=Int(1764656999123) not_null;";
        assert_eq!(computed_looking(epoch, now), Some("1764656999123"));
        let plain = "add_columns table=docs;category:Utf8 default=Utf8(\"general\") not_null;year:Int32 default=Int(2024);";
        assert_eq!(computed_looking(plain, now), None);
        let date = "launch:Date32 default=Date { year: 2024, month: 1, day: 31 }";
        assert_eq!(computed_looking(date, now), None);
        assert!(advice(iso, now).contains("DefaultValue::MigrationTime"));
        assert!(advice(plain, now).starts_with("restore its original definition"));
    }
}
