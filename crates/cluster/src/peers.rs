//! The broker's peers over NATS: what a node joining its cluster gives to
//! [`Broker::set_peers`].

use std::sync::Arc;

use async_nats::jetstream;
use fleetwire_broker::{BoxFuture, Broker, Claimed, PeerMessage, PeerTicket, Peers, PeersError};
use fleetwire_mqtt_codec::{QoS, TopicFilter};
use tokio::sync::mpsc;

use crate::ClusterError;
use crate::durable::Durable;
use crate::kept::Kept;
use crate::live::{Live, Nats, Node};
use crate::nodes::Nodes;
use crate::orphans::Orphans;
use crate::retained::Retained;
use crate::sessions::Sessions;
use crate::state::ReplicatedState;
use crate::subject::ClusterSubjects;
use crate::wills::{self, Wills};
use crate::writer::{Write, Writer};

/// How long a stopping node waits for its last writes to the wills bucket.
const LEAVE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// `None` when the node id is too long for a key (wills then stay with the node).
    wills: Option<Wills>,
    /// Every JetStream write a publisher waits for, in one order (one ticket sequence).
    writer: Writer,
}

/// Joins `broker` to the nodes sharing `nats` as node `node`, on subjects under
/// `prefix` (`fleetwire`): opens what the cluster keeps in JetStream (creating it on
/// the first node), reads the cluster's retained messages, drops the sessions on this
/// node's disk that another node holds now, starts routing, and gives the broker its
/// peers ([`Broker::set_peers`]); then publishes the wills left by nodes that are gone
/// (this node's previous run included). With `state` (the broker's durable state, in
/// cluster mode), the broker state is copied to JetStream from then on, starting with a
/// snapshot, so that the other nodes take up its sessions if this node dies.
pub async fn join(
    nats: Nats,
    prefix: &str,
    node: &str,
    broker: &Broker,
    state: Option<&ReplicatedState>,
) -> Result<Arc<NatsPeers>, ClusterError> {
    let subjects = ClusterSubjects::new(prefix).ok_or_else(|| ClusterError::InvalidUrl {
        url: prefix.to_owned(),
        detail: "not a valid subject prefix".to_owned(),
    })?;
    let jetstream = jetstream::new(nats.client.clone());
    let kept = Kept::open(&jetstream, &nats.client, &subjects).await?;
    if let Some(state) = state {
        state.attach(jetstream.clone(), kept.states.clone(), &subjects, node);
    }
    let retained = Retained::start(kept.retained, broker.clone()).await?;
    let envelope = Arc::new(Node::new());
    let orphans = Orphans::new(
        kept.messages.clone(),
        kept.states.clone(),
        subjects.clone(),
        broker.clone(),
        Arc::clone(&envelope),
    );
    let sessions = Sessions::start(
        kept.sessions,
        nats.client.clone(),
        subjects.clone(),
        node,
        broker.clone(),
        Arc::clone(&orphans),
    )
    .await?;
    sessions.back().await;
    sessions.reconcile(broker).await?;
    if state.is_some() {
        // The copy starts from what this node holds now (until it is written, the
        // copy is the previous run's with this run's changes after it).
        let snapshot = broker.clone();
        match tokio::task::spawn_blocking(move || snapshot.snapshot_state()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "the copy of this node's broker state in JetStream may miss sessions until the next snapshot");
            }
            Err(error) => {
                tracing::error!(%error, "writing a snapshot of the broker state panicked");
            }
        }
    }
    let durable = Durable::start(
        &kept.messages,
        &subjects,
        node,
        Arc::clone(&envelope),
        broker.clone(),
        Arc::clone(&orphans),
    )
    .await?;
    crate::totals::start(nats.client.clone(), &subjects, node, broker.clone())
        .await
        .map_err(|error| ClusterError::Subscribe {
            what: "the other nodes' counters",
            detail: error.to_string(),
        })?;
    let (nodes, departures) = Nodes::start(nats.client.clone(), &subjects, node)
        .await
        .map_err(|error| ClusterError::Subscribe {
            what: "the other nodes' heartbeats",
            detail: error.to_string(),
        })?;
    tracing::info!(replicas = kept.replicas, "cluster state in JetStream");
    let live = Live::start(nats, subjects, broker.clone(), envelope);
    let wills = Wills::start(&kept.wills, node);
    if wills.is_none() {
        tracing::warn!("node id too long for the cluster's wills bucket: wills stay on this node");
    }
    let peers = Arc::new(NatsPeers {
        live,
        durable,
        retained,
        sessions: Arc::clone(&sessions),
        wills,
        writer: Writer::start(jetstream, crate::writer::IN_FLIGHT),
    });
    broker.set_peers(Arc::clone(&peers) as Arc<dyn Peers>);
    orphans.tidy(nodes.clone(), Arc::clone(&sessions));
    let departures = take_up_sessions(departures, Arc::clone(&orphans), Arc::clone(&sessions));
    wills::publish_orphans(
        kept.wills,
        node.to_owned(),
        nodes,
        departures,
        broker.clone(),
        sessions,
    )
    .await;
    Ok(peers)
}

/// Takes up the sessions of each node `departures` names (if this node is the one to),
/// and passes the names on (for its wills).
fn take_up_sessions(
    mut departures: mpsc::UnboundedReceiver<String>,
    orphans: Arc<Orphans>,
    sessions: Arc<Sessions>,
) -> mpsc::UnboundedReceiver<String> {
    let (passed, passed_on) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(gone) = departures.recv().await {
            let _ = passed.send(gone.clone());
            let (orphans, sessions) = (Arc::clone(&orphans), Arc::clone(&sessions));
            tokio::spawn(async move { orphans.take_all(&gone, &sessions).await });
        }
    });
    passed_on
}

impl std::fmt::Debug for NatsPeers {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NatsPeers")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl NatsPeers {
    /// Before the node stops, once its connections are closed: finishes writing what
    /// the cluster keeps about them (their wills are dropped from the cluster's bucket:
    /// 5 s at most).
    pub async fn leave(&self) {
        if let Some(wills) = &self.wills {
            if tokio::time::timeout(LEAVE_WAIT, wills.flush())
                .await
                .is_err()
            {
                tracing::warn!(
                    "the cluster's wills bucket not updated within {LEAVE_WAIT:?}: other nodes may publish wills of connections closed here"
                );
            }
        }
    }

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

    fn will_held(&self, client_id: &str, generation: u64, will: &PeerMessage, delay: u32) {
        if let Some(wills) = &self.wills {
            wills.held(client_id, generation, will, delay);
        }
    }

    fn session_ended(&self, client_id: &str) {
        self.sessions.ended(client_id);
    }

    fn will_released(&self, client_id: &str, generation: u64) {
        if let Some(wills) = &self.wills {
            wills.released(client_id, generation);
        }
    }
}
