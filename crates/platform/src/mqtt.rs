//! The platform's MQTT side, both ways.
//!
//! - To devices: the [`MqttLink`] the platform is given at start, through which commands
//!   and republished alarms go out and devices are disconnected. In one process it is the
//!   broker itself (implemented here for [`Broker`]); in a cluster it will be the nodes the
//!   devices are connected to, so every call may be remote: it resolves later and may fail.
//! - From devices: the broker hooks the platform hands out ([`crate::Platform::mqtt_hooks`]):
//!   device logins ([`DeviceLogins`]: secrets or client certificates checked with the
//!   registry, the device's topic access, presence) and the ingest collector ([`IngestHook`]), which parses each message's topic
//!   once and keeps it until the connection settles its read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fleetwire_broker::{
    Access, Authenticator, BoxFuture, Broker, Collector, Credentials, Denial, Inbound, Ingest,
    PeerCertificate, Settled, StatsSnapshot,
};
use fleetwire_model::{DeviceId, DeviceTopic, Fingerprint};
use fleetwire_mqtt_codec::{QoS, TopicName};
use fleetwire_registry::Registry;
use fleetwire_time::Timestamp;

use crate::error::Result;
use crate::events::{Event, EventHub};
use crate::ingest::{DeviceMessage, Ingest as IngestPath};

/// MQTT counters, as `/metrics` shows them.
pub type MqttStats = StatsSnapshot;

/// What the platform publishes: a command to a device, an alarm republished.
pub struct Outgoing {
    /// The topic.
    pub topic: TopicName,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it is published with.
    pub qos: QoS,
    /// Copies still queued when this has passed are dropped, never sent.
    pub expires_in: Option<Duration>,
    /// Called once, when the first receiving client has the message (acknowledged it, or
    /// was written a QoS 0 copy); never when nobody took it.
    pub on_delivered: Option<Box<dyn FnOnce() + Send>>,
}

impl Outgoing {
    /// A message that does not expire and whose delivery nobody waits for.
    pub fn new(topic: TopicName, payload: Bytes, qos: QoS) -> Outgoing {
        Outgoing {
            topic,
            payload,
            qos,
            expires_in: None,
            on_delivered: None,
        }
    }

    /// The same message, dropped from queues after `after`.
    pub fn expiring_in(self, after: Duration) -> Outgoing {
        Outgoing {
            expires_in: Some(after),
            ..self
        }
    }

    /// The same message, calling `delivered` once the first receiver has it.
    pub fn on_delivered(self, delivered: impl FnOnce() + Send + 'static) -> Outgoing {
        Outgoing {
            on_delivered: Some(Box::new(delivered)),
            ..self
        }
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("topic", &self.topic)
            .field("bytes", &self.payload.len())
            .field("qos", &self.qos)
            .field("expires_in", &self.expires_in)
            .field("is_tracked", &self.on_delivered.is_some())
            .finish()
    }
}

/// How the platform reaches MQTT clients (see the module's notes). Given to
/// [`crate::Platform::start`].
pub trait MqttLink: Send + Sync + 'static {
    /// Publishes `message`; resolves once it is queued for every subscriber, with how many
    /// sessions took it (0: nobody subscribes).
    fn publish(&self, message: Outgoing) -> BoxFuture<'static, Result<usize>>;

    /// Closes every connection of `device`, wherever it is (its credentials were reissued
    /// or it was deleted; 5.0 clients are told "administrative action"); how many.
    fn disconnect(&self, device: &DeviceId) -> BoxFuture<'static, usize>;

    /// The MQTT counters (of this node).
    fn stats(&self) -> MqttStats;

    /// Whether clients are served (false once shutdown began).
    fn is_accepting(&self) -> bool;
}

/// The broker of this process.
impl MqttLink for Broker {
    fn publish(&self, message: Outgoing) -> BoxFuture<'static, Result<usize>> {
        let Outgoing {
            topic,
            payload,
            qos,
            expires_in,
            on_delivered,
        } = message;
        let queued = match on_delivered {
            None if expires_in.is_none() => self.publish_internal(topic, payload, qos, false),
            None => self.publish_tracked(topic, payload, qos, expires_in, || {}),
            Some(delivered) => self.publish_tracked(topic, payload, qos, expires_in, delivered),
        };
        Box::pin(std::future::ready(Ok(queued)))
    }

    fn disconnect(&self, device: &DeviceId) -> BoxFuture<'static, usize> {
        Box::pin(std::future::ready(self.disconnect_user(device.as_str())))
    }

    fn stats(&self) -> MqttStats {
        self.stats_snapshot()
    }

    fn is_accepting(&self) -> bool {
        !self.is_shutting_down()
    }
}

/// What a device may do over MQTT, the other half of the topic contract: publish to its
/// own `devices/{id}/...` topics (not to `devices/{id}` itself), subscribe within its own
/// `devices/{id}/commands/#`.
pub fn device_access(device: &DeviceId) -> Access {
    Access::user(
        device.as_str(),
        [DeviceTopic::publish_filter(device)],
        [DeviceTopic::commands_filter(device)],
    )
}

/// Device logins, by secret or by client certificate; a device gets [`device_access`],
/// and its presence is recorded (registry) and published (live stream).
///
/// - Without a certificate: MQTT user name = device id, password = the device secret
///   (checked by the registry).
/// - With a certificate (its chain was verified by the TLS handshake against the client
///   CA, so it is current and ours): the subject's common name is the device id. A user
///   name, if sent, must equal it; the device must be registered; if it has pinned
///   certificates, this must be one of them. A password, if also sent, is not needed and
///   is ignored: holding the certificate's key is the stronger proof. Any refusal is
///   [`Denial::NotAuthorized`] (the client proved who it is, but may not connect as it).
pub(crate) struct DeviceLogins {
    pub(crate) registry: Registry,
    pub(crate) events: EventHub,
}

impl DeviceLogins {
    async fn by_secret(&self, credentials: Credentials<'_>) -> Result<Access, Denial> {
        // A user name that cannot be a device id, or no password, cannot match.
        let (Some(Ok(device)), Some(password)) = (
            credentials.username.map(DeviceId::new),
            credentials.password,
        ) else {
            return Err(Denial::BadCredentials);
        };
        match self.registry.verify_device_secret(&device, password).await {
            Ok(true) => Ok(device_access(&device)),
            Ok(false) => Err(Denial::BadCredentials),
            Err(error) => {
                tracing::error!(
                    %device,
                    error = &error as &dyn std::error::Error,
                    "cannot check device credentials"
                );
                Err(Denial::Unavailable)
            }
        }
    }

    async fn by_certificate(
        &self,
        credentials: Credentials<'_>,
        certificate: &PeerCertificate,
    ) -> Result<Access, Denial> {
        let Ok(device) = DeviceId::new(certificate.common_name.as_str()) else {
            tracing::debug!(
                common_name = %certificate.common_name,
                "client certificate refused: its common name is not a device id"
            );
            return Err(Denial::NotAuthorized);
        };
        if credentials
            .username
            .is_some_and(|username| username != device.as_str())
        {
            tracing::debug!(%device, "client certificate refused: the user name is another");
            return Err(Denial::NotAuthorized);
        }
        let fingerprint = Fingerprint::from_bytes(certificate.fingerprint);
        match self
            .registry
            .certificate_admits(&device, &fingerprint)
            .await
        {
            Ok(Some(true)) => Ok(device_access(&device)),
            Ok(Some(false)) => {
                tracing::debug!(%device, %fingerprint, "client certificate refused: not pinned");
                Err(Denial::NotAuthorized)
            }
            Ok(None) => {
                tracing::debug!(%device, "client certificate refused: unknown device");
                Err(Denial::NotAuthorized)
            }
            Err(error) => {
                tracing::error!(
                    %device,
                    error = &error as &dyn std::error::Error,
                    "cannot check a device's client certificate"
                );
                Err(Denial::Unavailable)
            }
        }
    }
}

impl Authenticator for DeviceLogins {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Access, Denial>> {
        Box::pin(async move {
            match credentials.certificate {
                Some(certificate) => self.by_certificate(credentials, certificate).await,
                None => self.by_secret(credentials).await,
            }
        })
    }

    fn presence(&self, user: &str, online: bool) {
        let Ok(device) = DeviceId::new(user) else {
            return;
        };
        let at = Timestamp::now();
        self.registry
            .record_presence(&device, online, at.as_millis());
        self.events.publish(Event::Presence {
            device: Arc::from(user),
            online,
            at,
        });
    }
}

/// The platform as the broker's [`Ingest`]: a collector per connection.
pub(crate) struct IngestHook {
    pub(crate) ingest: Arc<IngestPath>,
}

impl Ingest for IngestHook {
    fn collector(&self) -> Box<dyn Collector> {
        Box::new(DeviceMessages {
            ingest: Arc::clone(&self.ingest),
            kept: Vec::new(),
            has_named_user: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// The device messages of one MQTT connection, kept (topics parsed) until the broker
/// settles them.
struct DeviceMessages {
    ingest: Arc<IngestPath>,
    kept: Vec<DeviceMessage>,
    /// Whether a settlement named the device an anonymous client acts as: the broker
    /// keeps the first, so later ones need not look for one. (Set by the settlement's
    /// future; a connection settles one read at a time.)
    has_named_user: Arc<AtomicBool>,
}

impl Collector for DeviceMessages {
    fn offer(&mut self, message: Inbound<'_>) -> bool {
        let Some(message) = DeviceMessage::keep(message) else {
            return false;
        };
        self.kept.push(message);
        true
    }

    fn settle(&mut self) -> BoxFuture<'static, Settled> {
        let ingest = Arc::clone(&self.ingest);
        let batch = std::mem::take(&mut self.kept);
        let has_named_user = Arc::clone(&self.has_named_user);
        Box::pin(async move {
            let wants_user = !has_named_user.load(Ordering::Relaxed);
            let settled = ingest.mqtt(batch, wants_user).await;
            if settled.acting_as.is_some() {
                has_named_user.store(true, Ordering::Relaxed);
            }
            settled
        })
    }
}

#[cfg(test)]
mod tests {
    use fleetwire_model::DeviceId;
    use fleetwire_mqtt_codec::{TopicFilter, TopicName};

    use super::device_access;

    fn d1() -> DeviceId {
        DeviceId::new("d1").expect("a plain-name id")
    }

    #[test]
    fn devices_publish_only_under_their_own_prefix() {
        let access = device_access(&d1());
        assert_eq!(access.user_name().map(|name| &**name), Some("d1"));
        let may_publish =
            |topic: &str| access.may_publish(&TopicName::new(topic).expect("a topic"));
        assert!(may_publish("devices/d1/telemetry"));
        assert!(may_publish("devices/d1/commands/reboot/response"));
        assert!(!may_publish("devices/d1"));
        assert!(!may_publish("devices/d10/telemetry"));
        assert!(!may_publish("devices/d2/telemetry"));
        assert!(!may_publish("other/d1/telemetry"));
    }

    #[test]
    fn devices_subscribe_only_to_their_own_commands() {
        let access = device_access(&d1());
        let allowed =
            |filter: &str| access.may_subscribe(&TopicFilter::new(filter).expect("a filter"));
        assert!(allowed("devices/d1/commands/#"));
        assert!(allowed("devices/d1/commands"));
        assert!(allowed("devices/d1/commands/+"));
        assert!(allowed("devices/d1/commands/reboot"));
        assert!(allowed("$share/g/devices/d1/commands/#"));
        assert!(!allowed("devices/d1/#"));
        assert!(!allowed("devices/d1/commandsX"));
        assert!(!allowed("devices/+/commands/#"));
        assert!(!allowed("devices/d10/commands/#"));
        assert!(!allowed("#"));
        assert!(!allowed("$share/g/#"));
    }
}
