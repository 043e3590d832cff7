//! One client connection, from `CONNECT` to close: what it keeps for its whole life
//! ([`Connection`]), its entry points ([`serve`], [`resume`]) and its life cycle (start,
//! park, close).
//!
//! A running connection is two tasks over the two halves of its socket. The reader
//! ([`reader`]) decodes packets, applies them to the broker and its session, hands
//! messages to the ingest ([`settlement`]) and answers them; the writer ([`writer`])
//! drains the session's queues into one buffer and writes it with one system call, so a
//! burst of messages costs one `write`. The reader writes its own replies
//! (acknowledgements) when the writer is idle, which spares a wake-up of the writer per
//! read; otherwise, or when the socket is full, it queues them for the writer, and stops
//! reading while too many wait there. [`handshake`] reads `CONNECT`, admits the client
//! and attaches its session.
//!
//! Ownership: the running reader owns the [`Connection`] (session handle, access, will,
//! keep-alive); a parked connection ([`Parked`]) carries it whole beside its socket, and
//! a resumed one gets it back, moved, never rebuilt. The session (shared) owns
//! everything that must survive a reconnect. The hooks belong to the listener, which
//! hands them to every connection it serves or resumes.
//!
//! An idle connection (nothing read or written for
//! [`PARK_AFTER`](crate::park::PARK_AFTER), or nothing said after
//! `CONNECT`) parks: the writer hands its half back, the socket leaves tokio for the
//! listener's lot, and both tasks end ([`crate::park`]). [`resume`] starts them again.

mod handshake;
mod reader;
mod settlement;
mod socket;
mod topic_alias;
mod writer;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use fleetwire_mqtt_codec::{
    DecodeError, Disconnect, Packet, Properties, ProtocolVersion, ReasonCode, Will, encode,
};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::reader::{Reader, Stop};
pub use self::socket::Duplex;
pub(crate) use self::socket::Socket;
use self::socket::{ReadSide, WriteSide};
use self::topic_alias::TopicAliases;
use self::writer::Writer;
use crate::auth::{Access, PeerCertificate};
use crate::broker::Broker;
use crate::ingest::Hooks;
use crate::limits::ConnectionPermit;
use crate::park::{Fresh, Lot, Parked, keep_alive_limit};
use crate::redirect::Redirection;
use crate::session::{Link, Session, Signals};
use crate::stats::{self, Stats};

/// How long a closing connection waits for its writer to flush a final `DISCONNECT`.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// What a resumed connection reads before tokio watches its socket ([`read_waiting`]):
/// the packets of a small burst; the rest is read as usual.
const RESUME_READ: usize = 4096;

/// What a connection keeps for its whole life, running or parked: enough to start its
/// tasks again. Moved whole between the running reader and the lot.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) session: Arc<Session>,
    /// Which attachment of the session is this connection's.
    pub(crate) generation: u64,
    /// What this client may publish and subscribe to.
    pub(crate) access: Access,
    /// Published if the connection ends abnormally; copied out of the `CONNECT` buffer.
    pub(crate) will: Option<Box<Will>>,
    /// When the client last sent anything: the keep-alive counts from here.
    pub(crate) last_read: Instant,
    pub(crate) keep_alive: u16,
    pub(crate) session_expiry_at_connect: u32,
    pub(crate) version: ProtocolVersion,
    /// 5.0 topic aliases: those the client set, and how many the writer may assign
    /// toward it. `None` for a client that uses none (most).
    pub(crate) topic_aliases: Option<Box<TopicAliases>>,
    /// The connection's place within the connection limits, given back when it closes
    /// (held for its `Drop`).
    #[allow(dead_code)]
    pub(crate) permit: ConnectionPermit,
}

impl Connection {
    /// When the keep-alive expires (MQTT-3.1.2-24: one and a half times the keep-alive
    /// without a packet); `None` without keep-alive.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        keep_alive_limit(self.keep_alive).map(|limit| self.last_read + limit)
    }

    /// Ends an attached connection whose socket is gone before its tasks could run: the
    /// will is published (the close is abnormal) and the session detached.
    fn abandon(self, broker: &Broker, hooks: &Hooks) {
        if let Some(will) = self.will {
            broker.will_at_close(*will, &self.session, self.generation);
            broker.release_will(&self.session, self.generation);
        }
        broker.detach(&self.session, self.generation, &self.access, hooks);
    }
}

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
    /// The user was disconnected ([`Broker::disconnect_user`]).
    Revoked,
    /// The broker sends its clients to another server ([`Broker::redirect_all`]).
    Redirected(Arc<Redirection>),
    /// A 5.0 client published faster than its budget
    /// ([`Limits::publish_rate`](crate::Limits::publish_rate)).
    RateExceeded,
    /// The ingest could not store a message of this 3.1.1 client, which has no way to be
    /// told but to be disconnected without the message's acknowledgement.
    IngestFailed,
    /// The broker's durable state could not make this read's changes durable: nothing
    /// that depended on them was acknowledged.
    StateFailed,
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
            Closed::Redirected(redirection) => Some(redirection.reason_code()),
            Closed::RateExceeded => Some(ReasonCode::MESSAGE_RATE_TOO_HIGH),
            Closed::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            Closed::StateFailed => Some(ReasonCode::UNSPECIFIED_ERROR),
            Closed::Disconnect(_) | Closed::EndOfStream | Closed::Io(_) | Closed::IngestFailed => {
                None
            }
        }
    }

    /// The properties of that `DISCONNECT`: a redirection's Server Reference.
    fn disconnect_properties(&self) -> Properties {
        match self {
            Closed::Redirected(redirection) => redirection.properties(),
            _ => Properties::default(),
        }
    }
}

/// Serves one accepted connection until it closes or parks. Never panics on client
/// input: every failure ends this connection only. `certificate` is what the client
/// proved with its TLS client certificate, if anything (boxed: every plain connection's
/// handshake carries the `None`).
///
/// Shaped for small idle connections: the handshake (the `CONNECT`, refusals, timeouts)
/// and the closing (flush timers) run in boxed futures of their own, so the task of an
/// idle connection holds only what reading needs. (A plain `async fn` would also keep
/// its arguments' slots for the whole connection.) A client that sends nothing after
/// `CONNECT` may park at once, and its task end (see [`crate::park`]).
pub(crate) fn serve(
    broker: Broker,
    hooks: Arc<Hooks>,
    socket: Socket,
    peer: SocketAddr,
    certificate: Option<Box<PeerCertificate>>,
    permit: ConnectionPermit,
) -> impl Future<Output = ()> + Send + 'static {
    let handshake = Box::pin(handshake::handshake(
        broker,
        hooks,
        socket,
        peer,
        certificate,
        permit,
    ));
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
pub(crate) async fn resume(broker: Broker, hooks: Arc<Hooks>, parked: Parked, lot: Arc<Lot>) {
    let established = reactivate(broker, hooks, parked, lot, None);
    let Some(established) = established else {
        return;
    };
    established.run().await;
}

/// A connection that completed `CONNECT`, is attached to its session and has its tasks
/// running.
struct Established {
    reader: Reader,
    peer: SocketAddr,
    socket: ReadSide,
    buffer: BytesMut,
    /// `None` once the writer stopped. It hands its half of the socket back only when
    /// the reader asked it to, to park.
    writer_task: Option<JoinHandle<Option<WriteSide>>>,
    signals: Arc<Signals>,
    /// Since when nothing was read or written: the connection parks after `PARK_AFTER`.
    idle_since: Instant,
    /// A new connection's place among those that stay attached after `CONNACK`.
    fresh: Option<Fresh>,
}

/// Parks an idle connection in `lot`, unless its session has something for it or the
/// broker is stopping (checked under the session lock, so that nothing queued later can
/// be missed: it finds the parked link and resumes the connection); gives it back then.
fn park(parked: Box<Parked>, lot: &Arc<Lot>, broker: &Broker) -> Result<(), Box<Parked>> {
    let session = Arc::clone(&parked.connection.session);
    let generation = parked.connection.generation;
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

/// Registers a parked connection's socket with tokio again and starts its tasks; `None`
/// (the connection closed) if the socket cannot be registered.
fn reactivate(
    broker: Broker,
    hooks: Arc<Hooks>,
    parked: Parked,
    lot: Arc<Lot>,
    peer: Option<SocketAddr>,
) -> Option<Established> {
    let peer = peer
        .or_else(|| parked.stream.peer_addr().ok())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut parked = parked;
    let buffer = read_waiting(&mut parked, broker.stats());
    match parked.convert(TcpStream::from_std) {
        Ok(Parked { stream, connection }) => Some(Established::activate(
            broker,
            hooks,
            connection,
            Socket::Tcp { stream, lot }.split(),
            buffer,
            peer,
            false,
        )),
        Err((error, connection)) => {
            tracing::warn!(%peer, %error, "cannot resume a parked connection");
            connection.abandon(&broker, &hooks);
            None
        }
    }
}

/// Reads what a resumed connection's socket already holds, before tokio watches it.
///
/// A socket newly registered with tokio is not known to be readable until the reactor
/// runs again; meanwhile other connections' tasks run. Reading here handles the packet
/// that woke the connection first, so that a client's `SUBSCRIBE` sent just before
/// another client's `PUBLISH` is not overtaken by it (one-threaded brokers keep that
/// order; clients and test suites rely on it). Errors and the end of the stream are
/// left to the reader, which sees them again once tokio watches the socket.
fn read_waiting(parked: &mut Parked, stats: &Stats) -> BytesMut {
    let mut chunk = [0u8; RESUME_READ];
    match parked.stream.read(&mut chunk) {
        Ok(count) if count > 0 => {
            parked.connection.last_read = Instant::now();
            stats::add(&stats.bytes_received, count as u64);
            BytesMut::from(&chunk[..count])
        }
        _ => BytesMut::new(),
    }
}

impl Established {
    /// Starts the tasks of an attached connection (new, or back from the lot): points the
    /// session's attachment at fresh signals and spawns the writer. A session that was
    /// taken over or revoked meanwhile has the reader kicked at once, so that it closes
    /// with the right reason. `buffer` holds what was already read from the socket and
    /// not decoded yet (packets that came in the same read as `CONNECT`).
    fn activate(
        broker: Broker,
        hooks: Arc<Hooks>,
        connection: Connection,
        (socket, write_half): (ReadSide, WriteSide),
        buffer: BytesMut,
        peer: SocketAddr,
        is_resending: bool,
    ) -> Established {
        let signals = Arc::new(Signals::default());
        {
            let mut state = connection.session.state.lock();
            match &mut state.attachment {
                Some(attachment) if attachment.generation == connection.generation => {
                    attachment.link = Link::Active(Arc::clone(&signals));
                    if state.is_revoked {
                        signals.kick.notify_one();
                    }
                }
                _ => signals.kick.notify_one(),
            }
        }
        let writer_task = Writer {
            broker: broker.clone(),
            session: Arc::clone(&connection.session),
            generation: connection.generation,
            socket: write_half,
            signals: Arc::clone(&signals),
            version: connection.version,
            topic_alias_maximum: TopicAliases::outbound_maximum(&connection.topic_aliases),
            is_resending,
        }
        .spawn();
        Established {
            reader: Reader::new(broker, hooks, connection, Arc::clone(&signals)),
            peer,
            socket,
            buffer,
            writer_task: Some(writer_task),
            signals,
            idle_since: Instant::now(),
            fresh: None,
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
        self.reader
            .read_loop(
                &mut self.socket,
                &mut self.buffer,
                &self.signals.kick,
                &mut self.idle_since,
            )
            .await
    }

    /// Parks the connection if its writer is idle and its session has nothing for it:
    /// stops the writer, takes the socket back from tokio and hands it to the lot.
    /// Gives the connection back, running, if it cannot park now.
    async fn park(mut self) -> Option<Established> {
        let session = Arc::clone(&self.reader.connection().session);
        let generation = self.reader.connection().generation;
        let is_parking = self.socket.may_park() && {
            let mut state = session.state.lock();
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
            session.state.lock().is_parking = false;
            return Some(self);
        };
        let Established {
            reader,
            peer,
            socket,
            buffer,
            signals,
            ..
        } = self;
        let (stream, lot) = match socket.reunite(writer) {
            Ok(whole) => whole,
            Err((socket, writer)) => {
                // Cannot happen: only a TCP connection parks, and both halves come
                // from its socket. Go on running.
                session.state.lock().is_parking = false;
                let writer_task = Writer {
                    broker: reader.broker().clone(),
                    session,
                    generation,
                    socket: writer,
                    signals: Arc::clone(&signals),
                    version: reader.connection().version,
                    topic_alias_maximum: TopicAliases::outbound_maximum(
                        &reader.connection().topic_aliases,
                    ),
                    is_resending: false,
                }
                .spawn();
                return Some(Established {
                    reader,
                    peer,
                    socket,
                    buffer,
                    writer_task: Some(writer_task),
                    signals,
                    idle_since: Instant::now(),
                    fresh: None,
                });
            }
        };
        drop((buffer, signals));
        let (broker, hooks, connection) = reader.into_parts();
        let parked = match (Parked { stream, connection }).convert(TcpStream::into_std) {
            Ok(parked) => Box::new(parked),
            Err((error, connection)) => {
                tracing::debug!(%peer, %error, "connection lost");
                session.state.lock().is_parking = false;
                connection.abandon(&broker, &hooks);
                return None;
            }
        };
        drop(session);
        match park(parked, &lot, &broker) {
            Ok(()) => None,
            Err(parked) => reactivate(broker, hooks, *parked, lot, Some(peer)),
        }
    }

    /// Flushes what is queued, publishes the will if the close was abnormal, and
    /// detaches from the session; then, if a 5.0 client was told why, lingers (see
    /// [`linger`]).
    async fn close(self, closed: Closed) {
        let Established {
            reader,
            peer,
            socket,
            buffer,
            writer_task,
            signals,
            ..
        } = self;
        drop((buffer, signals));
        let (broker, hooks, connection) = reader.into_parts();
        let Connection {
            session,
            generation,
            access,
            will,
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
                        properties: closed.disconnect_properties(),
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

        let had_will = will.is_some();
        if let (true, Some(will)) = (closed.publishes_will(), will) {
            broker.will_at_close(*will, &session, generation);
        }
        if had_will {
            broker.release_will(&session, generation);
        }
        broker.detach(&session, generation, &access, &hooks);
        let is_told = version.is_v5() && closed.disconnect_reason().is_some();
        if is_told && !matches!(closed, Closed::Shutdown) {
            linger(socket).await;
        }
    }
}

/// How long a closing connection keeps reading after its `DISCONNECT`, at most.
const LINGER: Duration = Duration::from_secs(1);

/// Reads and discards what the client still sends after the broker's `DISCONNECT`,
/// until it closes its side or for [`LINGER`]. Closing a socket with unread input
/// resets the connection, and a reset can make the client's system drop what it had
/// not read yet, the `DISCONNECT` with its reason code included; a client that was
/// busy sending (past its receive maximum, say) would then only see a broken pipe.
async fn linger(mut socket: ReadSide) {
    let mut discarded = BytesMut::new();
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = socket.read_some(&mut discarded, 512).await {
            discarded.clear();
        }
    })
    .await;
}

/// Encodes `packet` into `out`; whether it could (a packet that cannot be encoded is
/// logged and skipped).
fn encode_or_log(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> bool {
    match encode(packet, version, out) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, packet = ?packet.packet_type(), "cannot encode packet, skipped");
            false
        }
    }
}
