//! MQTT topics as NATS subjects, and back.
//!
//! A topic `a/b/c` is the subject `{prefix}.a.b.c`: one token per level. What NATS
//! reserves inside a token is escaped as `%XX` (the bytes of the character, in hex): the
//! separator `.`, the wildcards `*` and `>`, white space and control characters, and `%`
//! itself. An empty level (`a//b`, `/a`) is the token `%` alone, which no escaped level
//! can be. So every topic has exactly one subject and every subject made here gives its
//! topic back ([`Subjects::topic`]).
//!
//! A filter's `+` is `*` and its `#` is `>`; since MQTT's `#` also matches its parent
//! level (`a/#` matches `a`) and NATS's `>` does not, such a filter needs two
//! subscriptions (`{prefix}.a` and `{prefix}.a.>`). NATS does not know MQTT's rule that a
//! filter starting with a wildcard does not match topics starting with `$`: a node
//! receiving a message routes it through its own subscriptions, which apply MQTT's rules.

use fleetwire_mqtt_codec::{TopicFilter, TopicName};
use smallvec::SmallVec;

/// The token of an empty level.
const EMPTY_LEVEL: &str = "%";

/// Maps topics and filters to subjects under a prefix of one or more tokens (such as
/// `fw.mqtt`), so that other traffic on the same NATS is apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    /// The prefix and its separator: `fw.mqtt.`.
    prefix: String,
}

/// A subject that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// It does not start with the prefix.
    #[error("subject {0:?} is not under this cluster's prefix")]
    OtherPrefix(String),
    /// A token is not a level escaped by [`Subjects::subject`].
    #[error("subject {subject:?}: {detail}")]
    Malformed {
        /// The subject.
        subject: String,
        /// What is wrong.
        detail: &'static str,
    },
}

impl Subjects {
    /// Subjects under `prefix`: tokens separated by `.`, each non-empty, without
    /// wildcards or white space (checked: `None` otherwise).
    pub fn new(prefix: &str) -> Option<Subjects> {
        let is_valid = prefix.split('.').all(|token| {
            !token.is_empty()
                && !token
                    .chars()
                    .any(|c| c == '*' || c == '>' || is_reserved_space(c))
        });
        is_valid.then(|| Subjects {
            prefix: format!("{prefix}."),
        })
    }

    /// The subject of `topic`.
    pub fn subject(&self, topic: &TopicName) -> String {
        let text = topic.as_str();
        let mut subject = String::with_capacity(self.prefix.len() + text.len() + 8);
        subject.push_str(&self.prefix);
        for (index, level) in text.split('/').enumerate() {
            if index > 0 {
                subject.push('.');
            }
            push_level(&mut subject, level);
        }
        subject
    }

    /// The subjects to subscribe to for `filter` (its topic pattern: a shared
    /// subscription's group is the caller's, as a NATS queue group). One, or two for a
    /// filter ending in `/#`.
    pub fn filter_subjects(&self, filter: &TopicFilter) -> SmallVec<[String; 2]> {
        let mut subject = self.prefix.clone();
        let mut parent_len = None;
        for (index, level) in filter.pattern().split('/').enumerate() {
            if index > 0 {
                subject.push('.');
            }
            match level {
                "+" => subject.push('*'),
                "#" => {
                    // (`#` is last: the filter was validated.)
                    parent_len = (index > 0).then(|| subject.len() - 1);
                    subject.push('>');
                }
                level => push_level(&mut subject, level),
            }
        }
        let mut subjects = SmallVec::new();
        if let Some(length) = parent_len {
            subjects.push(subject[..length].to_owned());
        }
        subjects.push(subject);
        subjects
    }

    /// The NATS queue group of the MQTT share group `group` (`$share/{group}/...`): its
    /// name escaped as a topic level is (NATS refuses white space in a queue name).
    /// Every node's members of a group, whatever their filters, are one queue group,
    /// so each message goes to one member cluster-wide, as within one node.
    pub fn queue_group(&self, group: &str) -> String {
        token(group)
    }

    /// The topic a subject made by [`Subjects::subject`] stands for.
    pub fn topic(&self, subject: &str) -> Result<TopicName, SubjectError> {
        let tokens = subject
            .strip_prefix(&self.prefix)
            .ok_or_else(|| SubjectError::OtherPrefix(subject.to_owned()))?;
        let malformed = |detail| SubjectError::Malformed {
            subject: subject.to_owned(),
            detail,
        };
        let mut topic = Vec::with_capacity(tokens.len());
        for (index, token) in tokens.split('.').enumerate() {
            if index > 0 {
                topic.push(b'/');
            }
            if token == EMPTY_LEVEL {
                continue;
            }
            let mut bytes = token.bytes();
            while let Some(byte) = bytes.next() {
                match byte {
                    b'%' => {
                        let high = bytes.next().and_then(hex_value);
                        let low = bytes.next().and_then(hex_value);
                        let (Some(high), Some(low)) = (high, low) else {
                            return Err(malformed("% not followed by two hex digits"));
                        };
                        topic.push(high << 4 | low);
                    }
                    b'*' | b'>' => return Err(malformed("a wildcard where a topic was expected")),
                    byte => topic.push(byte),
                }
            }
            if token.is_empty() {
                return Err(malformed("an empty token"));
            }
        }
        let text = String::from_utf8(topic).map_err(|_| malformed("escapes that are not UTF-8"))?;
        TopicName::new(text).map_err(|_| malformed("not a valid MQTT topic name"))
    }
}

/// Appends `level` as one token.
/// The subjects of one cluster, under its prefix (`fleetwire`): apart from each other,
/// so that no topic's subject is another kind's.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSubjects {
    /// `{prefix}.mqtt.{topic}`: every message, live (core NATS, at most once).
    pub(crate) live: Subjects,
    /// `{prefix}.durable.`: QoS 1/2 messages in JetStream, batched, on one subject per
    /// publishing node.
    durable: String,
    /// `{prefix}.node.`: what one node asks another.
    node: String,
    /// `{prefix}.state.`: each node's copy of its broker state, in JetStream.
    state: String,
}

impl ClusterSubjects {
    /// The subjects under `prefix` (checked as [`Subjects::new`] checks it).
    pub(crate) fn new(prefix: &str) -> Option<ClusterSubjects> {
        Some(ClusterSubjects {
            live: Subjects::new(&format!("{prefix}.mqtt"))?,
            durable: format!("{prefix}.durable."),
            node: format!("{prefix}.node."),
            state: format!("{prefix}.state."),
        })
    }

    /// The subject `name` of node `node`'s copy of its broker state.
    pub(crate) fn state(&self, node: &str, name: &str) -> String {
        format!("{}{}.{name}", self.state, token(node))
    }

    /// Every subject of node `node`'s copy of its broker state.
    pub(crate) fn node_state(&self, node: &str) -> String {
        format!("{}{}.>", self.state, token(node))
    }

    /// Every node's copy of its broker state.
    pub(crate) fn every_state(&self) -> String {
        format!("{}>", self.state)
    }

    /// The subject node `node` writes its QoS 1/2 messages to.
    pub(crate) fn durable(&self, node: &str) -> String {
        format!("{}{}", self.durable, token(node))
    }

    /// The subject that stands for every node's QoS 1/2 messages.
    pub(crate) fn every_durable(&self) -> String {
        format!("{}>", self.durable)
    }

    /// The subject that stands for `name` of every node.
    pub(crate) fn every_node(&self, name: &str) -> String {
        format!("{}*.{name}", self.node)
    }

    /// The subject node `node` answers `name` requests of other nodes on.
    pub(crate) fn node(&self, node: &str, name: &str) -> String {
        format!("{}{}.{name}", self.node, token(node))
    }
}

/// `text` as one subject token, escaped as a topic level is.
pub(crate) fn token(text: &str) -> String {
    let mut token = String::with_capacity(text.len());
    push_level(&mut token, text);
    token
}

fn push_level(subject: &mut String, level: &str) {
    if level.is_empty() {
        subject.push_str(EMPTY_LEVEL);
        return;
    }
    for c in level.chars() {
        if c == '.' || c == '*' || c == '>' || c == '%' || is_reserved_space(c) {
            let mut utf8 = [0u8; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                subject.push('%');
                subject.push(HEX[usize::from(byte >> 4)]);
                subject.push(HEX[usize::from(byte & 0xF)]);
            }
        } else {
            subject.push(c);
        }
    }
}

const HEX: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'A', 'B', 'C', 'D', 'E', 'F',
];

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Characters a NATS token must not hold: white space, and control characters (kept out
/// of subjects altogether).
fn is_reserved_space(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subjects() -> Subjects {
        Subjects::new("fw.mqtt").unwrap()
    }

    #[test]
    fn share_groups_are_queue_groups_without_white_space() {
        let subjects = subjects();
        assert_eq!(subjects.queue_group("workers"), "workers");
        assert_eq!(subjects.queue_group("a b.c"), "a%20b%2Ec");
        assert_ne!(subjects.queue_group("a b"), subjects.queue_group("a%20b"));
    }

    fn topic(text: &str) -> TopicName {
        TopicName::new(text.to_owned()).unwrap()
    }

    fn filter(text: &str) -> TopicFilter {
        TopicFilter::new(text.to_owned()).unwrap()
    }

    /// NATS's matching, as its documentation gives it: `*` one token, `>` one or more
    /// tokens at the end.
    fn nats_matches(pattern: &str, subject: &str) -> bool {
        let mut subject_tokens = subject.split('.');
        for token in pattern.split('.') {
            match (token, subject_tokens.next()) {
                (">", Some(_)) => return true,
                ("*", Some(_)) => {}
                (token, Some(other)) if token == other => {}
                _ => return false,
            }
        }
        subject_tokens.next().is_none()
    }

    #[test]
    fn reserved_characters_and_empty_levels_are_escaped() {
        let subjects = subjects();
        assert_eq!(subjects.subject(&topic("a/b/c")), "fw.mqtt.a.b.c");
        assert_eq!(
            subjects.subject(&topic("v1.2/*/>/x y/100%/é")),
            "fw.mqtt.v1%2E2.%2A.%3E.x%20y.100%25.é"
        );
        assert_eq!(subjects.subject(&topic("/a//b/")), "fw.mqtt.%.a.%.b.%");
        assert_eq!(
            subjects.subject(&topic("$SYS/broker")),
            "fw.mqtt.$SYS.broker"
        );
        for text in ["v1.2/*/>/x y/100%/é", "/a//b/", "/", "%/%25", "tab\there"] {
            assert_eq!(
                subjects.topic(&subjects.subject(&topic(text))).unwrap(),
                topic(text)
            );
        }
    }

    #[test]
    fn filters_become_wildcards_and_hash_also_matches_its_parent() {
        let subjects = subjects();
        let of = |text| subjects.filter_subjects(&filter(text)).into_vec();
        assert_eq!(of("a/+/c"), ["fw.mqtt.a.*.c"]);
        assert_eq!(of("a/#"), ["fw.mqtt.a", "fw.mqtt.a.>"]);
        assert_eq!(of("#"), ["fw.mqtt.>"]);
        assert_eq!(of("+/#"), ["fw.mqtt.*", "fw.mqtt.*.>"]);
        assert_eq!(of("/#"), ["fw.mqtt.%", "fw.mqtt.%.>"]);
        assert_eq!(of("$share/group/a/+"), ["fw.mqtt.a.*"]);
        assert_eq!(of("x.y/#"), ["fw.mqtt.x%2Ey", "fw.mqtt.x%2Ey.>"]);
    }

    #[test]
    fn foreign_and_damaged_subjects_are_refused() {
        let subjects = subjects();
        for (subject, is_other) in [
            ("other.a", true),
            ("fw.mqttx.a", true),
            ("fw.mqtt.a..b", false),
            ("fw.mqtt.a.%2", false),
            ("fw.mqtt.a.%zz", false),
            ("fw.mqtt.a.*", false),
            ("fw.mqtt.%FF", false),
        ] {
            let error = subjects.topic(subject).unwrap_err();
            assert_eq!(
                matches!(error, SubjectError::OtherPrefix(_)),
                is_other,
                "{subject}: {error}"
            );
        }
        assert!(Subjects::new("fw..x").is_none());
        assert!(Subjects::new("fw.*").is_none());
        assert!(Subjects::new("fw mqtt").is_none());
    }

    /// Levels made of what needs care: separators, wildcards, `%`, white space, empty.
    fn level() -> impl Strategy<Value = String> {
        proptest::string::string_regex("([a-c.*>% \t$é]|%2E|%25){0,4}").unwrap()
    }

    fn topic_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("a topic is not empty", |text| !text.is_empty())
    }

    proptest! {
        #[test]
        fn every_topic_comes_back_from_its_subject(text in topic_text()) {
            let subjects = subjects();
            let topic = topic(&text);
            let subject = subjects.subject(&topic);
            for token in subject.split('.') {
                prop_assert!(!token.is_empty(), "{subject}");
                prop_assert!(!token.contains(['*', '>', ' ', '\t']), "{subject}");
            }
            prop_assert_eq!(subjects.topic(&subject), Ok(topic));
        }

        /// A filter's subjects match a topic's subject exactly when the filter matches the
        /// topic, but for MQTT's `$` rule, which the receiving node applies.
        #[test]
        fn subjects_match_as_the_filter_does(
            text in topic_text(),
            other in topic_text(),
            is_own in any::<bool>(),
            wildcards in proptest::collection::vec(any::<bool>(), 5),
            is_hash in any::<bool>(),
            cut in 0usize..5,
        ) {
            // A filter made from the topic itself (mostly matching) or from another.
            let base = if is_own { &text } else { &other };
            let levels: Vec<&str> = base.split('/').collect();
            let cut = cut.min(levels.len());
            let mut pattern: Vec<&str> = levels
                .iter()
                .zip(&wildcards)
                .map(|(level, &is_plus)| if is_plus { "+" } else { *level })
                .collect();
            if is_hash {
                pattern.truncate(cut);
                pattern.push("#");
            }
            let filter = filter(&pattern.join("/"));
            let subjects = subjects();
            let topic = topic(&text);
            let subject = subjects.subject(&topic);
            let by_nats = subjects
                .filter_subjects(&filter)
                .iter()
                .any(|pattern| nats_matches(pattern, &subject));
            let is_dollar_rule = text.starts_with('$') && (pattern[0] == "+" || pattern[0] == "#");
            if is_dollar_rule {
                // NATS delivers more; the receiving node's own matching drops it.
                prop_assert!(by_nats || !filter.matches(&topic), "{} {}", filter.as_str(), text);
            } else {
                prop_assert_eq!(by_nats, filter.matches(&topic), "{} {}", filter.as_str(), text);
            }
        }
    }
}
