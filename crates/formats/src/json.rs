//! What the JSON formats share: naming the kind of a JSON value in messages, and turning
//! `serde_json`'s syntax errors into [`Error::InvalidJson`].

use std::fmt;

use serde_json::Value;

use crate::error::Error;

/// The kind of a JSON value, as error messages name it ("got a string").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Number,
    Boolean,
    Null,
    Array,
    Object,
}

impl Kind {
    pub(crate) fn of(value: &Value) -> Kind {
        match value {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Boolean,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Boolean => "a boolean",
            Kind::Null => "null",
            Kind::Array => "an array",
            Kind::Object => "an object",
        })
    }
}

/// `not valid JSON at line 1 column 9: expected value`: `serde_json`'s message without the
/// position it appends, which the error carries in its own fields.
pub(crate) fn invalid_json(error: &serde_json::Error) -> Error {
    let (line, column) = (error.line(), error.column());
    let message = error.to_string();
    let suffix = format!(" at line {line} column {column}");
    let reason = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
    Error::InvalidJson {
        line,
        column,
        reason,
    }
}

/// Parses `payload` as one JSON value.
pub(crate) fn parse_value(payload: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(payload).map_err(|error| invalid_json(&error))
}
