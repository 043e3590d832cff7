//! `$SYS/cluster/...`: the cluster's totals, beside each node's own `$SYS/broker/...`.
//!
//! Every `mqtt.sys_interval` each node publishes its counters on
//! `fleetwire.node.{node}.stats` (core NATS) and publishes, on its own `$SYS` topics
//! (retained, never forwarded), the sums over itself and the nodes heard from within
//! the last three intervals: a node that stopped counts no more after that.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use fleetwire_broker::{Broker, StatsSnapshot};
use fleetwire_mqtt_codec::{QoS, TopicName};
use futures_util::StreamExt;
use parking_lot::Mutex;

use crate::subject::ClusterSubjects;

/// The counters summed, and their topics.
const TOPICS: [&str; 8] = [
    "$SYS/cluster/clients/connected",
    "$SYS/cluster/sessions/count",
    "$SYS/cluster/subscriptions/count",
    "$SYS/cluster/messages/received",
    "$SYS/cluster/messages/sent",
    "$SYS/cluster/messages/dropped",
    "$SYS/cluster/bytes/received",
    "$SYS/cluster/bytes/sent",
];

type Counters = [u64; TOPICS.len()];

/// The latest counters of the other nodes, by their subject, and when they came.
type Heard = Arc<Mutex<HashMap<String, (Counters, Instant)>>>;

fn counters(stats: &StatsSnapshot) -> Counters {
    [
        stats.clients_connected,
        stats.sessions,
        stats.subscriptions,
        stats.messages_received,
        stats.messages_sent,
        stats.messages_dropped,
        stats.bytes_received,
        stats.bytes_sent,
    ]
}

fn encode(counters: &Counters) -> Bytes {
    let mut bytes = Vec::with_capacity(counters.len() * 8);
    for value in counters {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    Bytes::from(bytes)
}

fn decode(bytes: &[u8]) -> Option<Counters> {
    if bytes.len() != TOPICS.len() * 8 {
        return None;
    }
    let mut counters = [0; TOPICS.len()];
    for (value, chunk) in counters.iter_mut().zip(bytes.chunks_exact(8)) {
        *value = u64::from_le_bytes(chunk.try_into().ok()?);
    }
    Some(counters)
}

/// Starts publishing this node's counters and the cluster's totals (nothing when
/// `$SYS` is off: `sys_interval` 0).
pub(crate) async fn start(
    client: Client,
    subjects: &ClusterSubjects,
    node: &str,
    broker: Broker,
) -> Result<(), async_nats::SubscribeError> {
    let interval = broker.config().sys_interval;
    if interval.is_zero() {
        return Ok(());
    }
    let heard: Heard = Arc::default();
    let mut others = client.subscribe(subjects.every_node("stats")).await?;
    let noted = Arc::clone(&heard);
    tokio::spawn(async move {
        while let Some(message) = others.next().await {
            match decode(&message.payload) {
                Some(counters) => {
                    noted
                        .lock()
                        .insert(message.subject.to_string(), (counters, Instant::now()));
                }
                None => {
                    tracing::debug!(subject = %message.subject, "node counters of another size, ignored")
                }
            }
        }
    });
    let own = subjects.node(node, "stats");
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            let mine = counters(&broker.stats_snapshot());
            if let Err(error) = client.publish(own.clone(), encode(&mine)).await {
                tracing::debug!(%error, "node counters not published");
            }
            let (nodes, totals) = totals(&heard, mine, interval * 3);
            publish(&broker, "$SYS/cluster/nodes", nodes);
            for (topic, total) in TOPICS.iter().zip(totals) {
                publish(&broker, topic, total);
            }
        }
    });
    Ok(())
}

/// The number of nodes counted and the sums: this node's counters and those heard
/// within `fresh` (older ones are forgotten).
fn totals(heard: &Heard, mine: Counters, fresh: Duration) -> (u64, Counters) {
    let mut heard = heard.lock();
    heard.retain(|_, (_, at)| at.elapsed() <= fresh);
    let mut totals = mine;
    for (counters, _) in heard.values() {
        for (total, value) in totals.iter_mut().zip(counters) {
            *total = total.saturating_add(*value);
        }
    }
    (heard.len() as u64 + 1, totals)
}

fn publish(broker: &Broker, topic: &str, value: u64) {
    match TopicName::new(topic) {
        Ok(topic) => {
            broker.publish_internal(topic, Bytes::from(value.to_string()), QoS::AtMostOnce, true);
        }
        Err(error) => tracing::error!(topic, %error, "invalid $SYS topic"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_fresh_nodes_and_forget_silent_ones() {
        let heard: Heard = Arc::default();
        let counters = |value| [value; TOPICS.len()];
        heard
            .lock()
            .insert("b".into(), (counters(2), Instant::now()));
        heard.lock().insert(
            "c".into(),
            (counters(5), Instant::now() - Duration::from_secs(60)),
        );
        let (nodes, totals) = totals(&heard, counters(1), Duration::from_secs(30));
        assert_eq!((nodes, totals), (2, counters(3)));
        assert!(!heard.lock().contains_key("c"));
        assert_eq!(decode(&encode(&counters(7))), Some(counters(7)));
        assert_eq!(decode(b"short"), None);
    }
}
