//! What the platform's integration tests share: a platform started over a temporary
//! directory (the real registry on SQLite, the real store) with either a recording
//! [`MqttLink`] or the real broker in process; a local HTTP receiver for webhooks; and
//! waiting for what the platform does (events on its hub, records in the registry,
//! messages on the link) with a deadline instead of sleeping.

// Every test file compiles its own copy of this module and uses only a part of it.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fleetwire_broker::{BoxFuture, Broker, BrokerConfig, Running};
use fleetwire_client::{Ack, ConnectOptions, Connection, Event as ClientEvent};
use fleetwire_model::{
    Alarm, AlarmFilter, Command, Device, DeviceId, NewDevice, RuleAction, RuleId, RuleSpec,
    Severity,
};
use fleetwire_mqtt_codec::{ProtocolVersion, QoS, TopicName};
use fleetwire_platform::{
    Event, EventKinds, MqttLink, MqttStats, Outgoing, Platform, PlatformConfig, PlatformDeps,
    Subscription,
};
use fleetwire_registry::Registry;
use fleetwire_store::{Store, StoreConfig};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a test waits for something the platform should do before it fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// A data time the tests count from (2023-11-14), so `for` durations are data time and
/// never the wall clock.
pub(crate) const T0: i64 = 1_700_000_000_000;

// ---- names ----

pub(crate) fn device_id(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

pub(crate) fn rule_id(id: &str) -> RuleId {
    RuleId::new(id).unwrap()
}

pub(crate) fn topic(name: &str) -> TopicName {
    TopicName::new(name).unwrap()
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

// ---- temporary directories ----

/// A directory of its own under the system's temporary directory, removed when dropped
/// (also when the test fails).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "fleetwire-platform-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The registry and the store in `dir`, as a node keeps them.
async fn open_data(dir: &TempDir) -> (Registry, Store) {
    let registry = Registry::open_in_dir(dir.path()).await.unwrap();
    let store = Store::open(dir.path().join("telemetry"), StoreConfig::default()).unwrap();
    (registry, store)
}

// ---- a platform with a recording link ----

/// A platform over temporary directories whose MQTT link records what it is asked to do.
pub(crate) struct Node {
    pub(crate) platform: Platform,
    pub(crate) link: Arc<RecordingLink>,
    /// The registry the platform was given (a shared handle), for what only tests do:
    /// waiting for its queued writes.
    pub(crate) registry: Registry,
    dir: TempDir,
}

impl Node {
    /// A platform with the default configuration.
    pub(crate) async fn start() -> Node {
        Node::start_with(PlatformConfig::default()).await
    }

    pub(crate) async fn start_with(config: PlatformConfig) -> Node {
        Node::start_in(TempDir::new(), config).await
    }

    /// Stops the platform and starts another over the same directories, with a new link:
    /// a restart.
    pub(crate) async fn restart(self) -> Node {
        self.platform.shutdown().await;
        Node::start_in(self.dir, PlatformConfig::default()).await
    }

    async fn start_in(dir: TempDir, config: PlatformConfig) -> Node {
        let (registry, store) = open_data(&dir).await;
        let link = Arc::new(RecordingLink::default());
        let platform = Platform::start(PlatformDeps {
            store,
            registry: registry.clone(),
            mqtt: Arc::clone(&link) as Arc<dyn MqttLink>,
            config,
        })
        .await
        .unwrap();
        Node {
            platform,
            link,
            registry,
            dir,
        }
    }

    /// Shuts the platform down; the directory goes with the node.
    pub(crate) async fn stop(self) {
        self.platform.shutdown().await;
    }
}

/// Something the platform published through the link.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    /// Its place among everything published (for [`RecordingLink::deliver`]).
    pub(crate) index: usize,
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) expires_in: Option<Duration>,
    /// How many sessions the link said took it.
    pub(crate) taken_by: usize,
}

impl Published {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

type Takers = Arc<dyn Fn(&str) -> usize + Send + Sync>;
type Delivered = Box<dyn FnOnce() + Send>;

/// An [`MqttLink`] that records every message and disconnection. By default one session
/// takes every message; [`RecordingLink::set_takers`] changes that per topic. A test
/// fires a message's `on_delivered` with [`RecordingLink::deliver`], as a device's
/// `PUBACK` would.
pub(crate) struct RecordingLink {
    state: Mutex<LinkState>,
    /// Bumped at every change, for waiters.
    version: watch::Sender<u64>,
}

struct LinkState {
    published: Vec<Published>,
    on_delivered: Vec<Option<Delivered>>,
    disconnected: Vec<String>,
    takers: Takers,
}

impl Default for RecordingLink {
    fn default() -> RecordingLink {
        RecordingLink {
            state: Mutex::new(LinkState {
                published: Vec::new(),
                on_delivered: Vec::new(),
                disconnected: Vec::new(),
                takers: Arc::new(|_| 1),
            }),
            version: watch::Sender::new(0),
        }
    }
}

impl RecordingLink {
    /// How many sessions take a message published from now on, by its topic.
    pub(crate) fn set_takers(&self, takers: impl Fn(&str) -> usize + Send + Sync + 'static) {
        self.state.lock().takers = Arc::new(takers);
    }

    /// Everything published so far, in order.
    pub(crate) fn published(&self) -> Vec<Published> {
        self.state.lock().published.clone()
    }

    /// What was published on `topic` so far, in order.
    pub(crate) fn published_on(&self, topic: &str) -> Vec<Published> {
        self.published_where(|published| published.topic == topic)
    }

    pub(crate) fn published_where(&self, wanted: impl Fn(&Published) -> bool) -> Vec<Published> {
        self.state
            .lock()
            .published
            .iter()
            .filter(|published| wanted(published))
            .cloned()
            .collect()
    }

    /// The devices the platform asked to disconnect, in order.
    pub(crate) fn disconnected(&self) -> Vec<String> {
        self.state.lock().disconnected.clone()
    }

    /// Waits until at least `count` messages were published on `topic`; returns them all.
    pub(crate) async fn wait_for_published_on(&self, topic: &str, count: usize) -> Vec<Published> {
        self.wait_for_published(
            &format!("{count} message(s) on {topic}"),
            |published| published.topic == topic,
            count,
        )
        .await
    }

    /// Waits until at least `count` published messages satisfy `wanted`; returns them.
    pub(crate) async fn wait_for_published(
        &self,
        what: &str,
        wanted: impl Fn(&Published) -> bool,
        count: usize,
    ) -> Vec<Published> {
        let mut changes = self.version.subscribe();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let found = self.published_where(&wanted);
            if found.len() >= count {
                return found;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                panic!(
                    "timed out waiting for {what}; published: {:?}",
                    self.published()
                );
            }
        }
    }

    /// Fires the `on_delivered` of the message published at `index`, as the `PUBACK` of
    /// the device that took it would; whether it had one not fired yet.
    pub(crate) fn deliver(&self, index: usize) -> bool {
        let delivered = self
            .state
            .lock()
            .on_delivered
            .get_mut(index)
            .and_then(Option::take);
        match delivered {
            Some(delivered) => {
                delivered();
                true
            }
            None => false,
        }
    }

    fn changed(&self) {
        self.version.send_modify(|version| *version += 1);
    }
}

impl MqttLink for RecordingLink {
    fn publish(&self, message: Outgoing) -> BoxFuture<'static, fleetwire_platform::Result<usize>> {
        let taken_by = {
            let mut state = self.state.lock();
            let taken_by = (state.takers)(message.topic.as_str());
            let index = state.published.len();
            state.published.push(Published {
                index,
                topic: message.topic.as_str().to_owned(),
                payload: message.payload,
                qos: message.qos,
                expires_in: message.expires_in,
                taken_by,
            });
            state.on_delivered.push(message.on_delivered);
            taken_by
        };
        self.changed();
        Box::pin(std::future::ready(Ok(taken_by)))
    }

    fn disconnect(&self, device: &DeviceId) -> BoxFuture<'static, usize> {
        self.state.lock().disconnected.push(device.to_string());
        self.changed();
        Box::pin(std::future::ready(1))
    }

    fn stats(&self) -> MqttStats {
        MqttStats::default()
    }

    fn is_accepting(&self) -> bool {
        true
    }
}

// ---- a platform with the real broker ----

/// A platform over temporary directories with the real broker in process, listening on a
/// free loopback port and served with the platform's hooks.
pub(crate) struct BrokerNode {
    pub(crate) platform: Platform,
    pub(crate) broker: Broker,
    pub(crate) addr: SocketAddr,
    /// The store the platform was given (a shared handle), for tests that make it fail.
    pub(crate) store: Store,
    running: Running,
    dir: TempDir,
}

impl BrokerNode {
    pub(crate) async fn start(config: BrokerConfig) -> BrokerNode {
        let dir = TempDir::new();
        let (registry, store) = open_data(&dir).await;
        let broker = Broker::new(config);
        let platform = Platform::start(PlatformDeps {
            store: store.clone(),
            registry,
            mqtt: Arc::new(broker.clone()),
            config: PlatformConfig::default(),
        })
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = broker.spawn(listener, platform.mqtt_hooks()).unwrap();
        BrokerNode {
            platform,
            broker,
            addr: running.local_addr(),
            store,
            running,
            dir,
        }
    }

    /// Connection options for this broker: a clean MQTT 5.0 session named `client_id`.
    pub(crate) fn options(&self, client_id: &str) -> ConnectOptions {
        ConnectOptions {
            addr: self.addr,
            client_id: client_id.to_owned(),
            version: ProtocolVersion::V5,
            connect_timeout: TIMEOUT,
            ..ConnectOptions::default()
        }
    }

    /// Connection options of device `device` logging in with `secret` (MQTT 5.0).
    pub(crate) fn device_options(&self, device: &str, secret: &str) -> ConnectOptions {
        ConnectOptions {
            username: Some(device.to_owned()),
            password: Some(Bytes::from(secret.to_owned())),
            ..self.options(device)
        }
    }

    /// Connects as device `device` with its `secret` (MQTT 5.0).
    pub(crate) async fn connect_device(&self, device: &str, secret: &str) -> Connection {
        Connection::connect(&self.device_options(device, secret))
            .await
            .unwrap()
            .0
    }

    /// Stops the broker, then the platform; the directory goes with the node.
    pub(crate) async fn stop(self) {
        self.broker.shutdown();
        self.running.stopped().await.unwrap();
        self.platform.shutdown().await;
    }
}

/// Publishes at QoS 1 and waits for its `PUBACK`.
pub(crate) async fn publish_and_wait(
    connection: &mut Connection,
    topic_name: &str,
    payload: &str,
) -> Ack {
    let packet_id = connection
        .publish(
            &topic(topic_name),
            Bytes::from(payload.to_owned()),
            QoS::AtLeastOnce,
            false,
        )
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, connection.next_event())
            .await
            .expect("timed out waiting for a PUBACK")
            .unwrap();
        if let ClientEvent::PubAck(ack) = event {
            if ack.packet_id == packet_id {
                return ack;
            }
        }
    }
}

// ---- the platform's verbs, shortened ----

/// Registers a device without type or labels.
pub(crate) async fn create_device(platform: &Platform, id: &str) -> Device {
    create_device_with(platform, id, "", &[]).await
}

/// Registers a device with a type and labels.
pub(crate) async fn create_device_with(
    platform: &Platform,
    id: &str,
    device_type: &str,
    device_labels: &[(&str, &str)],
) -> Device {
    platform
        .create_device(NewDevice {
            id: Some(device_id(id)),
            device_type: (!device_type.is_empty()).then(|| device_type.to_owned()),
            labels: labels(device_labels),
            ..NewDevice::default()
        })
        .await
        .unwrap()
}

/// Sends one row of telemetry at data time `ts` over HTTP (`fields` is a JSON object)
/// and waits until it is written.
pub(crate) async fn send(platform: &Platform, device: &str, ts: i64, fields: Value) {
    let mut row = fields;
    row["ts"] = Value::from(ts);
    platform
        .ingest_json(&device_id(device), row.to_string().as_bytes())
        .await
        .unwrap();
}

/// A rule on every device, raising an alarm (severity high) while `condition` holds.
pub(crate) fn rule(condition: &str) -> RuleSpec {
    RuleSpec {
        name: "test rule".to_owned(),
        matcher: fleetwire_model::RuleMatch::default(),
        condition: condition.to_owned(),
        for_ms: None,
        clear: None,
        severity: Severity::High,
        actions: vec![RuleAction::Alarm],
        enabled: true,
    }
}

/// Every alarm of `rule`, newest first.
pub(crate) async fn alarms_of(platform: &Platform, rule: &str) -> Vec<Alarm> {
    platform
        .list_alarms(&AlarmFilter {
            rule: Some(rule_id(rule)),
            limit: 1000,
            ..AlarmFilter::default()
        })
        .await
        .unwrap()
        .items
}

/// Polls `check` until it answers, or fails after [`TIMEOUT`] naming `what`.
pub(crate) async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- the event hub ----

/// A subscription to the platform's events, read with a deadline.
pub(crate) struct Events(Subscription);

impl Events {
    /// Presence, alarms and commands (no telemetry) from now on.
    pub(crate) fn changes(platform: &Platform) -> Events {
        Events(platform.events().subscribe(EventKinds {
            telemetry: false,
            ..EventKinds::ALL
        }))
    }

    /// The next event `wanted` picks out (skipping the others), or a failure naming
    /// `what` after [`TIMEOUT`].
    pub(crate) async fn next<T>(
        &mut self,
        what: &str,
        mut wanted: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.0.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap();
            if let Some(found) = wanted(&event) {
                return found;
            }
        }
    }

    /// The next alarm change of `device`.
    pub(crate) async fn next_alarm(&mut self, device: &str) -> Alarm {
        self.next(
            &format!("an alarm event of {device}"),
            |event| match event {
                Event::Alarm(alarm) if alarm.device_id.as_str() == device => {
                    Some((**alarm).clone())
                }
                _ => None,
            },
        )
        .await
    }

    /// The next change of command `id`.
    pub(crate) async fn next_command(&mut self, id: &str) -> Command {
        self.next(&format!("an event of command {id}"), |event| match event {
            Event::Command(command) if command.id.as_str() == id => Some((**command).clone()),
            _ => None,
        })
        .await
    }

    /// Whether `device` came online (`true`) or went offline, at its next presence event.
    pub(crate) async fn next_presence(&mut self, device: &str) -> bool {
        self.next(
            &format!("a presence event of {device}"),
            |event| match event {
                Event::Presence {
                    device: id, online, ..
                } if &**id == device => Some(*online),
                _ => None,
            },
        )
        .await
    }
}

// ---- a webhook receiver ----

/// A request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Value,
}

/// A tiny HTTP server on a free loopback port: it records every request and answers each
/// with the same status.
pub(crate) struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    version: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let version = watch::Sender::new(0);
        let task = tokio::spawn({
            let requests = Arc::clone(&requests);
            let version = version.clone();
            async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let requests = Arc::clone(&requests);
                    let version = version.clone();
                    tokio::spawn(async move {
                        let Some(request) = read_request(&mut stream).await else {
                            return;
                        };
                        requests.lock().push(request);
                        version.send_modify(|version| *version += 1);
                        let answer = format!(
                            "HTTP/1.1 {status} Test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    });
                }
            }
        });
        Receiver {
            addr,
            requests,
            version,
            task,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().clone()
    }

    /// Waits until at least `count` requests came; returns them all.
    pub(crate) async fn wait_for(&self, count: usize) -> Vec<Request> {
        let mut changes = self.version.subscribe();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                panic!("timed out waiting for {count} webhook request(s), got {requests:?}");
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP/1.1 request with a `content-length` body.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let mut content_length = 0;
    let mut content_type = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().ok()?;
            } else if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_owned());
            }
        }
    }
    while buffer.len() < head_end + content_length {
        let mut chunk = [0; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = serde_json::from_slice(&buffer[head_end..head_end + content_length]).ok()?;
    Some(Request {
        method,
        path,
        content_type,
        body,
    })
}
