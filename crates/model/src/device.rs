//! Devices: the registered [`Device`], what creating ([`NewDevice`]) and changing
//! ([`DevicePatch`]) one takes, listing filters, and [`DeviceInfo`], what ingest and the
//! rules need to know of a device on their hot paths.

use std::collections::BTreeMap;

use fleetwire_time::TimestampMs;

use crate::error::Error;
use crate::id::DeviceId;
use crate::name::check_text;

/// Labels of a device: key → value.
pub type Labels = BTreeMap<String, String>;

/// Longest device name, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest device type, in characters.
pub const MAX_TYPE_CHARS: usize = 64;
/// Most labels on one device (and in one filter).
pub const MAX_LABELS: usize = 64;
/// Longest label key, in characters.
pub const MAX_LABEL_KEY_CHARS: usize = 64;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE_CHARS: usize = 256;

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
    /// The last payload of the device that ingest rejected, as last written (ingest
    /// errors are written in batches, like presence).
    pub last_ingest_error: Option<IngestErrorRecord>,
}

/// A rejected payload of a device, and why: what `Registry::record_ingest_error` keeps
/// per device, so it survives restarts and is seen by every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestErrorRecord {
    /// When it was rejected.
    pub at: TimestampMs,
    /// Where it came from (`mqtt`, `http`, `line_protocol`).
    pub source: String,
    /// Why, as the sender was told (at most [`IngestErrorRecord::MAX_MESSAGE_CHARS`]
    /// characters are kept).
    pub message: String,
}

impl IngestErrorRecord {
    /// Longest message kept; a longer one is cut and ends with `…`.
    pub const MAX_MESSAGE_CHARS: usize = 1000;
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
    /// Only devices whose id starts with this.
    pub prefix: Option<String>,
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
            prefix: None,
            limit: 100,
            cursor: None,
        }
    }
}

/// A device as ingest and the rules see it: its id, type and labels (which rules match
/// it). The platform caches one per known device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its id.
    pub id: DeviceId,
    /// Its type; empty when it has none.
    pub device_type: String,
    /// Its labels.
    pub labels: Labels,
}

impl DeviceInfo {
    /// A device without type or labels.
    pub fn new(id: DeviceId) -> DeviceInfo {
        DeviceInfo {
            id,
            device_type: String::new(),
            labels: Labels::new(),
        }
    }
}

impl From<&Device> for DeviceInfo {
    fn from(device: &Device) -> DeviceInfo {
        DeviceInfo {
            id: device.id.clone(),
            device_type: device.device_type.clone(),
            labels: device.labels.clone(),
        }
    }
}

/// Checks the number of labels and the size of each key and value.
pub fn check_labels(labels: &Labels) -> Result<(), Error> {
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
    pub fn check(&self) -> Result<(), Error> {
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
    pub fn check(&self) -> Result<(), Error> {
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
