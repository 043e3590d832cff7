//! Retained messages cluster-wide, in a JetStream key-value bucket.
//!
//! A retained message set or cleared on any node is written to the bucket (key: its
//! topic, [`key`]; value: its MQTT 5.0 `PUBLISH`; a clear is a delete), and its
//! publisher is acknowledged once JetStream keeps it (QoS 1/2). Every node watches the
//! whole bucket and applies each change to its own retained store, this node's changes
//! included, in the bucket's order, so all nodes end with the same retained messages
//! ([`Broker::retain_from_peer`]). New subscriptions are answered from the local store,
//! never from NATS. A node that starts reads the bucket's current values (deletes
//! included) before it serves: what changed while it was away is there.
//!
//! A message expiry interval counts from when the bucket got the message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::kv::{self, Operation};
use bytes::{Bytes, BytesMut};
use fleetwire_broker::{Broker, PeerMessage};
use fleetwire_mqtt_codec::{Properties, QoS, TopicName};
use futures_util::StreamExt;

use crate::live::{decode, encode};
use crate::writer::Write;
use crate::{ClusterError, keys};

/// The bucket's name.
pub(crate) const BUCKET: &str = "fleetwire_retained";

/// How long a starting node waits to read the bucket before it serves anyway.
const CATCH_UP: Duration = Duration::from_secs(60);

/// The cluster's retained messages: see the module's text.
pub(crate) struct Retained {
    /// `$KV.{bucket}.`: the subjects the bucket's keys are written to.
    subject_prefix: String,
}

pub(crate) const WHAT: &str = "the retained-messages bucket";

impl Retained {
    /// Applies the current values of `store` (the bucket) to `broker`, and keeps
    /// applying its changes.
    pub(crate) async fn start(store: kv::Store, broker: Broker) -> Result<Retained, ClusterError> {
        let failed = |detail: String| ClusterError::JetStream { what: WHAT, detail };
        let held = store
            .status()
            .await
            .map_err(|error| failed(error.to_string()))?
            .values();
        let mut changes = store
            .watch_with_history(">")
            .await
            .map_err(|error| failed(error.to_string()))?;
        // The last revision applied: a watch that ends is opened again after it.
        let last = AtomicU64::new(0);
        // Caught up when the watch has nothing pending (right away for an empty bucket).
        if held > 0 {
            let caught_up = async {
                let mut applied = 0_u64;
                while let Some(entry) = changes.next().await {
                    let entry = entry.map_err(|error| failed(error.to_string()))?;
                    apply(&broker, &entry);
                    last.fetch_max(entry.revision, Ordering::Relaxed);
                    applied += 1;
                    if entry.delta == 0 {
                        break;
                    }
                }
                Ok::<u64, ClusterError>(applied)
            };
            match tokio::time::timeout(CATCH_UP, caught_up).await {
                Ok(applied) => {
                    tracing::info!(
                        applied = applied?,
                        "retained messages read from the cluster"
                    );
                }
                Err(_) => tracing::warn!(
                    "the cluster's retained messages not all read within {CATCH_UP:?}: serving, and reading the rest"
                ),
            }
        }
        let mut last = last.into_inner();
        tokio::spawn(async move {
            loop {
                while let Some(entry) = changes.next().await {
                    match entry {
                        Ok(entry) => {
                            apply(&broker, &entry);
                            last = last.max(entry.revision);
                        }
                        Err(error) => {
                            tracing::error!(%error, "watching the cluster's retained messages failed: this node's retained messages may fall behind");
                        }
                    }
                }
                // Ended (the NATS connection was lost): open it again after the last
                // change applied, once a second until it opens.
                tracing::warn!(
                    "the watch of the cluster's retained messages ended: opening it again"
                );
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match store.watch_all_from_revision(last + 1).await {
                        Ok(watch) => {
                            changes = watch;
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "cannot watch the cluster's retained messages yet");
                        }
                    }
                }
            }
        });
        Ok(Retained {
            subject_prefix: format!("$KV.{BUCKET}."),
        })
    }

    /// The write of a retained message (or its topic's clear) published on this node;
    /// `None` if it stays on this node (its topic is too long for a key).
    pub(crate) fn write(&self, message: &PeerMessage) -> Option<Write> {
        let Some(key) = key(&message.topic) else {
            tracing::warn!(topic = %message.topic.as_str(), "retained message kept on this node only: its topic is too long for the cluster");
            return None;
        };
        let subject = format!("{}{key}", self.subject_prefix);
        if message.payload.is_empty() {
            let mut headers = HeaderMap::new();
            headers.insert("KV-Operation", "DEL");
            return Some(Write {
                subject,
                headers: Some(headers),
                payload: Bytes::new(),
                is_batchable: false,
            });
        }
        let mut encoded = BytesMut::with_capacity(message.payload.len() + 32);
        if let Err(error) = encode(message, &mut encoded) {
            tracing::warn!(topic = %message.topic.as_str(), %error, "retained message kept on this node only");
            return None;
        }
        Some(Write {
            subject,
            headers: None,
            payload: encoded.freeze(),
            is_batchable: false,
        })
    }
}

/// Applies one change of the bucket to `broker`'s retained store.
fn apply(broker: &Broker, entry: &kv::Entry) {
    let Some(topic) = topic(&entry.key) else {
        tracing::warn!(key = %entry.key, "retained-messages bucket: a key that is not a topic, ignored");
        return;
    };
    let cleared = || PeerMessage {
        topic: topic.clone(),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        is_retained: true,
        properties: Properties::default(),
    };
    let message = match entry.operation {
        Operation::Delete | Operation::Purge => cleared(),
        Operation::Put => match decode(&entry.value) {
            Ok(mut message) if message.topic == topic => {
                if let Some(interval) = message.properties.message_expiry_interval {
                    let age = SystemTime::from(entry.created)
                        .elapsed()
                        .map_or(0, |age| age.as_secs());
                    let left = u64::from(interval).saturating_sub(age);
                    if left == 0 {
                        broker.retain_from_peer(cleared());
                        return;
                    }
                    message.properties.message_expiry_interval =
                        Some(u32::try_from(left).unwrap_or(u32::MAX));
                }
                message
            }
            Ok(_) => {
                tracing::warn!(key = %entry.key, "retained-messages bucket: a message under another topic's key, ignored");
                return;
            }
            Err(detail) => {
                tracing::warn!(key = %entry.key, %detail, "retained-messages bucket: a value that is not a message, ignored");
                return;
            }
        },
    };
    broker.retain_from_peer(message);
}

/// The bucket key of `topic` (`None` when too long).
fn key(topic: &TopicName) -> Option<String> {
    keys::key(topic.as_str())
}

/// The topic of a key made by [`key`].
fn topic(key: &str) -> Option<TopicName> {
    TopicName::new(keys::text(key)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_hold_only_what_a_bucket_key_may() {
        let topic = TopicName::new("a.b/c d/=/*/>/é//").unwrap();
        let key = key(&topic).unwrap();
        assert_eq!(key, "a=2Eb/c=20d/=3D/=2A/=3E/=C3=A9//");
        assert_eq!(super::topic(&key), Some(topic));
        let long = TopicName::new("x".repeat(keys::MAX_KEY + 1)).unwrap();
        assert_eq!(super::key(&long), None);
        assert_eq!(super::topic("a=4"), None, "a cut escape");
        assert_eq!(super::topic("a=ZZ"), None);
        assert_eq!(super::topic("=FF"), None, "not UTF-8");
    }

    proptest! {
        #[test]
        fn every_topic_comes_back_from_its_key(text in "[a-z./ =+é\\-_]{1,40}") {
            let text = text.replace(['+'], "p");
            if let Ok(topic) = TopicName::new(text) {
                let key = key(&topic).unwrap();
                prop_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_/=".contains(&b)));
                prop_assert_eq!(super::topic(&key), Some(topic));
            }
        }
    }
}
