//! The default [`StateStore`]: the broker's changes in a local log with group commit
//! (the journal crate, as the telemetry store's write-ahead log), compacted by
//! snapshots.
//!
//! Files in the state directory: `{n:016x}.log`, the changes in order, and
//! `{n:016x}.snapshot`, the state as it was when log `n` began (written as
//! `.snapshot.tmp`, renamed once complete and fsynced). Loading reads the newest
//! snapshot, then every log from its number on. Once a snapshot is complete the logs
//! and snapshots before it are deleted, so start-up reads at most one snapshot and what
//! was saved since.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fleetwire_journal::Ending;
use fleetwire_journal::record;
use fleetwire_journal::{Flush, Log, Settings};

use super::{Change, SnapshotWriter, StateError, StateStore, Ticket, codec};
use crate::auth::BoxFuture;

const LOG: &str = "log";
const SNAPSHOT: &str = "snapshot";
const THREAD_NAME: &str = "fleetwire-state";
/// A snapshot is due once the logs since the last one hold this much, or twice the last
/// snapshot's size if that is more.
const SNAPSHOT_AFTER_BYTES: u64 = 64 * 1024 * 1024;
/// Fsyncs under load at most every this often: acknowledgements of messages to
/// persistent sessions wait at most this much longer, and many more share an fsync (an
/// fsync after a quiet spell is not delayed). Each fsync costs the state's thread a
/// round of block-device notifications (VM exits on a virtual disk): 500 us here cost
/// 4.4-5.6 us of broker CPU per message of a persistent QoS 1 fan-in, 2 ms 3.8-4.4 us
/// (docs/BENCHMARKS.md).
const GROUP_DELAY: std::time::Duration = std::time::Duration::from_micros(2000);

/// Zeros written ahead of the log's records, a step at a time: an fsync of records
/// written into blocks the file already has writes only them, not the file's size and
/// block map too (0.31 -> 0.15 ms and half the CPU per fsync on this machine's ext4).
const PREALLOCATE: u64 = 4 * 1024 * 1024;

/// The broker's state in a local directory. Open it, [`load`](StateStore::load) it once
/// (which starts the log), then save.
#[derive(Debug)]
pub struct EmbeddedState {
    directory: PathBuf,
    flush: Flush,
    log: OnceLock<Arc<Log>>,
    /// Bytes saved since the last snapshot began.
    saved_bytes: AtomicU64,
    /// Size of the last snapshot (shared with the one being written).
    snapshot_bytes: Arc<AtomicU64>,
}

impl EmbeddedState {
    /// Opens (creating) the state directory. `flush` says when saved changes reach the
    /// disk; [`Flush::Sync`] is what "nothing acknowledged is lost" needs.
    pub fn open(directory: impl Into<PathBuf>, flush: Flush) -> Result<EmbeddedState, StateError> {
        let directory = directory.into();
        std::fs::create_dir_all(&directory)
            .map_err(io("creating the broker state directory", &directory))?;
        Ok(EmbeddedState {
            directory,
            flush,
            log: OnceLock::new(),
            saved_bytes: AtomicU64::new(0),
            snapshot_bytes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    fn log(&self) -> Result<&Arc<Log>, StateError> {
        self.log
            .get()
            .ok_or_else(|| StateError::Unavailable("the broker state was not loaded".to_owned()))
    }

    /// The newest complete snapshot's number.
    fn newest_snapshot(&self) -> Result<Option<u64>, StateError> {
        Ok(fleetwire_journal::list(&self.directory, SNAPSHOT)?
            .last()
            .copied())
    }

    fn snapshot_path(&self, number: u64) -> PathBuf {
        fleetwire_journal::file_path(&self.directory, SNAPSHOT, number)
    }
}

impl StateStore for EmbeddedState {
    fn save(&self, change: Change<'_>, is_waited: bool) -> Result<Ticket, StateError> {
        let log = self.log()?;
        let sequence = with_scratch(|out| {
            codec::encode(&change, out);
            self.saved_bytes
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            log.append(out, is_waited)
        })?;
        Ok(Ticket(sequence))
    }

    fn durable(&self, ticket: Ticket) -> BoxFuture<'static, Result<(), StateError>> {
        let log = self.log().cloned();
        Box::pin(async move { Ok(log?.durable(ticket.0).await?) })
    }

    fn load(
        &self,
        apply: &mut dyn FnMut(Change<'_>) -> Result<(), String>,
    ) -> Result<(), StateError> {
        if self.log.get().is_some() {
            return Err(StateError::Unavailable(
                "the broker state is loaded once, at start".to_owned(),
            ));
        }
        remove_unfinished_snapshots(&self.directory)?;
        let snapshot = self.newest_snapshot()?;
        let mut first_log = 1;
        if let Some(number) = snapshot {
            let path = self.snapshot_path(number);
            let size = std::fs::metadata(&path)
                .map_err(io("reading broker state snapshot", &path))?
                .len();
            self.snapshot_bytes.store(size, Ordering::Relaxed);
            // A snapshot is renamed into place only once complete: any damage is
            // corruption.
            let ending =
                fleetwire_journal::read_records(&path, |payload| codec::decode(payload, apply))?;
            if let Ending::Damaged { offset, detail } = ending {
                return Err(StateError::Corrupt(format!(
                    "{} at byte {offset}: {detail}",
                    path.display()
                )));
            }
            first_log = number;
        }
        let mut saved = 0u64;
        let next = fleetwire_journal::replay(&self.directory, LOG, first_log, |payload| {
            saved += (payload.len() + record::HEADER_LEN) as u64;
            codec::decode(payload, apply)
        })?;
        self.saved_bytes.store(saved, Ordering::Relaxed);
        let settings = Settings {
            group_delay: GROUP_DELAY,
            preallocate: PREALLOCATE,
            ..Settings::new(self.flush)
        };
        let log = Log::start(&self.directory, LOG, THREAD_NAME, settings, next.max(1))?;
        // Only this call sets it (checked above); a lost race would leave the thread
        // of the other log running, which cannot happen with one loader.
        let _ = self.log.set(Arc::new(log));
        Ok(())
    }

    fn wants_snapshot(&self) -> bool {
        let threshold = SNAPSHOT_AFTER_BYTES.max(2 * self.snapshot_bytes.load(Ordering::Relaxed));
        self.saved_bytes.load(Ordering::Relaxed) >= threshold
    }

    fn snapshot(&self) -> Result<Box<dyn SnapshotWriter>, StateError> {
        let log = Arc::clone(self.log()?);
        // Changes saved from here on go to log `number` and later: the snapshot is
        // followed by them, and may already contain some (replay is idempotent).
        let number = log.rotate()?;
        self.saved_bytes.store(0, Ordering::Relaxed);
        let path = self.snapshot_path(number).with_extension("snapshot.tmp");
        let file = File::create(&path).map_err(io("creating broker state snapshot", &path))?;
        Ok(Box::new(Snapshot {
            directory: self.directory.clone(),
            number,
            temporary: path,
            final_path: self.snapshot_path(number),
            file: BufWriter::with_capacity(1024 * 1024, file),
            buffer: Vec::new(),
            bytes: 0,
            snapshot_bytes: Arc::clone(&self.snapshot_bytes),
        }))
    }

    fn shutdown(&self) -> Result<(), StateError> {
        match self.log.get() {
            Some(log) => Ok(log.shutdown()?),
            None => Ok(()),
        }
    }
}

/// A buffer of the calling thread's, empty, for encoding a record: saves two
/// allocations per saved change (one per message on the busiest path). One that grew
/// for a large message is not kept.
fn with_scratch<T>(encode: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    const KEPT: usize = 64 * 1024;
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut out) => {
            out.clear();
            let result = encode(&mut out);
            if out.capacity() > KEPT {
                *out = Vec::new();
            }
            result
        }
        // (Not reentrant today; a fresh buffer if it ever is.)
        Err(_) => encode(&mut Vec::new()),
    })
}

/// A snapshot being written: records go to a temporary file, renamed when complete.
struct Snapshot {
    directory: PathBuf,
    /// The log it precedes.
    number: u64,
    temporary: PathBuf,
    final_path: PathBuf,
    file: BufWriter<File>,
    buffer: Vec<u8>,
    bytes: u64,
    snapshot_bytes: Arc<AtomicU64>,
}

impl Snapshot {
    fn io(&self, operation: &'static str) -> impl FnOnce(std::io::Error) -> StateError + use<> {
        io(operation, &self.temporary)
    }
}

impl SnapshotWriter for Snapshot {
    fn add(&mut self, change: Change<'_>) -> Result<(), StateError> {
        self.buffer.clear();
        codec::encode(&change, &mut self.buffer);
        self.bytes += self.buffer.len() as u64;
        let error = self.io("writing broker state snapshot");
        self.file.write_all(&self.buffer).map_err(error)
    }

    fn finish(self: Box<Self>) -> Result<(), StateError> {
        let mut snapshot = *self;
        let error = snapshot.io("writing broker state snapshot");
        snapshot.file.flush().map_err(error)?;
        let error = snapshot.io("syncing broker state snapshot");
        snapshot.file.get_ref().sync_all().map_err(error)?;
        let error = snapshot.io("renaming broker state snapshot");
        std::fs::rename(&snapshot.temporary, &snapshot.final_path).map_err(error)?;
        fleetwire_journal::sync_directory(&snapshot.directory)?;
        // Everything before log `number` is in the snapshot now.
        fleetwire_journal::delete_before(&snapshot.directory, LOG, snapshot.number)?;
        fleetwire_journal::delete_before(&snapshot.directory, SNAPSHOT, snapshot.number)?;
        snapshot
            .snapshot_bytes
            .store(snapshot.bytes, Ordering::Relaxed);
        tracing::debug!(
            path = %snapshot.final_path.display(),
            bytes = snapshot.bytes,
            "broker state snapshot written"
        );
        Ok(())
    }
}

/// Wraps an I/O error with what was being done, and to which file.
fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError + use<> {
    let path = path.to_owned();
    move |source| {
        StateError::Log(fleetwire_journal::Error::Io {
            operation,
            path,
            source,
        })
    }
}

/// Deletes snapshots a crash left half-written.
fn remove_unfinished_snapshots(directory: &Path) -> Result<(), StateError> {
    let entries = std::fs::read_dir(directory)
        .map_err(io("listing the broker state directory", directory))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.ends_with(".snapshot.tmp"))
        {
            std::fs::remove_file(&path)
                .map_err(io("removing an unfinished broker state snapshot", &path))?;
        }
    }
    Ok(())
}
