//! The reader task of a running connection: it owns the connection's lasting state
//! ([`Connection`]) and the replies of the current read (the read half and the buffer
//! are lent by its caller). It decodes what it reads, applies each packet to the broker
//! and the session (routing, acknowledgements, subscriptions), offers allowed messages to
//! the ingest ([`Settlement`]) and, at the end of each read, waits for the ingest's
//! verdicts before it answers. Flow control lives here too: the reader stops reading
//! while a subscriber's queue is congested, or while too many of its replies wait for
//! the writer. When the writer is idle it writes its replies itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use fleetwire_mqtt_codec::{
    Packet, PacketId, Properties, PubAck, PubComp, PubRec, PubRel, Publish, QoS, ReasonCode,
    SubAck, Subscribe, UnsubAck, decode,
};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::settlement::Settlement;
use super::socket::ReadSide;
use super::topic_alias::TopicAliases;
use super::{Closed, Connection, encode_or_log};
use crate::broker::{Broker, Congested, Routed};
use crate::durable::{Change, Ticket};
use crate::ingest::Hooks;
use crate::limits::PublishBudget;
use crate::park::{PARK_AFTER, keep_alive_limit};
use crate::peers::PeerTicket;
use crate::session::{Awaiting, Session, Signals, wait_for_room};
use crate::stats;

/// Bytes the reader asks the socket for at least, per read.
const READ_CHUNK: usize = 16 * 1024;
/// "Never" for a timer: longer than any connection lives.
const NEVER: Duration = Duration::from_secs(86_400 * 365 * 10);
/// Replies (acknowledgements) that may wait for the writer before the reader stops reading
/// (a client publishing without reading what it is sent).
const CONTROL_BACKLOG: usize = 256;
/// How often a reader waiting for its writer looks whether the connection still stands.
const BACKLOG_RECHECK: Duration = Duration::from_millis(100);

/// Why the read loop stopped.
pub(super) enum Stop {
    Closed(Closed),
    /// Nothing was read or written for `PARK_AFTER`: park, if the session agrees.
    Idle,
}

/// The reader's state for one running connection: the connection's lasting state, and
/// what one read's packets produce until it is answered (replies, messages for the
/// ingest, congested subscribers).
pub(super) struct Reader {
    broker: Broker,
    /// The listener's hooks: presence goes to their authenticator.
    hooks: Arc<Hooks>,
    /// What the connection keeps while parked too.
    connection: Connection,
    /// The messages offered to the ingest, waiting for its verdicts.
    settlement: Settlement,
    max_packet_size: usize,
    /// Replies collected while decoding one read's worth of packets, handed to the
    /// writer together (one lock, one wake-up).
    outbox: Vec<Packet>,
    /// Subscribers whose queues asked this publisher to pause (flow control).
    congested: Congested,
    slow_consumer_grace: Duration,
    /// The attachment's signals, shared with the writer.
    signals: Arc<Signals>,
    /// Acknowledgements this task writes itself (see [`Reader::write_outbox`]).
    direct_out: BytesMut,
    /// The client's inbound publish rate; `None` without a limit.
    /// Boxed, with the pause it asks for: it costs a connection without limits (and
    /// every connection's task) one pointer.
    budget: Option<Box<PublishBudget>>,
    /// The durable-state changes of this read's packets: nothing is answered before
    /// they are durable.
    durable: Option<Ticket>,
    /// What the cluster's other nodes keep of this read's messages (retained ones):
    /// nothing is answered before they have it.
    peers_durable: Option<PeerTicket>,
    /// Saved messages the client acknowledged in this read, saved together at its end.
    removed: Vec<u64>,
    /// QoS 1 `PUBLISH`es decoded since the outbox was last handed on: their `PUBACK`s
    /// are not sent yet, so they count against the Receive Maximum.
    unacknowledged: u16,
}

impl Reader {
    /// The reader of an attached connection (new, or back from the lot), with a fresh
    /// collector from the hooks' ingest.
    pub(super) fn new(
        broker: Broker,
        hooks: Arc<Hooks>,
        connection: Connection,
        signals: Arc<Signals>,
    ) -> Reader {
        let config = broker.config();
        let budget = PublishBudget::new(&config.limits).map(Box::new);
        Reader {
            max_packet_size: config.max_packet_size,
            slow_consumer_grace: config.slow_consumer_grace,
            settlement: Settlement::new(&broker, &hooks, &connection),
            broker,
            hooks,
            connection,
            outbox: Vec::new(),
            congested: Congested::new(),
            signals,
            direct_out: BytesMut::new(),
            budget,
            durable: None,
            peers_durable: None,
            removed: Vec::new(),
            unacknowledged: 0,
        }
    }

    /// The connection's lasting state.
    pub(super) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The broker the connection belongs to.
    pub(super) fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The broker, the hooks and the lasting state, to park or close the connection.
    pub(super) fn into_parts(self) -> (Broker, Arc<Hooks>, Connection) {
        (self.broker, self.hooks, self.connection)
    }

    /// Serves the attached connection until it closes or has been idle for
    /// [`PARK_AFTER`] (if its socket may park).
    pub(super) async fn read_loop(
        &mut self,
        reader: &mut ReadSide,
        buffer: &mut BytesMut,
        kick: &Notify,
        idle_since: &mut Instant,
    ) -> Stop {
        // One timer for the keep-alive and for parking, checked when it fires (reads
        // only note the time).
        let keep_alive = keep_alive_limit(self.connection.keep_alive);
        // A connection that cannot park wakes only for its keep-alive.
        let park_after = if reader.may_park() { PARK_AFTER } else { NEVER };
        let due = |last_read: Instant, idle_since: Instant| {
            let park_at = idle_since + park_after;
            keep_alive.map_or(park_at, |limit| park_at.min(last_read + limit))
        };
        let timer = tokio::time::sleep_until(due(self.connection.last_read, *idle_since));
        tokio::pin!(timer);
        // Written messages count as activity: a subscriber that only receives is busy.
        let mut progress = self.connection.session.progress.load(Ordering::Relaxed);
        let kicked = kick.notified();
        tokio::pin!(kicked);
        let mut shutdown: watch::Receiver<bool> = self.broker.shutdown_signal();
        // Something was read and not yet judged: the next packet other than PINGREQ
        // makes the connection busy since that read. (A resumed connection was woken
        // by such a packet, or has something to send.)
        let mut is_reading = false;
        if *shutdown.borrow_and_update() {
            return Stop::Closed(Closed::Shutdown);
        }
        loop {
            // Stop decoding as soon as a subscriber is congested, so this publisher adds
            // at most one message per pause to a full queue.
            // ... and while a 3.1.1 client is past its publish budget. The budget reads
            // the clock once per pass, not once per message.
            if let Some(budget) = &mut self.budget {
                budget.read_clock();
            }
            while self.congested.is_empty() && !self.is_throttled() {
                match decode(buffer, self.connection.version, self.max_packet_size) {
                    Ok(Some(packet)) => {
                        if is_reading && !matches!(packet, Packet::PingReq) {
                            is_reading = false;
                            *idle_since = self.connection.last_read;
                        }
                        // A SUBSCRIBE sends its SUBACK (and everything before it) at
                        // once: earlier messages must be judged first.
                        let outcome = if let Packet::Subscribe(subscribe) = packet {
                            match self.settle_and_flush(reader.tcp()).await {
                                Ok(()) => Box::pin(self.handle_subscribe(subscribe)).await,
                                Err(closed) => return Stop::Closed(closed),
                            }
                        } else {
                            self.handle(packet)
                        };
                        if let Err(closed) = outcome {
                            let closed = self
                                .settle_and_flush(reader.tcp())
                                .await
                                .err()
                                .unwrap_or(closed);
                            return Stop::Closed(closed);
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let closed = self
                            .settle_and_flush(reader.tcp())
                            .await
                            .err()
                            .unwrap_or(Closed::Malformed(error));
                        return Stop::Closed(closed);
                    }
                }
            }
            if let Err(closed) = self.settle_and_flush(reader.tcp()).await {
                return Stop::Closed(closed);
            }
            if let Some(pause) = self.budget.as_mut().and_then(|budget| budget.take_pause()) {
                // Past its publish budget (3.1.1): neither decoding what was read nor
                // reading more slows the client down (at most a second at a time).
                Box::pin(tokio::time::sleep(pause)).await;
                continue;
            }
            if !self.congested.is_empty() {
                // Not reading lets TCP slow the publisher down to what subscribers take.
                // Boxed: its timers would otherwise enlarge every idle connection's task.
                Box::pin(self.wait_for_subscribers()).await;
                continue;
            }
            tokio::select! {
                biased;
                () = &mut kicked => return Stop::Closed(self.kicked_reason()),
                _ = shutdown.changed() => return Stop::Closed(Closed::Shutdown),
                () = &mut timer => {
                    let now = Instant::now();
                    if keep_alive.is_some_and(|limit| now >= self.connection.last_read + limit) {
                        return Stop::Closed(Closed::KeepAliveExpired);
                    }
                    let written = self.connection.session.progress.load(Ordering::Relaxed);
                    if written != progress {
                        progress = written;
                        *idle_since = now;
                    }
                    if now >= *idle_since + park_after {
                        if buffer.is_empty() {
                            return Stop::Idle;
                        }
                        // Half a packet came: wait for the rest (or the keep-alive).
                        *idle_since = now;
                    }
                    timer.as_mut().reset(due(self.connection.last_read, *idle_since));
                }
                read = reader.read_some(buffer, READ_CHUNK) => match read {
                    Ok(0) => return Stop::Closed(Closed::EndOfStream),
                    Ok(count) => {
                        stats::add(&self.broker.stats().bytes_received, count as u64);
                        self.connection.last_read = Instant::now();
                        // Activity for parking is a packet other than PINGREQ (see
                        // the decoding above): pings are answered while parked too.
                        is_reading = true;
                    }
                    Err(error) => return Stop::Closed(Closed::Io(error)),
                },
            }
        }
    }

    /// Pauses until every congested subscriber has room again. A subscriber whose
    /// connection completes no write for a whole grace period is marked slow (it stopped
    /// reading), and this publisher goes on without it; one that is reading, however
    /// slowly, is waited for.
    async fn wait_for_subscribers(&mut self) {
        let mut congested = std::mem::take(&mut self.congested);
        wait_for_room(&congested, self.slow_consumer_grace).await;
        congested.clear();
        self.congested = congested;
    }

    /// Why the reader was kicked: its user was disconnected
    /// ([`Broker::disconnect_user`]) or the broker sends every client elsewhere
    /// ([`Broker::redirect_all`]), or another connection took the session (or the
    /// writer failed, in which case the reason is not sent).
    fn kicked_reason(&self) -> Closed {
        let is_revoked = {
            let state = self.connection.session.state.lock();
            state.is_attached(self.connection.generation) && state.is_revoked
        };
        if !is_revoked {
            return Closed::TakenOver;
        }
        match self.broker.redirection() {
            Some(redirection) => Closed::Redirected(redirection),
            None => Closed::Revoked,
        }
    }

    /// Hands the messages collected for the ingest over, waits for its verdicts, fixes
    /// their acknowledgements accordingly, then sends the outbox. Fails only for a 3.1.1
    /// client whose message could not be stored (it is disconnected unacknowledged).
    /// `tcp` is the socket if it is plain TCP (see [`Reader::write_outbox`]).
    async fn settle_and_flush(&mut self, tcp: Option<&TcpStream>) -> Result<(), Closed> {
        if !self.removed.is_empty() {
            // Nobody waits for these: a crash that loses them sends the messages again.
            self.broker.note(Change::Removed {
                client_id: self.connection.session.client_id.as_str(),
                ids: &self.removed,
            });
            self.removed.clear();
        }
        if let Some(ticket) = self.durable.take() {
            // Boxed, like the settlement below.
            Box::pin(self.wait_durable(ticket)).await?;
        }
        if let Some(ticket) = self.peers_durable.take() {
            Box::pin(self.wait_peers(ticket)).await?;
        }
        let settled = if !self.settlement.is_waiting() {
            Ok(())
        } else {
            // Boxed: its state would otherwise enlarge every idle connection's task.
            let settled = self.settlement.settle(
                &self.broker,
                &self.hooks,
                &self.connection,
                &mut self.outbox,
            );
            Box::pin(settled).await
        };
        if self.write_outbox(tcp) {
            let waited = wait_for_writer(
                &self.signals,
                &self.connection.session,
                self.connection.generation,
            );
            Box::pin(waited).await;
        }
        settled
    }

    /// Waits until the durable state holds everything up to `ticket`. If it cannot, the
    /// replies that depended on it are never sent: the connection closes, and the client
    /// sends its unacknowledged messages again.
    async fn wait_durable(&mut self, ticket: Ticket) -> Result<(), Closed> {
        let Some(state) = self.broker.state() else {
            return Ok(());
        };
        match state.durable(ticket).await {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::error!(%error, client_id = %self.connection.session.client_id, "broker state not durable: closing the connection unacknowledged");
                self.outbox.clear();
                Err(Closed::StateFailed)
            }
        }
    }

    /// Waits until the cluster's other nodes hold everything up to `ticket`; if they
    /// cannot, as [`Reader::wait_durable`].
    async fn wait_peers(&mut self, ticket: PeerTicket) -> Result<(), Closed> {
        let Some(peers) = self.broker.peers() else {
            return Ok(());
        };
        match peers.durable(ticket).await {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::error!(%error, client_id = %self.connection.session.client_id, "closing the connection unacknowledged");
                self.outbox.clear();
                Err(Closed::StateFailed)
            }
        }
    }

    /// Notes a durable-state change this read's replies wait for.
    fn wait_for(&mut self, ticket: Option<Ticket>) {
        self.durable = self.durable.max(ticket);
    }

    /// Notes what this read's replies wait for after routing a message.
    fn wait_for_routed(&mut self, routed: &Routed) {
        self.wait_for(routed.ticket);
        self.peers_durable = self.peers_durable.max(routed.peers);
    }

    /// Saves `change` when the session is persistent; its replies wait for it.
    fn save(&mut self, change: Change<'_>) {
        if self.connection.session.is_saved.load(Ordering::Relaxed) {
            let ticket = self.broker.save(change);
            self.wait_for(ticket);
        }
    }

    /// Adds the subscriptions of `SUBSCRIBE` and answers it; once the subscriptions are
    /// durable (a persistent session), `SUBACK`, then the retained messages they match.
    async fn handle_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Closed> {
        if subscribe
            .filters
            .iter()
            .any(|(filter, options)| filter.share().is_some() && options.no_local)
        {
            return Err(Closed::ProtocolViolation {
                reason: ReasonCode::PROTOCOL_ERROR,
                detail: "no-local on a shared subscription (MQTT-3.8.3-4)",
            });
        }
        let (reasons, retained, ticket) = self.broker.subscribe(
            &self.connection.session,
            &subscribe,
            &self.connection.access,
        );
        self.outbox.push(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reasons,
            properties: Properties::default(),
        }));
        if let Some(ticket) = ticket {
            self.wait_durable(ticket).await?;
        }
        // The SUBACK goes out before any retained message it causes.
        self.flush_outbox();
        for delivery in retained {
            let ticket = self.broker.save_queued(&self.connection.session, &delivery);
            self.wait_for(ticket);
            // Retained messages for its own subscription never pause a client.
            let _ = self.connection.session.deliver(delivery, &self.broker);
        }
        Ok(())
    }

    fn flush_outbox(&mut self) {
        self.unacknowledged = 0;
        if !self.outbox.is_empty() {
            self.connection.session.send_control(self.outbox.drain(..));
        }
    }

    /// Sends the outbox like [`Reader::flush_outbox`], but writes it to the socket
    /// from this task when the writer is idle with nothing queued before it: the usual
    /// case of a publisher's acknowledgements, which then cost no wake-up of the writer.
    /// Only a TCP socket (`socket`) is written this way; other streams leave it all to
    /// the writer.
    /// Never waits: what the socket does not take at once is left to the writer, which
    /// sends it before anything else. Returns whether the writer's queue is now longer
    /// than [`CONTROL_BACKLOG`]: the reader should wait for it before reading more.
    fn write_outbox(&mut self, socket: Option<&TcpStream>) -> bool {
        self.unacknowledged = 0;
        if self.outbox.is_empty() {
            return false;
        }
        let socket = {
            let mut state = self.connection.session.state.lock();
            let is_writer_idle = socket.is_some()
                && state.control.is_empty()
                && !self.signals.is_writing.load(Ordering::Relaxed)
                && !state.is_closing
                && state.is_attached(self.connection.generation);
            let (true, Some(socket)) = (is_writer_idle, socket) else {
                state.control.extend(self.outbox.drain(..));
                state.wake_writer();
                return state.control.len() > CONTROL_BACKLOG;
            };
            self.signals
                .is_reader_writing
                .store(true, Ordering::Relaxed);
            socket
        };
        // Answers to pings are not activity: a client that only pings may park.
        let is_only_pings = self
            .outbox
            .iter()
            .all(|packet| matches!(packet, Packet::PingResp));
        let mut out = std::mem::take(&mut self.direct_out);
        for packet in self.outbox.drain(..) {
            encode_or_log(&packet, self.connection.version, &mut out);
        }
        let mut written = 0;
        while written < out.len() {
            match socket.try_write(&out[written..]) {
                Ok(0) | Err(_) => break,
                Ok(count) => written += count,
            }
        }
        if written > 0 {
            stats::add(&self.broker.stats().bytes_sent, written as u64);
            if !is_only_pings {
                self.connection
                    .session
                    .progress
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let has_rest = written < out.len();
        {
            let _state = self.connection.session.state.lock();
            if has_rest {
                // Would block, or failed: the writer sends it (and finds the error).
                self.signals
                    .unsent
                    .lock()
                    .extend_from_slice(&out[written..]);
            }
            self.signals
                .is_reader_writing
                .store(false, Ordering::Relaxed);
            let was_waiting = self
                .signals
                .is_writer_waiting
                .swap(false, Ordering::Relaxed);
            if has_rest || was_waiting {
                self.signals.wake.notify_one();
            }
        }
        out.clear();
        self.direct_out = out;
        false
    }

    fn handle(&mut self, packet: Packet) -> Result<(), Closed> {
        match packet {
            Packet::Publish(mut publish) => {
                self.spend_budget(&publish)?;
                self.count_against_receive_maximum(&publish)?;
                TopicAliases::resolve(
                    &mut self.connection.topic_aliases,
                    self.broker.config().topic_alias_maximum,
                    &mut publish,
                )?;
                self.handle_publish(publish)
            }
            Packet::PubAck(ack) => {
                self.acknowledge(ack.packet_id, Awaiting::PubAck, true);
                Ok(())
            }
            Packet::PubRec(rec) => {
                // A refusing PUBREC (5.0 code >= 0x80) ends the exchange: no PUBREL.
                let is_refused = rec.reason.is_error();
                let found = self.acknowledge(rec.packet_id, Awaiting::PubRec, is_refused);
                if !is_refused {
                    let mut release = PubRel::new(rec.packet_id);
                    if !found && self.connection.version.is_v5() {
                        release.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                    }
                    self.outbox.push(Packet::PubRel(release));
                }
                Ok(())
            }
            Packet::PubComp(comp) => {
                self.acknowledge(comp.packet_id, Awaiting::PubComp, true);
                Ok(())
            }
            Packet::PubRel(release) => {
                let found = {
                    let mut state = self.connection.session.state.lock();
                    let position = state
                        .incoming_qos2
                        .iter()
                        .position(|id| *id == release.packet_id);
                    position
                        .map(|index| state.incoming_qos2.swap_remove(index))
                        .is_some()
                };
                if found {
                    let client_id = Arc::clone(&self.connection.session);
                    self.save(Change::Completed {
                        client_id: client_id.client_id.as_str(),
                        packet_id: release.packet_id,
                    });
                }
                let mut complete = PubComp::new(release.packet_id);
                if !found && self.connection.version.is_v5() {
                    complete.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.outbox.push(Packet::PubComp(complete));
                Ok(())
            }
            Packet::Subscribe(subscribe) => {
                // Handled by the read loop ([`Reader::handle_subscribe`]), which can wait.
                let _ = subscribe;
                Err(Closed::ProtocolViolation {
                    reason: ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                    detail: "SUBSCRIBE outside the read loop",
                })
            }
            Packet::Unsubscribe(unsubscribe) => {
                let existed = self
                    .broker
                    .unsubscribe(&self.connection.session, &unsubscribe);
                let reasons = if self.connection.version.is_v5() {
                    existed
                        .into_iter()
                        .map(|existed| {
                            if existed {
                                ReasonCode::SUCCESS
                            } else {
                                ReasonCode::NO_SUBSCRIPTION_EXISTED
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                self.outbox.push(Packet::UnsubAck(UnsubAck {
                    packet_id: unsubscribe.packet_id,
                    reasons,
                    properties: Properties::default(),
                }));
                Ok(())
            }
            Packet::PingReq => {
                self.outbox.push(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                if let Some(interval) = disconnect.properties.session_expiry_interval {
                    if self.connection.session_expiry_at_connect == 0 && interval != 0 {
                        return Err(Closed::ProtocolViolation {
                            reason: ReasonCode::PROTOCOL_ERROR,
                            detail: "session expiry set at DISCONNECT after 0 at CONNECT (MQTT-3.14.2-2)",
                        });
                    }
                    self.broker.set_session_expiry(
                        &self.connection.session,
                        self.connection.generation,
                        interval,
                    );
                }
                Err(Closed::Disconnect(disconnect.reason))
            }
            Packet::Connect(_) => Err(Closed::ProtocolViolation {
                reason: ReasonCode::PROTOCOL_ERROR,
                detail: "second CONNECT (MQTT-3.1.0-2)",
            }),
            Packet::Auth(_) => Err(Closed::ProtocolViolation {
                reason: ReasonCode::PROTOCOL_ERROR,
                detail: "AUTH without an authentication method",
            }),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(Closed::ProtocolViolation {
                    reason: ReasonCode::PROTOCOL_ERROR,
                    detail: "packet that only a server sends",
                })
            }
        }
    }

    fn handle_publish(&mut self, publish: Publish) -> Result<(), Closed> {
        stats::add(&self.broker.stats().messages_received, 1);
        if publish.topic.is_empty() {
            return Err(Closed::ProtocolViolation {
                reason: ReasonCode::TOPIC_NAME_INVALID,
                detail: "PUBLISH with an empty topic",
            });
        }
        let is_denied = publish.topic.as_str().starts_with("$SYS")
            || !self.connection.access.may_publish(&publish.topic);
        let qos = publish.qos;
        let packet_id = publish.packet_id;
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) => {
                if !is_denied {
                    self.offer(&publish, None);
                    // Nothing is acknowledged: a retained QoS 0 message is saved, not
                    // waited for.
                    self.broker
                        .publish(publish, self.connection.session.id, &mut self.congested);
                }
            }
            (QoS::AtLeastOnce, Some(packet_id)) => {
                let is_ingested = !is_denied && self.offer(&publish, Some(packet_id));
                let delivered = if is_denied {
                    0
                } else {
                    let routed = self.broker.publish(
                        publish,
                        self.connection.session.id,
                        &mut self.congested,
                    );
                    self.wait_for_routed(&routed);
                    routed.delivered
                };
                let reason = self.publish_reason(is_denied, delivered + usize::from(is_ingested));
                self.outbox.push(Packet::PubAck(PubAck {
                    packet_id,
                    reason,
                    properties: Properties::default(),
                }));
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                let is_duplicate = self
                    .connection
                    .session
                    .state
                    .lock()
                    .incoming_qos2
                    .contains(&packet_id);
                let mut delivered = 1;
                if !is_duplicate && !is_denied {
                    let is_ingested = self.offer(&publish, Some(packet_id));
                    // A copy sent again after a restart is not routed again.
                    let session = Arc::clone(&self.connection.session);
                    self.save(Change::Received {
                        client_id: session.client_id.as_str(),
                        packet_id,
                    });
                    let routed = self.broker.publish(
                        publish,
                        self.connection.session.id,
                        &mut self.congested,
                    );
                    self.wait_for_routed(&routed);
                    delivered = routed.delivered + usize::from(is_ingested);
                    self.connection
                        .session
                        .state
                        .lock()
                        .incoming_qos2
                        .push(packet_id);
                }
                let reason = self.publish_reason(is_denied, delivered);
                self.outbox.push(Packet::PubRec(PubRec {
                    packet_id,
                    reason,
                    properties: Properties::default(),
                }));
            }
            (_, None) => {
                return Err(Closed::ProtocolViolation {
                    reason: ReasonCode::PROTOCOL_ERROR,
                    detail: "QoS 1/2 PUBLISH without a packet id",
                });
            }
        }
        Ok(())
    }

    /// Counts a `PUBLISH` against the client's budget. A 5.0 client past it is
    /// disconnected (0x96); a 3.1.1 client has no way to be told, so it is not read for
    /// as long as it is ahead.
    fn spend_budget(&mut self, publish: &Publish) -> Result<(), Closed> {
        let Some(budget) = &mut self.budget else {
            return Ok(());
        };
        let size = publish.topic.as_str().len() + publish.payload.len();
        let over = budget.spend(size);
        if over.is_zero() {
            return Ok(());
        }
        stats::add(&self.broker.stats().publish_rate_exceeded, 1);
        if self.connection.version.is_v5() {
            return Err(Closed::RateExceeded);
        }
        budget.pause_for(over);
        Ok(())
    }

    /// Counts a 5.0 client's QoS 1/2 `PUBLISH` against the Receive Maximum the broker
    /// announced (MQTT-3.3.4-9): a QoS 1 message is in flight until its `PUBACK` leaves
    /// (at the end of the read it came in), a QoS 2 one until its `PUBREL` arrives (its
    /// packet id waits in the session until then). One past the maximum is 0x93. A QoS
    /// 2 message sent again with a packet id still waiting is not counted twice.
    fn count_against_receive_maximum(&mut self, publish: &Publish) -> Result<(), Closed> {
        let Some(packet_id) = publish.packet_id else {
            return Ok(());
        };
        if !self.connection.version.is_v5() {
            return Ok(());
        }
        let awaiting_release = {
            let state = self.connection.session.state.lock();
            if publish.qos == QoS::ExactlyOnce && state.incoming_qos2.contains(&packet_id) {
                return Ok(());
            }
            state.incoming_qos2.len()
        };
        let in_flight = awaiting_release + usize::from(self.unacknowledged);
        if in_flight >= usize::from(self.broker.config().receive_maximum) {
            return Err(Closed::ProtocolViolation {
                reason: ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                detail: "more unacknowledged QoS 1/2 PUBLISHes than the receive maximum of CONNACK",
            });
        }
        if publish.qos == QoS::AtLeastOnce {
            self.unacknowledged = self.unacknowledged.saturating_add(1);
        }
        Ok(())
    }

    /// Whether a 3.1.1 client past its budget must wait before more is decoded.
    fn is_throttled(&self) -> bool {
        self.budget
            .as_ref()
            .is_some_and(|budget| budget.is_paused())
    }

    /// Offers a message to the ingest; whether it kept it. A kept message's
    /// acknowledgement (pushed next into the outbox, for QoS 1/2) waits for the verdict.
    fn offer(&mut self, publish: &Publish, packet_id: Option<PacketId>) -> bool {
        let user = self.connection.access.user_name();
        let acknowledgement = packet_id.map(|packet_id| (packet_id, self.outbox.len()));
        self.settlement.offer(publish, user, acknowledgement)
    }

    fn publish_reason(&self, is_denied: bool, delivered: usize) -> ReasonCode {
        if !self.connection.version.is_v5() {
            ReasonCode::SUCCESS
        } else if is_denied {
            ReasonCode::NOT_AUTHORIZED
        } else if delivered == 0 {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        }
    }

    /// Handles the acknowledgement the in-flight message `packet_id` was awaiting; whether
    /// it was found. `is_final` ends the exchange (`PUBACK`, `PUBCOMP`, a refusing
    /// `PUBREC`); otherwise a `PUBREC` moves it on to awaiting `PUBCOMP`.
    fn acknowledge(&mut self, packet_id: PacketId, awaiting: Awaiting, is_final: bool) -> bool {
        let mut released = None;
        let receipt = {
            let mut state = self.connection.session.state.lock();
            let Some(position) = state
                .inflight
                .iter()
                .position(|entry| entry.packet_id == packet_id && entry.awaiting == awaiting)
            else {
                return false;
            };
            // The client has the message once it answers PUBACK or PUBREC.
            let receipt = match awaiting {
                Awaiting::PubAck | Awaiting::PubRec => state
                    .inflight
                    .get(position)
                    .and_then(|entry| entry.delivery.message.receipt.clone()),
                Awaiting::PubComp => None,
            };
            let durable_id = state
                .inflight
                .get(position)
                .and_then(|entry| entry.delivery.message.durable_id.get().copied())
                .filter(|_| self.connection.session.is_saved.load(Ordering::Relaxed));
            let client_id = self.connection.session.client_id.as_str();
            if is_final {
                state.inflight.remove(position);
                if !state.pending.is_empty() {
                    state.wake_writer();
                }
                if let Some(id) = durable_id {
                    self.removed.push(id);
                }
            } else if let Some(entry) = state.inflight.get_mut(position) {
                entry.awaiting = Awaiting::PubComp;
                if let Some(id) = durable_id {
                    // The client forgets the packet id at PUBREL: after a crash the
                    // message must not be sent again, so PUBREL waits for this.
                    released = self.broker.save(Change::Released { client_id, id });
                }
            }
            receipt
        };
        // Outside the session lock: the callback belongs to the message's publisher.
        if let Some(receipt) = receipt {
            receipt.fire();
        }
        self.wait_for(released);
        true
    }
}

/// old allocation usually lives on anyway, in payloads still being delivered.)
/// Waits until the writer has sent most of the replies queued for it, so that a client
/// that publishes without reading its acknowledgements is slowed down by TCP instead of
/// growing the queue. Gives up when the connection is detached (taken over, revoked: the
/// read loop then sees its kick) or closing. (Not a method: a `&Reader` held across an
/// `.await` would need the ingest's collector to be `Sync`.)
async fn wait_for_writer(signals: &Signals, session: &Session, generation: u64) {
    loop {
        let drained = signals.drained.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        {
            let state = session.state.lock();
            if state.control.len() <= CONTROL_BACKLOG / 2
                || !state.is_attached(generation)
                || state.is_closing
                || state.is_revoked
            {
                return;
            }
        }
        // Also looks again now and then: a detach wakes the writer, not this task.
        let _ = tokio::time::timeout(BACKLOG_RECHECK, drained).await;
    }
}
