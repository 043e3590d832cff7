//! Attributes and command responses: the JSON documents that are not time series.

use fleetwire_formats::{CommandStatus, parse_attributes, parse_command_response};
use serde_json::json;

#[test]
fn attributes_are_an_object_of_any_values() {
    let attributes = parse_attributes(
        br#"{"firmware": "1.2.3", "location": {"room": "kitchen"}, "slots": [1, 2], "rssi": -61, "ok": true, "none": null}"#,
    )
    .unwrap();
    assert_eq!(
        serde_json::Value::Object(attributes),
        json!({"firmware": "1.2.3", "location": {"room": "kitchen"}, "slots": [1, 2], "rssi": -61, "ok": true, "none": null})
    );
    assert!(parse_attributes(b"{}").unwrap().is_empty());
}

#[test]
fn attributes_that_are_not_an_object_are_rejected() {
    for (payload, expected) in [
        (
            "[1, 2]",
            "expected a JSON object of attributes, got an array",
        ),
        (
            r#""on""#,
            "expected a JSON object of attributes, got a string",
        ),
        ("null", "expected a JSON object of attributes, got null"),
        (
            r#"{"a": 1"#,
            "not valid JSON at line 1 column 7: EOF while parsing an object",
        ),
        (
            "",
            "not valid JSON at line 1 column 0: EOF while parsing a value",
        ),
    ] {
        assert_eq!(
            parse_attributes(payload.as_bytes())
                .unwrap_err()
                .to_string(),
            expected,
            "{payload}"
        );
    }
}

#[test]
fn command_responses_have_a_status_and_any_result() {
    let response =
        parse_command_response(br#"{"status": "ok", "result": {"rebooted": true}}"#).unwrap();
    assert_eq!(response.status, CommandStatus::Ok);
    assert_eq!(response.result, json!({"rebooted": true}));

    let response =
        parse_command_response(br#"{"result": "no such valve", "status": "error"}"#).unwrap();
    assert_eq!(response.status, CommandStatus::Error);
    assert_eq!(response.result, json!("no such valve"));
}

#[test]
fn a_command_response_without_result_has_a_null_result() {
    let response = parse_command_response(br#"{"status": "ok"}"#).unwrap();
    assert_eq!(response.status, CommandStatus::Ok);
    assert_eq!(response.result, serde_json::Value::Null);
}

#[test]
fn malformed_command_responses_are_rejected() {
    for (payload, expected) in [
        (
            r#"{"status": "done"}"#,
            r#"field "status": expected "ok" or "error", got "done""#,
        ),
        (
            r#"{"status": "OK"}"#,
            r#"field "status": expected "ok" or "error", got "OK""#,
        ),
        (
            r#"{"status": true}"#,
            r#"field "status": expected "ok" or "error", got a boolean"#,
        ),
        (
            r#"{"result": 1}"#,
            r#"expected a "status" of "ok" or "error", got none"#,
        ),
        (
            r#"{"status": "ok", "result": 1, "id": 7}"#,
            r#"field "id": expected only "status" and "result" in a command response, got another key"#,
        ),
        (
            "[]",
            r#"expected a command response {"status": "ok" or "error", "result": any}, got an array"#,
        ),
        ("ok", "not valid JSON at line 1 column 1: expected value"),
    ] {
        assert_eq!(
            parse_command_response(payload.as_bytes())
                .unwrap_err()
                .to_string(),
            expected,
            "{payload}"
        );
    }
}
