//! What a rule is: its definition as the API stores it ([`RuleDefinition`]: which devices,
//! condition, duration, clear expression, severity, actions), the device facts matching
//! needs ([`DeviceInfo`]), and the compiled form the engine evaluates.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ExpressionPart};
use crate::expr::{Expression, FieldTable};

/// A rule's id: any non-empty text, chosen by the API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(Arc<str>);

impl RuleId {
    /// Checks that `id` is not empty.
    pub fn new(id: impl AsRef<str>) -> Result<RuleId, Error> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(Error::EmptyRuleId);
        }
        Ok(RuleId(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl Borrow<str> for RuleId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// How serious the alarm a rule raises is.
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
    /// The lower-case name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl FromStr for Severity {
    type Err = Error;

    fn from_str(text: &str) -> Result<Severity, Error> {
        match text {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            _ => Err(Error::UnknownSeverity(text.to_owned())),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What the platform does when the rule's alarm is raised. The engine only carries these:
/// it reports transitions, the platform acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open an alarm (and clear it when the rule clears).
    Alarm,
    /// POST the alarm to a URL.
    Webhook {
        /// Where to.
        url: String,
    },
    /// Publish the alarm on an MQTT topic (`{device}` is replaced by the device id).
    Republish {
        /// The topic template.
        topic: String,
    },
    /// Send a command to the device.
    Command {
        /// The command name.
        name: String,
        /// Its parameters as JSON text, passed through untouched.
        params: String,
    },
}

/// Which devices a rule watches (the API's `match`). Every part given must hold; an empty
/// selector matches every device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSelector {
    /// Only these device ids (any device when empty).
    pub devices: Vec<String>,
    /// Only devices of this type.
    pub device_type: Option<String>,
    /// Only devices having all these labels with these values.
    pub labels: BTreeMap<String, String>,
}

impl DeviceSelector {
    /// Whether `device` is one of the devices this selector picks.
    pub fn matches(&self, device: &DeviceInfo<'_>) -> bool {
        (self.devices.is_empty() || self.devices.iter().any(|id| id == device.id))
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

/// The facts about a device that rules match on, borrowed from the caller's device record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo<'a> {
    /// The device id.
    pub id: &'a str,
    /// Its type; empty when it has none.
    pub device_type: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl<'a> DeviceInfo<'a> {
    /// A device without type or labels.
    pub fn new(id: &'a str) -> DeviceInfo<'a> {
        DeviceInfo {
            id,
            device_type: "",
            labels: &NO_LABELS,
        }
    }
}

/// A rule as the API stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDefinition {
    /// Its id.
    pub id: RuleId,
    /// A name for people.
    pub name: String,
    /// Which devices it watches.
    pub selector: DeviceSelector,
    /// The boolean expression that raises the alarm.
    pub condition: String,
    /// How long (in data time) the condition must hold before the alarm is raised; `None`
    /// (or zero) raises on the first evaluation where it holds.
    pub for_duration: Option<Duration>,
    /// The boolean expression that clears a raised alarm; without it, the alarm clears when
    /// the condition stops holding.
    pub clear: Option<String>,
    /// How serious its alarm is.
    pub severity: Severity,
    /// What the platform does on a transition.
    pub actions: Vec<Action>,
}

impl RuleDefinition {
    /// Checks that the condition and the clear expression compile, without an engine:
    /// what the API calls before storing a rule.
    pub fn validate(&self) -> Result<(), Error> {
        CompiledRule::compile(self.clone(), &mut FieldTable::default()).map(drop)
    }
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) definition: RuleDefinition,
    pub(crate) condition: Expression,
    pub(crate) clear: Option<Expression>,
    /// `for` in milliseconds, 0 when absent.
    pub(crate) for_ms: i64,
}

impl CompiledRule {
    /// Compiles both expressions, interning their fields in `fields` only when both
    /// compile.
    pub(crate) fn compile(
        definition: RuleDefinition,
        fields: &mut FieldTable,
    ) -> Result<CompiledRule, Error> {
        let compile = |source: &str, part, fields: &mut FieldTable| {
            Expression::compile_condition(source, fields).map_err(|source| Error::Expression {
                rule: definition.id.clone(),
                part,
                source,
            })
        };
        // Check everything first so that a rejected rule interns nothing.
        let mut scratch = FieldTable::default();
        compile(
            &definition.condition,
            ExpressionPart::Condition,
            &mut scratch,
        )?;
        if let Some(clear) = &definition.clear {
            compile(clear, ExpressionPart::Clear, &mut scratch)?;
        }
        let condition = compile(&definition.condition, ExpressionPart::Condition, fields)?;
        let clear = match &definition.clear {
            Some(clear) => Some(compile(clear, ExpressionPart::Clear, fields)?),
            None => None,
        };
        let for_ms = definition.for_duration.map_or(0, |duration| {
            i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
        });
        Ok(CompiledRule {
            definition,
            condition,
            clear,
            for_ms,
        })
    }

    /// Whether `other` evaluates the same way (a change of name, severity, actions or
    /// selector keeps a pending condition's start).
    pub(crate) fn has_same_logic(&self, other: &CompiledRule) -> bool {
        self.definition.condition == other.definition.condition
            && self.definition.clear == other.definition.clear
            && self.for_ms == other.for_ms
    }
}
