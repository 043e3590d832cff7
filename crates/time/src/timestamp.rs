//! [`Timestamp`]: an instant as milliseconds since the Unix epoch, the clock, and its
//! RFC 3339 form.

use std::fmt;
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::calendar::{civil_from_days, days_from_civil, days_in_month};
use crate::error::Error;

/// Milliseconds since the Unix epoch, as records store them (`created_at`, `expires_at`).
pub type TimestampMs = i64;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Milliseconds since the Unix epoch. Any `i64` is accepted, including times before 1970.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time (0 if the clock is before 1970): the one place the
    /// platform reads the time of day.
    pub fn now() -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
            });
        Timestamp(millis)
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, in UTC with milliseconds (`2024-05-01T12:34:56.789Z`).
    pub fn to_rfc3339(self) -> String {
        let seconds = self.0.div_euclid(1000);
        let millis = self.0.rem_euclid(1000);
        let days = seconds.div_euclid(86_400);
        let second_of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let mut out = String::with_capacity(24);
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            second_of_day / 3600,
            second_of_day % 3600 / 60,
            second_of_day % 60,
        );
        out
    }

    /// Reads an instant: an integer (milliseconds since the epoch) or an RFC 3339
    /// date-time (`2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.250+02:00`; a space may
    /// replace the `T`; digits past milliseconds are dropped).
    pub fn parse(text: &str) -> Result<Timestamp, Error> {
        if let Ok(millis) = text.parse::<i64>() {
            return Ok(Timestamp(millis));
        }
        parse_rfc3339(text)
            .map(Timestamp)
            .ok_or_else(|| Error::Instant(text.to_owned()))
    }
}

/// The milliseconds of an RFC 3339 date-time, or `None` when `text` is not one.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        if digits.bytes().all(|byte| byte.is_ascii_digit()) {
            digits.parse::<i64>().ok()
        } else {
            None
        }
    };
    let has_separators = bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !has_separators {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &fraction[..digits.min(3)];
        millis = kept.parse::<i64>().ok()? * 10_i64.pow(3 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let offset = &rest[1..];
            if offset.len() != 5 || offset.as_bytes()[2] != b':' {
                return None;
            }
            let hours = offset.get(..2)?.parse::<i64>().ok()?;
            let minutes = offset.get(3..)?.parse::<i64>().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 60 + minutes)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a record's milliseconds (see [`Timestamp::to_rfc3339`]).
pub fn rfc3339(at: TimestampMs) -> String {
    Timestamp(at).to_rfc3339()
}

impl From<i64> for Timestamp {
    fn from(millis: i64) -> Timestamp {
        Timestamp(millis)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    fn rfc3339(millis: i64) -> String {
        Timestamp::from_millis(millis).to_rfc3339()
    }

    fn parse_instant(text: &str) -> Result<i64, String> {
        Timestamp::parse(text)
            .map(Timestamp::as_millis)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn formats_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1, "1970-01-01T00:00:00.001Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_709_210_096_789, "2024-02-29T12:34:56.789Z"),
            (1_735_689_599_999, "2024-12-31T23:59:59.999Z"),
            (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
        ];
        for (millis, expected) in cases {
            assert_eq!(rfc3339(millis), expected, "{millis}");
        }
    }

    #[test]
    fn instants_parse_in_both_forms() {
        let cases = [
            ("0", 0),
            ("1700000000000", 1_700_000_000_000),
            ("-5", -5),
            ("1970-01-01T00:00:00Z", 0),
            ("2024-02-29T12:34:56.789Z", 1_709_210_096_789),
            ("2024-02-29T12:34:56.7Z", 1_709_210_096_700),
            ("2024-02-29T12:34:56.789123Z", 1_709_210_096_789),
            ("2024-02-29 12:34:56Z", 1_709_210_096_000),
            ("2024-02-29T14:34:56+02:00", 1_709_210_096_000),
            ("2024-02-29T10:04:56-02:30", 1_709_210_096_000),
        ];
        for (text, millis) in cases {
            assert_eq!(parse_instant(text), Ok(millis), "{text}");
        }
    }

    #[test]
    fn instants_round_trip_through_the_formatter() {
        for millis in [0, 1, 951_782_400_000, 1_735_689_599_999, 4_102_444_800_000] {
            assert_eq!(parse_instant(&rfc3339(millis)), Ok(millis));
        }
    }

    #[test]
    fn bad_instants_say_what_was_expected() {
        for text in [
            "",
            "yesterday",
            "2024-02-30T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T25:00:00Z",
            "2024-01-01T00:00:00+0200",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+é0:00",
        ] {
            let error = parse_instant(text).unwrap_err();
            assert!(
                error.starts_with("expected milliseconds"),
                "{text}: {error}"
            );
        }
    }
}
