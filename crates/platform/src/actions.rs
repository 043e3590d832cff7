//! The actions thread: carries out the transitions the rules thread decides, in order:
//! alarms raised and cleared ([`Alarms`]), webhooks queued ([`Webhooks`]), alarms
//! republished and commands sent (through the [`MqttLink`] and [`Commands`]).
//!
//! It owns its queue and two caches: the rules it carries out (read from the registry once,
//! forgotten when the rules thread passes on a change of the rule), and the id of each
//! alarm it raised and that is still open, by rule and device, so clearing it is one
//! statement. Alarm state lives in the registry (at most one open alarm per rule and
//! device, enforced there): a cached id that is no longer open (cleared by hand, or on
//! another node) is looked up again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetwire_model::republish_topic;
use fleetwire_model::{Alarm, AlarmId, DeviceId, NewAlarm, Rule, RuleAction, RuleId};
use fleetwire_mqtt_codec::{QoS, TopicName};
use fleetwire_registry::Registry;
use fleetwire_rules::{Transition, TransitionKind};
use tokio::sync::{mpsc, oneshot};

use crate::alarms::Alarms;
use crate::commands::{CommandRequest, Commands};
use crate::error::{Error, Result};
use crate::mqtt::{MqttLink, Outgoing};
use crate::webhook::Webhooks;

/// Transitions (and notices) that may wait for the actions thread: transitions are rare
/// and slow (database writes, HTTP), so the queue is far larger than the rules'.
pub(crate) const ACTIONS_QUEUE: usize = 65_536;
/// How long a command sent by a rule has to be answered.
const RULE_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What the actions thread is told, in the order the rules thread decided it.
pub(crate) enum ActionsInput {
    /// A rule's alarm changed for a device: carry out the rule's actions.
    Transition(Transition),
    /// A rule was created, replaced, disabled or deleted: read it again when needed.
    RuleChanged(Arc<str>),
    /// An alarm was cleared by hand: its id is no longer the open one.
    AlarmReset {
        /// The rule.
        rule: Arc<str>,
        /// The device.
        device: Arc<str>,
    },
    /// A device was deleted (and its alarms with it).
    DeviceDeleted(Arc<str>),
}

/// What carrying out actions needs.
pub(crate) struct Actuators {
    pub(crate) registry: Registry,
    pub(crate) alarms: Alarms,
    pub(crate) webhooks: Webhooks,
    pub(crate) link: Arc<dyn MqttLink>,
    pub(crate) commands: Arc<Commands>,
}

/// Starts the actions thread, which carries out `input` in order within the runtime
/// (`Handle::block_on`: its many short waits for the registry wake that thread directly,
/// instead of queueing behind every connection's task each time). The task completes when
/// that thread ends; aborting it stops the thread at its next message.
pub(crate) async fn run(actuators: Actuators, input: mpsc::Receiver<ActionsInput>) {
    let runtime = tokio::runtime::Handle::current();
    let (stop, stopped) = oneshot::channel::<()>();
    let (finished, ended) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("fleetwire-actions".to_owned())
        .spawn(move || {
            runtime.block_on(carry_out_until_closed(actuators, input, stopped));
            drop(finished);
        });
    match spawned {
        Ok(_) => {
            let _ = ended.await;
            drop(stop);
        }
        Err(error) => {
            tracing::error!(%error, "cannot start the actions thread: rules have no effect");
        }
    }
}

/// The actions loop: until the channel closes or `stop` fires (its sender dropped).
async fn carry_out_until_closed(
    actuators: Actuators,
    mut input: mpsc::Receiver<ActionsInput>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut actions = Actions {
        actuators,
        rules: HashMap::new(),
        open: HashMap::new(),
    };
    loop {
        let message = tokio::select! {
            message = input.recv() => message,
            _ = &mut stop => None,
        };
        let Some(message) = message else {
            return;
        };
        match message {
            ActionsInput::Transition(transition) => {
                if let Err(error) = actions.carry_out(&transition).await {
                    tracing::warn!(
                        rule = %transition.rule,
                        device = %transition.device,
                        error = &error as &dyn std::error::Error,
                        "a rule's actions failed"
                    );
                }
            }
            ActionsInput::RuleChanged(rule) => {
                actions.rules.remove(&rule);
            }
            ActionsInput::AlarmReset { rule, device } => {
                actions.open.remove(&(rule, device));
            }
            ActionsInput::DeviceDeleted(device) => {
                actions.open.retain(|(_, open), _| *open != device);
            }
        }
    }
}

/// What the actions thread keeps between transitions (see the module's notes).
struct Actions {
    actuators: Actuators,
    /// Rules as the registry had them when first needed, by id.
    rules: HashMap<Arc<str>, Arc<Rule>>,
    /// The alarm each (rule, device) pair raised and has not cleared yet.
    open: HashMap<(Arc<str>, Arc<str>), AlarmId>,
}

impl Actions {
    /// The rule, from the cache or the registry; `None` when it was deleted since.
    async fn rule(&mut self, id: &RuleId) -> Result<Option<Arc<Rule>>> {
        if let Some(rule) = self.rules.get(id.as_str()) {
            return Ok(Some(Arc::clone(rule)));
        }
        match self.actuators.registry.rule(id).await {
            Ok(rule) => {
                let rule = Arc::new(rule);
                self.rules.insert(Arc::from(id.as_str()), Arc::clone(&rule));
                Ok(Some(rule))
            }
            Err(fleetwire_registry::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn carry_out(&mut self, transition: &Transition) -> Result<()> {
        let Some(rule) = self.rule(&transition.rule).await? else {
            // Deleted since: nothing to do.
            return Ok(());
        };
        let device = DeviceId::new(&*transition.device)
            .map_err(|error| Error::InvalidDevice(error.to_string()))?;
        let values: Vec<(String, f64)> = transition
            .values
            .iter()
            .map(|value| (value.field.to_string(), value.value))
            .collect();
        let key = (
            Arc::from(transition.rule.as_str()),
            Arc::clone(&transition.device),
        );
        let actuators = &self.actuators;

        // The alarm first: webhooks and republished messages name it.
        let mut alarm = None;
        if rule.spec.actions.contains(&RuleAction::Alarm) {
            alarm = match transition.kind {
                TransitionKind::Raised => {
                    let alarm = actuators
                        .alarms
                        .raise(NewAlarm {
                            rule_id: rule.id.clone(),
                            rule_name: rule.spec.name.clone(),
                            device_id: device.clone(),
                            severity: rule.spec.severity,
                            values: values.clone(),
                        })
                        .await?;
                    self.open.insert(key, alarm.id.clone());
                    Some(alarm)
                }
                TransitionKind::Cleared => {
                    let cached = self.open.remove(&key);
                    actuators
                        .alarms
                        .clear_open(&rule.id, &device, cached, values.clone())
                        .await?
                }
            };
        }
        let document = || alarm_document(&rule, transition, &values, alarm.as_deref());
        for action in &rule.spec.actions {
            match action {
                RuleAction::Alarm => {}
                RuleAction::Webhook { url } => {
                    actuators.webhooks.send(url, document().to_string());
                }
                RuleAction::Republish { topic } => {
                    republish(actuators.link.as_ref(), topic, &device, document()).await;
                }
                RuleAction::Command { name, params } => {
                    if transition.kind == TransitionKind::Raised {
                        actuators
                            .commands
                            .send(
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
}

/// What webhooks receive and republished messages carry.
fn alarm_document(
    rule: &Rule,
    transition: &Transition,
    values: &[(String, f64)],
    alarm: Option<&Alarm>,
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

/// Publishes `document` at QoS 1 on the action's topic for `device`.
async fn republish(
    link: &dyn MqttLink,
    template: &str,
    device: &DeviceId,
    document: serde_json::Value,
) {
    let topic = republish_topic(template, device.as_str());
    let topic = match TopicName::new(topic.clone()) {
        Ok(topic) => topic,
        Err(error) => {
            tracing::warn!(topic, %error, "cannot republish: invalid topic");
            return;
        }
    };
    let message = Outgoing::new(topic, Bytes::from(document.to_string()), QoS::AtLeastOnce);
    if let Err(error) = link.publish(message).await {
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            "cannot republish an alarm"
        );
    }
}
