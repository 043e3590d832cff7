//! Presence (online, last seen) and the last ingest error of each device: recorded without
//! waiting, written in batches by one background task.
//!
//! Who owns what: `PresenceQueue::state` (a mutex) holds the latest unwritten presence and
//! ingest error of each device, so a device that reconnects ten times, or sends a thousand
//! bad payloads, between two writes costs one row update, and memory is bounded by the
//! number of devices. The writer task owns the database side: it wakes on `wake`, lets a
//! batch gather for up to the flush interval (less when someone waits in `flush` or the
//! batch is large), writes it in one transaction and publishes, through the `written`
//! watch channel, the sequence number of the last update it wrote. `flush` waits on that
//! channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sqlx::AnyPool;
use tokio::sync::{Notify, watch};

use crate::error::database;
use crate::{Error, Result};
use fleetwire_model::{DeviceId, IngestErrorRecord};
use fleetwire_time::TimestampMs;

/// A batch this large is written without waiting for the flush interval.
const LARGE_BATCH: usize = 1000;
/// Rows per transaction when a backlog has built up.
const ROWS_PER_TRANSACTION: usize = 1000;
/// Pause after a failed write before retrying, so a database outage is not a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

pub(crate) struct PresenceQueue {
    state: Mutex<State>,
    wake: Notify,
    written: watch::Sender<Written>,
}

#[derive(Default)]
struct State {
    /// Latest unwritten updates per device.
    pending: HashMap<DeviceId, Pending>,
    /// Number of updates recorded so far: the sequence number of the latest one.
    recorded: u64,
    /// Someone waits in `flush`: write now rather than at the end of the interval.
    is_flush_requested: bool,
    /// The registry is closing: write what is left, then stop.
    is_closed: bool,
}

/// What is waiting to be written for one device; at least one of the two is set.
#[derive(Default)]
struct Pending {
    presence: Option<Presence>,
    ingest_error: Option<IngestErrorRecord>,
}

impl Pending {
    /// Keeps what is newer here, takes the rest from `older` (a batch that failed).
    fn or_older(&mut self, older: Pending) {
        self.presence = self.presence.or(older.presence);
        if self.ingest_error.is_none() {
            self.ingest_error = older.ingest_error;
        }
    }
}

#[derive(Clone, Copy)]
struct Presence {
    online: bool,
    at: TimestampMs,
}

/// What the writer has done.
#[derive(Clone, Default)]
struct Written {
    /// Every update up to this sequence number has been written, or attempted.
    sequence: u64,
    /// Why the latest attempt failed (its updates are queued again).
    error: Option<Arc<Error>>,
}

impl PresenceQueue {
    pub(crate) fn new() -> Arc<PresenceQueue> {
        Arc::new(PresenceQueue {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            written: watch::Sender::new(Written::default()),
        })
    }

    pub(crate) fn record(&self, id: &DeviceId, online: bool, at: TimestampMs) {
        self.update(id, |pending| {
            pending.presence = Some(Presence { online, at });
        });
    }

    pub(crate) fn record_ingest_error(&self, id: &DeviceId, mut error: IngestErrorRecord) {
        let max = IngestErrorRecord::MAX_MESSAGE_CHARS;
        if let Some((cut, _)) = error.message.char_indices().nth(max) {
            error.message.truncate(cut);
            error.message.pop();
            error.message.push('…');
        }
        self.update(id, |pending| pending.ingest_error = Some(error));
    }

    /// Drops what is queued for a deleted device, so that a device created again with its
    /// id does not get it. (A batch the writer took just before the deletion may still
    /// land on a device created again within the milliseconds it takes to write.)
    pub(crate) fn forget(&self, id: &DeviceId) {
        self.state.lock().pending.remove(id);
    }

    fn update(&self, id: &DeviceId, change: impl FnOnce(&mut Pending)) {
        let should_wake = {
            let mut state = self.state.lock();
            if state.is_closed {
                return;
            }
            state.recorded += 1;
            let was_empty = state.pending.is_empty();
            change(state.pending.entry(id.clone()).or_default());
            // The writer only needs waking to start a batch or to cut a large one short.
            was_empty || state.pending.len() == LARGE_BATCH
        };
        if should_wake {
            self.wake.notify_one();
        }
    }

    pub(crate) async fn flush(&self) -> Result<()> {
        let target = {
            let mut state = self.state.lock();
            let is_written = {
                let written = self.written.borrow();
                written.sequence >= state.recorded && written.error.is_none()
            };
            if is_written && state.pending.is_empty() {
                // Everything is written already; asking for a flush would only make the
                // next batch skip its gathering interval.
                return Ok(());
            }
            state.is_flush_requested = true;
            state.recorded
        };
        self.wake.notify_one();
        let mut written = self.written.subscribe();
        let written = written
            .wait_for(|written| written.sequence >= target)
            .await
            .map_err(|_| Error::Internal {
                context: "waiting for the presence writer, which stopped".to_owned(),
                source: None,
            })?;
        match &written.error {
            Some(error) => Err(Error::Background {
                context: "writing presence",
                source: Arc::clone(error),
            }),
            None => Ok(()),
        }
    }

    /// Stops taking updates; the writer writes what is queued and ends.
    pub(crate) fn close(&self) {
        self.state.lock().is_closed = true;
        self.wake.notify_one();
    }

    /// The writer task: runs until `close`, then writes what is left.
    pub(crate) async fn run_writer(self: Arc<Self>, pool: AnyPool, interval: Duration) {
        loop {
            // Wait for a first update, or for a flush: updates recorded and then
            // forgotten (a deleted device) leave nothing pending, yet a flush waits for
            // their sequence number to be reached.
            loop {
                {
                    let state = self.state.lock();
                    if !state.pending.is_empty() || state.is_closed || state.is_flush_requested {
                        break;
                    }
                }
                self.wake.notified().await;
            }
            // Let the batch gather, unless someone waits for it or it is large already.
            let deadline = tokio::time::Instant::now() + interval;
            loop {
                {
                    let state = self.state.lock();
                    if state.is_flush_requested
                        || state.is_closed
                        || state.pending.len() >= LARGE_BATCH
                    {
                        break;
                    }
                }
                if tokio::time::timeout_at(deadline, self.wake.notified())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let (batch, sequence, is_closed) = {
                let mut state = self.state.lock();
                state.is_flush_requested = false;
                (
                    std::mem::take(&mut state.pending),
                    state.recorded,
                    state.is_closed,
                )
            };
            let error = match write(&pool, &batch).await {
                Ok(()) => None,
                Err(error) => {
                    tracing::warn!(%error, devices = batch.len(), "writing presence failed; will retry");
                    let mut state = self.state.lock();
                    for (id, older) in batch {
                        // A newer update of the same device, recorded meanwhile, wins.
                        state.pending.entry(id).or_default().or_older(older);
                    }
                    Some(Arc::new(error))
                }
            };
            let has_failed = error.is_some();
            self.written.send_replace(Written { sequence, error });
            if is_closed {
                if has_failed {
                    tracing::warn!(
                        "registry closing: presence updates that failed to write are dropped"
                    );
                }
                return;
            }
            if has_failed {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

async fn write(pool: &AnyPool, batch: &HashMap<DeviceId, Pending>) -> Result<()> {
    let updates: Vec<_> = batch.iter().collect();
    for chunk in updates.chunks(ROWS_PER_TRANSACTION) {
        let context = "writing presence and ingest errors";
        let mut transaction = pool.begin().await.map_err(database(context))?;
        // Unknown devices match no row: updates of unregistered clients are ignored.
        for (id, pending) in chunk {
            if let Some(presence) = pending.presence {
                sqlx::query("UPDATE devices SET online = $1, last_seen = $2 WHERE id = $3")
                    .bind(i64::from(presence.online))
                    .bind(presence.at)
                    .bind(id.as_str())
                    .execute(&mut *transaction)
                    .await
                    .map_err(database(context))?;
            }
            if let Some(error) = &pending.ingest_error {
                // Another node may have written a newer one meanwhile.
                sqlx::query(
                    "UPDATE devices SET last_ingest_error_at = $1, last_ingest_error_source = $2, \
                     last_ingest_error = $3 \
                     WHERE id = $4 AND (last_ingest_error_at IS NULL OR last_ingest_error_at <= $1)",
                )
                .bind(error.at)
                .bind(error.source.as_str())
                .bind(error.message.as_str())
                .bind(id.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(database(context))?;
            }
        }
        transaction.commit().await.map_err(database(context))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An update recorded and then forgotten (its device deleted) before the writer saw
    /// it leaves nothing pending, yet its sequence number counts: a flush must still
    /// return. (It waited for ever when the idle writer heeded only pending updates.)
    #[tokio::test]
    async fn a_flush_returns_when_what_it_waits_for_was_forgotten() {
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect("sqlite::memory:")
            .await
            .expect("an in-memory database");
        let queue = PresenceQueue::new();
        let id = DeviceId::new("deleted").expect("a plain name");
        queue.record(&id, true, 1);
        queue.forget(&id);
        // The writer starts only now, so it never sees the update.
        tokio::spawn(Arc::clone(&queue).run_writer(pool, Duration::from_secs(3600)));
        tokio::time::timeout(Duration::from_secs(10), queue.flush())
            .await
            .expect("the flush returned")
            .expect("nothing failed");
    }
}
