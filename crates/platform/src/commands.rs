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
//! between nodes); the command task owned by this module owns the in-memory list of
//! commands still waiting for a subscriber and the next deadline. At start the task
//! reloads the pending commands from the registry: queued messages do not survive a
//! restart, so they are published again.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use fleetwire_formats::{CommandStatus as ResponseStatus, parse_command_response};
use fleetwire_model::{Command, CommandId, DeviceId, NewCommand};
use fleetwire_mqtt_codec::{QoS, TopicName};
use fleetwire_store::Timestamp;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::error::{Error, Result};
use crate::events::Event;
use crate::platform::Inner;

/// How often commands nobody subscribed to are published again.
const REPUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// What the command task is told by broker callbacks and API calls.
pub(crate) enum Notice {
    /// The device acknowledged the command's `PUBLISH`.
    Delivered(CommandId),
}

/// The command machinery's shared half; the task (see [`run`]) is the other.
pub(crate) struct Commands {
    notices: mpsc::UnboundedSender<Notice>,
    /// Commands published to nobody yet, by id, with their device.
    unrouted: Mutex<HashMap<CommandId, Arc<Command>>>,
    /// Wakes the task: a new deadline, or a new unrouted command.
    wake: Notify,
}

impl Commands {
    pub(crate) fn new() -> (Commands, mpsc::UnboundedReceiver<Notice>) {
        let (notices, receiver) = mpsc::unbounded_channel();
        let commands = Commands {
            notices,
            unrouted: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        };
        (commands, receiver)
    }

    /// A device's answer on `devices/{device}/commands/{command}/response`.
    pub(crate) async fn respond(
        &self,
        inner: &Inner,
        device: &str,
        command: &str,
        payload: &[u8],
    ) -> Result<()> {
        let response = parse_command_response(payload)?;
        let (device_id, command_id) = ids(device, command)?;
        // Checks that the command is this device's (NotFound otherwise).
        inner.registry.command(&device_id, &command_id).await?;
        let succeeded = response.status == ResponseStatus::Ok;
        let now = Timestamp::now().as_millis();
        match inner
            .registry
            .complete_command(&command_id, succeeded, Some(response.result), now)
            .await?
        {
            Some(command) => {
                self.unrouted.lock().remove(&command.id);
                inner.events.publish(Event::Command(Arc::new(command)));
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

impl Inner {
    /// Stores a command and publishes it to the device.
    pub(crate) async fn send_command(
        &self,
        device: &DeviceId,
        request: CommandRequest,
    ) -> Result<Command> {
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
        if !self.publish_command(&command) {
            self.commands
                .unrouted
                .lock()
                .insert(command.id.clone(), Arc::clone(&command));
        }
        // A new deadline for the task to watch.
        self.commands.wake.notify_one();
        Ok((*command).clone())
    }

    /// Publishes a command at QoS 1; whether some session took it.
    fn publish_command(&self, command: &Command) -> bool {
        let Some(broker) = self.broker() else {
            return false;
        };
        let topic = format!("devices/{}/commands/{}", command.device_id, command.id);
        let Ok(topic) = TopicName::new(topic) else {
            tracing::error!(command = %command.id, "command topic is not a valid topic name");
            return false;
        };
        let payload = serde_json::json!({
            "id": command.id.as_str(),
            "name": command.name,
            "params": command.params,
        });
        let notices = self.commands.notices.clone();
        let id = command.id.clone();
        // The deadline travels with the message: a device that was offline must not get
        // (and run) a command already reported expired.
        let left = command.expires_at - Timestamp::now().as_millis();
        let expires_in = Duration::from_millis(left.max(1) as u64);
        let queued = broker.publish_tracked(
            topic,
            Bytes::from(payload.to_string()),
            QoS::AtLeastOnce,
            Some(expires_in),
            move || {
                let _ = notices.send(Notice::Delivered(id));
            },
        );
        queued > 0
    }
}

/// The command task: records deliveries, republishes unrouted commands, expires overdue
/// ones. Ends when the platform is gone.
pub(crate) async fn run(inner: Weak<Inner>, mut notices: mpsc::UnboundedReceiver<Notice>) {
    let mut next_expiry = match inner.upgrade() {
        Some(inner) => {
            reload_pending(&inner).await;
            next_deadline(&inner).await
        }
        None => return,
    };
    loop {
        let wake = {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let has_unrouted = !strong.commands.unrouted.lock().is_empty();
            let now = Timestamp::now().as_millis();
            let until_expiry =
                next_expiry.map(|at| Duration::from_millis((at - now).max(0) as u64));
            let sleep = match (until_expiry, has_unrouted) {
                (Some(expiry), true) => expiry.min(REPUBLISH_INTERVAL),
                (Some(expiry), false) => expiry,
                (None, true) => REPUBLISH_INTERVAL,
                (None, false) => Duration::from_secs(3600),
            };
            let woken = Arc::clone(&strong);
            drop(strong);
            tokio::select! {
                notice = notices.recv() => match notice {
                    Some(notice) => Some(notice),
                    None => return,
                },
                () = woken.commands.wake.notified() => None,
                () = tokio::time::sleep(sleep) => None,
            }
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let was_notice = wake.is_some();
        if let Some(Notice::Delivered(id)) = wake {
            let at = Timestamp::now().as_millis();
            match inner.registry.mark_command_delivered(&id, at).await {
                Ok(Some(command)) => inner.events.publish(Event::Command(Arc::new(command))),
                Ok(None) => {}
                Err(error) => tracing::warn!(command = %id, %error, "cannot record a delivery"),
            }
        }
        republish_unrouted(&inner);
        let now = Timestamp::now().as_millis();
        if next_expiry.is_none_or(|at| at <= now) || !was_notice {
            expire_due(&inner, now).await;
            next_expiry = next_deadline(&inner).await;
        }
    }
}

/// Commands still pending from before a restart: the sessions that held them are gone,
/// so they are published again, like commands nobody has taken yet.
async fn reload_pending(inner: &Inner) {
    match inner
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
            let mut unrouted = inner.commands.unrouted.lock();
            for command in pending {
                unrouted.insert(command.id.clone(), Arc::new(command));
            }
        }
        Err(error) => tracing::warn!(%error, "cannot reload pending commands"),
    }
}

/// Publishes again the commands nobody took; keeps those still not taken.
fn republish_unrouted(inner: &Inner) {
    let waiting: Vec<Arc<Command>> = inner.commands.unrouted.lock().values().cloned().collect();
    let now = Timestamp::now().as_millis();
    for command in waiting {
        if command.expires_at <= now || inner.publish_command(&command) {
            inner.commands.unrouted.lock().remove(&command.id);
        }
    }
}

async fn expire_due(inner: &Inner, now: i64) {
    match inner.registry.expire_commands(now).await {
        Ok(expired) => {
            for command in expired {
                inner.commands.unrouted.lock().remove(&command.id);
                inner.events.publish(Event::Command(Arc::new(command)));
            }
        }
        Err(error) => tracing::warn!(%error, "cannot expire commands"),
    }
}

async fn next_deadline(inner: &Inner) -> Option<i64> {
    match inner.registry.next_command_expiry().await {
        Ok(next) => next,
        Err(error) => {
            tracing::warn!(%error, "cannot read the next command deadline");
            // Try again in a second.
            Some(Timestamp::now().as_millis() + 1000)
        }
    }
}
