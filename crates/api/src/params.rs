//! Query parameter values shared by several endpoints: pagination, instants (`from`,
//! `to`: RFC 3339 or milliseconds since the epoch) and durations (`every`: `500ms`, `10s`,
//! `5m`, `1h`, `1d`, or combinations such as `1h30m`), read by `fleetwire-time`.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use fleetwire_time::Timestamp;

use crate::problem::Problem;

/// Largest page a listing returns.
pub(crate) const MAX_LIMIT: u32 = 1000;

/// `limit` (1-1000, default 100) and `cursor` of a listing without other parameters.
pub(crate) struct Pagination {
    pub(crate) limit: u32,
    pub(crate) cursor: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let mut page = Pagination {
            limit: 100,
            cursor: None,
        };
        let query = parts.uri.query().unwrap_or_default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "limit" => page.limit = parse_limit(&value)?,
                "cursor" => page.cursor = Some(value.into_owned()),
                other => {
                    return Err(Problem::bad_request(format!(
                        "unknown query parameter {other:?}: expected limit or cursor"
                    )));
                }
            }
        }
        Ok(page)
    }
}

/// A page size: 1 to [`MAX_LIMIT`].
pub(crate) fn parse_limit(value: &str) -> Result<u32, Problem> {
    value
        .parse()
        .ok()
        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "limit {value:?}: expected a number from 1 to {MAX_LIMIT}"
            ))
        })
}

/// Parses an instant (`from`, `to`): milliseconds since the epoch or an RFC 3339
/// date-time. The error says what was expected.
pub(crate) fn parse_instant(text: &str) -> Result<i64, String> {
    Timestamp::parse(text)
        .map(Timestamp::as_millis)
        .map_err(|error| error.to_string())
}

/// Parses a duration such as `500ms`, `10s` or `1h30m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    fleetwire_time::parse_duration(text).map_err(|error| error.to_string())
}
