//! Rules at work: the rules thread evaluates every written telemetry row against the rule
//! engine and hands the resulting transitions to the actions thread (`actions.rs`).
//!
//! Who owns what: [`Automation`] owns the rules channel and both threads; the rules
//! thread owns the [`Engine`] (compiled rules, per-device samples and states): nobody else
//! touches it; rule changes and device changes reach it as [`RulesInput`] messages on the
//! same channel as the telemetry, so they apply in order. It runs on a thread of its own:
//! evaluation is synchronous and takes every written batch, so as a task it would wait
//! its turn behind every connection's task under load, and the writer threads behind it.
//!
//! The rules channel is bounded: when evaluation falls behind, the writer threads wait,
//! and so do the connections (backpressure, not loss: an alarm is never skipped). The
//! actions channel is bounded too, but far larger, since transitions are rare and slow
//! (database writes, HTTP).

use std::sync::Arc;

use fleetwire_model::{Rule, RuleId};
use fleetwire_registry::Registry;
use fleetwire_rules::{Engine, RuleDefinition};
use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::actions::{self, ACTIONS_QUEUE, ActionsInput, Actuators};
use crate::batch::PointBatch;
use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::events::{Event, EventHub};
use crate::writer::Observer;

/// Written groups (and rule changes) that may wait for the rules thread. A group is what
/// one store write took (up to the writer's `max_write_points`), so this bounds the
/// points held for the rules to a few million.
const RULES_QUEUE: usize = 64;
/// What the rules thread is told.
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
fn definition(rule: &Rule) -> RuleDefinition {
    RuleDefinition::new(rule.id.clone(), &rule.spec)
}

/// Hands written batches to the live stream and the rules thread (the writer's
/// observer).
pub(crate) struct Written {
    events: EventHub,
    rules: mpsc::Sender<RulesInput>,
}

impl Observer for Written {
    fn written(&self, batches: Vec<Arc<PointBatch>>) {
        for batch in &batches {
            self.events.publish(Event::Telemetry(Arc::clone(batch)));
        }
        // Blocking on purpose (this is a writer thread): when rule evaluation falls
        // behind, writes wait rather than alarms being skipped.
        let _ = self.rules.blocking_send(RulesInput::Written(batches));
    }
}

/// The rules channel, before the rules thread starts: the writer's observer is made
/// first (it feeds the channel), then [`Automation::start`] takes the rest.
pub(crate) struct RulesChannel {
    sender: mpsc::Sender<RulesInput>,
    receiver: mpsc::Receiver<RulesInput>,
}

impl RulesChannel {
    pub(crate) fn new() -> RulesChannel {
        let (sender, receiver) = mpsc::channel(RULES_QUEUE);
        RulesChannel { sender, receiver }
    }

    /// The writer's observer, publishing on `events` and feeding this channel.
    pub(crate) fn observer(&self, events: EventHub) -> Written {
        Written {
            events,
            rules: self.sender.clone(),
        }
    }
}

/// The rules' owner (see the module's notes).
pub(crate) struct Automation {
    rules: mpsc::Sender<RulesInput>,
    tasks: Vec<JoinHandle<()>>,
}

impl Automation {
    /// Loads the enabled rules and the open alarms from the registry into an engine and
    /// starts the rules and actions threads.
    pub(crate) async fn start(
        channel: RulesChannel,
        registry: &Registry,
        directory: Arc<Directory>,
        actuators: Actuators,
    ) -> Result<Automation> {
        let mut engine = Engine::default();
        for rule in registry.all_rules().await? {
            if !rule.spec.enabled {
                continue;
            }
            if let Err(error) = engine.insert(definition(&rule)) {
                tracing::error!(rule = %rule.id, %error, "stored rule skipped");
            }
        }
        for alarm in registry.open_alarms().await? {
            // A rule deleted or disabled since: its alarms wait for a person.
            let _ = engine.mark_active(alarm.rule_id.as_str(), alarm.device_id.as_str());
        }
        tracing::info!(rules = engine.len(), "rules loaded");
        let (actions_sender, actions_receiver) = mpsc::channel(ACTIONS_QUEUE);
        let RulesChannel { sender, receiver } = channel;
        let tasks = vec![
            tokio::spawn(run_rules(directory, engine, receiver, actions_sender)),
            tokio::spawn(actions::run(actuators, actions_receiver)),
        ];
        Ok(Automation {
            rules: sender,
            tasks,
        })
    }

    /// A rule was created or replaced (already stored and checked): it applies from the
    /// next message on; a disabled one stops applying.
    pub(crate) async fn apply(&self, rule: &Rule) -> Result<()> {
        let input = if rule.spec.enabled {
            RulesInput::Upsert(Box::new(definition(rule)))
        } else {
            RulesInput::Remove(rule.id.clone())
        };
        self.send(input).await
    }

    /// A rule was deleted.
    pub(crate) async fn remove(&self, id: &RuleId) -> Result<()> {
        self.send(RulesInput::Remove(id.clone())).await
    }

    /// A device's type or labels changed: rules match it again. Waits for room in the
    /// rules channel, like telemetry: a change is never dropped.
    pub(crate) async fn device_changed(&self, device: &str) {
        let _ = self
            .send(RulesInput::DeviceChanged(Arc::from(device)))
            .await;
    }

    /// A device was deleted: the rules forget it.
    pub(crate) async fn device_deleted(&self, device: &str) {
        let _ = self
            .send(RulesInput::DeviceDeleted(Arc::from(device)))
            .await;
    }

    /// An alarm was cleared by hand: its rule starts over for the device.
    pub(crate) async fn reset(&self, rule: RuleId, device: &str) {
        let _ = self
            .send(RulesInput::Reset {
                rule,
                device: Arc::from(device),
            })
            .await;
    }

    /// Stops both threads (at their next message).
    pub(crate) fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }

    async fn send(&self, input: RulesInput) -> Result<()> {
        self.rules
            .send(input)
            .await
            .map_err(|_| Error::ShuttingDown)
    }
}

/// The rules task: evaluates written rows, applies rule and device changes in order, on
/// a thread of its own (see the module's notes); completes when that thread ends.
async fn run_rules(
    directory: Arc<Directory>,
    engine: Engine,
    input: mpsc::Receiver<RulesInput>,
    actions: mpsc::Sender<ActionsInput>,
) {
    let (finished, ended) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("fleetwire-rules".to_owned())
        .spawn(move || {
            evaluate(&directory, engine, input, &actions);
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

/// The rules thread's loop: until the channel closes (the platform is gone).
fn evaluate(
    directory: &Directory,
    mut engine: Engine,
    mut input: mpsc::Receiver<RulesInput>,
    actions: &mpsc::Sender<ActionsInput>,
) {
    let mut transitions = Vec::new();
    while let Some(message) = input.blocking_recv() {
        let mut notice = None;
        match message {
            RulesInput::Written(batches) => {
                if engine.is_empty() {
                    continue;
                }
                for row in batches.iter().flat_map(|batch| batch.rows()) {
                    let Some(device) = directory.cached(row.device) else {
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
