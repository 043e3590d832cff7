//! Fleetwire's one notion of time, shared by every crate that reads a clock or writes a
//! date: [`Timestamp`] (milliseconds since the Unix epoch, UTC), [`Timestamp::now`] (the
//! only wall-clock reading in the platform), RFC 3339 date-times both ways, the civil
//! calendar under them, and durations such as `10s` or `1h30m`.
//!
//! No time zones but UTC and fixed offsets, no leap-second table: what a device, an API
//! client and the storage engine need, without a date library.
//!
//! ```
//! use std::time::Duration;
//! use fleetwire_time::{Timestamp, parse_duration};
//!
//! let at = Timestamp::from_millis(1_709_210_096_789);
//! assert_eq!(at.to_rfc3339(), "2024-02-29T12:34:56.789Z");
//! assert_eq!(Timestamp::parse("2024-02-29T14:34:56.789+02:00"), Ok(at));
//! assert_eq!(Timestamp::parse("1709210096789"), Ok(at));
//! assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
//! ```

mod calendar;
mod duration;
mod error;
mod timestamp;

pub use calendar::{civil_from_days, days_from_civil};
pub use duration::parse_duration;
pub use error::Error;
pub use timestamp::{DAY_MS, Timestamp, TimestampMs, rfc3339};
