//! How to connect: server, identity, protocol version and limits.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use fleetwire_mqtt_codec::ProtocolVersion;

use crate::Transport;

/// Everything [`crate::Connection::connect`] needs. Build it with struct update syntax
/// over [`Default`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The server's MQTT listener (for WebSocket, its HTTP listener).
    pub addr: SocketAddr,
    /// TCP, TLS, or WebSocket over either.
    pub transport: Transport,
    /// Local address to connect from (the port is chosen by the system). Several
    /// loopback source addresses get past the limit of ephemeral ports per address.
    pub local_addr: Option<IpAddr>,
    /// Client identifier; empty asks the server to assign one (5.0, or 3.1.1 with a clean
    /// session).
    pub client_id: String,
    /// Protocol version to speak.
    pub version: ProtocolVersion,
    /// Keep-alive interval announced in `CONNECT`; zero disables pings.
    pub keep_alive: Duration,
    /// Start a new session (3.1.1 clean session, 5.0 clean start).
    pub clean_start: bool,
    /// User name (for Fleetwire devices, the device id).
    pub username: Option<String>,
    /// Password (for Fleetwire devices, the device secret).
    pub password: Option<Bytes>,
    /// How long to wait for the TCP handshake (and the TLS handshake and WebSocket
    /// upgrade) and `CONNACK` together.
    pub connect_timeout: Duration,
    /// Largest packet accepted from the server, fixed header included.
    pub max_packet_size: usize,
    /// QoS 1/2 messages this client sends without waiting for acknowledgements. A 5.0
    /// server's smaller receive maximum wins.
    pub max_inflight: usize,
    /// Bytes asked of the socket per read at least; small for idle connections, large
    /// for subscribers of busy topics.
    pub read_chunk: usize,
    /// Set `TCP_NODELAY`, so small packets go out at once.
    pub is_nodelay: bool,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883),
            transport: Transport::Tcp,
            local_addr: None,
            client_id: String::new(),
            version: ProtocolVersion::V311,
            keep_alive: Duration::from_secs(60),
            clean_start: true,
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 1024 * 1024,
            max_inflight: 64,
            read_chunk: 16 * 1024,
            is_nodelay: true,
        }
    }
}
