//! Live routing between nodes over core NATS: QoS 0 messages, and what share groups
//! get (QoS 1/2 messages to the other subscriptions go through JetStream: `durable.rs`).
//!
//! The broker reports through its `Peers` (on its own paths, which must not wait); [`Live`]
//! queues messages for a task that sends them (a bounded queue: past it messages for
//! the other nodes are dropped and counted) and filter changes for a task that keeps one
//! NATS subscription per distinct filter (counted: the first session on a filter
//! subscribes, the last one leaving unsubscribes). Each NATS subscription has a task
//! that hands what arrives to [`Broker::publish_from_peer`].
//!
//! A message crosses as its MQTT 5.0 `PUBLISH` packet (topic, QoS, retain flag,
//! properties, payload), on the subject of its topic (`fleetwire.mqtt.{topic}` for QoS
//! 0, `fleetwire.share.{topic}` for QoS 1/2, which only share groups subscribe to),
//! after the publishing node's id
//! (random per process) and the message's number from it. A node whose filters overlap
//! (`a/#` and `a/+`) holds two NATS subscriptions that both match, and NATS sends it a
//! copy for each: the receiving node routes each (node, number) once ([`Seen`]), since
//! its own routing already delivers once per session; noting and routing happen under
//! one lock, so that two subscriptions' tasks cannot reorder a node's messages. Delivery
//! between nodes is what core NATS gives: at most once, in order per publishing node.
//!
//! Shared subscriptions: a node's members of share group `g` hold NATS queue
//! subscriptions in queue group `g` (on a second connection, with echo, so that the
//! node's own messages can be given to its own members), and NATS gives each message to
//! one of them cluster-wide; the node then picks one of its members
//! ([`Broker::publish_to_share_group`]). No node delivers to a share group on its own.
//! A share group's members subscribe to both kinds of subject; across nodes they get
//! messages at most once (not through JetStream).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::{Client, ConnectOptions, ServerAddr};
use bytes::Bytes;
use bytes::BytesMut;
use fleetwire_broker::{Broker, PeerMessage};
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

impl Nats {
    /// The servers of the NATS cluster the node is connected to, as far as the server
    /// it talks to knows (itself included).
    pub(crate) fn servers(&self) -> usize {
        let info = self.client.server_info();
        let mut urls = info.connect_urls;
        urls.sort();
        urls.dedup();
        urls.len().max(1)
    }
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
    pub(crate) fn start(nats: Nats, subjects: ClusterSubjects, broker: Broker) -> Live {
        let (filters, filter_reports) = mpsc::unbounded_channel();
        let (messages, outgoing) = mpsc::channel(MESSAGE_QUEUE);
        let node = Node {
            id: random_id(),
            next_number: AtomicU64::new(1),
            seen: Mutex::new(HashMap::new()),
        };
        let node = Arc::new(node);
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

    /// Sends a message published here to the nodes subscribed to its topic: a QoS 0
    /// one to all of them, a QoS 1/2 one to their share groups only (the others get
    /// it from JetStream). Returns the message as it crosses, for JetStream.
    pub(crate) fn published(&self, message: &PeerMessage) -> Option<Bytes> {
        let is_live = message.qos == QoS::AtMostOnce;
        if is_live && self.messages.capacity() == 0 {
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
        let subjects = if is_live {
            &self.subjects.live
        } else {
            &self.subjects.share
        };
        let subject = subjects.subject(&message.topic);
        if self.messages.try_send((subject, encoded.clone())).is_err() {
            self.drop_message();
        }
        Some(encoded)
    }
}

/// This node's side of the envelope.
struct Node {
    /// Tells this process's messages from others' (a restarted node is a new one).
    id: u64,
    next_number: AtomicU64,
    /// Per publishing node, the numbers of its messages routed here lately.
    seen: Mutex<HashMap<u64, Seen>>,
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

/// Which of a node's recent message numbers were routed here: a window of the last
/// [`Seen::WINDOW`] numbers below the highest one.
struct Seen {
    highest: u64,
    /// Bit `i` of the window: number `highest - i` was seen.
    bits: [u64; Seen::WORDS],
}

impl Seen {
    const WORDS: usize = 64;
    const WINDOW: u64 = 64 * Seen::WORDS as u64;

    fn new() -> Seen {
        Seen {
            highest: 0,
            bits: [0; Seen::WORDS],
        }
    }

    /// Notes `number`; `false` if it was seen already. A number older than the window
    /// counts as new (copies arrive close together; one delayed past the window would
    /// be routed twice rather than lost).
    fn first_time(&mut self, number: u64) -> bool {
        if number > self.highest {
            self.shift(number - self.highest);
            self.highest = number;
            self.bits[0] |= 1;
            return true;
        }
        let age = self.highest - number;
        if age >= Seen::WINDOW {
            return true;
        }
        let (word, bit) = ((age / 64) as usize, age % 64);
        let was_seen = self.bits[word] & (1 << bit) != 0;
        self.bits[word] |= 1 << bit;
        !was_seen
    }

    /// Moves the window `by` numbers up.
    fn shift(&mut self, by: u64) {
        if by >= Seen::WINDOW {
            self.bits = [0; Seen::WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, by % 64);
        for index in (0..Seen::WORDS).rev() {
            let from = index.checked_sub(words);
            let high = from.map_or(0, |from| self.bits[from]);
            let low = from
                .and_then(|from| from.checked_sub(1))
                .map_or(0, |from| self.bits[from]);
            self.bits[index] = if bits == 0 {
                high
            } else {
                (high << bits) | (low >> (64 - bits))
            };
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
                // A share group takes QoS 1/2 messages from core NATS too (its own
                // subjects), the others take them from JetStream.
                let mut wanted = subjects.live.filter_subjects(&filter);
                if group.is_some() {
                    wanted.extend(subjects.share.filter_subjects(&filter));
                }
                for subject in wanted {
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
        let payload = &message.payload;
        let (Some(origin), Some(number)) = (
            payload.get(..8).and_then(|bytes| bytes.try_into().ok()),
            payload
                .get(8..ENVELOPE)
                .and_then(|bytes| bytes.try_into().ok()),
        ) else {
            tracing::warn!(subject = %message.subject, "message from another node dropped: too short");
            continue;
        };
        let (origin, number) = (u64::from_le_bytes(origin), u64::from_le_bytes(number));
        // A group's queue subscriptions get one copy between them.
        let decoded = match decode(message.payload.slice(ENVELOPE..)) {
            Ok(decoded) => decoded,
            Err(detail) => {
                tracing::warn!(subject = %message.subject, %detail, "message from another node dropped");
                continue;
            }
        };
        if let Some(group) = &group {
            // A group's queue subscriptions get one copy between them.
            broker.publish_to_share_group(group, decoded);
            continue;
        }
        // Noted and routed under one lock: another subscription's task must not route
        // a later message of the same node before this one is routed.
        let mut seen = node.seen.lock();
        if seen
            .entry(origin)
            .or_insert_with(Seen::new)
            .first_time(number)
        {
            broker.publish_from_peer(decoded);
        }
        drop(seen);
    }
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
pub(crate) fn decode(payload: bytes::Bytes) -> Result<PeerMessage, String> {
    let mut buffer = BytesMut::from(&payload[..]);
    match fleetwire_mqtt_codec::decode(&mut buffer, ProtocolVersion::V5, usize::MAX) {
        Ok(Some(Packet::Publish(publish))) if buffer.is_empty() => Ok(PeerMessage {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            is_retained: publish.retain,
            properties: publish.properties,
        }),
        Ok(_) => Err("not one whole MQTT PUBLISH".to_owned()),
        Err(error) => Err(format!("does not decode: {error}")),
    }
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
        assert_eq!(decode(out.freeze()).unwrap(), message);
        assert!(decode(bytes::Bytes::from_static(b"\x30\x7f")).is_err());
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
