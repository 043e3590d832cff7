//! The seam to a cluster's other nodes (`Peers`): what the broker tells them, and
//! messages from them routed here, through real sockets. The NATS side is the cluster
//! crate's.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetwire_broker::{Broker, Hooks, PeerMessage, Peers};
use fleetwire_mqtt_codec::{Packet, Properties, QoS, TopicFilter, TopicName, Unsubscribe};
use parking_lot::Mutex;
use support::{Client, anonymous};
use tokio::net::TcpListener;

/// What the broker told the peers, in order.
#[derive(Debug, Clone, PartialEq)]
enum Heard {
    Subscribed(String),
    Unsubscribed(String),
    Published(String, Bytes),
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Heard>>);

impl Recorder {
    fn take(&self) -> Vec<Heard> {
        std::mem::take(&mut self.0.lock())
    }
}

impl Peers for Recorder {
    fn subscribed(&self, filter: &TopicFilter) {
        self.0
            .lock()
            .push(Heard::Subscribed(filter.as_str().to_owned()));
    }

    fn unsubscribed(&self, filter: &TopicFilter) {
        self.0
            .lock()
            .push(Heard::Unsubscribed(filter.as_str().to_owned()));
    }

    fn published(&self, message: &PeerMessage) {
        self.0.lock().push(Heard::Published(
            message.topic.as_str().to_owned(),
            message.payload.clone(),
        ));
    }
}

fn subscribed(filter: &str) -> Heard {
    Heard::Subscribed(filter.to_owned())
}

fn unsubscribed(filter: &str) -> Heard {
    Heard::Unsubscribed(filter.to_owned())
}

#[tokio::test]
async fn peers_hear_subscriptions_and_local_publishes_and_their_messages_are_routed_here() {
    let broker = Broker::new(anonymous());
    let recorder = Arc::new(Recorder::default());
    assert!(broker.set_peers(Arc::clone(&recorder) as Arc<dyn Peers>));
    assert!(
        !broker.set_peers(Arc::new(Recorder::default())),
        "peers are set once"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = broker
        .spawn(listener, Hooks::default())
        .unwrap()
        .local_addr();

    let mut subscriber = Client::connect(addr, "subscriber").await;
    subscriber.subscribe("a/+", QoS::AtMostOnce).await;
    subscriber.subscribe("$share/g/b/#", QoS::AtMostOnce).await;
    // A second session on the same filter is heard of too (the peers count).
    let mut other = Client::connect(addr, "other").await;
    other.subscribe("a/+", QoS::AtMostOnce).await;
    assert_eq!(
        recorder.take(),
        [
            subscribed("a/+"),
            subscribed("$share/g/b/#"),
            subscribed("a/+")
        ]
    );

    // Published here: routed here, then handed to the peers.
    let mut publisher = Client::connect(addr, "publisher").await;
    publisher
        .publish("a/1", b"local", QoS::AtMostOnce, 0, false)
        .await;
    assert_eq!(subscriber.expect_publish().await.payload, &b"local"[..]);
    assert_eq!(other.expect_publish().await.payload, &b"local"[..]);
    assert_eq!(
        recorder.take(),
        [Heard::Published(
            "a/1".to_owned(),
            Bytes::from_static(b"local")
        )]
    );

    // From a peer: routed here, not handed back.
    let delivered = broker.publish_from_peer(PeerMessage {
        topic: TopicName::new("a/2").unwrap(),
        payload: Bytes::from_static(b"remote"),
        qos: QoS::AtLeastOnce,
        is_retained: false,
        properties: Properties::default(),
    });
    assert_eq!(delivered, 2);
    let received = subscriber.expect_publish().await;
    assert_eq!(
        (received.topic.as_str(), &received.payload[..]),
        ("a/2", &b"remote"[..])
    );
    assert_eq!(other.expect_publish().await.payload, &b"remote"[..]);
    assert_eq!(recorder.take(), []);

    // Share groups are the peers' to serve: neither a local publish nor one from a
    // peer reaches the member, only a delivery to its group does.
    publisher
        .publish("b/1", b"local", QoS::AtMostOnce, 0, false)
        .await;
    let from_peer = |topic: &str, payload: &'static [u8]| PeerMessage {
        topic: TopicName::new(topic).unwrap(),
        payload: Bytes::from_static(payload),
        qos: QoS::AtMostOnce,
        is_retained: false,
        properties: Properties::default(),
    };
    assert_eq!(broker.publish_from_peer(from_peer("b/2", b"remote")), 0);
    assert_eq!(
        broker.publish_to_share_group("h", from_peer("b/3", b"other group")),
        0
    );
    assert_eq!(
        broker.publish_to_share_group("g", from_peer("c/4", b"no match")),
        0
    );
    assert_eq!(
        broker.publish_to_share_group("g", from_peer("b/5", b"to the group")),
        1
    );
    let received = subscriber.expect_publish().await;
    assert_eq!(
        (received.topic.as_str(), &received.payload[..]),
        ("b/5", &b"to the group"[..]),
        "only the group's delivery reached the member"
    );
    recorder.take();

    // Unsubscribing, and a clean session ending, take their subscriptions back.
    subscriber
        .send(Packet::Unsubscribe(Unsubscribe {
            packet_id: fleetwire_mqtt_codec::PacketId::new(2).unwrap(),
            filters: vec![TopicFilter::new("a/+").unwrap()],
            properties: Properties::default(),
        }))
        .await;
    assert!(matches!(subscriber.recv().await, Some(Packet::UnsubAck(_))));
    assert_eq!(recorder.take(), [unsubscribed("a/+")]);
    subscriber
        .send(Packet::Disconnect(Default::default()))
        .await;
    other.send(Packet::Disconnect(Default::default())).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut heard = Vec::new();
    while heard.len() < 2 && tokio::time::Instant::now() < deadline {
        heard.extend(recorder.take());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    heard.sort_by_key(|event| format!("{event:?}"));
    assert_eq!(heard, [unsubscribed("$share/g/b/#"), unsubscribed("a/+")]);
}

#[tokio::test]
async fn subscriptions_held_before_the_peers_were_set_are_told_when_they_are() {
    let (broker, addr) = support::start(anonymous()).await;
    let mut subscriber = Client::connect(addr, "early").await;
    subscriber.subscribe("x/#", QoS::AtLeastOnce).await;
    let recorder = Arc::new(Recorder::default());
    broker.set_peers(Arc::clone(&recorder) as Arc<dyn Peers>);
    assert_eq!(recorder.take(), [subscribed("x/#")]);
    // The broker's own `$SYS` topics stay on their node.
    broker.publish_internal(
        TopicName::new("$SYS/broker/test").unwrap(),
        Bytes::from_static(b"1"),
        QoS::AtMostOnce,
        false,
    );
    broker.publish_internal(
        TopicName::new("x/y").unwrap(),
        Bytes::from_static(b"2"),
        QoS::AtMostOnce,
        false,
    );
    assert_eq!(
        recorder.take(),
        [Heard::Published("x/y".to_owned(), Bytes::from_static(b"2"))]
    );
}
