//! The registry's domain types, validated in their constructors (the ids, `Role`,
//! `Severity`) or before anything is written (`NewDevice`, `DevicePatch`, `NewToken`,
//! `RuleSpec`, `NewAlarm`, `NewCommand`). None is `Serialize`: the API maps them to its own
//! JSON shapes.

use std::collections::BTreeMap;
use std::fmt;

use crate::Error;

/// Milliseconds since the Unix epoch.
pub type TimestampMs = i64;

/// Labels of a device: key → value.
pub type Labels = BTreeMap<String, String>;

/// Whether `text` is 1-128 characters of `[A-Za-z0-9_.-]`: the syntax of every id, and of
/// command names (safe in an MQTT topic level and in a URL path segment).
fn is_plain_name(text: &str) -> bool {
    (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The refusal of a name that is not `is_plain_name`.
fn plain_name_error(what: &str, text: &str) -> Error {
    Error::Invalid(format!(
        "{what} {text:?}: expected 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'"
    ))
}

/// An id newtype: validated in `new`, displayed as its text.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks the syntax.
            pub fn new(id: impl Into<String>) -> Result<$name, Error> {
                let id = id.into();
                if is_plain_name(&id) {
                    Ok($name(id))
                } else {
                    Err(plain_name_error($what, &id))
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A device id: 1-128 characters of `[A-Za-z0-9_.-]`.
    DeviceId,
    "device id"
);
id_type!(
    /// A rule id: 1-128 characters of `[A-Za-z0-9_.-]`; generated ones are `rule-` and 16
    /// hex digits.
    RuleId,
    "rule id"
);
id_type!(
    /// An alarm id: 1-128 characters of `[A-Za-z0-9_.-]`; generated ones are `alm-` and 16
    /// hex digits.
    AlarmId,
    "alarm id"
);
id_type!(
    /// A command id: 1-128 characters of `[A-Za-z0-9_.-]`; generated ones are `cmd-` and
    /// 16 hex digits.
    CommandId,
    "command id"
);

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

// ---- rules ----

/// How serious an alarm is; ordered by gravity (`Low < Critical`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// `low`.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
    /// `critical`.
    Critical,
}

impl Severity {
    /// Every severity, from the mildest.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// `low`, `medium`, `high` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses `low`, `medium`, `high` or `critical`.
    pub fn parse(text: &str) -> Result<Severity, Error> {
        match text {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(Error::Invalid(format!(
                "severity {other:?}: expected low, medium, high or critical"
            ))),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which devices a rule watches. Every part given must hold; the default (no devices, no
/// type, no labels) matches every device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleMatch {
    /// Only these devices (at most 1000); empty means any device.
    pub devices: Vec<DeviceId>,
    /// Only devices of this type (at most 64 characters).
    pub device_type: Option<String>,
    /// Only devices having all these labels (sizes as on devices).
    pub labels: Labels,
}

/// What the platform does when a rule's alarm is raised.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleAction {
    /// Open an alarm (and clear it when the rule clears).
    Alarm,
    /// POST the alarm to a URL.
    Webhook {
        /// An `http://` or `https://` URL, at most 2048 characters.
        url: String,
    },
    /// Publish the alarm on an MQTT topic.
    Republish {
        /// The topic, 1-1024 characters without wildcards; the platform fills in
        /// placeholders such as `{device}`.
        topic: String,
    },
    /// Send a command to the device.
    Command {
        /// The command name (as in `NewCommand`).
        name: String,
        /// Its parameters: a JSON object or null, at most 64 KiB as JSON.
        params: serde_json::Value,
    },
}

/// What a rule is, as `create_rule` and `replace_rule` take it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// Human-readable name, 1-256 characters.
    pub name: String,
    /// Which devices it watches.
    pub matcher: RuleMatch,
    /// The condition's expression text, 1-4096 bytes. Not parsed here: the rules crate
    /// compiles it, and the caller checks it before storing.
    pub condition: String,
    /// How long the condition must hold before the alarm is raised, in milliseconds
    /// (`>= 0`); `None` raises at once.
    pub for_ms: Option<i64>,
    /// The expression that clears the alarm (1-4096 bytes); `None` clears it when the
    /// condition stops holding.
    pub clear: Option<String>,
    /// Severity of the alarms it raises.
    pub severity: Severity,
    /// What to do when it fires (at most 16).
    pub actions: Vec<RuleAction>,
    /// Whether it is evaluated at all.
    pub enabled: bool,
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its id.
    pub id: RuleId,
    /// What it is.
    pub spec: RuleSpec,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it was last replaced (`created_at` until then); grows at every replacement.
    pub updated_at: TimestampMs,
}

/// Longest rule name, in characters.
pub(crate) const MAX_RULE_NAME_CHARS: usize = 256;
/// Longest condition or clear expression, in bytes.
pub(crate) const MAX_EXPRESSION_BYTES: usize = 4096;
/// Most actions of one rule.
pub(crate) const MAX_RULE_ACTIONS: usize = 16;
/// Most devices named by one rule's match.
pub(crate) const MAX_RULE_DEVICES: usize = 1000;
/// Longest webhook URL, in characters.
pub(crate) const MAX_URL_CHARS: usize = 2048;
/// Longest republish topic, in characters.
pub(crate) const MAX_TOPIC_CHARS: usize = 1024;
/// Largest command parameters (or result), as JSON.
pub(crate) const MAX_COMMAND_JSON_BYTES: usize = 64 * 1024;

/// Checks an expression's size; NUL is refused because PostgreSQL cannot store it in text
/// (line breaks and tabs are fine in an expression).
fn check_expression(what: &str, text: &str) -> Result<(), Error> {
    if text.is_empty() || text.len() > MAX_EXPRESSION_BYTES {
        return Err(Error::Invalid(format!(
            "{what}: expected 1-{MAX_EXPRESSION_BYTES} bytes, got {}",
            text.len()
        )));
    }
    if let Some(position) = text.find('\0') {
        return Err(Error::Invalid(format!(
            "{what}: expected no NUL character, got one at byte {position}"
        )));
    }
    Ok(())
}

/// Checks a command name: the syntax of ids, so it is safe as a topic level.
pub(crate) fn check_command_name(name: &str) -> Result<(), Error> {
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(plain_name_error("command name", name))
    }
}

/// Checks command parameters: a JSON object or null, at most 64 KiB; returns the JSON
/// text to store.
pub(crate) fn command_params_json(what: &str, params: &serde_json::Value) -> Result<String, Error> {
    if !(params.is_object() || params.is_null()) {
        return Err(Error::Invalid(format!(
            "{what}: expected a JSON object or null, got {}",
            json_kind(params)
        )));
    }
    bounded_json(what, params)
}

/// Checks that a JSON value takes at most 64 KiB as text; returns the text to store.
pub(crate) fn bounded_json(what: &str, value: &serde_json::Value) -> Result<String, Error> {
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
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl RuleAction {
    /// `alarm`, `webhook`, `republish` or `command`.
    pub fn kind(&self) -> &'static str {
        match self {
            RuleAction::Alarm => "alarm",
            RuleAction::Webhook { .. } => "webhook",
            RuleAction::Republish { .. } => "republish",
            RuleAction::Command { .. } => "command",
        }
    }

    /// Checks the fields documented on the variants; `index` names the action in messages.
    fn check(&self, index: usize) -> Result<(), Error> {
        let what = |field: &str| format!("rule action {index} ({}): {field}", self.kind());
        match self {
            RuleAction::Alarm => Ok(()),
            RuleAction::Webhook { url } => {
                check_text(&what("url"), url, 1, MAX_URL_CHARS)?;
                let scheme = url.split_once("://").map(|(scheme, _)| scheme);
                if !matches!(scheme, Some(scheme) if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
                {
                    return Err(Error::Invalid(format!(
                        "{} {url:?}: expected an http:// or https:// URL",
                        what("url")
                    )));
                }
                Ok(())
            }
            RuleAction::Republish { topic } => {
                check_text(&what("topic"), topic, 1, MAX_TOPIC_CHARS)?;
                if topic.contains(['+', '#']) {
                    return Err(Error::Invalid(format!(
                        "{} {topic:?}: expected a topic name without the wildcards '+' and '#'",
                        what("topic")
                    )));
                }
                Ok(())
            }
            RuleAction::Command { name, params } => {
                check_command_name(name).map_err(|error| {
                    Error::Invalid(format!("rule action {index} (command): {error}"))
                })?;
                command_params_json(&what("params"), params).map(drop)
            }
        }
    }
}

impl RuleSpec {
    /// Checks the sizes and ranges documented on the fields.
    pub(crate) fn check(&self) -> Result<(), Error> {
        check_text("rule name", &self.name, 1, MAX_RULE_NAME_CHARS)?;
        if self.matcher.devices.len() > MAX_RULE_DEVICES {
            return Err(Error::Invalid(format!(
                "rule match devices: expected at most {MAX_RULE_DEVICES}, got {}",
                self.matcher.devices.len()
            )));
        }
        if let Some(device_type) = &self.matcher.device_type {
            check_text("rule match type", device_type, 0, MAX_TYPE_CHARS)?;
        }
        check_labels(&self.matcher.labels)?;
        check_expression("rule condition", &self.condition)?;
        if let Some(clear) = &self.clear {
            check_expression("rule clear expression", clear)?;
        }
        if let Some(for_ms) = self.for_ms {
            if for_ms < 0 {
                return Err(Error::Invalid(format!(
                    "rule for: expected a duration of 0 ms or more, got {for_ms} ms"
                )));
            }
        }
        if self.actions.len() > MAX_RULE_ACTIONS {
            return Err(Error::Invalid(format!(
                "rule actions: expected at most {MAX_RULE_ACTIONS}, got {}",
                self.actions.len()
            )));
        }
        for (index, action) in self.actions.iter().enumerate() {
            action.check(index)?;
        }
        Ok(())
    }
}

// ---- alarms ----

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
pub(crate) const MAX_ALARM_VALUES: usize = 256;
/// Longest field name among an alarm's values, in characters.
pub(crate) const MAX_FIELD_CHARS: usize = 256;
/// Longest name of who acknowledged or cleared an alarm, in characters.
pub(crate) const MAX_ACTOR_CHARS: usize = 128;

/// Checks alarm values: at most 256, field names 1-256 characters, finite numbers (JSON
/// has no NaN or infinity).
pub(crate) fn check_alarm_values(what: &str, values: &[(String, f64)]) -> Result<(), Error> {
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
    pub(crate) fn check(&self) -> Result<(), Error> {
        check_text("alarm rule name", &self.rule_name, 1, MAX_RULE_NAME_CHARS)?;
        check_alarm_values("alarm values", &self.values)
    }
}

/// Checks who acknowledges or clears an alarm: 1-128 characters.
pub(crate) fn check_actor(what: &str, by: &str) -> Result<(), Error> {
    check_text(what, by, 1, MAX_ACTOR_CHARS)
}

// ---- commands ----

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
pub(crate) const MIN_COMMAND_TIMEOUT_MS: i64 = 1000;
/// Longest command timeout, in milliseconds (7 days).
pub(crate) const MAX_COMMAND_TIMEOUT_MS: i64 = 7 * 24 * 3600 * 1000;

impl NewCommand {
    /// Checks the fields documented above; returns the parameters' JSON text to store.
    pub(crate) fn check(&self) -> Result<String, Error> {
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
