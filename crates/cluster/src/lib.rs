//! Running the broker as one MQTT service over many nodes, on NATS (issue 20): core NATS
//! subjects carry live messages between nodes, JetStream (not yet) what must be durable
//! and shared. Nothing here is a cluster protocol of our own.
//!
//! So far:
//! - [`Subjects`]: the reversible mapping of MQTT topics and topic filters to NATS
//!   subjects.
//! - [`Live`]: live routing. Every message published on a node goes to its subject;
//!   each node subscribes, once per distinct filter its sessions hold, to the subjects
//!   of that filter, and routes what arrives to its sessions. No echo: a node never
//!   receives its own messages back.

mod live;
mod subject;

pub use live::{ClusterError, Live, Nats, connect};
pub use subject::{SubjectError, Subjects};
