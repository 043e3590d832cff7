//! The sessions of a node that died, taken up by the others.
//!
//! A client whose node died reconnects to another node, which claims its client id
//! (`sessions.rs`); the node that held it does not answer. The claiming node then reads
//! what the dead node left in JetStream (its copy of its broker state, `state.rs`)
//! into a scratch broker of its own: the dead node's sessions as they were, offline,
//! with their queues and in-flight messages. It routes to them what the dead node's
//! consumer had not acknowledged (QoS 1/2 messages published before it died or since:
//! the stream keeps them for it), and from then on every QoS 1/2 message this node reads
//! from the stream, as the dead node would have. The claimed session is released from
//! the scratch broker and adopted by this node's broker (saved before the client is
//! answered), and the client resumes it: `CONNACK` says the session is present, its
//! queue follows. Which node takes up which session is decided by the compare-and-set
//! on its client id, so a session is taken up once however many nodes built a scratch
//! broker for the dead node.
//!
//! A message may be routed here before the session arrived (its copy through core NATS,
//! or this node's own) and read from JetStream only after: for a while after a session
//! is taken up, such messages are routed to it when they are read ("fixups").
//!
//! Once the node counts as gone (silent for `nodes::GONE_AFTER`), one node (the one
//! that creates the key `adopt.{node}` in the sessions bucket, purged once it is done)
//! takes up every session left whose client id the dead node still holds, the same way, so that clients that do not come back soon lose nothing either,
//! and then deletes the dead node's consumer and its copy: the node starts afresh when
//! it comes back (its disk's sessions that others hold are dropped, `reconcile`).
//!
//! A scratch broker goes once its node was heard again after it was built (its
//! sessions are the node's own again) or once every client id it holds is held by
//! another node (checked every `TIDY_EVERY`).
//!
//! Not done: a message the dead node kept but had not acknowledged to JetStream arrives
//! twice. A node cut off from NATS for `GONE_AFTER` counts as gone: its sessions are
//! taken up while its clients may still be connected to it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream;
use fleetwire_broker::{Broker, PeerCongestion, PeerMessage, PeersError, Ticket};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::durable::{NODE_HEADER, consumer_name};
use crate::live::{Crossing, Node, open};
use crate::nodes::Nodes;
use crate::sessions::Sessions;
use crate::state::{self, Replayed};
use crate::subject::ClusterSubjects;
use crate::writer::batched;

/// How long after a session is taken up the messages routed here before it arrived are
/// looked out for.
const FIXUP_FOR: Duration = Duration::from_secs(60);

/// How often scratch brokers are checked for sessions taken up elsewhere.
const TIDY_EVERY: Duration = Duration::from_secs(10);

/// How long reading a dead node's unacknowledged messages waits for the next one.
const READ_WAIT: Duration = Duration::from_secs(10);

/// Own messages published this many numbers before a session is taken up count as
/// perhaps not routed to it (a publisher routes before it numbers its message).
const OWN_MARGIN: u64 = 1024;

/// Sessions of dead nodes: see the module's text.
pub(crate) struct Orphans {
    adopting: tokio::sync::Mutex<Adopting>,
    messages: stream::Stream,
    states: stream::Stream,
    subjects: ClusterSubjects,
    broker: Broker,
    envelope: Arc<Node>,
}

/// What the routing of QoS 1/2 messages read from JetStream shares with taking up
/// sessions (under one lock: a session is taken up between two messages).
#[derive(Default)]
pub(crate) struct Adopting {
    /// A scratch broker per dead node.
    scratch: HashMap<String, Scratch>,
    /// The stream sequence of the last message routed here from JetStream.
    position: u64,
    /// Per publishing node (envelope id), the highest number read from JetStream.
    read: HashMap<u64, u64>,
    fixups: Vec<Fixup>,
}

/// What taking up one session found.
enum Taken {
    /// The dead node left no session for the client id.
    Absent,
    /// Here now; the ticket of its saving.
    Here(Option<Ticket>),
}

/// A dead node's sessions not taken up yet.
struct Scratch {
    broker: Broker,
    built: Instant,
}

/// A session taken up lately, and the messages routed here before it arrived whose
/// copy from JetStream may still come.
struct Fixup {
    client_id: String,
    /// Per other node (envelope id), the numbers routed here through core NATS.
    routed: HashMap<u64, HashSet<u64>>,
    /// This node's own numbers up to this one (from `own_from`).
    own_from: u64,
    own_to: u64,
    until: Instant,
}

impl Fixup {
    fn wants(&self, crossing: &Crossing<'_>, own: u64) -> bool {
        if crossing.origin == own {
            return crossing.number > self.own_from && crossing.number <= self.own_to;
        }
        self.routed
            .get(&crossing.origin)
            .is_some_and(|numbers| numbers.contains(&crossing.number))
    }
}

impl Adopting {
    /// Routes a message read from JetStream (published on node `from`) to the scratch
    /// brokers of the other dead nodes, and to sessions taken up lately that it did not
    /// reach; notes its sequence. The ticket of what that saved here.
    pub(crate) fn feed(
        &mut self,
        crossing: &Crossing<'_>,
        from: &str,
        own: u64,
        broker: &Broker,
    ) -> Option<Ticket> {
        let read = self.read.entry(crossing.origin).or_default();
        *read = (*read).max(crossing.number);
        if self.scratch.is_empty() && self.fixups.is_empty() {
            return None;
        }
        let mut message: Option<Option<PeerMessage>> = None;
        let mut decoded = || message.get_or_insert_with(|| crossing.decode()).clone();
        for (node, scratch) in &self.scratch {
            if node != from {
                if let Some(message) = decoded() {
                    scratch
                        .broker
                        .publish_from_peer(message, &mut PeerCongestion::default());
                }
            }
        }
        let mut ticket = None;
        let now = Instant::now();
        self.fixups.retain(|fixup| fixup.until > now);
        for fixup in &self.fixups {
            if fixup.wants(crossing, own) {
                if let Some(message) = decoded() {
                    let routed = broker.publish_from_peer_to(
                        &fixup.client_id,
                        message,
                        &mut PeerCongestion::default(),
                    );
                    ticket = ticket.max(routed.ticket);
                }
            }
        }
        ticket
    }

    /// Notes that the message at stream sequence `sequence` was routed.
    pub(crate) fn routed(&mut self, sequence: u64) {
        self.position = self.position.max(sequence);
    }
}

impl Orphans {
    pub(crate) fn new(
        messages: stream::Stream,
        states: stream::Stream,
        subjects: ClusterSubjects,
        broker: Broker,
        envelope: Arc<Node>,
    ) -> Arc<Orphans> {
        Arc::new(Orphans {
            adopting: tokio::sync::Mutex::new(Adopting::default()),
            messages,
            states,
            subjects,
            broker,
            envelope,
        })
    }

    /// For the routing of messages read from JetStream.
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, Adopting> {
        self.adopting.lock().await
    }

    /// Takes up the session of `client_id` that dead node `node` held (this node holds
    /// its client id now): `true` once it is here and saved, `false` if that node left
    /// no such session.
    pub(crate) async fn take(&self, node: &str, client_id: &str) -> Result<bool, PeersError> {
        let taken = {
            let mut adopting = self.read_up(node).await?;
            self.adopt(&mut adopting, node, client_id)?
        };
        let Taken::Here(ticket) = taken else {
            return Ok(false);
        };
        if let Some(ticket) = ticket {
            self.broker.durable(ticket).await.map_err(|error| {
                PeersError(format!(
                    "the session of {client_id:?} left by node {node} could not be saved: {error}"
                ))
            })?;
        }
        tracing::info!(%client_id, %node, "took up a session of a node that is gone");
        Ok(true)
    }

    /// Node `gone` went silent: if this node is the one to (`Sessions::wins_adoption`),
    /// takes up every session it left whose client id it still holds, then drops what
    /// the cluster kept for it (its consumer of the QoS 1/2 messages, its copy of its
    /// state): it starts afresh when it comes back.
    pub(crate) async fn take_all(&self, gone: &str, sessions: &Sessions) {
        let Some(revision) = sessions.wins_adoption(gone).await else {
            return;
        };
        self.take_all_won(gone, sessions).await;
        sessions.adopted(gone, revision).await;
    }

    async fn take_all_won(&self, gone: &str, sessions: &Sessions) {
        let client_ids = {
            let adopting = match self.read_up(gone).await {
                Ok(adopting) => adopting,
                Err(error) => {
                    tracing::warn!(node = %gone, %error, "cannot take up the sessions of a node that is gone");
                    return;
                }
            };
            adopting
                .scratch
                .get(gone)
                .map(|scratch| scratch.broker.client_ids())
                .unwrap_or_default()
        };
        let (mut taken, mut elsewhere, mut failed) = (0_u64, 0_u64, 0_u64);
        for client_id in client_ids {
            let hold = match sessions.take_from(&client_id, gone).await {
                Ok(Some(hold)) => hold,
                Ok(None) => {
                    if let Some(scratch) = self.adopting.lock().await.scratch.get(gone) {
                        scratch.broker.release_session(&client_id);
                    }
                    elsewhere += 1;
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%client_id, %error, "cannot take up a session of a node that is gone");
                    failed += 1;
                    continue;
                }
            };
            let adopted = {
                let mut adopting = self.adopting.lock().await;
                self.adopt(&mut adopting, gone, &client_id)
            };
            match adopted {
                Ok(Taken::Here(Some(ticket))) => {
                    if let Err(error) = self.broker.durable(ticket).await {
                        tracing::error!(%client_id, %error, "a session taken up from a node that is gone could not be saved");
                    }
                    taken += 1;
                }
                Ok(Taken::Here(None)) => taken += 1,
                Ok(Taken::Absent) => {}
                Err(error) => {
                    tracing::error!(%client_id, %error, "a session taken up from a node that is gone is lost");
                    failed += 1;
                }
            }
            drop(hold);
        }
        if failed == 0 {
            self.adopting.lock().await.scratch.remove(gone);
            if let Err(error) = self.messages.delete_consumer(&consumer_name(gone)).await {
                tracing::debug!(node = %gone, %error, "the consumer of a node that is gone stays");
            }
            if let Err(error) = self
                .states
                .purge()
                .filter(self.subjects.node_state(gone))
                .await
            {
                tracing::debug!(node = %gone, %error, "the state copy of a node that is gone stays");
            }
        }
        tracing::info!(node = %gone, taken, elsewhere, failed, "took up the sessions of a node that is gone");
    }

    /// The lock, with dead node `node`'s scratch broker built unless there was one: read
    /// without the lock (the routing here goes on meanwhile), then caught up with what
    /// was routed here meanwhile, under it.
    async fn read_up(
        &self,
        node: &str,
    ) -> Result<tokio::sync::MutexGuard<'_, Adopting>, PeersError> {
        let position = {
            let adopting = self.adopting.lock().await;
            if adopting.scratch.contains_key(node) {
                return Ok(adopting);
            }
            adopting.position
        };
        let (broker, fed_to) = self.scratch(node, position).await?;
        let mut adopting = self.adopting.lock().await;
        if !adopting.scratch.contains_key(node) {
            if adopting.position > fed_to && !broker.client_ids().is_empty() {
                self.backlog(&broker, node, fed_to, adopting.position)
                    .await
                    .map_err(|detail| PeersError(format!("node {node}'s sessions: {detail}")))?;
            }
            let built = Instant::now();
            adopting
                .scratch
                .insert(node.to_owned(), Scratch { broker, built });
        }
        Ok(adopting)
    }

    /// Moves the session of `client_id` from dead node `node`'s scratch broker to this
    /// node's (saved: the ticket to wait for, after the lock), with its fixup.
    fn adopt(
        &self,
        adopting: &mut Adopting,
        node: &str,
        client_id: &str,
    ) -> Result<Taken, PeersError> {
        let Some(scratch) = adopting
            .scratch
            .get(node)
            .map(|scratch| &scratch.broker)
            .filter(|scratch| scratch.has_session(client_id))
        else {
            return Ok(Taken::Absent);
        };
        let state = scratch.release_session(client_id);
        let broker = &self.broker;
        let (adopted, routed, own_to) = self
            .envelope
            .quietly(&adopting.read, || broker.adopt_session(&state));
        let ticket = adopted.map_err(|detail| {
            PeersError(format!(
                "the session of {client_id:?} left by node {node} does not decode: {detail}"
            ))
        })?;
        let own_from = adopting
            .read
            .get(&self.envelope.id())
            .copied()
            .unwrap_or(0)
            .saturating_sub(OWN_MARGIN);
        let now = Instant::now();
        adopting.fixups.retain(|fixup| fixup.until > now);
        adopting.fixups.push(Fixup {
            client_id: client_id.to_owned(),
            routed,
            own_from,
            own_to,
            until: now + FIXUP_FOR,
        });
        Ok(Taken::Here(ticket))
    }

    /// A scratch broker with node `node`'s sessions as it left them, and the QoS 1/2
    /// messages its consumer had not acknowledged up to `position` (none if it left no
    /// session); with the stream sequence it holds the messages up to.
    async fn scratch(&self, node: &str, position: u64) -> Result<(Broker, u64), PeersError> {
        let failed = |detail: String| PeersError(format!("node {node}'s sessions: {detail}"));
        let records = state::read(&self.states, &self.subjects, node)
            .await
            .map_err(failed)?;
        let scratch = Broker::with_state(self.broker.config().clone(), Arc::new(Replayed(records)))
            .map_err(|error| failed(error.to_string()))?;
        let sessions = scratch.client_ids().len();
        let floor = match self.messages.consumer_info(consumer_name(node)).await {
            Ok(info) => info.ack_floor.stream_sequence,
            Err(_) => position,
        };
        let routed = if floor < position && sessions > 0 {
            self.backlog(&scratch, node, floor, position)
                .await
                .map_err(failed)?
        } else {
            0
        };
        tracing::info!(
            %node,
            sessions,
            messages = routed,
            "read the sessions of a node that is gone"
        );
        Ok((scratch, floor.max(position)))
    }

    /// Routes to `scratch` the messages of the stream after `floor` up to `to` that were
    /// not published on `node`; how many were read.
    async fn backlog(
        &self,
        scratch: &Broker,
        node: &str,
        floor: u64,
        to: u64,
    ) -> Result<u64, String> {
        // An interest stream takes only consumers with its replicas.
        let replicas = self
            .messages
            .clone()
            .info()
            .await
            .map_err(|error| error.to_string())?
            .config
            .num_replicas;
        let consumer = self
            .messages
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: floor + 1,
                },
                ack_policy: AckPolicy::None,
                num_replicas: replicas,
                inactive_threshold: READ_WAIT,
                ..pull::Config::default()
            })
            .await
            .map_err(|error| error.to_string())?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|error| error.to_string())?;
        let mut read = 0;
        loop {
            let message = match tokio::time::timeout(READ_WAIT, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => return Err(error.to_string()),
                Ok(None) | Err(_) => {
                    return Err("the stream of QoS 1/2 messages cut short".to_owned());
                }
            };
            let info = message.info().map_err(|error| error.to_string())?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            if sequence > to {
                break;
            }
            read += 1;
            let from = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(NODE_HEADER))
                .map(|origin| origin.as_str());
            if from != Some(node) {
                for write in batched(&message.payload).map_while(|write| write) {
                    if let Some(decoded) =
                        open(&write, &message.subject).and_then(|crossing| crossing.decode())
                    {
                        scratch.publish_from_peer(decoded, &mut PeerCongestion::default());
                    }
                }
            }
            if sequence >= to || pending == 0 {
                break;
            }
        }
        Ok(read)
    }

    /// Every `TIDY_EVERY`: drops the scratch brokers of nodes alive again, and the
    /// sessions in them whose client ids other nodes hold now.
    pub(crate) fn tidy(self: &Arc<Self>, nodes: Nodes, sessions: Arc<Sessions>) {
        let orphans = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TIDY_EVERY).await;
                let held: Vec<(String, Instant, Vec<String>)> = {
                    let adopting = orphans.adopting.lock().await;
                    adopting
                        .scratch
                        .iter()
                        .map(|(node, scratch)| {
                            (node.clone(), scratch.built, scratch.broker.client_ids())
                        })
                        .collect()
                };
                for (node, built, client_ids) in held {
                    if nodes.last_heard(&node).is_some_and(|heard| heard > built) {
                        orphans.adopting.lock().await.scratch.remove(&node);
                        tracing::info!(%node, "a node is back: its sessions are its own again");
                        continue;
                    }
                    let mut elsewhere = Vec::new();
                    for client_id in client_ids {
                        match sessions.holder_of(&client_id).await {
                            Ok(holder) if holder.as_deref() != Some(node.as_str()) => {
                                elsewhere.push(client_id);
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::debug!(%error, "cannot check who holds a dead node's sessions yet");
                                break;
                            }
                        }
                    }
                    let mut adopting = orphans.adopting.lock().await;
                    if let Some(scratch) =
                        adopting.scratch.get(&node).map(|scratch| &scratch.broker)
                    {
                        for client_id in &elsewhere {
                            scratch.release_session(client_id);
                        }
                        if scratch.client_ids().is_empty() {
                            adopting.scratch.remove(&node);
                            tracing::info!(%node, "every session of a node that is gone was taken up");
                        }
                    }
                }
            }
        });
    }
}
