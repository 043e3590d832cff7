//! The group-commit writer: every accepted batch, from every protocol, goes through here
//! into the store.
//!
//! Requests wait in one bounded queue (bounded in points: a caller first takes permits
//! for its points, so a flood waits at the door instead of growing memory). One writer
//! thread at a time collects: it takes everything queued, up to a limit, and writes it
//! with one [`Store::write`] (one log append, one fsync in `sync` durability); once the
//! group is in the log and about to wait for its fsync, it hands collecting to another
//! thread (whose fsync then overlaps its own) and answers every request of the group once
//! it is durable. A group that waits for no fsync keeps its thread collecting: no
//! hand-over, no wake-up of another thread.
//!
//! Under steady load the collector lingers: it takes the next group no sooner than
//! [`WriterConfig::linger`] after the last, so a flood of small requests (a thousand
//! devices each sending one message per read) becomes a few hundred writes a second
//! instead of one per request, each of which would wake the writer, the rules and the
//! stream. A request that finds the writer idle, or follows a group of one request, is
//! taken at once: a lone message never waits for the linger.
//!
//! The observer (rules, live stream) is handed the batches as soon as
//! they are in the log, before the fsync: alarms do not wait for the disk, as a broker's
//! rule engine would not, while devices are acknowledged only once their data is durable.
//! (If that fsync then fails, the rules saw data whose writers got an error.)
//! A group made only of submitted batches (MQTT QoS 0, nobody to acknowledge) is written
//! without waiting for, or asking for, an fsync: the next acknowledged write's fsync
//! covers it, or the log's own within 100 ms.
//!
//! The observer sees groups in the order they left the queue, whichever thread finished
//! first: a device's messages reach the rules and the stream in the order it sent them.
//!
//! ```text
//! connection / HTTP ──permits──▶ queue ──▶ writer thread: Store::write(all) ──▶ answers
//!                                                         └──▶ observer(batches)
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fleetwire_store::{Point, Store};
use parking_lot::{Condvar, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::batch::PointBatch;
use crate::error::{Error, Result};

/// Sizes of the write path.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterConfig {
    /// Points that may wait in the queue; callers beyond it wait for room.
    pub queue_points: usize,
    /// Most points one store write takes from the queue.
    pub max_write_points: usize,
    /// Writer threads (two let one append while the other waits for its fsync).
    pub threads: usize,
    /// Under steady load, the least time between taking one group and the next, so that
    /// a flood of small requests is written in a few larger groups instead of one write
    /// (and one wake-up of the writer and the rules) per request. A request that finds
    /// the writer idle, or one after a group of one request, is taken at once.
    pub linger: Duration,
}

impl Default for WriterConfig {
    fn default() -> WriterConfig {
        WriterConfig {
            queue_points: 1 << 20,
            max_write_points: 64 * 1024,
            threads: 2,
            linger: Duration::from_millis(1),
        }
    }
}

/// Told about every batch once it is written.
pub(crate) trait Observer: Send + Sync + 'static {
    /// Called on a writer thread once the batches are in the log (before their fsync and
    /// before their callers are answered); must not block for long (it holds up this
    /// thread's answers and next write).
    fn written(&self, batches: Vec<Arc<PointBatch>>);
}

/// Counters of the write path, read by `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Points written.
    pub points: AtomicU64,
    /// Store writes (groups) done.
    pub writes: AtomicU64,
    /// Requests answered with an error.
    pub failed_requests: AtomicU64,
    /// Total time spent in `Store::write`, in microseconds.
    pub write_micros: AtomicU64,
}

struct Request {
    batch: Arc<PointBatch>,
    /// `None` for a submitted batch: nobody waits for it to be durable.
    answer: Option<oneshot::Sender<Result<()>>>,
    /// Released when the request is answered, making room in the queue.
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Queue {
    requests: VecDeque<Request>,
    is_stopping: bool,
    /// Points in `requests`.
    points: usize,
    /// Ticket of the next group taken from the queue.
    next_ticket: u64,
    /// A thread is taking a group or writing it to the log: the others leave the queue
    /// alone, so one thread writes group after group when nobody waits for an fsync.
    is_collecting: bool,
    /// Threads waiting on `ready` for work.
    idle: usize,
    /// When the latest group was taken, and whether it held more than one request (the
    /// sign of steady load that makes the next group linger).
    last_group: Option<(Instant, bool)>,
}

struct Shared {
    store: Store,
    config: WriterConfig,
    queue: Mutex<Queue>,
    /// Signalled for idle threads: there is work and nobody collecting.
    ready: Condvar,
    /// Signalled for a lingering collector: enough is queued, or the writer stops.
    hurry: Condvar,
    room: Arc<Semaphore>,
    observer: Arc<dyn Observer>,
    /// Ticket of the group whose turn it is to be observed (or skipped, if it failed).
    observed: Mutex<u64>,
    turn: Condvar,
    stats: Arc<WriterStats>,
}

/// The handle callers write through. Stopping it (see [`Writer::stop`]) answers what is
/// queued and joins the threads.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Writer {
    pub(crate) fn start(
        store: Store,
        config: WriterConfig,
        observer: Arc<dyn Observer>,
        stats: Arc<WriterStats>,
    ) -> std::io::Result<Writer> {
        let threads = config.threads.max(1);
        let shared = Arc::new(Shared {
            store,
            room: Arc::new(Semaphore::new(config.queue_points.max(1))),
            config,
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            hurry: Condvar::new(),
            observer,
            observed: Mutex::new(0),
            turn: Condvar::new(),
            stats,
        });
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("fleetwire-writer-{index}"))
                .spawn(move || shared.run())?;
            handles.push(handle);
        }
        Ok(Writer {
            shared,
            threads: Mutex::new(handles),
        })
    }

    /// Queues `batch` and resolves once it is written (durable in `sync` durability), or
    /// with the store's error. Waits for room first when the queue is full.
    pub(crate) async fn write(&self, batch: PointBatch) -> Result<Arc<PointBatch>> {
        let (batch, answered) = self.enqueue(batch, true).await?;
        if let Some(answered) = answered {
            answered.await.map_err(|_| Error::ShuttingDown)??;
        }
        Ok(batch)
    }

    /// Queues `batch` without waiting for it to be written: resolves once it is in the
    /// queue (after waiting for room, like [`Writer::write`]). For data nobody is told
    /// about (MQTT QoS 0): it is written in queue order all the same, and a failure is
    /// logged and counted by the writer.
    pub(crate) async fn submit(&self, batch: PointBatch) -> Result<()> {
        self.enqueue(batch, false).await.map(|_| ())
    }

    /// Takes room for `batch` and queues it; the receiver of its answer when `is_answered`
    /// (`None` otherwise, and for an empty batch, which is not queued).
    async fn enqueue(
        &self,
        batch: PointBatch,
        is_answered: bool,
    ) -> Result<(Arc<PointBatch>, Option<oneshot::Receiver<Result<()>>>)> {
        if batch.is_empty() {
            return Ok((Arc::new(batch), None));
        }
        let wanted = batch
            .len()
            .min(self.shared.config.queue_points.max(1))
            .min(Semaphore::MAX_PERMITS) as u32;
        let permit = Arc::clone(&self.shared.room)
            .acquire_many_owned(wanted)
            .await
            .map_err(|_| Error::ShuttingDown)?;
        let batch = Arc::new(batch);
        let (answer, answered) = if is_answered {
            let (answer, answered) = oneshot::channel();
            (Some(answer), Some(answered))
        } else {
            (None, None)
        };
        let mut queue = self.shared.queue.lock();
        if queue.is_stopping {
            return Err(Error::ShuttingDown);
        }
        queue.points += batch.len();
        queue.requests.push_back(Request {
            batch: Arc::clone(&batch),
            answer,
            _permit: permit,
        });
        if !queue.is_collecting && queue.idle > 0 {
            drop(queue);
            self.shared.ready.notify_one();
        } else if queue.points >= self.shared.config.max_write_points {
            drop(queue);
            self.shared.hurry.notify_one();
        }
        Ok((batch, answered))
    }

    /// Writes what is queued, refuses new writes, and joins the threads.
    pub(crate) fn stop(&self) {
        self.shared.queue.lock().is_stopping = true;
        self.shared.room.close();
        self.shared.ready.notify_all();
        self.shared.hurry.notify_all();
        let handles = std::mem::take(&mut *self.threads.lock());
        for handle in handles {
            if handle.join().is_err() {
                tracing::error!("a writer thread panicked");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn run(&self) {
        while let Some((ticket, group)) = self.take_group() {
            self.write_group(ticket, group);
        }
    }

    /// Waits until this thread may collect (work queued, nobody else collecting), lingers
    /// under steady load, and takes the next group; `None` once stopped and drained.
    fn take_group(&self) -> Option<(u64, Vec<Request>)> {
        let mut queue = self.queue.lock();
        loop {
            if queue.requests.is_empty() && queue.is_stopping {
                return None;
            }
            if !queue.requests.is_empty() && !queue.is_collecting {
                break;
            }
            queue.idle += 1;
            self.ready.wait(&mut queue);
            queue.idle -= 1;
        }
        queue.is_collecting = true;
        if let Some((taken, true)) = queue.last_group {
            let until = taken + self.config.linger;
            while queue.points < self.config.max_write_points && !queue.is_stopping {
                if self.hurry.wait_until(&mut queue, until).timed_out() {
                    break;
                }
            }
        }
        let mut group = Vec::new();
        let mut size = 0;
        while let Some(front) = queue.requests.front() {
            if !group.is_empty() && size + front.batch.len() > self.config.max_write_points {
                break;
            }
            size += front.batch.len();
            if let Some(request) = queue.requests.pop_front() {
                group.push(request);
            }
        }
        queue.points -= size;
        queue.last_group = Some((Instant::now(), group.len() > 1));
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        Some((ticket, group))
    }

    /// Ends this thread's turn at collecting. `hand_over` when it is about to wait for an
    /// fsync: an idle thread takes what is queued meanwhile. Otherwise this thread comes
    /// straight back for it (waking the other would only swap them). While stopping, every
    /// idle thread is woken: one that went back to sleep because this one was collecting
    /// must see the queue drained and end, or `Writer::stop` would wait for it forever.
    fn stop_collecting(&self, hand_over: bool) {
        let mut queue = self.queue.lock();
        queue.is_collecting = false;
        let is_stopping = queue.is_stopping;
        let wake = queue.idle > 0 && (is_stopping || (hand_over && !queue.requests.is_empty()));
        drop(queue);
        if is_stopping && wake {
            self.ready.notify_all();
        } else if wake {
            self.ready.notify_one();
        }
    }

    /// Writes one group with one store write, hands it to the observer once it is in the
    /// log and every group taken before it was, and answers its requests once durable.
    fn write_group(&self, ticket: u64, group: Vec<Request>) {
        let started = Instant::now();
        let total = group.iter().map(|request| request.batch.len()).sum();
        let mut points: Vec<Point<'_>> = Vec::with_capacity(total);
        for request in &group {
            points.extend(request.batch.iter());
        }
        let is_answered = group.iter().any(|request| request.answer.is_some());
        let mut is_observed = false;
        let observe = || {
            is_observed = true;
            let batches: Vec<Arc<PointBatch>> = group
                .iter()
                .map(|request| Arc::clone(&request.batch))
                .collect();
            self.in_turn(ticket, || self.observer.written(batches));
            if is_answered {
                self.stop_collecting(true);
            }
        };
        let result = if is_answered {
            self.store.write_then(&points, observe)
        } else {
            self.store.write_unacknowledged_then(&points, observe)
        }
        .map(|()| points.len() as u64);
        drop(points);
        if !(is_answered && is_observed) {
            self.stop_collecting(false);
        }
        let elapsed = started.elapsed().as_micros() as u64;
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .write_micros
            .fetch_add(elapsed, Ordering::Relaxed);
        match result {
            Ok(count) => {
                self.stats.points.fetch_add(count, Ordering::Relaxed);
                for answer in group.into_iter().filter_map(|request| request.answer) {
                    let _ = answer.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    requests = group.len(),
                    "writing telemetry failed"
                );
                self.stats
                    .failed_requests
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                let error = Arc::new(error);
                for answer in group.into_iter().filter_map(|request| request.answer) {
                    let _ = answer.send(Err(Error::Store(Arc::clone(&error))));
                }
                if !is_observed {
                    // Refused before it reached the log: pass the turn on.
                    self.in_turn(ticket, || {});
                }
            }
        }
    }

    /// Runs `observe` once the groups with earlier tickets have had their turn, then
    /// passes the turn on. The observer is quick (channel sends), so the other thread
    /// seldom waits, and never for a store write.
    fn in_turn(&self, ticket: u64, observe: impl FnOnce()) {
        let mut turn = self.observed.lock();
        while *turn != ticket {
            self.turn.wait(&mut turn);
        }
        observe();
        *turn += 1;
        drop(turn);
        self.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetwire_store::{StoreConfig, Timestamp};

    /// Records the value of the first point of every batch it is shown. The call for the
    /// group of the first write waits (up to half a second) for another call to begin:
    /// if nothing kept the writer threads in order, the other thread would hand its later
    /// group over first.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<f64>>,
        second_began: Mutex<bool>,
        began: Condvar,
    }

    impl Observer for Recorder {
        fn written(&self, batches: Vec<Arc<PointBatch>>) {
            let first = batches.first().and_then(|batch| batch.iter().next());
            if first.is_some_and(|point| point.value == 0.0) {
                let mut second_began = self.second_began.lock();
                if !*second_began {
                    let _ = self
                        .began
                        .wait_for(&mut second_began, std::time::Duration::from_millis(500));
                }
            } else {
                *self.second_began.lock() = true;
                self.began.notify_all();
            }
            let mut seen = self.seen.lock();
            for batch in &batches {
                if let Some(point) = batch.iter().next() {
                    seen.push(point.value);
                }
            }
        }
    }

    // One runtime thread: spawned tasks first run in spawn order, so that is the order
    // their writes are queued in; the two writer threads still race each other.
    #[tokio::test]
    async fn the_observer_sees_batches_in_the_order_they_were_queued() {
        let config = WriterConfig {
            // Small groups, so both threads write at once all the time.
            max_write_points: 3,
            ..WriterConfig::default()
        };
        let (writer, _, recorder, directory) = started("order", config);
        let count = 600;
        let mut writes = tokio::task::JoinSet::new();
        for index in 0..count {
            let writer = Arc::clone(&writer);
            writes.spawn(async move {
                let mut batch = PointBatch::default();
                let at = Timestamp::from_millis(1_000 + index);
                batch.push(Point::new("device", "value", at, index as f64));
                writer.write(batch).await
            });
        }
        while let Some(result) = writes.join_next().await {
            result.unwrap().unwrap();
        }
        writer.stop();
        let seen = recorder.seen.lock().clone();
        let expected: Vec<f64> = (0..count).map(|index| index as f64).collect();
        assert_eq!(seen, expected);
        let _ = std::fs::remove_dir_all(&directory);
    }

    /// A writer over a fresh store in a directory of its own (removed by the test).
    fn started(
        name: &str,
        config: WriterConfig,
    ) -> (
        Arc<Writer>,
        Arc<WriterStats>,
        Arc<Recorder>,
        std::path::PathBuf,
    ) {
        let directory =
            std::env::temp_dir().join(format!("fleetwire-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        let store = Store::open(&directory, StoreConfig::default()).unwrap();
        let stats = Arc::new(WriterStats::default());
        let recorder = Arc::new(Recorder::default());
        let writer = Writer::start(store, config, recorder.clone(), Arc::clone(&stats)).unwrap();
        (Arc::new(writer), stats, recorder, directory)
    }

    fn lingering(linger: Duration) -> WriterConfig {
        WriterConfig {
            linger,
            ..WriterConfig::default()
        }
    }

    fn one_point(index: usize) -> PointBatch {
        let mut batch = PointBatch::default();
        let at = Timestamp::from_millis(1_000 + index as i64);
        batch.push(Point::new("device", "value", at, 1.0 + index as f64));
        batch
    }

    // A linger far longer than the test may take: a write that waited for it would time out.
    #[tokio::test]
    async fn a_write_alone_is_not_held_back() {
        let (writer, stats, _, directory) = started("alone", lingering(Duration::from_secs(600)));
        for index in 0..3 {
            let written = writer.write(one_point(index));
            tokio::time::timeout(Duration::from_secs(30), written)
                .await
                .expect("a lone write waited for the linger")
                .unwrap();
        }
        assert_eq!(stats.writes.load(Ordering::Relaxed), 3);
        writer.stop();
        let _ = std::fs::remove_dir_all(&directory);
    }

    // Requests a couple of milliseconds apart: without the linger each would find the
    // writer idle and get a store write of its own; with it they share a few.
    #[tokio::test]
    async fn steady_requests_share_writes_and_lose_nothing() {
        let (writer, stats, recorder, directory) =
            started("steady", lingering(Duration::from_millis(50)));
        let count = 100;
        for index in 0..count {
            // Two at a time, so every group after the first holds more than one request.
            writer.submit(one_point(2 * index)).await.unwrap();
            writer.submit(one_point(2 * index + 1)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        writer.stop();
        let writes = stats.writes.load(Ordering::Relaxed);
        assert!(
            writes <= 40,
            "{writes} store writes for {count} pairs of requests"
        );
        let seen = recorder.seen.lock().clone();
        let expected: Vec<f64> = (0..2 * count).map(|index| 1.0 + index as f64).collect();
        assert_eq!(seen, expected);
        let _ = std::fs::remove_dir_all(&directory);
    }
}
