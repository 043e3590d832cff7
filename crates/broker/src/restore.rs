//! The broker's side of its durable state at start and in snapshots: rebuilding
//! sessions, subscriptions, queues and retained messages from saved [`Change`]s, and
//! describing the live state as changes for a snapshot.
//!
//! Applying a change is idempotent (a snapshot may be followed by changes it already
//! holds): a message is queued for a session at most once (keyed by its id), the other
//! changes set a value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use fleetwire_mqtt_codec::{PacketId, QoS, Will};

use crate::broker::{Broker, instant_of, saved_message, wall_clock};
use crate::durable::{Change, SavedMessage, SnapshotWriter, StateError, StateStore, Target};
use crate::session::{
    Awaiting, ClientId, Delivery, Inflight, Message, MessageProperties, Session, SessionId,
};
use crate::will::save_delayed_will;

/// Ids come from this broker, not from an adversary: a fast hash (millions of them).
type Fast = foldhash::fast::RandomState;

/// What loading has built so far beyond the broker's own state.
struct Loader<'a> {
    broker: &'a Broker,
    /// The session a change was last applied to: consecutive changes are often for the
    /// same one (a snapshot writes a session's changes together).
    last_session: Option<Arc<Session>>,
    /// Saved messages by id (shared by every session they are queued for).
    messages: HashMap<u64, Arc<Message>, Fast>,
    /// (session, message) pairs already queued: a change seen twice queues once.
    queued: HashSet<(SessionId, u64), Fast>,
    last_id: u64,
    /// Counts for the start-up log line.
    changes: u64,
}

/// Loads the durable state into `broker` (before it serves anyone).
pub(crate) fn load(broker: &Broker, store: &dyn StateStore) -> Result<(), StateError> {
    let started = Instant::now();
    let mut loader = Loader::new(broker);
    store.load(&mut |change| loader.apply(change))?;
    broker.restore_message_ids(loader.last_id);
    let stats = broker.stats_snapshot();
    tracing::info!(
        sessions = stats.sessions,
        subscriptions = stats.subscriptions,
        queued_messages = loader.queued.len(),
        retained_messages = stats.retained_messages,
        changes = loader.changes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "broker state loaded"
    );
    Ok(())
}

impl<'a> Loader<'a> {
    fn new(broker: &'a Broker) -> Loader<'a> {
        Loader {
            broker,
            last_session: None,
            messages: HashMap::default(),
            queued: HashSet::default(),
            last_id: 0,
            changes: 0,
        }
    }

    fn apply(&mut self, change: Change<'_>) -> Result<(), String> {
        self.changes += 1;
        match change {
            Change::Session {
                client_id,
                owner,
                expiry_interval,
                is_v5,
                disconnected_at,
            } => {
                // A session connected when the broker stopped counts as disconnected
                // from the start: its expiry counts from now, never shorter than saved.
                let disconnected_at = disconnected_at.map_or_else(Instant::now, instant_of);
                // The session may be replaced or ended here.
                self.last_session = None;
                if let Some(existing) = self.broker.session(client_id) {
                    if existing.owner.as_deref() != owner {
                        // Another user's session of the same id (a snapshot can hold a
                        // later one than the change replayed now): it ends, as it did.
                        self.queued.retain(|(id, _)| *id != existing.id);
                        self.broker.restore_end(client_id);
                    }
                }
                self.broker.restore_session(
                    client_id,
                    owner,
                    expiry_interval,
                    is_v5,
                    disconnected_at,
                );
            }
            Change::SessionEnded { client_id } => {
                self.last_session = None;
                if let Some(session) = self.broker.session(client_id) {
                    self.queued.retain(|(id, _)| *id != session.id);
                }
                self.broker.restore_end(client_id);
            }
            Change::Subscribed {
                client_id,
                filter,
                options,
                subscription_id,
            } => {
                if let Some(session) = self.session(client_id) {
                    self.broker
                        .restore_subscription(&session, filter, options, subscription_id);
                }
            }
            Change::Unsubscribed { client_id, filter } => {
                if let Some(session) = self.session(client_id) {
                    self.broker.restore_unsubscription(&session, filter);
                }
            }
            Change::Queued {
                id,
                message,
                targets,
            } => {
                self.last_id = self.last_id.max(id);
                let message = Arc::clone(
                    self.messages
                        .entry(id)
                        .or_insert_with(|| restored_message(message, Some(id))),
                );
                for target in targets {
                    self.queue(&message, id, target);
                }
            }
            Change::Sent {
                client_id,
                id,
                packet_id,
            } => self.with_session(client_id, |state| {
                let in_flight = state
                    .inflight
                    .iter_mut()
                    .find(|entry| entry.delivery.message.durable_id.get() == Some(&id));
                if let Some(entry) = in_flight {
                    entry.packet_id = packet_id;
                    return;
                }
                if let Some(delivery) = state.take_pending(id) {
                    state.inflight.push_back(Inflight {
                        packet_id,
                        delivery,
                        awaiting: Awaiting::PubRec,
                    });
                }
            }),
            Change::Released { client_id, id } => self.with_session(client_id, |state| {
                if let Some(entry) = state
                    .inflight
                    .iter_mut()
                    .find(|entry| entry.delivery.message.durable_id.get() == Some(&id))
                {
                    entry.awaiting = Awaiting::PubComp;
                }
            }),
            Change::Removed { client_id, ids } => {
                if let Some(session) = self.session(client_id) {
                    let mut state = session.state.lock();
                    for &id in ids {
                        self.queued.remove(&(session.id, id));
                        if state.take_pending(id).is_none() {
                            state.inflight.retain(|entry| {
                                entry.delivery.message.durable_id.get() != Some(&id)
                            });
                        }
                    }
                }
            }
            Change::Received {
                client_id,
                packet_id,
            } => self.with_session(client_id, |state| {
                if !state.incoming_qos2.contains(&packet_id) {
                    state.incoming_qos2.push(packet_id);
                }
            }),
            Change::Completed {
                client_id,
                packet_id,
            } => self.with_session(client_id, |state| {
                state.incoming_qos2.retain(|id| *id != packet_id);
            }),
            Change::Retained { message } => {
                let topic = message.topic.clone();
                let is_expired = message.expires_at.is_some_and(|at| at <= SystemTime::now());
                let message = (!is_expired).then(|| restored_message(message, None));
                self.broker.restore_retained(&topic, message);
            }
            Change::RetainedCleared { topic } => self.broker.restore_retained(topic, None),
            Change::WillDelayed {
                client_id,
                will,
                due_at,
            } => {
                // Its session's record comes first; without one the will went with it.
                if let Some(session) = self.session(client_id) {
                    let will = Will {
                        topic: will.topic.clone(),
                        payload: will.payload.clone(),
                        qos: will.qos,
                        retain: will.is_retained,
                        properties: will.properties.clone(),
                    };
                    self.broker
                        .restore_delayed_will(&session, will, instant_of(due_at));
                }
            }
            Change::WillSettled { client_id } => {
                if let Some(session) = self.session(client_id) {
                    self.broker.restore_will_settled(&session.client_id);
                }
            }
        }
        Ok(())
    }

    /// The session of `client_id`, if there is one.
    fn session(&mut self, client_id: &str) -> Option<Arc<Session>> {
        if let Some(last) = &self.last_session {
            if last.client_id.as_str() == client_id {
                return Some(Arc::clone(last));
            }
        }
        let session = self.broker.session(client_id)?;
        self.last_session = Some(Arc::clone(&session));
        Some(session)
    }

    /// Queues `message` for the target session, once.
    fn queue(&mut self, message: &Arc<Message>, id: u64, target: &Target<'_>) {
        let Some(session) = self.session(target.client_id) else {
            // Saved after the session ended (a race with its end): nobody to queue for.
            return;
        };
        if !self.queued.insert((session.id, id)) {
            return;
        }
        session.state.lock().restore_pending(Delivery {
            message: Arc::clone(message),
            qos: target.qos,
            is_retained: target.is_retained,
            subscription_ids: target.subscription_ids.to_vec(),
        });
    }

    fn with_session(
        &mut self,
        client_id: &str,
        change: impl FnOnce(&mut crate::session::SessionState),
    ) {
        if let Some(session) = self.session(client_id) {
            change(&mut session.state.lock());
        }
    }
}

/// A saved message. Its topic and payload are slices of one allocation of its own (the
/// store decodes each message from a copy of its bytes), not of the loaded file.
fn restored_message(saved: SavedMessage<'_>, id: Option<u64>) -> Arc<Message> {
    let durable_id = OnceLock::new();
    if let Some(id) = id {
        let _ = durable_id.set(id);
    }
    Arc::new(Message {
        topic: saved.topic.clone(),
        payload: saved.payload.clone(),
        qos: saved.qos,
        is_retained: saved.is_retained,
        properties: if saved.properties.is_empty() {
            MessageProperties::default()
        } else {
            MessageProperties::new(saved.properties.clone())
        },
        origin: None,
        is_compact: true,
        stored_copy: OnceLock::new(),
        receipt: None,
        expires_at: saved.expires_at.map(instant_of),
        durable_id,
    })
}

/// A message queued or in flight for one session: id, message, QoS, retain flag and
/// subscription identifiers.
type QueuedEntry = (u64, Arc<Message>, QoS, bool, Vec<u32>);

/// Where a message is queued: (index of the session's part, index in its queue).
type Places = Vec<(usize, usize)>;

/// One session's part of a snapshot, taken under its lock.
struct SessionPart {
    client_id: ClientId,
    /// Messages queued or in flight, in order.
    queued: Vec<QueuedEntry>,
    /// QoS 2 messages sent: (id, packet id, whether `PUBREC` came).
    sent: Vec<(u64, PacketId, bool)>,
}

/// Writes a snapshot of the broker's durable state: the changes that rebuild every
/// persistent session and retained message as they are now.
pub(crate) fn write_snapshot(broker: &Broker, store: &dyn StateStore) -> Result<(), StateError> {
    let started = Instant::now();
    let mut writer = store.snapshot()?;
    let mut parts = Vec::new();
    for session in broker.all_sessions() {
        if let Some(part) = snapshot_session(broker, &session, writer.as_mut())? {
            parts.push(part);
        }
    }
    // Messages once each, by id (per publisher, ids follow the order it published in),
    // with every session they are queued for.
    let mut messages: BTreeMap<u64, (Arc<Message>, Places)> = BTreeMap::new();
    for (part_index, part) in parts.iter().enumerate() {
        for (entry_index, (id, message, ..)) in part.queued.iter().enumerate() {
            messages
                .entry(*id)
                .or_insert_with(|| (Arc::clone(message), Vec::new()))
                .1
                .push((part_index, entry_index));
        }
    }
    let mut written = 0u64;
    for (id, (message, places)) in &messages {
        let targets: Vec<Target<'_>> = places
            .iter()
            .filter_map(|&(part_index, entry_index)| {
                let part = parts.get(part_index)?;
                let (_, _, qos, is_retained, subscription_ids) = part.queued.get(entry_index)?;
                Some(Target {
                    client_id: part.client_id.as_str(),
                    qos: *qos,
                    is_retained: *is_retained,
                    subscription_ids,
                })
            })
            .collect();
        writer.add(Change::Queued {
            id: *id,
            message: saved_message(message),
            targets: &targets,
        })?;
        written += 1;
    }
    for part in &parts {
        for &(id, packet_id, is_released) in &part.sent {
            let client_id = part.client_id.as_str();
            writer.add(Change::Sent {
                client_id,
                id,
                packet_id,
            })?;
            if is_released {
                writer.add(Change::Released { client_id, id })?;
            }
        }
    }
    let retained = broker.all_retained();
    for message in &retained {
        writer.add(Change::Retained {
            message: saved_message(message),
        })?;
    }
    writer.finish()?;
    tracing::info!(
        sessions = parts.len(),
        messages = written,
        retained = retained.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "broker state snapshot written"
    );
    Ok(())
}

/// Writes a persistent session's own changes (session, subscriptions, incoming QoS 2)
/// and returns what it has queued; `None` for a session that is not saved.
fn snapshot_session(
    broker: &Broker,
    session: &Arc<Session>,
    writer: &mut dyn SnapshotWriter,
) -> Result<Option<SessionPart>, StateError> {
    let state = session.state.lock();
    if !session.is_saved.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let client_id = session.client_id.as_str();
    writer.add(Change::Session {
        client_id,
        owner: session.owner.as_deref(),
        expiry_interval: state.expiry_interval,
        is_v5: state.version.is_v5(),
        disconnected_at: match state.attachment {
            Some(_) => None,
            None => state.disconnected_at.map(wall_clock),
        },
    })?;
    for (filter, options, subscription_id) in state.subscriptions.iter() {
        writer.add(Change::Subscribed {
            client_id,
            filter,
            options,
            subscription_id,
        })?;
    }
    for &packet_id in &state.incoming_qos2 {
        writer.add(Change::Received {
            client_id,
            packet_id,
        })?;
    }
    if let Some(pending) = broker.delayed_wills().get(&session.client_id) {
        save_delayed_will(
            &mut |change| writer.add(change),
            client_id,
            &pending.will,
            pending.due,
        )?;
    }
    let mut part = SessionPart {
        client_id: session.client_id.clone(),
        queued: Vec::new(),
        sent: Vec::new(),
    };
    let in_flight = state
        .inflight
        .iter()
        .map(|entry| (&entry.delivery, Some(entry)));
    let pending = state.pending.iter().map(|delivery| (delivery, None));
    for (delivery, entry) in in_flight.chain(pending) {
        if delivery.qos == QoS::AtMostOnce {
            continue;
        }
        let id = broker.durable_id(&delivery.message);
        part.queued.push((
            id,
            Arc::clone(&delivery.message),
            delivery.qos,
            delivery.is_retained,
            delivery.subscription_ids.clone(),
        ));
        if let Some(entry) = entry {
            if delivery.qos == QoS::ExactlyOnce {
                part.sent
                    .push((id, entry.packet_id, entry.awaiting == Awaiting::PubComp));
            }
        }
    }
    Ok(Some(part))
}

/// Describes `session` as the changes that rebuild it (session, subscriptions,
/// incoming QoS 2 state, its delayed will, its queued and in-flight QoS 1/2 messages, one
/// target each) as framed records: what [`adopt`] takes on another node.
pub(crate) fn describe_session(broker: &Broker, session: &Arc<Session>) -> Vec<u8> {
    struct Records(Vec<u8>);
    impl SnapshotWriter for Records {
        fn add(&mut self, change: Change<'_>) -> Result<(), StateError> {
            crate::durable::encode_change(&change, &mut self.0);
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<(), StateError> {
            Ok(())
        }
    }
    let mut records = Records(Vec::new());
    // A session that is not saved here (persistence off) is described all the same.
    let was_saved = session.is_saved.swap(true, Ordering::Relaxed);
    let part = snapshot_session(broker, session, &mut records);
    session.is_saved.store(was_saved, Ordering::Relaxed);
    let Ok(Some(part)) = part else {
        return records.0;
    };
    let client_id = part.client_id.as_str();
    for (id, message, qos, is_retained, subscription_ids) in &part.queued {
        let target = Target {
            client_id,
            qos: *qos,
            is_retained: *is_retained,
            subscription_ids,
        };
        let _ = records.add(Change::Queued {
            id: *id,
            message: saved_message(message),
            targets: std::slice::from_ref(&target),
        });
    }
    for &(id, packet_id, is_released) in &part.sent {
        let _ = records.add(Change::Sent {
            client_id,
            id,
            packet_id,
        });
        if is_released {
            let _ = records.add(Change::Released { client_id, id });
        }
    }
    records.0
}

/// Rebuilds a session another node described ([`describe_session`]) in `broker`, and
/// saves it in the broker's own durable state. Its messages get ids of this broker
/// (another node's ids may be in use here). Returns the ticket to wait for.
pub(crate) fn adopt(
    broker: &Broker,
    records: &[u8],
) -> Result<Option<crate::durable::Ticket>, String> {
    let mut loader = Loader::new(broker);
    // Their ids → ours.
    let mut ids: HashMap<u64, u64, Fast> = HashMap::default();
    let mut ours = |id: u64| *ids.entry(id).or_insert_with(|| broker.next_message_id());
    let mut ticket = None;
    let mut client = None;
    let mut offset = 0;
    loop {
        let record = match fleetwire_journal::record::next(records, offset) {
            fleetwire_journal::record::Next::Record(record, next) => {
                offset = next;
                record
            }
            fleetwire_journal::record::Next::End => break,
            fleetwire_journal::record::Next::Torn(detail) => return Err(detail),
        };
        crate::durable::decode_change(record, &mut |change| {
            let change = match change {
                Change::Queued {
                    id,
                    message,
                    targets,
                } => Change::Queued {
                    id: ours(id),
                    message,
                    targets,
                },
                Change::Sent {
                    client_id,
                    id,
                    packet_id,
                } => Change::Sent {
                    client_id,
                    id: ours(id),
                    packet_id,
                },
                Change::Released { client_id, id } => Change::Released {
                    client_id,
                    id: ours(id),
                },
                Change::Session { client_id, .. } => {
                    client.get_or_insert_with(|| client_id.to_owned());
                    change
                }
                change => change,
            };
            loader.apply(change)?;
            ticket = ticket.max(broker.save(change));
            Ok(())
        })?;
    }
    if broker.state().is_none() {
        if let Some(session) = client.and_then(|client| broker.session(&client)) {
            session.is_saved.store(false, Ordering::Relaxed);
        }
    }
    Ok(ticket)
}
