//! Live counters of a running simulation, and the final report.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Shards of the acknowledgement latency histogram: devices record into shard
/// `index % SHARDS`, so a thousand devices do not queue on one lock.
const SHARDS: usize = 8;
/// Largest latency recorded exactly, in microseconds (longer ones count as this).
const MAX_MICROS: u64 = 60_000_000;

/// Counters shared by all devices; read them with [`SimCounters::snapshot`].
#[derive(Debug, Default)]
pub struct SimCounters {
    published: AtomicU64,
    acknowledged: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    connected: AtomicU64,
    last_error: Mutex<Option<String>>,
    ack_latency: AckLatency,
}

/// Publish-to-`PUBACK` times of QoS 1 messages, in microseconds.
#[derive(Debug)]
struct AckLatency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for AckLatency {
    fn default() -> AckLatency {
        AckLatency {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants known to be valid.
    Histogram::new_with_bounds(1, MAX_MICROS, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

/// Percentiles of the publish-to-`PUBACK` time of QoS 1 messages, in microseconds: how
/// long the broker took to acknowledge (for Fleetwire in `sync` durability: to make the
/// message durable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckLatencySummary {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Acknowledgements timed.
    pub count: u64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages handed to the connections.
    pub published: u64,
    /// QoS 1 messages the broker acknowledged with success.
    pub acknowledged: u64,
    /// QoS 1 messages the broker refused (a 5.0 reason code of 0x80 or above, such as
    /// 0x99 payload format invalid).
    pub rejected: u64,
    /// Failed connection attempts, lost connections and refused messages.
    pub errors: u64,
    /// Reconnection attempts.
    pub reconnects: u64,
    /// Devices connected right now.
    pub connected: u64,
    /// The most recent error, for display.
    pub last_error: Option<String>,
    /// Publish-to-`PUBACK` time of QoS 1 messages.
    pub ack_latency_us: AckLatencySummary,
}

/// What a finished simulation did.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// Counters at the end (`connected` is 0 once every device disconnected).
    pub stats: SimStats,
    /// How long it ran.
    pub elapsed: Duration,
}

impl SimCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> SimStats {
        SimStats {
            published: self.published.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .map(|guard| guard.clone())
                .unwrap_or_default(),
            ack_latency_us: self.ack_latency_summary(),
        }
    }

    fn ack_latency_summary(&self) -> AckLatencySummary {
        let mut total = new_histogram();
        for shard in &self.ack_latency.shards {
            if let Ok(histogram) = shard.lock() {
                // Same bounds on both sides, so adding cannot fail.
                let _ = total.add(&*histogram);
            }
        }
        if total.is_empty() {
            return AckLatencySummary::default();
        }
        AckLatencySummary {
            p50: total.value_at_quantile(0.50),
            p99: total.value_at_quantile(0.99),
            p999: total.value_at_quantile(0.999),
            max: total.max(),
            count: total.len(),
        }
    }

    /// Records acknowledgement times (microseconds) of device number `device`.
    pub(crate) fn record_ack_latencies(&self, device: u64, micros: &[u64]) {
        if micros.is_empty() {
            return;
        }
        let shard = &self.ack_latency.shards[(device % SHARDS as u64) as usize];
        if let Ok(mut histogram) = shard.lock() {
            for &value in micros {
                histogram.saturating_record(value.clamp(1, MAX_MICROS));
            }
        }
    }

    pub(crate) fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn acknowledged(&self) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, detail: String) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.error(detail);
    }

    pub(crate) fn error(&self, detail: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(detail);
        }
    }

    pub(crate) fn reconnecting(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn disconnected(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }
}
