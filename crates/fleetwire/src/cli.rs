//! Command-line flags, as the user typed them (validated later, in `config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Fleetwire: MQTT broker, device registry, time-series store, rules and dashboard in
/// one binary.
#[derive(Debug, Parser)]
#[command(name = "fleetwire", version, about)]
pub struct Cli {
    /// Log format: `human` (default) or `json` (one object per line).
    #[arg(long, global = true, value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the platform: MQTT broker and HTTP API.
    Serve(ServeArgs),
    /// Run on loopback with anonymous access and a simulated fleet, for a first look.
    Demo(DemoArgs),
    /// Simulate a fleet of devices publishing telemetry to any MQTT broker.
    Sim(crate::sim::SimArgs),
    /// Measure any MQTT broker: throughput, latency and idle connections.
    Bench(crate::bench::BenchArgs),
    /// Create the development CA and server certificate for TLS.
    Cert(crate::cert::CertArgs),
    /// Manage devices and their credentials through the HTTP API; issue device
    /// certificates.
    Device(crate::admin::DeviceArgs),
    /// Manage API tokens through the HTTP API (needs an admin token).
    Token(crate::admin::TokenArgs),
}

/// Flags shared by `serve` and `demo`; each overrides the configuration file and the
/// environment.
#[derive(Debug, Args, Default)]
pub(crate) struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Directory for all persistent state [default: ./fleetwire-data].
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// MQTT listener address [default: 0.0.0.0:1883].
    #[arg(long, value_name = "ADDR")]
    pub(crate) mqtt_addr: Option<SocketAddr>,
    /// HTTP listener address [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    pub(crate) http_addr: Option<SocketAddr>,
    /// Let clients without credentials connect with full access (development and
    /// testing only).
    #[arg(long)]
    pub(crate) allow_anonymous: bool,
}

/// Flags of `demo`: those of `serve`, plus the size of the simulated fleet.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// Simulated devices publishing telemetry every second (0 for none).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) devices: usize,
    /// Also serve MQTT over TLS (127.0.0.1:8883) and HTTPS (127.0.0.1:8443), with a
    /// development CA and server certificate made in DATA_DIR/tls/ if there are none.
    #[arg(long)]
    pub(crate) tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Human,
    Json,
}
