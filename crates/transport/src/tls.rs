//! The TLS listeners: MQTT over TLS ([`serve_mqtt`]), whose connections are handed to the
//! broker as streams, and HTTPS ([`HttpsListener`]), an accept loop for axum.
//!
//! Each accepted socket's handshake runs in a task of its own, bounded by the handshake
//! timeout (the broker's connect timeout), so a client that connects and says nothing,
//! or a plain MQTT client on the TLS port, holds one small task for that long and never
//! reaches the broker. Every handshake takes the [`TlsSource`]'s configuration of the
//! moment: a reload changes what new handshakes see and leaves established connections
//! alone.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleetwire_broker::{Broker, Incoming, PeerCertificate, StreamSender};
use fleetwire_tls::{ClientCertificate, TlsSource};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::websocket::Peer;

/// The ALPN protocol HTTPS offers (the server speaks HTTP/1.1).
const HTTP_ALPN: &[u8] = b"http/1.1";

/// Handshakes of the TLS listeners, counted for `/metrics`.
#[derive(Debug, Default)]
pub struct HandshakeStats {
    completed: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
}

/// A reading of [`HandshakeStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeCounts {
    /// Handshakes that completed.
    pub completed: u64,
    /// Handshakes that failed: not TLS, an old protocol version, a client certificate
    /// the client CA does not vouch for or that expired.
    pub failed: u64,
    /// Clients that did not finish their handshake in time.
    pub timed_out: u64,
}

impl HandshakeStats {
    /// The counts so far.
    pub fn counts(&self) -> HandshakeCounts {
        HandshakeCounts {
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// What the TLS listeners share: the configuration source, how long a handshake may
/// take, and the counters.
#[derive(Debug, Clone)]
pub struct TlsFront {
    /// The server configuration of the moment.
    pub source: Arc<TlsSource>,
    /// How long a client has to complete its handshake.
    pub handshake_timeout: Duration,
    /// Counted handshakes, both listeners together.
    pub stats: Arc<HandshakeStats>,
}

impl TlsFront {
    /// Completes the handshake of an accepted socket; `None` (logged, counted) if it
    /// fails or times out.
    async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        alpn: &[&[u8]],
    ) -> Option<(TlsStream<TcpStream>, Option<PeerCertificate>)> {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot disable Nagle's algorithm");
        }
        let config = if alpn.is_empty() {
            self.source.current()
        } else {
            self.source.current_with_alpn(alpn)
        };
        let acceptor = TlsAcceptor::from(config);
        match fleetwire_tls::accept(&acceptor, stream, self.handshake_timeout).await {
            Ok((stream, certificate)) => {
                self.stats.completed.fetch_add(1, Ordering::Relaxed);
                Some((stream, certificate.map(peer_certificate)))
            }
            Err(error) => {
                let counter = if matches!(error, fleetwire_tls::Error::HandshakeTimeout { .. }) {
                    &self.stats.timed_out
                } else {
                    &self.stats.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, error = &error as &dyn std::error::Error, "TLS handshake failed");
                None
            }
        }
    }
}

fn peer_certificate(certificate: ClientCertificate) -> PeerCertificate {
    PeerCertificate {
        common_name: certificate.common_name,
        fingerprint: certificate.fingerprint.0,
    }
}

/// Accepts MQTT over TLS on `listener` until the broker's shutdown begins, handing every
/// connection whose handshake completes to the broker through `streams`, with the
/// client certificate it proved. A connection over the broker's connection limits is
/// closed at once, before its handshake.
pub async fn serve_mqtt(
    listener: TcpListener,
    front: TlsFront,
    broker: Broker,
    streams: StreamSender,
) {
    let stopping = broker.shutdown_requested();
    tokio::pin!(stopping);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stopping => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accepting a TLS connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(permit) = broker.admit_connection(peer.ip()) else {
            continue;
        };
        let front = front.clone();
        let streams = streams.clone();
        tokio::spawn(async move {
            let Some((stream, certificate)) = front.handshake(stream, peer, &[]).await else {
                return;
            };
            streams.serve(Incoming {
                stream: Box::new(stream),
                peer,
                certificate,
                permit,
            });
        });
    }
}

/// An HTTPS listener for `axum::serve`: accepts TCP, completes each handshake in a task
/// of its own, and yields the finished TLS streams with the client's [`Peer`] (address
/// and certificate). Serve it with `into_make_service_with_connect_info::<Peer>()` (after
/// `tap_io`) so that MQTT over secure WebSocket knows the client's certificate.
#[derive(Debug)]
pub struct HttpsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    accepting: JoinHandle<()>,
}

/// Handshakes finished but not yet taken by the HTTP server; more wait in their tasks.
const READY_BACKLOG: usize = 256;

impl HttpsListener {
    /// Starts accepting on `listener` with `front`'s configuration (ALPN `http/1.1`).
    pub fn new(listener: TcpListener, front: TlsFront) -> io::Result<HttpsListener> {
        let local_addr = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_BACKLOG);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, addr) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accepting an HTTPS connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if sender.is_closed() {
                    return;
                }
                let front = front.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let Some((stream, certificate)) =
                        front.handshake(stream, addr, &[HTTP_ALPN]).await
                    else {
                        return;
                    };
                    // The server stopped: the connection closes.
                    let _ = sender.send((stream, Peer { addr, certificate })).await;
                });
            }
        });
        Ok(HttpsListener {
            local_addr,
            ready,
            accepting,
        })
    }
}

impl Drop for HttpsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accepting task ended (cannot happen while this lives): nothing more
            // will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local_addr,
            certificate: None,
        })
    }
}
