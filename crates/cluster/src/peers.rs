//! The broker's peers over NATS: what a node joining its cluster gives to
//! [`Broker::set_peers`].

use std::sync::Arc;

use async_nats::jetstream;
use fleetwire_broker::{BoxFuture, Broker, Claimed, PeerMessage, PeerTicket, Peers, PeersError};
use fleetwire_mqtt_codec::{QoS, TopicFilter};

use crate::ClusterError;
use crate::durable::Durable;
use crate::kept::Kept;
use crate::live::{Live, Nats, Node};
use crate::retained::Retained;
use crate::sessions::Sessions;
use crate::subject::ClusterSubjects;
use crate::writer::{Write, Writer};

/// Writes of QoS 0 messages (retained ones) pending in JetStream, at most: past it
/// they stay on their node (counted).
const QOS0_PENDING: usize = 16 * 1024;

/// The other nodes, over NATS: live routing on core NATS; QoS 1/2 messages, retained
/// messages and who holds which client id in JetStream.
pub struct NatsPeers {
    live: Live,
    durable: Durable,
    retained: Retained,
    sessions: Arc<Sessions>,
    /// Every JetStream write a publisher waits for, in one order (one ticket sequence).
    writer: Writer,
}

/// Joins `broker` to the nodes sharing `nats` as node `node`, on subjects under
/// `prefix` (`fleetwire`): opens what the cluster keeps in JetStream (creating it on
/// the first node), reads the cluster's retained messages, drops the sessions on this
/// node's disk that another node holds now, and starts routing. The broker still has
/// to be given the peers ([`Broker::set_peers`]) before it serves.
pub async fn join(
    nats: Nats,
    prefix: &str,
    node: &str,
    broker: &Broker,
) -> Result<Arc<NatsPeers>, ClusterError> {
    let subjects = ClusterSubjects::new(prefix).ok_or_else(|| ClusterError::InvalidUrl {
        url: prefix.to_owned(),
        detail: "not a valid subject prefix".to_owned(),
    })?;
    let jetstream = jetstream::new(nats.client.clone());
    let kept = Kept::open(&jetstream, &nats.client, &subjects).await?;
    let retained = Retained::start(kept.retained, broker.clone()).await?;
    let sessions = Sessions::start(
        kept.sessions,
        nats.client.clone(),
        subjects.clone(),
        node,
        broker.clone(),
    )
    .await?;
    sessions.reconcile(broker).await?;
    let envelope = Arc::new(Node::new());
    let durable = Durable::start(
        &kept.messages,
        &subjects,
        node,
        Arc::clone(&envelope),
        broker.clone(),
    )
    .await?;
    crate::totals::start(nats.client.clone(), &subjects, node, broker.clone())
        .await
        .map_err(|error| ClusterError::Subscribe {
            what: "the other nodes' counters",
            detail: error.to_string(),
        })?;
    tracing::info!(replicas = kept.replicas, "cluster state in JetStream");
    let live = Live::start(nats, subjects, broker.clone(), envelope);
    Ok(Arc::new(NatsPeers {
        live,
        durable,
        retained,
        sessions,
        writer: Writer::start(jetstream),
    }))
}

impl NatsPeers {
    /// Messages not sent to the other nodes because NATS could not keep up.
    pub fn dropped(&self) -> u64 {
        self.live.dropped()
    }

    /// Queues `write` for a message of `qos`: the ticket to wait for, for QoS 1/2.
    fn write(&self, write: Write, qos: QoS) -> Option<PeerTicket> {
        if qos != QoS::AtMostOnce {
            return Some(self.writer.write(write));
        }
        if !self.writer.try_write(write, QOS0_PENDING) {
            let dropped = self.writer.dropped();
            if dropped % 10_000 == 1 {
                tracing::warn!(
                    dropped,
                    "JetStream does not keep up: QoS 0 retained messages kept on their node only"
                );
            }
        }
        None
    }
}

impl Peers for NatsPeers {
    fn subscribed(&self, filter: &TopicFilter) {
        self.live.subscribed(filter);
    }

    fn unsubscribed(&self, filter: &TopicFilter) {
        self.live.unsubscribed(filter);
    }

    fn published(&self, message: &PeerMessage) -> Option<PeerTicket> {
        let crossing = self.live.published(message);
        let mut ticket = None;
        if let (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(crossing)) = (message.qos, crossing) {
            ticket = self.write(self.durable.write(crossing), message.qos);
        }
        if message.is_retained {
            if let Some(write) = self.retained.write(message) {
                ticket = ticket.max(self.write(write, message.qos));
            }
        }
        ticket
    }

    fn durable(&self, ticket: PeerTicket) -> BoxFuture<'static, Result<(), PeersError>> {
        Box::pin(self.writer.durable(ticket))
    }

    fn claim(&self, client_id: &str) -> BoxFuture<'static, Result<Claimed, PeersError>> {
        let sessions = Arc::clone(&self.sessions);
        let client_id = client_id.to_owned();
        Box::pin(async move { sessions.claim(&client_id).await })
    }
}
