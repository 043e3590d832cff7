//! A client's session: what it subscribed to, what is waiting to be sent to it, and the
//! QoS 1/2 state of both directions.
//!
//! Ownership: a [`Session`] is shared (`Arc`) by the session table, the subscription
//! tree (so routing reaches it without a lookup), and the connection currently attached
//! to it. All mutable state sits behind one short-lived mutex that is never held across
//! an `.await`. Publishers push [`Delivery`]s into `pending` and wake the connection's
//! writer through [`Session::wake`]; the writer moves them to the wire and, for QoS 1/2,
//! into `inflight` until the client acknowledges them. A persistent session outlives its
//! connections, so a reconnecting client gets its queued and unacknowledged messages.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fleetwire_mqtt_codec::{
    Packet, PacketId, Properties, ProtocolVersion, QoS, SubscriptionOptions, TopicFilter, TopicName,
};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::compact;
use crate::park::{Lot, Token};
use crate::stats;

/// Identity of a session inside this broker process; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub(crate) u64);

/// The MQTT client identifier a session belongs to. Shared text: the session table's
/// key and the session hold one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(Arc<str>);

impl ClientId {
    pub(crate) fn new(text: String) -> ClientId {
        ClientId(Arc::from(text))
    }

    /// The identifier's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets the session table be searched by `&str`, without making a `ClientId`.
impl std::borrow::Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An application message as the broker received it; shared by every delivery of it.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) topic: TopicName,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) is_retained: bool,
    /// 5.0 properties that travel with the message (content type, user properties, ...).
    pub(crate) properties: MessageProperties,
    /// The session that published it, for the 5.0 no-local option.
    pub(crate) origin: Option<SessionId>,
    /// Whether topic and payload have allocations of their own (not slices of a read
    /// buffer), so keeping the message long costs only its own size.
    pub(crate) is_compact: bool,
    /// The compact copy made for long-lived queues, shared by all of them.
    pub(crate) stored_copy: OnceLock<Arc<Message>>,
    /// Told when a client first has the message ([`crate::Broker::publish_tracked`]).
    pub(crate) receipt: Option<Arc<Receipt>>,
    /// When the message stops being worth delivering (5.0 message expiry interval, or the
    /// platform's deadline for a command): queued copies still waiting are dropped then.
    pub(crate) expires_at: Option<Instant>,
    /// Its id in the durable state, given when it is first queued for a persistent
    /// session ([`crate::StateStore`]); never reused.
    pub(crate) durable_id: OnceLock<u64>,
}

/// A message's 5.0 properties. Most messages have none, so those cost one pointer
/// instead of the 352 bytes of a [`Properties`] (a message's size was mostly this).
#[derive(Debug, Clone, Default)]
pub(crate) struct MessageProperties(Option<Box<Properties>>);

static NO_PROPERTIES: LazyLock<Properties> = LazyLock::new(Properties::default);

impl MessageProperties {
    pub(crate) fn new(properties: Properties) -> MessageProperties {
        if properties.is_empty() {
            MessageProperties(None)
        } else {
            MessageProperties(Some(Box::new(properties)))
        }
    }

    /// The properties (empty ones when there are none).
    pub(crate) fn get(&self) -> &Properties {
        self.0.as_deref().unwrap_or(&NO_PROPERTIES)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// A callback run once, when a tracked message first reaches a client.
pub(crate) struct Receipt {
    callback: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Receipt {
    pub(crate) fn new(callback: impl FnOnce() + Send + 'static) -> Receipt {
        Receipt {
            callback: Mutex::new(Some(Box::new(callback))),
        }
    }

    /// Runs the callback, the first time only.
    pub(crate) fn fire(&self) {
        let callback = self.callback.lock().take();
        if let Some(callback) = callback {
            callback();
        }
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt")
    }
}

impl Message {
    /// This message in allocations of its own, for queues that may hold it for long
    /// (offline sessions): otherwise its payload, a slice of the publisher's read buffer,
    /// would keep that whole buffer alive. The copy is made once and shared.
    pub(crate) fn for_storage(self: &Arc<Message>) -> Arc<Message> {
        if self.is_compact {
            return Arc::clone(self);
        }
        Arc::clone(self.stored_copy.get_or_init(|| {
            Arc::new(Message {
                topic: compact::topic(&self.topic),
                payload: compact::payload(&self.payload),
                qos: self.qos,
                is_retained: self.is_retained,
                properties: self.properties.clone(),
                origin: self.origin,
                is_compact: true,
                stored_copy: OnceLock::new(),
                receipt: self.receipt.clone(),
                expires_at: self.expires_at,
                durable_id: self.durable_id.clone(),
            })
        }))
    }

    /// Whether the message expired by `now`.
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// What is left of its expiry interval at `now`, in whole seconds rounded up (what a
    /// 5.0 receiver is told, MQTT-3.3.2-6); `None` when it never expires.
    pub(crate) fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let left = self.expires_at?.saturating_duration_since(now);
        let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(seconds).unwrap_or(u32::MAX).max(1))
    }
}

/// The instant a message published now with this 5.0 expiry interval expires.
pub(crate) fn expiry_from_interval(interval: Option<u32>) -> Option<Instant> {
    interval.and_then(|seconds| Instant::now().checked_add(Duration::from_secs(u64::from(seconds))))
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) message: Arc<Message>,
    /// Already downgraded to the subscription's QoS.
    pub(crate) qos: QoS,
    pub(crate) is_retained: bool,
    pub(crate) subscription_ids: Vec<u32>,
}

impl Delivery {
    /// What the message weighs in a queue: its topic and payload.
    pub(crate) fn size(&self) -> usize {
        self.message.topic.as_str().len() + self.message.payload.len()
    }
}

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Named after the packets awaited, which all start with "Pub".
#[allow(clippy::enum_variant_names)]
pub(crate) enum Awaiting {
    /// QoS 1 sent, waiting for `PUBACK`.
    PubAck,
    /// QoS 2 sent, waiting for `PUBREC`.
    PubRec,
    /// `PUBREL` sent, waiting for `PUBCOMP`.
    PubComp,
}

#[derive(Debug)]
pub(crate) struct Inflight {
    pub(crate) packet_id: PacketId,
    pub(crate) delivery: Delivery,
    pub(crate) awaiting: Awaiting,
}

/// The connection attached to a session, identified by a generation number so that a
/// connection that was taken over cannot disturb its successor.
#[derive(Debug, Clone)]
pub(crate) struct Attachment {
    pub(crate) generation: u64,
    pub(crate) link: Link,
}

/// How to reach the attached connection.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    /// Its reader and writer tasks are running.
    Active(Arc<Signals>),
    /// It is parked in its listener's lot, without tasks: any signal resumes it, and the
    /// resumed connection reads what happened from the session's state.
    Parked { lot: Arc<Lot>, token: Token },
}

/// What the session's side uses to reach a running connection.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    /// Wakes the reader to close it (takeover, user disconnected, write failed).
    pub(crate) kick: Notify,
    /// Wakes the writer: something is queued, or it must stop.
    pub(crate) wake: Notify,
    /// The writer holds drained bytes it has not finished writing: not idle, so the
    /// connection cannot park. Set under the session lock, cleared after the write.
    pub(crate) is_writing: AtomicBool,
    /// The reader is writing its own acknowledgements straight to the socket (the writer
    /// was idle): the writer must not write until it is released. Set and cleared under
    /// the session lock.
    pub(crate) is_reader_writing: AtomicBool,
    /// The writer found the reader writing and waits for `wake`: the reader wakes it when
    /// it is done. Set and cleared under the session lock.
    pub(crate) is_writer_waiting: AtomicBool,
    /// Notified after each write of the writer: a reader waiting for its backlog of
    /// replies to shrink looks again.
    pub(crate) drained: Notify,
    /// What the reader could not write without waiting (the socket's buffer was full):
    /// the writer sends it first, before anything it drains.
    pub(crate) unsent: Mutex<BytesMut>,
}

impl Attachment {
    /// Wakes the connection's reader to close it.
    pub(crate) fn kick(&self) {
        match &self.link {
            Link::Active(signals) => signals.kick.notify_one(),
            Link::Parked { lot, token } => lot.wake(*token),
        }
    }

    /// Wakes the connection's writer.
    pub(crate) fn wake(&self) {
        match &self.link {
            Link::Active(signals) => signals.wake.notify_one(),
            Link::Parked { lot, token } => lot.wake(*token),
        }
    }

    /// Tells both halves of the connection that they are no longer attached.
    pub(crate) fn detach_signal(&self) {
        self.kick();
        self.wake();
    }
}

#[derive(Debug)]
pub(crate) struct SessionState {
    pub(crate) attachment: Option<Attachment>,
    pub(crate) version: ProtocolVersion,
    /// Packets the reader asks the writer to send (acks, `SUBACK`, ...), sent first.
    pub(crate) control: VecDeque<Packet>,
    pub(crate) pending: VecDeque<Delivery>,
    pub(crate) inflight: VecDeque<Inflight>,
    pub(crate) inflight_limit: u32,
    pub(crate) queue_limit: u32,
    /// Bytes (topics and payloads) in `pending`, saturating (the limit is at most
    /// `u32::MAX`; 4 bytes fit in the padding after `queue_limit`).
    queued_bytes: u32,
    next_packet_id: PacketId,
    /// QoS 2 packet ids received and answered with `PUBREC`, waiting for `PUBREL`.
    pub(crate) incoming_qos2: Vec<PacketId>,
    pub(crate) subscriptions: Subscriptions,
    pub(crate) is_persistent: bool,
    /// 5.0 session expiry in seconds after disconnect; `u32::MAX` never expires.
    pub(crate) expiry_interval: u32,
    pub(crate) disconnected_at: Option<Instant>,
    /// The writer should flush `control` and close the socket.
    pub(crate) is_closing: bool,
    /// Largest packet the client accepts (5.0 maximum packet size).
    pub(crate) client_max_packet_size: Option<u32>,
    /// A publisher is paused waiting for this queue to drain.
    pub(crate) has_waiters: bool,
    /// The client did not keep up within the grace period: publishers no longer wait.
    pub(crate) is_slow: bool,
    /// The attached connection is being closed because its user was disconnected
    /// ([`crate::Broker::disconnect_user`]; set before its reader is kicked).
    pub(crate) is_revoked: bool,
    /// The reader asks the (idle) writer to stop and hand its socket half back, so that
    /// the connection can park.
    pub(crate) is_parking: bool,
}

/// A session: identity plus its state behind a mutex.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: SessionId,
    pub(crate) client_id: ClientId,
    /// The user that created the session; only it may resume the session.
    pub(crate) owner: Option<Arc<str>>,
    pub(crate) state: Mutex<SessionState>,
    /// Signals publishers paused by flow control that the queue has room again.
    pub(crate) space: Notify,
    /// The session is persistent and kept in the broker's durable state: its changes are
    /// saved. Read without the lock when routing; set and cleared under it.
    pub(crate) is_saved: AtomicBool,
    /// Completed socket writes of the attached connection: a paused publisher that sees
    /// this move knows the client is reading, however slowly, and keeps waiting. (Only
    /// compared for change: 32 bits leave room for `is_saved` in the same word.)
    pub(crate) progress: AtomicU32,
}

/// A session's subscriptions by filter. Most sessions hold none or a few and many are
/// idle, so the map is allocated with the first one and freed with the last.
#[derive(Debug, Default)]
// Boxed so that a session without subscriptions spends 8 bytes here, not 48.
#[allow(clippy::box_collection)]
pub(crate) struct Subscriptions(Option<Box<HashMap<TopicFilter, Subscribed>>>);

/// A subscription's options and its 5.0 identifier.
type Subscribed = (SubscriptionOptions, Option<u32>);

impl Subscriptions {
    /// Adds or replaces the subscription to `filter`, with its 5.0 identifier.
    pub(crate) fn insert(
        &mut self,
        filter: TopicFilter,
        options: SubscriptionOptions,
        subscription_id: Option<u32>,
    ) {
        self.0
            .get_or_insert_default()
            .insert(filter, (options, subscription_id));
    }

    /// Every subscription: filter, options and identifier.
    pub(crate) fn iter(
        &self,
    ) -> impl Iterator<Item = (&TopicFilter, SubscriptionOptions, Option<u32>)> {
        self.0
            .iter()
            .flat_map(|map| map.iter())
            .map(|(filter, (options, id))| (filter, *options, *id))
    }

    /// How many subscriptions the session holds.
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }

    /// Whether the session holds a subscription to `filter`.
    pub(crate) fn contains(&self, filter: &TopicFilter) -> bool {
        self.0.as_ref().is_some_and(|map| map.contains_key(filter))
    }

    pub(crate) fn remove(&mut self, filter: &TopicFilter) -> Option<SubscriptionOptions> {
        let map = self.0.as_mut()?;
        let removed = map.remove(filter).map(|(options, _)| options);
        if map.is_empty() {
            self.0 = None;
        }
        removed
    }

    /// Empties the set; returns the filters it held.
    pub(crate) fn take_filters(&mut self) -> Vec<TopicFilter> {
        self.0
            .take()
            .map(|map| map.into_keys().collect())
            .unwrap_or_default()
    }
}

/// What [`Session::deliver`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Queued.
    Yes,
    /// Queued, but the queue is past its high-water mark: the publisher should pause.
    Congested,
    /// Not queued: the queue is full, or the message is QoS 0 and nobody is connected.
    Dropped,
}

impl SessionState {
    /// Takes the next message of the queue.
    pub(crate) fn pop_pending(&mut self) -> Option<Delivery> {
        let delivery = self.pending.pop_front()?;
        self.queued_bytes = self
            .queued_bytes
            .saturating_sub(u32::try_from(delivery.size()).unwrap_or(u32::MAX));
        Some(delivery)
    }

    /// Queues a delivery restored from the durable state (at start; no limits: it was
    /// within them when it was queued).
    pub(crate) fn restore_pending(&mut self, delivery: Delivery) {
        self.queued_bytes = self
            .queued_bytes
            .saturating_add(u32::try_from(delivery.size()).unwrap_or(u32::MAX));
        self.pending.push_back(delivery);
    }

    /// Takes the queued delivery of the saved message `id` out of the queue.
    pub(crate) fn take_pending(&mut self, id: u64) -> Option<Delivery> {
        let position = self
            .pending
            .iter()
            .position(|delivery| delivery.message.durable_id.get() == Some(&id))?;
        let delivery = self.pending.remove(position)?;
        self.queued_bytes = self
            .queued_bytes
            .saturating_sub(u32::try_from(delivery.size()).unwrap_or(u32::MAX));
        Some(delivery)
    }

    /// Frees the capacity of queues that are empty, so an idle client holds none: a
    /// control queue that once held a `CONNACK` keeps room for four packets (1.7 KB)
    /// otherwise. Called when the writer goes idle; refilling later costs one
    /// allocation, small next to the write that empties it.
    pub(crate) fn release_idle_queues(&mut self) {
        if self.control.is_empty() && self.control.capacity() > 0 {
            self.control = VecDeque::new();
        }
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
        if self.inflight.is_empty() && self.inflight.capacity() > 0 {
            self.inflight = VecDeque::new();
        }
    }
}

impl Session {
    pub(crate) fn new(
        id: SessionId,
        client_id: ClientId,
        owner: Option<Arc<str>>,
        queue_limit: u32,
    ) -> Session {
        Session {
            id,
            client_id,
            owner,
            state: Mutex::new(SessionState {
                attachment: None,
                version: ProtocolVersion::V311,
                control: VecDeque::new(),
                pending: VecDeque::new(),
                inflight: VecDeque::new(),
                inflight_limit: 1,
                queue_limit,
                queued_bytes: 0,
                next_packet_id: PacketId::new(1).unwrap_or_else(|| unreachable!()),
                incoming_qos2: Vec::new(),
                subscriptions: Subscriptions::default(),
                is_persistent: false,
                expiry_interval: 0,
                disconnected_at: None,
                is_closing: false,
                client_max_packet_size: None,
                has_waiters: false,
                is_slow: false,
                is_revoked: false,
                is_parking: false,
            }),
            space: Notify::new(),
            is_saved: AtomicBool::new(false),
            progress: AtomicU32::new(0),
        }
    }

    /// Queues `delivery`, dropping it if the queue is full (counted) or if it is QoS 0
    /// and nobody is connected. Wakes the writer when the queue becomes non-empty.
    ///
    /// Reports [`Queued::Congested`] when a connected client's queue is past its
    /// high-water mark: the publisher should then pause (flow control) until
    /// [`Session::space`] signals room, or mark the session slow if none comes.
    pub(crate) fn deliver(&self, mut delivery: Delivery, broker: &Broker) -> Queued {
        let stats = broker.stats();
        let bytes_limit = broker.config().limits.max_queued_bytes;
        let mut state = self.state.lock();
        if state.attachment.is_none() {
            if delivery.qos == QoS::AtMostOnce {
                return Queued::Dropped;
            }
            if state.pending.len() < state.queue_limit as usize {
                delivery.message = delivery.message.for_storage();
            }
        }
        if state.pending.len() >= state.queue_limit as usize {
            stats::add(&stats.messages_dropped, 1);
            return Queued::Dropped;
        }
        let size = delivery.size();
        if bytes_limit > 0 && (state.queued_bytes as usize).saturating_add(size) > bytes_limit {
            stats::add(&stats.messages_dropped, 1);
            stats::add(&stats.queued_bytes_dropped, 1);
            return Queued::Dropped;
        }
        let was_empty = state.pending.is_empty();
        state.queued_bytes = state
            .queued_bytes
            .saturating_add(u32::try_from(size).unwrap_or(u32::MAX));
        state.pending.push_back(delivery);
        if was_empty {
            state.wake_writer();
        }
        if state.is_congested() {
            state.has_waiters = true;
            Queued::Congested
        } else {
            Queued::Yes
        }
    }

    /// Whether a publisher should still wait for this session's queue to drain; if so,
    /// registers it for the writer's next relief signal (in the same critical section,
    /// so a drain between the check and the wait cannot be missed).
    pub(crate) fn register_waiter(&self) -> bool {
        let mut state = self.state.lock();
        let is_congested = state.is_congested();
        if is_congested {
            state.has_waiters = true;
        }
        is_congested
    }

    /// Stops asking publishers to wait for this session: its connection wrote nothing for
    /// a whole grace period, so from now on its overflow is dropped instead. Cleared by
    /// the writer's next completed write.
    pub(crate) fn mark_slow(&self) {
        let mut state = self.state.lock();
        if !state.is_slow {
            state.is_slow = true;
            tracing::debug!(client_id = %self.client_id, "slow consumer: its overflow is dropped from now on");
        }
    }

    /// Queues control packets for the writer and wakes it.
    pub(crate) fn send_control(&self, packets: impl IntoIterator<Item = Packet>) {
        let mut state = self.state.lock();
        state.control.extend(packets);
        state.wake_writer();
    }
}

impl SessionState {
    /// The next packet id not used by an in-flight message.
    pub(crate) fn allocate_packet_id(&mut self) -> PacketId {
        loop {
            let candidate = self.next_packet_id;
            self.next_packet_id = candidate.next();
            if !self
                .inflight
                .iter()
                .any(|entry| entry.packet_id == candidate)
            {
                return candidate;
            }
        }
    }

    /// Queue length from which publishers are asked to pause.
    fn high_water(&self) -> usize {
        (self.queue_limit as usize / 2).max(1)
    }

    /// Whether publishers should pause for this session: it is connected, not known to
    /// be slow, and its queue is past the high-water mark.
    pub(crate) fn is_congested(&self) -> bool {
        self.attachment.is_some() && !self.is_slow && self.pending.len() >= self.high_water()
    }

    /// After the writer drained: whether paused publishers can go on.
    pub(crate) fn take_relief(&mut self) -> bool {
        if self.has_waiters && self.pending.len() < self.high_water() {
            self.has_waiters = false;
            return true;
        }
        false
    }

    /// Wakes the attached connection's writer, if any.
    pub(crate) fn wake_writer(&self) {
        if let Some(attachment) = &self.attachment {
            attachment.wake();
        }
    }

    /// Whether the connection `generation` may park: it is still attached, not closing or
    /// revoked, and nothing waits to be sent to it.
    pub(crate) fn may_park(&self, generation: u64) -> bool {
        self.is_attached(generation)
            && !self.is_closing
            && !self.is_revoked
            && self.control.is_empty()
            && self.pending.is_empty()
    }

    /// Whether a connection with this generation is still the one attached.
    pub(crate) fn is_attached(&self, generation: u64) -> bool {
        self.attachment
            .as_ref()
            .is_some_and(|a| a.generation == generation)
    }
}

/// Pauses until every session of `congested` has room again. A session whose
/// connection completes no write for `grace` is marked slow (it stopped reading), and
/// the wait goes on without it; one that is reading, however slowly, is waited for.
pub(crate) async fn wait_for_room(congested: &[Arc<Session>], grace: std::time::Duration) {
    for session in congested {
        let mut progress = session.progress.load(Ordering::Relaxed);
        let mut deadline = tokio::time::Instant::now() + grace;
        loop {
            let relieved = session.space.notified();
            tokio::pin!(relieved);
            // Registered before checking, so a drain in between is not missed.
            relieved.as_mut().enable();
            if !session.register_waiter() {
                break;
            }
            if tokio::time::timeout_at(deadline, relieved).await.is_err() {
                let now = session.progress.load(Ordering::Relaxed);
                if now == progress {
                    session.mark_slow();
                    break;
                }
                progress = now;
                deadline = tokio::time::Instant::now() + grace;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_in(buffer: &Bytes) -> Arc<Message> {
        Arc::new(Message {
            topic: TopicName::new(bytestring::ByteString::try_from(buffer.slice(0..3)).unwrap())
                .unwrap(),
            payload: buffer.slice(3..8),
            qos: QoS::AtLeastOnce,
            is_retained: false,
            properties: MessageProperties::default(),
            origin: None,
            is_compact: false,
            stored_copy: OnceLock::new(),
            receipt: None,
            expires_at: None,
            durable_id: OnceLock::new(),
        })
    }

    #[test]
    fn stored_copy_owns_its_bytes_and_is_made_once() {
        let read_buffer = Bytes::from(b"a/bhello and much more that was read with it".to_vec());
        let message = message_in(&read_buffer);
        let stored = message.for_storage();
        assert_eq!(
            (stored.topic.as_str(), &stored.payload[..]),
            ("a/b", &b"hello"[..])
        );
        let buffer_range = read_buffer.as_ptr_range();
        assert!(
            !buffer_range.contains(&stored.payload.as_ptr()),
            "payload still points into the read buffer"
        );
        assert!(
            !buffer_range.contains(&stored.topic.as_str().as_ptr()),
            "topic still points into the read buffer"
        );
        assert!(
            Arc::ptr_eq(&stored, &message.for_storage()),
            "one copy, shared"
        );
        assert!(
            Arc::ptr_eq(&stored, &stored.for_storage()),
            "a compact message is not copied again"
        );
    }
}
