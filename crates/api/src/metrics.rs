//! Prometheus text exposition: the broker's counters, and HTTP request counts and
//! latency histograms per method, route template and status class.
//!
//! The HTTP table is built once from the router's route templates, so recording a
//! request is a lookup in an immutable map and a few relaxed atomic additions: no lock,
//! no allocation.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use fleetwire_platform::{PlatformStats, SourceCounts};

use crate::{AppState, MetricsSource, Sample};

/// Upper bounds of the latency histogram buckets, in seconds (`+Inf` is implied).
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The bucket bounds in nanoseconds, for comparing without floating point.
const BUCKET_NANOS: [u64; 14] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// Methods with their own series; anything else counts as `other`.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// Status classes: 1xx to 5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The route label of requests no route matched (404s), so unknown paths cannot grow
/// the number of series.
const UNMATCHED: &str = "unmatched";

/// One series: requests of one method, route and status class.
#[derive(Default)]
struct Series {
    /// Requests per latency bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of latencies in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Series {
    fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BUCKET_NANOS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Every series of one route template.
struct RouteSeries {
    template: String,
    series: [[Series; CLASSES.len()]; METHODS.len()],
}

impl RouteSeries {
    fn new(template: &str) -> RouteSeries {
        RouteSeries {
            template: template.to_owned(),
            series: Default::default(),
        }
    }
}

/// HTTP request counters of one router.
pub(crate) struct HttpMetrics {
    routes: Vec<RouteSeries>,
    /// Route template → index in `routes`; the last entry of `routes` is [`UNMATCHED`].
    index: HashMap<String, usize>,
}

impl HttpMetrics {
    /// Series for each of these route templates (as axum's `MatchedPath` spells them).
    pub(crate) fn new<'a>(templates: impl IntoIterator<Item = &'a str>) -> HttpMetrics {
        let mut routes: Vec<RouteSeries> = templates.into_iter().map(RouteSeries::new).collect();
        routes.push(RouteSeries::new(UNMATCHED));
        let index = routes
            .iter()
            .enumerate()
            .map(|(index, route)| (route.template.clone(), index))
            .collect();
        HttpMetrics { routes, index }
    }

    fn record(&self, route: Option<&str>, method: &Method, status: u16, elapsed: Duration) {
        let unmatched = self.routes.len() - 1;
        let route = route
            .and_then(|template| self.index.get(template).copied())
            .unwrap_or(unmatched);
        let method = match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            Method::PUT => 3,
            Method::PATCH => 4,
            Method::DELETE => 5,
            Method::OPTIONS => 6,
            _ => 7,
        };
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.routes[route].series[method][class].record(elapsed);
    }

    /// Appends the request counter and the latency histogram, skipping empty series.
    fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP fleetwire_http_requests_total HTTP requests answered, by method, route \
             template and status class\n# TYPE fleetwire_http_requests_total counter\n",
        );
        self.for_each_series(|labels, _, count, _| {
            let _ = writeln!(out, "fleetwire_http_requests_total{{{labels}}} {count}");
        });
        out.push_str(
            "# HELP fleetwire_http_request_duration_seconds Time to answer HTTP requests, by \
             method, route template and status class\n\
             # TYPE fleetwire_http_request_duration_seconds histogram\n",
        );
        self.for_each_series(|labels, buckets, count, sum_nanos| {
            let mut cumulative = 0;
            for (bound, requests) in BUCKETS.iter().zip(buckets) {
                cumulative += requests;
                let _ = writeln!(
                    out,
                    "fleetwire_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "fleetwire_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}\n\
                 fleetwire_http_request_duration_seconds_sum{{{labels}}} {}\n\
                 fleetwire_http_request_duration_seconds_count{{{labels}}} {count}",
                sum_nanos as f64 / 1e9
            );
        });
    }

    /// Calls `visit(labels, bucket counts, count, sum in ns)` for each series with
    /// requests.
    fn for_each_series(&self, mut visit: impl FnMut(&str, &[u64], u64, u64)) {
        let mut labels = String::new();
        let mut buckets = [0u64; BUCKETS.len() + 1];
        for route in &self.routes {
            for (method, by_class) in METHODS.iter().zip(&route.series) {
                for (class, series) in CLASSES.iter().zip(by_class) {
                    for (copy, bucket) in buckets.iter_mut().zip(&series.buckets) {
                        *copy = bucket.load(Ordering::Relaxed);
                    }
                    let count = buckets.iter().sum();
                    if count == 0 {
                        continue;
                    }
                    labels.clear();
                    let _ = write!(
                        labels,
                        "method=\"{method}\",route=\"{}\",status=\"{class}\"",
                        escape_label(&route.template)
                    );
                    let sum_nanos = series.sum_nanos.load(Ordering::Relaxed);
                    visit(&labels, &buckets[..BUCKETS.len()], count, sum_nanos);
                }
            }
        }
    }
}

/// Escapes a label value as the text format requires.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Middleware timing every request, under its route template.
pub(crate) async fn track(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    app.http_metrics.record(
        route.as_ref().map(MatchedPath::as_str),
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Renders every metric in the Prometheus text format (version 0.0.4).
pub(crate) fn render(
    platform: &PlatformStats,
    http: &HttpMetrics,
    extra: &[Arc<dyn MetricsSource>],
) -> String {
    let stats = &platform.mqtt;
    let metrics: [(&str, &str, &str, u64); 20] = [
        (
            "fleetwire_mqtt_clients_connected",
            "gauge",
            "MQTT connections that completed CONNECT",
            stats.clients_connected,
        ),
        (
            "fleetwire_mqtt_sessions",
            "gauge",
            "MQTT sessions, connected or persistent",
            stats.sessions,
        ),
        (
            "fleetwire_mqtt_subscriptions",
            "gauge",
            "MQTT subscriptions across all sessions",
            stats.subscriptions,
        ),
        (
            "fleetwire_mqtt_retained_messages",
            "gauge",
            "Retained MQTT messages",
            stats.retained_messages,
        ),
        (
            "fleetwire_mqtt_messages_received_total",
            "counter",
            "PUBLISH packets received from clients",
            stats.messages_received,
        ),
        (
            "fleetwire_mqtt_messages_sent_total",
            "counter",
            "PUBLISH packets sent to clients",
            stats.messages_sent,
        ),
        (
            "fleetwire_mqtt_messages_dropped_total",
            "counter",
            "Messages dropped because a client queue was full",
            stats.messages_dropped,
        ),
        (
            "fleetwire_mqtt_bytes_received_total",
            "counter",
            "Bytes read from MQTT clients",
            stats.bytes_received,
        ),
        (
            "fleetwire_mqtt_bytes_sent_total",
            "counter",
            "Bytes written to MQTT clients",
            stats.bytes_sent,
        ),
        (
            "fleetwire_mqtt_malformed_packets_total",
            "counter",
            "Connections closed for malformed or illegal packets",
            stats.malformed_packets,
        ),
        (
            "fleetwire_mqtt_auth_failures_total",
            "counter",
            "MQTT CONNECTs refused for missing or wrong credentials, or rate-limited",
            stats.auth_failures,
        ),
        (
            "fleetwire_mqtt_connections_open",
            "gauge",
            "MQTT connections open, from accept to close (handshakes and idle ones included)",
            stats.connections_open,
        ),
        (
            "fleetwire_mqtt_connections_refused_max_total",
            "counter",
            "MQTT connections closed at accept: mqtt.max_connections reached",
            stats.connections_refused_total,
        ),
        (
            "fleetwire_mqtt_connections_refused_per_address_total",
            "counter",
            "MQTT connections closed at accept: their address had mqtt.max_connections_per_address",
            stats.connections_refused_per_address,
        ),
        (
            "fleetwire_mqtt_connections_refused_rate_total",
            "counter",
            "MQTT connections closed at accept: their address opened connections faster than mqtt.connection_rate_per_address",
            stats.connections_refused_rate,
        ),
        (
            "fleetwire_mqtt_publish_rate_exceeded_total",
            "counter",
            "PUBLISH packets past their client's mqtt.publish_rate or mqtt.publish_bytes_rate (5.0 clients disconnected with 0x96, 3.1.1 clients not read meanwhile)",
            stats.publish_rate_exceeded,
        ),
        (
            "fleetwire_mqtt_subscriptions_refused_total",
            "counter",
            "Subscriptions refused because the session had mqtt.max_subscriptions",
            stats.subscriptions_refused,
        ),
        (
            "fleetwire_mqtt_queued_bytes_dropped_total",
            "counter",
            "Messages not queued because their session had mqtt.max_queued_bytes waiting",
            stats.queued_bytes_dropped,
        ),
        (
            "fleetwire_mqtt_messages_too_large_total",
            "counter",
            "Messages not sent to a 5.0 client because they were larger than its maximum packet size",
            stats.messages_too_large,
        ),
        (
            "fleetwire_uptime_seconds",
            "gauge",
            "Seconds since the platform started",
            platform.uptime.as_secs(),
        ),
    ];
    let mut out = String::with_capacity(8192);
    let samples = metrics
        .into_iter()
        .map(|(name, kind, help, value)| Sample {
            name,
            kind,
            help,
            value,
        })
        .chain(extra.iter().flat_map(|source| source.samples()));
    for Sample {
        name,
        kind,
        help,
        value,
    } in samples
    {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
    http.render(&mut out);
    render_platform(platform, &mut out);
    out
}

/// Ingest, store and webhook counters.
fn render_platform(stats: &PlatformStats, out: &mut String) {
    for (name, help, value) in [
        (
            "fleetwire_ingest_messages_accepted_total",
            "Telemetry messages accepted (MQTT publishes, HTTP bodies, line protocol requests)",
            (|counts: &SourceCounts| counts.accepted) as fn(&SourceCounts) -> u64,
        ),
        (
            "fleetwire_ingest_messages_rejected_total",
            "Messages rejected for their content (bad JSON, fields that cannot be stored, wrong device)",
            |counts: &SourceCounts| counts.rejected,
        ),
        (
            "fleetwire_ingest_messages_failed_total",
            "Messages that could not be stored (store failure, shutting down)",
            |counts: &SourceCounts| counts.failed,
        ),
    ] {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
        for counts in &stats.ingest {
            let _ = writeln!(
                out,
                "{name}{{source=\"{}\"}} {}",
                counts.source,
                value(counts)
            );
        }
    }
    let store = &stats.store;
    let scalars: [(&str, &str, &str, f64); 13] = [
        (
            "fleetwire_ingest_string_fields_skipped_total",
            "counter",
            "String fields of line protocol skipped (they cannot be stored as numbers)",
            stats.skipped_string_fields as f64,
        ),
        (
            "fleetwire_store_points_written_total",
            "counter",
            "Points written to the telemetry store",
            stats.points_written as f64,
        ),
        (
            "fleetwire_store_writes_total",
            "counter",
            "Group writes (one log append and fsync each)",
            stats.store_writes as f64,
        ),
        (
            "fleetwire_store_write_seconds_total",
            "counter",
            "Time spent in group writes",
            stats.store_write_seconds,
        ),
        (
            "fleetwire_store_series",
            "gauge",
            "Series (device, field) in the store",
            store.series as f64,
        ),
        (
            "fleetwire_store_head_points",
            "gauge",
            "Points in memory, not yet in segments",
            store.head_points as f64,
        ),
        (
            "fleetwire_store_segments",
            "gauge",
            "Segment files",
            store.segments as f64,
        ),
        (
            "fleetwire_store_segment_bytes",
            "gauge",
            "Bytes in segment files",
            store.segment_bytes as f64,
        ),
        (
            "fleetwire_store_wal_bytes",
            "gauge",
            "Bytes in write-ahead log files",
            store.wal_bytes as f64,
        ),
        (
            "fleetwire_webhooks_delivered_total",
            "counter",
            "Webhook deliveries answered with 2xx",
            stats.webhooks[0] as f64,
        ),
        (
            "fleetwire_webhooks_failed_total",
            "counter",
            "Webhook deliveries that failed every attempt",
            stats.webhooks[1] as f64,
        ),
        (
            "fleetwire_webhooks_short_circuited_total",
            "counter",
            "Webhook deliveries refused because the URL's circuit was open",
            stats.webhooks[3] as f64,
        ),
        (
            "fleetwire_webhooks_dropped_total",
            "counter",
            "Webhook deliveries dropped because the URL's queue was full",
            stats.webhooks[4] as f64,
        ),
    ];
    for (name, kind, help, value) in scalars {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_the_count() {
        let metrics = HttpMetrics::new(["/api/v1/devices/{id}"]);
        for micros in [50, 300, 300, 2_000, 7_000_000] {
            metrics.record(
                Some("/api/v1/devices/{id}"),
                &Method::GET,
                200,
                Duration::from_micros(micros),
            );
        }
        metrics.record(
            Some("/nowhere"),
            &Method::GET,
            404,
            Duration::from_micros(10),
        );
        let mut out = String::new();
        metrics.render(&mut out);
        let labels = r#"method="GET",route="/api/v1/devices/{id}",status="2xx""#;
        for expected in [
            format!("fleetwire_http_requests_total{{{labels}}} 5\n"),
            format!("fleetwire_http_request_duration_seconds_bucket{{{labels},le=\"0.0001\"}} 1\n"),
            format!("fleetwire_http_request_duration_seconds_bucket{{{labels},le=\"0.0005\"}} 3\n"),
            format!("fleetwire_http_request_duration_seconds_bucket{{{labels},le=\"5\"}} 4\n"),
            format!("fleetwire_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 5\n"),
            format!("fleetwire_http_request_duration_seconds_count{{{labels}}} 5\n"),
            "fleetwire_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"4xx\"} 1\n"
                .to_owned(),
        ] {
            assert!(out.contains(&expected), "{expected} missing from:\n{out}");
        }
        assert!(!out.contains("status=\"5xx\""), "{out}");
    }
}
