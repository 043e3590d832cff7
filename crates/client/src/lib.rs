//! A small, fast async MQTT client over [`fleetwire_mqtt_codec`], used by the fleet
//! simulator, the load generator and tests.
//!
//! One [`Connection`] is one socket driven by the task that owns it: there is no
//! background task and no channel. Sending only encodes into the connection's write
//! buffer ([`Connection::publish`], [`Connection::subscribe`], or
//! [`Connection::publish_template`] for pre-encoded messages); the bytes go out, many
//! packets per system call, while the owner awaits [`Connection::next_event`] or
//! [`Connection::flush`]. Acknowledgements the protocol requires (`PUBACK`, `PUBREC`,
//! `PUBREL`, `PUBCOMP`) and keep-alive pings are sent by the connection itself.
//!
//! The socket carries MQTT over plain TCP, TLS (rustls), or WebSocket over either
//! ([`Transport`], in [`ConnectOptions::transport`]); the connection reads and writes
//! it the same way whatever it is.
//!
//! [`Connection::next_event`] is cancel-safe, so it can sit in a `tokio::select!` next to
//! a timer or a shutdown signal without losing bytes.
//!
//! ```no_run
//! use bytes::Bytes;
//! use fleetwire_client::{ConnectOptions, Connection, Event};
//! use fleetwire_mqtt_codec::{QoS, TopicFilter, TopicName};
//!
//! # async fn run() -> Result<(), fleetwire_client::ClientError> {
//! let options = ConnectOptions {
//!     client_id: "example".to_owned(),
//!     ..ConnectOptions::default()
//! };
//! let (mut connection, _connack) = Connection::connect(&options).await?;
//! let filter = TopicFilter::new("devices/+/telemetry").expect("valid filter");
//! connection.subscribe_and_wait(&[(filter, QoS::AtLeastOnce)]).await?;
//! let topic = TopicName::new("devices/d1/telemetry").expect("valid topic");
//! connection.publish(&topic, Bytes::from_static(b"{\"t\":21.5}"), QoS::AtLeastOnce, false)?;
//! loop {
//!     match connection.next_event().await? {
//!         Event::Publish(message) => println!("{} {:?}", message.topic, message.payload),
//!         Event::PubAck(ack) => println!("acknowledged {}", ack.packet_id.get()),
//!         _ => {}
//!     }
//! }
//! # }
//! ```

mod connection;
mod error;
mod message;
mod options;
mod template;
mod transport;

pub use connection::{Connection, Event, Progress};
pub use error::ClientError;
pub use message::{Ack, Message};
pub use options::ConnectOptions;
pub use template::PublishTemplate;
pub use transport::{TlsOptions, Transport, WebSocketOptions};
