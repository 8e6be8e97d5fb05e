//! The parsers of outside data, compiled on their own for fuzzing.
//!
//! `dwh-shared` pulls in Arrow, Polars, librdkafka and the PostgreSQL client; instrumenting all
//! of that for the fuzzer would take far longer to build than to fuzz. The parsers need only
//! serde, chrono and uuid, so their source files are compiled here, unchanged, as the same
//! modules they are in `dwh-shared` (`crate::jsonb`, `crate::model`, `crate::vault`).

#[path = "../../shared/src/jsonb.rs"]
pub mod jsonb;
#[path = "../../shared/src/model.rs"]
pub mod model;
#[path = "../../shared/src/vault.rs"]
pub mod vault;

use chrono::{Datelike, NaiveDateTime};

/// A timestamp PostgreSQL's `timestamp` holds, written with a four-digit year.
pub fn storable(ts: NaiveDateTime) -> bool {
    (0..=9999).contains(&ts.year())
}

/// A string that may be a business key: short enough for a unique btree index.
pub fn key_sized(id: &str) -> bool {
    id.len() <= model::MAX_KEY_BYTES
}

/// What a parser accepted, or `None` once its refusal is checked to carry a reason PostgreSQL can
/// store (not empty, no NUL).
pub fn accepted<T>(parsed: Result<T, String>) -> Option<T> {
    match parsed {
        Ok(value) => Some(value),
        Err(reason) => {
            assert!(!reason.is_empty() && !reason.contains('\0'), "{reason:?}");
            None
        }
    }
}
