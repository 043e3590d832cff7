//! MQTT over WebSocket: the `/mqtt` route (subprotocol `mqtt`) of the HTTP listeners,
//! and the adapter that turns a WebSocket into the byte stream the broker reads.
//!
//! MQTT over WebSocket carries MQTT's bytes in binary frames with no alignment: a packet
//! may span frames and a frame may hold several packets (MQTT 5.0 §6). So the adapter is
//! a plain byte stream ([`WebSocketStream`]): reading yields the payloads of binary
//! frames one after the other, writing sends each buffer handed to it as one frame. The
//! broker's writer hands it a whole batch of packets per write, so a burst costs one
//! frame. A text frame is a protocol error (§6: the connection is closed).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{Buf, Bytes};
use fleetwire_broker::{Broker, Incoming, PeerCertificate, StreamSender};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The path MQTT over WebSocket is served at.
pub const MQTT_PATH: &str = "/mqtt";

/// The subprotocols accepted, in order of preference: `mqtt` (3.1.1 and 5.0), and
/// `mqttv3.1`, which some older clients still ask for.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// What reading a WebSocket asks for at a time. Small: an idle connection keeps it.
const READ_BUFFER: usize = 4 * 1024;

/// Where an HTTP connection comes from, as the listeners record it: the HTTPS listener
/// adds the client certificate the TLS handshake verified. The `/mqtt` route also
/// understands a plain `ConnectInfo<SocketAddr>`.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The TLS client certificate, verified, if the client presented one.
    pub certificate: Option<PeerCertificate>,
}

struct Front {
    broker: Broker,
    streams: StreamSender,
    max_message: usize,
}

/// The `/mqtt` route: upgrades to a WebSocket (subprotocol `mqtt`) and hands the
/// connection to `broker` through `streams`. Messages larger than `max_message` bytes
/// close the connection (give the broker's maximum packet size plus a little). A client
/// over the broker's connection limits gets `503 Service Unavailable` instead of the
/// upgrade.
pub fn router(broker: Broker, streams: StreamSender, max_message: usize) -> Router {
    Router::new()
        .route(MQTT_PATH, get(upgrade))
        .with_state(Arc::new(Front {
            broker,
            streams,
            max_message,
        }))
}

async fn upgrade(State(front): State<Arc<Front>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    if !offers_mqtt(&parts.headers) {
        // MQTT-6.0.0-3: the client must offer `mqtt`; anything else is not an MQTT client.
        return (
            StatusCode::BAD_REQUEST,
            "MQTT over WebSocket needs the subprotocol mqtt (Sec-WebSocket-Protocol: mqtt)\n",
        )
            .into_response();
    }
    let peer = if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<Peer>>() {
        peer.clone()
    } else if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Peer {
            addr: *addr,
            certificate: None,
        }
    } else {
        Peer {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            certificate: None,
        }
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(permit) = front.broker.admit_connection(peer.addr.ip()) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many MQTT connections from this address or in total\n",
        )
            .into_response();
    };
    let front = Arc::clone(&front);
    upgrade
        .protocols(SUBPROTOCOLS)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(front.max_message)
        .max_frame_size(front.max_message)
        .on_upgrade(move |socket| async move {
            let Peer { addr, certificate } = peer;
            let handed = front.streams.serve(Incoming {
                stream: Box::new(WebSocketStream::new(socket)),
                peer: addr,
                certificate,
                permit,
            });
            if !handed {
                tracing::debug!(peer = %addr, "MQTT over WebSocket refused: the broker is stopping");
            }
        })
}

/// Whether the upgrade request offers one of [`SUBPROTOCOLS`].
fn offers_mqtt(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|offered| SUBPROTOCOLS.contains(&offered.trim()))
}

/// A WebSocket as a byte stream of MQTT (see the module's notes).
pub struct WebSocketStream {
    socket: WebSocket,
    /// What is left of the binary frame being read.
    unread: Bytes,
}

impl WebSocketStream {
    /// The byte stream of `socket`.
    pub fn new(socket: WebSocket) -> WebSocketStream {
        WebSocketStream {
            socket,
            unread: Bytes::new(),
        }
    }
}

impl AsyncRead for WebSocketStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            match ready!(Pin::new(&mut this.socket).poll_next(cx)) {
                // The end of the stream, or the peer's close frame: end of file.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(bytes))) => this.unread = bytes,
                // Answered by the WebSocket layer itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket takes binary frames only, got a text frame",
                    )));
                }
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error))),
            }
        }
        let count = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..count]);
        this.unread.advance(count);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WebSocketStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let socket = &mut self.get_mut().socket;
        ready!(Pin::new(&mut *socket).poll_ready(cx)).map_err(io::Error::other)?;
        Pin::new(socket)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}
