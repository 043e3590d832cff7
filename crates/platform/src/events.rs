//! The platform's events, as the live stream (`/api/v1/stream`) and the dashboard see
//! them: telemetry written, devices coming and going, alarms and commands changing.
//!
//! One broadcast channel carries them all. Publishing never waits: a subscriber that falls
//! more than [`EVENT_BUFFER`] events behind loses the oldest and learns how many it
//! missed (the API then tells the client and drops it). Telemetry travels as the written
//! [`PointBatch`]es themselves, shared, so a busy store costs one `Arc` per write group,
//! not one event per point; nothing is built when nobody listens.

use std::sync::Arc;

use fleetwire_registry::{Alarm, Command};
use fleetwire_store::Timestamp;
use tokio::sync::broadcast;

use crate::batch::PointBatch;

/// Events a subscriber may fall behind by before it misses some.
pub const EVENT_BUFFER: usize = 4096;

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// Points were written (of one or many devices).
    Telemetry(Arc<PointBatch>),
    /// A device's first connection opened, or its last one closed.
    Presence {
        /// The device.
        device: Arc<str>,
        /// Whether it is connected now.
        online: bool,
        /// When.
        at: Timestamp,
    },
    /// An alarm was raised, acknowledged or cleared (its state after the change).
    Alarm(Arc<Alarm>),
    /// A command was sent, delivered, answered or expired (its state after the change).
    Command(Arc<Command>),
}

impl Event {
    /// Whether the event concerns `device`.
    pub fn concerns(&self, device: &str) -> bool {
        match self {
            Event::Telemetry(batch) => batch.iter().any(|point| point.device == device),
            Event::Presence { device: id, .. } => &**id == device,
            Event::Alarm(alarm) => alarm.device_id.as_str() == device,
            Event::Command(command) => command.device_id.as_str() == device,
        }
    }
}

/// Where events are published and subscribed to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Event>,
}

impl Default for EventHub {
    fn default() -> EventHub {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        EventHub { sender }
    }
}

impl EventHub {
    /// Publishes an event to every current subscriber; free when there are none.
    pub fn publish(&self, event: Event) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(event);
        }
    }

    /// Whether anybody listens (lets publishers skip building events).
    pub fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// A subscription to every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
