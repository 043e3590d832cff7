//! What to simulate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fleetwire_mqtt_codec::{ProtocolVersion, QoS};

use crate::DeviceCredential;

/// A simulation: which devices, where they connect, how often they publish.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The broker's MQTT listener.
    pub target: SocketAddr,
    /// The simulated devices.
    pub devices: Devices,
    /// Time between two messages of one device.
    pub interval: Duration,
    /// QoS of the telemetry messages (0 or 1).
    pub qos: QoS,
    /// MQTT version the devices speak.
    pub version: ProtocolVersion,
    /// Devices start evenly spread over this period.
    pub ramp_up: Duration,
    /// Seed of every random choice (signals, phases, backoff jitter): the same seed gives
    /// the same readings.
    pub seed: u64,
    /// Keep-alive the devices announce.
    pub keep_alive: Duration,
    /// Reconnect delays.
    pub backoff: Backoff,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            target: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883),
            devices: Devices::Anonymous {
                count: 10,
                prefix: "sim-".to_owned(),
            },
            interval: Duration::from_secs(1),
            qos: QoS::AtMostOnce,
            version: ProtocolVersion::V311,
            ramp_up: Duration::from_secs(1),
            seed: 1,
            keep_alive: Duration::from_secs(30),
            backoff: Backoff::default(),
        }
    }
}

/// Who the simulated devices are.
#[derive(Debug, Clone)]
pub enum Devices {
    /// `count` devices named `{prefix}0001`, `{prefix}0002`, ..., connecting without
    /// credentials (the broker must allow anonymous access).
    Anonymous {
        /// Number of devices.
        count: usize,
        /// Prefix of the device ids.
        prefix: String,
    },
    /// One device per credential, logging in with its id and password.
    Credentials(Vec<DeviceCredential>),
}

/// Exponential backoff between reconnection attempts: the delay starts at `initial`,
/// doubles after each failure up to `max`, and is jittered down by up to half so devices
/// that failed together do not come back together.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (1 for the first), before jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<u128> = (1..=6).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    }
}
