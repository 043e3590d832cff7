//! Rules at work: the rules task evaluates every written telemetry row against the rule
//! engine, and the actions task turns the resulting transitions into alarms, webhooks,
//! republished messages and commands.
//!
//! Who owns what:
//! - the rules task owns the [`Engine`] (compiled rules, per-device samples and states):
//!   nobody else touches it; rule changes and device changes reach it as [`RulesInput`]
//!   messages on the same channel as the telemetry, so they apply in order. It runs on a
//!   thread of its own: evaluation is synchronous and takes every written batch, so as a
//!   task it would wait its turn behind every connection's task under load, and the
//!   writer threads behind it;
//! - the actions task owns its queue and two caches: the rules it carries out (read
//!   from the registry once, forgotten when the rules task passes on a change of the
//!   rule), and the id of each alarm it raised and that is still open, by rule and
//!   device, so clearing it is one statement. Alarm state lives in the registry (at most
//!   one open alarm per rule and device, enforced there): a cached id that is no longer
//!   open (cleared by hand, or on another node) is looked up again.
//!
//! The rules channel is bounded: when evaluation falls behind, the writer threads wait,
//! and so do the connections (backpressure, not loss: an alarm is never skipped). The
//! actions channel is bounded too, but far larger, since transitions are rare and slow
//! (database writes, HTTP).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use fleetwire_model::{AlarmId, DeviceId, NewAlarm, Rule, RuleAction, RuleId};
use fleetwire_mqtt_codec::{QoS, TopicName};
use fleetwire_rules::{Engine, RuleDefinition, Transition, TransitionKind};
use fleetwire_store::Timestamp;
use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot};

use crate::batch::PointBatch;
use crate::commands::CommandRequest;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::platform::Inner;

/// Written groups (and rule changes) that may wait for the rules thread. A group is what
/// one store write took (up to the writer's `max_write_points`), so this bounds the
/// points held for the rules to a few million.
pub(crate) const RULES_QUEUE: usize = 64;
/// Transitions that may wait for the actions task.
pub(crate) const ACTIONS_QUEUE: usize = 65_536;
/// How long a command sent by a rule has to be answered.
const RULE_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What the rules task is told.
pub(crate) enum RulesInput {
    /// Points were written: one store write's batches, in the order they were queued
    /// (one message per group rather than per batch: a wake-up of the rules thread per
    /// store write, not per MQTT read).
    Written(Vec<Arc<PointBatch>>),
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

/// A rule's definition as the engine takes it.
pub(crate) fn definition(rule: &Rule) -> RuleDefinition {
    RuleDefinition::new(rule.id.clone(), &rule.spec)
}

/// What the actions task is told, in the order the rules task decided it.
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

/// The rules task: evaluates written rows, applies rule and device changes in order, on
/// a thread of its own (see the module's notes); completes when that thread ends.
pub(crate) async fn run_rules(
    inner: Weak<Inner>,
    engine: Engine,
    input: mpsc::Receiver<RulesInput>,
    actions: mpsc::Sender<ActionsInput>,
) {
    let (finished, ended) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("fleetwire-rules".to_owned())
        .spawn(move || {
            evaluate(&inner, engine, input, &actions);
            drop(finished);
        });
    match spawned {
        Ok(_) => {
            let _ = ended.await;
        }
        Err(error) => {
            tracing::error!(%error, "cannot start the rules thread: rules are not evaluated");
        }
    }
}

/// The rules thread's loop: until the channel closes or the platform is gone.
fn evaluate(
    inner: &Weak<Inner>,
    mut engine: Engine,
    mut input: mpsc::Receiver<RulesInput>,
    actions: &mpsc::Sender<ActionsInput>,
) {
    let mut transitions = Vec::new();
    while let Some(message) = input.blocking_recv() {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut notice = None;
        match message {
            RulesInput::Written(batches) => {
                if engine.is_empty() {
                    continue;
                }
                for row in batches.iter().flat_map(|batch| batch.rows()) {
                    let Some(device) = inner.directory.cached(row.device) else {
                        continue;
                    };
                    let fields: SmallVec<[(&str, f64); 16]> = row.fields().collect();
                    engine.evaluate(
                        &device,
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
                notice = Some(ActionsInput::RuleChanged(Arc::from(id.as_str())));
            }
            RulesInput::Remove(id) => {
                engine.remove(id.as_str());
                notice = Some(ActionsInput::RuleChanged(Arc::from(id.as_str())));
            }
            RulesInput::DeviceChanged(device) => engine.device_changed(&device),
            RulesInput::DeviceDeleted(device) => {
                engine.forget_device(&device);
                notice = Some(ActionsInput::DeviceDeleted(device));
            }
            RulesInput::Reset { rule, device } => {
                engine.reset(rule.as_str(), &device);
                notice = Some(ActionsInput::AlarmReset {
                    rule: Arc::from(rule.as_str()),
                    device,
                });
            }
        }
        // Dropped before waiting for room in the actions queue: the platform may be
        // stopping.
        drop(inner);
        let outgoing = notice
            .into_iter()
            .chain(transitions.drain(..).map(ActionsInput::Transition));
        for message in outgoing {
            if actions.blocking_send(message).is_err() {
                return;
            }
        }
    }
}

/// The actions task: carries out each transition's actions, in order, on a thread of
/// its own within the runtime (`Handle::block_on`): its many short waits for the
/// registry then wake that thread directly, instead of queueing behind every
/// connection's task each time. Completes when that thread ends; aborting it stops the
/// thread at its next message.
pub(crate) async fn run_actions(inner: Weak<Inner>, input: mpsc::Receiver<ActionsInput>) {
    let runtime = tokio::runtime::Handle::current();
    let (stop, stopped) = oneshot::channel::<()>();
    let (finished, ended) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("fleetwire-actions".to_owned())
        .spawn(move || {
            runtime.block_on(carry_out_until_closed(inner, input, stopped));
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

/// The actions loop: until the channel closes, the platform is gone or `stop` fires
/// (its sender dropped).
async fn carry_out_until_closed(
    inner: Weak<Inner>,
    mut input: mpsc::Receiver<ActionsInput>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut actions = Actions::default();
    loop {
        let message = tokio::select! {
            message = input.recv() => message,
            _ = &mut stop => None,
        };
        let Some(message) = message else {
            return;
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match message {
            ActionsInput::Transition(transition) => {
                if let Err(error) = actions.carry_out(&inner, &transition).await {
                    tracing::warn!(
                        rule = %transition.rule,
                        device = %transition.device,
                        %error,
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

/// What the actions task remembers between transitions (see the module's notes).
#[derive(Default)]
struct Actions {
    /// Rules as the registry had them when first needed, by id.
    rules: HashMap<Arc<str>, Arc<Rule>>,
    /// The alarm each (rule, device) pair raised and has not cleared yet.
    open: HashMap<(Arc<str>, Arc<str>), AlarmId>,
}

impl Actions {
    /// The rule, from the cache or the registry; `None` when it was deleted since.
    async fn rule(&mut self, inner: &Inner, id: &str) -> Result<Option<Arc<Rule>>> {
        if let Some(rule) = self.rules.get(id) {
            return Ok(Some(Arc::clone(rule)));
        }
        let rule_id = RuleId::new(id)?;
        match inner.registry.rule(&rule_id).await {
            Ok(rule) => {
                let rule = Arc::new(rule);
                self.rules.insert(Arc::from(id), Arc::clone(&rule));
                Ok(Some(rule))
            }
            Err(fleetwire_registry::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn carry_out(&mut self, inner: &Inner, transition: &Transition) -> Result<()> {
        let Some(rule) = self.rule(inner, transition.rule.as_str()).await? else {
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
        let now = Timestamp::now().as_millis();
        let key = (
            Arc::from(transition.rule.as_str()),
            Arc::clone(&transition.device),
        );

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
                    self.open.insert(key, alarm.id.clone());
                    let alarm = Arc::new(alarm);
                    if is_new {
                        inner.events.publish(Event::Alarm(Arc::clone(&alarm)));
                    }
                    Some(alarm)
                }
                TransitionKind::Cleared => {
                    let cached = self.open.remove(&key);
                    clear_open_alarm(inner, &rule, &device, cached, values.clone()).await?
                }
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
}

/// Clears the open alarm of `rule` for `device`, if any: by its cached id when there is
/// one (one statement), else (or when that alarm is no longer open) by looking it up.
async fn clear_open_alarm(
    inner: &Inner,
    rule: &Rule,
    device: &DeviceId,
    cached: Option<AlarmId>,
    values: Vec<(String, f64)>,
) -> Result<Option<Arc<fleetwire_model::Alarm>>> {
    if let Some(id) = cached {
        match clear_alarm(inner, &id, "rule", values.clone()).await {
            Ok(cleared) => return Ok(Some(cleared)),
            // Cleared by hand meanwhile, or gone: whatever is open now is looked up.
            Err(Error::Conflict(_) | Error::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    match inner.registry.open_alarm(&rule.id, device).await? {
        Some(open) => Ok(Some(clear_alarm(inner, &open.id, "rule", values).await?)),
        None => Ok(None),
    }
}

/// Clears an alarm in the registry and tells the stream.
pub(crate) async fn clear_alarm(
    inner: &Inner,
    id: &AlarmId,
    by: &str,
    values: Vec<(String, f64)>,
) -> Result<Arc<fleetwire_model::Alarm>> {
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
    alarm: Option<&fleetwire_model::Alarm>,
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
