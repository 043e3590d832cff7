//! The `line-protocol` scenario: InfluxDB line protocol written over HTTP
//! (`POST /api/v2/write`, what Telegraf sends) as fast as the server takes it, or at a
//! fixed rate of points per second.
//!
//! Each of N keep-alive connections owns every N-th device and sends requests of B lines,
//! one line per device reading with F float fields. Devices take turns; once every device
//! of a connection has had a line, the reading time moves on by one step, so every point
//! is new (no overwrites) and each series sees its timestamps in order. Bodies are built
//! from per-device prefixes with the numbers formatted by hand into a reused buffer, so a
//! line costs the generator tens of nanoseconds.
//!
//! A run: connect, one setup round per connection (every device written once, which
//! registers unknown devices on the server, and must succeed), a warm-up, then the
//! measurement window. Requests answered inside the window count; latency is from
//! sending (or, at a fixed rate, from the planned send time) to the end of the answer.
//! Given the server's pid, its CPU is read from `/proc`; the server's own Prometheus
//! counters (`GET /metrics`) are read at both ends of the window and their growth
//! reported.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::http::{HttpConnection, HttpTarget, parse_prometheus};
use crate::latency::LatencyBuffer;
use crate::messaging::{WindowStart, broker_rss, round3};
use crate::report::{BrokerUsage, CpuUsage};
use crate::{BenchError, Counters, LatencyRecorder, LatencySummary};

/// Longest wait for a request still in flight when the window closes.
const DRAIN: Duration = Duration::from_secs(10);
/// Pause before reconnecting after a failed connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// Longest excerpt of an error answer kept in the report.
const ERROR_EXCERPT: usize = 300;

/// The unit of the timestamps written (the `precision` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimePrecision {
    /// Nanoseconds, InfluxDB's and Telegraf's default.
    Nanoseconds,
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    #[default]
    Milliseconds,
    /// Seconds (the reading step must then be whole seconds).
    Seconds,
}

impl TimePrecision {
    /// `ns`, `us`, `ms` or `s`.
    pub fn name(self) -> &'static str {
        match self {
            TimePrecision::Nanoseconds => "ns",
            TimePrecision::Microseconds => "us",
            TimePrecision::Milliseconds => "ms",
            TimePrecision::Seconds => "s",
        }
    }
}

impl FromStr for TimePrecision {
    type Err = BenchError;

    fn from_str(text: &str) -> Result<TimePrecision, BenchError> {
        match text {
            "ns" => Ok(TimePrecision::Nanoseconds),
            "us" => Ok(TimePrecision::Microseconds),
            "ms" => Ok(TimePrecision::Milliseconds),
            "s" => Ok(TimePrecision::Seconds),
            other => Err(BenchError::InvalidConfig(format!(
                "precision: expected ns, us, ms or s, got {other:?}"
            ))),
        }
    }
}

/// A line-protocol run. `LineProtocolConfig::default()` is 4 connections of 5,000-line
/// requests for 1,000 devices with 4 fields each, for 10 seconds, as fast as possible.
#[derive(Debug, Clone)]
pub struct LineProtocolConfig {
    /// Base URL of the server, `http://host:port` (the path `/api/v2/write` is added).
    pub url: String,
    /// API token, sent as `Authorization: Token <token>`.
    pub token: Option<String>,
    /// Keep-alive connections, each with one request in flight.
    pub connections: usize,
    /// Lines (device readings) per request.
    pub lines_per_request: usize,
    /// Devices, spread over the connections (at least one per connection).
    pub devices: usize,
    /// Float fields per line: one point each.
    pub fields: usize,
    /// Length of the measurement window.
    pub duration: Duration,
    /// Sending before the window, after the setup round.
    pub warmup: Duration,
    /// Points per second over all connections; 0 means as fast as the server answers.
    pub rate: f64,
    /// Whether bodies are gzip'd (`Content-Encoding: gzip`, Telegraf's default).
    pub is_gzip: bool,
    /// Unit of the timestamps.
    pub precision: TimePrecision,
    /// Time between two readings of one device.
    pub step: Duration,
    /// The server's process id, to report its CPU and memory from `/proc`.
    pub broker_pid: Option<u32>,
    /// Measurement name of every line.
    pub measurement: String,
    /// Prefix of the device ids (the `device` tag), numbered from 1.
    pub device_prefix: String,
}

impl Default for LineProtocolConfig {
    fn default() -> LineProtocolConfig {
        LineProtocolConfig {
            url: "http://127.0.0.1:8080".to_owned(),
            token: None,
            connections: 4,
            lines_per_request: 5_000,
            devices: 1_000,
            fields: 4,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            rate: 0.0,
            is_gzip: false,
            precision: TimePrecision::Milliseconds,
            step: Duration::from_secs(1),
            broker_pid: None,
            measurement: "bench".to_owned(),
            device_prefix: "lp-".to_owned(),
        }
    }
}

impl LineProtocolConfig {
    fn validate(&self) -> Result<HttpTarget, BenchError> {
        let invalid = |text: String| Err(BenchError::InvalidConfig(text));
        if self.connections == 0 || self.lines_per_request == 0 || self.fields == 0 {
            return invalid(
                "connections, lines per request and fields must be at least 1".to_owned(),
            );
        }
        if self.devices < self.connections {
            return invalid(format!(
                "every connection needs a device of its own: {} devices for {} connections",
                self.devices, self.connections
            ));
        }
        if self.fields > 1000 {
            return invalid(format!("at most 1000 fields, got {}", self.fields));
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return invalid("the rate must be 0 (unlimited) or a positive number".to_owned());
        }
        if self.duration.is_zero() {
            return invalid("the duration must be more than zero".to_owned());
        }
        let step_ms = self.step.as_millis();
        let unit_ms = if self.precision == TimePrecision::Seconds {
            1000
        } else {
            1
        };
        if step_ms == 0 || step_ms % unit_ms != 0 || self.step.subsec_nanos() % 1_000_000 != 0 {
            return invalid(format!(
                "the reading step must be whole {}, got {:?}",
                if unit_ms == 1 {
                    "milliseconds"
                } else {
                    "seconds"
                },
                self.step
            ));
        }
        if self.measurement.is_empty() || needs_escape(&self.measurement) {
            return invalid(
                "the measurement must be non-empty, without spaces, commas or `=`".to_owned(),
            );
        }
        if needs_escape(&self.device_prefix) {
            return invalid("the device prefix must not contain spaces, commas or `=`".to_owned());
        }
        HttpTarget::parse(&self.url).map_err(BenchError::InvalidConfig)
    }

    /// Points in one request.
    pub fn points_per_request(&self) -> usize {
        self.lines_per_request * self.fields
    }
}

fn needs_escape(name: &str) -> bool {
    name.bytes()
        .any(|byte| matches!(byte, b' ' | b',' | b'=' | b'\\' | b'\n' | b'\r' | b'\t'))
}

/// What a line-protocol run measured. [`LineProtocolReport::to_json`] is the `--json`
/// line; its keys are a contract with `scripts/bench/ingest`.
#[derive(Debug, Clone, Serialize)]
pub struct LineProtocolReport {
    /// `line-protocol`.
    pub scenario: &'static str,
    /// The server's base URL.
    pub url: String,
    /// Connections.
    pub connections: usize,
    /// Lines per request.
    pub lines_per_request: usize,
    /// Devices.
    pub devices: usize,
    /// Fields (points) per line.
    pub fields: usize,
    /// Points per request.
    pub points_per_request: usize,
    /// `ns`, `us`, `ms` or `s`.
    pub precision: &'static str,
    /// Whether bodies were gzip'd.
    pub gzip: bool,
    /// Requested points per second; 0 for unlimited.
    pub rate: f64,
    /// Length of the measurement window in seconds.
    pub duration_s: f64,
    /// Requests answered with 2xx inside the window.
    pub requests: u64,
    /// Points of those requests.
    pub points: u64,
    /// Requests refused (non-2xx) or lost (connection failures) inside the window.
    pub errors: u64,
    /// The first error, with an excerpt of the answer.
    pub first_error: Option<String>,
    /// Points acknowledged per second of window.
    pub points_per_sec: f64,
    /// Requests acknowledged per second of window.
    pub requests_per_sec: f64,
    /// Body bytes sent per second of window (compressed, with gzip).
    pub body_bytes_per_sec: f64,
    /// Average body bytes before compression.
    pub body_bytes_per_request: f64,
    /// Request latency: send (or planned send, at a fixed rate) to the end of the answer.
    pub latency_us: LatencySummary,
    /// The generator's own CPU use during the window.
    pub cpu: CpuUsage,
    /// The server's CPU and memory, when its pid was given.
    pub broker: Option<BrokerUsage>,
    /// Growth of the server's Prometheus counters (`*_total` samples of `GET /metrics`)
    /// over the window; empty when the server has no such endpoint.
    pub server_counters: BTreeMap<String, f64>,
}

impl LineProtocolReport {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }
}

impl fmt::Display for LineProtocolReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario line-protocol against {} ({} connections, {} lines x {} fields per request, {} devices, precision {}{})",
            self.url,
            self.connections,
            self.lines_per_request,
            self.fields,
            self.devices,
            self.precision,
            if self.gzip { ", gzip" } else { "" }
        )?;
        writeln!(
            f,
            "  requests      {} answered 2xx in the {:.2} s window, {} errors, rate {}",
            self.requests,
            self.duration_s,
            self.errors,
            if self.rate > 0.0 {
                format!("{:.0} points/s", self.rate)
            } else {
                "unlimited".to_owned()
            }
        )?;
        if let Some(error) = &self.first_error {
            writeln!(f, "  first error   {error}")?;
        }
        writeln!(
            f,
            "  throughput    {:.0} points/s ({:.1} requests/s, {:.1} MB/s of bodies)",
            self.points_per_sec,
            self.requests_per_sec,
            self.body_bytes_per_sec / 1e6
        )?;
        crate::report::write_latency(f, &self.latency_us)?;
        crate::report::write_usage(f, &self.cpu, self.broker.as_ref(), "server")?;
        for (name, growth) in &self.server_counters {
            if *growth != 0.0 {
                writeln!(f, "  server        {name} +{growth}")?;
            }
        }
        Ok(())
    }
}

/// Builds request bodies for the devices of one connection.
#[derive(Debug)]
pub struct BodyBuilder {
    /// `measurement,device=id ` of each device.
    prefixes: Vec<Vec<u8>>,
    /// `f0=`, `,f1=`, ...
    field_keys: Vec<Vec<u8>>,
    /// Current value of each device's fields, in hundredths.
    values: Vec<i64>,
    /// The device the next line is for.
    cursor: usize,
    /// Completed rounds over all devices: the reading number of the next line.
    round: u64,
    start_ms: i64,
    step_ms: i64,
    precision: TimePrecision,
    random: u64,
}

impl BodyBuilder {
    /// A builder for `devices` (names), `fields` fields each, readings every `step`
    /// from `start_ms`.
    pub fn new(
        measurement: &str,
        devices: &[String],
        fields: usize,
        start_ms: i64,
        step: Duration,
        precision: TimePrecision,
        seed: u64,
    ) -> BodyBuilder {
        let prefixes = devices
            .iter()
            .map(|device| format!("{measurement},device={device} ").into_bytes())
            .collect();
        let field_keys = (0..fields)
            .map(|index| {
                if index == 0 {
                    format!("f{index}=").into_bytes()
                } else {
                    format!(",f{index}=").into_bytes()
                }
            })
            .collect();
        let mut random = seed | 1;
        let values = (0..devices.len() * fields)
            .map(|_| (next_random(&mut random) % 10_000) as i64)
            .collect();
        BodyBuilder {
            prefixes,
            field_keys,
            values,
            cursor: 0,
            round: 0,
            start_ms,
            step_ms: i64::try_from(step.as_millis()).unwrap_or(i64::MAX),
            precision,
            random,
        }
    }

    /// Whether every device has had at least one line.
    pub fn has_completed_a_round(&self) -> bool {
        self.round > 0
    }

    /// Appends `lines` lines to `body`.
    pub fn write_lines(&mut self, body: &mut Vec<u8>, lines: usize) {
        let fields = self.field_keys.len();
        for _ in 0..lines {
            let device = self.cursor;
            let millis = self
                .start_ms
                .saturating_add(self.step_ms.saturating_mul(self.round as i64));
            body.extend_from_slice(&self.prefixes[device]);
            let values = &mut self.values[device * fields..(device + 1) * fields];
            for (key, value) in self.field_keys.iter().zip(values.iter_mut()) {
                // A random walk of ±0.07 per reading keeps the values realistic for
                // compression (neither constant nor noise).
                let change = (next_random(&mut self.random) >> 60) as i64 - 7;
                *value += change;
                body.extend_from_slice(key);
                write_hundredths(body, *value);
            }
            body.push(b' ');
            match self.precision {
                TimePrecision::Seconds => write_integer(body, millis / 1000),
                TimePrecision::Milliseconds => write_integer(body, millis),
                TimePrecision::Microseconds => {
                    write_integer(body, millis);
                    body.extend_from_slice(b"000");
                }
                TimePrecision::Nanoseconds => {
                    write_integer(body, millis);
                    body.extend_from_slice(b"000000");
                }
            }
            body.push(b'\n');
            self.cursor += 1;
            if self.cursor == self.prefixes.len() {
                self.cursor = 0;
                self.round += 1;
            }
        }
    }
}

fn next_random(state: &mut u64) -> u64 {
    // xorshift64*: plenty for benchmark values.
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Writes `value` in decimal.
fn write_integer(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    let mut magnitude = value.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Writes `hundredths / 100` with two decimals, as `-12.05`.
fn write_hundredths(out: &mut Vec<u8>, hundredths: i64) {
    if hundredths < 0 {
        out.push(b'-');
    }
    let magnitude = hundredths.unsigned_abs();
    write_integer(out, (magnitude / 100) as i64);
    let cents = (magnitude % 100) as u8;
    out.extend_from_slice(&[b'.', b'0' + cents / 10, b'0' + cents % 10]);
}

/// What the connection tasks share.
struct Shared {
    clock: Clock,
    counters: Arc<Counters>,
    recorder: Arc<LatencyRecorder>,
    /// Clock times bounding the window; `u64::MAX` until set.
    window_start_ns: AtomicU64,
    window_end_ns: AtomicU64,
    is_stopping: AtomicBool,
    in_window: WindowTotals,
    first_error: Mutex<Option<String>>,
}

#[derive(Default)]
struct WindowTotals {
    requests: AtomicU64,
    points: AtomicU64,
    errors: AtomicU64,
    body_bytes: AtomicU64,
    plain_bytes: AtomicU64,
}

impl Shared {
    fn is_in_window(&self, now_ns: u64) -> bool {
        now_ns >= self.window_start_ns.load(Ordering::Relaxed)
            && now_ns <= self.window_end_ns.load(Ordering::Relaxed)
    }

    fn note_error(&self, now_ns: u64, text: impl FnOnce() -> String) {
        self.counters.add_error();
        if self.is_in_window(now_ns) {
            self.in_window.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut first) = self.first_error.lock() {
            if first.is_none() {
                *first = Some(text());
            }
        }
    }
}

/// Everything one connection task needs.
struct Task {
    index: usize,
    addr: SocketAddr,
    head_prefix: Vec<u8>,
    builder: BodyBuilder,
    lines_per_request: usize,
    fields: usize,
    is_gzip: bool,
    /// Time between two requests of this connection at a fixed rate.
    interval: Option<Duration>,
    /// When this connection's first timed request is planned, relative to the warm-up.
    offset: Duration,
}

/// Runs the scenario. Must run inside a multi-threaded Tokio runtime with the I/O and
/// time drivers enabled.
pub async fn run(
    config: &LineProtocolConfig,
    counters: &Arc<Counters>,
) -> Result<LineProtocolReport, BenchError> {
    let target = config.validate()?;
    let addr = tokio::net::lookup_host(&target.authority)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            BenchError::InvalidConfig(format!("cannot resolve {:?}", target.authority))
        })?;
    let broker_rss_before = match config.broker_pid {
        Some(pid) => Some(broker_rss(pid)?),
        None => None,
    };
    let head_prefix = request_head_prefix(config, &target);
    let shared = Arc::new(Shared {
        clock: Clock::start(),
        counters: Arc::clone(counters),
        recorder: Arc::new(LatencyRecorder::default()),
        window_start_ns: AtomicU64::new(u64::MAX),
        window_end_ns: AtomicU64::new(u64::MAX),
        is_stopping: AtomicBool::new(false),
        in_window: WindowTotals::default(),
        first_error: Mutex::new(None),
    });

    let start_ms = fleetwire_time::Timestamp::now().as_millis();
    // Whole reading steps, so timestamps in seconds stay exact.
    let step_ms = config.step.as_millis() as i64;
    let start_ms = start_ms - start_ms.rem_euclid(step_ms.max(1));
    let width = config.devices.to_string().len().max(6);
    let interval = (config.rate > 0.0).then(|| {
        Duration::from_secs_f64(
            config.points_per_request() as f64 * config.connections as f64 / config.rate,
        )
    });
    let (setup_done, mut setup_results) = mpsc::channel(config.connections);
    let (go, go_watch) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    for index in 0..config.connections {
        let devices: Vec<String> = (index..config.devices)
            .step_by(config.connections)
            .map(|number| format!("{}{:0width$}", config.device_prefix, number + 1))
            .collect();
        let task = Task {
            index,
            addr,
            head_prefix: head_prefix.clone(),
            builder: BodyBuilder::new(
                &config.measurement,
                &devices,
                config.fields,
                start_ms,
                config.step,
                config.precision,
                0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            ),
            lines_per_request: config.lines_per_request,
            fields: config.fields,
            is_gzip: config.is_gzip,
            interval,
            offset: interval.map_or(Duration::ZERO, |interval| {
                interval.mul_f64(index as f64 / config.connections as f64)
            }),
        };
        tasks.spawn(connection_loop(
            task,
            Arc::clone(&shared),
            setup_done.clone(),
            go_watch.clone(),
        ));
    }
    drop(setup_done);

    // Setup: every connection writes each of its devices once and must succeed.
    for _ in 0..config.connections {
        match setup_results.recv().await {
            Some(Ok(())) => {}
            Some(Err(error)) => {
                shared.is_stopping.store(true, Ordering::Relaxed);
                tasks.abort_all();
                return Err(error);
            }
            None => break,
        }
    }
    let _ = go.send(true);
    tokio::time::sleep(config.warmup).await;

    // The measurement window.
    let metrics_before = scrape_counters(addr, &head_prefix_for_get(config, &target)).await;
    let usage = WindowStart::now(config.broker_pid, broker_rss_before);
    let window_start = Instant::now();
    shared
        .window_start_ns
        .store(shared.clock.now_ns(), Ordering::Relaxed);
    tokio::time::sleep(config.duration).await;
    shared
        .window_end_ns
        .store(shared.clock.now_ns(), Ordering::Relaxed);
    let window = window_start.elapsed();
    let (cpu, broker) = usage.finish(window)?;
    let metrics_after = scrape_counters(addr, &head_prefix_for_get(config, &target)).await;
    shared.is_stopping.store(true, Ordering::Relaxed);
    let drained =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tasks.abort_all();
    }

    let server_counters = match (metrics_before, metrics_after) {
        (Some(before), Some(after)) => after
            .into_iter()
            .filter(|(name, _)| is_counter(name))
            .map(|(name, value)| {
                let growth = value - before.get(&name).copied().unwrap_or(0.0);
                (name, (growth * 1e6).round() / 1e6)
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    let seconds = window.as_secs_f64();
    let totals = &shared.in_window;
    let requests = totals.requests.load(Ordering::Relaxed);
    let points = totals.points.load(Ordering::Relaxed);
    let per_second = |count: u64| (count as f64 / seconds * 10.0).round() / 10.0;
    let first_error = shared
        .first_error
        .lock()
        .ok()
        .and_then(|first| first.clone());
    Ok(LineProtocolReport {
        scenario: "line-protocol",
        url: config.url.clone(),
        connections: config.connections,
        lines_per_request: config.lines_per_request,
        devices: config.devices,
        fields: config.fields,
        points_per_request: config.points_per_request(),
        precision: config.precision.name(),
        gzip: config.is_gzip,
        rate: config.rate,
        duration_s: round3(seconds),
        requests,
        points,
        errors: totals.errors.load(Ordering::Relaxed),
        first_error,
        points_per_sec: (points as f64 / seconds).round(),
        requests_per_sec: per_second(requests),
        body_bytes_per_sec: per_second(totals.body_bytes.load(Ordering::Relaxed)).round(),
        body_bytes_per_request: if requests == 0 {
            0.0
        } else {
            (totals.plain_bytes.load(Ordering::Relaxed) as f64 / requests as f64).round()
        },
        latency_us: shared.recorder.summary(),
        cpu,
        broker,
        server_counters,
    })
}

/// Counters by Prometheus convention end in `_total` (optionally with labels).
fn is_counter(series: &str) -> bool {
    series
        .split('{')
        .next()
        .is_some_and(|name| name.ends_with("_total"))
}

/// The request head up to `Content-Length: ` (the length and the empty line follow).
fn request_head_prefix(config: &LineProtocolConfig, target: &HttpTarget) -> Vec<u8> {
    let mut head = format!(
        "POST {}/api/v2/write?bucket=bench&precision={} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n",
        target.base_path,
        config.precision.name(),
        target.authority
    );
    if let Some(token) = &config.token {
        head.push_str(&format!("Authorization: Token {token}\r\n"));
    }
    if config.is_gzip {
        head.push_str("Content-Encoding: gzip\r\n");
    }
    head.push_str("Content-Length: ");
    head.into_bytes()
}

fn head_prefix_for_get(config: &LineProtocolConfig, target: &HttpTarget) -> Vec<u8> {
    let mut head = format!(
        "GET {}/metrics HTTP/1.1\r\nHost: {}\r\n",
        target.base_path, target.authority
    );
    if let Some(token) = &config.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// The server's Prometheus samples, or `None` when it has no `/metrics`.
async fn scrape_counters(addr: SocketAddr, head: &[u8]) -> Option<BTreeMap<String, f64>> {
    let mut connection = HttpConnection::connect(addr).await.ok()?;
    let answer = tokio::time::timeout(Duration::from_secs(5), connection.send(head, b""))
        .await
        .ok()?
        .ok()?;
    if !answer.is_success() {
        return None;
    }
    let text = String::from_utf8(answer.body).ok()?;
    Some(parse_prometheus(&text).into_iter().collect())
}

async fn connect(addr: SocketAddr) -> std::io::Result<HttpConnection> {
    HttpConnection::connect(addr).await
}

/// One connection: the setup round, then requests until the run stops.
async fn connection_loop(
    mut task: Task,
    shared: Arc<Shared>,
    setup_done: mpsc::Sender<Result<(), BenchError>>,
    mut go: tokio::sync::watch::Receiver<bool>,
) {
    let mut latency = LatencyBuffer::new(Arc::clone(&shared.recorder), task.index);
    let mut plain = Vec::with_capacity(task.lines_per_request * (40 + 12 * task.fields));
    let mut compressed = Vec::new();
    let mut head = Vec::with_capacity(task.head_prefix.len() + 16);
    let mut connection = match connect(task.addr).await {
        Ok(connection) => Some(connection),
        Err(error) => {
            let _ = setup_done
                .send(Err(BenchError::InvalidConfig(format!(
                    "cannot connect to {}: {error}",
                    task.addr
                ))))
                .await;
            return;
        }
    };

    // Setup round: every device of this connection once.
    while !task.builder.has_completed_a_round() {
        let lines = task.lines_per_request;
        build_body(&mut task, lines, &mut plain, &mut compressed);
        let body = if task.is_gzip { &compressed } else { &plain };
        let Some(open) = connection.as_mut() else {
            return;
        };
        write_head(&mut head, &task.head_prefix, body.len());
        match open.send(&head, body).await {
            Ok(answer) if answer.is_success() => {}
            Ok(answer) => {
                let _ = setup_done
                    .send(Err(BenchError::InvalidConfig(format!(
                        "the server refused the first request: {}",
                        describe(answer.status, &answer.body)
                    ))))
                    .await;
                return;
            }
            Err(error) => {
                let _ = setup_done
                    .send(Err(BenchError::InvalidConfig(format!(
                        "the first request failed: {error}"
                    ))))
                    .await;
                return;
            }
        }
    }
    let _ = setup_done.send(Ok(())).await;
    drop(setup_done);
    if go.wait_for(|is_go| *is_go).await.is_err() {
        return;
    }

    let started = tokio::time::Instant::now();
    let mut planned = started + task.offset;
    while !shared.is_stopping.load(Ordering::Relaxed) {
        if task.interval.is_some() {
            tokio::time::sleep_until(planned).await;
            if shared.is_stopping.load(Ordering::Relaxed) {
                break;
            }
        }
        let lines = task.lines_per_request;
        let send_ns = match task.interval {
            // At a fixed rate, latency counts from the planned time, so a server that
            // falls behind shows up in the latency (no coordinated omission).
            Some(_) => {
                let behind = tokio::time::Instant::now().saturating_duration_since(planned);
                shared
                    .clock
                    .now_ns()
                    .saturating_sub(behind.as_nanos() as u64)
            }
            None => shared.clock.now_ns(),
        };
        build_body(&mut task, lines, &mut plain, &mut compressed);
        let body = if task.is_gzip { &compressed } else { &plain };
        let plain_length = plain.len();
        let body_length = body.len();
        write_head(&mut head, &task.head_prefix, body_length);
        let result = match connection.as_mut() {
            Some(open) => Some(open.send(&head, body).await),
            None => None,
        };
        if let Some(interval) = task.interval {
            planned += interval;
        }
        let done_ns = shared.clock.now_ns();
        let is_in_window = shared.is_in_window(done_ns);
        match result {
            Some(Ok(answer)) if answer.is_success() => {
                shared.counters.add_sent(1);
                shared.counters.add_received((lines * task.fields) as u64);
                if is_in_window {
                    let totals = &shared.in_window;
                    totals.requests.fetch_add(1, Ordering::Relaxed);
                    totals
                        .points
                        .fetch_add((lines * task.fields) as u64, Ordering::Relaxed);
                    totals
                        .body_bytes
                        .fetch_add(body_length as u64, Ordering::Relaxed);
                    totals
                        .plain_bytes
                        .fetch_add(plain_length as u64, Ordering::Relaxed);
                    latency.record_nanos(done_ns.saturating_sub(send_ns));
                }
                if connection.as_ref().is_some_and(HttpConnection::is_closing) {
                    connection = None;
                }
            }
            Some(Ok(answer)) => {
                shared.note_error(done_ns, || describe(answer.status, &answer.body));
                if connection.as_ref().is_some_and(HttpConnection::is_closing) {
                    connection = None;
                }
            }
            Some(Err(error)) => {
                shared.note_error(done_ns, || format!("request failed: {error}"));
                connection = None;
            }
            None => {}
        }
        if connection.is_none() {
            tokio::time::sleep(RECONNECT_DELAY).await;
            match connect(task.addr).await {
                Ok(open) => connection = Some(open),
                Err(error) => {
                    shared.note_error(shared.clock.now_ns(), || {
                        format!("cannot reconnect to {}: {error}", task.addr)
                    });
                }
            }
        }
    }
    latency.flush();
}

/// Fills `plain` with the next `lines` lines and, with gzip, `compressed` with their
/// gzip'd form.
fn build_body(task: &mut Task, lines: usize, plain: &mut Vec<u8>, compressed: &mut Vec<u8>) {
    plain.clear();
    task.builder.write_lines(plain, lines);
    if !task.is_gzip {
        return;
    }
    compressed.clear();
    let mut encoder =
        flate2::write::GzEncoder::new(std::mem::take(compressed), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(plain);
    *compressed = encoder.finish().unwrap_or_default();
}

fn write_head(head: &mut Vec<u8>, prefix: &[u8], length: usize) {
    head.clear();
    head.extend_from_slice(prefix);
    write_integer(head, length as i64);
    head.extend_from_slice(b"\r\n\r\n");
}

fn describe(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let excerpt: String = text.chars().take(ERROR_EXCERPT).collect();
    format!("HTTP {status}: {excerpt}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_like_display() {
        for value in [0i64, 7, -7, 10, 1_764_620_000_000, i64::MIN + 1, i64::MAX] {
            let mut out = Vec::new();
            write_integer(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), value.to_string());
        }
        for (hundredths, text) in [(0, "0.00"), (5, "0.05"), (-5, "-0.05"), (2137, "21.37")] {
            let mut out = Vec::new();
            write_hundredths(&mut out, hundredths);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn every_device_gets_a_line_before_time_moves_on() {
        let devices = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let mut builder = BodyBuilder::new(
            "m",
            &devices,
            2,
            1_000,
            Duration::from_secs(1),
            TimePrecision::Nanoseconds,
            7,
        );
        let mut body = Vec::new();
        builder.write_lines(&mut body, 2);
        assert!(!builder.has_completed_a_round());
        builder.write_lines(&mut body, 2);
        assert!(builder.has_completed_a_round());
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let shape: Vec<(&str, &str)> = lines
            .iter()
            .map(|line| {
                let mut parts = line.split(' ');
                let series = parts.next().unwrap();
                let fields = parts.next().unwrap();
                assert!(
                    fields.starts_with("f0=") && fields.contains(",f1="),
                    "{line}"
                );
                (series, parts.next().unwrap())
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("m,device=a", "1000000000"),
                ("m,device=b", "1000000000"),
                ("m,device=c", "1000000000"),
                ("m,device=a", "2000000000"),
            ]
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let valid = LineProtocolConfig::default();
        assert!(valid.validate().is_ok());
        let cases = [
            LineProtocolConfig {
                devices: 2,
                connections: 3,
                ..valid.clone()
            },
            LineProtocolConfig {
                url: "https://x".to_owned(),
                ..valid.clone()
            },
            LineProtocolConfig {
                precision: TimePrecision::Seconds,
                step: Duration::from_millis(500),
                ..valid.clone()
            },
            LineProtocolConfig {
                measurement: "a b".to_owned(),
                ..valid.clone()
            },
            LineProtocolConfig {
                fields: 0,
                ..valid.clone()
            },
        ];
        for config in cases {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
