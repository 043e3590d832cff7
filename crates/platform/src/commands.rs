//! Commands: platform → device requests with an id, a timeout and a reported result.
//!
//! A command is stored (registry, status `pending`), then published at QoS 1 on
//! `devices/{id}/commands/{command id}` as `{"id", "name", "params"}`. The device's
//! `PUBACK` makes it `delivered`; its answer on `.../commands/{command id}/response`
//! (`{"status": "ok" | "error", "result": ...}`) makes it `succeeded` or `failed`; a
//! command with no answer by its deadline becomes `expired`. A device that is offline
//! (no session subscribed to its commands) gets the command when it is back, as long as
//! the deadline has not passed: unrouted commands are published again every second.
//! Every change is an event on the live stream.
//!
//! Who owns what: the registry owns command state (so it survives restarts and is shared
//! between nodes); [`Commands`] owns the in-memory list of commands still waiting for a
//! subscriber, and its task the next deadline. It reaches devices through the platform's
//! [`MqttLink`]. At start the task reloads the pending commands from the registry: queued
//! messages do not survive a restart, so they are published again.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetwire_formats::{CommandStatus as ResponseStatus, parse_command_response};
use fleetwire_model::{Command, CommandId, DeviceId, DeviceTopic, NewCommand};
use fleetwire_mqtt_codec::QoS;
use fleetwire_registry::Registry;
use fleetwire_time::Timestamp;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::events::{Event, EventHub};
use crate::mqtt::{MqttLink, Outgoing};

/// How often commands nobody subscribed to are published again.
const REPUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// A command published to nobody yet.
struct Waiting {
    command: Arc<Command>,
    /// When it was last published; `None`: never since this process started.
    published_at: Option<Instant>,
}

impl Waiting {
    fn published_now(command: &Arc<Command>) -> Waiting {
        Waiting {
            command: Arc::clone(command),
            published_at: Some(Instant::now()),
        }
    }

    /// When it is to be published again (`now` for one never published here).
    fn due_at(&self, now: Instant) -> Instant {
        self.published_at.map_or(now, |at| at + REPUBLISH_INTERVAL)
    }
}

/// What the command task is told by broker callbacks and API calls.
pub(crate) enum Notice {
    /// The device acknowledged the command's `PUBLISH`.
    Delivered(CommandId),
}

/// The owner of commands in flight (see the module's notes); its task is [`run`].
pub(crate) struct Commands {
    registry: Registry,
    events: EventHub,
    link: Arc<dyn MqttLink>,
    notices: mpsc::UnboundedSender<Notice>,
    /// Commands published to nobody yet, by id, with when each was last published.
    unrouted: Mutex<HashMap<CommandId, Waiting>>,
    /// Wakes the task: a new deadline, or a new unrouted command.
    wake: Notify,
}

impl Commands {
    /// The commands' owner and its task (on the current Tokio runtime), which ends when the
    /// owner is dropped. The commands still pending from before a restart are reloaded
    /// first, so no command sent from now on is mistaken for one of them.
    pub(crate) async fn start(
        registry: Registry,
        events: EventHub,
        link: Arc<dyn MqttLink>,
    ) -> (Arc<Commands>, JoinHandle<()>) {
        let (notices, receiver) = mpsc::unbounded_channel();
        let commands = Arc::new(Commands {
            registry,
            events,
            link,
            notices,
            unrouted: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        });
        commands.reload_pending().await;
        let next_expiry = commands.next_deadline().await;
        let task = tokio::spawn(run(Arc::downgrade(&commands), receiver, next_expiry));
        (commands, task)
    }

    /// A device was deleted, and its commands with it: those waiting are not published
    /// any more.
    pub(crate) fn forget_device(&self, device: &DeviceId) {
        self.unrouted
            .lock()
            .retain(|_, waiting| waiting.command.device_id != *device);
    }

    /// A device's answer on `devices/{device}/commands/{command}/response`.
    pub(crate) async fn respond(&self, device: &str, command: &str, payload: &[u8]) -> Result<()> {
        let response = parse_command_response(payload)?;
        let (device_id, command_id) = ids(device, command)?;
        // Checks that the command is this device's (NotFound otherwise).
        self.registry.command(&device_id, &command_id).await?;
        let succeeded = response.status == ResponseStatus::Ok;
        let now = Timestamp::now().as_millis();
        match self
            .registry
            .complete_command(&command_id, succeeded, Some(response.result), now)
            .await?
        {
            Some(command) => {
                self.unrouted.lock().remove(&command.id);
                self.events.publish(Event::Command(Arc::new(command)));
            }
            None => tracing::debug!(
                device,
                command,
                "answer to a command that is already final, ignored"
            ),
        }
        Ok(())
    }
}

fn ids(device: &str, command: &str) -> Result<(DeviceId, CommandId)> {
    let device_id = DeviceId::new(device)
        .map_err(|error| Error::InvalidDevice(format!("device id {device:?}: {error}")))?;
    let command_id = CommandId::new(command).map_err(|error| Error::NotFound {
        kind: "command",
        id: format!("{command} ({error})"),
    })?;
    Ok((device_id, command_id))
}

/// What the API asks for.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    /// The command's name (`reboot`).
    pub name: String,
    /// Its parameters: a JSON object, or null.
    pub params: serde_json::Value,
    /// How long the device has to answer.
    pub timeout: Duration,
}

impl Commands {
    /// Stores a command and publishes it to the device.
    pub(crate) async fn send(&self, device: &DeviceId, request: CommandRequest) -> Result<Command> {
        let timeout_ms = i64::try_from(request.timeout.as_millis()).unwrap_or(i64::MAX);
        let command = self
            .registry
            .create_command(
                NewCommand {
                    device_id: device.clone(),
                    name: request.name,
                    params: request.params,
                    timeout_ms,
                },
                Timestamp::now().as_millis(),
            )
            .await?;
        let command = Arc::new(command);
        self.events.publish(Event::Command(Arc::clone(&command)));
        if !self.publish(&command).await {
            self.unrouted
                .lock()
                .insert(command.id.clone(), Waiting::published_now(&command));
        }
        // A new deadline for the task to watch.
        self.wake.notify_one();
        Ok((*command).clone())
    }

    /// Publishes a command at QoS 1; whether some session took it.
    async fn publish(&self, command: &Command) -> bool {
        let topic = DeviceTopic::command(&command.device_id, &command.id);
        let payload = serde_json::json!({
            "id": command.id.as_str(),
            "name": command.name,
            "params": command.params,
        });
        let notices = self.notices.clone();
        let id = command.id.clone();
        // The deadline travels with the message: a device that was offline must not get
        // (and run) a command already reported expired.
        let left = command.expires_at - Timestamp::now().as_millis();
        let message = Outgoing::new(topic, Bytes::from(payload.to_string()), QoS::AtLeastOnce)
            .expiring_in(Duration::from_millis(left.max(1) as u64))
            .on_delivered(move || {
                let _ = notices.send(Notice::Delivered(id));
            });
        match self.link.publish(message).await {
            Ok(queued) => queued > 0,
            Err(error) => {
                tracing::warn!(
                    command = %command.id,
                    error = &error as &dyn std::error::Error,
                    "cannot publish a command; it is tried again"
                );
                false
            }
        }
    }
}

/// The command task: records deliveries, republishes unrouted commands, expires overdue
/// ones. Ends when the platform is gone.
async fn run(
    commands: Weak<Commands>,
    mut notices: mpsc::UnboundedReceiver<Notice>,
    mut next_expiry: Option<i64>,
) {
    loop {
        let wake = {
            let Some(strong) = commands.upgrade() else {
                return;
            };
            let until_republish = strong
                .next_republish()
                .map(|at| at.saturating_duration_since(Instant::now()));
            let now = Timestamp::now().as_millis();
            let until_expiry =
                next_expiry.map(|at| Duration::from_millis((at - now).max(0) as u64));
            let sleep = until_expiry
                .into_iter()
                .chain(until_republish)
                .min()
                .unwrap_or(Duration::from_secs(3600));
            let woken = Arc::clone(&strong);
            drop(strong);
            tokio::select! {
                notice = notices.recv() => match notice {
                    Some(notice) => Some(notice),
                    None => return,
                },
                () = woken.wake.notified() => None,
                () = tokio::time::sleep(sleep) => None,
            }
        };
        let Some(commands) = commands.upgrade() else {
            return;
        };
        let was_notice = wake.is_some();
        if let Some(Notice::Delivered(id)) = wake {
            commands.delivered(&id).await;
        }
        commands.republish_due().await;
        let now = Timestamp::now().as_millis();
        if next_expiry.is_none_or(|at| at <= now) || !was_notice {
            commands.expire_due(now).await;
            next_expiry = commands.next_deadline().await;
        }
    }
}

impl Commands {
    /// The device acknowledged a command's `PUBLISH`.
    async fn delivered(&self, id: &CommandId) {
        let at = Timestamp::now().as_millis();
        match self.registry.mark_command_delivered(id, at).await {
            Ok(Some(command)) => self.events.publish(Event::Command(Arc::new(command))),
            Ok(None) => {}
            Err(error) => tracing::warn!(
                command = %id,
                error = &error as &dyn std::error::Error,
                "cannot record a delivery"
            ),
        }
    }

    /// Commands still pending from before a restart: the sessions that held them are
    /// gone, so they are published again, like commands nobody has taken yet.
    async fn reload_pending(&self) {
        match self
            .registry
            .pending_commands(Timestamp::now().as_millis())
            .await
        {
            Ok(pending) => {
                if !pending.is_empty() {
                    tracing::info!(
                        commands = pending.len(),
                        "pending commands will be sent again"
                    );
                }
                let mut unrouted = self.unrouted.lock();
                for command in pending {
                    // Due at once: the sessions that held them are gone.
                    unrouted.insert(
                        command.id.clone(),
                        Waiting {
                            command: Arc::new(command),
                            published_at: None,
                        },
                    );
                }
            }
            Err(error) => tracing::warn!(
                error = &error as &dyn std::error::Error,
                "cannot reload pending commands"
            ),
        }
    }

    /// When the next waiting command is due to be published again.
    fn next_republish(&self) -> Option<Instant> {
        let now = Instant::now();
        self.unrouted
            .lock()
            .values()
            .map(|waiting| waiting.due_at(now))
            .min()
    }

    /// Publishes again the commands nobody took that were last published a
    /// [`REPUBLISH_INTERVAL`] ago or more; keeps those still not taken.
    async fn republish_due(&self) {
        let now = Instant::now();
        let due: Vec<Arc<Command>> = self
            .unrouted
            .lock()
            .values()
            .filter(|waiting| waiting.due_at(now) <= now)
            .map(|waiting| Arc::clone(&waiting.command))
            .collect();
        let deadline = Timestamp::now().as_millis();
        for command in due {
            let is_over = command.expires_at <= deadline || self.publish(&command).await;
            let mut unrouted = self.unrouted.lock();
            if is_over {
                unrouted.remove(&command.id);
            } else if let Some(waiting) = unrouted.get_mut(&command.id) {
                waiting.published_at = Some(Instant::now());
            }
        }
    }

    async fn expire_due(&self, now: i64) {
        match self.registry.expire_commands(now).await {
            Ok(expired) => {
                for command in expired {
                    self.unrouted.lock().remove(&command.id);
                    self.events.publish(Event::Command(Arc::new(command)));
                }
            }
            Err(error) => tracing::warn!(
                error = &error as &dyn std::error::Error,
                "cannot expire commands"
            ),
        }
    }

    async fn next_deadline(&self) -> Option<i64> {
        match self.registry.next_command_expiry().await {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "cannot read the next command deadline"
                );
                // Try again in a second.
                Some(Timestamp::now().as_millis() + 1000)
            }
        }
    }
}
