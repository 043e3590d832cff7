//! Rules at work: the rules task evaluates every written telemetry row against the rule
//! engine, and the actions task turns the resulting transitions into alarms, webhooks,
//! republished messages and commands.
//!
//! Who owns what:
//! - the rules task owns the [`Engine`] (compiled rules, per-device samples and states):
//!   nobody else touches it; rule changes and device changes reach it as [`RulesInput`]
//!   messages on the same channel as the telemetry, so they apply in order;
//! - the actions task owns nothing but its queue; alarm state lives in the registry
//!   (at most one open alarm per rule and device, enforced there).
//!
//! The rules channel is bounded: when evaluation falls behind, the writer threads wait,
//! and so do the connections (backpressure, not loss: an alarm is never skipped). The
//! actions channel is bounded too, but far larger, since transitions are rare and slow
//! (database writes, HTTP).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use fleetwire_mqtt_codec::{QoS, TopicName};
use fleetwire_registry::{AlarmId, DeviceId, NewAlarm, Rule, RuleAction, RuleId};
use fleetwire_rules::{
    Action, DeviceInfo, DeviceSelector, Engine, RuleDefinition, Transition, TransitionKind,
};
use fleetwire_store::Timestamp;
use smallvec::SmallVec;
use tokio::sync::mpsc;

use crate::batch::PointBatch;
use crate::commands::CommandRequest;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::platform::Inner;

/// Written batches (and rule changes) that may wait for the rules task.
pub(crate) const RULES_QUEUE: usize = 256;
/// Transitions that may wait for the actions task.
pub(crate) const ACTIONS_QUEUE: usize = 65_536;
/// How long a command sent by a rule has to be answered.
const RULE_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What the rules task is told.
pub(crate) enum RulesInput {
    /// Points were written.
    Written(Arc<PointBatch>),
    /// A rule was created or replaced (already validated).
    Upsert(Box<RuleDefinition>),
    /// A rule was deleted.
    Remove(RuleId),
    /// A device's type or labels changed.
    DeviceChanged(Arc<str>),
    /// A device was deleted.
    DeviceDeleted(Arc<str>),
    /// An alarm was cleared by hand: the rule starts over for the device, so a condition
    /// that still holds raises a new alarm.
    Reset {
        /// The rule.
        rule: RuleId,
        /// The device.
        device: Arc<str>,
    },
}

/// A rule's definition as the engine takes it, from the registry's stored form.
pub(crate) fn definition(rule: &Rule) -> Result<RuleDefinition> {
    let spec = &rule.spec;
    let severity = match spec.severity {
        fleetwire_registry::Severity::Low => fleetwire_rules::Severity::Low,
        fleetwire_registry::Severity::Medium => fleetwire_rules::Severity::Medium,
        fleetwire_registry::Severity::High => fleetwire_rules::Severity::High,
        fleetwire_registry::Severity::Critical => fleetwire_rules::Severity::Critical,
    };
    let actions = spec
        .actions
        .iter()
        .map(|action| match action {
            RuleAction::Alarm => Action::Alarm,
            RuleAction::Webhook { url } => Action::Webhook { url: url.clone() },
            RuleAction::Republish { topic } => Action::Republish {
                topic: topic.clone(),
            },
            RuleAction::Command { name, params } => Action::Command {
                name: name.clone(),
                params: params.to_string(),
            },
        })
        .collect();
    Ok(RuleDefinition {
        id: fleetwire_rules::RuleId::new(rule.id.as_str())
            .map_err(|error| Error::Invalid(error.to_string()))?,
        name: spec.name.clone(),
        selector: DeviceSelector {
            devices: spec
                .matcher
                .devices
                .iter()
                .map(|id| id.as_str().to_owned())
                .collect(),
            device_type: spec.matcher.device_type.clone(),
            labels: spec.matcher.labels.clone(),
        },
        condition: spec.condition.clone(),
        for_duration: spec
            .for_ms
            .map(|millis| Duration::from_millis(millis.max(0) as u64)),
        clear: spec.clear.clone(),
        severity,
        actions,
    })
}

/// The rules task: evaluates written rows, applies rule and device changes in order.
pub(crate) async fn run_rules(
    inner: Weak<Inner>,
    mut engine: Engine,
    mut input: mpsc::Receiver<RulesInput>,
    actions: mpsc::Sender<Transition>,
) {
    let mut transitions = Vec::new();
    while let Some(message) = input.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match message {
            RulesInput::Written(batch) => {
                if engine.is_empty() {
                    continue;
                }
                for row in batch.rows() {
                    let Some(device) = inner.directory.cached(row.device) else {
                        continue;
                    };
                    let fields: SmallVec<[(&str, f64); 16]> = row.fields().collect();
                    engine.evaluate(
                        &DeviceInfo {
                            id: &device.id,
                            device_type: &device.device_type,
                            labels: &device.labels,
                        },
                        row.timestamp.as_millis(),
                        &fields,
                        &mut transitions,
                    );
                }
            }
            RulesInput::Upsert(definition) => {
                let id = definition.id.clone();
                if let Err(error) = engine.insert(*definition) {
                    tracing::error!(rule = %id, %error, "a validated rule failed to compile");
                }
            }
            RulesInput::Remove(id) => {
                engine.remove(id.as_str());
            }
            RulesInput::DeviceChanged(device) => engine.device_changed(&device),
            RulesInput::DeviceDeleted(device) => {
                engine.forget_device(&device);
            }
            RulesInput::Reset { rule, device } => {
                engine.reset(rule.as_str(), &device);
            }
        }
        for transition in transitions.drain(..) {
            if actions.send(transition).await.is_err() {
                return;
            }
        }
    }
}

/// The actions task: carries out each transition's actions, in order.
pub(crate) async fn run_actions(inner: Weak<Inner>, mut transitions: mpsc::Receiver<Transition>) {
    while let Some(transition) = transitions.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(error) = carry_out(&inner, &transition).await {
            tracing::warn!(
                rule = %transition.rule,
                device = %transition.device,
                %error,
                "a rule's actions failed"
            );
        }
    }
}

async fn carry_out(inner: &Inner, transition: &Transition) -> Result<()> {
    let rule_id = RuleId::new(transition.rule.as_str())?;
    let rule = match inner.registry.rule(&rule_id).await {
        Ok(rule) => rule,
        // Deleted since: nothing to do.
        Err(fleetwire_registry::Error::NotFound { .. }) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    let device = DeviceId::new(&*transition.device)
        .map_err(|error| Error::InvalidDevice(error.to_string()))?;
    let values: Vec<(String, f64)> = transition
        .values
        .iter()
        .map(|value| (value.field.to_string(), value.value))
        .collect();
    let now = Timestamp::now().as_millis();

    // The alarm first: webhooks and republished messages name it.
    let mut alarm = None;
    let has_alarm = rule.spec.actions.contains(&RuleAction::Alarm);
    if has_alarm {
        alarm = match transition.kind {
            TransitionKind::Raised => {
                let (alarm, is_new) = inner
                    .registry
                    .raise_alarm(
                        NewAlarm {
                            rule_id: rule.id.clone(),
                            rule_name: rule.spec.name.clone(),
                            device_id: device.clone(),
                            severity: rule.spec.severity,
                            values: values.clone(),
                        },
                        now,
                    )
                    .await?;
                let alarm = Arc::new(alarm);
                if is_new {
                    inner.events.publish(Event::Alarm(Arc::clone(&alarm)));
                }
                Some(alarm)
            }
            TransitionKind::Cleared => match inner.registry.open_alarm(&rule.id, &device).await? {
                Some(open) => {
                    let cleared = clear_alarm(inner, &open.id, "rule", values.clone()).await?;
                    Some(cleared)
                }
                None => None,
            },
        };
    }
    let document = || alarm_document(&rule, transition, &values, alarm.as_deref());
    for action in &rule.spec.actions {
        match action {
            RuleAction::Alarm => {}
            RuleAction::Webhook { url } => inner.webhooks.send(url, document().to_string()),
            RuleAction::Republish { topic } => republish(inner, topic, &device, document()),
            RuleAction::Command { name, params } => {
                if transition.kind == TransitionKind::Raised {
                    inner
                        .send_command(
                            &device,
                            CommandRequest {
                                name: name.clone(),
                                params: params.clone(),
                                timeout: RULE_COMMAND_TIMEOUT,
                            },
                        )
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// Clears an alarm in the registry and tells the stream.
pub(crate) async fn clear_alarm(
    inner: &Inner,
    id: &AlarmId,
    by: &str,
    values: Vec<(String, f64)>,
) -> Result<Arc<fleetwire_registry::Alarm>> {
    let alarm = Arc::new(
        inner
            .registry
            .clear_alarm(id, by, values, Timestamp::now().as_millis())
            .await?,
    );
    inner.events.publish(Event::Alarm(Arc::clone(&alarm)));
    Ok(alarm)
}

/// What webhooks receive and republished messages carry.
fn alarm_document(
    rule: &Rule,
    transition: &Transition,
    values: &[(String, f64)],
    alarm: Option<&fleetwire_registry::Alarm>,
) -> serde_json::Value {
    let values: serde_json::Map<String, serde_json::Value> = values
        .iter()
        .map(|(field, value)| (field.clone(), serde_json::json!(value)))
        .collect();
    serde_json::json!({
        "event": match transition.kind {
            TransitionKind::Raised => "raised",
            TransitionKind::Cleared => "cleared",
        },
        "rule": { "id": rule.id.as_str(), "name": rule.spec.name },
        "device_id": &*transition.device,
        "severity": rule.spec.severity.as_str(),
        "values": values,
        "ts": transition.timestamp_ms,
        "alarm": alarm.map(|alarm| serde_json::json!({
            "id": alarm.id.as_str(),
            "status": alarm.status.as_str(),
        })),
    })
}

fn republish(inner: &Inner, template: &str, device: &DeviceId, document: serde_json::Value) {
    let Some(broker) = inner.broker() else {
        return;
    };
    let topic = template.replace("{device}", device.as_str());
    match TopicName::new(topic.clone()) {
        Ok(topic) => {
            broker.publish_internal(
                topic,
                Bytes::from(document.to_string()),
                QoS::AtLeastOnce,
                false,
            );
        }
        Err(error) => tracing::warn!(topic, %error, "cannot republish: invalid topic"),
    }
}
