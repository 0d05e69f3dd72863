//! Where the ledger and the list of migrations disagree: applied
//! migrations the list no longer has (missing), applied migrations listed
//! after all of this build's (a newer release's), and pending migrations
//! inserted before ones already applied (out of order).

use std::collections::HashMap;

use tracing::warn;

use crate::builtin::declared_table;
use crate::error::{Error, Result};
use crate::ledger::{LedgerEntry, LedgerStatus};
use crate::migration::Migration;

/// What [`Migrator::run`](crate::Migrator::run) and
/// [`plan`](crate::Migrator::plan) do when the ledger and the list of
/// migrations disagree in one way. Set with
/// [`Migrator::on_missing`](crate::Migrator::on_missing),
/// [`on_out_of_order`](crate::Migrator::on_out_of_order) and
/// [`on_newer`](crate::Migrator::on_newer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Divergence {
    /// Fail before anything is written, with a typed error naming the ids.
    Refuse,
    /// Go on, with a warning in the logs (and the ids in the
    /// [`Plan`](crate::Plan)).
    Allow,
}

/// The policies of one migrator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policies {
    pub(crate) missing: Divergence,
    pub(crate) out_of_order: Divergence,
    pub(crate) newer: Divergence,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            missing: Divergence::Refuse,
            out_of_order: Divergence::Refuse,
            newer: Divergence::Allow,
        }
    }
}

/// How the ledger and the list disagree.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Applied, not listed, and recorded at a position the list still has.
    pub(crate) missing: Vec<String>,
    /// Applied, not listed, recorded after every listed migration.
    pub(crate) newer: Vec<String>,
    /// Listed and never started, before `.1`, which was applied when they
    /// were not listed yet.
    pub(crate) out_of_order: Vec<(String, String)>,
}

/// Compares the ledger's rows with the list.
///
/// A row records the position its migration had in the list when it ran
/// (`seq`). An applied row whose id is not listed is a **newer** release's
/// when that position is past the end of this list (a rolling deploy or a
/// rollback runs an older build beside it), and **missing** otherwise (it
/// was deleted from the list). A listed migration with no row at all that
/// comes before an applied one now listed further down than it was when it
/// ran was inserted **out of order**. (One that was listed then but simply
/// had not run yet, such as a re-embed deferred behind migrations that
/// block serving, kept the applied one's position unchanged and is not
/// reported.) Applied rows of earlier [`TargetSchema`](crate::TargetSchema)
/// declarations of a table the list declares are neither.
pub(crate) fn find(
    migrations: &[Box<dyn Migration>],
    entries: &HashMap<String, LedgerEntry>,
) -> Found {
    let position: HashMap<&str, usize> = migrations
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id(), i))
        .collect();
    // Earlier declarations of a table the list declares are its history,
    // not missing.
    let declared: std::collections::HashSet<&str> = migrations
        .iter()
        .filter_map(|m| declared_table(m.id()).filter(|t| *t == m.table()))
        .collect();
    let history = |id: &str| declared_table(id).is_some_and(|t| declared.contains(t));
    let mut found = Found::default();
    let mut unlisted: Vec<&LedgerEntry> = entries
        .values()
        .filter(|e| e.status == LedgerStatus::Applied && !position.contains_key(e.id.as_str()))
        .filter(|e| !history(&e.id))
        .collect();
    unlisted.sort_by_key(|e| (e.seq, e.id.clone()));
    for e in unlisted {
        if e.seq as usize >= migrations.len() {
            found.newer.push(e.id.clone());
        } else {
            found.missing.push(e.id.clone());
        }
    }
    for (i, m) in migrations.iter().enumerate() {
        let moved = entries
            .get(m.id())
            .is_some_and(|e| e.status == LedgerStatus::Applied && (i as u64) > e.seq);
        if !moved {
            continue;
        }
        for earlier in &migrations[..i] {
            let never_started = !entries.contains_key(earlier.id());
            let known = found.out_of_order.iter().any(|(id, _)| id == earlier.id());
            if never_started && !known {
                found
                    .out_of_order
                    .push((earlier.id().to_owned(), m.id().to_owned()));
            }
        }
    }
    found
}

/// Applies `policies` to what [`find`] found: the first refused kind fails,
/// the allowed ones are logged.
pub(crate) fn enforce(found: &Found, policies: Policies) -> Result<()> {
    if !found.missing.is_empty() {
        match policies.missing {
            Divergence::Refuse => {
                return Err(Error::MissingMigrations {
                    ids: found.missing.clone(),
                });
            }
            Divergence::Allow => warn!(
                ids = ?found.missing,
                "applied migrations are missing from the list; going on (on_missing: Allow)"
            ),
        }
    }
    if let Some((_, after)) = found.out_of_order.first() {
        let ids: Vec<String> = found
            .out_of_order
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        match policies.out_of_order {
            Divergence::Refuse => {
                return Err(Error::OutOfOrder {
                    ids,
                    applied: after.clone(),
                });
            }
            Divergence::Allow => warn!(
                ?ids,
                "migrations were inserted before applied ones; applying them now (on_out_of_order: Allow)"
            ),
        }
    }
    if !found.newer.is_empty() {
        match policies.newer {
            Divergence::Refuse => {
                return Err(Error::NewerMigrations {
                    ids: found.newer.clone(),
                });
            }
            Divergence::Allow => warn!(
                ids = ?found.newer,
                "the ledger has migrations applied by a newer release; ignoring them"
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::MigrationContext;

    #[derive(Debug)]
    struct M(&'static str);

    #[async_trait::async_trait]
    impl Migration for M {
        fn id(&self) -> &str {
            self.0
        }
        fn table(&self) -> &str {
            "t"
        }
        async fn transform(&self, _: &MigrationContext) -> Result<()> {
            Ok(())
        }
    }

    fn list(ids: &[&'static str]) -> Vec<Box<dyn Migration>> {
        ids.iter()
            .map(|id| Box::new(M(id)) as Box<dyn Migration>)
            .collect()
    }

    fn ledger(rows: &[(&str, u64, LedgerStatus)]) -> HashMap<String, LedgerEntry> {
        rows.iter()
            .map(|(id, seq, status)| {
                let mut e = LedgerEntry::running(id, *seq, "t", "c".repeat(64), 1, 10);
                e.status = *status;
                (id.to_string(), e)
            })
            .collect()
    }

    use LedgerStatus::{Applied, Failed, Running};

    #[test]
    fn an_unchanged_list_agrees() {
        let found = find(
            &list(&["a", "b", "c"]),
            &ledger(&[("a", 0, Applied), ("b", 1, Applied)]),
        );
        assert_eq!(found, Found::default());
    }

    #[test]
    fn a_deleted_migration_is_missing_and_a_later_one_newer() {
        let entries = ledger(&[
            ("a", 0, Applied),
            ("b", 1, Applied),
            ("c", 2, Applied),
            ("d", 3, Applied),
        ]);
        let found = find(&list(&["a", "c", "x"]), &entries);
        assert_eq!(found.missing, ["b"]);
        assert_eq!(found.newer, ["d"]);
        // c was at 2 and is now at 1: something was deleted, not inserted.
        assert!(found.out_of_order.is_empty());
        let err = enforce(&found, Policies::default()).unwrap_err();
        assert!(
            matches!(&err, Error::MissingMigrations { ids } if ids == &["b"]),
            "{err}"
        );
    }

    #[test]
    fn an_older_build_beside_a_newer_release_is_allowed_by_default() {
        let entries = ledger(&[("a", 0, Applied), ("b", 1, Applied), ("c", 2, Running)]);
        let found = find(&list(&["a"]), &entries);
        assert_eq!(found.newer, ["b"]);
        assert!(found.missing.is_empty(), "a running row is not applied");
        enforce(&found, Policies::default()).unwrap();
        let refuse = Policies {
            newer: Divergence::Refuse,
            ..Policies::default()
        };
        let err = enforce(&found, refuse).unwrap_err();
        assert!(
            matches!(&err, Error::NewerMigrations { ids } if ids == &["b"]),
            "{err}"
        );
    }

    #[test]
    fn an_insert_before_applied_ones_is_out_of_order() {
        let entries = ledger(&[("a", 0, Applied), ("b", 1, Applied), ("c", 2, Applied)]);
        let found = find(&list(&["a", "x", "y", "b", "c", "z"]), &entries);
        assert_eq!(
            found.out_of_order,
            [("x".into(), "b".into()), ("y".into(), "b".into())]
        );
        let err = enforce(&found, Policies::default()).unwrap_err();
        assert!(
            matches!(&err, Error::OutOfOrder { ids, applied } if ids == &["x", "y"] && applied == "b"),
            "{err}"
        );
        let allow = Policies {
            out_of_order: Divergence::Allow,
            ..Policies::default()
        };
        enforce(&found, allow).unwrap();
    }

    #[test]
    fn a_deferred_migration_is_not_out_of_order() {
        // `r` (a re-embed) was listed before `b` but ran after it, or not
        // yet: b kept its position, r has a row or none.
        let list = list(&["a", "r", "b"]);
        let never_started = ledger(&[("a", 0, Applied), ("b", 2, Applied)]);
        assert_eq!(find(&list, &never_started), Found::default());
        let failed = ledger(&[("a", 0, Applied), ("r", 1, Failed), ("b", 2, Applied)]);
        assert_eq!(find(&list, &failed), Found::default());
    }
}
