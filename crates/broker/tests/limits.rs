//! The broker's limits, each hit by one client (or address) while another goes on
//! unaffected: connections in total and per address, the connection rate per address,
//! the inbound publish rate (5.0: `DISCONNECT 0x96`; 3.1.1: slowed down), subscriptions
//! per session and bytes queued per session. Other addresses are loopback's other
//! addresses (127.0.0.2), which Linux routes to the same listener.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fleetwire_broker::{BrokerConfig, Limits};
use fleetwire_mqtt_codec::{
    Packet, PacketId, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    TopicFilter,
};
use support::*;
use tokio::net::{TcpSocket, TcpStream};

fn with_limits(limits: Limits) -> BrokerConfig {
    BrokerConfig {
        limits,
        ..anonymous()
    }
}

/// A TCP connection to `addr` from loopback address `from` (127.0.0.x).
async fn connect_from(addr: SocketAddr, from: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Connects a 3.1.1 client from `from`; the CONNACK, or `None` if the broker closed the
/// connection without one.
async fn try_connect(addr: SocketAddr, from: [u8; 4], client_id: &str) -> (Client, Option<Packet>) {
    let stream = connect_from(addr, from).await;
    let mut client = Client::from_stream(stream, ProtocolVersion::V311);
    client
        .send_bytes(&encoded(Packet::Connect(Box::new(connect_packet(
            client_id,
            ProtocolVersion::V311,
            true,
        )))))
        .await;
    let connack = client.recv().await;
    (client, connack)
}

fn encoded(packet: Packet) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    fleetwire_mqtt_codec::encode(&packet, ProtocolVersion::V311, &mut out).unwrap();
    out.to_vec()
}

fn is_accepted(connack: &Option<Packet>) -> bool {
    matches!(connack, Some(Packet::ConnAck(ack)) if ack.code == ReasonCode::SUCCESS)
}

#[tokio::test]
async fn an_address_at_its_connection_limit_is_refused_and_another_address_is_not() {
    let (broker, addr) = start(with_limits(Limits {
        max_connections_per_address: 2,
        ..Limits::none()
    }))
    .await;
    let (_a, first) = try_connect(addr, [127, 0, 0, 1], "a").await;
    let (_b, second) = try_connect(addr, [127, 0, 0, 1], "b").await;
    assert!(is_accepted(&first) && is_accepted(&second));
    let (_c, third) = try_connect(addr, [127, 0, 0, 1], "c").await;
    assert!(third.is_none(), "closed at accept, no CONNACK: {third:?}");
    let (_d, other) = try_connect(addr, [127, 0, 0, 2], "d").await;
    assert!(is_accepted(&other), "{other:?}");
    assert_eq!(broker.stats_snapshot().connections_refused_per_address, 1);

    // A closed connection gives its place back.
    drop(_a);
    let reconnected =
        wait_for(|| async { is_accepted(&try_connect(addr, [127, 0, 0, 1], "e").await.1) }).await;
    assert!(reconnected);
}

#[tokio::test]
async fn the_total_connection_limit_counts_every_address() {
    let (broker, addr) = start(with_limits(Limits {
        max_connections: 2,
        ..Limits::none()
    }))
    .await;
    let (_a, first) = try_connect(addr, [127, 0, 0, 1], "a").await;
    let (_b, second) = try_connect(addr, [127, 0, 0, 2], "b").await;
    let (_c, third) = try_connect(addr, [127, 0, 0, 3], "c").await;
    assert!(is_accepted(&first) && is_accepted(&second));
    assert!(third.is_none());
    let stats = broker.stats_snapshot();
    assert_eq!(stats.connections_refused_total, 1);
    assert_eq!(stats.connections_open, 2);
}

#[tokio::test]
async fn an_address_opening_connections_too_fast_is_refused_and_another_address_is_not() {
    let (broker, addr) = start(with_limits(Limits {
        connection_rate_per_address: 3,
        ..Limits::none()
    }))
    .await;
    let mut accepted = 0;
    let mut clients = Vec::new();
    for index in 0..6 {
        let (client, connack) = try_connect(addr, [127, 0, 0, 1], &format!("fast-{index}")).await;
        accepted += usize::from(is_accepted(&connack));
        clients.push(client);
    }
    // A burst of the rate is allowed; the bucket refills at 3 a second, so at most one
    // more can have come in while the test ran.
    assert!((3..=4).contains(&accepted), "{accepted}");
    let (_other, connack) = try_connect(addr, [127, 0, 0, 2], "calm").await;
    assert!(is_accepted(&connack));
    assert!(broker.stats_snapshot().connections_refused_rate >= 2);
}

/// Publishes `count` QoS 1 messages of 10 bytes to `topic` at once, then counts the
/// PUBACKs that come back within `wait` (stopping early when all came, or the broker
/// closed the connection); the packets other than PUBACK are returned too.
async fn publish_burst(
    client: &mut Client,
    topic: &str,
    count: u16,
    wait: Duration,
) -> (usize, Vec<Packet>) {
    for id in 1..=count {
        client
            .publish(topic, b"0123456789", QoS::AtLeastOnce, id, false)
            .await;
    }
    let mut acknowledged = 0;
    let mut others = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while acknowledged < usize::from(count) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.try_recv(left).await {
            Ok(Some(Packet::PubAck(_))) => acknowledged += 1,
            Ok(Some(other)) => others.push(other),
            Ok(None) | Err(()) => break,
        }
    }
    (acknowledged, others)
}

#[tokio::test]
async fn a_v5_client_past_its_publish_rate_is_disconnected_and_another_client_keeps_publishing() {
    let (broker, addr) = start(with_limits(Limits {
        publish_rate: 20,
        ..Limits::none()
    }))
    .await;
    let (mut flooder, connack) =
        Client::connect_with(addr, connect_packet("flooder", ProtocolVersion::V5, true)).await;
    assert!(matches!(connack, Packet::ConnAck(ref ack) if ack.code == ReasonCode::SUCCESS));
    let (acknowledged, others) =
        publish_burst(&mut flooder, "flood", 60, Duration::from_secs(5)).await;
    assert!(acknowledged <= 21, "{acknowledged}");
    assert!(
        matches!(others.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::MESSAGE_RATE_TOO_HIGH),
        "{others:?}"
    );
    assert!(broker.stats_snapshot().publish_rate_exceeded >= 1);

    // Another client within its budget is served in full.
    let mut calm = Client::connect(addr, "calm").await;
    let (acknowledged, others) = publish_burst(&mut calm, "calm", 15, Duration::from_secs(5)).await;
    assert_eq!((acknowledged, others.len()), (15, 0));
}

#[tokio::test]
async fn a_v311_client_past_its_publish_rate_is_slowed_down_but_loses_nothing() {
    let (broker, addr) = start(with_limits(Limits {
        publish_rate: 10,
        ..Limits::none()
    }))
    .await;
    let mut watcher = Client::connect(addr, "watcher").await;
    watcher.subscribe("slow", QoS::AtLeastOnce).await;
    let mut flooder = Client::connect(addr, "flooder").await;
    // 40 messages at 10 a second take three seconds past the first second's burst:
    // after one second most are not yet read.
    let (early, _) = publish_burst(&mut flooder, "slow", 40, Duration::from_secs(1)).await;
    assert!(early < 40, "{early}");
    // ... but every one is read, acknowledged and delivered in the end.
    let mut acknowledged = early;
    while acknowledged < 40 {
        match flooder.recv().await {
            Some(Packet::PubAck(_)) => acknowledged += 1,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    for _ in 0..40 {
        let publish = watcher.expect_publish().await;
        if let Some(id) = publish.packet_id {
            watcher
                .send(Packet::PubAck(fleetwire_mqtt_codec::PubAck::new(id)))
                .await;
        }
    }
    // Each message that had to wait is counted.
    let waited = broker.stats_snapshot().publish_rate_exceeded;
    assert!((1..=30).contains(&waited), "{waited}");

    // Meanwhile others are not slowed: a second client's burst within its budget is
    // acknowledged at once.
    let mut calm = Client::connect(addr, "calm").await;
    let (acknowledged, _) = publish_burst(&mut calm, "calm", 10, Duration::from_secs(5)).await;
    assert_eq!(acknowledged, 10);
}

fn subscribe_packet(filters: &[&str]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(7).unwrap(),
        filters: filters
            .iter()
            .map(|filter| {
                (
                    TopicFilter::new(*filter).unwrap(),
                    SubscriptionOptions::with_qos(QoS::AtMostOnce),
                )
            })
            .collect(),
        properties: Properties::default(),
    })
}

#[tokio::test]
async fn subscriptions_past_the_limit_are_refused_with_quota_exceeded() {
    let (broker, addr) = start(with_limits(Limits {
        max_subscriptions: 2,
        ..Limits::none()
    }))
    .await;
    let (mut v5, _) =
        Client::connect_with(addr, connect_packet("v5", ProtocolVersion::V5, true)).await;
    v5.send(subscribe_packet(&["a", "b", "c", "a"])).await;
    match v5.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.reasons,
            [
                ReasonCode::SUCCESS,
                ReasonCode::SUCCESS,
                ReasonCode::QUOTA_EXCEEDED,
                // Subscribing again to a filter it holds replaces it: no new place taken.
                ReasonCode::SUCCESS
            ]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut v311 = Client::connect(addr, "v311").await;
    v311.send(subscribe_packet(&["x", "y", "z"])).await;
    match v311.recv().await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(
                ack.reasons,
                [ReasonCode(0), ReasonCode(0), ReasonCode(0x80)]
            )
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    assert_eq!(broker.stats_snapshot().subscriptions_refused, 2);
}

#[tokio::test]
async fn an_offline_session_queues_messages_up_to_its_byte_limit() {
    let (broker, addr) = start(with_limits(Limits {
        max_queued_bytes: 1000,
        ..Limits::none()
    }))
    .await;
    let mut offline = Client::connect_with(
        addr,
        connect_packet("offline", ProtocolVersion::V311, false),
    )
    .await
    .0;
    offline.subscribe("big/#", QoS::AtLeastOnce).await;
    offline.send(Packet::Disconnect(Default::default())).await;
    drop(offline);
    let mut other =
        Client::connect_with(addr, connect_packet("other", ProtocolVersion::V311, false))
            .await
            .0;
    other.subscribe("big/#", QoS::AtLeastOnce).await;
    other.send(Packet::Disconnect(Default::default())).await;
    drop(other);

    // 300 bytes each (topic `big/t` is 5): three fit in 1000 bytes, the rest are dropped.
    let mut publisher = Client::connect(addr, "publisher").await;
    for id in 1..=10 {
        publisher
            .publish("big/t", &[b'x'; 295], QoS::AtLeastOnce, id, false)
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    let (mut back, _) = Client::connect_with(
        addr,
        connect_packet("offline", ProtocolVersion::V311, false),
    )
    .await;
    for _ in 0..3 {
        let publish = back.expect_publish().await;
        assert_eq!(publish.payload.len(), 295);
        back.send(Packet::PubAck(fleetwire_mqtt_codec::PubAck::new(
            publish.packet_id.unwrap(),
        )))
        .await;
    }
    back.expect_silence(Duration::from_millis(300)).await;
    // Each session's limit is its own: the other session kept its three too.
    let (mut other, _) =
        Client::connect_with(addr, connect_packet("other", ProtocolVersion::V311, false)).await;
    for _ in 0..3 {
        other.expect_publish().await;
    }
    assert_eq!(broker.stats_snapshot().queued_bytes_dropped, 14);
}

/// Retries `check` for up to five seconds (a closed connection's place comes back when
/// the broker has seen the close).
async fn wait_for<F, Fut>(check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..50 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
