//! The write-ahead log: every accepted batch is appended here before it is acknowledged,
//! and replayed into the head when the store opens.
//!
//! Files are `wal/{number:016x}.wal`, append-only sequences of checksummed records (see
//! [`record`](crate::record)), one record per write batch: the series the batch defines
//! first, then its points (`series id`, timestamp delta, value bits).
//!
//! **Group commit.** Writers append their encoded record to a shared buffer and get a
//! sequence number. A record that must be durable (`sync` mode, acknowledged data) is
//! written by the log's thread: it swaps the buffer out, writes it with one call, fsyncs
//! it, then wakes everyone whose sequence number is covered. While the thread waits for
//! the disk, the next writers' records pile up and share the next fsync.
//!
//! A record that only has to reach the operating system (`batch` mode, or unacknowledged
//! data) is written by its own writer, with whatever is queued before it, if nobody
//! else holds the file; otherwise the writer waits for the holder, whose write usually
//! covers it. This spares two thread hand-overs per write on the busiest path (QoS 0
//! telemetry): the log's thread is woken only to fsync. The file is taken out of the
//! shared state while it is written, so writes and fsyncs never overlap.
//!
//! **Unacknowledged records.** A record nobody will be told about (MQTT QoS 0 telemetry)
//! is appended with `is_durable_wanted` false: in `sync` mode it neither waits for an
//! fsync nor causes one. The next record that does want one covers it (an fsync covers
//! the whole file), and otherwise the thread fsyncs it within
//! [`UNACKNOWLEDGED_SYNC_INTERVAL`] of its write, as `batch` mode does within
//! `flush_interval`.
//!
//! **Rotation.** A flush asks the log to move on to a new file; once the flushed head is
//! in segments, every older file is deleted.
//!
//! **Recovery.** A record that is incomplete or fails its checksum at the end of the
//! newest file is what a crash mid-write leaves: replay stops there, the file is cut back
//! to the last good record and a warning says how much was dropped. Damage anywhere else is
//! reported as [`Error::CorruptWal`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::catalog::{sync_directory, truncate};
use crate::config::Durability;
use crate::error::{Error, Result, io};
use crate::record::{self, Cursor, Next};
use crate::types::{Point, SeriesId};

/// In `sync` mode, the longest time records appended without wanting durability stay
/// written but not fsynced (when no other record's fsync covers them first).
const UNACKNOWLEDGED_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Directory of the log files inside the store's directory.
pub(crate) const DIRECTORY: &str = "wal";
const EXTENSION: &str = "wal";
const KIND_BATCH: u8 = 1;

/// Appends one batch record to `out`: the series it defines, then the points. `ids[i]` is
/// the series of `points[i]`.
pub(crate) fn encode_batch(
    out: &mut Vec<u8>,
    new_series: &[(SeriesId, &str, &str)],
    ids: &[SeriesId],
    points: &[Point<'_>],
) {
    out.reserve(16 + points.len() * 12);
    let start = record::begin_frame(out);
    out.push(KIND_BATCH);
    record::put_varint(out, new_series.len() as u64);
    for (id, device, field) in new_series {
        record::put_varint(out, u64::from(id.as_u32()));
        record::put_str(out, device);
        record::put_str(out, field);
    }
    record::put_varint(out, points.len() as u64);
    let mut previous = 0i64;
    for (id, point) in ids.iter().zip(points) {
        let timestamp = point.timestamp.as_millis();
        let delta = timestamp.wrapping_sub(previous);
        previous = timestamp;
        record::put_varint(out, u64::from(id.as_u32()));
        record::put_varint(out, ((delta << 1) ^ (delta >> 63)) as u64);
        out.extend_from_slice(&point.value.to_bits().to_le_bytes());
    }
    record::finish_frame(out, start);
}

/// One thing a log record says, handed to the replay callback in log order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Entry<'a> {
    /// Series `id` is `device`/`field`.
    Series {
        id: u64,
        device: &'a str,
        field: &'a str,
    },
    /// A point of series `id`.
    Point { id: u64, timestamp: i64, value: f64 },
}

fn decode_batch(
    payload: &[u8],
    apply: &mut impl FnMut(Entry<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let truncated = || "record ends in the middle of a field".to_owned();
    let mut cursor = Cursor::new(payload);
    match cursor.u8() {
        Some(KIND_BATCH) => {}
        Some(kind) => return Err(format!("expected record kind {KIND_BATCH}, got {kind}")),
        None => return Err("empty record".to_owned()),
    }
    let series = cursor.varint().ok_or_else(truncated)?;
    for _ in 0..series {
        let id = cursor.varint().ok_or_else(truncated)?;
        let device = cursor.str().ok_or_else(truncated)?;
        let field = cursor.str().ok_or_else(truncated)?;
        apply(Entry::Series { id, device, field })?;
    }
    let points = cursor.varint().ok_or_else(truncated)?;
    let mut timestamp = 0i64;
    for _ in 0..points {
        let id = cursor.varint().ok_or_else(truncated)?;
        let delta = cursor.varint().ok_or_else(truncated)?;
        timestamp = timestamp.wrapping_add(((delta >> 1) as i64) ^ -((delta & 1) as i64));
        let value = f64::from_bits(cursor.u64_le().ok_or_else(truncated)?);
        apply(Entry::Point {
            id,
            timestamp,
            value,
        })?;
    }
    if !cursor.is_empty() {
        return Err("record has bytes after its last point".to_owned());
    }
    Ok(())
}

fn file_path(directory: &Path, number: u64) -> PathBuf {
    directory.join(format!("{number:016x}.{EXTENSION}"))
}

/// The numbers of the log files in `directory`, ascending.
pub(crate) fn list(directory: &Path) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    let entries = std::fs::read_dir(directory).map_err(io("listing write-ahead log", directory))?;
    for entry in entries {
        let entry = entry.map_err(io("listing write-ahead log", directory))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".wal") else {
            continue;
        };
        if stem.len() == 16 {
            if let Ok(number) = u64::from_str_radix(stem, 16) {
                numbers.push(number);
            }
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Replays every log file in `directory` in order, handing each entry to `apply`. Returns
/// the number the next log file should have. A torn tail of the newest file is cut off.
pub(crate) fn replay(
    directory: &Path,
    mut apply: impl FnMut(Entry<'_>) -> Result<(), String>,
) -> Result<u64> {
    let numbers = list(directory)?;
    for (position, &number) in numbers.iter().enumerate() {
        let is_newest = position + 1 == numbers.len();
        let path = file_path(directory, number);
        let data = std::fs::read(&path).map_err(io("reading write-ahead log", &path))?;
        let mut offset = 0;
        loop {
            match record::next(&data, offset) {
                Next::Record(payload, next) => {
                    decode_batch(payload, &mut apply).map_err(|detail| Error::CorruptWal {
                        path: path.clone(),
                        offset: offset as u64,
                        detail,
                    })?;
                    offset = next;
                }
                Next::End => break,
                Next::Torn(detail) if is_newest => {
                    tracing::warn!(
                        path = %path.display(),
                        offset,
                        dropped_bytes = data.len() - offset,
                        %detail,
                        "write-ahead log ends in a torn record (a crash mid-write); replayed up to it and cut it off"
                    );
                    truncate(&path, offset as u64)?;
                    break;
                }
                Next::Torn(detail) => {
                    return Err(Error::CorruptWal {
                        path,
                        offset: offset as u64,
                        detail,
                    });
                }
            }
        }
    }
    Ok(numbers.last().map_or(0, |last| last + 1))
}

/// Deletes the log files numbered below `number`, oldest first.
pub(crate) fn delete_before(directory: &Path, number: u64) -> Result<()> {
    let mut deleted = false;
    for old in list(directory)?.into_iter().filter(|&old| old < number) {
        let path = file_path(directory, old);
        std::fs::remove_file(&path).map_err(io("deleting write-ahead log", &path))?;
        deleted = true;
    }
    if deleted {
        sync_directory(directory)?;
    }
    Ok(())
}

/// Total size of the log files.
pub(crate) fn bytes(directory: &Path) -> u64 {
    list(directory)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|number| std::fs::metadata(file_path(directory, number)).ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// The running log: the shared buffer and its thread.
#[derive(Debug)]
pub(crate) struct Wal {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    directory: PathBuf,
    durability: Durability,
    queue: Mutex<Queue>,
    /// The log's thread waits here for records to fsync or requests.
    work: Condvar,
    /// Appenders wait here for their record to be written or synced, or for the file.
    progress: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    buffer: Vec<u8>,
    /// The open file; `None` while somebody writes or syncs it (outside the lock).
    file: Option<File>,
    /// Sequence number of the last record appended to `buffer`.
    appended: u64,
    /// ... handed to the operating system.
    written: u64,
    /// ... covered by an fsync.
    durable: u64,
    /// The last record appended that must be fsynced before its writer returns.
    durable_wanted: u64,
    /// Since when written records wait for an fsync (`None`: everything written is
    /// synced).
    dirty_since: Option<Instant>,
    file_number: u64,
    is_rotate_requested: bool,
    is_sync_requested: bool,
    is_shutdown: bool,
    /// The thread has ended: nothing more will be written.
    is_stopped: bool,
    failure: Option<Arc<Error>>,
}

impl Wal {
    /// Starts a new log file numbered `file_number` and its thread.
    pub(crate) fn start(directory: &Path, durability: Durability, file_number: u64) -> Result<Wal> {
        let file = create(directory, file_number)?;
        let shared = Arc::new(Shared {
            directory: directory.to_owned(),
            durability,
            queue: Mutex::new(Queue {
                file: Some(file),
                file_number,
                ..Queue::default()
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fleetwire-wal".to_owned())
            .spawn(move || run(&thread_shared))
            .map_err(io("starting the write-ahead log thread", directory))?;
        Ok(Wal {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues encoded records; returns the sequence number to [`wait`](Wal::wait) for.
    /// Without `is_durable_wanted` (data nobody is acknowledged for), the record does not
    /// hasten the next fsync in `sync` mode, and waiting for it ends once it is written.
    pub(crate) fn append(&self, records: &[u8], is_durable_wanted: bool) -> Result<u64> {
        let mut queue = self.shared.queue.lock();
        check(&queue)?;
        queue.buffer.extend_from_slice(records);
        queue.appended += 1;
        let sequence = queue.appended;
        // (`batch` mode fsyncs on its own clock, whatever the record wants.)
        if is_durable_wanted && self.shared.durability == Durability::Sync {
            queue.durable_wanted = sequence;
            drop(queue);
            self.shared.work.notify_one();
        }
        // Otherwise the appender writes it itself in `wait`.
        Ok(sequence)
    }

    /// Waits until record `sequence` is durable (`sync`, when appended wanting durability)
    /// or written (`batch`, or not wanting durability). A record that only needs writing
    /// is written by the waiter itself, with everything queued before it, when nobody
    /// else is writing: no hand-over to the log's thread and back.
    pub(crate) fn wait(&self, sequence: u64, is_durable_wanted: bool) -> Result<()> {
        let is_sync_wait = is_durable_wanted && self.shared.durability == Durability::Sync;
        let mut queue = self.shared.queue.lock();
        loop {
            let reached = if is_sync_wait {
                queue.durable
            } else {
                queue.written
            };
            if reached >= sequence {
                return Ok(());
            }
            if let Some(failure) = &queue.failure {
                return Err(Error::WalFailed(Arc::clone(failure)));
            }
            if queue.is_stopped {
                return Err(Error::Closed);
            }
            if !is_sync_wait && !queue.buffer.is_empty() {
                if let Some(file) = queue.file.take() {
                    self.write_queued(queue, file);
                    queue = self.shared.queue.lock();
                    continue;
                }
            }
            self.shared.progress.wait(&mut queue);
        }
    }

    /// Writes the queued records to `file` (taken from the queue) outside the lock,
    /// then gives the file back and reports progress.
    fn write_queued(&self, mut queue: parking_lot::MutexGuard<'_, Queue>, mut file: File) {
        let mut chunk = std::mem::take(&mut queue.buffer);
        let sequence = queue.appended;
        drop(queue);
        let outcome = file
            .write_all(&chunk)
            .map_err(io("writing write-ahead log", &self.shared.directory));
        chunk.clear();
        let mut queue = self.shared.queue.lock();
        queue.file = Some(file);
        if queue.buffer.is_empty() {
            // Hand the allocation back for the next appends.
            queue.buffer = chunk;
        }
        let mut is_newly_dirty = false;
        match outcome {
            Ok(()) => {
                queue.written = sequence;
                if queue.dirty_since.is_none() {
                    queue.dirty_since = Some(Instant::now());
                    is_newly_dirty = true;
                }
            }
            Err(error) => fail(&mut queue, error),
        }
        drop(queue);
        self.shared.progress.notify_all();
        if is_newly_dirty {
            // The thread fsyncs it within its interval.
            self.shared.work.notify_one();
        }
    }

    /// Fsyncs everything appended so far (a no-op wait in `sync` mode).
    pub(crate) fn sync(&self) -> Result<()> {
        let mut queue = self.shared.queue.lock();
        check(&queue)?;
        let target = queue.appended;
        queue.is_sync_requested = true;
        self.shared.work.notify_one();
        while queue.durable < target {
            if let Some(failure) = &queue.failure {
                return Err(Error::WalFailed(Arc::clone(failure)));
            }
            self.shared.progress.wait(&mut queue);
        }
        Ok(())
    }

    /// Writes and fsyncs everything queued, then continues in a new file. Returns its
    /// number: every file below it is complete. The caller must keep appends out until this
    /// returns (the store holds its ingest lock), so the boundary is exact.
    pub(crate) fn rotate(&self) -> Result<u64> {
        let mut queue = self.shared.queue.lock();
        check(&queue)?;
        queue.is_rotate_requested = true;
        self.shared.work.notify_one();
        while queue.is_rotate_requested {
            if let Some(failure) = &queue.failure {
                return Err(Error::WalFailed(Arc::clone(failure)));
            }
            self.shared.progress.wait(&mut queue);
        }
        Ok(queue.file_number)
    }

    /// Deletes the files numbered below `number`.
    pub(crate) fn delete_before(&self, number: u64) -> Result<()> {
        delete_before(&self.shared.directory, number)
    }

    /// Writes and fsyncs everything queued and stops the thread. Later appends fail with
    /// [`Error::Closed`].
    pub(crate) fn shutdown(&self) -> Result<()> {
        {
            let mut queue = self.shared.queue.lock();
            queue.is_shutdown = true;
        }
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                return Err(Error::WalThreadPanicked);
            }
        }
        match &self.shared.queue.lock().failure {
            Some(failure) => Err(Error::WalFailed(Arc::clone(failure))),
            None => Ok(()),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "write-ahead log did not shut down cleanly");
        }
    }
}

fn check(queue: &Queue) -> Result<()> {
    if let Some(failure) = &queue.failure {
        return Err(Error::WalFailed(Arc::clone(failure)));
    }
    if queue.is_shutdown {
        return Err(Error::Closed);
    }
    Ok(())
}

/// Records a write or fsync failure: every later append and wait gets it.
fn fail(queue: &mut Queue, error: Error) {
    tracing::error!(
        error = &error as &dyn std::error::Error,
        "write-ahead log failed; refusing further writes"
    );
    queue.failure = Some(Arc::new(error));
}

fn create(directory: &Path, number: u64) -> Result<File> {
    let path = file_path(directory, number);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io("creating write-ahead log", &path))?;
    sync_directory(directory)?;
    Ok(file)
}

/// The log's thread: fsyncs what writers want durable (writing what is queued first),
/// and what was written without wanting it within the interval; rotates and stops on
/// request. Writes that need no fsync are done by the writers themselves (`Wal::wait`).
fn run(shared: &Shared) {
    // The longest a written record may wait for its fsync (in `sync` mode, only records
    // nobody waits for wait at all).
    let interval = match shared.durability {
        Durability::Sync => UNACKNOWLEDGED_SYNC_INTERVAL,
        Durability::Batch { flush_interval } => flush_interval,
    };
    let mut chunk = Vec::new();
    loop {
        let mut queue = shared.queue.lock();
        // Wait for something to do, then for the file (a writer may hold it).
        loop {
            if queue.failure.is_some() {
                // A writer's write failed: nothing more is written.
                queue.is_stopped = true;
                drop(queue);
                shared.progress.notify_all();
                return;
            }
            let is_due = queue
                .dirty_since
                .is_some_and(|since| since.elapsed() >= interval);
            let has_work = queue.durable_wanted > queue.durable
                || queue.is_rotate_requested
                || queue.is_sync_requested
                || queue.is_shutdown
                || is_due;
            if has_work && queue.file.is_some() {
                break;
            }
            if !has_work {
                match queue.dirty_since {
                    Some(since) => {
                        shared.work.wait_until(&mut queue, since + interval);
                    }
                    None => shared.work.wait(&mut queue),
                }
            } else {
                // A writer holds the file; it reports progress when it gives it back.
                shared.progress.wait(&mut queue);
            }
        }
        let Some(mut file) = queue.file.take() else {
            continue;
        };
        chunk.clear();
        std::mem::swap(&mut chunk, &mut queue.buffer);
        let sequence = queue.appended;
        let is_dirty = queue.dirty_since.is_some() || !chunk.is_empty();
        let is_rotate = queue.is_rotate_requested;
        let is_sync = queue.is_sync_requested;
        let is_shutdown = queue.is_shutdown;
        let next_number = queue.file_number + 1;
        drop(queue);

        let outcome = (|| -> Result<Option<File>> {
            if !chunk.is_empty() {
                file.write_all(&chunk)
                    .map_err(io("writing write-ahead log", &shared.directory))?;
            }
            // Everything that brings the thread here wants an fsync.
            if is_dirty {
                file.sync_data()
                    .map_err(io("syncing write-ahead log", &shared.directory))?;
            }
            Ok(if is_rotate {
                Some(create(&shared.directory, next_number)?)
            } else {
                None
            })
        })();
        let mut queue = shared.queue.lock();
        match outcome {
            Ok(next) => {
                queue.written = queue.written.max(sequence);
                queue.durable = sequence;
                queue.dirty_since = None;
                if let Some(next) = next {
                    file = next;
                    queue.file_number = next_number;
                    queue.is_rotate_requested = false;
                }
                if is_sync {
                    queue.is_sync_requested = false;
                }
            }
            Err(error) => fail(&mut queue, error),
        }
        queue.file = Some(file);
        let is_done = queue.failure.is_some() || (is_shutdown && queue.buffer.is_empty());
        if is_done {
            queue.is_stopped = true;
        }
        drop(queue);
        shared.progress.notify_all();
        if is_done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetwire_time::Timestamp;

    #[test]
    fn batches_decode_to_the_entries_they_encode() {
        let points = [
            Point::new("d1", "t", Timestamp::from_millis(5), 1.5),
            Point::new("d1", "h", Timestamp::from_millis(-7), f64::NAN),
            Point::new("d2", "t", Timestamp::from_millis(i64::MAX), -0.0),
        ];
        let ids = [SeriesId::new(0), SeriesId::new(1), SeriesId::new(2)];
        let mut out = Vec::new();
        encode_batch(&mut out, &[(ids[2], "d2", "t")], &ids, &points);
        let Next::Record(payload, end) = record::next(&out, 0) else {
            panic!("one record")
        };
        assert_eq!(end, out.len());
        let mut entries = Vec::new();
        decode_batch(payload, &mut |entry: Entry<'_>| {
            entries.push(match entry {
                Entry::Series { id, device, field } => format!("series {id} {device} {field}"),
                Entry::Point {
                    id,
                    timestamp,
                    value,
                } => format!("point {id} {timestamp} {:x}", value.to_bits()),
            });
            Ok(())
        })
        .expect("valid batch");
        assert_eq!(
            entries,
            [
                "series 2 d2 t".to_owned(),
                format!("point 0 5 {:x}", 1.5f64.to_bits()),
                format!("point 1 -7 {:x}", f64::NAN.to_bits()),
                format!("point 2 {} {:x}", i64::MAX, (-0.0f64).to_bits()),
            ]
        );
    }

    /// An empty directory of its own and a `sync` log started in it (file 1).
    fn fresh_wal(name: &str) -> (PathBuf, Wal) {
        let directory =
            std::env::temp_dir().join(format!("fleetwire-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let wal = Wal::start(&directory, Durability::Sync, 1).unwrap();
        (directory, wal)
    }

    fn progress(wal: &Wal) -> (u64, u64) {
        let queue = wal.shared.queue.lock();
        (queue.written, queue.durable)
    }

    #[test]
    fn unacknowledged_records_are_fsynced_by_the_next_acknowledged_one_or_on_a_timer() {
        let (directory, wal) = fresh_wal("unacked");

        // Covered by the fsync of a later record that wants one.
        let unacknowledged = wal.append(b"first", false).unwrap();
        wal.wait(unacknowledged, false).unwrap();
        assert!(
            progress(&wal).0 >= unacknowledged,
            "written once waited for"
        );
        let acknowledged = wal.append(b"second", true).unwrap();
        wal.wait(acknowledged, true).unwrap();
        assert!(progress(&wal).1 >= acknowledged);

        // Alone, it is fsynced within the interval all the same.
        let alone = wal.append(b"third", false).unwrap();
        wal.wait(alone, false).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while progress(&wal).1 < alone {
            assert!(
                Instant::now() < deadline,
                "never fsynced: {:?}",
                progress(&wal)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        wal.shutdown().unwrap();
        let bytes = std::fs::read(file_path(&directory, 1)).unwrap();
        assert_eq!(bytes, b"firstsecondthird");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    /// Writers that write their own records, writers that wait for the thread's fsync,
    /// and rotations, all at once: every record lands exactly once, each writer's in
    /// order, and the files split where the rotations were asked for.
    #[test]
    fn concurrent_writers_and_rotations_lose_and_repeat_nothing() {
        let (directory, wal) = fresh_wal("concurrent");
        // Stands in for the store's ingest lock: appends and rotations are ordered by it.
        let ingest = Mutex::new(());
        const WRITERS: u32 = 4;
        const RECORDS: u32 = 400;
        std::thread::scope(|scope| {
            for writer in 0..WRITERS {
                let (wal, ingest) = (&wal, &ingest);
                scope.spawn(move || {
                    for n in 0..RECORDS {
                        let is_durable_wanted = (n + writer) % 7 == 0;
                        let mut record = writer.to_le_bytes().to_vec();
                        record.extend_from_slice(&n.to_le_bytes());
                        let sequence = {
                            let _ingest = ingest.lock();
                            if writer == 0 && n % 100 == 50 {
                                wal.rotate().unwrap();
                            }
                            wal.append(&record, is_durable_wanted).unwrap()
                        };
                        wal.wait(sequence, is_durable_wanted).unwrap();
                    }
                });
            }
        });
        wal.shutdown().unwrap();
        let numbers = list(&directory).unwrap();
        assert_eq!(numbers, (1..=5).collect::<Vec<_>>(), "four rotations");
        let mut next = [0u32; WRITERS as usize];
        for number in numbers {
            let bytes = std::fs::read(file_path(&directory, number)).unwrap();
            assert_eq!(bytes.len() % 8, 0);
            for record in bytes.chunks_exact(8) {
                let writer = u32::from_le_bytes(record[..4].try_into().unwrap()) as usize;
                let n = u32::from_le_bytes(record[4..].try_into().unwrap());
                assert_eq!(n, next[writer], "writer {writer}'s records in order, once");
                next[writer] += 1;
            }
        }
        assert_eq!(next, [RECORDS; WRITERS as usize]);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
