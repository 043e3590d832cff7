//! The seam to the other nodes of a cluster (issue 20): the broker tells [`Peers`] which
//! topic filters its sessions hold and which messages were published here, and takes
//! the messages published on other nodes through [`Broker::publish_from_peer`]. How
//! they travel (NATS, in the cluster crate) is not the broker's business.
//!
//! [`Broker::publish_from_peer`]: crate::Broker::publish_from_peer

use std::num::NonZeroU64;

use bytes::Bytes;
use fleetwire_mqtt_codec::{Properties, QoS, TopicFilter, TopicName};

use crate::auth::BoxFuture;
use crate::durable::Ticket;

/// A point in the order of what the peers were handed to keep durably (retained
/// messages so far): once it is durable, so is everything handed to them before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerTicket(pub NonZeroU64);

/// The peers could not keep what they were handed: the client is not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the cluster did not keep the message: {0}")]
pub struct PeersError(pub String);

/// A message as it crosses between nodes: what a receiving node routes as if it had
/// been published there (the 5.0 properties are the ones forwarded to subscribers).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerMessage {
    /// Its topic.
    pub topic: TopicName,
    /// Its payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// It was published with the retain flag.
    pub is_retained: bool,
    /// The properties forwarded to subscribers.
    pub properties: Properties,
}

/// What routing a message from another node did here.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerRouted {
    /// Sessions it was queued for.
    pub delivered: usize,
    /// The durable-state ticket that covers it (queued for persistent sessions,
    /// retained): wait for it ([`Broker::durable`]) before telling anyone it is kept.
    ///
    /// [`Broker::durable`]: crate::Broker::durable
    pub ticket: Option<Ticket>,
}

/// Sessions of this node whose queues asked for a pause while messages from other
/// nodes were routed to them ([`Broker::publish_from_peer`]): as a publisher on this
/// node pauses for them, whoever routes another node's messages may wait until they
/// have room ([`PeerCongestion::relieved`]) before routing more.
///
/// [`Broker::publish_from_peer`]: crate::Broker::publish_from_peer
#[derive(Default)]
pub struct PeerCongestion(pub(crate) crate::broker::Congested);

impl PeerCongestion {
    /// Whether no session asked for a pause.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Waits until every congested session has room again (one that stops reading for
    /// `mqtt.slow_consumer_grace` is marked slow and not waited for: its overflow is
    /// dropped), then forgets them.
    pub async fn relieved(&mut self, broker: &crate::Broker) {
        crate::session::wait_for_room(&self.0, broker.config().slow_consumer_grace).await;
        self.0.clear();
    }
}

/// Where the session of a client connecting here was, as the peers found it.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Here, or nowhere: this node may attach the client as a single node would.
    Here,
    /// On another node, which closed its connection and released it: its state, for
    /// [`Broker::adopt_session`] (empty: nothing to resume).
    ///
    /// [`Broker::adopt_session`]: crate::Broker::adopt_session
    Moved(Bytes),
}

/// A claim the peers granted: where the session was, and a hold on the client id.
pub struct Claimed {
    /// Where the session was.
    pub claim: Claim,
    /// Kept until the client is attached here (or refused): while it lives, a release
    /// of the client id that another node asks for waits, so that the connection being
    /// attached is closed by it rather than left open on two nodes.
    pub hold: Box<dyn Send>,
}

/// The other nodes, as the broker sees them. Every method is called on the broker's
/// paths (connections' tasks, with no lock of the broker's held) and must not block:
/// hand the work to a task of your own.
pub trait Peers: Send + Sync {
    /// A session of this node subscribed to `filter`: once per session and filter,
    /// also for every subscription the broker held when the peers were set. A shared
    /// subscription's filter carries its group (`$share/{group}/{filter}`): once peers
    /// are set, the broker leaves share groups to them (each message to one member
    /// cluster-wide), and they deliver to this node's members, messages published here
    /// included, through [`Broker::publish_to_share_group`].
    ///
    /// [`Broker::publish_to_share_group`]: crate::Broker::publish_to_share_group
    fn subscribed(&self, filter: &TopicFilter);

    /// A session of this node no longer holds its subscription to `filter` (it
    /// unsubscribed, or the session ended): once for each [`Peers::subscribed`].
    fn unsubscribed(&self, filter: &TopicFilter);

    /// A message was published on this node by a client, a will or the platform (not
    /// one from a peer, and not the broker's own `$SYS` topics, which are per node),
    /// after it was routed to this node's sessions. Returns a ticket when the peers
    /// keep the message durably (a retained message): its publisher is acknowledged
    /// only once [`Peers::durable`] says so.
    fn published(&self, message: &PeerMessage) -> Option<PeerTicket>;

    /// A client connects here with `client_id` (before its session is attached): make
    /// this node the only one that holds the client id; a node that held it closes its
    /// connection and hands its session over. An error refuses the connection (server
    /// unavailable): the client tries again.
    fn claim(&self, client_id: &str) -> BoxFuture<'static, Result<Claimed, PeersError>>;

    /// Resolves once everything up to `ticket` is durable with the peers, or fails if
    /// what `ticket` stands for could not be kept.
    fn durable(&self, ticket: PeerTicket) -> BoxFuture<'static, Result<(), PeersError>>;

    /// The session of `client_id` ended here (a clean session's client left, a
    /// persistent one expired): the client id is free, unless a new connection of the
    /// same client id takes it again meanwhile. (Not called for a session released to
    /// another node.)
    fn session_ended(&self, client_id: &str);

    /// Connection `generation` of `client_id` (numbers this node gives its
    /// connections) is open here with `will` (its forwarded properties; 5.0: its will
    /// delay, seconds). Kept by the peers until [`Peers::will_released`], so that if
    /// this node dies with the connection open another publishes the will
    /// ([`Broker::publish_peer_will`]).
    ///
    /// [`Broker::publish_peer_will`]: crate::Broker::publish_peer_will
    fn will_held(&self, client_id: &str, generation: u64, will: &PeerMessage, delay: u32);

    /// Connection `generation` of `client_id`, which had a will, ended here: this
    /// node published, dropped or delayed the will itself.
    fn will_released(&self, client_id: &str, generation: u64);
}
