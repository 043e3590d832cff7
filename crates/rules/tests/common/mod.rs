//! Helpers shared by the tests: evaluating one expression over given values, building rule
//! definitions, and driving an engine one message at a time.

#![allow(dead_code)] // Each test file uses a different subset.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fleetwire_model::{DeviceId, DeviceInfo, RuleId, RuleMatch};
use fleetwire_rules::{
    Engine, ExprError, Expression, FieldId, FieldTable, RuleDefinition, RuleState, Sample, Samples,
    Transition, TransitionKind, Value,
};

/// Samples for one expression: each named field has a latest sample and maybe a previous
/// one.
#[derive(Default)]
pub(crate) struct Readings {
    latest: HashMap<FieldId, Sample>,
    previous: HashMap<FieldId, Sample>,
}

impl Samples for Readings {
    fn latest(&self, field: FieldId) -> Option<Sample> {
        self.latest.get(&field).copied()
    }

    fn previous(&self, field: FieldId) -> Option<Sample> {
        self.previous.get(&field).copied()
    }
}

/// Compiles `source` (of either type) and evaluates it where each field of `values` has
/// that value; other fields have none.
pub(crate) fn evaluate(source: &str, values: &[(&str, f64)]) -> Result<Option<Value>, ExprError> {
    let mut fields = FieldTable::default();
    let expression = Expression::compile(source, &mut fields)?;
    let mut readings = Readings::default();
    for &(name, value) in values {
        if let Some(id) = fields.get(name) {
            readings.latest.insert(
                id,
                Sample {
                    value,
                    timestamp_ms: 0,
                },
            );
        }
    }
    Ok(expression.evaluate(&readings))
}

/// Compiles `source` as a rule condition and returns the error text and byte position.
pub(crate) fn condition_error(source: &str) -> Option<(String, usize)> {
    Expression::compile_condition(source, &mut FieldTable::default())
        .err()
        .map(|error| (error.to_string(), error.position()))
}

/// A rule over every device, without `for` or `clear`.
pub(crate) fn rule(id: &str, condition: &str) -> RuleDefinition {
    RuleDefinition {
        id: RuleId::new(id).unwrap(),
        selector: RuleMatch::default(),
        condition: condition.to_owned(),
        for_duration: None,
        clear: None,
    }
}

/// `rule` with a `for` duration in seconds.
pub(crate) fn rule_for(id: &str, condition: &str, seconds: u64) -> RuleDefinition {
    RuleDefinition {
        for_duration: Some(Duration::from_secs(seconds)),
        ..rule(id, condition)
    }
}

/// `rule` with a clear expression.
pub(crate) fn rule_clear(id: &str, condition: &str, clear: &str) -> RuleDefinition {
    RuleDefinition {
        clear: Some(clear.to_owned()),
        ..rule(id, condition)
    }
}

/// Device ids, for rule matches.
pub(crate) fn ids(ids: &[&str]) -> Vec<DeviceId> {
    ids.iter().map(|id| DeviceId::new(*id).unwrap()).collect()
}

/// Seconds after an arbitrary start, in milliseconds since the epoch.
pub(crate) fn at(seconds: f64) -> i64 {
    1_767_225_600_000 + (seconds * 1000.0) as i64
}

/// An engine and the devices it is fed, with their type and labels.
pub(crate) struct Fleet {
    pub(crate) engine: Engine,
    devices: HashMap<String, (String, BTreeMap<String, String>)>,
}

impl Fleet {
    pub(crate) fn new(rules: impl IntoIterator<Item = RuleDefinition>) -> Fleet {
        Fleet {
            engine: Engine::new(rules).unwrap(),
            devices: HashMap::new(),
        }
    }

    /// Registers (or changes) a device's type and labels, telling the engine.
    pub(crate) fn device(&mut self, id: &str, device_type: &str, labels: &[(&str, &str)]) {
        let labels = labels
            .iter()
            .map(|&(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        self.devices
            .insert(id.to_owned(), (device_type.to_owned(), labels));
        self.engine.device_changed(id);
    }

    /// Sends one message and returns the transitions.
    pub(crate) fn send(
        &mut self,
        device: &str,
        timestamp_ms: i64,
        fields: &[(&str, f64)],
    ) -> Vec<Transition> {
        let empty = (String::new(), BTreeMap::new());
        let (device_type, labels) = self.devices.get(device).unwrap_or(&empty);
        let info = DeviceInfo {
            id: DeviceId::new(device).unwrap(),
            device_type: device_type.clone(),
            labels: labels.clone(),
        };
        let mut out = Vec::new();
        self.engine.evaluate(&info, timestamp_ms, fields, &mut out);
        out
    }

    /// Sends one message and returns the transitions as (rule, device, kind).
    pub(crate) fn changes(
        &mut self,
        device: &str,
        timestamp_ms: i64,
        fields: &[(&str, f64)],
    ) -> Vec<(String, String, TransitionKind)> {
        self.send(device, timestamp_ms, fields)
            .into_iter()
            .map(|transition| {
                (
                    transition.rule.to_string(),
                    transition.device.to_string(),
                    transition.kind,
                )
            })
            .collect()
    }

    pub(crate) fn state(&self, rule: &str, device: &str) -> Option<RuleState> {
        self.engine.state(rule, device)
    }
}

/// `(rule, device, kind)` as `changes` returns them.
pub(crate) fn change(
    rule: &str,
    device: &str,
    kind: TransitionKind,
) -> (String, String, TransitionKind) {
    (rule.to_owned(), device.to_owned(), kind)
}
