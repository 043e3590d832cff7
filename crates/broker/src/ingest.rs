//! The seam between the broker and a consumer of published messages (the platform's
//! write path), and the [`Hooks`] a listener serves its connections with.
//!
//! The broker knows nothing of what the consumer does with a message. Each connection
//! asks the [`Ingest`] for a [`Collector`] of its own and offers it every `PUBLISH` it
//! allows; the collector keeps those it consumes, in whatever form it parsed them into.
//! At the end of each read the connection settles: the collector hands its messages over
//! together and the connection waits for the verdicts before it sends their `PUBACK`s or
//! `PUBREC`s, so an acknowledged message has been accepted by the consumer (in the
//! platform's `sync` durability, it is on disk). While the consumer is busy the
//! connection reads nothing more, so a client that publishes faster than the consumer
//! takes is slowed down by TCP, not buffered.
//!
//! Messages are still routed to subscribers as usual, whatever the verdict: the consumer
//! is one more receiver, not a filter.

use std::sync::Arc;

use bytes::Bytes;
use fleetwire_mqtt_codec::{QoS, TopicName};

use crate::auth::{Authenticator, BoxFuture};

/// A message a client published, as it is offered to a [`Collector`]: borrowed from the
/// connection's read buffer. Clone what you keep (the topic and payload clones share
/// that buffer).
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The topic it was published to.
    pub topic: &'a TopicName,
    /// The payload.
    pub payload: &'a Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The user the publishing client logged in as; `None` for anonymous clients.
    pub user: Option<&'a Arc<str>>,
}

/// What the consumer made of one offered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (and durable, in the platform's `sync` durability).
    Accepted,
    /// The payload cannot be stored: a 5.0 client gets `PUBACK`/`PUBREC` with 0x99
    /// (payload format invalid); a 3.1.1 client, which cannot be told, gets a normal
    /// acknowledgement (the consumer counts and records the rejection).
    Invalid,
    /// The consumer could not store it (disk full, shutting down). The message is not
    /// acknowledged as accepted: a 5.0 client gets 0x80 (unspecified error), a 3.1.1
    /// connection is closed without an acknowledgement so that the client sends it again.
    Failed,
}

/// The verdicts on the messages a [`Collector`] handed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// One verdict per message, in the order they were offered. A missing verdict counts
    /// as [`Verdict::Failed`].
    pub verdicts: Vec<Verdict>,
    /// For an anonymous client (`allow_anonymous`): the user it acts as, named by the
    /// consumer from a message it took. From then until it closes, the connection counts
    /// as one of that user's (presence, [`Broker::disconnect_user`](crate::Broker::disconnect_user)).
    /// Only the first user named for a connection counts; ignored for logged-in clients.
    pub acting_as: Option<Arc<str>>,
}

/// A consumer of published messages, as the broker sees it.
pub trait Ingest: Send + Sync + 'static {
    /// A collector for one connection's messages (made when the connection starts or
    /// resumes).
    fn collector(&self) -> Box<dyn Collector>;
}

/// Collects the messages of one connection for the consumer.
pub trait Collector: Send {
    /// Keeps `message` when the consumer takes messages of its topic; whether it did.
    /// Called for every allowed `PUBLISH` (never for a retransmitted QoS 2 one): must be
    /// cheap.
    fn offer(&mut self, message: Inbound<'_>) -> bool;

    /// Hands over the messages kept since the last call, in order; resolves with one
    /// verdict per message once each is accepted or refused. The connection waits for it
    /// before it reads on, and calls it only after the previous settlement resolved.
    fn settle(&mut self) -> BoxFuture<'static, Settled>;
}

/// What a listener calls into for the connections it serves: given to
/// [`Broker::spawn`](crate::Broker::spawn) or [`Broker::serve`](crate::Broker::serve).
#[derive(Clone, Default)]
pub struct Hooks {
    /// Checks credentials and hears of presence; without one only anonymous clients
    /// (with `allow_anonymous`) are admitted.
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Takes the messages it consumes before they are acknowledged.
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
