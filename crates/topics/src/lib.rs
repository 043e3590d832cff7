//! Topic matching for the Fleetwire broker: the subscription index and the retained-message
//! store, both tries keyed by topic level.
//!
//! - [`TopicTree`] answers "who is subscribed to this topic?" on every publish. Its cost
//!   follows the topic's levels and the wildcard branches that match them, not the number of
//!   subscriptions, and it does not allocate while matching.
//! - [`RetainedStore`] answers "which retained messages does this new subscription get?".
//!
//! Both follow MQTT's matching rules (`+` is one level, `#` is the level before it and every
//! level below, empty levels count, and leading wildcards do not match `$` topics) and take
//! the validated [`TopicName`](fleetwire_mqtt_codec::TopicName) and
//! [`TopicFilter`](fleetwire_mqtt_codec::TopicFilter) of the codec. The crate is synchronous
//! and does no I/O: the broker owns the instances and decides what keys and values mean.
//!
//! ```
//! use fleetwire_mqtt_codec::{TopicFilter, TopicName};
//! use fleetwire_topics::{RetainedStore, TopicTree};
//!
//! # fn main() -> Result<(), fleetwire_mqtt_codec::TopicError> {
//! // Sessions subscribe; the value is the granted QoS.
//! let mut subscriptions = TopicTree::default();
//! subscriptions.insert(&TopicFilter::new("site/+/temperature")?, "dashboard", 0);
//! subscriptions.insert(&TopicFilter::new("site/hq/#")?, "archiver", 1);
//! subscriptions.insert(&TopicFilter::new("#")?, "debugger", 0);
//!
//! let topic = TopicName::new("site/hq/temperature")?;
//! let mut receivers = Vec::new();
//! subscriptions.for_each_match(&topic, |session, qos| receivers.push((*session, *qos)));
//! receivers.sort();
//! assert_eq!(receivers, [("archiver", 1), ("dashboard", 0), ("debugger", 0)]);
//!
//! // `#` does not see `$SYS` topics, but a filter naming `$SYS` does.
//! let mut system = Vec::new();
//! subscriptions.for_each_match(&TopicName::new("$SYS/uptime")?, |session, _| system.push(*session));
//! assert!(system.is_empty());
//!
//! // A retained message is replayed to a later subscription whose filter matches it.
//! let mut retained = RetainedStore::default();
//! retained.insert(&topic, "21.5");
//! let mut replayed = Vec::new();
//! retained.for_each_match(&TopicFilter::new("site/+/temperature")?, |topic, payload| {
//!     replayed.push((topic.as_str(), *payload));
//! });
//! assert_eq!(replayed, [("site/hq/temperature", "21.5")]);
//! # Ok(())
//! # }
//! ```

mod entries;
mod retained;
mod tree;
mod trie;

pub use retained::RetainedStore;
pub use tree::TopicTree;
