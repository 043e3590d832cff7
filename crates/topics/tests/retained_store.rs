//! The retained-message store against the matching rules of MQTT 5.0 section 4.7 and against
//! the codec's reference matcher.

use std::collections::HashMap;

use fleetwire_mqtt_codec::{TopicFilter, TopicName};
use fleetwire_topics::RetainedStore;
use proptest::prelude::*;

fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text).expect("test filters are valid")
}

fn topic(text: &str) -> TopicName {
    TopicName::new(text).expect("test topics are valid")
}

/// The retained topics `filter_text` matches, sorted.
fn matches<V>(store: &RetainedStore<V>, filter_text: &str) -> Vec<String> {
    let mut topics = Vec::new();
    store.for_each_match(&filter(filter_text), |topic, _| {
        topics.push(topic.as_str().to_owned());
    });
    topics.sort_unstable();
    topics
}

const RETAINED: &[&str] = &[
    "sport",
    "sport/",
    "sport/tennis",
    "sport/tennis/player1",
    "sport/tennis/player1/ranking",
    "sport/tennis/player1/score/wimbledon",
    "sport/tennis/player2",
    "/finance",
    "/",
    "a//b",
    "$SYS",
    "$SYS/monitor/Clients",
    "$SYS/broker/clients",
];

/// `(filter, retained topics it replays)`.
const REPLAY_TABLE: &[(&str, &[&str])] = &[
    (
        "sport/tennis/player1/#",
        &[
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ],
    ),
    (
        "sport/tennis/+",
        &["sport/tennis/player1", "sport/tennis/player2"],
    ),
    ("sport/+", &["sport/", "sport/tennis"]),
    ("+", &["sport"]),
    ("+/+", &["/", "/finance", "sport/", "sport/tennis"]),
    ("/+", &["/", "/finance"]),
    ("a/+/b", &["a//b"]),
    ("+/monitor/Clients", &[]),
    (
        "$SYS/#",
        &["$SYS", "$SYS/broker/clients", "$SYS/monitor/Clients"],
    ),
    ("$SYS/monitor/+", &["$SYS/monitor/Clients"]),
    ("$SYS", &["$SYS"]),
    ("sport/tennis", &["sport/tennis"]),
    ("sport/tennis/player3", &[]),
    (
        "$share/g/sport/tennis/+",
        &["sport/tennis/player1", "sport/tennis/player2"],
    ),
];

fn spec_store() -> RetainedStore<usize> {
    let mut store = RetainedStore::default();
    for (value, text) in RETAINED.iter().enumerate() {
        store.insert(&topic(text), value);
    }
    store
}

#[test]
fn every_row_of_the_replay_table_holds() {
    let store = spec_store();
    for &(filter_text, expected) in REPLAY_TABLE {
        let mut expected: Vec<_> = expected.iter().map(|text| (*text).to_owned()).collect();
        expected.sort_unstable();
        assert_eq!(matches(&store, filter_text), expected, "{filter_text}");
    }
}

#[test]
fn a_leading_multi_level_wildcard_replays_everything_but_system_topics() {
    let store = spec_store();
    let mut expected: Vec<_> = RETAINED
        .iter()
        .filter(|text| !text.starts_with('$'))
        .map(|text| (*text).to_owned())
        .collect();
    expected.sort_unstable();
    assert_eq!(matches(&store, "#"), expected);
}

#[test]
fn insert_get_and_remove_work_by_exact_topic() {
    let mut store = RetainedStore::default();
    assert!(store.is_empty());
    assert_eq!(store.insert(&topic("a/b"), 1), None);
    assert_eq!(store.insert(&topic("a/b"), 2), Some(1));
    assert_eq!(store.insert(&topic("a"), 3), None);
    assert_eq!(store.len(), 2);
    assert_eq!(store.get(&topic("a/b")), Some(&2));
    assert_eq!(store.get(&topic("a")), Some(&3));
    assert_eq!(store.get(&topic("a/b/c")), None);
    assert_eq!(store.get(&topic("a/")), None);
    assert_eq!(store.remove(&topic("a")), Some(3));
    assert_eq!(store.remove(&topic("a")), None);
    assert_eq!(store.get(&topic("a/b")), Some(&2));
    assert_eq!(store.remove(&topic("a/b")), Some(2));
    assert!(store.is_empty());
    assert!(matches(&store, "#").is_empty());
}

#[test]
fn a_match_visits_the_stored_topic_name() {
    let mut store = RetainedStore::default();
    store.insert(&topic("devices/d42/status"), "online");
    let mut visited = Vec::new();
    store.for_each_match(&filter("devices/+/status"), |topic, value| {
        visited.push((topic.clone(), *value));
    });
    assert_eq!(visited, [(topic("devices/d42/status"), "online")]);
}

fn topic_strategy() -> impl Strategy<Value = TopicName> {
    proptest::collection::vec(proptest::sample::select(&["", "a", "b", "$SYS"][..]), 1..5)
        .prop_filter_map("the empty topic", |levels| {
            TopicName::new(levels.join("/")).ok()
        })
}

fn filter_strategy() -> impl Strategy<Value = TopicFilter> {
    let level = proptest::sample::select(&["", "a", "b", "$SYS", "+"][..]);
    (proptest::collection::vec(level, 0..5), any::<bool>()).prop_filter_map(
        "the empty filter",
        |(levels, multi)| {
            let mut text = levels.join("/");
            if multi {
                if !levels.is_empty() {
                    text.push('/');
                }
                text.push('#');
            }
            TopicFilter::new(text).ok()
        },
    )
}

proptest! {
    #[test]
    fn matches_are_exactly_the_topics_the_reference_matcher_accepts(
        retained in proptest::collection::vec(topic_strategy(), 0..40),
        removed in proptest::collection::vec(topic_strategy(), 0..10),
        filters in proptest::collection::vec(filter_strategy(), 1..10),
    ) {
        let mut store = RetainedStore::default();
        let mut model = HashMap::new();
        for (value, topic) in retained.iter().enumerate() {
            prop_assert_eq!(store.insert(topic, value), model.insert(topic.clone(), value));
        }
        for topic in &removed {
            prop_assert_eq!(store.remove(topic), model.remove(topic));
        }
        prop_assert_eq!(store.len(), model.len());
        for (topic, value) in &model {
            prop_assert_eq!(store.get(topic), Some(value));
        }
        for filter in &filters {
            let mut visited = Vec::new();
            store.for_each_match(filter, |topic, value| visited.push((topic.clone(), *value)));
            visited.sort_unstable();
            let mut expected: Vec<_> = model
                .iter()
                .filter(|(topic, _)| filter.matches(topic))
                .map(|(topic, value)| (topic.clone(), *value))
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(visited, expected, "filter {}", filter);
        }
    }
}
