//! Every scenario over TLS, WebSocket and secure WebSocket, against the real broker and
//! its real front-ends (`fleetwire-transport`) started in-process on free ports with a
//! development PKI, for about a second with small counts.

// Helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::serve::ListenerExt;
use fleetwire_bench::{Bench, BenchConfig, Scenario, TlsOptions, Transport, WebSocketOptions};
use fleetwire_broker::{Broker, BrokerConfig, Hooks};
use fleetwire_mqtt_codec::QoS;
use fleetwire_tls::TlsSource;
use fleetwire_transport::{HttpsListener, Peer, TlsFront};
use tokio::net::TcpListener;

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

enum Kind {
    Tls,
    WebSocket,
    SecureWebSocket,
}

/// Starts a broker serving the transport `kind` and returns where to connect and how.
async fn start_broker(kind: Kind) -> (SocketAddr, Transport, TempDir) {
    static DIRS: AtomicUsize = AtomicUsize::new(0);
    let dir = TempDir(std::env::temp_dir().join(format!(
        "fleetwire-bench-transports-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    )));
    let _ = std::fs::remove_dir_all(&dir.0);
    let pki = fleetwire_tls::pki::init(&dir.0, &Default::default()).unwrap();
    let ca = std::fs::read(&pki.ca_cert).unwrap();
    let tls = TlsOptions::from_ca_pem(&ca, "localhost").unwrap();
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
    let router = fleetwire_transport::websocket::router(broker.clone(), streams.sender(), 1 << 20);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let websocket = |tls| {
        Transport::WebSocket(WebSocketOptions {
            path: "/mqtt".to_owned(),
            tls,
        })
    };
    let transport = match kind {
        Kind::Tls => {
            tokio::spawn(fleetwire_transport::serve_mqtt(
                listener,
                front,
                broker,
                streams.sender(),
            ));
            Transport::Tls(tls)
        }
        Kind::WebSocket => {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            tokio::spawn(async move { axum::serve(listener, service).await });
            websocket(None)
        }
        Kind::SecureWebSocket => {
            let listener = HttpsListener::new(listener, front).unwrap().tap_io(|_| {});
            let service = router.into_make_service_with_connect_info::<Peer>();
            tokio::spawn(async move { axum::serve(listener, service).await });
            websocket(Some(tls))
        }
    };
    (addr, transport, dir)
}

/// Runs fan-in, fan-out and pairs at QoS 1 and a few idle connections over `kind`;
/// every message arrives.
async fn every_scenario_over(kind: Kind) {
    let (target, transport, _dir) = start_broker(kind).await;
    let name = transport.name();
    for (scenario, publishers, subscribers) in [
        (Scenario::FanIn, 4, 1),
        (Scenario::FanOut, 1, 5),
        (Scenario::Pairs, 3, 3),
    ] {
        let config = BenchConfig {
            target,
            transport: transport.clone(),
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(10),
            publishers,
            subscribers,
            rate: 300.0,
            qos: QoS::AtLeastOnce,
            ..BenchConfig::for_scenario(scenario)
        };
        let report = Bench::new(config).unwrap().run().await.unwrap();
        assert!(report.sent > 0, "{name}: {report}");
        let expected = match scenario {
            Scenario::FanOut => report.sent * subscribers as u64,
            _ => report.sent,
        };
        assert_eq!(report.received, expected, "{name}: {report}");
        assert_eq!(report.errors, 0, "{name}: {report}");
        assert_eq!(report.transport, name);
    }
    let config = BenchConfig {
        target,
        transport,
        connections: 50,
        duration: Duration::from_millis(200),
        ..BenchConfig::for_scenario(Scenario::Connections)
    };
    let report = Bench::new(config).unwrap().run().await.unwrap();
    let connections = report.connections.as_ref().unwrap();
    assert_eq!(connections.established, 50, "{name}: {report}");
    assert_eq!(report.errors, 0, "{name}: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_over_tls() {
    every_scenario_over(Kind::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_over_websocket() {
    every_scenario_over(Kind::WebSocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_over_secure_websocket() {
    every_scenario_over(Kind::SecureWebSocket).await;
}
