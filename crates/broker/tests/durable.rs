//! Persistent sessions and retained messages across restarts, through the embedded
//! durable state (`EmbeddedState` in a temporary directory) and real sockets. The crash
//! itself (`kill -9` of the binary) is tested in tests/interop/test_persistence.py.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleetwire_broker::{Broker, EmbeddedState, Flush, Hooks, Running};
use fleetwire_mqtt_codec::{
    Packet, PacketId, Properties, ProtocolVersion, PubComp, PubRec, PubRel, QoS, ReasonCode,
};
use support::{Client, anonymous, connect_packet, publish};
use tokio::net::TcpListener;

/// A broker on a free port with its state in `directory`.
struct Node {
    broker: Broker,
    running: Running,
    addr: SocketAddr,
}

impl Node {
    async fn start(directory: &Path) -> Node {
        let state = EmbeddedState::open(directory, Flush::Sync).unwrap();
        let broker = Broker::with_state(anonymous(), Arc::new(state)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = broker.spawn(listener, Hooks::default()).unwrap();
        let addr = running.local_addr();
        Node {
            broker,
            running,
            addr,
        }
    }

    async fn stop(self) {
        self.broker.shutdown();
        self.running.stopped().await.unwrap();
        self.broker.close_state().unwrap();
    }

    async fn restart(self, directory: &Path) -> Node {
        self.stop().await;
        Node::start(directory).await
    }
}

fn directory(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("fleetwire-durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

/// Connects `client_id` with a persistent session; returns the client and whether the
/// session was present.
async fn connect_persistent(
    addr: SocketAddr,
    client_id: &str,
    version: ProtocolVersion,
) -> (Client, bool) {
    let mut connect = connect_packet(client_id, version, false);
    if version.is_v5() {
        connect.properties.session_expiry_interval = Some(3600);
    }
    let (client, connack) = Client::connect_with(addr, connect).await;
    match connack {
        Packet::ConnAck(ack) if ack.code == ReasonCode::SUCCESS => (client, ack.session_present),
        other => panic!("expected a successful CONNACK, got {other:?}"),
    }
}

/// Publishes `count` messages of QoS `qos` and waits for each acknowledgement (so that
/// each is durable when this returns).
async fn publish_acknowledged(client: &mut Client, topic: &str, qos: QoS, count: u16) {
    for n in 1..=count {
        client
            .publish(topic, format!("m{n}").as_bytes(), qos, n, false)
            .await;
        match client.recv().await {
            Some(Packet::PubAck(ack)) if qos == QoS::AtLeastOnce => {
                assert_eq!(ack.packet_id.get(), n)
            }
            Some(Packet::PubRec(rec)) if qos == QoS::ExactlyOnce => {
                client
                    .send(Packet::PubRel(PubRel::new(rec.packet_id)))
                    .await;
                assert!(matches!(client.recv().await, Some(Packet::PubComp(_))));
            }
            other => panic!("expected the acknowledgement of {n}, got {other:?}"),
        }
    }
}

/// Receives `count` messages, acknowledging each as its QoS asks; returns them as
/// "topic payload" in the order they came.
async fn receive_acknowledging(client: &mut Client, count: usize) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match client.recv().await {
            Some(Packet::Publish(message)) => {
                let packet_id = message.packet_id.unwrap();
                let answer = match message.qos {
                    QoS::AtLeastOnce => Packet::PubAck(fleetwire_mqtt_codec::PubAck {
                        packet_id,
                        reason: ReasonCode::SUCCESS,
                        properties: Properties::default(),
                    }),
                    _ => Packet::PubRec(PubRec::new(packet_id)),
                };
                client.send(answer).await;
                seen.push(format!(
                    "{} {}",
                    message.topic.as_str(),
                    String::from_utf8_lossy(&message.payload)
                ));
            }
            Some(Packet::PubRel(release)) => {
                client
                    .send(Packet::PubComp(PubComp::new(release.packet_id)))
                    .await;
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    // The last releases, and nothing more.
    while let Ok(packet) = client.try_recv(Duration::from_millis(200)).await {
        match packet {
            Some(Packet::PubRel(release)) => {
                client
                    .send(Packet::PubComp(PubComp::new(release.packet_id)))
                    .await;
            }
            other => panic!("expected no more messages, got {other:?}"),
        }
    }
    seen
}

#[tokio::test]
async fn offline_queues_and_retained_messages_survive_a_restart() {
    let directory = directory("queues");
    let node = Node::start(&directory).await;
    for (client_id, version) in [("old", ProtocolVersion::V311), ("new", ProtocolVersion::V5)] {
        let (mut client, present) = connect_persistent(node.addr, client_id, version).await;
        assert!(!present);
        client.subscribe("q/#", QoS::ExactlyOnce).await;
        drop(client);
    }
    let mut publisher = Client::connect(node.addr, "publisher").await;
    publish_acknowledged(&mut publisher, "q/one", QoS::AtLeastOnce, 50).await;
    publish_acknowledged(&mut publisher, "q/two", QoS::ExactlyOnce, 50).await;
    for (topic, payload) in [
        ("r/a", "first"),
        ("r/a", "second"),
        ("r/b", "gone"),
        ("r/b", ""),
    ] {
        publisher
            .publish(topic, payload.as_bytes(), QoS::AtLeastOnce, 1, true)
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    drop(publisher);

    let node = node.restart(&directory).await;
    for (client_id, version) in [("old", ProtocolVersion::V311), ("new", ProtocolVersion::V5)] {
        let (mut client, present) = connect_persistent(node.addr, client_id, version).await;
        assert!(present, "{client_id}'s session came back");
        let seen = receive_acknowledging(&mut client, 100).await;
        let expected: Vec<String> = (1..=50)
            .map(|n| format!("q/one m{n}"))
            .chain((1..=50).map(|n| format!("q/two m{n}")))
            .collect();
        assert_eq!(seen, expected, "{client_id}: every message once, in order");
    }
    let mut reader = Client::connect(node.addr, "reader").await;
    reader.subscribe("r/#", QoS::AtLeastOnce).await;
    let retained = reader.expect_publish().await;
    assert_eq!(
        (
            retained.topic.as_str(),
            &retained.payload[..],
            retained.retain
        ),
        ("r/a", &b"second"[..], true)
    );
    reader.expect_silence(Duration::from_millis(200)).await;
    drop(reader);

    // Delivered and acknowledged messages are not delivered again after the next restart.
    let node = node.restart(&directory).await;
    let (mut client, present) = connect_persistent(node.addr, "old", ProtocolVersion::V311).await;
    assert!(present);
    client.expect_silence(Duration::from_millis(300)).await;
    node.stop().await;
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test]
async fn qos2_stays_exactly_once_across_a_restart() {
    let directory = directory("qos2");
    let node = Node::start(&directory).await;
    let (mut subscriber, _) = connect_persistent(node.addr, "sub", ProtocolVersion::V311).await;
    subscriber.subscribe("x", QoS::ExactlyOnce).await;
    let mut publisher = Client::connect(node.addr, "pub").await;
    publish_acknowledged(&mut publisher, "x", QoS::ExactlyOnce, 2).await;
    // The first is received (PUBREC sent, PUBCOMP never comes); the second is received
    // and not answered at all.
    let first = subscriber.expect_publish().await;
    let second = subscriber.expect_publish().await;
    subscriber
        .send(Packet::PubRec(PubRec::new(first.packet_id.unwrap())))
        .await;
    assert!(matches!(subscriber.recv().await, Some(Packet::PubRel(_))));
    drop(subscriber);
    drop(publisher);

    let node = node.restart(&directory).await;
    let (mut subscriber, present) =
        connect_persistent(node.addr, "sub", ProtocolVersion::V311).await;
    assert!(present);
    // The released one is only released again; the other comes again with its packet id.
    let mut rest = Vec::new();
    for _ in 0..2 {
        rest.push(subscriber.recv().await.unwrap());
    }
    assert!(
        rest.iter().any(|packet| matches!(packet, Packet::PubRel(release) if Some(release.packet_id) == first.packet_id)),
        "{rest:?}"
    );
    assert!(
        rest.iter().any(|packet| matches!(packet, Packet::Publish(again) if again.dup && again.packet_id == second.packet_id && again.payload == second.payload)),
        "{rest:?}"
    );
    subscriber.expect_silence(Duration::from_millis(200)).await;
    node.stop().await;
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test]
async fn a_qos2_message_resent_after_a_restart_is_not_routed_twice() {
    let directory = directory("incoming");
    let node = Node::start(&directory).await;
    let (mut subscriber, _) = connect_persistent(node.addr, "sub", ProtocolVersion::V311).await;
    subscriber.subscribe("in", QoS::AtLeastOnce).await;
    drop(subscriber);
    let (mut publisher, _) = connect_persistent(node.addr, "pub", ProtocolVersion::V311).await;
    publisher
        .publish("in", b"once", QoS::ExactlyOnce, 7, false)
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    drop(publisher);

    let node = node.restart(&directory).await;
    let (mut publisher, present) =
        connect_persistent(node.addr, "pub", ProtocolVersion::V311).await;
    assert!(present);
    // As if the PUBREC had been lost: the same message again, then its release.
    let mut again = publish("in", b"once", QoS::ExactlyOnce, 7, false);
    again.dup = true;
    publisher.send(Packet::Publish(again)).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    publisher
        .send(Packet::PubRel(PubRel::new(PacketId::new(7).unwrap())))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubComp(_))));

    let (mut subscriber, _) = connect_persistent(node.addr, "sub", ProtocolVersion::V311).await;
    assert_eq!(&subscriber.expect_publish().await.payload[..], b"once");
    subscriber.expect_silence(Duration::from_millis(300)).await;
    node.stop().await;
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test]
async fn a_snapshot_replaces_the_logs_and_loses_nothing() {
    let directory = directory("snapshot");
    let node = Node::start(&directory).await;
    let (mut subscriber, _) = connect_persistent(node.addr, "sub", ProtocolVersion::V5).await;
    subscriber.subscribe("s/#", QoS::AtLeastOnce).await;
    drop(subscriber);
    let mut publisher = Client::connect(node.addr, "pub").await;
    publish_acknowledged(&mut publisher, "s/before", QoS::AtLeastOnce, 20).await;
    publisher
        .publish("s/kept", b"retained", QoS::AtLeastOnce, 1, true)
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let broker = node.broker.clone();
    tokio::task::spawn_blocking(move || broker.snapshot_state())
        .await
        .unwrap()
        .unwrap();
    publish_acknowledged(&mut publisher, "s/after", QoS::AtLeastOnce, 20).await;
    drop(publisher);
    let files = |extension: &str| {
        std::fs::read_dir(&directory)
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|found| found == extension)
            })
            .count()
    };
    assert_eq!(
        (files("snapshot"), files("log")),
        (1, 1),
        "the log before the snapshot is gone"
    );

    let node = node.restart(&directory).await;
    let (mut subscriber, present) = connect_persistent(node.addr, "sub", ProtocolVersion::V5).await;
    assert!(present);
    let seen = receive_acknowledging(&mut subscriber, 41).await;
    let expected: Vec<String> = (1..=20)
        .map(|n| format!("s/before m{n}"))
        .chain(std::iter::once("s/kept retained".to_owned()))
        .chain((1..=20).map(|n| format!("s/after m{n}")))
        .collect();
    assert_eq!(seen, expected);
    node.stop().await;
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test]
async fn ended_and_expired_sessions_do_not_come_back() {
    let directory = directory("ended");
    let node = Node::start(&directory).await;
    let (client, _) = connect_persistent(node.addr, "ends", ProtocolVersion::V311).await;
    drop(client);
    // A clean session with the same id ends the persistent one.
    let clean = Client::connect(node.addr, "ends").await;
    drop(clean);
    let mut connect = connect_packet("expires", ProtocolVersion::V5, false);
    connect.properties.session_expiry_interval = Some(1);
    let (client, _) = Client::connect_with(node.addr, connect).await;
    drop(client);
    node.stop().await;
    // The broker is down longer than the session's expiry: that time counts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let node = Node::start(&directory).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for client_id in ["ends", "expires"] {
        let (_, present) = connect_persistent(node.addr, client_id, ProtocolVersion::V5).await;
        assert!(!present, "{client_id}'s session is gone");
    }
    node.stop().await;
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test]
async fn a_damaged_log_is_an_error_naming_the_file() {
    let directory = directory("damaged");
    let node = Node::start(&directory).await;
    let (mut client, _) = connect_persistent(node.addr, "c", ProtocolVersion::V311).await;
    client.subscribe("d/#", QoS::AtLeastOnce).await;
    client.subscribe("e/#", QoS::AtLeastOnce).await;
    drop(client);
    node.stop().await;
    let log = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|found| found == "log"))
        .unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    // The payload of the first record (the session): damage with more records after it.
    bytes[10] ^= 0xFF;
    std::fs::write(&log, &bytes).unwrap();
    let state = EmbeddedState::open(&directory, Flush::Sync).unwrap();
    let error = Broker::with_state(anonymous(), Arc::new(state)).unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&log.display().to_string()), "{text}");
    assert!(text.contains("corrupt"), "{text}");
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test]
async fn a_delayed_will_is_published_after_a_restart() {
    let directory = directory("will");
    let node = Node::start(&directory).await;
    let mut connect = connect_packet("leaves", ProtocolVersion::V5, false);
    connect.properties.session_expiry_interval = Some(3600);
    let mut will = support::will("wills/leaves", b"gone", QoS::AtLeastOnce, true);
    will.properties.will_delay_interval = Some(2);
    connect.will = Some(will);
    let (client, connack) = Client::connect_with(node.addr, connect).await;
    assert!(matches!(connack, Packet::ConnAck(ref ack) if ack.code == ReasonCode::SUCCESS));
    // The connection breaks without DISCONNECT: the will waits for its delay.
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node = node.restart(&directory).await;
    let mut watcher = Client::connect(node.addr, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let will = tokio::time::timeout(Duration::from_secs(5), watcher.expect_publish())
        .await
        .expect("the will within its delay after the restart");
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("wills/leaves", &b"gone"[..])
    );
    node.stop().await;

    // Published once: after another restart it is not published again (it is retained,
    // so a new subscriber gets exactly one copy).
    let node = Node::start(&directory).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut watcher = Client::connect(node.addr, "watcher-2").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    assert_eq!(&watcher.expect_publish().await.payload[..], b"gone");
    watcher.expect_silence(Duration::from_millis(300)).await;
    node.stop().await;
    std::fs::remove_dir_all(&directory).unwrap();
}
