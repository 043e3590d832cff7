//! MQTT 5.0 negotiation and flow over real sockets: topic aliases both ways, receive
//! maximum, the client's maximum packet size, server keep alive, request / response,
//! will delay, `AUTH`, and server redirection.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetwire_broker::{
    Access, Authenticator, BoxFuture, Broker, BrokerConfig, Credentials, Denial, Hooks, Redirection,
};
use fleetwire_mqtt_codec::{
    Auth, ConnAck, Connect, Packet, PacketId, Properties, ProtocolVersion, PubAck, PubRel, Publish,
    QoS, ReasonCode, Subscribe, SubscriptionOptions, TopicFilter, TopicName,
};
use support::{Client, anonymous, connect_packet, publish, start, start_with_hooks, will};

const SHORT: Duration = Duration::from_millis(300);

fn v5(client_id: &str) -> Connect {
    connect_packet(client_id, ProtocolVersion::V5, true)
}

async fn connect(addr: SocketAddr, connect: Connect) -> (Client, ConnAck) {
    match Client::connect_with(addr, connect).await {
        (client, Packet::ConnAck(ack)) => (client, ack),
        (_, other) => panic!("expected CONNACK, got {other:?}"),
    }
}

async fn connected(addr: SocketAddr, connect: Connect) -> Client {
    let (client, ack) = self::connect(addr, connect).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS, "{ack:?}");
    client
}

/// A PUBLISH with a topic alias (and an empty topic when `topic` is empty).
fn aliased(topic: &str, alias: u16, qos: QoS, packet_id: u16) -> Packet {
    let mut message = if topic.is_empty() {
        let mut message = publish("x", b"by alias", qos, packet_id, false);
        message.topic = TopicName::empty();
        message
    } else {
        publish(topic, b"by alias", qos, packet_id, false)
    };
    message.properties.topic_alias = Some(alias);
    Packet::Publish(message)
}

/// Reads until the broker closes; the reason code of its `DISCONNECT`.
async fn disconnect_reason(client: &mut Client) -> Option<ReasonCode> {
    client
        .expect_closed()
        .await
        .into_iter()
        .find_map(|packet| match packet {
            Packet::Disconnect(disconnect) => Some(disconnect.reason),
            _ => None,
        })
}

/// Skips acknowledgements until the next PUBLISH.
async fn next_publish(client: &mut Client) -> Publish {
    loop {
        match client.recv().await {
            Some(Packet::Publish(publish)) => return publish,
            Some(Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)) => {}
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn connack_announces_what_the_broker_supports() {
    let (_broker, addr) = start(anonymous()).await;
    let (_client, ack) = connect(addr, v5("announce")).await;
    let properties = &ack.properties;
    assert_eq!(properties.topic_alias_maximum, Some(64));
    assert_eq!(properties.receive_maximum, Some(1024));
    assert_eq!(
        properties.server_keep_alive, None,
        "the client's 60 s is kept"
    );
    assert_eq!(properties.response_information, None, "not asked for");
    // Absent means available: wildcards, subscription identifiers, shared
    // subscriptions, retain and QoS 2 are all supported.
    assert_eq!(properties.wildcard_subscription_available, None);
    assert_eq!(properties.subscription_identifier_available, None);
    assert_eq!(properties.shared_subscription_available, None);
    assert_eq!(properties.retain_available, None);
    assert_eq!(properties.maximum_qos, None);

    let config = BrokerConfig {
        topic_alias_maximum: 0,
        ..anonymous()
    };
    let (_broker, addr) = start(config).await;
    let (_client, ack) = connect(addr, v5("no-aliases")).await;
    assert_eq!(ack.properties.topic_alias_maximum, None);
}

#[tokio::test]
async fn an_inbound_topic_alias_stands_for_its_topic_until_the_connection_ends() {
    let (_broker, addr) = start(anonymous()).await;
    let mut subscriber = Client::connect(addr, "alias-sub").await;
    subscriber.subscribe("alias/in", QoS::AtLeastOnce).await;
    let mut persistent = v5("alias-pub");
    persistent.properties.session_expiry_interval = Some(60);
    let mut publisher = connected(addr, persistent.clone()).await;

    publisher
        .send(aliased("alias/in", 5, QoS::AtLeastOnce, 1))
        .await;
    publisher.send(aliased("", 5, QoS::AtLeastOnce, 2)).await;
    publisher.send(aliased("", 5, QoS::AtMostOnce, 0)).await;
    for _ in 0..3 {
        let message = subscriber.expect_publish().await;
        assert_eq!(message.topic.as_str(), "alias/in");
        assert_eq!(&message.payload[..], b"by alias");
        if let Some(packet_id) = message.packet_id {
            subscriber
                .send(Packet::PubAck(PubAck::new(packet_id)))
                .await;
        }
    }
    drop(publisher);

    // The same session on a new connection: the alias is gone (MQTT-3.3.2-7).
    persistent.clean_start = false;
    let mut again = connected(addr, persistent).await;
    again.send(aliased("", 5, QoS::AtMostOnce, 0)).await;
    assert_eq!(
        disconnect_reason(&mut again).await,
        Some(ReasonCode::PROTOCOL_ERROR)
    );
    subscriber.expect_silence(SHORT).await;
}

#[tokio::test]
async fn invalid_inbound_topic_aliases_close_the_connection() {
    let (_broker, addr) = start(BrokerConfig {
        topic_alias_maximum: 4,
        ..anonymous()
    })
    .await;
    let cases = [
        (
            aliased("t", 5, QoS::AtMostOnce, 0),
            ReasonCode::TOPIC_ALIAS_INVALID,
        ),
        (
            aliased("t", 0, QoS::AtMostOnce, 0),
            ReasonCode::TOPIC_ALIAS_INVALID,
        ),
        (
            aliased("", 3, QoS::AtMostOnce, 0),
            ReasonCode::PROTOCOL_ERROR,
        ),
    ];
    for (index, (packet, expected)) in cases.into_iter().enumerate() {
        let mut client = connected(addr, v5(&format!("bad-alias-{index}"))).await;
        client.send(packet).await;
        assert_eq!(
            disconnect_reason(&mut client).await,
            Some(expected),
            "case {index}"
        );
    }
    let (_broker, addr) = start(BrokerConfig {
        topic_alias_maximum: 0,
        ..anonymous()
    })
    .await;
    let mut client = connected(addr, v5("aliases-off")).await;
    client.send(aliased("t", 1, QoS::AtMostOnce, 0)).await;
    assert_eq!(
        disconnect_reason(&mut client).await,
        Some(ReasonCode::TOPIC_ALIAS_INVALID)
    );
}

#[tokio::test]
async fn outbound_aliases_are_bound_once_then_sent_with_an_empty_topic_per_connection() {
    let (_broker, addr) = start(anonymous()).await;
    let mut accepting = v5("alias-out");
    accepting.properties.topic_alias_maximum = Some(1);
    accepting.properties.session_expiry_interval = Some(60);
    let mut subscriber = connected(addr, accepting.clone()).await;
    subscriber.subscribe("out/+", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(addr, "alias-out-pub").await;
    for (index, topic) in ["out/a", "out/a", "out/b", "out/a"].into_iter().enumerate() {
        let packet_id = u16::try_from(index + 1).unwrap();
        publisher
            .publish(topic, b"m", QoS::AtLeastOnce, packet_id, false)
            .await;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let message = subscriber.expect_publish().await;
        subscriber
            .send(Packet::PubAck(PubAck::new(message.packet_id.unwrap())))
            .await;
        seen.push((
            message.topic.as_str().to_owned(),
            message.properties.topic_alias,
        ));
    }
    // One alias: "out/b" takes it over, then "out/a" takes it back, each with its topic.
    let expected = [
        ("out/a", Some(1)),
        ("", Some(1)),
        ("out/b", Some(1)),
        ("out/a", Some(1)),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(topic, alias)| ((*topic).to_owned(), *alias))
        .collect();
    assert_eq!(seen, expected);
    drop(subscriber);

    // A new connection to the same session starts with no aliases.
    accepting.clean_start = false;
    let mut again = connected(addr, accepting).await;
    publisher
        .publish("out/a", b"m", QoS::AtLeastOnce, 9, false)
        .await;
    let message = next_publish(&mut again).await;
    assert_eq!(
        (message.topic.as_str(), message.properties.topic_alias),
        ("out/a", Some(1))
    );

    // A client that did not ask for aliases gets none.
    let mut plain = connected(addr, v5("alias-none")).await;
    plain.subscribe("out/+", QoS::AtMostOnce).await;
    for _ in 0..2 {
        publisher
            .publish("out/c", b"m", QoS::AtMostOnce, 0, false)
            .await;
        let message = plain.expect_publish().await;
        assert_eq!(
            (message.topic.as_str(), message.properties.topic_alias),
            ("out/c", None)
        );
    }
}

#[tokio::test]
async fn more_unacknowledged_publishes_than_the_receive_maximum_disconnect_with_0x93() {
    let (_broker, addr) = start(BrokerConfig {
        receive_maximum: 2,
        ..anonymous()
    })
    .await;
    // QoS 2: in flight until PUBREL. Releasing one makes room for another.
    let mut client = connected(addr, v5("recv-max-2")).await;
    for packet_id in [1, 2] {
        client
            .publish("rm/t", b"m", QoS::ExactlyOnce, packet_id, false)
            .await;
        assert!(matches!(client.recv().await, Some(Packet::PubRec(_))));
    }
    // Sent again before its PUBREL, a message is still one in flight, not two.
    let mut duplicate = publish("rm/t", b"m", QoS::ExactlyOnce, 2, false);
    duplicate.dup = true;
    client.send(Packet::Publish(duplicate)).await;
    assert!(matches!(client.recv().await, Some(Packet::PubRec(_))));
    client
        .send(Packet::PubRel(PubRel::new(PacketId::new(1).unwrap())))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubComp(_))));
    client
        .publish("rm/t", b"m", QoS::ExactlyOnce, 3, false)
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubRec(_))));
    client
        .publish("rm/t", b"m", QoS::ExactlyOnce, 4, false)
        .await;
    assert_eq!(
        disconnect_reason(&mut client).await,
        Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );

    // QoS 1: in flight until its PUBACK leaves; three in one write are one too many.
    let mut client = connected(addr, v5("recv-max-1")).await;
    let mut burst = bytes::BytesMut::new();
    for packet_id in 1..=3 {
        let packet = Packet::Publish(publish("rm/t", b"m", QoS::AtLeastOnce, packet_id, false));
        fleetwire_mqtt_codec::encode(&packet, ProtocolVersion::V5, &mut burst).unwrap();
    }
    client.send_bytes(&burst).await;
    assert_eq!(
        disconnect_reason(&mut client).await,
        Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );

    // A 3.1.1 client was told no receive maximum.
    let mut client = Client::connect(addr, "recv-max-v3").await;
    for packet_id in 1..=3 {
        client
            .publish("rm/t", b"m", QoS::ExactlyOnce, packet_id, false)
            .await;
        assert!(matches!(client.recv().await, Some(Packet::PubRec(_))));
    }
}

#[tokio::test]
async fn a_client_busy_answering_when_it_is_disconnected_still_reads_why() {
    let (_broker, addr) = start(BrokerConfig {
        receive_maximum: 2,
        ..anonymous()
    })
    .await;
    let mut client = connected(addr, v5("busy-answering")).await;
    let mut burst = bytes::BytesMut::new();
    for packet_id in 1..=3 {
        let packet = Packet::Publish(publish("rm/t", b"m", QoS::ExactlyOnce, packet_id, false));
        fleetwire_mqtt_codec::encode(&packet, ProtocolVersion::V5, &mut burst).unwrap();
    }
    client.send_bytes(&burst).await;
    // Like a client with a receive loop: every PUBREC is answered, a little later.
    loop {
        match client.recv().await {
            Some(Packet::PubRec(rec)) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut release = bytes::BytesMut::new();
                let packet = Packet::PubRel(PubRel::new(rec.packet_id));
                fleetwire_mqtt_codec::encode(&packet, ProtocolVersion::V5, &mut release).unwrap();
                tokio::io::AsyncWriteExt::write_all(&mut client.stream, &release)
                    .await
                    .expect("the broker still reads while it closes");
            }
            Some(Packet::Disconnect(disconnect)) => {
                assert_eq!(disconnect.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                break;
            }
            other => panic!("expected PUBREC or DISCONNECT, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_message_larger_than_the_client_accepts_is_dropped_counted_and_does_not_block_the_window()
{
    let (broker, addr) = start(BrokerConfig {
        max_inflight: 1,
        ..anonymous()
    })
    .await;
    let mut small = v5("small-packets");
    small.properties.maximum_packet_size = Some(64);
    let mut subscriber = connected(addr, small).await;
    subscriber.subscribe("big/t", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(addr, "big-pub").await;
    publisher
        .publish("big/t", &[b'x'; 100], QoS::AtLeastOnce, 1, false)
        .await;
    publisher
        .publish("big/t", b"fits", QoS::AtLeastOnce, 2, false)
        .await;
    let message = subscriber.expect_publish().await;
    assert_eq!(&message.payload[..], b"fits");
    assert_eq!(broker.stats_snapshot().messages_too_large, 1);
}

#[tokio::test]
async fn the_server_keep_alive_caps_a_v5_clients_keep_alive() {
    let (_broker, addr) = start(BrokerConfig {
        max_keep_alive: 1,
        ..anonymous()
    })
    .await;
    let (mut client, ack) = connect(addr, v5("keep-alive-long")).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    let started = Instant::now();
    assert_eq!(
        disconnect_reason(&mut client).await,
        Some(ReasonCode::KEEP_ALIVE_TIMEOUT)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "closed after {waited:?}, expected 1.5 s"
    );

    let mut none = v5("keep-alive-none");
    none.keep_alive = 0;
    let (_client, ack) = connect(addr, none).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));

    let mut within = v5("keep-alive-short");
    within.keep_alive = 1;
    let (_client, ack) = connect(addr, within).await;
    assert_eq!(ack.properties.server_keep_alive, None);

    // 3.1.1 has no way to be told: its own keep-alive holds.
    let mut v3 = Client::connect(addr, "keep-alive-v3").await;
    v3.expect_silence(Duration::from_secs(2)).await;
}

/// Logs everyone in as the device of its user name, with the platform's device ACL.
struct Devices;

impl Authenticator for Devices {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Access, Denial>> {
        Box::pin(async move {
            let id = credentials.username.unwrap_or_default();
            let filter = |text: String| TopicFilter::new(text).unwrap();
            Ok(Access::user(
                id,
                [filter(format!("devices/{id}/+/#"))],
                [filter(format!("devices/{id}/commands/#"))],
            ))
        })
    }

    fn presence(&self, _user: &str, _online: bool) {}
}

#[tokio::test]
async fn response_information_is_a_prefix_the_client_may_subscribe_to() {
    let (_broker, addr) = start(anonymous()).await;
    let mut asking = v5("requester");
    asking.properties.request_response_information = Some(1);
    let (mut requester, ack) = connect(addr, asking).await;
    let prefix = ack.properties.response_information.unwrap();
    assert_eq!(prefix, "$response/requester/");

    // The responder answers on the response topic with the correlation data it got;
    // every property the broker does not act on passes through.
    let mut responder = connected(addr, v5("responder")).await;
    responder
        .subscribe("service/request", QoS::AtLeastOnce)
        .await;
    requester
        .subscribe(&format!("{prefix}#"), QoS::AtLeastOnce)
        .await;
    let mut request = publish("service/request", b"ping", QoS::AtLeastOnce, 1, false);
    request.properties = Properties {
        response_topic: Some(TopicName::new(format!("{prefix}ping")).unwrap()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01id")),
        content_type: Some("text/plain".into()),
        payload_format_indicator: Some(1),
        user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
        ..Properties::default()
    };
    requester.send(Packet::Publish(request.clone())).await;
    let received = next_publish(&mut responder).await;
    assert_eq!(received.properties, request.properties);
    let mut response = publish(
        received
            .properties
            .response_topic
            .as_ref()
            .unwrap()
            .as_str(),
        b"pong",
        QoS::AtLeastOnce,
        1,
        false,
    );
    response.properties.correlation_data = received.properties.correlation_data.clone();
    responder.send(Packet::Publish(response)).await;
    let answer = next_publish(&mut requester).await;
    assert_eq!(answer.topic.as_str(), "$response/requester/ping");
    assert_eq!(
        answer.properties.correlation_data.as_deref(),
        Some(&b"\x00\x01id"[..])
    );

    // A device may only subscribe within its own topics: it is offered no prefix.
    let hooks = Hooks {
        authenticator: Some(Arc::new(Devices)),
        ingest: None,
    };
    let (_broker, addr) = start_with_hooks(BrokerConfig::default(), hooks).await;
    let mut device = v5("d1");
    device.username = Some("d1".into());
    device.properties.request_response_information = Some(1);
    let (_device, ack) = connect(addr, device).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert_eq!(ack.properties.response_information, None);
}

/// A 5.0 CONNECT with a will on `topic` that waits `delay` seconds, in a session that
/// lasts `expiry` seconds after the connection.
fn with_delayed_will(client_id: &str, topic: &str, delay: u32, expiry: u32) -> Connect {
    let mut connect = v5(client_id);
    let mut will = will(topic, b"gone", QoS::AtLeastOnce, false);
    will.properties.will_delay_interval = Some(delay);
    connect.will = Some(will);
    connect.properties.session_expiry_interval = Some(expiry);
    connect
}

async fn watcher(addr: SocketAddr, client_id: &str, topic: &str) -> Client {
    let mut watcher = Client::connect(addr, client_id).await;
    watcher.subscribe(topic, QoS::AtLeastOnce).await;
    watcher
}

/// How long after now the will arrives at `watcher`.
async fn will_arrives(watcher: &mut Client) -> Duration {
    let started = Instant::now();
    let message = watcher.expect_publish().await;
    assert_eq!(&message.payload[..], b"gone");
    started.elapsed()
}

#[tokio::test]
async fn a_delayed_will_is_published_when_its_delay_passes() {
    let (_broker, addr) = start(anonymous()).await;
    let mut watcher = watcher(addr, "will-watch-1", "wills/1").await;
    let client = connected(addr, with_delayed_will("will-1", "wills/1", 1, 60)).await;
    drop(client);
    let waited = will_arrives(&mut watcher).await;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "will after {waited:?}, expected 1 s"
    );
}

#[tokio::test]
async fn a_delayed_will_is_published_when_the_session_ends_first() {
    let (_broker, addr) = start(anonymous()).await;
    // Session expiry 1 s, will delay 60 s: the will goes with the session.
    let mut watcher = watcher(addr, "will-watch-2", "wills/2").await;
    let client = connected(addr, with_delayed_will("will-2", "wills/2", 60, 1)).await;
    drop(client);
    let waited = will_arrives(&mut watcher).await;
    assert!(waited < Duration::from_secs(3), "will after {waited:?}");

    // No session after the connection: the will goes at once.
    let client = connected(addr, with_delayed_will("will-3", "wills/2", 60, 0)).await;
    drop(client);
    let waited = will_arrives(&mut watcher).await;
    assert!(waited < Duration::from_millis(500), "will after {waited:?}");

    // A clean start ends the session that held the will: it goes then.
    let client = connected(addr, with_delayed_will("will-4", "wills/2", 60, 60)).await;
    drop(client);
    watcher.expect_silence(SHORT).await;
    let _replaced = connected(addr, v5("will-4")).await;
    let waited = will_arrives(&mut watcher).await;
    assert!(waited < Duration::from_millis(500), "will after {waited:?}");
}

#[tokio::test]
async fn a_delayed_will_is_dropped_when_the_session_is_resumed_in_time() {
    let (_broker, addr) = start(anonymous()).await;
    let mut watcher = watcher(addr, "will-watch-5", "wills/5").await;
    let connect = with_delayed_will("will-5", "wills/5", 1, 60);
    let client = connected(addr, connect.clone()).await;
    drop(client);
    let mut resume = connect.clone();
    resume.clean_start = false;
    resume.will = None;
    let _resumed = connected(addr, resume.clone()).await;
    watcher.expect_silence(Duration::from_millis(1500)).await;

    // Taken over by a connection that resumes the session: the old connection's will
    // is not sent either.
    let mut first = connect;
    first.client_id = "will-6".into();
    let _old = connected(addr, first.clone()).await;
    resume.client_id = "will-6".into();
    let _new = connected(addr, resume).await;
    watcher.expect_silence(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn connect_with_an_authentication_method_is_refused_and_auth_without_one_is_a_protocol_error()
{
    let (_broker, addr) = start(anonymous()).await;
    let mut enhanced = v5("scram");
    enhanced.properties.authentication_method = Some("SCRAM-SHA-256".into());
    let (mut client, ack) = connect(addr, enhanced).await;
    assert_eq!(ack.code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert!(client.expect_closed().await.is_empty());

    let mut client = connected(addr, v5("auth-later")).await;
    client.send(Packet::Auth(Auth::default())).await;
    assert_eq!(
        disconnect_reason(&mut client).await,
        Some(ReasonCode::PROTOCOL_ERROR)
    );
}

#[tokio::test]
async fn subscription_identifiers_of_every_matching_subscription_are_delivered() {
    let (_broker, addr) = start(anonymous()).await;
    let mut client = connected(addr, v5("sub-ids")).await;
    for (packet_id, filter, identifier) in [(1, "ids/+", 7), (2, "ids/#", 300_000)] {
        client
            .send(Packet::Subscribe(Subscribe {
                packet_id: PacketId::new(packet_id).unwrap(),
                filters: vec![(
                    TopicFilter::new(filter).unwrap(),
                    SubscriptionOptions::with_qos(QoS::AtMostOnce),
                )],
                properties: Properties {
                    subscription_identifiers: vec![identifier],
                    ..Properties::default()
                },
            }))
            .await;
        assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    }
    let mut publisher = Client::connect(addr, "sub-ids-pub").await;
    publisher
        .publish("ids/x", b"m", QoS::AtMostOnce, 0, false)
        .await;
    let mut identifiers = client
        .expect_publish()
        .await
        .properties
        .subscription_identifiers;
    identifiers.sort_unstable();
    assert_eq!(identifiers, [7, 300_000]);
}

async fn expect_redirect(addr: SocketAddr, version: ProtocolVersion, expected: ReasonCode) {
    let (mut client, connack) =
        Client::connect_with(addr, connect_packet("latecomer", version, true)).await;
    match connack {
        Packet::ConnAck(ack) if version.is_v5() => {
            assert_eq!(ack.code, expected);
            assert_eq!(
                ack.properties.server_reference.as_deref(),
                Some("other.example:1883")
            );
        }
        // 3.1.1 can only say "server unavailable".
        Packet::ConnAck(ack) => assert_eq!(ack.code, ReasonCode::SERVER_UNAVAILABLE),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert!(client.expect_closed().await.is_empty());
}

async fn until_parked(broker: &Broker, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.stats_snapshot().clients_parked < count {
        assert!(Instant::now() < deadline, "connections did not park");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redirection_sends_connected_and_new_clients_to_another_server() {
    let (broker, addr) = start(anonymous()).await;
    let mut running = connected(addr, v5("busy")).await;
    running.subscribe("keep/busy", QoS::AtMostOnce).await;
    let mut idle = connected(addr, v5("idle")).await;
    let mut v3 = Client::connect(addr, "old-client").await;
    // The idle ones park; the redirection reaches them in the lot too.
    until_parked(&broker, 3).await;

    let redirection = Redirection {
        server_reference: "other.example:1883".into(),
        is_permanent: false,
    };
    assert_eq!(broker.redirect_all(redirection.clone()), 3);
    for client in [&mut running, &mut idle] {
        let closing = client.expect_closed().await;
        match closing.as_slice() {
            [Packet::Disconnect(disconnect)] => {
                assert_eq!(disconnect.reason, ReasonCode::USE_ANOTHER_SERVER);
                assert_eq!(
                    disconnect.properties.server_reference.as_deref(),
                    Some("other.example:1883")
                );
            }
            other => panic!("expected one DISCONNECT, got {other:?}"),
        }
    }
    assert!(
        v3.expect_closed().await.is_empty(),
        "3.1.1: closed silently"
    );
    expect_redirect(addr, ProtocolVersion::V5, ReasonCode::USE_ANOTHER_SERVER).await;
    expect_redirect(addr, ProtocolVersion::V311, ReasonCode::SERVER_UNAVAILABLE).await;

    broker.redirect_all(Redirection {
        is_permanent: true,
        ..redirection
    });
    expect_redirect(addr, ProtocolVersion::V5, ReasonCode::SERVER_MOVED).await;

    broker.stop_redirecting();
    connected(addr, v5("welcome-back")).await;
}
