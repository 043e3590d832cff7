//! Fleetwire's MQTT broker: TCP listener, sessions, subscriptions with `+`, `#` and
//! `$share`, retained messages, wills, QoS 0/1/2, persistent sessions with bounded
//! offline queues, and `$SYS` statistics.
//!
//! The broker speaks MQTT through [`fleetwire_mqtt_codec`] and indexes subscriptions
//! with [`fleetwire_topics`]; it knows nothing of storage, HTTP or what topics mean. A
//! listener is served with [`Hooks`]: an [`Authenticator`] that admits users and gives
//! each an [`Access`] (topic filters it may publish to and subscribe within), and an
//! [`Ingest`] whose per-connection [`Collector`] takes the messages it consumes before
//! they are acknowledged. See `ARCHITECTURE.md` for who owns which state.
//!
//! ```no_run
//! use fleetwire_broker::{Broker, BrokerConfig, Hooks};
//!
//! # async fn run() -> std::io::Result<()> {
//! let broker = Broker::new(BrokerConfig { allow_anonymous: true, ..BrokerConfig::default() });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1883").await?;
//! let running = broker.spawn(listener, Hooks::default())?;
//! println!("MQTT on {}", running.local_addr());
//! // ... until it is time to stop:
//! broker.shutdown();
//! running.stopped().await
//! # }
//! ```

mod auth;
mod broker;
mod compact;
mod config;
mod connection;
mod durable;
mod handover;
mod ingest;
mod limits;
mod listener;
mod park;
mod peers;
mod redirect;
mod restore;
mod session;
mod stats;
mod sys;
mod will;

pub use auth::{
    Access, Authenticator, BoxFuture, Credentials, Denial, PeerCertificate, UserAccess,
};
pub use broker::Broker;
pub use config::BrokerConfig;
pub use connection::Duplex;
pub use durable::{
    Change, EmbeddedState, SavedMessage, SnapshotWriter, StateError, StateStore, Target, Ticket,
    decode_records, encode_record,
};
pub use fleetwire_journal::Flush;
pub use ingest::{Collector, Hooks, Inbound, Ingest, Settled, Verdict};
pub use limits::{ConnectionPermit, Limits};
pub use listener::{Incoming, Running, StreamSender, Streams};
pub use peers::{
    Claim, Claimed, PeerCongestion, PeerMessage, PeerRouted, PeerTicket, Peers, PeersError,
};
pub use redirect::Redirection;
pub use session::{ClientId, SessionId};
pub use stats::StatsSnapshot;
