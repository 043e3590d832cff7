//! Running the broker as one MQTT service over many nodes, on NATS (issue 20): core NATS
//! subjects carry live messages between nodes, JetStream what must be durable and
//! shared. Nothing here is a cluster protocol of our own.
//!
//! So far:
//! - [`Subjects`]: the reversible mapping of MQTT topics and topic filters to NATS
//!   subjects.
//! - Live routing (`live.rs`). Every message published on a node goes to its subject;
//!   each node subscribes, once per distinct filter its sessions hold, to the subjects
//!   of that filter, and routes what arrives to its sessions. No echo: a node never
//!   receives its own messages back. Share groups are NATS queue groups.
//! - QoS 1/2 messages (`durable.rs`) in a JetStream stream, one durable consumer per
//!   node; the publisher is acknowledged once JetStream keeps the message.
//! - Who holds which client id (`sessions.rs`), in a JetStream key-value bucket, and
//!   sessions handed over between nodes.
//! - Retained messages (`retained.rs`) in a JetStream key-value bucket every node
//!   watches into its own retained store; writes go through `writer.rs` (ordered,
//!   pipelined, with tickets the publishers wait for).
//! - The stream and buckets (`kept.rs`), opened once JetStream is ready, on up to three
//!   NATS servers (raised when servers join).
//! - Which nodes are alive (`nodes.rs`), and the wills of the connections open on each
//!   (`wills.rs`), published by another node when theirs is gone.
//! - Each node's broker state copied to JetStream ([`ReplicatedState`], `state.rs`), so
//!   that another node takes up the sessions of a node that died (`orphans.rs`).
//! - [`NatsPeers`]: all of it as the broker's `Peers`, made by [`join`].

mod durable;
mod kept;
mod keys;
mod live;
mod nodes;
mod orphans;
mod peers;
mod retained;
mod sessions;
mod state;
mod subject;
mod totals;
mod wills;
mod writer;

pub use live::{ClusterError, Nats, connect};
pub use peers::{NatsPeers, join};
pub use state::ReplicatedState;
pub use subject::{SubjectError, Subjects};
