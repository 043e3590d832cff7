//! The broker's shared state and the operations connections perform on it: attaching to
//! a session, subscribing, routing a message to every matching session, retaining.
//!
//! Ownership and lock order: the session table (`sessions`), the subscription tree and
//! the retained store each sit behind their own lock, and every session has its own
//! mutex. Locks are taken in the order sessions → subscriptions → retained → one
//! session, never the other way, and never across an `.await`. Routing, the hot path,
//! takes only the subscription tree's read lock and, per target, that session's mutex.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytestring::ByteString;
use fleetwire_mqtt_codec::{
    Connect, Properties, Publish, QoS, ReasonCode, RetainHandling, Subscribe, SubscriptionOptions,
    TopicFilter, TopicName, Unsubscribe, Will,
};
use fleetwire_topics::{RetainedStore, TopicTree};
use parking_lot::{Mutex, MutexGuard, RwLock};
use smallvec::SmallVec;
use tokio::sync::watch;

use crate::auth::{Access, BoxFuture, FailureLimiter};
use crate::compact;
use crate::config::BrokerConfig;
use crate::durable::{Change, SavedMessage, StateError, StateStore, Target as SavedTarget, Ticket};
use crate::ingest::Hooks;
use crate::limits::{ConnectionGate, ConnectionPermit};
use crate::peers::{PeerCongestion, PeerMessage, PeerRouted, PeerTicket, Peers};
use crate::redirect::Redirection;
use crate::session::{
    Attachment, ClientId, Delivery, Link, Message, MessageProperties, Queued, Receipt, Session,
    SessionId, Signals, expiry_from_interval,
};
use crate::stats::{self, Stats, StatsSnapshot};
use crate::will::DelayedWills;

/// Key of one subscription in the tree: the session, and the share group for
/// `$share/{group}/...` filters (a session may hold both `a/+` and `$share/g/a/+`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SubscriptionKey {
    session: SessionId,
    share_group: Option<ByteString>,
}

/// What the tree stores per subscription: enough to deliver without another lookup.
#[derive(Debug)]
struct Subscriber {
    session: Arc<Session>,
    options: SubscriptionOptions,
    subscription_id: Option<u32>,
    /// Its filter may match a topic of `deny_subscribe`: each message is checked
    /// against that list before delivery (no other subscription pays for it).
    is_screened: bool,
}

/// The result of a successful `CONNECT`.
pub(crate) struct Attached {
    pub(crate) session: Arc<Session>,
    pub(crate) is_session_present: bool,
    pub(crate) generation: u64,
    /// Set when the client sent an empty id and the broker chose one.
    pub(crate) assigned_client_id: Option<String>,
}

/// The sessions a user's connections are attached to, with their generations.
type UserConnections = SmallVec<[(Arc<Session>, u64); 1]>;

struct Shared {
    config: BrokerConfig,
    failed_logins: FailureLimiter,
    /// Open connections, per address and in total, and the connection rate.
    gate: Arc<ConnectionGate>,
    sessions: Mutex<HashMap<ClientId, Arc<Session>>>,
    /// The connections (session and generation) each connected user holds, so that
    /// disconnecting a user reaches all of them and presence changes only on the first
    /// and last. Locked alone, or before one session's mutex.
    users: Mutex<HashMap<Arc<str>, UserConnections>>,
    /// Anonymous connections (development mode) acting as a user (named by the ingest,
    /// [`crate::Settled::acting_as`]): generation → user, so that they count as its
    /// connections until they close. Locked alone.
    acting_users: Mutex<HashMap<u64, Arc<str>>>,
    subscriptions: RwLock<TopicTree<SubscriptionKey, Subscriber>>,
    retained: RwLock<Retained>,
    stats: Stats,
    next_id: AtomicU64,
    /// Rotates the member chosen for each shared-subscription delivery.
    share_cursor: AtomicU64,
    started: Instant,
    shutdown: watch::Sender<bool>,
    /// Where persistent sessions and retained messages survive a restart; `None` keeps
    /// them in memory only.
    state: Option<Arc<dyn StateStore>>,
    /// The next id of a message saved in `state`.
    next_message_id: AtomicU64,
    /// A snapshot of `state` is being written.
    is_snapshotting: AtomicBool,
    /// The other nodes of a cluster, once set ([`Broker::set_peers`]).
    peers: OnceLock<Arc<dyn Peers>>,
    /// Wills waiting for their 5.0 delay (`will.rs`). Locked after a session's mutex.
    delayed_wills: DelayedWills,
    /// Where clients are sent instead while set (`redirect.rs`). Locked alone.
    redirection: RwLock<Option<Arc<Redirection>>>,
}

/// The retained messages, and when those with a 5.0 message expiry interval expire.
#[derive(Default)]
struct Retained {
    store: RetainedStore<Arc<Message>>,
    /// `(expiry, topic)` of every retained message that has an expiry, so that the sweep
    /// finds them without walking the store. Holds no more entries than the store.
    expiries: BTreeSet<(Instant, TopicName)>,
}

impl Retained {
    fn insert(&mut self, message: Arc<Message>) {
        let topic = message.topic.clone();
        let expires_at = message.expires_at;
        if let Some(previous) = self.store.insert(&topic, message) {
            self.forget(&previous);
        }
        if let Some(at) = expires_at {
            self.expiries.insert((at, topic));
        }
    }

    fn remove(&mut self, topic: &TopicName) {
        if let Some(previous) = self.store.remove(topic) {
            self.forget(&previous);
        }
    }

    fn forget(&mut self, message: &Message) {
        if let Some(at) = message.expires_at {
            self.expiries.remove(&(at, message.topic.clone()));
        }
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// Removes the messages expired at `now`; how many.
    fn remove_expired(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while self.next_expiry().is_some_and(|at| at <= now) {
            if let Some((_, topic)) = self.expiries.pop_first() {
                self.store.remove(&topic);
                removed += 1;
            }
        }
        removed
    }
}

/// A running broker. Cheap to clone: all clones share one state.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker with no sessions, subscriptions or retained messages. It serves clients
    /// once given a listener and the [`Hooks`] its connections call into
    /// ([`Broker::spawn`], [`Broker::serve`]); until then it can already publish.
    pub fn new(config: BrokerConfig) -> Broker {
        Broker::build(config, None)
    }

    /// A broker whose persistent sessions (subscriptions, queued and in-flight QoS 1/2
    /// messages) and retained messages survive restarts and crashes in `state`: what it
    /// holds is loaded first (sessions come back offline, with their queues). From then
    /// on a QoS 1/2 message is acknowledged to its publisher only once it is durable for
    /// every persistent session it was queued for.
    pub fn with_state(
        config: BrokerConfig,
        state: Arc<dyn StateStore>,
    ) -> Result<Broker, StateError> {
        let broker = Broker::build(config, Some(Arc::clone(&state)));
        crate::restore::load(&broker, state.as_ref())?;
        Ok(broker)
    }

    fn build(config: BrokerConfig, state: Option<Arc<dyn StateStore>>) -> Broker {
        let (shutdown, _) = watch::channel(false);
        let failed_logins =
            FailureLimiter::new(config.auth_failure_burst, config.auth_failures_per_minute);
        let gate = ConnectionGate::new(&config.limits);
        Broker {
            shared: Arc::new(Shared {
                config,
                failed_logins,
                gate,
                sessions: Mutex::new(HashMap::new()),
                users: Mutex::new(HashMap::new()),
                acting_users: Mutex::new(HashMap::new()),
                subscriptions: RwLock::new(TopicTree::default()),
                retained: RwLock::new(Retained::default()),
                stats: Stats::default(),
                next_id: AtomicU64::new(1),
                share_cursor: AtomicU64::new(0),
                started: Instant::now(),
                shutdown,
                state,
                next_message_id: AtomicU64::new(1),
                is_snapshotting: AtomicBool::new(false),
                peers: OnceLock::new(),
                delayed_wills: DelayedWills::default(),
                redirection: RwLock::new(None),
            }),
        }
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.shared.config
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Writes a snapshot of the durable state now, so that the logs before it can go
    /// and the next start reads less. Does nothing without a durable state, or while
    /// another snapshot is being written. Blocks: call it from a blocking thread.
    pub fn snapshot_state(&self) -> Result<(), StateError> {
        let Some(state) = &self.shared.state else {
            return Ok(());
        };
        if self.shared.is_snapshotting.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let written = crate::restore::write_snapshot(self, state.as_ref());
        self.shared.is_snapshotting.store(false, Ordering::Release);
        written
    }

    /// Starts a snapshot on a blocking thread when the durable state asks for one.
    pub(crate) fn snapshot_if_due(&self) {
        let Some(state) = &self.shared.state else {
            return;
        };
        if !state.wants_snapshot() || self.shared.is_snapshotting.load(Ordering::Acquire) {
            return;
        }
        let broker = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(error) = broker.snapshot_state() {
                tracing::error!(%error, "writing a snapshot of the broker state failed");
            }
        });
    }

    /// Makes everything saved in the durable state durable and closes it (at the end of
    /// a shutdown, once connections are closed).
    pub fn close_state(&self) -> Result<(), StateError> {
        match &self.shared.state {
            Some(state) => state.shutdown(),
            None => Ok(()),
        }
    }

    /// The durable state, if the broker has one.
    pub(crate) fn state(&self) -> Option<&Arc<dyn StateStore>> {
        self.shared.state.as_ref()
    }

    /// Saves `change` in the durable state; the ticket to wait for before acknowledging
    /// what depends on it. A failed save is logged and gives a ticket that never becomes
    /// durable (waiting for it fails), so nothing that depends on it is acknowledged.
    pub(crate) fn save(&self, change: Change<'_>) -> Option<Ticket> {
        self.save_change(change, true)
    }

    /// Saves a change nobody waits for (losing it to a crash loses nothing
    /// acknowledged: a session's connect or disconnect, an acknowledgement from its
    /// client, an unsubscribe).
    pub(crate) fn note(&self, change: Change<'_>) {
        self.save_change(change, false);
    }

    fn save_change(&self, change: Change<'_>, is_waited: bool) -> Option<Ticket> {
        let state = self.shared.state.as_ref()?;
        match state.save(change, is_waited) {
            Ok(ticket) => Some(ticket),
            Err(error) => {
                tracing::error!(%error, "saving broker state failed");
                Some(Ticket(u64::MAX))
            }
        }
    }

    /// A new message id for the durable state.
    pub(crate) fn next_message_id(&self) -> u64 {
        self.shared.next_message_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The id of `message` in the durable state, given on first use.
    pub(crate) fn durable_id(&self, message: &Message) -> u64 {
        *message
            .durable_id
            .get_or_init(|| self.shared.next_message_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Makes message ids continue after `last` (restored from the durable state).
    pub(crate) fn restore_message_ids(&self, last: u64) {
        self.shared
            .next_message_id
            .fetch_max(last.saturating_add(1), Ordering::Relaxed);
    }

    /// Saves that `delivery` was queued for the persistent `session` (a retained
    /// message it subscribed to); `None` when nothing needs saving.
    pub(crate) fn save_queued(&self, session: &Session, delivery: &Delivery) -> Option<Ticket> {
        if delivery.qos == QoS::AtMostOnce || !session.is_saved.load(Ordering::Relaxed) {
            return None;
        }
        let id = self.durable_id(&delivery.message);
        let target = SavedTarget {
            client_id: session.client_id.as_str(),
            qos: delivery.qos,
            is_retained: delivery.is_retained,
            subscription_ids: &delivery.subscription_ids,
        };
        self.save(Change::Queued {
            id,
            message: saved_message(&delivery.message),
            targets: &[target],
        })
    }

    /// A place for a new connection from `peer`, within the connection limits (see
    /// [`Limits`](crate::Limits)); `None` (counted) when the connection should be closed
    /// at once. Front-ends that accept connections themselves (TLS, WebSocket) ask
    /// before any handshake and hand the permit over with the connection.
    pub fn admit_connection(&self, peer: IpAddr) -> Option<ConnectionPermit> {
        match self.shared.gate.admit(peer, &self.shared.stats) {
            Ok(permit) => Some(permit),
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused at accept");
                None
            }
        }
    }

    pub(crate) fn failed_logins(&self) -> &FailureLimiter {
        &self.shared.failed_logins
    }

    pub(crate) fn delayed_wills(&self) -> &DelayedWills {
        &self.shared.delayed_wills
    }

    pub(crate) fn redirection_slot(&self) -> &RwLock<Option<Arc<Redirection>>> {
        &self.shared.redirection
    }

    /// The session table, locked (first in the lock order).
    pub(crate) fn session_table(&self) -> MutexGuard<'_, HashMap<ClientId, Arc<Session>>> {
        self.shared.sessions.lock()
    }

    /// Every session known now.
    pub(crate) fn sessions(&self) -> Vec<Arc<Session>> {
        self.shared.sessions.lock().values().cloned().collect()
    }

    /// Closes every connection of user `name` (for instance: its credentials changed,
    /// or it was removed); 5.0 clients are told "administrative action" (`DISCONNECT`
    /// 0x98). Returns how many connections were closed.
    pub fn disconnect_user(&self, name: &str) -> usize {
        let connections = self
            .shared
            .users
            .lock()
            .get(name)
            .cloned()
            .unwrap_or_default();
        let mut closed = 0;
        for (session, generation) in connections {
            let mut state = session.state.lock();
            if state.is_attached(generation) {
                state.is_revoked = true;
                if let Some(attachment) = &state.attachment {
                    attachment.kick();
                }
                closed += 1;
            }
        }
        if closed > 0 {
            tracing::info!(user = name, connections = closed, "disconnecting user");
        }
        closed
    }

    /// Whether user `name` has at least one open connection.
    pub fn is_user_connected(&self, name: &str) -> bool {
        self.shared.users.lock().contains_key(name)
    }

    /// The anonymous connection `generation` acts as `user` (its ingest said so): from
    /// now until it closes it counts as one of the user's connections (presence, and
    /// [`Broker::disconnect_user`] reaches it). Only its first user counts; later calls
    /// do nothing.
    pub(crate) fn act_as(
        &self,
        user: &Arc<str>,
        session: &Arc<Session>,
        generation: u64,
        hooks: &Hooks,
    ) {
        {
            let mut acting = self.shared.acting_users.lock();
            if acting.contains_key(&generation) {
                return;
            }
            acting.insert(generation, Arc::clone(user));
        }
        self.add_user_connection(user, session, generation, hooks);
    }

    /// Whether the anonymous connection `generation` acts as a user.
    pub(crate) fn is_acting_as_user(&self, generation: u64) -> bool {
        self.shared.acting_users.lock().contains_key(&generation)
    }

    /// Remembers the connection of a user; the first one makes it present.
    fn add_user_connection(
        &self,
        user: &Arc<str>,
        session: &Arc<Session>,
        generation: u64,
        hooks: &Hooks,
    ) {
        let is_first = {
            let mut users = self.shared.users.lock();
            let connections = users.entry(Arc::clone(user)).or_default();
            connections.push((Arc::clone(session), generation));
            connections.len() == 1
        };
        if let (true, Some(authenticator)) = (is_first, hooks.authenticator.as_deref()) {
            authenticator.presence(user, true);
        }
    }

    /// Forgets the connection of a user; the last one makes it absent.
    fn remove_user_connection(&self, user: &str, generation: u64, hooks: &Hooks) {
        let is_last = {
            let mut users = self.shared.users.lock();
            let Some(connections) = users.get_mut(user) else {
                return;
            };
            connections.retain(|(_, held)| *held != generation);
            let is_last = connections.is_empty();
            if is_last {
                users.remove(user);
            }
            is_last
        };
        if let (true, Some(authenticator)) = (is_last, hooks.authenticator.as_deref()) {
            authenticator.presence(user, false);
        }
    }

    /// Current counters.
    pub fn stats_snapshot(&self) -> StatsSnapshot {
        let stats = &self.shared.stats;
        StatsSnapshot {
            clients_connected: stats::get(&stats.clients_connected),
            clients_parked: stats::get(&stats.clients_parked),
            sessions: self.shared.sessions.lock().len() as u64,
            messages_received: stats::get(&stats.messages_received),
            messages_sent: stats::get(&stats.messages_sent),
            messages_dropped: stats::get(&stats.messages_dropped),
            bytes_received: stats::get(&stats.bytes_received),
            bytes_sent: stats::get(&stats.bytes_sent),
            malformed_packets: stats::get(&stats.malformed_packets),
            auth_failures: stats::get(&stats.auth_failures),
            subscriptions: self.shared.subscriptions.read().len() as u64,
            retained_messages: self.shared.retained.read().store.len() as u64,
            connections_open: self.shared.gate.open() as u64,
            connections_refused_total: stats::get(&stats.connections_refused_total),
            connections_refused_per_address: stats::get(&stats.connections_refused_per_address),
            connections_refused_rate: stats::get(&stats.connections_refused_rate),
            publish_rate_exceeded: stats::get(&stats.publish_rate_exceeded),
            subscriptions_refused: stats::get(&stats.subscriptions_refused),
            queued_bytes_dropped: stats::get(&stats.queued_bytes_dropped),
            messages_too_large: stats::get(&stats.messages_too_large),
        }
    }

    /// How long the broker has been running.
    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Asks every connection to close (5.0 clients get `DISCONNECT` "server shutting
    /// down") and the listeners to stop accepting.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Whether [`Broker::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.shared.shutdown.borrow()
    }

    /// Resolves once [`Broker::shutdown`] has been called.
    pub async fn shutdown_requested(&self) {
        let mut signal = self.shutdown_signal();
        let _ = signal.wait_for(|is_stopping| *is_stopping).await;
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shared.shutdown.subscribe()
    }

    fn next_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Attaches a connection to its session, taking over from a connection that holds
    /// it and creating or discarding the session as `clean_start` asks.
    pub(crate) fn attach(
        &self,
        connect: &Connect,
        access: &Access,
        signals: Arc<Signals>,
        hooks: &Hooks,
    ) -> Result<Attached, ReasonCode> {
        let version = connect.protocol;
        let mut assigned_client_id = None;
        let client_id = if connect.client_id.is_empty() {
            if !version.is_v5() && !connect.clean_start {
                // 3.1.1 [MQTT-3.1.3-8]: an empty id needs clean session.
                return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
            let id = format!("fleetwire-{:016x}", self.next_id() ^ random_u64());
            assigned_client_id = Some(id.clone());
            ClientId::new(id)
        } else {
            ClientId::new(connect.client_id.clone())
        };
        let expiry_interval = if version.is_v5() {
            connect.properties.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        let generation = self.next_id();
        let attachment = Attachment {
            generation,
            link: Link::Active(signals),
        };

        let mut discarded = None;
        let (session, is_session_present) = {
            let mut sessions = self.shared.sessions.lock();
            let existing = sessions.get(&client_id).cloned();
            if let (Some(existing), Some(user)) = (&existing, access.user_name()) {
                // A user may not take over (or read) another identity's session.
                if existing.owner.as_ref() != Some(user) {
                    return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
                }
            }
            if let Some(existing) = &existing {
                let mut state = existing.state.lock();
                if let Some(old) = state.attachment.take() {
                    old.detach_signal();
                }
            }
            match existing {
                Some(existing) if !connect.clean_start => (existing, true),
                existing => {
                    discarded = existing;
                    let session = Arc::new(Session::new(
                        SessionId(self.next_id()),
                        client_id.clone(),
                        access.user_name().cloned(),
                        u32::try_from(self.shared.config.max_queued_messages).unwrap_or(u32::MAX),
                    ));
                    sessions.insert(client_id, Arc::clone(&session));
                    (session, false)
                }
            }
        };
        if let Some(old) = discarded {
            self.forget_saved(&old);
            self.remove_subscriptions(&old);
        }

        {
            let mut state = session.state.lock();
            let receive_maximum = connect
                .properties
                .receive_maximum
                .map_or(usize::MAX, usize::from);
            state.version = version;
            state.inflight_limit =
                u32::try_from(self.shared.config.max_inflight.min(receive_maximum).max(1))
                    .unwrap_or(u32::MAX);
            state.is_persistent = expiry_interval > 0;
            state.expiry_interval = expiry_interval;
            state.disconnected_at = None;
            state.is_closing = false;
            state.client_max_packet_size = connect.properties.maximum_packet_size;
            state.control.clear();
            state.is_revoked = false;
            state.is_parking = false;
            state.attachment = Some(attachment);
            if self.shared.state.is_some() {
                if expiry_interval > 0 {
                    self.note(Change::Session {
                        client_id: session.client_id.as_str(),
                        owner: session.owner.as_deref(),
                        expiry_interval,
                        is_v5: version.is_v5(),
                        disconnected_at: None,
                    });
                    session.is_saved.store(true, Ordering::Relaxed);
                } else if session.is_saved.swap(false, Ordering::Relaxed) {
                    self.note(Change::SessionEnded {
                        client_id: session.client_id.as_str(),
                    });
                }
            }
        }
        // After the attachment is set: a will its last connection is about to leave is
        // then dropped by that connection itself (see `will_at_close`).
        self.settle_delayed_will(&session);
        if let Some(user) = access.user_name() {
            self.add_user_connection(user, &session, generation, hooks);
        }
        stats::add(&self.shared.stats.clients_connected, 1);
        Ok(Attached {
            session,
            is_session_present,
            generation,
            assigned_client_id,
        })
    }

    /// Detaches the connection `generation` from `session`; ends the session unless it is
    /// persistent. Does nothing if another connection took the session over.
    pub(crate) fn detach(
        &self,
        session: &Arc<Session>,
        generation: u64,
        access: &Access,
        hooks: &Hooks,
    ) {
        self.shared
            .stats
            .clients_connected
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(user) = access.user_name() {
            self.remove_user_connection(user, generation, hooks);
        } else {
            let acting = self.shared.acting_users.lock().remove(&generation);
            if let Some(user) = acting {
                self.remove_user_connection(&user, generation, hooks);
            }
        }
        let is_persistent = {
            let mut state = session.state.lock();
            if !state.is_attached(generation) {
                return;
            }
            if let Some(attachment) = state.attachment.take() {
                attachment.wake();
            }
            // Publishers paused for this client need not wait for it any more.
            state.has_waiters = false;
            session.space.notify_waiters();
            state.disconnected_at = Some(Instant::now());
            state.control.clear();
            state.is_closing = false;
            state.is_parking = false;
            // QoS 0 messages are not kept for an offline client.
            state
                .pending
                .retain(|delivery| delivery.qos != QoS::AtMostOnce);
            if state.is_persistent && session.is_saved.load(Ordering::Relaxed) {
                self.note(Change::Session {
                    client_id: session.client_id.as_str(),
                    owner: session.owner.as_deref(),
                    expiry_interval: state.expiry_interval,
                    is_v5: state.version.is_v5(),
                    disconnected_at: Some(SystemTime::now()),
                });
            }
            state.is_persistent
        };
        if !is_persistent {
            self.end_session(session);
        }
    }

    /// Changes the expiry of a session at disconnect (5.0 `DISCONNECT` property).
    pub(crate) fn set_session_expiry(&self, session: &Session, generation: u64, interval: u32) {
        let mut state = session.state.lock();
        if state.is_attached(generation) {
            state.expiry_interval = interval;
            state.is_persistent = interval > 0;
        }
    }

    fn end_session(&self, session: &Arc<Session>) {
        self.forget_saved(session);
        self.remove_session(session);
        self.end_delayed_will(session);
        if let Some(peers) = self.shared.peers.get() {
            peers.session_ended(session.client_id.as_str());
        }
    }

    /// Removes `session` from the session table and its subscriptions from the tree.
    pub(crate) fn remove_session(&self, session: &Arc<Session>) {
        {
            let mut sessions = self.shared.sessions.lock();
            if sessions
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                sessions.remove(&session.client_id);
            }
        }
        self.remove_subscriptions(session);
    }

    /// Removes an ending session from the durable state.
    fn forget_saved(&self, session: &Session) {
        let _state = session.state.lock();
        if session.is_saved.swap(false, Ordering::Relaxed) {
            self.note(Change::SessionEnded {
                client_id: session.client_id.as_str(),
            });
        }
    }

    fn remove_subscriptions(&self, session: &Session) {
        let filters: Vec<TopicFilter> = {
            let mut state = session.state.lock();
            state.subscriptions.take_filters()
        };
        if filters.is_empty() {
            return;
        }
        let mut removed = Vec::new();
        {
            let mut tree = self.shared.subscriptions.write();
            for filter in filters {
                if tree
                    .remove(&filter, &subscription_key(session.id, &filter))
                    .is_some()
                {
                    removed.push(filter);
                }
            }
        }
        if let Some(peers) = self.shared.peers.get() {
            for filter in &removed {
                peers.unsubscribed(filter);
            }
        }
    }

    /// The session of `client_id` as the durable state describes it (at start):
    /// created offline if it does not exist yet.
    pub(crate) fn restore_session(
        &self,
        client_id: &str,
        owner: Option<&str>,
        expiry_interval: u32,
        is_v5: bool,
        disconnected_at: Instant,
    ) -> Arc<Session> {
        let client_id = ClientId::new(client_id.to_owned());
        let session = {
            let mut sessions = self.shared.sessions.lock();
            Arc::clone(sessions.entry(client_id.clone()).or_insert_with(|| {
                Arc::new(Session::new(
                    SessionId(self.next_id()),
                    client_id,
                    owner.map(Arc::from),
                    u32::try_from(self.shared.config.max_queued_messages).unwrap_or(u32::MAX),
                ))
            }))
        };
        {
            let mut state = session.state.lock();
            state.version = if is_v5 {
                fleetwire_mqtt_codec::ProtocolVersion::V5
            } else {
                fleetwire_mqtt_codec::ProtocolVersion::V311
            };
            state.is_persistent = expiry_interval > 0;
            state.expiry_interval = expiry_interval;
            state.disconnected_at = Some(disconnected_at);
        }
        session.is_saved.store(true, Ordering::Relaxed);
        session
    }

    /// The session of `client_id`, if there is one.
    pub(crate) fn session(&self, client_id: &str) -> Option<Arc<Session>> {
        self.shared.sessions.lock().get(client_id).cloned()
    }

    /// Ends a session the durable state says ended (at start).
    pub(crate) fn restore_end(&self, client_id: &str) {
        if let Some(session) = self.session(client_id) {
            session.is_saved.store(false, Ordering::Relaxed);
            self.end_session(&session);
        }
    }

    /// Adds a subscription the durable state holds (at start).
    pub(crate) fn restore_subscription(
        &self,
        session: &Arc<Session>,
        filter: &TopicFilter,
        options: SubscriptionOptions,
        subscription_id: Option<u32>,
    ) {
        let filter = compact::filter(filter);
        let subscriber = Subscriber {
            session: Arc::clone(session),
            options,
            subscription_id,
            is_screened: self.is_screened(&filter),
        };
        let existed = self
            .shared
            .subscriptions
            .write()
            .insert(&filter, subscription_key(session.id, &filter), subscriber)
            .is_some();
        if let (false, Some(peers)) = (existed, self.shared.peers.get()) {
            peers.subscribed(&filter);
        }
        session
            .state
            .lock()
            .subscriptions
            .insert(filter, options, subscription_id);
    }

    /// Removes a subscription the durable state says was removed (at start).
    pub(crate) fn restore_unsubscription(&self, session: &Session, filter: &TopicFilter) {
        let removed = self
            .shared
            .subscriptions
            .write()
            .remove(filter, &subscription_key(session.id, filter))
            .is_some();
        if let (true, Some(peers)) = (removed, self.shared.peers.get()) {
            peers.unsubscribed(filter);
        }
        session.state.lock().subscriptions.remove(filter);
    }

    /// Sets or clears a retained message the durable state holds (at start).
    pub(crate) fn restore_retained(&self, topic: &TopicName, message: Option<Arc<Message>>) {
        let mut retained = self.shared.retained.write();
        match message {
            Some(message) => retained.insert(message),
            None => retained.remove(topic),
        }
    }

    /// Every session, for a snapshot of the durable state.
    pub(crate) fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.shared.sessions.lock().values().cloned().collect()
    }

    /// Every retained message, for a snapshot of the durable state.
    pub(crate) fn all_retained(&self) -> Vec<Arc<Message>> {
        let mut messages = Vec::new();
        let every = TopicFilter::new("#").unwrap_or_else(|_| unreachable!("a valid filter"));
        let retained = self.shared.retained.read();
        // `#` leaves out `$` topics, which are the broker's own and not saved.
        retained
            .store
            .for_each_match(&every, |_, message| messages.push(Arc::clone(message)));
        messages
    }

    /// Ends detached sessions whose 5.0 expiry interval has passed.
    pub(crate) fn expire_sessions(&self) {
        let now = Instant::now();
        let expired: Vec<Arc<Session>> = {
            let sessions = self.shared.sessions.lock();
            sessions
                .values()
                .filter(|session| {
                    let state = session.state.lock();
                    match (state.attachment.is_none(), state.disconnected_at) {
                        (true, Some(at)) if state.expiry_interval != u32::MAX => {
                            now.duration_since(at)
                                >= Duration::from_secs(u64::from(state.expiry_interval))
                        }
                        _ => false,
                    }
                })
                .cloned()
                .collect()
        };
        for session in expired {
            tracing::debug!(client_id = %session.client_id, "session expired");
            self.end_session(&session);
        }
    }

    /// Removes retained messages whose 5.0 message expiry interval has passed, so that
    /// they stop taking memory and counting in `$SYS/broker/retained messages/count`.
    /// (Subscribers never receive one anyway: expiry is checked again at delivery.)
    pub(crate) fn expire_retained(&self) {
        let now = Instant::now();
        let is_due = |retained: &Retained| retained.next_expiry().is_some_and(|at| at <= now);
        if is_due(&self.shared.retained.read()) {
            let removed = self.shared.retained.write().remove_expired(now);
            tracing::debug!(removed, "expired retained messages removed");
        }
    }

    /// Adds the subscriptions of `subscribe` and returns one reason code per filter;
    /// retained messages that match are queued after the `SUBACK` (which the caller
    /// queues first).
    pub(crate) fn subscribe(
        &self,
        session: &Arc<Session>,
        subscribe: &Subscribe,
        access: &Access,
    ) -> (Vec<ReasonCode>, Vec<Delivery>, Option<Ticket>) {
        let mut ticket = None;
        let subscription_id = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        let mut reasons = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        let max_subscriptions = self.shared.config.limits.max_subscriptions;
        let denied = &self.shared.config.deny_subscribe;
        for (filter, options) in &subscribe.filters {
            if !access.may_subscribe(filter) {
                reasons.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            }
            // Refused to everyone, whoever asks: "unspecified", not "not authorized".
            if denied.iter().any(|denied| filter.is_within(denied)) {
                reasons.push(ReasonCode::UNSPECIFIED_ERROR);
                continue;
            }
            if max_subscriptions > 0 {
                let state = session.state.lock();
                if state.subscriptions.len() >= max_subscriptions
                    && !state.subscriptions.contains(filter)
                {
                    drop(state);
                    stats::add(&self.shared.stats.subscriptions_refused, 1);
                    reasons.push(ReasonCode::QUOTA_EXCEEDED);
                    continue;
                }
            }
            let filter = &compact::filter(filter);
            let key = subscription_key(session.id, filter);
            let is_screened = self.is_screened(filter);
            let subscriber = Subscriber {
                session: Arc::clone(session),
                options: *options,
                subscription_id,
                is_screened,
            };
            let existed = self
                .shared
                .subscriptions
                .write()
                .insert(filter, key, subscriber)
                .is_some();
            if let (false, Some(peers)) = (existed, self.shared.peers.get()) {
                peers.subscribed(filter);
            }
            {
                let mut state = session.state.lock();
                state
                    .subscriptions
                    .insert(filter.clone(), *options, subscription_id);
                if session.is_saved.load(Ordering::Relaxed) {
                    ticket = ticket.max(self.save(Change::Subscribed {
                        client_id: session.client_id.as_str(),
                        filter,
                        options: *options,
                        subscription_id,
                    }));
                }
            }
            reasons.push(ReasonCode(options.qos as u8));

            let wants_retained = match options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscription => !existed,
                RetainHandling::Never => false,
            };
            if wants_retained && filter.share().is_none() {
                let retained_messages = self.shared.retained.read();
                retained_messages
                    .store
                    .for_each_match(filter, |_, message| {
                        if is_screened && self.is_denied(&message.topic) {
                            return;
                        }
                        retained.push(Delivery {
                            message: Arc::clone(message),
                            qos: message.qos.min(options.qos),
                            is_retained: true,
                            subscription_ids: subscription_id.into_iter().collect(),
                        });
                    });
            }
        }
        (reasons, retained, ticket)
    }

    /// Whether a subscription to `filter` may match a topic no one may subscribe to.
    fn is_screened(&self, filter: &TopicFilter) -> bool {
        let denied = &self.shared.config.deny_subscribe;
        denied.iter().any(|denied| filter.may_overlap(denied))
    }

    /// Whether `topic` is one no subscriber may receive (`deny_subscribe`).
    fn is_denied(&self, topic: &TopicName) -> bool {
        let denied = &self.shared.config.deny_subscribe;
        denied.iter().any(|denied| denied.matches(topic))
    }

    /// Removes subscriptions; per filter, whether it existed.
    pub(crate) fn unsubscribe(&self, session: &Session, unsubscribe: &Unsubscribe) -> Vec<bool> {
        let mut existed = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            let removed = self
                .shared
                .subscriptions
                .write()
                .remove(filter, &subscription_key(session.id, filter))
                .is_some();
            if let (true, Some(peers)) = (removed, self.shared.peers.get()) {
                peers.unsubscribed(filter);
            }
            {
                let mut state = session.state.lock();
                state.subscriptions.remove(filter);
                if session.is_saved.load(Ordering::Relaxed) {
                    self.note(Change::Unsubscribed {
                        client_id: session.client_id.as_str(),
                        filter,
                    });
                }
            }
            existed.push(removed);
        }
        existed
    }

    /// Accepts a `PUBLISH` from a client: updates the retained store and routes it.
    /// Returns the number of sessions it was queued for, and the ticket to wait for
    /// before acknowledging it (when it changed the durable state); sessions whose queues
    /// are congested are added to `congested` so the publisher can pause.
    pub(crate) fn publish(
        &self,
        publish: Publish,
        origin: SessionId,
        congested: &mut Congested,
    ) -> Routed {
        let message = Arc::new(Message {
            expires_at: expiry_from_interval(publish.properties.message_expiry_interval),
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            is_retained: publish.retain,
            properties: MessageProperties::new(forwarded_properties(publish.properties)),
            origin: Some(origin),
            is_compact: false,
            stored_copy: OnceLock::new(),
            receipt: None,
            durable_id: OnceLock::new(),
        });
        self.accept(message, congested)
    }

    /// Publishes a will message on behalf of a client whose connection ended abnormally.
    pub(crate) fn publish_will(&self, will: Will, origin: SessionId) -> usize {
        let message = Arc::new(Message {
            expires_at: expiry_from_interval(will.properties.message_expiry_interval),
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            is_retained: will.retain,
            properties: MessageProperties::new(forwarded_properties(will.properties)),
            origin: Some(origin),
            // Copied out of the CONNECT buffer when the connection started.
            is_compact: true,
            stored_copy: OnceLock::new(),
            receipt: None,
            durable_id: OnceLock::new(),
        });
        // Nobody is left to pause: the publishing connection is gone.
        self.accept(message, &mut Congested::new()).delivered
    }

    /// Publishes the will of a client whose node died with its connection open, as a
    /// will published here is published (to this node's sessions and to the peers):
    /// the peers found it in what that node left ([`Peers::will_held`]). Returns how
    /// many sessions of this node it was queued for.
    pub fn publish_peer_will(&self, will: PeerMessage) -> usize {
        // Nobody is left to pause: the publishing connection is gone.
        self.accept(peer_message(will), &mut Congested::new())
            .delivered
    }

    /// Publishes a message that originates in the broker (`$SYS`, and later the platform's
    /// commands).
    pub fn publish_internal(
        &self,
        topic: TopicName,
        payload: bytes::Bytes,
        qos: QoS,
        is_retained: bool,
    ) -> usize {
        let message = Arc::new(Message {
            topic,
            payload,
            qos,
            is_retained,
            properties: MessageProperties::default(),
            origin: None,
            is_compact: true,
            stored_copy: OnceLock::new(),
            receipt: None,
            expires_at: None,
            durable_id: OnceLock::new(),
        });
        // The broker's own messages are few and never wait for subscribers.
        self.accept(message, &mut Congested::new()).delivered
    }

    /// Publishes a message from outside MQTT (the platform's commands) and calls
    /// `on_delivered` once, when the first receiving client has it: when it acknowledges
    /// the message (`PUBACK` or `PUBREC`), or when a QoS 0 delivery is written to it.
    /// Copies still queued when `expires_in` has passed are dropped, never sent (5.0
    /// receivers are told the time left as the message expiry interval).
    /// Returns how many sessions it was queued for (0: nobody subscribes, and
    /// `on_delivered` is never called).
    pub fn publish_tracked(
        &self,
        topic: TopicName,
        payload: bytes::Bytes,
        qos: QoS,
        expires_in: Option<Duration>,
        on_delivered: impl FnOnce() + Send + 'static,
    ) -> usize {
        let message = Arc::new(Message {
            topic,
            payload,
            qos,
            is_retained: false,
            properties: MessageProperties::default(),
            origin: None,
            is_compact: true,
            stored_copy: OnceLock::new(),
            receipt: Some(Arc::new(Receipt::new(on_delivered))),
            expires_at: expires_in.and_then(|after| Instant::now().checked_add(after)),
            durable_id: OnceLock::new(),
        });
        self.accept(message, &mut Congested::new()).delivered
    }

    fn accept(&self, message: Arc<Message>, congested: &mut Congested) -> Routed {
        let mut routed = self.accept_here(&message, congested);
        if let Some(peers) = self.shared.peers.get() {
            if !message.topic.is_system() {
                routed.peers = peers.published(&PeerMessage {
                    topic: message.topic.clone(),
                    payload: message.payload.clone(),
                    qos: message.qos,
                    is_retained: message.is_retained,
                    properties: message.properties.get().clone(),
                });
            }
        }
        routed
    }

    /// Routes a message published on another node of the cluster to this node's
    /// sessions (and its retained store), as if it had been published here, without
    /// handing it back to the peers. Returns how many sessions it was queued for.
    /// Shared subscriptions are not served here: the peers deliver to them through
    /// [`Broker::publish_to_share_group`].
    /// Sessions whose queues ask for a pause are added to `congestion`.
    pub fn publish_from_peer(
        &self,
        message: PeerMessage,
        congestion: &mut PeerCongestion,
    ) -> PeerRouted {
        let message = peer_message(message);
        let routed = self.accept_here(&message, &mut congestion.0);
        PeerRouted {
            delivered: routed.delivered,
            ticket: routed.ticket,
        }
    }

    /// Routes a message published on another node to the session of `client_id` alone
    /// (if it is here and subscribes to its topic), as [`Broker::publish_from_peer`]
    /// would have: for a session that came here from a node that died, the messages it
    /// missed while it moved.
    pub fn publish_from_peer_to(
        &self,
        client_id: &str,
        message: PeerMessage,
        congestion: &mut PeerCongestion,
    ) -> PeerRouted {
        let message = peer_message(message);
        let routed = self.route(&message, Some(client_id), &mut congestion.0);
        PeerRouted {
            delivered: routed.delivered,
            ticket: routed.ticket,
        }
    }

    /// Resolves once the durable state holds every change up to `ticket` (at once
    /// without a durable state).
    pub fn durable(&self, ticket: Ticket) -> BoxFuture<'static, Result<(), StateError>> {
        match self.state() {
            Some(state) => state.durable(ticket),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }

    /// Delivers a message to one member of this node's share group `group`, one of
    /// whose filters matches its topic: in a cluster the peers choose which node's
    /// members get each message for a group (once cluster-wide), also for messages
    /// published here, so [`Broker::publish`] leaves share groups to them. Returns 1 if
    /// a member got it, 0 if this node has no matching member (any more).
    pub fn publish_to_share_group(&self, group: &str, message: PeerMessage) -> usize {
        let message = peer_message(message);
        let tree = self.shared.subscriptions.read();
        let mut members: SmallVec<[(&ByteString, &Subscriber); 4]> = SmallVec::new();
        let mut is_denied = None;
        tree.for_each_match(&message.topic, |key, subscriber| {
            let Some(member_of) = key.share_group.as_ref().filter(|name| &***name == group) else {
                return;
            };
            if subscriber.is_screened
                && *is_denied.get_or_insert_with(|| self.is_denied(&message.topic))
            {
                return;
            }
            members.push((member_of, subscriber));
        });
        self.route_shared(&message, &mut members, &mut Congested::new())
            .delivered
    }

    /// Applies a change of a retained message made anywhere in the cluster, in the
    /// order the cluster keeps them (this node's own changes come back too): stores
    /// `message` as the topic's retained message, or clears the topic's if its payload is
    /// empty, and saves that. Routes nothing (the message reached the subscribers
    /// through [`Broker::publish_from_peer`]); a change that leaves the store as it is
    /// saves nothing.
    pub fn retain_from_peer(&self, message: PeerMessage) {
        if message.topic.is_system() {
            return;
        }
        {
            let retained = self.shared.retained.read();
            let kept = retained.store.get(&message.topic);
            let is_unchanged = match kept {
                None => message.payload.is_empty(),
                Some(kept) => {
                    kept.payload == message.payload
                        && kept.qos == message.qos
                        && *kept.properties.get() == message.properties
                }
            };
            if is_unchanged {
                return;
            }
        }
        let message = peer_message(PeerMessage {
            is_retained: true,
            ..message
        });
        self.retain(&message);
    }

    /// The other nodes of the cluster, once set.
    pub(crate) fn peers(&self) -> Option<&Arc<dyn Peers>> {
        self.shared.peers.get()
    }

    /// Connects the broker to the other nodes of a cluster: from now on they hear of
    /// every subscription and every message published here, starting with the
    /// subscriptions the broker already holds (restored ones). Set once, before serving;
    /// `false` if peers were set already.
    pub fn set_peers(&self, peers: Arc<dyn Peers>) -> bool {
        if self.shared.peers.set(Arc::clone(&peers)).is_err() {
            return false;
        }
        for session in self.all_sessions() {
            let filters: Vec<TopicFilter> = {
                let state = session.state.lock();
                state
                    .subscriptions
                    .iter()
                    .map(|(filter, ..)| filter.clone())
                    .collect()
            };
            for filter in &filters {
                peers.subscribed(filter);
            }
        }
        true
    }

    fn accept_here(&self, message: &Arc<Message>, congested: &mut Congested) -> Routed {
        let ticket = if message.is_retained {
            self.retain(message)
        } else {
            None
        };
        let mut routed = self.route(message, None, congested);
        routed.ticket = routed.ticket.max(ticket);
        routed
    }

    /// Stores a retained message (or clears its topic's, for an empty payload) and saves
    /// that.
    fn retain(&self, message: &Arc<Message>) -> Option<Ticket> {
        let mut retained = self.shared.retained.write();
        if message.payload.is_empty() {
            retained.remove(&message.topic);
            if message.topic.is_system() {
                return None;
            }
            self.save(Change::RetainedCleared {
                topic: &message.topic,
            })
        } else {
            // Retained messages live long: keep them out of the read buffer.
            retained.insert(message.for_storage());
            // (`$SYS` topics are the broker's own, published again after a start.)
            if self.shared.state.is_none() || message.topic.is_system() {
                return None;
            }
            self.save(Change::Retained {
                message: saved_message(message),
            })
        }
    }

    /// Saves that `message` is queued for the persistent sessions among `targets`
    /// (before it is queued, so that their acknowledgements are saved after it).
    fn save_targets(&self, message: &Message, targets: &[SavedTarget<'_>]) -> Option<Ticket> {
        if targets.is_empty() {
            return None;
        }
        let id = self.durable_id(message);
        self.save(Change::Queued {
            id,
            message: saved_message(message),
            targets,
        })
    }

    /// After a delivery to a persistent session was saved but not queued (its queue was
    /// full): saves that it is gone.
    fn unsave_dropped(&self, queued: Queued, session: &Session, message: &Message) {
        if queued == Queued::Dropped {
            if let Some(&id) = message.durable_id.get() {
                self.note(Change::Removed {
                    client_id: session.client_id.as_str(),
                    ids: &[id],
                });
            }
        }
    }

    /// Queues `message` for every session with a matching subscription: once per session
    /// at the highest QoS among its matching subscriptions, and once per share group.
    /// With `only`, for that client's session alone (its share groups left out).
    fn route(
        &self,
        message: &Arc<Message>,
        only: Option<&str>,
        congested: &mut Congested,
    ) -> Routed {
        struct Target<'a> {
            subscriber: &'a Subscriber,
            qos: QoS,
            is_retain_as_published: bool,
            subscription_ids: SmallVec<[u32; 1]>,
        }
        let tree = self.shared.subscriptions.read();
        let mut targets: SmallVec<[Target<'_>; 4]> = SmallVec::new();
        let mut shared: SmallVec<[(&ByteString, &Subscriber); 4]> = SmallVec::new();
        // In a cluster the peers deliver to share groups (`$SYS` is per node).
        let shares_here = self.shared.peers.get().is_none() || message.topic.is_system();
        // Looked up once, and only if a screened subscription matches.
        let mut is_denied = None;
        tree.for_each_match(&message.topic, |key, subscriber| {
            if key.share_group.is_some() && (!shares_here || only.is_some()) {
                return;
            }
            if only.is_some_and(|only| subscriber.session.client_id.as_str() != only) {
                return;
            }
            if subscriber.is_screened
                && *is_denied.get_or_insert_with(|| self.is_denied(&message.topic))
            {
                return;
            }
            if let Some(group) = &key.share_group {
                shared.push((group, subscriber));
                return;
            }
            if subscriber.options.no_local && message.origin == Some(key.session) {
                return;
            }
            targets.push(Target {
                subscriber,
                qos: subscriber.options.qos,
                is_retain_as_published: subscriber.options.retain_as_published,
                subscription_ids: subscriber.subscription_id.into_iter().collect(),
            });
        });
        if targets.len() > 1 {
            // Overlapping subscriptions of one session deliver once, at the highest QoS.
            targets.sort_unstable_by_key(|target| target.subscriber.session.id);
            targets.dedup_by(|later, kept| {
                if later.subscriber.session.id != kept.subscriber.session.id {
                    return false;
                }
                kept.qos = kept.qos.max(later.qos);
                kept.is_retain_as_published |= later.is_retain_as_published;
                kept.subscription_ids
                    .extend(later.subscription_ids.drain(..));
                true
            });
        }
        let mut ticket = None;
        // Clean sessions and QoS 0 save nothing: one relaxed load per target.
        let mut saved: SmallVec<[SavedTarget<'_>; 4]> = SmallVec::new();
        // The positions in `targets` of the saved ones, ascending (nothing to allocate
        // when none is: a fan-out to clean sessions pays only the loads).
        let mut saved_at: SmallVec<[usize; 4]> = SmallVec::new();
        if message.qos != QoS::AtMostOnce && self.shared.state.is_some() {
            for (index, target) in targets.iter().enumerate() {
                let session = &target.subscriber.session;
                if target.qos != QoS::AtMostOnce && session.is_saved.load(Ordering::Relaxed) {
                    saved_at.push(index);
                    saved.push(SavedTarget {
                        client_id: session.client_id.as_str(),
                        qos: message.qos.min(target.qos),
                        is_retained: target.is_retain_as_published && message.is_retained,
                        subscription_ids: &target.subscription_ids,
                    });
                }
            }
            ticket = self.save_targets(message, &saved);
        }
        let mut next_saved = saved_at.iter().copied().peekable();
        let mut delivered = 0;
        for (index, target) in targets.iter().enumerate() {
            let session = &target.subscriber.session;
            let qos = message.qos.min(target.qos);
            let queued = session.deliver(
                Delivery {
                    message: Arc::clone(message),
                    qos,
                    is_retained: target.is_retain_as_published && message.is_retained,
                    subscription_ids: target.subscription_ids.to_vec(),
                },
                self,
            );
            if next_saved.next_if_eq(&index).is_some() {
                self.unsave_dropped(queued, session, message);
            }
            note_congestion(queued, session, congested);
            delivered += 1;
        }
        if !shared.is_empty() {
            let routed = self.route_shared(message, &mut shared, congested);
            delivered += routed.delivered;
            ticket = ticket.max(routed.ticket);
        }
        Routed {
            delivered,
            ticket,
            peers: None,
        }
    }

    /// Picks one member of each share group, rotating, preferring connected members.
    fn route_shared(
        &self,
        message: &Arc<Message>,
        members: &mut [(&ByteString, &Subscriber)],
        congested: &mut Congested,
    ) -> Routed {
        members.sort_unstable_by(|a, b| a.0.cmp(b.0).then(a.1.session.id.cmp(&b.1.session.id)));
        let cursor = self.shared.share_cursor.fetch_add(1, Ordering::Relaxed) as usize;
        let mut delivered = 0;
        let mut ticket = None;
        for group in members.chunk_by(|a, b| a.0 == b.0) {
            let online: SmallVec<[&Subscriber; 4]> = group
                .iter()
                .map(|(_, subscriber)| *subscriber)
                .filter(|subscriber| subscriber.session.state.lock().attachment.is_some())
                .collect();
            let candidates: SmallVec<[&Subscriber; 4]> = if online.is_empty() {
                group.iter().map(|(_, subscriber)| *subscriber).collect()
            } else {
                online
            };
            let Some(chosen) = candidates.get(cursor % candidates.len().max(1)) else {
                continue;
            };
            let delivery = Delivery {
                message: Arc::clone(message),
                qos: message.qos.min(chosen.options.qos),
                is_retained: chosen.options.retain_as_published && message.is_retained,
                subscription_ids: chosen.subscription_id.into_iter().collect(),
            };
            let saved = self.save_queued(&chosen.session, &delivery);
            ticket = ticket.max(saved);
            let queued = chosen.session.deliver(delivery, self);
            if saved.is_some() {
                self.unsave_dropped(queued, &chosen.session, message);
            }
            note_congestion(queued, &chosen.session, congested);
            delivered += 1;
        }
        Routed {
            delivered,
            ticket,
            peers: None,
        }
    }
}

/// A message from another node as the broker keeps it.
fn peer_message(message: PeerMessage) -> Arc<Message> {
    Arc::new(Message {
        expires_at: expiry_from_interval(message.properties.message_expiry_interval),
        topic: message.topic,
        payload: message.payload,
        qos: message.qos,
        is_retained: message.is_retained,
        properties: MessageProperties::new(message.properties),
        origin: None,
        is_compact: true,
        stored_copy: OnceLock::new(),
        receipt: None,
        durable_id: OnceLock::new(),
    })
}

/// What routing one message did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Routed {
    /// Sessions it was queued for.
    pub(crate) delivered: usize,
    /// The durable-state ticket to wait for before acknowledging it, if it changed that
    /// state (queued for a persistent session, retained).
    pub(crate) ticket: Option<Ticket>,
    /// The peers' ticket to wait for before acknowledging it, if they keep it.
    pub(crate) peers: Option<PeerTicket>,
}

/// A message as the durable state saves it.
pub(crate) fn saved_message(message: &Message) -> SavedMessage<'_> {
    SavedMessage {
        topic: &message.topic,
        payload: &message.payload,
        qos: message.qos,
        is_retained: message.is_retained,
        properties: message.properties.get(),
        expires_at: message.expires_at.map(wall_clock),
    }
}

/// The wall-clock time of `instant` (a time the broker may be down for counts).
pub(crate) fn wall_clock(instant: Instant) -> SystemTime {
    let now = Instant::now();
    let wall = SystemTime::now();
    if instant >= now {
        wall + (instant - now)
    } else {
        wall.checked_sub(now - instant)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The instant of wall-clock time `time` (in the past when it has passed).
pub(crate) fn instant_of(time: SystemTime) -> Instant {
    let now = Instant::now();
    match time.duration_since(SystemTime::now()) {
        Ok(ahead) => now.checked_add(ahead).unwrap_or(now),
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    }
}

/// Sessions whose queues asked the publisher to pause; usually none, so kept inline.
pub(crate) type Congested = SmallVec<[Arc<Session>; 2]>;

fn note_congestion(queued: Queued, session: &Arc<Session>, congested: &mut Congested) {
    if queued == Queued::Congested && !congested.iter().any(|known| known.id == session.id) {
        congested.push(Arc::clone(session));
    }
}

fn subscription_key(session: SessionId, filter: &TopicFilter) -> SubscriptionKey {
    SubscriptionKey {
        session,
        share_group: filter.share().map(|(group, _)| ByteString::from(group)),
    }
}

/// The 5.0 properties a broker forwards with a message (MQTT-3.3.2-*): everything the
/// publisher set for the receivers, nothing that belongs to the publisher's connection.
pub(crate) fn forwarded_properties(properties: Properties) -> Properties {
    if properties.is_empty() {
        return properties;
    }
    Properties {
        payload_format_indicator: properties.payload_format_indicator,
        message_expiry_interval: properties.message_expiry_interval,
        content_type: properties.content_type,
        response_topic: properties.response_topic,
        correlation_data: properties.correlation_data,
        user_properties: properties.user_properties,
        ..Properties::default()
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}
