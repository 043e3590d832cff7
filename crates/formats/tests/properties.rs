//! Properties: random points written as line protocol or JSON (by the test's own
//! serializers) parse back to the same points; arbitrary bytes never make a parser panic,
//! and whatever a parser accepts is storable.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fleetwire_formats::{
    Error, Limits, Precision, parse_attributes, parse_command_response, parse_line_protocol,
    parse_telemetry,
};
use fleetwire_store::{MAX_NAME_LEN, Timestamp};
use proptest::prelude::*;

const RECEIVED_AT: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const YEAR_3000_MS: i64 = 32_503_680_000_000;

/// A name of characters that need escapes in line protocol (`,`, ` `, `=`), a backslash,
/// quotes, `#` and non-ASCII. A backslash may not end a name: line protocol cannot write
/// that (the backslash would escape the separator after it).
fn name() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[a-zA-Z0-9_.,= "\\#é€-]{1,12}"#)
        .expect("a valid regex")
        .prop_map(|mut name| {
            if name.ends_with('\\') {
                name.push('x');
            }
            name
        })
}

/// A measurement also may not start with `#`, which would make the line a comment.
fn measurement() -> impl Strategy<Value = String> {
    name().prop_map(|name| {
        if name.starts_with('#') {
            format!("m{name}")
        } else {
            name
        }
    })
}

#[derive(Debug, Clone)]
enum FieldValue {
    Float(f64),
    Integer(i64),
    Unsigned(u64),
    Boolean(bool, &'static str),
    Text(String),
}

impl FieldValue {
    fn number(&self) -> Option<f64> {
        match self {
            FieldValue::Float(float) => Some(*float),
            FieldValue::Integer(integer) => Some(*integer as f64),
            FieldValue::Unsigned(unsigned) => Some(*unsigned as f64),
            FieldValue::Boolean(boolean, _) => Some(if *boolean { 1.0 } else { 0.0 }),
            FieldValue::Text(_) => None,
        }
    }
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |float| float.is_finite())
            .prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Integer),
        any::<u64>().prop_map(FieldValue::Unsigned),
        prop::sample::select(vec![
            (true, "t"),
            (true, "T"),
            (true, "true"),
            (true, "True"),
            (true, "TRUE"),
            (false, "f"),
            (false, "F"),
            (false, "false"),
            (false, "False"),
            (false, "FALSE"),
        ])
        .prop_map(|(boolean, text)| FieldValue::Boolean(boolean, text)),
        proptest::string::string_regex(r#"[a-z "\\,=\n]{0,10}"#)
            .expect("a valid regex")
            .prop_map(FieldValue::Text),
    ]
}

#[derive(Debug, Clone)]
struct Line {
    measurement: String,
    device: Option<String>,
    tags: Vec<(String, String)>,
    fields: Vec<(String, FieldValue)>,
    /// Milliseconds, and the extra sub-millisecond part in the precision's unit.
    timestamp: Option<(i64, i64)>,
}

fn line() -> impl Strategy<Value = Line> {
    (
        measurement(),
        proptest::option::of(name()),
        prop::collection::vec((name(), name()), 0..3),
        prop::collection::vec((name(), field_value()), 1..5),
        proptest::option::of((0..=YEAR_3000_MS, 0i64..1_000_000)),
    )
        .prop_map(|(measurement, device, tags, fields, timestamp)| Line {
            measurement,
            device,
            // A random tag called `device` would change the expected device.
            tags: tags
                .into_iter()
                .filter(|(key, _)| key != "device")
                .collect(),
            fields,
            timestamp,
        })
}

fn escape_name(name: &str, out: &mut String) {
    for character in name.chars() {
        if matches!(character, ',' | ' ' | '=') {
            out.push('\\');
        }
        out.push(character);
    }
}

/// Writes `lines` as line protocol in `precision`, with CRLF or LF line ends, comments and
/// blank lines, as a client might; returns the body and the 1-based line of each point line.
fn write_line_protocol(
    lines: &[Line],
    precision: Precision,
    use_crlf: bool,
) -> (String, Vec<usize>) {
    let end = if use_crlf { "\r\n" } else { "\n" };
    let mut body = String::new();
    let mut line_numbers = Vec::new();
    let mut line_number = 1;
    for (index, line) in lines.iter().enumerate() {
        if index % 3 == 1 {
            body.push_str("# a comment, with = and \"quotes\"");
            body.push_str(end);
            body.push_str(end);
            line_number += 2;
        }
        line_numbers.push(line_number);
        escape_name(&line.measurement, &mut body);
        let mut tags = line.tags.clone();
        if let Some(device) = &line.device {
            tags.push(("device".to_owned(), device.clone()));
        }
        for (key, value) in &tags {
            body.push(',');
            escape_name(key, &mut body);
            body.push('=');
            escape_name(value, &mut body);
        }
        for (index, (key, value)) in line.fields.iter().enumerate() {
            body.push(if index == 0 { ' ' } else { ',' });
            escape_name(key, &mut body);
            body.push('=');
            match value {
                FieldValue::Float(float) => write!(body, "{float:?}").expect("write to a String"),
                FieldValue::Integer(integer) => {
                    write!(body, "{integer}i").expect("write to a String")
                }
                FieldValue::Unsigned(unsigned) => {
                    write!(body, "{unsigned}u").expect("write to a String")
                }
                FieldValue::Boolean(_, text) => body.push_str(text),
                FieldValue::Text(text) => {
                    body.push('"');
                    body.push_str(&text.replace('\\', r"\\").replace('"', r#"\""#));
                    body.push('"');
                    line_number += text.matches('\n').count();
                }
            }
        }
        if let Some((millis, extra)) = line.timestamp {
            let millis = representable_millis(millis, precision);
            let timestamp = match precision {
                Precision::Nanoseconds => millis * 1_000_000 + extra,
                Precision::Microseconds => millis * 1_000 + extra % 1_000,
                Precision::Milliseconds => millis,
                Precision::Seconds => millis / 1_000,
            };
            write!(body, " {timestamp}").expect("write to a String");
        }
        body.push_str(end);
        line_number += 1;
    }
    (body, line_numbers)
}

/// Nanoseconds since the epoch in an `i64` end in 2262: later times wrap into range.
fn representable_millis(millis: i64, precision: Precision) -> i64 {
    match precision {
        Precision::Nanoseconds => millis % (i64::MAX / 1_000_000),
        _ => millis,
    }
}

fn expected_millis(millis: i64, precision: Precision) -> i64 {
    let millis = representable_millis(millis, precision);
    match precision {
        Precision::Seconds => millis / 1_000 * 1_000,
        _ => millis,
    }
}

fn precision() -> impl Strategy<Value = Precision> {
    prop::sample::select(vec![
        Precision::Nanoseconds,
        Precision::Microseconds,
        Precision::Milliseconds,
        Precision::Seconds,
    ])
}

/// Every message is non-empty and has no trailing period, as the house style asks.
fn assert_well_worded(error: &Error) {
    let message = error.to_string();
    assert!(!message.is_empty());
    assert!(!message.ends_with('.'), "{message}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn line_protocol_round_trips(
        lines in prop::collection::vec(line(), 1..8),
        precision in precision(),
        use_crlf in any::<bool>(),
    ) {
        let (body, line_numbers) = write_line_protocol(&lines, precision, use_crlf);
        let batch = parse_line_protocol(body.as_bytes(), precision, RECEIVED_AT, &Limits::default())
            .map_err(|error| TestCaseError::fail(format!("{error} in {body:?}")))?;

        let mut expected = Vec::new();
        let mut expected_skipped = Vec::new();
        for (line, line_number) in lines.iter().zip(&line_numbers) {
            let device = line.device.as_ref().unwrap_or(&line.measurement);
            let timestamp = line
                .timestamp
                .map_or(RECEIVED_AT.as_millis(), |(millis, _)| expected_millis(millis, precision));
            let mut skipped = Vec::new();
            for (key, value) in &line.fields {
                match value.number() {
                    Some(number) => expected.push((device.clone(), key.clone(), timestamp, number.to_bits())),
                    None => skipped.push(key.clone()),
                }
            }
            if !skipped.is_empty() {
                let count = skipped.len();
                skipped.truncate(3);
                expected_skipped.push((*line_number, count, skipped));
            }
        }
        let parsed: Vec<(String, String, i64, u64)> = batch
            .points
            .iter()
            .map(|point| (point.device.to_string(), point.field.to_string(), point.timestamp.as_millis(), point.value.to_bits()))
            .collect();
        prop_assert_eq!(parsed, expected, "body {:?}", body);
        let skipped: Vec<(usize, usize, Vec<String>)> = batch
            .skipped
            .iter()
            .map(|line| (line.line, line.count, line.names.iter().map(|name| name.to_string()).collect()))
            .collect();
        prop_assert_eq!(skipped, expected_skipped, "body {:?}", body);
    }

    #[test]
    fn json_telemetry_round_trips(
        rows in prop::collection::vec(
            (
                prop::collection::btree_map(
                    "[a-zA-Z0-9_ \"\\\\é-]{1,10}",
                    prop_oneof![
                        any::<f64>().prop_filter("finite", |float| float.is_finite()).prop_map(serde_json::Value::from),
                        any::<i64>().prop_map(serde_json::Value::from),
                        any::<u64>().prop_map(serde_json::Value::from),
                        any::<bool>().prop_map(serde_json::Value::from),
                    ],
                    1..6,
                ),
                proptest::option::of(0..=YEAR_3000_MS),
            ),
            1..5,
        ),
        is_array in any::<bool>(),
    ) {
        // The metadata keys are not fields.
        let rows: Vec<(BTreeMap<String, serde_json::Value>, Option<i64>)> = rows
            .into_iter()
            .map(|(mut fields, ts)| {
                fields.retain(|key, _| !matches!(key.as_str(), "ts" | "timestamp" | "device_id"));
                fields.entry("f".to_owned()).or_insert(serde_json::Value::from(1));
                (fields, ts)
            })
            .collect();
        let rows = if is_array { rows } else { rows[..1].to_vec() };
        let objects: Vec<serde_json::Value> = rows
            .iter()
            .map(|(fields, ts)| {
                let mut object: serde_json::Map<String, serde_json::Value> =
                    fields.iter().map(|(key, value)| (key.clone(), value.clone())).collect();
                if let Some(ts) = ts {
                    object.insert("ts".to_owned(), serde_json::Value::from(*ts));
                }
                serde_json::Value::Object(object)
            })
            .collect();
        let payload = if is_array {
            serde_json::to_vec(&objects)
        } else {
            serde_json::to_vec(&objects[0])
        }
        .expect("serialize");

        let telemetry = parse_telemetry(&payload, RECEIVED_AT, &Limits::default())
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        let mut expected = Vec::new();
        for (fields, ts) in &rows {
            for (key, value) in fields {
                let number = match value {
                    serde_json::Value::Bool(boolean) => if *boolean { 1.0 } else { 0.0 },
                    other => other.as_f64().expect("numbers only"),
                };
                expected.push((key.clone(), ts.unwrap_or(RECEIVED_AT.as_millis()), number.to_bits()));
            }
        }
        let parsed: Vec<(String, i64, u64)> = telemetry
            .fields
            .iter()
            .map(|field| (field.name.to_string(), field.timestamp.as_millis(), field.value.to_bits()))
            .collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_input_is_storable(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        precision in precision(),
    ) {
        check_every_parser(&bytes, precision);
    }

    #[test]
    fn line_protocol_like_text_never_panics(
        text in r#"[a-z0-9,= "\\#\n\r\t.\-+eEiutTfF]{0,80}"#,
        precision in precision(),
    ) {
        check_every_parser(text.as_bytes(), precision);
    }

    #[test]
    fn json_like_text_never_panics(
        text in r#"[{}\[\]":,a-z0-9.\-eE \\]{0,80}"#,
    ) {
        check_every_parser(text.as_bytes(), Precision::Nanoseconds);
    }
}

/// Runs every parser on `bytes`: none panics, every error is well worded, and everything
/// accepted is what the store takes (names of 1 to 1024 bytes, finite values, timestamps
/// in range).
fn check_every_parser(bytes: &[u8], precision: Precision) {
    let limits = Limits::default();
    let is_storable = |name: &str, timestamp: Timestamp, value: f64| {
        !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && value.is_finite()
            && (timestamp == RECEIVED_AT || (0..=YEAR_3000_MS).contains(&timestamp.as_millis()))
    };
    match parse_telemetry(bytes, RECEIVED_AT, &limits) {
        Ok(telemetry) => {
            assert!(!telemetry.fields.is_empty());
            for field in &telemetry.fields {
                assert!(
                    is_storable(&field.name, field.timestamp, field.value),
                    "{field:?}"
                );
            }
        }
        Err(error) => assert_well_worded(&error),
    }
    match parse_line_protocol(bytes, precision, RECEIVED_AT, &limits) {
        Ok(batch) => {
            for point in &batch.points {
                assert!(!point.device.is_empty() && point.device.len() <= MAX_NAME_LEN);
                assert!(
                    is_storable(&point.field, point.timestamp, point.value),
                    "{point:?}"
                );
            }
        }
        Err(error) => assert_well_worded(&error),
    }
    if let Err(error) = parse_attributes(bytes) {
        assert_well_worded(&error);
    }
    if let Err(error) = parse_command_response(bytes) {
        assert_well_worded(&error);
    }
}
