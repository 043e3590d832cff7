//! Presence (online, last seen): recorded without waiting, written in batches by one
//! background task.
//!
//! Who owns what: `PresenceQueue::state` (a mutex) holds the latest unwritten presence of
//! each device, so a device that reconnects ten times between two writes costs one row
//! update, and memory is bounded by the number of devices. The writer task owns the
//! database side: it wakes on `wake`, lets a batch gather for up to the flush interval
//! (less when someone waits in `flush` or the batch is large), writes it in one
//! transaction and publishes, through the `written` watch channel, the sequence number of
//! the last update it wrote. `flush` waits on that channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sqlx::AnyPool;
use tokio::sync::{Notify, watch};

use crate::error::database;
use crate::{DeviceId, Error, Result, TimestampMs};

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
    /// Latest unwritten presence per device.
    pending: HashMap<DeviceId, Presence>,
    /// Number of updates recorded so far: the sequence number of the latest one.
    recorded: u64,
    /// Someone waits in `flush`: write now rather than at the end of the interval.
    is_flush_requested: bool,
    /// The registry is closing: write what is left, then stop.
    is_closed: bool,
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
    error: Option<String>,
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
        let should_wake = {
            let mut state = self.state.lock();
            if state.is_closed {
                return;
            }
            state.recorded += 1;
            let was_empty = state.pending.is_empty();
            state.pending.insert(id.clone(), Presence { online, at });
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
            .map_err(|_| Error::Internal("presence writer stopped".to_owned()))?;
        match &written.error {
            Some(error) => Err(Error::Database(error.clone())),
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
            // Wait for a first update.
            loop {
                {
                    let state = self.state.lock();
                    if !state.pending.is_empty() || state.is_closed {
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
                    for (id, presence) in batch {
                        // A newer update of the same device, recorded meanwhile, wins.
                        state.pending.entry(id).or_insert(presence);
                    }
                    Some(error.to_string())
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

async fn write(pool: &AnyPool, batch: &HashMap<DeviceId, Presence>) -> Result<()> {
    let updates: Vec<_> = batch.iter().collect();
    for chunk in updates.chunks(ROWS_PER_TRANSACTION) {
        let context = "writing presence";
        let mut transaction = pool.begin().await.map_err(database(context))?;
        for (id, presence) in chunk {
            // Unknown devices match no row: presence of unregistered clients is ignored.
            sqlx::query("UPDATE devices SET online = $1, last_seen = $2 WHERE id = $3")
                .bind(i64::from(presence.online))
                .bind(presence.at)
                .bind(id.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(database(context))?;
        }
        transaction.commit().await.map_err(database(context))?;
    }
    Ok(())
}
