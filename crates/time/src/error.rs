//! What can be wrong with a date or a duration someone wrote.

/// A date-time or duration that could not be read; the message says what was expected
/// and what came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither milliseconds since the epoch nor an RFC 3339 date-time.
    #[error(
        "expected milliseconds since the epoch or an RFC 3339 date-time such as \
         2024-05-01T12:00:00Z, got {0:?}"
    )]
    Instant(String),
    /// Not a duration such as `10s` or `1h30m`.
    #[error(
        "expected a duration such as 10s, 5m, 1h or 1h30m (units ms, s, m, h, d, w), got {0:?}"
    )]
    Duration(String),
}
