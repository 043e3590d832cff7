//! The simulator against the real broker, started in-process on a free port: telemetry
//! from every device arrives with the documented fields, and failures are retried.

// Helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetwire_broker::{Broker, BrokerConfig, Hooks};
use fleetwire_client::{ConnectOptions, Connection, Event};
use fleetwire_mqtt_codec::{ProtocolVersion, QoS, TopicFilter};
use fleetwire_sim::{Backoff, DeviceCredential, Devices, SimConfig, SimCounters, Simulator};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const PATIENCE: Duration = Duration::from_secs(20);

async fn start_broker(allow_anonymous: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = Broker::new(BrokerConfig {
        allow_anonymous,
        ..BrokerConfig::default()
    });
    broker
        .spawn(listener, Hooks::default())
        .unwrap()
        .local_addr()
}

async fn telemetry_subscriber(addr: SocketAddr) -> Connection {
    let options = ConnectOptions {
        addr,
        client_id: "telemetry-watcher".to_owned(),
        ..ConnectOptions::default()
    };
    let (mut connection, _) = Connection::connect(&options).await.unwrap();
    let filter = TopicFilter::new("devices/+/telemetry").unwrap();
    connection
        .subscribe_and_wait(&[(filter, QoS::AtLeastOnce)])
        .await
        .unwrap();
    connection
}

/// Runs a simulation until `messages_per_device` messages from each of `devices` devices
/// arrived, checking every payload; returns the simulator's counters.
async fn run_until_every_device_reported(
    config: SimConfig,
    devices: usize,
    messages_per_device: usize,
) -> (Arc<SimCounters>, fleetwire_sim::SimReport) {
    let mut watcher = telemetry_subscriber(config.target).await;
    let simulator = Simulator::new(config).unwrap();
    let counters = simulator.counters();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(simulator.run(async move {
        let _ = stopped.await;
    }));

    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut per_device: HashMap<String, usize> = HashMap::new();
    tokio::time::timeout(PATIENCE, async {
        while per_device.len() < devices
            || per_device
                .values()
                .any(|&count| count < messages_per_device)
        {
            let Event::Publish(message) = watcher.next_event().await.unwrap() else {
                continue;
            };
            let levels: Vec<&str> = message.topic.as_str().split('/').collect();
            assert_eq!(levels.len(), 3, "{}", message.topic);
            assert_eq!((levels[0], levels[2]), ("devices", "telemetry"));
            let payload: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            let ts = payload["ts"].as_i64().unwrap();
            assert!((ts - now_ms).abs() < 3_600_000, "{payload}");
            let temperature = payload["temperature"].as_f64().unwrap();
            assert!((0.0..=50.0).contains(&temperature), "{payload}");
            let humidity = payload["humidity"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&humidity), "{payload}");
            let battery = payload["battery"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&battery), "{payload}");
            assert!(payload["door_open"].is_boolean(), "{payload}");
            *per_device.entry(levels[1].to_owned()).or_default() += 1;
        }
    })
    .await
    .expect("telemetry from every device");
    assert_eq!(per_device.len(), devices);
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    (counters, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_devices_publish_telemetry_with_the_expected_fields() {
    let target = start_broker(true).await;
    let config = SimConfig {
        target,
        devices: Devices::Anonymous {
            count: 10,
            prefix: "sim-".to_owned(),
        },
        interval: Duration::from_millis(100),
        ramp_up: Duration::from_millis(200),
        ..SimConfig::default()
    };
    let (_, report) = run_until_every_device_reported(config, 10, 3).await;
    assert!(report.stats.published >= 30, "{report:?}");
    assert_eq!(report.stats.errors, 0, "{report:?}");
    assert_eq!(report.stats.connected, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_devices_over_mqtt5_get_their_messages_acknowledged() {
    let target = start_broker(true).await;
    let config = SimConfig {
        target,
        devices: Devices::Anonymous {
            count: 3,
            prefix: "v5-".to_owned(),
        },
        interval: Duration::from_millis(50),
        ramp_up: Duration::ZERO,
        qos: QoS::AtLeastOnce,
        version: ProtocolVersion::V5,
        ..SimConfig::default()
    };
    let (_, report) = run_until_every_device_reported(config, 3, 2).await;
    assert!(report.stats.acknowledged > 0, "{report:?}");
    assert_eq!(report.stats.rejected, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_devices_are_counted_and_retried_with_backoff() {
    // Without a device registry the broker admits nobody when anonymous access is off.
    let target = start_broker(false).await;
    let config = SimConfig {
        target,
        devices: Devices::Credentials(vec![DeviceCredential {
            device_id: "d1".to_owned(),
            password: "wrong".to_owned(),
        }]),
        ramp_up: Duration::ZERO,
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
        },
        ..SimConfig::default()
    };
    let simulator = Simulator::new(config).unwrap();
    let counters = simulator.counters();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(simulator.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(PATIENCE, async {
        while counters.snapshot().reconnects < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("three reconnection attempts");
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert!(report.stats.errors >= 3, "{report:?}");
    assert_eq!(report.stats.published, 0, "{report:?}");
    let last = report.stats.last_error.unwrap();
    assert!(last.contains("d1") && last.contains("refused"), "{last}");
}

#[test]
fn a_zero_interval_is_refused() {
    let config = SimConfig {
        interval: Duration::ZERO,
        ..SimConfig::default()
    };
    assert!(Simulator::new(config).is_err());
}
