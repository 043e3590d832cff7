//! Latency recording: subscribers buffer a few hundred samples locally and merge them into
//! a sharded HDR histogram, so a thousand subscribers neither contend on one lock nor
//! carry a histogram each.

use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly, in microseconds (larger values count as this).
const MAX_MICROS: u64 = 60_000_000;
const SHARDS: usize = 8;
const BUFFERED: usize = 512;

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Number of samples.
    pub count: u64,
}

/// A latency histogram (microseconds, three significant digits) shared by many tasks.
#[derive(Debug)]
pub struct LatencyRecorder {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for LatencyRecorder {
    fn default() -> LatencyRecorder {
        let shards = (0..SHARDS)
            .map(|_| {
                // The bounds are constants known to be valid.
                let histogram = Histogram::new_with_bounds(1, MAX_MICROS, 3)
                    .unwrap_or_else(|_| unreachable!("valid histogram bounds"));
                Mutex::new(histogram)
            })
            .collect();
        LatencyRecorder { shards }
    }
}

impl LatencyRecorder {
    /// Records samples given in microseconds into shard `hint % shards`.
    pub fn record_micros(&self, hint: usize, values: &[u64]) {
        if values.is_empty() {
            return;
        }
        if let Some(shard) = self.shards.get(hint % SHARDS) {
            if let Ok(mut histogram) = shard.lock() {
                for &value in values {
                    histogram.saturating_record(value.clamp(1, MAX_MICROS));
                }
            }
        }
    }

    /// Percentiles over everything recorded.
    pub fn summary(&self) -> LatencySummary {
        let mut total = Histogram::<u64>::new_with_bounds(1, MAX_MICROS, 3)
            .unwrap_or_else(|_| unreachable!("valid histogram bounds"));
        for shard in &self.shards {
            if let Ok(histogram) = shard.lock() {
                // Same bounds on both sides, so adding cannot fail.
                let _ = total.add(&*histogram);
            }
        }
        if total.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: total.value_at_quantile(0.50),
            p99: total.value_at_quantile(0.99),
            p999: total.value_at_quantile(0.999),
            max: total.max(),
            mean: (total.mean() * 10.0).round() / 10.0,
            count: total.len(),
        }
    }
}

/// A task's local batch of samples; merged into the recorder when full and on drop.
#[derive(Debug)]
pub(crate) struct LatencyBuffer {
    values: Vec<u64>,
    hint: usize,
    recorder: Arc<LatencyRecorder>,
}

impl LatencyBuffer {
    pub(crate) fn new(recorder: Arc<LatencyRecorder>, hint: usize) -> LatencyBuffer {
        LatencyBuffer {
            values: Vec::with_capacity(BUFFERED),
            hint,
            recorder,
        }
    }

    pub(crate) fn record_nanos(&mut self, nanos: u64) {
        self.values.push(nanos / 1000);
        if self.values.len() >= BUFFERED {
            self.flush();
        }
    }

    pub(crate) fn flush(&mut self) {
        self.recorder.record_micros(self.hint, &self.values);
        self.values.clear();
    }
}

impl Drop for LatencyBuffer {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let recorder = Arc::new(LatencyRecorder::default());
        {
            let mut buffers: Vec<LatencyBuffer> = (0..3)
                .map(|hint| LatencyBuffer::new(Arc::clone(&recorder), hint))
                .collect();
            // 1..=10_000 µs, spread over three tasks.
            for micros in 1..=10_000u64 {
                buffers[(micros % 3) as usize].record_nanos(micros * 1000 + 999);
            }
        }
        let summary = recorder.summary();
        assert_eq!(summary.count, 10_000);
        let near = |value: u64, expected: u64| value.abs_diff(expected) <= expected / 500 + 1;
        assert!(near(summary.p50, 5_000), "{summary:?}");
        assert!(near(summary.p99, 9_900), "{summary:?}");
        assert!(near(summary.p999, 9_990), "{summary:?}");
        assert!(near(summary.max, 10_000), "{summary:?}");
        assert!((summary.mean - 5_000.5).abs() < 10.0, "{summary:?}");
    }

    #[test]
    fn empty_and_huge_values_are_handled() {
        let recorder = LatencyRecorder::default();
        assert_eq!(recorder.summary(), LatencySummary::default());
        recorder.record_micros(5, &[0, u64::MAX]);
        let summary = recorder.summary();
        assert_eq!(summary.count, 2);
        assert!(summary.max >= MAX_MICROS);
    }
}
