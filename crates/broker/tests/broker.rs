//! Broker behaviour over real sockets, packet by packet.

// Tests fail loudly on purpose.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fleetwire_broker::{Broker, BrokerConfig};
use fleetwire_mqtt_codec::{
    Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubAck, PubComp, PubRec, PubRel,
    QoS, ReasonCode, Subscribe, SubscriptionOptions, TopicFilter,
};
use support::{Client, anonymous, connect_packet, start, will};

const SHORT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn qos1_message_is_redelivered_with_dup_after_reconnect() {
    let (_broker, addr) = start(anonymous()).await;
    let (mut subscriber, _) = Client::connect_with(
        addr,
        connect_packet("persistent-sub", ProtocolVersion::V311, false),
    )
    .await;
    subscriber.subscribe("redelivery/t", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(addr, "pub").await;
    publisher
        .publish("redelivery/t", b"hello", QoS::AtLeastOnce, 7, false)
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));

    let first = subscriber.expect_publish().await;
    assert!(!first.dup);
    drop(subscriber); // no PUBACK

    let (mut again, connack) = Client::connect_with(
        addr,
        connect_packet("persistent-sub", ProtocolVersion::V311, false),
    )
    .await;
    assert!(matches!(connack, Packet::ConnAck(ref ack) if ack.session_present));
    let redelivered = again.expect_publish().await;
    assert!(redelivered.dup);
    assert_eq!(redelivered.packet_id, first.packet_id);
    assert_eq!(&redelivered.payload[..], b"hello");
    again
        .send(Packet::PubAck(PubAck::new(redelivered.packet_id.unwrap())))
        .await;
    again.expect_silence(SHORT).await;
}

#[tokio::test]
async fn qos2_flows_complete_in_both_directions_and_duplicates_are_not_delivered_twice() {
    let (_broker, addr) = start(anonymous()).await;
    let mut subscriber = Client::connect(addr, "q2-sub").await;
    subscriber.subscribe("q2/t", QoS::ExactlyOnce).await;
    let mut publisher = Client::connect(addr, "q2-pub").await;

    publisher
        .publish("q2/t", b"once", QoS::ExactlyOnce, 9, false)
        .await;
    assert!(
        matches!(publisher.recv().await, Some(Packet::PubRec(ref r)) if r.packet_id.get() == 9)
    );
    // A duplicate before PUBREL must not be routed again.
    let mut duplicate = support::publish("q2/t", b"once", QoS::ExactlyOnce, 9, false);
    duplicate.dup = true;
    publisher.send(Packet::Publish(duplicate)).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    publisher
        .send(Packet::PubRel(PubRel::new(PacketId::new(9).unwrap())))
        .await;
    assert!(
        matches!(publisher.recv().await, Some(Packet::PubComp(ref c)) if c.packet_id.get() == 9)
    );

    let delivered = subscriber.expect_publish().await;
    assert_eq!(delivered.qos, QoS::ExactlyOnce);
    let id = delivered.packet_id.unwrap();
    subscriber.send(Packet::PubRec(PubRec::new(id))).await;
    assert!(matches!(subscriber.recv().await, Some(Packet::PubRel(ref r)) if r.packet_id == id));
    subscriber.send(Packet::PubComp(PubComp::new(id))).await;
    subscriber.expect_silence(SHORT).await;
}

#[tokio::test]
async fn inflight_window_holds_back_messages_until_acknowledged() {
    let (_broker, addr) = start(BrokerConfig {
        max_inflight: 2,
        ..anonymous()
    })
    .await;
    let mut subscriber = Client::connect(addr, "window-sub").await;
    subscriber.subscribe("window/t", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(addr, "window-pub").await;
    for id in 1..=3 {
        publisher
            .publish("window/t", &[id as u8], QoS::AtLeastOnce, id, false)
            .await;
    }
    let first = subscriber.expect_publish().await;
    let second = subscriber.expect_publish().await;
    assert_ne!(first.packet_id, second.packet_id);
    subscriber.expect_silence(SHORT).await;
    subscriber
        .send(Packet::PubAck(PubAck::new(first.packet_id.unwrap())))
        .await;
    let third = subscriber.expect_publish().await;
    assert_eq!(&third.payload[..], &[3]);
}

#[tokio::test]
async fn offline_queue_is_bounded_and_drops_are_counted() {
    let (broker, addr) = start(BrokerConfig {
        max_queued_messages: 10,
        ..anonymous()
    })
    .await;
    let (mut subscriber, _) = Client::connect_with(
        addr,
        connect_packet("offline-sub", ProtocolVersion::V311, false),
    )
    .await;
    subscriber.subscribe("offline/t", QoS::AtLeastOnce).await;
    subscriber
        .send(Packet::Disconnect(Disconnect::default()))
        .await;
    assert!(subscriber.expect_closed().await.is_empty());

    let mut publisher = Client::connect(addr, "offline-pub").await;
    for id in 1..=25u16 {
        publisher
            .publish("offline/t", &id.to_be_bytes(), QoS::AtLeastOnce, id, false)
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    assert_eq!(broker.stats_snapshot().messages_dropped, 15);

    let (mut again, _) = Client::connect_with(
        addr,
        connect_packet("offline-sub", ProtocolVersion::V311, false),
    )
    .await;
    let mut received = Vec::new();
    for _ in 0..10 {
        let message = again.expect_publish().await;
        again
            .send(Packet::PubAck(PubAck::new(message.packet_id.unwrap())))
            .await;
        received.push(u16::from_be_bytes([message.payload[0], message.payload[1]]));
    }
    assert_eq!(
        received,
        (1..=10).collect::<Vec<_>>(),
        "the oldest messages are kept, in order"
    );
    again.expect_silence(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_does_not_grow_its_queue_past_the_limit_or_slow_others() {
    let (broker, addr) = start(BrokerConfig {
        max_queued_messages: 2_000,
        ..anonymous()
    })
    .await;
    let mut stalled = Client::connect(addr, "stalled").await;
    stalled.subscribe("flood/t", QoS::AtMostOnce).await; // and never reads again
    let mut healthy = Client::connect(addr, "healthy").await;
    healthy.subscribe("flood/t", QoS::AtMostOnce).await;
    let mut publisher = Client::connect(addr, "flooder").await;

    let payload = vec![7u8; 1024];
    let count = 30_000u32;
    let reader = tokio::spawn(async move {
        let mut received = 0u32;
        while received < count {
            match healthy.try_recv(Duration::from_secs(5)).await {
                Ok(Some(Packet::Publish(_))) => received += 1,
                _ => break,
            }
        }
        received
    });
    for n in 0..count {
        publisher
            .publish("flood/t", &payload, QoS::AtMostOnce, 0, false)
            .await;
        if n % 500 == 499 {
            // Pace the publisher by a round trip so the healthy reader keeps up; the
            // stalled subscriber gets no such courtesy.
            publisher.send(Packet::PingReq).await;
            assert_eq!(publisher.recv().await, Some(Packet::PingResp));
        }
    }
    assert_eq!(
        reader.await.unwrap(),
        count,
        "the healthy subscriber gets every message"
    );
    // 30 MB were published to the stalled client; what its socket buffers and its
    // 2,000-message queue could not hold was dropped, not kept in broker memory.
    let dropped = broker.stats_snapshot().messages_dropped;
    assert!(
        dropped > 10_000,
        "only {dropped} dropped: {:?}",
        broker.stats_snapshot()
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_subscriber_slows_publishers_down_instead_of_losing_messages() {
    let (broker, addr) = start(BrokerConfig {
        max_queued_messages: 100,
        ..anonymous()
    })
    .await;
    // Pauses well within the 250 ms grace: the subscriber is slow, not stuck.
    let received = read_slowly_while_flooded(addr, Duration::from_millis(100)).await;
    assert_eq!(received, FLOOD, "in order, none lost");
    assert_eq!(broker.stats_snapshot().messages_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flow_control_the_same_subscriber_loses_messages() {
    // The control experiment for the test above: with no grace period, publishers never
    // wait, so the pauses overflow the subscriber's queue.
    let config = BrokerConfig {
        max_queued_messages: 100,
        slow_consumer_grace: Duration::ZERO,
        ..anonymous()
    };
    let (broker, addr) = start(config).await;
    // Longer pauses, so that even a slow machine's publisher overflows the socket
    // buffers during each of them.
    let received = read_slowly_while_flooded(addr, Duration::from_millis(500)).await;
    assert!(received < FLOOD, "received all {received}");
    assert!(broker.stats_snapshot().messages_dropped > 0);
}

const FLOOD: u32 = 20_000;

/// Floods a topic with 1 KiB messages while its subscriber pauses for `pause` every 2,000
/// messages; returns how many arrived in order before the flow stopped.
async fn read_slowly_while_flooded(addr: std::net::SocketAddr, pause: Duration) -> u32 {
    let mut subscriber = Client::connect(addr, "busy").await;
    subscriber.subscribe("busy/t", QoS::AtMostOnce).await;
    let publisher = spawn_flood(addr, "eager");
    let received = receive_in_order(&mut subscriber, pause).await;
    publisher.await.unwrap();
    received
}

/// A client publishing `FLOOD` numbered 1 KiB messages to `busy/t` at QoS 0.
fn spawn_flood(
    addr: std::net::SocketAddr,
    client_id: &'static str,
) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        let mut publisher = Client::connect(addr, client_id).await;
        let mut payload = vec![0u8; 1024];
        for n in 0..FLOOD {
            payload[..4].copy_from_slice(&n.to_be_bytes());
            publisher
                .publish("busy/t", &payload, QoS::AtMostOnce, 0, false)
                .await;
        }
        publisher
    })
}

/// Counts the flood's messages as they arrive, in order, pausing for `pause` every
/// 2,000; stops at the first one missing or out of order (or 2 s of silence).
async fn receive_in_order(subscriber: &mut Client, pause: Duration) -> u32 {
    let mut received = 0;
    while received < FLOOD {
        match subscriber.try_recv(Duration::from_secs(2)).await {
            Ok(Some(Packet::Publish(message)))
                if message.payload[..4] == received.to_be_bytes() =>
            {
                received += 1;
            }
            _ => break,
        }
        if received % 2000 == 0 && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    received
}

#[tokio::test]
async fn malformed_packet_from_v5_client_gets_disconnect_with_reason_code() {
    let (broker, addr) = start(anonymous()).await;
    let (mut client, _) =
        Client::connect_with(addr, connect_packet("bad-v5", ProtocolVersion::V5, true)).await;
    // PUBLISH with QoS 3.
    client
        .send_bytes(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01])
        .await;
    let seen = client.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::MALFORMED_PACKET),
        "{seen:?}"
    );
    assert_eq!(broker.stats_snapshot().malformed_packets, 1);
    // The broker keeps serving others.
    let mut other = Client::connect(addr, "still-fine").await;
    other.subscribe("ok/t", QoS::AtMostOnce).await;
}

#[tokio::test]
async fn packet_larger_than_the_maximum_is_refused_before_its_body_arrives() {
    let (_broker, addr) = start(BrokerConfig {
        max_packet_size: 1024,
        ..anonymous()
    })
    .await;
    let (mut client, _) =
        Client::connect_with(addr, connect_packet("big", ProtocolVersion::V5, true)).await;
    // Fixed header announcing a 100,000-byte PUBLISH, and nothing more.
    client.send_bytes(&[0x30, 0xA0, 0x8D, 0x06]).await;
    let seen = client.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::PACKET_TOO_LARGE),
        "{seen:?}"
    );
}

#[tokio::test]
async fn keep_alive_expiry_closes_the_connection_and_publishes_the_will() {
    let (_broker, addr) = start(anonymous()).await;
    let mut watcher = Client::connect(addr, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtMostOnce).await;
    let mut connect = connect_packet("sleepy", ProtocolVersion::V311, true);
    connect.keep_alive = 1;
    connect.will = Some(will("wills/sleepy", b"gone", QoS::AtMostOnce, false));
    let (mut sleepy, _) = Client::connect_with(addr, connect).await;
    let started = std::time::Instant::now();
    assert!(sleepy.expect_closed().await.is_empty());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400),
        "closed after {elapsed:?}"
    );
    let message = watcher.expect_publish().await;
    assert_eq!(message.topic.as_str(), "wills/sleepy");
}

#[tokio::test]
async fn will_is_not_sent_after_disconnect() {
    let (_broker, addr) = start(anonymous()).await;
    let mut watcher = Client::connect(addr, "watcher2").await;
    watcher.subscribe("wills/#", QoS::AtMostOnce).await;
    let mut connect = connect_packet("polite", ProtocolVersion::V311, true);
    connect.will = Some(will("wills/polite", b"gone", QoS::AtMostOnce, false));
    let (mut polite, _) = Client::connect_with(addr, connect).await;
    polite.send(Packet::Disconnect(Disconnect::default())).await;
    polite.expect_closed().await;
    watcher.expect_silence(SHORT).await;
}

#[tokio::test]
async fn takeover_closes_the_old_connection_with_session_taken_over() {
    let (_broker, addr) = start(anonymous()).await;
    let (mut first, _) =
        Client::connect_with(addr, connect_packet("same-id", ProtocolVersion::V5, true)).await;
    let (mut second, connack) =
        Client::connect_with(addr, connect_packet("same-id", ProtocolVersion::V5, true)).await;
    assert!(matches!(connack, Packet::ConnAck(ref ack) if ack.code == ReasonCode::SUCCESS));
    let seen = first.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::SESSION_TAKEN_OVER),
        "{seen:?}"
    );
    second.send(Packet::PingReq).await;
    assert_eq!(second.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let (_broker, addr) = start(anonymous()).await;
    let mut subscriber = Client::connect(addr, "overlap").await;
    subscriber.subscribe("overlap/+", QoS::AtMostOnce).await;
    subscriber.subscribe("overlap/#", QoS::ExactlyOnce).await;
    let mut publisher = Client::connect(addr, "overlap-pub").await;
    publisher
        .publish("overlap/x", b"m", QoS::AtLeastOnce, 1, false)
        .await;
    let message = subscriber.expect_publish().await;
    assert_eq!(
        message.qos,
        QoS::AtLeastOnce,
        "the publish QoS caps the subscription's"
    );
    subscriber
        .send(Packet::PubAck(PubAck::new(message.packet_id.unwrap())))
        .await;
    subscriber.expect_silence(SHORT).await;
}

#[tokio::test]
async fn retained_messages_are_set_replaced_and_cleared() {
    let (_broker, addr) = start(anonymous()).await;
    let mut publisher = Client::connect(addr, "retainer").await;
    publisher
        .publish("retained/t", b"one", QoS::AtMostOnce, 0, true)
        .await;
    publisher
        .publish("retained/t", b"two", QoS::AtMostOnce, 0, true)
        .await;
    publisher.send(Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));

    let mut late = Client::connect(addr, "late").await;
    late.subscribe("retained/#", QoS::AtMostOnce).await;
    let message = late.expect_publish().await;
    assert!(message.retain);
    assert_eq!(&message.payload[..], b"two");

    // Live deliveries to existing subscribers do not carry the retain flag (3.1.1).
    publisher
        .publish("retained/t", b"three", QoS::AtMostOnce, 0, true)
        .await;
    let live = late.expect_publish().await;
    assert!(!live.retain);

    publisher
        .publish("retained/t", b"", QoS::AtMostOnce, 0, true)
        .await;
    publisher.send(Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    let mut later = Client::connect(addr, "later").await;
    later.subscribe("retained/#", QoS::AtMostOnce).await;
    later.expect_silence(SHORT).await;
}

#[tokio::test]
async fn v5_retained_messages_are_removed_once_their_expiry_interval_passes() {
    // Without `$SYS` topics, which are retained too.
    let config = BrokerConfig {
        sys_interval: Duration::ZERO,
        ..anonymous()
    };
    let (broker, addr) = start(config).await;
    let (mut publisher, _) = Client::connect_with(
        addr,
        connect_packet("retain-expiry", ProtocolVersion::V5, true),
    )
    .await;
    for (topic, interval, packet_id) in [
        ("expiring/short", Some(1), 1),
        ("expiring/long", Some(600), 2),
        ("expiring/never", None, 3),
    ] {
        let mut message = support::publish(topic, b"x", QoS::AtLeastOnce, packet_id, true);
        message.properties.message_expiry_interval = interval;
        publisher.send(Packet::Publish(message)).await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    assert_eq!(broker.stats_snapshot().retained_messages, 3);

    // The housekeeping sweep runs every second; give it a few.
    wait_for_retained_count(&broker, 2).await;

    let mut late = Client::connect(addr, "retain-expiry-late").await;
    late.subscribe("expiring/#", QoS::AtMostOnce).await;
    let mut topics = vec![
        late.expect_publish().await.topic.as_str().to_owned(),
        late.expect_publish().await.topic.as_str().to_owned(),
    ];
    topics.sort();
    assert_eq!(topics, ["expiring/long", "expiring/never"]);
    late.expect_silence(SHORT).await;

    // A replacement expires by its own interval; clearing removes at once.
    let mut replacement = support::publish("expiring/long", b"y", QoS::AtLeastOnce, 4, true);
    replacement.properties.message_expiry_interval = Some(1);
    publisher.send(Packet::Publish(replacement)).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let clear = support::publish("expiring/never", b"", QoS::AtLeastOnce, 5, true);
    publisher.send(Packet::Publish(clear)).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    wait_for_retained_count(&broker, 0).await;
}

async fn wait_for_retained_count(broker: &Broker, count: u64) {
    let deadline = tokio::time::Instant::now() + support::TIMEOUT;
    while broker.stats_snapshot().retained_messages != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retained messages are not {count}: {:?}",
            broker.stats_snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn anonymous_clients_are_refused_unless_allowed() {
    let (_broker, addr) = start(BrokerConfig::default()).await;
    let (mut v3, connack) =
        Client::connect_with(addr, connect_packet("anon3", ProtocolVersion::V311, true)).await;
    assert!(
        matches!(connack, Packet::ConnAck(ref ack) if ack.code == ReasonCode::NOT_AUTHORIZED),
        "{connack:?}"
    );
    assert!(v3.expect_closed().await.is_empty());
    let (_, connack) =
        Client::connect_with(addr, connect_packet("anon5", ProtocolVersion::V5, true)).await;
    assert!(
        matches!(connack, Packet::ConnAck(ref ack) if ack.code == ReasonCode::NOT_AUTHORIZED),
        "{connack:?}"
    );
}

#[tokio::test]
async fn shared_subscription_delivers_each_message_to_one_member() {
    let (_broker, addr) = start(anonymous()).await;
    let mut members = Vec::new();
    for name in ["member-a", "member-b"] {
        let mut member = Client::connect(addr, name).await;
        member
            .subscribe("$share/workers/jobs/+", QoS::AtMostOnce)
            .await;
        members.push(member);
    }
    let mut publisher = Client::connect(addr, "jobs-pub").await;
    for n in 0..10u8 {
        publisher
            .publish("jobs/x", &[n], QoS::AtMostOnce, 0, false)
            .await;
    }
    let mut total = 0;
    for member in &mut members {
        while let Ok(Some(Packet::Publish(_))) = member.try_recv(SHORT).await {
            total += 1;
        }
    }
    assert_eq!(total, 10);
}

#[tokio::test]
async fn shutdown_tells_v5_clients_the_server_is_shutting_down() {
    let (broker, addr) = start(anonymous()).await;
    let (mut client, _) =
        Client::connect_with(addr, connect_packet("bye", ProtocolVersion::V5, true)).await;
    broker.shutdown();
    let seen = client.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::SERVER_SHUTTING_DOWN),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_publishers_reach_one_wildcard_subscriber_at_qos1() {
    let (_broker, addr) = start(BrokerConfig {
        max_queued_messages: 100_000,
        ..anonymous()
    })
    .await;
    let mut subscriber = Client::connect(addr, "fan-in-sub").await;
    subscriber.subscribe("fanin/+/data", QoS::AtLeastOnce).await;
    let publishers = 20u16;
    let per_publisher = 200u16;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, &format!("fan-in-{p}")).await;
            for id in 1..=per_publisher {
                client
                    .publish(
                        &format!("fanin/{p}/data"),
                        &id.to_be_bytes(),
                        QoS::AtLeastOnce,
                        id,
                        false,
                    )
                    .await;
            }
            for _ in 0..per_publisher {
                assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
            }
        }));
    }
    let expected = usize::from(publishers) * usize::from(per_publisher);
    let mut received = 0;
    while received < expected {
        let message = subscriber.expect_publish().await;
        subscriber
            .send(Packet::PubAck(PubAck::new(message.packet_id.unwrap())))
            .await;
        received += 1;
    }
    for task in tasks {
        task.await.unwrap();
    }
    subscriber.expect_silence(SHORT).await;
}

#[tokio::test]
async fn v5_subscription_identifiers_and_no_local_are_honoured() {
    let (_broker, addr) = start(anonymous()).await;
    let (mut client, _) =
        Client::connect_with(addr, connect_packet("v5-opts", ProtocolVersion::V5, true)).await;
    let mut options = SubscriptionOptions::with_qos(QoS::AtMostOnce);
    options.no_local = true;
    client
        .send(Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(3).unwrap(),
            filters: vec![(TopicFilter::new("opts/#").unwrap(), options)],
            properties: Properties {
                subscription_identifiers: vec![42],
                ..Properties::default()
            },
        }))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    client
        .publish("opts/self", b"mine", QoS::AtMostOnce, 0, false)
        .await;
    client.expect_silence(SHORT).await;

    let mut other = Client::connect(addr, "v5-other").await;
    other
        .publish("opts/other", b"theirs", QoS::AtMostOnce, 0, false)
        .await;
    let message = client.expect_publish().await;
    assert_eq!(message.properties.subscription_identifiers, vec![42]);
}

#[tokio::test]
async fn v5_message_expiry_drops_what_waited_too_long_and_forwards_the_time_left() {
    let (_broker, addr) = start(anonymous()).await;
    let mut persistent = connect_packet("expiry-sub", ProtocolVersion::V5, true);
    persistent.properties.session_expiry_interval = Some(300);
    let (mut subscriber, _) = Client::connect_with(addr, persistent.clone()).await;
    subscriber.subscribe("expiry/#", QoS::AtLeastOnce).await;
    subscriber
        .send(Packet::Disconnect(Disconnect::default()))
        .await;
    drop(subscriber);

    let (mut publisher, _) = Client::connect_with(
        addr,
        connect_packet("expiry-pub", ProtocolVersion::V5, true),
    )
    .await;
    for (topic, interval, packet_id) in [("expiry/short", 1, 1), ("expiry/long", 600, 2)] {
        let mut message = support::publish(topic, b"x", QoS::AtLeastOnce, packet_id, false);
        message.properties.message_expiry_interval = Some(interval);
        publisher.send(Packet::Publish(message)).await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    persistent.clean_start = false;
    let (mut again, connack) = Client::connect_with(addr, persistent).await;
    assert!(matches!(connack, Packet::ConnAck(ref ack) if ack.session_present));
    let survivor = again.expect_publish().await;
    assert_eq!(
        survivor.topic.as_str(),
        "expiry/long",
        "the expired message was sent"
    );
    let left = survivor.properties.message_expiry_interval.unwrap();
    assert!((598..=599).contains(&left), "{left} s left of 600");
    again
        .send(Packet::PubAck(PubAck::new(survivor.packet_id.unwrap())))
        .await;
    again.expect_silence(SHORT).await;
}

#[tokio::test]
async fn new_connections_past_the_fresh_allowance_park_at_once() {
    // The broker keeps 64 new connections of a listener attached after CONNACK (they
    // park after 2 s of silence); those past them, in a storm, park at once.
    const STORM: u64 = 64 + 64;
    let (broker, addr) = start(anonymous()).await;
    let mut clients = Vec::new();
    for index in 0..STORM {
        clients.push(Client::connect(addr, &format!("storm-{index}")).await);
    }
    // (The last one may still be on its way into the lot.)
    let parked = broker.stats_snapshot().clients_parked;
    assert!(
        parked >= 63,
        "{parked} of {STORM} new connections parked at once"
    );
    // And the early ones still serve their first packets at once, then park too.
    clients[0].subscribe("storm/#", QoS::AtLeastOnce).await;
    until_parked(&broker, STORM).await;
}

/// Waits until the broker holds `count` parked (idle) connections.
async fn until_parked(broker: &Broker, count: u64) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while broker.stats_snapshot().clients_parked != count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "expected {count} parked connections, have {}",
        broker.stats_snapshot().clients_parked
    );
}

#[tokio::test]
async fn idle_connection_parks_and_is_served_as_before() {
    let (broker, addr) = start(anonymous()).await;
    // Silent after CONNECT: parks (after a while); its first packet resumes it.
    let mut subscriber = Client::connect(addr, "parks").await;
    until_parked(&broker, 1).await;
    subscriber.subscribe("parked/#", QoS::AtLeastOnce).await;
    // Silent again for a while: parks again.
    until_parked(&broker, 1).await;

    // Pings are answered in place: the connection stays parked.
    subscriber.send(Packet::PingReq).await;
    assert_eq!(subscriber.recv().await, Some(Packet::PingResp));
    subscriber.send(Packet::PingReq).await;
    assert_eq!(subscriber.recv().await, Some(Packet::PingResp));
    assert_eq!(broker.stats_snapshot().clients_parked, 1);

    // A message for it resumes it.
    let mut publisher = Client::connect(addr, "wakes").await;
    publisher
        .publish("parked/a", b"hello", QoS::AtLeastOnce, 7, false)
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let message = subscriber.expect_publish().await;
    assert_eq!(
        (message.topic.as_str(), &message.payload[..]),
        ("parked/a", &b"hello"[..])
    );
    let packet_id = message.packet_id.unwrap();
    subscriber
        .send(Packet::PubAck(PubAck::new(packet_id)))
        .await;
    assert_eq!(broker.stats_snapshot().clients_connected, 2);
}

#[tokio::test]
async fn parked_connection_keeps_its_keep_alive_and_its_will() {
    let (broker, addr) = start(anonymous()).await;
    let mut watcher = Client::connect(addr, "watcher3").await;
    watcher.subscribe("wills/#", QoS::AtMostOnce).await;
    let mut connect = connect_packet("pinger", ProtocolVersion::V5, true);
    connect.keep_alive = 1;
    connect.will = Some(will("wills/pinger", b"gone", QoS::AtMostOnce, false));
    let (mut pinger, _) = Client::connect_with(addr, connect).await;
    // Pings keep it open, and do not keep it from parking (nor the silent watcher).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while broker.stats_snapshot().clients_parked < 2 {
        assert!(tokio::time::Instant::now() < deadline, "did not park");
        tokio::time::sleep(Duration::from_millis(700)).await;
        pinger.send(Packet::PingReq).await;
        assert_eq!(pinger.recv().await, Some(Packet::PingResp));
    }
    // Pinging (answered while parked) keeps it open past its deadlines...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        pinger.send(Packet::PingReq).await;
        assert_eq!(pinger.recv().await, Some(Packet::PingResp));
    }
    watcher.expect_silence(Duration::from_millis(10)).await;
    // ... and silence closes it, with the will and (5.0) the reason.
    let seen = pinger.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::KEEP_ALIVE_TIMEOUT),
        "{seen:?}"
    );
    let message = watcher.expect_publish().await;
    assert_eq!(message.topic.as_str(), "wills/pinger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_subscriber_woken_by_a_flood_keeps_flow_control() {
    let (broker, addr) = start(BrokerConfig {
        max_queued_messages: 100,
        ..anonymous()
    })
    .await;
    let mut subscriber = Client::connect(addr, "parked-busy").await;
    subscriber.subscribe("busy/t", QoS::AtMostOnce).await;
    until_parked(&broker, 1).await;
    let publisher = spawn_flood(addr, "flooder");
    let received = receive_in_order(&mut subscriber, Duration::ZERO).await;
    publisher.await.unwrap();
    assert_eq!(received, FLOOD, "messages lost or out of order");
    assert_eq!(broker.stats_snapshot().messages_dropped, 0);
}

/// A publisher that sends far more than its socket can take acknowledgements for, and
/// reads nothing meanwhile: its `PUBACK`s back up (the reader writes them while it can,
/// the writer takes over once the socket is full, and the reader stops reading when too
/// many wait), yet every one arrives, once, in order, as soon as it reads again, and
/// the messages it published in between reach a subscriber intact.
#[tokio::test]
async fn a_publisher_that_does_not_read_gets_every_puback_in_order_later() {
    use bytes::BytesMut;
    use fleetwire_mqtt_codec::{decode, encode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (_broker, addr) = start(BrokerConfig {
        // Small, so the broker's side of the socket fills after a few thousand acks.
        socket_send_buffer: Some(4096),
        ..anonymous()
    })
    .await;
    // The subscriber reads all along, so flow control does not pause the publisher.
    let mut subscriber = Client::connect(addr, "backlog-sub").await;
    subscriber.subscribe("backlog/t", QoS::AtMostOnce).await;
    let count: u32 = 60_000;
    let receiving = tokio::spawn(async move {
        for index in 0..count {
            let message = subscriber.expect_publish().await;
            assert_eq!(&message.payload[..], &index.to_be_bytes());
        }
        subscriber.expect_silence(SHORT).await;
    });

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small receive window, so the broker's socket fills after a few thousand acks.
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut publisher = Client::from_stream(stream, ProtocolVersion::V311);
    publisher
        .send(Packet::Connect(Box::new(support::connect_packet(
            "backlog-pub",
            ProtocolVersion::V311,
            true,
        ))))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::ConnAck(_))));
    let (mut reads, mut writes) = publisher.stream.into_split();

    let packet_id = |index: u32| (index % 65_535 + 1) as u16;
    let sending = tokio::spawn(async move {
        let mut out = BytesMut::new();
        for index in 0..count {
            let message = support::publish(
                "backlog/t",
                &index.to_be_bytes(),
                QoS::AtLeastOnce,
                packet_id(index),
                false,
            );
            encode(&Packet::Publish(message), ProtocolVersion::V311, &mut out).unwrap();
            if out.len() > 16 * 1024 {
                writes.write_all(&out).await.unwrap();
                out.clear();
            }
        }
        writes.write_all(&out).await.unwrap();
        writes
    });
    // Let the broker's side of the socket fill up before anything is read.
    tokio::time::sleep(SHORT).await;

    let mut buffer = BytesMut::new();
    let mut acknowledged = 0u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acknowledged < count {
        match decode(&mut buffer, ProtocolVersion::V311, 1 << 20).unwrap() {
            Some(Packet::PubAck(ack)) => {
                assert_eq!(ack.packet_id.get(), packet_id(acknowledged), "in order");
                acknowledged += 1;
            }
            Some(other) => panic!("expected PUBACK, got {other:?}"),
            None => {
                let read = tokio::time::timeout_at(deadline, reads.read_buf(&mut buffer))
                    .await
                    .expect("every PUBACK within 30 s")
                    .unwrap();
                assert!(read > 0, "closed after {acknowledged} PUBACKs");
            }
        }
    }
    let _writes = sending.await.unwrap();
    receiving.await.unwrap();
}
