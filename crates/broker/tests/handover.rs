//! A session handed from one broker to another (two nodes of a cluster, here in one
//! process): released on one, with its connection told it was taken over, adopted on
//! the other with its subscriptions, queue and QoS 2 state.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fleetwire_broker::Broker;
use fleetwire_mqtt_codec::{Packet, ProtocolVersion, PubRec, QoS, ReasonCode};
use support::{Client, anonymous, connect_packet};

fn persistent(client_id: &str) -> fleetwire_mqtt_codec::Connect {
    let mut connect = connect_packet(client_id, ProtocolVersion::V5, false);
    connect.properties.session_expiry_interval = Some(3600);
    connect
}

async fn connect_v5(addr: std::net::SocketAddr, client_id: &str) -> (Client, bool) {
    let (client, connack) = Client::connect_with(addr, persistent(client_id)).await;
    match connack {
        Packet::ConnAck(ack) => {
            assert_eq!(ack.code, ReasonCode::SUCCESS);
            (client, ack.session_present)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn a_released_session_resumes_on_the_node_that_adopts_it() {
    let (first, first_addr) = support::start(anonymous()).await;
    let (second, second_addr) = support::start(anonymous()).await;

    let (mut device, _) = connect_v5(first_addr, "device").await;
    device.subscribe("cmd/#", QoS::ExactlyOnce).await;
    let mut publisher = Client::connect(first_addr, "publisher").await;
    // One QoS 2 message in flight, answered PUBREC (its PUBREL is what remains), then
    // the connection is taken away.
    publisher
        .publish("cmd/a", b"in flight", QoS::ExactlyOnce, 1, false)
        .await;
    let in_flight = device.expect_publish().await;
    let packet_id = in_flight.packet_id.unwrap();
    device
        .send(Packet::PubRec(PubRec {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        }))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    // Let the broker take the PUBREC before the release.
    match device.recv().await {
        Some(Packet::PubRel(release)) => assert_eq!(release.packet_id, packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }

    let state = first.release_session("device");
    assert!(!state.is_empty());
    match device.recv().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::SESSION_TAKEN_OVER);
        }
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    // Gone from the first node: its messages no longer queue there.
    publisher
        .publish("cmd/b", b"lost here", QoS::AtLeastOnce, 2, false)
        .await;
    match publisher.recv().await {
        Some(Packet::PubAck(_)) => {}
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(first.release_session("device"), bytes::Bytes::new());

    second.adopt_session(&state).unwrap();
    // Queued while nobody is connected, on the adopting node.
    let mut other_publisher = Client::connect(second_addr, "other-publisher").await;
    for n in 0..3u16 {
        other_publisher
            .publish(
                "cmd/c",
                format!("queued {n}").as_bytes(),
                QoS::AtLeastOnce,
                n + 1,
                false,
            )
            .await;
        assert!(matches!(
            other_publisher.recv().await,
            Some(Packet::PubAck(_))
        ));
    }

    let (mut device, is_present) = connect_v5(second_addr, "device").await;
    assert!(is_present, "the adopted session is resumed");
    // First the PUBREL still owed (same packet id), then the queue in order.
    match device.recv().await {
        Some(Packet::PubRel(release)) => assert_eq!(release.packet_id, packet_id),
        other => panic!("expected the PUBREL again, got {other:?}"),
    }
    for n in 0..3 {
        let message = device.expect_publish().await;
        assert_eq!(&message.payload[..], format!("queued {n}").as_bytes());
    }
    device.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn releasing_a_clean_session_closes_its_connection_and_hands_over_nothing() {
    let broker = Broker::new(anonymous());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = broker
        .spawn(listener, fleetwire_broker::Hooks::default())
        .unwrap()
        .local_addr();
    let (mut client, connack) =
        Client::connect_with(addr, connect_packet("clean", ProtocolVersion::V5, true)).await;
    assert!(matches!(connack, Packet::ConnAck(_)));
    client.subscribe("x", QoS::AtLeastOnce).await;
    assert!(broker.release_session("clean").is_empty());
    match client.recv().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::SESSION_TAKEN_OVER);
        }
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    assert_eq!(broker.stats_snapshot().subscriptions, 0);
}
