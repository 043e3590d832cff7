//! How MQTT's bytes travel: plain TCP, TLS over TCP, or binary WebSocket frames over
//! either. [`Transport`] says which (part of [`crate::ConnectOptions`]); [`Stream`] is
//! the open connection, one byte stream whatever the transport, which the connection
//! reads and writes through one `&mut`.
//!
//! MQTT over WebSocket carries MQTT's bytes in binary frames with no alignment: a packet
//! may span frames and a frame may hold several (MQTT 5.0 §6). So the WebSocket is
//! turned into a byte stream ([`WebSocketBytes`]): reading yields the payloads of binary
//! frames one after the other; each write is sent as one binary frame, and the
//! connection writes its whole batch of packets at once, so a burst costs one frame.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream as _};
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::ClientError;

/// The WebSocket subprotocol of MQTT (3.1.1 and 5.0).
const MQTT_SUBPROTOCOL: &str = "mqtt";

/// How a connection reaches the server.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    /// MQTT straight over TCP.
    #[default]
    Tcp,
    /// MQTT over TLS.
    Tls(TlsOptions),
    /// MQTT over WebSocket (`ws://`), or over secure WebSocket (`wss://`) when
    /// [`WebSocketOptions::tls`] is set.
    WebSocket(WebSocketOptions),
}

impl Transport {
    /// A short name for reports: `tcp`, `tls`, `ws` or `wss`.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls(_) => "tls",
            Transport::WebSocket(WebSocketOptions { tls: None, .. }) => "ws",
            Transport::WebSocket(WebSocketOptions { tls: Some(_), .. }) => "wss",
        }
    }
}

/// A TLS client configuration and the name the server's certificate must carry. Clone
/// it for every connection: the configuration is shared, not copied.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The rustls configuration (trusted roots, versions, resumption).
    pub config: Arc<ClientConfig>,
    /// The name sent as SNI and checked against the certificate: a DNS name, or an IP
    /// address checked against the certificate's IP addresses (no SNI is sent then).
    pub server_name: ServerName<'static>,
}

impl TlsOptions {
    /// Trusts the certificates of the PEM `ca` (and nothing else: no system or webpki
    /// roots) and expects `server_name` on the server's certificate.
    ///
    /// Session resumption is off, so every connection makes a full handshake, as a
    /// fleet's devices connecting for the first time do; a load generator that resumed
    /// would measure the broker's session cache instead, which differs between brokers
    /// (rustls keeps 256 sessions, OpenSSL issues stateless tickets).
    pub fn from_ca_pem(ca: &[u8], server_name: &str) -> Result<TlsOptions, ClientError> {
        let invalid = |reason: String| ClientError::TlsConfig(reason);
        let mut roots = rustls::RootCertStore::empty();
        let mut found = 0;
        for certificate in CertificateDer::pem_slice_iter(ca) {
            let certificate =
                certificate.map_err(|error| invalid(format!("CA file is not PEM: {error}")))?;
            roots
                .add(certificate)
                .map_err(|error| invalid(format!("CA certificate not usable: {error}")))?;
            found += 1;
        }
        if found == 0 {
            return Err(invalid(
                "expected at least one CERTIFICATE section in the CA file, found none".to_owned(),
            ));
        }
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            invalid(format!(
                "expected a DNS name or an IP address as the server name, got {server_name:?}"
            ))
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid(format!("TLS versions: {error}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        Ok(TlsOptions {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// Where MQTT over WebSocket is served, and whether over TLS.
#[derive(Debug, Clone)]
pub struct WebSocketOptions {
    /// The HTTP path of the upgrade, such as `/mqtt`.
    pub path: String,
    /// TLS under the WebSocket (`wss://`), or none (`ws://`).
    pub tls: Option<TlsOptions>,
}

impl Default for WebSocketOptions {
    fn default() -> WebSocketOptions {
        WebSocketOptions {
            path: "/mqtt".to_owned(),
            tls: None,
        }
    }
}

/// An open connection to the server, whatever the transport.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: rustls' state is large next to a socket).
    Tls(Box<TlsStream<TcpStream>>),
    /// WebSocket over TCP or TLS.
    WebSocket(Box<WebSocketBytes>),
}

impl Stream {
    /// Opens the transport over an established TCP connection to `addr`: the TLS
    /// handshake, the WebSocket upgrade, or nothing.
    pub(crate) async fn open(
        tcp: TcpStream,
        addr: SocketAddr,
        transport: &Transport,
        read_chunk: usize,
    ) -> Result<Stream, ClientError> {
        match transport {
            Transport::Tcp => Ok(Stream::Tcp(tcp)),
            Transport::Tls(tls) => Ok(Stream::Tls(Box::new(handshake(tcp, addr, tls).await?))),
            Transport::WebSocket(websocket) => {
                let (scheme, inner) = match &websocket.tls {
                    Some(tls) => (
                        "wss",
                        Stream::Tls(Box::new(handshake(tcp, addr, tls).await?)),
                    ),
                    None => ("ws", Stream::Tcp(tcp)),
                };
                let url = format!("{scheme}://{addr}{}", websocket.path);
                let failed = |source: tungstenite::Error| ClientError::WebSocket {
                    url: url.clone(),
                    source: Box::new(source),
                };
                let mut request = url.as_str().into_client_request().map_err(failed)?;
                request.headers_mut().insert(
                    SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(MQTT_SUBPROTOCOL),
                );
                // Frames go out as they are written (the connection batches already),
                // and an idle connection keeps only a small read buffer.
                let config = WebSocketConfig::default()
                    .read_buffer_size(read_chunk)
                    .write_buffer_size(0);
                let (socket, _response) =
                    tokio_tungstenite::client_async_with_config(request, inner, Some(config))
                        .await
                        .map_err(failed)?;
                Ok(Stream::WebSocket(Box::new(WebSocketBytes {
                    socket,
                    unread: Bytes::new(),
                })))
            }
        }
    }

    /// The TCP socket underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
            Stream::WebSocket(websocket) => websocket.socket.get_ref().tcp(),
        }
    }

    /// Whether a write may leave bytes inside the transport (TLS records, WebSocket
    /// frames) that only a flush sends; a TCP write is on its way once accepted.
    pub(crate) fn is_buffered(&self) -> bool {
        !matches!(self, Stream::Tcp(_))
    }
}

async fn handshake(
    tcp: TcpStream,
    addr: SocketAddr,
    tls: &TlsOptions,
) -> Result<TlsStream<TcpStream>, ClientError> {
    TlsConnector::from(Arc::clone(&tls.config))
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(|source| ClientError::Tls { addr, source })
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Stream::WebSocket(websocket) => Pin::new(websocket.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Stream::WebSocket(websocket) => Pin::new(websocket.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Stream::WebSocket(websocket) => Pin::new(websocket.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Stream::WebSocket(websocket) => Pin::new(websocket.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A client WebSocket as a byte stream of MQTT (see the module's notes).
#[derive(Debug)]
pub(crate) struct WebSocketBytes {
    socket: WebSocketStream<Stream>,
    /// What is left of the binary frame being read.
    unread: Bytes,
}

fn websocket_error(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(error) => error,
        other => io::Error::other(other),
    }
}

impl AsyncRead for WebSocketBytes {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            match ready!(Pin::new(&mut this.socket).poll_next(cx)) {
                Some(Ok(Message::Binary(payload))) => this.unread = payload,
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "expected binary WebSocket frames, got a text frame",
                    )));
                }
                // A close frame or the end of the socket: end of stream.
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(tungstenite::Error::ConnectionClosed)) => return Poll::Ready(Ok(())),
                Some(Err(error)) => return Poll::Ready(Err(websocket_error(error))),
            }
        }
        let take = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..take]);
        this.unread.advance(take);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WebSocketBytes {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.socket).poll_ready(cx)).map_err(websocket_error)?;
        Pin::new(&mut this.socket)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(websocket_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_flush(cx)
            .map_err(websocket_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_close(cx)
            .map_err(websocket_error)
    }
}
