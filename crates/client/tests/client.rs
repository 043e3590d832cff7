//! The client against the real broker, started in-process on a free port.

// Helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fleetwire_broker::{Broker, BrokerConfig, Hooks};
use fleetwire_client::{
    ClientError, ConnectOptions, Connection, Event, Message, Progress, PublishTemplate,
};
use fleetwire_mqtt_codec::{ProtocolVersion, QoS, ReasonCode, TopicFilter, TopicName};
use tokio::net::TcpListener;

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

async fn connect(addr: SocketAddr, client_id: &str, version: ProtocolVersion) -> Connection {
    let options = ConnectOptions {
        addr,
        client_id: client_id.to_owned(),
        version,
        ..ConnectOptions::default()
    };
    Connection::connect(&options).await.unwrap().0
}

async fn next_publish(connection: &mut Connection) -> Message {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), connection.next_event())
            .await
            .expect("a message within 5 s")
            .unwrap();
        if let Event::Publish(publish) = event {
            return publish;
        }
    }
}

#[tokio::test]
async fn messages_round_trip_at_every_qos_in_both_versions() {
    let addr = start_broker(true).await;
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut subscriber = connect(addr, &format!("sub-{version:?}"), version).await;
        let filter = TopicFilter::new(format!("rt/{version:?}/#")).unwrap();
        let suback = subscriber
            .subscribe_and_wait(&[(filter, QoS::ExactlyOnce)])
            .await
            .unwrap();
        assert_eq!(suback.reasons, vec![ReasonCode::GRANTED_QOS_2]);
        let mut publisher = connect(addr, &format!("pub-{version:?}"), version).await;
        let topic = TopicName::new(format!("rt/{version:?}/x")).unwrap();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let payload = Bytes::from(format!("{qos:?}"));
            let packet_id = publisher
                .publish(&topic, payload.clone(), qos, false)
                .unwrap();
            assert_eq!(packet_id.is_some(), qos != QoS::AtMostOnce);
            if qos != QoS::AtMostOnce {
                assert_eq!(publisher.inflight(), 1);
                match publisher.next_event().await.unwrap() {
                    Event::PubAck(ack) => assert_eq!(Some(ack.packet_id), packet_id),
                    Event::PubComp(complete) => assert_eq!(Some(complete.packet_id), packet_id),
                    other => panic!("unexpected {other:?}"),
                }
                assert_eq!(publisher.inflight(), 0);
            } else {
                publisher.flush().await.unwrap();
            }
            let received = next_publish(&mut subscriber).await;
            assert_eq!(received.payload, payload);
            assert_eq!(received.qos, qos);
        }
        publisher.disconnect().await.unwrap();
        subscriber.disconnect().await.unwrap();
    }
}

#[tokio::test]
async fn templates_are_sent_in_batches_with_their_payload_patched() {
    let addr = start_broker(true).await;
    let mut subscriber = connect(addr, "t-sub", ProtocolVersion::V311).await;
    subscriber
        .subscribe_and_wait(&[(TopicFilter::new("tpl").unwrap(), QoS::AtLeastOnce)])
        .await
        .unwrap();
    let mut publisher = connect(addr, "t-pub", ProtocolVersion::V311).await;
    let template = PublishTemplate::new(
        TopicName::new("tpl").unwrap(),
        &[0u8; 16],
        QoS::AtLeastOnce,
        false,
        ProtocolVersion::V311,
    )
    .unwrap();
    for sequence in 0..10u64 {
        publisher
            .publish_template(&template, |payload| {
                payload[..8].copy_from_slice(&sequence.to_le_bytes())
            })
            .unwrap();
    }
    assert_eq!(publisher.inflight(), 10);
    let mut acknowledged = 0;
    let mut drained = false;
    while acknowledged < 10 {
        match publisher.progress().await.unwrap() {
            Progress::Drained => drained = true,
            Progress::Event(Event::PubAck(_)) => acknowledged += 1,
            Progress::Event(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(drained);
    for sequence in 0..10u64 {
        let received = next_publish(&mut subscriber).await;
        assert_eq!(received.payload[..8], sequence.to_le_bytes());
        assert_eq!(received.payload.len(), 16);
    }
}

#[tokio::test]
async fn the_inflight_window_is_enforced() {
    let addr = start_broker(true).await;
    let options = ConnectOptions {
        addr,
        client_id: "window".to_owned(),
        max_inflight: 2,
        ..ConnectOptions::default()
    };
    let (mut publisher, _) = Connection::connect(&options).await.unwrap();
    let topic = TopicName::new("w").unwrap();
    for _ in 0..2 {
        publisher
            .publish(&topic, Bytes::from_static(b"x"), QoS::AtLeastOnce, false)
            .unwrap();
    }
    assert!(!publisher.has_window());
    let refused = publisher.publish(&topic, Bytes::from_static(b"x"), QoS::AtLeastOnce, false);
    assert!(matches!(refused, Err(ClientError::InflightWindowFull(2))));
    assert!(matches!(
        publisher.next_event().await.unwrap(),
        Event::PubAck(_)
    ));
    assert!(publisher.has_window());
}

#[tokio::test]
async fn refused_connections_report_the_reason() {
    let addr = start_broker(false).await;
    let options = ConnectOptions {
        addr,
        client_id: "nobody".to_owned(),
        username: Some("nobody".to_owned()),
        password: Some(Bytes::from_static(b"secret")),
        ..ConnectOptions::default()
    };
    match Connection::connect(&options).await {
        Err(ClientError::Refused(code)) => assert_eq!(code, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn keep_alive_pings_keep_an_idle_connection_open() {
    let addr = start_broker(true).await;
    let options = ConnectOptions {
        addr,
        client_id: "idle".to_owned(),
        keep_alive: Duration::from_secs(1),
        ..ConnectOptions::default()
    };
    let (mut idle, _) = Connection::connect(&options).await.unwrap();
    idle.subscribe_and_wait(&[(TopicFilter::new("ka").unwrap(), QoS::AtMostOnce)])
        .await
        .unwrap();
    // The broker closes a connection silent for 1.5 keep-alives; the pings prevent it.
    let waited = tokio::time::timeout(Duration::from_millis(2500), idle.next_event()).await;
    assert!(waited.is_err(), "the connection ended: {waited:?}");
    let mut publisher = connect(addr, "ka-pub", ProtocolVersion::V311).await;
    publisher
        .publish(
            &TopicName::new("ka").unwrap(),
            Bytes::from_static(b"still here"),
            QoS::AtMostOnce,
            false,
        )
        .unwrap();
    publisher.flush().await.unwrap();
    assert_eq!(&next_publish(&mut idle).await.payload[..], b"still here");
}

#[tokio::test]
async fn nobody_listening_is_a_connect_error() {
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let options = ConnectOptions {
        addr,
        ..ConnectOptions::default()
    };
    let error = Connection::connect(&options).await.unwrap_err();
    assert!(matches!(error, ClientError::Connect { .. }), "{error}");
    assert!(error.to_string().contains(&addr.to_string()));
}
