//! The registry's domain types, validated in their constructors (`DeviceId`, `Role`) or
//! before anything is written (`NewDevice`, `DevicePatch`, `NewToken`).

use std::collections::BTreeMap;
use std::fmt;

use crate::Error;

/// Milliseconds since the Unix epoch.
pub type TimestampMs = i64;

/// Labels of a device: key → value.
pub type Labels = BTreeMap<String, String>;

/// A device id: 1-128 characters of `[A-Za-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(String);

impl DeviceId {
    /// Checks the syntax.
    pub fn new(id: impl Into<String>) -> Result<DeviceId, Error> {
        let id = id.into();
        let valid = (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(DeviceId(id))
        } else {
            Err(Error::Invalid(format!(
                "device id {id:?}: expected 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'"
            )))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Its id (also its MQTT user name).
    pub id: DeviceId,
    /// Human-readable name (empty when not given).
    pub name: String,
    /// Device type (empty when not given), e.g. `sensor`.
    pub device_type: String,
    /// Free-form labels.
    pub labels: Labels,
    /// When it was registered.
    pub created_at: TimestampMs,
    /// Whether it is connected to the broker now.
    pub online: bool,
    /// When it last connected or disconnected; `None` when never seen.
    pub last_seen: Option<TimestampMs>,
    /// Attributes the device reported, merged.
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Whether the device has credentials.
    pub has_credentials: bool,
}

/// What `create_device` needs.
#[derive(Debug, Clone, Default)]
pub struct NewDevice {
    /// Chosen id; generated when `None`.
    pub id: Option<DeviceId>,
    /// Name (at most 256 characters).
    pub name: Option<String>,
    /// Type (at most 64 characters).
    pub device_type: Option<String>,
    /// Labels (at most 64; keys 1-64, values at most 256 characters).
    pub labels: Labels,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct DevicePatch {
    /// New name.
    pub name: Option<String>,
    /// New type.
    pub device_type: Option<String>,
    /// New labels (replacing all).
    pub labels: Option<Labels>,
}

/// Which devices to list, and which page.
#[derive(Debug, Clone)]
pub struct DeviceFilter {
    /// Only devices of this type.
    pub device_type: Option<String>,
    /// Only devices having all these labels.
    pub labels: Labels,
    /// Page size (1-1000).
    pub limit: u32,
    /// Continue after this cursor (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
}

impl Default for DeviceFilter {
    fn default() -> Self {
        DeviceFilter {
            device_type: None,
            labels: Labels::new(),
            limit: 100,
            cursor: None,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read only.
    Viewer,
    /// Read, manage devices, credentials, rules, alarms, commands.
    Operator,
    /// Everything, including tokens.
    Admin,
}

impl Role {
    /// `admin`, `operator` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses `admin`, `operator` or `viewer`.
    pub fn parse(text: &str) -> Result<Role, Error> {
        match text {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(Error::Invalid(format!(
                "role {other:?}: expected admin, operator or viewer"
            ))),
        }
    }
}

/// A token's id (not the secret).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenId(pub String);

/// An API token's metadata (never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Its id.
    pub id: TokenId,
    /// Name given at creation (`bootstrap` for the admin token of the data dir).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was created.
    pub created_at: TimestampMs,
}

/// What `create_token` needs.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Name (1-128 characters).
    pub name: String,
    /// Role.
    pub role: Role,
}

/// Longest device name, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 256;
/// Longest device type, in characters.
pub(crate) const MAX_TYPE_CHARS: usize = 64;
/// Most labels on one device (and in one filter).
pub(crate) const MAX_LABELS: usize = 64;
/// Longest label key, in characters.
pub(crate) const MAX_LABEL_KEY_CHARS: usize = 64;
/// Longest label value, in characters.
pub(crate) const MAX_LABEL_VALUE_CHARS: usize = 256;
/// Longest token name, in characters.
pub(crate) const MAX_TOKEN_NAME_CHARS: usize = 128;

/// Checks a free-text field: at most `max` characters, none of them control characters
/// (PostgreSQL refuses NUL in text, and a newline in a name only breaks displays).
pub(crate) fn check_text(what: &str, value: &str, min: usize, max: usize) -> Result<(), Error> {
    let chars = value.chars().count();
    if chars < min || chars > max {
        let expected = if min == 0 {
            format!("at most {max}")
        } else {
            format!("{min}-{max}")
        };
        return Err(Error::Invalid(format!(
            "{what}: expected {expected} characters, got {chars}"
        )));
    }
    if let Some(control) = value.chars().find(|c| c.is_control()) {
        return Err(Error::Invalid(format!(
            "{what}: expected no control characters, got {control:?}"
        )));
    }
    Ok(())
}

/// Checks the number of labels and the size of each key and value.
pub(crate) fn check_labels(labels: &Labels) -> Result<(), Error> {
    if labels.len() > MAX_LABELS {
        return Err(Error::Invalid(format!(
            "labels: expected at most {MAX_LABELS}, got {}",
            labels.len()
        )));
    }
    for (key, value) in labels {
        check_text("label key", key, 1, MAX_LABEL_KEY_CHARS)?;
        check_text(
            &format!("label {key:?} value"),
            value,
            0,
            MAX_LABEL_VALUE_CHARS,
        )?;
    }
    Ok(())
}

impl NewDevice {
    /// Checks the sizes documented on the fields.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some(name) = &self.name {
            check_text("device name", name, 0, MAX_NAME_CHARS)?;
        }
        if let Some(device_type) = &self.device_type {
            check_text("device type", device_type, 0, MAX_TYPE_CHARS)?;
        }
        check_labels(&self.labels)
    }
}

impl DevicePatch {
    /// Checks the sizes documented on `NewDevice`.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some(name) = &self.name {
            check_text("device name", name, 0, MAX_NAME_CHARS)?;
        }
        if let Some(device_type) = &self.device_type {
            check_text("device type", device_type, 0, MAX_TYPE_CHARS)?;
        }
        if let Some(labels) = &self.labels {
            check_labels(labels)?;
        }
        Ok(())
    }
}

impl NewToken {
    /// Checks the name: 1-128 characters, and not the name reserved for the bootstrap token.
    pub(crate) fn check(&self) -> Result<(), Error> {
        check_text("token name", &self.name, 1, MAX_TOKEN_NAME_CHARS)?;
        if self.name == BOOTSTRAP_TOKEN_NAME {
            return Err(Error::Invalid(format!(
                "token name {BOOTSTRAP_TOKEN_NAME:?}: reserved for the data dir's admin token, expected another name"
            )));
        }
        Ok(())
    }
}

/// Name of the bootstrap admin token.
pub(crate) const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";
