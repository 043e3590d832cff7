//! The broker's hot path at scale: a subscription tree of 1,000,000 filters and a retained
//! store of 1,000,000 topics.
//!
//! Run with `cargo bench -p fleetwire-topics`. Keys are `u64` session numbers and values `u8`
//! QoS levels, so the figures measure the index rather than the caller's types.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use fleetwire_mqtt_codec::{TopicFilter, TopicName};
use fleetwire_topics::{RetainedStore, TopicTree};

const DEVICES: u64 = 900_000;
const SITES: u64 = 90_000;
const ALERT_SUBSCRIPTIONS: u64 = 8_990;
const CATCH_ALL_SUBSCRIPTIONS: u64 = 10;
const BROADCAST_SUBSCRIBERS: u64 = 1_000;

fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text).expect("bench filters are valid")
}

fn topic(text: &str) -> TopicName {
    TopicName::new(text).expect("bench topics are valid")
}

/// One million `(filter, key)` subscriptions:
/// - 900,000 devices each on its own `devices/{n}/commands/#`;
/// - 90,000 dashboards on `site/{s}/+/temperature`;
/// - 8,990 alerting sessions spread over 1,000 `alerts/{a}/+/#` filters;
/// - 10 catch-all `#` subscribers (loggers, debuggers);
/// - 1,000 sessions on the single filter `fleet/broadcast`.
fn million_subscriptions() -> Vec<(TopicFilter, u64)> {
    let mut subscriptions = Vec::with_capacity(1_000_000);
    for device in 0..DEVICES {
        subscriptions.push((filter(&format!("devices/{device}/commands/#")), device));
    }
    for site in 0..SITES {
        subscriptions.push((
            filter(&format!("site/{site}/+/temperature")),
            DEVICES + site,
        ));
    }
    for session in 0..ALERT_SUBSCRIPTIONS {
        let alert = session % 1_000;
        subscriptions.push((filter(&format!("alerts/{alert}/+/#")), 2_000_000 + session));
    }
    for session in 0..CATCH_ALL_SUBSCRIPTIONS {
        subscriptions.push((filter("#"), 3_000_000 + session));
    }
    for session in 0..BROADCAST_SUBSCRIBERS {
        subscriptions.push((filter("fleet/broadcast"), 4_000_000 + session));
    }
    subscriptions
}

fn build_tree(subscriptions: &[(TopicFilter, u64)]) -> TopicTree<u64, u8> {
    let mut tree = TopicTree::default();
    for (filter, key) in subscriptions {
        tree.insert(filter, *key, 1);
    }
    tree
}

fn count_matches(tree: &TopicTree<u64, u8>, topic: &TopicName) -> u64 {
    let mut visited = 0u64;
    tree.for_each_match(topic, |key, qos| {
        black_box((key, qos));
        visited += 1;
    });
    visited
}

fn topic_tree(c: &mut Criterion) {
    let subscriptions = million_subscriptions();
    let mut tree = build_tree(&subscriptions);
    assert_eq!(tree.len(), 1_000_000);

    let mut group = c.benchmark_group("topic_tree_1m");

    group.throughput(Throughput::Elements(subscriptions.len() as u64));
    group.sample_size(10);
    group.bench_function("build", |b| {
        b.iter_with_large_drop(|| build_tree(black_box(&subscriptions)));
    });
    group.sample_size(100);

    // A device command: its own filter plus the 10 catch-alls.
    let command = topic("devices/421337/commands/reboot");
    assert_eq!(count_matches(&tree, &command), 11);
    group.throughput(Throughput::Elements(1));
    group.bench_function("match_device_command", |b| {
        b.iter(|| count_matches(&tree, black_box(&command)));
    });

    // Commands to devices spread over the whole tree, as a broker sees them: most of the path
    // is not in the CPU cache, unlike a topic matched over and over.
    let spread: Vec<TopicName> = (0..4096u64)
        .map(|i| {
            topic(&format!(
                "devices/{}/commands/reboot",
                i * 219_971 % DEVICES
            ))
        })
        .collect();
    let mut next = 0;
    group.bench_function("match_device_command_spread", |b| {
        b.iter(|| {
            next = (next + 1) % spread.len();
            count_matches(&tree, &spread[next])
        });
    });

    // A reading that goes through a `+` branch: one site filter plus the catch-alls.
    let reading = topic("site/4242/boiler-room/temperature");
    assert_eq!(count_matches(&tree, &reading), 11);
    group.bench_function("match_site_reading", |b| {
        b.iter(|| count_matches(&tree, black_box(&reading)));
    });

    // A topic nobody but the catch-alls wants, ending at a wide level.
    let unknown = topic("devices/no-such-device/commands/reboot");
    group.bench_function("match_only_catch_all", |b| {
        b.iter(|| count_matches(&tree, black_box(&unknown)));
    });

    // Fan-out: 1,000 subscribers of one filter plus the catch-alls, per visited entry.
    let broadcast = topic("fleet/broadcast");
    let fan_out = count_matches(&tree, &broadcast);
    assert_eq!(fan_out, BROADCAST_SUBSCRIBERS + CATCH_ALL_SUBSCRIPTIONS);
    group.throughput(Throughput::Elements(fan_out));
    group.bench_function("fan_out_1010", |b| {
        b.iter(|| count_matches(&tree, black_box(&broadcast)));
    });

    // A new device subscribing and leaving: two nodes created under a 900,000-wide level,
    // then pruned again.
    let new_device = filter("devices/new-device/commands/#");
    group.throughput(Throughput::Elements(1));
    group.bench_function("insert_remove_new_filter", |b| {
        b.iter(|| {
            tree.insert(black_box(&new_device), 7, 1);
            tree.remove(black_box(&new_device), &7)
        });
    });

    // One more subscriber on the 1,000-subscriber filter: the indexed entries path.
    let broadcast_filter = filter("fleet/broadcast");
    group.bench_function("insert_remove_on_1000_subscriber_filter", |b| {
        b.iter(|| {
            tree.insert(black_box(&broadcast_filter), 7, 1);
            tree.remove(black_box(&broadcast_filter), &7)
        });
    });
    group.finish();
}

/// One million retained topics: 100,000 devices with 10 sensors each.
fn retained_store(c: &mut Criterion) {
    let mut store = RetainedStore::default();
    for device in 0..100_000u32 {
        for sensor in 0..10u32 {
            store.insert(
                &topic(&format!("devices/d{device}/sensor/{sensor}")),
                device,
            );
        }
    }
    assert_eq!(store.len(), 1_000_000);

    let mut group = c.benchmark_group("retained_1m");
    let exact = topic("devices/d42424/sensor/7");
    group.throughput(Throughput::Elements(1));
    group.bench_function("get", |b| {
        b.iter(|| store.get(black_box(&exact)));
    });

    let one_device = filter("devices/d42/#");
    let mut replayed = 0u64;
    store.for_each_match(&one_device, |_, _| replayed += 1);
    assert_eq!(replayed, 10);
    group.throughput(Throughput::Elements(replayed));
    group.bench_function("match_one_device_subtree", |b| {
        b.iter(|| {
            let mut visited = 0u64;
            store.for_each_match(black_box(&one_device), |topic, value| {
                black_box((topic, value));
                visited += 1;
            });
            visited
        });
    });

    let one_sensor_everywhere = filter("devices/+/sensor/3");
    group.throughput(Throughput::Elements(100_000));
    group.sample_size(10);
    group.bench_function("match_plus_over_100k_devices", |b| {
        b.iter(|| {
            let mut visited = 0u64;
            store.for_each_match(black_box(&one_sensor_everywhere), |topic, value| {
                black_box((topic, value));
                visited += 1;
            });
            visited
        });
    });
    group.finish();
}

// What `criterion_group!` and `criterion_main!` expand to, without their undocumented
// `pub fn` that the `missing_docs` lint rejects.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    topic_tree(&mut criterion);
    retained_store(&mut criterion);
    criterion.final_summary();
}
