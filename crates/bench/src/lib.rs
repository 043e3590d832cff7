//! Load generator: MQTT scenarios for any broker (the engine behind `fleetwire bench` and
//! the side-by-side comparison in `scripts/bench/compare`), and InfluxDB line protocol
//! over HTTP for the ingest benchmark (`scripts/bench/ingest`).
//!
//! Scenarios ([`Scenario`]):
//! - `fan-in`: many publishers, each on its own topic, and a wildcard subscriber counting
//!   what arrives;
//! - `fan-out`: one publisher (or a few), many subscribers on one topic;
//! - `pairs`: N publisher/subscriber pairs, each pair on its own topic, for latency;
//! - `connections`: ramp up to N idle connections, spread over loopback source addresses
//!   to get past the ephemeral port limit; reports the connect rate and, given the
//!   broker's pid, its memory per connection;
//! - [`line_protocol`]: InfluxDB line protocol `POST`ed to `/api/v2/write` over
//!   keep-alive HTTP/1.1 connections (its own module and small client, [`http`]; the
//!   MQTT scenarios do not use them).
//!
//! Every scenario runs over plain TCP, TLS or WebSocket (over TCP or TLS), chosen by
//! [`BenchConfig::transport`]; the TLS client configuration is built once per run and
//! shared by every connection, with session resumption off so each connection makes a
//! full handshake.
//!
//! Every message carries its send time in its first 8 bytes, so subscribers measure
//! publish-to-receive latency into an HDR histogram. The generator keeps itself off the
//! critical path: one task per connection on a multi-threaded runtime, publishes copied
//! from a pre-encoded template and written in batches, rate limiting by a token bucket
//! per publisher, and its own CPU time in the [`Report`] to show it was not the
//! bottleneck.
//!
//! ```no_run
//! use std::time::Duration;
//! use fleetwire_bench::{Bench, BenchConfig, Scenario};
//!
//! # async fn run() -> Result<(), fleetwire_bench::BenchError> {
//! let config = BenchConfig {
//!     duration: Duration::from_secs(5),
//!     ..BenchConfig::for_scenario(Scenario::FanIn)
//! };
//! let report = Bench::new(config)?.run().await?;
//! println!("{}", report.to_json());
//! # Ok(())
//! # }
//! ```

mod clock;
mod config;
mod connections;
mod counters;
mod error;
pub mod http;
mod latency;
pub mod line_protocol;
mod messaging;
pub mod persistence;
pub mod rate;
mod report;
pub mod system;

use std::sync::Arc;

pub use config::{BenchConfig, Scenario};
pub use counters::{Counters, CountersSnapshot};
pub use error::BenchError;
/// The transports of [`BenchConfig::transport`], from the client crate.
pub use fleetwire_client::{ConnectOptions, TlsOptions, Transport, WebSocketOptions};
pub use latency::{LatencyRecorder, LatencySummary};
pub use line_protocol::{LineProtocolConfig, LineProtocolReport, TimePrecision};
pub use report::{BrokerUsage, ConnectionsResult, CpuUsage, Report};

/// A validated benchmark run.
#[derive(Debug)]
pub struct Bench {
    config: BenchConfig,
    counters: Arc<Counters>,
}

impl Bench {
    /// Checks the configuration.
    pub fn new(config: BenchConfig) -> Result<Bench, BenchError> {
        config.validate()?;
        Ok(Bench {
            config,
            counters: Arc::new(Counters::default()),
        })
    }

    /// Live counters for a progress display.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Runs the scenario to the end. Must run inside a multi-threaded Tokio runtime with
    /// the I/O and time drivers enabled.
    pub async fn run(self) -> Result<Report, BenchError> {
        match self.config.scenario {
            Scenario::Connections => connections::run(&self.config, &self.counters).await,
            Scenario::FanIn | Scenario::FanOut | Scenario::Pairs => {
                messaging::run(&self.config, &self.counters).await
            }
        }
    }
}
