//! Fuzz target for the line protocol parser: the first byte picks the precision, the rest
//! is the body.
//!
//! The parser must never panic. Every point it accepts must be storable (names of 1 to
//! 1024 bytes, a finite value, a timestamp in range), and writing the points back as line
//! protocol (device tag, escaped names, millisecond timestamps) must parse to the same
//! points.

#![no_main]

use std::fmt::Write as _;

use fleetwire_formats::{Limits, Precision, parse_line_protocol};
use fleetwire_store::{MAX_NAME_LEN, Timestamp};
use libfuzzer_sys::fuzz_target;

const RECEIVED_AT: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn escape(name: &str, body: &mut String) {
    for character in name.chars() {
        if matches!(character, ',' | ' ' | '=') {
            body.push('\\');
        }
        body.push(character);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let precision = match selector % 4 {
        0 => Precision::Nanoseconds,
        1 => Precision::Microseconds,
        2 => Precision::Milliseconds,
        _ => Precision::Seconds,
    };
    let limits = Limits::default();
    let Ok(batch) = parse_line_protocol(body, precision, RECEIVED_AT, &limits) else {
        return;
    };
    let mut again = String::new();
    for point in &batch.points {
        assert!(!point.device.is_empty() && point.device.len() <= MAX_NAME_LEN);
        assert!(!point.field.is_empty() && point.field.len() <= MAX_NAME_LEN);
        assert!(point.value.is_finite());
        assert!(point.timestamp >= limits.earliest && point.timestamp <= limits.latest);
        // A tab ends the tags, so that a device ending in a backslash stays unescaped.
        again.push_str("m,device=");
        escape(&point.device, &mut again);
        again.push('\t');
        escape(&point.field, &mut again);
        write!(again, "={:?} {}\n", point.value, point.timestamp.as_millis()).unwrap();
    }
    let reparsed = parse_line_protocol(again.as_bytes(), Precision::Milliseconds, RECEIVED_AT, &limits)
        .unwrap_or_else(|error| panic!("re-written points do not parse: {error}\n{again}"));
    assert_eq!(reparsed.points.len(), batch.points.len());
    for (original, copy) in batch.points.iter().zip(&reparsed.points) {
        assert_eq!(original.device, copy.device);
        assert_eq!(original.field, copy.field);
        assert_eq!(original.timestamp, copy.timestamp);
        assert_eq!(original.value.to_bits(), copy.value.to_bits());
    }
});
