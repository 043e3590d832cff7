//! `fleetwire bench`: flags of the load generator, a live progress line, and the report
//! (human text, or one JSON line for scripts). The generator itself is `fleetwire_bench`:
//! MQTT scenarios against any broker, and line protocol over HTTP against Fleetwire (or
//! anything that speaks InfluxDB's `/api/v2/write`).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use fleetwire_bench::persistence::PersistenceConfig;
use fleetwire_bench::{
    Bench, BenchConfig, ConnectOptions, Counters, LineProtocolConfig, Scenario, TimePrecision,
    TlsOptions, Transport, WebSocketOptions,
};

use fleetwire_mqtt_codec::QoS;

use crate::sim::{init_logging, parse_version, seconds};

/// Measure any MQTT broker: throughput, latency and idle connections; or a Fleetwire
/// server's line-protocol ingest.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Load pattern: fan-in (many publishers, one wildcard subscriber), fan-out (one
    /// publisher, many subscribers), pairs (publisher/subscriber pairs, latency),
    /// connections (idle connections, connect rate and broker memory), line-protocol
    /// (InfluxDB line protocol POSTed to --url, points/s and request latency),
    /// offline-drain (--sessions persistent sessions queue --messages QoS 1 messages
    /// while offline, then drain them; MQTT 3.1.1) or load-state (fills a broker with
    /// --sessions offline persistent sessions holding --messages each, and --retained
    /// retained messages, for a restart measurement).
    #[arg(value_enum)]
    scenario: ScenarioArg,
    /// Broker to measure, as HOST:PORT: its MQTT listener, its MQTT over TLS listener
    /// with --tls, its HTTP (or, with --tls, HTTPS) listener with --ws.
    #[arg(long, default_value = "127.0.0.1:1883", value_name = "HOST:PORT")]
    target: String,
    /// Subscribers connect here instead of --target (publishers stay on --target):
    /// another node of a cluster, so that every message crosses between nodes.
    #[arg(long, value_name = "HOST:PORT")]
    subscriber_target: Option<String>,
    /// MQTT over TLS (with --ws: secure WebSocket, wss://). Needs --cafile. Every
    /// connection makes a full handshake (no session resumption), as a fleet's devices
    /// connecting for the first time do.
    #[arg(long)]
    tls: bool,
    /// With --tls: PEM file of the CA to trust (for Fleetwire's development PKI,
    /// DATA_DIR/tls/ca.pem). No other roots are trusted.
    #[arg(long, value_name = "FILE", requires = "tls")]
    cafile: Option<std::path::PathBuf>,
    /// With --tls: the name the server's certificate must carry, also sent as SNI when
    /// it is a DNS name [default: the host of --target as written, so 127.0.0.1 is
    /// checked against the certificate's IP addresses and localhost against its DNS
    /// names].
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
    /// MQTT over WebSocket at PATH of --target (subprotocol mqtt, binary frames);
    /// --ws alone means /mqtt. With --tls: wss.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "/mqtt")]
    ws: Option<String>,
    /// QoS of publishes and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes per message (at least 8: the send timestamp).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    payload: usize,
    /// Seconds of measurement (connections: seconds to hold them after the ramp).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    duration: f64,
    /// Messages per second over all publishers (connections: connection attempts per
    /// second; line-protocol: points per second); 0 is unlimited.
    #[arg(long, default_value_t = 0.0, value_name = "MSGS_PER_SEC")]
    rate: f64,
    /// Publishing connections (pairs: number of pairs) [default: fan-in 100, fan-out 1,
    /// pairs 100].
    #[arg(long, value_name = "N")]
    publishers: Option<usize>,
    /// Subscribing connections [default: fan-in 1, fan-out 1000, pairs as many as
    /// publishers].
    #[arg(long, value_name = "N")]
    subscribers: Option<usize>,
    /// Idle connections to open (connections scenario), or keep-alive HTTP connections
    /// (line-protocol) [default: 10000; line-protocol 4].
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// MQTT version: 3 (3.1.1) or 5.
    #[arg(long, default_value = "3", value_parser = ["3", "3.1.1", "4", "5"])]
    mqtt_version: String,
    /// line-protocol: base URL of the server; requests go to URL/api/v2/write.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    url: String,
    /// line-protocol: API token (operator role), sent as `Authorization: Token TOKEN`.
    #[arg(
        long,
        env = "FLEETWIRE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// line-protocol: lines (device readings) per request.
    #[arg(long, default_value_t = 5_000, value_name = "N")]
    lines_per_request: usize,
    /// line-protocol: devices (the `device` tag), spread over the connections.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    devices: usize,
    /// line-protocol: float fields per line, one point each.
    #[arg(long, default_value_t = 4, value_name = "N")]
    fields: usize,
    /// line-protocol: gzip the bodies (Content-Encoding: gzip, as Telegraf does).
    #[arg(long)]
    gzip: bool,
    /// line-protocol: unit of the timestamps written: ns, us, ms or s.
    #[arg(long, default_value = "ms", value_parser = ["ns", "us", "ms", "s"])]
    precision: String,
    /// line-protocol: seconds of sending before the measurement window (after a setup
    /// round that writes every device once).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    warmup: f64,
    /// Print the report as one JSON object on the last line of stdout (the human report
    /// goes to stderr).
    #[arg(long)]
    json: bool,
    /// The broker's process id: report its CPU and memory (connections: memory per
    /// connection) from /proc.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// QoS 1/2 messages each publisher keeps in flight.
    #[arg(long, default_value_t = 64, value_name = "N")]
    inflight: usize,
    /// Keep-alive of every connection, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    keep_alive: u16,
    /// Connection handshakes in progress at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    connect_concurrency: usize,
    /// Connections per loopback source address 127.X.Y.Z (connections scenario against a
    /// loopback target).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    per_source: usize,
    /// Longest wait, in seconds, for messages still on their way after publishing stops.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    drain: f64,
    /// Worker threads of the generator [default: one per core].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// offline-drain, load-state: persistent sessions.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    sessions: usize,
    /// offline-drain, load-state: QoS 1 messages queued for each session.
    #[arg(long, default_value_t = 100, value_name = "N")]
    messages: usize,
    /// load-state: retained messages to set.
    #[arg(long, default_value_t = 0, value_name = "N")]
    retained: usize,
    /// fan-in, fan-out, pairs: subscribers keep persistent sessions (MQTT 3.1.1 clean
    /// session 0), ended after the run.
    #[arg(long)]
    persistent_subscribers: bool,
    /// Device logins for the connections scenario, used in turn: CSV `device_id,password`
    /// or JSON lines (the format `fleetwire sim --credentials` reads).
    #[arg(long, value_name = "FILE")]
    credentials: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScenarioArg {
    FanIn,
    FanOut,
    Pairs,
    Connections,
    LineProtocol,
    OfflineDrain,
    LoadState,
}

/// Runs one scenario and prints its report.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    init_logging();
    // Many connections need many descriptors; raise the soft limit as far as allowed.
    let _ = fleetwire_bench::system::raise_open_files_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("fleetwire-bench");
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.build().context("cannot start the async runtime")?;
    runtime.block_on(measure(args))
}

async fn measure(args: BenchArgs) -> anyhow::Result<()> {
    let scenario = match args.scenario {
        ScenarioArg::FanIn => Scenario::FanIn,
        ScenarioArg::FanOut => Scenario::FanOut,
        ScenarioArg::Pairs => Scenario::Pairs,
        ScenarioArg::Connections => Scenario::Connections,
        ScenarioArg::LineProtocol => {
            if args.tls || args.ws.is_some() {
                anyhow::bail!(
                    "--tls and --ws apply to the MQTT scenarios; line-protocol takes an https:// --url instead"
                );
            }
            return measure_line_protocol(args).await;
        }
        ScenarioArg::OfflineDrain | ScenarioArg::LoadState => {
            return measure_persistence(args).await;
        }
    };
    let transport = transport(&args)?;
    let defaults = BenchConfig::for_scenario(scenario);
    let publishers = args.publishers.unwrap_or(defaults.publishers);
    let subscribers = match scenario {
        Scenario::Pairs => args.subscribers.unwrap_or(publishers),
        _ => args.subscribers.unwrap_or(defaults.subscribers),
    };
    let config = BenchConfig {
        target: resolve(&args.target).await?,
        subscriber_target: match &args.subscriber_target {
            Some(target) => Some(resolve(target).await?),
            None => None,
        },
        transport,
        version: parse_version(&args.mqtt_version),
        qos: QoS::from_u8(args.qos).unwrap_or(QoS::AtMostOnce),
        payload: args.payload,
        duration: seconds("--duration", args.duration)?,
        rate: args.rate,
        publishers,
        subscribers,
        connections: args.connections.unwrap_or(defaults.connections),
        inflight: args.inflight,
        keep_alive: Duration::from_secs(u64::from(args.keep_alive)),
        connect_concurrency: args.connect_concurrency,
        per_source: args.per_source,
        drain: seconds("--drain", args.drain)?,
        broker_pid: args.broker_pid,
        persistent_subscribers: args.persistent_subscribers,
        logins: match &args.credentials {
            Some(path) => fleetwire_sim::read_credentials(path)?
                .into_iter()
                .map(|login| (login.device_id, login.password))
                .collect(),
            None => Vec::new(),
        },
        ..defaults
    };
    let bench = Bench::new(config)?;
    let progress = show_progress(bench.counters(), |now, previous, every| {
        format!(
            "{} connected  {:>9.0} sent/s  {:>9.0} received/s  {} errors",
            now.connected,
            (now.sent - previous.sent) as f64 / every,
            (now.received - previous.received) as f64 / every,
            now.errors
        )
    });
    let result = bench.run().await;
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let report = result?;
    if args.json {
        eprint!("{report}");
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(())
}

/// The persistent-session scenarios: their own configuration and reports (one JSON
/// object; the last line of stdout).
async fn measure_persistence(args: BenchArgs) -> anyhow::Result<()> {
    let config = PersistenceConfig {
        connect: ConnectOptions {
            addr: resolve(&args.target).await?,
            transport: transport(&args)?,
            version: parse_version(&args.mqtt_version),
            keep_alive: Duration::from_secs(u64::from(args.keep_alive)),
            ..ConnectOptions::default()
        },
        sessions: args.sessions,
        messages: args.messages,
        retained: args.retained,
        payload: args.payload,
        inflight: args.inflight,
        concurrency: args.connect_concurrency,
    };
    let json = match args.scenario {
        ScenarioArg::LoadState => {
            let report = fleetwire_bench::persistence::load_state(&config).await?;
            eprintln!(
                "load-state: {} sessions x {} messages, {} retained in {:.1} s",
                report.sessions, report.messages_per_session, report.retained, report.elapsed_s
            );
            serde_json::to_string(&report)?
        }
        _ => {
            let report = fleetwire_bench::persistence::offline_drain(&config).await?;
            eprintln!(
                "offline-drain: {} sessions x {} messages: {} of {} delivered; publish {:.2} s, drain {:.2} s, {:.0} deliveries/s",
                report.sessions,
                report.messages,
                report.deliveries,
                report.expected,
                report.publish_s,
                report.drain_s,
                report.deliveries_per_sec
            );
            serde_json::to_string(&report)?
        }
    };
    println!("{json}");
    Ok(())
}

/// The line-protocol scenario: its own configuration and report.
async fn measure_line_protocol(args: BenchArgs) -> anyhow::Result<()> {
    let defaults = LineProtocolConfig::default();
    let precision: TimePrecision = args.precision.parse()?;
    let config = LineProtocolConfig {
        url: args.url.trim_end_matches('/').to_owned(),
        token: args.token.clone(),
        connections: args.connections.unwrap_or(defaults.connections),
        lines_per_request: args.lines_per_request,
        devices: args.devices,
        fields: args.fields,
        duration: seconds("--duration", args.duration)?,
        warmup: seconds("--warmup", args.warmup)?,
        rate: args.rate,
        is_gzip: args.gzip,
        precision,
        broker_pid: args.broker_pid,
        ..defaults
    };
    let counters = std::sync::Arc::new(Counters::default());
    let progress = show_progress(std::sync::Arc::clone(&counters), |now, previous, every| {
        format!(
            "{:>9.1} requests/s  {:>10.0} points/s  {} errors",
            (now.sent - previous.sent) as f64 / every,
            (now.received - previous.received) as f64 / every,
            now.errors
        )
    });
    let result = fleetwire_bench::line_protocol::run(&config, &counters).await;
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let report = result?;
    if args.json {
        eprint!("{report}");
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Prints a progress line every second (every 5 seconds when stderr is not a terminal),
/// made by `line` from the counters now, before and the seconds between.
fn show_progress(
    counters: std::sync::Arc<Counters>,
    line: impl Fn(&fleetwire_bench::CountersSnapshot, &fleetwire_bench::CountersSnapshot, f64) -> String
    + Send
    + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let is_terminal = std::io::stderr().is_terminal();
        let every = if is_terminal { 1 } else { 5 };
        let started = Instant::now();
        let mut previous = counters.snapshot();
        let mut ticker = tokio::time::interval(Duration::from_secs(every));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let now = counters.snapshot();
            let text = format!(
                "{:>5.0} s  {}",
                started.elapsed().as_secs_f64(),
                line(&now, &previous, every as f64)
            );
            previous = now;
            if is_terminal {
                eprint!("\r\x1b[K{text}");
            } else {
                eprintln!("{text}");
            }
            let _ = std::io::stderr().flush();
        }
    })
}

/// The transport the flags ask for; the TLS configuration is made here, once for the
/// whole run.
fn transport(args: &BenchArgs) -> anyhow::Result<Transport> {
    let tls = if args.tls {
        let Some(cafile) = &args.cafile else {
            anyhow::bail!(
                "--tls needs --cafile FILE, the PEM certificate of the CA that signed the broker's certificate (for Fleetwire's development PKI: DATA_DIR/tls/ca.pem)"
            );
        };
        let ca = std::fs::read(cafile)
            .with_context(|| format!("cannot read --cafile {}", cafile.display()))?;
        let server_name = match &args.server_name {
            Some(name) => name.clone(),
            None => target_host(&args.target).to_owned(),
        };
        let options = TlsOptions::from_ca_pem(&ca, &server_name)
            .with_context(|| format!("--cafile {}", cafile.display()))?;
        Some(options)
    } else {
        None
    };
    Ok(match (&args.ws, tls) {
        (Some(path), tls) => {
            if !path.starts_with('/') {
                anyhow::bail!("--ws takes an absolute path such as /mqtt, got {path:?}");
            }
            Transport::WebSocket(WebSocketOptions {
                path: path.clone(),
                tls,
            })
        }
        (None, Some(tls)) => Transport::Tls(tls),
        (None, None) => Transport::Tcp,
    })
}

/// The host of `HOST:PORT` as written, without the brackets of an IPv6 address.
fn target_host(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(host, _port)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The first address `HOST:PORT` resolves to.
pub(crate) async fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("cannot resolve {target:?} (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("{target:?} resolves to no address"))
}
