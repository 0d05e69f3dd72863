//! Random pauses for retries, so that retrying processes do not fall into
//! step with each other or with a writer that commits on a rhythm.

use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

/// A random number in [0, 1), from the standard library's randomly keyed
/// hasher (no random-number crate needed for jitter).
pub(crate) fn random_fraction() -> f64 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
