//! Ingest through the platform's door: JSON over HTTP, line protocol, and MQTT through the
//! real broker, with the telemetry read back from the real store.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fleetwire_broker::BrokerConfig;
use fleetwire_client::Connection;
use fleetwire_mqtt_codec::ReasonCode;
use fleetwire_platform::{Error, PlatformStats, Precision, SourceCounts, TelemetryQuery};
use fleetwire_store::{Aggregation, Timestamp};
use support::{
    BrokerNode, Events, Node, T0, create_device, device_id, eventually, publish_and_wait,
};

fn counts(stats: &PlatformStats, source: &str) -> SourceCounts {
    stats
        .ingest
        .iter()
        .find(|counts| counts.source == source)
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_telemetry_of_a_registered_device_is_stored_and_read_back() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    let d1 = device_id("d1");

    let report = platform
        .ingest_json(
            &d1,
            format!(
                r#"[{{"ts": {T0}, "temperature": 21.5, "humidity": 40}},
                    {{"ts": {}, "temperature": 22.0}}]"#,
                T0 + 1000
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(report.points, 3);

    let latest = platform.latest_telemetry(&d1).await.unwrap();
    let latest: Vec<(&str, i64, f64)> = latest
        .iter()
        .map(|(field, sample)| (field.as_str(), sample.timestamp.as_millis(), sample.value))
        .collect();
    assert_eq!(
        latest,
        [("humidity", T0, 40.0), ("temperature", T0 + 1000, 22.0)]
    );

    let series = platform
        .query_telemetry(
            &d1,
            TelemetryQuery {
                fields: Some(vec!["temperature".to_owned()]),
                from: Some(Timestamp::from_millis(T0)),
                to: Some(Timestamp::from_millis(T0 + 2000)),
                windows: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].field, "temperature");
    let points: Vec<(i64, f64)> = series[0]
        .samples
        .iter()
        .map(|sample| (sample.timestamp.as_millis(), sample.value))
        .collect();
    assert_eq!(points, [(T0, 21.5), (T0 + 1000, 22.0)]);

    // Every field when none is named, aggregated in windows.
    let windows = platform
        .query_telemetry(
            &d1,
            TelemetryQuery {
                fields: None,
                from: Some(Timestamp::from_millis(T0)),
                to: Some(Timestamp::from_millis(T0 + 2000)),
                windows: Some((Aggregation::Avg, Duration::from_secs(2))),
            },
        )
        .await
        .unwrap();
    let averages: Vec<(&str, Vec<f64>)> = windows
        .iter()
        .map(|series| {
            (
                series.field.as_str(),
                series.samples.iter().map(|sample| sample.value).collect(),
            )
        })
        .collect();
    assert_eq!(
        averages,
        [("humidity", vec![40.0]), ("temperature", vec![21.75])]
    );

    let stats = platform.stats();
    assert_eq!(counts(&stats, "http").accepted, 1);
    assert_eq!(stats.points_written, 3);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_from_is_after_its_to_is_invalid() {
    let node = Node::start().await;
    create_device(&node.platform, "d1").await;

    let answer = node
        .platform
        .query_telemetry(
            &device_id("d1"),
            TelemetryQuery {
                from: Some(Timestamp::from_millis(T0 + 1)),
                to: Some(Timestamp::from_millis(T0)),
                ..TelemetryQuery::default()
            },
        )
        .await;
    assert!(
        matches!(answer, Err(Error::InvalidQuery(ref message)) if message.contains("after")),
        "{answer:?}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_over_http_for_an_unregistered_device_is_not_found_and_registers_nothing() {
    let node = Node::start().await;
    let platform = &node.platform;
    let ghost = device_id("ghost");

    let answer = platform
        .ingest_json(&ghost, br#"{"temperature": 21.5}"#)
        .await;
    assert!(
        matches!(answer, Err(Error::NotFound { kind: "device", ref id }) if id == "ghost"),
        "{answer:?}"
    );
    assert!(matches!(
        platform.device(&ghost).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        platform.latest_telemetry(&ghost).await,
        Err(Error::NotFound { .. })
    ));
    let http = counts(&platform.stats(), "http");
    assert_eq!((http.accepted, http.rejected), (0, 1));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_payload_is_refused_whole_counted_and_recorded_on_the_device() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    let d1 = device_id("d1");

    // The first row is fine, the second is not: nothing of the payload is written.
    let answer = platform
        .ingest_json(
            &d1,
            format!(r#"[{{"ts": {T0}, "temperature": 21.5}}, {{"ts": {T0}, "pressure": "high"}}]"#)
                .as_bytes(),
        )
        .await;
    let Err(error @ Error::Payload(_)) = answer else {
        panic!("expected a payload error, got {answer:?}");
    };
    assert!(error.to_string().contains("pressure"), "{error}");

    assert!(platform.latest_telemetry(&d1).await.unwrap().is_empty());
    let stats = platform.stats();
    let http = counts(&stats, "http");
    assert_eq!((http.accepted, http.rejected, http.failed), (0, 1, 0));
    assert_eq!(stats.points_written, 0);

    let recorded = platform
        .device(&d1)
        .await
        .unwrap()
        .last_ingest_error
        .unwrap();
    assert_eq!(recorded.source, "http");
    assert_eq!(recorded.message, error.to_string());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_protocol_registers_unknown_devices_and_counts_skipped_string_fields() {
    let node = Node::start().await;
    let platform = &node.platform;
    let seconds = T0 / 1000;

    let report = platform
        .ingest_line_protocol(
            format!(
                "weather,device=ws-1 temperature=12.5,status=\"ok\" {seconds}\n\
                 ws-2 humidity=80i {seconds}\n"
            )
            .as_bytes(),
            Precision::Seconds,
        )
        .await
        .unwrap();
    assert_eq!((report.points, report.skipped_string_fields), (2, 1));

    for (device, field, value) in [("ws-1", "temperature", 12.5), ("ws-2", "humidity", 80.0)] {
        let id = device_id(device);
        assert!(platform.device(&id).await.is_ok(), "{device} is registered");
        let latest = platform.latest_telemetry(&id).await.unwrap();
        let sample = latest[field];
        assert_eq!((sample.timestamp.as_millis(), sample.value), (T0, value));
    }
    let stats = platform.stats();
    assert_eq!(stats.skipped_string_fields, 1);
    assert_eq!(counts(&stats, "line_protocol").accepted, 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_line_protocol_body_is_refused_whole() {
    let node = Node::start().await;
    let platform = &node.platform;

    let answer = platform
        .ingest_line_protocol(
            b"ws-1 temperature=12.5\nws-2 humidity=\n",
            Precision::Nanoseconds,
        )
        .await;
    assert!(matches!(answer, Err(Error::Payload(_))), "{answer:?}");
    // Not even the good first line registered its device.
    assert!(matches!(
        platform.device(&device_id("ws-1")).await,
        Err(Error::NotFound { .. })
    ));
    let line_protocol = counts(&platform.stats(), "line_protocol");
    assert_eq!((line_protocol.accepted, line_protocol.rejected), (0, 1));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt_5_a_bad_payload_gets_0x99_and_a_good_one_is_acknowledged_once_written() {
    let node = BrokerNode::start(BrokerConfig::default()).await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    let (secret, _) = platform.issue_credentials(&device_id("d1")).await.unwrap();
    let mut device = node.connect_device("d1", &secret).await;

    let refused = publish_and_wait(
        &mut device,
        "devices/d1/telemetry",
        r#"{"temperature": "hot"}"#,
    )
    .await;
    assert_eq!(refused.reason, ReasonCode::PAYLOAD_FORMAT_INVALID);
    let recorded = platform
        .device(&device_id("d1"))
        .await
        .unwrap()
        .last_ingest_error
        .unwrap();
    assert_eq!(recorded.source, "mqtt");
    assert!(recorded.message.contains("temperature"), "{recorded:?}");

    let accepted = publish_and_wait(
        &mut device,
        "devices/d1/telemetry",
        &format!(r#"{{"ts": {T0}, "temperature": 21.5}}"#),
    )
    .await;
    assert_eq!(accepted.reason, ReasonCode::SUCCESS);
    // Readable as soon as it is acknowledged: no waiting.
    let latest = platform.latest_telemetry(&device_id("d1")).await.unwrap();
    let sample = latest["temperature"];
    assert_eq!((sample.timestamp.as_millis(), sample.value), (T0, 21.5));

    let mqtt = counts(&platform.stats(), "mqtt");
    assert_eq!((mqtt.accepted, mqtt.rejected), (1, 1));
    device.disconnect().await.unwrap();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt_5_telemetry_that_cannot_be_written_is_not_acknowledged_as_accepted() {
    let node = BrokerNode::start(BrokerConfig::default()).await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    let (secret, _) = platform.issue_credentials(&device_id("d1")).await.unwrap();
    let mut device = node.connect_device("d1", &secret).await;

    // The disk is gone: a write fails, and the device must not hear it was accepted.
    node.store.clone().close().unwrap();
    let ack = publish_and_wait(
        &mut device,
        "devices/d1/telemetry",
        &format!(r#"{{"ts": {T0}, "temperature": 21.5}}"#),
    )
    .await;
    assert_eq!(ack.reason, ReasonCode::UNSPECIFIED_ERROR);
    let mqtt = counts(&platform.stats(), "mqtt");
    assert_eq!((mqtt.accepted, mqtt.rejected, mqtt.failed), (0, 0, 1));
    device.disconnect().await.unwrap();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_client_publishing_as_a_device_makes_it_present_until_it_disconnects() {
    let node = BrokerNode::start(BrokerConfig {
        allow_anonymous: true,
        ..BrokerConfig::default()
    })
    .await;
    let platform = &node.platform;
    let mut events = Events::changes(platform);
    let (mut client, _) = Connection::connect(&node.options("bench-rig"))
        .await
        .unwrap();

    let ack = publish_and_wait(
        &mut client,
        "devices/anon-1/telemetry",
        &format!(r#"{{"ts": {T0}, "temperature": 21.5}}"#),
    )
    .await;
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert!(events.next_presence("anon-1").await, "online first");
    let anon = device_id("anon-1");
    let latest = platform.latest_telemetry(&anon).await.unwrap();
    assert_eq!(latest["temperature"].value, 21.5);
    eventually("anon-1 shown online", async || {
        platform.device(&anon).await.unwrap().online.then_some(())
    })
    .await;

    client.disconnect().await.unwrap();
    assert!(!events.next_presence("anon-1").await, "offline at the end");
    eventually("anon-1 shown offline", async || {
        (!platform.device(&anon).await.unwrap().online).then_some(())
    })
    .await;
    node.stop().await;
}
