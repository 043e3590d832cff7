//! Prints how much resident memory a subscription tree of 1,000,000 filters and a retained
//! store of 1,000,000 topics take, as the growth of this process's RSS (Linux only).
//!
//! Run with `cargo run --release -p fleetwire-topics --example tree_memory`.

use fleetwire_mqtt_codec::{TopicFilter, TopicName};
use fleetwire_topics::{RetainedStore, TopicTree};

/// This process's resident set size in KiB, read from `/proc/self/status`.
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn report(what: &str, before: Option<u64>, count: usize) {
    match (before, resident_kib()) {
        (Some(before), Some(after)) => {
            let bytes = after.saturating_sub(before) * 1024;
            println!(
                "{what}: {:.1} MiB, {} bytes per entry",
                bytes as f64 / (1024.0 * 1024.0),
                bytes / count as u64
            );
        }
        _ => println!("{what}: cannot read /proc/self/status"),
    }
}

fn main() -> Result<(), fleetwire_mqtt_codec::TopicError> {
    // The same mix as benches/topic_tree.rs, built without keeping the filters around.
    let before = resident_kib();
    let mut tree: TopicTree<u64, u8> = TopicTree::default();
    for device in 0..900_000u64 {
        tree.insert(
            &TopicFilter::new(format!("devices/{device}/commands/#"))?,
            device,
            1,
        );
    }
    for site in 0..90_000u64 {
        tree.insert(
            &TopicFilter::new(format!("site/{site}/+/temperature"))?,
            site,
            1,
        );
    }
    for session in 0..8_990u64 {
        let alert = session % 1_000;
        tree.insert(
            &TopicFilter::new(format!("alerts/{alert}/+/#"))?,
            session,
            1,
        );
    }
    for session in 0..10u64 {
        tree.insert(&TopicFilter::new("#")?, session, 1);
    }
    for session in 0..1_000u64 {
        tree.insert(&TopicFilter::new("fleet/broadcast")?, session, 1);
    }
    report(
        "TopicTree<u64, u8> with 1,000,000 filters",
        before,
        tree.len(),
    );

    let before = resident_kib();
    let mut store = RetainedStore::default();
    for device in 0..100_000u32 {
        for sensor in 0..10u32 {
            store.insert(
                &TopicName::new(format!("devices/d{device}/sensor/{sensor}"))?,
                device,
            );
        }
    }
    report(
        "RetainedStore<u32> with 1,000,000 topics",
        before,
        store.len(),
    );
    Ok(())
}
