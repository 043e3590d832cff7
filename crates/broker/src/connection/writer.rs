//! The writer task of a running connection: it owns the socket's write half, drains
//! the session's queues (control packets first, then in-flight resends, then pending
//! messages while the in-flight window has room) into one buffer of up to
//! [`WRITE_BATCH`] bytes, and writes it with one call. It stops when the connection
//! closes, is taken over (telling a 5.0 client `DISCONNECT 0x8E`), or parks (handing its
//! half of the socket back to the reader).
//!
//! How each message goes on the wire is decided here, per connection: the 5.0 topic
//! alias it is sent with (the writer owns the aliases it assigned), and whether it fits
//! the client's maximum packet size at all (one that does not is dropped and counted,
//! never kept in the in-flight window).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use fleetwire_mqtt_codec::{
    Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubRel, Publish, QoS, ReasonCode,
    TopicName,
};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use super::encode_or_log;
use super::socket::WriteSide;
use super::topic_alias::{Alias, OutboundAliases};
use crate::broker::Broker;
use crate::durable::{Change, Ticket};
use crate::session::{Awaiting, Delivery, Inflight, Receipt, Session, SessionState, Signals};
use crate::stats;

/// The writer stops filling its buffer at this size and writes it.
const WRITE_BATCH: usize = 64 * 1024;

/// What the writer task needs: the session it drains and how to reach its reader.
pub(super) struct Writer {
    pub(super) broker: Broker,
    pub(super) session: Arc<Session>,
    pub(super) generation: u64,
    pub(super) socket: WriteSide,
    /// `wake` is notified when something is queued or the writer must stop; `kick`
    /// stops the reader when a write fails.
    pub(super) signals: Arc<Signals>,
    pub(super) version: ProtocolVersion,
    /// How many 5.0 topic aliases the writer may assign toward the client (0: none).
    pub(super) topic_alias_maximum: u16,
    /// Resend in-flight messages first (a resumed session).
    pub(super) is_resending: bool,
}

impl Writer {
    /// Starts the writer task. It gives its half of the socket back only when it stops
    /// for the reader to park the connection.
    pub(super) fn spawn(self) -> JoinHandle<Option<WriteSide>> {
        tokio::spawn(write_loop(self))
    }
}

/// What the writer does after looking at the session.
enum Step {
    /// Write what was drained; then stop if the connection is closing, or wait for more
    /// unless more is ready.
    Write { is_closing: bool, has_more: bool },
    /// Another connection took the session.
    Detached,
    /// The reader parks the connection: hand the socket half back.
    Park,
}

/// Drains the session onto the socket until the connection closes, is taken over, or
/// parks; gives its half of the socket back only in the last case.
async fn write_loop(writer: Writer) -> Option<WriteSide> {
    let Writer {
        broker,
        session,
        generation,
        mut socket,
        signals,
        version,
        topic_alias_maximum,
        mut is_resending,
    } = writer;
    // A writer starts with no aliases, also when it resumes a parked connection: it
    // binds each topic again before using its alias, which the client always accepts.
    let mut aliases = OutboundAliases::new(topic_alias_maximum);
    // Grows while there is work; released whenever the writer goes idle.
    let mut out = BytesMut::new();
    let mut has_written = false;
    let mut receipts: Vec<Arc<Receipt>> = Vec::new();
    let mut durable: Option<Ticket> = None;
    loop {
        let step = {
            let mut state = session.state.lock();
            if signals.is_reader_writing.load(Ordering::Relaxed) {
                // The reader is writing its acknowledgements: it wakes this task after.
                signals.is_writer_waiting.store(true, Ordering::Relaxed);
                drop(state);
                signals.wake.notified().await;
                continue;
            }
            if has_written {
                // The client is reading: it is not (or no longer) a slow consumer.
                state.is_slow = false;
            }
            {
                let mut unsent = signals.unsent.lock();
                if !unsent.is_empty() {
                    out.extend_from_slice(&unsent);
                    *unsent = BytesMut::new();
                }
            }
            if !state.is_attached(generation) {
                Step::Detached
            } else if state.is_parking {
                Step::Park
            } else {
                let drained = drain(
                    &broker,
                    &session,
                    &mut state,
                    &mut out,
                    &mut is_resending,
                    aliases.as_mut(),
                );
                if drained.published > 0 {
                    stats::add(&broker.stats().messages_sent, drained.published as u64);
                }
                if drained.dropped > 0 {
                    stats::add(&broker.stats().messages_dropped, drained.dropped as u64);
                }
                if drained.too_large > 0 {
                    stats::add(&broker.stats().messages_too_large, drained.too_large as u64);
                }
                if state.take_relief() {
                    session.space.notify_waiters();
                }
                if !drained.has_more {
                    state.release_idle_queues();
                }
                if !out.is_empty() {
                    // Under the lock, so a reader deciding to park sees it.
                    signals.is_writing.store(true, Ordering::Relaxed);
                }
                receipts = drained.receipts;
                durable = drained.durable;
                Step::Write {
                    is_closing: state.is_closing,
                    has_more: drained.has_more,
                }
            }
        };
        let (is_closing, has_more) = match step {
            Step::Write {
                is_closing,
                has_more,
            } => (is_closing, has_more),
            Step::Park => return Some(socket),
            Step::Detached => {
                // Another connection took the session (this connection's reader always
                // flushes and joins the writer before it detaches): tell a 5.0 client
                // why. The packet is dropped before the write, so it takes no room in
                // this task.
                let is_encoded = version.is_v5() && {
                    let farewell = Packet::Disconnect(Disconnect {
                        reason: ReasonCode::SESSION_TAKEN_OVER,
                        properties: Properties::default(),
                    });
                    encode_or_log(&farewell, version, &mut out)
                };
                if is_encoded {
                    let _ = socket.send(&out).await;
                }
                break;
            }
        };
        if let (Some(ticket), Some(state)) = (durable.take(), broker.state()) {
            // QoS 2 messages of a persistent session go out once their packet ids are
            // durable: after a crash they are sent again with the same ids, so the
            // client recognises them (exactly once).
            if let Err(error) = state.durable(ticket).await {
                tracing::error!(client_id = %session.client_id, %error, "broker state not durable: closing the connection");
                signals.kick.notify_one();
                break;
            }
        }
        if !out.is_empty() {
            if let Err(error) = socket.send(&out).await {
                tracing::debug!(client_id = %session.client_id, %error, "write failed");
                signals.kick.notify_one();
                break;
            }
            signals.is_writing.store(false, Ordering::Relaxed);
            signals.drained.notify_waiters();
            stats::add(&broker.stats().bytes_sent, out.len() as u64);
            session.progress.fetch_add(1, Ordering::Relaxed);
            for receipt in receipts.drain(..) {
                receipt.fire();
            }
            out.clear();
            has_written = true;
        } else {
            has_written = false;
        }
        if is_closing {
            break;
        }
        if !has_more {
            out = BytesMut::new();
            signals.wake.notified().await;
        }
    }
    let _ = socket.shutdown().await;
    None
}

struct Drained {
    published: usize,
    /// Expired, too large for the client, or impossible to encode.
    dropped: usize,
    /// Of those, larger than the client's maximum packet size.
    too_large: usize,
    has_more: bool,
    /// Tracked QoS 0 messages in this batch: delivered once it is written.
    receipts: Vec<Arc<Receipt>>,
    /// What must be durable before the batch is written (QoS 2 packet ids).
    durable: Option<Ticket>,
}

/// Encodes queued control packets, then (once after a reconnect) the in-flight messages
/// with DUP set, then pending messages while the in-flight window has room, up to
/// [`WRITE_BATCH`] bytes. `aliases`: the topic aliases of this connection, if the client
/// accepts them.
fn drain(
    broker: &Broker,
    session: &Session,
    state: &mut SessionState,
    out: &mut BytesMut,
    is_resending: &mut bool,
    mut aliases: Option<&mut OutboundAliases>,
) -> Drained {
    let version = state.version;
    while let Some(packet) = state.control.pop_front() {
        encode_or_log(&packet, version, out);
    }
    let mut drained = Drained {
        published: 0,
        dropped: 0,
        too_large: 0,
        has_more: false,
        receipts: Vec::new(),
        durable: None,
    };
    let is_saved = session.is_saved.load(Ordering::Relaxed);
    // Saves that a message left a persistent session's queue unsent.
    let forget = |delivery: &Delivery| {
        if let (true, Some(&id)) = (is_saved, delivery.message.durable_id.get()) {
            let client_id = session.client_id.as_str();
            broker.note(Change::Removed {
                client_id,
                ids: &[id],
            });
        }
    };
    if std::mem::take(is_resending) {
        let mut index = 0;
        while let Some(entry) = state.inflight.get(index) {
            if entry.awaiting == Awaiting::PubComp {
                encode_or_log(&Packet::PubRel(PubRel::new(entry.packet_id)), version, out);
                index += 1;
                continue;
            }
            let start = out.len();
            let alias = choose_alias(aliases.as_deref_mut(), &entry.delivery);
            let packet =
                publish_packet(&entry.delivery, Some(entry.packet_id), true, version, alias);
            if !encode_or_log(&packet, version, out) {
                forget_alias(aliases.as_deref_mut(), alias);
                index += 1;
                continue;
            }
            if is_too_large(out.len() - start, state.client_max_packet_size) {
                // This connection's client accepts less than the one it was first sent
                // to: it can never have it, so it leaves the window.
                out.truncate(start);
                forget_alias(aliases.as_deref_mut(), alias);
                if let Some(removed) = state.inflight.remove(index) {
                    forget(&removed.delivery);
                }
                drained.dropped += 1;
                drained.too_large += 1;
                continue;
            }
            index += 1;
        }
    }
    let now = std::time::Instant::now();
    while out.len() < WRITE_BATCH {
        let Some(front) = state.pending.front() else {
            break;
        };
        if front.message.is_expired(now) {
            // Past its expiry while queued (MQTT-3.3.2-5): never sent.
            if let Some(expired) = state.pop_pending() {
                forget(&expired);
            }
            drained.dropped += 1;
            continue;
        }
        let is_qos0 = front.qos == QoS::AtMostOnce;
        if !is_qos0 && state.inflight.len() >= state.inflight_limit as usize {
            break;
        }
        let Some(delivery) = state.pop_pending() else {
            break;
        };
        let packet_id = (!is_qos0).then(|| state.allocate_packet_id());
        let start = out.len();
        let alias = choose_alias(aliases.as_deref_mut(), &delivery);
        if !encode_or_log(
            &publish_packet(&delivery, packet_id, false, version, alias),
            version,
            out,
        ) {
            forget_alias(aliases.as_deref_mut(), alias);
            drained.dropped += 1;
            continue;
        }
        if is_too_large(out.len() - start, state.client_max_packet_size) {
            // MQTT-3.1.2-25: a packet larger than the client accepts is discarded (it
            // never enters the in-flight window).
            out.truncate(start);
            forget_alias(aliases.as_deref_mut(), alias);
            forget(&delivery);
            drained.dropped += 1;
            drained.too_large += 1;
            continue;
        }
        drained.published += 1;
        if let (None, Some(receipt)) = (packet_id, &delivery.message.receipt) {
            drained.receipts.push(Arc::clone(receipt));
        }
        if let Some(packet_id) = packet_id {
            let awaiting = if delivery.qos == QoS::AtLeastOnce {
                Awaiting::PubAck
            } else {
                if let (true, Some(&id)) = (is_saved, delivery.message.durable_id.get()) {
                    let client_id = session.client_id.as_str();
                    let saved = broker.save(Change::Sent {
                        client_id,
                        id,
                        packet_id,
                    });
                    drained.durable = drained.durable.max(saved);
                }
                Awaiting::PubRec
            };
            state.inflight.push_back(Inflight {
                packet_id,
                delivery,
                awaiting,
            });
        }
    }
    drained.has_more = !state.control.is_empty()
        || state.pending.front().is_some_and(|front| {
            front.qos == QoS::AtMostOnce || state.inflight.len() < state.inflight_limit as usize
        });
    drained
}

/// Whether an encoded packet of `size` bytes is more than the client accepts.
fn is_too_large(size: usize, client_max_packet_size: Option<u32>) -> bool {
    client_max_packet_size.is_some_and(|limit| size as u64 > u64::from(limit))
}

/// The topic alias `delivery` goes with: none unless the client accepts aliases.
fn choose_alias(aliases: Option<&mut OutboundAliases>, delivery: &Delivery) -> Alias {
    aliases.map_or(Alias::None, |aliases| {
        aliases.choose(&delivery.message.topic)
    })
}

/// Takes back a binding whose packet was not sent.
fn forget_alias(aliases: Option<&mut OutboundAliases>, alias: Alias) {
    if let (Some(aliases), Alias::Bind(alias)) = (aliases, alias) {
        aliases.forget(alias);
    }
}

fn publish_packet(
    delivery: &Delivery,
    packet_id: Option<PacketId>,
    dup: bool,
    version: ProtocolVersion,
    alias: Alias,
) -> Packet {
    let message = &delivery.message;
    let properties = if version.is_v5()
        && !(message.properties.is_empty()
            && delivery.subscription_ids.is_empty()
            && message.expires_at.is_none()
            && alias == Alias::None)
    {
        let mut properties = message.properties.get().clone();
        properties.subscription_identifiers = delivery.subscription_ids.clone();
        // The receiver is told what is left of the interval (MQTT-3.3.2-6).
        properties.message_expiry_interval = message.remaining_expiry(std::time::Instant::now());
        properties.topic_alias = match alias {
            Alias::None => None,
            Alias::Bind(alias) | Alias::Known(alias) => Some(alias),
        };
        properties
    } else {
        Properties::default()
    };
    let topic = match alias {
        Alias::Known(_) => TopicName::empty(),
        Alias::None | Alias::Bind(_) => message.topic.clone(),
    };
    Packet::Publish(Publish {
        dup,
        qos: delivery.qos,
        retain: delivery.is_retained,
        topic,
        packet_id,
        payload: message.payload.clone(),
        properties,
    })
}
