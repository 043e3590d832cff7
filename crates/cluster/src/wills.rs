//! The wills of connections open on a node, kept in JetStream so that another node
//! publishes them if that node dies first.
//!
//! A client connecting with a will makes its node put the will in the bucket
//! `fleetwire_wills` (key `{node}.{client id}`, both escaped as `keys.rs` does; value:
//! the will delay, 4 bytes big-endian, then the will as an MQTT 5.0 `PUBLISH` with its
//! forwarded properties). When the connection ends, its node takes care of the will as
//! a single node does (published, dropped or delayed) and purges the key. Puts and
//! purges go in order per client id (a few tasks, by client id), never in the way of
//! the connection: a node that dies within moments of a `CONNACK` may not have kept
//! the will yet. A node that stops finishes its purges first ([`NatsPeers::leave`]):
//! the connections it closed leave no will behind.
//!
//! [`NatsPeers::leave`]: crate::NatsPeers::leave
//!
//! When a node is gone (`nodes.rs`), every other node lists its keys and, for each,
//! waits its will delay, then purges the key expecting the revision it read: the node
//! whose purge succeeds publishes the will ([`Broker::publish_peer_will`]), so each
//! will is published once. A will with a delay is dropped instead if its client id is
//! held by another node by then (the client came back). A node that starts publishes
//! what its previous run left (it died with those connections open), and, once it has
//! had time to hear the others, what nodes that are not there left.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::{BufMut, Bytes, BytesMut};
use fleetwire_broker::{Broker, PeerMessage};
use futures_util::TryStreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::keys;
use crate::live::{decode, encode};
use crate::nodes::{GONE_AFTER, Nodes};
use crate::sessions::Sessions;

/// The bucket's name.
pub(crate) const BUCKET: &str = "fleetwire_wills";

/// Tasks writing the bucket (a client id always goes to the same one).
const WORKERS: usize = 4;

/// This node's side of the bucket: see the module's text.
pub(crate) struct Wills {
    workers: Vec<mpsc::UnboundedSender<Op>>,
}

enum Op {
    Hold {
        client_id: String,
        generation: u64,
        value: Bytes,
    },
    Release {
        client_id: String,
        generation: u64,
    },
    /// Answered once what was sent before is written.
    Flush(oneshot::Sender<()>),
}

impl Wills {
    /// Starts keeping the wills of node `node`'s connections in `store`.
    pub(crate) fn start(store: &kv::Store, node: &str) -> Option<Wills> {
        let prefix = format!("{}.", keys::key(node)?);
        let workers = (0..WORKERS)
            .map(|_| {
                let (sender, ops) = mpsc::unbounded_channel();
                tokio::spawn(work(store.clone(), prefix.clone(), ops));
                sender
            })
            .collect();
        Some(Wills { workers })
    }

    /// Connection `generation` of `client_id` is open here with `will`.
    pub(crate) fn held(&self, client_id: &str, generation: u64, will: &PeerMessage, delay: u32) {
        let mut value =
            BytesMut::with_capacity(will.payload.len() + will.topic.as_str().len() + 16);
        value.put_u32(delay);
        if let Err(error) = encode(will, &mut value) {
            tracing::warn!(%client_id, %error, "will not kept by the cluster");
            return;
        }
        self.send(Op::Hold {
            client_id: client_id.to_owned(),
            generation,
            value: value.freeze(),
        });
    }

    /// Connection `generation` of `client_id` ended here.
    pub(crate) fn released(&self, client_id: &str, generation: u64) {
        self.send(Op::Release {
            client_id: client_id.to_owned(),
            generation,
        });
    }

    /// Resolves once everything handed over so far is written (or failed).
    pub(crate) async fn flush(&self) {
        let mut written = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            let (done, flushed) = oneshot::channel();
            if worker.send(Op::Flush(done)).is_ok() {
                written.push(flushed);
            }
        }
        for flushed in written {
            let _ = flushed.await;
        }
    }

    fn send(&self, op: Op) {
        let client_id = match &op {
            Op::Hold { client_id, .. } | Op::Release { client_id, .. } => client_id,
            Op::Flush(_) => return,
        };
        let mut hasher = DefaultHasher::new();
        client_id.hash(&mut hasher);
        let worker = usize::try_from(hasher.finish() % WORKERS as u64).unwrap_or(0);
        if self.workers[worker].send(op).is_err() {
            tracing::debug!("the wills of this node are not kept any more");
        }
    }
}

/// Writes the bucket for the client ids given to one worker, in order.
async fn work(store: kv::Store, prefix: String, mut ops: mpsc::UnboundedReceiver<Op>) {
    // The connection whose will each client id has in the bucket.
    let mut held: HashMap<String, u64> = HashMap::new();
    while let Some(op) = ops.recv().await {
        match op {
            Op::Hold {
                client_id,
                generation,
                value,
            } => {
                let Some(key) = keys::key(&client_id) else {
                    tracing::warn!(%client_id, "will not kept by the cluster: client id too long");
                    continue;
                };
                match store.put(format!("{prefix}{key}"), value).await {
                    Ok(_) => {
                        held.insert(client_id, generation);
                    }
                    Err(error) => {
                        tracing::warn!(%client_id, %error, "will not kept by the cluster")
                    }
                }
            }
            Op::Release {
                client_id,
                generation,
            } => {
                if held.get(&client_id) != Some(&generation) {
                    continue;
                }
                held.remove(&client_id);
                let Some(key) = keys::key(&client_id) else {
                    continue;
                };
                if let Err(error) = keys::purge(&store, &format!("{prefix}{key}"), None).await {
                    tracing::warn!(%client_id, %error, "a will left in the cluster's bucket: published if this node dies");
                }
            }
            Op::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Publishes the wills left in `store` by nodes that are gone: this node's own from
/// its previous run (found before this returns, so before this run's connections add
/// theirs), those `departures` names as they go, and, after `GONE_AFTER`, those of
/// nodes not heard from.
pub(crate) async fn publish_orphans(
    store: kv::Store,
    node: String,
    nodes: Nodes,
    mut departures: mpsc::UnboundedReceiver<String>,
    broker: Broker,
    sessions: Arc<Sessions>,
) {
    let orphans = Left {
        store,
        broker,
        sessions,
    };
    let orphans = Arc::new(orphans);
    orphans.publish_of(&node).await;
    let silent = Arc::clone(&orphans);
    tokio::spawn(async move {
        tokio::time::sleep(GONE_AFTER).await;
        let Ok(keys) = silent.keys("").await else {
            return;
        };
        let mut left: Vec<String> = keys.iter().filter_map(|key| node_of(key)).collect();
        left.sort();
        left.dedup();
        for gone in left {
            if gone != node && !nodes.is_alive(&gone) {
                silent.publish_of(&gone).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(gone) = departures.recv().await {
            orphans.publish_of(&gone).await;
        }
    });
}

/// The wills nodes that are gone left.
struct Left {
    store: kv::Store,
    broker: Broker,
    sessions: Arc<Sessions>,
}

impl Left {
    /// The keys of the bucket that start with `prefix` (JetStream lists the subjects
    /// holding them: only those), purged ones included.
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, ()> {
        let failed = |error: &dyn std::fmt::Display| {
            tracing::warn!(%error, "cannot list the wills the cluster keeps");
        };
        let bucket = format!("$KV.{BUCKET}.");
        let subjects = self
            .store
            .stream
            .info_with_subjects(format!("{bucket}{prefix}>"))
            .await
            .map_err(|error| failed(&error))?;
        let listed: Vec<(String, usize)> = subjects
            .try_collect()
            .await
            .map_err(|error| failed(&error))?;
        Ok(listed
            .into_iter()
            .filter_map(|(subject, _)| subject.strip_prefix(&bucket).map(str::to_owned))
            .collect())
    }

    /// Publishes (each after its delay) the wills `node` left.
    async fn publish_of(self: &Arc<Self>, node: &str) {
        let Some(prefix) = keys::key(node).map(|key| format!("{key}.")) else {
            return;
        };
        let Ok(keys) = self.keys(&prefix).await else {
            return;
        };
        let mut found = 0_usize;
        for key in keys {
            let Some(client_id) = keys::text(&key[prefix.len()..]) else {
                continue;
            };
            let entry = match self.store.entry(key.as_str()).await {
                Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%client_id, %error, "cannot read a will a gone node left");
                    continue;
                }
            };
            let Some((delay, will)) = will_of(&entry.value) else {
                tracing::warn!(%client_id, "a will in the cluster's bucket that does not decode: dropped");
                let _ = keys::purge(&self.store, &key, Some(entry.revision)).await;
                continue;
            };
            found += 1;
            let orphans = Arc::clone(self);
            let node = node.to_owned();
            tokio::spawn(async move {
                orphans
                    .publish(&node, &client_id, &key, entry.revision, delay, will)
                    .await;
            });
        }
        if found > 0 {
            tracing::info!(%node, wills = found, "publishing the wills of the connections a gone node had open");
        }
    }

    async fn publish(
        &self,
        node: &str,
        client_id: &str,
        key: &str,
        revision: u64,
        delay: u32,
        will: PeerMessage,
    ) {
        if delay > 0 {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            // Came back (to another node) within the delay: the will is dropped.
            if self
                .sessions
                .holder(client_id)
                .await
                .is_some_and(|holder| holder != node)
            {
                let _ = keys::purge(&self.store, key, Some(revision)).await;
                tracing::debug!(%client_id, "will dropped: its client came back within the delay");
                return;
            }
        }
        // Whoever purges the revision read publishes: once in the cluster.
        match keys::purge(&self.store, key, Some(revision)).await {
            Ok(()) => {
                let topic = will.topic.clone();
                self.broker.publish_peer_will(will);
                tracing::debug!(%client_id, %node, %topic, "published the will of a gone node's client");
            }
            Err(error) => {
                tracing::debug!(%client_id, %error, "a gone node's will taken by another node");
            }
        }
    }
}

/// The node part of a key.
fn node_of(key: &str) -> Option<String> {
    keys::text(key.split_once('.')?.0)
}

/// The delay and will of a value of the bucket.
fn will_of(value: &[u8]) -> Option<(u32, PeerMessage)> {
    let delay = u32::from_be_bytes(value.get(..4)?.try_into().ok()?);
    Some((delay, decode(value.get(4..)?).ok()?))
}

#[cfg(test)]
mod tests {
    use fleetwire_mqtt_codec::{Properties, QoS, TopicName};

    use super::*;

    #[test]
    fn a_value_holds_the_delay_and_the_will_and_a_key_its_node() {
        let properties = Properties {
            content_type: Some("text/plain".to_owned()),
            ..Properties::default()
        };
        let will = PeerMessage {
            topic: TopicName::new("devices/d.1/status").unwrap(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            is_retained: true,
            properties,
        };
        let mut value = BytesMut::new();
        value.put_u32(90);
        encode(&will, &mut value).unwrap();
        assert_eq!(will_of(&value), Some((90, will)));
        assert_eq!(will_of(&value[..3]), None);
        assert_eq!(will_of(&value[..value.len() - 1]), None);

        let key = format!(
            "{}.{}",
            keys::key("node.a").unwrap(),
            keys::key("client/1").unwrap()
        );
        assert_eq!(node_of(&key).as_deref(), Some("node.a"));
    }
}
