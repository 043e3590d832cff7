//! Persistent sessions under load, for the durable broker state (issue 19), against any
//! MQTT 3.1.1 broker:
//!
//! - [`offline_drain`]: N persistent sessions subscribe to one topic and go offline; one
//!   publisher sends M QoS 1 messages (each queued N times, and acknowledged only once a
//!   durable broker has saved it); then every session comes back and drains its queue.
//!   Reports both phases and the deliveries per second over the whole.
//! - [`load_state`]: fills a broker with persistent sessions holding queued messages and
//!   with retained messages (for a restart measurement; the sessions stay).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetwire_client::{ClientError, ConnectOptions, Connection, Event, Progress};
use fleetwire_mqtt_codec::{QoS, TopicFilter, TopicName};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::BenchError;
use crate::messaging::run_id;

/// The shape of a persistence run.
#[derive(Debug, Clone)]
pub struct PersistenceConfig {
    /// Every connection's options (address, transport, version); client ids and clean
    /// session are set per connection.
    pub connect: ConnectOptions,
    /// Persistent sessions.
    pub sessions: usize,
    /// Messages each session gets queued.
    pub messages: usize,
    /// Retained messages ([`load_state`] only), on topics of their own.
    pub retained: usize,
    /// Payload bytes per message.
    pub payload: usize,
    /// QoS 1 messages a publisher keeps in flight.
    pub inflight: usize,
    /// Connection handshakes (and drains) in progress at once.
    pub concurrency: usize,
}

/// What [`offline_drain`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainReport {
    /// Persistent sessions.
    pub sessions: usize,
    /// Messages published (each queued for every session).
    pub messages: usize,
    /// Messages received by the sessions when they came back.
    pub deliveries: u64,
    /// Deliveries expected (sessions x messages).
    pub expected: u64,
    /// Seconds to publish every message and have it acknowledged.
    pub publish_s: f64,
    /// Seconds from the first reconnect until every queue was drained.
    pub drain_s: f64,
    /// Deliveries per second over both phases.
    pub deliveries_per_sec: f64,
}

/// What [`load_state`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Persistent sessions created (offline, each with its own topic).
    pub sessions: usize,
    /// Messages queued for each session.
    pub messages_per_session: usize,
    /// Retained messages set.
    pub retained: usize,
    /// Seconds it took.
    pub elapsed_s: f64,
}

impl PersistenceConfig {
    fn options(&self, client_id: String, clean_start: bool) -> ConnectOptions {
        ConnectOptions {
            client_id,
            clean_start,
            max_inflight: self.inflight,
            ..self.connect.clone()
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        if self.sessions == 0 || self.concurrency == 0 || self.inflight == 0 {
            return Err(BenchError::InvalidConfig(
                "sessions, concurrency and the in-flight window must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Persistent sessions queue QoS 1 messages while offline, then drain them.
pub async fn offline_drain(config: &PersistenceConfig) -> Result<DrainReport, BenchError> {
    config.validate()?;
    let run = run_id();
    let topic = topic(&format!("fwbench/{run}/queue"))?;
    let filter = filter(topic.as_str())?;
    let client_id = |index: usize| format!("fwb-{run}-q{index}");

    for_each(config, "subscribers", |index| {
        subscribe_and_leave(config.options(client_id(index), false), Ok(filter.clone()))
    })
    .await?;

    let started = Instant::now();
    publish_all(
        config,
        &format!("fwb-{run}-p"),
        (0..config.messages).map(|_| (topic.clone(), false)),
    )
    .await?;
    let publish_s = started.elapsed().as_secs_f64();

    let drain_started = Instant::now();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for_each(config, "drains", |index| {
        let options = config.options(client_id(index), false);
        let received = Arc::clone(&received);
        let wanted = config.messages;
        async move {
            let (mut connection, _) = Connection::connect(&options).await?;
            let mut count = 0;
            while count < wanted {
                match tokio::time::timeout(Duration::from_secs(30), connection.next_event()).await {
                    Ok(Ok(Event::Publish(_))) => count += 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Err(error),
                    // Nothing more is coming: count what came.
                    Err(_) => break,
                }
            }
            received.fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
            // Acknowledgements queued by the last reads go out before leaving.
            connection.flush().await?;
            connection.disconnect().await
        }
    })
    .await?;
    let drain_s = drain_started.elapsed().as_secs_f64();

    // Leave nothing behind for later runs.
    for_each(config, "cleanups", |index| {
        let options = config.options(client_id(index), true);
        async move {
            let (connection, _) = Connection::connect(&options).await?;
            connection.disconnect().await
        }
    })
    .await?;

    let deliveries = received.load(std::sync::atomic::Ordering::Relaxed);
    let total_s = publish_s + drain_s;
    Ok(DrainReport {
        sessions: config.sessions,
        messages: config.messages,
        deliveries,
        expected: (config.sessions * config.messages) as u64,
        publish_s: round3(publish_s),
        drain_s: round3(drain_s),
        deliveries_per_sec: (deliveries as f64 / total_s.max(1e-9)).round(),
    })
}

/// Creates `sessions` offline persistent sessions (`fwb-state-{index}`, each subscribed
/// to `fwbench/state/{index}`) holding `messages` QoS 1 messages each, and `retained`
/// retained messages on `fwbench/retained/{index}`.
pub async fn load_state(config: &PersistenceConfig) -> Result<LoadReport, BenchError> {
    config.validate()?;
    let started = Instant::now();
    for_each(config, "sessions", |index| {
        subscribe_and_leave(
            config.options(format!("fwb-state-{index}"), false),
            filter(&format!("fwbench/state/{index}")),
        )
    })
    .await?;
    let queued = (0..config.messages)
        .flat_map(|_| (0..config.sessions).map(|index| (format!("fwbench/state/{index}"), false)));
    let retained = (0..config.retained).map(|index| (format!("fwbench/retained/{index}"), true));
    publish_all(
        config,
        "fwb-state-publisher",
        queued
            .chain(retained)
            .filter_map(|(topic, retain)| TopicName::new(topic).ok().map(|topic| (topic, retain))),
    )
    .await?;
    Ok(LoadReport {
        sessions: config.sessions,
        messages_per_session: config.messages,
        retained: config.retained,
        elapsed_s: round3(started.elapsed().as_secs_f64()),
    })
}

/// Connects a persistent session, subscribes it to `filter` at QoS 1 and leaves it.
async fn subscribe_and_leave(
    options: ConnectOptions,
    filter: Result<TopicFilter, BenchError>,
) -> Result<(), ClientError> {
    let filter = filter.map_err(client_error)?;
    let (mut connection, _) = Connection::connect(&options).await?;
    connection
        .subscribe_and_wait(&[(filter, QoS::AtLeastOnce)])
        .await?;
    connection.disconnect().await
}

/// Publishes one QoS 1 message per item (topic, retain) from one connection, keeping
/// the in-flight window full, and waits for every acknowledgement.
async fn publish_all(
    config: &PersistenceConfig,
    client_id: &str,
    messages: impl Iterator<Item = (TopicName, bool)>,
) -> Result<(), BenchError> {
    let setup = |first: ClientError| BenchError::Setup {
        role: "publishers",
        failed: 1,
        total: 1,
        first,
    };
    let options = config.options(client_id.to_owned(), true);
    let (mut connection, _) = Connection::connect(&options).await.map_err(setup)?;
    let payload = Bytes::from(vec![b'x'; config.payload.max(1)]);
    let mut messages = messages.peekable();
    while messages.peek().is_some() || connection.inflight() > 0 || connection.buffered() > 0 {
        while connection.has_window() && connection.buffered() < 64 * 1024 {
            let Some((topic, retain)) = messages.next() else {
                break;
            };
            connection
                .publish(&topic, payload.clone(), QoS::AtLeastOnce, retain)
                .map_err(setup)?;
        }
        match connection.progress().await.map_err(setup)? {
            Progress::Event(Event::PubAck(ack)) if ack.reason.is_error() => {
                return Err(setup(ClientError::Refused(ack.reason)));
            }
            Progress::Event(_) | Progress::Drained => {}
        }
    }
    connection.disconnect().await.map_err(setup)
}

/// Runs `task(index)` for every session, `concurrency` at a time; fails with the first
/// error.
async fn for_each<F, Fut>(
    config: &PersistenceConfig,
    role: &'static str,
    task: F,
) -> Result<(), BenchError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(config.concurrency));
    let mut tasks = JoinSet::new();
    let mut failed = 0;
    let mut first = None;
    for index in 0..config.sessions {
        let permit = Arc::clone(&limit).acquire_owned().await;
        let work = task(index);
        tasks.spawn(async move {
            let _permit = permit;
            work.await
        });
        while let Some(done) = tasks.try_join_next() {
            note(done, &mut failed, &mut first);
        }
    }
    while let Some(done) = tasks.join_next().await {
        note(done, &mut failed, &mut first);
    }
    match first {
        Some(first) => Err(BenchError::Setup {
            role,
            failed,
            total: config.sessions,
            first,
        }),
        None => Ok(()),
    }
}

fn note(
    done: Result<Result<(), ClientError>, tokio::task::JoinError>,
    failed: &mut usize,
    first: &mut Option<ClientError>,
) {
    match done {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            *failed += 1;
            first.get_or_insert(error);
        }
        Err(_) => *failed += 1,
    }
}

fn topic(text: &str) -> Result<TopicName, BenchError> {
    TopicName::new(text.to_owned())
        .map_err(|error| BenchError::InvalidConfig(format!("bad topic {text}: {error}")))
}

fn filter(text: &str) -> Result<TopicFilter, BenchError> {
    TopicFilter::new(text.to_owned())
        .map_err(|error| BenchError::InvalidConfig(format!("bad filter {text}: {error}")))
}

fn client_error(error: BenchError) -> ClientError {
    ClientError::Io(std::io::Error::other(error.to_string()))
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
