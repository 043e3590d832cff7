//! Running the broker as one MQTT service over many nodes, on NATS (issue 20): core NATS
//! subjects carry live messages between nodes, JetStream what must be durable and
//! shared. Nothing here is a cluster protocol of our own.
//!
//! So far: [`Subjects`], the reversible mapping of MQTT topics and topic filters to NATS
//! subjects that live routing publishes and subscribes on.

mod subject;

pub use subject::{SubjectError, Subjects};
