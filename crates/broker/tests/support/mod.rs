//! A minimal MQTT client over the project's codec, for driving the broker from tests
//! packet by packet (the interop suite uses third-party clients instead).

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fleetwire_broker::{Broker, BrokerConfig, Hooks};
use fleetwire_mqtt_codec::{
    Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions, TopicFilter, TopicName, Will, decode, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a broker on a free loopback port, without hooks.
pub async fn start(config: BrokerConfig) -> (Broker, SocketAddr) {
    start_with_hooks(config, Hooks::default()).await
}

/// Starts a broker on a free loopback port, serving it with `hooks`.
pub async fn start_with_hooks(config: BrokerConfig, hooks: Hooks) -> (Broker, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = Broker::new(config);
    let addr = broker.spawn(listener, hooks).unwrap().local_addr();
    (broker, addr)
}

/// Anonymous access and no limits (tests of the limits set their own).
pub fn anonymous() -> BrokerConfig {
    BrokerConfig {
        allow_anonymous: true,
        limits: fleetwire_broker::Limits::none(),
        ..BrokerConfig::default()
    }
}

pub struct Client {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buffer: BytesMut,
}

pub fn connect_packet(client_id: &str, version: ProtocolVersion, clean: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 60,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

pub fn will(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> Will {
    Will {
        topic: TopicName::new(topic).unwrap(),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: Properties::default(),
    }
}

impl Client {
    pub async fn raw(addr: SocketAddr, version: ProtocolVersion) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        Client {
            stream,
            version,
            buffer: BytesMut::new(),
        }
    }

    /// A client over a stream connected by the caller (to set socket options first).
    pub fn from_stream(stream: TcpStream, version: ProtocolVersion) -> Client {
        Client {
            stream,
            version,
            buffer: BytesMut::new(),
        }
    }

    /// Connects and returns the client with the CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (Client, Packet) {
        let mut client = Client::raw(addr, connect.protocol).await;
        client.send(Packet::Connect(Box::new(connect))).await;
        let connack = client.recv().await.expect("CONNACK");
        (client, connack)
    }

    pub async fn connect(addr: SocketAddr, client_id: &str) -> Client {
        let (client, connack) =
            Client::connect_with(addr, connect_packet(client_id, ProtocolVersion::V311, true))
                .await;
        assert!(
            matches!(connack, Packet::ConnAck(ref ack) if ack.code.0 == 0),
            "{connack:?}"
        );
        client
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        encode(&packet, self.version, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next packet, or `None` if the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(TIMEOUT, self.recv_inner())
            .await
            .expect("timed out waiting for a packet")
    }

    /// The next packet within `wait`, `Err` on timeout.
    pub async fn try_recv(&mut self, wait: Duration) -> Result<Option<Packet>, ()> {
        tokio::time::timeout(wait, self.recv_inner())
            .await
            .map_err(|_| ())
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = decode(&mut self.buffer, self.version, 1 << 28).unwrap() {
                return Some(packet);
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            filters: vec![(
                TopicFilter::new(filter).unwrap(),
                SubscriptionOptions::with_qos(qos),
            )],
            properties: Properties::default(),
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => assert_eq!(ack.reasons[0].0, qos as u8),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        packet_id: u16,
        retain: bool,
    ) {
        self.send(Packet::Publish(publish(
            topic, payload, qos, packet_id, retain,
        )))
        .await;
    }

    /// The next PUBLISH, skipping nothing: fails on any other packet.
    pub async fn expect_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(publish)) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(packet) = self.try_recv(wait).await {
            panic!("expected nothing, got {packet:?}");
        }
    }

    /// Waits until the broker closes the connection; returns the packets before it.
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        while let Some(packet) = self.recv().await {
            seen.push(packet);
        }
        seen
    }
}

pub fn publish(topic: &str, payload: &[u8], qos: QoS, packet_id: u16, retain: bool) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: TopicName::new(topic).unwrap(),
        packet_id: PacketId::new(packet_id).filter(|_| qos != QoS::AtMostOnce),
        payload: Bytes::copy_from_slice(payload),
        properties: Properties::default(),
    }
}
