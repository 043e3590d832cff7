//! Accepting TCP connections and handing each to its own task, with the listener's
//! [`Hooks`]; keeping the parked ones.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::connection;
use crate::ingest::Hooks;
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
                    connections.spawn(connection::serve(
                        self.clone(),
                        Arc::clone(&hooks),
                        stream,
                        peer,
                        Arc::clone(&lot),
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
            self.resume_parked(&lot, &hooks, &mut resume, &mut connections);
            while connections.try_join_next().is_some() {}
        }
        // Parked connections are resumed to close: 5.0 clients are told why.
        lot.close(&mut resume);
        self.resume_parked(&lot, &hooks, &mut resume, &mut connections);
        drop(listener);
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
        Ok(())
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
    ) {
        for parked in resume.drain(..) {
            lot.forget(&parked);
            self.stats()
                .clients_parked
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            connections.spawn(connection::resume(
                self.clone(),
                Arc::clone(hooks),
                parked,
                Arc::clone(lot),
            ));
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
