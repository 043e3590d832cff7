//! Fleetwire's application core, between the protocol front-ends (the broker, the HTTP
//! API) and the domain crates (store, registry, formats, rules). [`Platform`] is its one
//! door: the API and the binary call its verbs, the broker calls the hooks it hands out.
//!
//! - **ingest**: device messages from MQTT, JSON from HTTP and InfluxDB line protocol are
//!   parsed, checked against their device and written to the store through one
//!   group-commit writer; nothing is acknowledged before it is durable (in `sync`
//!   durability) and nothing rejected goes unreported;
//! - **events**: what happened (telemetry, presence, alarms, commands), for the live stream;
//! - **automation**: every written row is evaluated by the rule engine; transitions open
//!   and clear alarms, call webhooks, republish on MQTT and send commands;
//! - **commands**: platform → device requests with delivery, answers and deadlines;
//! - **devices and tokens**: the registry's records, with the caches and connections that
//!   follow their changes; devices' pinned client certificates, and their MQTT logins by
//!   secret or by certificate.
//!
//! ```text
//! broker ─hooks──┐
//! HTTP JSON ─────┼─▶ ingest ─▶ writer (group commit) ─▶ store
//! line protocol ─┘                 │ written batches
//!                                  ├─▶ events ─▶ live stream
//!                                  └─▶ rules thread ─▶ actions thread ─▶ alarms, webhooks,
//!                                                          MqttLink ◀─ republish, commands
//! ```
//!
//! ```no_run
//! use std::sync::Arc;
//! use fleetwire_platform::{Platform, PlatformConfig, PlatformDeps};
//! use fleetwire_registry::Registry;
//! use fleetwire_store::{Store, StoreConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let data = std::path::Path::new("./fleetwire-data");
//! let broker = fleetwire_broker::Broker::new(Default::default());
//! let platform = Platform::start(PlatformDeps {
//!     store: Store::open(data.join("telemetry"), StoreConfig::default())?,
//!     registry: Registry::open_in_dir(data).await?,
//!     mqtt: Arc::new(broker.clone()),
//!     config: PlatformConfig::default(),
//! })
//! .await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1883").await?;
//! let running = broker.spawn(listener, platform.mqtt_hooks())?;
//! // ... serve HTTP; at the end:
//! broker.shutdown();
//! running.stopped().await?;
//! platform.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod actions;
mod alarms;
mod automation;
mod batch;
mod certificates;
mod commands;
mod directory;
mod error;
mod events;
mod ingest;
mod mqtt;
mod platform;
mod stats;
mod telemetry;
mod webhook;
mod writer;

pub use batch::{PointBatch, Row};
pub use commands::CommandRequest;
pub use error::{Error, Result};
pub use events::{EVENT_BUFFER, Event, EventHub, EventKinds, Subscription};
pub use fleetwire_formats::Precision;
pub use fleetwire_store::{Aggregation, Sample};
pub use ingest::{IngestError, IngestStats, Source, WriteReport};
pub use mqtt::{MqttLink, MqttStats, Outgoing, device_access};
pub use platform::{DEFAULT_COMMAND_TIMEOUT, Platform, PlatformConfig, PlatformDeps};
pub use stats::{IngestRates, PlatformStats, SourceCounts};
pub use telemetry::{DEFAULT_RANGE, MAX_POINTS, Series, TelemetryQuery};
pub use webhook::{WebhookConfig, WebhookRoots, WebhookStats};
pub use writer::{WriterConfig, WriterStats};
