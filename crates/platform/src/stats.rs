//! Counters of every part of the platform, gathered for `/metrics`, and the recent ingest
//! rates the dashboard's overview shows.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fleetwire_store::Stats as StoreStats;
use parking_lot::Mutex;

use crate::ingest::{IngestStats, Source};
use crate::mqtt::MqttStats;
use crate::webhook::WebhookStats;
use crate::writer::WriterStats;

/// Counters of every part, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlatformStats {
    /// MQTT counters of this node.
    pub mqtt: MqttStats,
    /// How long the platform has been running.
    pub uptime: Duration,
    /// Messages accepted, rejected and failed, per source (`mqtt`, `http`,
    /// `line_protocol`).
    pub ingest: Vec<SourceCounts>,
    /// String fields of line protocol skipped.
    pub skipped_string_fields: u64,
    /// Points written to the store.
    pub points_written: u64,
    /// Group writes done.
    pub store_writes: u64,
    /// Seconds spent in store writes.
    pub store_write_seconds: f64,
    /// The store's counts and sizes.
    pub store: StoreStats,
    /// Webhook deliveries: delivered, failed, retries, short-circuited, dropped.
    pub webhooks: [u64; 5],
}

/// Ingest counters of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCounts {
    /// `mqtt`, `http` or `line_protocol`.
    pub source: &'static str,
    /// Messages accepted.
    pub accepted: u64,
    /// Messages rejected for their content.
    pub rejected: u64,
    /// Messages that could not be stored.
    pub failed: u64,
}

impl PlatformStats {
    pub(crate) fn gather(
        ingest: &IngestStats,
        writer: &WriterStats,
        webhooks: &WebhookStats,
        store: StoreStats,
        mqtt: MqttStats,
        uptime: Duration,
    ) -> PlatformStats {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        PlatformStats {
            mqtt,
            uptime,
            ingest: Source::ALL
                .iter()
                .enumerate()
                .map(|(index, source)| SourceCounts {
                    source: source.as_str(),
                    accepted: load(&ingest.accepted[index]),
                    rejected: load(&ingest.rejected[index]),
                    failed: load(&ingest.failed[index]),
                })
                .collect(),
            skipped_string_fields: load(&ingest.skipped_string_fields),
            points_written: load(&writer.points),
            store_writes: load(&writer.writes),
            store_write_seconds: load(&writer.write_micros) as f64 / 1e6,
            store,
            webhooks: [
                load(&webhooks.delivered),
                load(&webhooks.failed),
                load(&webhooks.retries),
                load(&webhooks.short_circuited),
                load(&webhooks.dropped),
            ],
        }
    }
}

/// Recent ingest rates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IngestRates {
    /// Messages (MQTT publishes, HTTP bodies, line protocol requests) accepted per second.
    pub messages_per_second: f64,
    /// Points written per second.
    pub points_per_second: f64,
}

/// `(when, messages accepted, points written)` samples, about one a second over the last
/// ten seconds, taken when the rates are asked for.
pub(crate) struct Rates {
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
}

impl Default for Rates {
    fn default() -> Rates {
        Rates {
            samples: Mutex::new(VecDeque::from([(Instant::now(), 0, 0)])),
        }
    }
}

impl Rates {
    /// Messages and points accepted per second, over the last ten seconds or so.
    pub(crate) fn sample(&self, ingest: &IngestStats, writer: &WriterStats) -> IngestRates {
        let messages: u64 = ingest
            .accepted
            .iter()
            .map(|counter| counter.load(Ordering::Relaxed))
            .sum();
        let points = writer.points.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut samples = self.samples.lock();
        if samples
            .back()
            .is_none_or(|(at, _, _)| now.duration_since(*at) >= Duration::from_secs(1))
        {
            samples.push_back((now, messages, points));
        }
        while samples.len() > 2
            && samples
                .front()
                .is_some_and(|(at, _, _)| now.duration_since(*at) > Duration::from_secs(10))
        {
            samples.pop_front();
        }
        let Some(&(since, first_messages, first_points)) = samples.front() else {
            return IngestRates::default();
        };
        let seconds = now.duration_since(since).as_secs_f64();
        if seconds < 0.5 {
            return IngestRates::default();
        }
        IngestRates {
            messages_per_second: messages.saturating_sub(first_messages) as f64 / seconds,
            points_per_second: points.saturating_sub(first_points) as f64 / seconds,
        }
    }
}
