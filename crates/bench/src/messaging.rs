//! The message scenarios (fan-in, fan-out, pairs): one engine, three topic layouts.
//!
//! A run goes through phases announced on a watch channel: every subscriber connects and
//! subscribes, every publisher connects, then publishers send for the configured
//! duration (the measurement window), then stop while subscribers keep counting what is
//! still on its way, for at most the drain time. Only messages received inside the window
//! count towards `msgs_per_sec`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetwire_client::{ClientError, ConnectOptions, Connection, Event, Progress, PublishTemplate};
use fleetwire_mqtt_codec::{ProtocolVersion, QoS, TopicFilter, TopicName};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::latency::LatencyBuffer;
use crate::rate::TokenBucket;
use crate::report::{BrokerUsage, CpuUsage};
use crate::system::{self, CpuTimes};
use crate::{BenchConfig, BenchError, Counters, LatencyRecorder, Report, Scenario};

/// A publisher stops queueing when this many bytes wait for the socket.
const HIGH_WATER: usize = 64 * 1024;
/// Subscribers add their counts to the shared counters in batches of this size.
const COUNT_BATCH: u64 = 64;
/// How often an idle subscriber publishes its partial count.
const COUNT_FLUSH: Duration = Duration::from_millis(50);
/// The drain ends early once no message arrived for this long.
const QUIET: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Setup,
    Running,
    Draining,
    Finished,
}

/// Who publishes where and who subscribes to what.
struct Plan {
    publisher_topics: Vec<TopicName>,
    subscriber_filters: Vec<TopicFilter>,
    /// Whether every subscriber gets every message (fan-in, fan-out) or one (pairs).
    is_broadcast: bool,
}

impl Plan {
    /// How many subscribers receive each message.
    fn deliveries_per_message(&self) -> u64 {
        if self.is_broadcast {
            self.subscriber_filters.len() as u64
        } else {
            1
        }
    }

    fn new(config: &BenchConfig, run_id: &str) -> Result<Plan, BenchError> {
        let topic = |text: String| {
            TopicName::new(text.clone()).map_err(|error| {
                BenchError::InvalidConfig(format!("topic {text:?} is invalid: {error}"))
            })
        };
        let filter = |text: String| {
            TopicFilter::new(text.clone()).map_err(|error| {
                BenchError::InvalidConfig(format!("filter {text:?} is invalid: {error}"))
            })
        };
        let prefix = format!("fwbench/{run_id}");
        let (publisher_topics, subscriber_filters) = match config.scenario {
            Scenario::FanIn => (
                (0..config.publishers)
                    .map(|index| topic(format!("{prefix}/in/{index}")))
                    .collect::<Result<Vec<_>, _>>()?,
                vec![filter(format!("{prefix}/in/+"))?; config.subscribers],
            ),
            Scenario::FanOut => (
                vec![topic(format!("{prefix}/out"))?; config.publishers],
                vec![filter(format!("{prefix}/out"))?; config.subscribers],
            ),
            Scenario::Pairs => {
                let topics = (0..config.publishers)
                    .map(|index| topic(format!("{prefix}/pair/{index}")))
                    .collect::<Result<Vec<_>, _>>()?;
                let filters = topics
                    .iter()
                    .map(|topic| filter(topic.as_str().to_owned()))
                    .collect::<Result<Vec<_>, _>>()?;
                (topics, filters)
            }
            Scenario::Connections => {
                return Err(BenchError::InvalidConfig(
                    "the connections scenario sends no messages".to_owned(),
                ));
            }
        };
        Ok(Plan {
            publisher_topics,
            subscriber_filters,
            is_broadcast: config.scenario != Scenario::Pairs,
        })
    }
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct SubscriberOutcome {
    received: u64,
    received_in_window: u64,
}

/// State every task of a run shares.
struct Shared {
    clock: Clock,
    counters: Arc<Counters>,
    recorder: Arc<LatencyRecorder>,
    /// Clock time at which the window closed; `u64::MAX` while it is open.
    window_end_ns: AtomicU64,
}

pub(crate) async fn run(
    config: &BenchConfig,
    counters: &Arc<Counters>,
) -> Result<Report, BenchError> {
    let run_id = run_id();
    let plan = Plan::new(config, &run_id)?;
    let broker_rss_before = match config.broker_pid {
        Some(pid) => Some(broker_rss(pid)?),
        None => None,
    };
    let shared = Arc::new(Shared {
        clock: Clock::start(),
        counters: Arc::clone(counters),
        recorder: Arc::new(LatencyRecorder::default()),
        window_end_ns: AtomicU64::new(u64::MAX),
    });
    let (phase, phase_watch) = watch::channel(Phase::Setup);

    let subscriber_read_chunk = if config.subscribers == 1 {
        64 * 1024
    } else {
        16 * 1024
    };
    let subscriber_connections = open_all(
        config,
        "subscribers",
        &run_id,
        plan.subscriber_filters.iter().cloned().map(Some).collect(),
        subscriber_read_chunk,
        &shared.counters,
    )
    .await?;
    let publisher_connections = open_all(
        config,
        "publishers",
        &run_id,
        vec![None; plan.publisher_topics.len()],
        4096,
        &shared.counters,
    )
    .await?;

    let mut subscribers = JoinSet::new();
    for (index, connection) in subscriber_connections.into_iter().enumerate() {
        subscribers.spawn(subscribe_loop(
            connection,
            index,
            Arc::clone(&shared),
            phase_watch.clone(),
        ));
    }
    let rate_per_publisher =
        (config.rate > 0.0).then(|| config.rate / plan.publisher_topics.len() as f64);
    let mut publishers = JoinSet::new();
    let filler = vec![b'x'; config.payload];
    for (connection, topic) in publisher_connections
        .into_iter()
        .zip(plan.publisher_topics.iter().cloned())
    {
        let template = PublishTemplate::new(topic, &filler, config.qos, false, config.version)
            .map_err(|error| {
                BenchError::InvalidConfig(format!("cannot encode the message: {error}"))
            })?;
        publishers.spawn(publish_loop(
            connection,
            template,
            rate_per_publisher,
            Arc::clone(&shared),
            phase_watch.clone(),
        ));
    }

    // The measurement window.
    let usage = WindowStart::now(config.broker_pid, broker_rss_before);
    let window_start = Instant::now();
    let _ = phase.send(Phase::Running);
    tokio::time::sleep(config.duration).await;
    shared
        .window_end_ns
        .store(shared.clock.now_ns(), Ordering::Relaxed);
    let _ = phase.send(Phase::Draining);
    let window = window_start.elapsed();
    let (cpu, broker) = usage.finish(window)?;

    // Publishers finish their in-flight messages (bounded by the drain time), then
    // subscribers get until the stream goes quiet.
    let drain_deadline = Instant::now() + config.drain;
    let drained = tokio::time::timeout_at(drain_deadline, async {
        while publishers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Still blocked on a broker that does not read; what they queued counts as sent.
        publishers.abort_all();
    }
    // Publishers queue nothing after the window closed, and a publisher stuck on a full
    // socket may be aborted above, so count from the shared counter.
    let sent = shared.counters.snapshot().sent;
    // With QoS 1/2 every acknowledged message must arrive, so wait for all of them (up
    // to the deadline); with QoS 0 some may be dropped, so stop once the stream is quiet.
    let expected = sent.saturating_mul(plan.deliveries_per_message());
    let is_qos0 = config.qos == QoS::AtMostOnce;
    let mut last_count = shared.counters.received();
    let mut last_change = Instant::now();
    while Instant::now() < drain_deadline && last_count < expected {
        if is_qos0 && last_change.elapsed() >= QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let count = shared.counters.received();
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        }
    }
    let _ = phase.send(Phase::Finished);
    let mut received = 0;
    let mut received_in_window = 0;
    while let Some(outcome) = subscribers.join_next().await {
        if let Ok(outcome) = outcome {
            received += outcome.received;
            received_in_window += outcome.received_in_window;
        }
    }

    if config.persistent_subscribers {
        end_sessions(config, &run_id, config.subscribers).await;
    }

    let duration_s = window.as_secs_f64();
    Ok(Report {
        scenario: config.scenario.name(),
        target: config.target.to_string(),
        transport: config.transport.name(),
        mqtt_version: version_name(config.version),
        qos: config.qos as u8,
        payload_bytes: config.payload,
        publishers: config.publishers,
        subscribers: config.subscribers,
        rate: config.rate,
        duration_s: round3(duration_s),
        sent,
        received,
        received_in_window,
        errors: shared.counters.errors(),
        msgs_per_sec: (received_in_window as f64 / duration_s).round(),
        latency_us: shared.recorder.summary(),
        cpu,
        broker,
        connections: None,
    })
}

/// Connects (and subscribes) one connection per entry of `filters`, a bounded number at
/// a time. Every one must succeed: a run with missing subscribers would measure the
/// wrong thing.
async fn open_all(
    config: &BenchConfig,
    role: &'static str,
    run_id: &str,
    filters: Vec<Option<TopicFilter>>,
    read_chunk: usize,
    counters: &Arc<Counters>,
) -> Result<Vec<Connection>, BenchError> {
    let total = filters.len();
    let limit = Arc::new(Semaphore::new(config.connect_concurrency));
    let mut tasks = JoinSet::new();
    for (index, filter) in filters.into_iter().enumerate() {
        let addr = match role {
            "subscribers" => config.subscriber_target.unwrap_or(config.target),
            _ => config.target,
        };
        let options = ConnectOptions {
            addr,
            transport: config.transport.clone(),
            client_id: client_id(run_id, role, index),
            clean_start: !(config.persistent_subscribers && role == "subscribers"),
            version: config.version,
            keep_alive: config.keep_alive,
            max_inflight: config.inflight,
            read_chunk,
            ..ConnectOptions::default()
        };
        let limit = Arc::clone(&limit);
        let qos = config.qos;
        let counters = Arc::clone(counters);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = open_one(&options, filter, qos).await;
            match &result {
                Ok(_) => counters.connection_opened(),
                Err(_) => counters.add_error(),
            }
            (index, result)
        });
    }
    let mut opened: Vec<Option<Connection>> = (0..total).map(|_| None).collect();
    let mut failed = 0;
    let mut first = None;
    while let Some(joined) = tasks.join_next().await {
        let Ok((index, result)) = joined else {
            failed += 1;
            continue;
        };
        match result {
            Ok(connection) => {
                if let Some(slot) = opened.get_mut(index) {
                    *slot = Some(connection);
                }
            }
            Err(error) => {
                failed += 1;
                first.get_or_insert(error);
            }
        }
    }
    match first {
        Some(first) => Err(BenchError::Setup {
            role,
            failed,
            total,
            first,
        }),
        None => Ok(opened.into_iter().flatten().collect()),
    }
}

/// The client id of connection `index` of `role` in run `run_id`.
fn client_id(run_id: &str, role: &str, index: usize) -> String {
    format!("fwb-{run_id}-{}{index}", &role[..1])
}

/// Ends the persistent sessions of the run's subscribers (connects each with a clean
/// session and leaves), so that they queue nothing for runs that follow.
async fn end_sessions(config: &BenchConfig, run_id: &str, count: usize) {
    for index in 0..count {
        let options = ConnectOptions {
            addr: config.subscriber_target.unwrap_or(config.target),
            transport: config.transport.clone(),
            client_id: client_id(run_id, "subscribers", index),
            version: config.version,
            ..ConnectOptions::default()
        };
        if let Ok((connection, _)) = Connection::connect(&options).await {
            let _ = connection.disconnect().await;
        }
    }
}

async fn open_one(
    options: &ConnectOptions,
    filter: Option<TopicFilter>,
    qos: QoS,
) -> Result<Connection, ClientError> {
    let (mut connection, _) = Connection::connect(options).await?;
    if let Some(filter) = filter {
        let suback = connection.subscribe_and_wait(&[(filter, qos)]).await?;
        if let Some(refusal) = suback.reasons.iter().find(|reason| reason.is_error()) {
            return Err(ClientError::Refused(*refusal));
        }
    }
    Ok(connection)
}

async fn subscribe_loop(
    mut connection: Connection,
    index: usize,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> SubscriberOutcome {
    let mut latency = LatencyBuffer::new(Arc::clone(&shared.recorder), index);
    let mut outcome = SubscriberOutcome::default();
    let mut uncounted = 0u64;
    let mut flush = tokio::time::interval(COUNT_FLUSH);
    loop {
        // Messages first: while they keep coming the other branches are not even polled.
        tokio::select! {
            biased;
            event = connection.next_event() => match event {
                Ok(Event::Publish(publish)) => {
                    let now = shared.clock.now_ns();
                    if let Some(stamp) = publish.payload.get(..8).and_then(|bytes| <[u8; 8]>::try_from(bytes).ok()) {
                        latency.record_nanos(now.saturating_sub(u64::from_le_bytes(stamp)));
                    }
                    outcome.received += 1;
                    if now <= shared.window_end_ns.load(Ordering::Relaxed) {
                        outcome.received_in_window += 1;
                    }
                    uncounted += 1;
                    if uncounted >= COUNT_BATCH {
                        shared.counters.add_received(std::mem::take(&mut uncounted));
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    shared.counters.add_error();
                    break;
                }
            },
            _ = flush.tick() => shared.counters.add_received(std::mem::take(&mut uncounted)),
            _ = phase.wait_for(|phase| *phase == Phase::Finished) => break,
        }
    }
    shared.counters.add_received(uncounted);
    shared.counters.connection_closed();
    let _ = tokio::time::timeout(Duration::from_millis(200), connection.disconnect()).await;
    outcome
}

async fn publish_loop(
    mut connection: Connection,
    template: PublishTemplate,
    rate: Option<f64>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) {
    if phase
        .wait_for(|phase| *phase >= Phase::Running)
        .await
        .is_err()
    {
        return;
    }
    let is_qos0 = template.qos() == QoS::AtMostOnce;
    let mut bucket = rate.map(|rate| TokenBucket::new(rate, std::time::Instant::now()));
    let clock = shared.clock;
    loop {
        let budget = bucket.as_mut().map_or(u64::MAX, |bucket| {
            bucket.available(std::time::Instant::now())
        });
        let mut queued = 0u64;
        while queued < budget
            && connection.buffered() < HIGH_WATER
            && (is_qos0 || connection.has_window())
        {
            let stamped = connection.publish_template(&template, |payload| {
                payload[..8].copy_from_slice(&clock.now_ns().to_le_bytes());
            });
            if stamped.is_err() {
                break;
            }
            queued += 1;
        }
        if let Some(bucket) = &mut bucket {
            bucket.spend(queued);
        }
        shared.counters.add_sent(queued);
        // Sleep for the next token only when tokens, not the socket or the window, were
        // what stopped the batch.
        let next_token = bucket
            .as_ref()
            .filter(|_| queued == budget)
            .map(|bucket| Instant::from_std(bucket.next_token_at()));
        tokio::select! {
            biased;
            progress = connection.progress() => match progress {
                Ok(Progress::Event(event)) => note_acknowledgement(&event, &shared.counters),
                Ok(Progress::Drained) => {}
                Err(_) => {
                    shared.counters.add_error();
                    shared.counters.connection_closed();
                    return;
                }
            },
            () = sleep_until(next_token) => {}
            _ = phase.wait_for(|phase| *phase >= Phase::Draining) => break,
        }
    }
    // Let QoS 1/2 exchanges finish; the run's drain deadline bounds this.
    while connection.inflight() > 0 || connection.buffered() > 0 {
        match connection.progress().await {
            Ok(Progress::Event(event)) => note_acknowledgement(&event, &shared.counters),
            Ok(Progress::Drained) => {}
            Err(_) => {
                shared.counters.add_error();
                break;
            }
        }
    }
    shared.counters.connection_closed();
    let _ = tokio::time::timeout(Duration::from_millis(200), connection.disconnect()).await;
}

/// Counts refused messages as errors (5.0 reason codes of 0x80 and above; "no matching
/// subscribers" is a success).
fn note_acknowledgement(event: &Event, counters: &Counters) {
    let is_refused = match event {
        Event::PubAck(ack) => ack.reason.is_error(),
        Event::PubComp(complete) => complete.reason.is_error(),
        Event::PubRec(_) => true,
        _ => false,
    };
    if is_refused {
        counters.add_error();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn broker_rss(pid: u32) -> Result<u64, BenchError> {
    system::resident_bytes(Some(pid)).map_err(|source| BenchError::BrokerProcess { pid, source })
}

/// CPU times of the generator (and of the broker, when its pid is known) at the start
/// of a measurement window, to report what each used during it.
pub(crate) struct WindowStart {
    own: CpuTimes,
    /// The broker's pid, CPU times, and resident memory before the scenario began.
    broker: Option<(u32, CpuTimes, u64)>,
}

impl WindowStart {
    /// Starts a window; `broker_rss_before` was read before the scenario set up.
    pub(crate) fn now(broker_pid: Option<u32>, broker_rss_before: Option<u64>) -> WindowStart {
        let own = system::cpu_times(None).unwrap_or_default();
        let broker = broker_pid.zip(broker_rss_before).map(|(pid, rss_before)| {
            (
                pid,
                system::cpu_times(Some(pid)).unwrap_or_default(),
                rss_before,
            )
        });
        WindowStart { own, broker }
    }

    /// What the generator and the broker used over the `window` since [`WindowStart::now`].
    pub(crate) fn finish(
        &self,
        window: Duration,
    ) -> Result<(CpuUsage, Option<BrokerUsage>), BenchError> {
        let cpu = cpu_usage(
            system::cpu_times(None).unwrap_or_default().since(self.own),
            window,
        );
        let broker = match self.broker {
            Some((pid, before, rss_before)) => {
                let used = system::cpu_times(Some(pid))
                    .unwrap_or_default()
                    .since(before);
                Some(BrokerUsage {
                    pid,
                    cpu_percent: percent(used.total(), window),
                    rss_before_bytes: rss_before,
                    rss_bytes: broker_rss(pid)?,
                })
            }
            None => None,
        };
        Ok((cpu, broker))
    }
}

pub(crate) fn cpu_usage(used: CpuTimes, window: Duration) -> CpuUsage {
    CpuUsage {
        user_s: round3(used.user.as_secs_f64()),
        system_s: round3(used.system.as_secs_f64()),
        percent: percent(used.total(), window),
        cores: system::cores(),
    }
}

pub(crate) fn percent(used: Duration, window: Duration) -> f64 {
    if window.is_zero() {
        return 0.0;
    }
    (used.as_secs_f64() / window.as_secs_f64() * 1000.0).round() / 10.0
}

pub(crate) fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

pub(crate) fn version_name(version: ProtocolVersion) -> &'static str {
    if version.is_v5() { "5" } else { "3.1.1" }
}

/// A short id that keeps topics and client ids of concurrent or consecutive runs apart.
pub(crate) fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:08x}", mixed >> 32)
}
