//! The result of a run: printed for people, and as one JSON object for scripts.

use std::fmt;

use serde::Serialize;

use crate::LatencySummary;

/// Everything a run measured. [`Report::to_json`] is the `--json` line; its keys are a
/// contract with `scripts/bench/compare`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `fan-in`, `fan-out`, `pairs` or `connections`.
    pub scenario: &'static str,
    /// The broker address.
    pub target: String,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
    /// `3.1.1` or `5`.
    pub mqtt_version: &'static str,
    /// QoS of publishes and subscriptions.
    pub qos: u8,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// Publishing connections.
    pub publishers: usize,
    /// Subscribing connections.
    pub subscribers: usize,
    /// Requested rate (messages or connections per second); 0 for unlimited.
    pub rate: f64,
    /// Length of the measurement window in seconds.
    pub duration_s: f64,
    /// Messages published in the window.
    pub sent: u64,
    /// Messages received, including those that arrived after the window.
    pub received: u64,
    /// Messages received within the window.
    pub received_in_window: u64,
    /// Failures: refused or lost connections, refused messages.
    pub errors: u64,
    /// Messages delivered to subscribers per second within the window.
    pub msgs_per_sec: f64,
    /// Publish-to-receive latency (for `connections`: TCP connect to `CONNACK`).
    pub latency_us: LatencySummary,
    /// The generator's own CPU use during the window.
    pub cpu: CpuUsage,
    /// The broker's CPU and memory, when its pid was given.
    pub broker: Option<BrokerUsage>,
    /// Results of the `connections` scenario.
    pub connections: Option<ConnectionsResult>,
}

/// CPU time used by a process during the measurement window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUsage {
    /// User-mode seconds.
    pub user_s: f64,
    /// Kernel seconds.
    pub system_s: f64,
    /// Percent of one core (200 means two cores busy).
    pub percent: f64,
    /// Cores available to the generator.
    pub cores: usize,
}

/// The broker process during the window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BrokerUsage {
    /// Its pid.
    pub pid: u32,
    /// Percent of one core.
    pub cpu_percent: f64,
    /// Resident memory before the connections were opened.
    pub rss_before_bytes: u64,
    /// Resident memory at the end of the window.
    pub rss_bytes: u64,
}

/// What the `connections` scenario measured.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ConnectionsResult {
    /// Connections asked for.
    pub requested: usize,
    /// Connections that got a successful `CONNACK`.
    pub established: usize,
    /// Connection attempts that failed.
    pub failed: usize,
    /// Established connections that dropped while held.
    pub lost: usize,
    /// Seconds from the first attempt to the last answer.
    pub ramp_s: f64,
    /// Established connections per second of ramp.
    pub connects_per_sec: f64,
    /// Loopback source addresses used.
    pub source_addresses: usize,
    /// Broker memory growth divided by established connections, when its pid was given.
    pub rss_per_connection_bytes: Option<f64>,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain numbers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {} against {} over {} (MQTT {}, QoS {}, {} B payload)",
            self.scenario,
            self.target,
            self.transport,
            self.mqtt_version,
            self.qos,
            self.payload_bytes
        )?;
        if let Some(connections) = &self.connections {
            writeln!(
                f,
                "  connections   {} of {} established, {} failed, {} lost while held, {} source address(es)",
                connections.established,
                connections.requested,
                connections.failed,
                connections.lost,
                connections.source_addresses
            )?;
            writeln!(
                f,
                "  connect rate  {:.0}/s over {:.2} s",
                connections.connects_per_sec, connections.ramp_s
            )?;
            writeln!(
                f,
                "  connect time  p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                self.latency_us.p50, self.latency_us.p99, self.latency_us.p999, self.latency_us.max
            )?;
            if let Some(per_connection) = connections.rss_per_connection_bytes {
                writeln!(f, "  broker memory {per_connection:.0} B per connection")?;
            }
        } else {
            writeln!(
                f,
                "  connections   {} publishers, {} subscribers, rate {}",
                self.publishers,
                self.subscribers,
                if self.rate > 0.0 {
                    format!("{:.0} msgs/s", self.rate)
                } else {
                    "unlimited".to_owned()
                }
            )?;
            writeln!(
                f,
                "  messages      {} sent, {} received ({} in the {:.2} s window), {} errors",
                self.sent, self.received, self.received_in_window, self.duration_s, self.errors
            )?;
            writeln!(
                f,
                "  throughput    {:.0} msgs/s delivered",
                self.msgs_per_sec
            )?;
            write_latency(f, &self.latency_us)?;
        }
        write_usage(f, &self.cpu, self.broker.as_ref(), "broker")
    }
}

/// The report's latency line.
pub(crate) fn write_latency(f: &mut fmt::Formatter<'_>, latency: &LatencySummary) -> fmt::Result {
    writeln!(
        f,
        "  latency       p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        latency.p50, latency.p99, latency.p999, latency.max
    )
}

/// The report's lines of CPU and memory: the generator's, and the measured process's
/// (`label`: "broker", "server") when its pid was given.
pub(crate) fn write_usage(
    f: &mut fmt::Formatter<'_>,
    cpu: &CpuUsage,
    measured: Option<&BrokerUsage>,
    label: &str,
) -> fmt::Result {
    writeln!(
        f,
        "  generator CPU {:.0}% of one core ({} cores; user {:.2} s, system {:.2} s)",
        cpu.percent, cpu.cores, cpu.user_s, cpu.system_s
    )?;
    if let Some(usage) = measured {
        writeln!(
            f,
            "  {label:<13} pid {}, CPU {:.0}% of one core, RSS {:.1} MiB (before {:.1} MiB)",
            usage.pid,
            usage.cpu_percent,
            usage.rss_bytes as f64 / 1048576.0,
            usage.rss_before_bytes as f64 / 1048576.0
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_keys_scripts_rely_on() {
        let report = Report {
            scenario: "pairs",
            target: "127.0.0.1:1883".to_owned(),
            transport: "tls",
            mqtt_version: "3.1.1",
            qos: 1,
            payload_bytes: 64,
            publishers: 2,
            subscribers: 2,
            rate: 100.0,
            duration_s: 1.0,
            sent: 100,
            received: 100,
            received_in_window: 99,
            errors: 0,
            msgs_per_sec: 99.0,
            latency_us: LatencySummary {
                p50: 50,
                p99: 90,
                p999: 99,
                max: 120,
                mean: 55.5,
                count: 100,
            },
            cpu: CpuUsage::default(),
            broker: None,
            connections: None,
        };
        let json = report.to_json();
        assert!(!json.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        for key in [
            "scenario",
            "transport",
            "sent",
            "received",
            "errors",
            "msgs_per_sec",
            "cpu",
        ] {
            assert!(value.get(key).is_some(), "missing {key} in {json}");
        }
        for key in ["p50", "p99", "p999", "max"] {
            assert!(
                value["latency_us"][key].is_u64(),
                "missing latency_us.{key} in {json}"
            );
        }
        assert_eq!(value["msgs_per_sec"], 99.0);
        assert!(value["cpu"]["percent"].is_number());
        assert!(value["broker"].is_null());
        assert!(report.to_string().contains("99 msgs/s delivered"));
    }
}
