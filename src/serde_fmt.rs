//! How the `serde` feature writes what the crate's own types cannot derive
//! plainly: durations as seconds, instants as RFC 3339 text, errors as
//! their kind and message, and the types a dependency defines as the text
//! the crate shows for them. The names and units are listed in README,
//! "Machine-readable output"; they are part of the crate's stable API.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::{SerializeStruct, Serializer};

use crate::error::Error;

/// A duration, as seconds (a float).
pub(crate) fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// An optional duration, as seconds or `null`.
pub(crate) fn opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// An instant as RFC 3339 text in UTC with microseconds, e.g.
/// `2026-12-07T22:41:03.120000Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX),
        Err(before) => {
            -chrono::Duration::from_std(before.duration()).unwrap_or(chrono::Duration::MAX)
        }
    };
    let at = chrono::DateTime::UNIX_EPOCH + since;
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// An instant, as [`rfc3339`] text.
pub(crate) fn time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// An optional instant, as [`rfc3339`] text or `null`.
pub(crate) fn opt_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// An error as `{"kind": ..., "message": ...}`: [`Error::kind`] and the
/// message with its sources chained on.
pub(crate) fn error<S: Serializer>(e: &Arc<Error>, s: S) -> Result<S::Ok, S::Error> {
    error_value(e, s)
}

/// [`error`] for an error not behind an `Arc`.
pub(crate) fn error_value<S: Serializer>(e: &Error, s: S) -> Result<S::Ok, S::Error> {
    let mut st = s.serialize_struct("Error", 2)?;
    st.serialize_field("kind", e.kind())?;
    st.serialize_field("message", &crate::error::chain(e))?;
    st.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::Backup;
    use crate::event::Event;
    use crate::ledger::LedgerEntry;
    use crate::migration::{MigrationPlan, Writes};
    use crate::migrator::{Plan, PlanState, PlanStep};
    use crate::report::{MigrationReport, Outcome, Phase, PhaseTiming, Report};

    /// `value` as JSON, and `expected` parsed: maps compare whatever the
    /// order of their keys (serde_json keeps insertion order when a
    /// dependency enables `preserve_order`, and sorts them when not).
    fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).unwrap()
    }

    fn expected(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    const AT: SystemTime = UNIX_EPOCH;

    /// The names and units every consumer of `--json` and the `serde`
    /// feature reads: a change here breaks them, so it fails this test.
    #[test]
    fn field_names_are_pinned() {
        let mut entry = LedgerEntry::running("0001", 0, "docs", "ab".into(), 3, 10);
        entry.started_at = AT;
        let entry = entry.applied(4, 10);
        let mut entry = entry;
        entry.finished_at = Some(AT + Duration::from_millis(1500));
        entry.crate_version = "0.2.0".into();
        assert_eq!(
            json(&entry),
            expected(
                r#"{"backup_copy":null,"backup_tag":null,"checksum":"ab","crate_version":"0.2.0","details":{},"error":null,"finished_at":"1970-01-01T00:00:01.500000Z","id":"0001","rows_after":10,"rows_before":10,"seq":0,"started_at":"1970-01-01T00:00:00.000000Z","status":"applied","table":"docs","version_after":4,"version_before":3}"#
            )
        );

        let report = MigrationReport {
            id: "0001".into(),
            table: "docs".into(),
            outcome: Outcome::Applied,
            version_before: 3,
            version_after: Some(4),
            rows_before: 10,
            rows_after: Some(10),
            backup: Some(Backup::new("docs", 3, "tag")),
            phases: vec![PhaseTiming {
                phase: Phase::Transform,
                duration: Duration::from_millis(250),
            }],
            details: Default::default(),
            duration: Duration::from_secs(2),
            blocks_serving: true,
        };
        let mut run = Report::default();
        run.push(report);
        assert_eq!(
            json(&run),
            expected(
                r#"{"holder":null,"migrations":[{"backup":{"copy":null,"table":"docs","tag":"tag","version":3},"blocks_serving":true,"details":{},"duration_secs":2.0,"id":"0001","outcome":"applied","phases":[{"duration_secs":0.25,"phase":"transform"}],"rows_after":10,"rows_before":10,"table":"docs","version_after":4,"version_before":3}]}"#
            )
        );

        let plan = Plan::new(vec![
            PlanStep {
                id: "0001".into(),
                table: "docs".into(),
                state: PlanState::Drifted {
                    applied: "ab".into(),
                    current: "cd".into(),
                },
                work: None,
            },
            PlanStep {
                id: "0002".into(),
                table: "docs".into(),
                state: PlanState::Pending,
                work: Some(
                    MigrationPlan::new("add 1 column")
                        .writes(Writes::Columns { rows: 10 })
                        .columns(["c"]),
                ),
            },
        ]);
        assert_eq!(
            json(&plan),
            expected(
                r#"{"steps":[{"applied":"ab","current":"cd","id":"0001","state":"drifted","table":"docs","work":null},{"id":"0002","state":"pending","table":"docs","work":{"columns":["c"],"indexes":[],"rebuilds":[],"summary":"add 1 column","writes":{"kind":"columns","rows":10}}}],"unlisted":[]}"#
            )
        );

        let events = [
            Event::PhaseFinished {
                migration: "0001".into(),
                phase: Phase::Verify,
                duration: Duration::from_millis(500),
            },
            Event::Progress {
                migration: "0001".into(),
                done: 5,
                total: Some(10),
                rate: 2.5,
                eta: Some(Duration::from_secs(2)),
                embedding: None,
            },
            Event::LeaseWaiting {
                holder: Some("host-1".into()),
                last_heartbeat: Some(AT),
            },
            Event::MigrationFailed {
                migration: "0001".into(),
                phase: Phase::Verify,
                error: Arc::new(Error::TableNotFound {
                    table: "docs".into(),
                }),
            },
        ];
        let lines: Vec<serde_json::Value> = events.iter().map(json).collect();
        let want: Vec<serde_json::Value> = [
                r#"{"duration_secs":0.5,"event":"phase_finished","migration":"0001","phase":"verify"}"#,
                r#"{"done":5,"embedding":null,"eta_secs":2.0,"event":"progress","migration":"0001","rate":2.5,"total":10}"#,
                r#"{"event":"lease_waiting","holder":"host-1","last_heartbeat":"1970-01-01T00:00:00.000000Z"}"#,
                r#"{"error":{"kind":"table_not_found","message":"table `docs` does not exist; create it before migrating it"},"event":"migration_failed","migration":"0001","phase":"verify"}"#,
        ]
        .into_iter()
        .map(expected)
        .collect();
        assert_eq!(lines, want);
    }

    #[test]
    fn instants_are_rfc3339_in_utc_with_microseconds() {
        let t = UNIX_EPOCH + Duration::from_micros(1_796_683_263_120_005);
        assert_eq!(rfc3339(t), "2026-12-07T22:41:03.120005Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }
}
