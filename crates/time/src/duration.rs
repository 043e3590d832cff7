//! Durations as people write them: `500ms`, `10s`, `5m`, `1h`, `1d`, `1w`, `1h30m`.

use std::time::Duration;

use crate::error::Error;

/// Reads a duration such as `500ms`, `10s`, `5m`, `1h`, `1d`, `1w` or `1h30m`: whole
/// numbers, each with a unit.
pub fn parse_duration(text: &str) -> Result<Duration, Error> {
    let expected = || Error::Duration(text.to_owned());
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
    use std::time::Duration;

    use super::parse_duration;

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
