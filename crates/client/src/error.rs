//! Why a connection failed.

use std::io;
use std::net::SocketAddr;

use fleetwire_mqtt_codec::{DecodeError, EncodeError, PacketType, ReasonCode};

/// Everything that can go wrong on a client connection. After any error except
/// [`ClientError::InflightWindowFull`] the connection should be dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The server address.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// The TLS handshake failed (the certificate is not trusted or does not carry the
    /// server name, the server does not speak TLS on that port, ...).
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The server address.
        addr: SocketAddr,
        /// What rustls said.
        source: io::Error,
    },
    /// The WebSocket upgrade failed (wrong path, no `mqtt` subprotocol, not HTTP).
    #[error("WebSocket upgrade at {url} failed: {source}")]
    WebSocket {
        /// The URL asked for.
        url: String,
        /// What the WebSocket library said.
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// The TLS options cannot be built (no certificate in the CA file, a server name
    /// that is neither a DNS name nor an IP address).
    #[error("invalid TLS options: {0}")]
    TlsConfig(String),
    /// The server did not answer `CONNECT` in time.
    #[error("no CONNACK from {addr} within {seconds} s")]
    ConnectTimeout {
        /// The server address.
        addr: SocketAddr,
        /// The configured timeout.
        seconds: u64,
    },
    /// The server answered `CONNECT` with a failure code.
    #[error("server refused the connection with reason code {:#04x}", .0.0)]
    Refused(ReasonCode),
    /// Reading or writing the socket failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// The server closed the socket.
    #[error("server closed the connection")]
    Closed,
    /// The server sent `DISCONNECT` (5.0) with this reason.
    #[error("server sent DISCONNECT with reason code {:#04x}", .0.0)]
    Disconnected(ReasonCode),
    /// The server sent bytes that are not a valid packet.
    #[error("server sent a malformed packet: {0}")]
    Malformed(#[from] DecodeError),
    /// A packet could not be encoded (a field too long for the wire form).
    #[error("cannot encode packet: {0}")]
    Encode(#[from] EncodeError),
    /// The server sent a packet a client never receives, or one out of order.
    #[error("server sent {got:?}, expected {expected}")]
    UnexpectedPacket {
        /// What arrived.
        got: PacketType,
        /// What was expected instead.
        expected: &'static str,
    },
    /// The server did not answer a ping within the keep-alive interval.
    #[error("server did not answer PINGREQ within the keep-alive interval")]
    KeepAliveTimeout,
    /// A QoS 1/2 message was offered while the in-flight window is full; wait for an
    /// acknowledgement (any [`crate::Event`]) and try again. The connection is fine.
    #[error("in-flight window of {0} messages is full")]
    InflightWindowFull(usize),
}
