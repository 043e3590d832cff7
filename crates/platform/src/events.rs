//! The platform's events, as the live stream (`/api/v1/stream`) and the dashboard see
//! them: telemetry written, devices coming and going, alarms and commands changing.
//!
//! Two broadcast channels carry them: one for telemetry, which comes by the thousands per
//! second, and one for everything else (presence, alarms, commands), which is rare. A
//! subscriber listens only to the channels of the kinds it wants, so a client of alarms
//! alone is neither woken by every write nor dropped for lagging behind telemetry it
//! never asked for. Publishing never waits: a subscriber that falls more than
//! [`EVENT_BUFFER`] events behind on one channel loses the oldest and learns how many it
//! missed (the API then tells the client and drops it). Telemetry travels as the written
//! [`PointBatch`]es themselves, shared, so a busy store costs one `Arc` per written batch,
//! not one event per point; nothing is built when nobody listens.
//!
//! A subscriber that wants the telemetry of a few devices (a dashboard's device page)
//! gets a telemetry channel of its own, fed only with the batches that hold one of its
//! devices: it is not woken by every write of the whole fleet, and it is dropped for
//! lagging only when it cannot keep up with its own devices. Batches are routed through
//! an index by device, so the cost per written batch does not grow with the number of
//! such subscribers; the index is read-locked per batch (both writer threads publish at
//! once) and changed only when such a subscriber comes or goes (its subscription
//! removes itself when dropped).
//!
//! Order: a subscriber to both channels always takes waiting telemetry first, so an
//! alarm never overtakes the telemetry that raised it (the telemetry is published when
//! written, before the rules see it).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fleetwire_model::{Alarm, Command};
use fleetwire_store::Timestamp;
use parking_lot::RwLock;
use smallvec::SmallVec;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::batch::PointBatch;

/// Events a subscriber may fall behind by, per channel, before it misses some.
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

    /// Whether `kinds` includes this event's kind.
    pub fn is_one_of(&self, kinds: EventKinds) -> bool {
        match self {
            Event::Telemetry(_) => kinds.telemetry,
            Event::Presence { .. } => kinds.presence,
            Event::Alarm(_) => kinds.alarm,
            Event::Command(_) => kinds.command,
        }
    }
}

/// The kinds of events a subscriber wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKinds {
    /// Written telemetry.
    pub telemetry: bool,
    /// Devices connecting and disconnecting.
    pub presence: bool,
    /// Alarm changes.
    pub alarm: bool,
    /// Command changes.
    pub command: bool,
}

impl EventKinds {
    /// Every kind.
    pub const ALL: EventKinds = EventKinds {
        telemetry: true,
        presence: true,
        alarm: true,
        command: true,
    };

    /// No kind (a subscription to nothing waits forever).
    pub const NONE: EventKinds = EventKinds {
        telemetry: false,
        presence: false,
        alarm: false,
        command: false,
    };

    fn wants_changes(self) -> bool {
        self.presence || self.alarm || self.command
    }
}

impl Default for EventKinds {
    fn default() -> EventKinds {
        EventKinds::ALL
    }
}

/// Where events are published and subscribed to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventHub {
    /// Telemetry of every device.
    telemetry: broadcast::Sender<Event>,
    /// Presence, alarms and commands.
    changes: broadcast::Sender<Event>,
    /// Telemetry of chosen devices, one channel per subscriber.
    taps: Arc<DeviceTaps>,
}

impl Default for EventHub {
    fn default() -> EventHub {
        let (telemetry, _) = broadcast::channel(EVENT_BUFFER);
        let (changes, _) = broadcast::channel(EVENT_BUFFER);
        EventHub {
            telemetry,
            changes,
            taps: Arc::default(),
        }
    }
}

/// The subscribers to chosen devices' telemetry, and which of them wants each device.
#[derive(Debug, Default)]
struct DeviceTaps {
    /// Whether there is any tap (read without the lock by every telemetry publish).
    is_used: AtomicBool,
    routes: RwLock<Routes>,
}

#[derive(Debug, Default)]
struct Routes {
    /// Each subscriber's channel; `None` once it is gone (the slot is reused).
    taps: Vec<Option<broadcast::Sender<Event>>>,
    /// Device → the indices in `taps` of the subscribers that want it.
    by_device: HashMap<Arc<str>, SmallVec<[usize; 2]>, foldhash::fast::RandomState>,
}

impl DeviceTaps {
    /// A channel of the batches holding one of `devices`, and its slot (for
    /// [`unsubscribe`](DeviceTaps::unsubscribe)).
    fn subscribe(&self, devices: &[Arc<str>]) -> (broadcast::Receiver<Event>, usize) {
        let (sender, receiver) = broadcast::channel(EVENT_BUFFER);
        let mut routes = self.routes.write();
        let index = match routes.taps.iter().position(Option::is_none) {
            Some(free) => {
                routes.taps[free] = Some(sender);
                free
            }
            None => {
                routes.taps.push(Some(sender));
                routes.taps.len() - 1
            }
        };
        for device in devices {
            let wanting = routes.by_device.entry(Arc::clone(device)).or_default();
            if !wanting.contains(&index) {
                wanting.push(index);
            }
        }
        self.is_used.store(true, Ordering::Release);
        (receiver, index)
    }

    /// Forgets the subscriber in slot `index` (the slot is reused).
    fn unsubscribe(&self, index: usize) {
        let mut routes = self.routes.write();
        if let Some(slot) = routes.taps.get_mut(index) {
            *slot = None;
        }
        routes.by_device.retain(|_, indices| {
            indices.retain(|other| *other != index);
            !indices.is_empty()
        });
        self.is_used
            .store(routes.taps.iter().any(Option::is_some), Ordering::Release);
    }

    /// Sends `batch` once to every subscriber that wants one of its devices.
    fn publish(&self, batch: &Arc<PointBatch>) {
        let routes = self.routes.read();
        let mut wanting: SmallVec<[usize; 4]> = SmallVec::new();
        for device in batch.device_runs() {
            if let Some(indices) = routes.by_device.get(device) {
                for &index in indices {
                    if !wanting.contains(&index) {
                        wanting.push(index);
                    }
                }
            }
        }
        for index in wanting {
            if let Some(Some(sender)) = routes.taps.get(index) {
                // An error means the receiver is being dropped: its `Tap` unsubscribes.
                let _ = sender.send(Event::Telemetry(Arc::clone(batch)));
            }
        }
    }
}

/// A subscription's place among the device taps; leaves it when dropped.
#[derive(Debug)]
struct Tap {
    taps: Arc<DeviceTaps>,
    index: usize,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.taps.unsubscribe(self.index);
    }
}

impl EventHub {
    /// Publishes an event to every current subscriber of its kind's channel; free when
    /// there are none.
    pub fn publish(&self, event: Event) {
        let channel = match &event {
            Event::Telemetry(batch) => {
                if self.taps.is_used.load(Ordering::Acquire) {
                    self.taps.publish(batch);
                }
                &self.telemetry
            }
            _ => &self.changes,
        };
        if channel.receiver_count() > 0 {
            let _ = channel.send(event);
        }
    }

    /// Whether anybody listens (lets publishers skip building events).
    pub fn has_subscribers(&self) -> bool {
        self.telemetry.receiver_count() > 0
            || self.changes.receiver_count() > 0
            || self.taps.is_used.load(Ordering::Acquire)
    }

    /// A subscription to the events of `kinds` published from now on. It may also
    /// return events of other kinds that share a channel with them (presence, alarms
    /// and commands travel together): filter with [`Event::is_one_of`].
    pub fn subscribe(&self, kinds: EventKinds) -> Subscription {
        Subscription {
            telemetry: kinds.telemetry.then(|| self.telemetry.subscribe()),
            changes: kinds.wants_changes().then(|| self.changes.subscribe()),
            _tap: None,
        }
    }

    /// Like [`subscribe`](EventHub::subscribe), but the telemetry is only the batches
    /// holding a row of one of `devices` (the batch whole: it may hold other devices'
    /// rows too). The subscriber lags only when it falls behind on those.
    pub fn subscribe_to_devices(&self, kinds: EventKinds, devices: &[Arc<str>]) -> Subscription {
        let (telemetry, tap) = if kinds.telemetry {
            let (receiver, index) = self.taps.subscribe(devices);
            let tap = Tap {
                taps: Arc::clone(&self.taps),
                index,
            };
            (Some(receiver), Some(tap))
        } else {
            (None, None)
        };
        Subscription {
            telemetry,
            changes: kinds.wants_changes().then(|| self.changes.subscribe()),
            _tap: tap,
        }
    }
}

/// A subscriber's end of the event hub; see [`EventHub::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    telemetry: Option<broadcast::Receiver<Event>>,
    changes: Option<broadcast::Receiver<Event>>,
    /// For a subscription to chosen devices: its route, removed on drop (held, never read).
    _tap: Option<Tap>,
}

impl Subscription {
    /// The next event: waiting telemetry first, then the rest. `Lagged` when the
    /// subscriber fell too far behind on either channel, `Closed` once the hub is gone.
    pub async fn recv(&mut self) -> Result<Event, RecvError> {
        match (&mut self.telemetry, &mut self.changes) {
            (Some(telemetry), Some(changes)) => {
                tokio::select! {
                    biased;
                    event = telemetry.recv() => event,
                    event = changes.recv() => event,
                }
            }
            (Some(telemetry), None) => telemetry.recv().await,
            (None, Some(changes)) => changes.recv().await,
            (None, None) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(device: &str) -> Event {
        Event::Presence {
            device: Arc::from(device),
            online: true,
            at: Timestamp::from_millis(1),
        }
    }

    fn telemetry() -> Event {
        Event::Telemetry(Arc::new(PointBatch::default()))
    }

    #[tokio::test]
    async fn subscriber_of_changes_alone_never_sees_telemetry_nor_lags_behind_it() {
        let hub = EventHub::default();
        let mut changes = hub.subscribe(EventKinds {
            presence: true,
            ..EventKinds::NONE
        });
        for _ in 0..EVENT_BUFFER * 2 {
            hub.publish(telemetry());
        }
        hub.publish(presence("d1"));
        let event = changes.recv().await.expect("the presence event");
        assert!(matches!(event, Event::Presence { ref device, .. } if &**device == "d1"));
    }

    #[tokio::test]
    async fn waiting_telemetry_comes_before_a_later_change() {
        let hub = EventHub::default();
        let mut all = hub.subscribe(EventKinds::ALL);
        hub.publish(telemetry());
        hub.publish(presence("d1"));
        assert!(matches!(all.recv().await, Ok(Event::Telemetry(_))));
        assert!(matches!(all.recv().await, Ok(Event::Presence { .. })));
    }

    #[tokio::test]
    async fn falling_behind_on_telemetry_is_reported() {
        let hub = EventHub::default();
        let mut all = hub.subscribe(EventKinds::ALL);
        for _ in 0..EVENT_BUFFER + 3 {
            hub.publish(telemetry());
        }
        assert!(matches!(all.recv().await, Err(RecvError::Lagged(3))));
    }

    fn telemetry_of(devices: &[&str]) -> Event {
        let mut batch = PointBatch::default();
        for device in devices {
            batch.push(fleetwire_store::Point::new(
                device,
                "t",
                Timestamp::from_millis(1),
                1.0,
            ));
        }
        Event::Telemetry(Arc::new(batch))
    }

    fn devices_of(event: &Event) -> Vec<String> {
        match event {
            Event::Telemetry(batch) => batch.device_runs().map(str::to_owned).collect(),
            other => panic!("expected telemetry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn device_subscriber_gets_its_devices_batches_once_and_never_lags_behind_others() {
        let hub = EventHub::default();
        let mut pump = hub.subscribe_to_devices(
            EventKinds {
                telemetry: true,
                ..EventKinds::NONE
            },
            &[Arc::from("pump-1"), Arc::from("pump-2")],
        );
        for _ in 0..EVENT_BUFFER * 2 {
            hub.publish(telemetry_of(&["fan-1"]));
        }
        hub.publish(telemetry_of(&["fan-1", "pump-2", "pump-1"]));
        hub.publish(telemetry_of(&["pump-1"]));
        let first = pump
            .recv()
            .await
            .expect("no lag: the fans are not its devices");
        assert_eq!(devices_of(&first), ["fan-1", "pump-2", "pump-1"]);
        let second = pump.recv().await.expect("the second batch");
        assert_eq!(devices_of(&second), ["pump-1"]);
    }

    #[tokio::test]
    async fn device_subscriber_that_falls_behind_on_its_devices_is_told() {
        let hub = EventHub::default();
        let mut pump = hub.subscribe_to_devices(EventKinds::ALL, &[Arc::from("pump-1")]);
        for _ in 0..EVENT_BUFFER + 2 {
            hub.publish(telemetry_of(&["pump-1"]));
        }
        assert!(matches!(pump.recv().await, Err(RecvError::Lagged(2))));
    }

    #[test]
    fn a_device_subscriber_that_is_gone_is_forgotten() {
        let hub = EventHub::default();
        let kinds = EventKinds {
            telemetry: true,
            ..EventKinds::NONE
        };
        let first = hub.subscribe_to_devices(kinds, &[Arc::from("pump-1")]);
        let other = hub.subscribe_to_devices(kinds, &[Arc::from("pump-1"), Arc::from("fan-1")]);
        drop(first);
        assert!(hub.has_subscribers());
        drop(other);
        // Forgotten at once, though no batch of its devices was published since.
        assert!(!hub.has_subscribers());
        assert!(hub.taps.routes.read().by_device.is_empty());
        // Its slot is reused.
        let _second = hub.subscribe_to_devices(kinds, &[Arc::from("pump-2")]);
        assert_eq!(hub.taps.routes.read().taps.len(), 2);
        assert_eq!(
            hub.taps.routes.read().taps.iter().flatten().count(),
            1,
            "one slot in use"
        );
    }

    #[test]
    fn publishing_without_subscribers_is_free() {
        let hub = EventHub::default();
        assert!(!hub.has_subscribers());
        hub.publish(telemetry());
        let _alarms = hub.subscribe(EventKinds {
            alarm: true,
            ..EventKinds::NONE
        });
        assert!(hub.has_subscribers());
    }
}
