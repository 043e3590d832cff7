//! One client connection, from `CONNECT` to close.
//!
//! A running connection is two tasks over the two halves of its socket. The reader (this
//! module's [`serve`]) decodes packets, applies them to the broker and its session, and
//! answers them; the writer ([`write_loop`]) drains the session's queues into one buffer
//! and writes it with one system call, so a burst of messages costs one `write`. The
//! reader writes its own replies (acknowledgements) when the writer is idle, which spares
//! a wake-up of the writer per read; otherwise, or when the socket is full, it queues
//! them for the writer, and stops reading while too many wait there.
//! The reader owns the will message and the keep-alive deadline; the session (shared)
//! owns everything that must survive a reconnect.
//!
//! An idle connection (nothing read or written for [`PARK_AFTER`], or nothing said after
//! `CONNECT`) parks: the writer hands its half back, the socket leaves tokio for the
//! listener's lot, and both tasks end ([`crate::park`]). [`resume`] starts them again.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use fleetwire_mqtt_codec::{
    ConnAck, DecodeError, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubAck,
    PubComp, PubRec, PubRel, Publish, QoS, ReasonCode, SubAck, UnsubAck, Will, decode, encode,
};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::{Access, Credentials, Denial};
use crate::broker::{Broker, Congested};
use crate::ingest::{Inbound, Verdict};
use crate::park::{Lot, PARK_AFTER, Parked, keep_alive_limit};
use crate::session::{Awaiting, Delivery, Inflight, Link, Receipt, Session, SessionState, Signals};
use crate::stats;

/// Bytes the reader asks the socket for at least, per read.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes asked for while reading `CONNECT`, which is usually small: thousands of
/// handshakes at once should not each hold a full read chunk.
const CONNECT_CHUNK: usize = 512;
/// Replies (acknowledgements) that may wait for the writer before the reader stops reading
/// (a client publishing without reading what it is sent).
const CONTROL_BACKLOG: usize = 256;
/// How often a reader waiting for its writer looks whether the connection still stands.
const BACKLOG_RECHECK: Duration = Duration::from_millis(100);
/// The writer stops filling its buffer at this size and writes it.
const WRITE_BATCH: usize = 64 * 1024;
/// How long a closing connection waits for its writer to flush a final `DISCONNECT`.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a connection ended.
#[derive(Debug)]
enum Closed {
    /// The client sent `DISCONNECT` with this reason.
    Disconnect(ReasonCode),
    /// The socket reached end of file without `DISCONNECT`.
    EndOfStream,
    Io(io::Error),
    /// Bytes that are not a valid packet.
    Malformed(DecodeError),
    /// A valid packet that is illegal here.
    ProtocolViolation {
        reason: ReasonCode,
        detail: &'static str,
    },
    KeepAliveExpired,
    /// Another connection with the same client id took the session.
    TakenOver,
    /// The device's credentials were reissued, or the device deleted.
    Revoked,
    /// The platform could not store a message of this 3.1.1 client, which has no way to
    /// be told but to be disconnected without the message's acknowledgement.
    IngestFailed,
    Shutdown,
}

impl Closed {
    /// Whether the will message is published (MQTT-3.1.2-8, 5.0 reason 0x04).
    fn publishes_will(&self) -> bool {
        match self {
            Closed::Disconnect(reason) => *reason == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
            Closed::Shutdown => false,
            _ => true,
        }
    }

    /// The reason code a 5.0 client is sent in `DISCONNECT` before the socket closes.
    fn disconnect_reason(&self) -> Option<ReasonCode> {
        match self {
            Closed::Malformed(error) => Some(error.reason_code()),
            Closed::ProtocolViolation { reason, .. } => Some(*reason),
            Closed::KeepAliveExpired => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            Closed::TakenOver => Some(ReasonCode::SESSION_TAKEN_OVER),
            Closed::Revoked => Some(ReasonCode::ADMINISTRATIVE_ACTION),
            Closed::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            Closed::Disconnect(_) | Closed::EndOfStream | Closed::Io(_) | Closed::IngestFailed => {
                None
            }
        }
    }
}

/// Serves one accepted TCP connection until it closes or parks. Never panics on client
/// input: every failure ends this connection only.
///
/// Shaped for small idle connections: the handshake (the `CONNECT`, refusals, timeouts)
/// and the closing (flush timers) run in boxed futures of their own, so the task of an
/// idle connection holds only what reading needs. (A plain `async fn` would also keep
/// its arguments' slots for the whole connection.) A client that sends nothing after
/// `CONNECT` parks at once, and its task ends (see [`crate::park`]).
pub(crate) fn serve(
    broker: Broker,
    stream: TcpStream,
    peer: SocketAddr,
    lot: Arc<Lot>,
) -> impl Future<Output = ()> + Send + 'static {
    let handshake = Box::pin(handshake(broker, stream, peer, lot));
    async move {
        // Bound first: in an `if let` the finished handshake's box would stay allocated
        // for the whole life of the connection.
        let established = handshake.await;
        let Some(established) = established else {
            return;
        };
        // Boxed too: a client that parks straight after CONNACK never gets here, and
        // its task should be as small as the handshake's pointer.
        Box::pin(established.run()).await;
    }
}

/// Resumes a parked connection: its socket has something to read, its session has
/// something for it (or was taken over or revoked), its keep-alive expired, or the
/// broker is shutting down. The resumed reader finds out which.
pub(crate) async fn resume(broker: Broker, parked: Parked, lot: Arc<Lot>) {
    let established = reactivate(broker, parked, lot, None);
    let Some(established) = established else {
        return;
    };
    established.run().await;
}

/// A connection that completed `CONNECT`, is attached to its session and has its tasks
/// running.
struct Established {
    connection: Connection,
    peer: SocketAddr,
    reader: OwnedReadHalf,
    buffer: BytesMut,
    /// `None` once the writer stopped. It hands its half of the socket back only when
    /// the reader asked it to, to park.
    writer_task: Option<JoinHandle<Option<OwnedWriteHalf>>>,
    signals: Arc<Signals>,
    keep_alive: u16,
    /// When the client last sent anything: the keep-alive counts from here.
    last_read: Instant,
    /// Since when nothing was read or written: the connection parks after `PARK_AFTER`.
    idle_since: Instant,
    will: Option<Box<Will>>,
    lot: Arc<Lot>,
}

/// Why the read loop stopped.
enum Stop {
    Closed(Closed),
    /// Nothing was read or written for `PARK_AFTER`: park, if the session agrees.
    Idle,
}

/// Reads and answers `CONNECT` and attaches the session; then parks the connection if
/// the client has nothing more to say and nothing waits for it, or starts its tasks.
/// `None` when the connection was refused, closed or parked.
async fn handshake(
    broker: Broker,
    stream: TcpStream,
    peer: SocketAddr,
    lot: Arc<Lot>,
) -> Option<Established> {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot disable Nagle's algorithm");
    }
    if let Some(size) = broker.config().socket_send_buffer {
        if let Err(error) = socket2::SockRef::from(&stream).set_send_buffer_size(size) {
            tracing::debug!(%peer, %error, "cannot set the socket's send buffer");
        }
    }
    let (reader, mut writer) = stream.into_split();
    let mut buffer = BytesMut::new();
    let config = broker.config().clone();

    let first = tokio::time::timeout(
        config.connect_timeout,
        read_connect(&broker, &reader, &mut buffer, config.max_packet_size),
    )
    .await;
    let connect = match first {
        Err(_) => {
            tracing::debug!(%peer, "closing: no CONNECT within {:?}", config.connect_timeout);
            return None;
        }
        Ok(Ok(Some(connect))) => connect,
        Ok(Ok(None)) => return None,
        Ok(Err(error)) => {
            stats::add(&broker.stats().malformed_packets, 1);
            tracing::debug!(%peer, %error, "closing: invalid CONNECT");
            if let ConnectError::Decode(DecodeError::UnsupportedProtocolLevel(_)) = error {
                // MQTT-3.1.2-2: answer an unknown level with return code 1, in 3.1.1 form.
                let refusal = connack(false, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
                let _ = write_packet(&mut writer, &refusal, ProtocolVersion::V311).await;
            }
            return None;
        }
    };
    let version = connect.protocol;

    let access = match admit(&broker, &connect, peer).await {
        Ok(access) => access,
        Err(code) => {
            tracing::debug!(%peer, client_id = %connect.client_id, code = code.0, "refusing connection");
            let _ = write_packet(&mut writer, &connack(false, code), version).await;
            return None;
        }
    };

    let attached = match broker.attach(&connect, &access, Arc::new(Signals::default())) {
        Ok(attached) => attached,
        Err(code) => {
            tracing::debug!(%peer, client_id = %connect.client_id, code = code.0, "refusing connection");
            let _ = write_packet(&mut writer, &connack(false, code), version).await;
            return None;
        }
    };
    let session = attached.session;
    let generation = attached.generation;
    tracing::debug!(
        %peer, client_id = %session.client_id, ?version,
        session_present = attached.is_session_present, "client connected"
    );

    // CONNACK is written here, before the writer exists. A client with nothing more to
    // say parks right away: its CONNACK goes out on the parked socket in the same step,
    // with no `.await` in between, so that a broker short of CPU never holds more
    // half-finished connections than the handshakes it is reading.
    let mut acknowledgement = ConnAck {
        session_present: attached.is_session_present,
        code: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    if version.is_v5() {
        acknowledgement.properties.assigned_client_identifier = attached.assigned_client_id;
        acknowledgement.properties.maximum_packet_size = u32::try_from(config.max_packet_size).ok();
    }
    let mut out = BytesMut::new();
    let is_encoded = encode_or_log(&Packet::ConnAck(acknowledgement), version, &mut out);

    // Keep only what the connection needs; the rest of CONNECT (and the read buffer its
    // fields point into) is freed now. The will is copied out of that buffer for the
    // same reason: it lives as long as the connection.
    let fleetwire_mqtt_codec::Connect {
        keep_alive,
        will,
        properties,
        ..
    } = *connect;
    let will = will.map(|will| Box::new(crate::compact::will(will)));
    let is_resending = attached.is_session_present && !session.state.lock().inflight.is_empty();
    let may_park = is_encoded
        && buffer.is_empty()
        && !is_resending
        && session.state.lock().may_park(generation);
    if !may_park && !out.is_empty() {
        match writer.write_all(&out).await {
            Ok(()) => stats::add(&broker.stats().bytes_sent, out.len() as u64),
            // The reader finds the socket broken and closes the connection as usual.
            Err(error) => tracing::debug!(%peer, %error, "writing CONNACK failed"),
        }
    }
    let stream = match reader.reunite(writer) {
        Ok(stream) => stream,
        Err(halves) => {
            // Cannot happen: both halves come from this stream.
            tracing::warn!(%peer, "cannot rejoin the halves of a socket");
            drop(halves);
            let rest = Parked {
                stream: (),
                session,
                generation,
                access,
                will,
                last_read: Instant::now(),
                keep_alive,
                session_expiry_at_connect: 0,
                version,
            };
            abandon(&broker, rest);
            return None;
        }
    };
    let connection = Parked {
        stream,
        session,
        generation,
        access,
        will,
        last_read: Instant::now(),
        keep_alive,
        session_expiry_at_connect: properties.session_expiry_interval.unwrap_or(0),
        version,
    };
    if !may_park {
        return Some(Established::activate(
            broker,
            connection,
            lot,
            peer,
            is_resending,
        ));
    }
    let parked = match connection.convert(TcpStream::into_std) {
        Ok(parked) => Box::new(parked),
        Err((error, rest)) => {
            tracing::debug!(%peer, %error, "connection lost");
            abandon(&broker, rest);
            return None;
        }
    };
    // A fresh socket's send buffer is empty: a CONNACK goes in one non-blocking write.
    if let Err(error) = std::io::Write::write_all(&mut &parked.stream, &out) {
        tracing::debug!(%peer, %error, "writing CONNACK failed");
        if let Ok(rest) = parked.convert(|stream| {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            Ok(())
        }) {
            abandon(&broker, rest);
        }
        return None;
    }
    stats::add(&broker.stats().bytes_sent, out.len() as u64);
    drop(out);
    match park(parked, &lot, &broker) {
        Ok(()) => None,
        Err(parked) => reactivate(broker, *parked, lot, Some(peer)),
    }
}

/// Parks an idle connection in `lot`, unless its session has something for it or the
/// broker is stopping (checked under the session lock, so that nothing queued later can
/// be missed: it finds the parked link and resumes the connection); gives it back then.
fn park(parked: Box<Parked>, lot: &Arc<Lot>, broker: &Broker) -> Result<(), Box<Parked>> {
    let session = Arc::clone(&parked.session);
    let generation = parked.generation;
    let mut state = session.state.lock();
    state.is_parking = false;
    if broker.is_shutting_down() || !state.may_park(generation) {
        return Err(parked);
    }
    let token = lot.park(parked)?;
    stats::add(&broker.stats().clients_parked, 1);
    if let Some(attachment) = &mut state.attachment {
        attachment.link = Link::Parked {
            lot: Arc::clone(lot),
            token,
        };
    }
    Ok(())
}

/// Ends an attached connection whose socket is gone before its tasks could run: the will
/// is published (the close is abnormal) and the session detached.
fn abandon(broker: &Broker, rest: Parked<()>) {
    if let Some(will) = rest.will {
        publish_will(broker, *will, &rest.session);
    }
    broker.detach(&rest.session, rest.generation, &rest.access);
}

/// Registers a parked connection's socket with tokio again and starts its tasks; `None`
/// (the connection closed) if the socket cannot be registered.
fn reactivate(
    broker: Broker,
    parked: Parked,
    lot: Arc<Lot>,
    peer: Option<SocketAddr>,
) -> Option<Established> {
    let peer = peer
        .or_else(|| parked.stream.peer_addr().ok())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    match parked.convert(TcpStream::from_std) {
        Ok(connection) => Some(Established::activate(broker, connection, lot, peer, false)),
        Err((error, rest)) => {
            tracing::warn!(%peer, %error, "cannot resume a parked connection");
            abandon(&broker, rest);
            None
        }
    }
}

impl Established {
    /// Starts the tasks of an attached connection (new, or back from the lot): points the
    /// session's attachment at fresh signals and spawns the writer. A session that was
    /// taken over or revoked meanwhile has the reader kicked at once, so that it closes
    /// with the right reason.
    fn activate(
        broker: Broker,
        connection: Parked<TcpStream>,
        lot: Arc<Lot>,
        peer: SocketAddr,
        is_resending: bool,
    ) -> Established {
        let Parked {
            stream,
            session,
            generation,
            access,
            will,
            last_read,
            keep_alive,
            session_expiry_at_connect,
            version,
        } = connection;
        let signals = Arc::new(Signals::default());
        {
            let mut state = session.state.lock();
            match &mut state.attachment {
                Some(attachment) if attachment.generation == generation => {
                    attachment.link = Link::Active(Arc::clone(&signals));
                    if state.is_revoked {
                        signals.kick.notify_one();
                    }
                }
                _ => signals.kick.notify_one(),
            }
        }
        let (reader, writer) = stream.into_split();
        let writer_task = tokio::spawn(write_loop(Writer {
            broker: broker.clone(),
            session: Arc::clone(&session),
            generation,
            socket: writer,
            signals: Arc::clone(&signals),
            version,
            is_resending,
        }));
        let config = broker.config();
        // A parked connection comes back here: it keeps the device it published as.
        let anonymous_device = match access {
            Access::Full => broker.anonymous_device(generation),
            Access::Device(_) => None,
        };
        let connection = Connection {
            max_packet_size: config.max_packet_size,
            slow_consumer_grace: config.slow_consumer_grace,
            broker,
            session,
            generation,
            access,
            anonymous_device,
            version,
            session_expiry_at_connect,
            outbox: Vec::new(),
            congested: Congested::new(),
            ingest_batch: Vec::new(),
            ingest_acks: Vec::new(),
            signals: Arc::clone(&signals),
            direct_out: BytesMut::new(),
        };
        Established {
            connection,
            peer,
            reader,
            buffer: BytesMut::new(),
            writer_task: Some(writer_task),
            signals,
            keep_alive,
            last_read,
            idle_since: Instant::now(),
            will,
            lot,
        }
    }

    /// Serves the connection until it closes or parks.
    async fn run(mut self) {
        loop {
            match self.read().await {
                Stop::Closed(closed) => {
                    Box::pin(self.close(closed)).await;
                    return;
                }
                Stop::Idle => match Box::pin(self.park()).await {
                    Some(active) => self = active,
                    None => return,
                },
            }
        }
    }

    /// Serves the attached connection until it closes or has been idle for a while.
    async fn read(&mut self) -> Stop {
        self.connection
            .read_loop(
                &self.reader,
                &mut self.buffer,
                self.keep_alive,
                &self.signals.kick,
                &mut self.last_read,
                &mut self.idle_since,
            )
            .await
    }

    /// Parks the connection if its writer is idle and its session has nothing for it:
    /// stops the writer, takes the socket back from tokio and hands it to the lot.
    /// Gives the connection back, running, if it cannot park now.
    async fn park(mut self) -> Option<Established> {
        let generation = self.connection.generation;
        let is_parking = {
            let mut state = self.connection.session.state.lock();
            let is_idle = state.may_park(generation)
                && !self.signals.is_writing.load(Ordering::Relaxed)
                && self.signals.unsent.lock().is_empty();
            state.is_parking = is_idle;
            is_idle
        };
        if !is_parking {
            self.idle_since = Instant::now();
            return Some(self);
        }
        self.signals.wake.notify_one();
        let writer = match self.writer_task.take() {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        let Some(writer) = writer else {
            // The writer stopped for good (taken over, or a write failed) and kicked the
            // reader, which now closes.
            self.connection.session.state.lock().is_parking = false;
            return Some(self);
        };
        let stream = match self.reader.reunite(writer) {
            Ok(stream) => stream,
            Err(halves) => {
                // Cannot happen: both halves come from this stream. Go on running.
                let tokio::net::tcp::ReuniteError(reader, writer) = halves;
                self.reader = reader;
                self.connection.session.state.lock().is_parking = false;
                self.writer_task = Some(tokio::spawn(write_loop(Writer {
                    broker: self.connection.broker.clone(),
                    session: Arc::clone(&self.connection.session),
                    generation,
                    socket: writer,
                    signals: Arc::clone(&self.signals),
                    version: self.connection.version,
                    is_resending: false,
                })));
                self.idle_since = Instant::now();
                return Some(self);
            }
        };
        let Established {
            connection,
            peer,
            will,
            keep_alive,
            last_read,
            lot,
            ..
        } = self;
        let Connection {
            broker,
            session,
            access,
            version,
            session_expiry_at_connect,
            ..
        } = connection;
        let connection = Parked {
            stream,
            session,
            generation,
            access,
            will,
            last_read,
            keep_alive,
            session_expiry_at_connect,
            version,
        };
        let parked = match connection.convert(TcpStream::into_std) {
            Ok(parked) => Box::new(parked),
            Err((error, rest)) => {
                tracing::debug!(%peer, %error, "connection lost");
                rest.session.state.lock().is_parking = false;
                abandon(&broker, rest);
                return None;
            }
        };
        match park(parked, &lot, &broker) {
            Ok(()) => None,
            Err(parked) => reactivate(broker, *parked, lot, Some(peer)),
        }
    }

    /// Flushes what is queued, publishes the will if the close was abnormal, and
    /// detaches from the session.
    async fn close(self, closed: Closed) {
        let Established {
            connection,
            peer,
            reader,
            buffer,
            writer_task,
            signals,
            will,
            ..
        } = self;
        drop((reader, buffer, signals));
        let Connection {
            broker,
            session,
            generation,
            access,
            version,
            ..
        } = connection;
        match &closed {
            Closed::Malformed(error) => {
                stats::add(&broker.stats().malformed_packets, 1);
                tracing::debug!(%peer, client_id = %session.client_id, %error, "closing: malformed packet");
            }
            Closed::ProtocolViolation { detail, .. } => {
                stats::add(&broker.stats().malformed_packets, 1);
                tracing::debug!(%peer, client_id = %session.client_id, detail, "closing: protocol violation");
            }
            Closed::Io(error) => {
                tracing::debug!(%peer, client_id = %session.client_id, %error, "connection lost")
            }
            other => {
                tracing::debug!(%peer, client_id = %session.client_id, reason = ?other, "connection closed")
            }
        }

        // Let the writer flush what is queued, plus a final DISCONNECT for 5.0 clients.
        {
            let mut state = session.state.lock();
            if state.is_attached(generation) {
                if let (true, Some(reason)) = (version.is_v5(), closed.disconnect_reason()) {
                    state.control.push_back(Packet::Disconnect(Disconnect {
                        reason,
                        properties: Properties::default(),
                    }));
                }
                state.is_closing = true;
                state.wake_writer();
            }
        }
        if let Some(mut writer_task) = writer_task {
            if tokio::time::timeout(FLUSH_TIMEOUT, &mut writer_task)
                .await
                .is_err()
            {
                writer_task.abort();
            }
        }

        if let (true, Some(will)) = (closed.publishes_will(), will) {
            publish_will(&broker, *will, &session);
        }
        broker.detach(&session, generation, &access);
    }
}

fn publish_will(broker: &Broker, will: Will, session: &Session) {
    tracing::debug!(client_id = %session.client_id, topic = %will.topic, "publishing will");
    broker.publish_will(will, session.id);
}

/// Decides whether a `CONNECT` is admitted, and with which access; the reason code of
/// the refusal otherwise. Clients with a user name are checked by the authenticator
/// (when the broker has one), anonymous ones admitted only with `allow_anonymous`.
async fn admit(
    broker: &Broker,
    connect: &fleetwire_mqtt_codec::Connect,
    peer: SocketAddr,
) -> Result<Access, ReasonCode> {
    if connect.protocol.is_v5() && connect.properties.authentication_method.is_some() {
        return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
    }
    let allow_anonymous = broker.config().allow_anonymous;
    let access = match (connect.username.as_deref(), broker.authenticator()) {
        (None, _) | (Some(_), None) if allow_anonymous => Access::Full,
        (None, _) => {
            stats::add(&broker.stats().auth_failures, 1);
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
        (Some(_), None) => {
            stats::add(&broker.stats().auth_failures, 1);
            return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        }
        (Some(username), Some(authenticator)) => {
            let limiter = broker.failed_logins();
            let username = Truncated(username);
            if !limiter.is_allowed(peer.ip()) {
                stats::add(&broker.stats().auth_failures, 1);
                tracing::warn!(%peer, %username, "login refused: too many failed logins from this address");
                return Err(ReasonCode::CONNECTION_RATE_EXCEEDED);
            }
            let credentials = Credentials {
                client_id: &connect.client_id,
                username: Some(username.0),
                password: connect.password.as_deref(),
                peer,
            };
            match authenticator.authenticate(credentials).await {
                Ok(access) => access,
                Err(Denial::Unavailable) => {
                    tracing::warn!(%peer, %username, "login refused: the credential store is unavailable");
                    return Err(ReasonCode::SERVER_UNAVAILABLE);
                }
                Err(denial) => {
                    limiter.record_failure(peer.ip());
                    stats::add(&broker.stats().auth_failures, 1);
                    tracing::warn!(%peer, %username, ?denial, "login failed");
                    return Err(denial.reason_code());
                }
            }
        }
    };
    if let Some(will) = &connect.will {
        if !access.may_publish(will.topic.as_str()) {
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
    }
    Ok(access)
}

/// Shows at most 128 characters of client-chosen text in logs.
struct Truncated<'a>(&'a str);

impl std::fmt::Display for Truncated<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(128) {
            Some((end, _)) => write!(f, "{}...", &self.0[..end]),
            None => f.write_str(self.0),
        }
    }
}

fn connack(session_present: bool, code: ReasonCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        code,
        properties: Properties::default(),
    })
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("first packet is {0:?}, expected CONNECT")]
    NotConnect(fleetwire_mqtt_codec::PacketType),
    #[error("reading CONNECT failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads the first packet, which must be `CONNECT`. `Ok(None)` when the peer closed.
async fn read_connect(
    broker: &Broker,
    reader: &OwnedReadHalf,
    buffer: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<Box<fleetwire_mqtt_codec::Connect>>, ConnectError> {
    loop {
        // The version argument is not used for CONNECT, which carries its own.
        match decode(buffer, ProtocolVersion::V311, max_packet_size)? {
            Some(Packet::Connect(connect)) => return Ok(Some(connect)),
            Some(other) => return Err(ConnectError::NotConnect(other.packet_type())),
            None => {}
        }
        let read = read_some(reader, buffer, CONNECT_CHUNK).await?;
        if read == 0 {
            return Ok(None);
        }
        stats::add(&broker.stats().bytes_received, read as u64);
    }
}

/// Reads what the socket has. An idle connection holds no read buffer: an empty buffer
/// is released before waiting and a fresh one is reserved only once data is ready. (Its
/// old allocation usually lives on anyway, in payloads still being delivered.)
async fn read_some(
    reader: &OwnedReadHalf,
    buffer: &mut BytesMut,
    chunk: usize,
) -> io::Result<usize> {
    loop {
        if buffer.is_empty() && buffer.capacity() > 0 {
            *buffer = BytesMut::new();
        }
        reader.readable().await?;
        if buffer.capacity() - buffer.len() < chunk / 4 {
            buffer.reserve(chunk);
        }
        let room = buffer.capacity() - buffer.len();
        let mut short = 0;
        // A read that did not fill the room drained the socket: answering `WouldBlock`
        // from the closure makes Tokio clear the readiness it saw, so the next
        // `readable()` waits for the next event instead of a `recv` that finds nothing
        // (one syscall saved per read, as Tokio's own `poll_read` does). Data that came
        // after our `recv` raised a newer event, which the clearing leaves alone.
        let read = reader.as_ref().try_io(Interest::READABLE, || {
            let read = reader.try_read_buf(buffer)?;
            if read > 0 && read < room {
                short = read;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(read)
        });
        match read {
            Ok(read) => return Ok(read),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock && short > 0 => {
                return Ok(short);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}

async fn write_packet(
    writer: &mut OwnedWriteHalf,
    packet: &Packet,
    version: ProtocolVersion,
) -> io::Result<()> {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out).map_err(io::Error::other)?;
    writer.write_all(&out).await?;
    writer.shutdown().await
}

/// The reader's state for one attached connection.
struct Connection {
    broker: Broker,
    session: Arc<Session>,
    generation: u64,
    /// What this client may publish and subscribe to.
    access: Access,
    /// The device an anonymous client published as first (see `settle_ingest`).
    anonymous_device: Option<Arc<str>>,
    version: ProtocolVersion,
    max_packet_size: usize,
    session_expiry_at_connect: u32,
    /// Replies collected while decoding one read's worth of packets, handed to the
    /// writer together (one lock, one wake-up).
    outbox: Vec<Packet>,
    /// Subscribers whose queues asked this publisher to pause (flow control).
    congested: Congested,
    slow_consumer_grace: Duration,
    /// Messages of this read for the platform's ingest, not yet handed over.
    ingest_batch: Vec<Inbound>,
    /// For each message of `ingest_batch`: where its acknowledgement waits in `outbox`.
    ingest_acks: Vec<Option<PendingAck>>,
    /// The attachment's signals, shared with the writer.
    signals: Arc<Signals>,
    /// Acknowledgements this task writes itself (see [`Connection::write_outbox`]).
    direct_out: BytesMut,
}

/// The device of a `devices/{id}/...` topic.
fn device_of_topic(topic: &str) -> Option<&str> {
    let (device, _) = topic.strip_prefix("devices/")?.split_once('/')?;
    (!device.is_empty()).then_some(device)
}

/// An acknowledgement held back until the platform has judged its message.
struct PendingAck {
    /// Index of the `PUBACK` or `PUBREC` in the outbox.
    position: usize,
    packet_id: PacketId,
    qos: QoS,
}

impl Connection {
    async fn read_loop(
        &mut self,
        reader: &OwnedReadHalf,
        buffer: &mut BytesMut,
        keep_alive: u16,
        kick: &Notify,
        last_read: &mut Instant,
        idle_since: &mut Instant,
    ) -> Stop {
        // One timer for the keep-alive and for parking, checked when it fires (reads
        // only note the time).
        let keep_alive = keep_alive_limit(keep_alive);
        let due = |last_read: Instant, idle_since: Instant| {
            let park_at = idle_since + PARK_AFTER;
            keep_alive.map_or(park_at, |limit| park_at.min(last_read + limit))
        };
        let timer = tokio::time::sleep_until(due(*last_read, *idle_since));
        tokio::pin!(timer);
        // Written messages count as activity: a subscriber that only receives is busy.
        let mut progress = self.session.progress.load(Ordering::Relaxed);
        let kicked = kick.notified();
        tokio::pin!(kicked);
        let mut shutdown: watch::Receiver<bool> = self.broker.shutdown_signal();
        if *shutdown.borrow_and_update() {
            return Stop::Closed(Closed::Shutdown);
        }
        loop {
            // Stop decoding as soon as a subscriber is congested, so this publisher adds
            // at most one message per pause to a full queue.
            while self.congested.is_empty() {
                match decode(buffer, self.version, self.max_packet_size) {
                    Ok(Some(packet)) => {
                        // A SUBSCRIBE sends its SUBACK (and everything before it) at
                        // once: earlier messages must be judged first.
                        if matches!(packet, Packet::Subscribe(_)) {
                            if let Err(closed) = self.settle_and_flush(reader).await {
                                return Stop::Closed(closed);
                            }
                        }
                        if let Err(closed) = self.handle(packet) {
                            let closed =
                                self.settle_and_flush(reader).await.err().unwrap_or(closed);
                            return Stop::Closed(closed);
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let closed = self
                            .settle_and_flush(reader)
                            .await
                            .err()
                            .unwrap_or(Closed::Malformed(error));
                        return Stop::Closed(closed);
                    }
                }
            }
            if let Err(closed) = self.settle_and_flush(reader).await {
                return Stop::Closed(closed);
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
                    if keep_alive.is_some_and(|limit| now >= *last_read + limit) {
                        return Stop::Closed(Closed::KeepAliveExpired);
                    }
                    let written = self.session.progress.load(Ordering::Relaxed);
                    if written != progress {
                        progress = written;
                        *idle_since = now;
                    }
                    if now >= *idle_since + PARK_AFTER {
                        if buffer.is_empty() {
                            return Stop::Idle;
                        }
                        // Half a packet came: wait for the rest (or the keep-alive).
                        *idle_since = now;
                    }
                    timer.as_mut().reset(due(*last_read, *idle_since));
                }
                read = read_some(reader, buffer, READ_CHUNK) => match read {
                    Ok(0) => return Stop::Closed(Closed::EndOfStream),
                    Ok(count) => {
                        stats::add(&self.broker.stats().bytes_received, count as u64);
                        *last_read = Instant::now();
                        *idle_since = *last_read;
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
        let congested = std::mem::take(&mut self.congested);
        for session in &congested {
            let mut progress = session.progress.load(Ordering::Relaxed);
            let mut deadline = Instant::now() + self.slow_consumer_grace;
            loop {
                let relieved = session.space.notified();
                tokio::pin!(relieved);
                // Registered before checking, so a drain in between is not missed.
                relieved.as_mut().enable();
                if !session.register_waiter() {
                    break;
                }
                if tokio::time::timeout_at(deadline, relieved).await.is_err() {
                    let now = session.progress.load(Ordering::Relaxed);
                    if now == progress {
                        session.mark_slow();
                        break;
                    }
                    progress = now;
                    deadline = Instant::now() + self.slow_consumer_grace;
                }
            }
        }
        self.congested = congested;
        self.congested.clear();
    }

    /// Why the reader was kicked: its device was revoked, or another connection took
    /// the session (or the writer failed, in which case the reason is not sent).
    fn kicked_reason(&self) -> Closed {
        let state = self.session.state.lock();
        if state.is_attached(self.generation) && state.is_revoked {
            Closed::Revoked
        } else {
            Closed::TakenOver
        }
    }

    /// Hands the messages collected for the platform over, waits for its verdicts, fixes
    /// their acknowledgements accordingly, then sends the outbox. Fails only for a 3.1.1
    /// client whose message could not be stored (it is disconnected unacknowledged).
    async fn settle_and_flush(&mut self, reader: &OwnedReadHalf) -> Result<(), Closed> {
        let settled = if self.ingest_batch.is_empty() {
            Ok(())
        } else {
            // Boxed: its state would otherwise enlarge every idle connection's task.
            Box::pin(self.settle_ingest()).await
        };
        if self.write_outbox(reader.as_ref()) {
            Box::pin(self.wait_for_writer()).await;
        }
        settled
    }

    /// Waits until the writer has sent most of the replies queued for it, so that a
    /// client that publishes without reading its acknowledgements is slowed down by TCP
    /// instead of growing the queue. Gives up when the connection is detached (taken
    /// over, revoked: the read loop then sees its kick) or closing.
    async fn wait_for_writer(&self) {
        loop {
            let drained = self.signals.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let state = self.session.state.lock();
                if state.control.len() <= CONTROL_BACKLOG / 2
                    || !state.is_attached(self.generation)
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

    async fn settle_ingest(&mut self) -> Result<(), Closed> {
        let Some(ingest) = self.broker.ingest().cloned() else {
            self.ingest_batch.clear();
            self.ingest_acks.clear();
            return Ok(());
        };
        let batch = std::mem::take(&mut self.ingest_batch);
        let count = batch.len();
        // An anonymous client publishing as a device is that device's connection, once
        // the platform took a message of it (so the device is registered).
        let anonymous_device = match (&self.access, &self.anonymous_device) {
            (Access::Full, None) => batch.iter().enumerate().find_map(|(index, inbound)| {
                device_of_topic(inbound.topic.as_str())
                    .map(|device| (index, Arc::<str>::from(device)))
            }),
            _ => None,
        };
        let verdicts = ingest.ingest(batch).await;
        if let Some((index, device)) = anonymous_device {
            if matches!(verdicts.get(index), Some(Verdict::Accepted)) {
                self.broker
                    .anonymous_publisher_is(&device, &self.session, self.generation);
                self.anonymous_device = Some(device);
            }
        }
        let acks = std::mem::take(&mut self.ingest_acks);
        let mut failed: Vec<usize> = Vec::new();
        for (index, ack) in acks.into_iter().enumerate() {
            let verdict = verdicts.get(index).unwrap_or(&Verdict::Failed);
            let Some(ack) = ack else { continue };
            let reason = match verdict {
                Verdict::Accepted => continue,
                Verdict::Invalid if self.version.is_v5() => ReasonCode::PAYLOAD_FORMAT_INVALID,
                Verdict::Invalid => continue,
                Verdict::Failed => {
                    if ack.qos == QoS::ExactlyOnce {
                        // Not received after all: a resent PUBLISH must be taken again.
                        self.session
                            .state
                            .lock()
                            .incoming_qos2
                            .retain(|id| *id != ack.packet_id);
                    }
                    if !self.version.is_v5() {
                        failed.push(ack.position);
                        continue;
                    }
                    ReasonCode::UNSPECIFIED_ERROR
                }
            };
            match self.outbox.get_mut(ack.position) {
                Some(Packet::PubAck(puback)) => puback.reason = reason,
                Some(Packet::PubRec(pubrec)) => pubrec.reason = reason,
                _ => {}
            }
        }
        debug_assert!(verdicts.len() == count, "one verdict per message");
        if failed.is_empty() {
            return Ok(());
        }
        for position in failed.into_iter().rev() {
            self.outbox.remove(position);
        }
        Err(Closed::IngestFailed)
    }

    fn flush_outbox(&mut self) {
        if !self.outbox.is_empty() {
            self.session.send_control(self.outbox.drain(..));
        }
    }

    /// Sends the outbox like [`Connection::flush_outbox`], but writes it to the socket
    /// from this task when the writer is idle with nothing queued before it: the usual
    /// case of a publisher's acknowledgements, which then cost no wake-up of the writer.
    /// Never waits: what the socket does not take at once is left to the writer, which
    /// sends it before anything else. Returns whether the writer's queue is now longer
    /// than [`CONTROL_BACKLOG`]: the reader should wait for it before reading more.
    fn write_outbox(&mut self, socket: &TcpStream) -> bool {
        if self.outbox.is_empty() {
            return false;
        }
        {
            let mut state = self.session.state.lock();
            let is_writer_idle = state.control.is_empty()
                && !self.signals.is_writing.load(Ordering::Relaxed)
                && !state.is_closing
                && state.is_attached(self.generation);
            if !is_writer_idle {
                state.control.extend(self.outbox.drain(..));
                state.wake_writer();
                return state.control.len() > CONTROL_BACKLOG;
            }
            self.signals
                .is_reader_writing
                .store(true, Ordering::Relaxed);
        }
        let mut out = std::mem::take(&mut self.direct_out);
        for packet in self.outbox.drain(..) {
            encode_or_log(&packet, self.version, &mut out);
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
            self.session.progress.fetch_add(1, Ordering::Relaxed);
        }
        let has_rest = written < out.len();
        {
            let _state = self.session.state.lock();
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
            Packet::Publish(publish) => self.handle_publish(publish),
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
                    if !found && self.version.is_v5() {
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
                    let mut state = self.session.state.lock();
                    let position = state
                        .incoming_qos2
                        .iter()
                        .position(|id| *id == release.packet_id);
                    position
                        .map(|index| state.incoming_qos2.swap_remove(index))
                        .is_some()
                };
                let mut complete = PubComp::new(release.packet_id);
                if !found && self.version.is_v5() {
                    complete.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.outbox.push(Packet::PubComp(complete));
                Ok(())
            }
            Packet::Subscribe(subscribe) => {
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
                let (reasons, retained) =
                    self.broker
                        .subscribe(&self.session, &subscribe, &self.access);
                self.outbox.push(Packet::SubAck(SubAck {
                    packet_id: subscribe.packet_id,
                    reasons,
                    properties: Properties::default(),
                }));
                // The SUBACK goes out before any retained message it causes.
                self.flush_outbox();
                for delivery in retained {
                    // Retained messages for its own subscription never pause a client.
                    let _ = self.session.deliver(delivery, self.broker.stats());
                }
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe) => {
                let existed = self.broker.unsubscribe(&self.session, &unsubscribe);
                let reasons = if self.version.is_v5() {
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
                    if self.session_expiry_at_connect == 0 && interval != 0 {
                        return Err(Closed::ProtocolViolation {
                            reason: ReasonCode::PROTOCOL_ERROR,
                            detail: "session expiry set at DISCONNECT after 0 at CONNECT (MQTT-3.14.2-2)",
                        });
                    }
                    self.broker
                        .set_session_expiry(&self.session, self.generation, interval);
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
        if publish.properties.topic_alias.is_some() {
            // CONNACK announced no topic aliases (maximum 0).
            return Err(Closed::ProtocolViolation {
                reason: ReasonCode::TOPIC_ALIAS_INVALID,
                detail: "topic alias used, but the topic alias maximum is 0",
            });
        }
        if publish.topic.is_empty() {
            return Err(Closed::ProtocolViolation {
                reason: ReasonCode::TOPIC_NAME_INVALID,
                detail: "PUBLISH with an empty topic",
            });
        }
        let topic = publish.topic.as_str();
        let is_denied = topic.starts_with("$SYS") || !self.access.may_publish(topic);
        let is_ingested = !is_denied
            && self
                .broker
                .ingest()
                .is_some_and(|ingest| ingest.wants(topic));
        let qos = publish.qos;
        let packet_id = publish.packet_id;
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) => {
                if is_ingested {
                    self.collect_for_ingest(&publish, None);
                }
                if !is_denied {
                    self.broker
                        .publish(publish, self.session.id, &mut self.congested);
                }
            }
            (QoS::AtLeastOnce, Some(packet_id)) => {
                if is_ingested {
                    self.collect_for_ingest(&publish, Some(packet_id));
                }
                let delivered = if is_denied {
                    0
                } else {
                    self.broker
                        .publish(publish, self.session.id, &mut self.congested)
                };
                let reason = self.publish_reason(is_denied, delivered + usize::from(is_ingested));
                self.outbox.push(Packet::PubAck(PubAck {
                    packet_id,
                    reason,
                    properties: Properties::default(),
                }));
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                let is_duplicate = self.session.state.lock().incoming_qos2.contains(&packet_id);
                let mut delivered = 1;
                if !is_duplicate && !is_denied {
                    if is_ingested {
                        self.collect_for_ingest(&publish, Some(packet_id));
                    }
                    delivered = self
                        .broker
                        .publish(publish, self.session.id, &mut self.congested)
                        + usize::from(is_ingested);
                    self.session.state.lock().incoming_qos2.push(packet_id);
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

    /// Adds a message for the platform to this read's batch; its acknowledgement (pushed
    /// next into the outbox, for QoS 1/2) waits for the verdict.
    fn collect_for_ingest(&mut self, publish: &Publish, packet_id: Option<PacketId>) {
        self.ingest_acks.push(packet_id.map(|packet_id| PendingAck {
            position: self.outbox.len(),
            packet_id,
            qos: publish.qos,
        }));
        self.ingest_batch.push(Inbound {
            topic: publish.topic.clone(),
            payload: publish.payload.clone(),
            qos: publish.qos,
            device: match &self.access {
                Access::Full => None,
                Access::Device(id) => Some(Arc::clone(id)),
            },
        });
    }

    fn publish_reason(&self, is_denied: bool, delivered: usize) -> ReasonCode {
        if !self.version.is_v5() {
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
    fn acknowledge(&self, packet_id: PacketId, awaiting: Awaiting, is_final: bool) -> bool {
        let receipt = {
            let mut state = self.session.state.lock();
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
            if is_final {
                state.inflight.remove(position);
                if !state.pending.is_empty() {
                    state.wake_writer();
                }
            } else if let Some(entry) = state.inflight.get_mut(position) {
                entry.awaiting = Awaiting::PubComp;
            }
            receipt
        };
        // Outside the session lock: the callback belongs to the platform.
        if let Some(receipt) = receipt {
            receipt.fire();
        }
        true
    }
}

/// What the writer task needs: the session it drains and how to reach its reader.
struct Writer {
    broker: Broker,
    session: Arc<Session>,
    generation: u64,
    socket: OwnedWriteHalf,
    /// `wake` is notified when something is queued or the writer must stop; `kick`
    /// stops the reader when a write fails.
    signals: Arc<Signals>,
    version: ProtocolVersion,
    /// Resend in-flight messages first (a resumed session).
    is_resending: bool,
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
async fn write_loop(writer: Writer) -> Option<OwnedWriteHalf> {
    let Writer {
        broker,
        session,
        generation,
        mut socket,
        signals,
        version,
        mut is_resending,
    } = writer;
    // Grows while there is work; released whenever the writer goes idle.
    let mut out = BytesMut::new();
    let mut has_written = false;
    let mut receipts: Vec<Arc<Receipt>> = Vec::new();
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
                let drained = drain(&mut state, &mut out, &mut is_resending);
                if drained.published > 0 {
                    stats::add(&broker.stats().messages_sent, drained.published as u64);
                }
                if drained.dropped > 0 {
                    stats::add(&broker.stats().messages_dropped, drained.dropped as u64);
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
                    let _ = socket.write_all(&out).await;
                }
                break;
            }
        };
        if !out.is_empty() {
            if let Err(error) = socket.write_all(&out).await {
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
    dropped: usize,
    has_more: bool,
    /// Tracked QoS 0 messages in this batch: delivered once it is written.
    receipts: Vec<Arc<Receipt>>,
}

/// Encodes queued control packets, then (once after a reconnect) the in-flight messages
/// with DUP set, then pending messages while the in-flight window has room, up to
/// [`WRITE_BATCH`] bytes.
fn drain(state: &mut SessionState, out: &mut BytesMut, is_resending: &mut bool) -> Drained {
    let version = state.version;
    while let Some(packet) = state.control.pop_front() {
        encode_or_log(&packet, version, out);
    }
    if std::mem::take(is_resending) {
        for entry in &state.inflight {
            let packet = match entry.awaiting {
                Awaiting::PubAck | Awaiting::PubRec => {
                    publish_packet(&entry.delivery, Some(entry.packet_id), true, version)
                }
                Awaiting::PubComp => Packet::PubRel(PubRel::new(entry.packet_id)),
            };
            encode_or_log(&packet, version, out);
        }
    }
    let mut drained = Drained {
        published: 0,
        dropped: 0,
        has_more: false,
        receipts: Vec::new(),
    };
    let now = std::time::Instant::now();
    while out.len() < WRITE_BATCH {
        let Some(front) = state.pending.front() else {
            break;
        };
        if front.message.is_expired(now) {
            // Past its expiry while queued (MQTT-3.3.2-5): never sent.
            state.pending.pop_front();
            drained.dropped += 1;
            continue;
        }
        let is_qos0 = front.qos == QoS::AtMostOnce;
        if !is_qos0 && state.inflight.len() >= state.inflight_limit as usize {
            break;
        }
        let Some(delivery) = state.pending.pop_front() else {
            break;
        };
        let packet_id = (!is_qos0).then(|| state.allocate_packet_id());
        let start = out.len();
        if !encode_or_log(
            &publish_packet(&delivery, packet_id, false, version),
            version,
            out,
        ) {
            drained.dropped += 1;
            continue;
        }
        if let Some(limit) = state.client_max_packet_size {
            // MQTT-3.1.2-25: a packet larger than the client accepts is discarded.
            if (out.len() - start) as u64 > u64::from(limit) {
                out.truncate(start);
                drained.dropped += 1;
                continue;
            }
        }
        drained.published += 1;
        if let (None, Some(receipt)) = (packet_id, &delivery.message.receipt) {
            drained.receipts.push(Arc::clone(receipt));
        }
        if let Some(packet_id) = packet_id {
            let awaiting = if delivery.qos == QoS::AtLeastOnce {
                Awaiting::PubAck
            } else {
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

fn encode_or_log(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> bool {
    match encode(packet, version, out) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, packet = ?packet.packet_type(), "cannot encode packet, skipped");
            false
        }
    }
}

fn publish_packet(
    delivery: &Delivery,
    packet_id: Option<PacketId>,
    dup: bool,
    version: ProtocolVersion,
) -> Packet {
    let message = &delivery.message;
    let properties = if version.is_v5()
        && !(message.properties.is_empty()
            && delivery.subscription_ids.is_empty()
            && message.expires_at.is_none())
    {
        let mut properties = message.properties.clone();
        properties.subscription_identifiers = delivery.subscription_ids.clone();
        // The receiver is told what is left of the interval (MQTT-3.3.2-6).
        properties.message_expiry_interval = message.remaining_expiry(std::time::Instant::now());
        properties
    } else {
        Properties::default()
    };
    Packet::Publish(Publish {
        dup,
        qos: delivery.qos,
        retain: delivery.is_retained,
        topic: message.topic.clone(),
        packet_id,
        payload: message.payload.clone(),
        properties,
    })
}
