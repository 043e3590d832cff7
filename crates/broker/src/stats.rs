//! Broker-wide counters, read by `$SYS` topics and (later) Prometheus metrics.
//!
//! Plain relaxed atomics: each is an independent count, and readers only need a recent
//! value, not a consistent snapshot across counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters updated on the hot path by connections and the router.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) clients_connected: AtomicU64,
    pub(crate) clients_parked: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_dropped: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) malformed_packets: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) connections_refused_total: AtomicU64,
    pub(crate) connections_refused_per_address: AtomicU64,
    pub(crate) connections_refused_rate: AtomicU64,
    pub(crate) publish_rate_exceeded: AtomicU64,
    pub(crate) subscriptions_refused: AtomicU64,
    pub(crate) queued_bytes_dropped: AtomicU64,
    pub(crate) messages_too_large: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections that completed `CONNECT` and are still open.
    pub clients_connected: u64,
    /// Of those, connections parked while idle (held by their listener, without tasks).
    pub clients_parked: u64,
    /// Sessions known to the broker, connected or not.
    pub sessions: u64,
    /// `PUBLISH` packets received from clients.
    pub messages_received: u64,
    /// `PUBLISH` packets written to clients.
    pub messages_sent: u64,
    /// Messages not delivered because a client's queue was full.
    pub messages_dropped: u64,
    /// Bytes read from client sockets.
    pub bytes_received: u64,
    /// Bytes written to client sockets.
    pub bytes_sent: u64,
    /// Connections closed for malformed or illegal packets.
    pub malformed_packets: u64,
    /// `CONNECT`s refused for missing or wrong credentials, or rate-limited.
    pub auth_failures: u64,
    /// Subscriptions across all sessions.
    pub subscriptions: u64,
    /// Retained messages stored.
    pub retained_messages: u64,
    /// Open connections, from accept to close (handshakes and parked ones included).
    pub connections_open: u64,
    /// Connections closed at accept: `max_connections` reached.
    pub connections_refused_total: u64,
    /// Connections closed at accept: their address had `max_connections_per_address`.
    pub connections_refused_per_address: u64,
    /// Connections closed at accept: their address opened connections too fast.
    pub connections_refused_rate: u64,
    /// `PUBLISH` packets past their client's budget: a 5.0 client is disconnected
    /// with 0x96, a 3.1.1 client's packet waits (and the client is not read) until the
    /// budget allows it.
    pub publish_rate_exceeded: u64,
    /// Subscriptions refused because the session had `max_subscriptions`.
    pub subscriptions_refused: u64,
    /// Messages not queued because their session had `max_queued_bytes` waiting (also
    /// counted in `messages_dropped`).
    pub queued_bytes_dropped: u64,
    /// Messages not sent to a 5.0 client because their `PUBLISH` was larger than the
    /// client's Maximum Packet Size (also counted in `messages_dropped`).
    pub messages_too_large: u64,
}

pub(crate) fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

pub(crate) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
