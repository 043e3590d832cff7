//! The seam to a cluster's other nodes (`Peers`): what the broker tells them, and
//! messages from them routed here, through real sockets. The NATS side is the cluster
//! crate's.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetwire_broker::{
    BoxFuture, Broker, Claim, Claimed, Hooks, PeerCongestion, PeerMessage, PeerTicket, Peers,
    PeersError,
};
use fleetwire_mqtt_codec::{
    Packet, Properties, ProtocolVersion, QoS, TopicFilter, TopicName, Unsubscribe,
};
use parking_lot::Mutex;
use support::{Client, anonymous, connect_packet, will};
use tokio::net::TcpListener;

/// What the broker told the peers, in order.
#[derive(Debug, Clone, PartialEq)]
enum Heard {
    Subscribed(String),
    Unsubscribed(String),
    Published(String, Bytes),
    /// Client id, connection, will topic, payload, delay.
    WillHeld(String, u64, String, Bytes, u32),
    WillReleased(String, u64),
    Ended(String),
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

    fn published(&self, message: &PeerMessage) -> Option<PeerTicket> {
        self.0.lock().push(Heard::Published(
            message.topic.as_str().to_owned(),
            message.payload.clone(),
        ));
        None
    }

    fn durable(&self, _: PeerTicket) -> BoxFuture<'static, Result<(), PeersError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn claim(&self, _: &str) -> BoxFuture<'static, Result<Claimed, PeersError>> {
        Box::pin(std::future::ready(Ok(Claimed {
            claim: Claim::Here,
            hold: Box::new(()),
        })))
    }

    fn will_held(&self, client_id: &str, generation: u64, will: &PeerMessage, delay: u32) {
        self.0.lock().push(Heard::WillHeld(
            client_id.to_owned(),
            generation,
            will.topic.as_str().to_owned(),
            will.payload.clone(),
            delay,
        ));
    }

    fn will_released(&self, client_id: &str, generation: u64) {
        self.0
            .lock()
            .push(Heard::WillReleased(client_id.to_owned(), generation));
    }

    fn session_ended(&self, client_id: &str) {
        self.0.lock().push(Heard::Ended(client_id.to_owned()));
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
    let delivered = broker.publish_from_peer(
        PeerMessage {
            topic: TopicName::new("a/2").unwrap(),
            payload: Bytes::from_static(b"remote"),
            qos: QoS::AtLeastOnce,
            is_retained: false,
            properties: Properties::default(),
        },
        &mut PeerCongestion::default(),
    );
    assert_eq!(delivered.delivered, 2);
    let received = subscriber.expect_publish().await;
    assert_eq!(
        (received.topic.as_str(), &received.payload[..]),
        ("a/2", &b"remote"[..])
    );
    assert_eq!(other.expect_publish().await.payload, &b"remote"[..]);
    assert_eq!(recorder.take(), []);

    // From a peer for one session alone (one that came from a dead node): the other
    // subscriber of the same filter does not get it (its next message is checked below).
    let to_other = broker.publish_from_peer_to(
        "other",
        PeerMessage {
            topic: TopicName::new("a/3").unwrap(),
            payload: Bytes::from_static(b"for other only"),
            qos: QoS::AtLeastOnce,
            is_retained: false,
            properties: Properties::default(),
        },
        &mut PeerCongestion::default(),
    );
    assert_eq!(to_other.delivered, 1);
    assert_eq!(other.expect_publish().await.payload, &b"for other only"[..]);
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
    assert_eq!(
        broker
            .publish_from_peer(from_peer("b/2", b"remote"), &mut PeerCongestion::default())
            .delivered,
        0
    );
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
    while heard.len() < 4 && tokio::time::Instant::now() < deadline {
        heard.extend(recorder.take());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    heard.sort_by_key(|event| format!("{event:?}"));
    // The sessions' ends are told too (the client ids are free).
    assert_eq!(
        heard,
        [
            Heard::Ended("other".to_owned()),
            Heard::Ended("subscriber".to_owned()),
            unsubscribed("$share/g/b/#"),
            unsubscribed("a/+")
        ]
    );
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

/// Peers that keep retained messages: each gets a ticket, kept (or failed, for payload
/// `fail`) only once the test says so.
#[derive(Default)]
struct Keeper(Arc<Kept>);

#[derive(Default)]
struct Kept {
    next: std::sync::atomic::AtomicU64,
    /// Tickets settled so far, and those that failed.
    settled: Mutex<(u64, Vec<u64>)>,
    changed: tokio::sync::Notify,
    failing: Mutex<Vec<u64>>,
}

impl Kept {
    fn settle_all(&self) {
        let failing = self.failing.lock().clone();
        let mut settled = self.settled.lock();
        settled.0 = self.next.load(std::sync::atomic::Ordering::SeqCst);
        settled.1 = failing;
        self.changed.notify_waiters();
    }
}

impl Peers for Keeper {
    fn subscribed(&self, _: &TopicFilter) {}

    fn unsubscribed(&self, _: &TopicFilter) {}

    fn published(&self, message: &PeerMessage) -> Option<PeerTicket> {
        if !message.is_retained {
            return None;
        }
        let number = self
            .0
            .next
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if &message.payload[..] == b"fail" {
            self.0.failing.lock().push(number);
        }
        Some(PeerTicket(std::num::NonZeroU64::new(number).unwrap()))
    }

    fn claim(&self, _: &str) -> BoxFuture<'static, Result<Claimed, PeersError>> {
        Box::pin(std::future::ready(Ok(Claimed {
            claim: Claim::Here,
            hold: Box::new(()),
        })))
    }

    fn will_held(&self, _: &str, _: u64, _: &PeerMessage, _: u32) {}

    fn will_released(&self, _: &str, _: u64) {}

    fn session_ended(&self, _: &str) {}

    fn durable(&self, ticket: PeerTicket) -> BoxFuture<'static, Result<(), PeersError>> {
        let kept = Arc::clone(&self.0);
        Box::pin(async move {
            loop {
                let notified = kept.changed.notified();
                {
                    let settled = kept.settled.lock();
                    if settled.0 >= ticket.0.get() {
                        if settled.1.contains(&ticket.0.get()) {
                            return Err(PeersError("refused".to_owned()));
                        }
                        return Ok(());
                    }
                }
                notified.await;
            }
        })
    }
}

#[tokio::test]
async fn a_retained_message_is_acknowledged_once_the_peers_keep_it_and_never_if_they_cannot() {
    let (broker, addr) = support::start(anonymous()).await;
    let keeper = Keeper::default();
    let kept = Arc::clone(&keeper.0);
    broker.set_peers(Arc::new(keeper));
    let mut publisher = Client::connect(addr, "publisher").await;

    // Not retained: acknowledged at once, the peers keep nothing.
    publisher
        .publish("r/plain", b"x", QoS::AtLeastOnce, 1, false)
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));

    // Retained: no PUBACK until the peers have it.
    publisher
        .publish("r/kept", b"x", QoS::AtLeastOnce, 2, true)
        .await;
    publisher.expect_silence(Duration::from_millis(300)).await;
    kept.settle_all();
    match publisher.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id.get(), 2),
        other => panic!("expected the PUBACK, got {other:?}"),
    }

    // The peers could not keep it: closed, never acknowledged.
    publisher
        .publish("r/lost", b"fail", QoS::AtLeastOnce, 3, true)
        .await;
    publisher.expect_silence(Duration::from_millis(100)).await;
    kept.settle_all();
    let before_close = publisher.expect_closed().await;
    assert!(
        !before_close
            .iter()
            .any(|packet| matches!(packet, Packet::PubAck(_))),
        "{before_close:?}"
    );
}

#[tokio::test]
async fn messages_from_peers_report_congested_sessions_and_wait_for_their_room() {
    let config = fleetwire_broker::BrokerConfig {
        max_queued_messages: 10,
        max_inflight: 1,
        slow_consumer_grace: Duration::from_secs(5),
        ..anonymous()
    };
    let (broker, addr) = support::start(config).await;
    broker.set_peers(Arc::new(Recorder::default()));
    let mut subscriber = Client::connect(addr, "slow").await;
    subscriber.subscribe("p/#", QoS::AtLeastOnce).await;
    let message = |n: u16| PeerMessage {
        topic: TopicName::new("p/x").unwrap(),
        payload: Bytes::from(n.to_string()),
        qos: QoS::AtLeastOnce,
        is_retained: false,
        properties: Properties::default(),
    };
    // One in flight, unacknowledged; the rest queue past the high-water mark (5).
    let mut congestion = PeerCongestion::default();
    for n in 0..8 {
        broker.publish_from_peer(message(n), &mut congestion);
    }
    assert!(!congestion.is_empty(), "the queue asked for a pause");
    let waiting = {
        let broker = broker.clone();
        tokio::spawn(async move { congestion.relieved(&broker).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "no room yet");
    // The subscriber acknowledges as it reads: the queue drains and the wait ends.
    for _ in 0..8 {
        let publish = subscriber.expect_publish().await;
        subscriber
            .send(Packet::PubAck(fleetwire_mqtt_codec::PubAck {
                packet_id: publish.packet_id.unwrap(),
                reason: fleetwire_mqtt_codec::ReasonCode::SUCCESS,
                properties: Properties::default(),
            }))
            .await;
    }
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("relieved once the queue drained")
        .unwrap();
}

#[tokio::test]
async fn peers_keep_the_will_of_an_open_connection_and_publish_a_dead_nodes_wills_here() {
    let broker = Broker::new(anonymous());
    let recorder = Arc::new(Recorder::default());
    assert!(broker.set_peers(Arc::clone(&recorder) as Arc<dyn Peers>));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = broker
        .spawn(listener, Hooks::default())
        .unwrap()
        .local_addr();
    let mut watcher = Client::connect(addr, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtMostOnce).await;
    recorder.take();

    // Held while the connection is open; released when it ends politely (not published).
    let mut connect = connect_packet("polite", ProtocolVersion::V5, true);
    let mut polite_will = will("wills/polite", b"gone", QoS::AtLeastOnce, false);
    polite_will.properties.will_delay_interval = Some(7);
    polite_will.properties.content_type = Some("text/plain".to_owned());
    connect.will = Some(polite_will);
    let (mut polite, _) = Client::connect_with(addr, connect).await;
    let heard = recorder.take();
    let [Heard::WillHeld(client, generation, topic, payload, delay)] = &heard[..] else {
        panic!("{heard:?}");
    };
    assert_eq!(
        (client.as_str(), topic.as_str(), &payload[..], *delay),
        ("polite", "wills/polite", &b"gone"[..], 7)
    );
    let polite_generation = *generation;
    polite
        .send(Packet::Disconnect(
            fleetwire_mqtt_codec::Disconnect::default(),
        ))
        .await;
    polite.expect_closed().await;
    wait_for(&recorder, |heard| heard.len() >= 2).await;
    assert_eq!(
        recorder.take(),
        [
            Heard::WillReleased("polite".to_owned(), polite_generation),
            Heard::Ended("polite".to_owned())
        ]
    );
    watcher.expect_silence(Duration::from_millis(100)).await;

    // A connection lost: published here (and to the peers), then released.
    let mut connect = connect_packet("lost", ProtocolVersion::V311, true);
    connect.will = Some(will("wills/lost", b"gone", QoS::AtMostOnce, false));
    let (lost, _) = Client::connect_with(addr, connect).await;
    let heard = recorder.take();
    let [Heard::WillHeld(_, lost_generation, ..)] = &heard[..] else {
        panic!("{heard:?}");
    };
    let lost_generation = *lost_generation;
    assert_ne!(lost_generation, polite_generation);
    drop(lost);
    assert_eq!(watcher.expect_publish().await.payload, &b"gone"[..]);
    wait_for(&recorder, |heard| heard.len() >= 3).await;
    assert_eq!(
        recorder.take(),
        [
            Heard::Published("wills/lost".to_owned(), Bytes::from_static(b"gone")),
            Heard::WillReleased("lost".to_owned(), lost_generation),
            Heard::Ended("lost".to_owned())
        ]
    );

    // No will, nothing held; its (clean) session ends with the connection.
    let plain = Client::connect(addr, "plain").await;
    drop(plain);
    wait_for(&recorder, |heard| !heard.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(recorder.take(), [Heard::Ended("plain".to_owned())]);

    // The will of a client of a dead node, found by the peers: published as a will here.
    let properties = Properties {
        content_type: Some("text/plain".to_owned()),
        ..Properties::default()
    };
    let delivered = broker.publish_peer_will(PeerMessage {
        topic: TopicName::new("wills/orphan").unwrap(),
        payload: Bytes::from_static(b"its node died"),
        qos: QoS::AtMostOnce,
        is_retained: false,
        properties,
    });
    assert_eq!(delivered, 1);
    let orphan = watcher.expect_publish().await;
    assert_eq!(
        (orphan.topic.as_str(), &orphan.payload[..]),
        ("wills/orphan", &b"its node died"[..])
    );
    assert_eq!(
        recorder.take(),
        [Heard::Published(
            "wills/orphan".to_owned(),
            Bytes::from_static(b"its node died")
        )]
    );
}

/// Waits (5 s at most) until what `recorder` heard satisfies `done`.
async fn wait_for(recorder: &Recorder, done: impl Fn(&[Heard]) -> bool) {
    for _ in 0..500 {
        if done(&recorder.0.lock()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not heard: {:?}", recorder.0.lock());
}
