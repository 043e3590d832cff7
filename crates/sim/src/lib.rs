//! Fleet simulator: a number of devices, each on its own MQTT connection, publishing
//! realistic telemetry (see [`signals`]) to `devices/{id}/telemetry` at a fixed interval.
//!
//! Devices start spread over a ramp-up period, reconnect with exponential backoff when
//! their connection fails, and log in anonymously or with credentials from a file
//! ([`read_credentials`]). [`Simulator::counters`] gives live figures for a progress
//! display; [`Simulator::run`] returns the final ones when the shutdown future completes.
//! `fleetwire sim` and `fleetwire demo` are thin wrappers around this crate.
//!
//! ```no_run
//! use std::time::Duration;
//! use fleetwire_sim::{Devices, SimConfig, Simulator};
//!
//! # async fn run() -> Result<(), fleetwire_sim::SimError> {
//! let config = SimConfig {
//!     devices: Devices::Anonymous { count: 100, prefix: "sim-".to_owned() },
//!     interval: Duration::from_secs(1),
//!     ..SimConfig::default()
//! };
//! let simulator = Simulator::new(config)?;
//! let report = simulator.run(tokio::time::sleep(Duration::from_secs(10))).await;
//! println!("{} messages published", report.stats.published);
//! # Ok(())
//! # }
//! ```

mod config;
mod credentials;
mod device;
mod error;
pub mod signals;
mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use config::{Backoff, Devices, SimConfig};
pub use credentials::{DeviceCredential, parse_credentials, read_credentials};
pub use error::SimError;
pub use stats::{AckLatencySummary, SimCounters, SimReport, SimStats};

/// How long devices get to send `DISCONNECT` after shutdown before they are dropped.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A validated simulation, ready to run.
#[derive(Debug)]
pub struct Simulator {
    devices: Vec<device::DeviceSpec>,
    config: Arc<SimConfig>,
    counters: Arc<SimCounters>,
}

impl Simulator {
    /// Checks the configuration and prepares the devices.
    pub fn new(config: SimConfig) -> Result<Simulator, SimError> {
        let devices = device::plan(&config)?;
        Ok(Simulator {
            devices,
            config: Arc::new(config),
            counters: Arc::new(SimCounters::default()),
        })
    }

    /// Number of simulated devices.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Live counters, updated by the devices while [`Simulator::run`] runs.
    pub fn counters(&self) -> Arc<SimCounters> {
        Arc::clone(&self.counters)
    }

    /// Runs every device until `shutdown` completes, then disconnects them. Must be
    /// called inside a Tokio runtime with the time driver enabled.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> SimReport {
        let started = Instant::now();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for spec in self.devices {
            tasks.spawn(device::run(
                spec,
                Arc::clone(&self.config),
                Arc::clone(&self.counters),
                stopped.clone(),
            ));
        }
        shutdown.await;
        let _ = stop.send(true);
        let all_stopped = tokio::time::timeout(STOP_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if all_stopped.is_err() {
            tasks.shutdown().await;
        }
        SimReport {
            stats: self.counters.snapshot(),
            elapsed: started.elapsed(),
        }
    }
}

/// Runs a simulation until `shutdown` completes: [`Simulator::new`] then
/// [`Simulator::run`].
pub async fn run(
    config: SimConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<SimReport, SimError> {
    Ok(Simulator::new(config)?.run(shutdown).await)
}
