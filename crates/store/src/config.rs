//! How a store behaves: durability, partitioning, flushing, retention and what to do with
//! a damaged segment.

use std::time::Duration;

use crate::error::{Error, Result};

/// Settings of [`Store::open`](crate::Store::open). `StoreConfig::default()` is the
/// production setting: `sync` durability, one-day partitions, no retention.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// When a write is acknowledged: after its fsync, or after the operating system has it.
    pub durability: Durability,
    /// Length of a time partition: every segment holds points of one partition, and
    /// retention deletes whole partitions. Whole milliseconds, at least one second.
    pub partition_duration: Duration,
    /// Partitions whose end is older than this are deleted. `None` keeps everything.
    pub retention: Option<Duration>,
    /// The in-memory head is flushed to segments once it holds this many points.
    pub head_max_points: usize,
    /// ... or once its oldest point arrived this long ago, so the write-ahead log of a
    /// quiet store stays short and restarts stay fast.
    pub head_max_age: Duration,
    /// Number of same-level segments of a partition merged by background compaction.
    pub compaction_fan_in: usize,
    /// What opening a store does with a segment that fails its checksums.
    pub on_corrupt_segment: CorruptSegmentPolicy,
    /// How often the background threads look at flush, compaction and retention.
    pub maintenance_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            durability: Durability::Sync,
            partition_duration: Duration::from_secs(86_400),
            retention: None,
            head_max_points: 4_000_000,
            head_max_age: Duration::from_secs(600),
            compaction_fan_in: 4,
            on_corrupt_segment: CorruptSegmentPolicy::Fail,
            maintenance_interval: Duration::from_secs(1),
        }
    }
}

impl StoreConfig {
    /// Checks ranges; the message names the setting.
    pub(crate) fn validate(&self) -> Result<()> {
        let partition = self.partition_duration.as_millis();
        if partition < 1_000
            || partition > i64::MAX as u128
            || self.partition_duration.subsec_nanos() % 1_000_000 != 0
        {
            return Err(Error::InvalidConfig(format!(
                "partition_duration: expected whole milliseconds of at least 1s, got {:?}",
                self.partition_duration
            )));
        }
        if let Durability::Batch { flush_interval } = self.durability {
            if flush_interval.is_zero() {
                return Err(Error::InvalidConfig(
                    "durability.flush_interval: expected more than zero, got 0".to_owned(),
                ));
            }
        }
        if self.head_max_points == 0 {
            return Err(Error::InvalidConfig(
                "head_max_points: expected at least 1, got 0".to_owned(),
            ));
        }
        if self.compaction_fan_in < 2 {
            return Err(Error::InvalidConfig(format!(
                "compaction_fan_in: expected at least 2, got {}",
                self.compaction_fan_in
            )));
        }
        if self.maintenance_interval.is_zero() {
            return Err(Error::InvalidConfig(
                "maintenance_interval: expected more than zero, got 0".to_owned(),
            ));
        }
        Ok(())
    }

    pub(crate) fn partition_millis(&self) -> i64 {
        i64::try_from(self.partition_duration.as_millis()).unwrap_or(i64::MAX)
    }
}

/// When [`Store::write`](crate::Store::write) returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the fsync that covers the batch: an acknowledged write survives a power cut.
    /// Concurrent writers share fsyncs (group commit).
    Sync,
    /// After the batch is written to the operating system; fsync runs at most every
    /// `flush_interval`. A crash of the process loses nothing; a power cut or kernel
    /// crash loses at most the last `flush_interval` of writes.
    Batch {
        /// Longest time between a write and its fsync.
        flush_interval: Duration,
    },
}

/// What [`Store::open`](crate::Store::open) does with a segment file that fails its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorruptSegmentPolicy {
    /// Refuse to open, with an error naming the file and what is wrong. The default: data
    /// never disappears without someone deciding so.
    #[default]
    Fail,
    /// Rename the file to `*.corrupt`, log an error naming it, and open without its points.
    Quarantine,
}
