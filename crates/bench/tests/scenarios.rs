//! Every scenario against the real broker, started in-process on a free port, for about
//! a second with small counts: messages arrive and the JSON report has its keys.

// Helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fleetwire_bench::{Bench, BenchConfig, Report, Scenario};
use fleetwire_broker::{Broker, BrokerConfig, Hooks};
use fleetwire_mqtt_codec::{ProtocolVersion, QoS};
use tokio::net::TcpListener;

async fn start_broker() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = Broker::new(BrokerConfig {
        allow_anonymous: true,
        ..BrokerConfig::default()
    });
    broker
        .spawn(listener, Hooks::default())
        .unwrap()
        .local_addr()
}

fn small(scenario: Scenario, target: SocketAddr) -> BenchConfig {
    BenchConfig {
        target,
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(10),
        ..BenchConfig::for_scenario(scenario)
    }
}

/// The `--json` line parses and has the keys the compare script reads.
fn assert_json_shape(report: &Report) -> serde_json::Value {
    let json = report.to_json();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in [
        "scenario",
        "sent",
        "received",
        "errors",
        "msgs_per_sec",
        "cpu",
        "duration_s",
    ] {
        assert!(value.get(key).is_some(), "missing {key} in {json}");
    }
    for key in ["p50", "p99", "p999", "max"] {
        assert!(
            value["latency_us"][key].is_u64(),
            "missing latency_us.{key} in {json}"
        );
    }
    assert!(value["cpu"]["percent"].is_number(), "{json}");
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_delivers_every_publishers_messages_to_the_wildcard_subscriber() {
    let target = start_broker().await;
    let config = BenchConfig {
        publishers: 5,
        subscribers: 1,
        rate: 2_000.0,
        qos: QoS::AtLeastOnce,
        ..small(Scenario::FanIn, target)
    };
    let report = Bench::new(config).unwrap().run().await.unwrap();
    assert!(report.sent > 0, "{report}");
    assert_eq!(report.received, report.sent, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert!(report.msgs_per_sec > 0.0, "{report}");
    let json = assert_json_shape(&report);
    assert_eq!(json["scenario"], "fan-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_at_qos0_without_a_rate_limit_delivers_messages() {
    let target = start_broker().await;
    let config = BenchConfig {
        publishers: 4,
        subscribers: 1,
        ..small(Scenario::FanIn, target)
    };
    let report = Bench::new(config).unwrap().run().await.unwrap();
    assert!(report.received > 0, "{report}");
    assert!(report.received <= report.sent, "{report}");
    assert_json_shape(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_delivers_each_message_to_every_subscriber() {
    let target = start_broker().await;
    let config = BenchConfig {
        publishers: 1,
        subscribers: 20,
        rate: 200.0,
        qos: QoS::AtLeastOnce,
        ..small(Scenario::FanOut, target)
    };
    let report = Bench::new(config).unwrap().run().await.unwrap();
    assert!(report.sent > 0, "{report}");
    assert_eq!(report.received, report.sent * 20, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    let json = assert_json_shape(&report);
    assert_eq!(json["subscribers"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_measure_latency_of_every_message_over_mqtt5() {
    let target = start_broker().await;
    let config = BenchConfig {
        publishers: 5,
        subscribers: 5,
        rate: 1_000.0,
        qos: QoS::AtLeastOnce,
        version: ProtocolVersion::V5,
        ..small(Scenario::Pairs, target)
    };
    let report = Bench::new(config).unwrap().run().await.unwrap();
    assert!(report.sent > 0, "{report}");
    assert_eq!(report.received, report.sent, "{report}");
    assert_eq!(report.latency_us.count, report.received, "{report}");
    assert!(report.latency_us.p50 <= report.latency_us.p99, "{report}");
    assert!(report.latency_us.p99 <= report.latency_us.max, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    let json = assert_json_shape(&report);
    assert_eq!(json["mqtt_version"], "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_at_qos2_deliver_exactly_what_was_sent() {
    let target = start_broker().await;
    let config = BenchConfig {
        publishers: 3,
        subscribers: 3,
        rate: 300.0,
        qos: QoS::ExactlyOnce,
        ..small(Scenario::Pairs, target)
    };
    let report = Bench::new(config).unwrap().run().await.unwrap();
    assert!(report.sent > 0, "{report}");
    assert_eq!(report.received, report.sent, "{report}");
    assert_eq!(report.errors, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_over_source_addresses_and_measured() {
    let target = start_broker().await;
    let config = BenchConfig {
        connections: 50,
        per_source: 20,
        duration: Duration::from_millis(300),
        // The broker runs in this process, so this process is the broker.
        broker_pid: Some(std::process::id()),
        ..small(Scenario::Connections, target)
    };
    let report = Bench::new(config).unwrap().run().await.unwrap();
    let connections = report.connections.unwrap();
    assert_eq!(connections.established, 50, "{report}");
    assert_eq!(connections.failed, 0, "{report}");
    assert_eq!(connections.source_addresses, 3, "{report}");
    assert!(connections.connects_per_sec > 0.0, "{report}");
    assert!(connections.rss_per_connection_bytes.is_some(), "{report}");
    assert_eq!(report.latency_us.count, 50, "{report}");
    let json = assert_json_shape(&report);
    assert_eq!(json["connections"]["established"], 50);
    assert!(json["broker"]["rss_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_not_there_is_a_setup_error() {
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = unused.local_addr().unwrap();
    drop(unused);
    let config = BenchConfig {
        publishers: 1,
        subscribers: 1,
        ..small(Scenario::Pairs, target)
    };
    let error = Bench::new(config).unwrap().run().await.unwrap_err();
    assert!(error.to_string().contains("could not connect"), "{error}");
}

#[test]
fn invalid_settings_are_refused_before_connecting() {
    let target: SocketAddr = "127.0.0.1:1".parse().unwrap();
    for config in [
        BenchConfig {
            payload: 4,
            ..small(Scenario::FanIn, target)
        },
        BenchConfig {
            subscribers: 3,
            publishers: 2,
            ..small(Scenario::Pairs, target)
        },
        BenchConfig {
            rate: -1.0,
            ..small(Scenario::FanOut, target)
        },
    ] {
        assert!(Bench::new(config).is_err());
    }
}
