//! The start of a connection: reading `CONNECT` (within the connect timeout, in small
//! reads), admitting the client (authentication through the listener's hooks, the
//! failed-login limiter, the will's ACL check, a redirection to another server),
//! attaching its session and answering `CONNACK`, with what 5.0 negotiates there (topic
//! alias and receive maximums, the server keep alive, response information). A client
//! with nothing more to say parks at once, in the same step, when too many new
//! connections are attached already (see [`crate::park::MAX_FRESH`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use fleetwire_mqtt_codec::{
    ConnAck, Connect, DecodeError, Packet, PacketType, Properties, ProtocolVersion, ReasonCode,
    TopicFilter, decode, encode,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::socket::{ReadSide, Socket, WriteSide};
use super::topic_alias::TopicAliases;
use super::{Connection, Established, encode_or_log, park, reactivate};
use crate::auth::{Access, Credentials, Denial, PeerCertificate};
use crate::broker::Broker;
use crate::ingest::Hooks;
use crate::limits::ConnectionPermit;
use crate::park::Parked;
use crate::peers::{Claim, Claimed};
use crate::redirect::Redirection;
use crate::session::{ClientId, Signals};
use crate::stats;

/// Bytes asked for while reading `CONNECT`, which is usually small: thousands of
/// handshakes at once should not each hold a full read chunk.
const CONNECT_CHUNK: usize = 512;

/// Reads and answers `CONNECT` and attaches the session; then parks the connection if
/// the client has nothing more to say and nothing waits for it (TCP only), or starts its
/// tasks. `None` when the connection was refused, closed or parked.
pub(super) async fn handshake(
    broker: Broker,
    hooks: Arc<Hooks>,
    socket: Socket,
    peer: SocketAddr,
    certificate: Option<Box<PeerCertificate>>,
    permit: ConnectionPermit,
) -> Option<Established> {
    if let Socket::Tcp { stream, .. } = &socket {
        tune(&broker, stream, peer);
    }
    let (mut reader, mut writer) = socket.split();
    let mut buffer = BytesMut::new();
    let config = broker.config().clone();

    let first = tokio::time::timeout(
        config.connect_timeout,
        read_connect(&broker, &mut reader, &mut buffer, config.max_packet_size),
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
    if let Some(redirection) = broker.redirection() {
        tracing::debug!(%peer, client_id = %connect.client_id, "refusing connection: redirected");
        let _ = write_packet(&mut writer, &redirect(&redirection), version).await;
        return None;
    }

    let access = match admit(&broker, &hooks, &connect, peer, certificate.as_deref()).await {
        Ok(access) => access,
        Err(code) => {
            tracing::debug!(%peer, client_id = %connect.client_id, code = code.0, "refusing connection");
            let _ = write_packet(&mut writer, &connack(false, code), version).await;
            return None;
        }
    };

    // Boxed: only a cluster's connections wait here (and pay for it). The hold lasts
    // until the session is attached.
    let mut hold = None;
    if broker.peers().is_some() {
        match Box::pin(claim(&broker, &connect)).await {
            Ok(held) => hold = held,
            Err(()) => {
                let refusal = connack(false, ReasonCode::SERVER_UNAVAILABLE);
                let _ = write_packet(&mut writer, &refusal, version).await;
                return None;
            }
        }
    }
    let attached = match broker.attach(&connect, &access, Arc::new(Signals::default()), &hooks) {
        Ok(attached) => attached,
        Err(code) => {
            tracing::debug!(%peer, client_id = %connect.client_id, code = code.0, "refusing connection");
            let _ = write_packet(&mut writer, &connack(false, code), version).await;
            return None;
        }
    };
    drop(hold);
    let session = attached.session;
    let generation = attached.generation;
    if let Some(redirection) = broker.redirection() {
        // Redirected while this client was being admitted, after the redirection
        // closed the connected ones.
        broker.detach(&session, generation, &access, &hooks);
        let _ = write_packet(&mut writer, &redirect(&redirection), version).await;
        return None;
    }
    tracing::debug!(
        %peer, client_id = %session.client_id, ?version,
        session_present = attached.is_session_present, "client connected"
    );

    // CONNACK is written here, before the writer exists. A client with nothing more to
    // say, past the new connections that stay attached, parks right away: its CONNACK
    // goes out on the parked socket in the same step,
    // with no `.await` in between, so that a broker short of CPU never holds more
    // half-finished connections than the handshakes it is reading.
    let mut acknowledgement = ConnAck {
        session_present: attached.is_session_present,
        code: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    let (keep_alive, server_keep_alive) =
        negotiate_keep_alive(connect.keep_alive, version, config.max_keep_alive);
    if version.is_v5() {
        let properties = &mut acknowledgement.properties;
        properties.assigned_client_identifier = attached.assigned_client_id;
        properties.maximum_packet_size = u32::try_from(config.max_packet_size).ok();
        properties.receive_maximum = Some(config.receive_maximum.max(1));
        properties.topic_alias_maximum =
            (config.topic_alias_maximum > 0).then_some(config.topic_alias_maximum);
        properties.server_keep_alive = server_keep_alive;
        if connect.properties.request_response_information == Some(1) {
            properties.response_information = response_information(&session.client_id, &access);
        }
    }
    let mut out = BytesMut::new();
    let is_encoded = encode_or_log(&Packet::ConnAck(acknowledgement), version, &mut out);

    // Keep only what the connection needs; the rest of CONNECT (and the read buffer its
    // fields point into) is freed now. The will is copied out of that buffer for the
    // same reason: it lives as long as the connection.
    let Connect {
        will, properties, ..
    } = *connect;
    let will = will.map(|will| Box::new(crate::compact::will(will)));
    if let Some(will) = &will {
        broker.hold_will(&session, generation, will);
    }
    let is_resending = attached.is_session_present && !session.state.lock().inflight.is_empty();
    let may_park = is_encoded
        && reader.may_park()
        && buffer.is_empty()
        && !is_resending
        && session.state.lock().may_park(generation);
    // A new connection stays attached for a while, unless too many are new at once.
    let fresh = match reader.lot() {
        Some(lot) if may_park => lot.fresh(),
        _ => None,
    };
    let may_park = may_park && fresh.is_none();
    if !may_park && !out.is_empty() {
        match writer.send(&out).await {
            Ok(()) => stats::add(&broker.stats().bytes_sent, out.len() as u64),
            // The reader finds the socket broken and closes the connection as usual.
            Err(error) => tracing::debug!(%peer, %error, "writing CONNACK failed"),
        }
    }
    let connection = Connection {
        session,
        generation,
        access,
        will,
        last_read: Instant::now(),
        keep_alive,
        session_expiry_at_connect: properties.session_expiry_interval.unwrap_or(0),
        version,
        topic_aliases: TopicAliases::for_client(
            properties.topic_alias_maximum,
            config.topic_alias_maximum,
        ),
        permit,
    };
    if !may_park {
        // Whatever came after CONNECT in the same read is served first.
        let mut established = Established::activate(
            broker,
            hooks,
            connection,
            (reader, writer),
            buffer,
            peer,
            is_resending,
        );
        established.fresh = fresh;
        return Some(established);
    }
    let (stream, lot) = match reader.reunite(writer) {
        Ok(whole) => whole,
        Err(halves) => {
            // Cannot happen: only a TCP socket parks, and both halves come from it.
            tracing::warn!(%peer, "cannot rejoin the halves of a socket");
            drop(halves);
            connection.abandon(&broker, &hooks);
            return None;
        }
    };
    let connection = Parked { stream, connection };
    let parked = match connection.convert(TcpStream::into_std) {
        Ok(parked) => Box::new(parked),
        Err((error, connection)) => {
            tracing::debug!(%peer, %error, "connection lost");
            connection.abandon(&broker, &hooks);
            return None;
        }
    };
    // A fresh socket's send buffer is empty: a CONNACK goes in one non-blocking write.
    if let Err(error) = std::io::Write::write_all(&mut &parked.stream, &out) {
        tracing::debug!(%peer, %error, "writing CONNACK failed");
        let _ = parked.stream.shutdown(std::net::Shutdown::Both);
        parked.connection.abandon(&broker, &hooks);
        return None;
    }
    stats::add(&broker.stats().bytes_sent, out.len() as u64);
    drop(out);
    match park(parked, &lot, &broker) {
        Ok(()) => None,
        Err(parked) => reactivate(broker, hooks, *parked, lot, Some(peer)),
    }
}

/// Decides whether a `CONNECT` is admitted, and with which access; the reason code of
/// the refusal otherwise. Clients with a user name are checked by the authenticator
/// (when the listener's hooks have one), anonymous ones admitted only with
/// `allow_anonymous`.
/// In a cluster: makes this node the only one holding the client's id, and adopts its
/// session if another node held it (saved here before the client is answered). `Err`
/// when the cluster cannot say or the session cannot be saved: the client is refused
/// and tries again.
async fn claim(broker: &Broker, connect: &Connect) -> Result<Option<Box<dyn Send>>, ()> {
    let Some(peers) = broker.peers() else {
        return Ok(None);
    };
    if connect.client_id.is_empty() {
        // The broker assigns a fresh id: nobody else holds it.
        return Ok(None);
    }
    let (state, hold) = match peers.claim(&connect.client_id).await {
        Ok(Claimed {
            claim: Claim::Here,
            hold,
        }) => return Ok(Some(hold)),
        Ok(Claimed {
            claim: Claim::Moved(state),
            hold,
        }) => (state, hold),
        Err(error) => {
            tracing::warn!(client_id = %connect.client_id, %error, "refusing connection: the cluster did not hand over its session");
            return Err(());
        }
    };
    let ticket = match broker.adopt_session(&state) {
        Ok(ticket) => ticket,
        Err(detail) => {
            tracing::error!(client_id = %connect.client_id, %detail, "a session handed over by another node does not decode: starting a new one");
            return Ok(Some(hold));
        }
    };
    if let (Some(ticket), Some(store)) = (ticket, broker.state()) {
        if let Err(error) = store.durable(ticket).await {
            tracing::error!(client_id = %connect.client_id, %error, "refusing connection: the session handed over could not be saved");
            return Err(());
        }
    }
    Ok(Some(hold))
}

async fn admit(
    broker: &Broker,
    hooks: &Hooks,
    connect: &Connect,
    peer: SocketAddr,
    certificate: Option<&PeerCertificate>,
) -> Result<Access, ReasonCode> {
    if connect.protocol.is_v5() && connect.properties.authentication_method.is_some() {
        return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
    }
    let allow_anonymous = broker.config().allow_anonymous;
    let username = connect.username.as_deref();
    let is_anonymous = username.is_none() && certificate.is_none();
    let access = match (is_anonymous, hooks.authenticator.as_deref()) {
        (true, _) | (false, None) if allow_anonymous => Access::Full,
        (true, _) => {
            stats::add(&broker.stats().auth_failures, 1);
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
        (false, None) => {
            stats::add(&broker.stats().auth_failures, 1);
            return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        }
        (false, Some(authenticator)) => {
            let limiter = broker.failed_logins();
            let username = Truncated(
                username
                    .or(certificate.map(|certificate| certificate.common_name.as_str()))
                    .unwrap_or_default(),
            );
            if !limiter.is_allowed(peer.ip()) {
                stats::add(&broker.stats().auth_failures, 1);
                tracing::warn!(%peer, %username, "login refused: too many failed logins from this address");
                return Err(ReasonCode::CONNECTION_RATE_EXCEEDED);
            }
            let credentials = Credentials {
                client_id: &connect.client_id,
                username: connect.username.as_deref(),
                password: connect.password.as_deref(),
                peer,
                certificate,
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
        if !access.may_publish(&will.topic) {
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

/// The keep-alive a client is held to, and the Server Keep Alive that tells a 5.0
/// client so when it is not the one it asked for: past `maximum` (or none, 0), the
/// maximum. A 3.1.1 client cannot be told, so its own is honoured; `maximum` 0 honours
/// everyone's.
fn negotiate_keep_alive(
    requested: u16,
    version: ProtocolVersion,
    maximum: u16,
) -> (u16, Option<u16>) {
    if version.is_v5() && maximum > 0 && (requested == 0 || requested > maximum) {
        (maximum, Some(maximum))
    } else {
        (requested, None)
    }
}

/// The Response Information a 5.0 client that asks for it is given: a topic prefix of
/// its own, `$response/{client id}/`, under which it can receive responses
/// (MQTT 5.0 section 4.10). None when the client id cannot be part of a topic, or when
/// the client's access would not let it subscribe there (a device's ACL keeps it within
/// its own topics).
fn response_information(client_id: &ClientId, access: &Access) -> Option<String> {
    let prefix = format!("$response/{client_id}/");
    let filter = TopicFilter::new(format!("{prefix}#")).ok()?;
    access.may_subscribe(&filter).then_some(prefix)
}

/// The `CONNACK` that sends a client to another server.
fn redirect(redirection: &Redirection) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        code: redirection.reason_code(),
        properties: redirection.properties(),
    })
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
    NotConnect(PacketType),
    #[error("reading CONNECT failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads the first packet, which must be `CONNECT`. `Ok(None)` when the peer closed.
async fn read_connect(
    broker: &Broker,
    reader: &mut ReadSide,
    buffer: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<Box<Connect>>, ConnectError> {
    loop {
        // The version argument is not used for CONNECT, which carries its own.
        match decode(buffer, ProtocolVersion::V311, max_packet_size)? {
            Some(Packet::Connect(connect)) => return Ok(Some(connect)),
            Some(other) => return Err(ConnectError::NotConnect(other.packet_type())),
            None => {}
        }
        let read = reader.read_some(buffer, CONNECT_CHUNK).await?;
        if read == 0 {
            return Ok(None);
        }
        stats::add(&broker.stats().bytes_received, read as u64);
    }
}

/// Writes one packet (a refusing `CONNACK`) and closes the socket.
async fn write_packet(
    writer: &mut WriteSide,
    packet: &Packet,
    version: ProtocolVersion,
) -> io::Result<()> {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out).map_err(io::Error::other)?;
    writer.send(&out).await?;
    writer.shutdown().await
}

/// Sets a fresh TCP socket's options: no Nagle delay, and the configured send buffer.
fn tune(broker: &Broker, stream: &TcpStream, peer: SocketAddr) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot disable Nagle's algorithm");
    }
    if let Some(size) = broker.config().socket_send_buffer {
        if let Err(error) = socket2::SockRef::from(stream).set_send_buffer_size(size) {
            tracing::debug!(%peer, %error, "cannot set the socket's send buffer");
        }
    }
}
