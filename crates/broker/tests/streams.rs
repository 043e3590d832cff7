//! Connections handed to the broker as streams ([`Broker::spawn_streams`]), the way the
//! TLS and WebSocket front-ends hand theirs: served by the same code as TCP, never
//! parked, and their client certificate reaches the authenticator. The streams here are
//! TCP sockets accepted by the test and handed over as plain `Duplex` streams, so the
//! test's client is the same as everywhere else.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetwire_broker::{
    Access, Authenticator, BoxFuture, Broker, BrokerConfig, Credentials, Denial, Hooks, Incoming,
    PeerCertificate, StreamSender,
};
use fleetwire_mqtt_codec::{
    Packet, PacketId, ProtocolVersion, PubRel, QoS, ReasonCode, TopicFilter,
};
use parking_lot::Mutex;
use support::*;
use tokio::net::TcpListener;

/// Accepts TCP connections on a free port and hands each to `streams` as a stream,
/// presenting `certificate` as its client certificate.
async fn front_end(
    broker: &Broker,
    streams: StreamSender,
    certificate: Option<PeerCertificate>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = broker.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let permit = broker.admit_connection(peer.ip()).unwrap();
            let handed = streams.serve(Incoming {
                stream: Box::new(stream),
                peer,
                certificate: certificate.clone(),
                permit,
            });
            assert!(handed, "the stream listener stopped");
        }
    });
    addr
}

/// A broker with a TCP listener and a stream listener, both anonymous.
async fn start_both(config: BrokerConfig) -> (Broker, SocketAddr, SocketAddr) {
    let (broker, tcp) = start(config).await;
    let streams = broker.spawn_streams(Hooks::default());
    let stream = front_end(&broker, streams.sender(), None).await;
    (broker, tcp, stream)
}

#[tokio::test]
async fn messages_flow_both_ways_between_tcp_and_stream_clients_at_every_qos() {
    let (_broker, tcp, stream) = start_both(anonymous()).await;
    let mut over_stream = Client::connect(stream, "over-stream").await;
    over_stream.subscribe("to/stream/#", QoS::ExactlyOnce).await;
    let mut over_tcp = Client::connect(tcp, "over-tcp").await;
    over_tcp.subscribe("to/tcp/#", QoS::ExactlyOnce).await;

    for (qos, id) in [
        (QoS::AtMostOnce, 0),
        (QoS::AtLeastOnce, 1),
        (QoS::ExactlyOnce, 2),
    ] {
        over_tcp
            .publish("to/stream/x", b"a", qos, id + 10, false)
            .await;
        over_stream
            .publish("to/tcp/y", b"b", qos, id + 20, false)
            .await;
        // The publishers' acknowledgements first (the stream's go through its writer).
        for client in [&mut over_tcp, &mut over_stream] {
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => assert!(matches!(client.recv().await, Some(Packet::PubAck(_)))),
                QoS::ExactlyOnce => {}
            }
        }
        for (client, topic, payload) in [
            (&mut over_stream, "to/stream/x", b"a"),
            (&mut over_tcp, "to/tcp/y", b"b"),
        ] {
            let received = expect_publish_among_acks(client).await;
            assert_eq!(received.topic.as_str(), topic);
            assert_eq!(&received.payload[..], payload);
            assert_eq!(received.qos, qos);
            finish_receiving(client, &received).await;
        }
    }
}

/// The next PUBLISH; a QoS 2 publisher's PUBREC on the way is answered with PUBREL.
async fn expect_publish_among_acks(client: &mut Client) -> fleetwire_mqtt_codec::Publish {
    loop {
        match client.recv().await {
            Some(Packet::Publish(publish)) => return publish,
            Some(Packet::PubRec(rec)) => {
                client
                    .send(Packet::PubRel(PubRel::new(rec.packet_id)))
                    .await
            }
            Some(Packet::PubComp(_) | Packet::PubAck(_)) => {}
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// Acknowledges a received message as its QoS asks.
async fn finish_receiving(client: &mut Client, publish: &fleetwire_mqtt_codec::Publish) {
    let Some(packet_id) = publish.packet_id else {
        return;
    };
    match publish.qos {
        QoS::AtLeastOnce => {
            client
                .send(Packet::PubAck(fleetwire_mqtt_codec::PubAck::new(packet_id)))
                .await
        }
        QoS::ExactlyOnce => {
            client
                .send(Packet::PubRec(fleetwire_mqtt_codec::PubRec::new(packet_id)))
                .await;
            loop {
                match client.recv().await {
                    Some(Packet::PubRel(_)) => break,
                    Some(Packet::PubComp(_)) => {}
                    other => panic!("expected PUBREL, got {other:?}"),
                }
            }
            client
                .send(Packet::PubComp(fleetwire_mqtt_codec::PubComp::new(
                    packet_id,
                )))
                .await;
        }
        QoS::AtMostOnce => {}
    }
}

#[tokio::test]
async fn an_idle_stream_client_stays_served_past_the_parking_delay() {
    let (_broker, tcp, stream) = start_both(anonymous()).await;
    let mut idle = Client::connect(stream, "idle").await;
    idle.subscribe("news", QoS::AtLeastOnce).await;
    // Longer than a TCP connection stays unparked.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut publisher = Client::connect(tcp, "publisher").await;
    publisher
        .publish("news", b"late", QoS::AtMostOnce, 0, false)
        .await;
    assert_eq!(&idle.expect_publish().await.payload[..], b"late");
    idle.send(Packet::PingReq).await;
    assert!(matches!(idle.recv().await, Some(Packet::PingResp)));
}

#[tokio::test]
async fn a_silent_stream_client_is_closed_at_its_keep_alive_and_its_will_published() {
    let (_broker, tcp, stream) = start_both(anonymous()).await;
    let mut watcher = Client::connect(tcp, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtMostOnce).await;
    let mut connect = connect_packet("silent", ProtocolVersion::V5, true);
    connect.keep_alive = 1;
    connect.will = Some(will("wills/silent", b"gone", QoS::AtMostOnce, false));
    let (mut silent, connack) = Client::connect_with(stream, connect).await;
    assert!(matches!(connack, Packet::ConnAck(ref ack) if ack.code == ReasonCode::SUCCESS));
    let closing = silent.expect_closed().await;
    assert!(
        matches!(closing.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::KEEP_ALIVE_TIMEOUT),
        "{closing:?}"
    );
    assert_eq!(&watcher.expect_publish().await.payload[..], b"gone");
}

/// Admits a certificate whose common name is `dev-1`, with access to `devices/dev-1/#`;
/// records what it was asked.
struct CertificateLogins(Mutex<Vec<(Option<String>, Option<PeerCertificate>)>>);

impl Authenticator for CertificateLogins {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Access, Denial>> {
        self.0.lock().push((
            credentials.username.map(str::to_owned),
            credentials.certificate.cloned(),
        ));
        let admitted = credentials
            .certificate
            .is_some_and(|certificate| certificate.common_name == "dev-1");
        Box::pin(async move {
            if admitted {
                let own = TopicFilter::new("devices/dev-1/#").unwrap();
                Ok(Access::user("dev-1", [own.clone()], [own]))
            } else {
                Err(Denial::NotAuthorized)
            }
        })
    }

    fn presence(&self, _user: &str, _online: bool) {}
}

#[tokio::test]
async fn a_client_certificate_reaches_the_authenticator_and_stands_for_a_user_name() {
    let logins = Arc::new(CertificateLogins(Mutex::new(Vec::new())));
    let broker = Broker::new(BrokerConfig::default());
    let hooks = Hooks {
        authenticator: Some(Arc::clone(&logins) as Arc<dyn Authenticator>),
        ..Hooks::default()
    };
    let streams = broker.spawn_streams(hooks);
    let certificate = |name: &str| PeerCertificate {
        common_name: name.to_owned(),
        fingerprint: [7; 32],
    };
    let trusted = front_end(&broker, streams.sender(), Some(certificate("dev-1"))).await;
    let stranger = front_end(&broker, streams.sender(), Some(certificate("dev-2"))).await;
    let without = front_end(&broker, streams.sender(), None).await;

    // No user name, no password: the certificate logs the client in, with its access.
    let (mut client, connack) =
        Client::connect_with(trusted, connect_packet("c1", ProtocolVersion::V311, true)).await;
    assert!(matches!(connack, Packet::ConnAck(ref ack) if ack.code == ReasonCode::SUCCESS));
    client
        .send(Packet::Subscribe(fleetwire_mqtt_codec::Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            filters: vec![(
                TopicFilter::new("devices/dev-2/#").unwrap(),
                fleetwire_mqtt_codec::SubscriptionOptions::with_qos(QoS::AtMostOnce),
            )],
            properties: Default::default(),
        }))
        .await;
    match client.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(ack.reasons[0], ReasonCode::UNSPECIFIED_ERROR),
        other => panic!("expected SUBACK, got {other:?}"),
    }

    let (_, connack) =
        Client::connect_with(stranger, connect_packet("c2", ProtocolVersion::V5, true)).await;
    assert!(matches!(connack, Packet::ConnAck(ref ack) if ack.code == ReasonCode::NOT_AUTHORIZED));
    // Without a certificate or a user name a client is anonymous, which this broker refuses
    // without asking the authenticator.
    let (_, connack) =
        Client::connect_with(without, connect_packet("c3", ProtocolVersion::V5, true)).await;
    assert!(matches!(connack, Packet::ConnAck(ref ack) if ack.code == ReasonCode::NOT_AUTHORIZED));

    let asked = logins.0.lock().clone();
    assert_eq!(
        asked,
        vec![
            (None, Some(certificate("dev-1"))),
            (None, Some(certificate("dev-2")))
        ]
    );
}
