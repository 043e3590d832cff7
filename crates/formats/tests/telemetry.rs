//! JSON telemetry: tables of payloads and the fields they give, or the exact error.

use fleetwire_formats::{Error, Limits, Telemetry, parse_telemetry};
use fleetwire_store::{MAX_NAME_LEN, Point, Timestamp};

const RECEIVED_AT: i64 = 1_700_000_000_000;

fn parse(payload: &str) -> Result<Telemetry<'_>, Error> {
    parse_telemetry(
        payload.as_bytes(),
        Timestamp::from_millis(RECEIVED_AT),
        &Limits::default(),
    )
}

fn fields(telemetry: &Telemetry<'_>) -> Vec<(String, i64, f64)> {
    telemetry
        .fields
        .iter()
        .map(|field| {
            (
                field.name.to_string(),
                field.timestamp.as_millis(),
                field.value,
            )
        })
        .collect()
}

fn error(payload: &str) -> String {
    match parse(payload) {
        Ok(telemetry) => panic!("{payload} was accepted as {telemetry:?}"),
        Err(error) => error.to_string(),
    }
}

/// `(behaviour, payload, [(field, timestamp, value)])`; `R` stands for the time of receipt.
const R: i64 = RECEIVED_AT;
#[allow(clippy::type_complexity)]
const ACCEPTED: &[(&str, &str, &[(&str, i64, f64)])] = &[
    (
        "an object without ts gets the time of receipt",
        r#"{"temperature": 21.5, "humidity": 40}"#,
        &[("temperature", R, 21.5), ("humidity", R, 40.0)],
    ),
    (
        "ts is milliseconds since the epoch",
        r#"{"ts": 1700000123456, "temperature": 21.5}"#,
        &[("temperature", 1_700_000_123_456, 21.5)],
    ),
    (
        "ts may come after the fields",
        r#"{"temperature": 21.5, "ts": 1700000123456}"#,
        &[("temperature", 1_700_000_123_456, 21.5)],
    ),
    (
        "ts as a float without fraction is exact",
        r#"{"ts": 1.7e12, "a": 1}"#,
        &[("a", 1_700_000_000_000, 1.0)],
    ),
    (
        "ts with a fraction is rounded to the nearest millisecond",
        r#"{"ts": 1700000000000.6, "a": 1}"#,
        &[("a", 1_700_000_000_001, 1.0)],
    ),
    (
        "ts of the epoch itself is accepted",
        r#"{"ts": 0, "a": 1}"#,
        &[("a", 0, 1.0)],
    ),
    (
        "ts of 3000-01-01 is accepted",
        r#"{"ts": 32503680000000, "a": 1}"#,
        &[("a", 32_503_680_000_000, 1.0)],
    ),
    (
        "booleans are one and zero",
        r#"{"door_open": true, "alarm": false}"#,
        &[("door_open", R, 1.0), ("alarm", R, 0.0)],
    ),
    (
        "integers become floats",
        r#"{"count": -42, "big": 18446744073709551615, "huge": 100000000000000000000000}"#,
        &[
            ("count", R, -42.0),
            ("big", R, 18_446_744_073_709_551_615.0),
            ("huge", R, 1e23),
        ],
    ),
    (
        "floats keep their value",
        r#"{"tiny": 5e-324, "large": 1.7976931348623157e308, "negative_zero": -0.0}"#,
        &[
            ("tiny", R, 5e-324),
            ("large", R, f64::MAX),
            ("negative_zero", R, -0.0),
        ],
    ),
    (
        "nested objects are flattened with dots",
        r#"{"gps": {"lat": 52.1, "lon": 4.3, "fix": {"ok": true}}, "speed": 3}"#,
        &[
            ("gps.lat", R, 52.1),
            ("gps.lon", R, 4.3),
            ("gps.fix.ok", R, 1.0),
            ("speed", R, 3.0),
        ],
    ),
    (
        "eight levels of nesting are accepted",
        r#"{"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 8}}}}}}}}"#,
        &[("a.b.c.d.e.f.g.h", R, 8.0)],
    ),
    (
        "ts inside a nested object is an ordinary field",
        r#"{"meta": {"ts": 5, "timestamp": 6}}"#,
        &[("meta.ts", R, 5.0), ("meta.timestamp", R, 6.0)],
    ),
    (
        "an empty nested object next to fields adds nothing",
        r#"{"a": 1, "b": {}}"#,
        &[("a", R, 1.0)],
    ),
    (
        "keys with dots are kept as they are",
        r#"{"gps.lat": 52.1}"#,
        &[("gps.lat", R, 52.1)],
    ),
    (
        "keys with JSON escapes are unescaped",
        r#"{"a\"b\u00e9": 1}"#,
        &[("a\"bé", R, 1.0)],
    ),
    (
        "white space around the payload is fine",
        " \n\t{\"a\": 1}\r\n ",
        &[("a", R, 1.0)],
    ),
    (
        "each row of an array has its own ts",
        r#"[{"ts": 1700000000000, "a": 1}, {"ts": 1700000001000, "a": 2}, {"a": 3}]"#,
        &[
            ("a", 1_700_000_000_000, 1.0),
            ("a", 1_700_000_001_000, 2.0),
            ("a", R, 3.0),
        ],
    ),
    (
        "the flat form's timestamp is seconds",
        r#"{"device_id": "sensor-1", "temperature": 21.5, "humidity": 40.0, "timestamp": 1700000000}"#,
        &[
            ("temperature", 1_700_000_000_000, 21.5),
            ("humidity", 1_700_000_000_000, 40.0),
        ],
    ),
    (
        "fractional seconds are kept to the millisecond",
        r#"{"timestamp": 1700000000.123, "a": 1}"#,
        &[("a", 1_700_000_000_123, 1.0)],
    ),
    (
        "fractional seconds are rounded to the nearest millisecond",
        r#"{"timestamp": 1700000000.1236, "a": 1}"#,
        &[("a", 1_700_000_000_124, 1.0)],
    ),
    (
        "rows of the flat form may all name the same device",
        r#"[{"device_id": "d1", "a": 1}, {"device_id": "d1", "a": 2}, {"a": 3}]"#,
        &[("a", R, 1.0), ("a", R, 2.0), ("a", R, 3.0)],
    ),
];

#[test]
fn accepted_payloads_give_their_fields() {
    for (behaviour, payload, expected) in ACCEPTED {
        let telemetry = parse(payload).unwrap_or_else(|error| panic!("{behaviour}: {error}"));
        let expected: Vec<(String, i64, f64)> = expected
            .iter()
            .map(|(name, timestamp, value)| (name.to_string(), *timestamp, *value))
            .collect();
        assert_eq!(fields(&telemetry), expected, "{behaviour}");
        for (field, (_, _, value)) in telemetry.fields.iter().zip(&expected) {
            assert_eq!(
                field.value.to_bits(),
                value.to_bits(),
                "{behaviour}: bits of {}",
                field.name
            );
        }
    }
}

/// `(behaviour, payload, error message)`.
const REJECTED: &[(&str, &str, &str)] = &[
    (
        "a string value",
        r#"{"temperature": 21.5, "status": "on"}"#,
        r#"field "status": expected a number or boolean, got a string"#,
    ),
    (
        "a null value",
        r#"{"temperature": null}"#,
        r#"field "temperature": expected a number or boolean, got null"#,
    ),
    (
        "an array value",
        r#"{"samples": [1, 2, 3]}"#,
        r#"field "samples": expected a number or boolean, got an array"#,
    ),
    (
        "a string in a nested object",
        r#"{"gps": {"fix": "3d"}}"#,
        r#"field "gps.fix": expected a number or boolean, got a string"#,
    ),
    (
        "device_id inside a nested object is a field",
        r#"{"meta": {"device_id": "d1"}}"#,
        r#"field "meta.device_id": expected a number or boolean, got a string"#,
    ),
    (
        "a number beyond the 64-bit float range",
        r#"{"a": 1, "b": 1e400}"#,
        r#"field "b": expected a number within the range of a 64-bit float, got a larger one"#,
    ),
    (
        "objects nested more than eight levels",
        r#"{"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 9}}}}}}}}}"#,
        r#"field "a.b.c.d.e.f.g.h": expected a number or boolean, got an object nested deeper than 8 levels"#,
    ),
    (
        "an empty key",
        r#"{"": 1}"#,
        r#"field "": expected a non-empty key, got an empty one"#,
    ),
    (
        "an empty key in a nested object",
        r#"{"gps": {"": 1}}"#,
        r#"field "gps.": expected a non-empty key, got an empty one"#,
    ),
    (
        "a repeated field",
        r#"{"a": 1, "b": 2, "a": 3}"#,
        r#"field "a": expected once, got it twice"#,
    ),
    (
        "a flattened name that repeats a dotted key",
        r#"{"gps.lat": 1, "gps": {"lat": 2}}"#,
        r#"field "gps.lat": expected once, got it twice"#,
    ),
    ("an empty object", "{}", "no fields to store"),
    (
        "only metadata",
        r#"{"device_id": "d1", "timestamp": 1700000000}"#,
        "no fields to store",
    ),
    ("only ts", r#"{"ts": 1700000000000}"#, "no fields to store"),
    (
        "only an empty nested object",
        r#"{"gps": {}}"#,
        "no fields to store",
    ),
    ("an empty array", "[]", "no fields to store"),
    (
        "a row without fields in an array",
        r#"[{"a": 1}, {"ts": 1700000000000}]"#,
        "row 2: no fields to store",
    ),
    (
        "both ts and timestamp",
        r#"{"ts": 1700000000000, "timestamp": 1700000000, "a": 1}"#,
        r#"expected either "ts" (milliseconds) or "timestamp" (seconds), got both"#,
    ),
    (
        "ts twice",
        r#"{"ts": 1700000000000, "a": 1, "ts": 1700000000000}"#,
        r#"field "ts": expected once, got it twice"#,
    ),
    (
        "a ts before 1970",
        r#"[{"a": 1}, {"a": 2}, {"a": 1, "ts": -5}]"#,
        r#"row 3: field "ts": expected milliseconds since the epoch between 1970-01-01 and 3000-01-01, got -5"#,
    ),
    (
        "a ts after the year 3000",
        r#"{"a": 1, "ts": 32503680000001}"#,
        r#"field "ts": expected milliseconds since the epoch between 1970-01-01 and 3000-01-01, got 32503680000001"#,
    ),
    (
        "a fractional ts before 1970",
        r#"{"a": 1, "ts": -1.5}"#,
        r#"field "ts": expected milliseconds since the epoch between 1970-01-01 and 3000-01-01, got -1.5"#,
    ),
    (
        "a ts beyond 64 bits",
        r#"{"a": 1, "ts": 18446744073709551615}"#,
        r#"field "ts": expected milliseconds since the epoch between 1970-01-01 and 3000-01-01, got 18446744073709551615"#,
    ),
    (
        "a ts as a string",
        r#"{"a": 1, "ts": "2024-01-01T00:00:00Z"}"#,
        r#"field "ts": expected milliseconds since the epoch as a number, got a string"#,
    ),
    (
        "a ts beyond the float range",
        r#"{"a": 1, "ts": 1e999}"#,
        r#"field "ts": expected a number within the range of a 64-bit float, got a larger one"#,
    ),
    (
        "milliseconds in the seconds field",
        r#"{"a": 1, "timestamp": 1700000000000}"#,
        r#"field "timestamp": expected seconds since the epoch between 1970-01-01 and 3000-01-01, got 1700000000000"#,
    ),
    (
        "a huge fractional timestamp",
        r#"{"a": 1, "timestamp": 1e300}"#,
        r#"field "timestamp": expected seconds since the epoch between 1970-01-01 and 3000-01-01, got 1e300"#,
    ),
    (
        "a timestamp as a boolean",
        r#"{"a": 1, "timestamp": true}"#,
        r#"field "timestamp": expected seconds since the epoch as a number, got a boolean"#,
    ),
    (
        "a device_id that is not a string",
        r#"{"device_id": 42, "a": 1}"#,
        r#"field "device_id": expected the device id as a string, got a number"#,
    ),
    (
        "rows naming different devices",
        r#"[{"device_id": "d1", "a": 1}, {"device_id": "d2", "a": 2}]"#,
        r#"row 2: field "device_id": expected the device of row 1 ("d1"), got "d2""#,
    ),
    (
        "a device_id twice in a row",
        r#"{"device_id": "d1", "device_id": "d1", "a": 1}"#,
        r#"field "device_id": expected once, got it twice"#,
    ),
    (
        "a row that is not an object",
        r#"[{"a": 1}, 5]"#,
        "row 2: expected an object of fields, got a number",
    ),
    (
        "an array of arrays",
        "[[1, 2]]",
        "row 1: expected an object of fields, got an array",
    ),
    (
        "a string payload",
        r#""hello""#,
        "expected a JSON object of fields or an array of objects, got a string",
    ),
    (
        "a number payload",
        "21.5",
        "expected a JSON object of fields or an array of objects, got a number",
    ),
    (
        "a null payload",
        "null",
        "expected a JSON object of fields or an array of objects, got null",
    ),
    (
        "a syntax error",
        r#"{"a": }"#,
        "not valid JSON at line 1 column 7: expected value",
    ),
    (
        "a syntax error on a later line",
        "{\n  \"a\": 1,\n  \"b\" 2\n}",
        "not valid JSON at line 3 column 7: expected `:`",
    ),
    (
        "text after the object",
        r#"{"a": 1} x"#,
        "not valid JSON at line 1 column 10: trailing characters",
    ),
    (
        "two objects",
        r#"{"a": 1}{"a": 2}"#,
        "not valid JSON at line 1 column 9: trailing characters",
    ),
    (
        "a trailing comma",
        r#"{"a": 1,}"#,
        "not valid JSON at line 1 column 9: trailing comma",
    ),
    (
        "NaN, which JSON lacks",
        r#"{"a": NaN}"#,
        "not valid JSON at line 1 column 7: expected value",
    ),
    (
        "an empty payload",
        "",
        "not valid JSON at line 1 column 0: EOF while parsing a value",
    ),
    (
        "a truncated payload",
        r#"{"a": 1"#,
        "not valid JSON at line 1 column 7: EOF while parsing an object",
    ),
    (
        "a number beyond the float range outside any field",
        "[1e400]",
        "not valid JSON at line 1 column 6: number out of range",
    ),
];

#[test]
fn rejected_payloads_say_what_was_expected_and_what_came() {
    for (behaviour, payload, expected) in REJECTED {
        assert_eq!(&error(payload), expected, "{behaviour}");
    }
}

#[test]
fn invalid_utf8_is_not_valid_json() {
    let error = parse_telemetry(
        b"{\"a\xff\": 1}",
        Timestamp::from_millis(RECEIVED_AT),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "not valid JSON at line 1 column 4: invalid unicode code point"
    );
}

#[test]
fn flat_form_reports_its_device_id() {
    let telemetry =
        parse(r#"{"device_id": "sensor-1", "temperature": 21.5, "timestamp": 1700000000}"#)
            .unwrap();
    assert_eq!(telemetry.device_id.as_deref(), Some("sensor-1"));
    let telemetry = parse(r#"[{"a": 1}, {"device_id": "sensor-2", "a": 2}]"#).unwrap();
    assert_eq!(telemetry.device_id.as_deref(), Some("sensor-2"));
    assert_eq!(parse(r#"{"a": 1}"#).unwrap().device_id, None);
}

#[test]
fn names_without_escapes_are_borrowed_from_the_payload() {
    let payload = r#"{"device_id": "sensor-1", "temperature": 21.5, "gps": {"lat": 1}, "a\"b": 2}"#;
    let telemetry = parse(payload).unwrap();
    let is_borrowed: Vec<bool> = telemetry
        .fields
        .iter()
        .map(|field| matches!(field.name, std::borrow::Cow::Borrowed(_)))
        .collect();
    assert_eq!(is_borrowed, [true, false, false]);
    assert!(matches!(
        telemetry.device_id,
        Some(std::borrow::Cow::Borrowed("sensor-1"))
    ));
}

#[test]
fn fields_become_store_points_of_the_callers_device() {
    let telemetry = parse(r#"{"ts": 1700000000500, "temperature": 21.5, "door": true}"#).unwrap();
    let points: Vec<Point<'_>> = telemetry.points("sensor-1").collect();
    let at = Timestamp::from_millis(1_700_000_000_500);
    assert_eq!(
        points,
        [
            Point::new("sensor-1", "temperature", at, 21.5),
            Point::new("sensor-1", "door", at, 1.0),
        ]
    );
}

#[test]
fn names_up_to_1024_bytes_are_accepted_and_longer_ones_rejected() {
    let longest = "n".repeat(MAX_NAME_LEN);
    let payload = format!(r#"{{"{longest}": 1}}"#);
    assert_eq!(parse(&payload).unwrap().fields[0].name, longest);

    let too_long = "n".repeat(MAX_NAME_LEN + 1);
    let payload = format!(r#"{{"{too_long}": 1}}"#);
    assert_eq!(
        error(&payload),
        format!(
            r#"field "{}…": expected a name of at most 1024 bytes, got 1025 bytes"#,
            "n".repeat(64)
        )
    );

    // Flattening counts: 1020 + "." + 4 bytes.
    let prefix = "p".repeat(1020);
    let payload = format!(r#"{{"{prefix}": {{"abcd": 1}}}}"#);
    assert!(
        error(&payload).ends_with("expected a name of at most 1024 bytes, got 1025 bytes"),
        "{}",
        error(&payload)
    );
}

fn row_of(fields: usize) -> String {
    let fields: Vec<String> = (0..fields)
        .map(|index| format!("\"f{index}\": 1"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

#[test]
fn a_row_has_at_most_1000_fields_by_default() {
    assert_eq!(parse(&row_of(1000)).unwrap().fields.len(), 1000);
    assert_eq!(
        error(&row_of(1001)),
        "expected at most 1000 fields, got more"
    );
    let array = format!("[{}, {}]", row_of(1), row_of(1001));
    assert_eq!(
        error(&array),
        "row 2: expected at most 1000 fields, got more"
    );
}

#[test]
fn an_array_has_at_most_10000_rows_by_default() {
    let rows = |count: usize| format!("[{}]", vec![r#"{"a": 1}"#; count].join(","));
    assert_eq!(parse(&rows(10_000)).unwrap().fields.len(), 10_000);
    assert_eq!(
        error(&rows(10_001)),
        "expected at most 10000 rows, got more"
    );
}

#[test]
fn limits_are_configurable() {
    let limits = Limits {
        max_fields_per_row: 2,
        max_rows: 2,
        max_depth: 2,
        earliest: Timestamp::from_millis(1_000),
        latest: Timestamp::from_millis(86_400_000 + 1),
    };
    let parse = |payload: &str| {
        parse_telemetry(payload.as_bytes(), Timestamp::from_millis(5_000), &limits)
            .map(|telemetry| fields(&telemetry))
            .map_err(|error| error.to_string())
    };
    assert_eq!(
        parse(r#"{"a": 1, "b": {"c": 2}}"#),
        Ok(vec![("a".into(), 5_000, 1.0), ("b.c".into(), 5_000, 2.0)])
    );
    assert_eq!(
        parse(r#"{"a": 1, "b": 2, "c": 3}"#),
        Err("expected at most 2 fields, got more".into())
    );
    assert_eq!(
        parse(r#"[{"a": 1}, {"a": 1}, {"a": 1}]"#),
        Err("expected at most 2 rows, got more".into())
    );
    assert_eq!(
        parse(r#"{"b": {"c": {"d": 2}}}"#),
        Err(r#"field "b.c": expected a number or boolean, got an object nested deeper than 2 levels"#.into())
    );
    assert_eq!(
        parse(r#"{"a": 1, "ts": 999}"#),
        Err(r#"field "ts": expected milliseconds since the epoch between 1970-01-01T00:00:01.000Z and 1970-01-02T00:00:00.001Z, got 999"#.into())
    );
}

#[test]
fn errors_map_to_bad_request_and_payload_format_invalid() {
    let error = parse(r#"{"a": "x"}"#).unwrap_err();
    assert_eq!(error.http_status(), 400);
    assert_eq!(error.mqtt_reason_code(), 0x99);
    assert_eq!(
        error,
        Error::InvalidField {
            row: None,
            name: "a".into(),
            detail: "expected a number or boolean, got a string".into()
        }
    );
}
