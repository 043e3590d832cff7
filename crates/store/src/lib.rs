//! Fleetwire's embedded time-series engine: durable, compressed storage of device telemetry
//! and the queries the platform needs (latest value, raw range, windowed aggregates).
//!
//! A point is a series key (device id, field name), a [`Timestamp`] in milliseconds and an
//! `f64`. Writes go to a write-ahead log with group commit and into an in-memory head; the
//! head is flushed to immutable, compressed, time-partitioned segment files; compaction
//! merges segments; retention deletes whole partitions.
//!
//! ```text
//! write ──▶ WAL (checksummed records, one fsync per group) ──▶ head (per series, sorted)
//!                                                                 │ flush (size or age)
//! queries ◀── merge, last write wins ◀── segments/<seq>.seg ◀─────┘
//!                                          │ compaction, retention
//! ```
//!
//! - **Durability**: in [`Durability::Sync`] a [`Store::write`] returns after the fsync
//!   that covers its batch; concurrent writers share fsyncs. [`Durability::Batch`] returns
//!   after the write to the operating system and fsyncs at most every `flush_interval`,
//!   the window a power cut can lose.
//! - **Duplicates**: a point with the series and timestamp of an earlier one replaces it
//!   (last write wins), in every query, after flushes, compactions and recovery.
//! - **Recovery**: [`Store::open`] verifies every segment checksum, replays the log and cuts
//!   off a torn tail left by a crash mid-write. Damaged files are reported as errors naming
//!   the file, never as panics.
//! - **Compression**: delta-of-delta timestamps; values as scaled decimals in Rice code when
//!   they are exact decimals (most sensor data), else Gorilla XOR. See the `block` module.
//!
//! The crate is synchronous and knows nothing of MQTT, HTTP or JSON: callers run writes on
//! a blocking thread pool.
//!
//! ```
//! use std::time::Duration;
//! use fleetwire_store::{Aggregation, Point, Store, StoreConfig, Timestamp};
//!
//! # fn main() -> Result<(), fleetwire_store::Error> {
//! # let directory = std::env::temp_dir().join(format!("fleetwire-store-doc-{}", std::process::id()));
//! let store = Store::open(&directory, StoreConfig::default())?;
//! let start = 1_700_000_000_000;
//! let points: Vec<Point<'_>> = (0..120)
//!     .map(|second| Point::new("sensor-1", "temperature", Timestamp::from_millis(start + second * 1000), 20.0 + second as f64 / 100.0))
//!     .collect();
//! store.write(&points)?;
//!
//! let latest = store.latest("sensor-1");
//! assert_eq!(latest["temperature"].value, 21.19);
//!
//! let minute = store.range("sensor-1", "temperature", Timestamp::from_millis(start), Timestamp::from_millis(start + 60_000))?;
//! assert_eq!(minute.len(), 60);
//!
//! store.flush()?; // from now on in a compressed segment
//! let per_minute = store.aggregate(
//!     "sensor-1", "temperature",
//!     Timestamp::from_millis(start), Timestamp::from_millis(start + 120_000),
//!     Duration::from_secs(60), Aggregation::Max,
//! )?;
//! assert_eq!(per_minute.len(), 3); // windows are aligned to whole minutes since the epoch
//! store.close()?;
//! # std::fs::remove_dir_all(&directory).ok();
//! # Ok(())
//! # }
//! ```

mod bits;
mod block;
mod catalog;
mod config;
mod error;
mod head;
mod maintenance;
mod query;
mod segment;
mod store;
mod types;
mod wal;

pub use config::{CorruptSegmentPolicy, Durability, StoreConfig};
pub use error::{Error, Result};
/// Instants in the store's API (points, samples, ranges) are the platform's one timestamp
/// type, re-exported so that users of the store need not name its crate.
pub use fleetwire_time::Timestamp;
pub use store::{MAX_NAME_LEN, Store};
pub use types::{Aggregation, Point, Sample, SeriesId, Stats};
