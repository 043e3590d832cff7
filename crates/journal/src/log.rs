//! An append-only log of checksummed records with group commit: what the store's
//! write-ahead log and the broker's state log are made of.
//!
//! Files are `{number:016x}.{extension}` in one directory, each a sequence of records (see
//! [`record`](crate::record)). What a record means is the caller's business.
//!
//! **Group commit.** Writers append their encoded records to a shared buffer and get a
//! sequence number. A record that must be durable is written by the log's thread: it swaps
//! the buffer out, writes it with one call, fsyncs it, then wakes everyone whose sequence
//! number is covered (threads blocked in [`Log::wait`], tasks in [`Log::durable`]). While
//! the thread waits for the disk, the next writers' records pile up and share the next
//! fsync.
//!
//! A record that only has to reach the operating system ([`Flush::Batch`], or
//! unacknowledged data) is written by its own writer, with whatever is queued before it,
//! if nobody else holds the file; otherwise the writer waits for the holder, whose write
//! usually covers it. This spares two thread hand-overs per write on the busiest path
//! (QoS 0 telemetry): the log's thread is woken only to fsync. The file is taken out of
//! the shared state while it is written, so writes and fsyncs never overlap.
//!
//! **Unacknowledged records.** A record nobody will be told about is appended with
//! `is_durable_wanted` false: in [`Flush::Sync`] it neither waits for an fsync nor causes
//! one. The next record that does want one covers it (an fsync covers the whole file),
//! and otherwise the thread fsyncs it within [`UNACKNOWLEDGED_SYNC_INTERVAL`] of its
//! write, as [`Flush::Batch`] does within its interval.
//!
//! **Zeros written ahead.** With [`Settings::preallocate`], the log writes zeros past its
//! records, a step at a time, so that its records land in blocks the file system has
//! already allocated: an fsync then only writes the data, not the file's size and block
//! map too (half the cost of each fsync on ext4 here). A file is cut back to its records
//! when the log moves on from it or shuts down; after a crash the newest file ends in
//! zeros, which [`replay`] takes as its end (no record is all zeros: its checksum
//! covers its length).
//!
//! **Rotation.** [`Log::rotate`] moves on to a new file; the caller deletes the older ones
//! once what they hold is saved elsewhere ([`Log::delete_before`]).
//!
//! **Recovery.** [`replay`] hands every record to the caller in order. A record that is
//! incomplete or fails its checksum at the end of the newest file is what a crash
//! mid-write leaves: replay stops there, the file is cut back to the last good record and
//! a warning says how much was dropped. Damage anywhere else (an older file, or a bad
//! record with more data after it) is [`Error::Corrupt`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::error::{Error, Result, io};
use crate::record::{self, Next};

/// With [`Flush::Sync`], the longest time records appended without wanting durability
/// stay written but not fsynced (when no other record's fsync covers them first).
pub const UNACKNOWLEDGED_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Queued bytes that end a group delay early: enough for one large write.
const GROUP_BYTES: usize = 256 * 1024;

/// When appended records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// A record appended wanting durability is fsynced before its wait returns; writers
    /// share fsyncs.
    Sync,
    /// Records are written to the operating system at once and fsynced at most every
    /// `interval`: the window a power cut can lose.
    Batch {
        /// The longest a written record waits for its fsync.
        interval: Duration,
    },
}

/// How a log writes: [`Settings::new`], then the fields that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// When appended records reach the disk.
    pub flush: Flush,
    /// The least time between the starts of two fsyncs while records keep coming: under
    /// load more records share each fsync, for at most this much more latency; an fsync
    /// after a quiet spell starts at once. Each fsync costs a round trip to the disk (on
    /// a virtual machine, exits to the host) whatever it carries.
    pub group_delay: Duration,
    /// Zeros are written this many bytes at a time ahead of the records (0: none). See
    /// the module documentation.
    pub preallocate: u64,
}

impl Settings {
    /// `flush`, no group delay, nothing written ahead.
    pub fn new(flush: Flush) -> Settings {
        Settings {
            flush,
            group_delay: Duration::ZERO,
            preallocate: 0,
        }
    }
}

/// The path of log file `number`.
pub fn file_path(directory: &Path, extension: &str, number: u64) -> PathBuf {
    directory.join(format!("{number:016x}.{extension}"))
}

/// The numbers of the log files in `directory`, ascending.
pub fn list(directory: &Path, extension: &str) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    let entries = std::fs::read_dir(directory).map_err(io("listing log", directory))?;
    for entry in entries {
        let entry = entry.map_err(io("listing log", directory))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name
            .strip_suffix(extension)
            .and_then(|rest| rest.strip_suffix('.'))
        else {
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

/// Replays the log files of `directory` numbered `from` and above, in order, handing each
/// record's payload to `apply` (an `Err` names what is wrong with it, and makes the
/// record corrupt). Returns the number the next log file should have. A torn tail of the
/// newest file is cut off.
pub fn replay(
    directory: &Path,
    extension: &str,
    from: u64,
    mut apply: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64> {
    let numbers = list(directory, extension)?;
    for (position, &number) in numbers.iter().enumerate() {
        if number < from {
            continue;
        }
        let is_newest = position + 1 == numbers.len();
        let path = file_path(directory, extension, number);
        let Ending::Damaged { offset, detail } = read_records(&path, &mut apply)? else {
            continue;
        };
        if !is_newest {
            return Err(Error::Corrupt {
                path,
                offset,
                detail,
            });
        }
        // What follows the damage decides (read again: only ever the end of a file).
        let mut rest = Vec::new();
        File::open(&path)
            .and_then(|mut file| {
                file.seek(SeekFrom::Start(offset))?;
                file.read_to_end(&mut rest)
            })
            .map_err(io("reading log", &path))?;
        if rest.iter().all(|&byte| byte == 0) {
            // Zeros written ahead ([`Settings::preallocate`]) that no record reached
            // before a crash: the end, as after a clean shutdown.
            tracing::debug!(path = %path.display(), offset, "log ends in zeros written ahead");
        } else if is_torn_tail(&rest) {
            tracing::warn!(
                path = %path.display(),
                offset,
                dropped_bytes = rest.len(),
                %detail,
                "log ends in a torn record (a crash mid-write); replayed up to it and cut it off"
            );
        } else {
            return Err(Error::Corrupt {
                path,
                offset,
                detail,
            });
        }
        truncate(&path, offset)?;
    }
    Ok(numbers.last().map_or(from, |last| (last + 1).max(from)))
}

/// How reading a file's records ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// At a record boundary, at the end of the file.
    Complete,
    /// At a record that is incomplete or fails its checksum; nothing after it was read.
    Damaged {
        /// Where the record starts.
        offset: u64,
        /// What is wrong with it.
        detail: String,
    },
}

/// Bytes read from a file at a time by [`read_records`].
const READ_CHUNK: usize = 4 * 1024 * 1024;

/// Hands the payload of each record of the file at `path` to `each`, in order, until
/// the end or a damaged record. The file is read a chunk at a time: a file of any size
/// costs a buffer of a few MiB (a larger record, that record's size), where reading it
/// whole cost as much memory as the file (memory a restart touches for the first time,
/// which is slow on a virtual machine). An `Err` from `each` names what is wrong with
/// the record, returned as [`Error::Corrupt`].
pub fn read_records(
    path: &Path,
    mut each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<Ending> {
    let mut file = File::open(path).map_err(io("reading log", path))?;
    let file_len = file.metadata().map_err(io("reading log", path))?.len();
    let mut buffer = vec![0u8; READ_CHUNK.min(usize::try_from(file_len).unwrap_or(READ_CHUNK))];
    // The unread data is `buffer[start..filled]`; `buffer[0]` is byte `base` of the file.
    let (mut start, mut filled, mut base) = (0usize, 0usize, 0u64);
    let mut is_eof = false;
    loop {
        match record::next(&buffer[..filled], start) {
            Next::Record(payload, next) => {
                each(payload).map_err(|detail| Error::Corrupt {
                    path: path.to_owned(),
                    offset: base + start as u64,
                    detail,
                })?;
                start = next;
                continue;
            }
            Next::End if is_eof => return Ok(Ending::Complete),
            Next::Torn(detail) if is_eof => {
                return Ok(Ending::Damaged {
                    offset: base + start as u64,
                    detail,
                });
            }
            // The rest of the record is still in the file.
            Next::End | Next::Torn(_) => {}
        }
        buffer.copy_within(start..filled, 0);
        base += start as u64;
        filled -= start;
        start = 0;
        if filled == buffer.len() {
            // One record larger than the buffer: room for it, or for the whole rest of
            // the file if its header announces more (a damaged length never allocates
            // more than the file holds).
            let announced = buffer
                .get(..4)
                .map_or(0, |length| {
                    u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize
                })
                .saturating_add(record::HEADER_LEN);
            let remaining = usize::try_from(file_len.saturating_sub(base)).unwrap_or(usize::MAX);
            let wanted = announced.min(remaining).max(buffer.len() + 1);
            buffer.resize(wanted, 0);
        }
        let read = file
            .read(&mut buffer[filled..])
            .map_err(io("reading log", path))?;
        is_eof = read == 0;
        filled += read;
    }
}

/// Whether `rest`, a file from a damaged record on, is what a crash mid-write leaves:
/// the record is the last thing in the file but zeros (it announces a length reaching
/// past the last non-zero byte; zeros follow when the file system extended the file but
/// never wrote the data, or when they were written ahead). A damaged record with more
/// data after it is corruption, not a torn write: cutting there would drop records that
/// were acknowledged.
fn is_torn_tail(rest: &[u8]) -> bool {
    let rest = &rest[..rest
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |last| last + 1)];
    let Some(header) = rest.get(..4) else {
        return true;
    };
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    record::HEADER_LEN.saturating_add(length) >= rest.len()
}

/// Deletes the log files numbered below `number`, oldest first.
pub fn delete_before(directory: &Path, extension: &str, number: u64) -> Result<()> {
    let mut deleted = false;
    for old in list(directory, extension)?
        .into_iter()
        .filter(|&old| old < number)
    {
        let path = file_path(directory, extension, old);
        std::fs::remove_file(&path).map_err(io("deleting log", &path))?;
        deleted = true;
    }
    if deleted {
        sync_directory(directory)?;
    }
    Ok(())
}

/// Total size of the log files.
pub fn bytes(directory: &Path, extension: &str) -> u64 {
    list(directory, extension)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|number| std::fs::metadata(file_path(directory, extension, number)).ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// Cuts `path` back to `length` bytes, durably.
pub fn truncate(path: &Path, length: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("opening to truncate", path))?;
    file.set_len(length).map_err(io("truncating", path))?;
    file.sync_all().map_err(io("syncing", path))
}

/// Makes creations, renames and deletions in `directory` durable.
pub fn sync_directory(directory: &Path) -> Result<()> {
    // Windows cannot open directories as files; its metadata journaling covers this.
    if cfg!(unix) {
        File::open(directory)
            .and_then(|handle| handle.sync_all())
            .map_err(io("syncing directory", PathBuf::from(directory)))?;
    }
    Ok(())
}

/// How far the log got, as tasks waiting in [`Log::durable`] see it.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Sequence number of the last record covered by an fsync.
    durable: u64,
    /// Nothing more will become durable (failed or shut down).
    is_stopped: bool,
}

/// A running log: the shared buffer and its thread. Appends from any thread.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    directory: PathBuf,
    extension: &'static str,
    /// Tells waiting tasks what became durable.
    progress_watch: watch::Sender<Progress>,
    settings: Settings,
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
    file: Option<Segment>,
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

impl Log {
    /// Starts a new log file numbered `file_number` in `directory` (files named
    /// `*.{extension}`) and its thread, named `thread_name`.
    pub fn start(
        directory: &Path,
        extension: &'static str,
        thread_name: &str,
        settings: Settings,
        file_number: u64,
    ) -> Result<Log> {
        let file = create(directory, extension, file_number)?;
        let shared = Arc::new(Shared {
            directory: directory.to_owned(),
            extension,
            progress_watch: watch::Sender::new(Progress::default()),
            settings,
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
            .name(thread_name.to_owned())
            .spawn(move || run(&thread_shared))
            .map_err(io("starting the log thread", directory))?;
        Ok(Log {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues encoded records; returns the sequence number to [`wait`](Log::wait) or [`durable`](Log::durable) for.
    /// Without `is_durable_wanted` (data nobody is acknowledged for), the record does not
    /// hasten the next fsync in `sync` mode, and waiting for it ends once it is written.
    pub fn append(&self, records: &[u8], is_durable_wanted: bool) -> Result<u64> {
        let mut queue = self.shared.queue.lock();
        check(&queue)?;
        queue.buffer.extend_from_slice(records);
        queue.appended += 1;
        let sequence = queue.appended;
        // (`batch` mode fsyncs on its own clock, whatever the record wants.)
        if is_durable_wanted && self.shared.settings.flush == Flush::Sync {
            // The thread looks for this under the lock before it sleeps: only the first
            // record since the last fsync needs to wake it (it may be idle); later ones
            // are found when it wakes, or when its fsync ends. Waking it for each record
            // cost a futex call and a context switch apiece under load.
            let is_already_due = queue.durable_wanted > queue.durable;
            queue.durable_wanted = sequence;
            drop(queue);
            if !is_already_due {
                self.shared.work.notify_one();
            }
        }
        // Otherwise the appender writes it itself in `wait`.
        Ok(sequence)
    }

    /// Waits until record `sequence` is durable (`sync`, when appended wanting durability)
    /// or written (`batch`, or not wanting durability). A record that only needs writing
    /// is written by the waiter itself, with everything queued before it, when nobody
    /// else is writing: no hand-over to the log's thread and back.
    pub fn wait(&self, sequence: u64, is_durable_wanted: bool) -> Result<()> {
        let is_sync_wait = is_durable_wanted && self.shared.settings.flush == Flush::Sync;
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
                return Err(Error::Failed(Arc::clone(failure)));
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
    fn write_queued(&self, mut queue: parking_lot::MutexGuard<'_, Queue>, mut file: Segment) {
        let mut chunk = std::mem::take(&mut queue.buffer);
        let sequence = queue.appended;
        drop(queue);
        let outcome = file
            .write(&chunk, self.shared.settings.preallocate)
            .map_err(io("writing log", &self.shared.directory));
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
    pub fn sync(&self) -> Result<()> {
        let mut queue = self.shared.queue.lock();
        check(&queue)?;
        let target = queue.appended;
        queue.is_sync_requested = true;
        self.shared.work.notify_one();
        while queue.durable < target {
            if let Some(failure) = &queue.failure {
                return Err(Error::Failed(Arc::clone(failure)));
            }
            self.shared.progress.wait(&mut queue);
        }
        Ok(())
    }

    /// Writes and fsyncs everything queued, then continues in a new file. Returns its
    /// number: every file below it is complete. The caller must keep appends out until this
    /// returns (the store holds its ingest lock), so the boundary is exact.
    pub fn rotate(&self) -> Result<u64> {
        let mut queue = self.shared.queue.lock();
        check(&queue)?;
        queue.is_rotate_requested = true;
        self.shared.work.notify_one();
        while queue.is_rotate_requested {
            if let Some(failure) = &queue.failure {
                return Err(Error::Failed(Arc::clone(failure)));
            }
            self.shared.progress.wait(&mut queue);
        }
        Ok(queue.file_number)
    }

    /// Deletes the files numbered below `number`.
    pub fn delete_before(&self, number: u64) -> Result<()> {
        delete_before(&self.shared.directory, self.shared.extension, number)
    }

    /// Resolves once record `sequence` (appended wanting durability) is durable: the
    /// asynchronous [`wait`](Log::wait), for tasks that must not block their thread.
    /// With [`Flush::Batch`] it still waits for the fsync.
    pub async fn durable(&self, sequence: u64) -> Result<()> {
        let mut watch = self.shared.progress_watch.subscribe();
        let reached = watch
            .wait_for(|progress| progress.durable >= sequence || progress.is_stopped)
            .await
            .map(|progress| progress.durable >= sequence);
        match reached {
            Ok(true) => Ok(()),
            _ => match &self.shared.queue.lock().failure {
                Some(failure) => Err(Error::Failed(Arc::clone(failure))),
                None => Err(Error::Closed),
            },
        }
    }

    /// The sequence number of the last record appended.
    pub fn appended(&self) -> u64 {
        self.shared.queue.lock().appended
    }

    /// Writes and fsyncs everything queued and stops the thread. Later appends fail with
    /// [`Error::Closed`].
    pub fn shutdown(&self) -> Result<()> {
        {
            let mut queue = self.shared.queue.lock();
            queue.is_shutdown = true;
        }
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                return Err(Error::ThreadPanicked);
            }
        }
        match &self.shared.queue.lock().failure {
            Some(failure) => Err(Error::Failed(Arc::clone(failure))),
            None => Ok(()),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "log did not shut down cleanly");
        }
    }
}

fn check(queue: &Queue) -> Result<()> {
    if let Some(failure) = &queue.failure {
        return Err(Error::Failed(Arc::clone(failure)));
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
        "log failed; refusing further writes"
    );
    queue.failure = Some(Arc::new(error));
}

fn create(directory: &Path, extension: &str, number: u64) -> Result<Segment> {
    let path = file_path(directory, extension, number);
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io("creating log", &path))?;
    sync_directory(directory)?;
    Ok(Segment {
        file,
        end: 0,
        allocated: 0,
    })
}

/// Zeros to write ahead from ([`Settings::preallocate`]).
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The log file being written, and where its records end.
#[derive(Debug)]
struct Segment {
    /// Positioned at `end`.
    file: File,
    /// Bytes of records in the file.
    end: u64,
    /// Bytes the file holds: its records, then zeros written ahead.
    allocated: u64,
}

impl Segment {
    /// Writes `records` after the others; then, if they went past the zeros written
    /// ahead, zeros up to the next multiple of `preallocate` (0: none).
    fn write(&mut self, records: &[u8], preallocate: u64) -> std::io::Result<()> {
        self.file.write_all(records)?;
        self.end += records.len() as u64;
        if preallocate > 0 && self.end > self.allocated {
            let target = (self.end / preallocate + 1).saturating_mul(preallocate);
            let mut at = self.end;
            while at < target {
                let length = ZEROS
                    .len()
                    .min(usize::try_from(target - at).unwrap_or(usize::MAX));
                self.file.write_all(&ZEROS[..length])?;
                at += length as u64;
            }
            self.file.seek(SeekFrom::Start(self.end))?;
            self.allocated = target;
        }
        Ok(())
    }

    /// Cuts off the zeros written ahead, durably: the file holds its records only.
    fn finish(&mut self) -> std::io::Result<()> {
        if self.allocated > self.end {
            self.file.set_len(self.end)?;
            self.file.sync_data()?;
            self.allocated = self.end;
        }
        Ok(())
    }
}

/// The log's thread: fsyncs what writers want durable (writing what is queued first),
/// and what was written without wanting it within the interval; rotates and stops on
/// request. Writes that need no fsync are done by the writers themselves (`Log::wait`).
fn run(shared: &Shared) {
    // The longest a written record may wait for its fsync (in `sync` mode, only records
    // nobody waits for wait at all).
    let interval = match shared.settings.flush {
        Flush::Sync => UNACKNOWLEDGED_SYNC_INTERVAL,
        Flush::Batch { interval } => interval,
    };
    let mut chunk = Vec::new();
    // When the last fsync began: with a group delay, the next waits until the delay has
    // passed since, so that records arriving meanwhile share it.
    let mut last_sync: Option<Instant> = None;
    loop {
        let mut queue = shared.queue.lock();
        // Wait for something to do, then for the file (a writer may hold it).
        loop {
            if queue.failure.is_some() {
                // A writer's write failed: nothing more is written.
                queue.is_stopped = true;
                let durable = queue.durable;
                drop(queue);
                shared.progress.notify_all();
                shared.progress_watch.send_replace(Progress {
                    durable,
                    is_stopped: true,
                });
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
            let is_urgent = queue.is_rotate_requested
                || queue.is_sync_requested
                || queue.is_shutdown
                || queue.buffer.len() >= GROUP_BYTES;
            let grouping_until = last_sync
                .map(|at| at + shared.settings.group_delay)
                .filter(|until| has_work && !is_urgent && Instant::now() < *until);
            if let Some(until) = grouping_until {
                // Busy: fsyncs follow each other closely. Let more records join this one.
                shared.work.wait_until(&mut queue, until);
                continue;
            }
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
        last_sync = (!shared.settings.group_delay.is_zero()).then(Instant::now);
        chunk.clear();
        std::mem::swap(&mut chunk, &mut queue.buffer);
        let sequence = queue.appended;
        let is_dirty = queue.dirty_since.is_some() || !chunk.is_empty();
        let is_rotate = queue.is_rotate_requested;
        let is_sync = queue.is_sync_requested;
        let is_shutdown = queue.is_shutdown;
        let next_number = queue.file_number + 1;
        drop(queue);

        let outcome = (|| -> Result<Option<Segment>> {
            if !chunk.is_empty() {
                file.write(&chunk, shared.settings.preallocate)
                    .map_err(io("writing log", &shared.directory))?;
            }
            // Everything that brings the thread here wants an fsync.
            if is_dirty {
                file.file
                    .sync_data()
                    .map_err(io("syncing log", &shared.directory))?;
            }
            if is_rotate || is_shutdown {
                // Before the next file exists: only the newest may end in zeros.
                file.finish()
                    .map_err(io("cutting log to its records", &shared.directory))?;
            }
            Ok(if is_rotate {
                Some(create(&shared.directory, shared.extension, next_number)?)
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
        let progress = Progress {
            durable: queue.durable,
            is_stopped: queue.is_stopped,
        };
        drop(queue);
        shared.progress.notify_all();
        shared.progress_watch.send_replace(progress);
        if is_done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXTENSION: &str = "log";

    /// An empty directory of its own and a `sync` log started in it (file 1).
    fn fresh_wal(name: &str) -> (PathBuf, Log) {
        let directory =
            std::env::temp_dir().join(format!("fleetwire-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let wal = Log::start(
            &directory,
            EXTENSION,
            "fleetwire-test-log",
            Settings::new(Flush::Sync),
            1,
        )
        .unwrap();
        (directory, wal)
    }

    fn progress(wal: &Log) -> (u64, u64) {
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
        let bytes = std::fs::read(file_path(&directory, EXTENSION, 1)).unwrap();
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
        let numbers = list(&directory, EXTENSION).unwrap();
        assert_eq!(numbers, (1..=5).collect::<Vec<_>>(), "four rotations");
        let mut next = [0u32; WRITERS as usize];
        for number in numbers {
            let bytes = std::fs::read(file_path(&directory, EXTENSION, number)).unwrap();
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

    /// Zeros written ahead: the records are all that is read back, before and after a
    /// crash (the file as it was then, zeros and all), and after a rotation and a clean
    /// shutdown each file holds its records only; a record torn in front of the zeros
    /// is a torn tail, a damaged one with records after it is corruption.
    #[test]
    fn zeros_written_ahead_are_not_records() {
        let directory = std::env::temp_dir().join(format!(
            "fleetwire-journal-preallocate-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        const STEP: u64 = 4096;
        let settings = Settings {
            preallocate: STEP,
            ..Settings::new(Flush::Sync)
        };
        let wal = Log::start(&directory, EXTENSION, "fleetwire-test-log", settings, 1).unwrap();
        let mut records = Vec::new();
        let mut texts = Vec::new();
        for n in 0..300 {
            let text = format!("record {n}");
            let mut record = Vec::new();
            record::frame(&mut record, text.as_bytes());
            let sequence = wal.append(&record, true).unwrap();
            wal.wait(sequence, true).unwrap();
            records.extend_from_slice(&record);
            texts.push(text);
        }
        let path = file_path(&directory, EXTENSION, 1);
        let crashed = std::fs::read(&path).unwrap();
        assert_eq!(crashed.len() as u64 % STEP, 0, "zeros up to a whole step");
        assert!(crashed.len() > records.len());
        assert_eq!(&crashed[..records.len()], &records[..]);
        assert!(crashed[records.len()..].iter().all(|&byte| byte == 0));

        // A rotation and a shutdown leave each file with its records only.
        assert_eq!(wal.rotate().unwrap(), 2);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            records.len() as u64
        );
        let mut last = Vec::new();
        record::frame(&mut last, b"after the rotation");
        let sequence = wal.append(&last, true).unwrap();
        wal.wait(sequence, true).unwrap();
        wal.shutdown().unwrap();
        let second = file_path(&directory, EXTENSION, 2);
        assert_eq!(std::fs::read(&second).unwrap(), last);

        // The crash image: replay reads the records, cuts the zeros, starts file 2.
        std::fs::remove_file(&second).unwrap();
        std::fs::write(&path, &crashed).unwrap();
        let read_back = |directory: &Path| {
            let mut seen = Vec::new();
            replay(directory, EXTENSION, 0, |payload| {
                seen.push(String::from_utf8_lossy(payload).into_owned());
                Ok(())
            })
            .map(|next| (seen, next))
        };
        let (seen, next) = read_back(&directory).unwrap();
        assert_eq!(seen, texts);
        assert_eq!(next, 2);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            records.len() as u64
        );

        // A record torn just before the zeros: the records before it.
        let mut torn = crashed.clone();
        let last_start = records.len() - (record::HEADER_LEN + texts[299].len());
        torn[records.len() - 1] ^= 0xFF;
        std::fs::write(&path, &torn).unwrap();
        let (seen, _) = read_back(&directory).unwrap();
        assert_eq!(seen, texts[..299]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64);

        // A damaged record with others after it (zeros or not): corruption.
        let mut damaged = crashed.clone();
        damaged[record::HEADER_LEN] ^= 0xFF;
        std::fs::write(&path, &damaged).unwrap();
        let error = read_back(&directory).unwrap_err();
        assert!(matches!(error, Error::Corrupt { offset: 0, .. }), "{error}");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    /// Records read a chunk at a time come back whole: ones across a chunk boundary,
    /// one larger than a chunk; a header announcing more than the file holds is damage
    /// at its offset (and costs no buffer of the announced size).
    #[test]
    fn records_are_read_back_across_chunks() {
        let directory =
            std::env::temp_dir().join(format!("fleetwire-journal-chunks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("records");
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        let mut size = 0;
        while size < 2 * READ_CHUNK {
            let payload = vec![(payloads.len() % 251) as u8; 1000 + payloads.len() % 7];
            size += payload.len() + record::HEADER_LEN;
            payloads.push(payload);
        }
        payloads.push(vec![7; READ_CHUNK + 10]);
        payloads.push(b"last".to_vec());
        let mut data = Vec::new();
        for payload in &payloads {
            record::frame(&mut data, payload);
        }
        std::fs::write(&path, &data).unwrap();
        let mut seen = Vec::new();
        let ending = read_records(&path, |payload| {
            seen.push(payload.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(ending, Ending::Complete);
        assert!(seen == payloads, "every record, whole and in order");

        let mut torn = data.clone();
        torn.extend_from_slice(&u32::MAX.to_le_bytes());
        torn.extend_from_slice(b"\x01\x02\x03\x04partial");
        std::fs::write(&path, &torn).unwrap();
        let mut count = 0;
        let ending = read_records(&path, |_| {
            count += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(count, payloads.len());
        assert!(
            matches!(ending, Ending::Damaged { offset, .. } if offset == data.len() as u64),
            "{ending:?}"
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn tasks_wait_for_durability_and_replay_cuts_a_torn_tail() {
        let (directory, wal) = fresh_wal("durable");
        let mut records = Vec::new();
        for text in ["one", "two", "three"] {
            record::frame(&mut records, text.as_bytes());
        }
        let sequence = wal.append(&records, true).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(wal.durable(sequence)).unwrap();
        assert!(progress(&wal).1 >= sequence);
        wal.shutdown().unwrap();
        assert!(
            matches!(
                runtime.block_on(wal.durable(sequence + 1)),
                Err(Error::Closed)
            ),
            "a log that stopped says so"
        );

        // A crash in the middle of a fourth record.
        let path = file_path(&directory, EXTENSION, 1);
        let mut torn = Vec::new();
        record::frame(&mut torn, b"four");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&torn[..torn.len() - 2]).unwrap();
        drop(file);
        let mut seen = Vec::new();
        let next = replay(&directory, EXTENSION, 0, |payload| {
            seen.push(String::from_utf8_lossy(payload).into_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["one", "two", "three"]);
        assert_eq!(next, 2);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            records.len() as u64,
            "the torn record is cut off"
        );

        // Damage before the last record of the newest file is an error naming the file.
        let mut data = std::fs::read(&path).unwrap();
        data[record::HEADER_LEN] ^= 0xFF;
        std::fs::write(&path, &data).unwrap();
        let error = replay(&directory, EXTENSION, 0, |_| Ok(())).unwrap_err();
        assert!(matches!(error, Error::Corrupt { offset: 0, .. }), "{error}");
        assert!(error.to_string().contains(&path.display().to_string()));
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
