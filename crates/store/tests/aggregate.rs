//! Windowed aggregates agree with a reference computed here from the raw points, whether the
//! data is in the head, in segments (answered from block summaries or decoded), or both,
//! with overlapping overwrites.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Owned, Rng, TempDir, config, points};
use fleetwire_store::{Aggregation, Store, Timestamp};

const ALL: [Aggregation; 7] = [
    Aggregation::Avg,
    Aggregation::Min,
    Aggregation::Max,
    Aggregation::Sum,
    Aggregation::Count,
    Aggregation::First,
    Aggregation::Last,
];

fn reference(
    points: &BTreeMap<i64, f64>,
    from: i64,
    to: i64,
    every: i64,
    aggregation: Aggregation,
) -> Vec<(i64, f64)> {
    let mut windows: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (&timestamp, &value) in points.range(from..to) {
        windows
            .entry(timestamp.div_euclid(every) * every)
            .or_default()
            .push(value);
    }
    windows
        .into_iter()
        .map(|(start, values)| {
            let value = match aggregation {
                Aggregation::Avg => values.iter().sum::<f64>() / values.len() as f64,
                Aggregation::Min => values.iter().copied().fold(f64::NAN, f64::min),
                Aggregation::Max => values.iter().copied().fold(f64::NAN, f64::max),
                Aggregation::Sum => values.iter().sum(),
                Aggregation::Count => values.len() as f64,
                Aggregation::First => values[0],
                Aggregation::Last => values[values.len() - 1],
            };
            (start, value)
        })
        .collect()
}

fn check(store: &Store, model: &BTreeMap<i64, f64>, from: i64, to: i64, every: i64, when: &str) {
    for aggregation in ALL {
        let found = store
            .aggregate(
                "d",
                "t",
                Timestamp::from_millis(from),
                Timestamp::from_millis(to),
                Duration::from_millis(every as u64),
                aggregation,
            )
            .expect("aggregate");
        let expected = reference(model, from, to, every, aggregation);
        assert_eq!(
            found.len(),
            expected.len(),
            "{aggregation} {from}..{to} every {every} {when}: window count"
        );
        for (sample, (start, value)) in found.iter().zip(&expected) {
            assert_eq!(sample.timestamp.as_millis(), *start, "{aggregation} {when}");
            let tolerance = 1e-9 * value.abs().max(1.0);
            assert!(
                (sample.value - value).abs() <= tolerance,
                "{aggregation} window {start} every {every} {when}: got {}, expected {value}",
                sample.value
            );
        }
    }
}

#[test]
fn aggregates_match_a_reference_across_head_segments_and_overwrites() {
    let directory = TempDir::new("aggregate");
    let store = Store::open(directory.path(), config()).expect("open");
    let mut rng = Rng::new(11);
    let mut model = BTreeMap::new();
    let start = 1_700_000_000_000i64;
    let span = 3 * 86_400_000i64;
    let write = |store: &Store, batch: Vec<Owned>, model: &mut BTreeMap<i64, f64>| {
        for point in &batch {
            model.insert(point.timestamp, point.value);
        }
        for chunk in batch.chunks(5000) {
            store.write(&points(chunk)).expect("write");
        }
    };
    // Three days at 10 s, flushed: whole-hour blocks answered from summaries.
    let base: Vec<Owned> = (0..span / 10_000)
        .map(|index| {
            Owned::new(
                "d",
                "t",
                start + index * 10_000,
                ((rng.below(4000) as i64 - 2000) as f64) / 100.0,
            )
        })
        .collect();
    write(&store, base, &mut model);
    store.flush().expect("flush");
    let windows = [1_000, 7_000, 60_000, 3_600_000, 5_400_000, 86_400_000];
    for every in windows {
        check(
            &store,
            &model,
            start - 5_000,
            start + span + 5_000,
            every,
            "in one segment",
        );
        check(
            &store,
            &model,
            start + 123_456,
            start + 86_400_000 + 7_777,
            every,
            "on a partial range",
        );
    }
    // Overwrites and extra points inside the segment's range, flushed to a second segment.
    let overwrites: Vec<Owned> = (0..500)
        .map(|_| {
            let offset = rng.below(span as u64) as i64;
            let timestamp = start
                + if rng.below(2) == 0 {
                    offset / 10_000 * 10_000
                } else {
                    offset
                };
            Owned::new("d", "t", timestamp, rng.below(1000) as f64)
        })
        .collect();
    write(&store, overwrites, &mut model);
    store.flush().expect("flush");
    // And some in the head only.
    let head: Vec<Owned> = (0..300)
        .map(|_| {
            Owned::new(
                "d",
                "t",
                start + rng.below(span as u64 + 3_600_000) as i64,
                -(rng.below(1000) as f64),
            )
        })
        .collect();
    write(&store, head, &mut model);
    for every in windows {
        check(
            &store,
            &model,
            start - 5_000,
            start + span + 3_600_000,
            every,
            "across segments and head",
        );
        check(
            &store,
            &model,
            start + 3_599_999,
            start + 2 * 86_400_000 + 1,
            every,
            "on a partial range with overwrites",
        );
    }
    store.compact().expect("compact");
    store.flush().expect("flush");
    for every in windows {
        check(
            &store,
            &model,
            start,
            start + span + 3_600_000,
            every,
            "after compaction",
        );
    }
}

#[test]
fn windows_before_the_epoch_are_aligned_too() {
    let directory = TempDir::new("aggregate-negative");
    let store = Store::open(directory.path(), config()).expect("open");
    let batch: Vec<Owned> = (-50i64..50)
        .map(|index| Owned::new("d", "t", index * 100, index as f64))
        .collect();
    store.write(&points(&batch)).expect("write");
    let model: BTreeMap<i64, f64> = batch
        .iter()
        .map(|point| (point.timestamp, point.value))
        .collect();
    check(&store, &model, -5_000, 5_000, 1_000, "in the head");
    store.flush().expect("flush");
    check(&store, &model, -5_000, 5_000, 1_000, "in segments");
    check(&store, &model, -4_321, 1_234, 700, "odd windows");
}

#[test]
fn empty_ranges_give_no_windows() {
    let directory = TempDir::new("aggregate-empty");
    let store = Store::open(directory.path(), config()).expect("open");
    store
        .write(&points(&[Owned::new("d", "t", 10, 1.0)]))
        .expect("write");
    let found = store
        .aggregate(
            "d",
            "t",
            Timestamp::from_millis(10),
            Timestamp::from_millis(10),
            Duration::from_secs(1),
            Aggregation::Count,
        )
        .expect("aggregate");
    assert!(found.is_empty());
    let found = store
        .aggregate(
            "d",
            "unknown",
            Timestamp::from_millis(0),
            Timestamp::from_millis(100),
            Duration::from_secs(1),
            Aggregation::Count,
        )
        .expect("aggregate");
    assert!(found.is_empty());
}
