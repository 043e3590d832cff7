//! Alarms: their lifecycle ([`AlarmStatus`]: active → acknowledged → cleared), the
//! stored [`Alarm`], what raising one takes ([`NewAlarm`]) and listing filters.

use std::fmt;

use fleetwire_time::TimestampMs;

use crate::error::Error;
use crate::id::{AlarmId, DeviceId, RuleId};
use crate::name::check_text;
use crate::rule::{MAX_RULE_NAME_CHARS, Severity};

/// Where an alarm is in its lifecycle: active → acknowledged → cleared (or active →
/// cleared). Active and acknowledged alarms are *open*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmStatus {
    /// Raised, nobody has acknowledged it.
    Active,
    /// Someone has seen it; the condition may still hold.
    Acknowledged,
    /// Over: cleared by its rule or by someone.
    Cleared,
}

impl AlarmStatus {
    /// `active`, `acknowledged` or `cleared`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmStatus::Active => "active",
            AlarmStatus::Acknowledged => "acknowledged",
            AlarmStatus::Cleared => "cleared",
        }
    }

    /// Parses `active`, `acknowledged` or `cleared`.
    pub fn parse(text: &str) -> Result<AlarmStatus, Error> {
        match text {
            "active" => Ok(AlarmStatus::Active),
            "acknowledged" => Ok(AlarmStatus::Acknowledged),
            "cleared" => Ok(AlarmStatus::Cleared),
            other => Err(Error::Invalid(format!(
                "alarm status {other:?}: expected active, acknowledged or cleared"
            ))),
        }
    }

    /// Whether the alarm is still open (active or acknowledged).
    pub fn is_open(self) -> bool {
        self != AlarmStatus::Cleared
    }
}

impl fmt::Display for AlarmStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alarm a rule raised for a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    /// Its id.
    pub id: AlarmId,
    /// The rule that raised it (which may have been deleted since).
    pub rule_id: RuleId,
    /// The rule's name when it was raised.
    pub rule_name: String,
    /// The device it is about.
    pub device_id: DeviceId,
    /// The rule's severity when it was raised.
    pub severity: Severity,
    /// Where it is in its lifecycle.
    pub status: AlarmStatus,
    /// The values that raised it: (field, value), in order.
    pub values: Vec<(String, f64)>,
    /// When it was raised.
    pub created_at: TimestampMs,
    /// When its status last changed (`created_at` until then).
    pub updated_at: TimestampMs,
    /// When it was acknowledged; `None` when it was not.
    pub acknowledged_at: Option<TimestampMs>,
    /// Who acknowledged it (a token name).
    pub acknowledged_by: Option<String>,
    /// When it was cleared; `None` while open.
    pub cleared_at: Option<TimestampMs>,
    /// Who cleared it: a token name, or `rule` when its rule cleared it.
    pub cleared_by: Option<String>,
    /// The values when its rule cleared it (empty otherwise).
    pub clear_values: Vec<(String, f64)>,
}

/// What `raise_alarm` needs.
#[derive(Debug, Clone)]
pub struct NewAlarm {
    /// The rule raising it.
    pub rule_id: RuleId,
    /// The rule's name (1-256 characters).
    pub rule_name: String,
    /// The device it is about (must exist).
    pub device_id: DeviceId,
    /// Its severity.
    pub severity: Severity,
    /// The values that raised it: at most 256, field names 1-256 characters, finite values.
    pub values: Vec<(String, f64)>,
}

/// Which alarms to list, and which page. Every filter given must hold.
#[derive(Debug, Clone)]
pub struct AlarmFilter {
    /// Only alarms in this status.
    pub status: Option<AlarmStatus>,
    /// Only open alarms (active or acknowledged).
    pub open_only: bool,
    /// Only alarms of this device.
    pub device: Option<DeviceId>,
    /// Only alarms of this rule.
    pub rule: Option<RuleId>,
    /// Only alarms of this severity.
    pub severity: Option<Severity>,
    /// Page size (1-1000).
    pub limit: u32,
    /// Continue after this cursor (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
}

impl Default for AlarmFilter {
    fn default() -> Self {
        AlarmFilter {
            status: None,
            open_only: false,
            device: None,
            rule: None,
            severity: None,
            limit: 100,
            cursor: None,
        }
    }
}

/// The name `clear_alarm` takes when the rule itself clears an alarm.
pub const CLEARED_BY_RULE: &str = "rule";
/// Most values recorded with an alarm (raised or cleared).
pub const MAX_ALARM_VALUES: usize = 256;
/// Longest field name among an alarm's values, in characters.
pub const MAX_FIELD_CHARS: usize = 256;
/// Longest name of who acknowledged or cleared an alarm, in characters.
pub const MAX_ACTOR_CHARS: usize = 128;

/// Checks alarm values: at most 256, field names 1-256 characters, finite numbers (JSON
/// has no NaN or infinity).
pub fn check_alarm_values(what: &str, values: &[(String, f64)]) -> Result<(), Error> {
    if values.len() > MAX_ALARM_VALUES {
        return Err(Error::Invalid(format!(
            "{what}: expected at most {MAX_ALARM_VALUES}, got {}",
            values.len()
        )));
    }
    for (field, value) in values {
        check_text(&format!("{what}: field name"), field, 1, MAX_FIELD_CHARS)?;
        if !value.is_finite() {
            return Err(Error::Invalid(format!(
                "{what}: field {field:?}: expected a finite number, got {value}"
            )));
        }
    }
    Ok(())
}

impl NewAlarm {
    /// Checks the sizes documented on the fields.
    pub fn check(&self) -> Result<(), Error> {
        check_text("alarm rule name", &self.rule_name, 1, MAX_RULE_NAME_CHARS)?;
        check_alarm_values("alarm values", &self.values)
    }
}

/// Checks who acknowledges or clears an alarm: 1-128 characters.
pub fn check_actor(what: &str, by: &str) -> Result<(), Error> {
    check_text(what, by, 1, MAX_ACTOR_CHARS)
}
