//! Prometheus text exposition of the broker's counters.

use std::fmt::Write;

use fleetwire_broker::Broker;

/// Renders every metric in the Prometheus text format (version 0.0.4).
pub(crate) fn render(broker: &Broker) -> String {
    let stats = broker.stats_snapshot();
    let metrics: [(&str, &str, &str, u64); 11] = [
        (
            "fleetwire_mqtt_clients_connected",
            "gauge",
            "MQTT connections that completed CONNECT",
            stats.clients_connected,
        ),
        (
            "fleetwire_mqtt_sessions",
            "gauge",
            "MQTT sessions, connected or persistent",
            stats.sessions,
        ),
        (
            "fleetwire_mqtt_subscriptions",
            "gauge",
            "MQTT subscriptions across all sessions",
            stats.subscriptions,
        ),
        (
            "fleetwire_mqtt_retained_messages",
            "gauge",
            "Retained MQTT messages",
            stats.retained_messages,
        ),
        (
            "fleetwire_mqtt_messages_received_total",
            "counter",
            "PUBLISH packets received from clients",
            stats.messages_received,
        ),
        (
            "fleetwire_mqtt_messages_sent_total",
            "counter",
            "PUBLISH packets sent to clients",
            stats.messages_sent,
        ),
        (
            "fleetwire_mqtt_messages_dropped_total",
            "counter",
            "Messages dropped because a client queue was full",
            stats.messages_dropped,
        ),
        (
            "fleetwire_mqtt_bytes_received_total",
            "counter",
            "Bytes read from MQTT clients",
            stats.bytes_received,
        ),
        (
            "fleetwire_mqtt_bytes_sent_total",
            "counter",
            "Bytes written to MQTT clients",
            stats.bytes_sent,
        ),
        (
            "fleetwire_mqtt_malformed_packets_total",
            "counter",
            "Connections closed for malformed or illegal packets",
            stats.malformed_packets,
        ),
        (
            "fleetwire_uptime_seconds",
            "gauge",
            "Seconds since the broker started",
            broker.uptime().as_secs(),
        ),
    ];
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in metrics {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
    out
}
