//! Command responses (`devices/{id}/commands/{cmd}/response`):
//! `{"status": "ok" | "error", "result": any}`.

use serde_json::Value;

use crate::error::{Error, Quoted, Result};
use crate::json::{Kind, parse_value};

/// How the device says a command went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    /// `"ok"`: the command succeeded.
    Ok,
    /// `"error"`: the command failed; `result` usually says why.
    Error,
}

/// A device's answer to a command.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CommandResponse {
    /// Whether the command succeeded.
    pub status: CommandStatus,
    /// What the device returned, any JSON; `null` when the payload has no `result`.
    pub result: Value,
}

/// Parses a command response: an object with `status` (`"ok"` or `"error"`) and an
/// optional `result` of any kind, and no other key.
///
/// # Errors
///
/// [`Error::InvalidJson`] when the payload is not JSON; [`Error::InvalidShape`] when it is
/// not an object or has no `status`; [`Error::InvalidField`] for a bad `status` or a key
/// other than `status` and `result`.
pub fn parse_command_response(payload: &[u8]) -> Result<CommandResponse> {
    let object = match parse_value(payload)? {
        Value::Object(object) => object,
        other => {
            return Err(shape(format!(
                "expected a command response {{\"status\": \"ok\" or \"error\", \"result\": any}}, got {}",
                Kind::of(&other)
            )));
        }
    };
    let mut status = None;
    let mut result = Value::Null;
    for (key, value) in object {
        match key.as_str() {
            "status" => status = Some(parse_status(value)?),
            "result" => result = value,
            _ => {
                return Err(field(
                    &key,
                    "expected only \"status\" and \"result\" in a command response, got another key"
                        .to_owned(),
                ));
            }
        }
    }
    match status {
        Some(status) => Ok(CommandResponse { status, result }),
        None => Err(shape(
            "expected a \"status\" of \"ok\" or \"error\", got none".to_owned(),
        )),
    }
}

fn parse_status(value: Value) -> Result<CommandStatus> {
    match value {
        Value::String(status) if status == "ok" => Ok(CommandStatus::Ok),
        Value::String(status) if status == "error" => Ok(CommandStatus::Error),
        Value::String(status) => Err(field(
            "status",
            format!("expected \"ok\" or \"error\", got {}", Quoted(&status)),
        )),
        other => Err(field(
            "status",
            format!("expected \"ok\" or \"error\", got {}", Kind::of(&other)),
        )),
    }
}

fn shape(detail: String) -> Error {
    Error::InvalidShape { row: None, detail }
}

fn field(name: &str, detail: String) -> Error {
    Error::InvalidField {
        row: None,
        name: crate::error::cut_name(name),
        detail,
    }
}
