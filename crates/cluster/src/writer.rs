//! Writes to JetStream in the order they are asked for, many in flight at once, and
//! tells which are kept: the broker's publishers wait for a [`PeerTicket`] before they
//! acknowledge a message.
//!
//! One task sends the writes in ticket order (JetStream keeps a stream's messages in
//! the order they arrive on one connection) and collects JetStream's acknowledgements
//! in that order; [`Writer::durable`] resolves once every write up to a ticket is
//! settled, and fails if that ticket's own write failed (a write that failed is not
//! tried again: a later write to the same key may already be kept, and its publisher
//! is not acknowledged, so it sends the message again).

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::PublishAckFuture;
use bytes::Bytes;
use fleetwire_broker::{PeerTicket, PeersError};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

/// Writes JetStream has not acknowledged yet, at most: past it the task waits.
const IN_FLIGHT: usize = 4096;

/// Failed tickets remembered (a publisher waits for its ticket right away).
const FAILURES_KEPT: usize = 4096;

/// One write: a message for a subject of a stream.
pub(crate) struct Write {
    pub(crate) subject: String,
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) payload: Bytes,
}

/// How far the writes got.
#[derive(Debug, Default)]
struct Progress {
    /// Every write up to this ticket number is settled (kept or failed).
    settled: u64,
    /// Ticket numbers whose writes failed, the latest [`FAILURES_KEPT`].
    failed: VecDeque<u64>,
    /// Why the latest write failed.
    last_error: String,
}

/// Ordered writes to JetStream: see the module's text.
pub(crate) struct Writer {
    /// The next ticket number, and the queue: taken together so that numbers are
    /// queued in order.
    queue: Mutex<(u64, mpsc::UnboundedSender<(u64, Write)>)>,
    /// Writes queued and not settled.
    pending: Arc<AtomicUsize>,
    progress: watch::Receiver<Progress>,
    /// Writes not queued because too many were pending (see [`Writer::try_write`]).
    dropped: AtomicU64,
}

impl Writer {
    /// Starts the writing task on the current Tokio runtime.
    pub(crate) fn start(jetstream: Context) -> Writer {
        let (queue, writes) = mpsc::unbounded_channel();
        let (progress, watched) = watch::channel(Progress::default());
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_all(jetstream, writes, progress, Arc::clone(&pending)));
        Writer {
            queue: Mutex::new((1, queue)),
            pending,
            progress: watched,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `write`; its publisher waits for the ticket. Never refused: what bounds
    /// these writes is the publishers' own windows of unacknowledged messages.
    pub(crate) fn write(&self, write: Write) -> PeerTicket {
        let mut queue = self.queue.lock();
        let number = queue.0;
        queue.0 += 1;
        self.pending.fetch_add(1, Ordering::Relaxed);
        if queue.1.send((number, write)).is_err() {
            // The task ended (the runtime is shutting down): the ticket never settles,
            // and nothing is acknowledged any more.
            tracing::debug!("cluster writer gone");
        }
        PeerTicket(NonZeroU64::MIN.saturating_add(number - 1))
    }

    /// Queues `write` if fewer than `limit` writes are pending, for a message nobody
    /// waits for (QoS 0); `false` if it was dropped (counted).
    pub(crate) fn try_write(&self, write: Write, limit: usize) -> bool {
        if self.pending.load(Ordering::Relaxed) >= limit {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.write(write);
        true
    }

    /// Writes dropped by [`Writer::try_write`].
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Resolves once every write up to `ticket` is settled; fails if `ticket`'s write
    /// failed.
    pub(crate) fn durable(
        &self,
        ticket: PeerTicket,
    ) -> impl Future<Output = Result<(), PeersError>> + Send + 'static {
        let mut progress = self.progress.clone();
        let number = ticket.0.get();
        async move {
            let settled = progress
                .wait_for(|progress| progress.settled >= number)
                .await
                .map_err(|_| PeersError("the cluster's writer stopped".to_owned()))?;
            if settled.failed.contains(&number) {
                return Err(PeersError(settled.last_error.clone()));
            }
            Ok(())
        }
    }
}

/// The writing task.
async fn write_all(
    jetstream: Context,
    mut writes: mpsc::UnboundedReceiver<(u64, Write)>,
    progress: watch::Sender<Progress>,
    pending: Arc<AtomicUsize>,
) {
    type Acked = std::pin::Pin<Box<dyn Future<Output = (u64, Result<(), String>)> + Send>>;
    let mut in_flight: FuturesOrdered<Acked> = FuturesOrdered::new();
    let mut is_open = true;
    loop {
        tokio::select! {
            write = writes.recv(), if is_open && in_flight.len() < IN_FLIGHT => {
                let Some((number, write)) = write else {
                    is_open = false;
                    continue;
                };
                let sent = match write.headers {
                    Some(headers) => jetstream
                        .publish_with_headers(write.subject, headers, write.payload)
                        .await,
                    None => jetstream.publish(write.subject, write.payload).await,
                };
                in_flight.push_back(match sent {
                    Ok(ack) => Box::pin(acknowledged(number, ack)),
                    Err(error) => {
                        let error = error.to_string();
                        Box::pin(async move { (number, Err(error)) })
                    }
                });
            }
            Some((number, result)) = in_flight.next() => {
                pending.fetch_sub(1, Ordering::Relaxed);
                progress.send_modify(|progress| {
                    progress.settled = number;
                    if let Err(error) = result {
                        tracing::warn!(%error, "JetStream did not keep a message");
                        if progress.failed.len() == FAILURES_KEPT {
                            progress.failed.pop_front();
                        }
                        progress.failed.push_back(number);
                        progress.last_error = error;
                    }
                });
            }
            else => break,
        }
    }
}

async fn acknowledged(number: u64, ack: PublishAckFuture) -> (u64, Result<(), String>) {
    (
        number,
        ack.await.map(drop).map_err(|error| error.to_string()),
    )
}
