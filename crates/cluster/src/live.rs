//! Live routing between nodes over core NATS: every message, at most once (QoS 1/2
//! messages also go through JetStream, `durable.rs`, and are routed once, whichever
//! copy comes first).
//!
//! The broker reports through its `Peers` (on its own paths, which must not wait);
//! [`Live`] queues messages for a task that sends them (a bounded queue: past it
//! messages for the other nodes are dropped and counted; JetStream still carries the
//! QoS 1/2 ones) and filter changes for a task that keeps one NATS subscription per
//! distinct filter (counted: the first session on a filter subscribes, the last one
//! leaving unsubscribes). Each NATS subscription has a task that hands what arrives to
//! [`Broker::publish_from_peer`].
//!
//! A message crosses as its MQTT 5.0 `PUBLISH` packet (topic, QoS, retain flag,
//! properties, payload), on the subject of its topic (`fleetwire.mqtt.{topic}`), after
//! the publishing node's id (random per process) and the message's number from it. A
//! node whose filters overlap (`a/#` and `a/+`) holds two NATS subscriptions that both
//! match, and NATS sends it a copy for each; JetStream sends it one more. The receiving
//! node routes each (node, number) once ([`Seen`], [`Node::route_once`]), since its own
//! routing already delivers once per session; noting and routing happen under one lock,
//! so that two tasks cannot reorder a node's messages. A QoS 1/2 message whose core copy
//! was dropped arrives through JetStream later, possibly after messages published after
//! it.
//!
//! Shared subscriptions: a node's members of share group `g` hold NATS queue
//! subscriptions in queue group `g` (on a second connection, with echo, so that the
//! node's own messages can be given to its own members), and NATS gives each message to
//! one of them cluster-wide; the node then picks one of its members
//! ([`Broker::publish_to_share_group`]). No node delivers to a share group on its own.
//! Across nodes share groups get messages at most once (not through JetStream).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_nats::{Client, ConnectOptions, ServerAddr};
use bytes::Bytes;
use bytes::BytesMut;
use fleetwire_broker::{Broker, PeerCongestion, PeerMessage, Ticket};
use fleetwire_mqtt_codec::{Packet, ProtocolVersion, Publish, QoS, TopicFilter};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::subject::ClusterSubjects;

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `cluster.nats_url` holds something that is not a NATS URL.
    #[error("invalid NATS URL {url:?}: {detail}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// No NATS server answered.
    #[error("cannot connect to NATS at {urls}: {detail}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// The client's error.
        detail: String,
    },
    /// NATS refused a subscription the node needs.
    #[error("NATS refused the subscription to {what}: {detail}")]
    Subscribe {
        /// What the subscription is for.
        what: &'static str,
        /// The client's error.
        detail: String,
    },
    /// JetStream refused or did not answer (is it enabled on the NATS servers?).
    #[error("cannot open {what} in JetStream (is JetStream enabled?): {detail}")]
    JetStream {
        /// What was being opened.
        what: &'static str,
        /// JetStream's error.
        detail: String,
    },
}

/// A node's connections to NATS.
pub struct Nats {
    /// Publishes and subscribes without echo: it never receives what it publishes.
    pub(crate) client: Client,
    /// Holds the node's share-group (queue) subscriptions. With echo, as a second
    /// connection: a message published here must reach this node's own members too
    /// when NATS picks one of them.
    queues: Client,
}

/// Connects to NATS at `urls` (comma-separated, any of them will do) as node `node_id`.
pub async fn connect(urls: &str, node_id: &str) -> Result<Nats, ClusterError> {
    let mut addresses = Vec::new();
    for url in urls.split(',').map(str::trim).filter(|url| !url.is_empty()) {
        let address = url
            .parse::<ServerAddr>()
            .map_err(|error| ClusterError::InvalidUrl {
                url: url.to_owned(),
                detail: error.to_string(),
            })?;
        addresses.push(address);
    }
    if addresses.is_empty() {
        return Err(ClusterError::InvalidUrl {
            url: urls.to_owned(),
            detail: "no URL given".to_owned(),
        });
    }
    let failed = |error: async_nats::ConnectError| ClusterError::Connect {
        urls: urls.to_owned(),
        detail: error.to_string(),
    };
    let client = ConnectOptions::new()
        .no_echo()
        .name(format!("fleetwire {node_id}"))
        .connect(addresses.clone())
        .await
        .map_err(failed)?;
    let queues = ConnectOptions::new()
        .name(format!("fleetwire {node_id} share groups"))
        .connect(addresses)
        .await
        .map_err(failed)?;
    Ok(Nats { client, queues })
}

/// A change of the filters the broker's sessions hold, in order.
enum FilterReport {
    Subscribed(TopicFilter),
    Unsubscribed(TopicFilter),
}

/// Messages waiting for the NATS connection, at most: past that (NATS or the network
/// slower than the node's publishers) messages for the other nodes are dropped and
/// counted, never queued without bound. Core NATS is at most once anyway.
const MESSAGE_QUEUE: usize = 16 * 1024;

/// Live routing between nodes over core NATS.
pub(crate) struct Live {
    /// Filter changes: never dropped (few), to the task that keeps the subscriptions.
    filters: mpsc::UnboundedSender<FilterReport>,
    /// Messages ready to go (subject; envelope and packet), to the task that sends them.
    messages: mpsc::Sender<(String, bytes::Bytes)>,
    /// Messages not sent to the other nodes because the queue was full.
    dropped: AtomicU64,
    node: Arc<Node>,
    subjects: ClusterSubjects,
}

/// Bytes before the `PUBLISH` packet: the publishing node's id, the message's number.
pub(crate) const ENVELOPE: usize = 16;

impl Live {
    /// Starts live routing for `broker` over `nats` (on the current Tokio runtime).
    pub(crate) fn start(
        nats: Nats,
        subjects: ClusterSubjects,
        broker: Broker,
        node: Arc<Node>,
    ) -> Live {
        let (filters, filter_reports) = mpsc::unbounded_channel();
        let (messages, outgoing) = mpsc::channel(MESSAGE_QUEUE);
        tokio::spawn(send(nats.client.clone(), outgoing));
        tokio::spawn(keep_subscriptions(
            nats,
            subjects.clone(),
            broker,
            filter_reports,
            Arc::clone(&node),
        ));
        Live {
            filters,
            messages,
            dropped: AtomicU64::new(0),
            node,
            subjects,
        }
    }

    /// Messages not sent to the other nodes because NATS could not keep up.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn report(&self, report: FilterReport) {
        // Fails only once the task ended (the runtime is shutting down).
        let _ = self.filters.send(report);
    }

    fn drop_message(&self) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped % 100_000 == 1 {
            tracing::warn!(
                dropped,
                "NATS does not keep up: messages for the other nodes dropped"
            );
        }
    }
}

impl Live {
    /// A session of this node subscribed to `filter`.
    pub(crate) fn subscribed(&self, filter: &TopicFilter) {
        self.report(FilterReport::Subscribed(filter.clone()));
    }

    /// A session of this node gave `filter` back.
    pub(crate) fn unsubscribed(&self, filter: &TopicFilter) {
        self.report(FilterReport::Unsubscribed(filter.clone()));
    }

    /// Sends a message published here to the nodes subscribed to its topic (at most
    /// once: a QoS 1/2 one also goes through JetStream, and is routed once, whichever
    /// copy comes first). Returns the message as it crosses, for JetStream.
    pub(crate) fn published(&self, message: &PeerMessage) -> Option<Bytes> {
        let is_durable = message.qos != QoS::AtMostOnce;
        if !is_durable && self.messages.capacity() == 0 {
            self.drop_message();
            return None;
        }
        // Encoded here, on the publisher's task: the sending task only sends.
        let mut encoded = BytesMut::with_capacity(ENVELOPE + 16 + message.payload.len());
        encoded.extend_from_slice(&self.node.id.to_le_bytes());
        let number = self.node.next_number.fetch_add(1, Ordering::Relaxed);
        encoded.extend_from_slice(&number.to_le_bytes());
        if let Err(error) = encode(message, &mut encoded) {
            tracing::warn!(topic = %message.topic.as_str(), %error, "message not sent to the other nodes");
            return None;
        }
        let encoded = encoded.freeze();
        let subject = self.subjects.live.subject(&message.topic);
        if self.messages.try_send((subject, encoded.clone())).is_err() {
            self.drop_message();
        }
        Some(encoded)
    }
}

/// This node's side of the envelope, shared by the paths messages arrive on (core
/// NATS, JetStream).
pub(crate) struct Node {
    /// Tells this process's messages from others' (a restarted node is a new one).
    id: u64,
    next_number: AtomicU64,
    /// Per publishing node, the numbers of its messages routed here lately.
    seen: Mutex<HashMap<u64, Seen>>,
    /// The highest durable-state ticket of what was routed here from other nodes.
    routed: AtomicU64,
    /// Sessions here asked for a pause: QoS 1/2 messages are routed from JetStream only,
    /// which waits for them (core NATS cannot), until a batch goes through without.
    is_congested: AtomicBool,
}

impl Node {
    pub(crate) fn new() -> Node {
        Node {
            id: random_id(),
            next_number: AtomicU64::new(1),
            seen: Mutex::new(HashMap::new()),
            routed: AtomicU64::new(0),
            is_congested: AtomicBool::new(false),
        }
    }

    /// Routes a message that arrived on core NATS (see [`Node::route_once`]), unless
    /// it is QoS 1/2 and sessions here asked for a pause: then JetStream brings it.
    pub(crate) fn route_live(&self, broker: &Broker, crossing: Crossing<'_>) {
        let is_durable = Publish::peek_qos(&crossing.packet) != Some(QoS::AtMostOnce);
        if is_durable && self.is_congested.load(Ordering::Acquire) {
            return;
        }
        let mut congestion = PeerCongestion::default();
        self.route_once(broker, crossing, &mut congestion);
        if is_durable && !congestion.is_empty() {
            self.is_congested.store(true, Ordering::Release);
        }
    }

    /// This process's id in the envelopes of its messages.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Runs `adopt` (a session of a dead node taken up here) while no message of
    /// another node is routed here, and returns with its result, per other node, the
    /// numbers routed here whose copy from JetStream may be still to come (above what
    /// `read` says was read from JetStream, less a margin for messages written out of
    /// their numbers' order), and the number of this node's latest own message.
    pub(crate) fn quietly<R>(
        &self,
        read: &HashMap<u64, u64>,
        adopt: impl FnOnce() -> R,
    ) -> (R, HashMap<u64, HashSet<u64>>, u64) {
        let seen = self.seen.lock();
        let adopted = adopt();
        let own = self.next_number.load(Ordering::Acquire);
        let routed = seen
            .iter()
            .map(|(origin, seen)| {
                let from = read
                    .get(origin)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(Seen::WINDOW / 8);
                (*origin, seen.numbers_after(from))
            })
            .collect();
        (adopted, routed, own)
    }

    /// Notes whether routing from JetStream met sessions that asked for a pause.
    pub(crate) fn set_congested(&self, is_congested: bool) {
        self.is_congested.store(is_congested, Ordering::Release);
    }

    /// Routes a message of another node to `broker` unless a copy was routed already
    /// (through another subscription, or the other path: only the first copy is
    /// decoded); returns the durable-state ticket of this node's routings so far from
    /// other nodes. Noted and routed under one lock: no other task routes a later
    /// message of the same node before this one is routed.
    pub(crate) fn route_once(
        &self,
        broker: &Broker,
        crossing: Crossing<'_>,
        congestion: &mut PeerCongestion,
    ) -> Option<Ticket> {
        let mut seen = self.seen.lock();
        if seen
            .entry(crossing.origin)
            .or_insert_with(Seen::new)
            .first_time(crossing.number)
        {
            if let Some(message) = crossing.decode() {
                if let Some(Ticket(ticket)) = broker.publish_from_peer(message, congestion).ticket {
                    self.routed.fetch_max(ticket, Ordering::AcqRel);
                }
            }
        }
        drop(seen);
        match self.routed.load(Ordering::Acquire) {
            0 => None,
            ticket => Some(Ticket(ticket)),
        }
    }
}

/// A random node id, from the standard library's randomly keyed hasher.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Which of a node's recent message numbers were routed here: a ring of bits for the
/// last [`Seen::WINDOW`] numbers up to the highest one (bit `number % WINDOW`).
pub(crate) struct Seen {
    highest: u64,
    bits: Box<[u64]>,
}

impl Seen {
    const WORDS: usize = 2048;
    /// Numbers remembered: a message's copy through JetStream may trail its copy
    /// through core NATS by this many of its node's messages.
    const WINDOW: u64 = 64 * Seen::WORDS as u64;

    pub(crate) fn new() -> Seen {
        Seen {
            highest: 0,
            bits: vec![0; Seen::WORDS].into_boxed_slice(),
        }
    }

    /// Notes `number`; `false` if it was seen already. A number older than the window
    /// counts as new (routed twice rather than lost).
    pub(crate) fn first_time(&mut self, number: u64) -> bool {
        if number > self.highest {
            // Forget the numbers the window moves past (at most all of them).
            let forget = (number - self.highest).min(Seen::WINDOW);
            for forgotten in number - forget + 1..=number {
                self.set(forgotten, false);
            }
            self.highest = number;
            self.set(number, true);
            return true;
        }
        if self.highest - number >= Seen::WINDOW {
            return true;
        }
        let was_seen = self.get(number);
        self.set(number, true);
        !was_seen
    }

    /// The numbers noted above `from` (within the window).
    fn numbers_after(&self, from: u64) -> HashSet<u64> {
        let lowest = from
            .saturating_add(1)
            .max(self.highest.saturating_sub(Seen::WINDOW - 1));
        (lowest..=self.highest)
            .filter(|&number| self.get(number))
            .collect()
    }

    fn get(&self, number: u64) -> bool {
        let bit = number % Seen::WINDOW;
        self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    fn set(&mut self, number: u64, value: bool) {
        let bit = number % Seen::WINDOW;
        let word = &mut self.bits[(bit / 64) as usize];
        if value {
            *word |= 1 << (bit % 64);
        } else {
            *word &= !(1 << (bit % 64));
        }
    }
}

/// One distinct filter the node holds: how many sessions hold it, and the tasks that
/// receive its subjects.
struct Interest {
    sessions: usize,
    receivers: Vec<JoinHandle<()>>,
}

/// The sending task: hands messages to the NATS connection.
async fn send(client: Client, mut outgoing: mpsc::Receiver<(String, bytes::Bytes)>) {
    while let Some((subject, payload)) = outgoing.recv().await {
        if let Err(error) = client.publish(subject.clone(), payload).await {
            tracing::warn!(%subject, %error, "message not sent to the other nodes");
        }
    }
}

/// The task that keeps one NATS subscription per distinct filter.
async fn keep_subscriptions(
    nats: Nats,
    subjects: ClusterSubjects,
    broker: Broker,
    mut reports: mpsc::UnboundedReceiver<FilterReport>,
    node: Arc<Node>,
) {
    let mut interests: HashMap<String, Interest> = HashMap::new();
    while let Some(report) = reports.recv().await {
        match report {
            FilterReport::Subscribed(filter) => {
                let interest = interests
                    .entry(filter.as_str().to_owned())
                    .or_insert_with(|| Interest {
                        sessions: 0,
                        receivers: Vec::new(),
                    });
                interest.sessions += 1;
                if interest.sessions > 1 {
                    continue;
                }
                let group = filter.share().map(|(group, _)| group.to_owned());
                for subject in subjects.live.filter_subjects(&filter) {
                    let subscribed = match &group {
                        None => nats.client.subscribe(subject.clone()).await,
                        Some(group) => {
                            let queue = subjects.live.queue_group(group);
                            nats.queues.queue_subscribe(subject.clone(), queue).await
                        }
                    };
                    match subscribed {
                        Ok(subscriber) => interest.receivers.push(tokio::spawn(receive(
                            subscriber,
                            broker.clone(),
                            Arc::clone(&node),
                            group.clone(),
                        ))),
                        Err(error) => {
                            tracing::error!(%subject, %error, "cannot subscribe on NATS: messages of other nodes on this filter do not reach this node");
                        }
                    }
                }
            }
            FilterReport::Unsubscribed(filter) => {
                let Some(interest) = interests.get_mut(filter.as_str()) else {
                    continue;
                };
                interest.sessions = interest.sessions.saturating_sub(1);
                if interest.sessions == 0 {
                    if let Some(interest) = interests.remove(filter.as_str()) {
                        // Dropping a subscriber unsubscribes it.
                        for receiver in interest.receivers {
                            receiver.abort();
                        }
                    }
                }
            }
        }
    }
}

/// Hands what arrives on one NATS subscription to the broker: to its share group
/// `group` for a queue subscription (NATS chose this node's members for the message),
/// else to the node's other subscriptions.
async fn receive(
    mut subscriber: async_nats::Subscriber,
    broker: Broker,
    node: Arc<Node>,
    group: Option<String>,
) {
    while let Some(message) = subscriber.next().await {
        let Some(crossing) = open(&message.payload, &message.subject) else {
            continue;
        };
        match &group {
            // A group's queue subscriptions get one copy between them.
            Some(group) => {
                if let Some(decoded) = crossing.decode() {
                    broker.publish_to_share_group(group, decoded);
                }
            }
            None => node.route_live(&broker, crossing),
        }
    }
}

/// A message as it crossed from another node, not decoded yet.
pub(crate) struct Crossing<'a> {
    /// The publishing node (random per process) and the message's number from it.
    pub(crate) origin: u64,
    pub(crate) number: u64,
    /// Its MQTT 5.0 `PUBLISH` packet.
    pub(crate) packet: Bytes,
    /// Where it came from, for the log.
    pub(crate) subject: &'a str,
}

impl Crossing<'_> {
    /// The message; `None` (logged) if the packet does not decode.
    pub(crate) fn decode(&self) -> Option<PeerMessage> {
        match decode(&self.packet) {
            Ok(message) => Some(message),
            Err(detail) => {
                tracing::warn!(subject = %self.subject, %detail, "message from another node dropped");
                None
            }
        }
    }
}

/// What crossed as `payload` (on `subject`): its envelope read, its packet not decoded;
/// `None` (logged) if it is too short to be one.
pub(crate) fn open<'a>(payload: &Bytes, subject: &'a str) -> Option<Crossing<'a>> {
    let (Some(origin), Some(number)) = (
        payload.get(..8).and_then(|bytes| bytes.try_into().ok()),
        payload
            .get(8..ENVELOPE)
            .and_then(|bytes| bytes.try_into().ok()),
    ) else {
        tracing::warn!(%subject, "message from another node dropped: too short");
        return None;
    };
    Some(Crossing {
        origin: u64::from_le_bytes(origin),
        number: u64::from_le_bytes(number),
        packet: payload.slice(ENVELOPE..),
        subject,
    })
}

/// A message as its MQTT 5.0 `PUBLISH` packet.
pub(crate) fn encode(
    message: &PeerMessage,
    out: &mut BytesMut,
) -> Result<(), fleetwire_mqtt_codec::EncodeError> {
    let packet = Packet::Publish(Publish::detached(
        message.topic.clone(),
        message.payload.clone(),
        message.qos,
        message.is_retained,
        message.properties.clone(),
    ));
    fleetwire_mqtt_codec::encode(&packet, ProtocolVersion::V5, out)
}

/// The message of an MQTT 5.0 `PUBLISH` packet made by [`encode`].
pub(crate) fn decode(payload: &[u8]) -> Result<PeerMessage, String> {
    let publish = Publish::decode_detached(payload)?;
    Ok(PeerMessage {
        topic: publish.topic,
        payload: publish.payload,
        qos: publish.qos,
        is_retained: publish.retain,
        properties: publish.properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetwire_mqtt_codec::{Properties, TopicName};

    #[test]
    fn a_message_crosses_whole() {
        let properties = Properties {
            content_type: Some("text/plain".into()),
            ..Properties::default()
        };
        let message = PeerMessage {
            topic: TopicName::new("a/b").unwrap(),
            payload: bytes::Bytes::from_static(b"payload"),
            qos: QoS::ExactlyOnce,
            is_retained: true,
            properties,
        };
        let mut out = BytesMut::new();
        encode(&message, &mut out).unwrap();
        assert_eq!(Publish::peek_qos(&out), Some(QoS::ExactlyOnce));
        assert_eq!(decode(&out).unwrap(), message);
        assert!(decode(b"\x30\x7f").is_err());
        assert_eq!(Publish::peek_qos(b"\x20\x02"), None, "not a PUBLISH");
    }

    #[test]
    fn each_number_is_new_once_within_the_window() {
        let mut seen = Seen::new();
        assert!(seen.first_time(1));
        assert!(!seen.first_time(1));
        assert!(seen.first_time(3));
        assert!(seen.first_time(2), "out of order, not seen yet");
        assert!(!seen.first_time(2));
        assert!(!seen.first_time(3));
        // Across word boundaries and big jumps.
        for number in 4..=300 {
            assert!(seen.first_time(number));
        }
        for number in [1, 2, 3, 100, 200, 299, 300] {
            assert!(!seen.first_time(number), "{number} again");
        }
        assert!(seen.first_time(300 + 70));
        assert!(!seen.first_time(299), "kept across a shift of 70");
        assert!(seen.first_time(301));
        assert!(seen.first_time(1_000_000));
        assert!(
            seen.first_time(1_000_000 - Seen::WINDOW),
            "older than the window: new"
        );
        assert!(!seen.first_time(1_000_000));
    }
}
