//! Commands: platform → device requests. Their lifecycle ([`CommandStatus`]), the stored
//! [`Command`], what sending one takes ([`NewCommand`]) and the checks of command names
//! and parameters (shared with rules' command actions).

use std::fmt;

use fleetwire_time::TimestampMs;

use crate::error::Error;
use crate::id::{CommandId, DeviceId};
use crate::name::check_plain_name;

/// Largest command parameters (or result), as JSON.
pub const MAX_COMMAND_JSON_BYTES: usize = 64 * 1024;

/// Where a command is: pending → delivered → succeeded | failed, or expired when no
/// result came before its deadline. The last three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    /// Created, not yet handed to the device.
    Pending,
    /// Handed to the device, no result yet.
    Delivered,
    /// The device reported success.
    Succeeded,
    /// The device reported an error.
    Failed,
    /// No result came before the deadline.
    Expired,
}

impl CommandStatus {
    /// `pending`, `delivered`, `succeeded`, `failed` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Delivered => "delivered",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::Expired => "expired",
        }
    }

    /// Parses `pending`, `delivered`, `succeeded`, `failed` or `expired`.
    pub fn parse(text: &str) -> Result<CommandStatus, Error> {
        match text {
            "pending" => Ok(CommandStatus::Pending),
            "delivered" => Ok(CommandStatus::Delivered),
            "succeeded" => Ok(CommandStatus::Succeeded),
            "failed" => Ok(CommandStatus::Failed),
            "expired" => Ok(CommandStatus::Expired),
            other => Err(Error::Invalid(format!(
                "command status {other:?}: expected pending, delivered, succeeded, failed or expired"
            ))),
        }
    }

    /// Whether the command is over: succeeded, failed or expired.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandStatus::Succeeded | CommandStatus::Failed | CommandStatus::Expired
        )
    }
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request from the platform to a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Its id (also the last level of its MQTT topic).
    pub id: CommandId,
    /// The device it is for.
    pub device_id: DeviceId,
    /// What to do.
    pub name: String,
    /// Parameters: a JSON object or null.
    pub params: serde_json::Value,
    /// Where it is.
    pub status: CommandStatus,
    /// What the device answered; `None` until it answered.
    pub result: Option<serde_json::Value>,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When its status last changed (`created_at` until then).
    pub updated_at: TimestampMs,
    /// Its deadline: a command still pending or delivered then expires.
    pub expires_at: TimestampMs,
    /// When it was handed to the device; `None` when it was not.
    pub delivered_at: Option<TimestampMs>,
    /// When it became final (succeeded, failed or expired).
    pub completed_at: Option<TimestampMs>,
}

/// What `create_command` needs.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// The device it is for (must exist).
    pub device_id: DeviceId,
    /// What to do: 1-128 characters of `[A-Za-z0-9_.-]`, so it is safe in a topic.
    pub name: String,
    /// Parameters: a JSON object or null, at most 64 KiB as JSON.
    pub params: serde_json::Value,
    /// How long the device has to answer, in milliseconds: 1 s to 7 days.
    pub timeout_ms: i64,
}

/// Shortest command timeout, in milliseconds.
pub const MIN_COMMAND_TIMEOUT_MS: i64 = 1000;
/// Longest command timeout, in milliseconds (7 days).
pub const MAX_COMMAND_TIMEOUT_MS: i64 = 7 * 24 * 3600 * 1000;

impl NewCommand {
    /// Checks the fields documented above; returns the parameters' JSON text to store.
    pub fn check(&self) -> Result<String, Error> {
        check_command_name(&self.name)?;
        if !(MIN_COMMAND_TIMEOUT_MS..=MAX_COMMAND_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(Error::Invalid(format!(
                "command timeout: expected {MIN_COMMAND_TIMEOUT_MS}-{MAX_COMMAND_TIMEOUT_MS} ms (1 s to 7 days), got {} ms",
                self.timeout_ms
            )));
        }
        command_params_json("command params", &self.params)
    }
}
/// Checks a command name: the syntax of ids, so it is safe as a topic level.
pub fn check_command_name(name: &str) -> Result<(), Error> {
    check_plain_name("command name", name)
}

/// Checks command parameters: a JSON object or null, at most 64 KiB; returns the JSON
/// text to store.
pub fn command_params_json(what: &str, params: &serde_json::Value) -> Result<String, Error> {
    if !(params.is_object() || params.is_null()) {
        return Err(Error::Invalid(format!(
            "{what}: expected a JSON object or null, got {}",
            json_kind(params)
        )));
    }
    bounded_json(what, params)
}

/// Checks that a JSON value takes at most 64 KiB as text; returns the text to store.
pub fn bounded_json(what: &str, value: &serde_json::Value) -> Result<String, Error> {
    let text = value.to_string();
    if text.len() > MAX_COMMAND_JSON_BYTES {
        return Err(Error::Invalid(format!(
            "{what}: expected at most {MAX_COMMAND_JSON_BYTES} bytes of JSON, got {}",
            text.len()
        )));
    }
    Ok(text)
}

/// `an array`, `a string`...: what a JSON value is, for messages.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
