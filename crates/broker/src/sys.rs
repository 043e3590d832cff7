//! Housekeeping: the `$SYS/broker/...` topics, the expiry of offline sessions and of
//! retained messages, and the publication of delayed wills when they are due.
//!
//! Topic names follow Mosquitto's, so existing dashboards and scripts that read them
//! keep working.

use std::time::Duration;

use bytes::Bytes;
use fleetwire_mqtt_codec::{QoS, TopicName};

use crate::broker::Broker;

/// How often offline sessions and retained messages are checked for expiry.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

impl Broker {
    /// Publishes `$SYS` topics every `sys_interval`, expires sessions and publishes
    /// delayed wills when due, until [`Broker::shutdown`].
    pub async fn run_housekeeping(&self) {
        let mut shutdown = self.shutdown_signal();
        let sys_interval = self.config().sys_interval;
        let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
        let mut sys = tokio::time::interval(if sys_interval.is_zero() {
            Duration::MAX / 4
        } else {
            sys_interval
        });
        while !*shutdown.borrow_and_update() {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = sweep.tick() => {
                    self.expire_sessions();
                    self.expire_retained();
                    self.snapshot_if_due();
                }
                _ = sys.tick(), if !sys_interval.is_zero() => self.publish_sys(),
                () = self.next_will_due() => self.publish_due_wills(),
            }
        }
    }

    fn publish_sys(&self) {
        let stats = self.stats_snapshot();
        let uptime = format!("{} seconds", self.uptime().as_secs());
        let entries: [(&str, String); 13] = [
            (
                "$SYS/broker/version",
                format!("fleetwire {}", env!("CARGO_PKG_VERSION")),
            ),
            ("$SYS/broker/uptime", uptime),
            (
                "$SYS/broker/clients/connected",
                stats.clients_connected.to_string(),
            ),
            ("$SYS/broker/clients/total", stats.sessions.to_string()),
            (
                "$SYS/broker/messages/received",
                stats.messages_received.to_string(),
            ),
            ("$SYS/broker/messages/sent", stats.messages_sent.to_string()),
            (
                "$SYS/broker/messages/dropped",
                stats.messages_dropped.to_string(),
            ),
            (
                "$SYS/broker/bytes/received",
                stats.bytes_received.to_string(),
            ),
            ("$SYS/broker/bytes/sent", stats.bytes_sent.to_string()),
            (
                "$SYS/broker/subscriptions/count",
                stats.subscriptions.to_string(),
            ),
            (
                "$SYS/broker/retained messages/count",
                stats.retained_messages.to_string(),
            ),
            (
                "$SYS/broker/packets/malformed",
                stats.malformed_packets.to_string(),
            ),
            ("$SYS/broker/sessions/count", stats.sessions.to_string()),
        ];
        for (topic, value) in entries {
            match TopicName::new(topic) {
                Ok(topic) => {
                    self.publish_internal(topic, Bytes::from(value), QoS::AtMostOnce, true);
                }
                Err(error) => tracing::error!(topic, %error, "invalid $SYS topic"),
            }
        }
    }
}
