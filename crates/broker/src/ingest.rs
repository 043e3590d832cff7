//! The seam between the broker and the platform's write path.
//!
//! The broker knows nothing of telemetry or storage. The platform gives it an [`Ingest`]
//! that says which topics it consumes (`devices/{id}/telemetry`, ...) and takes the
//! messages published there. A connection collects the messages of one read, hands them
//! over together and waits for the verdicts before it sends their `PUBACK`s or `PUBREC`s:
//! an acknowledged message has been accepted by the platform (in `sync` durability, it is
//! on disk). While the platform is busy the connection reads nothing more, so a client
//! that publishes faster than the platform stores is slowed down by TCP, not buffered.
//!
//! Messages are still routed to subscribers as usual, whatever the verdict: the platform
//! is one more consumer, not a filter.

use std::sync::Arc;

use bytes::Bytes;
use fleetwire_mqtt_codec::{QoS, TopicName};

use crate::auth::BoxFuture;

/// A message published to a topic the platform consumes.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The topic it was published to.
    pub topic: TopicName,
    /// The payload, shared with the broker's read buffer (cheap to clone).
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The device the publishing client logged in as; `None` for anonymous clients.
    pub device: Option<Arc<str>>,
}

/// What the platform made of one [`Inbound`] message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (and durable, in `sync` durability).
    Accepted,
    /// The payload cannot be stored: a 5.0 client gets `PUBACK`/`PUBREC` with 0x99
    /// (payload format invalid); a 3.1.1 client, which cannot be told, gets a normal
    /// acknowledgement (the platform counts and records the rejection).
    Invalid,
    /// The platform could not store it (disk full, shutting down). The message is not
    /// acknowledged as accepted: a 5.0 client gets 0x80 (unspecified error), a 3.1.1
    /// connection is closed without an acknowledgement so that the client sends it again.
    Failed,
}

/// The platform's write path, as the broker sees it.
pub trait Ingest: Send + Sync + 'static {
    /// Whether messages on `topic` are handed to [`Ingest::ingest`]. Called for every
    /// `PUBLISH`: must be cheap.
    fn wants(&self, topic: &str) -> bool;

    /// Takes the messages of one read of one connection, in order, and resolves with one
    /// verdict per message once they are accepted or refused. A missing verdict counts as
    /// [`Verdict::Failed`].
    fn ingest(&self, batch: Vec<Inbound>) -> BoxFuture<'static, Vec<Verdict>>;
}

/// The hooks a broker calls into.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Checks credentials; without one only anonymous clients (with `allow_anonymous`)
    /// are admitted.
    pub authenticator: Option<Arc<dyn crate::Authenticator>>,
    /// Takes the messages of the topics it wants.
    pub ingest: Option<Arc<dyn Ingest>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("authenticator", &self.authenticator.is_some())
            .field("ingest", &self.ingest.is_some())
            .finish()
    }
}
