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

    #[test]
    fn instants_are_rfc3339_in_utc_with_microseconds() {
        let t = UNIX_EPOCH + Duration::from_micros(1_796_683_263_120_005);
        assert_eq!(rfc3339(t), "2026-12-07T22:41:03.120005Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }
}
