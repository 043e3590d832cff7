//! The `connections` scenario: ramp up to N idle MQTT connections, hold them, and report
//! the connect rate, the handshake latency and the broker's memory per connection.
//!
//! One address can open only as many connections to one server port as there are
//! ephemeral ports (about 28,000 by default), so against a loopback target the
//! connections are spread over source addresses `127.X.Y.Z`, `per_source` each; the
//! second octet comes from the run id, so ports still in `TIME_WAIT` from an earlier run
//! are not in the way. Connections end with a reset for the same reason.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleetwire_client::{ClientError, ConnectOptions, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::latency::LatencyBuffer;
use crate::messaging::{WindowStart, broker_rss, round3, run_id, version_name};
use crate::rate::TokenBucket;
use crate::report::ConnectionsResult;
use crate::system;
use crate::{BenchConfig, BenchError, Counters, LatencyRecorder, Report};

/// Descriptors kept free for everything else the process opens.
const SPARE_DESCRIPTORS: u64 = 64;
/// How long closing all connections may take before the report is written anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn run(
    config: &BenchConfig,
    counters: &Arc<Counters>,
) -> Result<Report, BenchError> {
    let needed = config.connections as u64 + SPARE_DESCRIPTORS;
    let limit = system::raise_open_files_limit().unwrap_or(0);
    if limit < needed {
        return Err(BenchError::TooManyConnections {
            requested: config.connections,
            needed,
            limit,
        });
    }
    let run_id = run_id();
    let sources = SourceAddresses::new(config, &run_id);
    let broker_rss_before = config.broker_pid.map(broker_rss).transpose()?;
    let usage = WindowStart::now(config.broker_pid, broker_rss_before);

    let (answers, mut answered) = mpsc::unbounded_channel::<Result<u64, ClientError>>();
    let (stop, stopped) = watch::channel(false);
    let lost = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let spawner = tokio::spawn(spawn_all(
        config.clone(),
        run_id,
        sources.clone(),
        answers,
        stopped,
        Arc::clone(&lost),
        Arc::clone(counters),
    ));

    let recorder = Arc::new(LatencyRecorder::default());
    let mut latency = LatencyBuffer::new(Arc::clone(&recorder), 0);
    let mut established = 0usize;
    let mut failed = 0usize;
    let mut last_answer = start;
    while let Some(answer) = answered.recv().await {
        match answer {
            Ok(nanos) => {
                established += 1;
                latency.record_nanos(nanos);
            }
            Err(_) => failed += 1,
        }
        last_answer = Instant::now();
        if established + failed == config.connections {
            break;
        }
    }
    latency.flush();
    let ramp = last_answer.duration_since(start);

    tokio::time::sleep(config.duration).await;
    let window = start.elapsed();
    let (cpu, broker) = usage.finish(window)?;

    let _ = stop.send(true);
    let _ = spawner.await;
    let closing = Instant::now();
    while counters.snapshot().connected > 0 && closing.elapsed() < CLOSE_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let lost = lost.load(Ordering::Relaxed) as usize;
    let ramp_s = ramp.as_secs_f64();
    let rss_per_connection_bytes = broker
        .filter(|_| established > 0)
        .map(|broker| {
            (broker.rss_bytes as f64 - broker.rss_before_bytes as f64) / established as f64
        })
        .map(f64::round);
    Ok(Report {
        scenario: config.scenario.name(),
        target: config.target.to_string(),
        transport: config.transport.name(),
        mqtt_version: version_name(config.version),
        qos: config.qos as u8,
        payload_bytes: 0,
        publishers: 0,
        subscribers: 0,
        rate: config.rate,
        duration_s: round3(window.as_secs_f64()),
        sent: 0,
        received: 0,
        received_in_window: 0,
        errors: (failed + lost) as u64,
        msgs_per_sec: 0.0,
        latency_us: recorder.summary(),
        cpu,
        broker,
        connections: Some(ConnectionsResult {
            requested: config.connections,
            established,
            failed,
            lost,
            ramp_s: round3(ramp_s),
            connects_per_sec: if ramp_s > 0.0 {
                (established as f64 / ramp_s).round()
            } else {
                0.0
            },
            source_addresses: sources.count(config.connections),
            rss_per_connection_bytes,
        }),
    })
}

/// Which local address connection number `index` binds to.
#[derive(Debug, Clone)]
struct SourceAddresses {
    /// Second octet of `127.X.Y.Z`; `None` when the target is not IPv4 loopback and the
    /// system chooses.
    base: Option<u8>,
    per_source: usize,
}

impl SourceAddresses {
    fn new(config: &BenchConfig, run_id: &str) -> SourceAddresses {
        let is_loopback_v4 = matches!(config.target.ip(), IpAddr::V4(ip) if ip.is_loopback());
        let seed = u32::from_str_radix(run_id, 16).unwrap_or(0);
        SourceAddresses {
            base: is_loopback_v4.then(|| 1 + (seed % 250) as u8),
            per_source: config.per_source,
        }
    }

    fn for_index(&self, index: usize) -> Option<IpAddr> {
        let base = self.base?;
        let source = index / self.per_source;
        let third = u8::try_from(source / 250).unwrap_or(u8::MAX);
        let fourth = 1 + (source % 250) as u8;
        Some(IpAddr::V4(Ipv4Addr::new(127, base, third, fourth)))
    }

    fn count(&self, connections: usize) -> usize {
        match self.base {
            Some(_) => connections.div_ceil(self.per_source),
            None => 1,
        }
    }
}

/// Starts one task per connection, at most `connect_concurrency` handshakes at a time and,
/// with a rate, no faster than that.
async fn spawn_all(
    config: BenchConfig,
    run_id: String,
    sources: SourceAddresses,
    answers: mpsc::UnboundedSender<Result<u64, ClientError>>,
    stopped: watch::Receiver<bool>,
    lost: Arc<AtomicU64>,
    counters: Arc<Counters>,
) {
    let limit = Arc::new(Semaphore::new(config.connect_concurrency));
    let mut bucket =
        (config.rate > 0.0).then(|| TokenBucket::new(config.rate, std::time::Instant::now()));
    for index in 0..config.connections {
        if *stopped.borrow() {
            return;
        }
        if let Some(bucket) = &mut bucket {
            while bucket.available(std::time::Instant::now()) == 0 {
                tokio::time::sleep_until(Instant::from_std(bucket.next_token_at())).await;
            }
            bucket.spend(1);
        }
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        let login =
            (!config.logins.is_empty()).then(|| &config.logins[index % config.logins.len()]);
        let options = ConnectOptions {
            addr: config.target,
            transport: config.transport.clone(),
            local_addr: sources.for_index(index),
            // Prefixed with the device, the way a device with several connections would.
            client_id: match login {
                Some((username, _)) => format!("{username}-fwb-{run_id}-c{index}"),
                None => format!("fwb-{run_id}-c{index}"),
            },
            version: config.version,
            keep_alive: config.keep_alive,
            read_chunk: 256,
            username: login.map(|(username, _)| username.clone()),
            password: login.map(|(_, password)| bytes::Bytes::from(password.clone())),
            ..ConnectOptions::default()
        };
        tokio::spawn(hold(
            options,
            permit,
            answers.clone(),
            stopped.clone(),
            Arc::clone(&lost),
            Arc::clone(&counters),
        ));
    }
}

/// Opens one connection, reports how long the handshake took, and keeps it open (pings
/// included) until the run stops.
async fn hold(
    options: ConnectOptions,
    permit: OwnedSemaphorePermit,
    answers: mpsc::UnboundedSender<Result<u64, ClientError>>,
    mut stopped: watch::Receiver<bool>,
    lost: Arc<AtomicU64>,
    counters: Arc<Counters>,
) {
    let begin = Instant::now();
    let result = Connection::connect(&options).await;
    drop(permit);
    let mut connection = match result {
        Ok((connection, _)) => connection,
        Err(error) => {
            counters.add_error();
            let _ = answers.send(Err(error));
            return;
        }
    };
    counters.connection_opened();
    let nanos = u64::try_from(begin.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let _ = answers.send(Ok(nanos));
    drop(answers);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|is_stopped| *is_stopped) => {
                connection.abort();
                break;
            }
            event = connection.next_event() => {
                if event.is_err() {
                    lost.fetch_add(1, Ordering::Relaxed);
                    counters.add_error();
                    break;
                }
            }
        }
    }
    counters.connection_closed();
}
