//! Fleetwire's application core, between the protocol front-ends (the broker, the HTTP
//! API) and the domain crates (store, registry, formats, rules):
//!
//! - **ingest**: device messages from MQTT, JSON from HTTP and InfluxDB line protocol are
//!   parsed, checked against their device and written to the store through one
//!   group-commit writer; nothing is acknowledged before it is durable (in `sync`
//!   durability) and nothing rejected goes unreported;
//! - **events**: what happened (telemetry, presence, alarms, commands), for the live stream;
//! - **automation**: every written row is evaluated by the rule engine; transitions open
//!   and clear alarms, call webhooks, republish on MQTT and send commands;
//! - **commands**: platform → device requests with delivery, answers and deadlines.
//!
//! ```text
//! broker ─Ingest─┐
//! HTTP JSON ─────┼─▶ ingest ─▶ writer (group commit) ─▶ store
//! line protocol ─┘                 │ written batches
//!                                  ├─▶ events ─▶ live stream
//!                                  └─▶ rules task ─▶ actions task ─▶ alarms, webhooks,
//!                                                                  republish, commands
//! ```
//!
//! ```no_run
//! use fleetwire_platform::{Platform, PlatformConfig};
//! use fleetwire_registry::Registry;
//! use fleetwire_store::{Store, StoreConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let data = std::path::Path::new("./fleetwire-data");
//! let store = Store::open(data.join("telemetry"), StoreConfig::default())?;
//! let registry = Registry::open_in_dir(data).await?;
//! let platform = Platform::start(store, registry, PlatformConfig::default()).await?;
//! let broker = fleetwire_broker::Broker::new(Default::default());
//! platform.attach_broker(broker.clone());
//! let hooks = fleetwire_broker::Hooks {
//!     ingest: Some(platform.mqtt_ingest()),
//!     ..Default::default()
//! };
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1883").await?;
//! let _running = broker.spawn(listener, hooks)?;
//! // ... serve HTTP; at the end:
//! platform.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod automation;
mod batch;
mod commands;
mod directory;
mod error;
mod events;
mod ingest;
mod platform;
mod webhook;
mod writer;

pub use batch::{PointBatch, Row};
pub use commands::CommandRequest;
pub use error::{Error, Result};
pub use events::{EVENT_BUFFER, Event, EventHub, EventKinds, Subscription};
pub use fleetwire_model::DeviceInfo;
pub use ingest::{IngestError, IngestStats, Source, WriteReport, device_access};
pub use platform::{
    DEFAULT_COMMAND_TIMEOUT, IngestRates, Platform, PlatformConfig, PlatformStats, SourceCounts,
};
pub use webhook::{WebhookConfig, WebhookRoots, WebhookStats};
pub use writer::{WriterConfig, WriterStats};
