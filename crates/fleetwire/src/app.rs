//! The composition root: from validated [`Settings`] to a running node, and back to a
//! clean stop. `fleetwire serve`, `fleetwire demo` and the tests all start nodes here, so
//! the wiring exists once.
//!
//! Start order: data dir and admin token → registry → telemetry store → broker (no
//! listener yet) → platform (given the broker as its MQTT link) → the configuration
//! file's rules → MQTT listener (with the platform's hooks) → HTTP listener (API and
//! dashboard). Stop order: readiness off → broker stops accepting and closes connections
//! → HTTP drains → platform flushes and closes the store and the registry.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use fleetwire_api::{MetricsSource, Sample};
use fleetwire_broker::{Broker, EmbeddedState, Flush, StateStore};
use fleetwire_model::{RuleId, RuleSpec};
use fleetwire_platform::{Platform, PlatformDeps};
use fleetwire_registry::Registry;
use fleetwire_store::Store;
use fleetwire_tls::TlsSource;
use fleetwire_transport::{HttpsListener, TlsFront};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin_token::{self, Origin};
use crate::config::{self, ClusterSettings, Settings, TlsSettings};
use fleetwire_cluster::{NatsPeers, ReplicatedState};

/// Starts nodes (see the module's notes).
#[derive(Debug)]
pub struct App;

/// A running node: its addresses, its admin token, its platform.
#[derive(Debug)]
pub struct Running {
    admin_token: String,
    mqtt_addr: SocketAddr,
    http_addr: SocketAddr,
    broker: Broker,
    platform: Platform,
    mqtt: fleetwire_broker::Running,
    /// Connections that reach the broker through a front-end (TLS, WebSocket).
    streams: fleetwire_broker::Streams,
    http: JoinHandle<std::io::Result<()>>,
    tls: Option<TlsRunning>,
    /// The other nodes, in cluster mode.
    peers: Option<Arc<NatsPeers>>,
}

/// The TLS listeners of a running node.
#[derive(Debug)]
struct TlsRunning {
    mqtt_addr: SocketAddr,
    http_addr: SocketAddr,
    mqtt: JoinHandle<()>,
    http: JoinHandle<std::io::Result<()>>,
    /// Reloads the files on SIGHUP and when they change, until `stop_watching`.
    watcher: JoinHandle<()>,
    stop_watching: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Starts a node on the current Tokio runtime (see the module's notes for the order).
    /// On first start it creates the data dir and an admin token, printed once.
    pub async fn start(settings: Settings) -> anyhow::Result<Running> {
        config::ensure_data_dir(&settings.data_dir)?;
        let admin_token = admin_token(&settings)?;
        let registry = open_registry(&settings).await?;
        registry
            .set_bootstrap_token(&admin_token)
            .await
            .context("cannot store the admin token in the registry")?;
        if settings.broker.allow_anonymous {
            tracing::warn!(
                "anonymous access is enabled: clients without credentials connect with full \
                 access; use this only for development and testing"
            );
        }
        // Loaded before the listeners open: "listening" means clients are served.
        let (broker, replicated) = open_broker(&settings).await?;
        let peers = match &settings.cluster {
            Some(cluster) => Some(join_cluster(&broker, cluster, replicated.as_deref()).await?),
            None => None,
        };
        let (mqtt_listener, mqtt_addr) = listen("mqtt", settings.mqtt_addr).await?;
        let (http_listener, http_addr) = listen("http", settings.http_addr).await?;
        let tls = match &settings.tls {
            Some(tls) => Some(TlsListeners::bind(tls, &settings).await?),
            None => None,
        };

        let store = open_store(&settings).await?;
        let platform = Platform::start(PlatformDeps {
            store,
            registry,
            mqtt: Arc::new(broker.clone()),
            config: settings.platform.clone(),
        })
        .await
        .context("cannot start the platform")?;
        apply_configured_rules(&platform, &settings.rules).await?;
        let mqtt = broker
            .spawn(mqtt_listener, platform.mqtt_hooks())
            .context("cannot start the MQTT listener")?;
        let streams = broker.spawn_streams(platform.mqtt_hooks());
        let metrics = tls.iter().map(TlsListeners::metrics).collect();
        let router = http_router(&broker, &platform, &streams, &settings, metrics);
        let tls = tls.map(|tls| tls.start(&broker, &streams, router.clone()));
        let http = tokio::spawn(serve_http(http_listener, router, broker.clone()));
        tracing::info!(data_dir = %settings.data_dir.display(), "fleetwire started");
        Ok(Running {
            admin_token,
            mqtt_addr,
            http_addr,
            broker,
            platform,
            mqtt,
            streams,
            http,
            tls,
            peers,
        })
    }
}

impl Running {
    /// The MQTT listener's address (the real port when port 0 was asked for).
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The MQTT over TLS listener's address, if TLS is configured.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|tls| tls.mqtt_addr)
    }

    /// The HTTPS listener's address, if TLS is configured.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|tls| tls.http_addr)
    }

    /// The admin API token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The platform, for what runs beside the listeners (the demo's fleet).
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Resolves once [`Running::stop`] has begun (what runs beside the node stops with
    /// it).
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let broker = self.broker.clone();
        async move { broker.shutdown_requested().await }
    }

    /// Stops accepting, closes connections (5.0 clients are told why), lets HTTP
    /// requests finish, writes and closes the store, then the registry.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.platform.begin_shutdown();
        self.broker.shutdown();
        self.mqtt
            .stopped()
            .await
            .context("the MQTT listener failed")?;
        if let Some(tls) = self.tls {
            let _ = tls.stop_watching.send(true);
            tls.mqtt
                .await
                .context("the MQTT over TLS listener failed")?;
            tls.http
                .await
                .context("the HTTPS server task failed")?
                .context("the HTTPS server failed")?;
            tls.watcher.await.context("the TLS files' watcher failed")?;
        }
        self.streams
            .stopped()
            .await
            .context("the MQTT front-ends' listener failed")?;
        // Every connection is closed: what the cluster keeps about them is written.
        if let Some(peers) = &self.peers {
            peers.leave().await;
        }
        self.http
            .await
            .context("the HTTP server task failed")?
            .context("the HTTP server failed")?;
        // Nothing writes any more: flush the telemetry to segments, close the store, write
        // the devices' last presence and close the registry.
        self.platform.shutdown().await;
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || broker.close_state())
            .await
            .context("closing the broker state panicked")?
            .context("cannot close the broker state")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The broker, with its persistent sessions and retained messages loaded from
/// `{data_dir}/broker` (unless `mqtt.persistence` is off). In cluster mode the state is
/// also copied to the cluster once it joins (the returned handle).
async fn open_broker(
    settings: &Settings,
) -> anyhow::Result<(Broker, Option<Arc<ReplicatedState>>)> {
    if !settings.broker_persistence {
        return Ok((Broker::new(settings.broker.clone()), None));
    }
    let directory = settings.data_dir.join("broker");
    let config = settings.broker.clone();
    let is_clustered = settings.cluster.is_some();
    tokio::task::spawn_blocking(move || {
        let state = Arc::new(EmbeddedState::open(&directory, Flush::Sync)?);
        if !is_clustered {
            return Ok((Broker::with_state(config, state)?, None));
        }
        let replicated = ReplicatedState::new(state);
        let broker = Broker::with_state(config, Arc::clone(&replicated) as Arc<dyn StateStore>)?;
        Ok((broker, Some(replicated)))
    })
    .await
    .context("loading the broker state panicked")?
    .map_err(|error: fleetwire_broker::StateError| anyhow::Error::new(error))
    .context("cannot load the broker state (persistent sessions, retained messages)")
}

/// Connects the broker to the other nodes over NATS (live routing; see the cluster
/// crate for what crosses between nodes so far).
async fn join_cluster(
    broker: &Broker,
    cluster: &ClusterSettings,
    state: Option<&ReplicatedState>,
) -> anyhow::Result<Arc<NatsPeers>> {
    let nats = fleetwire_cluster::connect(&cluster.nats_url, &cluster.node_id)
        .await
        .context("cannot join the cluster")?;
    let peers = fleetwire_cluster::join(nats, CLUSTER_SUBJECTS, &cluster.node_id, broker, state)
        .await
        .context("cannot join the cluster")?;
    tracing::info!(node_id = %cluster.node_id, nats_url = %cluster.nats_url, "joined the cluster");
    Ok(peers)
}

/// Binds a listener for `protocol` (`mqtt`, `http`) and logs the address it really has
/// (the port, when 0 was asked for).
async fn listen(
    protocol: &'static str,
    addr: SocketAddr,
) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let name = protocol.to_ascii_uppercase();
    let listener = bind(addr).with_context(|| format!("cannot listen for {name} on {addr}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("cannot read the {name} listener's address"))?;
    tracing::info!(protocol, addr = %local, "listening");
    Ok((listener, local))
}

/// Connections the kernel holds for a listener before it accepts them (capped by
/// `net.core.somaxconn`). The standard library's 128 overflowed when a few hundred
/// clients connected at once (a fleet reconnecting after a restart): the kernel drops
/// their SYNs and they try again only a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// The prefix of the NATS subjects the nodes of a cluster talk on.
const CLUSTER_SUBJECTS: &str = "fleetwire";

/// A listening socket on `addr`, with [`LISTEN_BACKLOG`].
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As the standard library does: a restarted server can listen at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The admin token: configured, read from the data dir, or created (and printed once).
fn admin_token(settings: &Settings) -> anyhow::Result<String> {
    let (token, origin) = admin_token::ensure(&settings.data_dir, settings.admin_token.as_deref())?;
    let path = settings.data_dir.join("admin.token");
    match origin {
        Origin::Created => {
            println!(
                "Admin API token (shown once; also stored in {}):\n  {token}",
                path.display()
            );
        }
        Origin::Existing => tracing::info!(path = %path.display(), "admin token loaded"),
        Origin::Configured => tracing::info!("admin token taken from the configuration"),
    }
    Ok(token)
}

/// The TLS listeners, bound, with their files read; not serving yet.
struct TlsListeners {
    mqtt: TcpListener,
    mqtt_addr: SocketAddr,
    http: TcpListener,
    http_addr: SocketAddr,
    front: TlsFront,
}

impl TlsListeners {
    /// Reads the certificate, key and client CA (failing start-up, naming the file, if
    /// they are not usable) and binds both listeners.
    async fn bind(tls: &TlsSettings, settings: &Settings) -> anyhow::Result<TlsListeners> {
        let source = TlsSource::load(tls.files.clone()).context("cannot set up TLS")?;
        let (mqtt, mqtt_addr) = listen("mqtts", tls.mqtt_addr).await?;
        let (http, http_addr) = listen("https", tls.http_addr).await?;
        Ok(TlsListeners {
            mqtt,
            mqtt_addr,
            http,
            http_addr,
            front: TlsFront {
                source: Arc::new(source),
                handshake_timeout: settings.broker.connect_timeout,
                stats: Arc::default(),
            },
        })
    }

    fn metrics(&self) -> Arc<dyn MetricsSource> {
        Arc::new(TlsMetrics(self.front.clone()))
    }

    /// Serves MQTT over TLS (handing connections to `streams`) and HTTPS (`router`)
    /// until the broker's shutdown begins, and watches the files.
    fn start(
        self,
        broker: &Broker,
        streams: &fleetwire_broker::Streams,
        router: axum::Router,
    ) -> TlsRunning {
        let (stop_watching, watching) = tokio::sync::watch::channel(false);
        let watcher = self.front.source.watch(watching);
        let mqtt = tokio::spawn(fleetwire_transport::serve_mqtt(
            self.mqtt,
            self.front.clone(),
            broker.clone(),
            streams.sender(),
        ));
        let http = tokio::spawn({
            let stopping = broker.clone();
            let front = self.front;
            let listener = self.http;
            async move {
                let listener = HttpsListener::new(listener, front)?.tap_io(|_| {});
                axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<fleetwire_transport::Peer>(),
                )
                .with_graceful_shutdown(async move { stopping.shutdown_requested().await })
                .await
            }
        });
        TlsRunning {
            mqtt_addr: self.mqtt_addr,
            http_addr: self.http_addr,
            mqtt,
            http,
            watcher,
            stop_watching,
        }
    }
}

/// The TLS listeners' counters, for `/metrics`.
struct TlsMetrics(TlsFront);

impl MetricsSource for TlsMetrics {
    fn samples(&self) -> Vec<Sample> {
        let counts = self.0.stats.counts();
        let sample = |name, help, value| Sample {
            name,
            kind: "counter",
            help,
            value,
        };
        vec![
            sample(
                "fleetwire_tls_handshakes_total",
                "TLS handshakes completed (MQTT and HTTPS)",
                counts.completed,
            ),
            sample(
                "fleetwire_tls_handshake_failures_total",
                "TLS handshakes failed: not TLS, an old version, an untrusted or expired \
                 client certificate",
                counts.failed,
            ),
            sample(
                "fleetwire_tls_handshake_timeouts_total",
                "TLS clients that did not complete their handshake in time",
                counts.timed_out,
            ),
            sample(
                "fleetwire_tls_reloads_total",
                "Certificate, key and client CA reloaded (SIGHUP or a change of the files)",
                self.0.source.reloads(),
            ),
            sample(
                "fleetwire_tls_reload_failures_total",
                "Reloads refused (the files were not usable; the previous ones stay)",
                self.0.source.reload_failures(),
            ),
        ]
    }
}

/// What the HTTP listeners serve: the API, the dashboard and MQTT over WebSocket.
fn http_router(
    broker: &Broker,
    platform: &Platform,
    streams: &fleetwire_broker::Streams,
    settings: &Settings,
    metrics: Vec<Arc<dyn MetricsSource>>,
) -> axum::Router {
    // A WebSocket message holds at most one packet's worth of bytes more than a packet.
    let max_message = settings.broker.max_packet_size.saturating_add(64 * 1024);
    fleetwire_api::router(fleetwire_api::ApiState {
        platform: platform.clone(),
        metrics,
    })
    .merge(fleetwire_dashboard::router())
    .merge(fleetwire_transport::websocket::router(
        broker.clone(),
        streams.sender(),
        max_message,
    ))
}

/// Serves `router` until the broker's shutdown begins, then lets the requests in
/// progress finish.
async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    stopping: Broker,
) -> std::io::Result<()> {
    // Without TCP_NODELAY a stream event written while the previous one is not yet
    // acknowledged waits for the client's delayed ACK (up to 40 ms).
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on an HTTP connection");
        }
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stopping.shutdown_requested().await })
    .await
}

/// Creates the configuration file's rules, or replaces the stored rules of the same ids,
/// before any device is served. They were checked with the rest of the configuration;
/// one the registry cannot store stops start-up, naming it.
async fn apply_configured_rules(
    platform: &Platform,
    rules: &[(RuleId, RuleSpec)],
) -> anyhow::Result<()> {
    for (id, spec) in rules {
        platform
            .put_rule(id, spec.clone())
            .await
            .with_context(|| format!("cannot apply the configuration file's rule {id}"))?;
    }
    if !rules.is_empty() {
        tracing::info!(
            rules = rules.len(),
            "rules of the configuration file applied"
        );
    }
    Ok(())
}

/// Opens the telemetry store, replaying its write-ahead log (blocking, off the runtime).
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let directory = settings.data_dir.join("telemetry");
    let config = settings.store.clone();
    let opened = tokio::task::spawn_blocking({
        let directory = directory.clone();
        move || Store::open(&directory, config)
    })
    .await
    .context("the telemetry store's opening task failed")?;
    let store = opened
        .with_context(|| format!("cannot open the telemetry store in {}", directory.display()))?;
    let stats = store.stats();
    tracing::info!(
        series = stats.series,
        segments = stats.segments,
        points = stats.segment_points + stats.head_points,
        durability = ?settings.store.durability,
        "telemetry store opened"
    );
    Ok(store)
}

/// Opens the registry named by the configuration, or SQLite in the data dir.
async fn open_registry(settings: &Settings) -> anyhow::Result<Registry> {
    let registry = match &settings.registry_url {
        Some(url) => Registry::open(url).await,
        None => Registry::open_in_dir(&settings.data_dir).await,
    };
    let registry = registry.context("cannot open the device registry")?;
    let backend = if registry.is_postgres() {
        "postgresql"
    } else {
        "sqlite"
    };
    tracing::info!(backend, "device registry opened");
    Ok(registry)
}
