//! MQTT over WebSocket through the real `/mqtt` route and the real broker: a packet split
//! over frames and several packets in one frame are read as one byte stream, the
//! subprotocol is `mqtt`, a text frame ends the connection, and messages flow between a
//! WebSocket client and a TCP client. The WebSocket client is tokio-tungstenite.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use fleetwire_broker::{Broker, BrokerConfig, Hooks, Limits};
use fleetwire_mqtt_codec::{
    Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions, TopicFilter, TopicName, decode, encode,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(5);

/// A broker with a TCP listener and the `/mqtt` route on an HTTP server; their addresses.
async fn start() -> (SocketAddr, SocketAddr) {
    let broker = Broker::new(BrokerConfig {
        allow_anonymous: true,
        limits: Limits::none(),
        ..BrokerConfig::default()
    });
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = broker.spawn(tcp, Hooks::default()).unwrap().local_addr();
    let streams = broker.spawn_streams(Hooks::default());
    let router = fleetwire_transport::websocket::router(broker.clone(), streams.sender(), 1 << 20);
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            http,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    // The stream listener's task runs on (detached) while the router holds a sender.
    drop(streams);
    (tcp_addr, http_addr)
}

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn open(http: SocketAddr, subprotocol: Option<&str>) -> (Socket, Option<String>) {
    let mut request = format!("ws://{http}/mqtt").into_client_request().unwrap();
    if let Some(protocol) = subprotocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
    }
    let stream = TcpStream::connect(http).await.unwrap();
    let (socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|value| value.to_str().unwrap().to_owned());
    (socket, chosen)
}

fn bytes_of(packets: &[Packet], version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    for packet in packets {
        encode(packet, version, &mut out).unwrap();
    }
    out.to_vec()
}

fn connect(client_id: &str, version: ProtocolVersion) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 30,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }))
}

fn subscribe(filter: &str) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        filters: vec![(
            TopicFilter::new(filter).unwrap(),
            SubscriptionOptions::with_qos(QoS::AtLeastOnce),
        )],
        properties: Properties::default(),
    })
}

fn publish(topic: &str, payload: &[u8], qos: QoS, id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::new(topic).unwrap(),
        packet_id: PacketId::new(id).filter(|_| qos != QoS::AtMostOnce),
        payload: bytes::Bytes::copy_from_slice(payload),
        properties: Properties::default(),
    })
}

/// Reads binary frames until `count` packets were decoded from them (in whatever way the
/// server framed them).
async fn receive(socket: &mut Socket, version: ProtocolVersion, count: usize) -> Vec<Packet> {
    let mut buffer = BytesMut::new();
    let mut packets = Vec::new();
    while packets.len() < count {
        while let Some(packet) = decode(&mut buffer, version, 1 << 24).unwrap() {
            packets.push(packet);
        }
        if packets.len() >= count {
            break;
        }
        match tokio::time::timeout(WAIT, socket.next()).await.unwrap() {
            Some(Ok(Message::Binary(bytes))) => buffer.extend_from_slice(&bytes),
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
    packets
}

#[tokio::test]
async fn packets_split_over_frames_and_packed_in_one_frame_are_one_byte_stream() {
    let (tcp, http) = start().await;
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let (mut socket, chosen) = open(http, Some("mqtt")).await;
        assert_eq!(chosen.as_deref(), Some("mqtt"));
        // CONNECT in three frames, cut anywhere.
        let bytes = bytes_of(&[connect("ws-client", version)], version);
        for piece in [&bytes[..1], &bytes[1..5], &bytes[5..]] {
            socket
                .send(Message::Binary(piece.to_vec().into()))
                .await
                .unwrap();
        }
        let connack = receive(&mut socket, version, 1).await;
        assert!(
            matches!(&connack[..], [Packet::ConnAck(ack)] if ack.code.0 == 0),
            "{connack:?}"
        );
        // SUBSCRIBE and a PUBLISH to itself in one frame.
        let both = bytes_of(
            &[
                subscribe("ws/#"),
                publish("ws/self", b"hello", QoS::AtLeastOnce, 2),
            ],
            version,
        );
        socket.send(Message::Binary(both.into())).await.unwrap();
        let answers = receive(&mut socket, version, 3).await;
        assert!(
            answers
                .iter()
                .any(|packet| matches!(packet, Packet::SubAck(_))),
            "{answers:?}"
        );
        assert!(
            answers
                .iter()
                .any(|packet| matches!(packet, Packet::PubAck(_))),
            "{answers:?}"
        );
        assert!(
            answers
                .iter()
                .any(|packet| matches!(packet, Packet::Publish(p) if &p.payload[..] == b"hello")),
            "{answers:?}"
        );

        // A TCP client's message reaches the WebSocket client, a large one too.
        let mut tcp_client = TcpStream::connect(tcp).await.unwrap();
        tcp_client
            .write_all(&bytes_of(&[connect("tcp-client", version)], version))
            .await
            .unwrap();
        let mut ack = [0u8; 64];
        let _ = tcp_client.read(&mut ack).await.unwrap();
        let large = vec![7u8; 300_000];
        tcp_client
            .write_all(&bytes_of(
                &[publish("ws/large", &large, QoS::AtMostOnce, 0)],
                version,
            ))
            .await
            .unwrap();
        let delivered = receive(&mut socket, version, 1).await;
        assert!(
            matches!(&delivered[..], [Packet::Publish(p)] if p.payload.len() == large.len()),
            "{} packets",
            delivered.len()
        );
        socket.close(None).await.unwrap();
    }
}

#[tokio::test]
async fn a_text_frame_ends_the_connection() {
    let (_tcp, http) = start().await;
    let (mut socket, _) = open(http, Some("mqtt")).await;
    let version = ProtocolVersion::V311;
    socket
        .send(Message::Binary(
            bytes_of(&[connect("texter", version)], version).into(),
        ))
        .await
        .unwrap();
    receive(&mut socket, version, 1).await;
    socket.send(Message::Text("not mqtt".into())).await.unwrap();
    // The server closes: a close frame, the end of the stream or a reset; no packet.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Binary(bytes))) => panic!("unexpected data {bytes:?}"),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection stayed open");
}

#[tokio::test]
async fn an_upgrade_without_the_mqtt_subprotocol_is_refused() {
    let (_tcp, http) = start().await;
    for offered in [None, Some("chat"), Some("chat, mqtt")] {
        let mut request = format!("ws://{http}/mqtt").into_client_request().unwrap();
        if let Some(protocol) = offered {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocol.parse().unwrap());
        }
        let stream = TcpStream::connect(http).await.unwrap();
        let upgraded = tokio_tungstenite::client_async(request, stream).await;
        match offered {
            Some(list) if list.contains("mqtt") => {
                let (_, response) = upgraded.unwrap();
                assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt");
            }
            _ => match upgraded {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status(), 400, "{offered:?}")
                }
                other => panic!("{offered:?}: expected a 400, got {other:?}"),
            },
        }
    }
}
