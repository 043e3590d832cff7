//! The limits a payload must stay within ([`Limits`]), and the accepted time range with
//! the words that describe it in error messages.

use std::fmt;

use fleetwire_time::{DAY_MS, Timestamp, civil_from_days};

/// 3000-01-01T00:00:00Z in milliseconds since the epoch.
const YEAR_3000_MS: i64 = 32_503_680_000_000;

/// How big a payload may be and which timestamps it may carry. [`Limits::default`] holds
/// the documented limits; the ingest configuration may change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most fields in one row of JSON telemetry (after flattening) or one line of line
    /// protocol (string fields included). Default 1,000.
    pub max_fields_per_row: usize,
    /// Most rows in a JSON telemetry array. Default 10,000. (Line protocol bodies are
    /// bounded by the HTTP body limit instead.)
    pub max_rows: usize,
    /// Most levels in a flattened JSON field name: `{"a": {"b": 1}}` has two (`a.b`).
    /// Default 8.
    pub max_depth: usize,
    /// Earliest timestamp accepted, inclusive. Default 1970-01-01T00:00:00Z.
    pub earliest: Timestamp,
    /// Latest timestamp accepted, inclusive. Default 3000-01-01T00:00:00Z.
    pub latest: Timestamp,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_fields_per_row: 1_000,
            max_rows: 10_000,
            max_depth: 8,
            earliest: Timestamp::from_millis(0),
            latest: Timestamp::from_millis(YEAR_3000_MS),
        }
    }
}

impl Limits {
    /// Whether `millis` is within `earliest..=latest`.
    pub(crate) fn is_in_time_range(&self, millis: i64) -> bool {
        (self.earliest.as_millis()..=self.latest.as_millis()).contains(&millis)
    }

    /// Whether the float `millis` (not yet rounded) rounds into `earliest..=latest`.
    pub(crate) fn is_float_in_time_range(&self, millis: f64) -> bool {
        let millis = millis.round();
        millis >= self.earliest.as_millis() as f64 && millis <= self.latest.as_millis() as f64
    }

    /// `between 1970-01-01 and 3000-01-01`, for error messages.
    pub(crate) fn describe_time_range(&self) -> String {
        format!(
            "between {} and {}",
            Date(self.earliest.as_millis()),
            Date(self.latest.as_millis())
        )
    }
}

/// A timestamp shown as a UTC date (`2024-05-01`), with the time of day only when it is
/// not midnight (`2024-05-01T12:00:00.000Z`).
struct Date(i64);

impl fmt::Display for Date {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(DAY_MS);
        let (year, month, day) = civil_from_days(days);
        write!(formatter, "{year:04}-{month:02}-{day:02}")?;
        let millis_of_day = self.0.rem_euclid(DAY_MS);
        if millis_of_day != 0 {
            write!(
                formatter,
                "T{:02}:{:02}:{:02}.{:03}Z",
                millis_of_day / 3_600_000,
                millis_of_day / 60_000 % 60,
                millis_of_day / 1000 % 60,
                millis_of_day % 1000
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(Date(0).to_string(), "1970-01-01");
        assert_eq!(Date(YEAR_3000_MS).to_string(), "3000-01-01");
        assert_eq!(Date(951_782_400_000).to_string(), "2000-02-29");
        assert_eq!(Date(-1).to_string(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            Date(1_700_000_000_123).to_string(),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn default_range_is_1970_to_3000() {
        assert_eq!(
            Limits::default().describe_time_range(),
            "between 1970-01-01 and 3000-01-01"
        );
    }
}
