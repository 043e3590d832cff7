//! What to run: scenario, target and load shape.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fleetwire_client::Transport;
use fleetwire_mqtt_codec::{ProtocolVersion, QoS};

use crate::BenchError;

/// The load patterns the generator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Many publishers on their own topics, one wildcard subscriber (or a few).
    FanIn,
    /// One publisher (or a few), many subscribers on the same topic.
    FanOut,
    /// Publisher/subscriber pairs on their own topics, for latency.
    Pairs,
    /// Idle connections only: connect rate and broker memory per connection.
    Connections,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::FanIn => "fan-in",
            Scenario::FanOut => "fan-out",
            Scenario::Pairs => "pairs",
            Scenario::Connections => "connections",
        }
    }
}

/// A benchmark run. Start from [`BenchConfig::for_scenario`], which fills in that
/// scenario's usual counts.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Which load pattern.
    pub scenario: Scenario,
    /// The broker's MQTT listener (for WebSocket, its HTTP listener).
    pub target: SocketAddr,
    /// Where the subscribers connect instead of `target`: another node of a cluster,
    /// to measure messages crossing between nodes.
    pub subscriber_target: Option<SocketAddr>,
    /// TCP, TLS, or WebSocket over either, for every connection. The TLS configuration
    /// inside is built once and shared by all connections.
    pub transport: Transport,
    /// Protocol version of every connection.
    pub version: ProtocolVersion,
    /// QoS of publishes and subscriptions.
    pub qos: QoS,
    /// Payload size in bytes; at least 8, which carry the send timestamp.
    pub payload: usize,
    /// Length of the measurement (for `connections`, how long the connections are held
    /// after the ramp).
    pub duration: Duration,
    /// Messages per second over all publishers (for `connections`, connection attempts
    /// per second); 0 means as fast as possible.
    pub rate: f64,
    /// Publishing connections (for `pairs`, the number of pairs).
    pub publishers: usize,
    /// Subscribing connections (for `pairs`, always equal to `publishers`).
    pub subscribers: usize,
    /// Idle connections to open (`connections` only).
    pub connections: usize,
    /// QoS 1/2 messages a publisher keeps in flight.
    pub inflight: usize,
    /// Keep-alive of every connection.
    pub keep_alive: Duration,
    /// Connection handshakes in progress at once.
    pub connect_concurrency: usize,
    /// Connections per loopback source address (`connections` against a loopback target).
    pub per_source: usize,
    /// Longest wait after publishing stops for messages still on their way.
    pub drain: Duration,
    /// The broker's process id, to report its memory and CPU from `/proc`.
    pub broker_pid: Option<u32>,
    /// User names and passwords the `connections` scenario logs in with, in turn;
    /// empty connects anonymously.
    pub logins: Vec<(String, String)>,
    /// Subscribers keep persistent sessions (MQTT 3.1.1 clean session 0), so a broker
    /// with durable sessions saves what it queues for them; the sessions are ended
    /// after the run.
    pub persistent_subscribers: bool,
}

impl BenchConfig {
    /// The usual shape of `scenario`: fan-in 100 publishers and 1 subscriber, fan-out 1
    /// publisher and 1,000 subscribers, 100 pairs, 10,000 connections; QoS 0, 64-byte
    /// payloads, 10 seconds, unlimited rate, against `127.0.0.1:1883` over TCP.
    pub fn for_scenario(scenario: Scenario) -> BenchConfig {
        let (publishers, subscribers) = match scenario {
            Scenario::FanIn => (100, 1),
            Scenario::FanOut => (1, 1000),
            Scenario::Pairs => (100, 100),
            Scenario::Connections => (0, 0),
        };
        BenchConfig {
            scenario,
            target: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883),
            subscriber_target: None,
            transport: Transport::Tcp,
            version: ProtocolVersion::V311,
            qos: QoS::AtMostOnce,
            payload: 64,
            duration: Duration::from_secs(10),
            rate: 0.0,
            publishers,
            subscribers,
            connections: 10_000,
            inflight: 64,
            keep_alive: Duration::from_secs(60),
            connect_concurrency: 256,
            per_source: 10_000,
            drain: Duration::from_secs(3),
            broker_pid: None,
            logins: Vec::new(),
            persistent_subscribers: false,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BenchError> {
        let invalid = |text: &str| Err(BenchError::InvalidConfig(text.to_owned()));
        if !self.rate.is_finite() || self.rate < 0.0 {
            return invalid("the rate must be 0 (unlimited) or a positive number");
        }
        if self.duration.is_zero() && self.scenario != Scenario::Connections {
            return invalid("the duration must be more than zero");
        }
        if self.connect_concurrency == 0 || self.inflight == 0 || self.per_source == 0 {
            return invalid(
                "connect concurrency, in-flight window and connections per source must be at least 1",
            );
        }
        match self.scenario {
            Scenario::Connections => {
                if self.connections == 0 {
                    return invalid("the connections scenario needs at least 1 connection");
                }
            }
            Scenario::FanIn | Scenario::FanOut | Scenario::Pairs => {
                if self.payload < 8 {
                    return invalid(
                        "the payload must be at least 8 bytes, which carry the send timestamp",
                    );
                }
                if self.publishers == 0 || self.subscribers == 0 {
                    return invalid("at least 1 publisher and 1 subscriber are needed");
                }
                if self.scenario == Scenario::Pairs && self.publishers != self.subscribers {
                    return invalid("pairs need as many subscribers as publishers");
                }
            }
        }
        Ok(())
    }
}
