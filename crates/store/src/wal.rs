//! The write-ahead log: every accepted batch is appended here before it is acknowledged,
//! and replayed into the head when the store opens.
//!
//! Files are `wal/{number:016x}.wal`, append-only sequences of checksummed records (see
//! [`record`](crate::record)), one record per write batch: the series the batch defines
//! first, then its points (`series id`, timestamp delta, value bits).
//!
//! The log itself (files, group commit, torn tails) is [`fleetwire_journal`]'s: this
//! module says what the store's records mean.
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

use std::path::Path;
use std::sync::Arc;

use fleetwire_journal::record::{self, Cursor};
use fleetwire_journal::{Flush, Log, Settings};

use crate::config::Durability;
use crate::error::{Error, Result};
use crate::types::{Point, SeriesId};

/// Directory of the log files inside the store's directory.
pub(crate) const DIRECTORY: &str = "wal";
const EXTENSION: &str = "wal";
const THREAD_NAME: &str = "fleetwire-wal";
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

/// Replays every log file in `directory` in order, handing each entry to `apply`. Returns
/// the number the next log file should have. A torn tail of the newest file is cut off.
pub(crate) fn replay(
    directory: &Path,
    mut apply: impl FnMut(Entry<'_>) -> Result<(), String>,
) -> Result<u64> {
    Ok(fleetwire_journal::replay(
        directory,
        EXTENSION,
        0,
        |payload| decode_batch(payload, &mut apply),
    )?)
}

/// Total size of the log files.
pub(crate) fn bytes(directory: &Path) -> u64 {
    fleetwire_journal::bytes(directory, EXTENSION)
}

/// The running log.
#[derive(Debug)]
pub(crate) struct Wal {
    log: Log,
}

impl Wal {
    /// Starts a new log file numbered `file_number` and its thread.
    pub(crate) fn start(directory: &Path, durability: Durability, file_number: u64) -> Result<Wal> {
        let flush = match durability {
            Durability::Sync => Flush::Sync,
            Durability::Batch { flush_interval } => Flush::Batch {
                interval: flush_interval,
            },
        };
        let log = Log::start(
            directory,
            EXTENSION,
            THREAD_NAME,
            Settings::new(flush),
            file_number,
        )?;
        Ok(Wal { log })
    }

    /// Queues encoded records; returns the sequence number to [`wait`](Wal::wait) for.
    /// Without `is_durable_wanted` (data nobody is acknowledged for), the record does not
    /// hasten the next fsync in `sync` mode, and waiting for it ends once it is written.
    pub(crate) fn append(&self, records: &[u8], is_durable_wanted: bool) -> Result<u64> {
        Ok(self.log.append(records, is_durable_wanted)?)
    }

    /// Waits until record `sequence` is durable (`sync`, when appended wanting durability)
    /// or written (`batch`, or not wanting durability).
    pub(crate) fn wait(&self, sequence: u64, is_durable_wanted: bool) -> Result<()> {
        Ok(self.log.wait(sequence, is_durable_wanted)?)
    }

    /// Fsyncs everything appended so far.
    pub(crate) fn sync(&self) -> Result<()> {
        Ok(self.log.sync()?)
    }

    /// Writes and fsyncs everything queued, then continues in a new file. Returns its
    /// number: every file below it is complete. The caller must keep appends out until this
    /// returns (the store holds its ingest lock), so the boundary is exact.
    pub(crate) fn rotate(&self) -> Result<u64> {
        Ok(self.log.rotate()?)
    }

    /// Deletes the files numbered below `number`.
    pub(crate) fn delete_before(&self, number: u64) -> Result<()> {
        Ok(self.log.delete_before(number)?)
    }

    /// Writes and fsyncs everything queued and stops the thread. Later appends fail with
    /// [`Error::Closed`].
    pub(crate) fn shutdown(&self) -> Result<()> {
        Ok(self.log.shutdown()?)
    }
}

impl From<fleetwire_journal::Error> for Error {
    fn from(error: fleetwire_journal::Error) -> Error {
        use fleetwire_journal::Error as Journal;
        match error {
            Journal::Io {
                operation,
                path,
                source,
            } => Error::Io {
                operation,
                path,
                source,
            },
            Journal::Corrupt {
                path,
                offset,
                detail,
            } => Error::CorruptWal {
                path,
                offset,
                detail,
            },
            Journal::Failed(cause) => Error::WalFailed(cause),
            Journal::ThreadPanicked => Error::WalThreadPanicked,
            Journal::Closed => Error::Closed,
            other => Error::WalFailed(Arc::new(other)),
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
        let record::Next::Record(payload, end) = record::next(&out, 0) else {
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
}
