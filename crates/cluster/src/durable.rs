//! QoS 1/2 messages across nodes, through a JetStream stream.
//!
//! A QoS 1/2 message published on a node is written to the stream `FLEETWIRE_MESSAGES`
//! (subject `fleetwire.durable.{node}`, replicas as the other cluster state; the
//! messages queued together share one JetStream message, see `writer.rs`) and its
//! publisher is acknowledged once JetStream keeps it, so a node that dies right after a
//! `PUBACK` loses nothing the other nodes' sessions want. Every node reads the stream
//! through a durable consumer of its own (`node-{node id}`: one per node, never one per
//! session or subscription), routes each message of the other nodes to its sessions as
//! the node it was published on did ([`Broker::publish_from_peer`]), and acknowledges a
//! batch to JetStream only once its own durable state holds what the batch queued for
//! its persistent sessions. A node that was down reads, when it comes back, what was
//! published meanwhile: its consumer kept its place.
//!
//! The stream keeps a message until every node's consumer acknowledged it (interest
//! retention), for a day at most. A node that crashes after saving a batch and before
//! acknowledging it routes that batch again when it comes back (a persistent session
//! may get a QoS 1/2 message twice, then).

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use bytes::Bytes;
use fleetwire_broker::{Broker, PeerCongestion};
use futures_util::{FutureExt, StreamExt};

use crate::ClusterError;
use crate::live::{Node, open};
use crate::orphans::Orphans;
use crate::subject::ClusterSubjects;
use crate::writer::{Write, batched};

/// The stream's name.
pub(crate) const STREAM: &str = "FLEETWIRE_MESSAGES";

/// The header naming the node a message was published on.
pub(crate) const NODE_HEADER: &str = "Fleetwire-Node";

/// How long the stream keeps a message no node acknowledged.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Messages routed before one acknowledgement (and one wait for the local state).
const BATCH: usize = 1024;

/// QoS 1/2 messages in JetStream: see the module's text.
pub(crate) struct Durable {
    /// `fleetwire.durable.{node}`: where this node writes.
    subject: String,
    node: String,
}

/// The stream as it is created, with `replicas` (see `kept.rs`).
pub(crate) fn config(subjects: &ClusterSubjects, replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        description: Some("Fleetwire: QoS 1/2 MQTT messages between nodes".to_owned()),
        subjects: vec![subjects.every_durable()],
        retention: RetentionPolicy::Interest,
        storage: StorageType::File,
        num_replicas: replicas,
        max_age: MAX_AGE,
        ..stream::Config::default()
    }
}

pub(crate) const WHAT: &str = "the stream of QoS 1/2 messages";

impl Durable {
    /// Opens this node's consumer of `stream` and starts routing what the other nodes
    /// publish to `broker`.
    pub(crate) async fn start(
        stream: &stream::Stream,
        subjects: &ClusterSubjects,
        node: &str,
        envelope: Arc<Node>,
        broker: Broker,
        orphans: Arc<Orphans>,
    ) -> Result<Durable, ClusterError> {
        let failed = |detail: String| ClusterError::JetStream { what: WHAT, detail };
        let consumer = open_consumer(stream, node).await.map_err(failed)?;
        let messages = consumer
            .messages()
            .await
            .map_err(|error| failed(error.to_string()))?;
        tokio::spawn(read(
            stream.clone(),
            messages,
            node.to_owned(),
            envelope,
            broker,
            orphans,
        ));
        Ok(Durable {
            subject: subjects.durable(node),
            node: node.to_owned(),
        })
    }

    /// The write of a QoS 1/2 message published here (`encoded` as it crosses),
    /// batched with those queued with it.
    pub(crate) fn write(&self, encoded: Bytes) -> Write {
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, self.node.as_str());
        Write {
            subject: self.subject.clone(),
            headers: Some(headers),
            payload: encoded,
            is_batchable: true,
        }
    }
}

/// Opens node `node`'s consumer of `stream`, or creates it (reading what is published
/// from then on).
async fn open_consumer(
    stream: &stream::Stream,
    node: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>, String> {
    let name = consumer_name(node);
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("Fleetwire node {node}")),
                deliver_policy: DeliverPolicy::New,
                ack_policy: AckPolicy::All,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 64 * 1024,
                ..pull::Config::default()
            },
        )
        .await
        .map_err(|error| error.to_string())
}

/// A consumer name for node `node`: letters, digits, `-` and `_` as they are, other
/// bytes as `_XX`.
pub(crate) fn consumer_name(node: &str) -> String {
    let mut name = String::from("node-");
    for byte in node.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("_{byte:02X}"));
        }
    }
    name
}

/// Reads this node's consumer for as long as the node runs: when its stream of
/// messages ends (the NATS connection was lost, the consumer deleted: the other nodes
/// took this node for dead and took up its sessions) it is opened again, or created,
/// once a second until it opens.
async fn read(
    stream: stream::Stream,
    mut messages: pull::Stream,
    name: String,
    node: Arc<Node>,
    broker: Broker,
    orphans: Arc<Orphans>,
) {
    loop {
        route(&mut messages, &name, &node, &broker, &orphans).await;
        tracing::warn!("the stream of QoS 1/2 messages ended: opening it again");
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let opened = match open_consumer(&stream, &name).await {
                Ok(consumer) => consumer.messages().await.map_err(|error| error.to_string()),
                Err(error) => Err(error),
            };
            match opened {
                Ok(opened) => {
                    messages = opened;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the stream of QoS 1/2 messages yet");
                }
            }
        }
    }
}

/// Routes the other nodes' messages to `broker` (those whose copy through core NATS
/// did not come first), a batch at a time; acknowledges a batch once the durable state
/// holds everything routed from other nodes so far (the core copies routed before
/// included). Every message (this node's own too) also goes to the sessions of dead
/// nodes not taken up yet (`orphans.rs`).
async fn route(
    messages: &mut pull::Stream,
    name: &str,
    node: &Node,
    broker: &Broker,
    orphans: &Orphans,
) {
    loop {
        let Some(first) = messages.next().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match messages.next().now_or_never() {
                Some(Some(next)) => batch.push(next),
                _ => break,
            }
        }
        let mut ticket = None;
        let mut last = None;
        let mut was_congested = false;
        let mut adopting = orphans.lock().await;
        for item in batch {
            let message = match item {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "reading the stream of QoS 1/2 messages");
                    continue;
                }
            };
            let from = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(NODE_HEADER))
                .map_or("", |origin| origin.as_str());
            let is_own = from == name;
            for write in batched(&message.payload) {
                let Some(write) = write else {
                    tracing::warn!(subject = %message.subject, "a batch of messages from another node is cut short");
                    break;
                };
                let Some(crossing) = open(&write, &message.subject) else {
                    continue;
                };
                ticket = ticket.max(adopting.feed(&crossing, from, node.id(), broker));
                if is_own {
                    continue;
                }
                let mut congestion = PeerCongestion::default();
                ticket = ticket.max(node.route_once(broker, crossing, &mut congestion));
                if !congestion.is_empty() {
                    // As a publisher here would: wait for room (JetStream keeps the
                    // rest), and have core NATS leave QoS 1/2 to us.
                    was_congested = true;
                    node.set_congested(true);
                    congestion.relieved(broker).await;
                }
            }
            if let Ok(info) = message.info() {
                adopting.routed(info.stream_sequence);
            }
            last = Some(message);
        }
        drop(adopting);
        if !was_congested {
            node.set_congested(false);
        }
        if let Some(ticket) = ticket {
            if let Err(error) = broker.durable(ticket).await {
                // Not acknowledged: JetStream sends the batch again.
                tracing::error!(%error, "QoS 1/2 messages of other nodes not saved here");
                continue;
            }
        }
        if let Some(last) = last {
            // Acknowledges the batch (AckPolicy::All).
            if let Err(error) = last.ack().await {
                tracing::warn!(%error, "acknowledging QoS 1/2 messages to JetStream");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_hold_no_separator() {
        assert_eq!(consumer_name("node-a"), "node-node-a");
        assert_eq!(consumer_name("a.b c/d"), "node-a_2Eb_20c_2Fd");
    }
}
