//! The broker's peers over NATS: what a node joining its cluster gives to
//! [`Broker::set_peers`].

use std::sync::Arc;

use async_nats::jetstream;
use fleetwire_broker::{BoxFuture, Broker, Claim, PeerMessage, PeerTicket, Peers, PeersError};
use fleetwire_mqtt_codec::TopicFilter;

use crate::live::{Live, Nats};
use crate::retained::Retained;
use crate::sessions::Sessions;
use crate::{ClusterError, Subjects};

/// Replicas of what the cluster keeps in JetStream, at most (and at most as many as
/// there are NATS servers).
const MAX_REPLICAS: usize = 3;

/// The other nodes, over NATS: live routing on core NATS, retained messages in a
/// JetStream bucket.
pub struct NatsPeers {
    live: Live,
    retained: Retained,
    sessions: Arc<Sessions>,
}

/// Joins `broker` to the nodes sharing `nats` as node `node`: opens what the cluster
/// keeps in JetStream (creating it on the first node), reads the cluster's retained
/// messages, drops the sessions on this node's disk that another node holds now, and
/// starts routing. The broker still has to be given the peers ([`Broker::set_peers`])
/// before it serves.
pub async fn join(
    nats: Nats,
    subjects: Subjects,
    node: &str,
    broker: &Broker,
) -> Result<Arc<NatsPeers>, ClusterError> {
    let replicas = nats.servers().min(MAX_REPLICAS);
    let jetstream = jetstream::new(nats.client.clone());
    let retained = Retained::start(&jetstream, replicas, broker.clone()).await?;
    let sessions = Sessions::start(
        &jetstream,
        nats.client.clone(),
        subjects.clone(),
        node,
        replicas,
        broker.clone(),
    )
    .await?;
    sessions.reconcile(broker).await?;
    tracing::info!(replicas, "cluster state in JetStream");
    let live = Live::start(nats, subjects, broker.clone());
    Ok(Arc::new(NatsPeers {
        live,
        retained,
        sessions,
    }))
}

impl NatsPeers {
    /// Messages not sent to the other nodes because NATS could not keep up.
    pub fn dropped(&self) -> u64 {
        self.live.dropped()
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
        self.live.published(message);
        if message.is_retained {
            return self.retained.published(message);
        }
        None
    }

    fn durable(&self, ticket: PeerTicket) -> BoxFuture<'static, Result<(), PeersError>> {
        Box::pin(self.retained.durable(ticket))
    }

    fn claim(&self, client_id: &str) -> BoxFuture<'static, Result<Claim, PeersError>> {
        let sessions = Arc::clone(&self.sessions);
        let client_id = client_id.to_owned();
        Box::pin(async move { sessions.claim(&client_id).await })
    }
}
