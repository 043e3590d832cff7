//! The store: opening and recovery, the write path, queries across head and segments,
//! flush, and the background threads. Compaction and retention, which change the segment
//! set on the `fleetwire-compact` thread, are in `maintenance.rs`.
//!
//! Who owns what:
//! - `catalog` (read-write lock): series names and ids. Writers read it to resolve ids; a
//!   batch with new series takes the write lock, under the ingest lock.
//! - `ingest` (mutex): orders the write-ahead log. A batch is appended to the log and
//!   inserted into the head under it, so a series is always defined in the log before its
//!   first use, and a flush sees an exact boundary between log files and head contents.
//! - `state` (read-write lock): the active head, the frozen heads being flushed, the
//!   segment set (copy-on-write behind an `Arc`) and the latest value of every series.
//!   Queries hold it only to copy head points and clone the segment list; block reads
//!   happen outside it.
//! - `flush_lock`: one flush at a time. `compaction_lock`: one compaction or retention
//!   pass at a time. A flush never waits for a compaction: both read the segment set and
//!   swap in a changed copy within one hold of `state`'s write lock, so neither loses the
//!   other's change, and a flushed segment always has a higher sequence number than any
//!   segment a running compaction took as input.
//!
//! Two background threads: `fleetwire-store` flushes full or old heads,
//! `fleetwire-compact` compacts and applies retention. A compaction of many segments takes
//! seconds; on the flushing thread it kept the head from being flushed, writers reached the
//! backpressure limit and every write waited for it.
//!
//! Lock order: flush → ingest → catalog → state → the log's queue; compaction → state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::catalog::{self, Catalog, sync_directory};
use crate::config::{CorruptSegmentPolicy, StoreConfig};
use crate::error::{Error, Result, io};
use crate::head::Head;
use crate::query::{self, Run, Windows};
use crate::segment::{self, Builder, Segment, SegmentInfo};
use crate::types::{Aggregation, Point, Sample, SeriesId, Stats};
use crate::wal::{self, Entry, Wal};
use fleetwire_time::Timestamp;

/// Longest device id or field name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Segments by partition (`start`, `duration`), each list ordered by sequence number.
pub(crate) type SegmentSet = BTreeMap<(i64, i64), Vec<Arc<Segment>>>;

/// An embedded time-series store in one directory. Cheap to clone; every clone is the same
/// store, usable from any thread.
///
/// Dropping the last clone stops the background threads and syncs the write-ahead log;
/// [`close`](Store::close) also flushes the head, so the next open replays nothing.
#[derive(Debug, Clone)]
pub struct Store {
    handle: Arc<Handle>,
}

/// Stops the background threads when the last `Store` clone goes away.
#[derive(Debug)]
struct Handle {
    inner: Arc<Inner>,
    maintenance: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.stop_maintenance(&self.maintenance);
        if let Err(error) = self.inner.wal.shutdown() {
            tracing::error!(%error, "store dropped without a clean write-ahead log shutdown");
        }
    }
}

/// What every clone and both background threads share. The fields `maintenance.rs`
/// works with are visible to the crate.
#[derive(Debug)]
pub(crate) struct Inner {
    directory: PathBuf,
    pub(crate) segment_directory: PathBuf,
    wal_directory: PathBuf,
    pub(crate) config: StoreConfig,
    catalog: RwLock<Catalog>,
    ingest: Mutex<()>,
    pub(crate) state: RwLock<State>,
    wal: Wal,
    flush_lock: Mutex<()>,
    pub(crate) compaction_lock: Mutex<()>,
    next_seq: AtomicU64,
    is_closed: AtomicBool,
    pub(crate) signal: Mutex<Signal>,
    wake: Condvar,
}

/// Work for the background threads, and whether they should stop.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    pub(crate) is_stopping: bool,
    is_flush_wanted: bool,
    pub(crate) is_compaction_wanted: bool,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    head: Head,
    frozen: Vec<Arc<Frozen>>,
    pub(crate) segments: Arc<SegmentSet>,
    latest: Vec<Option<(i64, f64)>>,
}

impl State {
    #[inline]
    fn record_latest(&mut self, id: SeriesId, timestamp: i64, value: f64) {
        let index = id.index();
        if index >= self.latest.len() {
            self.latest.resize(index + 1, None);
        }
        match self.latest[index] {
            Some((newest, _)) if timestamp < newest => {}
            _ => self.latest[index] = Some((timestamp, value)),
        }
    }
}

/// A head being written to segments, and the first log file it does not cover.
#[derive(Debug)]
struct Frozen {
    head: Head,
    wal_boundary: u64,
}

impl Store {
    /// Opens the store in `directory`, creating it if needed: loads and verifies the
    /// segments, replays the write-ahead log into the head (cutting off a torn tail) and
    /// starts the log writer and the background threads.
    ///
    /// A damaged segment fails the open with [`Error::CorruptSegment`] naming the file, or
    /// is quarantined, as [`StoreConfig::on_corrupt_segment`] says. Bad files never panic.
    pub fn open(directory: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        config.validate()?;
        let directory = directory.as_ref().to_owned();
        let segment_directory = directory.join(segment::DIRECTORY);
        let wal_directory = directory.join(wal::DIRECTORY);
        for path in [&directory, &segment_directory, &wal_directory] {
            std::fs::create_dir_all(path).map_err(io("creating directory", path))?;
        }
        let mut catalog = Catalog::load(&directory)?;
        let segments = load_segments(&segment_directory, config.on_corrupt_segment)?;

        let mut state = State::default();
        let mut by_age: Vec<&Arc<Segment>> = segments.values().flatten().collect();
        by_age.sort_by_key(|segment| segment.info().max_seq);
        for segment in &by_age {
            for id in segment.series() {
                if let Some(block) = segment.blocks(id).last() {
                    state.record_latest(id, block.summary.max_timestamp, block.summary.last);
                }
            }
        }
        let next_seq = by_age
            .last()
            .map_or(1, |segment| segment.info().max_seq + 1);

        let mut head = Head::default();
        let mut replayed = 0u64;
        let next_wal = wal::replay(&wal_directory, |entry| match entry {
            Entry::Series { id, device, field } => catalog.define(id, device, field),
            Entry::Point {
                id,
                timestamp,
                value,
            } => {
                if id >= catalog.len() as u64 {
                    return Err(format!(
                        "point of series #{id}, which no earlier record defines"
                    ));
                }
                let id = SeriesId::new(id as u32);
                head.insert(id, timestamp, value);
                state.record_latest(id, timestamp, value);
                replayed += 1;
                Ok(())
            }
        })?;
        for segment in &by_age {
            if let Some(unknown) = segment
                .series()
                .into_iter()
                .find(|id| id.index() >= catalog.len())
            {
                return Err(Error::CorruptCatalog {
                    path: directory.join(catalog::FILE_NAME),
                    detail: format!(
                        "segment {} holds {unknown}, the catalog and log define only {} series",
                        segment.path().display(),
                        catalog.len()
                    ),
                });
            }
        }
        if replayed > 0 {
            tracing::info!(points = replayed, "replayed the write-ahead log");
        }
        state.head = head;
        state.segments = Arc::new(segments);

        let wal = Wal::start(&wal_directory, config.durability, next_wal)?;
        let inner = Arc::new(Inner {
            directory,
            segment_directory,
            wal_directory,
            config,
            catalog: RwLock::new(catalog),
            ingest: Mutex::new(()),
            state: RwLock::new(state),
            wal,
            flush_lock: Mutex::new(()),
            compaction_lock: Mutex::new(()),
            next_seq: AtomicU64::new(next_seq),
            is_closed: AtomicBool::new(false),
            signal: Mutex::new(Signal::default()),
            wake: Condvar::new(),
        });
        let handle = Arc::new(Handle {
            inner: Arc::clone(&inner),
            maintenance: Mutex::new(Vec::new()),
        });
        // Dropping `handle` on an error stops whichever thread did start.
        for (name, work) in [
            ("fleetwire-store", Inner::flush_in_background as fn(&Inner)),
            ("fleetwire-compact", Inner::compact_in_background),
        ] {
            let thread_inner = Arc::clone(&inner);
            let thread = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || work(&thread_inner))
                .map_err(io(
                    "starting the store's background threads",
                    &inner.directory,
                ))?;
            handle.maintenance.lock().push(thread);
        }
        Ok(Store { handle })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.handle.inner
    }

    /// Writes a batch of points: all of them or, on error, none. Thread-safe; concurrent
    /// batches share fsyncs.
    ///
    /// Returns once the batch is durable (`sync`) or handed to the operating system
    /// (`batch`). A point with the series and timestamp of an earlier one replaces it: the
    /// last write wins, in memory, on disk and after recovery.
    pub fn write(&self, points: &[Point<'_>]) -> Result<()> {
        self.inner().write(points, true, || {})
    }

    /// [`Store::write`], calling `appended` once the batch is in the log and visible to
    /// queries but before waiting for its fsync (not called when the batch is refused
    /// before that). Lets a caller act on data as soon as it is accepted, as a broker's
    /// rule engine would, while its writer is acknowledged only once durable.
    pub fn write_then(&self, points: &[Point<'_>], appended: impl FnOnce()) -> Result<()> {
        self.inner().write(points, true, appended)
    }

    /// [`Store::write_then`] for data nobody is acknowledged for (MQTT QoS 0): returns
    /// once the batch is handed to the operating system, and does not make the log fsync
    /// sooner than it would anyway. In `sync` durability such data is fsynced by the next
    /// acknowledged write, or within 100 ms; a power cut can lose that window of it, as
    /// `batch` durability would (a process crash loses nothing written).
    pub fn write_unacknowledged_then(
        &self,
        points: &[Point<'_>],
        appended: impl FnOnce(),
    ) -> Result<()> {
        self.inner().write(points, false, appended)
    }

    /// The newest point of every field of `device`, by field name (empty for an unknown
    /// device). Served from memory.
    pub fn latest(&self, device: &str) -> BTreeMap<String, Sample> {
        let inner = self.inner();
        let catalog = inner.catalog.read();
        let Some(fields) = catalog.fields(device) else {
            return BTreeMap::new();
        };
        let state = inner.state.read();
        fields
            .iter()
            .filter_map(|(field, id)| {
                let (timestamp, value) = state.latest.get(id.index()).copied().flatten()?;
                Some((
                    field.clone(),
                    Sample {
                        timestamp: Timestamp::from_millis(timestamp),
                        value,
                    },
                ))
            })
            .collect()
    }

    /// The raw points of one field with `from <= timestamp < to`, oldest first, one per
    /// timestamp (the last written). Empty for an unknown device or field.
    pub fn range(
        &self,
        device: &str,
        field: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Sample>> {
        check_range(from, to)?;
        let inner = self.inner();
        let Some(id) = inner.catalog.read().get(device, field) else {
            return Ok(Vec::new());
        };
        let (from, to) = (from.as_millis(), to.as_millis());
        let (segments, head_runs) = inner.snapshot(id, from, to);
        let mut runs = Vec::with_capacity(segments.len() + head_runs.len());
        for segment in &segments {
            let mut run: Run = (Vec::new(), Vec::new());
            for block in segment.blocks(id) {
                if block.summary.max_timestamp >= from && block.summary.min_timestamp < to {
                    segment.read_block(block, &mut run.0, &mut run.1)?;
                }
            }
            query::trim(&mut run, from, to);
            runs.push(run);
        }
        runs.extend(head_runs);
        let (timestamps, values) = query::merge_runs(runs);
        Ok(timestamps
            .into_iter()
            .zip(values)
            .map(|(timestamp, value)| Sample {
                timestamp: Timestamp::from_millis(timestamp),
                value,
            })
            .collect())
    }

    /// One value per window of `every` with points, for `from <= timestamp < to`. Windows
    /// are aligned to multiples of `every` since the epoch, and each sample is stamped with
    /// its window's start. `every` is whole milliseconds, at least one.
    ///
    /// Blocks lying inside one window are answered from their stored summary without being
    /// read. Sums combine per-block sums, so they may differ from a sequential sum in the
    /// last bits.
    pub fn aggregate(
        &self,
        device: &str,
        field: &str,
        from: Timestamp,
        to: Timestamp,
        every: Duration,
        aggregation: Aggregation,
    ) -> Result<Vec<Sample>> {
        check_range(from, to)?;
        let every = i64::try_from(every.as_millis())
            .ok()
            .filter(|&every| every >= 1)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("every: expected at least 1ms, got {every:?}"))
            })?;
        let inner = self.inner();
        let Some(id) = inner.catalog.read().get(device, field) else {
            return Ok(Vec::new());
        };
        let (from, to) = (from.as_millis(), to.as_millis());
        let (segments, head_runs) = inner.snapshot(id, from, to);

        // Every source piece in priority order (oldest first) with its time span.
        enum Piece<'a> {
            Block(&'a Segment, &'a segment::BlockMeta),
            Head(Run),
        }
        let mut pieces: Vec<(i64, i64, Piece<'_>)> = Vec::new();
        for segment in &segments {
            for block in segment.blocks(id) {
                let summary = &block.summary;
                if summary.max_timestamp >= from && summary.min_timestamp < to {
                    pieces.push((
                        summary.min_timestamp,
                        summary.max_timestamp,
                        Piece::Block(segment, block),
                    ));
                }
            }
        }
        for run in head_runs {
            if let (Some(&first), Some(&last)) = (run.0.first(), run.0.last()) {
                pieces.push((first, last, Piece::Head(run)));
            }
        }
        let overlapped = overlapping(
            &pieces
                .iter()
                .map(|(first, last, _)| (*first, *last))
                .collect::<Vec<_>>(),
        );

        let mut windows = Windows::new(every);
        let mut contested = Vec::new();
        for ((first, last, piece), is_overlapped) in pieces.into_iter().zip(overlapped) {
            let mut run = match piece {
                Piece::Block(_, block)
                    if !is_overlapped
                        && from <= first
                        && last < to
                        && windows.window(first) == windows.window(last) =>
                {
                    windows.add_summary(&block.summary);
                    continue;
                }
                Piece::Block(segment, block) => {
                    let mut run: Run = (Vec::new(), Vec::new());
                    segment.read_block(block, &mut run.0, &mut run.1)?;
                    query::trim(&mut run, from, to);
                    run
                }
                Piece::Head(run) => run,
            };
            if is_overlapped {
                contested.push(std::mem::take(&mut run));
            } else {
                windows.add_run(&run.0, &run.1);
            }
        }
        let (timestamps, values) = query::merge_runs(contested);
        windows.add_run(&timestamps, &values);
        Ok(windows.finish(aggregation))
    }

    /// Writes the head to segments now and deletes the log files it covered.
    pub fn flush(&self) -> Result<()> {
        self.inner().flush()
    }

    /// Fsyncs everything written so far. Only useful in `batch` durability.
    pub fn sync(&self) -> Result<()> {
        self.inner().wal.sync()
    }

    /// Merges the segments of every partition that has more than one into one, dropping
    /// overwritten points. The compaction thread compacts by size tiers on its own; this is
    /// the full version, for tests, benchmarks and maintenance windows.
    pub fn compact(&self) -> Result<()> {
        self.inner().compact_all()
    }

    /// Deletes the partitions that ended more than the configured retention before `now`,
    /// returning how many. The compaction thread calls this every minute with the wall
    /// clock; without retention configured it does nothing.
    pub fn enforce_retention(&self, now: Timestamp) -> Result<usize> {
        self.inner().enforce_retention(now)
    }

    /// The id of a series, if it was ever written.
    pub fn series_id(&self, device: &str, field: &str) -> Option<SeriesId> {
        self.inner().catalog.read().get(device, field)
    }

    /// Counts and sizes.
    pub fn stats(&self) -> Stats {
        let inner = self.inner();
        let series = inner.catalog.read().len() as u64;
        let state = inner.state.read();
        let mut stats = Stats {
            series,
            head_points: (state.head.points()
                + state
                    .frozen
                    .iter()
                    .map(|frozen| frozen.head.points())
                    .sum::<usize>()) as u64,
            partitions: state.segments.len() as u64,
            ..Stats::default()
        };
        for segment in state.segments.values().flatten() {
            stats.segments += 1;
            stats.segment_points += segment.points();
            stats.segment_bytes += segment.bytes();
        }
        drop(state);
        stats.wal_bytes = wal::bytes(&inner.wal_directory);
        stats
    }

    /// Flushes the head, stops the background thread and the log writer. Other clones of
    /// this store get [`Error::Closed`] from then on.
    pub fn close(self) -> Result<()> {
        let inner = self.inner();
        let flushed = inner.flush();
        inner.is_closed.store(true, Ordering::SeqCst);
        inner.stop_maintenance(&self.handle.maintenance);
        let stopped = inner.wal.shutdown();
        flushed.and(stopped)
    }
}

fn check_range(from: Timestamp, to: Timestamp) -> Result<()> {
    if from > to {
        return Err(Error::InvalidArgument(format!(
            "expected from <= to, got from {from} and to {to}"
        )));
    }
    Ok(())
}

fn validate(points: &[Point<'_>]) -> Result<()> {
    for (index, point) in points.iter().enumerate() {
        for (what, name) in [("device", point.device), ("field", point.field)] {
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return Err(Error::InvalidPoint {
                    index,
                    detail: format!(
                        "expected a {what} name of 1 to {MAX_NAME_LEN} bytes, got {} bytes",
                        name.len()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// For spans `(first, last)`, whether each intersects any other.
fn overlapping(spans: &[(i64, i64)]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&index| spans[index].0);
    let mut overlapped = vec![false; spans.len()];
    let mut reach: Option<i64> = None;
    for (position, &index) in order.iter().enumerate() {
        let (first, last) = spans[index];
        // Earlier spans start no later; one of them overlaps if the furthest reaches here.
        if reach.is_some_and(|reach| first <= reach) {
            overlapped[index] = true;
        }
        // Later spans start no earlier than the next one.
        if order
            .get(position + 1)
            .is_some_and(|&next| spans[next].0 <= last)
        {
            overlapped[index] = true;
        }
        reach = Some(reach.map_or(last, |reach| reach.max(last)));
    }
    overlapped
}

/// Loads and verifies every segment; quarantines or fails on damage; removes temporary
/// files and segments made redundant by a compaction that finished writing its output.
fn load_segments(directory: &Path, policy: CorruptSegmentPolicy) -> Result<SegmentSet> {
    let (paths, temporary) = segment::list(directory)?;
    for path in temporary {
        tracing::warn!(path = %path.display(), "removing an unfinished segment left by a crash");
        std::fs::remove_file(&path).map_err(io("removing unfinished segment", &path))?;
    }
    let mut loaded: Vec<Arc<Segment>> = Vec::with_capacity(paths.len());
    for path in paths {
        match Segment::open(&path) {
            Ok(segment) => loaded.push(Arc::new(segment)),
            Err(error @ Error::CorruptSegment { .. }) => match policy {
                CorruptSegmentPolicy::Fail => return Err(error),
                CorruptSegmentPolicy::Quarantine => {
                    let quarantined = path.with_extension("seg.corrupt");
                    tracing::error!(
                        %error,
                        quarantined = %quarantined.display(),
                        "QUARANTINED a corrupt segment: its points are not served; inspect or restore the file"
                    );
                    std::fs::rename(&path, &quarantined)
                        .map_err(io("quarantining segment", &path))?;
                }
            },
            Err(error) => return Err(error),
        }
    }
    let mut set = SegmentSet::new();
    for segment in &loaded {
        let info = segment.info();
        let is_redundant = loaded.iter().any(|other| {
            let other_info = other.info();
            !Arc::ptr_eq(segment, other)
                && other_info.partition_start == info.partition_start
                && other_info.partition_duration == info.partition_duration
                && other_info.min_seq <= info.min_seq
                && info.max_seq <= other_info.max_seq
                && (other_info.min_seq, other_info.max_seq) != (info.min_seq, info.max_seq)
        });
        if is_redundant {
            tracing::info!(path = %segment.path().display(), "removing a segment already merged by compaction");
            std::fs::remove_file(segment.path())
                .map_err(io("removing merged segment", segment.path()))?;
            continue;
        }
        set.entry((info.partition_start, info.partition_duration))
            .or_default()
            .push(Arc::clone(segment));
    }
    for segments in set.values_mut() {
        segments.sort_by_key(|segment| segment.info().min_seq);
    }
    sync_directory(directory)?;
    Ok(set)
}

impl Inner {
    fn write(
        &self,
        points: &[Point<'_>],
        is_durable_wanted: bool,
        appended: impl FnOnce(),
    ) -> Result<()> {
        if self.is_closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if points.is_empty() {
            return Ok(());
        }
        validate(points)?;
        let mut ids = Vec::with_capacity(points.len());
        let is_known = {
            let catalog = self.catalog.read();
            // Points come in runs of one device (a message's fields): its fields are
            // looked up once per run, and the run's points share one name (same slice).
            let mut run: Option<(&str, &catalog::NameMap<SeriesId>)> = None;
            points.iter().all(|point| {
                let fields = match run {
                    Some((device, fields)) if same_name(device, point.device) => fields,
                    _ => match catalog.fields(point.device) {
                        Some(fields) => {
                            run = Some((point.device, fields));
                            fields
                        }
                        None => return false,
                    },
                };
                match fields.get(point.field) {
                    Some(&id) => {
                        ids.push(id);
                        true
                    }
                    None => false,
                }
            })
        };
        let mut record = Vec::new();
        if is_known {
            wal::encode_batch(&mut record, &[], &ids, points);
        }
        let sequence = {
            let _ingest = self.ingest.lock();
            if !is_known {
                let mut catalog = self.catalog.write();
                ids.clear();
                let mut new_series = Vec::new();
                for point in points {
                    let (id, is_new) = catalog.intern(point.device, point.field);
                    if is_new {
                        new_series.push((id, point.device, point.field));
                    }
                    ids.push(id);
                }
                drop(catalog);
                wal::encode_batch(&mut record, &new_series, &ids, points);
            }
            let sequence = self.wal.append(&record, is_durable_wanted)?;
            let mut state = self.state.write();
            for (&id, point) in ids.iter().zip(points) {
                let timestamp = point.timestamp.as_millis();
                state.head.insert(id, timestamp, point.value);
                state.record_latest(id, timestamp, point.value);
            }
            if state.head.points() >= self.config.head_max_points {
                drop(state);
                self.signal.lock().is_flush_wanted = true;
                self.wake.notify_all();
            }
            sequence
        };
        appended();
        self.wal.wait(sequence, is_durable_wanted)?;
        // Backpressure: when the background flush falls behind, writers flush themselves
        // rather than let the head grow without bound.
        let unflushed = {
            let state = self.state.read();
            state.head.points()
                + state
                    .frozen
                    .iter()
                    .map(|frozen| frozen.head.points())
                    .sum::<usize>()
        };
        if unflushed >= self.config.head_max_points.saturating_mul(2) {
            // Waits for a flush in progress, then flushes the head if it is still too big.
            self.flush_at(self.config.head_max_points.saturating_mul(2))?;
        }
        Ok(())
    }

    /// Segments that may hold `id` in `from..to`, oldest first, and copies of the head
    /// points in range, oldest head first.
    fn snapshot(&self, id: SeriesId, from: i64, to: i64) -> (Vec<Arc<Segment>>, Vec<Run>) {
        let state = self.state.read();
        let mut segments: Vec<Arc<Segment>> = state
            .segments
            .range(..(to, i64::MIN))
            .filter(|((start, duration), _)| start.saturating_add(*duration) > from)
            .flat_map(|(_, segments)| segments)
            .filter(|segment| !segment.blocks(id).is_empty())
            .cloned()
            .collect();
        let mut runs = Vec::new();
        for head in state
            .frozen
            .iter()
            .map(|frozen| &frozen.head)
            .chain([&state.head])
        {
            if let Some(series) = head.series(id) {
                let run = series.range(from, to);
                if !run.0.is_empty() {
                    runs.push(run);
                }
            }
        }
        drop(state);
        segments.sort_by_key(|segment| segment.info().max_seq);
        (segments, runs)
    }

    fn flush(&self) -> Result<()> {
        self.flush_at(1)
    }

    /// Flushes the head if it holds at least `threshold` points (checked once the flush
    /// lock is held, so writers queueing behind one flush do not each flush a tiny head),
    /// then any head frozen by an earlier, failed flush.
    fn flush_at(&self, threshold: usize) -> Result<()> {
        let _flush = self.flush_lock.lock();
        {
            let _ingest = self.ingest.lock();
            if self.state.read().head.points() >= threshold {
                let wal_boundary = self.wal.rotate()?;
                let mut state = self.state.write();
                let head = std::mem::take(&mut state.head);
                state.frozen.push(Arc::new(Frozen { head, wal_boundary }));
            }
        }
        self.catalog.write().persist(&self.directory)?;
        let frozen_heads = self.state.read().frozen.clone();
        for frozen in frozen_heads {
            let started = Instant::now();
            let written = self.write_segments(&frozen.head)?;
            let files = written.len();
            {
                let mut state = self.state.write();
                let mut set = (*state.segments).clone();
                for segment in written {
                    let info = *segment.info();
                    let list = set
                        .entry((info.partition_start, info.partition_duration))
                        .or_default();
                    list.push(segment);
                    list.sort_by_key(|segment| segment.info().min_seq);
                }
                state.segments = Arc::new(set);
                state.frozen.retain(|other| !Arc::ptr_eq(other, &frozen));
            }
            self.wal.delete_before(frozen.wal_boundary)?;
            tracing::debug!(
                points = frozen.head.points(),
                files,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "flushed the head to segments"
            );
            self.signal.lock().is_compaction_wanted = true;
            self.wake.notify_all();
        }
        Ok(())
    }

    /// Encodes a head into one segment per partition it touches.
    fn write_segments(&self, head: &Head) -> Result<Vec<Arc<Segment>>> {
        let partition = self.config.partition_millis();
        let cutoff = self.retention_cutoff(Timestamp::now());
        let mut builders: BTreeMap<i64, Builder> = BTreeMap::new();
        for (id, series) in head.iter() {
            let (timestamps, values) = series.all();
            let mut start = 0;
            while start < timestamps.len() {
                let index = timestamps[start].div_euclid(partition);
                let end = start
                    + timestamps[start..]
                        .partition_point(|&timestamp| timestamp.div_euclid(partition) == index);
                let partition_start = index.saturating_mul(partition);
                let is_expired = cutoff
                    .is_some_and(|cutoff| partition_start.saturating_add(partition) <= cutoff);
                if !is_expired {
                    let builder = builders.entry(index).or_insert_with(|| {
                        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
                        Builder::new(SegmentInfo {
                            partition_start,
                            partition_duration: partition,
                            min_seq: seq,
                            max_seq: seq,
                            level: 0,
                        })
                    });
                    builder.add_series(id, &timestamps[start..end], &values[start..end]);
                }
                start = end;
            }
        }
        builders
            .into_values()
            .filter(|builder| !builder.is_empty())
            .map(|builder| builder.write(&self.segment_directory).map(Arc::new))
            .collect()
    }

    /// Waits until `wanted` says there is work, the maintenance interval passes or the
    /// store stops; clears the flag and returns false once stopping.
    pub(crate) fn wait_for_work(&self, wanted: fn(&mut Signal) -> &mut bool) -> bool {
        let mut signal = self.signal.lock();
        if !signal.is_stopping && !*wanted(&mut signal) {
            self.wake
                .wait_for(&mut signal, self.config.maintenance_interval);
        }
        *wanted(&mut signal) = false;
        !signal.is_stopping
    }

    /// The `fleetwire-store` thread: flushes a full or old head (and a frozen one left by
    /// a failed flush).
    fn flush_in_background(&self) {
        while self.wait_for_work(|signal| &mut signal.is_flush_wanted) {
            let (points, since, has_frozen) = {
                let state = self.state.read();
                (
                    state.head.points(),
                    state.head.since(),
                    !state.frozen.is_empty(),
                )
            };
            let is_old = since.is_some_and(|since| since.elapsed() >= self.config.head_max_age);
            if points >= self.config.head_max_points || is_old || has_frozen {
                if let Err(error) = self.flush() {
                    tracing::error!(%error, "flushing the head failed; the data stays in the write-ahead log, retrying");
                }
            }
        }
    }

    fn stop_maintenance(&self, threads: &Mutex<Vec<JoinHandle<()>>>) {
        self.signal.lock().is_stopping = true;
        self.wake.notify_all();
        for thread in threads.lock().drain(..) {
            if thread.join().is_err() {
                tracing::error!("a background thread of the store panicked");
            }
        }
    }
}

/// Whether two names are equal, comparing addresses first: points of one message share
/// their device name.
#[inline]
fn same_name(a: &str, b: &str) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}
