//! Accepting TCP connections and handing each to its own task.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::broker::Broker;
use crate::connection;

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
    /// Serves `listener` ([`Broker::serve`]) and runs [`Broker::run_housekeeping`] in
    /// background tasks until [`Broker::shutdown`].
    pub fn spawn(&self, listener: TcpListener) -> io::Result<Running> {
        let local_addr = listener.local_addr()?;
        let server = tokio::spawn({
            let broker = self.clone();
            async move { broker.serve(listener).await }
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
    /// (briefly) for the open connections to close.
    pub async fn serve(&self, listener: TcpListener) -> io::Result<()> {
        let mut shutdown = self.shutdown_signal();
        let mut connections = JoinSet::new();
        while !*shutdown.borrow_and_update() {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(connection::serve(self.clone(), stream, peer));
                    }
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
            while connections.try_join_next().is_some() {}
        }
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
