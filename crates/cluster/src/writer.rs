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

/// JetStream messages not acknowledged yet, at most, for a writer whose publishers wait
/// for their writes (past it the task waits, and writes queue into batches).
pub(crate) const IN_FLIGHT: usize = 4096;

/// Failed tickets remembered (a publisher waits for its ticket right away).
const FAILURES_KEPT: usize = 4096;

/// Writes batched into one JetStream message, at most.
const BATCH_WRITES: usize = 512;

/// Bytes of one batch, at most (NATS's default maximum payload is 1 MiB).
const BATCH_BYTES: usize = 512 * 1024;

/// One write: a message for a subject of a stream.
pub(crate) struct Write {
    pub(crate) subject: String,
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) payload: Bytes,
    /// May share one JetStream message with the batchable writes queued right after
    /// it for the same subject (each as a `u32` little-endian length and its bytes:
    /// [`batched`] reads them back). Writes queue while earlier ones are in flight, so
    /// under load a batch holds many, and alone a write goes alone (in a batch of one).
    pub(crate) is_batchable: bool,
}

/// The writes of a batched JetStream message (`None`: it is cut short).
pub(crate) fn batched(payload: &Bytes) -> impl Iterator<Item = Option<Bytes>> + '_ {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset == payload.len() {
            return None;
        }
        let length = payload
            .get(offset..offset + 4)
            .and_then(|bytes| bytes.try_into().ok())
            .map(|bytes| u32::from_le_bytes(bytes) as usize);
        let write = length.and_then(|length| {
            let start = offset + 4;
            (start + length <= payload.len()).then(|| payload.slice(start..start + length))
        });
        offset = match (&write, length) {
            (Some(_), Some(length)) => offset + 4 + length,
            _ => payload.len(),
        };
        Some(write)
    })
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
    /// Writes that failed since the start.
    failures: u64,
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
    pub(crate) fn start(jetstream: Context, in_flight: usize) -> Writer {
        let (queue, writes) = mpsc::unbounded_channel();
        let (progress, watched) = watch::channel(Progress::default());
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_all(
            jetstream,
            writes,
            progress,
            Arc::clone(&pending),
            in_flight,
        ));
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

    /// The ticket of the last write queued (`None` before the first).
    pub(crate) fn last(&self) -> Option<PeerTicket> {
        let next = self.queue.lock().0;
        NonZeroU64::new(next - 1).map(PeerTicket)
    }

    /// Writes that failed since the writer started.
    pub(crate) fn failures(&self) -> u64 {
        self.progress.borrow().failures
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
    in_flight_max: usize,
) {
    type Acked = std::pin::Pin<Box<dyn Future<Output = (Numbers, Result<(), String>)> + Send>>;
    let mut in_flight: FuturesOrdered<Acked> = FuturesOrdered::new();
    let mut is_open = true;
    // A write taken from the queue that did not fit the batch before it.
    let mut held: Option<(u64, Write)> = None;
    loop {
        tokio::select! {
            write = writes.recv(), if held.is_none() && is_open && in_flight.len() < in_flight_max => {
                let Some(write) = write else {
                    is_open = false;
                    continue;
                };
                held = Some(write);
            }
            Some((numbers, result)) = in_flight.next() => {
                let count = (numbers.end() - numbers.start() + 1) as usize;
                pending.fetch_sub(count, Ordering::Relaxed);
                progress.send_modify(|progress| {
                    progress.settled = *numbers.end();
                    if let Err(error) = result {
                        tracing::warn!(%error, writes = count, "JetStream did not keep a message");
                        for number in numbers {
                            if progress.failed.len() == FAILURES_KEPT {
                                progress.failed.pop_front();
                            }
                            progress.failed.push_back(number);
                        }
                        progress.last_error = error;
                        progress.failures += count as u64;
                    }
                });
            }
            else => break,
        }
        // Sends what was taken, with the batchable writes queued behind it.
        while let Some((first, write)) = held.take() {
            if in_flight.len() >= in_flight_max {
                held = Some((first, write));
                break;
            }
            let (numbers, write) = if write.is_batchable {
                let (numbers, write, next) = batch(first, write, &mut writes);
                held = next;
                (numbers, write)
            } else {
                (first..=first, write)
            };
            let sent = match write.headers {
                Some(headers) => {
                    jetstream
                        .publish_with_headers(write.subject, headers, write.payload)
                        .await
                }
                None => jetstream.publish(write.subject, write.payload).await,
            };
            in_flight.push_back(match sent {
                Ok(ack) => Box::pin(acknowledged(numbers, ack)),
                Err(error) => {
                    let error = error.to_string();
                    Box::pin(async move { (numbers, Err(error)) })
                }
            });
        }
    }
}

/// Ticket numbers written together.
type Numbers = std::ops::RangeInclusive<u64>;

/// `write` (number `first`) and the batchable writes for its subject queued behind it,
/// as one write; and the first queued write that does not belong to it.
fn batch(
    first: u64,
    write: Write,
    writes: &mut mpsc::UnboundedReceiver<(u64, Write)>,
) -> (Numbers, Write, Option<(u64, Write)>) {
    let mut payload = Vec::with_capacity(4 + write.payload.len());
    let mut last = first;
    let push = |payload: &mut Vec<u8>, bytes: &Bytes| {
        payload.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
        payload.extend_from_slice(bytes);
    };
    push(&mut payload, &write.payload);
    let mut next = None;
    for _ in 1..BATCH_WRITES {
        let Ok((number, queued)) = writes.try_recv() else {
            break;
        };
        if !queued.is_batchable
            || queued.subject != write.subject
            || payload.len() + 4 + queued.payload.len() > BATCH_BYTES
        {
            next = Some((number, queued));
            break;
        }
        push(&mut payload, &queued.payload);
        last = number;
    }
    let batched = Write {
        payload: Bytes::from(payload),
        ..write
    };
    (first..=last, batched, next)
}

async fn acknowledged(numbers: Numbers, ack: PublishAckFuture) -> (Numbers, Result<(), String>) {
    (
        numbers,
        ack.await.map(drop).map_err(|error| error.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_its_writes_and_stops_at_a_cut() {
        let mut payload = Vec::new();
        for write in [&b"one"[..], b"", b"three"] {
            payload.extend_from_slice(&(write.len() as u32).to_le_bytes());
            payload.extend_from_slice(write);
        }
        let whole = Bytes::from(payload.clone());
        let writes: Vec<_> = batched(&whole).collect();
        assert_eq!(
            writes,
            [
                Some(Bytes::from_static(b"one")),
                Some(Bytes::new()),
                Some(Bytes::from_static(b"three"))
            ]
        );
        payload.truncate(payload.len() - 2);
        let cut = Bytes::from(payload);
        let writes: Vec<_> = batched(&cut).collect();
        assert_eq!(writes.last(), Some(&None));
        assert_eq!(writes.len(), 3);
    }

    #[tokio::test]
    async fn queued_writes_for_one_subject_share_a_batch_up_to_another_kind() {
        let (queue, mut writes) = mpsc::unbounded_channel();
        let write = |subject: &str, payload: &'static [u8], is_batchable| Write {
            subject: subject.to_owned(),
            headers: None,
            payload: Bytes::from_static(payload),
            is_batchable,
        };
        for (number, queued) in [
            (2, write("s", b"b", true)),
            (3, write("s", b"c", true)),
            (4, write("kv", b"d", false)),
            (5, write("s", b"e", true)),
        ] {
            queue.send((number, queued)).unwrap();
        }
        let (numbers, batch_write, next) = batch(1, write("s", b"a", true), &mut writes);
        assert_eq!(numbers, 1..=3);
        let inside: Vec<_> = batched(&batch_write.payload).flatten().collect();
        assert_eq!(inside, [&b"a"[..], b"b", b"c"]);
        assert_eq!(
            next.map(|(number, write)| (number, write.subject)),
            Some((4, "kv".to_owned()))
        );
    }
}
