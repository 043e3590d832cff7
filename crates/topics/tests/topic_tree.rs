//! The subscription tree against the matching rules of MQTT 5.0 section 4.7 and against the
//! codec's reference matcher.

use std::collections::HashMap;

use fleetwire_mqtt_codec::{TopicFilter, TopicName};
use fleetwire_topics::TopicTree;
use proptest::prelude::*;

fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text).expect("test filters are valid")
}

fn topic(text: &str) -> TopicName {
    TopicName::new(text).expect("test topics are valid")
}

/// The keys visited for `topic`, sorted.
fn matches<V>(tree: &TopicTree<&'static str, V>, text: &str) -> Vec<&'static str> {
    let mut keys = Vec::new();
    tree.for_each_match(&topic(text), |key, _| keys.push(*key));
    keys.sort_unstable();
    keys
}

/// `(filter, topic, matches)` rows: the examples of the specification, then edge cases.
const MATCH_TABLE: &[(&str, &str, bool)] = &[
    ("sport/tennis/player1/#", "sport/tennis/player1", true),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/ranking",
        true,
    ),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/score/wimbledon",
        true,
    ),
    ("sport/tennis/player1/#", "sport/tennis/player2", false),
    ("sport/tennis/player1/#", "sport/tennis", false),
    ("sport/#", "sport", true),
    ("sport/#", "sports", false),
    ("#", "sport", true),
    ("#", "anything/at/all", true),
    ("#", "/", true),
    ("sport/tennis/+", "sport/tennis/player1", true),
    ("sport/tennis/+", "sport/tennis/player2", true),
    ("sport/tennis/+", "sport/tennis/player1/ranking", false),
    ("sport/+", "sport", false),
    ("sport/+", "sport/", true),
    ("+", "sport", true),
    ("+", "/finance", false),
    ("+/+", "/finance", true),
    ("/+", "/finance", true),
    ("+/tennis/#", "sport/tennis/player1", true),
    ("+/tennis/#", "sport/tennis", true),
    ("sport/+/player1", "sport/tennis/player1", true),
    ("#", "$SYS/broker/clients", false),
    ("#", "$SYS", false),
    ("+", "$SYS", false),
    ("+/monitor/Clients", "$SYS/monitor/Clients", false),
    ("$SYS/#", "$SYS/monitor/Clients", true),
    ("$SYS/#", "$SYS", true),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
    ("$SYS/+/Clients", "$SYS/monitor/Clients", true),
    ("a/$SYS/+", "a/$SYS/b", true),
    ("a/+/b", "a/$x/b", true),
    ("a/#", "a/$x", true),
    ("a//b", "a//b", true),
    ("a//b", "a/b", false),
    ("a/+/b", "a//b", true),
    ("/", "/", true),
    ("+/+", "/", true),
    ("/#", "/", true),
    ("/#", "a", false),
    ("a/b", "a/b/c", false),
    ("a/b/c", "a/b", false),
    ("a/b", "A/b", false),
    ("$share/g/sensors/+", "sensors/a", true),
    ("$share/g/#", "sensors/a", true),
    ("$share/g/#", "$SYS/a", false),
];

#[test]
fn every_row_of_the_match_table_holds_alone_and_all_together() {
    let mut all = TopicTree::default();
    for (key, &(filter_text, topic_text, expected)) in MATCH_TABLE.iter().enumerate() {
        let mut alone = TopicTree::default();
        alone.insert(&filter(filter_text), "only", ());
        let matched = !matches(&alone, topic_text).is_empty();
        assert_eq!(matched, expected, "{filter_text} vs {topic_text}");
        // The reference matcher agrees with the table, so the table checks the tree.
        assert_eq!(filter(filter_text).matches(&topic(topic_text)), expected);
        all.insert(&filter(filter_text), key, ());
    }
    for &(_, topic_text, _) in MATCH_TABLE {
        let mut visited = Vec::new();
        all.for_each_match(&topic(topic_text), |key, _| visited.push(*key));
        visited.sort_unstable();
        let expected: Vec<_> = MATCH_TABLE
            .iter()
            .enumerate()
            .filter(|(_, (f, _, _))| filter(f).matches(&topic(topic_text)))
            .map(|(key, _)| key)
            .collect();
        assert_eq!(visited, expected, "{topic_text}");
    }
}

#[test]
fn insert_replaces_the_value_for_the_same_filter_and_key() {
    let mut tree = TopicTree::default();
    assert!(tree.is_empty());
    assert_eq!(tree.insert(&filter("a/+"), "s1", 0), None);
    assert_eq!(tree.insert(&filter("a/+"), "s2", 1), None);
    assert_eq!(tree.insert(&filter("a/#"), "s1", 1), None);
    assert_eq!(tree.len(), 3);
    assert_eq!(tree.insert(&filter("a/+"), "s1", 2), Some(0));
    assert_eq!(tree.len(), 3);

    let mut visited = Vec::new();
    tree.for_each_match(&topic("a/b"), |key, qos| visited.push((*key, *qos)));
    visited.sort_unstable();
    assert_eq!(visited, [("s1", 1), ("s1", 2), ("s2", 1)]);
}

#[test]
fn remove_takes_out_only_the_given_filter_and_key() {
    let mut tree = TopicTree::default();
    tree.insert(&filter("a/+"), "s1", 0);
    tree.insert(&filter("a/+"), "s2", 1);
    tree.insert(&filter("a/#"), "s1", 1);
    assert_eq!(tree.remove(&filter("a/+"), &"s1"), Some(0));
    assert_eq!(tree.remove(&filter("a/+"), &"s1"), None);
    assert_eq!(tree.remove(&filter("a/b"), &"s2"), None);
    assert_eq!(tree.len(), 2);
    assert_eq!(matches(&tree, "a/b"), ["s1", "s2"]);
    assert_eq!(tree.remove(&filter("a/#"), &"s1"), Some(1));
    assert_eq!(tree.remove(&filter("a/+"), &"s2"), Some(1));
    assert!(tree.is_empty());
    assert!(matches(&tree, "a/b").is_empty());
}

#[test]
fn a_key_with_overlapping_filters_is_visited_once_per_filter() {
    let mut tree = TopicTree::default();
    for text in ["a/b", "a/+", "a/#", "+/b", "#"] {
        tree.insert(&filter(text), "s1", ());
    }
    assert_eq!(matches(&tree, "a/b"), ["s1"; 5]);
    assert_eq!(matches(&tree, "a/c"), ["s1"; 3]);
}

#[test]
fn shared_subscriptions_are_indexed_under_the_filter_they_match() {
    let mut tree = TopicTree::default();
    tree.insert(&filter("$share/g/x"), "s1", 1);
    assert_eq!(matches(&tree, "x"), ["s1"]);
    assert!(matches(&tree, "$share/g/x").is_empty());
    // Same pattern and key: the same entry, whichever prefix names it.
    assert_eq!(tree.insert(&filter("x"), "s1", 2), Some(1));
    assert_eq!(tree.len(), 1);
    assert_eq!(tree.remove(&filter("$share/other/x"), &"s1"), Some(2));
    assert!(tree.is_empty());
}

#[test]
fn thousands_of_keys_on_one_filter_insert_and_remove_individually() {
    let mut tree = TopicTree::default();
    let broadcast = filter("fleet/broadcast");
    for key in 0..10_000u32 {
        assert_eq!(tree.insert(&broadcast, key, key), None);
    }
    for key in (0..10_000u32).step_by(3) {
        assert_eq!(tree.remove(&broadcast, &key), Some(key));
    }
    let mut visited = Vec::new();
    tree.for_each_match(&topic("fleet/broadcast"), |key, value| {
        assert_eq!(key, value);
        visited.push(*key);
    });
    visited.sort_unstable();
    let expected: Vec<_> = (0..10_000u32).filter(|key| key % 3 != 0).collect();
    assert_eq!(visited, expected);
    assert_eq!(tree.len(), expected.len());
}

/// Levels chosen to collide: the empty level, a `$` level, and two plain ones.
const TOPIC_LEVELS: &[&str] = &["", "a", "b", "$SYS"];

fn topic_strategy() -> impl Strategy<Value = TopicName> {
    proptest::collection::vec(proptest::sample::select(TOPIC_LEVELS), 1..5)
        .prop_filter_map("the empty topic", |levels| {
            TopicName::new(levels.join("/")).ok()
        })
}

fn filter_strategy() -> impl Strategy<Value = TopicFilter> {
    let level = proptest::sample::select(&["", "a", "b", "$SYS", "+"][..]);
    (
        proptest::collection::vec(level, 0..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_filter_map("the empty filter", |(levels, multi, shared)| {
            let mut text = if shared {
                "$share/g/".to_owned()
            } else {
                String::new()
            };
            text.push_str(&levels.join("/"));
            if multi {
                if !levels.is_empty() {
                    text.push('/');
                }
                text.push('#');
            }
            TopicFilter::new(text).ok()
        })
}

#[derive(Debug, Clone)]
enum Operation {
    Insert(TopicFilter, u8, u32),
    Remove(TopicFilter, u8),
}

fn operation_strategy() -> impl Strategy<Value = Operation> {
    prop_oneof![
        (filter_strategy(), 0u8..4, any::<u32>())
            .prop_map(|(filter, key, value)| Operation::Insert(filter, key, value)),
        (filter_strategy(), 0u8..4).prop_map(|(filter, key)| Operation::Remove(filter, key)),
    ]
}

proptest! {
    #[test]
    fn matches_are_exactly_the_entries_the_reference_matcher_accepts(
        entries in proptest::collection::vec((filter_strategy(), 0u8..4), 0..40),
        topics in proptest::collection::vec(topic_strategy(), 1..10),
    ) {
        let mut tree = TopicTree::default();
        // The model: the last value inserted per (pattern, key).
        let mut model = HashMap::new();
        for (index, (filter, key)) in entries.iter().enumerate() {
            tree.insert(filter, *key, index);
            model.insert((filter.pattern().to_owned(), *key), (filter.clone(), index));
        }
        prop_assert_eq!(tree.len(), model.len());
        for topic in &topics {
            let mut visited = Vec::new();
            tree.for_each_match(topic, |key, value| visited.push((*key, *value)));
            visited.sort_unstable();
            let mut expected: Vec<_> = model
                .iter()
                .filter(|(_, (filter, _))| filter.matches(topic))
                .map(|((_, key), (_, value))| (*key, *value))
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(visited, expected, "topic {}", topic);
        }
    }

    #[test]
    fn inserts_and_removes_agree_with_a_map(
        operations in proptest::collection::vec(operation_strategy(), 0..100),
        topics in proptest::collection::vec(topic_strategy(), 1..5),
    ) {
        let mut tree = TopicTree::default();
        let mut model: HashMap<(String, u8), (TopicFilter, u32)> = HashMap::new();
        for operation in operations {
            match operation {
                Operation::Insert(filter, key, value) => {
                    let expected = model
                        .insert((filter.pattern().to_owned(), key), (filter.clone(), value))
                        .map(|(_, value)| value);
                    prop_assert_eq!(tree.insert(&filter, key, value), expected);
                }
                Operation::Remove(filter, key) => {
                    let expected = model
                        .remove(&(filter.pattern().to_owned(), key))
                        .map(|(_, value)| value);
                    prop_assert_eq!(tree.remove(&filter, &key), expected);
                }
            }
            prop_assert_eq!(tree.len(), model.len());
            prop_assert_eq!(tree.is_empty(), model.is_empty());
        }
        for topic in &topics {
            let mut visited = Vec::new();
            tree.for_each_match(topic, |key, value| visited.push((*key, *value)));
            visited.sort_unstable();
            let mut expected: Vec<_> = model
                .iter()
                .filter(|(_, (filter, _))| filter.matches(topic))
                .map(|((_, key), (_, value))| (*key, *value))
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(visited, expected, "topic {}", topic);
        }
    }
}
