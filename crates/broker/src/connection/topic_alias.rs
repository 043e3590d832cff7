//! 5.0 topic aliases of one network connection, in both directions: those the client
//! set toward the broker ([`TopicAliases::resolve`], kept in the [`Connection`], parked
//! too, since the client's mapping lives as long as its connection) and those the writer
//! assigns toward the client ([`OutboundAliases`], kept by the writer task).
//!
//! Aliases belong to a network connection, never to a session: a client that resumes
//! its session starts with none either way. Messages are shared (`Arc`) by every
//! session they were queued for, so an alias is never stored in one: it is chosen while
//! the writer encodes the `PUBLISH`.
//!
//! [`Connection`]: super::Connection

use std::collections::HashMap;

use bytestring::ByteString;
use fleetwire_mqtt_codec::{Publish, ReasonCode, TopicName};

use super::Closed;
use crate::compact;

/// A connection's topic aliases that outlive one read: the topics the client bound to
/// aliases, and how many aliases the writer may assign toward it. Boxed in the
/// connection and allocated only for a client that uses aliases.
#[derive(Debug, Default)]
pub(crate) struct TopicAliases {
    /// Alias → topic, as the client set them.
    inbound: HashMap<u16, TopicName>,
    /// The most aliases the writer assigns toward the client: the client's Topic Alias
    /// Maximum, capped by the broker's.
    pub(crate) outbound_maximum: u16,
}

impl TopicAliases {
    /// What a connection keeps for a client that announced `client_maximum` (its
    /// `CONNECT`'s Topic Alias Maximum) to a broker allowing `maximum`; `None` until it
    /// uses aliases if the writer may assign none.
    pub(crate) fn for_client(
        client_maximum: Option<u16>,
        maximum: u16,
    ) -> Option<Box<TopicAliases>> {
        let outbound_maximum = client_maximum.unwrap_or(0).min(maximum);
        (outbound_maximum > 0).then(|| {
            Box::new(TopicAliases {
                inbound: HashMap::new(),
                outbound_maximum,
            })
        })
    }

    /// Gives `publish` its topic if it came by alias, and remembers a topic bound to an
    /// alias (MQTT-3.3.2-7: until the connection ends); strips the alias, which means
    /// nothing past this connection. `maximum` is the Topic Alias Maximum the broker
    /// announced. An alias of 0 or past the maximum is 0x94, an alias never bound used
    /// with an empty topic a protocol error.
    pub(super) fn resolve(
        aliases: &mut Option<Box<TopicAliases>>,
        maximum: u16,
        publish: &mut Publish,
    ) -> Result<(), Closed> {
        let Some(alias) = publish.properties.topic_alias.take() else {
            return Ok(());
        };
        if alias == 0 || alias > maximum {
            return Err(Closed::ProtocolViolation {
                reason: ReasonCode::TOPIC_ALIAS_INVALID,
                detail: "topic alias 0, or above the topic alias maximum of CONNACK (MQTT-3.3.2-9)",
            });
        }
        if publish.topic.is_empty() {
            let known = aliases
                .as_ref()
                .and_then(|aliases| aliases.inbound.get(&alias));
            let Some(topic) = known else {
                return Err(Closed::ProtocolViolation {
                    reason: ReasonCode::PROTOCOL_ERROR,
                    detail: "PUBLISH with an empty topic and a topic alias that was never set",
                });
            };
            publish.topic = topic.clone();
        } else {
            // Kept for the connection's life: not a slice of the read buffer.
            aliases
                .get_or_insert_default()
                .inbound
                .insert(alias, compact::topic(&publish.topic));
        }
        Ok(())
    }

    /// How many aliases the writer may assign toward the client.
    pub(crate) fn outbound_maximum(aliases: &Option<Box<TopicAliases>>) -> u16 {
        aliases
            .as_ref()
            .map_or(0, |aliases| aliases.outbound_maximum)
    }
}

/// How the writer sends the topic of one `PUBLISH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alias {
    /// The topic in full, without an alias.
    None,
    /// The topic in full, binding it to this alias (new, or taken from another topic).
    Bind(u16),
    /// An empty topic with this alias, which the client already knows.
    Known(u16),
}

/// The aliases the writer assigned toward a client on this connection: topic → alias,
/// up to the connection's outbound maximum. When all are taken, a new topic takes the
/// alias of one not used lately (the clock algorithm: one bit per alias, set on use,
/// cleared as the hand passes), so a client reading a few busy topics among many keeps
/// aliases for the busy ones.
#[derive(Debug)]
pub(crate) struct OutboundAliases {
    maximum: u16,
    by_topic: HashMap<ByteString, u16>,
    /// Alias `n` is `slots[n - 1]`.
    slots: Vec<Slot>,
    /// The next slot the clock looks at for a victim.
    hand: usize,
}

#[derive(Debug)]
struct Slot {
    /// `None` once forgotten: the client's binding is stale, the slot free.
    topic: Option<ByteString>,
    is_recently_used: bool,
}

impl OutboundAliases {
    /// The aliases of a writer that may assign up to `maximum`; `None` for 0.
    pub(crate) fn new(maximum: u16) -> Option<OutboundAliases> {
        (maximum > 0).then(|| OutboundAliases {
            maximum,
            by_topic: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
        })
    }

    /// Chooses how to send `topic`, binding an alias to it if it has none.
    pub(crate) fn choose(&mut self, topic: &TopicName) -> Alias {
        if let Some(&alias) = self.by_topic.get(topic.as_str()) {
            if let Some(slot) = self.slots.get_mut(usize::from(alias) - 1) {
                slot.is_recently_used = true;
            }
            return Alias::Known(alias);
        }
        let owned = ByteString::from(topic.as_str());
        if self.slots.len() < usize::from(self.maximum) {
            self.slots.push(Slot {
                topic: Some(owned.clone()),
                is_recently_used: false,
            });
            let Ok(alias) = u16::try_from(self.slots.len()) else {
                return Alias::None;
            };
            self.by_topic.insert(owned, alias);
            return Alias::Bind(alias);
        }
        // Every slot was passed at most twice: the first pass clears the bits.
        for _ in 0..2 * self.slots.len() {
            let index = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let Some(slot) = self.slots.get_mut(index) else {
                break;
            };
            if slot.topic.is_some() && slot.is_recently_used {
                slot.is_recently_used = false;
                continue;
            }
            if let Some(previous) = slot.topic.replace(owned.clone()) {
                self.by_topic.remove(&previous);
            }
            let Ok(alias) = u16::try_from(index + 1) else {
                return Alias::None;
            };
            self.by_topic.insert(owned, alias);
            return Alias::Bind(alias);
        }
        Alias::None
    }

    /// Forgets a binding made by [`OutboundAliases::choose`] whose `PUBLISH` was not
    /// sent after all (too large for the client): the client never learned it.
    pub(crate) fn forget(&mut self, alias: u16) {
        let Some(slot) = usize::from(alias)
            .checked_sub(1)
            .and_then(|index| self.slots.get_mut(index))
        else {
            return;
        };
        if let Some(topic) = slot.topic.take() {
            self.by_topic.remove(&topic);
        }
        slot.is_recently_used = false;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use fleetwire_mqtt_codec::{Properties, QoS};

    use super::*;

    fn topic(text: &str) -> TopicName {
        TopicName::new(text).unwrap()
    }

    fn aliased(text: &str, alias: u16) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: if text.is_empty() {
                TopicName::empty()
            } else {
                topic(text)
            },
            packet_id: None,
            payload: Bytes::from_static(b"x"),
            properties: Properties {
                topic_alias: Some(alias),
                ..Properties::default()
            },
        }
    }

    fn reason(result: Result<(), Closed>) -> Option<ReasonCode> {
        match result {
            Ok(()) => None,
            Err(Closed::ProtocolViolation { reason, .. }) => Some(reason),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_inbound_alias_is_set_with_a_topic_and_used_with_an_empty_one() {
        let mut aliases = None;
        let mut first = aliased("a/b", 3);
        assert_eq!(
            reason(TopicAliases::resolve(&mut aliases, 10, &mut first)),
            None
        );
        assert_eq!(first.topic.as_str(), "a/b");
        assert_eq!(first.properties.topic_alias, None, "the alias is stripped");
        let mut second = aliased("", 3);
        assert_eq!(
            reason(TopicAliases::resolve(&mut aliases, 10, &mut second)),
            None
        );
        assert_eq!(second.topic.as_str(), "a/b");
        // Rebinding an alias replaces its topic.
        let mut rebound = aliased("c", 3);
        assert_eq!(
            reason(TopicAliases::resolve(&mut aliases, 10, &mut rebound)),
            None
        );
        let mut third = aliased("", 3);
        assert_eq!(
            reason(TopicAliases::resolve(&mut aliases, 10, &mut third)),
            None
        );
        assert_eq!(third.topic.as_str(), "c");
    }

    #[test]
    fn inbound_aliases_past_the_maximum_or_never_set_are_refused() {
        let mut aliases = None;
        let cases = [
            (aliased("a", 11), 10, Some(ReasonCode::TOPIC_ALIAS_INVALID)),
            (aliased("a", 1), 0, Some(ReasonCode::TOPIC_ALIAS_INVALID)),
            (aliased("", 2), 10, Some(ReasonCode::PROTOCOL_ERROR)),
        ];
        for (mut publish, maximum, expected) in cases {
            let got = reason(TopicAliases::resolve(&mut aliases, maximum, &mut publish));
            assert_eq!(got, expected, "{publish:?} with maximum {maximum}");
        }
    }

    #[test]
    fn outbound_aliases_bind_once_then_send_empty_topics() {
        let mut aliases = OutboundAliases::new(2).unwrap();
        assert_eq!(aliases.choose(&topic("a")), Alias::Bind(1));
        assert_eq!(aliases.choose(&topic("a")), Alias::Known(1));
        assert_eq!(aliases.choose(&topic("b")), Alias::Bind(2));
        assert_eq!(aliases.choose(&topic("b")), Alias::Known(2));
        assert!(OutboundAliases::new(0).is_none());
    }

    #[test]
    fn when_all_outbound_aliases_are_taken_one_not_used_lately_is_rebound() {
        let mut aliases = OutboundAliases::new(2).unwrap();
        aliases.choose(&topic("busy"));
        aliases.choose(&topic("quiet"));
        aliases.choose(&topic("busy")); // used again: keeps its alias
        assert_eq!(aliases.choose(&topic("new")), Alias::Bind(2));
        assert_eq!(aliases.choose(&topic("busy")), Alias::Known(1));
        assert_eq!(aliases.choose(&topic("new")), Alias::Known(2));
        // "quiet" lost its alias: it is bound again, to whichever was not used lately.
        assert!(matches!(aliases.choose(&topic("quiet")), Alias::Bind(_)));
    }

    #[test]
    fn a_forgotten_binding_is_bound_again_with_its_topic() {
        let mut aliases = OutboundAliases::new(1).unwrap();
        assert_eq!(aliases.choose(&topic("a")), Alias::Bind(1));
        aliases.forget(1);
        assert_eq!(aliases.choose(&topic("a")), Alias::Bind(1));
        assert_eq!(aliases.choose(&topic("a")), Alias::Known(1));
        assert_eq!(aliases.choose(&topic("b")), Alias::Bind(1));
    }
}
