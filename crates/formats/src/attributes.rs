//! Device attributes (`devices/{id}/attributes`): a JSON object of any values, which the
//! registry merges into the device's reported attributes.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::json::{Kind, parse_value};

/// Parses an attributes payload: a JSON object, with values of any kind.
///
/// # Errors
///
/// [`Error::InvalidJson`] when the payload is not JSON, [`Error::InvalidShape`] when it is
/// not an object (`expected a JSON object of attributes, got an array`).
pub fn parse_attributes(payload: &[u8]) -> Result<Map<String, Value>> {
    match parse_value(payload)? {
        Value::Object(attributes) => Ok(attributes),
        other => Err(Error::InvalidShape {
            row: None,
            detail: format!(
                "expected a JSON object of attributes, got {}",
                Kind::of(&other)
            ),
        }),
    }
}
