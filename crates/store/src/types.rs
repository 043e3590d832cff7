//! The data model: points going in, samples coming out, and the newtypes that name them.

use std::fmt;
use std::str::FromStr;

use fleetwire_time::Timestamp;

use crate::error::Error;

/// The compact number a series (device, field) is interned to. Ids are dense, start at 0,
/// are given in order of first write and never change: they are what the write-ahead log
/// and the segments store instead of the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesId(u32);

impl SeriesId {
    pub(crate) const fn new(id: u32) -> SeriesId {
        SeriesId(id)
    }

    /// The id as a number.
    pub const fn as_u32(self) -> u32 {
        self.0
    }

    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for SeriesId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "series #{}", self.0)
    }
}

/// One measurement to write: the series it belongs to (device and field), when, and the
/// value. Booleans are written as `0.0` and `1.0`. The names are borrowed, so a batch can
/// point into the payload it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point<'a> {
    /// The device id.
    pub device: &'a str,
    /// The field (measurement name) of the device.
    pub field: &'a str,
    /// When the value was measured.
    pub timestamp: Timestamp,
    /// The value. Every bit pattern is kept, NaN payloads and `-0.0` included.
    pub value: f64,
}

impl<'a> Point<'a> {
    /// A point of `device`'s `field`.
    pub fn new(device: &'a str, field: &'a str, timestamp: Timestamp, value: f64) -> Point<'a> {
        Point {
            device,
            field,
            timestamp,
            value,
        }
    }
}

/// One value read back: a raw point, or an aggregate whose timestamp is the start of its
/// window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When, in milliseconds since the epoch.
    pub timestamp: Timestamp,
    /// The value.
    pub value: f64,
}

/// How the points of one window are combined by [`Store::aggregate`](crate::Store::aggregate).
///
/// NaN values count in `count`, make `sum` and `avg` NaN, and are skipped by `min` and
/// `max` (which are NaN only when every value is NaN), as `f64::min` and `f64::max` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregation {
    /// Arithmetic mean.
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Sum of the values.
    Sum,
    /// Number of points.
    Count,
    /// Value of the earliest point of the window.
    First,
    /// Value of the latest point of the window.
    Last,
}

impl Aggregation {
    /// The lower-case name used in queries (`avg`, `min`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Avg => "avg",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Sum => "sum",
            Aggregation::Count => "count",
            Aggregation::First => "first",
            Aggregation::Last => "last",
        }
    }
}

impl FromStr for Aggregation {
    type Err = Error;

    fn from_str(text: &str) -> Result<Aggregation, Error> {
        Ok(match text {
            "avg" | "mean" => Aggregation::Avg,
            "min" => Aggregation::Min,
            "max" => Aggregation::Max,
            "sum" => Aggregation::Sum,
            "count" => Aggregation::Count,
            "first" => Aggregation::First,
            "last" => Aggregation::Last,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "expected an aggregation avg, min, max, sum, count, first or last, got {other:?}"
                )));
            }
        })
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Size and shape of the store, from [`Store::stats`](crate::Store::stats).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// Number of series (device, field pairs) ever written.
    pub series: u64,
    /// Points in segment files. A point overwritten later (same series and timestamp) counts
    /// until compaction merges the two.
    pub segment_points: u64,
    /// Points in memory, not yet flushed to segments (also in the write-ahead log).
    pub head_points: u64,
    /// Number of segment files.
    pub segments: u64,
    /// Number of time partitions with at least one segment.
    pub partitions: u64,
    /// Bytes of all segment files.
    pub segment_bytes: u64,
    /// Bytes of all write-ahead log files.
    pub wal_bytes: u64,
}

impl Stats {
    /// All points held, in segments and in memory.
    pub fn points(&self) -> u64 {
        self.segment_points + self.head_points
    }

    /// Segment bytes per segment point: the compression figure (0 when nothing is flushed).
    pub fn bytes_per_point(&self) -> f64 {
        if self.segment_points == 0 {
            0.0
        } else {
            self.segment_bytes as f64 / self.segment_points as f64
        }
    }
}
