//! The seam between the broker and where its state survives a crash: persistent
//! sessions (their subscriptions, queued and in-flight QoS 1/2 messages, incoming QoS 2
//! state) and retained messages.
//!
//! The broker describes every change to that state as a [`Change`] and hands it to a
//! [`StateStore`] in the order the changes happened; the store makes them durable and
//! gives them back, in the same order, when the broker starts again. Acknowledgements
//! wait for durability: a `PUBACK` or `PUBREC` leaves only once every change its message
//! made (queued for persistent sessions, retained) is durable ([`StateStore::durable`]).
//! Clean sessions and QoS 0 make no changes, so they cost nothing.
//!
//! Replaying changes is idempotent, so that a snapshot taken while the broker runs
//! ([`StateStore::snapshot`]) can be followed by changes it already contains: a queued
//! message is keyed by session and message id (ids are never reused), everything else
//! sets a value. [`EmbeddedState`] keeps changes in a local log (the journal crate);
//! the cluster backs the same trait with NATS JetStream.

mod codec;
mod embedded;

use std::time::SystemTime;

use bytes::Bytes;
use fleetwire_mqtt_codec::{
    PacketId, Properties, QoS, SubscriptionOptions, TopicFilter, TopicName,
};

use crate::auth::BoxFuture;

pub(crate) use codec::{decode as decode_change, encode as encode_change};
pub use embedded::EmbeddedState;

/// Appends `change` to `out` as one framed record (length, checksum, fields), as the
/// embedded store writes it: for a copy of the state kept elsewhere (the cluster's).
pub fn encode_record(change: &Change<'_>, out: &mut Vec<u8>) {
    codec::encode(change, out);
}

/// Hands the change of each framed record in `records` ([`encode_record`]) to
/// `apply`, in order. Fails on a record cut short or damaged, or on what `apply` refuses.
pub fn decode_records(
    records: &[u8],
    apply: &mut dyn FnMut(Change<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut offset = 0;
    loop {
        match fleetwire_journal::record::next(records, offset) {
            fleetwire_journal::record::Next::Record(record, next) => {
                offset = next;
                codec::decode(record, apply)?;
            }
            fleetwire_journal::record::Next::End => return Ok(()),
            fleetwire_journal::record::Next::Torn(detail) => return Err(detail),
        }
    }
}

/// A point in the store's sequence of changes: once it is durable, so is every change
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// What went wrong with the broker's durable state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The embedded log failed (a file operation, or damage it cannot repair).
    #[error(transparent)]
    Log(#[from] fleetwire_journal::Error),
    /// A saved change makes no sense (names the file and what is wrong when it can).
    #[error("corrupt broker state: {0}")]
    Corrupt(String),
    /// The store is not reachable (a remote store), or was shut down.
    #[error("broker state unavailable: {0}")]
    Unavailable(String),
}

/// A message as it is saved: what the broker needs to deliver it again.
#[derive(Debug, Clone, Copy)]
pub struct SavedMessage<'a> {
    /// The topic it was published to.
    pub topic: &'a TopicName,
    /// Its payload.
    pub payload: &'a Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// Whether it was published retained.
    pub is_retained: bool,
    /// The 5.0 properties that travel with it.
    pub properties: &'a Properties,
    /// When it expires (5.0 message expiry), in wall-clock time: the time the broker is
    /// down counts.
    pub expires_at: Option<SystemTime>,
}

/// One session a message was queued for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The session's client id.
    pub client_id: &'a str,
    /// The QoS it is delivered with (1 or 2).
    pub qos: QoS,
    /// Whether it is delivered with the retain flag.
    pub is_retained: bool,
    /// The subscription identifiers it carries.
    pub subscription_ids: &'a [u32],
}

/// One change to the broker's durable state.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Change<'a> {
    /// A persistent session exists (created, resumed, or disconnected at
    /// `disconnected_at`; `None` while connected).
    Session {
        /// Its client id.
        client_id: &'a str,
        /// The user that owns it (only it may resume the session).
        owner: Option<&'a str>,
        /// Session expiry after disconnect, seconds; `u32::MAX` never expires.
        expiry_interval: u32,
        /// 5.0 (true) or 3.1.1.
        is_v5: bool,
        /// When its client disconnected; `None` while connected.
        disconnected_at: Option<SystemTime>,
    },
    /// A session ended: it and everything queued for it are gone.
    SessionEnded {
        /// Its client id.
        client_id: &'a str,
    },
    /// A session subscribed (or changed the options of a subscription).
    Subscribed {
        /// The session's client id.
        client_id: &'a str,
        /// The filter, `$share/...` included.
        filter: &'a TopicFilter,
        /// Its options.
        options: SubscriptionOptions,
        /// Its 5.0 subscription identifier.
        subscription_id: Option<u32>,
    },
    /// A session unsubscribed.
    Unsubscribed {
        /// The session's client id.
        client_id: &'a str,
        /// The filter.
        filter: &'a TopicFilter,
    },
    /// Message `id` was queued for `targets`, in this order after everything queued
    /// for them before. Saved again (same id) when queued again later.
    Queued {
        /// The message's id; never reused.
        id: u64,
        /// The message.
        message: SavedMessage<'a>,
        /// The sessions it is queued for.
        targets: &'a [Target<'a>],
    },
    /// Message `id` of a session was sent as QoS 2 with `packet_id`: after a restart it
    /// is sent again with that id, so the client recognises it.
    Sent {
        /// The session's client id.
        client_id: &'a str,
        /// The message.
        id: u64,
        /// Its packet id.
        packet_id: PacketId,
    },
    /// The client answered `PUBREC` for message `id`: what remains is `PUBREL`.
    Released {
        /// The session's client id.
        client_id: &'a str,
        /// The message.
        id: u64,
    },
    /// Messages `ids` left the session's queue: acknowledged, expired or dropped.
    /// (One change for all the acknowledgements of one read.)
    Removed {
        /// The session's client id.
        client_id: &'a str,
        /// The messages.
        ids: &'a [u64],
    },
    /// The session's client sent QoS 2 message `packet_id`, which was routed and
    /// answered `PUBREC`: a copy sent again is not routed again.
    Received {
        /// The session's client id.
        client_id: &'a str,
        /// The packet id.
        packet_id: PacketId,
    },
    /// The client released QoS 2 message `packet_id` (`PUBREL`).
    Completed {
        /// The session's client id.
        client_id: &'a str,
        /// The packet id.
        packet_id: PacketId,
    },
    /// A retained message was set or replaced.
    Retained {
        /// The message.
        message: SavedMessage<'a>,
    },
    /// The retained message of `topic` was cleared.
    RetainedCleared {
        /// The topic.
        topic: &'a TopicName,
    },
    /// A persistent session's connection ended with a will that waits for its 5.0 will
    /// delay: published at `due_at` unless the session is resumed first.
    WillDelayed {
        /// The session's client id.
        client_id: &'a str,
        /// The will message.
        will: SavedMessage<'a>,
        /// When it is due (wall-clock: the time the broker is down counts).
        due_at: SystemTime,
    },
    /// The delayed will of `client_id` was published or dropped.
    WillSettled {
        /// The session's client id.
        client_id: &'a str,
    },
}

/// Where the broker's state survives a crash. Called from the broker's hot paths (under a
/// session's lock): [`save`](StateStore::save) must only queue the change, never wait.
pub trait StateStore: Send + Sync + 'static {
    /// Queues `change` after every change saved before it; returns the ticket to wait
    /// for its durability. `is_waited` says whether someone will wait for it (an
    /// acknowledgement): a change nobody waits for may reach the disk a little later
    /// (the embedded store: within 100 ms, or with the next waited-for change), as
    /// losing it to a crash loses nothing acknowledged. Fails once the store cannot
    /// promise durability any more.
    fn save(&self, change: Change<'_>, is_waited: bool) -> Result<Ticket, StateError>;

    /// Resolves once every change up to `ticket` is durable.
    fn durable(&self, ticket: Ticket) -> BoxFuture<'static, Result<(), StateError>>;

    /// Hands every saved change to `apply`, in order (at start, before any client is
    /// served). The broker keeps the topics and payloads of saved messages as they are
    /// handed over: they should not be slices of a buffer much larger than the message. An `Err` from `apply` says what is wrong with a change: the store reports
    /// it as corruption, naming where it found it.
    fn load(
        &self,
        apply: &mut dyn FnMut(Change<'_>) -> Result<(), String>,
    ) -> Result<(), StateError>;

    /// Whether enough changes piled up since the last snapshot that one is due.
    fn wants_snapshot(&self) -> bool;

    /// Starts a snapshot: every change saved from now on is kept after it, and
    /// everything saved before is replaced by what the snapshot holds once
    /// [`SnapshotWriter::finish`] returns.
    fn snapshot(&self) -> Result<Box<dyn SnapshotWriter>, StateError>;

    /// Makes everything saved durable and stops (later saves fail).
    fn shutdown(&self) -> Result<(), StateError>;
}

/// Receives the changes that rebuild the live state, for a snapshot.
pub trait SnapshotWriter: Send {
    /// Adds one change.
    fn add(&mut self, change: Change<'_>) -> Result<(), StateError>;

    /// Makes the snapshot durable and drops what it replaces.
    fn finish(self: Box<Self>) -> Result<(), StateError>;
}
