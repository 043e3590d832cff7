//! Rules: the one rule model. What a rule is ([`RuleSpec`]: which devices, condition,
//! `for`, `clear`, severity, actions), the stored [`Rule`], [`Severity`], [`RuleAction`],
//! and the one place each is checked. The expressions themselves are compiled (and so
//! checked) by the rules crate.

use std::fmt;

use fleetwire_mqtt_codec::TopicName;
use fleetwire_time::TimestampMs;

use crate::command::{check_command_name, command_params_json};
use crate::device::{DeviceInfo, Labels, MAX_TYPE_CHARS, check_labels};
use crate::error::Error;
use crate::id::{DeviceId, RuleId};
use crate::name::check_text;

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

impl RuleMatch {
    /// Whether `device` is one of the devices this match picks.
    pub fn matches(&self, device: &DeviceInfo) -> bool {
        (self.devices.is_empty() || self.devices.contains(&device.id))
            && self
                .device_type
                .as_deref()
                .is_none_or(|device_type| device_type == device.device_type)
            && self
                .labels
                .iter()
                .all(|(key, value)| device.labels.get(key) == Some(value))
    }
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
pub const MAX_RULE_NAME_CHARS: usize = 256;
/// Longest condition or clear expression, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Most actions of one rule.
pub const MAX_RULE_ACTIONS: usize = 16;
/// Most devices named by one rule's match.
pub const MAX_RULE_DEVICES: usize = 1000;
/// Longest webhook URL, in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// Longest republish topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 1024;

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
    /// The one check of actions, wherever a rule comes from (API, configuration file,
    /// registry).
    pub fn check(&self, index: usize) -> Result<(), Error> {
        let what = |field: &str| format!("rule action {index} ({}): {field}", self.kind());
        match self {
            RuleAction::Alarm => Ok(()),
            RuleAction::Webhook { url } => {
                check_text(&what("url"), url, 1, MAX_URL_CHARS)?;
                let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
                if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
                    return Err(Error::Invalid(format!(
                        "{} {url:?}: expected an http:// or https:// URL \
                         (http(s)://HOST[:PORT]/PATH)",
                        what("url")
                    )));
                }
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(Error::Invalid(format!(
                        "{} {url:?}: expected a host after {scheme}://",
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
                if topic.starts_with('$') {
                    return Err(Error::Invalid(format!(
                        "{} {topic:?}: expected a topic name that does not start with '$' (the \
                         broker's own topics)",
                        what("topic")
                    )));
                }
                // What will be published: the device placeholder filled in.
                let example = republish_topic(topic, "d");
                TopicName::new(example).map_err(|error| {
                    Error::Invalid(format!("{} {topic:?}: {error}", what("topic")))
                })?;
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

/// The topic a republish action publishes on for `device`: `{device}` in the template
/// replaced by the device id.
pub fn republish_topic(template: &str, device: &str) -> String {
    template.replace("{device}", device)
}

impl RuleSpec {
    /// Checks the sizes and ranges documented on the fields, and every action (the
    /// expressions are compiled, and so checked, by the rules crate).
    pub fn check(&self) -> Result<(), Error> {
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
