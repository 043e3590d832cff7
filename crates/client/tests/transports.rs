//! The client over TLS, WebSocket and secure WebSocket against the real broker and its
//! real front-ends (`fleetwire-transport`: the TLS listener and the `/mqtt` route,
//! plain and over HTTPS), started in-process on free ports with a development PKI.

// Helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::serve::ListenerExt;
use bytes::Bytes;
use fleetwire_broker::{Broker, BrokerConfig, Hooks};
use fleetwire_client::{
    ClientError, ConnectOptions, Connection, Event, Message, PublishTemplate, TlsOptions,
    Transport, WebSocketOptions,
};
use fleetwire_mqtt_codec::{ProtocolVersion, QoS, TopicFilter, TopicName};
use fleetwire_tls::TlsSource;
use fleetwire_transport::{HttpsListener, Peer, TlsFront};
use tokio::net::TcpListener;

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static DIRS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fleetwire-client-transports-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker with MQTT over TLS, over WebSocket and over secure WebSocket.
struct Server {
    mqtt_tls: SocketAddr,
    http: SocketAddr,
    https: SocketAddr,
    /// The development CA, PEM.
    ca: Vec<u8>,
    _dir: TempDir,
}

impl Server {
    fn tls(&self) -> TlsOptions {
        TlsOptions::from_ca_pem(&self.ca, "localhost").unwrap()
    }

    /// Every transport other than TCP, with the address to connect to.
    fn transports(&self) -> Vec<(SocketAddr, Transport)> {
        vec![
            (self.mqtt_tls, Transport::Tls(self.tls())),
            (
                self.http,
                Transport::WebSocket(WebSocketOptions {
                    path: "/mqtt".to_owned(),
                    tls: None,
                }),
            ),
            (
                self.https,
                Transport::WebSocket(WebSocketOptions {
                    path: "/mqtt".to_owned(),
                    tls: Some(self.tls()),
                }),
            ),
        ]
    }
}

async fn start_server() -> Server {
    let dir = TempDir::new();
    let pki = fleetwire_tls::pki::init(&dir.0.join("tls"), &Default::default()).unwrap();
    let ca = std::fs::read(&pki.ca_cert).unwrap();
    let broker = Broker::new(BrokerConfig {
        allow_anonymous: true,
        ..BrokerConfig::default()
    });
    let streams = broker.spawn_streams(Hooks::default());
    let front = TlsFront {
        source: Arc::new(TlsSource::load(pki.tls_files()).unwrap()),
        handshake_timeout: Duration::from_secs(10),
        stats: Arc::default(),
    };
    let router =
        fleetwire_transport::websocket::router(broker.clone(), streams.sender(), 2 * 1024 * 1024);

    let mqtt_tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mqtt_tls_addr = mqtt_tls.local_addr().unwrap();
    tokio::spawn(fleetwire_transport::serve_mqtt(
        mqtt_tls,
        front.clone(),
        broker.clone(),
        streams.sender(),
    ));

    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let service = router
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(http, service).await });

    let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https_addr = https.local_addr().unwrap();
    let https = HttpsListener::new(https, front).unwrap().tap_io(|_| {});
    let service = router.into_make_service_with_connect_info::<Peer>();
    tokio::spawn(async move { axum::serve(https, service).await });

    Server {
        mqtt_tls: mqtt_tls_addr,
        http: http_addr,
        https: https_addr,
        ca,
        _dir: dir,
    }
}

async fn connect(addr: SocketAddr, transport: &Transport, client_id: &str) -> Connection {
    let options = ConnectOptions {
        addr,
        transport: transport.clone(),
        client_id: client_id.to_owned(),
        version: ProtocolVersion::V5,
        ..ConnectOptions::default()
    };
    Connection::connect(&options).await.unwrap().0
}

async fn try_connect(addr: SocketAddr, transport: Transport) -> Result<Connection, ClientError> {
    let options = ConnectOptions {
        addr,
        transport,
        connect_timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    };
    Connection::connect(&options)
        .await
        .map(|(connection, _)| connection)
}

async fn next_publish(connection: &mut Connection) -> Message {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), connection.next_event())
            .await
            .expect("a message within 10 s")
            .unwrap();
        if let Event::Publish(publish) = event {
            return publish;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_round_trip_over_tls_websocket_and_secure_websocket() {
    let server = start_server().await;
    for (addr, transport) in server.transports() {
        let name = transport.name();
        let mut subscriber = connect(addr, &transport, &format!("sub-{name}")).await;
        subscriber
            .subscribe_and_wait(&[(
                TopicFilter::new(format!("{name}/#")).unwrap(),
                QoS::ExactlyOnce,
            )])
            .await
            .unwrap();
        let mut publisher = connect(addr, &transport, &format!("pub-{name}")).await;
        let topic = TopicName::new(format!("{name}/x")).unwrap();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let payload = Bytes::from(format!("{name} {qos:?}"));
            let packet_id = publisher
                .publish(&topic, payload.clone(), qos, false)
                .unwrap();
            if packet_id.is_some() {
                match publisher.next_event().await.unwrap() {
                    Event::PubAck(ack) | Event::PubComp(ack) => {
                        assert_eq!(Some(ack.packet_id), packet_id)
                    }
                    other => panic!("{name}: unexpected {other:?}"),
                }
            } else {
                publisher.flush().await.unwrap();
            }
            let received = next_publish(&mut subscriber).await;
            assert_eq!(received.payload, payload, "{name}");
            assert_eq!(received.qos, qos, "{name}");
        }
        publisher.disconnect().await.unwrap();
        subscriber.disconnect().await.unwrap();
    }
}

/// A payload larger than a TLS record (16 KiB) and than the broker's WebSocket reads
/// spans records and frames; a batch of small messages goes out in one write (one
/// frame) and comes back cut wherever the server cut it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_that_span_frames_and_frames_that_hold_many_packets_arrive_whole() {
    let server = start_server().await;
    for (addr, transport) in server.transports() {
        let name = transport.name();
        let mut subscriber = connect(addr, &transport, &format!("big-sub-{name}")).await;
        subscriber
            .subscribe_and_wait(&[(
                TopicFilter::new(format!("{name}/big")).unwrap(),
                QoS::AtLeastOnce,
            )])
            .await
            .unwrap();
        let mut publisher = connect(addr, &transport, &format!("big-pub-{name}")).await;
        let topic = TopicName::new(format!("{name}/big")).unwrap();
        let large: Bytes = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        publisher
            .publish(&topic, large.clone(), QoS::AtLeastOnce, false)
            .unwrap();
        let template = PublishTemplate::new(
            topic,
            &[0u8; 16],
            QoS::AtMostOnce,
            false,
            ProtocolVersion::V5,
        )
        .unwrap();
        for sequence in 0..500u64 {
            publisher
                .publish_template(&template, |payload| {
                    payload[..8].copy_from_slice(&sequence.to_le_bytes())
                })
                .unwrap();
        }
        publisher.flush().await.unwrap();
        assert_eq!(next_publish(&mut subscriber).await.payload, large, "{name}");
        for sequence in 0..500u64 {
            let received = next_publish(&mut subscriber).await;
            assert_eq!(received.payload[..8], sequence.to_le_bytes(), "{name}");
        }
        publisher.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_ca_did_not_sign_or_for_another_name_is_refused() {
    let server = start_server().await;
    let other_dir = TempDir::new();
    let other = fleetwire_tls::pki::init(&other_dir.0, &Default::default()).unwrap();
    let other_ca = std::fs::read(&other.ca_cert).unwrap();
    let untrusted = TlsOptions::from_ca_pem(&other_ca, "localhost").unwrap();
    let error = try_connect(server.mqtt_tls, Transport::Tls(untrusted))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Tls { .. }), "{error}");

    let wrong_name = TlsOptions::from_ca_pem(&server.ca, "broker.example.invalid").unwrap();
    let error = try_connect(server.mqtt_tls, Transport::Tls(wrong_name))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Tls { .. }), "{error}");

    // The certificate names 127.0.0.1 too: an IP address is checked against it.
    let by_address = TlsOptions::from_ca_pem(&server.ca, "127.0.0.1").unwrap();
    try_connect(server.mqtt_tls, Transport::Tls(by_address))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_path_the_server_does_not_serve_fails_the_upgrade() {
    let server = start_server().await;
    let transport = Transport::WebSocket(WebSocketOptions {
        path: "/not-mqtt".to_owned(),
        tls: None,
    });
    let error = try_connect(server.http, transport).await.unwrap_err();
    assert!(matches!(error, ClientError::WebSocket { .. }), "{error}");
    assert!(error.to_string().contains("/not-mqtt"), "{error}");
}

#[test]
fn tls_options_need_a_certificate_and_a_valid_server_name() {
    let error = TlsOptions::from_ca_pem(b"not a certificate", "localhost").unwrap_err();
    assert!(matches!(error, ClientError::TlsConfig(_)), "{error}");
    assert!(error.to_string().contains("found none"), "{error}");

    let dir = TempDir::new();
    let pki = fleetwire_tls::pki::init(&dir.0, &Default::default()).unwrap();
    let ca = std::fs::read(&pki.ca_cert).unwrap();
    let error = TlsOptions::from_ca_pem(&ca, "not a name!").unwrap_err();
    assert!(error.to_string().contains("server name"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_pings_are_answered_over_every_transport() {
    let server = start_server().await;
    let mut idle = tokio::task::JoinSet::new();
    for (addr, transport) in server.transports() {
        let options = ConnectOptions {
            addr,
            transport,
            keep_alive: Duration::from_secs(1),
            ..ConnectOptions::default()
        };
        let (mut connection, _) = Connection::connect(&options).await.unwrap();
        // Three intervals without traffic: pings go out and their answers come back, or
        // the connection fails with KeepAliveTimeout.
        idle.spawn(async move {
            let waited =
                tokio::time::timeout(Duration::from_millis(3500), connection.next_event()).await;
            assert!(waited.is_err(), "{}: {waited:?}", options.transport.name());
        });
    }
    while let Some(joined) = idle.join_next().await {
        joined.unwrap();
    }
}
