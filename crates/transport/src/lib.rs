//! Fleetwire's network front-ends: the ways MQTT reaches the broker other than its own
//! plain TCP listener, and HTTPS.
//!
//! - [`websocket`]: MQTT over WebSocket at `/mqtt` on the HTTP listeners.
//! - [`tls`]: MQTT over TLS, and the HTTPS listener (API, dashboard, stream, and MQTT
//!   over secure WebSocket), with the configuration of [`fleetwire_tls::TlsSource`].
//!
//! Each front-end terminates its protocol (TLS, WebSocket framing) and hands the broker a
//! plain byte stream through a [`fleetwire_broker::StreamSender`], so every transport
//! goes through the same broker code as TCP.

pub mod tls;
pub mod websocket;

pub use tls::{HandshakeCounts, HandshakeStats, HttpsListener, TlsFront, serve_mqtt};
pub use websocket::{Peer, WebSocketStream};
