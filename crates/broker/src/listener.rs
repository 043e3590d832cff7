//! Accepting TCP connections and handing each to its own task, with the listener's
//! [`Hooks`]; keeping the parked ones. Connections that arrive another way (TLS, MQTT
//! over WebSocket: a front-end outside the broker terminates them) come in through a
//! [`Streams`] listener instead.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::auth::PeerCertificate;
use crate::broker::Broker;
use crate::connection::{self, Duplex, Socket};
use crate::ingest::Hooks;
use crate::limits::ConnectionPermit;
use crate::park::{Lot, Parked};

/// How long shutdown waits for connections to close before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A broker serving one listener, with its housekeeping, in tasks of the current tokio
/// runtime; made by [`Broker::spawn`].
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    server: JoinHandle<io::Result<()>>,
    housekeeping: JoinHandle<()>,
}

impl Running {
    /// The address the listener is bound to (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the listener and housekeeping have stopped, after [`Broker::shutdown`].
    pub async fn stopped(self) -> io::Result<()> {
        let served = self.server.await.map_err(io::Error::other)?;
        self.housekeeping.await.map_err(io::Error::other)?;
        served
    }
}

impl Broker {
    /// Serves `listener` with `hooks` ([`Broker::serve`]) and runs
    /// [`Broker::run_housekeeping`] in background tasks until [`Broker::shutdown`].
    pub fn spawn(&self, listener: TcpListener, hooks: Hooks) -> io::Result<Running> {
        let local_addr = listener.local_addr()?;
        let server = tokio::spawn({
            let broker = self.clone();
            async move { broker.serve(listener, hooks).await }
        });
        let housekeeping = tokio::spawn({
            let broker = self.clone();
            async move { broker.run_housekeeping().await }
        });
        Ok(Running {
            local_addr,
            server,
            housekeeping,
        })
    }

    /// Accepts MQTT connections on `listener` until [`Broker::shutdown`], then waits
    /// (briefly) for the open connections to close. Every connection calls into `hooks`:
    /// their authenticator admits its client and hears of its user's presence, their
    /// ingest collects its messages.
    ///
    /// This task also keeps the listener's parked connections ([`crate::park`]): it
    /// answers their pings, resumes them when they have work, and closes them when their
    /// keep-alive expires. Every connection task, new or resumed, runs in its task set.
    pub async fn serve(&self, listener: TcpListener, hooks: Hooks) -> io::Result<()> {
        let hooks = Arc::new(hooks);
        let (lot, mut poller) = Lot::new()?;
        let _closing = CloseOnDrop(Arc::clone(&lot));
        let mut shutdown = self.shutdown_signal();
        let mut connections = JoinSet::new();
        let mut resume: Vec<Parked> = Vec::new();
        // This task's waker, for the first steps of resumed connections.
        let waker = std::future::poll_fn(|context| Poll::Ready(context.waker().clone())).await;
        // The earliest keep-alive deadline among parked connections.
        let keep_alive = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(keep_alive);
        let mut is_keep_alive_armed = false;
        while !*shutdown.borrow_and_update() {
            let event = tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => Event::Accepted(accepted),
                ready = poller.ready() => Event::Readable(ready),
                () = lot.wanted() => Event::Wanted,
                () = &mut keep_alive, if is_keep_alive_armed => Event::Wanted,
            };
            match event {
                Event::Accepted(Ok((stream, peer))) => {
                    // Over a limit: closed at once, before any byte is read.
                    let Some(permit) = self.admit_connection(peer.ip()) else {
                        continue;
                    };
                    let socket = Socket::Tcp {
                        stream,
                        lot: Arc::clone(&lot),
                    };
                    connections.spawn(connection::serve(
                        self.clone(),
                        Arc::clone(&hooks),
                        socket,
                        peer,
                        None,
                        permit,
                    ));
                }
                Event::Accepted(Err(error)) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Event::Readable(Ok(())) => lot.readable(&poller, self.stats(), &mut resume),
                Event::Readable(Err(error)) => {
                    tracing::warn!(%error, "polling parked connections failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Event::Wanted => {}
            }
            let next = lot.due(Instant::now(), &mut resume);
            is_keep_alive_armed = next.is_some();
            if let Some(next) = next {
                if next != keep_alive.deadline() {
                    keep_alive.as_mut().reset(next);
                }
            }
            self.resume_parked(&lot, &hooks, &mut resume, &mut connections, &waker);
            while connections.try_join_next().is_some() {}
        }
        // Parked connections are resumed to close: 5.0 clients are told why.
        lot.close(&mut resume);
        self.resume_parked(&lot, &hooks, &mut resume, &mut connections, &waker);
        drop(listener);
        close_all(connections).await;
        Ok(())
    }

    /// Starts a listener for connections that a front-end outside the broker accepted
    /// and terminated (TLS, MQTT over WebSocket): each [`Incoming`] handed to the
    /// returned [`Streams`] is served like a TCP connection, with `hooks`, until
    /// [`Broker::shutdown`]. Such connections never park (see [`Duplex`]).
    pub fn spawn_streams(&self, hooks: Hooks) -> Streams {
        let (sender, mut incoming) = mpsc::unbounded_channel::<Incoming>();
        let broker = self.clone();
        let task = tokio::spawn(async move {
            let hooks = Arc::new(hooks);
            let mut shutdown = broker.shutdown_signal();
            let mut connections = JoinSet::new();
            while !*shutdown.borrow_and_update() {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    next = incoming.recv() => {
                        let Some(Incoming { stream, peer, certificate, permit }) = next else {
                            break;
                        };
                        connections.spawn(connection::serve(
                            broker.clone(),
                            Arc::clone(&hooks),
                            Socket::Stream(stream),
                            peer,
                            certificate.map(Box::new),
                            permit,
                        ));
                    }
                }
                while connections.try_join_next().is_some() {}
            }
            // Connections handed over from now on are dropped (closed) unserved.
            incoming.close();
            close_all(connections).await;
        });
        Streams {
            sender: StreamSender(sender),
            task,
        }
    }
}

/// Waits (briefly) for the connections of a stopping listener to close, then drops the
/// rest.
async fn close_all(mut connections: JoinSet<()>) {
    let open = connections.len();
    if open > 0 {
        tracing::info!(connections = open, "waiting for connections to close");
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "closing connections that did not finish in time"
        );
        connections.shutdown().await;
    }
}

/// A connection accepted and terminated outside the broker, handed to a [`Streams`]
/// listener.
pub struct Incoming {
    /// The client's byte stream (decrypted, unframed): MQTT packets flow over it.
    pub stream: Box<dyn Duplex>,
    /// Where the connection comes from.
    pub peer: SocketAddr,
    /// The TLS client certificate the client presented and proved, already verified.
    pub certificate: Option<PeerCertificate>,
    /// Its place within the connection limits, from [`Broker::admit_connection`] (asked
    /// before any handshake, so that a refused connection costs nothing).
    pub permit: ConnectionPermit,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("peer", &self.peer)
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

/// A listener for connections accepted elsewhere; made by [`Broker::spawn_streams`].
#[derive(Debug)]
pub struct Streams {
    sender: StreamSender,
    task: JoinHandle<()>,
}

impl Streams {
    /// Where front-ends hand connections over; clone it for each.
    pub fn sender(&self) -> StreamSender {
        self.sender.clone()
    }

    /// Waits until the listener has stopped and its connections have closed, after
    /// [`Broker::shutdown`].
    pub async fn stopped(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)
    }
}

/// Hands connections to a [`Streams`] listener. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StreamSender(mpsc::UnboundedSender<Incoming>);

impl StreamSender {
    /// Hands a connection over to be served; `false` (and the connection closed) when
    /// the listener has stopped.
    pub fn serve(&self, incoming: Incoming) -> bool {
        self.0.send(incoming).is_ok()
    }
}

impl Broker {
    /// Starts the tasks of connections taken out of the lot.
    fn resume_parked(
        &self,
        lot: &Arc<Lot>,
        hooks: &Arc<Hooks>,
        resume: &mut Vec<Parked>,
        connections: &mut JoinSet<()>,
        waker: &Waker,
    ) {
        for parked in resume.drain(..) {
            lot.forget(&parked);
            self.stats()
                .clients_parked
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let mut resumed = Box::pin(connection::resume(
                self.clone(),
                Arc::clone(hooks),
                parked,
                Arc::clone(lot),
            ));
            // Its first steps run here, in the listener's task: the packet that woke it
            // is handled now, not after the tasks the runtime already queued (another
            // client's PUBLISH read in the same wake-up must not overtake this one's
            // SUBSCRIBE). A connection future accepts a new waker on every poll, so it
            // moves to a task of its own afterwards. A panic ends only this connection.
            let is_done = {
                let mut context = Context::from_waker(waker);
                panic::catch_unwind(AssertUnwindSafe(|| resumed.as_mut().poll(&mut context)))
                    .map_or(true, |poll| poll.is_ready())
            };
            if !is_done {
                connections.spawn(resumed);
            }
        }
    }
}

/// Empties the lot if the listener's task ends without a shutdown (aborted), so that
/// parked sockets close instead of being kept open by the lot and their sessions.
struct CloseOnDrop(Arc<Lot>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let mut parked = Vec::new();
        self.0.close(&mut parked);
    }
}

/// What woke the listener.
enum Event {
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    Readable(io::Result<()>),
    /// Connections to resume, or keep-alive deadlines due.
    Wanted,
}
