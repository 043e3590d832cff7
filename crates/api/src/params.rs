//! Query parameter values shared by several endpoints: instants (`from`, `to`: RFC 3339
//! or milliseconds since the epoch) and durations (`every`: `500ms`, `10s`, `5m`, `1h`,
//! `1d`, or combinations such as `1h30m`).

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

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

/// Parses an instant: an integer (milliseconds since the epoch) or an RFC 3339 date-time
/// (`2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.250+02:00`; a space may replace the
/// `T`). The error says what was expected.
pub(crate) fn parse_instant(text: &str) -> Result<i64, String> {
    let expected = || {
        format!(
            "expected milliseconds since the epoch or an RFC 3339 date-time such as \
             2024-05-01T12:00:00Z, got {text:?}"
        )
    };
    if let Ok(millis) = text.parse::<i64>() {
        return Ok(millis);
    }
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return Err(expected());
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let digits = text.get(range).ok_or_else(expected)?;
        if digits.bytes().all(|byte| byte.is_ascii_digit()) {
            digits.parse::<i64>().map_err(|_| expected())
        } else {
            Err(expected())
        }
    };
    let separators_ok = bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators_ok {
        return Err(expected());
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
        return Err(expected());
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(expected());
        }
        let kept = &fraction[..digits.min(3)];
        millis = kept.parse::<i64>().map_err(|_| expected())? * 10_i64.pow(3 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err(expected()),
            };
            let offset = &rest[1..];
            if offset.len() != 5 || offset.as_bytes()[2] != b':' {
                return Err(expected());
            }
            let hours = offset[..2].parse::<i64>().map_err(|_| expected())?;
            let minutes = offset[3..].parse::<i64>().map_err(|_| expected())?;
            if hours > 23 || minutes > 59 {
                return Err(expected());
            }
            sign * (hours * 60 + minutes)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1000 + millis)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// `timestamp::civil_from_days`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Parses a duration such as `500ms`, `10s`, `5m`, `1h`, `1d`, `1w` or `1h30m`: whole
/// numbers, each with a unit.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = || {
        format!(
            "expected a duration such as 10s, 5m, 1h or 1h30m (units ms, s, m, h, d, w), got {text:?}"
        )
    };
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(expected());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(expected());
        }
        let amount: u64 = rest[..digits].parse().map_err(|_| expected())?;
        rest = &rest[digits..];
        let unit_length = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_millis: u64 = match &rest[..unit_length] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(expected()),
        };
        rest = &rest[unit_length..];
        total = amount
            .checked_mul(unit_millis)
            .and_then(|millis| total.checked_add(millis))
            .ok_or_else(expected)?;
    }
    Ok(Duration::from_millis(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::rfc3339;

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
        ] {
            let error = parse_instant(text).unwrap_err();
            assert!(
                error.starts_with("expected milliseconds"),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn durations_parse_with_units() {
        let cases = [
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
            ("2w", 1_209_600_000),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for text in ["", "10", "s", "10x", "1.5h", "-1s", "99999999999999999999s"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }
}
