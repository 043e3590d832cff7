//! Fuzz target for the JSON parsers: arbitrary bytes as telemetry, attributes and a
//! command response.
//!
//! No parser may panic. Every telemetry field accepted must be storable (a name of 1 to
//! 1024 bytes, a finite value, a timestamp in range), and writing the fields back as an
//! array of one-field rows with `ts` must parse to the same fields.

#![no_main]

use fleetwire_formats::{Limits, parse_attributes, parse_command_response, parse_telemetry};
use fleetwire_store::{MAX_NAME_LEN, Timestamp};
use libfuzzer_sys::fuzz_target;

const RECEIVED_AT: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fuzz_target!(|data: &[u8]| {
    let _ = parse_attributes(data);
    let _ = parse_command_response(data);
    let limits = Limits::default();
    let Ok(telemetry) = parse_telemetry(data, RECEIVED_AT, &limits) else {
        return;
    };
    assert!(!telemetry.fields.is_empty());
    let mut rows = Vec::new();
    for field in &telemetry.fields {
        assert!(!field.name.is_empty() && field.name.len() <= MAX_NAME_LEN);
        assert!(field.value.is_finite());
        assert!(field.timestamp >= limits.earliest && field.timestamp <= limits.latest);
        let mut row = serde_json::Map::new();
        row.insert(field.name.to_string(), serde_json::Value::from(field.value));
        row.insert("ts".to_owned(), serde_json::Value::from(field.timestamp.as_millis()));
        rows.push(serde_json::Value::Object(row));
    }
    let again = serde_json::to_vec(&rows).unwrap();
    let reparsed = parse_telemetry(&again, RECEIVED_AT, &limits).unwrap_or_else(|error| {
        panic!("re-written fields do not parse: {error}\n{}", String::from_utf8_lossy(&again))
    });
    assert_eq!(reparsed.fields.len(), telemetry.fields.len());
    for (original, copy) in telemetry.fields.iter().zip(&reparsed.fields) {
        assert_eq!(original.name, copy.name);
        assert_eq!(original.timestamp, copy.timestamp);
        assert_eq!(original.value.to_bits(), copy.value.to_bits());
    }
});
